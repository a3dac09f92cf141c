//! The site's compliance policy for what leaves the appliance, per artifact kind, and how long it is kept
//! where it goes. Validated by configuration; applied by the outbox when a finished call is handed over:
//! kinds that may not leave are purged (and audited), the manifest loses the sealed fields the policy does
//! not release and gains the policy stamp, and every object of the call carries the call's retention
//! (class, days, legal hold) into its spool record, where the S3 sink turns it into Object Lock.

use std::collections::BTreeMap;

use airlock_outbox::Retention;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Whether the (age-encrypted) recording leaves the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingRelease {
    /// The recording leaves, encrypted to the configured recipients.
    Encrypted,
    /// The recording never leaves (transcript-only sites); it is purged at the call's hand-over.
    Never,
}

/// Whether transcripts leave the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptRelease {
    /// Redacted transcripts and segment events leave.
    Redacted,
    /// Nothing of the transcript leaves (no artifacts, no `evt/transcript` events).
    Never,
}

/// The sealed (age-encrypted) manifest fields a policy may release.
pub const SEALED_MANIFEST_FIELDS: [&str; 2] = ["metadata_sealed", "participants_sealed"];

/// The validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub recording: RecordingRelease,
    pub transcript: TranscriptRelease,
    /// Which of [`SEALED_MANIFEST_FIELDS`] the manifest keeps.
    pub manifest_sealed: Vec<String>,
    /// Days each retention class keeps a call's objects where they are delivered.
    pub retention_classes: BTreeMap<String, u32>,
    /// The class of calls no rule places elsewhere.
    pub default_retention_class: String,
    /// Every call under legal hold.
    pub legal_hold: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            recording: RecordingRelease::Encrypted,
            transcript: TranscriptRelease::Redacted,
            manifest_sealed: SEALED_MANIFEST_FIELDS
                .iter()
                .map(|field| field.to_string())
                .collect(),
            retention_classes: BTreeMap::from([("standard".to_string(), 2557)]),
            default_retention_class: "standard".into(),
            legal_hold: false,
        }
    }
}

impl Policy {
    /// SHA-256 (hex) of the policy's canonical JSON: its identity in manifests and the audit log.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// The retention of a call's objects.
    pub fn retention(&self) -> Retention {
        let class = self.default_retention_class.clone();
        let days = self.retention_classes.get(&class).copied().unwrap_or(0);
        Retention {
            class,
            days,
            legal_hold: self.legal_hold,
        }
    }

    /// Whether a finished call's file `name` may leave.
    pub fn releases(&self, name: &str) -> bool {
        match name {
            "recording.wav.age" => self.recording == RecordingRelease::Encrypted,
            "transcript.json" | "transcript.vtt" => self.transcript == TranscriptRelease::Redacted,
            _ => true,
        }
    }

    /// Whether an event on `topic` may leave.
    pub fn releases_event(&self, topic: &str) -> bool {
        topic != "evt/transcript" || self.transcript == TranscriptRelease::Redacted
    }

    /// Applies the policy to a manifest: drops the sealed fields it does not release and stamps it.
    pub fn apply_to_manifest(&self, manifest: &mut serde_json::Value) {
        let Some(fields) = manifest.as_object_mut() else {
            return;
        };
        for field in SEALED_MANIFEST_FIELDS {
            if !self.manifest_sealed.iter().any(|kept| kept == field) {
                fields.remove(field);
            }
        }
        let retention = self.retention();
        fields.insert(
            "policy".into(),
            serde_json::json!({
                "hash": self.hash(),
                "recording": self.recording,
                "transcript": self.transcript,
                "manifest_sealed": self.manifest_sealed,
                "retention_class": retention.class,
                "retention_days": retention.days,
                "legal_hold": retention.legal_hold,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_releases_kinds_strips_sealed_fields_and_stamps_the_manifest() {
        let policy = Policy {
            recording: RecordingRelease::Never,
            transcript: TranscriptRelease::Redacted,
            manifest_sealed: vec!["metadata_sealed".into()],
            retention_classes: BTreeMap::from([("short".into(), 90), ("standard".into(), 2557)]),
            default_retention_class: "short".into(),
            legal_hold: true,
        };
        assert!(!policy.releases("recording.wav.age"));
        assert!(policy.releases("transcript.json") && policy.releases("manifest.json"));
        assert!(policy.releases_event("evt/transcript"));
        let mut manifest = serde_json::json!({
            "call": "c1",
            "metadata_sealed": ["x"],
            "participants_sealed": "y",
        });
        policy.apply_to_manifest(&mut manifest);
        assert_eq!(manifest["metadata_sealed"], serde_json::json!(["x"]));
        assert!(manifest.get("participants_sealed").is_none());
        assert_eq!(manifest["policy"]["retention_class"], "short");
        assert_eq!(manifest["policy"]["retention_days"], 90);
        assert_eq!(manifest["policy"]["legal_hold"], true);
        assert_eq!(manifest["policy"]["recording"], "never");
        assert_eq!(manifest["policy"]["hash"], policy.hash());
        assert_ne!(policy.hash(), Policy::default().hash());
        let never = Policy {
            transcript: TranscriptRelease::Never,
            ..Policy::default()
        };
        assert!(!never.releases("transcript.vtt") && !never.releases_event("evt/transcript"));
        assert!(never.releases_event("evt/call/ended"));
    }
}
