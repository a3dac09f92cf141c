//! The site's compliance policy for what leaves the appliance, per artifact kind, and how long it is kept
//! where it goes. Validated by configuration; applied by the outbox when a finished call is handed over:
//! kinds that may not leave are purged (and audited), the manifest loses the sealed fields the policy does
//! not release and gains the policy stamp, and every object of the call carries the call's retention
//! (class, days, legal hold, time kept on the device) into its spool record, where the S3 sink turns it
//! into Object Lock and the outbox into a retained copy (`crate::retained`).
//!
//! A call's class comes from the first `retention_rules` entry its metadata matches (SIPREC extension
//! data or participant domains, VoiceStream campaign or skill), else the default class. The metadata values
//! are personal data: they are only compared here, never stored or logged; the call keeps the rule's index.

use std::collections::{BTreeMap, BTreeSet};

use airlock_outbox::Retention;
use airlock_telemetry::Pii;
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
    /// Seconds a class keeps delivered artifacts on the device; classes not listed: 0 (purged on delivery).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub keep_on_device_secs: BTreeMap<String, u64>,
    /// Classes whose calls are under legal hold (on top of `legal_hold` for all).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub held_classes: BTreeSet<String>,
    /// Rules placing a call in a class by its metadata; the first that matches wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retention_rules: Vec<RetentionRule>,
}

/// One `policy.retention_rules` entry: every condition given must hold (at least one is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionRule {
    /// A SIPREC extension element (any object's, inside `extensiondata` too) with this local name and text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siprec_extension: Option<ExtensionMatch>,
    /// A SIPREC participant whose AoR's host is this domain (compared without case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_domain: Option<String>,
    /// A VoiceStream campaign (a leg's `campaign_id`, or a CTI event's `Call.campaign_name`/`Call.campaign_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// A VoiceStream skill (a leg's `skill_id`, or a CTI event's `Call.skill_name`/`Call.skill_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// The class of the calls it matches.
    pub class: String,
}

/// An extension element to look for: its local name and its exact (trimmed) text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionMatch {
    pub name: String,
    pub value: String,
}

/// What a call's metadata documents said that rules can match, gathered per document. Personal data:
/// every value stays in [`Pii`].
#[derive(Debug, Default)]
pub struct CallFacts {
    extensions: Vec<(String, Pii<String>)>,
    domains: Vec<Pii<String>>,
    campaigns: Vec<Pii<String>>,
    skills: Vec<Pii<String>>,
}

impl CallFacts {
    /// The facts of one SIPREC metadata document (an unreadable one has none).
    pub fn from_siprec_xml(xml: &str) -> CallFacts {
        let Ok(metadata) = airlock_siprec::metadata::parse(xml) else {
            return CallFacts::default();
        };
        let extensions = metadata
            .all_extensions()
            .flat_map(|extension| extension.values.iter().cloned())
            .collect();
        let domains = metadata
            .participants
            .iter()
            .flat_map(|participant| &participant.name_ids)
            .filter_map(|name_id| name_id.aor.as_ref())
            .filter_map(|aor| aor_domain(aor.expose()))
            .map(Pii::new)
            .collect();
        CallFacts {
            extensions,
            domains,
            ..CallFacts::default()
        }
    }

    /// The facts of one VoiceStream metadata document: a leg's config (`campaign_id`, `skill_id`) or a CTI
    /// webhook note (`event.payload.attached_variables`, Five9's `Call.*` variables).
    pub fn from_voicestream_json(json: &str) -> CallFacts {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
            return CallFacts::default();
        };
        let variables = value
            .pointer("/event/payload/attached_variables")
            .cloned()
            .unwrap_or_default();
        let texts = |keys: &[(&serde_json::Value, &str)]| -> Vec<Pii<String>> {
            keys.iter()
                .filter_map(|(object, key)| object.get(*key))
                .filter_map(serde_json::Value::as_str)
                .filter(|text| !text.is_empty())
                .map(|text| Pii::new(text.to_owned()))
                .collect()
        };
        CallFacts {
            campaigns: texts(&[
                (&value, "campaign_id"),
                (&variables, "Call.campaign_name"),
                (&variables, "Call.campaign_id"),
            ]),
            skills: texts(&[
                (&value, "skill_id"),
                (&variables, "Call.skill_name"),
                (&variables, "Call.skill_id"),
            ]),
            ..CallFacts::default()
        }
    }
}

