//! The Prometheus metric families of the appliance. Every label is a bounded enum defined here, so a peer
//! can never create a new time series; nothing personal (call ids, numbers, addresses) is a label.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::outbox_metrics::OutboxMetrics;
use crate::redaction_metrics::RedactionMetrics;
use crate::security_metrics::SecurityMetrics;
use crate::transcription_metrics::TranscriptionMetrics;
use crate::voicestream_metrics::VoiceStreamMetrics;

/// How a recorded call ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CallOutcome {
    /// The SRC hung up with BYE.
    RemoteBye,
    /// The SRC cancelled before we answered.
    Cancelled,
    /// No ACK arrived for our 200 OK.
    AckTimeout,
    /// No RTP arrived on any stream for the configured inactivity timeout.
    RtpTimeout,
    /// The media sockets could not be opened.
    MediaFailed,
    /// The recording could not be written.
    RecordingFailed,
    /// The appliance was shutting down.
    Shutdown,
    /// Finalised at start-up after the process died mid-call.
    Recovered,
    /// VoiceStream: every leg ended (call ended, disconnect, or the client closed its stream).
    StreamsEnded,
    /// VoiceStream: a leg went silent or its stream broke without an end event.
    StreamLost,
}

/// The class of a SIP response we sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SipResponseClass {
    Provisional,
    Success,
    Redirect,
    ClientError,
    ServerError,
    GlobalFailure,
}

impl SipResponseClass {
    /// The class of a status code, or `None` outside 100..=699.
    pub fn of_status(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(Self::Provisional),
            200..=299 => Some(Self::Success),
            300..=399 => Some(Self::Redirect),
            400..=499 => Some(Self::ClientError),
            500..=599 => Some(Self::ServerError),
            600..=699 => Some(Self::GlobalFailure),
            _ => None,
        }
    }
}

/// The SIP request methods we count; everything else is `Other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SipMethodLabel {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Update,
    Other,
}

impl SipMethodLabel {
    pub fn of_method(method: &str) -> Self {
        match method {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "UPDATE" => Self::Update,
            _ => Self::Other,
        }
    }
}

impl CallOutcome {
    /// The snake_case name used as label value (and in manifests and events).
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::RemoteBye => "remote_bye",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::AckTimeout => "ack_timeout",
            CallOutcome::RtpTimeout => "rtp_timeout",
            CallOutcome::MediaFailed => "media_failed",
            CallOutcome::RecordingFailed => "recording_failed",
            CallOutcome::Shutdown => "shutdown",
            CallOutcome::Recovered => "recovered_after_interruption",
            CallOutcome::StreamsEnded => "streams_ended",
            CallOutcome::StreamLost => "stream_lost",
        }
    }
}

impl SipResponseClass {
    /// The label value: `1xx` … `6xx`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisional => "1xx",
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::GlobalFailure => "6xx",
        }
    }
}

impl SipMethodLabel {
    /// The label value: the method token, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Update => "UPDATE",
            Self::Other => "other",
        }
    }
}

/// Why an inbound SIP message was refused before it reached the SIP endpoint (see `airlock_sip::guard`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SipRefusal {
    /// The source address is not in `sip.allow_sources` (requests answered 403 within a budget).
    SourceNotAllowed,
    /// The source is over `sip.rate_limit_per_sec` (dropped without an answer).
    RateLimited,
}

impl SipRefusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceNotAllowed => "source_not_allowed",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Why an inbound SIP TCP connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TcpRefusal {
    /// The source already has `sip.max_tcp_connections_per_source` connections open.
    PerSourceLimit,
    /// The appliance-wide connection limit is reached.
    TotalLimit,
    /// A TLS connection from a source outside `sip.allow_sources` (closed before the handshake).
    SourceNotAllowed,
}

impl TcpRefusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSourceLimit => "per_source_limit",
            Self::TotalLimit => "total_limit",
            Self::SourceNotAllowed => "source_not_allowed",
        }
    }
}

