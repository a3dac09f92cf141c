//! The durable spool. One file per record in `dir`, named by its sequence number (`{seq:020}.rec`), so the
//! directory listing is the index and no index file can be torn. A record is written to `{seq}.tmp`, synced,
//! renamed and the directory synced before `append` returns; it is deleted only by `ack`, after its sink
//! acknowledged it. Record file:
//!
//! ```text
//! "AIRLOCK-SPOOL-1\n" | u32 LE header length | header (JSON) | u64 LE body length | body | SHA-256 of all before
//! ```
//!
//! Large artifacts (recordings) are not copied into records: the record names the file, and after the record
//! is durable the file is renamed into `files/{seq:020}` (same filesystem), so the spool owns it and `ack`
//! deletes both (record first: a file without a record is one already delivered). Opening the spool finishes
//! or undoes what a crash interrupted: partial `.tmp` records are removed (their `append` never returned), a
//! file whose rename was interrupted is moved in, delivered files are removed; a record that fails its
//! checksum, or whose file is gone, is moved to `quarantine/` and reported — never deleted silently.
//!
//! Space: the spool never refuses an append (accepted data is never dropped); [`Spool::admission`] tells the
//! caller whether to accept *new* calls, keeping `reserve_bytes` free below `max_bytes` for calls in flight.
//! Not thread-safe by itself: one owner (the runtime wraps it in a mutex and calls it off the async threads).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 16] = b"AIRLOCK-SPOOL-1\n";
const RECORD_SUFFIX: &str = ".rec";
const PARTIAL_SUFFIX: &str = ".tmp";
const FILES_DIR: &str = "files";
const QUARANTINE_DIR: &str = "quarantine";
/// Largest header a record may carry (keys and names are short).
const MAX_HEADER: u32 = 64 * 1024;
/// Largest inline body (events, manifests, transcripts); bigger artifacts go as files.
pub const MAX_INLINE: u64 = 64 * 1024 * 1024;

/// A record's place in the spool; increases with every append, also across restarts.
pub type Seq = u64;

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// Object storage (S3, or the local bucket directory).
    Objects,
    /// The event bus (MQTT, or the local event log).
    Events,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes the spool may hold (records and their files) before new calls are refused.
    pub max_bytes: u64,
    /// Room kept free below `max_bytes` for the calls already accepted: new calls are refused once
    /// `used + reserve_bytes > max_bytes`.
    pub reserve_bytes: u64,
}

/// What a new record carries.
#[derive(Debug)]
pub enum Payload {
    /// Bytes kept in the record itself (at most [`MAX_INLINE`]).
    Inline(Vec<u8>),
    /// A file the spool takes over: renamed into the spool once the record is durable. It must be on the
    /// spool's filesystem and must not change afterwards.
    File(PathBuf),
    /// The same, with its SHA-256 and size already computed (by [`sha256_of`], outside any lock the caller
    /// holds around `append`).
    HashedFile {
        path: PathBuf,
        sha256: [u8; 32],
        size: u64,
    },
}

/// A record to append.
#[derive(Debug)]
pub struct NewRecord {
    pub sink: Sink,
    /// Object key or event topic (relative; the sink adds its prefix).
    pub key: String,
    pub content_type: String,
    pub payload: Payload,
    /// How long the object must be kept where it is delivered (objects of a call; None for events).
    pub retention: Option<Retention>,
}

/// The retention a call's policy gave its objects, stamped into their records when they are spooled (so a
/// later policy change does not alter what was decided for a call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The retention class's name.
    pub class: String,
    /// Days the class keeps an object, counted from when it entered the outbox.
    pub days: u32,
    /// Whether the call is under legal hold.
    pub legal_hold: bool,
    /// Index of the `policy.retention_rules` entry that chose the class; None: the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// Seconds a delivered copy stays on the device (under `<data>/retained/`); 0: purged once delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_on_device_secs: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// What the spool keeps in memory about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub seq: Seq,
    pub sink: Sink,
    pub key: String,
    pub created_unix_ms: u64,
    /// Bytes on disk: the record file plus its artifact file.
    pub bytes: u64,
}

