//! The streaming contract of `ConversationRedactor`: card numbers split across segments (also with the
//! other speaker in between), the hold window, the hold bound, `finish`, spans and their timings.

use airlock_compliance::{
    ConversationRedactor, EntityKind, LegId, RedactorConfig, ReleasedSegment, Segment, WordTiming,
};
use airlock_telemetry::Pii;

const AGENT: LegId = LegId(0);
const CALLER: LegId = LegId(1);

fn segment(leg: LegId, text: &str, start_ms: u64, end_ms: u64) -> Segment {
    Segment {
        leg,
        text: Pii::new(text.to_string()),
        words: Vec::new(),
        start_ms,
        end_ms,
    }
}

fn texts(released: &[ReleasedSegment]) -> Vec<String> {
    released
        .iter()
        .map(|segment| segment.text.text().to_string())
        .collect()
}

fn asked_for_card(redactor: &mut ConversationRedactor) {
    let released = redactor.push(segment(AGENT, "Can I take the card number, please?", 0, 2_000));
    assert_eq!(texts(&released), ["Can I take the card number, please?"]);
}

#[test]
fn a_card_number_split_across_two_segments_of_the_caller_is_redacted_in_both() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    assert!(
        redactor
            .push(segment(
                CALLER,
                "Yes it's four one one one, one one",
                2_500,
                5_000
            ))
            .is_empty()
    );
    assert_eq!(redactor.held_segments(), 1);
    let released = redactor.push(segment(
        CALLER,
        "one one one one one one one one one one. That's all.",
        5_500,
        9_000,
    ));
    assert_eq!(
        texts(&released),
        ["Yes it's [CARD_NUMBER]", "[CARD_NUMBER]. That's all."]
    );
    assert!(released.iter().all(|segment| {
        segment
            .spans
            .iter()
            .all(|span| span.kind == EntityKind::CardNumber)
    }));
    assert_eq!(released[0].spans[0].chars, 9..34);
    assert_eq!(redactor.held_segments(), 0);
}

#[test]
fn the_other_speaker_may_talk_in_between_without_waiting() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    assert!(
        redactor
            .push(segment(CALLER, "5555 5555", 2_500, 4_000))
            .is_empty()
    );
    let agent = redactor.push(segment(AGENT, "Mm-hmm, go on.", 4_100, 4_600));
    assert_eq!(texts(&agent), ["Mm-hmm, go on."]);
    assert!(
        redactor.push(segment(CALLER, "5555", 4_700, 5_500)).is_empty(),
        "still dictating"
    );
    let released = redactor.push(segment(CALLER, "4444, and it expires 08/29", 5_600, 8_000));
    assert_eq!(
        texts(&released),
        [
            "[CARD_NUMBER]",
            "[CARD_NUMBER]",
            "[CARD_NUMBER], and it expires [EXPIRY]"
        ]
    );
    let sequences: Vec<u64> = released.iter().map(|segment| segment.sequence).collect();
    assert_eq!(sequences, [1, 3, 4], "held segments keep their arrival order");
    assert_eq!(
        redactor.held_segments(),
        0,
        "a segment ending in an expiry date is not held"
    );
}

#[test]
fn a_held_segment_is_released_when_the_hold_window_passes() {
    let mut redactor = ConversationRedactor::new(RedactorConfig {
        hold_window_ms: 8_000,
        ..RedactorConfig::default()
    });
    asked_for_card(&mut redactor);
    assert!(
        redactor
            .push(segment(CALLER, "it's 4111", 2_500, 4_000))
            .is_empty()
    );
    assert_eq!(redactor.next_deadline(), Some(12_000));
    assert!(redactor.poll(11_999).is_empty());
    let released = redactor.poll(12_000);
    assert_eq!(
        texts(&released),
        ["it's 4111"],
        "four digits alone are not card data"
    );
    assert_eq!(redactor.next_deadline(), None);
}

#[test]
fn a_long_fragment_released_by_the_window_is_still_redacted_and_so_is_the_rest() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    assert!(
        redactor
            .push(segment(CALLER, "4111 1111", 2_500, 4_000))
            .is_empty()
    );
    assert_eq!(texts(&redactor.poll(20_000)), ["[CARD_NUMBER]"]);
    assert!(
        redactor
            .push(segment(CALLER, "1111 1111", 21_000, 22_000))
            .is_empty()
    );
    assert_eq!(texts(&redactor.finish()), ["[CARD_NUMBER]"]);
}

