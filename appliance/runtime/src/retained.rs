//! On-device retention of delivered artifacts. A retention class with `keep_on_device` keeps a copy of each
//! object its sink took under `<data>/retained/{key}` (the bucket's key layout; the bytes delivered, so
//! recordings stay age-encrypted and transcripts redacted) until that time has passed since delivery.
//!
//! `retained/index.jsonl` journals every copy kept (key, class, until, bytes, SHA-256) and every purge, one
//! JSON object per line; it is read back (and compacted) at start-up, so kept copies and their deadlines
//! survive restarts. A copy's line is written before the copy and the copy before the spool record is
//! acknowledged, so a crash repeats a keep rather than losing one. The sweeper purges at most
//! [`MAX_PURGES_PER_SWEEP`] expired copies per sweep, looking at most at [`MAX_EXAMINED_PER_SWEEP`]; a copy
//! whose class (or the whole policy) is under legal hold is not purged.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use airlock_outbox::Body;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Expired copies purged per sweep at most.
pub(crate) const MAX_PURGES_PER_SWEEP: usize = 64;
/// Expired copies looked at per sweep at most (held ones are skipped; the next sweep continues after them).
pub(crate) const MAX_EXAMINED_PER_SWEEP: usize = 1024;
/// The journal's name inside the retained directory.
pub(crate) const JOURNAL: &str = "index.jsonl";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// A copy was kept (or is about to be: its file may be missing after a crash).
    Kept {
        key: String,
        class: String,
        /// When it may be purged, RFC 3339 (for people) and in Unix milliseconds (for the sweeper).
        until: String,
        until_unix_ms: u64,
        bytes: u64,
        sha256: String,
    },
    /// A copy was purged.
    Purged { key: String, at: String },
}

#[derive(Debug, Clone)]
struct Kept {
    class: String,
    until_unix_ms: u64,
    bytes: u64,
    line: Line,
}

/// A copy the sweeper purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Purged {
    pub key: String,
    pub class: String,
    pub bytes: u64,
}

/// The kept copies and their journal.
#[derive(Debug)]
pub(crate) struct Retained {
    root: PathBuf,
    journal: File,
    kept: HashMap<String, Kept>,
    by_expiry: BTreeSet<(u64, String)>,
    bytes: u64,
    /// Where the next sweep continues among the expired copies (after held ones it skipped).
    cursor: Option<(u64, String)>,
}

