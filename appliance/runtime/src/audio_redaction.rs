//! Audio redaction of a call's recording: which stretches of which channel are silenced before the audio is
//! encrypted (redacted words, DTMF tones and RFC 4733 events, audio no check covered), how far the recorder
//! may write while the words of older audio are still being decided, and the list of what was silenced for
//! the manifest (channel, kind, call time; never a value). Pure: call tasks pass sample positions.
//!
//! Hold policy: the recorder writes audio only once every channel's audio up to that point is decided (see
//! `transcript::CallTranscript::audio_release` and the DTMF detectors). It never holds more than the
//! configured maximum (`transcription.audio_hold_max_secs`): audio still undecided then is silenced and
//! listed as `UNVERIFIED` — the recording loses it rather than keep words nobody checked.

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
        let silence = release
            .spans
            .into_iter()
            .map(|(channel, span)| {
                let pad = if span.kind == UNVERIFIED { 0 } else { SPEECH_PAD_MS };
                Mask {
                    channel,
                    kind: span.kind,
                    start: sample(span.start_ms.saturating_sub(pad)),
                    end: sample(span.end_ms.saturating_add(pad)),
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

/// DTMF found since the last write: each key press's mask, and keyed card numbers (to list).
#[derive(Debug, Default)]
pub(crate) struct DtmfFound {
    presses: Vec<Mask>,
    keyed_cards: Vec<Mask>,
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
    metrics: RedactionMetrics,
}

impl AudioRedactor {
    pub(crate) fn new(rate: u32, channels: usize, metrics: RedactionMetrics) -> AudioRedactor {
        AudioRedactor {
            rate: u64::from(rate.max(1)),
            channels: channels.max(1),
            pending: Vec::new(),
            silenced: Vec::new(),
            late: 0,
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

    /// Records a silenced stretch, merging it into an overlapping or touching one of the same kind.
    fn note(&mut self, channel: usize, kind: &str, start: u64, end: u64) {
        let start_ms = start * 1000 / self.rate;
        let end_ms = end.saturating_mul(1000).div_ceil(self.rate);
        if let Some(existing) = self.silenced.iter_mut().find(|existing| {
            existing.channel == channel
                && existing.kind == kind
                && start_ms <= existing.end_ms
                && existing.start_ms <= end_ms
        }) {
            existing.start_ms = existing.start_ms.min(start_ms);
            existing.end_ms = existing.end_ms.max(end_ms);
            return;
        }
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

/// In-band DTMF detection on one leg's decoded audio (8 and 16 kHz; other rates are not analysed). Found
/// tones become masks at the recording's rate; a position that goes back (a re-anchored stream) or a new
/// codec rate restarts the detector.
#[derive(Debug, Default)]
pub(crate) struct ToneWatch {
    detector: Option<(u32, airlock_media::DtmfDetector)>,
    tones: Vec<airlock_media::DtmfTone>,
}

impl ToneWatch {
    /// Analyses `samples` of the leg at `pcm_rate`, the first at leg position `position`.
    pub(crate) fn push(&mut self, pcm_rate: u32, position: u64, samples: &[i16]) {
        if self.detector.as_ref().is_none_or(|(rate, _)| *rate != pcm_rate) {
            self.flush();
            self.detector = airlock_media::DtmfDetector::new(pcm_rate)
                .ok()
                .map(|detector| (pcm_rate, detector));
        }
        let Some((_, detector)) = &mut self.detector else {
            return;
        };
        if detector.push(position, samples, &mut self.tones).is_err() {
            detector.flush(&mut self.tones);
            if let Ok(mut fresh) = airlock_media::DtmfDetector::new(pcm_rate) {
                let _ = fresh.push(position, samples, &mut self.tones);
                *detector = fresh;
            }
        }
    }

    /// Ends the tone in progress (the end of the stream).
    pub(crate) fn flush(&mut self) {
        if let Some((_, detector)) = &mut self.detector {
            detector.flush(&mut self.tones);
        }
    }

    /// Turns the tones found into masks on `channel` at the recording's `rate`, via `keyed`.
    pub(crate) fn take_masks(
        &mut self,
        channel: usize,
        rate: u64,
        keyed: &mut KeyedDigits,
        found: &mut DtmfFound,
    ) {
        let Some((pcm_rate, _)) = &self.detector else {
            return;
        };
        let pcm_rate = u64::from(*pcm_rate).max(1);
        for tone in self.tones.drain(..) {
            let to_call = |position: u64| position.saturating_mul(rate) / pcm_rate;
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
        let (pcm_rate, detector) = self.detector.as_ref()?;
        let since = detector.tone_in_progress_since()?;
        Some(since.saturating_mul(rate) / u64::from(*pcm_rate).max(1))
    }
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