#[test]
fn finish_releases_everything_held() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    assert!(
        redactor
            .push(segment(CALLER, "the first part is 4 7 1 6 8 8", 2_500, 4_000))
            .is_empty()
    );
    assert!(redactor.push(segment(AGENT, "Thanks.", 4_500, 5_000)).len() == 1);
    let released = redactor.finish();
    assert_eq!(
        texts(&released),
        ["the first part is 4 7 1 6 8 8"],
        "six digits alone are not card data"
    );
    assert_eq!(redactor.held_segments(), 0);
    assert!(redactor.finish().is_empty());
}

#[test]
fn a_full_hold_releases_the_oldest_segment_with_its_digits_redacted() {
    let mut redactor = ConversationRedactor::new(RedactorConfig {
        max_held_per_leg: 2,
        ..RedactorConfig::default()
    });
    asked_for_card(&mut redactor);
    assert!(redactor.push(segment(CALLER, "four", 2_000, 2_500)).is_empty());
    assert!(redactor.push(segment(CALLER, "one", 2_600, 3_000)).is_empty());
    let released = redactor.push(segment(CALLER, "one", 3_100, 3_500));
    assert_eq!(texts(&released), ["[CARD_NUMBER]"]);
    assert_eq!(redactor.held_segments(), 2);
    let rest = redactor.push(segment(CALLER, "one. Done.", 3_600, 4_000));
    assert_eq!(
        texts(&rest),
        ["[CARD_NUMBER]", "[CARD_NUMBER]", "[CARD_NUMBER]. Done."]
    );
}

#[test]
fn nothing_is_held_outside_payment_context() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    assert_eq!(
        texts(&redactor.push(segment(CALLER, "my order is 1234", 0, 1_000))),
        ["my order is 1234"]
    );
    assert_eq!(redactor.held_segments(), 0);
}

#[test]
fn spans_carry_character_ranges_and_word_times() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    let text = "Né le — my SSN is 078-05-1120 ok";
    let words = vec![
        WordTiming {
            chars: 0..2,
            start_ms: 1_000,
            end_ms: 1_200,
        },
        WordTiming {
            chars: 18..29,
            start_ms: 2_000,
            end_ms: 3_100,
        },
        WordTiming {
            chars: 30..32,
            start_ms: 3_200,
            end_ms: 3_400,
        },
    ];
    let released = redactor.push(Segment {
        leg: CALLER,
        text: Pii::new(text.to_string()),
        words,
        start_ms: 900,
        end_ms: 3_500,
    });
    assert_eq!(texts(&released), ["Né le — my SSN is [SSN] ok"]);
    let span = &released[0].spans[0];
    assert_eq!(
        (span.kind, span.chars.clone(), span.start_ms, span.end_ms),
        (EntityKind::Ssn, 18..29, 2_000, 3_100)
    );
    let chars: String = text.chars().skip(18).take(11).collect();
    assert_eq!(chars, "078-05-1120");
}

#[test]
fn released_text_never_prints_in_debug_output() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    let released = redactor.push(segment(CALLER, "call me on 555 0100 about it", 0, 1_000));
    assert!(!format!("{released:?}").contains("0100"));
    assert!(!format!("{redactor:?}").contains("0100"));
}

#[test]
fn context_from_one_call_does_not_leak_into_another() {
    let mut first = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut first);
    let mut second = ConversationRedactor::new(RedactorConfig::default());
    assert_eq!(
        texts(&second.push(segment(CALLER, "it's 4111 1111", 0, 1_000))),
        ["it's 4111 1111"]
    );
}

#[test]
fn an_answer_that_is_already_something_else_is_not_held() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    redactor.push(segment(AGENT, "And the security code?", 2_000, 3_000));
    assert_eq!(
        texts(&redactor.push(segment(CALLER, "it's 7 3 1", 3_500, 4_000))),
        ["it's [CVV]"]
    );
}