/// Label values are the `as_str` names, so dashboards read the same words as manifests and events.
macro_rules! label_value_from_as_str {
    ($($label:ty),*) => {$(
        impl EncodeLabelValue for $label {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_value_from_as_str!(
    CallOutcome,
    SipResponseClass,
    SipMethodLabel,
    SipRefusal,
    TcpRefusal
);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: CallOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: SipResponseClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: SipMethodLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: SipRefusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpRefusalLabel {
    reason: TcpRefusal,
}

/// Every metric family of the appliance, registered once. Cheap to clone (handles share their values).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub active_calls: Gauge,
    /// 1 while new calls are admitted, 0 while they are refused for a backlog (see runtime `admission`).
    pub admission_open: Gauge,
    calls: Family<OutcomeLabel, Counter>,
    sip_requests: Family<MethodLabel, Counter>,
    sip_responses: Family<ClassLabel, Counter>,
    pub sip_malformed: Counter,
    pub sip_dropped_overload: Counter,
    pub rtp_packets_received: Counter,
    pub rtp_packets_lost: Counter,
    pub rtp_packets_late: Counter,
    pub rtp_packets_duplicate: Counter,
    pub rtp_packets_malformed: Counter,
    pub rtp_telephone_events: Counter,
    pub recorded_bytes: Counter,
    /// SIP-over-TLS and SRTP.
    pub security: SecurityMetrics,
    /// The Five9 VoiceStream destination.
    pub voicestream: VoiceStreamMetrics,
    /// On-device transcription.
    pub transcription: TranscriptionMetrics,
    /// The outbox spool and its sinks.
    pub outbox: OutboxMetrics,
    /// Audio silenced in recordings, and how long audio was held for it.
    pub audio_redaction: RedactionMetrics,
    /// Pause/resume requests from an agent-desktop integration.
    pub requests: crate::RequestMetrics,
    /// Local capture from a sound card.
    pub capture: crate::CaptureMetrics,
    sip_refused: Family<RefusalLabel, Counter>,
    sip_tcp_refused: Family<TcpRefusalLabel, Counter>,
}

impl Metrics {
    /// Records that a call ended with `outcome`.
    pub fn call_ended(&self, outcome: CallOutcome) {
        self.calls.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn sip_request(&self, method: SipMethodLabel) {
        self.sip_requests.get_or_create(&MethodLabel { method }).inc();
    }

    pub fn sip_response(&self, class: SipResponseClass) {
        self.sip_responses.get_or_create(&ClassLabel { class }).inc();
    }

    /// Records an inbound SIP message refused by the source guard.
    pub fn sip_refused(&self, reason: SipRefusal) {
        self.sip_refused.get_or_create(&RefusalLabel { reason }).inc();
    }

    /// Records an inbound SIP TCP connection closed on accept.
    pub fn sip_tcp_refused(&self, reason: TcpRefusal) {
        self.sip_tcp_refused
            .get_or_create(&TcpRefusalLabel { reason })
            .inc();
    }

    /// A registry holding every family, for the `/metrics` endpoint.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("airlock");
        registry.register(
            "active_calls",
            "Calls being recorded now",
            self.active_calls.clone(),
        );
        registry.register(
            "admission_open",
            "1 while new calls are admitted, 0 while refused because finalisation is behind",
            self.admission_open.clone(),
        );
        registry.register(
            "calls",
            "Recorded calls that ended, by outcome",
            self.calls.clone(),
        );
        registry.register(
            "sip_requests",
            "SIP requests received, by method",
            self.sip_requests.clone(),
        );
        registry.register(
            "sip_responses",
            "SIP responses sent, by class",
            self.sip_responses.clone(),
        );
        registry.register(
            "sip_malformed",
            "SIP messages that could not be parsed",
            self.sip_malformed.clone(),
        );
        registry.register(
            "sip_dropped_overload",
            "SIP datagrams dropped because the signalling queue was full",
            self.sip_dropped_overload.clone(),
        );
        registry.register(
            "rtp_packets_received",
            "RTP packets received",
            self.rtp_packets_received.clone(),
        );
        registry.register(
            "rtp_packets_lost",
            "RTP packets never received (sequence gaps)",
            self.rtp_packets_lost.clone(),
        );
        registry.register(
            "rtp_packets_late",
            "RTP packets that arrived too late to record",
            self.rtp_packets_late.clone(),
        );
        registry.register(
            "rtp_packets_duplicate",
            "Duplicate RTP packets dropped",
            self.rtp_packets_duplicate.clone(),
        );
        registry.register(
            "rtp_packets_malformed",
            "Datagrams on media ports that were not RTP",
            self.rtp_packets_malformed.clone(),
        );
        registry.register(
            "rtp_telephone_events",
            "RFC 4733 telephone events recorded",
            self.rtp_telephone_events.clone(),
        );
        registry.register(
            "recorded_bytes",
            "Bytes of encrypted recordings finalised",
            self.recorded_bytes.clone(),
        );
        self.security.register(&mut registry);
        self.voicestream.register(&mut registry);
        self.transcription.register(&mut registry);
        self.outbox.register(&mut registry);
        self.audio_redaction.register(&mut registry);
        self.requests.register(&mut registry);
        self.capture.register(&mut registry);
        registry.register(
            "sip_messages_refused",
            "Inbound SIP messages refused before processing, by reason (source not allowed, rate limited)",
            self.sip_refused.clone(),
        );
        registry.register(
            "sip_tcp_connections_refused",
            "Inbound SIP TCP connections closed on accept, by the limit that was reached",
            self.sip_tcp_refused.clone(),
        );
        registry
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry());
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_bounded_labels_and_counts() {
        let metrics = Metrics::default();
        metrics.active_calls.set(2);
        metrics.call_ended(CallOutcome::RemoteBye);
        metrics.sip_response(SipResponseClass::of_status(488).expect("4xx"));
        metrics.sip_request(SipMethodLabel::of_method("FOO"));
        let text = metrics.encode();
        assert!(text.contains("airlock_active_calls 2"), "{text}");
        assert!(
            text.contains("airlock_calls_total{outcome=\"remote_bye\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_sip_responses_total{class=\"4xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_sip_requests_total{method=\"other\"} 1"),
            "{text}"
        );
        assert!(SipResponseClass::of_status(99).is_none());
        metrics.sip_refused(SipRefusal::RateLimited);
        metrics.sip_refused(SipRefusal::SourceNotAllowed);
        metrics.sip_tcp_refused(TcpRefusal::PerSourceLimit);
        let text = metrics.encode();
        assert!(
            text.contains("airlock_sip_messages_refused_total{reason=\"rate_limited\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_sip_messages_refused_total{reason=\"source_not_allowed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_sip_tcp_connections_refused_total{reason=\"per_source_limit\"} 1"),
            "{text}"
        );
    }
}
