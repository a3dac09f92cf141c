//! A call's transcript on the runtime side: feeds each leg's decoded PCM to the transcription engine, takes
//! its segments as they finalise, passes them through the call's redactor (airlock-compliance: card
//! numbers, security codes, SSNs … replaced by tokens, in memory), appends each released segment to the
//! event log (the path toward MQTT), and at the end of the call writes `transcript.json` and
//! `transcript.vtt` into the call directory. Only redactor-released text is ever written or sent; no text
//! is logged. A segment the redactor holds back (digits that may continue in the speaker's next segment)
//! is released when that speaker goes on, when a later segment of the call passes its hold window, or when
//! the call ends.
//!
//! It also tells the recorder what to silence (audio redaction): the call-time spans of redacted words, and
//! how far each leg's audio is decided — settled by the engine (transcribed or judged not speech) and not
//! held by the redactor. Audio the engine never checked (refused input, dropped or failed segments) is
//! reported as an `UNVERIFIED` span, so it is silenced too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use airlock_compliance::{
    ConversationRedactor, LegId, RedactorConfig, Released, ReleasedSegment as Redacted, WordTiming,
};
use airlock_telemetry::TranscriptionMetrics;
use airlock_transcribe::{
    CallTranscription, DecoderConfig, Gap, Model, ModelError, PoolConfig, Segment, SegmentSink, SileroModel,
    Transcriber, VadError,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::rfc3339;
use crate::manifest::TranscriptReport;
use crate::storage::{DataDir, write_atomically};

/// During shutdown a call waits at most this long for its last segments, so stopping stays prompt.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// The transcript artifact's format identifier.
pub const FORMAT: &str = "airlock.transcript.v1";

/// `[transcription]` as validated by the binary: model files and engine settings.
#[derive(Debug, Clone)]
pub struct TranscriptionSettings {
    pub model: PathBuf,
    pub vad_model: PathBuf,
    pub onnxruntime_library: PathBuf,
    pub pool: PoolConfig,
    pub decoder: DecoderConfig,
    pub finish_timeout: Duration,
    /// The longest the recorder holds audio back waiting for its words; audio still undecided then is
    /// silenced as unverified.
    pub audio_hold_max: Duration,
}

/// Why transcription could not start; the message names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptionError {
    #[error("transcription.model: {0}")]
    Model(ModelError),
    #[error("transcription.vad_model / transcription.onnxruntime_library: {0}")]
    Vad(VadError),
}

/// Loads the models and starts the engine's threads (decoder states are allocated now, not per call).
pub fn start(
    settings: &TranscriptionSettings,
    metrics: TranscriptionMetrics,
) -> Result<Transcription, TranscriptionError> {
    let model = Model::load(&settings.model, settings.decoder.clone()).map_err(TranscriptionError::Model)?;
    let vad = SileroModel::load(&settings.vad_model, &settings.onnxruntime_library)
        .map_err(TranscriptionError::Vad)?;
    let info = model.info().clone();
    let engine =
        Transcriber::start(&model, vad, settings.pool.clone(), metrics).map_err(TranscriptionError::Model)?;
    let model_name = settings
        .model
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    tracing::info!(
        model = %model_name,
        size = info.size_class,
        workers = settings.pool.workers,
        "transcription ready"
    );
    Ok(Transcription {
        engine,
        redaction: RedactorConfig::default(),
        finish_timeout: settings.finish_timeout,
        audio_hold_max: settings.audio_hold_max,
        model_name,
    })
}

/// What the call tasks need to transcribe: the engine, the redactor's settings, and how long a finished
/// call may wait for its last segments before its transcript is written as incomplete.
#[derive(Clone, Debug)]
pub struct Transcription {
    pub engine: Transcriber,
    pub redaction: RedactorConfig,
    pub finish_timeout: Duration,
    /// See [`TranscriptionSettings::audio_hold_max`].
    pub audio_hold_max: Duration,
    /// The model's file name, recorded in each transcript.
    pub model_name: String,
}

