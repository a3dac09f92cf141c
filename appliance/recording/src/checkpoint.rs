//! The files of a recording in progress and the checkpoint record that makes it recoverable.
//!
//! A recording directory holds, while a call runs:
//! - `recording.body`: sealed, full, non-final STREAM chunks 1..=N, written at fixed offsets;
//! - `recording.checkpoint`: replaced atomically (temp file, fsync, rename, fsync directory) at every
//!   checkpoint. It holds the age header, the payload nonce, chunk 0 sealed with the current WAV sizes, the
//!   current final chunk (the partial tail, sealed with the last flag), N, and the sample count.
//!
//! Its framing is plaintext but reveals only lengths and counters (all derivable from the finished file):
//! `MAGIC`, block align (u16), data bytes (u64), body chunks N (u64), then three length-prefixed (u32) byte
//! strings — header, chunk 0, final chunk (empty when chunk 0 is the final chunk) — with the 16-byte
//! payload nonce after the header, and a SHA-256 of everything before it. Integers are little-endian.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::age::{PAYLOAD_NONCE_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE};
use crate::error::RecordingError;

/// The name of the finished recording inside a recording directory.
pub const RECORDING_FILE_NAME: &str = "recording.wav.age";
const FINAL_TEMP_FILE: &str = "recording.wav.age.tmp";
const BODY_FILE: &str = "recording.body";
const CHECKPOINT_FILE: &str = "recording.checkpoint";
const CHECKPOINT_TEMP_FILE: &str = "recording.checkpoint.tmp";

const MAGIC: &[u8; 8] = b"ALRCKPT1";
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Where the files of one recording live.
#[derive(Debug, Clone)]
pub(crate) struct RecordingFiles {
    pub(crate) dir: PathBuf,
}

impl RecordingFiles {
    pub(crate) fn new(dir: &Path) -> RecordingFiles {
        RecordingFiles {
            dir: dir.to_path_buf(),
        }
    }
    pub(crate) fn final_file(&self) -> PathBuf {
        self.dir.join(RECORDING_FILE_NAME)
    }
    pub(crate) fn final_temp_file(&self) -> PathBuf {
        self.dir.join(FINAL_TEMP_FILE)
    }
    pub(crate) fn body(&self) -> PathBuf {
        self.dir.join(BODY_FILE)
    }
    pub(crate) fn checkpoint(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }
    fn checkpoint_temp(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_TEMP_FILE)
    }

    /// Makes renames and removals in the directory durable.
    pub(crate) fn sync_dir(&self) -> Result<(), RecordingError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(RecordingError::io("sync directory", &self.dir))
    }

    /// Replaces the checkpoint atomically and durably.
    pub(crate) fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RecordingError> {
        let temp = self.checkpoint_temp();
        let mut file = File::create(&temp).map_err(RecordingError::io("create", &temp))?;
        file.write_all(&checkpoint.encode())
            .map_err(RecordingError::io("write", &temp))?;
        file.sync_all().map_err(RecordingError::io("sync", &temp))?;
        drop(file);
        let target = self.checkpoint();
        std::fs::rename(&temp, &target).map_err(RecordingError::io("rename into", &target))?;
        self.sync_dir()
    }

    /// The last checkpoint, or `None` when the directory has none (nothing in progress).
    pub(crate) fn read_checkpoint(&self) -> Result<Option<Checkpoint>, RecordingError> {
        let path = self.checkpoint();
        match std::fs::read(&path) {
            Ok(bytes) => Checkpoint::decode(&bytes)
                .map(Some)
                .map_err(|reason| RecordingError::CorruptCheckpoint { path, reason }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(RecordingError::io("read", &path)(error)),
        }
    }

    /// Removes the work files once the final file is durable; the checkpoint goes last because its
    /// presence is what marks a recording as unfinished.
    pub(crate) fn remove_work_files(&self) -> Result<(), RecordingError> {
        for path in [
            self.body(),
            self.checkpoint_temp(),
            self.final_temp_file(),
            self.checkpoint(),
        ] {
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RecordingError::io("remove", &path)(error));
                }
                _ => {}
            }
        }
        self.sync_dir()
    }
}

