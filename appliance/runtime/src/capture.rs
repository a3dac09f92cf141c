//! Local capture (`[capture]`): a sound card's input — a line-in tap on an analog trunk or a desk phone — cut
//! into calls by the sans-IO segmenter (`airlock_media::segment`), each call recorded, transcribed, gated and
//! published by the same recorder task as VoiceStream calls (`vs_call`), one leg per captured channel.
//!
//! Three places run: cpal's real-time callback (its own thread), the device thread `airlock-capture` (opens
//! the device through cpal's ALSA host, keeps the stream alive, reopens it with backoff after a failure), and
//! the capture task (tokio: segments, opens and finishes calls, feeds them).
//!
//! The callback never blocks and never waits for the recorder: it converts a period to 16-bit PCM (one small
//! allocation per period, the only work besides the conversion) and hands it to the task over a bounded
//! queue (`CAPTURE_QUEUE` periods). Policy when full: the period is dropped and counted
//! (`airlock_capture_dropped_frames_total`); the next period that gets through carries the length of the gap,
//! which the task records as silence, so the call's timeline stays true. The task itself waits on a full call
//! queue (recording never drops), which is what lets this queue fill.
//!
//! A device that cannot be opened or fails while open is logged, counted
//! (`airlock_capture_device_failures_total`, `airlock_capture_device_up` 0), raises the `capture_device`
//! alarm, and is reopened with backoff; a call in progress ends as `stream_lost` and is kept. Positions on
//! the call's timeline come from the device's sample count, not from when the task saw the audio.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use airlock_media::segment::{EndReason, SegmentEvent, Segmentation, Segmenter, level_dbfs};
use airlock_telemetry::{Alarm, CaptureEnd, CaptureMetrics, Pii};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use tokio::sync::{mpsc, watch};

use crate::call::CallEnvironment;
use crate::vs_call::{self, LegFinish, LegId, StreamSource, VsCallInput};

/// Periods (of `PERIOD`, or what the device delivers) queued from the callback to the task; when full the
/// newest is dropped and counted, and recorded as silence.
const CAPTURE_QUEUE: usize = 100;
/// The period asked of the device and the frame the segmenter and the recorder see.
const PERIOD: Duration = Duration::from_millis(20);
/// Audio kept from before a level-triggered start (besides `start_after`), so the first syllable is kept.
const PRE_ROLL: Duration = Duration::from_millis(500);
/// Device failure notes queued from cpal's error callback to the device thread; when full, later notes are
/// dropped (one is enough to reopen).
const FAILURE_QUEUE: usize = 4;
/// Reopening a failed device: from 1 s up to 30 s between attempts.
const REOPEN: airlock_outbox::Backoff = airlock_outbox::Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// The roles a captured channel may have; `mixed` is a channel carrying both parties.
pub const CAPTURE_ROLES: [&str; 4] = ["agent", "customer", "supervisor", "mixed"];

/// The validated `[capture]` section.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// What the operator called the device (a hardware-profile `[[audio]]` name or `alsa:<pcm>`); logs only.
    pub device: String,
    /// The ALSA PCM opened through cpal (e.g. `plughw:CARD=Device,DEV=0`); it must be listed by ALSA's
    /// device hints.
    pub pcm: String,
    /// Channels opened on the device; the first `roles.len()` are recorded.
    pub device_channels: u16,
    /// The role of each recorded channel, from `CAPTURE_ROLES`.
    pub roles: Vec<&'static str>,
    pub rate_hz: u32,
    pub segmentation: Segmentation,
}

/// What the device side tells the task, in order.
enum Captured {
    /// The stream is open and about to play.
    Opened,
    /// One period, interleaved, after `gap_frames` frames the queue had no room for; `captured` is when the
    /// callback got it (the real clock the stream's timeline is kept on).
    Audio {
        samples: Vec<i16>,
        gap_frames: u64,
        captured: Instant,
    },
    /// The stream failed (logged by the device thread).
    Lost,
}

/// The running capture: [`Capture::shutdown`] ends the open call and stops the device.
#[derive(Debug)]
pub(crate) struct Capture {
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    /// Waits until the open call (ended when `stopping` turned true) is finalised.
    pub(crate) async fn shutdown(self) {
        let _ = self.task.await;
    }
}

