//! The verifier, sans-IO: bytes in, a [`Report`] or the first line that is wrong out.
//!
//! [`verify`] checks each line's JSON and shape, `seq` contiguity from 1, the `prev` chain over the exact
//! bytes of each line, and each checkpoint's `head` and signature under a trusted key. A hash chain alone
//! cannot tell a log cut short from a shorter log, and someone holding the key can rewrite and re-sign it:
//! [`verify_with_checkpoints`] also checks the checkpoints published from the log (kept off the appliance),
//! each of which must be byte-identical to the log's line at its seq.
//!
//! A last line without its `\n` is what a crash during an append leaves (the writer truncates it on open):
//! it is reported in [`Report::torn_tail_bytes`], not counted, and is not an error. Entries after the last
//! checkpoint are not covered by a signature yet: [`Report::uncovered_entries`], a warning.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::entry::{self, Entry, GENESIS_PREV, Kind, MAX_LINE};
use crate::keys::PublicKey;

/// What a valid log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Complete entries (checkpoints included).
    pub entries: u64,
    pub checkpoints: u64,
    pub last_checkpoint_seq: Option<u64>,
    /// Entries after the last checkpoint, not yet covered by a signature.
    pub uncovered_entries: u64,
    /// Hash of the last complete line (the `prev` of the next entry).
    pub head: String,
    /// Bytes after the last `\n` (a torn append), ignored.
    pub torn_tail_bytes: u64,
    /// Published checkpoints found identical in the log ([`verify_with_checkpoints`] only).
    pub published_checkpoints_matched: u64,
}

/// Which input a [`VerifyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Log,
    Checkpoints,
}

impl Input {
    fn name(self) -> &'static str {
        match self {
            Input::Log => "log",
            Input::Checkpoints => "checkpoints",
        }
    }
}

/// The first thing wrong, and where: `line` counts from 1 in `input`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}: {problem}", input.name())]
pub struct VerifyError {
    pub input: Input,
    pub line: u64,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a JSON entry of this format (edited, or torn and followed by more lines).
    NotAnEntry(String),
    TooLong(usize),
    /// `seq` jumps ahead: entries are missing or were moved.
    Gap {
        expected: u64,
        found: u64,
    },
    /// `seq` repeats or goes back: entries were duplicated or reordered.
    OutOfOrder {
        expected: u64,
        found: u64,
    },
    /// `prev` is not the hash of the line before: that line or this one was changed.
    BadPrev {
        expected: String,
        found: String,
    },
    /// A checkpoint's `head` is not the hash of the line before it.
    BadHead {
        expected: String,
        found: String,
    },
    /// A field is missing, malformed or not allowed for the entry's kind.
    BadField(String),
    UnknownKey(String),
    BadSignature(String),
    /// A published checkpoint is not an entry of kind `checkpoint`.
    NotACheckpoint,
    /// Two published checkpoints with the same seq differ.
    ConflictingPublished {
        seq: u64,
        first_line: u64,
    },
    /// The log's line differs from the checkpoint published at its seq.
    DiffersFromPublished {
        checkpoints_line: u64,
    },
    /// A checkpoint was published for a seq the log does not reach.
    BeyondLog {
        seq: u64,
        log_entries: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotAnEntry(reason) => write!(f, "not an audit entry (edited or torn): {reason}"),
            Problem::TooLong(length) => write!(f, "line of {length} bytes is over the {MAX_LINE}-byte limit"),
            Problem::Gap { expected, found } => write!(
                f,
                "seq {found} where {expected} was expected: entries missing or moved (gap)"
            ),
            Problem::OutOfOrder { expected, found } => write!(
                f,
                "seq {found} where {expected} was expected: entries reordered or duplicated"
            ),
            Problem::BadPrev { expected, found } => write!(
                f,
                "prev {found} is not the hash of the line before ({expected}): that line or this one was changed"
            ),
            Problem::BadHead { expected, found } => write!(
                f,
                "checkpoint head {found} is not the hash of the line before ({expected})"
            ),
            Problem::BadField(reason) => f.write_str(reason),
            Problem::UnknownKey(key_id) => {
                write!(f, "checkpoint signed by key {key_id}, which is not trusted")
            }
            Problem::BadSignature(reason) => write!(f, "bad checkpoint signature: {reason}"),
            Problem::NotACheckpoint => f.write_str("not a checkpoint entry"),
            Problem::ConflictingPublished { seq, first_line } => write!(
                f,
                "a different checkpoint for seq {seq} was already published (checkpoints line {first_line})"
            ),
            Problem::DiffersFromPublished { checkpoints_line } => write!(
                f,
                "differs from the checkpoint published for this seq (checkpoints line {checkpoints_line}): \
                 the log was rewritten after that checkpoint left the appliance"
            ),
            Problem::BeyondLog { seq, log_entries } => write!(
                f,
                "checkpoint for seq {seq} was published but the log ends at seq {log_entries}: the log was \
                 truncated"
            ),
        }
    }
}

