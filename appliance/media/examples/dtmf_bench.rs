//! Benchmark: throughput of the in-band DTMF detector and masker against a plain copy of the same audio in
//! the same run, at 8 and 16 kHz, fed in 20 ms chunks as a recorder would. Synthetic audio: noise with a
//! DTMF digit every second. `cargo run --release -p airlock-media --example dtmf_bench [seconds]`.

use std::hint::black_box;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use airlock_media::{DtmfDetector, DtmfMasker};

fn audio(rate: u32, seconds: usize) -> Vec<i16> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..rate as usize * seconds)
        .map(|n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 52) as f64 - 2048.0;
            let t = n as f64 / f64::from(rate);
            let tone = if t.fract() < 0.08 {
                5000.0
                    * ((2.0 * std::f64::consts::PI * 852.0 * t).sin()
                        + (2.0 * std::f64::consts::PI * 1477.0 * t).sin())
            } else {
                0.0
            };
            (noise + tone) as i16
        })
        .collect()
}

/// Best of five runs of `work` over the audio.
fn best(mut work: impl FnMut()) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let seconds = match std::env::args().nth(1).map(|arg| arg.parse::<usize>()) {
        None => 60,
        Some(Ok(seconds)) if seconds > 0 => seconds,
        Some(_) => {
            eprintln!("dtmf_bench: the argument is a positive number of seconds of audio");
            return ExitCode::FAILURE;
        }
    };
    let mut report = String::new();
    for rate in [8000u32, 16000] {
        let input = audio(rate, seconds);
        let chunk = rate as usize / 50;
        let mut output = Vec::with_capacity(input.len() + rate as usize);
        let mut tones = Vec::new();

        let copy = best(|| {
            output.clear();
            for piece in input.chunks(chunk) {
                output.extend_from_slice(black_box(piece));
            }
            black_box(&output);
        });
        let detect = best(|| {
            tones.clear();
            let Ok(mut detector) = DtmfDetector::new(rate) else {
                return;
            };
            for (index, piece) in input.chunks(chunk).enumerate() {
                let _ = detector.push((index * chunk) as u64, black_box(piece), &mut tones);
            }
            detector.flush(&mut tones);
            black_box(&tones);
        });
        let mask = best(|| {
            output.clear();
            tones.clear();
            let Ok(mut masker) = DtmfMasker::new(rate) else {
                return;
            };
            for piece in input.chunks(chunk) {
                masker.push(black_box(piece), &mut output, &mut tones);
            }
            masker.flush(&mut output, &mut tones);
            black_box(&output);
        });

        let audio_seconds = input.len() as f64 / f64::from(rate);
        report.push_str(&format!(
            "{rate} Hz, {audio_seconds:.0} s of audio, 20 ms chunks, {} tones found\n",
            tones.len()
        ));
        for (name, time) in [
            ("plain copy", copy),
            ("detector", detect),
            ("detector+masker", mask),
        ] {
            let secs = time.as_secs_f64().max(1e-9);
            report.push_str(&format!(
                "  {name:<16} {:>8.2} ms {:>8.1} Msamples/s {:>9.0}x real time ({:.4}% of a core per call)\n",
                secs * 1e3,
                input.len() as f64 / secs / 1e6,
                audio_seconds / secs,
                100.0 * secs / audio_seconds,
            ));
        }
    }
    if std::io::stdout().write_all(report.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
