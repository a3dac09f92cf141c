//! Endpointing for one leg: turns a stream of 32 ms VAD frames (16 kHz audio + speech probability) into
//! speech segments, each cut when the speaker has been quiet for the hang-over, or when it reaches the
//! maximum length. Sans-IO and clock-free: time is the leg's sample position.
//!
//! Rules (Silero's own hysteresis): speech starts at a frame with probability ≥ `threshold` and continues
//! until probability stays below `threshold - 0.15` for `hangover` — or, once the segment is longer than
//! `split_after`, for the shorter `split_hangover`: a speaker who talks on without a long pause is cut at
//! the next breath, so segments (and the time to decode them after they end) stay short. A segment keeps `pre_roll` of audio
//! before its first speech frame and is trimmed to `post_roll` after its last. Bursts shorter than
//! `min_speech` are discarded (clicks, coughs, line noise). A gap in the input (dropped audio) closes the
//! open segment: audio either side of a hole is never joined.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples per VAD frame at 16 kHz (Silero's window).
pub const FRAME_SAMPLES: usize = 512;
/// The model rate the positions below count in.
const RATE: u64 = 16_000;

/// Endpointing parameters; validated by configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Speech probability at which speech starts.
    pub threshold: f32,
    /// Quiet this long ends a segment.
    pub hangover: Duration,
    /// Bursts of speech shorter than this are dropped.
    pub min_speech: Duration,
    /// A segment longer than this ends at a pause of `split_hangover`.
    pub split_after: Duration,
    /// The pause that ends a segment longer than `split_after`.
    pub split_hangover: Duration,
    /// A segment is cut at this length (Whisper's window is 30 s).
    pub max_segment: Duration,
    /// Audio kept before the first speech frame.
    pub pre_roll: Duration,
    /// Audio kept after the last speech frame.
    pub post_roll: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            threshold: 0.5,
            hangover: Duration::from_millis(500),
            split_after: Duration::from_secs(12),
            split_hangover: Duration::from_millis(300),
            min_speech: Duration::from_millis(250),
            max_segment: Duration::from_secs(20),
            pre_roll: Duration::from_millis(200),
            post_roll: Duration::from_millis(150),
        }
    }
}

/// A finished stretch of speech, in 16 kHz samples from the start of the leg's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechSegment {
    /// Position of `audio[0]`.
    pub start: u64,
    pub audio: Vec<f32>,
    /// Position where the speaker stopped (end of the last speech frame); with the hang-over, the
    /// segment is emitted `hangover` later. Used to measure end-of-utterance latency.
    pub speech_end: u64,
    /// Whether the segment was cut at `max_segment` rather than ended by silence.
    pub cut: bool,
}

/// One leg's endpointing state.
#[derive(Debug)]
pub struct Segmenter {
    config: EndpointConfig,
    /// Recent audio kept for the pre-roll while nobody speaks.
    pre_roll: VecDeque<f32>,
    active: Option<Active>,
    /// Position of the next frame expected.
    next_position: Option<u64>,
}

#[derive(Debug)]
struct Active {
    start: u64,
    audio: Vec<f32>,
    /// Samples of speech frames so far.
    speech_samples: u64,
    /// `audio` length just after the last speech frame.
    speech_end_len: usize,
    quiet_samples: u64,
}

fn samples(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX) * RATE / 1_000_000
}

impl Segmenter {
    pub fn new(config: EndpointConfig) -> Segmenter {
        Segmenter {
            config,
            pre_roll: VecDeque::new(),
            active: None,
            next_position: None,
        }
    }

