//! Silero VAD through the installed ONNX Runtime (ci/install-vad) against the reference Python package's
//! probabilities (tests/data/vad_reference.txt, written by tests/data/make_vad_reference.py).

mod common;

use std::path::Path;

use airlock_transcribe::vad::{CHUNK_SAMPLES, SileroModel, VadError, VadStream};
use sha2::{Digest, Sha256};

/// Largest difference allowed between our probabilities and the reference package's.
const TOLERANCE: f32 = 1e-4;

fn load() -> SileroModel {
    SileroModel::load(&common::model_path(), &common::onnxruntime_path())
        .unwrap_or_else(|error| panic!("loading the VAD failed: {error}"))
}

/// One file of the reference fixture.
struct Reference {
    path: String,
    sha256: String,
    samples: usize,
    probabilities: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let text = include_str!("data/vad_reference.txt");
    let mut files: Vec<Reference> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        if let Some(rest) = line.strip_prefix("file ") {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let [path, sha256, samples] = fields[..] else {
                panic!("bad fixture line {line:?}");
            };
            files.push(Reference {
                path: path.to_string(),
                sha256: sha256.to_string(),
                samples: samples.parse().expect("sample count"),
                probabilities: Vec::new(),
            });
        } else {
            let file = files
                .last_mut()
                .expect("probability before the first `file` line");
            file.probabilities.push(
                line.parse()
                    .unwrap_or_else(|_| panic!("bad fixture line {line:?}")),
            );
        }
    }
    assert!(!files.is_empty());
    files
}

/// The file's samples cut into 512-sample chunks, the last one zero-padded (as the reference does).
fn chunks(file: &Reference) -> Vec<[f32; CHUNK_SAMPLES]> {
    let bytes = std::fs::read(&file.path).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (install Debian package pocketsphinx-testdata; ci/setup does)",
            file.path
        )
    });
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        file.sha256,
        "{} is not the file the reference was made from",
        file.path
    );
    let samples = common::read_speech(&file.path);
    assert_eq!(samples.len(), file.samples, "{}", file.path);
    let chunks: Vec<[f32; CHUNK_SAMPLES]> = samples
        .chunks(CHUNK_SAMPLES)
        .map(|part| {
            let mut chunk = [0.0; CHUNK_SAMPLES];
            chunk[..part.len()].copy_from_slice(part);
            chunk
        })
        .collect();
    assert_eq!(chunks.len(), file.probabilities.len(), "{}", file.path);
    chunks
}

#[test]
fn matches_the_python_reference_chunk_by_chunk() {
    let mut model = load();
    let mut stream = VadStream::new();
    let mut worst = 0.0f32;
    for (index, file) in reference().iter().enumerate() {
        // The first file runs on a new stream, later ones on the same stream after reset().
        if index > 0 {
            stream.reset();
        }
        for (chunk_index, (chunk, expected)) in chunks(file).iter().zip(&file.probabilities).enumerate() {
            let got = stream.speech_probability(&mut model, chunk).expect("inference");
            let difference = (got - expected).abs();
            assert!(
                difference <= TOLERANCE,
                "{} chunk {chunk_index}: ours {got}, reference {expected}",
                file.path
            );
            worst = worst.max(difference);
        }
        let speech = file.probabilities.iter().filter(|p| **p > 0.5).count();
        assert!(
            speech * 2 > file.probabilities.len(),
            "{}: mostly speech",
            file.path
        );
    }
    eprintln!("largest difference from the reference: {worst:e}");
}

#[test]
fn legs_interleaved_on_one_model_match_the_reference() {
    let mut model = load();
    let files = reference();
    let audio: Vec<Vec<[f32; CHUNK_SAMPLES]>> = files.iter().map(chunks).collect();
    let mut legs: Vec<VadStream> = files.iter().map(|_| VadStream::new()).collect();
    let longest = audio.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..longest {
        // Round-robin, in reverse leg order on odd steps, so no leg follows the same one every time.
        let mut order: Vec<usize> = (0..legs.len()).collect();
        if step % 2 == 1 {
            order.reverse();
        }
        for leg in order {
            let Some(chunk) = audio[leg].get(step) else {
                continue;
            };
            let got = legs[leg]
                .speech_probability(&mut model, chunk)
                .expect("inference");
            let expected = files[leg].probabilities[step];
            assert!(
                (got - expected).abs() <= TOLERANCE,
                "{} chunk {step}: ours {got}, reference {expected}",
                files[leg].path
            );
        }
    }
}

