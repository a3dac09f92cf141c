//! Arbitrary sequences of transcript segments from two legs, interleaved with polls at arbitrary call
//! times, through one `ConversationRedactor`, then `finish`. The input bytes pick words from a vocabulary
//! of digits, number words, separators and cue words (or raw characters), so most inputs look like
//! dictated numbers. Checks: no panic; every segment is released exactly once; every span lies inside its
//! segment, in order and without overlap; and no Luhn-valid 13–19 digit number survives in released text
//! (digit groups joined only by spaces, `-` or `,`).
#![no_main]

use libfuzzer_sys::fuzz_target;

use airlock_compliance::{ConversationRedactor, LegId, RedactorConfig, ReleasedSegment, Segment, WordTiming};
use airlock_telemetry::Pii;

/// Words and characters the input bytes choose from, separated by `|`.
const VOCABULARY: &str = concat!(
    "0|1|2|3|4|5|6|7|8|9|4111|1111|5555|4242|12|29|0000|zero|oh|one|two|three|four|five|six|seven|",
    "eight|nine|ten|eleven|twenty|thirty|forty|double|triple|hundred|and| | | |-|,|.|/|(|)|+|card|",
    "number|security code|cvv|expires|routing|account|social security|date of birth|born|phone|",
    "call me|email|at|dot|com|@|May|the|of|th|okay|dollars|$|é|\u{2014}|\n",
);

fn text_from(bytes: &[u8]) -> String {
    let vocabulary: Vec<&str> = VOCABULARY.split('|').collect();
    let mut text = String::new();
    for &byte in bytes {
        if byte & 0x80 == 0 {
            text.push_str(vocabulary[usize::from(byte) % vocabulary.len()]);
        } else {
            text.push(char::from(byte & 0x7f));
        }
        if byte % 3 == 0 {
            text.push(' ');
        }
    }
    text
}

/// Luhn over ASCII digits.
fn passes_luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, digit)| {
            let value = u32::from(digit - b'0');
            if position % 2 == 1 {
                if value * 2 > 9 { value * 2 - 9 } else { value * 2 }
            } else {
                value
            }
        })
        .sum();
    sum % 10 == 0
}

/// Panics if a window of whole digit groups, joined only by spaces, `-` or `,`, holds a Luhn-valid number of
/// 13 to 19 digits.
fn assert_no_card_number(text: &str) {
    let mut chains: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    let mut group: Vec<u8> = Vec::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            group.push(c as u8);
            continue;
        }
        if !group.is_empty() {
            if let Some(chain) = chains.last_mut() {
                chain.push(std::mem::take(&mut group));
            }
        }
        if !(c.is_whitespace() || c == '-' || c == ',') {
            chains.push(Vec::new());
        }
    }
    if !group.is_empty() {
        if let Some(chain) = chains.last_mut() {
            chain.push(group);
        }
    }
    for chain in chains {
        for start in 0..chain.len() {
            let mut digits = Vec::new();
            for piece in &chain[start..] {
                digits.extend_from_slice(piece);
                if digits.len() > 19 {
                    break;
                }
                assert!(
                    !(digits.len() >= 13 && passes_luhn(&digits)),
                    "a card number survived in released text"
                );
            }
        }
    }
}

fn check(released: &[ReleasedSegment], sent: &[(u64, usize)], seen: &mut Vec<bool>) {
    for segment in released {
        let index = usize::try_from(segment.sequence).expect("small");
        assert!(!seen[index], "segment {index} released twice");
        seen[index] = true;
        let original_chars = sent[index].1;
        let mut previous_end = 0;
        for span in &segment.spans {
            assert!(span.chars.start < span.chars.end, "empty span");
            assert!(span.chars.end <= original_chars, "span outside its segment");
            assert!(
                span.chars.start >= previous_end,
                "spans overlap or are out of order"
            );
            previous_end = span.chars.end;
        }
        assert_no_card_number(segment.text.text());
    }
}

fuzz_target!(|data: &[u8]| {
    let config = RedactorConfig {
        hold_window_ms: 8_000,
        max_held_per_leg: usize::from(data.first().copied().unwrap_or(0) % 5),
    };
    let mut redactor = ConversationRedactor::new(config);
    let mut sent: Vec<(u64, usize)> = Vec::new();
    let mut seen: Vec<bool> = Vec::new();
    let mut now_ms = 0u64;
    let mut rest = data.get(1..).unwrap_or_default();
    while let [op, length, tail @ ..] = rest {
        let take = usize::from(*length % 48).min(tail.len());
        let (body, after) = tail.split_at(take);
        rest = after;
        now_ms += u64::from(*length) * 97;
        if op % 8 == 7 {
            let released = redactor.poll(now_ms);
            check(&released, &sent, &mut seen);
            continue;
        }
        let text = text_from(body);
        let char_count = text.chars().count();
        let words = body
            .chunks(2)
            .map(|pair| {
                let start = usize::from(pair[0]) % (char_count + 3);
                let end = start + usize::from(pair.get(1).copied().unwrap_or(1)) % 9;
                WordTiming {
                    chars: start..end,
                    start_ms: now_ms + start as u64,
                    end_ms: now_ms + end as u64,
                }
            })
            .take(usize::from(*op >> 4))
            .collect();
        sent.push((now_ms, char_count));
        seen.push(false);
        let released = redactor.push(Segment {
            leg: LegId(u32::from(op & 1)),
            text: Pii::new(text),
            words,
            start_ms: now_ms,
            end_ms: now_ms + 1_000,
        });
        check(&released, &sent, &mut seen);
    }
    let released = redactor.finish();
    check(&released, &sent, &mut seen);
    assert!(
        seen.iter().all(|&released| released),
        "every segment is released by finish"
    );
    assert_eq!(redactor.held_segments(), 0);
});