/// A record read back, checksum verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub meta: RecordMeta,
    pub content_type: String,
    pub body: Body,
    pub retention: Option<Retention>,
}

/// A record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Inline(Vec<u8>),
    /// The artifact file inside the spool, with the size and SHA-256 it had when it was appended (a sink
    /// checks them while it reads the file).
    File {
        path: PathBuf,
        size: u64,
        sha256: [u8; 32],
    },
}

/// Whether new calls may be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accept,
    Refuse { used_bytes: u64, max_bytes: u64 },
}

/// Counts for metrics and alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    pub records: usize,
    pub bytes: u64,
    pub oldest_created_unix_ms: Option<u64>,
}

/// What opening the spool found and repaired.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub records: usize,
    /// Records whose append was interrupted before it returned (removed).
    pub partial_removed: usize,
    /// Artifact files moved in whose rename a crash had interrupted.
    pub files_moved_in: usize,
    /// Files of records acknowledged just before a crash (removed).
    pub delivered_files_removed: usize,
    /// Damaged records moved to `quarantine/`: (record file name, why).
    pub quarantined: Vec<(String, String)>,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("spool record {seq} is damaged: {reason}")]
    Damaged { seq: Seq, reason: String },
    #[error("spool has no record {0}")]
    Unknown(Seq),
    #[error("inline payload of {0} bytes is over the {MAX_INLINE}-byte limit; append it as a file")]
    TooLarge(u64),
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError + use<> {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    sink: Sink,
    key: String,
    content_type: String,
    created_unix_ms: u64,
    file: Option<FileRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention: Option<Retention>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileRef {
    /// Where the file was when it was appended (used to finish an interrupted rename).
    source: PathBuf,
    size: u64,
    sha256: String,
}

/// The durable spool.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    records: BTreeMap<Seq, RecordMeta>,
    bytes: u64,
    next_seq: Seq,
}

fn record_name(seq: Seq) -> String {
    format!("{seq:020}{RECORD_SUFFIX}")
}

fn sync_dir(path: &Path) -> Result<(), SpoolError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync directory", path))
}

/// SHA-256 and length of everything `reader` yields.
pub fn sha256_of(mut reader: impl Read) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok((hasher.finalize().into(), size));
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
}

/// SHA-256 and size of a file.
fn hash_file(path: &Path) -> Result<([u8; 32], u64), SpoolError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    sha256_of(file).map_err(io_error("read", path))
}

/// Parses a record file's bytes (checksum first).
fn parse_record(bytes: &[u8]) -> Result<(Header, Vec<u8>), String> {
    if bytes.len() < MAGIC.len() + 4 + 8 + 32 {
        return Err(format!("{} bytes is too short for a record", bytes.len()));
    }
    let (content, checksum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(content).as_slice() != checksum {
        return Err("checksum mismatch".into());
    }
    if &content[..MAGIC.len()] != MAGIC {
        return Err("not a spool record (bad magic)".into());
    }
    let mut at = MAGIC.len();
    let header_len = u32::from_le_bytes(content[at..at + 4].try_into().map_err(|_| "header length")?);
    at += 4;
    if header_len > MAX_HEADER || content.len() < at + header_len as usize + 8 {
        return Err(format!("header length {header_len} does not fit"));
    }
    let header: Header = serde_json::from_slice(&content[at..at + header_len as usize])
        .map_err(|error| format!("header: {error}"))?;
    at += header_len as usize;
    let body_len = u64::from_le_bytes(content[at..at + 8].try_into().map_err(|_| "body length")?);
    at += 8;
    if body_len != (content.len() - at) as u64 {
        return Err(format!("body length {body_len} does not match the record"));
    }
    Ok((header, content[at..].to_vec()))
}

/// Fuzz entry: the record parser (what `open` and `read` run on every record file) must return, never
/// panic or allocate beyond the input, on any bytes.
pub fn fuzz_parse_record(data: &[u8]) {
    let _ = parse_record(data);
    // The same bytes sealed with a valid checksum, so the fuzzer reaches the header and length checks.
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha256::digest(data));
    let _ = parse_record(&sealed);
}

