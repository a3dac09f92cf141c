//! SDES key exchange (RFC 4568) for SRTP streams: reading the offer's `a=crypto` attributes, choosing the one
//! we answer, and writing our answer attribute. Pure apart from the OS random generator behind
//! [`SrtpMasterKey::generate`] (our answer key; the SRS never sends media, so nothing is protected with it).
//!
//! Accepted: the suites `airlock_rtp::SrtpSuite` implements, one `inline:` key without MKI (a lifetime is
//! accepted and not enforced), and no session parameters other than `KDR=0`, `UNENCRYPTED_SRTCP` (RTCP is
//! not recorded) and `WSH=` (a window-size hint; our replay window is fixed). Anything else makes that
//! attribute unusable (RFC 4568 §6.3: an answerer picks among the offered attributes it understands).

use airlock_rtp::{SrtpMasterKey, SrtpSuite};
use airlock_telemetry::Pii;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use zeroize::Zeroizing;

/// The receive key of one SRTP stream, as the offerer sent it. The key is zeroized when dropped, compared in
/// constant time and never printed (`SrtpMasterKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesKey {
    /// The offer's crypto tag, echoed in the answer.
    pub tag: u32,
    /// Suite, master key and master salt.
    pub key: SrtpMasterKey,
}

impl SdesKey {
    pub fn suite(&self) -> SrtpSuite {
        self.key.suite()
    }
}

/// Why an `a=crypto` attribute cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdesRefusal {
    Malformed,
    UnsupportedSuite,
    /// More than one key, or a key with an MKI.
    MasterKeyIdentifier,
    UnsupportedSessionParameter,
    BadKeyLength,
}

/// Parses one `a=crypto` value (`tag suite inline:key||salt[|lifetime][|MKI:len] [session params]`).
pub fn parse_crypto(value: &str) -> Result<SdesKey, SdesRefusal> {
    let mut fields = value.split_ascii_whitespace();
    let tag: u32 = fields
        .next()
        .and_then(|tag| tag.parse().ok())
        .filter(|tag| *tag <= 999_999_999)
        .ok_or(SdesRefusal::Malformed)?;
    let suite = SrtpSuite::from_sdes_name(fields.next().ok_or(SdesRefusal::Malformed)?)
        .ok_or(SdesRefusal::UnsupportedSuite)?;
    let key_params = fields.next().ok_or(SdesRefusal::Malformed)?;
    if key_params.contains(';') {
        return Err(SdesRefusal::MasterKeyIdentifier);
    }
    let inline = key_params.strip_prefix("inline:").ok_or(SdesRefusal::Malformed)?;
    let mut parts = inline.split('|');
    let encoded = parts.next().unwrap_or_default();
    for part in parts {
        if part.contains(':') {
            return Err(SdesRefusal::MasterKeyIdentifier);
        }
        let lifetime_ok = match part.strip_prefix("2^") {
            Some(power) => power.parse::<u8>().is_ok_and(|p| p <= 64),
            None => part.parse::<u64>().is_ok(),
        };
        if !lifetime_ok {
            return Err(SdesRefusal::Malformed);
        }
    }
    for parameter in fields {
        let understood = parameter == "KDR=0"
            || parameter == "UNENCRYPTED_SRTCP"
            || parameter
                .strip_prefix("WSH=")
                .is_some_and(|size| size.parse::<u32>().is_ok());
        if !understood {
            return Err(SdesRefusal::UnsupportedSessionParameter);
        }
    }
    let key_and_salt = Zeroizing::new(
        STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| SdesRefusal::Malformed)?,
    );
    let key = SrtpMasterKey::new(suite, &key_and_salt).map_err(|_| SdesRefusal::BadKeyLength)?;
    Ok(SdesKey { tag, key })
}

/// The first usable attribute of the offer's list, in the offerer's order of preference.
pub fn choose(crypto_values: &[Pii<String>]) -> Result<SdesKey, SdesRefusal> {
    let mut first_refusal = SdesRefusal::Malformed;
    for (position, value) in crypto_values.iter().enumerate() {
        match parse_crypto(value.expose()) {
            Ok(key) => return Ok(key),
            Err(refusal) if position == 0 => first_refusal = refusal,
            Err(_) => {}
        }
    }
    Err(first_refusal)
}