#[test]
fn digits_after_a_whole_card_number_are_not_swallowed_into_it() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    assert!(
        redactor
            .push(segment(CALLER, "3530 1113", 2_500, 3_000))
            .is_empty()
    );
    assert!(
        redactor
            .push(segment(CALLER, "3330 0000", 3_500, 4_000))
            .is_empty()
    );
    redactor.push(segment(AGENT, "And it expires?", 4_500, 5_000));
    let released = redactor.push(segment(CALLER, "11/27", 5_500, 6_000));
    assert_eq!(texts(&released), ["[CARD_NUMBER]", "[CARD_NUMBER]", "[EXPIRY]"]);
}

#[test]
fn timed_words_are_released_with_each_redacted_span_as_one_token() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    asked_for_card(&mut redactor);
    let text = "It is 4111 1111 1111 1111 thanks";
    let words = [(0, 2), (3, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| WordTiming {
            chars: start..end,
            start_ms: 3_000 + i as u64 * 400,
            end_ms: 3_350 + i as u64 * 400,
        })
        .collect();
    let mut released = redactor.push(Segment {
        leg: CALLER,
        text: Pii::new(text.to_string()),
        words,
        start_ms: 3_000,
        end_ms: 6_000,
    });
    released.extend(redactor.finish());
    let [segment] = released.as_slice() else {
        panic!("one segment expected, got {}", released.len());
    };
    let words: Vec<(&str, u64, u64, std::ops::Range<usize>)> = segment
        .words
        .iter()
        .map(|word| (word.text.text(), word.start_ms, word.end_ms, word.source.clone()))
        .collect();
    assert_eq!(
        words,
        [
            ("It", 3_000, 3_350, 0..1),
            ("is", 3_400, 3_750, 1..2),
            ("[CARD_NUMBER]", 3_800, 5_350, 2..6),
            ("thanks", 5_400, 5_750, 6..7),
        ]
    );
    assert_eq!(
        (segment.spans[0].start_ms, segment.spans[0].end_ms),
        (3_800, 5_350)
    );
}

/// Joined pieces in payment context are a card number from twelve digits on: a spoken number can lose a
/// digit in transcription ("forty six ninety", "two two …" written "forty six ninety two two").
#[test]
fn twelve_digits_read_in_small_pieces_in_payment_context_are_redacted_but_eleven_are_not() {
    let read = |pieces: &[&str]| {
        let mut redactor = ConversationRedactor::new(RedactorConfig::default());
        asked_for_card(&mut redactor);
        let mut released = Vec::new();
        for (index, piece) in pieces.iter().enumerate() {
            let start = 2_500 + 2_000 * index as u64;
            released.extend(redactor.push(segment(CALLER, piece, start, start + 1_500)));
        }
        released.extend(redactor.finish());
        texts(&released)
    };
    assert_eq!(
        read(&["4692", "2937", "9189"]),
        ["[CARD_NUMBER]", "[CARD_NUMBER]", "[CARD_NUMBER]"]
    );
    assert_eq!(read(&["555", "0123", "4567"]), ["555", "0123", "4567"]);
}

/// An SSN read in two goes with the agent in between: both pieces are redacted, and once nine digits were
/// given the question is closed, so a later everyday number is kept.
#[test]
fn an_ssn_read_in_two_goes_is_redacted_and_then_the_question_closes() {
    let mut redactor = ConversationRedactor::new(RedactorConfig::default());
    let mut released = Vec::new();
    for (index, (leg, text)) in [
        (AGENT, "Can you confirm your social security number?"),
        (CALLER, "Sure, 123 45..."),
        (AGENT, "Mm-hmm."),
        (CALLER, "6789."),
        (AGENT, "Thanks, give me 10 seconds."),
    ]
    .into_iter()
    .enumerate()
    {
        let start = 3_000 * index as u64;
        released.extend(redactor.push(segment(leg, text, start, start + 2_500)));
    }
    released.extend(redactor.finish());
    assert_eq!(
        texts(&released),
        [
            "Can you confirm your social security number?",
            "Sure, [SSN]...",
            "Mm-hmm.",
            "[SSN].",
            "Thanks, give me 10 seconds."
        ]
    );
}
