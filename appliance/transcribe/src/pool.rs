//! The transcription engine: one front-end thread that resamples every leg to 16 kHz, runs its VAD and
//! endpointing, and queues finished speech segments; and a fixed pool of whisper workers, each with its own
//! decoder state, that decode them and hand the text to the call's sink.
//!
//! Queues and their policies (both bounded, both observable):
//! - Audio input: at most `audio_queue_chunks` chunks wait for the front-end. When full, a push is refused
//!   (the newest audio is dropped), counted in `transcription_audio_dropped_seconds`, and the leg's
//!   transcript records a gap. Pushing never blocks: media and recording are never slowed by transcription.
//!   Call control (finish) is never refused.
//! - Segment jobs: at most `job_queue` segments wait for a worker. When full, the oldest waiting segment is
//!   dropped (it is the stalest for live consumers), counted as `dropped`, and recorded as a gap. The age
//!   of the oldest waiting segment is the transcription lag; the state is `lagging` while it exceeds
//!   `lag_alarm` and `shedding` for 30 s after anything was dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airlock_telemetry::{Pii, SegmentResult, TranscriptionMetrics, TranscriptionState};

use crate::endpoint::{EndpointConfig, FRAME_SAMPLES, Segmenter, SpeechSegment};
use crate::recognize::{Decoder, Model, ModelError, Recognition};
use crate::resample::{MODEL_RATE, Resampler};

/// Whisper workers run at this lower scheduling priority (a Crossplatform value on 0–99, ≈ nice 9 on
/// Linux), so under CPU pressure the kernel serves media, recording and signalling first and transcription
/// lags instead — lag is observable and recoverable, lost audio is not.
const WORKER_PRIORITY: u8 = 25;

/// Holes in a leg's audio up to this long are filled with silence; longer ones restart the leg's VAD.
const MAX_FILLED_HOLE_SECONDS: u64 = 1;

/// How long the `shedding` state lasts after a drop.
const SHEDDING_HOLD: Duration = Duration::from_secs(30);
/// How often the front-end refreshes the lag and state gauges when idle.
const GAUGE_REFRESH: Duration = Duration::from_millis(500);
/// A leg without new audio for this long (paused, removed, silence-suppressed, detached) has its open
/// segment ended and is settled up to its last audio, so a recorder holding audio for its words is not
/// held up by it. More audio continues the leg.
const IDLE_LEG: Duration = Duration::from_secs(2);
/// How often the front-end looks for idle legs.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// The VAD as the front-end uses it: one shared model, a state per leg.
pub trait VoiceActivity: Send + 'static {
    type Leg: Send;
    fn new_leg(&self) -> Self::Leg;
    /// Speech probability of the next 32 ms frame of the leg (errors count as silence).
    fn probability(&mut self, leg: &mut Self::Leg, frame: &[f32; FRAME_SAMPLES]) -> f32;
}

/// Sizes and limits of the engine; validated by configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub workers: usize,
    pub job_queue: usize,
    pub audio_queue_chunks: usize,
    pub lag_alarm: Duration,
    pub endpoint: EndpointConfig,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 2,
            job_queue: 32,
            audio_queue_chunks: 8192,
            lag_alarm: Duration::from_secs(5),
            endpoint: EndpointConfig::default(),
        }
    }
}

/// One word of a segment, timed from the start of the call.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub text: Pii<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub probability: f32,
}

/// A transcribed stretch of one leg's speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub leg: usize,
    /// From the start of the call's timeline.
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: Pii<String>,
    pub words: Vec<TimedWord>,
    /// Mean token probability.
    pub confidence: f32,
    /// End of the utterance (as its audio arrived) to this segment.
    pub latency: Duration,
}

/// Why part of a leg has no transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The engine's audio input was full.
    AudioDropped,
    /// The segment waited in a full job queue and was dropped.
    SegmentDropped,
    /// whisper.cpp failed on the segment.
    DecodeFailed,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AudioDropped => "audio_dropped",
            Self::SegmentDropped => "segment_dropped",
            Self::DecodeFailed => "decode_failed",
        }
    }
}

/// A stretch of a leg with no transcript, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub leg: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub reason: GapReason,
}

