//! Where the tests find the files ci/install-asr installs, and the test audio.

#![allow(dead_code)] // each test binary uses part of this

use std::path::PathBuf;

/// `env` if set, else `<repo>/airlock-data/models/<default>`; panics (fails the test) when the file is not
/// there, saying how to install it. No test skips silently.
fn installed(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../airlock-data/models")
            .join(default)
    });
    assert!(
        path.is_file(),
        "{} not found (set {env} or run ci/install-asr from the repository root to install it)",
        path.display()
    );
    path
}

pub fn model_path() -> PathBuf {
    installed("AIRLOCK_VAD_MODEL", "silero_vad.onnx")
}

pub fn whisper_model_path() -> PathBuf {
    installed("AIRLOCK_WHISPER_MODEL", "ggml-tiny.en-q8_0.bin")
}

pub fn onnxruntime_path() -> PathBuf {
    installed("AIRLOCK_ONNXRUNTIME", "onnxruntime/libonnxruntime.so")
}

/// A 16 kHz mono PCM16 WAV file as f32 in [-1, 1) (sample / 32768, as the reference script reads it).
pub fn read_speech(path: &str) -> Vec<f32> {
    read_pcm16(path)
        .into_iter()
        .map(|s| f32::from(s) / 32768.0)
        .collect()
}

/// A 16 kHz mono PCM16 WAV file's samples.
pub fn read_pcm16(path: &str) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|error| {
        panic!("{path}: {error} (install Debian package pocketsphinx-testdata; ci/setup does)")
    });
    let wav = airlock_media::wav::parse(&bytes).unwrap_or_else(|error| panic!("{path}: {error}"));
    assert_eq!((wav.sample_rate, wav.channels), (16_000, 1), "{path}");
    wav.samples()
}