    /// Feeds one frame starting at `position`, with the VAD's speech probability for it. Returns a
    /// segment when this frame finishes one.
    pub fn push_frame(
        &mut self,
        position: u64,
        frame: &[f32; FRAME_SAMPLES],
        probability: f32,
    ) -> Option<SpeechSegment> {
        let mut finished = None;
        if self.next_position.is_some_and(|expected| expected != position) {
            finished = self.close();
            self.pre_roll.clear();
        }
        self.next_position = Some(position + FRAME_SAMPLES as u64);
        let frame_len = FRAME_SAMPLES as u64;
        let speaking = match &self.active {
            None => probability >= self.config.threshold,
            Some(_) => probability >= self.config.threshold - 0.15,
        };
        match &mut self.active {
            None if speaking => {
                let pre: Vec<f32> = self.pre_roll.drain(..).collect();
                let start = position - pre.len() as u64;
                let mut audio = pre;
                audio.extend_from_slice(frame);
                self.active = Some(Active {
                    start,
                    speech_end_len: audio.len(),
                    audio,
                    speech_samples: frame_len,
                    quiet_samples: 0,
                });
            }
            None => {
                self.pre_roll.extend(frame.iter());
                let keep = samples(self.config.pre_roll) as usize;
                while self.pre_roll.len() > keep {
                    self.pre_roll.pop_front();
                }
            }
            Some(active) => {
                active.audio.extend_from_slice(frame);
                if speaking {
                    active.speech_samples += frame_len;
                    active.quiet_samples = 0;
                    active.speech_end_len = active.audio.len();
                } else {
                    active.quiet_samples += frame_len;
                }
            }
        }
        let (quiet, length) = match &self.active {
            Some(active) => (active.quiet_samples, active.audio.len() as u64),
            None => return finished,
        };
        let hangover = if length > samples(self.config.split_after) {
            self.config.split_hangover.min(self.config.hangover)
        } else {
            self.config.hangover
        };
        if quiet >= samples(hangover) {
            return finished.or_else(|| self.close());
        }
        if length + FRAME_SAMPLES as u64 > samples(self.config.max_segment) {
            let mut segment = self.close();
            if let Some(segment) = &mut segment {
                segment.cut = true;
            }
            return finished.or(segment);
        }
        finished
    }

    /// Ends the leg: the open segment, if it holds enough speech.
    pub fn finish(&mut self) -> Option<SpeechSegment> {
        self.next_position = None;
        self.pre_roll.clear();
        self.close()
    }

    /// The earliest position a future segment may still start at: the open segment's start, else the
    /// oldest pre-roll sample kept; `None` when nothing is held (before the first frame, after `finish`).
    /// Audio before it is settled: either in a segment already returned or judged not speech.
    pub fn undecided_from(&self) -> Option<u64> {
        match &self.active {
            Some(active) => Some(active.start),
            None => self
                .next_position
                .map(|next| next.saturating_sub(self.pre_roll.len() as u64)),
        }
    }

    /// Whether a segment is open (the speaker is talking or within the hang-over).
    pub fn in_speech(&self) -> bool {
        self.active.is_some()
    }