/// One call's transcript in progress.
#[derive(Debug)]
pub(crate) struct CallTranscript {
    handle: CallTranscription,
    sink: Arc<TranscriptSink>,
    finish_timeout: Duration,
}

#[derive(Debug)]
struct TranscriptSink {
    call: String,
    started_wall: SystemTime,
    redaction: Mutex<Redaction>,
    data_dir: DataDir,
    model_name: String,
    state: Mutex<SinkState>,
}

/// The call's redactor and what the runtime keeps of each segment it may still hold.
#[derive(Debug)]
struct Redaction {
    redactor: ConversationRedactor,
    /// Per segment handed to the redactor (by its arrival sequence): word probabilities and confidence.
    scores: BTreeMap<u64, (Vec<f32>, f32)>,
    /// Per segment the redactor may still hold (by its arrival sequence): its leg and start.
    held: BTreeMap<u64, (usize, u64)>,
    next_sequence: u64,
    /// What the recorder needs for audio redaction.
    audio: AudioVerdicts,
}

/// A call-time span of one leg's audio that must be silenced, and why (an entity kind, or `UNVERIFIED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AudioSpan {
    pub(crate) leg: usize,
    pub(crate) kind: &'static str,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
}

/// The audio-redaction side of a call's transcript: spans not yet collected by the recorder, and per leg
/// how far its audio was pushed and how far the engine has settled it.
#[derive(Debug, Default)]
struct AudioVerdicts {
    spans: Vec<AudioSpan>,
    legs: BTreeMap<usize, LegProgress>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LegProgress {
    pushed_until_ms: u64,
    settled_ms: u64,
}

/// The span kind of audio the engine never checked.
pub(crate) const UNVERIFIED: &str = "UNVERIFIED";

/// What the recorder may write of a call: the spans to silence, and per channel the call time (ms) from
/// which its audio is still undecided.
#[derive(Debug, Default)]
pub(crate) struct AudioRelease {
    pub(crate) spans: Vec<(usize, AudioSpan)>,
    pub(crate) undecided: Vec<(usize, u64)>,
}

#[derive(Debug, Default)]
struct SinkState {
    legs: BTreeMap<usize, LegInfo>,
    segments: Vec<ReleasedSegment>,
    gaps: Vec<Gap>,
}

#[derive(Debug, Clone, Serialize)]
struct LegInfo {
    leg: usize,
    /// The speaker's role or stream label (`agent`, `customer`, a SIPREC `a=label`).
    speaker: String,
    channel: usize,
}

#[derive(Debug)]
struct ReleasedSegment {
    leg: usize,
    start_ms: u64,
    end_ms: u64,
    text: Released,
    words: Vec<(Released, u64, u64, f32)>,
    confidence: f32,
    /// What was redacted: kind and call time, never the value.
    redactions: Vec<JsonRedaction>,
}

/// One redacted span of a released segment.
#[derive(Debug, Clone, Serialize)]
struct JsonRedaction {
    kind: &'static str,
    start_ms: u64,
    end_ms: u64,
}

/// The timed words of `segment` located in its text (character ranges, in order) and their probabilities,
/// index for index; words that cannot be found are left out, so their time falls back to the segment's.
fn locate_words(segment: &Segment) -> (Vec<WordTiming>, Vec<f32>) {
    let text = segment.text.expose();
    let mut timings = Vec::with_capacity(segment.words.len());
    let mut probabilities = Vec::with_capacity(segment.words.len());
    let mut from_byte = 0;
    for word in &segment.words {
        let wanted = word.text.expose().trim();
        if wanted.is_empty() {
            continue;
        }
        let Some(found) = text.get(from_byte..).and_then(|rest| rest.find(wanted)) else {
            continue;
        };
        let start_byte = from_byte + found;
        let end_byte = start_byte + wanted.len();
        let start = text[..start_byte].chars().count();
        timings.push(WordTiming {
            chars: start..start + wanted.chars().count(),
            start_ms: word.start_ms,
            end_ms: word.end_ms,
        });
        probabilities.push(word.probability);
        from_byte = end_byte;
    }
    (timings, probabilities)
}

fn lock(state: &Mutex<SinkState>) -> std::sync::MutexGuard<'_, SinkState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SegmentSink for TranscriptSink {
    fn segment(&self, segment: Segment) {
        let (words, probabilities) = locate_words(&segment);
        let released = {
            let mut redaction = self.lock_redaction();
            let sequence = redaction.next_sequence;
            redaction.next_sequence += 1;
            redaction
                .scores
                .insert(sequence, (probabilities, segment.confidence));
            redaction.held.insert(sequence, (segment.leg, segment.start_ms));
            let end_ms = segment.end_ms;
            let mut released = redaction.redactor.push(airlock_compliance::Segment {
                leg: LegId(u32::try_from(segment.leg).unwrap_or(u32::MAX)),
                text: segment.text,
                words,
                start_ms: segment.start_ms,
                end_ms,
            });
            // Call time has reached this segment's end: segments held longer than the window go now.
            released.extend(redaction.redactor.poll(end_ms));
            released
                .into_iter()
                .map(|released| redaction.take(released))
                .collect::<Vec<_>>()
        };
        for released in released {
            self.publish(released);
        }
    }

