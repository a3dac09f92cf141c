//! On-device transcription: per-leg voice activity detection and endpointing, a fixed pool of whisper.cpp
//! workers behind a bounded job queue, and the segments they produce. Audio never leaves this process and
//! transcript text is carried as `Pii<String>`, so it cannot reach a log line.
//!
//! Flow: [`CallTranscription::push`] (leg PCM at its own rate) → front-end thread ([`resample`] to 16 kHz,
//! VAD, [`endpoint`]) → job queue → whisper workers ([`recognize`]) → the call's [`SegmentSink`].

#[cfg(feature = "engine")]
pub mod blas;
pub mod endpoint;
pub mod model;
#[cfg(feature = "engine")]
mod pool;
#[cfg(feature = "engine")]
pub mod recognize;
pub mod resample;
#[cfg(feature = "engine")]
pub mod vad;

#[cfg(feature = "engine")]
pub use pool::{
    CallTranscription, Finishing, Gap, GapReason, PoolConfig, Segment, SegmentSink, TimedWord, Transcriber,
    VoiceActivity,
};
#[cfg(feature = "engine")]
pub use recognize::{DecoderConfig, Model, ModelError};
#[cfg(feature = "engine")]
pub use vad::{SileroModel, VadError, VadStream};