/// Starts the device thread and the capture task; the call in progress ends when `stopping` turns true.
pub(crate) fn start(
    settings: CaptureSettings,
    environment: CallEnvironment,
    stopping: watch::Receiver<bool>,
    seed: u64,
) -> std::io::Result<Capture> {
    let (queue, captured) = mpsc::channel(CAPTURE_QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let (failures, failure_notes) = std_mpsc::sync_channel(FAILURE_QUEUE);
    let device = DeviceSide {
        settings: settings.clone(),
        queue,
        stop: stop.clone(),
        failures: failures.clone(),
        metrics: environment.metrics.capture.clone(),
        environment: environment.clone(),
    };
    std::thread::Builder::new()
        .name("airlock-capture".into())
        .spawn(move || device.run(failure_notes, seed))?;
    let task = CaptureTask {
        segmenter: Segmenter::new(settings.segmentation),
        settings,
        environment,
        clock: None,
        pre_roll: VecDeque::new(),
        call: None,
        in_segment: false,
        calls: 0,
        seed,
        failures,
        last_audio: None,
    };
    Ok(Capture {
        task: tokio::spawn(task.run(captured, stopping, stop)),
    })
}

// --- device side --------------------------------------------------------------------------------------------

struct DeviceSide {
    settings: CaptureSettings,
    queue: mpsc::Sender<Captured>,
    stop: Arc<AtomicBool>,
    /// Cloned into cpal's error callback.
    failures: std_mpsc::SyncSender<String>,
    metrics: CaptureMetrics,
    environment: CallEnvironment,
}

impl DeviceSide {
    /// Opens, watches and reopens the device until stopped.
    fn run(self, failure_notes: std_mpsc::Receiver<String>, seed: u64) {
        let mut attempt = 0u32;
        let mut random = seed;
        while !self.stop.load(Ordering::Relaxed) {
            match self.open() {
                Ok(stream) => {
                    let opened = Instant::now();
                    self.metrics.device_up.set(1);
                    self.set_alarm(false, "the capture device is open");
                    tracing::info!(device = %self.settings.device, "capture device open");
                    // Notes left from an earlier stream are stale.
                    while failure_notes.try_recv().is_ok() {}
                    let failure = loop {
                        if self.stop.load(Ordering::Relaxed) {
                            break None;
                        }
                        match failure_notes.recv_timeout(Duration::from_millis(200)) {
                            Ok(why) => break Some(why),
                            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std_mpsc::RecvTimeoutError::Disconnected) => break None,
                        }
                    };
                    drop(stream);
                    self.metrics.device_up.set(0);
                    let Some(why) = failure else {
                        return;
                    };
                    // A device that fails at once after opening keeps backing off; one that ran a while
                    // starts again from the shortest wait.
                    if opened.elapsed() >= HEALTHY_AFTER {
                        attempt = 0;
                    }
                    self.metrics.device_failures.inc();
                    tracing::error!(device = %self.settings.device, error = %why, "capture device failed; reopening it");
                    self.set_alarm(true, "the capture device failed while recording");
                    if self.queue.blocking_send(Captured::Lost).is_err() {
                        return;
                    }
                }
                Err(why) => {
                    self.metrics.device_failures.inc();
                    self.set_alarm(true, "the capture device cannot be opened");
                    // Loud the first time, quiet while it stays missing.
                    if attempt == 0 {
                        tracing::error!(device = %self.settings.device, pcm = %self.settings.pcm, error = %why, "cannot open the capture device; retrying with backoff");
                    } else {
                        tracing::debug!(device = %self.settings.device, error = %why, "capture device still cannot be opened");
                    }
                }
            }
            random = random
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let delay = REOPEN.delay(attempt, random >> 11);
            attempt = attempt.saturating_add(1);
            let until = Instant::now() + delay;
            while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
            }
        }
    }

    fn set_alarm(&self, raised: bool, reason: &str) {
        self.environment
            .data_dir
            .outbox()
            .set_alarm(Alarm::CaptureDevice, raised, reason);
    }

    /// Finds the device, builds its input stream (16-bit if the device takes it, else 32-bit float), tells
    /// the task and starts it.
    fn open(&self) -> Result<cpal::Stream, String> {
        let host = cpal::default_host();
        let id = cpal::DeviceId::new(cpal::HostId::Alsa, &self.settings.pcm);
        let device = host.device_by_id(&id).ok_or_else(|| {
            format!(
                "ALSA lists no PCM {:?} (a PCM of one's own needs a `hint` to be listed)",
                self.settings.pcm
            )
        })?;
        let period =
            u32::try_from(u128::from(self.settings.rate_hz) * PERIOD.as_millis() / 1000).unwrap_or(u32::MAX);
        let mut last = String::new();
        for (format, buffer_size) in [
            (cpal::SampleFormat::I16, cpal::BufferSize::Fixed(period)),
            (cpal::SampleFormat::I16, cpal::BufferSize::Default),
            (cpal::SampleFormat::F32, cpal::BufferSize::Fixed(period)),
            (cpal::SampleFormat::F32, cpal::BufferSize::Default),
        ] {
            let config = cpal::StreamConfig {
                channels: self.settings.device_channels,
                sample_rate: self.settings.rate_hz,
                buffer_size,
            };
            let built = match format {
                cpal::SampleFormat::I16 => self.build::<i16>(&device, &config),
                _ => self.build::<f32>(&device, &config),
            };
            match built {
                Ok(stream) => {
                    self.queue
                        .blocking_send(Captured::Opened)
                        .map_err(|_| "stopping".to_string())?;
                    stream.play().map_err(|error| error.to_string())?;
                    return Ok(stream);
                }
                Err(error) => last = format!("{format:?} {buffer_size:?}: {error}"),
            }
        }
        Err(last)
    }

    fn build<T: cpal::SizedSample + ToPcm16>(
        &self,
        device: &cpal::Device,
        config: &cpal::StreamConfig,
    ) -> Result<cpal::Stream, cpal::Error> {
        let mut handoff = Handoff {
            queue: self.queue.clone(),
            metrics: self.metrics.clone(),
            channels: u64::from(config.channels.max(1)),
            gap_frames: 0,
        };
        let failures = self.failures.clone();
        let overruns = self.metrics.overruns.clone();
        device.build_input_stream(
            *config,
            // The real-time callback: converts, then hands over without waiting.
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                handoff.hand(data.iter().map(|sample| sample.to_pcm16()).collect());
            },
            move |error: cpal::Error| {
                // An overrun loses audio the device had (counted; the timeline is put back on the real clock
                // by `StreamClock`); the stream goes on. Anything else reopens it.
                if error.kind() == cpal::ErrorKind::Xrun {
                    overruns.inc();
                } else {
                    let _ = failures.try_send(error.to_string());
                }
            },
            None,
        )
    }
}

