//! `airlock redact`: runs labelled dialogues (JSON Lines in the development set's format) through the
//! transcript gate offline, with the redactor and configuration the runtime uses
//! ([`airlock_compliance::redact_dialogue`] and its time model).
//!
//! Each input line is an object with `segments: [{speaker, text}]` in call order; every other field (`id`,
//! `scenario`, gold `spans` …) and every other segment field is passed through unchanged. The output line is
//! the same object with each segment's `text` redacted and `found` set to the spans redacted:
//! `{segment, start, end, type}`, `start`/`end` being character offsets (Unicode scalar values, end
//! exclusive) into the original segment text — the units of the development set's gold `spans` — and
//! `type` the development set's label (`CARD_NUMBER`, `CVV`, `EXPIRY`, `SSN`, `BANK_ACCOUNT`,
//! `ROUTING_NUMBER`, `DOB`, `EMAIL`, `PHONE`). Keys come out in alphabetical order.
//!
//! Blank lines are skipped. A malformed line produces no output; its line number and what is wrong with it
//! are reported on stderr (never its content: transcript text is personal data), the other lines are still
//! processed, and the command exits 1 at the end. Nothing is logged.

use std::io::{self, BufRead, Write};

use airlock_compliance::{RedactorConfig, redact_dialogue};
use airlock_telemetry::Pii;
use serde_json::{Map, Value, json};

/// What went wrong with one input line: its number (1-based) and the problem, without any of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    pub line: usize,
    pub problem: String,
}

/// Redacts every dialogue of `input` onto `output`, one line each; returns the lines that were malformed.
/// Fails only when reading or writing fails.
pub(crate) fn redact_lines(input: &mut dyn BufRead, output: &mut dyn Write) -> io::Result<Vec<BadLine>> {
    let mut bad = Vec::new();
    let mut raw = Vec::new();
    let mut line = 0;
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        line += 1;
        match redact_line(&raw) {
            Ok(None) => {}
            Ok(Some(redacted)) => {
                output.write_all(redacted.as_bytes())?;
                output.write_all(b"\n")?;
            }
            Err(problem) => bad.push(BadLine { line, problem }),
        }
    }
    output.flush()?;
    Ok(bad)
}

/// One line redacted, `None` for a blank line, or what is wrong with it.
fn redact_line(raw: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|error| format!("not UTF-8 (invalid byte at offset {})", error.valid_up_to()))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut record: Value = serde_json::from_str(text).map_err(json_problem)?;
    let Some(object) = record.as_object_mut() else {
        return Err(format!("not a JSON object but {}", kind_of(&record)));
    };
    let segments = read_segments(object)?;
    let released = redact_dialogue(
        RedactorConfig::default(),
        segments
            .iter()
            .map(|(speaker, text)| (speaker.as_str(), Pii::new(text.clone()))),
    );
    let mut found = Vec::new();
    if let Some(Value::Array(segments)) = object.get_mut("segments") {
        for (index, (segment, released)) in segments.iter_mut().zip(&released).enumerate() {
            if let Some(segment) = segment.as_object_mut() {
                segment.insert("text".into(), Value::String(released.text.text().to_string()));
            }
            found.extend(released.spans.iter().map(|span| {
                json!({
                    "segment": index,
                    "start": span.chars.start,
                    "end": span.chars.end,
                    "type": span.kind.label(),
                })
            }));
        }
    }
    object.insert("found".into(), Value::Array(found));
    serde_json::to_string(&record)
        .map(Some)
        .map_err(|_| "cannot be written back as JSON".to_string())
}

/// The `(speaker, text)` of each segment, or which field is missing or of the wrong type.
fn read_segments(record: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let segments = match record.get("segments") {
        None => return Err("`segments` is missing".into()),
        Some(Value::Array(segments)) => segments,
        Some(other) => return Err(format!("`segments` is {}, not an array", kind_of(other))),
    };
    segments
        .iter()
        .enumerate()
        .map(|(index, segment)| {
            let field = |name: &str| match segment.get(name) {
                Some(Value::String(value)) => Ok(value.clone()),
                None => Err(format!("`segments[{index}].{name}` is missing")),
                Some(other) => Err(format!(
                    "`segments[{index}].{name}` is {}, not a string",
                    kind_of(other)
                )),
            };
            if !segment.is_object() {
                return Err(format!(
                    "`segments[{index}]` is {}, not an object",
                    kind_of(segment)
                ));
            }
            Ok((field("speaker")?, field("text")?))
        })
        .collect()
}

