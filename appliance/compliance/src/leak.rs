//! The last gate: scans what is about to leave the appliance — event payloads and text artifacts — for what
//! redaction must already have removed. A hit means something slipped through (a detector's miss, a writer
//! that bypassed the redactor), so the caller blocks the item, raises an alarm and audits it; nothing found
//! here is ever passed on silently. Findings name the kind and the place, never the value.
//!
//! What counts as a leak:
//! - a card number: 13–19 digits (written, spoken or mixed, with the separators a transcript uses) passing
//!   the Luhn check, in any text;
//! - a US SSN: three, two and four digits joined by `-`, in any text;
//! - an unmasked digit run: [`MAX_UNMASKED_DIGITS`] + 1 or more digits in a row in transcript text (the
//!   `text` fields of JSON payloads, the cue text of WebVTT) — longer than anything the redactor lets stand.
//!
//! JSON payloads are walked: every string value is checked for card numbers and SSNs, and string values
//! under a `text` key also for digit runs; numbers, hashes and ids as JSON numbers or glued to letters do
//! not count. Text that is not JSON (WebVTT) is checked line by line, cue text only.

use crate::lexer;
use crate::runs::{self, LeadingOh, Run};

/// The longest digit run transcript text may carry (order numbers, amounts); longer runs block the item.
pub const MAX_UNMASKED_DIGITS: usize = 8;

/// What the scanner found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakKind {
    CardNumber,
    Ssn,
    DigitRun,
}

impl LeakKind {
    /// The label used in alarms and audit entries.
    pub fn label(self) -> &'static str {
        match self {
            LeakKind::CardNumber => "card_number",
            LeakKind::Ssn => "ssn",
            LeakKind::DigitRun => "digit_run",
        }
    }
}

/// A finding: its kind and where (a JSON path such as `segment.words[3].text`, or `line 12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub kind: LeakKind,
    pub place: String,
}

/// Whether a non-text string is an identifier (an object key, a call id, a hash, a timestamp): one token with
/// letters in it. Their digit stretches are random, not spoken data (a call id's 16 hex digits are all digits
/// for 1 in 1,850 calls and then Luhn-valid for 1 in 10).
fn is_identifier(text: &str) -> bool {
    !text.chars().any(char::is_whitespace) && text.chars().any(|c| c.is_ascii_alphabetic())
}

/// Scans one string; `transcript_text` also applies the digit-run rule.
fn scan_string(text: &str, transcript_text: bool) -> Option<LeakKind> {
    if !transcript_text && (!text.bytes().any(|b| b.is_ascii_digit()) || is_identifier(text)) {
        return None;
    }
    let tokens = lexer::tokenize(text);
    let blocked = vec![false; tokens.len()];
    runs::find_runs(&tokens, &blocked, LeadingOh::Interjection)
        .iter()
        .find_map(|run| classify(run, transcript_text))
}

fn classify(run: &Run, transcript_text: bool) -> Option<LeakKind> {
    if run.pieces.iter().any(|piece| piece.glued_to_letters) {
        return None;
    }
    let digits = run.digits();
    if (13..=19).contains(&digits.len()) && runs::luhn_valid(&digits) {
        return Some(LeakKind::CardNumber);
    }
    let dashed = run.separators.iter().all(|separator| separator.trim() == "-");
    if run.group_lengths() == [3, 2, 4] && dashed {
        return Some(LeakKind::Ssn);
    }
    (transcript_text && digits.len() > MAX_UNMASKED_DIGITS).then_some(LeakKind::DigitRun)
}

/// Scans a JSON payload (an event, transcript.json, manifest.json). Bytes that are not JSON are scanned as
/// plain text, digit runs included.
pub fn scan_json(bytes: &[u8]) -> Option<Leak> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => scan_value(&value, &mut String::new(), false),
        Err(_) => scan_plain(&String::from_utf8_lossy(bytes)),
    }
}

fn scan_value(value: &serde_json::Value, path: &mut String, under_text: bool) -> Option<Leak> {
    match value {
        serde_json::Value::String(text) => scan_string(text, under_text).map(|kind| Leak {
            kind,
            place: path.clone(),
        }),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let length = path.len();
            path.push_str(&format!("[{index}]"));
            let found = scan_value(item, path, under_text);
            path.truncate(length);
            found
        }),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let length = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let found = scan_value(item, path, key == "text");
            path.truncate(length);
            found
        }),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => None,
    }
}

