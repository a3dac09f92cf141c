//! The age v1 file format (<https://age-encryption.org/v1>), encrypt side only: a fresh file key, the
//! header with one X25519 stanza per recipient and its HMAC, the payload key, and STREAM chunk sealing.
//! Written from the specification; the crate never holds an identity that could decrypt what it writes.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::RecordingError;
use crate::keys::Recipient;

/// Plaintext bytes per STREAM chunk; every chunk but the last is exactly this long.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;
/// Poly1305 tag appended to every chunk.
pub(crate) const TAG_SIZE: usize = 16;
/// On-disk size of a full chunk.
pub(crate) const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_SIZE;
/// Random nonce written between the header and the first chunk.
pub(crate) const PAYLOAD_NONCE_SIZE: usize = 16;

const VERSION_LINE: &str = "age-encryption.org/v1\n";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const COLUMNS: usize = 64;

/// Fills a fixed-size array from the operating system's random number generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, RecordingError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|_| RecordingError::Randomness)?;
    Ok(bytes)
}

/// HKDF-SHA256 with a 32-byte output.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, RecordingError> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm.as_mut_slice())
        .map_err(|_| RecordingError::Encryption("deriving a key"))?;
    Ok(okm)
}

/// Standard base64 without padding, as age stanzas and the MAC use it.
pub(crate) fn base64_unpadded(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// The start of an age file: header (stanzas and MAC line) and the payload nonce, plus the cipher for the
/// payload chunks. The file key itself is dropped (and zeroed) as soon as these are derived.
pub(crate) struct Encryption {
    /// Header bytes from the version line through the MAC line's newline.
    pub(crate) header: Vec<u8>,
    pub(crate) payload_nonce: [u8; PAYLOAD_NONCE_SIZE],
    pub(crate) payload: PayloadCipher,
}

impl Encryption {
    /// Draws a fresh file key and payload nonce and wraps the key to every recipient.
    pub(crate) fn start(recipients: &[Recipient]) -> Result<Self, RecordingError> {
        if recipients.is_empty() {
            return Err(RecordingError::NoRecipients);
        }
        let file_key = random_bytes::<16>()?;
        let mut header = String::from(VERSION_LINE);
        for recipient in recipients {
            header.push_str(&x25519_stanza(&file_key, recipient)?);
        }
        header.push_str("---");
        let mac_key = hkdf_sha256(&[], file_key.as_slice(), b"header")?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(mac_key.as_slice())
            .map_err(|_| RecordingError::Encryption("keying the header MAC"))?;
        mac.update(header.as_bytes());
        let tag = mac.finalize().into_bytes();
        header.push(' ');
        header.push_str(&base64_unpadded(&tag));
        header.push('\n');
        let payload_nonce = *random_bytes::<PAYLOAD_NONCE_SIZE>()?;
        let payload_key = hkdf_sha256(&payload_nonce, file_key.as_slice(), b"payload")?;
        let payload = PayloadCipher {
            cipher: ChaCha20Poly1305::new(&Key::from(*payload_key)),
        };
        Ok(Encryption {
            header: header.into_bytes(),
            payload_nonce,
            payload,
        })
    }
}

/// One `-> X25519` stanza: the file key wrapped for `recipient` with a fresh ephemeral key.
fn x25519_stanza(file_key: &[u8; 16], recipient: &Recipient) -> Result<String, RecordingError> {
    let ephemeral = StaticSecret::from(*random_bytes::<32>()?);
    let ephemeral_share = PublicKey::from(&ephemeral);
    let recipient_key = PublicKey::from(*recipient.public_key());
    let shared = ephemeral.diffie_hellman(&recipient_key);
    if !shared.was_contributory() {
        return Err(RecordingError::InvalidRecipient("the key is a low-order point"));
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral_share.as_bytes());
    salt[32..].copy_from_slice(recipient.public_key());
    let wrap_key = hkdf_sha256(&salt, shared.as_bytes(), X25519_INFO)?;
    let wrapped = ChaCha20Poly1305::new(&Key::from(*wrap_key))
        .encrypt(&Nonce::default(), file_key.as_slice())
        .map_err(|_| RecordingError::Encryption("wrapping the file key"))?;
    let mut stanza = format!("-> X25519 {}\n", base64_unpadded(ephemeral_share.as_bytes()));
    push_wrapped_lines(&mut stanza, &base64_unpadded(&wrapped));
    Ok(stanza)
}

/// Appends `text` in lines of 64 columns; the last line is always shorter than 64 (empty if need be),
/// which is how an age stanza body ends.
fn push_wrapped_lines(out: &mut String, text: &str) {
    let mut rest = text;
    loop {
        let (line, after) = rest.split_at(rest.len().min(COLUMNS));
        out.push_str(line);
        out.push('\n');
        if line.len() < COLUMNS {
            return;
        }
        rest = after;
    }
}

/// ChaCha20-Poly1305 under the payload key, sealing STREAM chunks.
pub(crate) struct PayloadCipher {
    cipher: ChaCha20Poly1305,
}

impl PayloadCipher {
    /// Seals chunk number `counter`; `last` marks the final chunk of the file.
    pub(crate) fn seal_chunk(
        &self,
        counter: u64,
        last: bool,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RecordingError> {
        let mut nonce = Nonce::default();
        nonce[3..11].copy_from_slice(&counter.to_be_bytes());
        nonce[11] = u8::from(last);
        self.cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| RecordingError::Encryption("sealing a payload chunk"))
    }
}

/// A complete binary age file holding `plaintext`, built in memory (for small messages).
pub(crate) fn encrypt_to_vec(recipients: &[Recipient], plaintext: &[u8]) -> Result<Vec<u8>, RecordingError> {
    let encryption = Encryption::start(recipients)?;
    let mut out = encryption.header;
    out.extend_from_slice(&encryption.payload_nonce);
    let chunk_count = plaintext.len().div_ceil(CHUNK_SIZE).max(1);
    for index in 0..chunk_count {
        let start = index * CHUNK_SIZE;
        let chunk = plaintext
            .get(start..plaintext.len().min(start + CHUNK_SIZE))
            .unwrap_or_default();
        let sealed = encryption
            .payload
            .seal_chunk(index as u64, index + 1 == chunk_count, chunk)?;
        out.extend_from_slice(&sealed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_bodies_always_end_with_a_short_line() {
        let mut out = String::new();
        push_wrapped_lines(&mut out, &"A".repeat(64));
        assert_eq!(out, format!("{}\n\n", "A".repeat(64)));
        let mut out = String::new();
        push_wrapped_lines(&mut out, &"B".repeat(43));
        assert_eq!(out, format!("{}\n", "B".repeat(43)));
        let mut out = String::new();
        push_wrapped_lines(&mut out, "");
        assert_eq!(out, "\n");
    }

    #[test]
    fn chunk_nonces_differ_by_counter_and_last_flag() {
        let cipher = PayloadCipher {
            cipher: ChaCha20Poly1305::new(&Key::from([7u8; 32])),
        };
        let a = cipher.seal_chunk(0, false, b"x").unwrap();
        let b = cipher.seal_chunk(0, true, b"x").unwrap();
        let c = cipher.seal_chunk(1, false, b"x").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 1 + TAG_SIZE);
    }
}
