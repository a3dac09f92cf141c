//! Benchmark driver for the whole transcription engine (resampler, Silero VAD, endpointing, whisper pool):
//!
//! - `accuracy --input LIST.json`: every utterance (a PCM16 mono WAV at its own rate, 8 or 16 kHz) is one
//!   leg of its own call, fed as fast as the engine takes it in 20 ms pieces between 0.5 s of silence before
//!   and 1.5 s after; prints one JSON line `{"id", "text", "segments"}` per utterance (ci/asr_bench.py
//!   scores them) and a summary line. One worker, so CPU time is comparable with a one-thread reference.
//! - `load --legs N --seconds S --input LIST.json`: N legs fed in real time (20 ms pieces paced by the
//!   clock), each cycling through the utterances with as much silence after each as it lasted, so every leg
//!   talks half of the time, like one side of a conversation. Prints the end-of-utterance → segment latency
//!   percentiles, the largest lag, drops, CPU seconds per leg-second and peak RSS; and the audio hold a
//!   recorder needs for audio redaction: how far behind real time a leg's settled point was just before
//!   each advance over an utterance (`hold_p50/p95/max`, seconds, with `holds` counted).
//!
//! - `accuracy --no-vad`: every utterance is resampled and decoded whole as one segment, with no silence, VAD
//!   or endpointing (as the faster-whisper reference gets it), to tell segmentation errors from decoding ones.
//!
//! Model paths: `--model`, `--vad-model`, `--onnxruntime` (defaults: ./airlock-data/models/…, as
//! ci/install-asr installs them). `--workers N` (default 1 for accuracy, 2 for load). Settings, default from
//! the library's defaults: `--audio-ctx-floor FRAMES`, `--flash-attention on|off`, `--temperature-inc T`,
//! `--no-speech-threshold P`, `--min-confidence P`, `--vad-threshold P`, `--hangover-ms`, `--min-speech-ms`,
//! `--max-segment-ms`, `--split-after-ms`, `--split-hangover-ms`, `--pre-roll-ms`, `--post-roll-ms`.
//!
//! Accuracy mode also prints each utterance's CPU seconds (`cpu_s`, this process, while that utterance was
//! in the engine) and ends with `{"load_s", "startup_cpu_s"}` (wall time of loading both models, and this
//! process's CPU time up to then) for ci/asr_bench.py.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_telemetry::{SegmentResult, TranscriptionMetrics};
use airlock_transcribe::endpoint::EndpointConfig;
use airlock_transcribe::recognize::Recognition;
use airlock_transcribe::resample::Resampler;
use airlock_transcribe::{
    DecoderConfig, Gap, Model, PoolConfig, Segment, SegmentSink, SileroModel, Transcriber,
};

#[derive(Default)]
struct Collected {
    segments: Vec<Segment>,
    gaps: Vec<Gap>,
    /// When each settled report came, and how far it settled the leg (ms).
    settled: Vec<(Instant, u64)>,
}

#[derive(Default)]
struct Collector(Mutex<Collected>);

impl SegmentSink for Collector {
    fn segment(&self, segment: Segment) {
        self.0.lock().unwrap().segments.push(segment);
    }
    fn gap(&self, gap: Gap) {
        self.0.lock().unwrap().gaps.push(gap);
    }
    fn settled(&self, _leg: usize, until_ms: u64) {
        if until_ms != u64::MAX {
            self.0.lock().unwrap().settled.push((Instant::now(), until_ms));
        }
    }
}

