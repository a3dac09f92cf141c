//! Metric families of the Five9 VoiceStream destination: streams by result, authentication failures, legs
//! streaming now, and webhook requests by result. Labels are bounded enums; no call id, domain or subscription is ever a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a VoiceStream stream (one call leg) was taken or refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StreamResult {
    /// Config accepted, 1001 sent, recorded.
    Accepted,
    /// Trust token missing, wrong, or for an unknown subscription: UNAUTHENTICATED.
    RefusedAuth,
    /// Protocol violation (no config first, unsupported encoding, oversized chunk): INVALID_ARGUMENT or
    /// UNIMPLEMENTED.
    RefusedProtocol,
    /// Too many streams or calls: RESOURCE_EXHAUSTED.
    RefusedCapacity,
}

impl StreamResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::RefusedAuth => "refused_auth",
            Self::RefusedProtocol => "refused_protocol",
            Self::RefusedCapacity => "refused_capacity",
        }
    }
}

impl EncodeLabelValue for StreamResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// How a Five9 webhook request was answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum WebhookResult {
    /// GET verification answered with the trust token's hash.
    Verified,
    /// An event accepted (sealed into its call's manifest, or kept for it).
    Accepted,
    /// Missing or wrong API key: 401.
    Unauthorised,
    /// Malformed JSON, no call id, or too large: 400/413.
    Malformed,
    /// Unknown path or method: 404/405.
    NotFound,
}

impl WebhookResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Accepted => "accepted",
            Self::Unauthorised => "unauthorised",
            Self::Malformed => "malformed",
            Self::NotFound => "not_found",
        }
    }
}

impl EncodeLabelValue for WebhookResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: StreamResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    result: WebhookResult,
}

/// VoiceStream families; part of [`crate::Metrics`].
#[derive(Debug, Clone, Default)]
pub struct VoiceStreamMetrics {
    streams: Family<ResultLabel, Counter>,
    /// Streams refused for their trust token.
    pub auth_failures: Counter,
    /// Legs streaming now.
    pub legs_active: Gauge,
    webhooks: Family<WebhookLabel, Counter>,
}

impl VoiceStreamMetrics {
    pub fn stream(&self, result: StreamResult) {
        self.streams.get_or_create(&ResultLabel { result }).inc();
        if result == StreamResult::RefusedAuth {
            self.auth_failures.inc();
        }
    }

    pub fn webhook(&self, result: WebhookResult) {
        self.webhooks.get_or_create(&WebhookLabel { result }).inc();
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "voicestream_webhook_requests",
            "Five9 webhook requests (CTI events, stream status, verification), by result",
            self.webhooks.clone(),
        );
        registry.register(
            "voicestream_streams",
            "VoiceStream streams (call legs), by result",
            self.streams.clone(),
        );
        registry.register(
            "voicestream_auth_failures",
            "VoiceStream streams refused for their trust token",
            self.auth_failures.clone(),
        );
        registry.register(
            "voicestream_legs_active",
            "VoiceStream legs streaming now",
            self.legs_active.clone(),
        );
    }
}
