//! age X25519 keys as text: `Recipient` (an `age1…` public key from configuration) and `DevIdentity`, the
//! development-only key pair whose secret half (`AGE-SECRET-KEY-1…`) ends up in a file the runtime warns
//! about. Nothing else in the crate ever sees a secret key.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32, Hrp};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::age::random_bytes;
use crate::error::RecordingError;

const RECIPIENT_HRP: &str = "age";
const IDENTITY_HRP: &str = "age-secret-key-";

/// A public key recordings are encrypted to (`age1…`, bech32 of the 32-byte X25519 point).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    public_key: [u8; 32],
}

impl Recipient {
    /// Parses an `age1…` X25519 recipient (lowercase or uppercase bech32, not mixed).
    pub fn parse(text: &str) -> Result<Recipient, RecordingError> {
        let (hrp, bytes) =
            decode_bech32(text.trim()).ok_or(RecordingError::InvalidRecipient("not bech32"))?;
        if hrp != RECIPIENT_HRP {
            return Err(RecordingError::InvalidRecipient("does not start with age1"));
        }
        let public_key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| RecordingError::InvalidRecipient("the key is not 32 bytes"))?;
        Ok(Recipient { public_key })
    }

    pub(crate) fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }
}

impl FromStr for Recipient {
    type Err = RecordingError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Recipient::parse(text)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(RECIPIENT_HRP);
        bech32::encode_lower_to_fmt::<Bech32, _>(f, hrp, &self.public_key).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

/// A development X25519 identity: lets `age -d -i` decrypt what a box without configured recipients
/// recorded. Its Debug output shows only the recipient; the secret is zeroed on drop.
pub struct DevIdentity {
    secret: Zeroizing<[u8; 32]>,
    recipient: Recipient,
}

impl DevIdentity {
    /// Generates a fresh identity from the operating system's random number generator.
    pub fn generate() -> Result<DevIdentity, RecordingError> {
        Ok(DevIdentity::from_secret(random_bytes::<32>()?))
    }

    fn from_secret(secret: Zeroizing<[u8; 32]>) -> DevIdentity {
        let public = PublicKey::from(&StaticSecret::from(*secret));
        DevIdentity {
            secret,
            recipient: Recipient {
                public_key: public.to_bytes(),
            },
        }
    }

    /// Reads the first `AGE-SECRET-KEY-1…` line of an identity file (comments and blank lines skipped).
    pub fn from_identity_file(text: &str) -> Result<DevIdentity, RecordingError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or(RecordingError::InvalidIdentity("no key line"))?;
        let (hrp, bytes) = decode_bech32(line).ok_or(RecordingError::InvalidIdentity("not bech32"))?;
        let bytes = Zeroizing::new(bytes);
        if hrp != IDENTITY_HRP {
            return Err(RecordingError::InvalidIdentity(
                "does not start with AGE-SECRET-KEY-1",
            ));
        }
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| RecordingError::InvalidIdentity("the key is not 32 bytes"))?;
        Ok(DevIdentity::from_secret(Zeroizing::new(secret)))
    }

    /// The public half, to encrypt to.
    pub fn recipient(&self) -> Recipient {
        self.recipient.clone()
    }

    /// The secret key as age writes it: `AGE-SECRET-KEY-1…` (uppercase bech32).
    pub fn secret_key(&self) -> Zeroizing<String> {
        let hrp = Hrp::parse_unchecked(IDENTITY_HRP);
        let mut text = Zeroizing::new(String::new());
        // Writing into a String cannot fail, and the 32-byte key is far below bech32's length limit.
        let _ = bech32::encode_upper_to_fmt::<Bech32, _>(&mut *text, hrp, self.secret.as_slice());
        text
    }

    /// An identity file in the layout `age-keygen` writes, readable by `age -d -i`.
    pub fn to_identity_file(&self) -> String {
        format!(
            "# airlock DEVELOPMENT identity: whoever holds this file can decrypt every recording.\n\
             # public key: {}\n{}\n",
            self.recipient,
            self.secret_key().as_str()
        )
    }
}

impl fmt::Debug for DevIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdentity")
            .field("recipient", &self.recipient)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Bech32 (not bech32m) decoding: the human-readable part in lowercase and the data bytes.
fn decode_bech32(text: &str) -> Option<(String, Vec<u8>)> {
    let checked = CheckedHrpstring::new::<Bech32>(text).ok()?;
    Some((checked.hrp().to_lowercase(), checked.byte_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_its_file() {
        let identity = DevIdentity::generate().unwrap();
        let file = identity.to_identity_file();
        assert!(file.contains("AGE-SECRET-KEY-1"));
        let again = DevIdentity::from_identity_file(&file).unwrap();
        assert_eq!(again.recipient(), identity.recipient());
        let text = identity.recipient().to_string();
        assert!(text.starts_with("age1"));
        assert_eq!(Recipient::parse(&text).unwrap(), identity.recipient());
        assert!(!format!("{identity:?}").contains("SECRET"));
    }

    #[test]
    fn rejects_malformed_recipients() {
        for text in [
            "",
            "age1",
            "age1qqqq",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "AGE-SECRET-KEY-1QQ",
        ] {
            assert!(Recipient::parse(text).is_err(), "{text}");
        }
        let valid = DevIdentity::generate().unwrap().recipient().to_string();
        let mut corrupted = valid.clone().into_bytes();
        let last = corrupted.len() - 1;
        corrupted[last] = if corrupted[last] == b'q' { b'p' } else { b'q' };
        assert!(Recipient::parse(&String::from_utf8(corrupted).unwrap()).is_err());
        assert!(DevIdentity::from_identity_file(&valid).is_err());
    }
}