struct Args {
    mode: String,
    input: PathBuf,
    model: PathBuf,
    vad_model: PathBuf,
    onnxruntime: PathBuf,
    workers: Option<usize>,
    legs: usize,
    seconds: u64,
    no_vad: bool,
    decoder: DecoderConfig,
    endpoint: EndpointConfig,
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let models = Path::new("airlock-data/models");
    let mut parsed = Args {
        mode,
        input: PathBuf::new(),
        model: models.join("ggml-tiny.en-q8_0.bin"),
        vad_model: models.join("silero_vad.onnx"),
        onnxruntime: models.join("onnxruntime/libonnxruntime.so"),
        workers: None,
        legs: 16,
        seconds: 60,
        no_vad: false,
        decoder: DecoderConfig::default(),
        endpoint: EndpointConfig::default(),
    };
    let ms = |value: String, flag: &str| Duration::from_millis(value.parse().expect(flag));
    while let Some(flag) = args.next() {
        if flag == "--no-vad" {
            parsed.no_vad = true;
            continue;
        }
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let (decoder, endpoint) = (&mut parsed.decoder, &mut parsed.endpoint);
        match flag.as_str() {
            "--input" => parsed.input = value.into(),
            "--model" => parsed.model = value.into(),
            "--vad-model" => parsed.vad_model = value.into(),
            "--onnxruntime" => parsed.onnxruntime = value.into(),
            "--workers" => parsed.workers = Some(value.parse().expect("--workers")),
            "--legs" => parsed.legs = value.parse().expect("--legs"),
            "--seconds" => parsed.seconds = value.parse().expect("--seconds"),
            "--audio-ctx-floor" => decoder.audio_ctx_floor = value.parse().expect("--audio-ctx-floor"),
            "--flash-attention" => decoder.flash_attention = value == "on",
            "--context-window-ms" => decoder.context_window = ms(value, &flag),
            "--temperature-inc" => decoder.temperature_inc = value.parse().expect("--temperature-inc"),
            "--no-speech-threshold" => {
                decoder.no_speech_threshold = value.parse().expect("--no-speech-threshold")
            }
            "--min-confidence" => decoder.min_confidence = value.parse().expect("--min-confidence"),
            "--vad-threshold" => endpoint.threshold = value.parse().expect("--vad-threshold"),
            "--hangover-ms" => endpoint.hangover = ms(value, &flag),
            "--min-speech-ms" => endpoint.min_speech = ms(value, &flag),
            "--max-segment-ms" => endpoint.max_segment = ms(value, &flag),
            "--split-after-ms" => endpoint.split_after = ms(value, &flag),
            "--split-hangover-ms" => endpoint.split_hangover = ms(value, &flag),
            "--pre-roll-ms" => endpoint.pre_roll = ms(value, &flag),
            "--post-roll-ms" => endpoint.post_roll = ms(value, &flag),
            other => panic!("unknown flag {other}"),
        }
    }
    parsed
}

/// (id, rate, samples) of every utterance in the list.
fn read_list(path: &Path) -> Vec<(String, u32, Vec<i16>)> {
    let text = std::fs::read_to_string(path).expect("input list");
    let list: serde_json::Value = serde_json::from_str(&text).expect("input list is JSON");
    list.as_array()
        .expect("input list is an array")
        .iter()
        .map(|entry| {
            let id = entry["id"].as_str().expect("id").to_string();
            let file = entry["path"].as_str().expect("path");
            let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            let wav = airlock_media::wav::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(wav.channels, 1, "{file}: mono expected");
            (id, wav.sample_rate, wav.samples())
        })
        .collect()
}

/// This process's CPU time (user + system) from /proc/self/stat, in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields after the command: state is [0]; utime [11], stime [12], in clock ticks (100 per second).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    if let Err(error) = airlock_transcribe::blas::restart_with_fitting_kernels() {
        eprintln!("cannot restart with fitting OpenBLAS kernels: {error}");
    }
    eprintln!("{}", airlock_transcribe::blas::kernel_report());
    let args = parse_args();
    let utterances = read_list(&args.input);
    let load_started = Instant::now();
    let model = Model::load(&args.model, args.decoder.clone()).expect("whisper model");
    if args.no_vad {
        assert_eq!(args.mode, "accuracy", "--no-vad is for accuracy mode");
        let load_seconds = load_started.elapsed().as_secs_f64();
        return whole(&model, &utterances, load_seconds);
    }
    let vad = SileroModel::load(&args.vad_model, &args.onnxruntime).expect("VAD model");
    let workers = args.workers.unwrap_or(if args.mode == "load" { 2 } else { 1 });
    let metrics = TranscriptionMetrics::default();
    let config = PoolConfig {
        workers,
        endpoint: args.endpoint.clone(),
        ..PoolConfig::default()
    };
    let engine = Transcriber::start(&model, vad, config, metrics.clone()).expect("engine");
    let load_seconds = load_started.elapsed().as_secs_f64();
    match args.mode.as_str() {
        "accuracy" => accuracy(&engine, &utterances, load_seconds, &metrics),
        "load" => load(&engine, &utterances, &args, &metrics),
        other => panic!("mode must be accuracy or load, not {other:?}"),
    }
}

