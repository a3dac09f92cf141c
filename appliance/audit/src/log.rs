//! The writer: `<dir>/audit.jsonl`, appended only, each entry written and fdatasync'd before
//! [`AuditLog::append`] returns.
//!
//! Opening reads the whole file through the verifier (trusting the writer's own key): a last line without
//! its `\n` is an append a crash interrupted (it never returned), so it is truncated away and reported;
//! anything else that does not verify fails the open with the line named, and the file is left as it is
//! for an investigator. A log is bound to one signing key: checkpoints under another key fail the open.
//!
//! A failed write is rolled back (the file truncated to its last complete line); if even that fails the
//! log refuses further appends until it is reopened, which repairs it. Not thread-safe by itself: one
//! owner. How often to checkpoint is the caller's policy ([`AuditLog::entries_since_checkpoint`]); each
//! [`Checkpoint`] is for the caller to publish through the outbox.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::entry::{self, Entry, EventKind, Kind, MAX_DETAIL, MAX_LINE, MAX_SUBJECT};
use crate::keys::SigningKey;
use crate::verify::{Problem, Verifier, VerifyError};

/// The log's file name inside its directory.
pub const LOG_FILE: &str = "audit.jsonl";

/// Audit log failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("audit log {path} does not verify: {error}")]
    Corrupt { path: PathBuf, error: VerifyError },
    #[error("audit entry refused: {0}")]
    Invalid(String),
    #[error("audit log {0} failed a write it could not roll back; reopen it to repair")]
    Broken(PathBuf),
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError + use<> {
    let path = path.to_path_buf();
    move |source| AuditError::Io { op, path, source }
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync directory", dir))
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub entries: u64,
    pub last_checkpoint_seq: Option<u64>,
    /// Bytes of a torn last line removed (an append a crash interrupted).
    pub torn_tail_bytes: u64,
}

/// A checkpoint just written, for the caller to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub at: String,
    /// Hash of the line before the checkpoint.
    pub head: String,
    pub key_id: String,
    /// Base64 Ed25519 signature of [`entry::checkpoint_message`].
    pub signature: String,
    /// The checkpoint's line exactly as in the log, without `\n`: what to publish (a published-checkpoints
    /// file is these lines, one per line).
    pub line: String,
}

/// The durable, hash-chained audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    key: SigningKey,
    /// Bytes of complete lines.
    len: u64,
    next_seq: u64,
    prev: String,
    since_checkpoint: u64,
    broken: bool,
}