/// The host of a SIP/SIPS AoR (`sip:user@host:port;params`), lower-cased; None for other schemes.
fn aor_domain(aor: &str) -> Option<String> {
    let aor = aor.trim().trim_start_matches('<');
    let (scheme, rest) = aor.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split([';', '?', '>']).next()?;
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

impl RetentionRule {
    /// Whether every condition of the rule holds for `facts`.
    pub fn matches(&self, facts: &CallFacts) -> bool {
        let any = |values: &[Pii<String>], wanted: &str| values.iter().any(|value| value.expose() == wanted);
        self.siprec_extension.as_ref().is_none_or(|wanted| {
            facts
                .extensions
                .iter()
                .any(|(name, text)| *name == wanted.name && *text.expose() == wanted.value)
        }) && self.participant_domain.as_ref().is_none_or(|domain| {
            facts
                .domains
                .iter()
                .any(|found| found.expose().eq_ignore_ascii_case(domain))
        }) && self
            .campaign
            .as_deref()
            .is_none_or(|campaign| any(&facts.campaigns, campaign))
            && self
                .skill
                .as_deref()
                .is_none_or(|skill| any(&facts.skills, skill))
    }

    /// Whether the rule has no condition (configuration refuses such a rule).
    pub fn is_empty(&self) -> bool {
        self.siprec_extension.is_none()
            && self.participant_domain.is_none()
            && self.campaign.is_none()
            && self.skill.is_none()
    }
}

/// The retention rule a call's metadata chose so far (kept in its manifest until the hand-over): the
/// rule's index and its class. None: no rule matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RuleChoice {
    pub rule: usize,
    pub class: String,
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
            keep_on_device_secs: BTreeMap::new(),
            held_classes: BTreeSet::new(),
            retention_rules: Vec::new(),
        }
    }
}

impl Policy {
    /// SHA-256 (hex) of the policy's canonical JSON: its identity in manifests and the audit log.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// The first rule `facts` match that comes before `current` (the call's choice so far: across a call's
    /// documents, the earliest rule wins).
    pub fn choose(&self, facts: &CallFacts, current: Option<&RuleChoice>) -> Option<RuleChoice> {
        let before = current.map_or(self.retention_rules.len(), |choice| choice.rule);
        let chosen = self.retention_rules[..before.min(self.retention_rules.len())]
            .iter()
            .position(|rule| rule.matches(facts));
        match chosen {
            Some(rule) => Some(RuleChoice {
                rule,
                class: self.retention_rules[rule].class.clone(),
            }),
            None => current.cloned(),
        }
    }

    /// The retention of a call's objects: the class its rule chose (when that class still exists), else
    /// the default.
    pub fn retention(&self, choice: Option<&RuleChoice>) -> Retention {
        let choice = choice.filter(|choice| self.retention_classes.contains_key(&choice.class));
        let class = choice.map_or(&self.default_retention_class, |choice| &choice.class);
        Retention {
            class: class.clone(),
            days: self.retention_classes.get(class).copied().unwrap_or(0),
            legal_hold: self.held(class),
            rule: choice.map(|choice| choice.rule),
            keep_on_device_secs: self.keep_on_device_secs.get(class).copied().unwrap_or(0),
        }
    }

