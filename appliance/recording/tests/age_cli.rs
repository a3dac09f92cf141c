//! The writer's files, recovered files and sealed texts decrypt with the stock `age` CLI.

mod support;

use std::time::Instant;

use airlock_recording::{
    DevIdentity, RecordingError, RecordingWriter, WavFormat, find_interrupted, recover, seal_text,
};
use sha2::{Digest, Sha256};
use support::{Scratch, decrypt_with, samples_of_consistent_wav, signal};

const MONO_8K: WavFormat = WavFormat {
    sample_rate: 8000,
    channels: 1,
};
const CHUNK: usize = 64 * 1024;
const WAV_HEADER: usize = 44;

/// The WAV the writer should produce for these samples.
pub fn expected_wav(sample_rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut wav = airlock_media::wav::header(sample_rate, channels, data.len() as u32).to_vec();
    wav.extend_from_slice(&data);
    wav
}

/// Mono sample count whose WAV (header included) is `stream_bytes` long (rounded down to whole samples).
fn samples_for_stream(stream_bytes: usize) -> usize {
    (stream_bytes - WAV_HEADER) / 2
}

fn record(scratch: &Scratch, name: &str, format: WavFormat, samples: &[i16], write_size: usize) -> Vec<u8> {
    let dir = scratch.recording_dir(name);
    let mut writer = RecordingWriter::create(&dir, &scratch.recipients, format).unwrap();
    for (index, piece) in samples.chunks(write_size.max(1)).enumerate() {
        writer.write_interleaved(piece).unwrap();
        if index % 7 == 3 {
            writer.checkpoint().unwrap();
        }
    }
    let finished = writer.finish().unwrap();
    let bytes = std::fs::read(&finished.path).unwrap();
    assert_eq!(finished.bytes, bytes.len() as u64);
    assert_eq!(finished.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        finished.frames,
        (samples.len() / usize::from(format.channels)) as u64
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("recording.wav.age")],
        "work files removed"
    );
    scratch.decrypt(&finished.path)
}

#[test]
fn decrypts_with_the_age_cli_at_every_chunk_boundary() {
    let scratch = Scratch::new();
    let sample_counts = [
        0,
        1,
        samples_for_stream(CHUNK - 2),
        samples_for_stream(CHUNK),
        samples_for_stream(CHUNK + 2),
        samples_for_stream(2 * CHUNK),
        samples_for_stream(3 * CHUNK),
        samples_for_stream(3 * CHUNK) + 1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        3 * CHUNK,
    ];
    for count in sample_counts {
        let samples = signal(count as u64, count);
        for write_size in [160, 4096, count.max(1)] {
            let plain = record(
                &scratch,
                &format!("mono-{count}-{write_size}"),
                MONO_8K,
                &samples,
                write_size,
            );
            assert_eq!(
                plain,
                expected_wav(8000, 1, &samples),
                "{count} samples written {write_size} at a time"
            );
        }
    }
}

#[test]
fn decrypts_a_megabyte_of_random_stereo_audio() {
    let scratch = Scratch::new();
    let mut bytes = vec![0u8; 1_000_004];
    getrandom::fill(&mut bytes).unwrap();
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let format = WavFormat {
        sample_rate: 16000,
        channels: 2,
    };
    let plain = record(&scratch, "random", format, &samples, 640);
    assert_eq!(plain, expected_wav(16000, 2, &samples));
}

#[test]
fn every_recipient_can_decrypt() {
    let scratch = Scratch::new();
    let second = DevIdentity::generate().unwrap();
    let second_file = scratch.dir.path().join("second.txt");
    std::fs::write(&second_file, second.to_identity_file()).unwrap();
    let dir = scratch.recording_dir("two");
    let mut writer = RecordingWriter::create(
        &dir,
        &[scratch.recipients.clone(), vec![second.recipient()]].concat(),
        MONO_8K,
    )
    .unwrap();
    let samples = signal(0, 100_000);
    writer.write_interleaved(&samples).unwrap();
    let finished = writer.finish().unwrap();
    let expected = expected_wav(8000, 1, &samples);
    assert_eq!(scratch.decrypt(&finished.path), expected);
    assert_eq!(decrypt_with(&second_file, &finished.path), expected);
}

