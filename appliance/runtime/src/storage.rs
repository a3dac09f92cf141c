//! The data directory: `active/{call}/` holds calls being recorded (only encrypted work files and the
//! manifest), `uplink/{call}/` holds finished calls laid out as they will be uploaded, and
//! `uplink/events.jsonl` is the local event log (one JSON object per line). Finished calls move from
//! `active/` to `uplink/` with one rename, so a crash never leaves half a call in `uplink/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the layout below `root` if needed.
    pub fn open(root: &Path) -> std::io::Result<DataDir> {
        let data_dir = DataDir {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(data_dir.active_root())?;
        std::fs::create_dir_all(data_dir.uplink_root())?;
        Ok(data_dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn active_root(&self) -> PathBuf {
        self.root.join("active")
    }

    pub fn uplink_root(&self) -> PathBuf {
        self.root.join("uplink")
    }

    pub fn active_call(&self, call: &str) -> PathBuf {
        self.active_root().join(call)
    }

    /// Moves a finished call from `active/` to `uplink/`.
    pub fn publish(&self, call: &str) -> std::io::Result<PathBuf> {
        let destination = self.uplink_root().join(call);
        std::fs::rename(self.active_call(call), &destination)?;
        sync_dir(&self.uplink_root())?;
        Ok(destination)
    }

    /// Appends one event line to `uplink/events.jsonl` and syncs it.
    pub fn append_event(&self, event: &impl Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.uplink_root().join("events.jsonl"))?;
        file.write_all(&line)?;
        file.sync_data()
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
