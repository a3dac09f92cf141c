//! `RecordingWriter`: one call's audio as a PCM16 WAV, encrypted to the recipients as it is written, with
//! a durable checkpoint the caller requests at least once a second.
//!
//! The plaintext is `WAV header ‖ samples`, cut into 64 KiB STREAM chunks. Chunk 0 (which contains the WAV
//! header) stays in memory for the whole call so it can be sealed again with the current sizes; full chunks
//! after it go to the body file as soon as a later byte proves they are not the last; the bytes after the
//! last full chunk (the tail, 1..=64 KiB, or nothing while everything fits in chunk 0) stay in memory and
//! are sealed as the final chunk at every checkpoint. No plaintext ever reaches the disk.
//!
//! Chunk 0 and the open final chunk are sealed more than once under the same nonce. That is safe here:
//! every new version of such a chunk extends the previous one and differs from it only in the WAV size
//! fields, whose values follow from the file length anyway, so no keystream byte ever covers two different
//! secret plaintext bytes. (age offers no sender authentication, so Poly1305 key reuse gives an attacker
//! nothing that encrypting a new file to the public recipients would not; the manifest's signed SHA-256
//! pins the finished file.)

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use airlock_media::wav;
use zeroize::Zeroize;

use crate::age::{CHUNK_SIZE, Encryption, SEALED_CHUNK_SIZE};
use crate::checkpoint::{Checkpoint, RecordingFiles};
use crate::error::RecordingError;
use crate::finalise::{FinishedRecording, assemble};
use crate::keys::Recipient;

/// Largest sample payload a WAV can describe: the RIFF size (data + 36) must fit in 32 bits.
const MAX_DATA_BYTES: u64 = u32::MAX as u64 - (wav::HEADER_LEN as u64 - 8);

/// The PCM layout of a recording: 16-bit little-endian samples, one channel per leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Frames per second.
    pub sample_rate: u32,
    /// Channels per frame (one per leg), at least 1.
    pub channels: u16,
}

impl WavFormat {
    fn block_align(self) -> u16 {
        self.channels.saturating_mul(2)
    }
}

/// Writes one encrypted recording into a directory (see the module docs for the layout).
/// Dropping it without `finish` leaves an interrupted recording that `recover` finalises.
pub struct RecordingWriter {
    files: RecordingFiles,
    format: WavFormat,
    encryption: Encryption,
    body: File,
    /// Plaintext of chunk 0, WAV header included.
    first_chunk: Vec<u8>,
    /// Plaintext after the last chunk written to the body; may exceed a chunk until the next flush.
    tail: Vec<u8>,
    body_chunks: u64,
    data_bytes: u64,
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("dir", &self.files.dir)
            .field("format", &self.format)
            .field("data_bytes", &self.data_bytes)
            .finish_non_exhaustive()
    }
}

