//! Metric families of on-device transcription: segments by result, audio and segments shed under load,
//! the job queue, how far transcription lags behind the calls, decode time and end-of-utterance latency.
//! Labels are bounded enums; no call, leg or text ever becomes a label.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What became of one speech segment found by the VAD.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SegmentResult {
    /// Decoded to text.
    Text,
    /// Decoded, judged not speech (or only non-speech markers): no text.
    NoSpeech,
    /// Dropped unread because the job queue was full (oldest first).
    Dropped,
    /// whisper.cpp returned an error.
    Failed,
}

impl SegmentResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::NoSpeech => "no_speech",
            Self::Dropped => "dropped",
            Self::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for SegmentResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The transcription pool's health, as one of three states.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TranscriptionState {
    /// Keeping up.
    Ok,
    /// Segments wait longer than the lag alarm before a worker takes them.
    Lagging,
    /// Audio or segments were dropped recently: transcripts have gaps.
    Shedding,
}

impl TranscriptionState {
    pub const ALL: [TranscriptionState; 3] = [Self::Ok, Self::Lagging, Self::Shedding];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Lagging => "lagging",
            Self::Shedding => "shedding",
        }
    }
}

impl EncodeLabelValue for TranscriptionState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: SegmentResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: TranscriptionState,
}

/// Transcription families; part of [`crate::Metrics`].
#[derive(Debug, Clone)]
pub struct TranscriptionMetrics {
    segments: Family<ResultLabel, Counter>,
    /// Seconds of leg audio refused at the pool's input (its queue was full).
    pub audio_dropped_seconds: Counter<f64, AtomicU64>,
    /// Segments waiting for a worker.
    pub queue_depth: Gauge,
    /// Age of the oldest waiting segment (0 when none waits).
    pub lag_seconds: Gauge<f64, AtomicU64>,
    state: Family<StateLabel, Gauge>,
    /// CPU-bound decode time per segment.
    pub decode_seconds: Histogram,
    /// From the end of an utterance (as the audio arrived) to its text.
    pub segment_latency_seconds: Histogram,
    /// Legs whose audio is being transcribed now.
    pub legs_active: Gauge,
}

impl Default for TranscriptionMetrics {
    fn default() -> Self {
        let buckets = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
        TranscriptionMetrics {
            segments: Family::default(),
            audio_dropped_seconds: Counter::default(),
            queue_depth: Gauge::default(),
            lag_seconds: Gauge::default(),
            state: Family::default(),
            decode_seconds: Histogram::new(buckets),
            segment_latency_seconds: Histogram::new(buckets),
            legs_active: Gauge::default(),
        }
    }
}

impl TranscriptionMetrics {
    pub fn segment(&self, result: SegmentResult) {
        self.segments.get_or_create(&ResultLabel { result }).inc();
    }

    /// The number of segments counted with `result` so far.
    pub fn segments_with(&self, result: SegmentResult) -> u64 {
        self.segments.get_or_create(&ResultLabel { result }).get()
    }

    /// The current state (`ok` before any was set).
    pub fn state(&self) -> TranscriptionState {
        TranscriptionState::ALL
            .into_iter()
            .find(|&state| {
                self.state
                    .get(&StateLabel { state })
                    .is_some_and(|gauge| gauge.get() == 1)
            })
            .unwrap_or(TranscriptionState::Ok)
    }

    /// Sets the current state: its series is 1, the others 0.
    pub fn set_state(&self, current: TranscriptionState) {
        for state in TranscriptionState::ALL {
            self.state
                .get_or_create(&StateLabel { state })
                .set(i64::from(state == current));
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "transcription_segments",
            "Speech segments found by the VAD, by what became of them",
            self.segments.clone(),
        );
        registry.register(
            "transcription_audio_dropped_seconds",
            "Seconds of call audio not transcribed because the transcription input was full",
            self.audio_dropped_seconds.clone(),
        );
        registry.register(
            "transcription_queue_depth",
            "Speech segments waiting for a whisper worker",
            self.queue_depth.clone(),
        );
        registry.register(
            "transcription_lag_seconds",
            "Age of the oldest speech segment waiting for a whisper worker",
            self.lag_seconds.clone(),
        );
        registry.register(
            "transcription_state",
            "Transcription health: 1 for the current state (ok, lagging, shedding), 0 for the others",
            self.state.clone(),
        );
        registry.register(
            "transcription_decode_seconds",
            "Time a whisper worker spent decoding one segment",
            self.decode_seconds.clone(),
        );
        registry.register(
            "transcription_segment_latency_seconds",
            "Time from the end of an utterance to its transcribed segment",
            self.segment_latency_seconds.clone(),
        );
        registry.register(
            "transcription_legs_active",
            "Call legs being transcribed now",
            self.legs_active.clone(),
        );
    }
}