    fn gap(&self, gap: Gap) {
        self.lock_redaction().audio.spans.push(AudioSpan {
            leg: gap.leg,
            kind: UNVERIFIED,
            start_ms: gap.start_ms,
            end_ms: gap.end_ms,
        });
        lock(&self.state).gaps.push(gap);
    }

    fn settled(&self, leg: usize, until_ms: u64) {
        let released = {
            let mut redaction = self.lock_redaction();
            let pushed = redaction
                .audio
                .legs
                .values()
                .map(|progress| progress.pushed_until_ms)
                .max()
                .unwrap_or(0);
            let progress = redaction.audio.legs.entry(leg).or_default();
            progress.settled_ms = progress.settled_ms.max(until_ms);
            // Call time has reached at least this far: segments held past their window go now.
            let released = redaction.redactor.poll(until_ms.min(pushed));
            released
                .into_iter()
                .map(|released| redaction.take(released))
                .collect::<Vec<_>>()
        };
        for released in released {
            self.publish(released);
        }
    }
}

impl Redaction {
    /// The runtime's form of a segment the redactor released, with the scores kept for it.
    fn take(&mut self, released: Redacted) -> ReleasedSegment {
        let (probabilities, confidence) = self.scores.remove(&released.sequence).unwrap_or_default();
        self.held.remove(&released.sequence);
        let leg = released.leg.0 as usize;
        self.audio
            .spans
            .extend(released.spans.iter().map(|span| AudioSpan {
                leg,
                kind: span.kind.label(),
                start_ms: span.start_ms,
                end_ms: span.end_ms,
            }));
        ReleasedSegment {
            leg: released.leg.0 as usize,
            start_ms: released.start_ms,
            end_ms: released.end_ms,
            text: released.text,
            words: released
                .words
                .into_iter()
                .map(|word| {
                    let probability = probabilities
                        .get(word.source.clone())
                        .and_then(|covered| covered.iter().copied().reduce(f32::min))
                        .unwrap_or(confidence);
                    (word.text, word.start_ms, word.end_ms, probability)
                })
                .collect(),
            confidence,
            redactions: released
                .spans
                .iter()
                .map(|span| JsonRedaction {
                    kind: span.kind.label(),
                    start_ms: span.start_ms,
                    end_ms: span.end_ms,
                })
                .collect(),
        }
    }
}