    /// Whether objects of `class` are under legal hold (the whole policy's or the class's).
    pub fn held(&self, class: &str) -> bool {
        self.legal_hold || self.held_classes.contains(class)
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

    /// Applies the policy to a manifest: drops the sealed fields it does not release and stamps it with
    /// the call's retention (from the rule choice the manifest carries, which the stamp replaces); returns
    /// that retention.
    pub fn apply_to_manifest(&self, manifest: &mut serde_json::Value) -> Retention {
        let Some(fields) = manifest.as_object_mut() else {
            return self.retention(None);
        };
        // The call's choice; a manifest stamped before a crash cut its hand-over short carries it in the stamp.
        let stamped = fields.get("policy").and_then(|stamp| {
            Some(RuleChoice {
                rule: usize::try_from(stamp.get("retention_rule")?.as_u64()?).ok()?,
                class: stamp.get("retention_class")?.as_str()?.to_owned(),
            })
        });
        let choice: Option<RuleChoice> = fields
            .remove("retention_rule")
            .and_then(|choice| serde_json::from_value(choice).ok())
            .or(stamped);
        let retention = self.retention(choice.as_ref());
        for field in SEALED_MANIFEST_FIELDS {
            if !self.manifest_sealed.iter().any(|kept| kept == field) {
                fields.remove(field);
            }
        }
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
                "retention_rule": retention.rule,
                "keep_on_device_secs": retention.keep_on_device_secs,
            }),
        );
        retention
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
            ..Policy::default()
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

    /// Metadata shaped like siprec.md §1.3 (values invented): a queue in a group extension, a vendor value
    /// inside a draft-era `extensiondata` wrapper, an agent in `cc.example.com`.
    const SIPREC: &str = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="g1"><cc:queue xmlns:cc="urn:example:contact-centre:1">billing-en</cc:queue></group>
  <session session_id="s1">
    <extensiondata xmlns:vx="http://vendor.test/siprec"><vx:tier>gold</vx:tier></extensiondata>
  </session>
  <participant participant_id="p1"><nameID aor="sip:+15551230001@carrier.example.net"/></participant>
  <participant participant_id="p2"><nameID aor="sips:agent1001@CC.Example.com:5061;transport=tls"/></participant>
