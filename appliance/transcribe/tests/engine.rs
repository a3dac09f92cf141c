//! The whole engine on real speech with the installed models: text comes out per leg with call-relative
//! times; silence and noise give none; an overloaded pool drops the oldest segments, reports them as gaps
//! and in its metrics, and still finishes every call.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_telemetry::{SegmentResult, TranscriptionMetrics};
use airlock_transcribe::{
    DecoderConfig, Gap, GapReason, Model, PoolConfig, Segment, SegmentSink, SileroModel, Transcriber,
};

const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

#[derive(Default)]
struct Collected {
    segments: Mutex<Vec<Segment>>,
    gaps: Mutex<Vec<Gap>>,
    /// Every delivery in order: a segment or gap `(leg, start_ms, None)`, or a settled mark
    /// `(leg, until_ms, Some(()))`.
    order: Mutex<Vec<(usize, u64, Option<()>)>>,
}

impl SegmentSink for Collected {
    fn segment(&self, segment: Segment) {
        self.order
            .lock()
            .unwrap()
            .push((segment.leg, segment.start_ms, None));
        self.segments.lock().unwrap().push(segment);
    }
    fn gap(&self, gap: Gap) {
        self.order.lock().unwrap().push((gap.leg, gap.start_ms, None));
        self.gaps.lock().unwrap().push(gap);
    }
    fn settled(&self, leg: usize, until_ms: u64) {
        self.order.lock().unwrap().push((leg, until_ms, Some(())));
    }
}

impl Collected {
    /// Checks that no leg was reported settled past a segment or gap delivered after the report, and that
    /// every leg in `legs` ended settled to the end.
    fn assert_settled_in_order(&self, legs: &[usize]) {
        let order = self.order.lock().unwrap();
        for (index, &(leg, until, mark)) in order.iter().enumerate() {
            if mark.is_none() {
                continue;
            }
            for &(later_leg, start, later_mark) in &order[index + 1..] {
                if later_leg == leg && later_mark.is_none() {
                    assert!(start >= until, "leg {leg} settled to {until} before its {start}");
                }
            }
        }
        for leg in legs {
            let most = order
                .iter()
                .filter(|(l, _, mark)| l == leg && mark.is_some())
                .map(|(_, until, _)| *until)
                .max();
            assert_eq!(most, Some(u64::MAX), "leg {leg} not settled");
        }
    }
}

fn engine(config: PoolConfig, metrics: &TranscriptionMetrics) -> Transcriber {
    let model = Model::load(&common::whisper_model_path(), DecoderConfig::default()).expect("model");
    let vad = SileroModel::load(&common::model_path(), &common::onnxruntime_path()).expect("vad");
    Transcriber::start(&model, vad, config, metrics.clone()).expect("engine")
}

/// 8 kHz version of a 16 kHz file (every other sample; the readings have little energy above 4 kHz).
fn narrowband(samples: &[i16]) -> Vec<i16> {
    samples.iter().step_by(2).copied().collect()
}

/// Pushes `audio` in 20 ms pieces, waiting while the input is full (each refusal is also noted as a gap,
/// so tests that expect none use an input large enough).
fn push_all(call: &airlock_transcribe::CallTranscription, leg: usize, rate: u32, start: u64, audio: &[i16]) {
    let piece = rate as usize / 50;
    let mut position = start;
    for chunk in audio.chunks(piece) {
        while !call.push(leg, rate, position, chunk) {
            std::thread::sleep(Duration::from_millis(2));
        }
        position += chunk.len() as u64;
    }
}

