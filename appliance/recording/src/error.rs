//! The one error type of this crate. Every variant names the file or the operation that failed; none carries
//! key material or audio.

use std::path::PathBuf;

/// Everything that can go wrong while parsing keys, encrypting, writing or finalising a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// Configuration: the text is not an `age1…` X25519 recipient.
    #[error("not an age X25519 recipient: {0}")]
    InvalidRecipient(&'static str),
    /// Configuration: the text holds no usable `AGE-SECRET-KEY-1…` line.
    #[error("not an age X25519 identity: {0}")]
    InvalidIdentity(&'static str),
    /// Configuration: encrypting needs at least one recipient.
    #[error("no recipients to encrypt to")]
    NoRecipients,
    /// Caller: the WAV format or the samples handed over do not fit together.
    #[error("invalid audio: {0}")]
    InvalidAudio(&'static str),
    /// Our limit: RIFF size fields are 32 bits, so one WAV holds at most 4 GiB of samples.
    #[error("the recording reached the 4 GiB WAV size limit")]
    TooLong,
    /// Platform: the operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Randomness,
    /// Internal: a cipher refused its input (only possible for absurd lengths).
    #[error("encryption failed while {0}")]
    Encryption(&'static str),
    /// Filesystem: `operation` on `path` failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Disk contents: a checkpoint file that is not one this crate wrote, or was damaged.
    #[error("checkpoint {path} is unusable: {reason}")]
    CorruptCheckpoint { path: PathBuf, reason: &'static str },
    /// Disk contents: the body file lost chunks that its checkpoint says were written.
    #[error("body file {path} holds {actual} bytes but its checkpoint accounts for {expected}")]
    TruncatedBody {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// Caller: a recording (or an interrupted one) already exists in the directory.
    #[error("{path} already exists; finish or recover the recording there first")]
    AlreadyExists { path: PathBuf },
}

impl RecordingError {
    /// Wraps an I/O error with the operation and the file it concerned.
    pub(crate) fn io(operation: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| RecordingError::Io {
            operation,
            path,
            source,
        }
    }
}
