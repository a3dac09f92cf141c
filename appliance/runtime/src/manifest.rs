//! `manifest.json`: what a recorded call produced and how it went — times, streams and channels, codecs,
//! pause intervals, packet statistics, what of the audio was silenced (kind and time, never a value), the
//! SHA-256 of the recording. Personal data (the SIPREC metadata with participants' addresses and names) is
//! only stored sealed to the recording recipients as ASCII-armored age messages; DTMF keys are not stored
//! at all. Written when the call starts, on every change, and when it ends, so a
//! call interrupted by a crash can still be described after restart.

use std::time::{Duration, SystemTime};

use airlock_recording::{FinishedRecording, Recipient, seal_text};

use crate::audio_redaction::{AudioRedactor, SilencedAudio};
use airlock_siprec::srs::{CallId, RecordingPlan};
use airlock_telemetry::CallOutcome;
use serde::{Deserialize, Serialize};

use crate::policy::{CallFacts, Policy, RuleChoice};

/// The manifest format identifier.
pub const FORMAT: &str = "airlock.call-manifest.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Where the call came from: `siprec`, `voicestream` (gRPC), `voicestream_sip` or `local_capture`.
    #[serde(default = "siprec_source")]
    pub source: String,
    /// Our own id for the call (never the SIP Call-ID or the Five9 call id).
    pub call: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    /// PCM sample rate of the recording in Hz.
    pub sample_rate: u32,
    /// Channels of the recording: one per stream.
    pub channel_count: usize,
    pub recording: Option<RecordingReport>,
    pub channels: Vec<ChannelReport>,
    pub streams: Vec<StreamReport>,
    pub pauses: Vec<PauseInterval>,
    /// Count of RFC 4733 telephone events (their keys are never stored; their audio is silenced).
    pub telephone_event_count: u64,
    /// What was silenced in the recording before it was encrypted: redacted words (entity kind), `DTMF`,
    /// keyed card numbers (`CARD_NUMBER`), `UNVERIFIED` audio no transcript covered. Complete once the call has ended.
    #[serde(default)]
    pub audio_redactions: Vec<SilencedAudio>,
    /// Silencing spans that came after part of their audio was written (0 unless the hold was exceeded).
    #[serde(default)]
    pub audio_redactions_late: u64,
    /// Silenced stretches beyond the listing limit (4096 per call): silenced, but not in `audio_redactions`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_redactions_unlisted: u64,
    /// The SIPREC metadata documents received, sealed to the recipients (absent when the policy keeps
    /// them in: a manifest rewritten at the hand-over must still read back for crash recovery).
    #[serde(default)]
    pub metadata_sealed: Vec<String>,
    /// Who sent on which stream (channel) from when, per the metadata: `[{label, from_ms, participant}]`
    /// as JSON, sealed to the recipients (participants' AoRs are personal data).
    pub participants_sealed: Option<String>,
    /// The transcript artifacts, when the call was transcribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<TranscriptReport>,
    /// The retention rule the call's metadata matched so far (index and class, never the matched value);
    /// replaced by the policy stamp at the hand-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_rule: Option<RuleChoice>,
    #[serde(skip)]
    participant_timeline: Vec<ParticipantSpan>,
}

/// From `from_ms` on, `participant` (AoRs from the metadata) sent on the stream labelled `label`.
#[derive(Debug, Clone, Serialize)]
struct ParticipantSpan {
    label: String,
    from_ms: u64,
    participant: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordingReport {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub sample_rate: u32,
    pub channels: usize,
    pub frames: u64,
}

/// `transcript.json` and `transcript.vtt`: their hashes, how many segments and gaps, whether every
/// segment was decoded before the call was published, and the redaction policy their text passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptReport {
    pub file: String,
    pub sha256: String,
    pub vtt_file: String,
    pub vtt_sha256: String,
    pub segments: usize,
    pub gaps: usize,
    pub complete: bool,
    pub redaction_policy: String,
}

