//! Metric families of the transport-security layer: SIP-over-TLS handshakes and certificate reloads, the
//! server certificate's expiry, and SRTP packets that failed authentication or replay checks. Labels are
//! bounded enums; no peer address or identity is ever a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a SIP-over-TLS handshake ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TlsHandshakeResult {
    /// The handshake completed and the client (if asked for a certificate) is allowed.
    Ok,
    /// The handshake failed (protocol error, bad or missing client certificate, connection reset).
    Failed,
    /// The client did not finish the handshake within the handshake timeout.
    Timeout,
    /// The client certificate verified, but its identity is not on the allow-list.
    ClientNotAllowed,
    /// Refused before the handshake: too many handshakes or connections in progress.
    Busy,
}

impl TlsHandshakeResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::ClientNotAllowed => "client_not_allowed",
            Self::Busy => "refused_busy",
        }
    }
}

/// How an attempt to reload the TLS certificate and key ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    /// New connections now use the new certificate.
    Ok,
    /// The files could not be loaded; the previous certificate stays in use.
    Failed,
}

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// Why an SRTP packet was dropped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SrtpDropReason {
    /// The authentication tag did not verify (tampered, wrong key, or not SRTP).
    AuthFailed,
    /// A packet index already seen or older than the replay window.
    Replayed,
    /// Too short or not RTP.
    Malformed,
    /// SRTCP (RTCP multiplexed on an SRTP stream): not authenticated, not needed, dropped.
    SrtcpIgnored,
}

impl SrtpDropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::Malformed => "malformed",
            Self::SrtcpIgnored => "srtcp_ignored",
        }
    }
}

macro_rules! label_value_from_as_str {
    ($($label:ty),*) => {$(
        impl EncodeLabelValue for $label {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}

label_value_from_as_str!(TlsHandshakeResult, ReloadResult, SrtpDropReason);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabel {
    result: TlsHandshakeResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    reason: SrtpDropReason,
}

/// TLS and SRTP families; part of [`crate::Metrics`].
#[derive(Debug, Clone, Default)]
pub struct SecurityMetrics {
    tls_handshakes: Family<HandshakeLabel, Counter>,
    tls_reloads: Family<ReloadLabel, Counter>,
    /// Unix time at which the SIP server certificate in use expires (0 while TLS is off).
    pub tls_certificate_expiry_seconds: Gauge,
    /// SIP-over-TLS connections open now.
    pub tls_connections: Gauge,
    /// SRTP packets that authenticated and were decrypted.
    pub srtp_packets_authenticated: Counter,
    srtp_dropped: Family<DropLabel, Counter>,
}

impl SecurityMetrics {
    pub fn tls_handshake(&self, result: TlsHandshakeResult) {
        self.tls_handshakes
            .get_or_create(&HandshakeLabel { result })
            .inc();
    }

    pub fn tls_reload(&self, result: ReloadResult) {
        self.tls_reloads.get_or_create(&ReloadLabel { result }).inc();
    }

    /// Counts `count` SRTP packets dropped for `reason`.
    pub fn srtp_dropped(&self, reason: SrtpDropReason, count: u64) {
        if count > 0 {
            self.srtp_dropped
                .get_or_create(&DropLabel { reason })
                .inc_by(count);
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_handshakes",
            "SIP-over-TLS handshakes, by result",
            self.tls_handshakes.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Attempts to reload the SIP TLS certificate and key, by result",
            self.tls_reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the SIP TLS server certificate in use expires (0: TLS off)",
            self.tls_certificate_expiry_seconds.clone(),
        );
        registry.register(
            "tls_connections",
            "SIP-over-TLS connections open now",
            self.tls_connections.clone(),
        );
        registry.register(
            "srtp_packets_authenticated",
            "SRTP packets that authenticated and were decrypted",
            self.srtp_packets_authenticated.clone(),
        );
        registry.register(
            "srtp_packets_dropped",
            "SRTP packets dropped, by reason",
            self.srtp_dropped.clone(),
        );
    }
}
