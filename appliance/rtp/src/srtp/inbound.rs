//! The receive side of one stream across rekeys: re-INVITEs may carry a new SDES key, and packets the peer
//! sent under the old key can still arrive for a while after the new one is installed.

use std::time::{Duration, Instant};

use super::{SrtpConfig, SrtpContext, SrtpError, SrtpMasterKey};
use crate::packet::RtpError;

/// Packet outcomes of one [`SrtpInbound`], cumulative over rekeys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpStats {
    /// Packets authenticated and decrypted.
    pub authenticated: u64,
    /// Packets whose tag did not verify under any live key.
    pub auth_failures: u64,
    /// Authentic packets refused as duplicates or as older than the replay window.
    pub replays: u64,
    /// Packets too short or with a malformed RTP header (multiplexed RTCP is not counted).
    pub malformed: u64,
}

/// What the receive side holds for one stream across re-INVITE rekeys: the current context and, for a
/// grace period after a rekey, the previous one. Time is a parameter; nothing here reads a clock.
#[derive(Debug)]
pub struct SrtpInbound {
    config: SrtpConfig,
    key: SrtpMasterKey,
    current: SrtpContext,
    /// The key before the last rekey, its context, and until when it is still tried.
    previous: Option<(SrtpMasterKey, SrtpContext, Instant)>,
    stats: SrtpStats,
}

impl SrtpInbound {
    pub fn new(key: &SrtpMasterKey, config: SrtpConfig) -> SrtpInbound {
        SrtpInbound {
            config,
            key: key.clone(),
            current: SrtpContext::new(key, config),
            previous: None,
            stats: SrtpStats::default(),
        }
    }

    /// Installs a new key. If it equals the current key (same suite and bytes — SDES re-offers repeat the
    /// key), nothing changes and the ROC and replay state are kept. If it equals the previous key (a rekey
    /// back within the grace period), the two contexts swap, so the returning key keeps its replay state.
    /// Otherwise the current context becomes the previous one until `now + grace` (replacing any earlier
    /// previous context).
    pub fn rekey(&mut self, now: Instant, key: &SrtpMasterKey, grace: Duration) {
        if *key == self.key {
            return;
        }
        let returning = match self.previous.take() {
            Some((previous_key, context, _)) if previous_key == *key => context,
            _ => SrtpContext::new(key, self.config),
        };
        let retired = std::mem::replace(&mut self.current, returning);
        let retired_key = std::mem::replace(&mut self.key, key.clone());
        self.previous = Some((retired_key, retired, now + grace));
    }

    /// Unprotects one packet: tries the current context, then the previous one while its grace lasts. On
    /// `Ok` `out` holds the plain RTP packet. When both refuse it, the error is the previous context's if
    /// that one found an authentic replay, else the current context's.
    pub fn unprotect(&mut self, now: Instant, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        if self.previous.as_ref().is_some_and(|(_, _, until)| now >= *until) {
            self.previous = None;
        }
        let result = match self.current.unprotect_rtp(packet, out) {
            Ok(()) => Ok(()),
            Err(error @ SrtpError::Malformed(_)) => Err(error),
            Err(current_error) => match self.previous.as_mut() {
                Some((_, previous, _)) => match previous.unprotect_rtp(packet, out) {
                    Ok(()) => Ok(()),
                    Err(previous_error) if previous_error.is_replay() => Err(previous_error),
                    Err(_) => Err(current_error),
                },
                None => Err(current_error),
            },
        };
        match &result {
            Ok(()) => self.stats.authenticated += 1,
            Err(SrtpError::AuthenticationFailed) => self.stats.auth_failures += 1,
            Err(SrtpError::Replayed | SrtpError::TooOld) => self.stats.replays += 1,
            Err(SrtpError::Malformed(RtpError::Rtcp { .. })) => {}
            Err(SrtpError::Malformed(_) | SrtpError::TooShort { .. }) => self.stats.malformed += 1,
            Err(SrtpError::BadKeyLength { .. } | SrtpError::Rng) => {}
        }
        result
    }

    pub fn stats(&self) -> SrtpStats {
        self.stats
    }
}
