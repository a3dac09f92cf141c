//! `airlock audit verify` on the built binary: exit 0 and a one-line summary for a valid log, exit 1 naming
//! the file and line otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_audit::{AuditLog, EventKind, LOG_FILE, load_or_create_signing_key};

const AT: &str = "2026-11-29T18:00:00.000Z";

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("airlock-audit-cli-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("scratch dir");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A log with 3 events, a checkpoint and one more event; returns (log, published checkpoints, public key).
fn sample(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let key_path = root.join("audit.key");
    let key = load_or_create_signing_key(&key_path).expect("key");
    let (mut log, _) = AuditLog::open(&root.join("audit"), key).expect("open");
    for subject in ["c1/audio.age", "c2/audio.age", "c1/transcript.json"] {
        log.append(EventKind::ArtifactCreated, subject, None, AT)
            .expect("append");
    }
    let checkpoint = log.checkpoint(AT).expect("checkpoint");
    log.append(EventKind::ArtifactUploaded, "c1/audio.age", None, AT)
        .expect("append");
    let published = root.join("checkpoints.jsonl");
    fs::write(&published, format!("{}\n", checkpoint.line)).expect("published");
    (
        root.join("audit").join(LOG_FILE),
        published,
        root.join("audit.key.pub"),
    )
}

fn airlock(args: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command.args(["audit", "verify"]);
    let mut args = args.iter();
    if let Some(log) = args.next() {
        command.arg(log);
    }
    if let Some(key) = args.next() {
        command.arg("--public-key").arg(key);
    }
    if let Some(checkpoints) = args.next() {
        command.arg("--checkpoints").arg(checkpoints);
    }
    command.output().expect("run airlock")
}

#[test]
fn valid_log_prints_a_summary() {
    let scratch = Scratch::new("valid");
    let (log, published, public) = sample(&scratch.0);
    let output = airlock(&[&log, &public]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(
            "valid: 5 entries, 1 checkpoints (last at seq 4), 1 entries after the last checkpoint (not yet signed)"
        ),
        "{stdout}"
    );

    let output = airlock(&[&log, &public, &published]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 published checkpoints match"));
}

#[test]
fn tampered_log_names_the_line() {
    let scratch = Scratch::new("tampered");
    let (log, published, public) = sample(&scratch.0);
    let text = fs::read_to_string(&log).expect("read");
    fs::write(&log, text.replacen("c2/audio.age", "c2/audio.agf", 1)).expect("write");
    let output = airlock(&[&log, &public]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("audit.jsonl: line 3: prev "), "{stderr}");

    // Truncated to before the published checkpoint: only the checkpoints show it.
    let lines: Vec<&str> = text.lines().take(2).collect();
    fs::write(&log, format!("{}\n", lines.join("\n"))).expect("write");
    assert_eq!(airlock(&[&log, &public]).status.code(), Some(0));
    let output = airlock(&[&log, &public, &published]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("checkpoints.jsonl: line 1: "), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn unreadable_key_is_named() {
    let scratch = Scratch::new("key");
    let (log, _, _) = sample(&scratch.0);
    let missing = scratch.0.join("missing.pub");
    let output = airlock(&[&log, &missing]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.pub"));
}