impl Retained {
    /// Opens (creating) `root`, reads the journal back, drops copies whose file is missing (their keep was
    /// cut short by a crash; the spool still holds the record and keeps it again) and compacts the journal.
    pub(crate) fn open(root: &Path) -> std::io::Result<Retained> {
        std::fs::create_dir_all(root)?;
        let path = root.join(JOURNAL);
        let mut kept: HashMap<String, Kept> = HashMap::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).split(b'\n') {
                // Only the last line can be torn (an append cut short, maybe mid-character); it is dropped
                // with the compaction, like any line that does not read back.
                let line = String::from_utf8_lossy(&line?).into_owned();
                match serde_json::from_str::<Line>(&line) {
                    Ok(Line::Purged { key, .. }) => {
                        kept.remove(&key);
                    }
                    Ok(line) => {
                        if let Line::Kept {
                            key,
                            class,
                            until_unix_ms,
                            bytes,
                            ..
                        } = &line
                        {
                            let entry = Kept {
                                class: class.clone(),
                                until_unix_ms: *until_unix_ms,
                                bytes: *bytes,
                                line: line.clone(),
                            };
                            kept.insert(key.clone(), entry);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "retained/index.jsonl: an unreadable line is dropped")
                    }
                }
            }
        }
        kept.retain(|key, _| copy_path(root, key).is_some_and(|file| file.is_file()));
        let mut text = Vec::new();
        for entry in kept.values() {
            serde_json::to_writer(&mut text, &entry.line).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        crate::storage::write_atomically(&path, &text)?;
        let journal = std::fs::OpenOptions::new().append(true).open(&path)?;
        let by_expiry = kept
            .iter()
            .map(|(key, entry)| (entry.until_unix_ms, key.clone()))
            .collect();
        let bytes = kept.values().map(|entry| entry.bytes).sum();
        Ok(Retained {
            root: root.to_path_buf(),
            journal,
            kept,
            by_expiry,
            bytes,
            cursor: None,
        })
    }

    /// Bytes and number of the copies kept.
    pub(crate) fn totals(&self) -> (u64, usize) {
        (self.bytes, self.kept.len())
    }

    /// Keeps a copy of a delivered object `key` (its spool body) for `class` until `until_unix_ms`. A key
    /// already kept is left as it is (a delivery repeated after a crash).
    pub(crate) fn keep(
        &mut self,
        key: &str,
        body: &Body,
        class: &str,
        until_unix_ms: u64,
    ) -> std::io::Result<()> {
        if self.kept.contains_key(key) {
            return Ok(());
        }
        let target = copy_path(&self.root, key)
            .ok_or_else(|| std::io::Error::other("the object key is not a relative path"))?;
        let (bytes, sha256) = match body {
            Body::File { size, sha256, .. } => (*size, hex::encode(sha256)),
            Body::Inline(data) => (data.len() as u64, hex::encode(sha2::Sha256::digest(data))),
        };
        let line = Line::Kept {
            key: key.to_string(),
            class: class.to_string(),
            until: crate::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(until_unix_ms)),
            until_unix_ms,
            bytes,
            sha256,
        };
        self.append(&line)?;
        let parent = target
            .parent()
            .ok_or_else(|| std::io::Error::other("object key without a directory"))?;
        crate::outbox::create_dirs_durably(parent)?;
        match body {
            Body::File { path, .. } => {
                let mut temp = target.as_os_str().to_owned();
                temp.push(".partial");
                let temp = PathBuf::from(temp);
                let _ = std::fs::remove_file(&temp);
                // A second link to the spool's file (already synced) when it can be; a synced copy else.
                if std::fs::hard_link(path, &temp).is_err() {
                    std::fs::copy(path, &temp)?;
                    File::open(&temp)?.sync_all()?;
                }
                std::fs::rename(&temp, &target)?;
                File::open(parent)?.sync_all()?;
            }
            Body::Inline(data) => crate::storage::write_atomically(&target, data)?,
        }
        self.bytes += bytes;
        self.by_expiry.insert((until_unix_ms, key.to_string()));
        self.kept.insert(
            key.to_string(),
            Kept {
                class: class.to_string(),
                until_unix_ms,
                bytes,
                line,
            },
        );
        Ok(())
    }

    /// Purges up to [`MAX_PURGES_PER_SWEEP`] copies expired at `now_unix_ms` whose class `held` does not
    /// name; returns them, and the error that stopped the sweep early if one did (the copies purged before
    /// it are returned all the same, to be audited).
    pub(crate) fn sweep(
        &mut self,
        now_unix_ms: u64,
        held: &dyn Fn(&str) -> bool,
    ) -> (Vec<Purged>, Option<std::io::Error>) {
        let start = self.cursor.take();
        let candidates: Vec<(u64, String)> = self
            .by_expiry
            .iter()
            .filter(|entry| start.as_ref().is_none_or(|start| *entry > start))
            .take_while(|(until, _)| *until <= now_unix_ms)
            .take(MAX_EXAMINED_PER_SWEEP)
            .cloned()
            .collect();
        if candidates.len() == MAX_EXAMINED_PER_SWEEP {
            self.cursor = candidates.last().cloned();
        }
        let mut purged = Vec::new();
        for entry in candidates {
            let Some(kept) = self.kept.get(&entry.1) else {
                continue;
            };
            if held(&kept.class) {
                continue;
            }
            let class = kept.class.clone();
            let bytes = kept.bytes;
            if let Err(error) = self.purge(&entry.1) {
                return (purged, Some(error));
            }
            self.by_expiry.remove(&entry);
            purged.push(Purged {
                key: entry.1.clone(),
                class,
                bytes,
            });
            if purged.len() == MAX_PURGES_PER_SWEEP {
                self.cursor = Some(entry);
                break;
            }
        }
        (purged, None)
    }

    /// Removes a copy, its emptied directories, and journals the purge.
    fn purge(&mut self, key: &str) -> std::io::Result<()> {
        if let Some(path) = copy_path(&self.root, key) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            let mut dir = path.parent();
            while let Some(parent) = dir.filter(|parent| *parent != self.root) {
                if std::fs::remove_dir(parent).is_err() {
                    break;
                }
                dir = parent.parent();
            }
        }
        self.append(&Line::Purged {
            key: key.to_string(),
            at: crate::clock::rfc3339(std::time::SystemTime::now()),
        })?;
        if let Some(kept) = self.kept.remove(key) {
            self.bytes -= kept.bytes;
        }
        Ok(())
    }

    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        text.push(b'\n');
        self.journal.write_all(&text)?;
        self.journal.sync_data()
    }
}

