//! Pause/resume requests from an agent-desktop integration (HTTPS control API, MQTT commands), counted by
//! source, action and outcome. Labels are bounded enums; the call a request named is never a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Where a request came from (also written into the manifest's pause intervals).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestSource {
    /// The `[control_api]` HTTPS listener.
    Https,
    /// `cmd/pause` / `cmd/resume` over MQTT.
    Mqtt,
}

impl RequestSource {
    /// The label value (and the manifest's `requested_by`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Mqtt => "mqtt",
        }
    }
}

/// What a request asked for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestAction {
    Pause,
    Resume,
    /// Read the state only.
    Status,
}

impl RequestAction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Status => "status",
        }
    }
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Done (or already so: requests are idempotent).
    Ok,
    /// Missing or wrong credentials (HTTPS 401).
    Unauthorised,
    /// Malformed request (HTTPS 400/404/405/413, MQTT `bad_request`).
    BadRequest,
    /// No live call has the id (HTTPS 404, MQTT `not_found`).
    NotFound,
    /// The call did not answer in time, too many pauses, or the command queue is full (HTTPS 503/429, MQTT
    /// `busy`).
    Busy,
}

impl RequestOutcome {
    /// The label value (and the MQTT reply's `outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unauthorised => "unauthorised",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Busy => "busy",
        }
    }
}

macro_rules! label_value {
    ($($kind:ty),*) => {$(
        impl EncodeLabelValue for $kind {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}
label_value!(RequestSource, RequestAction, RequestOutcome);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: RequestSource,
    action: RequestAction,
    outcome: RequestOutcome,
}

/// Pause-request families; part of [`crate::Metrics`].
#[derive(Debug, Clone, Default)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl RequestMetrics {
    pub fn request(&self, source: RequestSource, action: RequestAction, outcome: RequestOutcome) {
        self.requests
            .get_or_create(&RequestLabels {
                source,
                action,
                outcome,
            })
            .inc();
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "pause_requests",
            "Pause/resume/status requests about a live call, by source (https, mqtt), action and outcome",
            self.requests.clone(),
        );
    }
}
