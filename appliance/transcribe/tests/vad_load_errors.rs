//! Library errors, which can only be seen before ONNX Runtime is loaded into the process: this file is its
//! own test binary (process) with one test, so nothing loads ONNX Runtime before it.

mod common;

use std::path::PathBuf;

use airlock_transcribe::vad::{SileroModel, VadError};

/// The C library this process already has mapped: a real shared library that is not ONNX Runtime.
fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains("/libc.so") || path.contains("/libc-"))
        .map(PathBuf::from)
        .expect("libc in /proc/self/maps")
}

#[test]
fn library_errors_name_the_file_and_leave_the_process_able_to_load_later() {
    let model = common::model_path();
    let dir = std::env::temp_dir().join(format!("airlock-vad-lib-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let missing = dir.join("libonnxruntime.so");
    let error = SileroModel::load(&model, &missing).expect_err("missing library");
    assert!(matches!(error, VadError::LibraryMissing { .. }), "{error:?}");
    assert!(error.to_string().contains(&*missing.to_string_lossy()), "{error}");
    assert!(error.to_string().contains("ci/install-vad"), "{error}");

    let garbage = dir.join("garbage.so");
    std::fs::write(&garbage, b"not an ELF file").expect("write");
    let error = SileroModel::load(&model, &garbage).expect_err("garbage library");
    assert!(matches!(error, VadError::LibraryLoad { .. }), "{error:?}");
    assert!(error.to_string().contains("garbage.so"), "{error}");

    let libc = libc_path();
    let error = SileroModel::load(&model, &libc).expect_err("libc is not ONNX Runtime");
    assert!(matches!(error, VadError::NotOnnxRuntime { .. }), "{error:?}");

    // None of the failures above left a half-initialised runtime behind.
    let mut vad = SileroModel::load(&model, &common::onnxruntime_path()).expect("load after failures");
    let p = airlock_transcribe::VadStream::new()
        .speech_probability(&mut vad, &[0.0; 512])
        .expect("inference");
    assert!(p < 0.05, "{p}");

    let _ = std::fs::remove_dir_all(&dir);
}