impl TranscriptSink {
    fn lock_redaction(&self) -> std::sync::MutexGuard<'_, Redaction> {
        self.redaction
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a released segment to the event log and keeps it for the transcript files.
    fn publish(&self, released: ReleasedSegment) {
        let speaker = lock(&self.state)
            .legs
            .get(&released.leg)
            .map(|leg| leg.speaker.clone())
            .unwrap_or_default();
        let event = SegmentEvent {
            event: "transcript_segment",
            call: &self.call,
            at: rfc3339(SystemTime::now()),
            segment: self.json_segment(&released, &speaker),
        };
        if let Err(error) = self.data_dir.append_event("evt/transcript", &event) {
            tracing::error!(%error, "cannot append a transcript segment to the event log");
        }
        lock(&self.state).segments.push(released);
    }

    /// See [`CallTranscript::audio_release`].
    fn audio_release(&self) -> AudioRelease {
        let channels: BTreeMap<usize, usize> = lock(&self.state)
            .legs
            .iter()
            .map(|(leg, info)| (*leg, info.channel))
            .collect();
        let channel_of = |leg: usize| channels.get(&leg).copied().unwrap_or(leg);
        let mut redaction = self.lock_redaction();
        let mut undecided: BTreeMap<usize, u64> = BTreeMap::new();
        for (leg, progress) in &redaction.audio.legs {
            if progress.settled_ms < progress.pushed_until_ms {
                let from = undecided.entry(channel_of(*leg)).or_insert(u64::MAX);
                *from = (*from).min(progress.settled_ms);
            }
        }
        for (leg, start_ms) in redaction.held.values() {
            let from = undecided.entry(channel_of(*leg)).or_insert(u64::MAX);
            *from = (*from).min(*start_ms);
        }
        let spans = std::mem::take(&mut redaction.audio.spans)
            .into_iter()
            .map(|span| (channel_of(span.leg), span))
            .collect();
        AudioRelease {
            spans,
            undecided: undecided.into_iter().collect(),
        }
    }

    /// Releases what the redactor still holds (the call has ended).
    fn release_held(&self) {
        let released: Vec<ReleasedSegment> = {
            let mut redaction = self.lock_redaction();
            let held = redaction.redactor.finish();
            held.into_iter()
                .map(|released| redaction.take(released))
                .collect()
        };
        for released in released {
            self.publish(released);
        }
    }
}

#[derive(Serialize)]
struct SegmentEvent<'a> {
    event: &'static str,
    call: &'a str,
    at: String,
    segment: JsonSegment<'a>,
}

#[derive(Serialize)]
struct JsonSegment<'a> {
    leg: usize,
    speaker: String,
    start_ms: u64,
    end_ms: u64,
    start_at: String,
    end_at: String,
    text: &'a str,
    confidence: f32,
    words: Vec<JsonWord<'a>>,
    /// What was redacted in this segment (kind and call time; never the value).
    redactions: &'a [JsonRedaction],
}

#[derive(Serialize)]
struct JsonWord<'a> {
    text: &'a str,
    start_ms: u64,
    end_ms: u64,
    probability: f32,
}

#[derive(Serialize)]
struct JsonGap {
    leg: usize,
    start_ms: u64,
    end_ms: u64,
    reason: &'static str,
}

#[derive(Serialize)]
struct TranscriptFile<'a> {
    format: &'static str,
    call: &'a str,
    started_at: String,
    model: &'a str,
    redaction_policy: &'static str,
    /// False when the call ended before all its segments were decoded (see `gaps` too).
    complete: bool,
    legs: Vec<LegInfo>,
    segments: Vec<JsonSegment<'a>>,
    gaps: Vec<JsonGap>,
}

impl TranscriptSink {
    fn wall(&self, ms: u64) -> String {
        rfc3339(self.started_wall + Duration::from_millis(ms))
    }

