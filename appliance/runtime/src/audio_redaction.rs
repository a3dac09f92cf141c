//! Audio redaction of a call's recording: which stretches of which channel are silenced before the audio is
//! encrypted (redacted words, DTMF tones and RFC 4733 events, audio no check covered), how far the recorder
//! may write while the words of older audio are still being decided, and the list of what was silenced for
//! the manifest (channel, kind, call time; never a value). Pure: call tasks pass sample positions.
//!
//! Hold policy: the recorder writes audio only once every channel's audio up to that point is decided (see
//! `transcript::CallTranscript::audio_release` and the DTMF detectors). It never holds more than the
//! configured maximum (`transcription.audio_hold_max_secs`): audio still undecided then is silenced and
//! listed as `UNVERIFIED` — the recording loses it rather than keep words nobody checked.

use airlock_recording::Interleaver;
use airlock_telemetry::{RedactionMetrics, SilenceReason};
use serde::{Deserialize, Serialize};

use crate::transcript::{AudioRelease, CallTranscript, UNVERIFIED};

/// Word times from the recogniser are approximate: a redacted word's span is widened by this on each side.
pub(crate) const SPEECH_PAD_MS: u64 = 250;
/// The span kind of DTMF (in-band tones and RFC 4733 events).
pub(crate) const DTMF: &str = "DTMF";
/// The span kind of keyed digits that form a card number (13–19 digits passing Luhn): the transcript's.
const KEYED_CARD_NUMBER: &str = "CARD_NUMBER";

/// One silenced stretch as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilencedAudio {
    pub channel: usize,
    /// An entity kind of the transcript (`CARD_NUMBER`, `SSN`, …), `DTMF`, or `UNVERIFIED`.
    pub kind: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What became known since the last write: spans to silence, spans only to list (a keyed card number,
/// whose presses are silenced one by one), and where each channel's undecided audio starts, in recording
/// samples.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    pub(crate) silence: Vec<Mask>,
    pub(crate) listed: Vec<Mask>,
    pub(crate) undecided: Vec<(usize, u64)>,
}

/// A stretch of one channel to silence, in recording samples `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mask {
    pub(crate) channel: usize,
    pub(crate) kind: &'static str,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl Decisions {
    /// The transcript's release (call time in ms, per leg mapped to its channel) at `rate`; redacted words
    /// are widened by [`SPEECH_PAD_MS`].
    pub(crate) fn from_transcript(release: AudioRelease, rate: u32) -> Decisions {
        let rate = u64::from(rate);
        let sample = |ms: u64| ms.saturating_mul(rate) / 1000;
        let sample_after = |ms: u64| ms.saturating_mul(rate).div_ceil(1000);
        let silence = release
            .spans
            .into_iter()
            .map(|(channel, span)| {
                let pad = if span.kind == UNVERIFIED { 0 } else { SPEECH_PAD_MS };
                Mask {
                    channel,
                    kind: span.kind,
                    start: sample(span.start_ms.saturating_sub(pad)),
                    end: sample_after(span.end_ms.saturating_add(pad)),
                }
            })
            .collect();
        let undecided = release
            .undecided
            .into_iter()
            .map(|(channel, from_ms)| (channel, sample(from_ms)))
            .collect();
        Decisions {
            silence,
            listed: Vec::new(),
            undecided,
        }
    }
}

/// The decisions of a call so far: the transcript's (when transcribed, at the recording's `rate`) and the
/// DTMF masks found since the last write (taken from `dtmf_masks`).
pub(crate) fn decisions_of(
    transcript: Option<&CallTranscript>,
    rate: u32,
    dtmf: &mut DtmfFound,
) -> Decisions {
    let mut decisions = match transcript {
        Some(transcript) => Decisions::from_transcript(transcript.audio_release(), rate),
        None => Decisions::default(),
    };
    decisions.silence.append(&mut dtmf.presses);
    decisions.listed.append(&mut dtmf.keyed_cards);
    decisions
}