/// Where a call's results go, from worker threads (implementations must not block for long).
pub trait SegmentSink: Send + Sync + 'static {
    fn segment(&self, segment: Segment);
    fn gap(&self, gap: Gap);
    /// Every sample of `leg` before `until_ms` (call time) is settled: its segments (or gaps) have been
    /// delivered, or it was judged not speech. Called with increasing values, after the segments it covers;
    /// the recorder holds audio back until its words are known (audio redaction).
    fn settled(&self, leg: usize, until_ms: u64);
}

/// The running engine; cheap to clone.
#[derive(Clone)]
pub struct Transcriber {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber").finish_non_exhaustive()
    }
}

struct Shared {
    config: PoolConfig,
    metrics: TranscriptionMetrics,
    input: Mutex<VecDeque<Input>>,
    input_ready: Condvar,
    jobs: Mutex<VecDeque<Job>>,
    jobs_ready: Condvar,
    /// Milliseconds since `epoch` of the last drop (0 = never).
    last_drop_ms: AtomicU64,
    epoch: Instant,
    next_call: AtomicU64,
}

enum Input {
    Audio(AudioChunk),
    Finish(Arc<CallShared>),
}

struct AudioChunk {
    call: Arc<CallShared>,
    leg: usize,
    rate: u32,
    position: u64,
    samples: Vec<i16>,
    received: Instant,
}

struct Job {
    call: Arc<CallShared>,
    leg: usize,
    segment: SpeechSegment,
    queued: Instant,
    /// When the utterance's last speech audio arrived.
    speech_ended: Instant,
}

struct CallShared {
    id: u64,
    sink: Arc<dyn SegmentSink>,
    /// Per leg, the stretches (ms) of audio refused at the input, merged while contiguous; reported as
    /// gaps when the call finishes.
    dropped_audio: Mutex<HashMap<usize, Vec<(u64, u64)>>>,
    /// Per leg, the text of the segment decoded last, to prompt the decoder with for the next one.
    previous_text: Mutex<HashMap<usize, PreviousText>>,
    progress: Mutex<CallProgress>,
    settled: Condvar,
    /// Per leg, what is still undecided (see `LegSettling`).
    settling: Mutex<HashMap<usize, LegSettling>>,
}

/// What of a leg the engine has not settled yet: the front-end's undecided frontier (16 kHz position) and
/// the start positions of its segments queued or being decoded; the leg is settled before the smallest.
#[derive(Default)]
struct LegSettling {
    frontier: u64,
    pending_starts: std::collections::BTreeMap<u64, usize>,
    reported_ms: u64,
}

/// A leg's last decoded text and where (16 kHz position) its segment ended.
struct PreviousText {
    end: u64,
    text: Pii<String>,
}

/// How much of the previous segment's text is kept as a prompt: ~25 tokens, so the prompt pass stays below
/// the batch at which whisper.cpp hands matrix products to BLAS (which would unpack the 80 MB vocabulary
/// matrix into every decoder state).
const PREVIOUS_TEXT_CHARS: usize = 100;

/// The whole words at the end of `text` that fit in `max_bytes`.
fn last_words(text: &str, max_bytes: usize) -> &str {
    let text = text.trim();
    if text.len() <= max_bytes {
        return text;
    }
    let mut cut = text.len() - max_bytes;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    match text[cut..].find(' ') {
        Some(space) if !text[..cut].ends_with(' ') => &text[cut + space + 1..],
        _ => &text[cut..],
    }
}