/// Scans WebVTT: cue text lines (not the header, cue numbers or timing lines).
pub fn scan_webvtt(text: &str) -> Option<Leak> {
    text.lines().enumerate().find_map(|(index, line)| {
        let line = line.trim();
        let structural = line.is_empty()
            || line == "WEBVTT"
            || line.contains("-->")
            || line.bytes().all(|b| b.is_ascii_digit());
        (!structural)
            .then(|| scan_string(line, true))
            .flatten()
            .map(|kind| Leak {
                kind,
                place: format!("line {}", index + 1),
            })
    })
}

/// Scans text of unknown structure, every line as transcript text.
fn scan_plain(text: &str) -> Option<Leak> {
    text.lines().enumerate().find_map(|(index, line)| {
        scan_string(line, true).map(|kind| Leak {
            kind,
            place: format!("line {}", index + 1),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(json: &str) -> Option<LeakKind> {
        scan_json(json.as_bytes()).map(|leak| leak.kind)
    }

    #[test]
    fn card_numbers_and_ssns_are_found_in_any_string_value() {
        assert_eq!(
            kind(r#"{"a":{"b":["x","card 4111 1111 1111 1111"]}}"#),
            Some(LeakKind::CardNumber)
        );
        assert_eq!(
            scan_json(br#"{"a":{"b":["x","card 4111-1111-1111-1111"]}}"#).map(|leak| leak.place),
            Some("a.b[1]".to_string())
        );
        assert_eq!(kind(r#"{"note":"ssn 123-45-6789"}"#), Some(LeakKind::Ssn));
        // Identifiers are not data, even when a call id's hex happens to be a Luhn-valid digit run.
        assert_eq!(
            kind(
                r#"{"call":"20261129T174228Z-4111111111111111","key":"s/2026/11/29/20261129T174228Z-4111111111111111/m.json"}"#
            ),
            None
        );
        // Spoken digits are digits.
        assert_eq!(
            kind(r#"{"text":"four one one one one one one one one one one one one one one one"}"#),
            Some(LeakKind::CardNumber)
        );
    }

    #[test]
    fn digit_runs_count_only_in_transcript_text() {
        assert_eq!(
            kind(r#"{"segment":{"text":"call me on 0123456789 tomorrow"}}"#),
            Some(LeakKind::DigitRun)
        );
        assert_eq!(
            kind(r#"{"words":[{"text":"123 456 789"}]}"#),
            Some(LeakKind::DigitRun)
        );
        // Order numbers and amounts stand; ids, hashes, times and sizes are not transcript text.
        assert_eq!(
            kind(r#"{"text":"order 423466, that is 583 dollars and 87 cents"}"#),
            None
        );
        assert_eq!(
            kind(
                r#"{"call":"20261129T174228Z-0417d22319b09ed2","at":"2026-11-29T17:42:28.593Z","bytes":7631540,
                "sha256":"5387c42257856c567aef4b3cab7b9e5b664d118dcaaaeb174d17fa1a2cc88395","text":"[CARD_NUMBER] thanks"}"#
            ),
            None
        );
    }

    #[test]
    fn webvtt_cue_text_is_scanned_but_not_its_timings() {
        let clean = "WEBVTT\n\n1\n00:00:01.000 --> 00:00:04.000\n<v customer>It is [CARD_NUMBER].\n";
        assert_eq!(scan_webvtt(clean), None);
        let leaking = "WEBVTT\n\n12\n00:00:01.000 --> 00:00:04.000\n<v customer>It is 4111 1111 1111 1111.\n";
        assert_eq!(
            scan_webvtt(leaking),
            Some(Leak {
                kind: LeakKind::CardNumber,
                place: "line 5".into()
            })
        );
    }

    #[test]
    fn bytes_that_are_not_json_are_scanned_as_text() {
        assert_eq!(kind("not json: 123-45-6789"), Some(LeakKind::Ssn));
        assert_eq!(kind("not json at all"), None);
    }
}
