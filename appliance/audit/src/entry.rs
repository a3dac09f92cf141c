//! The line format. The log is `audit.jsonl`: one JSON object per line, `\n`-terminated, appended only:
//!
//! ```text
//! {"seq":1,"at":"2026-11-29T18:00:00.000Z","kind":"artifact_created","subject":"c1/audio.age","prev":"00…00"}
//! {"seq":2,"at":"2026-11-29T18:00:05.000Z","kind":"checkpoint","prev":"<h1>","head":"<h1>","signature":"…",
//!  "key_id":"…"}
//! ```
//!
//! * `seq` counts from 1 without gaps; `at` is the caller's time, RFC 3339 UTC with milliseconds.
//! * `prev` is the hex SHA-256 of the previous line's bytes exactly as written, without its `\n` (64 zeros
//!   for seq 1). Verification hashes the bytes it reads, never a re-serialisation, so the writer's
//!   serialisation (serde_json, fields in the order of [`Entry`], absent options omitted) is canonical by
//!   construction.
//! * Events (every kind but `checkpoint`) carry `subject` (an id, never personal data) and an optional
//!   `detail` object; they carry no `head`, `signature` or `key_id`.
//! * A checkpoint carries no `subject` or `detail`; `head` is the hash of the line before it (equal to its
//!   `prev`), `signature` the base64 Ed25519 signature of [`checkpoint_message`], `key_id` the signer's
//!   [`key_id`](crate::PublicKey::key_id).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first entry.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// First line of the bytes a checkpoint signs; a new format gets a new context.
pub const SIGNING_CONTEXT: &str = "airlock-audit-checkpoint-v1";
/// Longest subject, in bytes.
pub const MAX_SUBJECT: usize = 256;
/// Longest `detail`, serialised, in bytes.
pub const MAX_DETAIL: usize = 4096;
/// Longest line the writer produces (subject and detail escaped at worst six bytes per byte, plus the
/// fixed fields); readers refuse longer ones.
pub const MAX_LINE: usize = 64 * 1024;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ArtifactCreated,
    ArtifactBlocked,
    ArtifactUploaded,
    ArtifactPurged,
    /// A delivered artifact kept on the device by its retention class (purged later, audited then).
    ArtifactRetained,
    PolicyChanged,
    Checkpoint,
}

/// The kinds a caller appends ([`Kind`] without `Checkpoint`, which only
/// [`AuditLog::checkpoint`](crate::AuditLog::checkpoint) writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ArtifactCreated,
    ArtifactBlocked,
    ArtifactUploaded,
    ArtifactPurged,
    ArtifactRetained,
    PolicyChanged,
}

impl From<EventKind> for Kind {
    fn from(kind: EventKind) -> Kind {
        match kind {
            EventKind::ArtifactCreated => Kind::ArtifactCreated,
            EventKind::ArtifactBlocked => Kind::ArtifactBlocked,
            EventKind::ArtifactUploaded => Kind::ArtifactUploaded,
            EventKind::ArtifactPurged => Kind::ArtifactPurged,
            EventKind::ArtifactRetained => Kind::ArtifactRetained,
            EventKind::PolicyChanged => Kind::PolicyChanged,
        }
    }
}

/// One line of the log. Field order here is the order on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Map<String, serde_json::Value>>,
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Hex SHA-256 of a line as written, without its `\n`.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The bytes a checkpoint's signature covers: the context, the checkpoint's own seq, the head it commits to
/// and its time, each followed by `\n`.
pub fn checkpoint_message(seq: u64, head: &str, at: &str) -> Vec<u8> {
    format!("{SIGNING_CONTEXT}\n{seq}\n{head}\n{at}\n").into_bytes()
}

/// Whether `text` is 64 lowercase hex digits (a SHA-256 as the log writes it).
pub fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks that `at` is an RFC 3339 UTC time with milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ`, with a real
/// calendar date.
pub fn check_timestamp(at: &str) -> Result<(), String> {
    let bad = || format!("time {at:?} is not RFC 3339 UTC with milliseconds (YYYY-MM-DDTHH:MM:SS.mmmZ)");
    let bytes = at.as_bytes();
    if bytes.len() != 24 {
        return Err(bad());
    }
    for (index, &byte) in bytes.iter().enumerate() {
        let expected = match index {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            23 => Some(b'Z'),
            _ => None,
        };
        let fits = match expected {
            Some(separator) => byte == separator,
            None => byte.is_ascii_digit(),
        };
        if !fits {
            return Err(bad());
        }
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day == 0 || day > days_in_month || number(11..13) > 23 || number(14..16) > 59 || number(17..19) > 60 {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for good in [
            "2026-11-29T18:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "2016-12-31T23:59:60.500Z",
        ] {
            assert_eq!(check_timestamp(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "2026-11-29T18:00:00Z",
            "2026-11-29T18:00:00.000+00:00",
            "2026-11-29 18:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-02-29T00:00:00.000Z",
            "1900-02-29T00:00:00.000Z",
            "2026-11-00T00:00:00.000Z",
            "2026-11-29T24:00:00.000Z",
            "2026-11-29T18:60:00.000Z",
            "2026-11-29T18:00:00.00aZ",
            "2026-11-29T18:00:00.000z",
        ] {
            assert!(check_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serialisation_order_and_omitted_fields() {
        let entry = Entry {
            seq: 1,
            at: "2026-11-29T18:00:00.000Z".into(),
            kind: Kind::ArtifactUploaded,
            subject: Some("call-1/audio.age".into()),
            detail: None,
            prev: GENESIS_PREV.into(),
            head: None,
            signature: None,
            key_id: None,
        };
        let line = serde_json::to_string(&entry).expect("serialise");
        assert_eq!(
            line,
            format!(
                "{{\"seq\":1,\"at\":\"2026-11-29T18:00:00.000Z\",\"kind\":\"artifact_uploaded\",\
                 \"subject\":\"call-1/audio.age\",\"prev\":\"{GENESIS_PREV}\"}}"
            )
        );
        assert!(is_hash(GENESIS_PREV));
        assert!(is_hash(&line_hash(line.as_bytes())));
        assert!(!is_hash(&line_hash(line.as_bytes()).to_uppercase()));
    }
}