impl RecordingWriter {
    /// Starts a recording in `dir` (which must exist) and writes a first checkpoint, so even an empty
    /// recording is recoverable. Fails if the directory already holds a recording or an interrupted one.
    pub fn create(
        dir: &Path,
        recipients: &[Recipient],
        format: WavFormat,
    ) -> Result<RecordingWriter, RecordingError> {
        if format.channels == 0 || format.sample_rate == 0 {
            return Err(RecordingError::InvalidAudio(
                "sample rate and channel count must be at least 1",
            ));
        }
        let files = RecordingFiles::new(dir);
        for existing in [files.final_file(), files.checkpoint()] {
            if existing.exists() {
                return Err(RecordingError::AlreadyExists { path: existing });
            }
        }
        let encryption = Encryption::start(recipients)?;
        let body_path = files.body();
        let body = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&body_path)
            .map_err(RecordingError::io("create", &body_path))?;
        let mut first_chunk = Vec::with_capacity(CHUNK_SIZE);
        first_chunk.extend_from_slice(&wav::header(format.sample_rate, format.channels, 0));
        let mut writer = RecordingWriter {
            files,
            format,
            encryption,
            body,
            first_chunk,
            tail: Vec::new(),
            body_chunks: 0,
            data_bytes: 0,
        };
        writer.checkpoint()?;
        Ok(writer)
    }

    /// Appends interleaved frames (`channels` samples each). Full chunks that are known not to be the last
    /// are sealed and written to the body file; the rest stays in memory until the next checkpoint.
    pub fn write_interleaved(&mut self, samples: &[i16]) -> Result<(), RecordingError> {
        if !samples.len().is_multiple_of(usize::from(self.format.channels)) {
            return Err(RecordingError::InvalidAudio(
                "sample count is not a whole number of frames",
            ));
        }
        let added = (samples.len() as u64).saturating_mul(2);
        let data_bytes = self.data_bytes.saturating_add(added);
        if data_bytes > MAX_DATA_BYTES {
            return Err(RecordingError::TooLong);
        }
        let mut bytes = samples.iter().flat_map(|sample| sample.to_le_bytes());
        let room = CHUNK_SIZE - self.first_chunk.len();
        self.first_chunk.extend(bytes.by_ref().take(room));
        self.tail.extend(bytes);
        self.data_bytes = data_bytes;
        self.flush_full_chunks()
    }

    /// Seals every full chunk of the tail that has at least one byte after it and writes it to the body
    /// at its fixed offset (so a failed write is simply retried by the next call).
    fn flush_full_chunks(&mut self) -> Result<(), RecordingError> {
        let mut flushed = 0;
        let mut result = Ok(());
        while self.tail.len() - flushed > CHUNK_SIZE {
            let counter = self.body_chunks + 1;
            let plaintext = self.tail.get(flushed..flushed + CHUNK_SIZE).unwrap_or_default();
            let written = self
                .encryption
                .payload
                .seal_chunk(counter, false, plaintext)
                .and_then(|sealed| {
                    let offset = self.body_chunks.saturating_mul(SEALED_CHUNK_SIZE as u64);
                    self.body
                        .write_all_at(&sealed, offset)
                        .map_err(RecordingError::io("write", &self.files.body()))
                });
            if let Err(error) = written {
                result = Err(error);
                break;
            }
            self.body_chunks = counter;
            flushed += CHUNK_SIZE;
        }
        self.tail[..flushed].zeroize();
        self.tail.drain(..flushed);
        result
    }

    /// Makes everything written so far durable: the body is synced, then the checkpoint replaced.
    pub fn checkpoint(&mut self) -> Result<(), RecordingError> {
        self.flush_full_chunks()?;
        self.body
            .sync_data()
            .map_err(RecordingError::io("sync", &self.files.body()))?;
        // MAX_DATA_BYTES keeps the size within the header's 32-bit field.
        let header = wav::header(
            self.format.sample_rate,
            self.format.channels,
            u32::try_from(self.data_bytes).unwrap_or(u32::MAX),
        );
        self.first_chunk[..wav::HEADER_LEN].copy_from_slice(&header);
        let payload = &self.encryption.payload;
        let first_is_final = self.tail.is_empty();
        let checkpoint = Checkpoint {
            block_align: self.format.block_align(),
            data_bytes: self.data_bytes,
            body_chunks: self.body_chunks,
            header: self.encryption.header.clone(),
            payload_nonce: self.encryption.payload_nonce,
            first_chunk: payload.seal_chunk(0, first_is_final, &self.first_chunk)?,
            final_chunk: if first_is_final {
                Vec::new()
            } else {
                payload.seal_chunk(self.body_chunks + 1, true, &self.tail)?
            },
        };
        self.files.write_checkpoint(&checkpoint)
    }

    /// Checkpoints, assembles `recording.wav.age` atomically from the work files and removes them.
    pub fn finish(mut self) -> Result<FinishedRecording, RecordingError> {
        self.checkpoint()?;
        let files = self.files.clone();
        drop(self);
        assemble(&files)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.data_bytes / u64::from(self.format.block_align())
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        self.first_chunk.zeroize();
        self.tail.zeroize();
    }
}