/// `--no-vad`: each utterance resampled to 16 kHz and decoded as one segment by one decoder.
fn whole(model: &Model, utterances: &[(String, u32, Vec<i16>)], load_seconds: f64) {
    let mut decoder = model.decoder().expect("decoder state");
    let startup_cpu = process_cpu_seconds();
    let (mut audio_seconds, mut no_speech) = (0.0, 0);
    for (id, rate, samples) in utterances {
        let cpu_start = process_cpu_seconds();
        let mut resampler = Resampler::new(*rate);
        let mut audio = Vec::with_capacity(samples.len() * 2);
        resampler.process(samples, &mut audio);
        // Flush the resampler's filter delay with 10 ms of silence.
        resampler.process(&vec![0; *rate as usize / 100], &mut audio);
        audio_seconds += samples.len() as f64 / f64::from(*rate);
        let text = match decoder
            .recognize(&audio, None)
            .unwrap_or_else(|e| panic!("{id}: {e}"))
        {
            Recognition::Text { text, .. } => text,
            Recognition::NoSpeech => {
                no_speech += 1;
                String::new()
            }
        };
        let line = serde_json::json!({
            "id": id,
            "text": text,
            "segments": 1,
            "cpu_s": process_cpu_seconds() - cpu_start,
        });
        println!("{line}");
    }
    let summary = serde_json::json!({
        "summary": {
            "cpu_seconds": process_cpu_seconds() - startup_cpu,
            "audio_seconds": audio_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "no_speech_segments": no_speech,
        },
        "load_s": load_seconds,
        "startup_cpu_s": startup_cpu,
    });
    println!("{summary}");
}

const PIECE_MS: u64 = 20;

fn accuracy(
    engine: &Transcriber,
    utterances: &[(String, u32, Vec<i16>)],
    load_seconds: f64,
    metrics: &TranscriptionMetrics,
) {
    let startup_cpu = process_cpu_seconds();
    let mut audio_seconds = 0.0;
    for (id, rate, samples) in utterances {
        let utterance_cpu = process_cpu_seconds();
        let no_speech_before = metrics.segments_with(SegmentResult::NoSpeech);
        let rate = *rate;
        let piece = (u64::from(rate) * PIECE_MS / 1000) as usize;
        let mut audio = vec![0i16; rate as usize / 2];
        audio.extend_from_slice(samples);
        audio.extend(std::iter::repeat_n(0i16, rate as usize * 3 / 2));
        audio_seconds += samples.len() as f64 / f64::from(rate);
        let collector = Arc::new(Collector::default());
        let call = engine.open_call(collector.clone());
        let mut position = 0u64;
        for chunk in audio.chunks(piece) {
            while !call.push(0, rate, position, chunk) {
                std::thread::sleep(Duration::from_millis(1)); // input full: wait, never drop here
            }
            position += chunk.len() as u64;
        }
        let finishing = call.finish();
        assert!(finishing.wait(Duration::from_secs(120)), "{id}: not finished");
        let collected = collector.0.lock().unwrap();
        let text: Vec<&str> = collected
            .segments
            .iter()
            .map(|s| s.text.expose().as_str())
            .collect();
        let line = serde_json::json!({
            "id": id,
            "text": text.join(" "),
            "segments": collected.segments.len(),
            // Where the segments fall in the fed audio (the utterance starts at 500 ms).
            "spans_ms": collected.segments.iter().map(|s| [s.start_ms, s.end_ms]).collect::<Vec<_>>(),
            "no_speech": metrics.segments_with(SegmentResult::NoSpeech) - no_speech_before,
            "gaps": collected.gaps.len(),
            "cpu_s": process_cpu_seconds() - utterance_cpu,
        });
        println!("{line}");
    }
    let summary = serde_json::json!({
        "summary": {
            "cpu_seconds": process_cpu_seconds() - startup_cpu,
            "audio_seconds": audio_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "no_speech_segments": metrics.segments_with(SegmentResult::NoSpeech),
        },
        "load_s": load_seconds,
        "startup_cpu_s": startup_cpu,
    });
    println!("{summary}");
}