#[test]
fn no_plaintext_audio_reaches_the_disk() {
    let scratch = Scratch::new();
    let dir = scratch.recording_dir("plain");
    let mut writer = RecordingWriter::create(&dir, &scratch.recipients, MONO_8K).unwrap();
    let marker: Vec<i16> = (0..4000).map(|i| 0x4141 + (i % 3) as i16).collect();
    let marker_bytes: Vec<u8> = marker.iter().flat_map(|s| s.to_le_bytes()).collect();
    for _ in 0..40 {
        writer.write_interleaved(&marker).unwrap();
        writer.checkpoint().unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let contents = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !contents
                    .windows(64)
                    .any(|w| marker_bytes.windows(64).next() == Some(w))
            );
            assert!(!contents.windows(4).any(|w| w == b"RIFF" || w == b"WAVE"));
        }
    }
    drop(writer);
}

#[test]
fn rejects_bad_input_without_panicking() {
    let scratch = Scratch::new();
    let dir = scratch.recording_dir("bad");
    assert!(matches!(
        RecordingWriter::create(&dir, &[], MONO_8K),
        Err(RecordingError::NoRecipients)
    ));
    let zero_channels = WavFormat {
        sample_rate: 8000,
        channels: 0,
    };
    assert!(RecordingWriter::create(&dir, &scratch.recipients, zero_channels).is_err());
    let stereo = WavFormat {
        sample_rate: 8000,
        channels: 2,
    };
    let mut writer = RecordingWriter::create(&dir, &scratch.recipients, stereo).unwrap();
    assert!(writer.write_interleaved(&[1, 2, 3]).is_err());
    assert!(matches!(
        RecordingWriter::create(&dir, &scratch.recipients, stereo),
        Err(RecordingError::AlreadyExists { .. })
    ));
    writer.write_interleaved(&[1, 2]).unwrap();
    let finished = writer.finish().unwrap();
    assert_eq!(scratch.decrypt(&finished.path), expected_wav(8000, 2, &[1, 2]));
}

/// Writes `before` then checkpoints, then writes `after` without a checkpoint and abandons the writer.
fn crash_after(scratch: &Scratch, name: &str, before: &[i16], after: &[i16]) -> std::path::PathBuf {
    let dir = scratch.recording_dir(name);
    let mut writer = RecordingWriter::create(&dir, &scratch.recipients, MONO_8K).unwrap();
    writer.write_interleaved(before).unwrap();
    writer.checkpoint().unwrap();
    writer.write_interleaved(after).unwrap();
    std::mem::forget(writer);
    dir
}

#[test]
fn recovers_everything_up_to_the_last_checkpoint() {
    let scratch = Scratch::new();
    for (before, after) in [
        (0, 0),
        (0, 100),
        (10, 0),
        (samples_for_stream(CHUNK), 0),
        (samples_for_stream(CHUNK), 1),
        (samples_for_stream(CHUNK) + 1, 5 * CHUNK),
        (samples_for_stream(3 * CHUNK), 3 * CHUNK),
        (200_000, 70_000),
    ] {
        let samples = signal(7, before + after);
        let dir = crash_after(
            &scratch,
            &format!("crash-{before}-{after}"),
            &samples[..before],
            &samples[before..],
        );
        assert_eq!(find_interrupted(scratch.dir.path()).unwrap(), vec![dir.clone()]);
        let finished = recover(&dir).unwrap().expect("an interrupted recording");
        assert!(find_interrupted(scratch.dir.path()).unwrap().is_empty());
        let recovered = samples_of_consistent_wav(&scratch.decrypt(&finished.path));
        assert_eq!(recovered, samples[..before], "{before} checkpointed, {after} not");
        assert_eq!(finished.frames, before as u64);
        assert_eq!(recover(&dir).unwrap(), None, "nothing left to recover");
    }
}

#[test]
fn recovery_ignores_torn_body_writes_and_stale_temp_files() {
    let scratch = Scratch::new();
    let samples = signal(1, 300_000);
    let dir = crash_after(&scratch, "torn", &samples[..150_000], &samples[150_000..]);
    let body = dir.join("recording.body");
    // A chunk cut in the middle, as a crash during a write leaves it.
    let len = std::fs::metadata(&body).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&body).unwrap();
    file.set_len(len - 1000).unwrap();
    drop(file);
    std::fs::write(dir.join("recording.checkpoint.tmp"), b"half a checkpoint").unwrap();
    std::fs::write(dir.join("recording.wav.age.tmp"), b"half a final file").unwrap();
    let finished = recover(&dir).unwrap().unwrap();
    assert_eq!(
        samples_of_consistent_wav(&scratch.decrypt(&finished.path)),
        samples[..150_000]
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("recording.wav.age")]);
}

