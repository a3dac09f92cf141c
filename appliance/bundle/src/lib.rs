//! The site provisioning bundle: one file a site's security officer signs and a technician carries to the box on
//! removable media. It holds the site's configuration and the files it names (TLS certificates and keys, age
//! recipients, S3/MQTT credentials), a manifest naming the site and the appliance it is for, and an Ed25519
//! signature over the manifest. This crate owns the format — writing, parsing and verifying — without I/O;
//! `airlock provision` applies a verified bundle.
//!
//! Layout (all lengths in bytes, decimal ASCII):
//! ```text
//! AIRLOCK-BUNDLE 1\n
//! <manifest length>\n<manifest: JSON>
//! <signature: 128 hex digits>\n
//! <file 1 bytes><file 2 bytes>…          (in manifest order, lengths from the manifest)
//! ```
//! The signature covers the manifest bytes exactly; the manifest carries each file's length and SHA-256, so the
//! signature covers every byte of the bundle.

use std::collections::BTreeSet;

use airlock_audit::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first line of every bundle.
const MAGIC: &[u8] = b"AIRLOCK-BUNDLE 1\n";
/// Bounds a parser holds to before trusting anything: a manifest this long lists far more than a site needs.
const MAX_MANIFEST_BYTES: usize = 256 * 1024;
const MAX_FILES: usize = 256;
const MAX_PATH_BYTES: usize = 200;
/// The file every bundle carries: the site's airlock configuration.
pub const CONFIG_FILE: &str = "airlock.toml";
/// Where the applied manifest is kept beside the files: no bundle file may have this name.
pub const MANIFEST_FILE: &str = "bundle-manifest.json";

/// What a bundle says about itself; signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The site's id (as in `outbox.site`).
    pub site: String,
    /// The appliance's id at the site (as in `outbox.mqtt.appliance`).
    pub appliance: String,
    /// When it was made, `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC): a box refuses a bundle older than the one it has.
    pub created: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path inside the site directory: `[A-Za-z0-9._-]` components separated by `/`.
    pub path: String,
    pub bytes: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// Why a bundle is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not an Airlock site bundle (it does not start with \"AIRLOCK-BUNDLE 1\")")]
    NotABundle,
    #[error("the bundle is cut short or malformed: {0}")]
    Malformed(String),
    #[error("the bundle's manifest is invalid: {0}")]
    Manifest(String),
    #[error(
        "the bundle is not signed by a trusted provisioning key (signed by none of the {trusted} key(s) this image trusts)"
    )]
    Untrusted { trusted: usize },
    #[error("the bundle was altered after signing: {0}")]
    Tampered(String),
}

/// A bundle whose structure parsed; not yet trusted.
#[derive(Debug)]
pub struct Parsed<'a> {
    manifest_bytes: &'a [u8],
    signature: [u8; 64],
    pub manifest: Manifest,
    contents: Vec<&'a [u8]>,
}

/// A bundle signed by a trusted key with every file as signed.
#[derive(Debug)]
pub struct Verified<'a> {
    pub manifest: Manifest,
    /// The raw manifest, as signed (kept with the applied files).
    pub manifest_bytes: &'a [u8],
    /// The signing key's id (see `PublicKey::key_id`).
    pub key_id: String,
    pub files: Vec<(&'a FileEntry, &'a [u8])>,
}

/// Writes a bundle: `sign` turns the manifest bytes into an Ed25519 signature.
pub fn write(
    site: &str,
    appliance: &str,
    created: &str,
    files: &[(String, Vec<u8>)],
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, BundleError> {
    let manifest = Manifest {
        format: 1,
        site: site.to_string(),
        appliance: appliance.to_string(),
        created: created.to_string(),
        files: files
            .iter()
            .map(|(path, content)| FileEntry {
                path: path.clone(),
                bytes: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content)),
            })
            .collect(),
    };
    check_manifest(&manifest)?;
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|error| BundleError::Manifest(error.to_string()))?;
    let signature = sign(&manifest_bytes);
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(format!("{}\n", manifest_bytes.len()).as_bytes());
    out.extend_from_slice(&manifest_bytes);
    out.extend_from_slice(hex::encode(signature).as_bytes());
    out.push(b'\n');
    for (_, content) in files {
        out.extend_from_slice(content);
    }
    Ok(out)
}