impl Decisions {
    /// Adds the transcript's last release (at the end of the call) at the recording's `rate`.
    pub(crate) fn add_final(&mut self, release: AudioRelease, rate: u32) {
        let last = Decisions::from_transcript(release, rate);
        self.silence.extend(last.silence);
        self.undecided.extend(last.undecided);
    }
}

/// DTMF found since the last write: each key press's mask, and keyed card numbers (to list).
#[derive(Debug, Default)]
pub(crate) struct DtmfFound {
    presses: Vec<Mask>,
    keyed_cards: Vec<Mask>,
}

impl DtmfFound {
    /// A press whose key is not to be kept (keyed while paused on request): only its audio is silenced.
    pub(crate) fn silence_only(&mut self, mask: Mask) {
        self.presses.push(mask);
    }
}

/// The silencing state of one recording.
#[derive(Debug)]
pub(crate) struct AudioRedactor {
    rate: u64,
    channels: usize,
    /// Masks whose end has not been written yet.
    pending: Vec<Mask>,
    /// Everything silenced so far, merged per channel and kind.
    silenced: Vec<SilencedAudio>,
    /// Masks that came after some of their audio was already written (that part could not be silenced).
    late: u64,
    /// Per channel and kind, the index of the latest stretch in `silenced`.
    latest: std::collections::HashMap<(usize, &'static str), usize>,
    /// Stretches silenced but not listed (the list was full).
    unlisted: u64,
    metrics: RedactionMetrics,
}

/// At most this many silenced stretches are listed per call (a keypad flood must not grow the manifest
/// without bound); more are silenced and counted.
const MAX_LISTED: usize = 4096;

impl AudioRedactor {
    pub(crate) fn new(rate: u32, channels: usize, metrics: RedactionMetrics) -> AudioRedactor {
        AudioRedactor {
            rate: u64::from(rate.max(1)),
            channels: channels.max(1),
            pending: Vec::new(),
            silenced: Vec::new(),
            late: 0,
            latest: std::collections::HashMap::new(),
            unlisted: 0,
            metrics,
        }
    }

    /// Takes `decisions` and returns how far the recorder may write, at most `until` and never less than
    /// `floor` (the hold limit) or `written`; audio below the returned point that is still undecided is
    /// silenced as unverified.
    pub(crate) fn release_point(
        &mut self,
        decisions: Decisions,
        until: u64,
        floor: u64,
        written: u64,
    ) -> u64 {
        for mask in decisions.listed {
            self.note(mask.channel, mask.kind, mask.start, mask.end);
        }
        for mask in decisions.silence {
            self.silence(mask, written);
        }
        let earliest = decisions
            .undecided
            .iter()
            .map(|&(_, from)| from)
            .min()
            .unwrap_or(u64::MAX);
        let release = until.min(earliest.max(floor)).max(written);
        for (channel, from) in decisions.undecided {
            if from < release {
                self.silence(
                    Mask {
                        channel,
                        kind: UNVERIFIED,
                        start: from.max(written),
                        end: release,
                    },
                    written,
                );
            }
        }
        release
    }

    /// Adds a stretch to silence; what of it lies before `written` was already encrypted and is counted late.
    pub(crate) fn silence(&mut self, mask: Mask, written: u64) {
        if mask.end <= mask.start || mask.channel >= self.channels {
            return;
        }
        if mask.start < written {
            self.late += 1;
        }
        let start = mask.start.max(written);
        if mask.end <= start {
            return;
        }
        let reason = match mask.kind {
            DTMF => SilenceReason::Dtmf,
            UNVERIFIED => SilenceReason::Unverified,
            _ => SilenceReason::Speech,
        };
        self.metrics
            .silenced(reason, (mask.end - start) as f64 / self.rate as f64);
        self.note(mask.channel, mask.kind, start, mask.end);
        self.pending.push(Mask { start, ..mask });
    }

    /// Silences the pending masks in `frames` (interleaved, first frame at position `first`) and forgets
    /// the masks that end within them.
    pub(crate) fn apply(&mut self, frames: &mut [i16], first: u64) {
        let count = (frames.len() / self.channels) as u64;
        let end = first + count;
        for mask in &self.pending {
            let from = mask.start.max(first);
            let to = mask.end.min(end);
            for frame in from..to {
                let index = usize::try_from((frame - first) * self.channels as u64).unwrap_or(usize::MAX)
                    + mask.channel;
                if let Some(sample) = frames.get_mut(index) {
                    *sample = 0;
                }
            }
        }
        self.pending.retain(|mask| mask.end > end);
    }

