//! The appliance's checkpoint signing key (Ed25519, ring) and the public keys a verifier trusts.
//!
//! The secret key is a PKCS#8 v2 DER file, mode 0600, created on first use by writing a temporary file,
//! fsyncing it, renaming it into place and fsyncing the directory, so a crash leaves either no key or the
//! whole key. Next to it, `<key>.pub` holds the public key as 64 hex digits and a newline (rewritten from
//! the secret key whenever it is missing or differs); that file is what `airlock audit verify --public-key`
//! reads. One process owns the key file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// Bytes of SHA-256 (of the raw public key) that make a key id.
const KEY_ID_BYTES: usize = 8;

/// Key file failures; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot generate an Ed25519 key (system random source failed)")]
    Generate,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KeyError + use<> {
    let path = path.to_path_buf();
    move |source| KeyError::Io { op, path, source }
}

/// The key checkpoints are signed with.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from PKCS#8 v2 DER (what [`load_or_create_signing_key`] stores).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|error| format!("not an Ed25519 PKCS#8 v2 key: {error}"))?;
        let raw: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "Ed25519 public key is not 32 bytes".to_string())?;
        Ok(SigningKey {
            pair,
            public: PublicKey(raw),
        })
    }

    /// A fresh key and its PKCS#8 v2 DER.
    pub fn generate() -> Result<(SigningKey, Vec<u8>), KeyError> {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let key = SigningKey::from_pkcs8(der.as_ref()).map_err(|_| KeyError::Generate)?;
        Ok((key, der.as_ref().to_vec()))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// A raw Ed25519 public key (32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses the `.pub` text: 64 hex digits, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        let bytes = hex::decode(text).map_err(|_| "not a hex Ed25519 public key".to_string())?;
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| format!("{} bytes; an Ed25519 public key has 32", bytes.len()))?;
        Ok(PublicKey(raw))
    }

    /// Reads a `.pub` file.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = fs::read_to_string(path).map_err(io_error("read", path))?;
        PublicKey::parse(&text).map_err(|reason| KeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The `.pub` text: 64 hex digits and a newline.
    pub fn to_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// The first 8 bytes of the SHA-256 of the raw key, in hex: what a checkpoint's `key_id` names.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..KEY_ID_BYTES])
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// `<path>.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// Loads the signing key at `path`, creating it (0600, atomically) if there is none, and makes sure
/// `<path>.pub` holds its public key.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let key = match fs::read(path) {
        Ok(der) => SigningKey::from_pkcs8(&der).map_err(|reason| KeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let (key, der) = SigningKey::generate()?;
            write_atomically(path, &der, 0o600)?;
            key
        }
        Err(error) => return Err(io_error("read", path)(error)),
    };
    let public_path = public_key_path(path);
    let current = fs::read_to_string(&public_path).ok();
    let text = key.public_key().to_text();
    if current.as_deref() != Some(text.as_str()) {
        write_atomically(&public_path, text.as_bytes(), 0o644)?;
    }
    Ok(key)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: temporary file, fsync,
/// rename, directory fsync.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let mut partial = path.as_os_str().to_os_string();
    partial.push(".tmp");
    let partial = PathBuf::from(partial);
    // A leftover from a crash before the rename: its content never counted.
    match fs::remove_file(&partial) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error("remove", &partial)(error)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .map_err(io_error("create", &partial))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &partial))?;
    fs::rename(&partial, path).map_err(io_error("rename into", path))?;
    File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync directory", &dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::Scratch;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_loaded() {
        let scratch = Scratch::new();
        let path = scratch.0.join("keys").join("audit.key");
        let first = load_or_create_signing_key(&path).expect("create");
        let mode = fs::metadata(&path).expect("key file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create_signing_key(&path).expect("load");
        assert_eq!(first.public_key(), second.public_key());
        let public = PublicKey::load(&public_key_path(&path)).expect("pub file");
        assert_eq!(&public, first.public_key());
        assert_eq!(public.key_id().len(), 16);

        // A deleted .pub comes back.
        fs::remove_file(public_key_path(&path)).expect("remove pub");
        load_or_create_signing_key(&path).expect("load");
        assert_eq!(PublicKey::load(&public_key_path(&path)).expect("pub"), public);

        let signature = first.sign(b"message");
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"messagE", &signature));
    }

    #[test]
    fn invalid_files_are_named() {
        let scratch = Scratch::new();
        let path = scratch.0.join("audit.key");
        fs::write(&path, b"not a key").expect("write");
        let error = load_or_create_signing_key(&path).expect_err("invalid key");
        assert!(error.to_string().contains("audit.key"), "{error}");
        assert!(error.to_string().contains("PKCS#8"), "{error}");

        let public = scratch.0.join("other.pub");
        fs::write(&public, "abcd\n").expect("write");
        let error = PublicKey::load(&public).expect_err("short key");
        assert!(error.to_string().contains("other.pub"), "{error}");
        let error = PublicKey::load(&scratch.0.join("missing.pub")).expect_err("missing");
        assert!(error.to_string().contains("missing.pub"), "{error}");
    }
}