/// A JSON syntax error by kind and column; serde's own message for a value's type would quote it.
fn json_problem(error: serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            let message = error.to_string();
            let kind = message.split(" at line ").next().unwrap_or("syntax error");
            format!("not valid JSON: {kind} at column {}", error.column())
        }
        _ => "not valid JSON".into(),
    }
}

/// What a JSON value is, for error messages (never the value itself).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (String, Vec<BadLine>) {
        let mut output = Vec::new();
        let bad = redact_lines(&mut input.as_bytes(), &mut output).expect("in-memory I/O");
        (String::from_utf8(output).expect("UTF-8 output"), bad)
    }

    #[test]
    fn redacts_text_reports_found_spans_in_characters_and_passes_other_fields_through() {
        let input = concat!(
            r#"{"id":"x1","scenario":"payment","extra":{"k":[1,2]},"spans":[{"segment":1,"start":5,"end":24,"type":"CARD_NUMBER"}],"#,
            r#""segments":[{"speaker":"agent","text":"Your card number?","channel":2},"#,
            r#"{"speaker":"customer","text":"Sure 4111 1111 1111 1111 ✓ é@x, mail me@example.com"}]}"#,
            "\n"
        );
        let (output, bad) = run(input);
        assert!(bad.is_empty(), "{bad:?}");
        let record: Value = serde_json::from_str(output.trim_end()).expect("one JSON line");
        assert_eq!(record["id"], "x1");
        assert_eq!(record["extra"], json!({"k": [1, 2]}));
        assert_eq!(record["spans"][0]["end"], 24);
        assert_eq!(record["segments"][0]["channel"], 2);
        assert_eq!(record["segments"][0]["text"], "Your card number?");
        assert_eq!(
            record["segments"][1]["text"],
            "Sure [CARD_NUMBER] ✓ é@x, mail [EMAIL]"
        );
        // "✓" and "é" are one character each but several bytes: offsets after them are in characters.
        assert_eq!(
            record["found"],
            json!([
                {"segment": 1, "start": 5, "end": 24, "type": "CARD_NUMBER"},
                {"segment": 1, "start": 37, "end": 51, "type": "EMAIL"},
            ])
        );
    }

    #[test]
    fn bad_lines_are_named_without_their_content_and_the_rest_goes_on() {
        let good = r#"{"id":"ok","segments":[{"speaker":"a","text":"hello"}]}"#;
        let input = [
            good,
            "",
            r#"{"id":"4111111111111111","segments":[{"speaker":"a","text":4111111111111111}]}"#,
            r#"{"segments":[{"speaker":"a","text":"4111 1111 1111 1111"}"#,
            r#"["4111 1111 1111 1111"]"#,
            r#"{"id":"no segments"}"#,
            r#"{"segments":"4111 1111 1111 1111"}"#,
            r#"{"segments":[{"text":"4111 1111 1111 1111"}]}"#,
            good,
        ]
        .join("\n");
        let mut bytes = input.into_bytes();
        bytes.extend_from_slice(b"\n\xff{\"segments\":[]}\n");
        let mut output = Vec::new();
        let bad = redact_lines(&mut bytes.as_slice(), &mut output).expect("in-memory I/O");
        let output = String::from_utf8(output).expect("UTF-8 output");
        assert_eq!(output.lines().count(), 2, "only the good lines: {output}");
        let problems: Vec<(usize, &str)> = bad.iter().map(|bad| (bad.line, bad.problem.as_str())).collect();
        assert_eq!(
            problems,
            [
                (3, "`segments[0].text` is a number, not a string"),
                (4, "not valid JSON: EOF while parsing a list at column 57"),
                (5, "not a JSON object but an array"),
                (6, "`segments` is missing"),
                (7, "`segments` is a string, not an array"),
                (8, "`segments[0].speaker` is missing"),
                (10, "not UTF-8 (invalid byte at offset 0)"),
            ]
        );
        for bad in &bad {
            assert!(!bad.problem.contains("4111"), "{bad:?}");
        }
    }
}
