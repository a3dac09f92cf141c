//! `seal_text`: short texts (PII fields of the manifest) as ASCII-armored age messages, the form
//! `age -d` accepts pasted or in a file: PEM-style lines of padded base64, 64 columns.

use base64::Engine;

use crate::age::encrypt_to_vec;
use crate::error::RecordingError;
use crate::keys::Recipient;

const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----\n";
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----\n";
const ARMOR_COLUMNS: usize = 64;

/// Encrypts `text` to every recipient and returns the armored age message.
pub fn seal_text(recipients: &[Recipient], text: &str) -> Result<String, RecordingError> {
    let sealed = encrypt_to_vec(recipients, text.as_bytes())?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(sealed);
    let mut armored = String::with_capacity(encoded.len() + encoded.len() / ARMOR_COLUMNS + 80);
    armored.push_str(ARMOR_BEGIN);
    // Base64 output is ASCII, so every 64-byte slice is a valid line.
    for line in encoded.as_bytes().chunks(ARMOR_COLUMNS) {
        armored.push_str(std::str::from_utf8(line).unwrap_or_default());
        armored.push('\n');
    }
    armored.push_str(ARMOR_END);
    Ok(armored)
}