/// Where the copy of `key` lives; None when the key could leave the retained directory.
fn copy_path(root: &Path, key: &str) -> Option<PathBuf> {
    crate::outbox::object_path(root, key).filter(|path| *path != root.join(JOURNAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("airlock-retained-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spooled(dir: &Path, name: &str, content: &[u8]) -> Body {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        Body::File {
            path,
            size: content.len() as u64,
            sha256: sha2::Sha256::digest(content).into(),
        }
    }

    #[test]
    fn copies_are_kept_until_due_survive_a_restart_and_held_classes_stay() {
        let scratch = Scratch::new("keep");
        let root = scratch.0.join("retained");
        let mut retained = Retained::open(&root).unwrap();
        let a = spooled(&scratch.0, "a", b"encrypted audio");
        let b = spooled(&scratch.0, "b", b"{\"manifest\":1}");
        retained
            .keep("site/2026/11/29/c1/recording.wav.age", &a, "short", 1_000)
            .unwrap();
        retained
            .keep("site/2026/11/29/c1/manifest.json", &b, "hold", 1_000)
            .unwrap();
        // The spool removing its file leaves the copy (a second link or a copy of it).
        std::fs::remove_file(scratch.0.join("a")).unwrap();
        assert_eq!(
            std::fs::read(root.join("site/2026/11/29/c1/recording.wav.age")).unwrap(),
            b"encrypted audio"
        );
        // A repeated delivery keeps nothing twice.
        retained
            .keep("site/2026/11/29/c1/manifest.json", &b, "hold", 9_000)
            .unwrap();
        assert_eq!(retained.totals(), (15 + 14, 2));
        drop(retained);

        let mut retained = Retained::open(&root).unwrap();
        assert_eq!(retained.totals(), (29, 2));
        let held = |class: &str| class == "hold";
        assert!(retained.sweep(999, &held).0.is_empty(), "not due yet");
        let (purged, error) = retained.sweep(1_000, &held);
        assert!(error.is_none());
        assert_eq!(
            purged,
            [Purged {
                key: "site/2026/11/29/c1/recording.wav.age".into(),
                class: "short".into(),
                bytes: 15
            }]
        );
        assert!(!root.join("site/2026/11/29/c1/recording.wav.age").exists());
        assert!(root.join("site/2026/11/29/c1/manifest.json").exists(), "held");
        assert_eq!(retained.totals(), (14, 1));
        // The hold lifted: the copy goes, and so do its emptied directories.
        assert_eq!(retained.sweep(2_000, &|_| false).0.len(), 1);
        assert!(!root.join("site").exists());
        drop(retained);
        let retained = Retained::open(&root).unwrap();
        assert_eq!(retained.totals(), (0, 0));
        assert_eq!(
            std::fs::read_to_string(root.join(JOURNAL)).unwrap(),
            "",
            "compacted"
        );
    }

    #[test]
    fn a_keep_cut_short_is_forgotten_and_a_sweep_is_bounded() {
        let scratch = Scratch::new("bounded");
        let root = scratch.0.join("retained");
        let mut retained = Retained::open(&root).unwrap();
        let body = Body::Inline(b"x".to_vec());
        for n in 0..MAX_PURGES_PER_SWEEP + 3 {
            retained
                .keep(&format!("s/c{n}/manifest.json"), &body, "short", n as u64)
                .unwrap();
        }
        // A crash between the journal line and the copy: the copy's file is missing.
        std::fs::remove_file(root.join("s/c0/manifest.json")).unwrap();
        drop(retained);
        let mut retained = Retained::open(&root).unwrap();
        assert_eq!(retained.totals().1, MAX_PURGES_PER_SWEEP + 2);
        assert_eq!(retained.sweep(u64::MAX, &|_| false).0.len(), MAX_PURGES_PER_SWEEP);
        assert_eq!(retained.sweep(u64::MAX, &|_| false).0.len(), 2);
        assert_eq!(retained.totals(), (0, 0));
        assert!(retained.keep("../escape", &body, "short", 0).is_err());
        assert!(retained.keep(JOURNAL, &body, "short", 0).is_err());
    }

    #[test]
    fn a_journal_torn_mid_character_still_opens() {
        let scratch = Scratch::new("torn");
        let root = scratch.0.join("retained");
        let mut retained = Retained::open(&root).unwrap();
        let body = Body::Inline(b"x".to_vec());
        retained.keep("s/c1/manifest.json", &body, "short", 5).unwrap();
        drop(retained);
        // Power lost during an append: the tail holds half of a multi-byte character.
        let mut journal = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(JOURNAL))
            .unwrap();
        std::io::Write::write_all(&mut journal, b"{\"kept\":{\"key\":\"s/\xc3").unwrap();
        drop(journal);
        let retained = Retained::open(&root).unwrap();
        assert_eq!(retained.totals().1, 1);
    }
}