impl Spool {
    /// Opens (creating) the spool in `config.dir` and repairs what a crash left behind.
    pub fn open(config: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        let dir = config.dir.clone();
        for sub in [dir.clone(), dir.join(FILES_DIR), dir.join(QUARANTINE_DIR)] {
            fs::create_dir_all(&sub).map_err(io_error("create", &sub))?;
        }
        let mut report = OpenReport::default();
        let mut spool = Spool {
            config,
            records: BTreeMap::new(),
            bytes: 0,
            next_seq: 1,
        };
        let mut names: Vec<String> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let mut highest: Seq = 0;
        for name in &names {
            let path = dir.join(name);
            if let Some(seq) = name
                .strip_suffix(PARTIAL_SUFFIX)
                .and_then(|s| s.parse::<Seq>().ok())
            {
                // Its append never returned, so nobody was told it was kept.
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
                report.partial_removed += 1;
                highest = highest.max(seq);
                continue;
            }
            let Some(seq) = name
                .strip_suffix(RECORD_SUFFIX)
                .and_then(|s| s.parse::<Seq>().ok())
            else {
                continue;
            };
            highest = highest.max(seq);
            match spool.load(seq, &mut report) {
                Ok(meta) => {
                    spool.bytes += meta.bytes;
                    spool.records.insert(seq, meta);
                }
                Err(reason) => {
                    spool.quarantine(seq)?;
                    report.quarantined.push((name.clone(), reason));
                }
            }
        }
        // Files without a record were acknowledged (records are deleted before their files).
        let files = dir.join(FILES_DIR);
        for entry in fs::read_dir(&files).map_err(io_error("list", &files))? {
            let entry = entry.map_err(io_error("list", &files))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(seq) = name.parse::<Seq>() {
                highest = highest.max(seq);
                if !spool.records.contains_key(&seq) {
                    fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
                    report.delivered_files_removed += 1;
                }
            }
        }
        sync_dir(&dir)?;
        sync_dir(&files)?;
        spool.next_seq = highest + 1;
        report.records = spool.records.len();
        Ok((spool, report))
    }

    /// Reads record `seq` at open, finishing an interrupted file rename; Err(reason) when damaged.
    fn load(&self, seq: Seq, report: &mut OpenReport) -> Result<RecordMeta, String> {
        let path = self.record_path(seq);
        let bytes = fs::read(&path).map_err(|error| format!("unreadable: {error}"))?;
        let (header, _) = parse_record(&bytes)?;
        let mut total = bytes.len() as u64;
        if let Some(file) = &header.file {
            let stored = self.file_path(seq);
            if !stored.exists() {
                if file.source.exists() {
                    fs::rename(&file.source, &stored)
                        .map_err(|error| format!("moving its file in: {error}"))?;
                    report.files_moved_in += 1;
                } else {
                    return Err("its artifact file is missing".into());
                }
            }
            let size = fs::metadata(&stored)
                .map_err(|error| format!("its artifact file: {error}"))?
                .len();
            if size != file.size {
                return Err(format!(
                    "its artifact file has {size} bytes, the record says {}",
                    file.size
                ));
            }
            total += size;
        }
        Ok(RecordMeta {
            seq,
            sink: header.sink,
            key: header.key,
            created_unix_ms: header.created_unix_ms,
            bytes: total,
        })
    }

    fn quarantine(&self, seq: Seq) -> Result<(), SpoolError> {
        let quarantine = self.config.dir.join(QUARANTINE_DIR);
        // The file first: a file left without its record would be taken for a delivered one at the next open.
        let file = self.file_path(seq);
        if file.exists() {
            let target = quarantine.join(format!("{seq:020}.file"));
            fs::rename(&file, &target).map_err(io_error("quarantine", &file))?;
            sync_dir(&quarantine)?;
        }
        let record = self.record_path(seq);
        let target = quarantine.join(record_name(seq));
        fs::rename(&record, &target).map_err(io_error("quarantine", &record))?;
        sync_dir(&quarantine)
    }

