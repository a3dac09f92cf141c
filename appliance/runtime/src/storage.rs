//! The data directory: `active/{call}/` holds calls being recorded (only encrypted work files and the
//! manifest); finished calls and events go to the outbox (`outbox/`, see `crate::outbox`), which delivers
//! them — by default to `uplink/`, laid out like the bucket, and `uplink/events.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use airlock_outbox::SpoolError;
use serde::Serialize;

use crate::outbox::Outbox;

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    outbox: Outbox,
}

impl DataDir {
    /// Creates the layout below `root` if needed; finished calls and events go to `outbox`.
    pub fn open(root: &Path, outbox: Outbox) -> std::io::Result<DataDir> {
        let data_dir = DataDir {
            root: root.to_path_buf(),
            outbox,
        };
        std::fs::create_dir_all(data_dir.active_root())?;
        Ok(data_dir)
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn active_root(&self) -> PathBuf {
        self.root.join("active")
    }

    pub fn active_call(&self, call: &str) -> PathBuf {
        self.active_root().join(call)
    }

    /// Hands a finished call in `active/` to the outbox with its `evt/call/ended` event (manifest last).
    pub fn publish(&self, call: &str, started_at: &str, ended: &impl Serialize) -> Result<usize, SpoolError> {
        self.outbox
            .publish_call(&self.active_call(call), call, started_at, ended)
    }

    /// Spools one event under `topic` (e.g. `evt/call/ended`).
    pub fn append_event(&self, topic: &str, event: &impl Serialize) -> Result<(), SpoolError> {
        self.outbox.event(topic, event)
    }
}

/// Writes `value` as pretty JSON to `path` atomically (temp file, fsync, rename).
pub fn write_json_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomically(path, &text)
}

/// Writes `bytes` to `path` atomically: temp file beside it, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = std::path::PathBuf::from(temp);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
