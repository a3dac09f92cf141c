//! The redaction benchmark: thousands of generated, labelled dialogues (see `corpus.rs`) run through
//! [`redact_dialogue`] — the gate `airlock redact` and the runtime use — scored per entity type and on the
//! negative material. Prints the tables with `--nocapture`; fails when card numbers or SSNs fall below
//! 99.5 % recall, a type below 95 % precision, or too much negative material is redacted.
//!
//! `AIRLOCK_BENCH_SEED` and `AIRLOCK_BENCH_DIALOGUES` change the seed (default 2026) and the number of
//! dialogues (default 4000); the targets are asserted for any seed.
#![allow(clippy::print_stdout, reason = "the benchmark prints its tables")]

mod corpus;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use airlock_compliance::{EntityKind, RedactorConfig, ReleasedSegment, redact_dialogue};
use airlock_telemetry::Pii;

use corpus::Dialogue;

#[derive(Debug, Default, Clone, Copy)]
struct Score {
    /// Values (a value split over segments counts once).
    gold: usize,
    /// Values whose every letter and digit was redacted (under any type).
    caught: usize,
    /// Redacted spans of this type.
    predicted: usize,
    /// Redacted spans of this type that overlap a value of this type.
    correct: usize,
}

#[derive(Debug, Default)]
struct Results {
    dialogues: usize,
    segments: usize,
    by_type: BTreeMap<EntityKind, Score>,
    /// Per kind of negative material: (items, items with anything redacted).
    negatives: BTreeMap<&'static str, (usize, usize)>,
    misses: Vec<String>,
}

fn redacted_at(released: &ReleasedSegment, position: usize) -> bool {
    released.spans.iter().any(|span| span.chars.contains(&position))
}

fn alphanumeric_positions(text: &str, range: std::ops::Range<usize>) -> Vec<usize> {
    text.chars()
        .enumerate()
        .filter(|(index, c)| range.contains(index) && c.is_alphanumeric())
        .map(|(index, _)| index)
        .collect()
}

impl Results {
    fn score(&mut self, dialogue: &Dialogue, released: &[ReleasedSegment]) {
        self.dialogues += 1;
        self.segments += dialogue.segments.len();
        let mut groups: BTreeMap<usize, (EntityKind, bool)> = BTreeMap::new();
        for gold in &dialogue.gold {
            let (text, output) = (&dialogue.segments[gold.segment].1, &released[gold.segment]);
            let covered = alphanumeric_positions(text, gold.chars.clone())
                .into_iter()
                .all(|position| redacted_at(output, position));
            let entry = groups.entry(gold.group).or_insert((gold.kind, true));
            entry.1 &= covered;
        }
        let mut missed_groups = BTreeSet::new();
        for (group, (kind, caught)) in groups {
            let score = self.by_type.entry(kind).or_default();
            score.gold += 1;
            if caught {
                score.caught += 1;
            } else {
                missed_groups.insert(group);
            }
        }
        for gold in dialogue
            .gold
            .iter()
            .filter(|gold| missed_groups.contains(&gold.group))
        {
            self.misses.push(format!(
                "{} {}: {:?} -> {:?}",
                dialogue.scenario,
                gold.kind,
                dialogue.segments[gold.segment].1,
                released[gold.segment].text.text()
            ));
        }
        for (index, output) in released.iter().enumerate() {
            for span in &output.spans {
                let score = self.by_type.entry(span.kind).or_default();
                score.predicted += 1;
                let on_gold = dialogue.gold.iter().any(|gold| {
                    gold.segment == index
                        && gold.kind == span.kind
                        && gold.chars.start < span.chars.end
                        && span.chars.start < gold.chars.end
                });
                score.correct += usize::from(on_gold);
            }
        }
        for negative in &dialogue.negatives {
            let (text, output) = (
                &dialogue.segments[negative.segment].1,
                &released[negative.segment],
            );
            let touched = alphanumeric_positions(text, negative.chars.clone())
                .into_iter()
                .any(|position| redacted_at(output, position));
            let entry = self.negatives.entry(negative.kind).or_default();
            entry.0 += 1;
            entry.1 += usize::from(touched);
        }
    }

    fn recall(&self, kind: EntityKind) -> f64 {
        let score = self.by_type.get(&kind).copied().unwrap_or_default();
        score.caught as f64 / score.gold.max(1) as f64
    }

    fn precision(&self, kind: EntityKind) -> f64 {
        let score = self.by_type.get(&kind).copied().unwrap_or_default();
        if score.predicted == 0 {
            1.0
        } else {
            score.correct as f64 / score.predicted as f64
        }
    }

    fn negatives_redacted(&self) -> (usize, usize) {
        self.negatives
            .values()
            .fold((0, 0), |(items, hit), (n, h)| (items + n, hit + h))
    }

    fn tables(&self) -> String {
        let percent = |part: usize, whole: usize| {
            if whole == 0 {
                "-".to_string()
            } else {
                format!("{:.2}%", 100.0 * part as f64 / whole as f64)
            }
        };
        let mut out = String::from(
            "| type | gold | caught | recall | predicted | precision |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (kind, score) in &self.by_type {
            out += &format!(
                "| {kind} | {} | {} | {} | {} | {} |\n",
                score.gold,
                score.caught,
                percent(score.caught, score.gold),
                score.predicted,
                percent(score.correct, score.predicted)
            );
        }
        out += "\n| negative material | items | redacted (any part) | rate |\n|---|---:|---:|---:|\n";
        for (kind, (items, hit)) in &self.negatives {
            out += &format!("| {kind} | {items} | {hit} | {} |\n", percent(*hit, *items));
        }
        let (items, hit) = self.negatives_redacted();
        out += &format!("| all | {items} | {hit} | {} |\n", percent(hit, items));
        out
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[test]
fn generated_dialogues_meet_the_redaction_targets() {
    let seed = env_or("AIRLOCK_BENCH_SEED", 2026);
    let count = env_or("AIRLOCK_BENCH_DIALOGUES", 4_000) as usize;
    let mut results = Results::default();
    let mut redaction_time = std::time::Duration::ZERO;
    for index in 0..count {
        let dialogue = corpus::dialogue(seed, index);
        let started = Instant::now();
        let released = redact_dialogue(
            RedactorConfig::default(),
            dialogue
                .segments
                .iter()
                .map(|(speaker, text)| (*speaker, Pii::new(text.clone()))),
        );
        redaction_time += started.elapsed();
        assert_eq!(released.len(), dialogue.segments.len());
        results.score(&dialogue, &released);
    }
    println!(
        "seed {seed}: {} dialogues, {} segments, redacted in {:.2} s ({:.0} segments/s)\n\n{}",
        results.dialogues,
        results.segments,
        redaction_time.as_secs_f64(),
        results.segments as f64 / redaction_time.as_secs_f64().max(1e-9),
        results.tables()
    );
    for miss in results.misses.iter().take(40) {
        println!("missed: {miss}");
    }
    for kind in [EntityKind::CardNumber, EntityKind::Ssn] {
        assert!(
            results.recall(kind) >= 0.995,
            "{kind} recall {:.4} below 99.5 %",
            results.recall(kind)
        );
    }
    for kind in EntityKind::ALL {
        assert!(
            results.precision(kind) >= 0.95,
            "{kind} precision {:.4} below 95 %",
            results.precision(kind)
        );
    }
    let (items, hit) = results.negatives_redacted();
    assert!(
        hit * 20 <= items,
        "{hit} of {items} negative items redacted (more than 5 %)"
    );
}