#[derive(Default)]
struct CallProgress {
    input_closed: bool,
    pending_jobs: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ms(samples_16k: u64) -> u64 {
    samples_16k * 1000 / u64::from(MODEL_RATE)
}

impl Transcriber {
    /// Allocates every worker's decoder state, then starts the front-end and worker threads.
    pub fn start<V: VoiceActivity>(
        model: &Model,
        vad: V,
        config: PoolConfig,
        metrics: TranscriptionMetrics,
    ) -> Result<Transcriber, ModelError> {
        let decoders = (0..config.workers.max(1))
            .map(|_| model.decoder())
            .collect::<Result<Vec<_>, _>>()?;
        metrics.set_state(TranscriptionState::Ok);
        let shared = Arc::new(Shared {
            config,
            metrics,
            input: Mutex::new(VecDeque::new()),
            input_ready: Condvar::new(),
            jobs: Mutex::new(VecDeque::new()),
            jobs_ready: Condvar::new(),
            last_drop_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            next_call: AtomicU64::new(1),
        });
        for (index, decoder) in decoders.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("whisper-{index}"))
                .spawn(move || worker(&shared, decoder))
                .map_err(|error| ModelError::State(error.to_string()))?;
        }
        let front = shared.clone();
        std::thread::Builder::new()
            .name("transcribe-vad".into())
            .spawn(move || front_end(&front, vad))
            .map_err(|error| ModelError::State(error.to_string()))?;
        Ok(Transcriber { shared })
    }

    /// Starts transcribing a call whose results go to `sink`.
    pub fn open_call(&self, sink: Arc<dyn SegmentSink>) -> CallTranscription {
        let call = Arc::new(CallShared {
            id: self.shared.next_call.fetch_add(1, Ordering::Relaxed),
            sink,
            dropped_audio: Mutex::new(HashMap::new()),
            previous_text: Mutex::new(HashMap::new()),
            progress: Mutex::new(CallProgress::default()),
            settled: Condvar::new(),
            settling: Mutex::new(HashMap::new()),
        });
        CallTranscription {
            shared: self.shared.clone(),
            call,
        }
    }

    /// The current state (also exported as a metric).
    pub fn state(&self) -> TranscriptionState {
        self.shared.state()
    }
}

impl Shared {
    fn state(&self) -> TranscriptionState {
        let last_drop = self.last_drop_ms.load(Ordering::Relaxed);
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if last_drop != 0 && now_ms.saturating_sub(last_drop) < SHEDDING_HOLD.as_millis() as u64 {
            return TranscriptionState::Shedding;
        }
        if self.lag() > self.config.lag_alarm {
            TranscriptionState::Lagging
        } else {
            TranscriptionState::Ok
        }
    }

    fn lag(&self) -> Duration {
        lock(&self.jobs)
            .front()
            .map(|job| job.queued.elapsed())
            .unwrap_or_default()
    }

    fn note_drop(&self) {
        let now_ms = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.last_drop_ms.store(now_ms, Ordering::Relaxed);
    }

    fn refresh_gauges(&self) {
        self.metrics.lag_seconds.set(self.lag().as_secs_f64());
        self.metrics.set_state(self.state());
    }

    /// Queues a segment; drops the oldest waiting one when the queue is full.
    fn enqueue(&self, job: Job) {
        let dropped = {
            let mut jobs = lock(&self.jobs);
            let dropped = if jobs.len() >= self.config.job_queue.max(1) {
                jobs.pop_front()
            } else {
                None
            };
            jobs.push_back(job);
            self.metrics.queue_depth.set(jobs.len() as i64);
            dropped
        };
        self.jobs_ready.notify_one();
        if let Some(old) = dropped {
            self.metrics.segment(SegmentResult::Dropped);
            self.note_drop();
            old.call.sink.gap(Gap {
                leg: old.leg,
                start_ms: ms(old.segment.start),
                end_ms: ms(old.segment.start + old.segment.audio.len() as u64),
                reason: GapReason::SegmentDropped,
            });
            old.call.job_done(old.leg, old.segment.start);
        }
    }
}

impl CallShared {
    /// The leg's previous text, if its segment ended at most `window` (16 kHz samples) before `start`.
    fn previous_text(&self, leg: usize, start: u64, window: u64) -> Option<Pii<String>> {
        let previous = lock(&self.previous_text);
        let previous = previous.get(&leg)?;
        (previous.end <= start && start - previous.end <= window).then(|| previous.text.clone())
    }

    /// Keeps the end of `text` as the leg's previous text.
    fn remember_text(&self, leg: usize, end: u64, text: &str) {
        let kept = last_words(text, PREVIOUS_TEXT_CHARS).to_string();
        lock(&self.previous_text).insert(
            leg,
            PreviousText {
                end,
                text: Pii::new(kept),
            },
        );
    }