    fn record_path(&self, seq: Seq) -> PathBuf {
        self.config.dir.join(record_name(seq))
    }

    fn file_path(&self, seq: Seq) -> PathBuf {
        self.config.dir.join(FILES_DIR).join(format!("{seq:020}"))
    }

    /// Whether new calls may be accepted now.
    pub fn admission(&self) -> Admission {
        if self.bytes.saturating_add(self.config.reserve_bytes) > self.config.max_bytes {
            Admission::Refuse {
                used_bytes: self.bytes,
                max_bytes: self.config.max_bytes,
            }
        } else {
            Admission::Accept
        }
    }

    /// Appends a record durably; when this returns Ok the record survives a crash or power loss. Never
    /// refused for space (see [`Spool::admission`]).
    pub fn append(&mut self, record: NewRecord, now_unix_ms: u64) -> Result<Seq, SpoolError> {
        let seq = self.next_seq;
        let (source, known) = match record.payload {
            Payload::Inline(body) => {
                if body.len() as u64 > MAX_INLINE {
                    return Err(SpoolError::TooLarge(body.len() as u64));
                }
                let header = Header {
                    sink: record.sink,
                    key: record.key,
                    content_type: record.content_type,
                    created_unix_ms: now_unix_ms,
                    file: None,
                    retention: record.retention,
                };
                return self.write_record(seq, header, body);
            }
            Payload::File(path) => (path, None),
            Payload::HashedFile { path, sha256, size } => (path, Some((sha256, size))),
        };
        let source = std::path::absolute(&source).map_err(io_error("resolve", &source))?;
        let (sha256, size) = match known {
            Some(known) => known,
            None => hash_file(&source)?,
        };
        let header = Header {
            sink: record.sink,
            key: record.key,
            content_type: record.content_type,
            created_unix_ms: now_unix_ms,
            file: Some(FileRef {
                source,
                size,
                sha256: hex::encode(sha256),
            }),
            retention: record.retention,
        };
        self.write_record(seq, header, Vec::new())
    }

