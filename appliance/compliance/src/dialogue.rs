//! Redacting a whole recorded dialogue in one go (offline: `airlock redact`, the evaluations and the
//! benchmark): the segments of a transcript are fed to one [`ConversationRedactor`] as if they were a call,
//! the way the runtime feeds a live call, so offline results are the results of the gate the appliance runs.
//!
//! Time model: a transcript without times is played as a call spoken at 150 words a minute, one segment
//! after the other. A segment lasts [`DIALOGUE_MS_PER_WORD`] per word (each digit of a written number
//! counts as a word, since it is read out one by one), at least [`DIALOGUE_MIN_SEGMENT_MS`]; the next
//! segment, whoever says it, starts [`DIALOGUE_TURN_GAP_MS`] after it ends. As in the runtime, each segment
//! is pushed and the redactor is then polled at the segment's end, and everything still held is released
//! when the dialogue ends. So the hold window (8 s by default) means what it means in a call: a speaker who
//! goes on reading a number after a short "Mm-hmm" is joined up, one who goes on after a long exchange is not.

use airlock_telemetry::Pii;

use crate::conversation::{ConversationRedactor, LegId, RedactorConfig, ReleasedSegment, Segment};

/// Speaking time per word of a dialogue without times (150 words a minute), in milliseconds.
pub const DIALOGUE_MS_PER_WORD: u64 = 400;

/// The shortest segment of a dialogue without times, in milliseconds.
pub const DIALOGUE_MIN_SEGMENT_MS: u64 = 1_000;

/// The pause between one segment's end and the next one's start in a dialogue without times, in
/// milliseconds.
pub const DIALOGUE_TURN_GAP_MS: u64 = 500;

/// How long `text` takes to say under the time model: words, and each digit of a written number.
fn speaking_ms(text: &str) -> u64 {
    let words: usize = text
        .split_whitespace()
        .map(|word| match word.chars().filter(char::is_ascii_digit).count() {
            0 => usize::from(word.chars().any(char::is_alphabetic)),
            digits => digits,
        })
        .sum();
    (words as u64 * DIALOGUE_MS_PER_WORD).max(DIALOGUE_MIN_SEGMENT_MS)
}

/// Redacts a dialogue given as `(speaker, text)` segments in transcript order. Speakers become legs in the
/// order they first speak (the first is leg 0). Returns every segment released exactly once, in input order.
pub fn redact_dialogue<S: AsRef<str>>(
    config: RedactorConfig,
    segments: impl IntoIterator<Item = (S, Pii<String>)>,
) -> Vec<ReleasedSegment> {
    let mut speakers: Vec<S> = Vec::new();
    let mut redactor = ConversationRedactor::new(config);
    let mut released = Vec::new();
    let mut start_ms = 0;
    for (speaker, text) in segments {
        let leg = match speakers
            .iter()
            .position(|known| known.as_ref() == speaker.as_ref())
        {
            Some(leg) => leg,
            None => {
                speakers.push(speaker);
                speakers.len() - 1
            }
        };
        let end_ms = start_ms + speaking_ms(text.expose());
        released.extend(redactor.push(Segment {
            leg: LegId(u32::try_from(leg).unwrap_or(u32::MAX)),
            text,
            words: Vec::new(),
            start_ms,
            end_ms,
        }));
        released.extend(redactor.poll(end_ms));
        start_ms = end_ms + DIALOGUE_TURN_GAP_MS;
    }
    released.extend(redactor.finish());
    released.sort_by_key(|segment| segment.sequence);
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntityKind;

    fn dialogue(segments: &[(&str, &str)]) -> Vec<ReleasedSegment> {
        redact_dialogue(
            RedactorConfig::default(),
            segments
                .iter()
                .map(|(speaker, text)| (*speaker, Pii::new(text.to_string()))),
        )
    }

    #[test]
    fn segments_come_back_in_order_with_legs_by_first_speaker_and_times_from_the_model() {
        let released = dialogue(&[
            ("agent", "Card number please?"),
            ("customer", "4111 1111"),
            ("agent", "Mm-hmm."),
            ("customer", "1111 1111"),
            ("agent", "Thanks."),
        ]);
        let legs: Vec<u32> = released.iter().map(|segment| segment.leg.0).collect();
        assert_eq!(legs, [0, 1, 0, 1, 0]);
        let sequences: Vec<u64> = released.iter().map(|segment| segment.sequence).collect();
        assert_eq!(sequences, [0, 1, 2, 3, 4]);
        // "Card number please?": 3 words, 1.2 s; "4111 1111": 8 digits, 3.2 s; "Mm-hmm.": 1 s.
        assert_eq!((released[1].start_ms, released[1].end_ms), (1_700, 4_900));
        assert_eq!((released[3].start_ms, released[3].end_ms), (6_900, 10_100));
        // The two halves were joined across the agent's interjection into one card number.
        for index in [1, 3] {
            assert_eq!(released[index].text.text(), "[CARD_NUMBER]");
            assert_eq!(released[index].spans[0].kind, EntityKind::CardNumber);
        }
    }

    #[test]
    fn spans_are_character_ranges_of_the_original_text() {
        let released = dialogue(&[("caller", "Ünïcödé: mail jo@example.com")]);
        let span = &released[0].spans[0];
        assert_eq!(span.kind, EntityKind::Email);
        assert_eq!(span.chars, 14..28);
        assert_eq!(released[0].text.text(), "Ünïcödé: mail [EMAIL]");
    }

    #[test]
    fn a_held_start_of_a_card_waits_through_a_short_interruption_but_not_a_long_one() {
        let read = |interruption: &'static str| {
            dialogue(&[
                ("agent", "Card number please?"),
                ("customer", "4111 11"),
                ("agent", interruption),
                ("customer", "11 1111 1111 1111"),
            ])[1]
                .text
                .text()
                .to_string()
        };
        assert_eq!(read("Mm-hmm, go on."), "[CARD_NUMBER]");
        // Six digits alone are not redacted: released before the rest arrived, the start stays as said.
        let long = "Sorry, the line is very bad today, could you start again from the very beginning and \
                    read it slowly for me, one group at a time, please?";
        assert_eq!(read(long), "4111 11");
    }
}
