//! Span-level evaluation of the redactor on labelled dialogues (the development set in
//! `shared/data/pii-dev.jsonl` and our own held-out set in `tests/data/heldout.jsonl`): per entity type,
//! recall (a gold span is caught when redacted ranges cover all its letters and digits), precision (a
//! redacted span counts when it overlaps a gold span of the same type) and over-redaction (letters and
//! digits redacted outside every gold span). Run with `--nocapture` to see the tables.
#![allow(clippy::print_stdout, reason = "the evaluation prints its tables")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_compliance::{EntityKind, RedactorConfig, ReleasedSegment, redact_dialogue};
use airlock_telemetry::Pii;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Dialogue {
    id: String,
    scenario: String,
    segments: Vec<DialogueSegment>,
    spans: Vec<GoldSpan>,
}

#[derive(Debug, Deserialize)]
struct DialogueSegment {
    speaker: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct GoldSpan {
    segment: usize,
    start: usize,
    end: usize,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct TypeScore {
    gold: usize,
    caught: usize,
    caught_as_type: usize,
    predicted: usize,
    predicted_on_gold: usize,
}

#[derive(Debug, Default)]
struct Evaluation {
    by_type: BTreeMap<EntityKind, TypeScore>,
    over_redacted_chars: usize,
    negative_dialogues: usize,
    negative_dialogues_redacted: Vec<String>,
    missed: Vec<String>,
    mistyped: Vec<String>,
}

impl Evaluation {
    fn recall(&self, kind: EntityKind) -> f64 {
        let score = self.by_type.get(&kind).copied().unwrap_or_default();
        if score.gold == 0 {
            1.0
        } else {
            score.caught as f64 / score.gold as f64
        }
    }

    fn table(&self, title: &str) -> String {
        let mut out = format!(
            "{title}\n| type | gold | caught | recall | caught as type | redacted spans | on gold of type | precision |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
        );
        let mut total = TypeScore::default();
        for (kind, score) in &self.by_type {
            out += &row(kind.label(), score);
            total.gold += score.gold;
            total.caught += score.caught;
            total.caught_as_type += score.caught_as_type;
            total.predicted += score.predicted;
            total.predicted_on_gold += score.predicted_on_gold;
        }
        out += &row("all", &total);
        out += &format!(
            "over-redacted letters/digits outside gold spans: {}; negative dialogues with any redaction: {}/{}\n",
            self.over_redacted_chars,
            self.negative_dialogues_redacted.len(),
            self.negative_dialogues
        );
        for miss in &self.missed {
            out += &format!("  missed: {miss}\n");
        }
        for mistyped in &self.mistyped {
            out += &format!("  caught under another type: {mistyped}\n");
        }
        out
    }
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn row(label: &str, score: &TypeScore) -> String {
    format!(
        "| {label} | {} | {} | {} | {} | {} | {} | {} |\n",
        score.gold,
        score.caught,
        percent(score.caught, score.gold),
        score.caught_as_type,
        score.predicted,
        score.predicted_on_gold,
        percent(score.predicted_on_gold, score.predicted)
    )
}

fn load(path: &Path) -> Option<Vec<Dialogue>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).expect("a dialogue per line"))
            .collect(),
    )
}

/// Runs one dialogue through a fresh redactor as a call, as `airlock redact` does.
fn redact(dialogue: &Dialogue) -> Vec<ReleasedSegment> {
    let released = redact_dialogue(
        RedactorConfig::default(),
        dialogue
            .segments
            .iter()
            .map(|segment| (segment.speaker.as_str(), Pii::new(segment.text.clone()))),
    );
    assert_eq!(
        released.len(),
        dialogue.segments.len(),
        "{}: every segment is released once",
        dialogue.id
    );
    released
}

