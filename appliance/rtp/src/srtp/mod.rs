//! SDES-SRTP reception (RFC 3711, with AES-GCM per RFC 7714 and master keys as RFC 4568 carries them), sans
//! IO. This module owns the SRTP crypto suites a recorded stream may use ([`SrtpSuite`]), the master key
//! from an SDES `inline:` parameter ([`SrtpMasterKey`]), one crypto context per stream direction
//! ([`SrtpContext`]: session-key derivation, per-SSRC rollover counter and replay window, authentication
//! and decryption) and the receive side of one stream across re-INVITE rekeys ([`SrtpInbound`]).
//!
//! Scope, deliberately narrow:
//! - Session keys are derived once (key derivation rate 0, the SDES default); `KDR=` is not supported.
//! - No MKI: the SDP negotiator refuses `a=crypto` lines that carry one, so packets never have an MKI field.
//! - No SRTCP: the recorder ignores RTCP, so only SRTP packets are unprotected; RTCP multiplexed on the RTP
//!   port is reported as [`SrtpError::Malformed`] with [`RtpError::Rtcp`] and not counted as malformed.
//! - Unencrypted or unauthenticated SRTP (`UNENCRYPTED_SRTP`, `UNAUTHENTICATED_SRTP`) is not supported.
//! - A new SSRC starts with ROC 0, as SDES requires of the sender.
//!
//! A context authenticates before it changes any state, so forged, corrupted or replayed packets leave the
//! rollover counter and replay window as they were.

mod inbound;
mod streams;
#[cfg(test)]
mod tests;
mod transform;

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

pub use inbound::{SrtpInbound, SrtpStats};

use crate::packet::{RtpError, RtpHeader};
use streams::Streams;
use transform::Transform;

/// Longest master key plus salt of any suite (AES-256 key and 96-bit salt).
const MAX_KEY_AND_SALT: usize = 32 + 14;
/// Bounds of [`SrtpConfig::replay_window`] after clamping.
pub const MIN_REPLAY_WINDOW: u16 = 64;
pub const MAX_REPLAY_WINDOW: u16 = 8192;
/// Upper bound of [`SrtpConfig::max_ssrcs`] after clamping.
pub const MAX_SSRCS: usize = 64;

/// An SRTP crypto suite as named in SDES `a=crypto` lines (RFC 4568 §6.2, RFC 7714 §14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl SrtpSuite {
    /// Every supported suite, strongest first: the order in which we prefer them.
    pub const ALL: [SrtpSuite; 4] = [
        SrtpSuite::AeadAes256Gcm,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The suite an SDES crypto-suite name denotes (exact, case-sensitive, per RFC 4568's ABNF).
    pub fn from_sdes_name(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL.into_iter().find(|suite| suite.sdes_name() == name)
    }

    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes: 112 bits for AES-CM, 96 bits for AES-GCM.
    pub fn master_salt_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => 14,
            SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm => 12,
        }
    }

    /// Bytes of authentication tag each packet carries.
    fn auth_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm => 16,
        }
    }
}

impl fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

/// Why an SRTP packet was refused or a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The RTP header is malformed (or the packet is RTCP, [`RtpError::Rtcp`]).
    #[error("malformed SRTP packet: {0}")]
    Malformed(RtpError),
    /// Shorter than its RTP header plus the authentication tag.
    #[error("SRTP packet of {len} bytes is shorter than its header and tag ({needed} bytes)")]
    TooShort { len: usize, needed: usize },
    /// The authentication tag does not match: forged, corrupted, or under another key.
    #[error("SRTP authentication failed")]
    AuthenticationFailed,
    /// An authentic packet whose index was already received.
    #[error("SRTP packet replayed")]
    Replayed,
    /// A packet whose index is behind the replay window (or before the start of the stream).
    #[error("SRTP packet too old for the replay window")]
    TooOld,
    /// The key material does not have the suite's key-plus-salt length.
    #[error("{suite} needs {expected} bytes of master key and salt, got {actual}")]
    BadKeyLength {
        suite: SrtpSuite,
        expected: usize,
        actual: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed")]
    Rng,
}

impl SrtpError {
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, SrtpError::AuthenticationFailed)
    }

    /// Replayed or too old.
    pub fn is_replay(&self) -> bool {
        matches!(self, SrtpError::Replayed | SrtpError::TooOld)
    }
}

/// Master key and master salt of one suite. `Debug` shows no key bytes; the bytes are zeroized on drop.
#[derive(Clone)]
pub struct SrtpMasterKey {
    suite: SrtpSuite,
    bytes: [u8; MAX_KEY_AND_SALT],
    len: usize,
}