/// The stream labelled `label` is recorded on `channel` from `from_ms` on. A stream added mid-call when
/// no channel is free shares one (the legs are mixed there), so a channel can appear more than once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelReport {
    pub channel: usize,
    pub label: String,
    pub from_ms: u64,
}

impl ChannelReport {
    pub fn new(channel: usize, label: &str, from: Duration) -> Self {
        ChannelReport {
            channel,
            label: label.to_string(),
            from_ms: millis(from),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReport {
    pub label: String,
    pub channel: usize,
    pub codec: Option<String>,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_late: u64,
    pub packets_duplicate: u64,
    pub ssrc_changes: u64,
    /// For an SRTP stream: its suite and how many packets were authenticated or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp: Option<SrtpReport>,
}

/// SRTP counters of one stream; a tampered or replayed packet is dropped and counted here, never recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SrtpReport {
    /// The SDES suite in use at the end (e.g. `AES_CM_128_HMAC_SHA1_80`).
    pub suite: String,
    pub packets_authenticated: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub malformed: u64,
    /// Key changes by re-INVITE/UPDATE.
    pub rekeys: u64,
}

/// A gap in the recording from `start_ms` to `end_ms` after the call began. Reason `source`: the call's
/// source paused one stream (SIPREC a=inactive, c=0.0.0.0 or metadata; VoiceStream hold), named by `label`.
/// Reason `request`: an agent-desktop integration paused the whole call (`label` is `*`, every channel),
/// through `requested_by` `https` or `mqtt`; nothing of the call was written or transcribed meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseInterval {
    pub label: String,
    pub start_ms: u64,
    pub end_ms: u64,
    #[serde(default = "source_reason")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

impl PauseInterval {
    pub fn new(label: &str, start: Duration, end: Duration) -> Self {
        PauseInterval {
            label: label.to_string(),
            start_ms: millis(start),
            end_ms: millis(end),
            reason: source_reason(),
            requested_by: None,
        }
    }

    /// The whole call paused on request through `by` (`https`, `mqtt`).
    pub fn requested(start: Duration, end: Duration, by: &str) -> Self {
        PauseInterval {
            label: "*".to_string(),
            start_ms: millis(start),
            end_ms: millis(end),
            reason: "request".to_string(),
            requested_by: Some(by.to_string()),
        }
    }
}

fn source_reason() -> String {
    "source".to_string()
}

impl Manifest {
    pub fn new(
        _call: CallId,
        dir_name: &str,
        started: SystemTime,
        (sample_rate, channel_count): (u32, usize),
        plan: &RecordingPlan,
        recipients: &[Recipient],
    ) -> Manifest {
        let mut manifest = Manifest::empty(dir_name, started, (sample_rate, channel_count));
        manifest.source = plan.source.as_str().to_string();
        manifest.apply_plan(plan, Duration::ZERO, recipients);
        manifest
    }

    /// The manifest of a streamed call (`source`: voicestream, local_capture); legs and metadata are added as
    /// they join.
    pub fn for_stream(source: &str, dir_name: &str, started: SystemTime, format: (u32, usize)) -> Manifest {
        let mut manifest = Manifest::empty(dir_name, started, format);
        manifest.source = source.to_string();
        manifest
    }

    /// Seals one metadata document (a JSON or XML text holding personal data) into `metadata_sealed`.
    pub fn seal_metadata(&mut self, text: &str, recipients: &[Recipient]) {
        match seal_text(recipients, text) {
            Ok(sealed) => self.metadata_sealed.push(sealed),
            Err(error) => tracing::warn!(%error, "cannot seal call metadata"),
        }
    }

    /// Matches the SIPREC metadata document a plan carries against the policy's retention rules.
    pub fn choose_retention_by_plan(&mut self, policy: &Policy, plan: &RecordingPlan) {
        if let Some(xml) = &plan.metadata_xml
            && !policy.retention_rules.is_empty()
        {
            self.choose_retention(policy, &CallFacts::from_siprec_xml(xml.expose()));
        }
    }

    /// Matches a VoiceStream metadata document (leg config or webhook note, JSON) against the rules.
    pub fn choose_retention_by_json(&mut self, policy: &Policy, json: &str) {
        if !policy.retention_rules.is_empty() {
            self.choose_retention(policy, &CallFacts::from_voicestream_json(json));
        }
    }

    /// Matches one metadata document's `facts` against the policy's retention rules; an earlier rule than
    /// the call's choice so far replaces it.
    fn choose_retention(&mut self, policy: &Policy, facts: &CallFacts) {
        self.retention_rule = policy.choose(facts, self.retention_rule.as_ref());
    }

    fn empty(dir_name: &str, started: SystemTime, (sample_rate, channel_count): (u32, usize)) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            source: siprec_source(),
            call: dir_name.to_string(),
            started_at: crate::clock::rfc3339(started),
            ended_at: None,
            end_reason: None,
            sample_rate,
            channel_count,
            recording: None,
            channels: Vec::new(),
            streams: Vec::new(),
            pauses: Vec::new(),
            telephone_event_count: 0,
            audio_redactions: Vec::new(),
            audio_redactions_late: 0,
            audio_redactions_unlisted: 0,
            metadata_sealed: Vec::new(),
            participants_sealed: None,
            transcript: None,
            retention_rule: None,
            participant_timeline: Vec::new(),
        }
    }

