//! `airlock redact` on the built binary: the labelled sets piped through it come back with every card number
//! and SSN caught (as in the compliance crate's evaluation) and none of the gold values' digits left in the
//! text; malformed lines are named on stderr by number, left out of stdout, and make the exit status 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn redact(input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("redact")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start airlock");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("airlock output")
}

fn set(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Checks one labelled set; returns the number of dialogues.
fn check_set(path: &Path) -> usize {
    let input = std::fs::read(path).expect("labelled set");
    let output = redact(&input);
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty(), "nothing on stderr for good input");
    let inputs: Vec<Value> = String::from_utf8(input)
        .expect("UTF-8 set")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("labelled dialogue"))
        .collect();
    let outputs: Vec<Value> = String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(inputs.len(), outputs.len());
    let (mut gold_cards_ssns, mut caught_cards_ssns) = (0, 0);
    for (before, after) in inputs.iter().zip(&outputs) {
        assert_eq!(before["id"], after["id"]);
        assert_eq!(before["scenario"], after["scenario"]);
        assert_eq!(before["spans"], after["spans"], "gold spans pass through");
        let found = after["found"].as_array().expect("found");
        for gold in before["spans"].as_array().expect("spans") {
            let segment = gold["segment"].as_u64().expect("segment") as usize;
            let (start, end) = (
                gold["start"].as_u64().expect("start") as usize,
                gold["end"].as_u64().expect("end") as usize,
            );
            let original: Vec<char> = before["segments"][segment]["text"]
                .as_str()
                .expect("text")
                .chars()
                .collect();
            let redacted = after["segments"][segment]["text"].as_str().expect("text");
            let value: String = original[start..end].iter().collect();
            if matches!(gold["type"].as_str(), Some("CARD_NUMBER" | "SSN")) {
                gold_cards_ssns += 1;
                // Caught: every letter and digit of the gold span lies in a found span (character offsets).
                let covered = (start..end).filter(|&i| original[i].is_alphanumeric()).all(|i| {
                    found.iter().any(|span| {
                        span["segment"].as_u64() == Some(segment as u64)
                            && span["start"].as_u64().expect("start") as usize <= i
                            && i < span["end"].as_u64().expect("end") as usize
                    })
                });
                caught_cards_ssns += usize::from(covered);
            }
            assert!(
                !redacted.contains(&value),
                "{}: a {} is still in the text",
                after["id"],
                gold["type"]
            );
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            let remaining: String = redacted.chars().filter(char::is_ascii_digit).collect();
            assert!(
                digits.len() < 4 || !remaining.contains(&digits),
                "{}: the digits of a {} are still in the text",
                after["id"],
                gold["type"]
            );
        }
    }
    assert!(gold_cards_ssns > 0);
    assert_eq!(
        caught_cards_ssns,
        gold_cards_ssns,
        "{}: recall on CARD_NUMBER and SSN is 100 % in the evaluation",
        path.display()
    );
    outputs.len()
}

#[test]
fn the_labelled_sets_come_back_redacted_with_every_card_number_and_ssn_found() {
    assert_eq!(check_set(&set("../compliance/tests/data/heldout.jsonl")), 36);
    let development = set("../../../shared/data/pii-dev.jsonl");
    if development.exists() {
        assert_eq!(check_set(&development), 60);
    } else {
        eprintln!("SKIPPED: development set not found at {}", development.display());
    }
}

#[test]
fn malformed_lines_are_named_on_stderr_and_left_out() {
    let good = r#"{"id":"ok","segments":[{"speaker":"agent","text":"Card number?"},{"speaker":"caller","text":"4111 1111 1111 1111"}]}"#;
    let input = [
        good,
        r#"{"id":"bad","segments":[{"speaker":"caller","text":"4000 0566 5566 5556"}"#,
        "not json 4000056655665556",
        good,
        r#"{"id":"bad","segments":[{"speaker":"caller","words":"4000 0566 5566 5556"}]}"#,
    ]
    .join("\n");
    let output = redact(input.as_bytes());
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(stdout.lines().count(), 2);
    for line in stdout.lines() {
        let record: Value = serde_json::from_str(line).expect("whole JSON lines only");
        assert_eq!(record["id"], "ok");
        assert_eq!(record["segments"][1]["text"], "[CARD_NUMBER]");
    }
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    let named: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("stdin: line "))
        .collect();
    assert_eq!(named.len(), 3, "{stderr}");
    assert!(
        named[0].starts_with("stdin: line 2: not valid JSON: EOF"),
        "{stderr}"
    );
    assert!(named[1].starts_with("stdin: line 3: not valid JSON"), "{stderr}");
    assert_eq!(named[2], "stdin: line 5: `segments[0].text` is missing");
    assert!(!stderr.contains("4000"), "stderr must not echo transcript text");
}