/// Checks a whole log.
pub fn verify(log: &[u8], trusted: &[PublicKey]) -> Result<Report, VerifyError> {
    let mut verifier = Verifier::new(trusted);
    let (lines, tail) = split_lines(log);
    for line in lines {
        verifier.feed(line)?;
    }
    Ok(verifier.report(tail.len() as u64))
}

/// Checks a log and the checkpoints published from it (one checkpoint line per line, as
/// [`Checkpoint::line`](crate::Checkpoint::line) returns them, in any order): each must be validly signed by
/// a trusted key and byte-identical to the log's line at its seq, and the log must reach it.
pub fn verify_with_checkpoints(
    log: &[u8],
    checkpoints: &[u8],
    trusted: &[PublicKey],
) -> Result<Report, VerifyError> {
    let keys = TrustedKeys::new(trusted);
    // seq → (line in the checkpoints file, its bytes)
    let mut published: BTreeMap<u64, (u64, &[u8])> = BTreeMap::new();
    let (lines, tail) = split_lines(checkpoints);
    let tail = (!tail.iter().all(u8::is_ascii_whitespace)).then_some(tail);
    for (index, line) in lines.into_iter().chain(tail).enumerate() {
        let number = index as u64 + 1;
        let error = |problem| VerifyError {
            input: Input::Checkpoints,
            line: number,
            problem,
        };
        let entry = parse(line).map_err(error)?;
        if entry.kind != Kind::Checkpoint {
            return Err(error(Problem::NotACheckpoint));
        }
        check_shape(&entry).map_err(error)?;
        check_signature(&entry, &keys).map_err(error)?;
        match published.get(&entry.seq) {
            Some(&(first_line, first)) if first != line => {
                return Err(error(Problem::ConflictingPublished {
                    seq: entry.seq,
                    first_line,
                }));
            }
            Some(_) => {}
            None => {
                published.insert(entry.seq, (number, line));
            }
        }
    }

    let mut verifier = Verifier::new(trusted);
    let (lines, tail) = split_lines(log);
    let mut matched = 0;
    for line in lines {
        let seq = verifier.feed(line)?;
        if let Some(&(checkpoints_line, expected)) = published.get(&seq) {
            if expected != line {
                return Err(VerifyError {
                    input: Input::Log,
                    line: seq,
                    problem: Problem::DiffersFromPublished { checkpoints_line },
                });
            }
            matched += 1;
        }
    }
    let mut report = verifier.report(tail.len() as u64);
    if let Some((&seq, &(line, _))) = published.range(report.entries + 1..).next() {
        return Err(VerifyError {
            input: Input::Checkpoints,
            line,
            problem: Problem::BeyondLog {
                seq,
                log_entries: report.entries,
            },
        });
    }
    report.published_checkpoints_matched = matched;
    Ok(report)
}

/// Fuzz entry: the verifier must return, never panic, on any bytes (a NUL, if any, splits the input into a
/// log and a checkpoints file).
pub fn fuzz_verify(data: &[u8]) {
    let trusted = [PublicKey([0x5a; 32])];
    let _ = verify(data, &trusted);
    if let Some(split) = data.iter().position(|&byte| byte == 0) {
        let (log, checkpoints) = data.split_at(split);
        let _ = verify_with_checkpoints(log, checkpoints.get(1..).unwrap_or_default(), &trusted);
    }
}