    fn job_added(&self, leg: usize, start: u64) {
        lock(&self.progress).pending_jobs += 1;
        *lock(&self.settling)
            .entry(leg)
            .or_default()
            .pending_starts
            .entry(start)
            .or_default() += 1;
    }

    /// The front-end has judged the leg up to `frontier` (16 kHz position; `u64::MAX` once the leg ended).
    fn advance_frontier(&self, leg: usize, frontier: u64) {
        let report = {
            let mut settling = lock(&self.settling);
            let state = settling.entry(leg).or_default();
            state.frontier = state.frontier.max(frontier);
            settled_report(state)
        };
        // Outside the lock: the sink may take its time (it publishes what the redactor releases).
        if let Some(until_ms) = report {
            self.sink.settled(leg, until_ms);
        }
    }

    fn job_done(&self, leg: usize, start: u64) {
        let report = {
            let mut settling = lock(&self.settling);
            let state = settling.entry(leg).or_default();
            if let Some(count) = state.pending_starts.get_mut(&start) {
                *count -= 1;
                if *count == 0 {
                    state.pending_starts.remove(&start);
                }
            }
            settled_report(state)
        };
        // Before the job counts as done, so a finished call's sink has had every report.
        if let Some(until_ms) = report {
            self.sink.settled(leg, until_ms);
        }
        let mut progress = lock(&self.progress);
        progress.pending_jobs = progress.pending_jobs.saturating_sub(1);
        if progress.input_closed && progress.pending_jobs == 0 {
            self.settled.notify_all();
        }
    }

    fn note_dropped_audio(&self, leg: usize, start_ms: u64, end_ms: u64) {
        let mut dropped = lock(&self.dropped_audio);
        let ranges = dropped.entry(leg).or_default();
        match ranges.last_mut() {
            // Pieces are ≈ 20 ms apart: join anything within 100 ms.
            Some(last) if start_ms <= last.1 + 100 => last.1 = last.1.max(end_ms),
            _ => ranges.push((start_ms, end_ms)),
        }
    }

    fn close_input(&self) {
        for (leg, ranges) in lock(&self.dropped_audio).drain() {
            for (start_ms, end_ms) in ranges {
                self.sink.gap(Gap {
                    leg,
                    start_ms,
                    end_ms,
                    reason: GapReason::AudioDropped,
                });
            }
        }
        let mut progress = lock(&self.progress);
        progress.input_closed = true;
        if progress.pending_jobs == 0 {
            self.settled.notify_all();
        }
    }
}

/// How far a leg is settled (ms), when that moved on since the last report: before its oldest segment still
/// queued or decoding, and before what the front-end has not judged yet. Reports grow (they may reach the
/// sink out of order across threads; each is true when made, and the sink keeps the largest).
fn settled_report(state: &mut LegSettling) -> Option<u64> {
    let settled = state
        .pending_starts
        .keys()
        .next()
        .map_or(state.frontier, |&start| start.min(state.frontier));
    let settled_ms = if settled == u64::MAX {
        u64::MAX
    } else {
        ms(settled)
    };
    (settled_ms > state.reported_ms).then(|| {
        state.reported_ms = settled_ms;
        settled_ms
    })
}

/// A call's handle into the engine.
pub struct CallTranscription {
    shared: Arc<Shared>,
    call: Arc<CallShared>,
}

impl std::fmt::Debug for CallTranscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTranscription").finish_non_exhaustive()
    }
}

impl CallTranscription {
    /// Offers `samples` of leg `leg` (PCM16 at `rate` Hz, starting at sample `position` of the call's
    /// timeline at that rate). Never blocks; returns false when the input was full and the audio dropped.
    pub fn push(&self, leg: usize, rate: u32, position: u64, samples: &[i16]) -> bool {
        if samples.is_empty() {
            return true;
        }
        {
            let mut input = lock(&self.shared.input);
            if input.len() >= self.shared.config.audio_queue_chunks.max(1) {
                drop(input);
                let seconds = samples.len() as f64 / f64::from(rate.max(1));
                self.shared.metrics.audio_dropped_seconds.inc_by(seconds);
                self.shared.note_drop();
                let to_ms = |position: u64| position * 1000 / u64::from(rate.max(1));
                self.call
                    .note_dropped_audio(leg, to_ms(position), to_ms(position + samples.len() as u64));
                return false;
            }
            input.push_back(Input::Audio(AudioChunk {
                call: self.call.clone(),
                leg,
                rate,
                position,
                samples: samples.to_vec(),
                received: Instant::now(),
            }));
        }
        self.shared.input_ready.notify_one();
        true
    }