impl SrtpMasterKey {
    /// A key from the concatenated master key and salt (the decoded SDES `inline:` key material), which
    /// must be exactly `master_key_len() + master_salt_len()` bytes.
    pub fn new(suite: SrtpSuite, key_and_salt: &[u8]) -> Result<SrtpMasterKey, SrtpError> {
        let expected = suite.master_key_len() + suite.master_salt_len();
        let mut bytes = [0u8; MAX_KEY_AND_SALT];
        match bytes.get_mut(..key_and_salt.len()) {
            Some(head) if key_and_salt.len() == expected => head.copy_from_slice(key_and_salt),
            _ => {
                return Err(SrtpError::BadKeyLength {
                    suite,
                    expected,
                    actual: key_and_salt.len(),
                });
            }
        }
        Ok(SrtpMasterKey {
            suite,
            bytes,
            len: expected,
        })
    }

    /// A fresh random key from the operating system's RNG.
    pub fn generate(suite: SrtpSuite) -> Result<SrtpMasterKey, SrtpError> {
        let len = suite.master_key_len() + suite.master_salt_len();
        let mut bytes = [0u8; MAX_KEY_AND_SALT];
        getrandom::fill(bytes.get_mut(..len).unwrap_or_default()).map_err(|_| SrtpError::Rng)?;
        Ok(SrtpMasterKey { suite, bytes, len })
    }

    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Master key then master salt, as carried base64-encoded in SDES `inline:`.
    pub fn key_and_salt(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl PartialEq for SrtpMasterKey {
    /// Same suite and same bytes, compared in constant time.
    fn eq(&self, other: &SrtpMasterKey) -> bool {
        self.suite == other.suite && bool::from(self.key_and_salt().ct_eq(other.key_and_salt()))
    }
}

impl Eq for SrtpMasterKey {}

impl fmt::Debug for SrtpMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpMasterKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Drop for SrtpMasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// Bounds of one crypto context's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpConfig {
    /// Replay window in packets (RFC 3711 §3.3.2), clamped to
    /// [`MIN_REPLAY_WINDOW`]..=[`MAX_REPLAY_WINDOW`] and rounded up to a multiple of 64.
    pub replay_window: u16,
    /// SSRCs with their own ROC and replay state, clamped to 1..=[`MAX_SSRCS`]. When the table is full, a
    /// new SSRC evicts the one whose last authenticated packet is the oldest.
    pub max_ssrcs: usize,
}

impl Default for SrtpConfig {
    fn default() -> SrtpConfig {
        SrtpConfig {
            replay_window: 1024,
            max_ssrcs: 8,
        }
    }
}

/// One direction of one SRTP stream: the crypto context of RFC 3711 §3.2 (session keys derived from one
/// master key) with per-SSRC rollover counter and replay state. Use a context either to unprotect or to
/// protect, not both.
pub struct SrtpContext {
    suite: SrtpSuite,
    transform: Transform,
    streams: Streams,
}

impl SrtpContext {
    pub fn new(key: &SrtpMasterKey, config: SrtpConfig) -> SrtpContext {
        let window = config.replay_window.clamp(MIN_REPLAY_WINDOW, MAX_REPLAY_WINDOW);
        SrtpContext {
            suite: key.suite(),
            transform: Transform::new(key),
            streams: Streams::new(usize::from(window), config.max_ssrcs.clamp(1, MAX_SSRCS)),
        }
    }

    /// Authenticates, replay-checks and decrypts one SRTP packet; on `Ok` `out` holds the plain RTP packet
    /// (header + payload; padding and extension as in the packet), on `Err` it is empty. State (ROC,
    /// replay window) changes only after authentication succeeds.
    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let header = RtpHeader::parse(packet).map_err(SrtpError::Malformed)?;
        let needed = header.len + self.transform.tag_len();
        if packet.len() < needed {
            return Err(SrtpError::TooShort {
                len: packet.len(),
                needed,
            });
        }
        let index = self.streams.estimate(header.ssrc, header.sequence_number)?;
        self.transform
            .unprotect(packet, header.len, header.ssrc, index, out)?;
        if let Err(error) = self.streams.check_replay(header.ssrc, index) {
            out.clear();
            return Err(error);
        }
        self.streams.accept(header.ssrc, index);
        Ok(())
    }

    /// The sending side, used by tests, benchmarks and fuzzing to make packets: encrypts and tags one RTP
    /// packet into `out`, tracking the ROC per SSRC as the sequence numbers wrap.
    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let header = RtpHeader::parse(packet).map_err(SrtpError::Malformed)?;
        let index = self.streams.estimate(header.ssrc, header.sequence_number)?;
        self.streams.accept(header.ssrc, index);
        self.transform
            .protect(packet, header.len, header.ssrc, index, out);
        Ok(())
    }
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("ssrcs", &self.streams.len())
            .finish_non_exhaustive()
    }
}
