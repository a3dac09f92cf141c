//! airlock-recording: a call's audio as one PCM16 WAV (one channel per leg), encrypted in the age v1
//! format to X25519 recipients while it is written — no plaintext audio on disk, no key on the box that
//! could decrypt it — with checkpoints that let a restart finalise an interrupted recording.
//!
//! Modules: `age` (format primitives), `keys` (recipients, dev identity), `writer` (streaming writer),
//! `checkpoint` (work files and their record), `finalise` (final file assembly, recovery), `seal`
//! (armored texts), `interleave` (legs → frames). Pure apart from the filesystem; no async runtime.

mod age;
mod checkpoint;
mod error;
mod finalise;
mod interleave;
mod keys;
mod seal;
mod writer;

pub use checkpoint::RECORDING_FILE_NAME;
pub use error::RecordingError;
pub use finalise::{FinishedRecording, find_interrupted, recover};
pub use interleave::{DEFAULT_MAX_PENDING_FRAMES, Interleaver};
pub use keys::{DevIdentity, Recipient};
pub use seal::seal_text;
pub use writer::{RecordingWriter, WavFormat};
