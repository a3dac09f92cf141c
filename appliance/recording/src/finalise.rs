//! Turning work files into `recording.wav.age`: after a normal finish and, with the same code, after a
//! crash. Needs no key — the checkpoint already holds every sealed piece the final file lacks.
//!
//! Final file = header ‖ payload nonce ‖ chunk 0 ‖ body chunks 1..=N ‖ final chunk, where N is what the
//! checkpoint accounts for: body bytes past it (a crash between a body write and the next checkpoint) are
//! ignored, which loses at most the audio since that checkpoint.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::checkpoint::RecordingFiles;
use crate::error::RecordingError;

/// A finalised recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRecording {
    /// `recording.wav.age` in the recording directory.
    pub path: PathBuf,
    /// SHA-256 of the encrypted file, lowercase hex.
    pub sha256: String,
    /// Size of the encrypted file.
    pub bytes: u64,
    /// Audio frames (samples per channel) in the WAV.
    pub frames: u64,
}

/// Finalises an interrupted recording in `dir` from its last checkpoint. `Ok(None)` when the directory
/// holds no unfinished recording.
pub fn recover(dir: &Path) -> Result<Option<FinishedRecording>, RecordingError> {
    let files = RecordingFiles::new(dir);
    if files.read_checkpoint()?.is_none() {
        return Ok(None);
    }
    assemble(&files).map(Some)
}

/// Directories directly under `root` that hold an unfinished recording (for `recover`).
pub fn find_interrupted(root: &Path) -> Result<Vec<PathBuf>, RecordingError> {
    let entries = std::fs::read_dir(root).map_err(RecordingError::io("list", root))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(RecordingError::io("list", root))?;
        let dir = entry.path();
        if dir.is_dir() && RecordingFiles::new(&dir).checkpoint().is_file() {
            found.push(dir);
        }
    }
    found.sort();
    Ok(found)
}

/// Builds the final file from the checkpoint and the body, atomically, then removes the work files.
/// Idempotent: if a crash interrupts it, running it again produces the same file.
pub(crate) fn assemble(files: &RecordingFiles) -> Result<FinishedRecording, RecordingError> {
    let checkpoint_path = files.checkpoint();
    let checkpoint = files
        .read_checkpoint()?
        .ok_or_else(|| RecordingError::CorruptCheckpoint {
            path: checkpoint_path.clone(),
            reason: "missing",
        })?;
    let final_path = files.final_file();
    let frames = checkpoint.data_bytes / u64::from(checkpoint.block_align);
    if !files.body().exists() && final_path.exists() {
        // A previous assembly completed and was removing the work files.
        let (sha256, bytes) = hash_file(&final_path)?;
        files.remove_work_files()?;
        return Ok(FinishedRecording {
            path: final_path,
            sha256,
            bytes,
            frames,
        });
    }
    let temp_path = files.final_temp_file();
    let mut out =
        HashingWriter::new(File::create(&temp_path).map_err(RecordingError::io("create", &temp_path))?);
    let write = |out: &mut HashingWriter, bytes: &[u8]| {
        out.write(bytes).map_err(RecordingError::io("write", &temp_path))
    };
    write(&mut out, &checkpoint.header)?;
    write(&mut out, &checkpoint.payload_nonce)?;
    write(&mut out, &checkpoint.first_chunk)?;
    copy_body_prefix(files, checkpoint.body_bytes(), &mut out, &temp_path)?;
    write(&mut out, &checkpoint.final_chunk)?;
    let (file, sha256, bytes) = out.finish();
    file.sync_all().map_err(RecordingError::io("sync", &temp_path))?;
    drop(file);
    std::fs::rename(&temp_path, &final_path).map_err(RecordingError::io("rename into", &final_path))?;
    files.sync_dir()?;
    files.remove_work_files()?;
    Ok(FinishedRecording {
        path: final_path,
        sha256,
        bytes,
        frames,
    })
}

/// Copies the first `len` bytes of the body file (the chunks the checkpoint accounts for).
fn copy_body_prefix(
    files: &RecordingFiles,
    len: u64,
    out: &mut HashingWriter,
    out_path: &Path,
) -> Result<(), RecordingError> {
    let body_path = files.body();
    let body = match File::open(&body_path) {
        Ok(body) => body,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && len == 0 => return Ok(()),
        Err(error) => return Err(RecordingError::io("open", &body_path)(error)),
    };
    let actual = body
        .metadata()
        .map_err(RecordingError::io("inspect", &body_path))?
        .len();
    if actual < len {
        return Err(RecordingError::TruncatedBody {
            path: body_path,
            expected: len,
            actual,
        });
    }
    let mut reader = body.take(len);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = reader
            .read(&mut buffer)
            .map_err(RecordingError::io("read", &body_path))?;
        let Some(bytes) = buffer.get(..read).filter(|bytes| !bytes.is_empty()) else {
            return Ok(());
        };
        out.write(bytes).map_err(RecordingError::io("write", out_path))?;
    }
}

/// SHA-256 and byte count of an existing file.
fn hash_file(path: &Path) -> Result<(String, u64), RecordingError> {
    let mut file = File::open(path).map_err(RecordingError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(RecordingError::io("read", path))?;
        let Some(chunk) = buffer.get(..read).filter(|chunk| !chunk.is_empty()) else {
            break;
        };
        hasher.update(chunk);
        bytes += chunk.len() as u64;
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// A file writer that hashes and counts what passes through it.
struct HashingWriter {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn new(file: File) -> HashingWriter {
        HashingWriter {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn finish(self) -> (File, String, u64) {
        (self.file, hex::encode(self.hasher.finalize()), self.bytes)
    }
}