/// The `\n`-terminated lines (without their `\n`) and what follows the last `\n`.
fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
        lines.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    (lines, rest)
}

/// Trusted keys by key id.
#[derive(Debug)]
struct TrustedKeys(BTreeMap<String, PublicKey>);

impl TrustedKeys {
    fn new(keys: &[PublicKey]) -> TrustedKeys {
        TrustedKeys(keys.iter().map(|key| (key.key_id(), key.clone())).collect())
    }
}

fn parse(line: &[u8]) -> Result<Entry, Problem> {
    if line.len() > MAX_LINE {
        return Err(Problem::TooLong(line.len()));
    }
    if line.is_empty() {
        return Err(Problem::NotAnEntry("empty line".into()));
    }
    serde_json::from_slice(line).map_err(|error| Problem::NotAnEntry(error.to_string()))
}

/// The fields each kind must and must not have.
fn check_shape(entry: &Entry) -> Result<(), Problem> {
    let bad = |reason: &str| Err(Problem::BadField(reason.to_string()));
    entry::check_timestamp(&entry.at).map_err(Problem::BadField)?;
    if !entry::is_hash(&entry.prev) {
        return bad("prev is not a lowercase hex SHA-256");
    }
    if entry.kind == Kind::Checkpoint {
        if entry.subject.is_some() || entry.detail.is_some() {
            return bad("a checkpoint has no subject or detail");
        }
        match (&entry.head, &entry.signature, &entry.key_id) {
            (Some(head), Some(_), Some(_)) if entry::is_hash(head) => Ok(()),
            (Some(_), Some(_), Some(_)) => bad("checkpoint head is not a lowercase hex SHA-256"),
            _ => bad("a checkpoint needs head, signature and key_id"),
        }
    } else {
        if entry.head.is_some() || entry.signature.is_some() || entry.key_id.is_some() {
            return bad("only a checkpoint has head, signature or key_id");
        }
        match &entry.subject {
            Some(subject) if !subject.is_empty() => Ok(()),
            _ => bad("an event needs a non-empty subject"),
        }
    }
}

/// A checkpoint's signature under the key its `key_id` names (shape already checked).
fn check_signature(entry: &Entry, keys: &TrustedKeys) -> Result<(), Problem> {
    let (Some(head), Some(signature), Some(key_id)) = (&entry.head, &entry.signature, &entry.key_id) else {
        return Err(Problem::BadField(
            "a checkpoint needs head, signature and key_id".into(),
        ));
    };
    let key = keys
        .0
        .get(key_id)
        .ok_or_else(|| Problem::UnknownKey(key_id.clone()))?;
    let signature = BASE64
        .decode(signature)
        .map_err(|_| Problem::BadSignature("not base64".into()))?;
    if !key.verifies(&entry::checkpoint_message(entry.seq, head, &entry.at), &signature) {
        return Err(Problem::BadSignature(format!(
            "does not verify under key {key_id}"
        )));
    }
    Ok(())
}

/// Line-by-line verification state; the writer runs it over the file on open.
#[derive(Debug)]
pub(crate) struct Verifier {
    keys: TrustedKeys,
    next_seq: u64,
    prev: String,
    checkpoints: u64,
    last_checkpoint_seq: Option<u64>,
    uncovered: u64,
}

impl Verifier {
    pub(crate) fn new(trusted: &[PublicKey]) -> Verifier {
        Verifier {
            keys: TrustedKeys::new(trusted),
            next_seq: 1,
            prev: GENESIS_PREV.to_string(),
            checkpoints: 0,
            last_checkpoint_seq: None,
            uncovered: 0,
        }
    }