    /// Writes record `seq` durably, then moves its file (if any) in.
    fn write_record(&mut self, seq: Seq, header: Header, body: Vec<u8>) -> Result<Seq, SpoolError> {
        let header_json = serde_json::to_vec(&header).map_err(|error| SpoolError::Io {
            op: "encode header for",
            path: self.record_path(seq),
            source: io::Error::other(error),
        })?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + header_json.len() + 8 + body.len() + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header_json);
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);

        let partial = self.config.dir.join(format!("{seq:020}{PARTIAL_SUFFIX}"));
        let path = self.record_path(seq);
        {
            let mut out = File::create(&partial).map_err(io_error("create", &partial))?;
            out.write_all(&bytes).map_err(io_error("write", &partial))?;
            out.sync_all().map_err(io_error("sync", &partial))?;
        }
        fs::rename(&partial, &path).map_err(io_error("rename", &partial))?;
        sync_dir(&self.config.dir)?;
        self.next_seq += 1;
        let mut total = bytes.len() as u64;
        if let Some(file) = &header.file {
            let stored = self.file_path(seq);
            fs::rename(&file.source, &stored).map_err(io_error("move in", &file.source))?;
            sync_dir(&self.config.dir.join(FILES_DIR))?;
            if let Some(parent) = file.source.parent() {
                sync_dir(parent)?;
            }
            total += file.size;
        }
        self.bytes += total;
        self.records.insert(
            seq,
            RecordMeta {
                seq,
                sink: header.sink,
                key: header.key,
                created_unix_ms: header.created_unix_ms,
                bytes: total,
            },
        );
        Ok(seq)
    }

    /// The records waiting for `sink`, oldest first (the order they must be delivered in).
    pub fn pending(&self, sink: Sink) -> impl Iterator<Item = &RecordMeta> {
        self.records.values().filter(move |meta| meta.sink == sink)
    }

    /// Reads a record back, verifying its checksum.
    pub fn read(&self, seq: Seq) -> Result<Record, SpoolError> {
        let meta = self.records.get(&seq).ok_or(SpoolError::Unknown(seq))?.clone();
        let path = self.record_path(seq);
        let bytes = fs::read(&path).map_err(io_error("read", &path))?;
        let (header, body) = parse_record(&bytes).map_err(|reason| SpoolError::Damaged { seq, reason })?;
        let body = match header.file {
            None => Body::Inline(body),
            Some(file) => {
                let mut sha256 = [0u8; 32];
                hex::decode_to_slice(&file.sha256, &mut sha256).map_err(|error| SpoolError::Damaged {
                    seq,
                    reason: format!("file checksum: {error}"),
                })?;
                Body::File {
                    path: self.file_path(seq),
                    size: file.size,
                    sha256,
                }
            }
        };
        Ok(Record {
            meta,
            content_type: header.content_type,
            body,
            retention: header.retention,
        })
    }

    /// Deletes a record its sink acknowledged (and its artifact file). Durable when it returns.
    pub fn ack(&mut self, seq: Seq) -> Result<(), SpoolError> {
        let meta = self.records.get(&seq).ok_or(SpoolError::Unknown(seq))?;
        let bytes = meta.bytes;
        let path = self.record_path(seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            // Removed by an earlier attempt whose directory sync failed.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("remove", &path)(error)),
        }
        // The record is gone: it is delivered whatever happens to the syncs below (a file left behind is
        // removed as delivered at the next open).
        self.records.remove(&seq);
        self.bytes -= bytes;
        sync_dir(&self.config.dir)?;
        let file = self.file_path(seq);
        match fs::remove_file(&file) {
            Ok(()) => sync_dir(&self.config.dir.join(FILES_DIR))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("remove", &file)(error)),
        }
        Ok(())
    }

    /// Counts over every sink's records.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            records: self.records.len(),
            bytes: self.bytes,
            oldest_created_unix_ms: self.records.values().map(|meta| meta.created_unix_ms).min(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "airlock-spool-test-{}-{}",
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

    fn config(root: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: root.join("spool"),
            max_bytes: 10_000,
            reserve_bytes: 2_000,
        }
    }

    fn event(text: &str) -> NewRecord {
        NewRecord {
            sink: Sink::Events,
            key: "evt/call/ended".into(),
            content_type: "application/json".into(),
            payload: Payload::Inline(text.as_bytes().to_vec()),
            retention: None,
        }
    }

    fn artifact(root: &Path, name: &str, bytes: &[u8]) -> NewRecord {
        let path = root.join(name);
        fs::write(&path, bytes).expect("artifact");
        NewRecord {
            sink: Sink::Objects,
            key: format!("call-1/{name}"),
            content_type: "application/octet-stream".into(),
            payload: Payload::File(path),
            retention: None,
        }
    }

    #[test]
    fn records_survive_reopening_in_order_until_acknowledged() {
        let scratch = Scratch::new();
        let (mut spool, report) = Spool::open(config(&scratch.0)).expect("open");
        assert_eq!(report, OpenReport::default());
        let first = spool.append(event("{\"n\":1}"), 1_000).expect("append");
        let second = spool
            .append(artifact(&scratch.0, "recording.wav.age", &[7u8; 3000]), 2_000)
            .expect("file");
        let third = spool.append(event("{\"n\":3}"), 3_000).expect("append");
        assert!(first < second && second < third);
        assert!(
            !scratch.0.join("recording.wav.age").exists(),
            "the spool took the file over"
        );
        drop(spool);

        let (mut spool, report) = Spool::open(config(&scratch.0)).expect("reopen");
        assert_eq!(report.records, 3);
        let events: Vec<Seq> = spool.pending(Sink::Events).map(|meta| meta.seq).collect();
        assert_eq!(events, vec![first, third]);
        let Record { body, meta, .. } = spool.read(second).expect("read");
        assert_eq!(meta.key, "call-1/recording.wav.age");
        match body {
            Body::File { path, size, sha256 } => {
                assert_eq!(size, 3000);
                assert_eq!(fs::read(&path).expect("stored"), vec![7u8; 3000]);
                assert_eq!(sha256, <[u8; 32]>::from(Sha256::digest([7u8; 3000])));
            }
            other => panic!("expected a file body, got {other:?}"),
        }
        assert_eq!(
            spool.read(first).expect("read").body,
            Body::Inline(b"{\"n\":1}".to_vec())
        );
        assert_eq!(spool.stats().oldest_created_unix_ms, Some(1_000));

        spool.ack(second).expect("ack");
        spool.ack(first).expect("ack");
        drop(spool);
        let (mut spool, _) = Spool::open(config(&scratch.0)).expect("reopen");
        assert_eq!(spool.stats().records, 1);
        assert_eq!(
            fs::read_dir(scratch.0.join("spool/files"))
                .expect("files")
                .count(),
            0
        );
        // Sequence numbers keep increasing across restarts, even after acknowledgements.
        let fourth = spool.append(event("{\"n\":4}"), 4_000).expect("append");
        assert!(fourth > third);
    }

    #[test]
    fn admission_keeps_a_reserve_and_appends_are_never_refused() {
        let scratch = Scratch::new();
        let (mut spool, _) = Spool::open(config(&scratch.0)).expect("open");
        assert_eq!(spool.admission(), Admission::Accept);
        spool
            .append(artifact(&scratch.0, "a", &[1u8; 8_000]), 1)
            .expect("append");
        assert!(
            matches!(spool.admission(), Admission::Refuse { .. }),
            "8 kB + its record + 2 kB reserve > 10 kB"
        );
        // A call already accepted still gets everything in, past the limit.
        spool
            .append(artifact(&scratch.0, "b", &[2u8; 6_000]), 2)
            .expect("over the limit");
        assert!(spool.stats().bytes > 14_000);
        let seqs: Vec<Seq> = spool.pending(Sink::Objects).map(|meta| meta.seq).collect();
        for seq in seqs {
            spool.ack(seq).expect("ack");
        }
        assert_eq!(spool.stats(), SpoolStats::default());
        assert_eq!(spool.admission(), Admission::Accept);
    }

    #[test]
    fn a_crash_mid_append_or_mid_ack_is_repaired_on_open() {
        let scratch = Scratch::new();
        let (mut spool, _) = Spool::open(config(&scratch.0)).expect("open");
        let kept = spool.append(event("kept"), 1).expect("append");
        let delivered = spool
            .append(artifact(&scratch.0, "delivered", b"gone"), 2)
            .expect("append");
        let moving = spool
            .append(artifact(&scratch.0, "moving", b"in flight"), 3)
            .expect("append");
        drop(spool);
        let dir = scratch.0.join("spool");
        // Crash during an append: a partial record that was never acknowledged to the caller.
        fs::write(dir.join(format!("{:020}.tmp", moving + 1)), b"AIRLOCK-SP").expect("partial");
        // Crash during an ack: the record was deleted, its file not yet.
        fs::remove_file(dir.join(record_name(delivered))).expect("ack half done");
        // Crash between writing a record and moving its file in.
        let source = scratch.0.join("moving");
        fs::rename(dir.join(format!("files/{moving:020}")), &source).expect("undo the move");

        let (mut spool, report) = Spool::open(config(&scratch.0)).expect("reopen");
        assert_eq!(report.partial_removed, 1);
        assert_eq!(report.delivered_files_removed, 1);
        assert_eq!(report.files_moved_in, 1);
        assert!(report.quarantined.is_empty(), "{report:?}");
        let seqs: Vec<Seq> = spool.records.keys().copied().collect();
        assert_eq!(seqs, vec![kept, moving]);
        match spool.read(moving).expect("read").body {
            Body::File { path, .. } => assert_eq!(fs::read(path).expect("moved in"), b"in flight"),
            other => panic!("{other:?}"),
        }
        // The partial record's number is not reused.
        assert!(spool.append(event("next"), 4).expect("append") > moving + 1);
    }

    #[test]
    fn damaged_records_are_quarantined_and_reported_never_dropped() {
        let scratch = Scratch::new();
        let (mut spool, _) = Spool::open(config(&scratch.0)).expect("open");
        let flipped = spool.append(event("{\"n\":1}"), 1).expect("append");
        let truncated = spool.append(event("{\"n\":2}"), 2).expect("append");
        let lost_file = spool
            .append(artifact(&scratch.0, "x", b"data"), 3)
            .expect("append");
        let good = spool.append(event("{\"n\":4}"), 4).expect("append");
        drop(spool);
        let dir = scratch.0.join("spool");
        let path = dir.join(record_name(flipped));
        let mut bytes = fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&path, &bytes).expect("flip a bit");
        let path = dir.join(record_name(truncated));
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() - 5]).expect("truncate");
        fs::remove_file(dir.join(format!("files/{lost_file:020}"))).expect("lose the file");

        let (spool, report) = Spool::open(config(&scratch.0)).expect("reopen");
        let quarantined: Vec<&str> = report.quarantined.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            quarantined,
            vec![
                record_name(flipped),
                record_name(truncated),
                record_name(lost_file)
            ]
        );
        assert!(
            report.quarantined[0].1.contains("checksum"),
            "{:?}",
            report.quarantined
        );
        assert!(
            report.quarantined[2].1.contains("missing"),
            "{:?}",
            report.quarantined
        );
        assert_eq!(
            fs::read_dir(dir.join("quarantine")).expect("quarantine").count(),
            3
        );
        assert_eq!(spool.records.keys().copied().collect::<Vec<_>>(), vec![good]);
    }

    #[test]
    fn an_ack_whose_record_is_already_gone_completes() {
        let scratch = Scratch::new();
        let (mut spool, _) = Spool::open(config(&scratch.0)).expect("open");
        let seq = spool
            .append(artifact(&scratch.0, "y", b"data"), 1)
            .expect("append");
        // An earlier ack removed the record file, then failed to sync: the retry must not stall the sink.
        fs::remove_file(scratch.0.join("spool").join(record_name(seq))).expect("remove");
        spool.ack(seq).expect("ack completes");
        assert_eq!(spool.stats(), SpoolStats::default());
        assert!(!scratch.0.join(format!("spool/files/{seq:020}")).exists());
        let pre_hashed = NewRecord {
            payload: Payload::HashedFile {
                path: {
                    fs::write(scratch.0.join("z"), b"zz").expect("z");
                    scratch.0.join("z")
                },
                sha256: Sha256::digest(b"zz").into(),
                size: 2,
            },
            ..artifact(&scratch.0, "unused", b"")
        };
        let seq = spool.append(pre_hashed, 2).expect("append pre-hashed");
        match spool.read(seq).expect("read").body {
            Body::File { size, sha256, .. } => {
                assert_eq!((size, sha256), (2, <[u8; 32]>::from(Sha256::digest(b"zz"))));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let scratch = Scratch::new();
        let (mut spool, _) = Spool::open(config(&scratch.0)).expect("open");
        let missing = NewRecord {
            payload: Payload::File(scratch.0.join("no-such-file")),
            ..event("")
        };
        let error = spool.append(missing, 1).expect_err("missing file");
        assert!(error.to_string().contains("no-such-file"), "{error}");
        assert!(matches!(spool.read(42), Err(SpoolError::Unknown(42))));
        assert!(matches!(spool.ack(42), Err(SpoolError::Unknown(42))));
        assert_eq!(spool.stats().records, 0);
        for garbage in [&b""[..], b"AIRLOCK-SPOOL-1\n", &[0u8; 100]] {
            assert!(parse_record(garbage).is_err());
        }
    }
}