/// Parses the structure; checks nothing about trust.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, BundleError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(BundleError::NotABundle)?;
    let (length, rest) = line(rest, 16, "manifest length")?;
    let length: usize = std::str::from_utf8(length)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| BundleError::Malformed("the manifest length is not a number".into()))?;
    if length > MAX_MANIFEST_BYTES {
        return Err(BundleError::Malformed(format!(
            "a {length}-byte manifest is larger than {MAX_MANIFEST_BYTES}"
        )));
    }
    if rest.len() < length {
        return Err(BundleError::Malformed("the manifest is cut short".into()));
    }
    let (manifest_bytes, rest) = rest.split_at(length);
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|error| BundleError::Manifest(error.to_string()))?;
    check_manifest(&manifest)?;
    let (signature_hex, mut rest) = line(rest, 129, "signature")?;
    let signature: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| BundleError::Malformed("the signature is not 128 hex digits".into()))?;
    let mut contents = Vec::with_capacity(manifest.files.len());
    for entry in &manifest.files {
        let bytes = usize::try_from(entry.bytes).unwrap_or(usize::MAX);
        if rest.len() < bytes {
            return Err(BundleError::Malformed(format!("{} is cut short", entry.path)));
        }
        let (content, tail) = rest.split_at(bytes);
        contents.push(content);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BundleError::Malformed(format!(
            "{} bytes after the last file",
            rest.len()
        )));
    }
    Ok(Parsed {
        manifest_bytes,
        signature,
        manifest,
        contents,
    })
}

impl<'a> Parsed<'a> {
    /// Checks the signature against the trusted keys, then every file against the signed manifest.
    pub fn verify(&'a self, trusted: &[PublicKey]) -> Result<Verified<'a>, BundleError> {
        let key = trusted
            .iter()
            .find(|key| key.verifies(self.manifest_bytes, &self.signature))
            .ok_or(BundleError::Untrusted {
                trusted: trusted.len(),
            })?;
        for (entry, content) in self.manifest.files.iter().zip(&self.contents) {
            if hex::encode(Sha256::digest(content)) != entry.sha256 {
                return Err(BundleError::Tampered(format!(
                    "{} does not match the signed manifest",
                    entry.path
                )));
            }
        }
        Ok(Verified {
            manifest: self.manifest.clone(),
            manifest_bytes: self.manifest_bytes,
            key_id: key.key_id(),
            files: self
                .manifest
                .files
                .iter()
                .zip(self.contents.iter().copied())
                .collect(),
        })
    }
}

/// One `\n`-terminated line of at most `max` bytes (without the newline).
fn line<'a>(bytes: &'a [u8], max: usize, what: &str) -> Result<(&'a [u8], &'a [u8]), BundleError> {
    let end = bytes
        .iter()
        .take(max + 1)
        .position(|&b| b == b'\n')
        .ok_or_else(|| BundleError::Malformed(format!("no {what} line")))?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

fn check_manifest(manifest: &Manifest) -> Result<(), BundleError> {
    let invalid = |why: String| Err(BundleError::Manifest(why));
    if manifest.format != 1 {
        return invalid(format!(
            "format {} (this airlock reads format 1)",
            manifest.format
        ));
    }
    for (key, value) in [("site", &manifest.site), ("appliance", &manifest.appliance)] {
        if value.is_empty()
            || value.len() > 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return invalid(format!(
                "{key} {value:?} is not an id (1–64 of A–Z a–z 0–9 . _ -)"
            ));
        }
    }
    if !is_timestamp(&manifest.created) {
        return invalid(format!(
            "created {:?} is not a UTC time as YYYY-MM-DDTHH:MM:SS.mmmZ",
            manifest.created
        ));
    }
    if manifest.files.len() > MAX_FILES {
        return invalid(format!("{} files (at most {MAX_FILES})", manifest.files.len()));
    }
    let mut seen = BTreeSet::new();
    for entry in &manifest.files {
        if !safe_path(&entry.path) {
            return invalid(format!(
                "file path {:?} is not a plain relative path ([A-Za-z0-9._-] components, none starting with .)",
                entry.path
            ));
        }
        if entry.path == MANIFEST_FILE {
            return invalid(format!("{MANIFEST_FILE} is a reserved name"));
        }
        if !seen.insert(entry.path.as_str()) {
            return invalid(format!("{} is listed twice", entry.path));
        }
        if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(format!("{}: the sha256 is not 64 hex digits", entry.path));
        }
    }
    if !seen.contains(CONFIG_FILE) {
        return invalid(format!("it carries no {CONFIG_FILE}"));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: fixed width, so later times sort later as text.
fn is_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 24
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'.',
            23 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

/// Fuzz entry: any bytes give a parsed bundle or a reason, never a panic; verifying against no key refuses.
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(parsed) = parse(data) {
        assert!(matches!(
            parsed.verify(&[]),
            Err(BundleError::Untrusted { trusted: 0 })
        ));
    }
}

#[cfg(test)]
mod tests;
