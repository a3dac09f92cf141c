//! On-device transcription: per-leg voice activity detection and endpointing, a fixed pool of whisper.cpp
//! workers behind a bounded job queue, and the segments they produce. Audio never leaves this process.

pub mod vad;

pub use vad::{SileroModel, VadError, VadStream};
