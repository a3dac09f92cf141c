//! Local capture from a sound card (`[capture]`): whether the device is open, how often it failed, audio the
//! real-time callback had to drop because the recorder fell behind, and the calls the segmenter cut, by why
//! each ended. Labels are bounded enums.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a captured call ended (the segmenter's reasons).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CaptureEnd {
    Silence,
    MaxLength,
    Schedule,
    /// The device failed or the appliance stopped.
    Interrupted,
}

impl CaptureEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Silence => "silence",
            Self::MaxLength => "max_length",
            Self::Schedule => "schedule",
            Self::Interrupted => "interrupted",
        }
    }
}

impl EncodeLabelValue for CaptureEnd {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabel {
    reason: CaptureEnd,
}

/// The capture families.
#[derive(Debug, Clone, Default)]
pub struct CaptureMetrics {
    /// 1 while the capture device is open and delivering audio.
    pub device_up: Gauge,
    /// Times the device could not be opened or failed while open.
    pub device_failures: Counter,
    /// Sample frames (one sample per channel) dropped because the queue to the recorder was full; the gap is
    /// recorded as silence.
    pub dropped_frames: Counter,
    /// Segments that could not become calls (admission closed or the recording could not be created).
    pub refused: Counter,
    /// Overruns the device reported (audio it had and lost before airlock read it).
    pub overruns: Counter,
    /// Times the stream's timeline was put back on the real clock (a device clock running fast or slow, or
    /// audio lost in an overrun).
    pub clock_resyncs: Counter,
    calls: Family<EndLabel, Counter>,
}

impl CaptureMetrics {
    /// Records a captured call that ended for `reason`.
    pub fn call_cut(&self, reason: CaptureEnd) {
        self.calls.get_or_create(&EndLabel { reason }).inc();
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "capture_device_up",
            "1 while the local capture device is open and delivering audio",
            self.device_up.clone(),
        );
        registry.register(
            "capture_device_failures",
            "Times the local capture device could not be opened or failed while open",
            self.device_failures.clone(),
        );
        registry.register(
            "capture_dropped_frames",
            "Captured sample frames dropped because the recorder fell behind (recorded as silence)",
            self.dropped_frames.clone(),
        );
        registry.register(
            "capture_refused",
            "Captured segments not recorded: admission closed or the recording could not be created",
            self.refused.clone(),
        );
        registry.register(
            "capture_overruns",
            "Overruns the local capture device reported (audio lost before airlock read it)",
            self.overruns.clone(),
        );
        registry.register(
            "capture_clock_resyncs",
            "Times the capture timeline was put back on the real clock (device clock drift or overruns)",
            self.clock_resyncs.clone(),
        );
        registry.register(
            "capture_calls",
            "Calls cut from the local capture, by why they ended",
            self.calls.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed() {
        let metrics = CaptureMetrics::default();
        metrics.device_up.set(1);
        metrics.dropped_frames.inc_by(960);
        metrics.overruns.inc();
        metrics.clock_resyncs.inc();
        metrics.call_cut(CaptureEnd::Silence);
        let mut registry = Registry::with_prefix("airlock");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("airlock_capture_device_up 1"), "{text}");
        assert!(
            text.contains("airlock_capture_dropped_frames_total 960"),
            "{text}"
        );
        assert!(text.contains("airlock_capture_overruns_total 1"), "{text}");
        assert!(text.contains("airlock_capture_clock_resyncs_total 1"), "{text}");
        assert!(
            text.contains("airlock_capture_calls_total{reason=\"silence\"} 1"),
            "{text}"
        );
    }
}