    /// Checks the next line (without its `\n`) and returns its seq.
    pub(crate) fn feed(&mut self, line: &[u8]) -> Result<u64, VerifyError> {
        let error = |problem| VerifyError {
            input: Input::Log,
            line: self.next_seq,
            problem,
        };
        let entry = parse(line).map_err(error)?;
        let expected = self.next_seq;
        if entry.seq > expected {
            return Err(error(Problem::Gap {
                expected,
                found: entry.seq,
            }));
        }
        if entry.seq < expected {
            return Err(error(Problem::OutOfOrder {
                expected,
                found: entry.seq,
            }));
        }
        check_shape(&entry).map_err(error)?;
        if entry.prev != self.prev {
            return Err(error(Problem::BadPrev {
                expected: self.prev.clone(),
                found: entry.prev,
            }));
        }
        if entry.kind == Kind::Checkpoint {
            if entry.head.as_deref() != Some(self.prev.as_str()) {
                return Err(error(Problem::BadHead {
                    expected: self.prev.clone(),
                    found: entry.head.unwrap_or_default(),
                }));
            }
            check_signature(&entry, &self.keys).map_err(error)?;
            self.checkpoints += 1;
            self.last_checkpoint_seq = Some(entry.seq);
            self.uncovered = 0;
        } else {
            self.uncovered += 1;
        }
        self.prev = entry::line_hash(line);
        self.next_seq += 1;
        Ok(entry.seq)
    }

    /// An error about the line after the last one fed.
    pub(crate) fn error_here(&self, problem: Problem) -> VerifyError {
        VerifyError {
            input: Input::Log,
            line: self.next_seq,
            problem,
        }
    }