fn load(
    engine: &Transcriber,
    utterances: &[(String, u32, Vec<i16>)],
    args: &Args,
    metrics: &TranscriptionMetrics,
) {
    let rate = utterances[0].1;
    assert!(utterances.iter().all(|u| u.1 == rate), "load mode wants one rate");
    let piece = (u64::from(rate) * PIECE_MS / 1000) as usize;
    // One conversation side: each utterance followed by as much silence, started at a different
    // utterance per leg so the legs do not speak in lockstep.
    let mut side = Vec::new();
    for (_, _, samples) in utterances {
        side.extend_from_slice(samples);
        side.extend(std::iter::repeat_n(0i16, samples.len()));
    }
    // Whole pieces only, so a leg wrapping around to the start stays continuous (no gap).
    side.resize(side.len().div_ceil(piece) * piece, 0);
    let collectors: Vec<Arc<Collector>> = (0..args.legs).map(|_| Arc::new(Collector::default())).collect();
    let calls: Vec<_> = collectors
        .iter()
        .map(|collector| engine.open_call(collector.clone()))
        .collect();
    let offsets: Vec<usize> = (0..args.legs)
        .map(|leg| (side.len() / args.legs.max(1) * leg) / piece * piece)
        .collect();
    let pieces = args.seconds * 1000 / PIECE_MS;
    let cpu_start = process_cpu_seconds();
    let started = Instant::now();
    let mut max_lag = 0.0f64;
    let mut refused = 0u64;
    for n in 0..pieces {
        let due = started + Duration::from_millis(n * PIECE_MS);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for (leg, call) in calls.iter().enumerate() {
            let at = (offsets[leg] + n as usize * piece) % side.len();
            let end = (at + piece).min(side.len());
            if !call.push(0, rate, n * piece as u64, &side[at..end]) {
                refused += 1;
            }
        }
        max_lag = max_lag.max(metrics.lag_seconds.get());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let finishing: Vec<_> = calls.into_iter().map(|call| call.finish()).collect();
    let complete = finishing.iter().all(|f| f.wait(Duration::from_secs(120)));
    let cpu = process_cpu_seconds() - cpu_start;
    // (latency, segment length) in seconds.
    let mut timed: Vec<(f64, f64)> = collectors
        .iter()
        .flat_map(|c| {
            c.0.lock()
                .unwrap()
                .segments
                .iter()
                .map(|s| (s.latency.as_secs_f64(), (s.end_ms - s.start_ms) as f64 / 1000.0))
                .collect::<Vec<_>>()
        })
        .collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let percentile = |values: &[f64], p: f64| {
        values
            .get(((values.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let latencies: Vec<f64> = timed.iter().map(|t| t.0).collect();
    // The tail comes from long segments: whisper decodes a segment only once it has ended, and its cost
    // grows with its length beyond the encoder floor.
    const SHORT_SEGMENT: f64 = 10.0;
    let short: Vec<f64> = timed
        .iter()
        .filter(|t| t.1 <= SHORT_SEGMENT)
        .map(|t| t.0)
        .collect();
    let long: Vec<f64> = timed
        .iter()
        .filter(|t| t.1 > SHORT_SEGMENT)
        .map(|t| t.0)
        .collect();
    let gaps: usize = collectors.iter().map(|c| c.0.lock().unwrap().gaps.len()).sum();
    // Leg audio at position p ms was pushed at `started + p`: just before a report at t, the leg was
    // settled only to the previous report's point, so the recorder had to hold t − previous of its audio.
    // Advances by more than a second pass over an utterance (in silence the point follows the audio in
    // 20 ms steps): those holds are the ones audio redaction costs.
    let mut holds: Vec<f64> = collectors
        .iter()
        .flat_map(|c| {
            let settled = c.0.lock().unwrap().settled.clone();
            settled
                .windows(2)
                .filter(|pair| pair[1].1 - pair[0].1 > 1_000)
                .map(|pair| {
                    let at_ms = pair[1].0.duration_since(started).as_millis() as f64;
                    (at_ms - pair[0].1 as f64) / 1000.0
                })
                .collect::<Vec<_>>()
        })
        .collect();
    holds.sort_by(f64::total_cmp);
    let summary = serde_json::json!({
        "legs": args.legs,
        "workers": args.workers.unwrap_or(2),
        "seconds": elapsed,
        "segments": latencies.len(),
        "latency_p50": percentile(&latencies, 0.5),
        "latency_p95": percentile(&latencies, 0.95),
        "latency_max": percentile(&latencies, 1.0),
        "segments_over_10s": long.len(),
        "latency_p95_segments_upto_10s": percentile(&short, 0.95),
        "latency_p50_segments_over_10s": percentile(&long, 0.5),
        "max_lag_seconds": max_lag,
        "holds": holds.len(),
        "hold_p50": percentile(&holds, 0.5),
        "hold_p95": percentile(&holds, 0.95),
        "hold_max": percentile(&holds, 1.0),
        "pieces_refused": refused,
        "segments_dropped": metrics.segments_with(SegmentResult::Dropped),
        "gaps": gaps,
        "complete": complete,
        "cpu_seconds": cpu,
        "cpu_per_leg_second": cpu / (elapsed * args.legs as f64),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{summary}");
}
