//! Silero VAD cost on this machine: library and model load time, RSS added by ONNX Runtime and by each
//! session, CPU time per 32 ms chunk for one leg and for many legs interleaved on one thread, one call per
//! leg and batched (one call for all legs).
//!
//! CPU time is this thread's own (`/proc/thread-self/schedstat`, ns), so other load on the machine does
//! not inflate it; wall time is printed beside it.
//!
//! Usage (after ci/install-vad, from the repository root):
//!   cargo run --release -p airlock-transcribe --example vad_bench [LEGS,LEGS,...] [CALLS]
//! defaults: legs 1,10,100,400; at least CALLS (3000) model calls per leg count. Model and library paths come
//! from AIRLOCK_VAD_MODEL / AIRLOCK_ONNXRUNTIME, else ./airlock-data/models/....
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_transcribe::vad::{CHUNK_SAMPLES, SileroModel, VadStream};

const SPEECH: [&str; 3] = [
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "/usr/share/pocketsphinx/test/data/cards/005.wav",
];

fn path(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("airlock-data/models").join(default))
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .expect("schedstat field");
    Duration::from_nanos(ns)
}

/// A `/proc/self/status` field in kB (VmRSS, VmHWM) or a count (Threads).
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("status field")
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// All speech files, concatenated, as 512-sample chunks.
fn speech_chunks() -> Vec<[f32; CHUNK_SAMPLES]> {
    let mut samples = Vec::new();
    for file in SPEECH {
        let bytes = std::fs::read(file)
            .unwrap_or_else(|error| panic!("{file}: {error} (apt-get install pocketsphinx-testdata)"));
        let wav = airlock_media::wav::parse(&bytes).expect("wav");
        samples.extend(wav.samples().into_iter().map(|s| f32::from(s) / 32768.0));
    }
    samples
        .chunks_exact(CHUNK_SAMPLES)
        .map(|chunk| chunk.try_into().expect("exact"))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let leg_counts: Vec<usize> = args
        .next()
        .map(|list| list.split(',').map(|n| n.parse().expect("leg count")).collect())
        .unwrap_or_else(|| vec![1, 10, 100, 400]);
    let min_calls: usize = args.next().map(|n| n.parse().expect("calls")).unwrap_or(3000);
    let model_path = path("AIRLOCK_VAD_MODEL", "silero_vad.onnx");
    let library = path("AIRLOCK_ONNXRUNTIME", "onnxruntime/libonnxruntime.so");
    let audio = speech_chunks();

    println!(
        "machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| info.lines().find_map(|line| line
                .strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())))
            .unwrap_or_default()
    );
    println!("size_of::<VadStream>() = {} bytes", size_of::<VadStream>());

    let rss_start = status("VmRSS");
    let threads_start = status("Threads");
    let started = Instant::now();
    // dlopen alone (SileroModel::load does the same call and then finds the library already loaded).
    let _ = ort::init_from(&library).expect("dlopen onnxruntime");
    let dlopen = started.elapsed();
    let rss_dlopen = status("VmRSS");
    let threads_dlopen = status("Threads");

    let started = Instant::now();
    let mut model = SileroModel::load(&model_path, &library).expect("load");
    let first_load = started.elapsed();
    let rss_first = status("VmRSS");
    let threads_first = status("Threads");

    let started = Instant::now();
    let second = SileroModel::load(&model_path, &library).expect("load");
    let second_load = started.elapsed();
    let rss_second = status("VmRSS");
    let threads_second = status("Threads");
    drop(second);

    println!(
        "dlopen libonnxruntime.so: {:.1} ms, RSS +{:.1} MiB",
        dlopen.as_secs_f64() * 1e3,
        mib(rss_dlopen - rss_start)
    );
    println!(
        "first SileroModel::load (environment + session + warm-up chunk): {:.1} ms, RSS +{:.1} MiB",
        first_load.as_secs_f64() * 1e3,
        mib(rss_first - rss_dlopen)
    );
    println!(
        "another SileroModel::load (session + warm-up chunk): {:.1} ms, RSS +{:.1} MiB",
        second_load.as_secs_f64() * 1e3,
        mib(rss_second.saturating_sub(rss_first))
    );
    println!(
        "RSS: {:.1} MiB before, {:.1} MiB with ONNX Runtime and one model (+{:.1} MiB)",
        mib(rss_start),
        mib(rss_first),
        mib(rss_first - rss_start),
    );
    println!(
        "threads: {threads_start} at start, {threads_dlopen} after dlopen, {threads_first} after the first load, \
         {threads_second} after the second"
    );

    // Warm up caches and allocator.
    let mut warm = VadStream::new();
    for chunk in audio.iter().take(200) {
        warm.speech_probability(&mut model, chunk).expect("inference");
    }

    println!(
        "legs  calls   CPU us/chunk  wall us/chunk  p50 / p99 / max wall us  legs per core at 100% (32 ms/chunk)"
    );
    for &legs in &leg_counts {
        let mut streams = vec![VadStream::new(); legs];
        let rounds = min_calls.div_ceil(legs).max(1);
        let mut lat = Vec::with_capacity(rounds * legs);
        let cpu_start = thread_cpu();
        let wall_start = Instant::now();
        for round in 0..rounds {
            for (leg, stream) in streams.iter_mut().enumerate() {
                // Each leg is at its own place in the audio, so the legs are not in lock step.
                let chunk = &audio[(round + leg * 37) % audio.len()];
                let t = Instant::now();
                let p = stream.speech_probability(&mut model, chunk).expect("inference");
                lat.push(t.elapsed());
                std::hint::black_box(p);
            }
        }
        let cpu = thread_cpu() - cpu_start;
        let wall = wall_start.elapsed();
        let calls = lat.len();
        lat.sort();
        let pct = |q: f64| lat[((calls as f64 * q) as usize).min(calls - 1)].as_secs_f64() * 1e6;
        let cpu_per = cpu.as_secs_f64() / calls as f64;
        println!(
            "{legs:>4} {calls:>6} {:>13.1} {:>14.1}  {:>7.1} / {:>7.1} / {:>7.1}   {:>6.0}",
            cpu_per * 1e6,
            wall.as_secs_f64() / calls as f64 * 1e6,
            pct(0.5),
            pct(0.99),
            lat[calls - 1].as_secs_f64() * 1e6,
            0.032 / cpu_per
        );
    }
    println!("batched: every round is one speech_probabilities call with all legs");
    println!(
        "legs  calls   CPU us/leg-chunk  wall us/leg-chunk  wall ms/batch p50 / max  legs per core at 100%"
    );
    for legs in leg_counts {
        let mut streams = vec![VadStream::new(); legs];
        let rounds = min_calls.div_ceil(legs).max(20);
        let mut lat = Vec::with_capacity(rounds);
        let cpu_start = thread_cpu();
        let wall_start = Instant::now();
        for round in 0..rounds {
            let mut batch: Vec<(&mut VadStream, &[f32; CHUNK_SAMPLES])> = streams
                .iter_mut()
                .enumerate()
                .map(|(leg, stream)| (stream, &audio[(round + leg * 37) % audio.len()]))
                .collect();
            let t = Instant::now();
            let p = model.speech_probabilities(&mut batch).expect("inference");
            lat.push(t.elapsed());
            std::hint::black_box(p);
        }
        let cpu = thread_cpu() - cpu_start;
        let wall = wall_start.elapsed();
        let calls = rounds * legs;
        lat.sort();
        let cpu_per = cpu.as_secs_f64() / calls as f64;
        println!(
            "{legs:>4} {calls:>6} {:>17.1} {:>18.1}  {:>10.2} / {:>7.2}   {:>6.0}",
            cpu_per * 1e6,
            wall.as_secs_f64() / calls as f64 * 1e6,
            lat[rounds / 2].as_secs_f64() * 1e3,
            lat[rounds - 1].as_secs_f64() * 1e3,
            0.032 / cpu_per
        );
    }
    let mut threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|entry| {
                let task = entry.ok()?.path();
                let name = std::fs::read_to_string(task.join("comm")).ok()?;
                let cpu_ns: u64 = std::fs::read_to_string(task.join("schedstat"))
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(format!("{} ({:.1} ms CPU)", name.trim(), cpu_ns as f64 / 1e6))
            })
            .collect()
        })
        .unwrap_or_default();
    threads.sort();
    println!("threads: {threads:?}");
    println!(
        "final RSS {:.1} MiB, peak {:.1} MiB",
        mib(status("VmRSS")),
        mib(status("VmHWM"))
    );
}
