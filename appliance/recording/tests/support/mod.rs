//! Shared by the integration tests: a scratch directory with a development identity, and decryption with
//! the stock `age` CLI (missing CLI = test failure, never a skip).

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_recording::{DevIdentity, Recipient};

/// A temporary directory holding `identity.txt` for a fresh development identity.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub identity_file: PathBuf,
    pub recipients: Vec<Recipient>,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("temporary directory");
        let identity = DevIdentity::generate().expect("identity");
        let identity_file = dir.path().join("identity.txt");
        std::fs::write(&identity_file, identity.to_identity_file()).expect("write identity file");
        Scratch {
            recipients: vec![identity.recipient()],
            identity_file,
            dir,
        }
    }

    /// A fresh directory for one recording.
    pub fn recording_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("recording directory");
        dir
    }

    pub fn decrypt(&self, file: &Path) -> Vec<u8> {
        decrypt_with(&self.identity_file, file)
    }
}

/// `age -d -i identity file`; panics with the CLI's message on failure.
pub fn decrypt_with(identity_file: &Path, file: &Path) -> Vec<u8> {
    let output = match Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity_file)
        .arg(file)
        .output()
    {
        Ok(output) => output,
        Err(error) => panic!(
            "the stock `age` CLI is required for these tests and could not be run ({error}); \
             install it with `apt-get install -y age`"
        ),
    };
    assert!(
        output.status.success(),
        "age -d failed for {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Checks the RIFF and data sizes against the bytes present and returns the samples.
pub fn samples_of_consistent_wav(wav: &[u8]) -> Vec<i16> {
    assert!(wav.len() >= 44, "WAV shorter than its header");
    let riff = u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize;
    let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
    assert_eq!(riff, wav.len() - 8, "RIFF size");
    assert_eq!(data, wav.len() - 44, "data size");
    airlock_media::wav::parse(wav).expect("valid WAV").samples()
}

/// A deterministic, non-repeating-looking test signal.
pub fn signal(start: u64, len: usize) -> Vec<i16> {
    (start..start + len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as i16)
        .collect()
}