impl AuditLog {
    /// Opens (creating) `<dir>/audit.jsonl`, verifies it and truncates a torn last line.
    pub fn open(dir: &Path, key: SigningKey) -> Result<(AuditLog, OpenReport), AuditError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_error("create", dir))?;
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let path = dir.join(LOG_FILE);
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        if created {
            sync_dir(dir)?;
        }

        let mut verifier = Verifier::new(std::slice::from_ref(key.public_key()));
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        let mut len = 0u64;
        let mut torn_tail_bytes = 0u64;
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io_error("read", &path))?;
            if read == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                if read > MAX_LINE {
                    // Longer than any line the writer makes: not a torn append.
                    return Err(AuditError::Corrupt {
                        path,
                        error: verifier.error_here(Problem::TooLong(read)),
                    });
                }
                torn_tail_bytes = read as u64;
                break;
            }
            verifier
                .feed(&line[..line.len() - 1])
                .map_err(|error| AuditError::Corrupt {
                    path: path.clone(),
                    error,
                })?;
            len += read as u64;
        }
        drop(reader);
        if torn_tail_bytes > 0 {
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .map_err(io_error("truncate the torn last line of", &path))?;
        }
        let report = verifier.report(torn_tail_bytes);
        let log = AuditLog {
            path,
            file,
            key,
            len,
            next_seq: report.entries + 1,
            prev: report.head.clone(),
            since_checkpoint: report.uncovered_entries,
            broken: false,
        };
        Ok((
            log,
            OpenReport {
                entries: report.entries,
                last_checkpoint_seq: report.last_checkpoint_seq,
                torn_tail_bytes,
            },
        ))
    }

    /// Appends an event and returns its seq once it is on disk. `subject` is an id (object key, call id,
    /// policy hash), never personal data; `detail` a small object; `at` RFC 3339 UTC with milliseconds.
    pub fn append(
        &mut self,
        kind: EventKind,
        subject: &str,
        detail: Option<serde_json::Map<String, serde_json::Value>>,
        at: &str,
    ) -> Result<u64, AuditError> {
        entry::check_timestamp(at).map_err(AuditError::Invalid)?;
        if subject.is_empty() || subject.len() > MAX_SUBJECT {
            return Err(AuditError::Invalid(format!(
                "subject must be 1 to {MAX_SUBJECT} bytes, not {}",
                subject.len()
            )));
        }
        if let Some(detail) = &detail {
            let size = serde_json::to_vec(detail)
                .map_err(|error| AuditError::Invalid(format!("detail: {error}")))?
                .len();
            if size > MAX_DETAIL {
                return Err(AuditError::Invalid(format!(
                    "detail of {size} bytes is over the {MAX_DETAIL}-byte limit"
                )));
            }
        }
        let entry = Entry {
            seq: self.next_seq,
            at: at.to_string(),
            kind: kind.into(),
            subject: Some(subject.to_string()),
            detail,
            prev: self.prev.clone(),
            head: None,
            signature: None,
            key_id: None,
        };
        let seq = entry.seq;
        self.write(&entry)?;
        self.since_checkpoint += 1;
        Ok(seq)
    }

    /// Appends a checkpoint signing everything before it and returns it for publication.
    pub fn checkpoint(&mut self, at: &str) -> Result<Checkpoint, AuditError> {
        entry::check_timestamp(at).map_err(AuditError::Invalid)?;
        let seq = self.next_seq;
        let head = self.prev.clone();
        let signature = BASE64.encode(self.key.sign(&entry::checkpoint_message(seq, &head, at)));
        let key_id = self.key.public_key().key_id();
        let entry = Entry {
            seq,
            at: at.to_string(),
            kind: Kind::Checkpoint,
            subject: None,
            detail: None,
            prev: head.clone(),
            head: Some(head.clone()),
            signature: Some(signature.clone()),
            key_id: Some(key_id.clone()),
        };
        let line = self.write(&entry)?;
        self.since_checkpoint = 0;
        Ok(Checkpoint {
            seq,
            at: at.to_string(),
            head,
            key_id,
            signature,
            line,
        })
    }

    /// Entries appended since the last checkpoint (those a checkpoint now would cover for the first time).
    pub fn entries_since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Seq of the last entry (0 for an empty log).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line durably, rolling back a partial write; returns the line without `\n`.
    fn write(&mut self, entry: &Entry) -> Result<String, AuditError> {
        if self.broken {
            return Err(AuditError::Broken(self.path.clone()));
        }
        let line = serde_json::to_string(entry).map_err(|error| AuditError::Invalid(error.to_string()))?;
        if line.len() > MAX_LINE {
            return Err(AuditError::Invalid(format!(
                "entry of {} bytes is over the {MAX_LINE}-byte line limit",
                line.len()
            )));
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Err(error) = self.file.write_all(&bytes).and_then(|()| self.file.sync_data()) {
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.broken = true;
            }
            return Err(io_error("append to", &self.path)(error));
        }
        self.len += bytes.len() as u64;
        self.prev = entry::line_hash(line.as_bytes());
        self.next_seq += 1;
        Ok(line)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::verify::{Input, verify};

    /// A scratch directory removed when dropped.
    pub(crate) struct Scratch(pub(crate) PathBuf);

    impl Scratch {
        pub(crate) fn new() -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "airlock-audit-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
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

    /// A fresh key and its DER, to open the same log again.
    pub(crate) fn test_key() -> (SigningKey, Vec<u8>) {
        SigningKey::generate().expect("generate")
    }

    pub(crate) fn again(der: &[u8]) -> SigningKey {
        SigningKey::from_pkcs8(der).expect("key")
    }

    pub(crate) const AT: &str = "2026-11-29T18:00:00.000Z";

    pub(crate) fn detail(bytes: u64) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut detail = serde_json::Map::new();
        detail.insert("bytes".into(), bytes.into());
        Some(detail)
    }

    #[test]
    fn append_checkpoint_reopen() {
        let scratch = Scratch::new();
        let dir = scratch.0.join("audit");
        let (key, der) = test_key();
        let public = key.public_key().clone();
        let (mut log, report) = AuditLog::open(&dir, key).expect("open");
        assert_eq!(report.entries, 0);
        assert_eq!(
            log.append(EventKind::ArtifactCreated, "c1/audio.age", detail(1024), AT)
                .expect("append"),
            1
        );
        assert_eq!(
            log.append(EventKind::ArtifactUploaded, "c1/audio.age", None, AT)
                .expect("append"),
            2
        );
        assert_eq!(log.entries_since_checkpoint(), 2);
        let checkpoint = log.checkpoint(AT).expect("checkpoint");
        assert_eq!(checkpoint.seq, 3);
        assert_eq!(checkpoint.key_id, public.key_id());
        assert_eq!(log.entries_since_checkpoint(), 0);
        assert_eq!(
            log.append(EventKind::PolicyChanged, "sha256:abcd", None, AT)
                .expect("append"),
            4
        );
        drop(log);

        let text = fs::read_to_string(dir.join(LOG_FILE)).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2], checkpoint.line);
        assert_eq!(checkpoint.head, entry::line_hash(lines[1].as_bytes()));

        let report = verify(text.as_bytes(), std::slice::from_ref(&public)).expect("verifies");
        assert_eq!(report.entries, 4);
        assert_eq!(report.checkpoints, 1);
        assert_eq!(report.last_checkpoint_seq, Some(3));
        assert_eq!(report.uncovered_entries, 1);

        let (mut log, report) = AuditLog::open(&dir, again(&der)).expect("reopen");
        assert_eq!(
            report,
            OpenReport {
                entries: 4,
                last_checkpoint_seq: Some(3),
                torn_tail_bytes: 0
            }
        );
        assert_eq!(log.last_seq(), 4);
        assert_eq!(log.entries_since_checkpoint(), 1);
        assert_eq!(
            log.append(EventKind::ArtifactPurged, "c1/audio.age", None, AT)
                .expect("append"),
            5
        );
        let text = fs::read(dir.join(LOG_FILE)).expect("read");
        assert_eq!(verify(&text, &[public]).expect("verifies").entries, 5);
    }

    #[test]
    fn torn_tail_is_truncated_on_open() {
        let scratch = Scratch::new();
        let (key, der) = test_key();
        let (mut log, _) = AuditLog::open(&scratch.0, key).expect("open");
        log.append(EventKind::ArtifactCreated, "c1", None, AT)
            .expect("append");
        log.append(EventKind::ArtifactBlocked, "c2", None, AT)
            .expect("append");
        drop(log);
        let path = scratch.0.join(LOG_FILE);
        let whole = fs::read(&path).expect("read");
        // A crash in the middle of the third append.
        let mut torn = whole.clone();
        torn.extend_from_slice(b"{\"seq\":3,\"at\":\"2026-11");
        fs::write(&path, &torn).expect("write");

        let (mut log, report) = AuditLog::open(&scratch.0, again(&der)).expect("open recovers");
        assert_eq!(report.entries, 2);
        assert_eq!(report.torn_tail_bytes, (torn.len() - whole.len()) as u64);
        assert_eq!(fs::read(&path).expect("read"), whole);
        assert_eq!(
            log.append(EventKind::ArtifactPurged, "c1", None, AT)
                .expect("append"),
            3
        );
    }

    #[test]
    fn damage_before_the_tail_fails_the_open_naming_the_line() {
        let scratch = Scratch::new();
        let (key, der) = test_key();
        let (mut log, _) = AuditLog::open(&scratch.0, key).expect("open");
        for subject in ["c1", "c2", "c3"] {
            log.append(EventKind::ArtifactCreated, subject, None, AT)
                .expect("append");
        }
        drop(log);
        let path = scratch.0.join(LOG_FILE);
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replacen("\"c2\"", "\"c9\"", 1)).expect("write");
        let error = AuditLog::open(&scratch.0, again(&der)).expect_err("tampered");
        let AuditError::Corrupt { error, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(error.input, Input::Log);
        assert_eq!(error.line, 3);
        assert!(matches!(error.problem, Problem::BadPrev { .. }), "{error}");
        assert!(error.to_string().starts_with("log line 3: prev "), "{error}");
    }

    #[test]
    fn another_key_fails_the_open() {
        let scratch = Scratch::new();
        let (mut log, _) = AuditLog::open(&scratch.0, test_key().0).expect("open");
        log.checkpoint(AT).expect("checkpoint");
        drop(log);
        let error = AuditLog::open(&scratch.0, test_key().0).expect_err("other key");
        assert!(error.to_string().contains("not trusted"), "{error}");
    }

    #[test]
    fn bad_input_is_refused_and_nothing_written() {
        let scratch = Scratch::new();
        let (mut log, _) = AuditLog::open(&scratch.0, test_key().0).expect("open");
        assert!(
            log.append(EventKind::ArtifactCreated, "c1", None, "yesterday")
                .is_err()
        );
        assert!(log.append(EventKind::ArtifactCreated, "", None, AT).is_err());
        assert!(
            log.append(EventKind::ArtifactCreated, &"x".repeat(MAX_SUBJECT + 1), None, AT)
                .is_err()
        );
        let mut big = serde_json::Map::new();
        big.insert("text".into(), "y".repeat(MAX_DETAIL).into());
        assert!(
            log.append(EventKind::ArtifactCreated, "c1", Some(big), AT)
                .is_err()
        );
        assert!(log.checkpoint("2026-11-29T18:00:00Z").is_err());
        assert_eq!(log.last_seq(), 0);
        assert_eq!(fs::metadata(scratch.0.join(LOG_FILE)).expect("file").len(), 0);
    }
}