</recording>"#;

    fn rules_policy() -> Policy {
        let rule = |class: &str| RetentionRule {
            class: class.into(),
            ..RetentionRule::default()
        };
        Policy {
            retention_classes: BTreeMap::from([
                ("standard".into(), 2557),
                ("billing".into(), 3650),
                ("vip".into(), 30),
                ("sales".into(), 365),
            ]),
            keep_on_device_secs: BTreeMap::from([("billing".into(), 86_400)]),
            held_classes: BTreeSet::from(["vip".to_string()]),
            retention_rules: vec![
                RetentionRule {
                    siprec_extension: Some(ExtensionMatch {
                        name: "tier".into(),
                        value: "platinum".into(),
                    }),
                    ..rule("vip")
                },
                RetentionRule {
                    siprec_extension: Some(ExtensionMatch {
                        name: "queue".into(),
                        value: "billing-en".into(),
                    }),
                    participant_domain: Some("cc.example.com".into()),
                    ..rule("billing")
                },
                RetentionRule {
                    campaign: Some("Outbound Sales".into()),
                    skill: Some("sales-en".into()),
                    ..rule("sales")
                },
            ],
            ..Policy::default()
        }
    }

    #[test]
    fn the_first_rule_a_calls_metadata_matches_chooses_its_class() {
        let policy = rules_policy();
        let facts = CallFacts::from_siprec_xml(SIPREC);
        // Rule 0 needs another tier; rule 1's two conditions both hold (the domain without case, port or
        // parameters).
        let choice = policy.choose(&facts, None).expect("rule 1");
        assert_eq!(
            choice,
            RuleChoice {
                rule: 1,
                class: "billing".into()
            }
        );
        let retention = policy.retention(Some(&choice));
        assert_eq!(
            (
                retention.class.as_str(),
                retention.days,
                retention.rule,
                retention.keep_on_device_secs
            ),
            ("billing", 3650, Some(1), 86_400)
        );
        assert!(!retention.legal_hold);
        // A later document matching an earlier rule takes over; one matching a later rule does not.
        let platinum = SIPREC.replace(">gold<", ">platinum<");
        let earlier = policy.choose(&CallFacts::from_siprec_xml(&platinum), Some(&choice));
        assert_eq!(
            earlier,
            Some(RuleChoice {
                rule: 0,
                class: "vip".into()
            })
        );
        assert!(
            policy.retention(earlier.as_ref()).legal_hold,
            "the vip class is held"
        );
        assert_eq!(policy.choose(&facts, earlier.as_ref()), earlier);
        // Every condition must hold: the queue alone, with the agent elsewhere, is no match.
        let elsewhere = SIPREC.replace("CC.Example.com", "other.example.com");
        assert_eq!(policy.choose(&CallFacts::from_siprec_xml(&elsewhere), None), None);
        // No match, unreadable metadata, or a class gone from the policy since: the default class.
        assert_eq!(policy.choose(&CallFacts::from_siprec_xml("<not xml"), None), None);
        let default = policy.retention(None);
        assert_eq!(
            (default.class.as_str(), default.rule, default.keep_on_device_secs),
            ("standard", None, 0)
        );
        let gone = RuleChoice {
            rule: 1,
            class: "retired".into(),
        };
        assert_eq!(policy.retention(Some(&gone)), default);
    }

    #[test]
    fn voicestream_campaign_and_skill_match_from_leg_config_or_cti_variables() {
        let policy = rules_policy();
        let leg =
            r#"{"vcc_call_id":"1","campaign_id":"Outbound Sales","skill_id":"sales-en","agent_id":"a"}"#;
        assert_eq!(
            policy.choose(&CallFacts::from_voicestream_json(leg), None),
            Some(RuleChoice {
                rule: 2,
                class: "sales".into()
            })
        );
        let other_skill = leg.replace("sales-en", "support");
        assert_eq!(
            policy.choose(&CallFacts::from_voicestream_json(&other_skill), None),
            None
        );
        let cti = r#"{"kind":"cti_event","event":{"payload":{"attached_variables":
            {"Call.campaign_name":"Outbound Sales","Call.skill_name":"sales-en","Call.call_id":"1"}}}}"#;
        assert_eq!(
            policy
                .choose(&CallFacts::from_voicestream_json(cti), None)
                .map(|c| c.rule),
            Some(2)
        );
        assert_eq!(
            policy.choose(&CallFacts::from_voicestream_json("[1,2"), None),
            None
        );
        // Rules need at least one condition; a rule without is empty.
        assert!(RetentionRule::default().is_empty() && !policy.retention_rules[2].is_empty());
    }

    #[test]
    fn the_stamp_carries_the_chosen_class_and_rule_and_survives_a_repeated_hand_over() {
        let policy = rules_policy();
        let mut manifest = serde_json::json!({
            "call": "c1",
            "retention_rule": { "rule": 1, "class": "billing" },
        });
        let retention = policy.apply_to_manifest(&mut manifest);
        assert_eq!(retention.class, "billing");
        assert!(manifest.get("retention_rule").is_none(), "replaced by the stamp");
        let stamp = &manifest["policy"];
        assert_eq!(
            (
                &stamp["retention_class"],
                &stamp["retention_rule"],
                &stamp["retention_days"]
            ),
            (
                &serde_json::json!("billing"),
                &serde_json::json!(1),
                &serde_json::json!(3650)
            )
        );
        assert_eq!(stamp["keep_on_device_secs"], 86_400);
        // A crash after the stamp was written: the hand-over again keeps the call's class.
        assert_eq!(policy.apply_to_manifest(&mut manifest), retention);
        let mut plain = serde_json::json!({ "call": "c2" });
        assert_eq!(policy.apply_to_manifest(&mut plain).class, "standard");
        assert_eq!(plain["policy"]["retention_rule"], serde_json::Value::Null);
        // Rules and on-device keeping change the policy's identity.
        assert_ne!(
            policy.hash(),
            Policy {
                retention_rules: Vec::new(),
                ..policy.clone()
            }
            .hash()
        );
    }

    #[test]
    fn aor_domains_are_the_host_of_sip_uris_only() {
        assert_eq!(
            aor_domain("sip:alice@Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            aor_domain("<sips:bob@h.test:5061;transport=tls>").as_deref(),
            Some("h.test")
        );
        assert_eq!(aor_domain("sip:gw.test").as_deref(), Some("gw.test"));
        assert_eq!(
            aor_domain("sip:a@[2001:db8::1]:5060").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(aor_domain("tel:+15557770000"), None);
        assert_eq!(aor_domain("sip:a@"), None);
    }
}