/// Our answer attribute value for `chosen`: its tag and suite with a fresh key of our own.
pub fn answer_crypto(chosen: &SdesKey) -> Option<Pii<String>> {
    let ours = SrtpMasterKey::generate(chosen.suite()).ok()?;
    Some(Pii::new(format!(
        "{} {} inline:{}",
        chosen.tag,
        chosen.suite().sdes_name(),
        STANDARD.encode(ours.key_and_salt())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(bytes: usize) -> String {
        STANDARD.encode(vec![7u8; bytes])
    }

    #[test]
    fn parses_each_supported_suite_with_and_without_lifetime() {
        let key = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^31", inline(30)));
        let key = key.expect("AES-CM 80");
        assert_eq!((key.tag, key.suite()), (1, SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(key.key.key_and_salt(), &[7u8; 30][..]);
        assert!(parse_crypto(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{}", inline(30))).is_ok());
        assert!(parse_crypto(&format!("3 AEAD_AES_128_GCM inline:{}", inline(28))).is_ok());
        assert!(parse_crypto(&format!("4 AEAD_AES_256_GCM inline:{}|1048576", inline(44))).is_ok());
        assert!(
            parse_crypto(&format!(
                "5 AES_CM_128_HMAC_SHA1_80 inline:{} UNENCRYPTED_SRTCP KDR=0",
                inline(30)
            ))
            .is_ok()
        );
    }

    #[test]
    fn refuses_what_we_cannot_honour() {
        assert_eq!(
            parse_crypto(&format!("1 F8_128_HMAC_SHA1_80 inline:{}", inline(30))),
            Err(SdesRefusal::UnsupportedSuite)
        );
        assert_eq!(
            parse_crypto(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^20|1:4",
                inline(30)
            )),
            Err(SdesRefusal::MasterKeyIdentifier)
        );
        assert_eq!(
            parse_crypto(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^20|1:4;inline:{}|2^20|2:4",
                inline(30),
                inline(30)
            )),
            Err(SdesRefusal::MasterKeyIdentifier)
        );
        assert_eq!(
            parse_crypto(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{} UNENCRYPTED_SRTP",
                inline(30)
            )),
            Err(SdesRefusal::UnsupportedSessionParameter)
        );
        assert_eq!(
            parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", inline(29))),
            Err(SdesRefusal::BadKeyLength)
        );
        assert_eq!(
            parse_crypto("1 AES_CM_128_HMAC_SHA1_80 key:abc"),
            Err(SdesRefusal::Malformed)
        );
        assert_eq!(
            parse_crypto("x AES_CM_128_HMAC_SHA1_80"),
            Err(SdesRefusal::Malformed)
        );
        assert_eq!(parse_crypto(""), Err(SdesRefusal::Malformed));
    }

    #[test]
    fn chooses_the_first_usable_offer_and_answers_with_its_tag_and_a_fresh_key() {
        let offered = vec![
            Pii::new(format!("1 AES_192_CM_HMAC_SHA1_80 inline:{}", inline(38))),
            Pii::new(format!("2 AEAD_AES_128_GCM inline:{}", inline(28))),
            Pii::new(format!("3 AES_CM_128_HMAC_SHA1_80 inline:{}", inline(30))),
        ];
        let chosen = choose(&offered).expect("GCM is usable");
        assert_eq!((chosen.tag, chosen.suite()), (2, SrtpSuite::AeadAes128Gcm));
        let answer = answer_crypto(&chosen).expect("random key");
        let answer = answer.expose();
        assert!(answer.starts_with("2 AEAD_AES_128_GCM inline:"), "{answer}");
        assert!(!answer.contains(&inline(28)), "our key is not the offerer's");
        assert_eq!(
            parse_crypto(answer).map(|key| key.suite()),
            Ok(SrtpSuite::AeadAes128Gcm)
        );
        assert_eq!(
            choose(&offered[..1]).map(|key| key.tag),
            Err(SdesRefusal::UnsupportedSuite)
        );
        assert_eq!(choose(&[]).map(|key| key.tag), Err(SdesRefusal::Malformed));
    }
}