    pub(crate) fn report(&self, torn_tail_bytes: u64) -> Report {
        Report {
            entries: self.next_seq - 1,
            checkpoints: self.checkpoints,
            last_checkpoint_seq: self.last_checkpoint_seq,
            uncovered_entries: self.uncovered,
            head: self.prev.clone(),
            torn_tail_bytes,
            published_checkpoints_matched: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EventKind, checkpoint_message};
    use crate::keys::SigningKey;
    use crate::log::tests::{AT, Scratch, detail, test_key};
    use crate::log::{AuditLog, LOG_FILE};

    /// A log of 7 lines: 3 events, a checkpoint (4), 2 events, a checkpoint (7); its lines, the published
    /// checkpoints file and the public key.
    fn sample() -> (Vec<String>, String, PublicKey, Vec<u8>) {
        let scratch = Scratch::new();
        let (key, der) = test_key();
        let public = key.public_key().clone();
        let (mut log, _) = AuditLog::open(&scratch.0, key).expect("open");
        let mut published = String::new();
        for (index, subject) in ["c1/audio.age", "c2/audio.age", "c1/transcript.json"]
            .iter()
            .enumerate()
        {
            log.append(EventKind::ArtifactCreated, subject, detail(index as u64), AT)
                .expect("append");
        }
        published.push_str(&log.checkpoint(AT).expect("checkpoint").line);
        published.push('\n');
        log.append(EventKind::ArtifactUploaded, "c1/audio.age", None, AT)
            .expect("append");
        log.append(EventKind::ArtifactBlocked, "c2/audio.age", None, AT)
            .expect("append");
        published.push_str(&log.checkpoint(AT).expect("checkpoint").line);
        published.push('\n');
        let text = fs_read(&scratch.0.join(LOG_FILE));
        (text.lines().map(str::to_string).collect(), published, public, der)
    }

    fn fs_read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).expect("read log")
    }

    fn join(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|line| format!("{line}\n").into_bytes())
            .collect()
    }

    fn log_error(log: &[u8], key: &PublicKey) -> VerifyError {
        verify(log, std::slice::from_ref(key)).expect_err("must not verify")
    }

    #[test]
    fn intact_log_and_checkpoints_verify() {
        let (lines, published, public, _) = sample();
        let report = verify_with_checkpoints(&join(&lines), published.as_bytes(), &[public]).expect("valid");
        assert_eq!(report.entries, 7);
        assert_eq!(report.checkpoints, 2);
        assert_eq!(report.last_checkpoint_seq, Some(7));
        assert_eq!(report.uncovered_entries, 0);
        assert_eq!(report.published_checkpoints_matched, 2);
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(verify(b"", &[]).expect("empty log").entries, 0);
    }

    #[test]
    fn edited_byte_in_a_middle_entry() {
        let (mut lines, _, public, _) = sample();
        lines[1] = lines[1].replacen("c2/", "c3/", 1);
        let error = log_error(&join(&lines), &public);
        // Line 2 still parses; the next line's prev no longer matches it.
        assert_eq!((error.input, error.line), (Input::Log, 3));
        assert!(matches!(error.problem, Problem::BadPrev { .. }), "{error}");

        let (mut lines, _, public, _) = sample();
        lines[4] = lines[4].replacen("\"seq\":5", "\"seq\":5 ", 1);
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 6);
    }

    #[test]
    fn deleted_entry_is_a_gap() {
        let (mut lines, _, public, _) = sample();
        lines.remove(1);
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 2);
        assert_eq!(
            error.problem,
            Problem::Gap {
                expected: 2,
                found: 3
            }
        );
        assert!(error.to_string().contains("gap"), "{error}");
    }

    #[test]
    fn swapped_entries() {
        let (mut lines, _, public, _) = sample();
        lines.swap(1, 2);
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 2);
        assert_eq!(
            error.problem,
            Problem::Gap {
                expected: 2,
                found: 3
            }
        );

        // Swapped and renumbered: the chain breaks.
        let (mut lines, _, public, _) = sample();
        lines.swap(1, 2);
        lines[1] = lines[1].replacen("\"seq\":3", "\"seq\":2", 1);
        lines[2] = lines[2].replacen("\"seq\":2", "\"seq\":3", 1);
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 2);
        assert!(matches!(error.problem, Problem::BadPrev { .. }), "{error}");

        // A duplicated entry goes back.
        let (mut lines, _, public, _) = sample();
        let copy = lines[1].clone();
        lines.insert(2, copy);
        let error = log_error(&join(&lines), &public);
        assert_eq!(
            error.problem,
            Problem::OutOfOrder {
                expected: 3,
                found: 2
            }
        );
    }

    #[test]
    fn truncated_line_in_the_middle() {
        let (mut lines, _, public, _) = sample();
        lines[2].truncate(30);
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 3);
        assert!(matches!(error.problem, Problem::NotAnEntry(_)), "{error}");
    }

    #[test]
    fn torn_tail_is_a_warning_but_truncation_shows_against_published_checkpoints() {
        let (lines, published, public, _) = sample();
        let whole = join(&lines);
        let cut = &whole[..whole.len() - 20];
        let report = verify(cut, std::slice::from_ref(&public)).expect("a torn tail verifies");
        assert_eq!(report.entries, 6);
        assert_eq!(report.uncovered_entries, 2);
        assert!(report.torn_tail_bytes > 0);

        let error = verify_with_checkpoints(cut, published.as_bytes(), &[public]).expect_err("truncated");
        assert_eq!((error.input, error.line), (Input::Checkpoints, 2));
        assert_eq!(
            error.problem,
            Problem::BeyondLog {
                seq: 7,
                log_entries: 6
            }
        );
    }

    #[test]
    fn checkpoint_forged_with_another_key() {
        let (mut lines, _, public, _) = sample();
        let (forger, _) = test_key();
        lines[3] = resign(&lines[3], &forger, None);
        // The forger's key is not trusted.
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 4);
        assert_eq!(error.problem, Problem::UnknownKey(forger.public_key().key_id()));

        // Claiming the real key id does not help.
        let (mut lines, _, public, _) = sample();
        lines[3] = resign(&lines[3], &forger, Some(public.key_id()));
        let error = log_error(&join(&lines), &public);
        assert_eq!(error.line, 4);
        assert!(matches!(error.problem, Problem::BadSignature(_)), "{error}");
    }

    #[test]
    fn unknown_key_id() {
        let (lines, _, _, _) = sample();
        let (other, _) = test_key();
        let error = log_error(&join(&lines), other.public_key());
        assert_eq!(error.line, 4);
        assert!(error.to_string().contains("not trusted"), "{error}");
    }

    #[test]
    fn rewritten_and_resigned_log_is_caught_by_published_checkpoints() {
        let (lines, published, public, der) = sample();
        let key = SigningKey::from_pkcs8(&der).expect("key");
        // Someone with the key changes entry 2 and rebuilds the chain and both checkpoints.
        let mut forged: Vec<String> = Vec::new();
        let mut prev = GENESIS_PREV.to_string();
        for (index, line) in lines.iter().enumerate() {
            let mut entry: Entry = serde_json::from_str(line).expect("entry");
            if index == 1 {
                entry.subject = Some("c2/other.age".into());
            }
            entry.prev = prev.clone();
            let line = if entry.kind == Kind::Checkpoint {
                entry.head = Some(prev.clone());
                resign(&serde_json::to_string(&entry).expect("json"), &key, None)
            } else {
                serde_json::to_string(&entry).expect("json")
            };
            prev = entry::line_hash(line.as_bytes());
            forged.push(line);
        }
        let forged = join(&forged);
        verify(&forged, std::slice::from_ref(&public)).expect("a re-signed log verifies on its own");
        let error = verify_with_checkpoints(&forged, published.as_bytes(), &[public]).expect_err("rewritten");
        assert_eq!((error.input, error.line), (Input::Log, 4));
        assert_eq!(
            error.problem,
            Problem::DiffersFromPublished { checkpoints_line: 1 }
        );
    }

    #[test]
    fn published_checkpoints_must_be_signed_checkpoints() {
        let (lines, published, public, _) = sample();
        let log = join(&lines);
        let event = format!("{}\n", lines[0]);
        let error = verify_with_checkpoints(&log, event.as_bytes(), std::slice::from_ref(&public))
            .expect_err("an event");
        assert_eq!(error.problem, Problem::NotACheckpoint);

        let (forger, _) = test_key();
        let first = published.lines().next().expect("line");
        let forged = format!("{}\n", resign(first, &forger, Some(public.key_id())));
        let error = verify_with_checkpoints(&log, forged.as_bytes(), std::slice::from_ref(&public))
            .expect_err("forged");
        assert_eq!(error.input, Input::Checkpoints);
        assert!(matches!(error.problem, Problem::BadSignature(_)), "{error}");

        // Published more than once is fine; no final newline is fine.
        let twice = format!("{published}{}", published.trim_end());
        let report = verify_with_checkpoints(&log, twice.as_bytes(), &[public]).expect("valid");
        assert_eq!(report.published_checkpoints_matched, 2);
    }

    #[test]
    fn shape_rules() {
        let (lines, _, public, _) = sample();
        let mut event: Entry = serde_json::from_str(&lines[0]).expect("entry");
        event.key_id = Some("00".into());
        let error = log_error(&join(&[serde_json::to_string(&event).expect("json")]), &public);
        assert!(matches!(error.problem, Problem::BadField(_)), "{error}");
        let extra = lines[0].replacen('{', "{\"pan\":\"4111\",", 1);
        let error = log_error(&join(&[extra]), &public);
        assert!(matches!(error.problem, Problem::NotAnEntry(_)), "{error}");
        let error = log_error(b"\n", &public);
        assert_eq!(
            error.to_string(),
            "log line 1: not an audit entry (edited or torn): empty line"
        );
    }

    #[test]
    fn fuzz_entry_handles_samples() {
        let (lines, published, _, _) = sample();
        let mut data = join(&lines);
        fuzz_verify(&data);
        data.push(0);
        data.extend_from_slice(published.as_bytes());
        fuzz_verify(&data);
        fuzz_verify(b"\0\n\xff{");
    }

    /// `line` (a checkpoint) signed again by `key`, naming `key_id` (the signer's if `None`).
    fn resign(line: &str, key: &SigningKey, key_id: Option<String>) -> String {
        let mut entry: Entry = serde_json::from_str(line).expect("entry");
        let head = entry.head.clone().expect("head");
        entry.signature = Some(BASE64.encode(key.sign(&checkpoint_message(entry.seq, &head, &entry.at))));
        entry.key_id = Some(key_id.unwrap_or_else(|| key.public_key().key_id()));
        serde_json::to_string(&entry).expect("json")
    }
}