/// The real-time side of the capture queue: never waits; a period that finds the queue full is dropped and
/// counted, and the next one that gets through carries the gap.
struct Handoff {
    queue: mpsc::Sender<Captured>,
    metrics: CaptureMetrics,
    channels: u64,
    /// Frames dropped since the last period that got through.
    gap_frames: u64,
}

impl Handoff {
    fn hand(&mut self, samples: Vec<i16>) {
        let frames = samples.len() as u64 / self.channels;
        let audio = Captured::Audio {
            samples,
            gap_frames: self.gap_frames,
            captured: Instant::now(),
        };
        match self.queue.try_send(audio) {
            Ok(()) => self.gap_frames = 0,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.gap_frames += frames;
                self.metrics.dropped_frames.inc_by(frames);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Sample formats the device may deliver, as 16-bit PCM.
trait ToPcm16 {
    fn to_pcm16(&self) -> i16;
}

impl ToPcm16 for i16 {
    fn to_pcm16(&self) -> i16 {
        *self
    }
}

impl ToPcm16 for f32 {
    fn to_pcm16(&self) -> i16 {
        // The cast saturates; NaN becomes 0.
        (self.clamp(-1.0, 1.0) * 32767.0).round() as i16
    }
}

// --- capture task -------------------------------------------------------------------------------------------

/// Where the stream is: wall clock and monotonic clock at its first frame, frames since. Positions come from
/// the sample count, kept within `RESYNC_AFTER` of the real clock: a device clock a little fast or slow (USB
/// interfaces differ by tens to hundreds of ppm) or audio lost in an overrun would otherwise move the
/// timeline away from real time for as long as the device stays open, until the recorder found audio late
/// (lost) or far ahead, and schedule cuts left the UTC boundaries.
struct StreamClock {
    wall: Duration,
    instant: Instant,
    frames: u64,
}

/// How far the sample count may move from the real clock before the timeline is put back on it.
const RESYNC_AFTER: Duration = Duration::from_millis(250);
/// An open stream that delivers nothing for this long has stalled and is reopened.
const STALL_AFTER: Duration = Duration::from_secs(2);
/// A device that stayed open this long before failing is retried from the shortest wait again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

impl StreamClock {
    /// A period of `frames` (gap included) ending now-ish at `captured`: when the sample count puts its end
    /// more than `RESYNC_AFTER` away from `captured`, moves both anchors so that it ends there. Returns
    /// whether it did.
    fn keep_on_time(&mut self, frames: u64, rate: u64, captured: Instant) -> bool {
        let counted = Duration::from_micros((self.frames + frames) * 1_000_000 / rate);
        let by_count = self.instant + counted;
        let apart = if by_count > captured {
            by_count - captured
        } else {
            captured - by_count
        };
        if apart <= RESYNC_AFTER {
            return false;
        }
        let Some(instant) = captured.checked_sub(counted) else {
            return false;
        };
        if instant > self.instant {
            self.wall += instant - self.instant;
        } else {
            self.wall = self.wall.saturating_sub(self.instant - instant);
        }
        self.instant = instant;
        true
    }
}

/// One frame of capture waiting in the pre-roll.
struct Frame {
    at: Duration,
    arrived: Instant,
    samples: Vec<i16>,
}

struct CaptureTask {
    settings: CaptureSettings,
    environment: CallEnvironment,
    segmenter: Segmenter,
    clock: Option<StreamClock>,
    /// The last frames while no call is open, bounded to `start_after` + `PRE_ROLL`.
    pre_roll: VecDeque<Frame>,
    /// The open call's recorder; `None` between calls and for a segment that was refused.
    call: Option<mpsc::Sender<VsCallInput>>,
    /// The segmenter has a call open (recorded or refused).
    in_segment: bool,
    calls: u64,
    seed: u64,
    /// Tells the device thread the open stream stalled (it then reopens it, as for a failure it reports).
    failures: std_mpsc::SyncSender<String>,
    /// When the open stream last delivered audio; `None` while closed or once a stall was reported.
    last_audio: Option<Instant>,
}

impl CaptureTask {
    async fn run(
        mut self,
        mut captured: mpsc::Receiver<Captured>,
        mut stopping: watch::Receiver<bool>,
        stop: Arc<AtomicBool>,
    ) {
        loop {
            // A stream that stops delivering without an error (a hung USB interface, a plugin that blocks)
            // is a failure too.
            let stall_at = self
                .last_audio
                .map(|at| tokio::time::Instant::from_std(at + STALL_AFTER));
            tokio::select! {
                biased;
                input = captured.recv() => match input {
                    Some(Captured::Opened) => {
                        self.last_audio = Some(Instant::now());
                        self.clock = Some(StreamClock {
                            wall: since_epoch(SystemTime::now()),
                            instant: Instant::now(),
                            frames: 0,
                        });
                    }
                    Some(Captured::Audio { samples, gap_frames, captured }) => {
                        if self.last_audio.is_some() {
                            self.last_audio = Some(Instant::now());
                        }
                        self.on_audio(samples, gap_frames, captured).await;
                    }
                    Some(Captured::Lost) => {
                        self.last_audio = None;
                        self.interrupt().await;
                    }
                    None => break,
                },
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        break;
                    }
                }
                () = async { tokio::time::sleep_until(stall_at.unwrap_or_else(tokio::time::Instant::now)).await },
                    if stall_at.is_some() => {
                    self.last_audio = None;
                    let why = format!("no audio for {} s", STALL_AFTER.as_secs());
                    let _ = self.failures.try_send(why);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(call) = self.call.take() {
            self.environment.metrics.capture.call_cut(CaptureEnd::Interrupted);
            for leg in 0..self.settings.roles.len() {
                let _ = call
                    .send(VsCallInput::Detach {
                        leg: LegId(leg as u64),
                        how: LegFinish::Normal,
                    })
                    .await;
            }
            let _ = call.send(VsCallInput::Finish { shutdown: true }).await;
            call.closed().await;
        }
    }

    /// A period from the device: split into `PERIOD` frames (silence first for a gap).
    async fn on_audio(&mut self, samples: Vec<i16>, gap_frames: u64, captured: Instant) {
        let channels = usize::from(self.settings.device_channels.max(1));
        if let Some(clock) = &mut self.clock {
            let frames = gap_frames + (samples.len() / channels) as u64;
            if clock.keep_on_time(frames, u64::from(self.settings.rate_hz.max(1)), captured) {
                self.environment.metrics.capture.clock_resyncs.inc();
            }
        }
        let frame_len = (self.settings.rate_hz as usize * PERIOD.as_millis() as usize / 1000).max(1);
        let mut gap = usize::try_from(gap_frames).unwrap_or(usize::MAX);
        while gap > 0 {
            let n = gap.min(frame_len);
            self.on_frame(vec![0; n * channels]).await;
            gap -= n;
        }
        for frame in samples.chunks(frame_len * channels) {
            self.on_frame(frame.to_vec()).await;
        }
    }

    async fn on_frame(&mut self, samples: Vec<i16>) {
        let rate = u64::from(self.settings.rate_hz.max(1));
        let channels = usize::from(self.settings.device_channels.max(1));
        let Some(clock) = &mut self.clock else {
            return;
        };
        let frames = (samples.len() / channels) as u64;
        let offset = Duration::from_micros(clock.frames * 1_000_000 / rate);
        let at = clock.wall + offset;
        let arrived = clock.instant + offset;
        clock.frames += frames;
        let length = Duration::from_micros(frames * 1_000_000 / rate);
        let level = (0..self.settings.roles.len())
            .map(|channel| level_dbfs(&deinterleave(&samples, channels, channel)))
            .fold(f32::NEG_INFINITY, f32::max);
        let frame = Frame { at, arrived, samples };
        if let Some(call) = &self.call {
            if !feed(call, &self.settings, frame).await {
                // The recorder ended on its own (it could not write): what is left of this segment becomes
                // a call of its own rather than audio sent nowhere.
                tracing::warn!(
                    "a local-capture call's recorder ended early; the segment continues as a new call"
                );
                self.call = self.open_call();
            }
        } else if !self.in_segment {
            self.pre_roll.push_back(frame);
            let keep = self.pre_roll_length();
            while self
                .pre_roll
                .front()
                .is_some_and(|oldest| at.saturating_sub(oldest.at) > keep)
            {
                self.pre_roll.pop_front();
            }
        }
        self.segmenter.handle_frame(at, length, level);
        self.apply_events().await;
    }

    fn pre_roll_length(&self) -> Duration {
        match self.settings.segmentation {
            Segmentation::Level(level) => level.start_after + PRE_ROLL,
            Segmentation::Schedule { .. } => PERIOD,
        }
    }

    async fn apply_events(&mut self) {
        while let Some(event) = self.segmenter.poll() {
            match event {
                SegmentEvent::Start { at } => {
                    self.in_segment = true;
                    self.call = self.open_call();
                    let held: Vec<Frame> = self.pre_roll.drain(..).collect();
                    if let Some(call) = &self.call {
                        // Keep PRE_ROLL before where the loud run began.
                        let from = at.saturating_sub(PRE_ROLL);
                        for frame in held.into_iter().filter(|frame| frame.at >= from) {
                            if !feed(call, &self.settings, frame).await {
                                break;
                            }
                        }
                    }
                }
                SegmentEvent::End { reason, .. } => {
                    self.in_segment = false;
                    let how = if reason == EndReason::Interrupted {
                        LegFinish::Lost
                    } else {
                        LegFinish::Normal
                    };
                    if let Some(call) = self.call.take() {
                        self.environment.metrics.capture.call_cut(end_label(reason));
                        tracing::info!(reason = reason.as_str(), "local-capture call ended");
                        finish(&call, self.settings.roles.len(), how).await;
                    }
                }
            }
        }
    }

    /// The device stopped: the open call ends (and is kept); the stream clock starts again when it reopens.
    async fn interrupt(&mut self) {
        if let Some(clock) = &self.clock {
            let rate = u64::from(self.settings.rate_hz.max(1));
            let at = clock.wall + Duration::from_micros(clock.frames * 1_000_000 / rate);
            self.segmenter.handle_interruption(at);
            self.apply_events().await;
        }
        self.clock = None;
        self.pre_roll.clear();
    }

    /// Opens the recording of a new call, one leg per role; `None` when it is refused.
    fn open_call(&mut self) -> Option<mpsc::Sender<VsCallInput>> {
        if !self.environment.data_dir.outbox().admission_open() {
            self.environment.metrics.capture.refused.inc();
            tracing::warn!("local-capture call not recorded: the outbox refuses new calls (spool full)");
            return None;
        }
        self.calls += 1;
        let name = format!("{:08x}-{}", self.seed as u32, self.calls);
        let Some(call) = vs_call::spawn(
            StreamSource::LocalCapture,
            name,
            None,
            self.environment.clone(),
            self.settings.rate_hz,
            self.settings.roles.len(),
        ) else {
            self.environment.metrics.capture.refused.inc();
            return None;
        };
        for (leg, role) in self.settings.roles.iter().enumerate() {
            let metadata = serde_json::json!({
                "source": StreamSource::LocalCapture.as_str(),
                "device": self.settings.device,
                "channel": leg,
                "role": role,
            });
            let attach = VsCallInput::Attach {
                leg: LegId(leg as u64),
                role,
                sample_rate: self.settings.rate_hz,
                metadata_json: Pii::new(metadata.to_string()),
                from_start: true,
            };
            // The queue is new and far longer than the roles: this cannot be full.
            if call.try_send(attach).is_err() {
                return None;
            }
        }
        tracing::info!("local-capture call opened");
        Some(call)
    }
}

/// Hands one frame to the call, a leg per role; waits while the call's queue is full (recording never drops).
/// `false` when the call's recorder is gone.
async fn feed(call: &mpsc::Sender<VsCallInput>, settings: &CaptureSettings, frame: Frame) -> bool {
    let channels = usize::from(settings.device_channels.max(1));
    for leg in 0..settings.roles.len() {
        let input = VsCallInput::Audio {
            leg: LegId(leg as u64),
            samples: deinterleave(&frame.samples, channels, leg),
            arrived: frame.arrived,
        };
        if call.send(input).await.is_err() {
            return false;
        }
    }
    true
}

async fn finish(call: &mpsc::Sender<VsCallInput>, legs: usize, how: LegFinish) {
    for leg in 0..legs {
        let _ = call
            .send(VsCallInput::Detach {
                leg: LegId(leg as u64),
                how,
            })
            .await;
    }
    let _ = call.send(VsCallInput::Finish { shutdown: false }).await;
}

fn deinterleave(samples: &[i16], channels: usize, channel: usize) -> Vec<i16> {
    samples
        .iter()
        .skip(channel)
        .step_by(channels.max(1))
        .copied()
        .collect()
}

fn end_label(reason: EndReason) -> CaptureEnd {
    match reason {
        EndReason::Silence => CaptureEnd::Silence,
        EndReason::MaxLength => CaptureEnd::MaxLength,
        EndReason::Schedule => CaptureEnd::Schedule,
        EndReason::Interrupted => CaptureEnd::Interrupted,
    }
}

fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose clock runs `ppm` fast (negative: slow) delivers 20 ms periods for an hour; returns the
    /// largest distance between the timeline and the real clock, and how many times it was put back.
    fn drift(ppm: f64) -> (Duration, u32) {
        let rate = 48_000u64;
        let start = Instant::now();
        let mut clock = StreamClock {
            wall: Duration::from_secs(1_800_000_000),
            instant: start,
            frames: 0,
        };
        let mut worst = Duration::ZERO;
        let mut resyncs = 0;
        // Each period holds 960 frames of the device's clock, which takes 20 ms × (1 − ppm) of real time.
        let real_period = Duration::from_secs_f64(0.020 * (1.0 - ppm / 1e6));
        for n in 1..=180_000u32 {
            let captured = start + real_period * n;
            if clock.keep_on_time(960, rate, captured) {
                resyncs += 1;
            }
            clock.frames += 960;
            let by_count = clock.instant + Duration::from_micros(clock.frames * 1_000_000 / rate);
            let apart = if by_count > captured {
                by_count - captured
            } else {
                captured - by_count
            };
            worst = worst.max(apart);
        }
        (worst, resyncs)
    }

    #[test]
    fn the_timeline_stays_on_the_real_clock_whatever_the_device_clock_does() {
        assert_eq!(drift(0.0), (Duration::ZERO, 0));
        for ppm in [500.0, -500.0, 100.0, -1000.0] {
            let (worst, resyncs) = drift(ppm);
            assert!(worst <= RESYNC_AFTER, "{ppm} ppm: {worst:?} apart");
            // An hour at 500 ppm is 1.8 s of drift: put back every 250 ms of it.
            let expected = (3600.0 * ppm.abs() / 1e6 / RESYNC_AFTER.as_secs_f64()) as u32;
            assert!(
                resyncs.abs_diff(expected) <= 1,
                "{ppm} ppm: {resyncs} resyncs, {expected} expected"
            );
        }
    }

    #[test]
    fn an_overrun_puts_the_timeline_back_at_once() {
        let start = Instant::now();
        let mut clock = StreamClock {
            wall: Duration::from_secs(100),
            instant: start,
            frames: 48_000,
        };
        // One second of audio counted, then a period arriving 0.4 s late (the device lost 0.4 s).
        assert!(clock.keep_on_time(960, 48_000, start + Duration::from_millis(1420)));
        assert_eq!(clock.instant, start + Duration::from_millis(400));
        assert_eq!(clock.wall, Duration::from_millis(100_400));
        assert!(!clock.keep_on_time(960, 48_000, start + Duration::from_millis(1420)));
    }

    #[test]
    fn a_full_queue_drops_the_period_counts_it_and_the_next_one_carries_the_gap() {
        let (queue, mut captured) = mpsc::channel(1);
        let metrics = CaptureMetrics::default();
        let mut handoff = Handoff {
            queue,
            metrics: metrics.clone(),
            channels: 2,
            gap_frames: 0,
        };
        handoff.hand(vec![1; 640]);
        handoff.hand(vec![2; 640]);
        handoff.hand(vec![3; 640]);
        assert_eq!(metrics.dropped_frames.get(), 640);
        let Ok(Captured::Audio {
            samples, gap_frames, ..
        }) = captured.try_recv()
        else {
            panic!("the first period is queued");
        };
        assert_eq!((samples[0], gap_frames), (1, 0));
        assert!(captured.try_recv().is_err());
        handoff.hand(vec![4; 640]);
        let Ok(Captured::Audio {
            samples, gap_frames, ..
        }) = captured.try_recv()
        else {
            panic!("the fourth period is queued");
        };
        assert_eq!((samples[0], gap_frames), (4, 640));
        handoff.hand(vec![5; 640]);
        let Ok(Captured::Audio { gap_frames, .. }) = captured.try_recv() else {
            panic!("the fifth period is queued");
        };
        assert_eq!(gap_frames, 0);
    }

    #[test]
    fn channels_are_split_and_floats_saturate() {
        let interleaved = [1, -1, 2, -2, 3, -3];
        assert_eq!(deinterleave(&interleaved, 2, 0), vec![1, 2, 3]);
        assert_eq!(deinterleave(&interleaved, 2, 1), vec![-1, -2, -3]);
        assert_eq!(deinterleave(&interleaved, 1, 0), interleaved.to_vec());
        assert_eq!(1.5f32.to_pcm16(), 32767);
        assert_eq!((-2.0f32).to_pcm16(), -32767);
        assert_eq!(f32::NAN.to_pcm16(), 0);
        assert_eq!(0.5f32.to_pcm16(), 16384);
    }
}