fn evaluate(dialogues: &[Dialogue]) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for kind in EntityKind::ALL {
        evaluation.by_type.insert(kind, TypeScore::default());
    }
    for dialogue in dialogues {
        let released = redact(dialogue);
        if dialogue.scenario == "negative" {
            evaluation.negative_dialogues += 1;
            if released.iter().any(|segment| !segment.spans.is_empty()) {
                evaluation.negative_dialogues_redacted.push(dialogue.id.clone());
            }
        }
        for (index, (segment, output)) in dialogue.segments.iter().zip(&released).enumerate() {
            let chars: Vec<char> = segment.text.chars().collect();
            let gold: Vec<&GoldSpan> = dialogue
                .spans
                .iter()
                .filter(|span| span.segment == index)
                .collect();
            let redacted_as = |position: usize| {
                output
                    .spans
                    .iter()
                    .find(|span| span.chars.contains(&position))
                    .map(|span| span.kind)
            };
            for span in &gold {
                let kind = EntityKind::from_label(&span.kind).expect("known entity type");
                let score = evaluation.by_type.entry(kind).or_default();
                score.gold += 1;
                let positions: Vec<usize> = (span.start..span.end)
                    .filter(|&i| chars.get(i).is_some_and(|c| c.is_alphanumeric()))
                    .collect();
                if positions.iter().all(|&i| redacted_as(i).is_some()) {
                    score.caught += 1;
                    if positions.iter().all(|&i| redacted_as(i) == Some(kind)) {
                        score.caught_as_type += 1;
                    } else {
                        evaluation.mistyped.push(format!(
                            "{} segment {index} {} -> {:?}",
                            dialogue.id,
                            span.kind,
                            output.text.text()
                        ));
                    }
                } else {
                    evaluation.missed.push(format!(
                        "{} segment {index} {} {:?} -> {:?}",
                        dialogue.id,
                        span.kind,
                        chars[span.start.min(chars.len())..span.end.min(chars.len())]
                            .iter()
                            .collect::<String>(),
                        output.text.text()
                    ));
                }
            }
            for predicted in &output.spans {
                let score = evaluation.by_type.entry(predicted.kind).or_default();
                score.predicted += 1;
                if gold.iter().any(|span| {
                    span.kind == predicted.kind.label()
                        && span.start < predicted.chars.end
                        && predicted.chars.start < span.end
                }) {
                    score.predicted_on_gold += 1;
                }
                evaluation.over_redacted_chars += predicted
                    .chars
                    .clone()
                    .filter(|&i| chars.get(i).is_some_and(|c| c.is_alphanumeric()))
                    .filter(|&i| !gold.iter().any(|span| (span.start..span.end).contains(&i)))
                    .count();
            }
            for kind in EntityKind::ALL {
                assert!(
                    output.text.text().matches(kind.replacement()).count()
                        == output.spans.iter().filter(|span| span.kind == kind).count(),
                    "one token per span"
                );
            }
        }
    }
    evaluation
}

fn check_must_haves(evaluation: &Evaluation) {
    for kind in [EntityKind::CardNumber, EntityKind::Cvv, EntityKind::Ssn] {
        assert_eq!(evaluation.recall(kind), 1.0, "recall for {kind} must be 100%");
    }
    assert!(
        evaluation.negative_dialogues_redacted.is_empty(),
        "negative dialogues must not be redacted: {:?}",
        evaluation.negative_dialogues_redacted
    );
}

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn development_set() {
    let path = manifest_path("../../../shared/data/pii-dev.jsonl");
    let Some(dialogues) = load(&path) else {
        println!("SKIPPED: development set not found at {}", path.display());
        return;
    };
    let evaluation = evaluate(&dialogues);
    println!(
        "{}",
        evaluation.table(&format!("development set ({} dialogues)", dialogues.len()))
    );
    check_must_haves(&evaluation);
}

#[test]
fn held_out_set() {
    let path = manifest_path("tests/data/heldout.jsonl");
    let dialogues = load(&path).expect("the held-out set is part of the crate");
    let evaluation = evaluate(&dialogues);
    println!(
        "{}",
        evaluation.table(&format!("held-out set ({} dialogues)", dialogues.len()))
    );
    check_must_haves(&evaluation);
}