    fn json_segment<'a>(&self, segment: &'a ReleasedSegment, speaker: &str) -> JsonSegment<'a> {
        JsonSegment {
            leg: segment.leg,
            speaker: speaker.to_string(),
            start_ms: segment.start_ms,
            end_ms: segment.end_ms,
            start_at: self.wall(segment.start_ms),
            end_at: self.wall(segment.end_ms),
            text: segment.text.text(),
            confidence: segment.confidence,
            words: segment
                .words
                .iter()
                .map(|(text, start_ms, end_ms, probability)| JsonWord {
                    text: text.text(),
                    start_ms: *start_ms,
                    end_ms: *end_ms,
                    probability: *probability,
                })
                .collect(),
            redactions: &segment.redactions,
        }
    }
}

impl CallTranscript {
    /// Starts transcribing the call `call` (its directory name), whose timeline began at `started_wall`.
    pub(crate) fn open(
        transcription: &Transcription,
        call: &str,
        started_wall: SystemTime,
        data_dir: &DataDir,
    ) -> CallTranscript {
        let sink = Arc::new(TranscriptSink {
            call: call.to_string(),
            started_wall,
            redaction: Mutex::new(Redaction {
                redactor: ConversationRedactor::new(transcription.redaction),
                scores: BTreeMap::new(),
                held: BTreeMap::new(),
                next_sequence: 0,
                audio: AudioVerdicts::default(),
            }),
            data_dir: data_dir.clone(),
            model_name: transcription.model_name.clone(),
            state: Mutex::new(SinkState::default()),
        });
        CallTranscript {
            handle: transcription.engine.open_call(sink.clone()),
            sink,
            finish_timeout: transcription.finish_timeout,
        }
    }

    /// Names leg `leg` (recorded on `channel`) as `speaker`.
    pub(crate) fn name_leg(&self, leg: usize, speaker: &str, channel: usize) {
        lock(&self.sink.state).legs.insert(
            leg,
            LegInfo {
                leg,
                speaker: speaker.to_string(),
                channel,
            },
        );
    }

    /// Offers decoded PCM of `leg` at `rate`, starting at sample `position` of the call timeline at that
    /// rate. Never blocks; audio the engine cannot take is dropped there, shows as a gap, and is silenced in
    /// the recording as unverified.
    pub(crate) fn push(&self, leg: usize, rate: u32, position: u64, samples: &[i16]) {
        let rate_hz = u64::from(rate.max(1));
        let start_ms = position * 1000 / rate_hz;
        let end_ms = (position + samples.len() as u64)
            .saturating_mul(1000)
            .div_ceil(rate_hz);
        let taken = self.handle.push(leg, rate, position, samples);
        let mut redaction = self.sink.lock_redaction();
        let audio = &mut redaction.audio;
        if !taken {
            audio.spans.push(AudioSpan {
                leg,
                kind: UNVERIFIED,
                start_ms,
                end_ms,
            });
        }
        let progress = audio.legs.entry(leg).or_default();
        progress.pushed_until_ms = progress.pushed_until_ms.max(end_ms);
    }

    /// Takes the spans to silence found since the last call, and per channel the call time from which its
    /// audio is still undecided (pushed but not settled, or in a segment the redactor holds).
    pub(crate) fn audio_release(&self) -> AudioRelease {
        self.sink.audio_release()
    }

    /// Ends the call's transcription, waits (off the async workers) up to the finish timeout for its last
    /// segments — at most [`SHUTDOWN_WAIT`] when the appliance is shutting down — and writes the transcript
    /// files into `dir`. Returns the manifest's report of them, and the last audio release (what is still
    /// undecided then — the transcript is incomplete — is silenced by the recorder).
    pub(crate) async fn finish(
        self,
        dir: &Path,
        shutting_down: bool,
    ) -> (Option<TranscriptReport>, AudioRelease) {
        let finishing = self.handle.finish();
        let timeout = if shutting_down {
            self.finish_timeout.min(SHUTDOWN_WAIT)
        } else {
            self.finish_timeout
        };
        let complete = tokio::task::spawn_blocking(move || finishing.wait(timeout))
            .await
            .unwrap_or(false);
        if !complete {
            tracing::warn!("transcription did not finish in time; the transcript is incomplete");
        }
        tokio::task::block_in_place(|| self.sink.release_held());
        let release = self.sink.audio_release();
        let dir = dir.to_path_buf();
        let report = tokio::task::block_in_place(|| write_files(&self.sink, &dir, complete))
            .map_err(|error| tracing::error!(%error, "cannot write the transcript"))
            .ok();
        (report, release)
    }
}