    /// Records how long audio was held back at a write (seconds behind the write-behind point).
    pub(crate) fn observe_hold(&self, seconds: f64) {
        self.metrics.hold_seconds.observe(seconds);
    }

    /// What was silenced, for the manifest.
    pub(crate) fn silenced(&self) -> &[SilencedAudio] {
        &self.silenced
    }

    /// How many spans came after part of their audio was written (0 unless the hold was too short).
    pub(crate) fn late(&self) -> u64 {
        self.late
    }

    /// How many silenced stretches are not listed (beyond [`MAX_LISTED`]).
    pub(crate) fn unlisted(&self) -> u64 {
        self.unlisted
    }

    /// Records a silenced stretch, merging it into an overlapping or touching one of the same kind.
    /// Only the latest stretch of each channel and kind is merged into (spans come nearly in time order);
    /// past [`MAX_LISTED`] stretches, further ones are still silenced but only counted.
    fn note(&mut self, channel: usize, kind: &'static str, start: u64, end: u64) {
        let start_ms = start * 1000 / self.rate;
        let end_ms = end.saturating_mul(1000).div_ceil(self.rate);
        if let Some(&index) = self.latest.get(&(channel, kind))
            && let Some(existing) = self.silenced.get_mut(index)
            && start_ms <= existing.end_ms
            && existing.start_ms <= end_ms
        {
            existing.start_ms = existing.start_ms.min(start_ms);
            existing.end_ms = existing.end_ms.max(end_ms);
            return;
        }
        if self.silenced.len() >= MAX_LISTED {
            self.unlisted += 1;
            return;
        }
        self.latest.insert((channel, kind), self.silenced.len());
        self.silenced.push(SilencedAudio {
            channel,
            kind: kind.to_string(),
            start_ms,
            end_ms,
        });
    }
}

/// A DTMF tone's or event's silenced span is widened by this on each side (its edges are approximate).
const DTMF_GUARD_MS: u64 = airlock_media::dtmf::MASK_GUARD_MS as u64;

/// The guard around a DTMF tone or event, in samples at `rate`.
fn dtmf_guard(rate: u64) -> u64 {
    DTMF_GUARD_MS * rate / 1000
}

/// The mask silencing a DTMF tone or event on `channel` from `start` to `end` (samples at `rate`), guarded.
pub(crate) fn dtmf_mask(channel: usize, start: u64, end: u64, rate: u64) -> Mask {
    Mask {
        channel,
        kind: DTMF,
        start: start.saturating_sub(dtmf_guard(rate)),
        end: end.saturating_add(dtmf_guard(rate)),
    }
}

/// Where undecided audio begins on `channel` for a DTMF tone or event in progress since `since` (samples at
/// `rate`): its guard included.
pub(crate) fn dtmf_undecided(channel: usize, since: u64, rate: u64) -> (usize, u64) {
    (channel, since.saturating_sub(dtmf_guard(rate)))
}

/// In-band DTMF on one leg's decoded audio (8 and 16 kHz as they are, other rates resampled to 16 kHz): a
/// masker (airlock-media) finds the tones, which become masks for the recording at its own rate, and hands
/// the audio on to transcription 60 ms later with the tones silenced, so the recogniser never hears them.
/// A jump in positions (loss, a re-anchored stream) or a new codec rate flushes the masker and starts anew.
#[derive(Debug, Default)]
pub(crate) struct ToneWatch {
    masking: Option<Masking>,
    /// Tones found and not yet taken, at leg positions, with the rate they count in.
    tones: Vec<(u32, airlock_media::DtmfTone)>,
    /// Masker output and tones, reused.
    masked: Vec<i16>,
    found: Vec<airlock_media::DtmfTone>,
}

#[derive(Debug)]
struct Masking {
    /// The rate the masker runs at (8 or 16 kHz), and the leg's own rate and next position at it.
    rate: u32,
    input_rate: u32,
    input_next: u64,
    masker: airlock_media::DtmfMasker,
    /// Position (at `rate`) of the masker's first input sample, and of the next one.
    origin: u64,
    next: u64,
}

/// The rate DTMF is analysed at for a leg at `rate`: its own when the masker supports it, else 16 kHz.
fn analysis_rate(rate: u32) -> u32 {
    if matches!(rate, 8000 | 16000) { rate } else { 16000 }
}

impl ToneWatch {
    /// Analyses `samples` of the leg at `pcm_rate`, the first at leg position `position`, and hands the
    /// audio on to `deliver(rate, position, samples)`: tones silenced, 60 ms late, at the leg's rate or — a
    /// rate other than 8 or 16 kHz — resampled to 16 kHz (a rate change first hands on the rest at the old
    /// one).
    pub(crate) fn push(
        &mut self,
        pcm_rate: u32,
        position: u64,
        samples: &[i16],
        mut deliver: impl FnMut(u32, u64, &[i16]),
    ) {
        let continues = self
            .masking
            .as_ref()
            .is_some_and(|masking| masking.input_rate == pcm_rate && masking.input_next == position);
        if !continues {
            self.flush(&mut deliver);
            let rate = analysis_rate(pcm_rate);
            let origin = position.saturating_mul(u64::from(rate)) / u64::from(pcm_rate.max(1));
            self.masking = airlock_media::DtmfMasker::new(rate).ok().map(|masker| Masking {
                rate,
                input_rate: pcm_rate,
                input_next: position,
                masker,
                origin,
                next: origin,
            });
        }
        let Some(masking) = &mut self.masking else {
            deliver(pcm_rate, position, samples);
            return;
        };
        // Other rates are analysed (and handed on) at 16 kHz.
        let converted;
        let analysed = if masking.rate == pcm_rate {
            samples
        } else {
            converted = airlock_media::resample(samples, pcm_rate, masking.rate);
            &converted
        };
        self.masked.clear();
        masking.masker.push(analysed, &mut self.masked, &mut self.found);
        let first = masking.next;
        masking.next += analysed.len() as u64;
        masking.input_next = position + samples.len() as u64;
        self.hand_on(first, &mut deliver);
    }