#[test]
fn batched_legs_match_the_reference() {
    let mut model = load();
    let files = reference();
    let audio: Vec<Vec<[f32; CHUNK_SAMPLES]>> = files.iter().map(chunks).collect();
    let mut legs: Vec<VadStream> = files.iter().map(|_| VadStream::new()).collect();
    let mut worst = 0.0f32;
    let mut sizes = std::collections::BTreeSet::new();
    // Leg 1 sits out every third step (so it falls behind the others and its row moves), and legs leave
    // the batch when their file ends: the batch size and each leg's row change over time.
    let position = |leg: usize, step: usize| if leg == 1 { step - step / 3 } else { step };
    for step in 0.. {
        if (0..legs.len()).all(|leg| position(leg, step) >= audio[leg].len()) {
            break;
        }
        let mut batch: Vec<(usize, &mut VadStream, &[f32; CHUNK_SAMPLES])> = Vec::new();
        for (leg, stream) in legs.iter_mut().enumerate() {
            let sits_out = leg == 1 && step % 3 == 2;
            if let (false, Some(chunk)) = (sits_out, audio[leg].get(position(leg, step))) {
                batch.push((leg, stream, chunk));
            }
        }
        sizes.insert(batch.len());
        let positions: Vec<(usize, usize)> = batch
            .iter()
            .map(|(leg, _, _)| (*leg, position(*leg, step)))
            .collect();
        let mut rows: Vec<(&mut VadStream, &[f32; CHUNK_SAMPLES])> = batch
            .into_iter()
            .map(|(_, stream, chunk)| (stream, chunk))
            .collect();
        let got = model.speech_probabilities(&mut rows).expect("inference");
        assert_eq!(got.len(), positions.len());
        for ((leg, position), got) in positions.into_iter().zip(got) {
            let expected = files[leg].probabilities[position];
            let difference = (got - expected).abs();
            assert!(
                difference <= TOLERANCE,
                "{} chunk {position} in a batch: ours {got}, reference {expected}",
                files[leg].path
            );
            worst = worst.max(difference);
        }
    }
    assert!(sizes.len() >= 3, "batch sizes seen: {sizes:?}");
    assert!(
        model
            .speech_probabilities(&mut [])
            .expect("empty batch")
            .is_empty()
    );
    eprintln!("batched: largest difference from the reference {worst:e}, batch sizes {sizes:?}");
}

/// A small deterministic generator (xorshift64*) for white noise.
fn noise(seed: u64, amplitude: f32, len: usize) -> Vec<f32> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 random bits
            (r as f32 / (1u64 << 23) as f32 - 1.0) * amplitude
        })
        .collect()
}

fn probabilities(model: &mut SileroModel, samples: &[f32]) -> Vec<f32> {
    let mut stream = VadStream::new();
    samples
        .chunks_exact(CHUNK_SAMPLES)
        .map(|chunk| {
            let chunk: &[f32; CHUNK_SAMPLES] = chunk.try_into().expect("exact chunk");
            stream.speech_probability(model, chunk).expect("inference")
        })
        .collect()
}

#[test]
fn silence_and_white_noise_are_not_speech() {
    let mut model = load();
    let three_seconds = 3 * 16_000;
    let silence = probabilities(&mut model, &vec![0.0; three_seconds]);
    let max_silence = silence.iter().copied().fold(0.0, f32::max);
    assert!(max_silence < 0.05, "silence: max probability {max_silence}");
    for amplitude in [0.01, 0.1, 0.5] {
        let noisy = probabilities(&mut model, &noise(0x5eed, amplitude, three_seconds));
        let max = noisy.iter().copied().fold(0.0, f32::max);
        let mean = noisy.iter().sum::<f32>() / noisy.len() as f32;
        eprintln!("white noise ±{amplitude}: mean {mean:.4}, max {max:.4}");
        assert!(
            max < 0.2 && mean < 0.05,
            "white noise ±{amplitude}: mean {mean}, max {max}"
        );
    }
}

#[test]
fn reset_forgets_the_past() {
    let mut model = load();
    let file = &reference()[0];
    let audio = chunks(file);
    let mut fresh = VadStream::new();
    let mut used = VadStream::new();
    for chunk in &audio[..40] {
        used.speech_probability(&mut model, chunk).expect("inference");
    }
    assert_ne!(used, fresh);
    used.reset();
    assert_eq!(used, fresh);
    for chunk in &audio[..5] {
        let a = fresh.speech_probability(&mut model, chunk).expect("inference");
        let b = used.speech_probability(&mut model, chunk).expect("inference");
        assert_eq!(a.to_bits(), b.to_bits());
    }
}

#[test]
fn loading_twice_shares_the_runtime_and_another_library_is_refused() {
    let first = load();
    let second = load();
    drop((first, second));
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    match SileroModel::load(&common::model_path(), &other) {
        Err(VadError::OtherLibraryLoaded { requested, loaded }) => {
            assert_eq!(requested, other);
            assert!(loaded.ends_with("libonnxruntime.so"), "{}", loaded.display());
        }
        other => panic!("expected OtherLibraryLoaded, got {other:?}"),
    }
}

#[test]
fn model_errors_name_the_file() {
    let library = common::onnxruntime_path();
    let dir = std::env::temp_dir().join(format!("airlock-vad-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let missing = dir.join("no-such-model.onnx");
    let error = SileroModel::load(&missing, &library).expect_err("missing model");
    assert!(matches!(error, VadError::ModelMissing { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-model.onnx"), "{error}");
    assert!(error.to_string().contains("ci/install-vad"), "{error}");

    let corrupt = dir.join("corrupt.onnx");
    let mut bytes = std::fs::read(common::model_path()).expect("model");
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).expect("write");
    let error = SileroModel::load(&corrupt, &library).expect_err("truncated model");
    assert!(matches!(error, VadError::ModelInvalid { .. }), "{error:?}");
    assert!(error.to_string().contains("corrupt.onnx"), "{error}");

    let not_onnx = dir.join("text.onnx");
    std::fs::write(&not_onnx, b"this is not a model").expect("write");
    let error = SileroModel::load(&not_onnx, &library).expect_err("not a model");
    assert!(matches!(error, VadError::ModelInvalid { .. }), "{error:?}");

    let _ = std::fs::remove_dir_all(&dir);
}