    /// No more audio: the open segments of every leg are decoded, and the returned handle tells when the
    /// last of the call's segments is done.
    pub fn finish(self) -> Finishing {
        lock(&self.shared.input).push_back(Input::Finish(self.call.clone()));
        self.shared.input_ready.notify_one();
        Finishing { call: self.call }
    }
}

/// Waits for a finished call's last segments.
pub struct Finishing {
    call: Arc<CallShared>,
}

impl std::fmt::Debug for Finishing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finishing").finish_non_exhaustive()
    }
}

impl Finishing {
    /// Blocks until every segment of the call has been decoded or dropped, or `timeout` passes; returns
    /// whether the call's transcription is complete.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = lock(&self.call.progress);
        while !(progress.input_closed && progress.pending_jobs == 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            progress = self
                .call
                .settled
                .wait_timeout(progress, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        true
    }
}

/// One leg as the front-end tracks it.
struct LegState<L> {
    call: Arc<CallShared>,
    /// Settled up to its last audio for being idle (see `IDLE_LEG`); cleared by new audio.
    idle: bool,
    rate: u32,
    resampler: Resampler,
    vad: L,
    segmenter: Segmenter,
    /// 16 kHz audio not yet a whole VAD frame, and the 16 kHz position of its first sample.
    pending: Vec<f32>,
    pending_start: u64,
    /// Leg-rate position the next chunk should start at.
    next_position: Option<u64>,
    /// 16 kHz position reached, and when that audio arrived.
    reached: u64,
    reached_at: Instant,
}

fn front_end<V: VoiceActivity>(shared: &Shared, mut vad: V) {
    let mut legs: HashMap<(u64, usize), LegState<V::Leg>> = HashMap::new();
    let mut resampled = Vec::new();
    let mut idle_checked = Instant::now();
    loop {
        if idle_checked.elapsed() >= IDLE_CHECK {
            idle_checked = Instant::now();
            for (&(_, index), leg) in &mut legs {
                if !leg.idle && leg.reached_at.elapsed() >= IDLE_LEG {
                    settle_idle_leg(shared, index, leg);
                }
            }
        }
        let next = {
            let mut input = lock(&shared.input);
            loop {
                if let Some(item) = input.pop_front() {
                    break Some(item);
                }
                let (guard, timeout) = shared
                    .input_ready
                    .wait_timeout(input, GAUGE_REFRESH)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                input = guard;
                if timeout.timed_out() {
                    break None;
                }
            }
        };
        match next {
            None => {}
            Some(Input::Finish(call)) => {
                let keys: Vec<_> = legs.keys().filter(|(id, _)| *id == call.id).copied().collect();
                for key in keys {
                    if let Some(mut leg) = legs.remove(&key) {
                        if let Some(segment) = leg.segmenter.finish() {
                            queue_segment(shared, &call, key.1, segment, &leg);
                        }
                        call.advance_frontier(key.1, u64::MAX);
                        shared.metrics.legs_active.dec();
                    }
                }
                call.close_input();
            }
            Some(Input::Audio(chunk)) => {
                let key = (chunk.call.id, chunk.leg);
                let leg = legs.entry(key).or_insert_with(|| {
                    shared.metrics.legs_active.inc();
                    new_leg(&vad, &shared.config, &chunk)
                });
                leg.idle = false;
                feed(shared, &mut vad, leg, &chunk, &mut resampled);
                let frontier = leg
                    .segmenter
                    .undecided_from()
                    .map_or(leg.pending_start, |from| from.min(leg.pending_start));
                chunk.call.advance_frontier(chunk.leg, frontier);
            }
        }
        shared.refresh_gauges();
    }
}

/// Ends an idle leg's open segment and settles it up to its last audio; the partial frame not yet given to
/// the VAD (< 32 ms) is dropped, so more audio continues at the right position.
fn settle_idle_leg<L>(shared: &Shared, index: usize, leg: &mut LegState<L>) {
    leg.idle = true;
    let call = leg.call.clone();
    if let Some(segment) = leg.segmenter.finish() {
        queue_segment(shared, &call, index, segment, leg);
    }
    leg.pending.clear();
    leg.pending_start = leg.reached;
    call.advance_frontier(index, leg.reached);
}

fn new_leg<V: VoiceActivity>(vad: &V, config: &PoolConfig, chunk: &AudioChunk) -> LegState<V::Leg> {
    let (rate, position) = (chunk.rate, chunk.position);
    let start = position * u64::from(MODEL_RATE) / u64::from(rate.max(1));
    LegState {
        call: chunk.call.clone(),
        idle: false,
        rate,
        resampler: Resampler::new(rate),
        vad: vad.new_leg(),
        segmenter: Segmenter::new(config.endpoint.clone()),
        pending: Vec::with_capacity(FRAME_SAMPLES * 2),
        pending_start: start,
        next_position: None,
        reached: start,
        reached_at: Instant::now(),
    }
}

fn feed<V: VoiceActivity>(
    shared: &Shared,
    vad: &mut V,
    leg: &mut LegState<V::Leg>,
    chunk: &AudioChunk,
    resampled: &mut Vec<f32>,
) {
    let rate = chunk.rate.max(1);
    let mut samples: &[i16] = &chunk.samples;
    let mut filler = Vec::new();
    match leg.next_position {
        Some(next) if leg.rate == rate && chunk.position < next => {
            // Overlaps what the leg already had (a re-anchored stream): only the new part counts.
            let overlap = usize::try_from(next - chunk.position).unwrap_or(usize::MAX);
            samples = samples.get(overlap..).unwrap_or_default();
        }
        Some(next)
            if leg.rate == rate
                && chunk.position > next
                && chunk.position - next <= u64::from(rate) * MAX_FILLED_HOLE_SECONDS =>
        {
            // A short hole (packet loss, a late leg): silence, so a sentence is not cut in two.
            filler.resize(usize::try_from(chunk.position - next).unwrap_or(0), 0i16);
        }
        Some(next) if leg.rate == rate && chunk.position == next => {}
        None => {}
        Some(_) => {
            // A long hole (hold, audio the engine refused — reported by `push`) or a new rate: restart the
            // leg's front-end at the new position, so nothing either side of the hole is joined.
            let fresh_start = chunk.position * u64::from(MODEL_RATE) / u64::from(rate);
            if let Some(segment) = leg.segmenter.finish() {
                queue_segment(shared, &chunk.call, chunk.leg, segment, leg);
            }
            leg.rate = rate;
            leg.resampler = Resampler::new(rate);
            leg.pending.clear();
            leg.pending_start = fresh_start;
            leg.reached = fresh_start;
        }
    }
    leg.next_position = Some(
        leg.next_position
            .unwrap_or(chunk.position)
            .max(chunk.position + chunk.samples.len() as u64),
    );
    resampled.clear();
    if !filler.is_empty() {
        leg.resampler.process(&filler, resampled);
    }
    leg.resampler.process(samples, resampled);
    leg.pending.extend_from_slice(resampled);
    leg.reached = leg.pending_start + leg.pending.len() as u64;
    leg.reached_at = chunk.received;
    let mut offset = 0;
    while leg.pending.len() - offset >= FRAME_SAMPLES {
        let mut frame = [0.0f32; FRAME_SAMPLES];
        frame.copy_from_slice(&leg.pending[offset..offset + FRAME_SAMPLES]);
        let position = leg.pending_start + offset as u64;
        offset += FRAME_SAMPLES;
        let probability = vad.probability(&mut leg.vad, &frame);
        if let Some(segment) = leg.segmenter.push_frame(position, &frame, probability) {
            queue_segment(shared, &chunk.call, chunk.leg, segment, leg);
        }
    }
    leg.pending.drain(..offset);
    leg.pending_start += offset as u64;
}

fn queue_segment<L>(
    shared: &Shared,
    call: &Arc<CallShared>,
    leg_index: usize,
    segment: SpeechSegment,
    leg: &LegState<L>,
) {
    // The speech ended `reached - speech_end` samples before the newest audio of the leg arrived.
    let behind = Duration::from_micros(
        leg.reached.saturating_sub(segment.speech_end) * 1_000_000 / u64::from(MODEL_RATE),
    );
    let speech_ended = leg.reached_at.checked_sub(behind).unwrap_or(leg.reached_at);
    call.job_added(leg_index, segment.start);
    shared.enqueue(Job {
        call: call.clone(),
        leg: leg_index,
        segment,
        queued: Instant::now(),
        speech_ended,
    });
}

fn worker(shared: &Shared, mut decoder: Decoder) {
    let lowered = thread_priority::ThreadPriorityValue::try_from(WORKER_PRIORITY)
        .map_err(|error| error.to_string())
        .and_then(|value| {
            thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Crossplatform(
                value,
            ))
            .map_err(|error| error.to_string())
        });
    if let Err(error) = lowered {
        tracing::warn!(%error, "cannot lower the whisper worker's priority; it competes with media");
    }
    loop {
        let job = {
            let mut jobs = lock(&shared.jobs);
            loop {
                if let Some(job) = jobs.pop_front() {
                    shared.metrics.queue_depth.set(jobs.len() as i64);
                    break job;
                }
                jobs = shared
                    .jobs_ready
                    .wait(jobs)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let started = Instant::now();
        let start = job.segment.start;
        let end = start + job.segment.audio.len() as u64;
        let context_window = decoder.context_window().as_millis() as u64 * u64::from(MODEL_RATE) / 1000;
        let previous = job.call.previous_text(job.leg, start, context_window);
        let result = decoder.recognize(
            &job.segment.audio,
            previous.as_ref().map(|text| text.expose().as_str()),
        );
        shared
            .metrics
            .decode_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Recognition::Text {
                text,
                words,
                confidence,
                repetition_removed,
            }) => {
                // A collapsed loop would teach the next segment to loop too.
                if !repetition_removed {
                    job.call.remember_text(job.leg, end, &text);
                }
                shared.metrics.segment(SegmentResult::Text);
                let latency = job.speech_ended.elapsed();
                shared
                    .metrics
                    .segment_latency_seconds
                    .observe(latency.as_secs_f64());
                let offset = ms(start);
                job.call.sink.segment(Segment {
                    leg: job.leg,
                    start_ms: offset,
                    end_ms: ms(end),
                    text: Pii::new(text),
                    words: words
                        .into_iter()
                        .map(|word| TimedWord {
                            text: Pii::new(word.text),
                            start_ms: (offset + u64::from(word.start_ms)).min(ms(end)),
                            end_ms: (offset + u64::from(word.end_ms)).min(ms(end)),
                            probability: word.probability,
                        })
                        .collect(),
                    confidence,
                    latency,
                });
            }
            Ok(Recognition::NoSpeech) => shared.metrics.segment(SegmentResult::NoSpeech),
            Err(error) => {
                tracing::warn!(%error, "whisper could not decode a segment");
                shared.metrics.segment(SegmentResult::Failed);
                job.call.sink.gap(Gap {
                    leg: job.leg,
                    start_ms: ms(start),
                    end_ms: ms(end),
                    reason: GapReason::DecodeFailed,
                });
            }
        }
        job.call.job_done(job.leg, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_keeps_whole_words_from_the_end() {
        assert_eq!(last_words("  short text ", 100), "short text");
        assert_eq!(last_words("one two three four", 10), "three four");
        // A cut that lands on a word boundary keeps that word.
        assert_eq!(last_words("one two three four", 14), "two three four");
        // Multi-byte characters are never split.
        assert_eq!(last_words("déjà vu café crème", 12), "café crème");
        assert_eq!(last_words("déjà vu café crème", 11), "crème");
        assert_eq!(last_words("déjà vu café crème", 4), "ème");
        assert_eq!(last_words("x".repeat(30).as_str(), 10), "x".repeat(10));
    }
}