    /// Ends the stream: the tone in progress is reported and the delayed audio handed on.
    pub(crate) fn flush(&mut self, mut deliver: impl FnMut(u32, u64, &[i16])) {
        let Some(masking) = &mut self.masking else {
            return;
        };
        self.masked.clear();
        masking.masker.flush(&mut self.masked, &mut self.found);
        let first = masking.next;
        self.hand_on(first, &mut deliver);
        self.masking = None;
    }

    /// Hands on the masker's output for input from leg position `first` (it lags by the masker's delay;
    /// what would lie before the masker's origin is its initial silence and is dropped), and keeps the
    /// tones found, at leg positions.
    fn hand_on(&mut self, first: u64, deliver: &mut impl FnMut(u32, u64, &[i16])) {
        let Some(masking) = &self.masking else {
            return;
        };
        // The output for input from `first` covers positions from `first - delay`.
        let delay = masking.masker.delay_samples() as u64;
        let skip = (masking.origin + delay).saturating_sub(first);
        if let Some(audio) = self.masked.get(usize::try_from(skip).unwrap_or(usize::MAX)..)
            && !audio.is_empty()
        {
            deliver(masking.rate, first + skip - delay, audio);
        }
        for mut tone in self.found.drain(..) {
            tone.start_sample += masking.origin;
            tone.end_sample += masking.origin;
            self.tones.push((masking.rate, tone));
        }
    }

    /// Ends the leg (the call is over): hands the delayed audio to `transcript` as its leg `leg` and turns
    /// every tone found into masks on `channel` at the recording's `rate`.
    pub(crate) fn finish(
        &mut self,
        transcript: Option<&CallTranscript>,
        (leg, channel): (usize, usize),
        rate: u64,
        keyed: &mut KeyedDigits,
        found: &mut DtmfFound,
    ) {
        self.flush(|pcm_rate, position, masked| {
            if let Some(transcript) = transcript {
                transcript.push(leg, pcm_rate, position, masked);
            }
        });
        self.take_masks(channel, rate, keyed, found);
    }