    fn close(&mut self) -> Option<SpeechSegment> {
        let mut active = self.active.take()?;
        if active.speech_samples < samples(self.config.min_speech) {
            return None;
        }
        let keep = (active.speech_end_len + samples(self.config.post_roll) as usize).min(active.audio.len());
        active.audio.truncate(keep);
        Some(SpeechSegment {
            start: active.start,
            speech_end: active.start + active.speech_end_len as u64,
            audio: active.audio,
            cut: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pattern` (one probability per frame) and collects the segments.
    fn run(config: EndpointConfig, pattern: &[f32]) -> Vec<SpeechSegment> {
        let mut segmenter = Segmenter::new(config);
        let frame = [0.1f32; FRAME_SAMPLES];
        let mut out = Vec::new();
        for (i, &p) in pattern.iter().enumerate() {
            out.extend(segmenter.push_frame((i * FRAME_SAMPLES) as u64, &frame, p));
        }
        out.extend(segmenter.finish());
        out
    }

    #[test]
    fn undecided_audio_starts_at_the_pre_roll_or_the_open_segment() {
        let mut segmenter = Segmenter::new(EndpointConfig::default());
        assert_eq!(segmenter.undecided_from(), None);
        let frame = [0.1f32; FRAME_SAMPLES];
        let quiet_frames = frames(1_000);
        for i in 0..quiet_frames {
            assert!(
                segmenter
                    .push_frame((i * FRAME_SAMPLES) as u64, &frame, 0.0)
                    .is_none()
            );
        }
        let reached = (quiet_frames * FRAME_SAMPLES) as u64;
        // Only the pre-roll (200 ms) of the quiet second may still join a segment.
        assert_eq!(segmenter.undecided_from(), Some(reached - 200 * 16));
        let speech_at = reached;
        for i in 0..frames(500) {
            let position = speech_at + (i * FRAME_SAMPLES) as u64;
            assert!(segmenter.push_frame(position, &frame, 0.9).is_none());
        }
        assert_eq!(segmenter.undecided_from(), Some(speech_at - 200 * 16));
        assert!(segmenter.finish().is_some());
        assert_eq!(segmenter.undecided_from(), None);
    }

    fn frames(duration_ms: u64) -> usize {
        (duration_ms * 16) as usize / FRAME_SAMPLES
    }

    #[test]
    fn a_sentence_between_silences_is_one_segment_with_pre_and_post_roll() {
        let mut pattern = vec![0.0; frames(1_000)];
        pattern.extend(vec![0.9; frames(2_000)]);
        pattern.extend(vec![0.0; frames(1_000)]);
        let segments = run(EndpointConfig::default(), &pattern);
        assert_eq!(segments.len(), 1);
        let segment = &segments[0];
        let speech_start = (frames(1_000) * FRAME_SAMPLES) as u64;
        assert_eq!(segment.start, speech_start - 200 * 16);
        assert_eq!(
            segment.speech_end,
            speech_start + (frames(2_000) * FRAME_SAMPLES) as u64
        );
        assert_eq!(
            segment.audio.len() as u64,
            segment.speech_end - segment.start + 150 * 16
        );
        assert!(!segment.cut);
    }

    #[test]
    fn short_pauses_inside_speech_do_not_split_it_and_hysteresis_holds() {
        let mut pattern = vec![0.9; frames(1_000)];
        pattern.extend(vec![0.0; frames(300)]);
        pattern.extend(vec![0.4; frames(1_000)]); // above threshold - 0.15: still speech
        pattern.extend(vec![0.9; frames(500)]);
        pattern.extend(vec![0.0; frames(800)]);
        assert_eq!(run(EndpointConfig::default(), &pattern).len(), 1);
        // 0.4 alone never starts speech.
        assert!(run(EndpointConfig::default(), &vec![0.4; frames(3_000)]).is_empty());
    }

    #[test]
    fn clicks_shorter_than_min_speech_are_dropped() {
        let mut pattern = vec![0.0; 10];
        pattern.extend(vec![0.99; 3]); // 96 ms
        pattern.extend(vec![0.0; 40]);
        assert!(run(EndpointConfig::default(), &pattern).is_empty());
    }

    #[test]
    fn a_long_segment_ends_at_a_short_pause() {
        // 3 s of speech, a 350 ms pause (below the hang-over: the segment goes on), 10 s more, a 350 ms
        // pause (now past split_after: the segment ends), then 2 s of speech of its own.
        let mut pattern = vec![0.9; frames(3_000)];
        pattern.extend(vec![0.0; frames(350)]);
        pattern.extend(vec![0.9; frames(10_000)]);
        pattern.extend(vec![0.0; frames(350)]);
        pattern.extend(vec![0.9; frames(2_000)]);
        pattern.extend(vec![0.0; frames(1_000)]);
        let segments = run(EndpointConfig::default(), &pattern);
        assert_eq!(segments.len(), 2);
        assert!(!segments[0].cut);
        let first_speech = (frames(3_000) + frames(350) + frames(10_000)) * FRAME_SAMPLES;
        assert_eq!(segments[0].speech_end, first_speech as u64);
        // With splitting off (split_after = max_segment), the pause does not end it.
        let config = EndpointConfig {
            split_after: Duration::from_secs(20),
            ..EndpointConfig::default()
        };
        assert_eq!(run(config, &pattern).len(), 1);
    }

    #[test]
    fn long_speech_is_cut_at_the_maximum_length() {
        let config = EndpointConfig {
            max_segment: Duration::from_secs(5),
            ..EndpointConfig::default()
        };
        let segments = run(config, &vec![0.9; frames(12_000)]);
        assert_eq!(segments.len(), 3);
        assert!(segments[0].cut && segments[1].cut && !segments[2].cut);
        assert!(segments.iter().all(|s| s.audio.len() as u64 <= 5 * 16_000));
        // Consecutive pieces abut: nothing is lost between them.
        assert_eq!(
            segments[1].start,
            segments[0].start + segments[0].audio.len() as u64
        );
    }

    #[test]
    fn a_gap_in_the_input_closes_the_open_segment() {
        let mut segmenter = Segmenter::new(EndpointConfig::default());
        let frame = [0.1f32; FRAME_SAMPLES];
        let mut position = 0u64;
        for _ in 0..frames(1_000) {
            assert!(segmenter.push_frame(position, &frame, 0.9).is_none());
            position += FRAME_SAMPLES as u64;
        }
        // 10 s of audio went missing.
        position += 160_000;
        let closed = segmenter.push_frame(position, &frame, 0.9);
        let closed = closed.expect("the segment before the gap is emitted");
        assert_eq!(closed.start, 0);
        assert!(segmenter.in_speech(), "speech after the gap starts anew");
        for _ in 0..frames(1_000) {
            position += FRAME_SAMPLES as u64;
            assert!(segmenter.push_frame(position, &frame, 0.9).is_none());
        }
        let after = segmenter.finish().expect("speech after the gap");
        assert_eq!(after.start, frames(1_000) as u64 * FRAME_SAMPLES as u64 + 160_000);
    }

    #[test]
    fn silence_and_end_without_speech_give_nothing() {
        assert!(run(EndpointConfig::default(), &vec![0.05; frames(10_000)]).is_empty());
        assert!(run(EndpointConfig::default(), &[]).is_empty());
    }
}