    /// Records what a new plan (initial, re-INVITE or UPDATE) says, `at` after the call started: the
    /// metadata document it carried and any change of who sends on a stream, both sealed.
    pub fn apply_plan(&mut self, plan: &RecordingPlan, at: Duration, recipients: &[Recipient]) {
        if let Some(xml) = &plan.metadata_xml {
            match seal_text(recipients, xml.expose()) {
                Ok(sealed) => self.metadata_sealed.push(sealed),
                Err(error) => tracing::warn!(%error, "cannot seal SIPREC metadata"),
            }
        }
        let mut changed = false;
        for stream in &plan.streams {
            let Some(participant) = &stream.participant else {
                continue;
            };
            let current = self
                .participant_timeline
                .iter()
                .rev()
                .find(|span| span.label == stream.label);
            if current.is_none_or(|span| span.participant != *participant.expose()) {
                self.participant_timeline.push(ParticipantSpan {
                    label: stream.label.clone(),
                    from_ms: millis(at),
                    participant: participant.expose().clone(),
                });
                changed = true;
            }
        }
        if changed {
            let json = serde_json::to_string(&self.participant_timeline).unwrap_or_default();
            match seal_text(recipients, &json) {
                Ok(sealed) => self.participants_sealed = Some(sealed),
                Err(error) => tracing::warn!(%error, "cannot seal the participant timeline"),
            }
        }
    }

    /// Takes the list of what the recording silenced so far.
    pub(crate) fn note_audio_redaction(&mut self, redactor: &AudioRedactor) {
        self.audio_redactions = redactor.silenced().to_vec();
        self.audio_redactions_late = redactor.late();
        self.audio_redactions_unlisted = redactor.unlisted();
    }

    /// Records the final recording and how the call ended (also used for calls recovered after a crash).
    pub fn complete(&mut self, recording: &FinishedRecording, ended: SystemTime, outcome: CallOutcome) {
        self.ended_at = Some(crate::clock::rfc3339(ended));
        self.end_reason = Some(outcome.as_str().to_string());
        self.recording = Some(RecordingReport {
            file: "recording.wav.age".to_string(),
            sha256: recording.sha256.clone(),
            bytes: recording.bytes,
            sample_rate: self.sample_rate,
            channels: self.channel_count,
            frames: recording.frames,
        });
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn siprec_source() -> String {
    "siprec".to_string()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