    /// Turns the tones found into masks on `channel` at the recording's `rate`, via `keyed`.
    pub(crate) fn take_masks(
        &mut self,
        channel: usize,
        rate: u64,
        keyed: &mut KeyedDigits,
        found: &mut DtmfFound,
    ) {
        for (pcm_rate, tone) in self.tones.drain(..) {
            let to_call = |position: u64| position.saturating_mul(rate) / u64::from(pcm_rate).max(1);
            let mask = dtmf_mask(
                channel,
                to_call(tone.start_sample),
                to_call(tone.end_sample),
                rate,
            );
            keyed.pressed(tone.digit, mask, rate, found);
        }
    }

    /// Where the tone in progress began, in samples at the recording's `rate`.
    pub(crate) fn in_progress_since(&self, rate: u64) -> Option<u64> {
        let masking = self.masking.as_ref()?;
        let since = masking.origin + masking.masker.tone_in_progress_since()?;
        Some(since.saturating_mul(rate) / u64::from(masking.rate).max(1))
    }
}

/// Takes the frames from `written` up to `release` out of `interleaver` and silences them as `redactor`
/// says. Frames the interleaver forced out beyond `release` (its buffer bound was reached) were never
/// decided: they are silenced whole as UNVERIFIED. Returns the frames and the position they end at.
pub(crate) fn take_frames(
    interleaver: &mut Interleaver,
    redactor: &mut AudioRedactor,
    release: u64,
    written: u64,
) -> (Vec<i16>, u64) {
    let mut frames = interleaver.drain_ready(release);
    let end = written + (frames.len() / redactor.channels) as u64;
    if end > release {
        for channel in 0..redactor.channels {
            let mask = Mask {
                channel,
                kind: UNVERIFIED,
                start: release,
                end,
            };
            redactor.silence(mask, written);
        }
    }
    redactor.apply(&mut frames, written);
    // Fewer frames than asked for: the interleaver skipped silence up to `release`.
    (frames, end.max(release))
}

/// A pause this long between key presses ends a keyed sequence.
const KEYED_SEQUENCE_GAP_MS: u64 = 4_000;
/// Longest keyed sequence kept (the longest card number).
const MAX_KEYED_DIGITS: usize = 19;

/// The digits a caller keyed (RFC 4733 events or in-band tones), kept in memory only — never logged,
/// stored or sent — to tell whether they form a card number. Every key press is silenced as `dtmf`; a
/// sequence (presses less than 4 s apart, ended by `*`, `#` or a pause) whose last 13–19 digits pass Luhn
/// is silenced and listed as `card_number` as well.
#[derive(Debug, Default)]
pub(crate) struct KeyedDigits {
    /// Per channel: the digits of the current sequence and where each press lies.
    sequences: std::collections::BTreeMap<usize, Vec<(u8, Mask)>>,
}

impl KeyedDigits {
    /// Takes one key press (`key`: `0`–`9`, `*`, `#`, `A`–`D`) to be silenced by `mask`, into `found`.
    pub(crate) fn pressed(&mut self, key: char, mask: Mask, rate: u64, found: &mut DtmfFound) {
        found.presses.push(mask.clone());
        let sequence = self.sequences.entry(mask.channel).or_default();
        let gap = rate * KEYED_SEQUENCE_GAP_MS / 1000;
        if sequence
            .last()
            .is_some_and(|(_, last)| mask.start.saturating_sub(last.end) > gap)
        {
            sequence.clear();
        }
        let Some(digit) = key.to_digit(10) else {
            sequence.clear();
            return;
        };
        sequence.push((b'0' + digit as u8, mask));
        if sequence.len() > MAX_KEYED_DIGITS {
            sequence.remove(0);
        }
        for length in (13..=sequence.len()).rev() {
            let tail = &sequence[sequence.len() - length..];
            let digits: String = tail.iter().map(|(digit, _)| char::from(*digit)).collect();
            if airlock_compliance::luhn_valid(&digits)
                && let (Some((_, first)), Some((_, last))) = (tail.first(), tail.last())
            {
                found.keyed_cards.push(Mask {
                    channel: first.channel,
                    kind: KEYED_CARD_NUMBER,
                    start: first.start,
                    end: last.end,
                });
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(channel: usize, kind: &'static str, start: u64, end: u64) -> Mask {
        Mask {
            channel,
            kind,
            start,
            end,
        }
    }

    #[test]
    fn masks_silence_only_their_channel_and_span_across_writes() {
        let mut redactor = AudioRedactor::new(8000, 2, RedactionMetrics::default());
        redactor.silence(mask(1, "CARD_NUMBER", 3, 7), 0);
        let mut first: Vec<i16> = (1..=10).collect(); // frames 0–4, channels interleaved
        redactor.apply(&mut first, 0);
        assert_eq!(first, [1, 2, 3, 4, 5, 6, 7, 0, 9, 0]);
        let mut second: Vec<i16> = (11..=20).collect(); // frames 5–9
        redactor.apply(&mut second, 5);
        assert_eq!(second, [11, 0, 13, 0, 15, 16, 17, 18, 19, 20]);
        assert!(redactor.pending.is_empty());
        assert_eq!(redactor.late(), 0);
    }

    #[test]
    fn the_release_waits_for_undecided_audio_but_not_beyond_the_hold() {
        let mut redactor = AudioRedactor::new(1000, 2, RedactionMetrics::default());
        let decisions = Decisions {
            silence: vec![],
            listed: vec![],
            undecided: vec![(0, 4_000), (1, 6_000)],
        };
        assert_eq!(redactor.release_point(decisions, 10_000, 1_000, 0), 4_000);
        assert!(redactor.silenced().is_empty());
        // Past the hold, the undecided audio is written silenced as unverified.
        let decisions = Decisions {
            silence: vec![],
            listed: vec![],
            undecided: vec![(1, 6_000)],
        };
        assert_eq!(redactor.release_point(decisions, 20_000, 9_000, 4_000), 9_000);
        assert_eq!(
            redactor.silenced(),
            [SilencedAudio {
                channel: 1,
                kind: UNVERIFIED.into(),
                start_ms: 6_000,
                end_ms: 9_000
            }]
        );
        // Nothing undecided: everything up to `until` goes.
        assert_eq!(
            redactor.release_point(Decisions::default(), 20_000, 9_000, 9_000),
            20_000
        );
    }

    #[test]
    fn spans_after_their_audio_was_written_count_as_late_and_keep_the_rest() {
        let mut redactor = AudioRedactor::new(1000, 1, RedactionMetrics::default());
        redactor.silence(mask(0, "SSN", 500, 1_500), 1_000);
        assert_eq!(redactor.late(), 1);
        assert_eq!(redactor.silenced()[0].start_ms, 1_000);
        redactor.silence(mask(0, "SSN", 100, 900), 1_000);
        assert_eq!(redactor.late(), 2);
        assert_eq!(redactor.silenced().len(), 1);
    }

    #[test]
    fn touching_spans_of_one_kind_are_listed_once() {
        let mut redactor = AudioRedactor::new(8000, 2, RedactionMetrics::default());
        redactor.silence(mask(0, DTMF, 800, 1_600), 0);
        redactor.silence(mask(0, DTMF, 1_600, 2_400), 0);
        redactor.silence(mask(1, DTMF, 1_600, 2_400), 0);
        redactor.silence(mask(0, "CARD_NUMBER", 0, 8_000), 0);
        let kinds: Vec<(usize, &str, u64, u64)> = redactor
            .silenced()
            .iter()
            .map(|s| (s.channel, s.kind.as_str(), s.start_ms, s.end_ms))
            .collect();
        assert_eq!(
            kinds,
            [
                (0, DTMF, 100, 300),
                (1, DTMF, 200, 300),
                (0, "CARD_NUMBER", 0, 1_000)
            ]
        );
    }

    #[test]
    fn transcript_spans_are_padded_but_unverified_ones_are_not() {
        let release = AudioRelease {
            spans: vec![
                (
                    1,
                    crate::transcript::AudioSpan {
                        leg: 0,
                        kind: "CARD_NUMBER",
                        start_ms: 1_000,
                        end_ms: 2_000,
                    },
                ),
                (
                    0,
                    crate::transcript::AudioSpan {
                        leg: 1,
                        kind: UNVERIFIED,
                        start_ms: 100,
                        end_ms: 200,
                    },
                ),
            ],
            undecided: vec![(0, 3_000)],
        };
        let decisions = Decisions::from_transcript(release, 8000);
        assert_eq!(
            decisions.silence,
            [
                mask(1, "CARD_NUMBER", 750 * 8, 2_250 * 8),
                mask(0, UNVERIFIED, 800, 1_600)
            ]
        );
        assert_eq!(decisions.undecided, [(0, 24_000)]);
    }

    /// 8 kHz audio: a low hum with the DTMF pair of `5` (770 + 1336 Hz) from `tone.start` to `tone.end`.
    fn hum_with_tone(len: usize, tone: std::ops::Range<usize>) -> Vec<i16> {
        (0..len)
            .map(|n| {
                let t = n as f64 / 8000.0;
                let hum = 300.0 * (2.0 * std::f64::consts::PI * 150.0 * t).sin();
                let key = if tone.contains(&n) {
                    4000.0
                        * ((2.0 * std::f64::consts::PI * 770.0 * t).sin()
                            + (2.0 * std::f64::consts::PI * 1336.0 * t).sin())
                } else {
                    0.0
                };
                (hum + key) as i16
            })
            .collect()
    }

    #[test]
    fn tone_watch_hands_on_all_audio_in_place_with_tones_silenced() {
        let audio = hum_with_tone(16_000, 4_000..4_800);
        let origin = 80_000;
        let mut watch = ToneWatch::default();
        let mut delivered: Vec<(u32, u64, Vec<i16>)> = Vec::new();
        for (index, chunk) in audio.chunks(160).enumerate() {
            let position = origin + index as u64 * 160;
            watch.push(8000, position, chunk, |rate, at, samples| {
                delivered.push((rate, at, samples.to_vec()));
            });
            // While the tone sounds, audio from its start on is undecided.
            if position > origin + 4_200 && position < origin + 4_700 {
                let since = watch.in_progress_since(8000).expect("tone in progress");
                assert!((origin + 3_900..origin + 4_100).contains(&since), "{since}");
            }
        }
        watch.flush(|rate, at, samples| delivered.push((rate, at, samples.to_vec())));
        // Contiguous from the origin, as long as the input.
        let mut next = origin;
        let mut joined = Vec::new();
        for (rate, at, samples) in &delivered {
            assert_eq!((*rate, *at), (8000, next));
            next += samples.len() as u64;
            joined.extend_from_slice(samples);
        }
        assert_eq!(joined.len(), audio.len());
        assert!(
            joined[3_900..4_900].iter().all(|&s| s == 0),
            "the tone reached transcription"
        );
        assert_eq!(joined[..3_800], audio[..3_800]);
        assert_eq!(joined[5_000..], audio[5_000..]);
        // The tone becomes a guarded DTMF mask at the recording's rate (16 kHz here).
        let mut keyed = KeyedDigits::default();
        let mut found = DtmfFound::default();
        watch.take_masks(1, 16_000, &mut keyed, &mut found);
        let [press] = found.presses.as_slice() else {
            panic!("one press expected: {:?}", found.presses);
        };
        assert_eq!((press.channel, press.kind), (1, DTMF));
        assert!(
            press.start <= (origin + 4_000) * 2 && press.start >= (origin + 4_000) * 2 - 700,
            "{press:?}"
        );
        assert!(
            press.end >= (origin + 4_800) * 2 && press.end <= (origin + 4_800) * 2 + 700,
            "{press:?}"
        );
    }

    #[test]
    fn a_jump_or_a_new_rate_hands_on_the_rest_first() {
        let mut watch = ToneWatch::default();
        let mut delivered: Vec<(u32, u64, usize)> = Vec::new();
        let quiet = vec![100i16; 160];
        watch.push(8000, 0, &quiet, |rate, at, samples| {
            delivered.push((rate, at, samples.len()))
        });
        watch.push(8000, 1_000, &quiet, |rate, at, samples| {
            delivered.push((rate, at, samples.len()))
        });
        watch.push(16_000, 5_000, &[100i16; 320], |rate, at, samples| {
            delivered.push((rate, at, samples.len()))
        });
        watch.flush(|rate, at, samples| delivered.push((rate, at, samples.len())));
        let total_8k: usize = delivered.iter().filter(|d| d.0 == 8000).map(|d| d.2).sum();
        let total_16k: usize = delivered.iter().filter(|d| d.0 == 16_000).map(|d| d.2).sum();
        assert_eq!((total_8k, total_16k), (320, 320));
        assert!(
            delivered
                .iter()
                .filter(|d| d.0 == 8000)
                .all(|d| d.1 < 160 || (1_000..1_160).contains(&d.1))
        );
        // Other rates are analysed and handed on at 16 kHz: 48 kHz in, a third as many samples out.
        let mut delivered = Vec::new();
        watch.push(48_000, 48_000, &[100i16; 960], |rate, at, samples| {
            delivered.push((rate, at, samples.len()))
        });
        watch.flush(|rate, at, samples| delivered.push((rate, at, samples.len())));
        assert!(delivered.iter().all(|d| d.0 == 16_000), "{delivered:?}");
        assert_eq!(delivered[0].1, 16_000);
        assert_eq!(delivered.iter().map(|d| d.2).sum::<usize>(), 320);
    }

    #[test]
    fn frames_forced_out_past_the_release_are_silenced_as_unverified() {
        let mut interleaver = Interleaver::with_max_pending_frames(1, 100);
        let mut redactor = AudioRedactor::new(1000, 1, RedactionMetrics::default());
        // 250 frames buffered against a bound of 100: the oldest 150 are forced out.
        interleaver.push(0, 0, &[7i16; 250]);
        let (frames, end) = take_frames(&mut interleaver, &mut redactor, 50, 0);
        assert_eq!((frames.len(), end), (150, 150));
        assert!(frames[..50].iter().all(|&s| s == 7));
        assert!(
            frames[50..].iter().all(|&s| s == 0),
            "undecided audio was written"
        );
        assert_eq!(redactor.silenced()[0].kind, UNVERIFIED);
        // Asked past what is buffered: silence up to the release, written point there.
        let (frames, end) = take_frames(&mut interleaver, &mut redactor, 300, 150);
        assert_eq!((frames.len(), end), (150, 300));
        assert!(frames[..100].iter().all(|&s| s == 7));
    }

    #[test]
    fn keyed_digits_forming_a_card_number_are_listed_as_one() {
        let mut keyed = KeyedDigits::default();
        let mut found = DtmfFound::default();
        let press = |index: u64| mask(1, DTMF, index * 2_000, index * 2_000 + 800);
        // 4111 1111 1111 1111 passes Luhn; keyed after two other digits and a `#`.
        let keys = "12#4111111111111111";
        for (index, key) in keys.chars().enumerate() {
            keyed.pressed(key, press(index as u64), 8000, &mut found);
        }
        let presses: Vec<Mask> = (0..keys.len() as u64).map(press).collect();
        assert_eq!(found.presses, presses, "every press is silenced as DTMF");
        assert_eq!(
            found.keyed_cards.last(),
            Some(&mask(1, KEYED_CARD_NUMBER, 3 * 2_000, 18 * 2_000 + 800))
        );
        // A long pause ends the sequence: the same digits keyed slowly are not joined.
        let mut keyed = KeyedDigits::default();
        let mut found = DtmfFound::default();
        let slow = |index: u64| mask(0, DTMF, index * 40_000, index * 40_000 + 800);
        for (index, key) in "4111111111111111".chars().enumerate() {
            keyed.pressed(key, slow(index as u64), 8000, &mut found);
        }
        assert!(found.keyed_cards.is_empty());
        assert_eq!(found.presses.len(), 16);
    }
}