/// Everything needed to assemble the final file without any key (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) block_align: u16,
    pub(crate) data_bytes: u64,
    pub(crate) body_chunks: u64,
    pub(crate) header: Vec<u8>,
    pub(crate) payload_nonce: [u8; PAYLOAD_NONCE_SIZE],
    pub(crate) first_chunk: Vec<u8>,
    /// Empty when `first_chunk` is the final chunk.
    pub(crate) final_chunk: Vec<u8>,
}

impl Checkpoint {
    /// Bytes of the body file this checkpoint accounts for.
    pub(crate) fn body_bytes(&self) -> u64 {
        self.body_chunks.saturating_mul(SEALED_CHUNK_SIZE as u64)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(96 + self.header.len() + self.first_chunk.len() + self.final_chunk.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.block_align.to_le_bytes());
        out.extend_from_slice(&self.data_bytes.to_le_bytes());
        out.extend_from_slice(&self.body_chunks.to_le_bytes());
        push_prefixed(&mut out, &self.header);
        out.extend_from_slice(&self.payload_nonce);
        push_prefixed(&mut out, &self.first_chunk);
        push_prefixed(&mut out, &self.final_chunk);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Checkpoint, &'static str> {
        let digest_at = bytes.len().checked_sub(32).ok_or("too short")?;
        let (content, digest) = bytes.split_at(digest_at);
        if Sha256::digest(content).as_slice() != digest {
            return Err("checksum mismatch");
        }
        let mut reader = Reader { rest: content };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err("not a recording checkpoint");
        }
        let block_align = u16::from_le_bytes(reader.array()?);
        let data_bytes = u64::from_le_bytes(reader.array()?);
        let body_chunks = u64::from_le_bytes(reader.array()?);
        let header = reader.prefixed(MAX_HEADER_BYTES)?.to_vec();
        let payload_nonce = reader.array()?;
        let first_chunk = reader.prefixed(SEALED_CHUNK_SIZE)?.to_vec();
        let final_chunk = reader.prefixed(SEALED_CHUNK_SIZE)?.to_vec();
        if !reader.rest.is_empty() {
            return Err("trailing bytes");
        }
        if block_align == 0 || !header.starts_with(b"age-encryption.org/v1\n") {
            return Err("invalid header fields");
        }
        if first_chunk.len() < TAG_SIZE || (!final_chunk.is_empty() && final_chunk.len() <= TAG_SIZE) {
            return Err("invalid chunk sizes");
        }
        if final_chunk.is_empty() && body_chunks > 0 {
            return Err("body chunks without a final chunk");
        }
        Ok(Checkpoint {
            block_align,
            data_bytes,
            body_chunks,
            header,
            payload_nonce,
            first_chunk,
            final_chunk,
        })
    }
}

fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by MAX_HEADER_BYTES / SEALED_CHUNK_SIZE, far below u32::MAX.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        if self.rest.len() < len {
            return Err("truncated");
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        self.take(N)?.try_into().map_err(|_| "truncated")
    }

    fn prefixed(&mut self, max: usize) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(u32::from_le_bytes(self.array()?)).map_err(|_| "length too large")?;
        if len > max {
            return Err("length too large");
        }
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            block_align: 4,
            data_bytes: 1234,
            body_chunks: 2,
            header: b"age-encryption.org/v1\n-> X25519 abc\n--- mac\n".to_vec(),
            payload_nonce: [9; 16],
            first_chunk: vec![1; 100],
            final_chunk: vec![2; 50],
        }
    }

    #[test]
    fn round_trips() {
        let checkpoint = sample();
        assert_eq!(Checkpoint::decode(&checkpoint.encode()), Ok(checkpoint));
    }

    #[test]
    fn rejects_every_truncation_and_bit_flip() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..len]).is_err());
        }
        for index in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[index] ^= 1;
            assert!(Checkpoint::decode(&flipped).is_err());
        }
    }
}