#[test]
fn speech_becomes_timed_text_per_leg_and_silence_and_noise_give_none() {
    let metrics = TranscriptionMetrics::default();
    let engine = engine(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        &metrics,
    );
    let sink = Arc::new(Collected::default());
    let call = engine.open_call(sink.clone());
    let speech = common::read_pcm16(&format!(
        "{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0930.wav"
    ));
    let mut leg0 = vec![0i16; 16_000];
    leg0.extend_from_slice(&speech);
    leg0.extend(std::iter::repeat_n(0i16, 24_000));
    push_all(&call, 0, 16_000, 0, &leg0);
    // Leg 1: 8 kHz, the same words 1 s into the call.
    let mut leg1 = vec![0i16; 8_000];
    leg1.extend(narrowband(&speech));
    leg1.extend(std::iter::repeat_n(0i16, 12_000));
    push_all(&call, 1, 8_000, 0, &leg1);
    // Leg 2: silence, then white noise.
    let mut noise_state = 12_345u32;
    let mut leg2 = vec![0i16; 40_000];
    leg2.extend((0..80_000).map(|_| {
        noise_state = noise_state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((noise_state >> 16) as i16) / 8
    }));
    push_all(&call, 2, 16_000, 0, &leg2);
    assert!(call.finish().wait(Duration::from_secs(60)), "call did not finish");

    sink.assert_settled_in_order(&[0, 1, 2]);
    let segments = sink.segments.lock().unwrap();
    assert!(sink.gaps.lock().unwrap().is_empty());
    for leg in [0, 1] {
        let text: String = segments
            .iter()
            .filter(|s| s.leg == leg)
            .map(|s| s.text.expose().to_lowercase())
            .collect();
        assert!(
            text.contains("might even have been made amiable"),
            "leg {leg}: {text}"
        );
        let first = segments.iter().find(|s| s.leg == leg).unwrap();
        // Speech starts about 1 s into the leg (after the silence), minus the pre-roll.
        assert!((700..=1_300).contains(&first.start_ms), "{first:?}");
        assert!(
            first
                .words
                .iter()
                .all(|w| w.start_ms >= first.start_ms && w.end_ms <= first.end_ms)
        );
    }
    assert!(segments.iter().all(|s| s.leg != 2), "noise leg produced text");
    // The whisper workers yield the CPU to media: they run niced.
    let mut workers = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if stat.contains("(whisper-") {
            let after_name = stat.rsplit_once(')').unwrap().1;
            let nice: i32 = after_name.split_whitespace().nth(16).unwrap().parse().unwrap();
            assert!(nice > 0, "whisper worker at nice {nice}");
            workers += 1;
        }
    }
    assert!(workers >= 1);
    assert!(metrics.segments_with(SegmentResult::Text) >= 2);
}

#[test]
fn a_leg_that_stops_sending_is_settled_up_to_its_last_audio() {
    let metrics = TranscriptionMetrics::default();
    let engine = engine(PoolConfig::default(), &metrics);
    let sink = Arc::new(Collected::default());
    let call = engine.open_call(sink.clone());
    let speech = common::read_pcm16(&format!(
        "{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0930.wav"
    ));
    // Speech up to the very end of the leg's audio (no trailing silence), then nothing more.
    push_all(&call, 0, 16_000, 0, &speech);
    let end_ms = speech.len() as u64 * 1000 / 16_000;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let settled_to = || {
        sink.order
            .lock()
            .unwrap()
            .iter()
            .filter(|(leg, _, mark)| *leg == 0 && mark.is_some())
            .map(|(_, until, _)| *until)
            .max()
    };
    while settled_to().is_none_or(|until| until + 40 < end_ms) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = settled_to().expect("settled reports");
    assert!(
        until + 40 >= end_ms && until != u64::MAX,
        "settled to {until} of {end_ms} ms before the end"
    );
    // The open utterance was ended and decoded, before the report that passed it.
    assert!(!sink.segments.lock().unwrap().is_empty());
    sink.assert_settled_in_order(&[]);
    assert!(call.finish().wait(Duration::from_secs(60)));
}