fn write_files(sink: &TranscriptSink, dir: &Path, complete: bool) -> std::io::Result<TranscriptReport> {
    let mut state = lock(&sink.state);
    state
        .segments
        .sort_by_key(|segment| (segment.start_ms, segment.leg));
    state.gaps.sort_by_key(|gap| (gap.start_ms, gap.leg));
    let state = &*state;
    let speaker = |leg: usize| {
        state
            .legs
            .get(&leg)
            .map(|info| info.speaker.clone())
            .unwrap_or_else(|| format!("leg-{leg}"))
    };
    let file = TranscriptFile {
        format: FORMAT,
        call: &sink.call,
        started_at: rfc3339(sink.started_wall),
        model: &sink.model_name,
        redaction_policy: airlock_compliance::REDACTION_POLICY,
        complete,
        legs: state.legs.values().cloned().collect(),
        segments: state
            .segments
            .iter()
            .map(|segment| sink.json_segment(segment, &speaker(segment.leg)))
            .collect(),
        gaps: state
            .gaps
            .iter()
            .map(|gap| JsonGap {
                leg: gap.leg,
                start_ms: gap.start_ms,
                end_ms: gap.end_ms,
                reason: gap.reason.as_str(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let vtt = webvtt(state.segments.iter().map(|segment| {
        (
            segment.start_ms,
            segment.end_ms,
            speaker(segment.leg),
            segment.text.text(),
        )
    }));
    write_atomically(&dir.join("transcript.json"), &json)?;
    write_atomically(&dir.join("transcript.vtt"), vtt.as_bytes())?;
    Ok(TranscriptReport {
        file: "transcript.json".into(),
        sha256: hex::encode(Sha256::digest(&json)),
        vtt_file: "transcript.vtt".into(),
        vtt_sha256: hex::encode(Sha256::digest(vtt.as_bytes())),
        segments: state.segments.len(),
        gaps: state.gaps.len(),
        complete,
        redaction_policy: airlock_compliance::REDACTION_POLICY.into(),
    })
}

/// WebVTT cues, one per segment, with the speaker as a voice span (`<v agent>`).
fn webvtt<'a>(cues: impl Iterator<Item = (u64, u64, String, &'a str)>) -> String {
    let mut out = String::from("WEBVTT\n");
    for (index, (start, end, speaker, text)) in cues.enumerate() {
        out.push_str(&format!(
            "\n{}\n{} --> {}\n<v {}>{}\n",
            index + 1,
            vtt_time(start),
            vtt_time(end.max(start + 1)),
            vtt_escape(&speaker),
            vtt_escape(text)
        ));
    }
    out
}

fn vtt_time(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Cue text may not contain `&`, `<` or `-->`; line breaks would end the cue.
fn vtt_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webvtt_cues_are_timed_voiced_and_escaped() {
        let vtt = webvtt(
            vec![
                (1_250, 3_400, "agent".to_string(), "Hello, how can I help?"),
                (
                    3_723_004,
                    3_725_000,
                    "customer".to_string(),
                    "a <b> & c --> d\nnext",
                ),
            ]
            .into_iter(),
        );
        assert_eq!(
            vtt,
            "WEBVTT\n\n1\n00:00:01.250 --> 00:00:03.400\n<v agent>Hello, how can I help?\n\n\
             2\n01:02:03.004 --> 01:02:05.000\n<v customer>a &lt;b&gt; &amp; c --&gt; d next\n"
        );
    }
}