#[test]
fn recovery_reports_a_body_shorter_than_its_checkpoint() {
    let scratch = Scratch::new();
    let samples = signal(1, 200_000);
    let dir = crash_after(&scratch, "short", &samples, &[]);
    let body = dir.join("recording.body");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&body)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert!(matches!(recover(&dir), Err(RecordingError::TruncatedBody { .. })));
    std::fs::write(dir.join("recording.checkpoint"), b"garbage").unwrap();
    assert!(matches!(
        recover(&dir),
        Err(RecordingError::CorruptCheckpoint { .. })
    ));
}

#[test]
fn recovery_after_a_crash_during_finish_yields_the_same_file() {
    let scratch = Scratch::new();
    let dir = scratch.recording_dir("finishing");
    let mut writer = RecordingWriter::create(&dir, &scratch.recipients, MONO_8K).unwrap();
    let samples = signal(3, 150_000);
    writer.write_interleaved(&samples).unwrap();
    writer.checkpoint().unwrap();
    let checkpoint = std::fs::read(dir.join("recording.checkpoint")).unwrap();
    let body = std::fs::read(dir.join("recording.body")).unwrap();
    let finished = writer.finish().unwrap();
    // Crash after the final rename, before the work files were removed.
    std::fs::write(dir.join("recording.checkpoint"), &checkpoint).unwrap();
    std::fs::write(dir.join("recording.body"), &body).unwrap();
    assert_eq!(recover(&dir).unwrap().as_ref(), Some(&finished));
    // Crash after the body was removed, before the checkpoint was.
    std::fs::write(dir.join("recording.checkpoint"), &checkpoint).unwrap();
    assert_eq!(recover(&dir).unwrap().as_ref(), Some(&finished));
    assert_eq!(
        samples_of_consistent_wav(&scratch.decrypt(&finished.path)),
        samples
    );
}

#[test]
fn sealed_texts_decrypt_with_the_age_cli() {
    let scratch = Scratch::new();
    for (index, text) in ["", "x", "sip:+15551234567@example.com", "Zoë <zoe@example.com> ☎"]
        .into_iter()
        .map(str::to_string)
        .chain((0..6).map(|n| "metadata ".repeat(n * 5000 + 7)))
        .enumerate()
    {
        let armored = seal_text(&scratch.recipients, &text).unwrap();
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
        assert!(armored.ends_with("-----END AGE ENCRYPTED FILE-----\n"));
        assert!(
            armored
                .lines()
                .all(|line| line.len() <= 64 || line.starts_with("-----"))
        );
        let path = scratch.dir.path().join(format!("sealed-{index}.age"));
        std::fs::write(&path, &armored).unwrap();
        assert_eq!(scratch.decrypt(&path), text.as_bytes());
    }
}

/// Throughput of `write_interleaved` + one `checkpoint` per second of 8 kHz stereo audio (10 minutes).
/// Run with `cargo test --release -p airlock-recording --test age_cli -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn throughput_8khz_stereo_with_one_checkpoint_per_second() {
    let scratch = Scratch::new();
    let dir = scratch.recording_dir("bench");
    let format = WavFormat {
        sample_rate: 8000,
        channels: 2,
    };
    let mut writer = RecordingWriter::create(&dir, &scratch.recipients, format).unwrap();
    let second = signal(0, 16_000);
    let seconds = 600;
    let started = Instant::now();
    for _ in 0..seconds {
        for block in second.chunks(320) {
            writer.write_interleaved(block).unwrap();
        }
        writer.checkpoint().unwrap();
    }
    let elapsed = started.elapsed();
    let finished = writer.finish().unwrap();
    let unsynced_dir = scratch.recording_dir("bench-no-checkpoints");
    let mut unsynced = RecordingWriter::create(&unsynced_dir, &scratch.recipients, format).unwrap();
    let unsynced_started = Instant::now();
    for _ in 0..seconds {
        for block in second.chunks(320) {
            unsynced.write_interleaved(block).unwrap();
        }
    }
    let unsynced_elapsed = unsynced_started.elapsed();
    drop(unsynced);
    let megabytes = (seconds * 32_000) as f64 / 1e6;
    eprintln!(
        "{seconds} s of 8 kHz stereo ({megabytes:.1} MB PCM) in {:.3} s: {:.1} MB/s, {:.0}x real time, \
         {:.2} ms per checkpointed second; finish {} bytes; without checkpoints {:.1} MB/s",
        elapsed.as_secs_f64(),
        megabytes / elapsed.as_secs_f64(),
        f64::from(seconds) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / f64::from(seconds),
        finished.bytes,
        megabytes / unsynced_elapsed.as_secs_f64(),
    );
}