#[test]
fn an_overloaded_pool_drops_the_oldest_segments_as_gaps_and_still_finishes() {
    let metrics = TranscriptionMetrics::default();
    let config = PoolConfig {
        workers: 1,
        job_queue: 1,
        ..PoolConfig::default()
    };
    let engine = engine(config, &metrics);
    let speech = common::read_pcm16(&format!(
        "{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0890.wav"
    ));
    let mut leg = speech.clone();
    leg.extend(std::iter::repeat_n(0i16, 16_000));
    let sinks: Vec<Arc<Collected>> = (0..6).map(|_| Arc::new(Collected::default())).collect();
    let calls: Vec<_> = sinks.iter().map(|sink| engine.open_call(sink.clone())).collect();
    for call in &calls {
        push_all(call, 0, 16_000, 0, &leg);
    }
    let finishing: Vec<_> = calls.into_iter().map(|call| call.finish()).collect();
    assert!(finishing.iter().all(|f| f.wait(Duration::from_secs(120))));
    let dropped: Vec<Gap> = sinks
        .iter()
        .flat_map(|s| s.gaps.lock().unwrap().clone())
        .collect();
    let decoded: usize = sinks.iter().map(|s| s.segments.lock().unwrap().len()).sum();
    assert!(
        !dropped.is_empty(),
        "six segments at once through a queue of one must shed"
    );
    assert!(
        dropped
            .iter()
            .all(|g| g.reason == GapReason::SegmentDropped && g.end_ms > g.start_ms)
    );
    assert_eq!(
        metrics.segments_with(SegmentResult::Dropped),
        dropped.len() as u64
    );
    assert_eq!(
        decoded + dropped.len(),
        6,
        "every segment is either decoded or reported as a gap"
    );
    assert_eq!(engine.state(), airlock_telemetry::TranscriptionState::Shedding);
}

#[test]
fn short_holes_are_bridged_and_refused_audio_is_reported_as_merged_gaps() {
    let metrics = TranscriptionMetrics::default();
    let engine = engine(
        PoolConfig {
            workers: 1,
            audio_queue_chunks: 4,
            ..PoolConfig::default()
        },
        &metrics,
    );
    let speech = common::read_pcm16(&format!(
        "{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0930.wav"
    ));
    let mut audio = vec![0i16; 8_000];
    audio.extend_from_slice(&speech);
    audio.extend(std::iter::repeat_n(0i16, 24_000));

    // A 200 ms hole in the middle of the sentence (lost packets): still one segment, no gap.
    let roomy = self::engine(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        &TranscriptionMetrics::default(),
    );
    let sink = Arc::new(Collected::default());
    let call = roomy.open_call(sink.clone());
    let hole = 8_000 + speech.len() / 2;
    push_all(&call, 0, 16_000, 0, &audio[..hole]);
    push_all(&call, 0, 16_000, (hole + 3_200) as u64, &audio[hole + 3_200..]);
    assert!(call.finish().wait(Duration::from_secs(60)));
    let segments = sink.segments.lock().unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert!(sink.gaps.lock().unwrap().is_empty());
    drop(segments);

    // Pushing a whole call at once into an input of four pieces: most is refused, and reported as a few
    // merged gaps, not one per piece.
    let sink = Arc::new(Collected::default());
    let call = engine.open_call(sink.clone());
    let mut refused = 0;
    for (index, piece) in audio.chunks(320).enumerate() {
        if !call.push(0, 16_000, (index * 320) as u64, piece) {
            refused += 1;
        }
    }
    assert!(call.finish().wait(Duration::from_secs(60)));
    let gaps = sink.gaps.lock().unwrap();
    assert!(refused > 10, "input of 4 pieces refused only {refused}");
    assert!(
        !gaps.is_empty() && gaps.len() < refused / 2,
        "{} gaps for {refused} refusals",
        gaps.len()
    );
    assert!(
        gaps.iter()
            .all(|g| g.reason == GapReason::AudioDropped && g.end_ms > g.start_ms)
    );
    assert!(metrics.audio_dropped_seconds.get() > 0.0);
}
