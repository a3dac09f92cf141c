//! Metric families of audio redaction in recordings: how much audio was silenced before encryption and why,
//! and how long recorders held audio back waiting for its words. Labels are a bounded enum.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Why a stretch of recorded audio was silenced.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SilenceReason {
    /// Words the transcript redacted (card numbers, SSNs, …).
    Speech,
    /// A DTMF tone or RFC 4733 event.
    Dtmf,
    /// Audio no transcript covered (dropped, failed, or undecided past the hold).
    Unverified,
}

impl SilenceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Speech => "speech",
            Self::Dtmf => "dtmf",
            Self::Unverified => "unverified",
        }
    }
}

impl EncodeLabelValue for SilenceReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: SilenceReason,
}

/// Audio-redaction families; part of [`crate::Metrics`].
#[derive(Debug, Clone)]
pub struct RedactionMetrics {
    silenced: Family<ReasonLabel, Counter<f64, AtomicU64>>,
    /// At each write of a recording: how far behind the write-behind point the written audio ends.
    pub hold_seconds: Histogram,
}

impl Default for RedactionMetrics {
    fn default() -> Self {
        RedactionMetrics {
            silenced: Family::default(),
            hold_seconds: Histogram::new([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0]),
        }
    }
}

impl RedactionMetrics {
    /// Counts `seconds` of audio (one channel) silenced for `reason`.
    pub fn silenced(&self, reason: SilenceReason, seconds: f64) {
        self.silenced
            .get_or_create(&ReasonLabel { reason })
            .inc_by(seconds);
    }

    /// Seconds counted for `reason` so far.
    pub fn silenced_seconds(&self, reason: SilenceReason) -> f64 {
        self.silenced.get_or_create(&ReasonLabel { reason }).get()
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "audio_silenced_seconds",
            "Seconds of recorded audio (per channel) silenced before encryption, by reason",
            self.silenced.clone(),
        );
        registry.register(
            "audio_hold_seconds",
            "How long recorders held audio back (beyond the write-behind) waiting for its words or tones",
            self.hold_seconds.clone(),
        );
    }
}
