//! The appliance configuration file: TOML, every key optional (the embedded defaults make `airlock run`
//! work with no file), unknown keys rejected, and every error names the key it is about.
//! docs/CONFIG.md is the reference for operators; keep the two in step.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_runtime::{Cidr, GuardConfig};
use serde::Deserialize;

/// Everything the appliance can be told, after defaults are applied.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipSection,
    pub media: MediaSection,
    pub recording: RecordingSection,
    pub storage: StorageSection,
    pub metrics: MetricsSection,
    pub shutdown: ShutdownSection,
    pub voicestream: VoiceStreamSection,
    pub transcription: TranscriptionSection,
    pub outbox: OutboxSection,
    pub policy: PolicySection,
    pub control_api: ControlApiSection,
    pub status_page: StatusPageSection,
    pub hardware: HardwareSection,
    pub capture: CaptureSection,
}

/// `[hardware]`: the hardware profile of this box (a `hw/*.toml` file, format in hw/README.md); none by default.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HardwareSection {
    /// Path of the profile; validated at start, refused when it describes another CPU architecture.
    pub profile: Option<PathBuf>,
}

/// `[capture]`: local capture from a sound card — a line-in tap on an analog trunk or a desk phone — cut into
/// calls by level or by schedule (off while `device` is empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    /// The name of an `[[audio]]` entry of the hardware profile, or `alsa:<pcm>` for an ALSA PCM by name
    /// (one listed by ALSA's device hints); empty: off.
    pub device: String,
    /// The role of each captured channel, in the device's channel order: `agent`, `customer`, `supervisor`
    /// or `mixed` (both parties on one channel). One role records a mono call.
    pub roles: Vec<String>,
    /// Sample rate in Hz; 0: the profile entry's `rate_hz` (48000 for `alsa:`).
    pub rate_hz: u32,
    /// `level` (a call is sound on the line, ended by quiet) or `schedule` (back-to-back fixed segments).
    pub segmentation: String,
    /// Level: a frame (20 ms) at or above this RMS level, in dBFS, is sound.
    pub start_dbfs: f32,
    /// Level: how long the line must carry sound, in milliseconds, before a call starts.
    pub start_ms: u64,
    /// Level: quiet, in seconds, that ends a call.
    pub end_silence_secs: u64,
    /// Level: a call this long, in seconds, ends and the next one starts at once.
    pub max_call_secs: u64,
    /// Schedule: the length of each segment in seconds, cut where the wall clock (UTC) passes a multiple of
    /// it since the epoch (900: at :00, :15, :30, :45).
    pub schedule_secs: u64,
}

impl Default for CaptureSection {
    fn default() -> Self {
        CaptureSection {
            device: String::new(),
            roles: vec!["agent".into(), "customer".into()],
            rate_hz: 0,
            segmentation: "level".into(),
            start_dbfs: -45.0,
            start_ms: 300,
            end_silence_secs: 8,
            max_call_secs: 4 * 3600,
            schedule_secs: 900,
        }
    }
}

impl CaptureSection {
    fn validate(
        &self,
        hardware: Option<&airlock_hw::Profile>,
    ) -> Result<Option<airlock_runtime::CaptureSettings>, ConfigError> {
        if self.device.is_empty() {
            return Ok(None);
        }
        let (pcm, device_channels, profile_rate) = if let Some(pcm) = self.device.strip_prefix("alsa:") {
            if pcm.is_empty() || pcm.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "capture.device",
                    format!("{:?}: an ALSA PCM name follows `alsa:` (no spaces)", self.device),
                ));
            }
            (pcm.to_string(), None, 48_000)
        } else {
            let Some(profile) = hardware else {
                return Err(invalid(
                    "capture.device",
                    format!(
                        "{:?} must name an [[audio]] entry of the hardware profile, and no [hardware] profile \
                         is configured (or give an ALSA PCM as alsa:<pcm>)",
                        self.device
                    ),
                ));
            };
            let Some(audio) = profile.audio.iter().find(|audio| audio.name == self.device) else {
                let names: Vec<&str> = profile.audio.iter().map(|audio| audio.name.as_str()).collect();
                return Err(invalid(
                    "capture.device",
                    format!(
                        "no [[audio]] entry named {:?} in hardware profile {} (it has: {})",
                        self.device,
                        profile.id,
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            };
            if audio.direction == airlock_hw::Direction::Playback {
                return Err(invalid(
                    "capture.device",
                    format!("[[audio]] {:?} is a playback device", self.device),
                ));
            }
            let channels = u16::try_from(audio.channels).unwrap_or(u16::MAX);
            (
                format!("plughw:CARD={},DEV={}", audio.card, audio.device),
                Some(channels),
                audio.rate_hz,
            )
        };
        let mut roles: Vec<&'static str> = Vec::new();
        for role in &self.roles {
            let Some(known) = airlock_runtime::CAPTURE_ROLES
                .iter()
                .find(|known| **known == role)
            else {
                return Err(invalid(
                    "capture.roles",
                    format!(
                        "unknown role {role:?} (one of {})",
                        airlock_runtime::CAPTURE_ROLES.join(", ")
                    ),
                ));
            };
            if roles.contains(known) {
                return Err(invalid("capture.roles", format!("role {role:?} is listed twice")));
            }
            roles.push(known);
        }
        if roles.is_empty() {
            return Err(invalid("capture.roles", "name at least one channel's role"));
        }
        if shares_a_channel(&roles) {
            return Err(invalid(
                "capture.roles",
                "list agent and customer before supervisor and mixed: in this order two roles would be \
                 recorded on one channel (agent is channel 0, customer 1, supervisor 2 when there are three, \
                 the others take the next free one)",
            ));
        }
        let device_channels = device_channels.unwrap_or(roles.len() as u16);
        if roles.len() > usize::from(device_channels) {
            return Err(invalid(
                "capture.roles",
                format!(
                    "{} roles for a device with {device_channels} channels",
                    roles.len()
                ),
            ));
        }
        let rate_hz = if self.rate_hz == 0 {
            profile_rate
        } else {
            self.rate_hz
        };
        if !(8_000..=192_000).contains(&rate_hz) {
            return Err(invalid(
                "capture.rate_hz",
                "must be 8000–192000 (or 0: the device's)",
            ));
        }
        let segmentation = match self.segmentation.as_str() {
            "level" => {
                if !(-90.0..=-1.0).contains(&self.start_dbfs) {
                    return Err(invalid("capture.start_dbfs", "must be between -90 and -1 (dBFS)"));
                }
                if !(20..=10_000).contains(&self.start_ms) {
                    return Err(invalid("capture.start_ms", "must be between 20 and 10000"));
                }
                if !(1..=600).contains(&self.end_silence_secs) {
                    return Err(invalid("capture.end_silence_secs", "must be between 1 and 600"));
                }
                if !(60..=86_400).contains(&self.max_call_secs) {
                    return Err(invalid("capture.max_call_secs", "must be between 60 and 86400"));
                }
                airlock_runtime::Segmentation::Level(airlock_runtime::LevelConfig {
                    start_dbfs: self.start_dbfs,
                    start_after: Duration::from_millis(self.start_ms),
                    end_after: Duration::from_secs(self.end_silence_secs),
                    max_call: Duration::from_secs(self.max_call_secs),
                })
            }
            "schedule" => {
                if !(10..=86_400).contains(&self.schedule_secs) {
                    return Err(invalid("capture.schedule_secs", "must be between 10 and 86400"));
                }
                airlock_runtime::Segmentation::Schedule {
                    segment: Duration::from_secs(self.schedule_secs),
                }
            }
            other => {
                return Err(invalid(
                    "capture.segmentation",
                    format!("{other:?} is neither \"level\" nor \"schedule\""),
                ));
            }
        };
        Ok(Some(airlock_runtime::CaptureSettings {
            device: self.device.clone(),
            pcm,
            device_channels,
            roles,
            rate_hz,
            segmentation,
        }))
    }
}

/// `[control_api]`: the HTTPS listener through which an agent-desktop integration pauses and resumes the
/// recording of a live call (off while `listen` is empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlApiSection {
    /// Listen address, e.g. `127.0.0.1:8444`; "" = off.
    pub listen: String,
    /// PEM certificate chain and private key of the listener (always TLS).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// File whose first line is the bearer token clients present (at least 16 characters).
    pub token_file: PathBuf,
    /// Connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Seconds a client has for its TLS handshake and request.
    pub request_timeout_secs: u64,
}

impl Default for ControlApiSection {
    fn default() -> Self {
        ControlApiSection {
            listen: String::new(),
            certificate: PathBuf::new(),
            private_key: PathBuf::new(),
            token_file: PathBuf::new(),
            max_connections: 64,
            request_timeout_secs: 10,
        }
    }
}

/// Shortest bearer token accepted for the control API.
const MIN_TOKEN_CHARS: usize = 16;

impl ControlApiSection {
    fn validate(&self) -> Result<Option<airlock_runtime::ControlApiSettings>, ConfigError> {
        let Some(listen) = optional_addr("control_api.listen", &self.listen)? else {
            return Ok(None);
        };
        if self.certificate.as_os_str().is_empty() {
            return Err(invalid(
                "control_api.certificate",
                "must name the PEM certificate chain of the listener",
            ));
        }
        if self.private_key.as_os_str().is_empty() {
            return Err(invalid(
                "control_api.private_key",
                "must name the PEM private key",
            ));
        }
        if self.token_file.as_os_str().is_empty() {
            return Err(invalid(
                "control_api.token_file",
                "must name a file holding the bearer token",
            ));
        }
        let token = first_line_of("control_api.token_file", &self.token_file)?;
        let token = token.trim();
        if token.chars().count() < MIN_TOKEN_CHARS
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "control_api.token_file",
                format!(
                    "the token (first line) must be at least {MIN_TOKEN_CHARS} characters without spaces"
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("control_api.max_connections", "must be at least 1"));
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            return Err(invalid(
                "control_api.request_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        let settings = airlock_runtime::ControlApiSettings {
            listen,
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
            token: token.to_string(),
            max_connections: self.max_connections,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        };
        airlock_runtime::validate_control_api(&settings)
            .map_err(|error| invalid("control_api", error.to_string()))?;
        Ok(Some(settings))
    }
}

/// Whether, recorded one channel per role (as the VoiceStream recorder places roles: agent 0, customer 1,
/// supervisor 2 when there are three channels, anything else on the least used), two roles of a capture would
/// land on one channel.
fn shares_a_channel(roles: &[&str]) -> bool {
    let channels = roles.len();
    let mut used = vec![0usize; channels];
    for role in roles {
        let fixed = match *role {
            "agent" => Some(0),
            "customer" => Some(1),
            "supervisor" => Some(2),
            _ => None,
        };
        let channel = match fixed {
            Some(channel) if channel < channels => channel,
            _ => (0..channels).min_by_key(|&channel| used[channel]).unwrap_or(0),
        };
        used[channel] += 1;
    }
    used.iter().any(|&count| count > 1)
}

/// `[status_page]`: the technician's HTTPS status page on the management NIC (off while `listen` is empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPageSection {
    /// Listen address, e.g. the management NIC's `192.168.50.10:8443`; "" = off.
    pub listen: String,
    /// PEM certificate chain and private key of the listener (always TLS).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// File whose first line is the technician password's Argon2 hash (`airlock status-password` writes it).
    pub password_file: PathBuf,
    /// Minutes without a request after which a login ends.
    pub session_idle_minutes: u64,
    /// Connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Seconds a client has for its TLS handshake and request.
    pub request_timeout_secs: u64,
}

impl Default for StatusPageSection {
    fn default() -> Self {
        StatusPageSection {
            listen: String::new(),
            certificate: PathBuf::new(),
            private_key: PathBuf::new(),
            password_file: PathBuf::new(),
            session_idle_minutes: 15,
            max_connections: 16,
            request_timeout_secs: 10,
        }
    }
}

impl StatusPageSection {
    /// The page's settings; `selftest` is how it runs `airlock selftest` (the binary fills it in).
    fn validate(&self) -> Result<Option<airlock_runtime::StatusPageSettings>, ConfigError> {
        let Some(listen) = optional_addr("status_page.listen", &self.listen)? else {
            return Ok(None);
        };
        for (key, path, what) in [
            (
                "status_page.certificate",
                &self.certificate,
                "the PEM certificate chain of the listener",
            ),
            (
                "status_page.private_key",
                &self.private_key,
                "the PEM private key",
            ),
            (
                "status_page.password_file",
                &self.password_file,
                "a file holding the password hash",
            ),
        ] {
            if path.as_os_str().is_empty() {
                return Err(invalid(key, format!("must name {what}")));
            }
        }
        let password_hash = first_line_of("status_page.password_file", &self.password_file)?
            .trim()
            .to_string();
        airlock_runtime::check_password_hash(&password_hash)
            .map_err(|reason| invalid("status_page.password_file", reason))?;
        if !(1..=1440).contains(&self.session_idle_minutes) {
            return Err(invalid(
                "status_page.session_idle_minutes",
                "must be between 1 and 1440",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("status_page.max_connections", "must be at least 1"));
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            return Err(invalid(
                "status_page.request_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        let settings = airlock_runtime::StatusPageSettings {
            listen,
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
            password_hash,
            session_idle: Duration::from_secs(self.session_idle_minutes * 60),
            max_connections: self.max_connections,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            selftest: airlock_runtime::SelftestCommand::Child {
                program: PathBuf::from("airlock"),
                args: Vec::new(),
            },
        };
        airlock_runtime::validate_status_page(&settings).map_err(|reason| invalid("status_page", reason))?;
        Ok(Some(settings))
    }
}

/// `[policy]`: what may leave the appliance, per artifact kind, and how long it is kept where it goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// `encrypted` (the age-encrypted recording leaves) or `never` (it is purged at the hand-over).
    pub recording: String,
    /// `redacted` (redacted transcripts and segment events leave) or `never`.
    pub transcript: String,
    /// The sealed manifest fields that leave: any of `metadata_sealed`, `participants_sealed`.
    pub manifest_sealed: Vec<String>,
    /// Retention classes: name → days a call's objects are kept where they are delivered (1–36500), or a
    /// table `{ days, keep_on_device, legal_hold }`.
    pub retention_classes: std::collections::BTreeMap<String, ClassSection>,
    /// The class of calls no rule places elsewhere.
    pub default_retention_class: String,
    /// Rules placing a call in a class by its metadata; the first that matches wins.
    pub retention_rules: Vec<RuleSection>,
    /// Every call under legal hold.
    pub legal_hold: bool,
}

/// One retention class: its days alone, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClassSection {
    Days(u32),
    Table(ClassTable),
}

/// `[policy.retention_classes.<name>]` as a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTable {
    /// Days a call's objects are kept where they are delivered (1–36500).
    pub days: u32,
    /// How long delivered artifacts stay on the device: a number and a unit (`s`, `m`, `h`, `d`), e.g.
    /// "30d"; "0" (the default): purged as soon as the sink has them.
    #[serde(default)]
    pub keep_on_device: Option<String>,
    /// The class's calls are under legal hold (as `policy.legal_hold` puts every call).
    #[serde(default)]
    pub legal_hold: bool,
}

/// `[[policy.retention_rules]]`: conditions on a call's metadata (all given must hold) and its class.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSection {
    /// `{ name, value }`: a SIPREC extension element with this local name and exact text.
    pub siprec_extension: Option<ExtensionSection>,
    /// A SIPREC participant's AoR domain.
    pub participant_domain: Option<String>,
    /// A VoiceStream campaign.
    pub campaign: Option<String>,
    /// A VoiceStream skill.
    pub skill: Option<String>,
    /// The class (a name in `policy.retention_classes`).
    pub class: String,
}

/// `siprec_extension = { name = "...", value = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionSection {
    pub name: String,
    pub value: String,
}

impl Default for PolicySection {
    fn default() -> Self {
        let policy = airlock_runtime::Policy::default();
        PolicySection {
            recording: "encrypted".into(),
            transcript: "redacted".into(),
            manifest_sealed: policy.manifest_sealed,
            retention_classes: policy
                .retention_classes
                .into_iter()
                .map(|(class, days)| (class, ClassSection::Days(days)))
                .collect(),
            default_retention_class: policy.default_retention_class,
            retention_rules: Vec::new(),
            legal_hold: policy.legal_hold,
        }
    }
}

/// Longest `keep_on_device`: 36500 days.
const MAX_KEEP_ON_DEVICE_SECS: u64 = 36_500 * 86_400;

/// A duration written as a whole number and a unit (`s`, `m`, `h`, `d`), or "0", in seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let number = &text[..text.len() - 1];
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(unit)
}

impl PolicySection {
    fn validate(&self) -> Result<airlock_runtime::Policy, ConfigError> {
        let recording = match self.recording.as_str() {
            "encrypted" => airlock_runtime::RecordingRelease::Encrypted,
            "never" => airlock_runtime::RecordingRelease::Never,
            _ => return Err(invalid("policy.recording", "must be \"encrypted\" or \"never\"")),
        };
        let transcript = match self.transcript.as_str() {
            "redacted" => airlock_runtime::TranscriptRelease::Redacted,
            "never" => airlock_runtime::TranscriptRelease::Never,
            _ => return Err(invalid("policy.transcript", "must be \"redacted\" or \"never\"")),
        };
        if let Some(unknown) = self
            .manifest_sealed
            .iter()
            .find(|field| !airlock_runtime::SEALED_MANIFEST_FIELDS.contains(&field.as_str()))
        {
            return Err(invalid(
                "policy.manifest_sealed",
                format!(
                    "{unknown:?} is not one of {}",
                    airlock_runtime::SEALED_MANIFEST_FIELDS.join(", ")
                ),
            ));
        }
        let mut policy = airlock_runtime::Policy {
            recording,
            transcript,
            manifest_sealed: self.manifest_sealed.clone(),
            retention_classes: Default::default(),
            default_retention_class: self.default_retention_class.clone(),
            legal_hold: self.legal_hold,
            keep_on_device_secs: Default::default(),
            held_classes: Default::default(),
            retention_rules: Vec::new(),
        };
        for (class, section) in &self.retention_classes {
            if !is_key_part(class) {
                return Err(invalid(
                    "policy.retention_classes",
                    format!("class {class:?} must be 1–64 letters, digits, '-', '_' or '.'"),
                ));
            }
            let (days, keep, hold) = match section {
                ClassSection::Days(days) => (*days, None, false),
                ClassSection::Table(table) => (table.days, table.keep_on_device.as_deref(), table.legal_hold),
            };
            if !(1..=36_500).contains(&days) {
                return Err(invalid(
                    "policy.retention_classes",
                    format!("class {class:?}: days must be between 1 and 36500"),
                ));
            }
            let keep = keep
                .map(|text| parse_duration(text).filter(|secs| *secs <= MAX_KEEP_ON_DEVICE_SECS))
                .unwrap_or(Some(0))
                .ok_or_else(|| {
                    invalid(
                        format!("policy.retention_classes.{class}.keep_on_device"),
                        "must be a whole number with a unit s, m, h or d (e.g. \"30d\"), at most 36500 days, or \"0\"",
                    )
                })?;
            policy.retention_classes.insert(class.clone(), days);
            if keep > 0 {
                policy.keep_on_device_secs.insert(class.clone(), keep);
            }
            if hold {
                policy.held_classes.insert(class.clone());
            }
        }
        if !policy
            .retention_classes
            .contains_key(&self.default_retention_class)
        {
            return Err(invalid(
                "policy.default_retention_class",
                format!(
                    "{:?} is not a class in policy.retention_classes",
                    self.default_retention_class
                ),
            ));
        }
        for (index, rule) in self.retention_rules.iter().enumerate() {
            let key = |field: &str| format!("policy.retention_rules[{index}]{field}");
            let text = |field: &str, value: &Option<String>| match value {
                Some(value) if value.trim().is_empty() => {
                    Err(invalid(key(&format!(".{field}")), "must not be empty"))
                }
                _ => Ok(value.clone()),
            };
            let siprec_extension = match &rule.siprec_extension {
                Some(extension) if extension.name.trim().is_empty() => {
                    return Err(invalid(key(".siprec_extension.name"), "must not be empty"));
                }
                Some(extension) => Some(airlock_runtime::ExtensionMatch {
                    name: extension.name.clone(),
                    value: extension.value.trim().to_owned(),
                }),
                None => None,
            };
            let rule = airlock_runtime::RetentionRule {
                siprec_extension,
                participant_domain: text("participant_domain", &rule.participant_domain)?,
                campaign: text("campaign", &rule.campaign)?,
                skill: text("skill", &rule.skill)?,
                class: rule.class.clone(),
            };
            if rule.is_empty() {
                return Err(invalid(
                    key(""),
                    "needs at least one of siprec_extension, participant_domain, campaign, skill",
                ));
            }
            if !policy.retention_classes.contains_key(&rule.class) {
                return Err(invalid(
                    key(".class"),
                    format!("{:?} is not a class in policy.retention_classes", rule.class),
                ));
            }
            policy.retention_rules.push(rule);
        }
        Ok(policy)
    }
}

/// `[sip]`: where SIPREC signalling is accepted and how strictly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// UDP listen address; an empty string disables UDP.
    pub udp: String,
    /// TCP listen address; an empty string disables TCP.
    pub tcp: String,
    /// Require both `Require: siprec` and `+sip.src` (RFC 7866 §6.2) instead of accepting either.
    pub strict_src: bool,
    /// Calls recorded at once; further INVITEs get 503 with Retry-After.
    pub max_calls: usize,
    /// Seconds put in Retry-After when refusing a call for capacity.
    pub retry_after_secs: u32,
    /// Accept SDES-SRTP keys (`a=crypto`) that arrive over UDP or TCP, where anyone on the path can read
    /// them. Off: such offers get 488. Only for labs and networks that are encrypted below SIP.
    pub insecure_sdes_without_tls: bool,
    /// Source networks (CIDR or single addresses) allowed to send SIP; empty allows every source. Others
    /// get 403 "Forbidden: source not allowed".
    pub allow_sources: Vec<String>,
    /// SIP messages per second each source IP may send on average; 0 disables the rate limit.
    pub rate_limit_per_sec: u32,
    /// Messages a source may send at once above that rate (the bucket size).
    pub rate_limit_burst: u32,
    /// Inbound TCP connections one source IP may hold open at once.
    pub max_tcp_connections_per_source: usize,
    /// `[sip.tls]`: SIP over TLS; absent: no TLS listener.
    pub tls: Option<TlsSection>,
}

/// `[sip.tls]`: the SIP-over-TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Listen address, e.g. `0.0.0.0:5061`.
    pub listen: String,
    /// PEM file: the server certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM file: the server's private key.
    pub private_key: PathBuf,
    /// PEM file of CAs that sign SRC client certificates; set: mutual TLS is required.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Client identities allowed (DNS/URI subjectAltName or subject CN); empty: any the CA signed.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Seconds a client has to finish the TLS handshake.
    #[serde(default = "TlsSection::default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may stay silent before it is closed.
    #[serde(default = "TlsSection::default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

impl TlsSection {
    fn default_handshake_timeout_secs() -> u64 {
        10
    }

    fn default_idle_timeout_secs() -> u64 {
        900
    }
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            udp: "127.0.0.1:5060".into(),
            tcp: "127.0.0.1:5060".into(),
            strict_src: false,
            max_calls: 256,
            retry_after_secs: 30,
            insecure_sdes_without_tls: false,
            tls: None,
            allow_sources: Vec::new(),
            rate_limit_per_sec: 2000,
            rate_limit_burst: 4000,
            max_tcp_connections_per_source: 32,
        }
    }
}

/// `[media]`: RTP sockets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Address RTP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address written into SDP answers (defaults to `bind_ip`).
    pub advertise_ip: Option<IpAddr>,
    /// First port of the RTP range (even).
    pub port_min: u16,
    /// Last port of the RTP range.
    pub port_max: u16,
    /// A call whose unpaused streams all stay silent (no RTP at all) this long is ended with reason
    /// `rtp_timeout`. Long by default: some SRCs pause by simply stopping RTP.
    pub inactivity_timeout_secs: u64,
    /// How long a packet may wait in the reorder buffer for a gap to fill, in milliseconds.
    pub reorder_delay_ms: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_ip: None,
            port_min: 20000,
            port_max: 20999,
            inactivity_timeout_secs: 300,
            reorder_delay_ms: 60,
        }
    }
}

/// `[voicestream]`: the Five9 VoiceStream gRPC destination (off unless `listen` is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceStreamSection {
    /// Listen address of the gRPC server; an empty string disables VoiceStream.
    pub listen: String,
    /// Serve plaintext HTTP/2 instead of TLS; only allowed when `listen` is a loopback address.
    pub insecure_plaintext: bool,
    /// PEM certificate chain for TLS (required unless `insecure_plaintext`).
    pub certificate: Option<PathBuf>,
    /// PEM private key for TLS.
    pub private_key: Option<PathBuf>,
    /// Concurrent streams (call legs); more are refused with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// A leg that sends nothing this long is ended as lost.
    pub idle_timeout_secs: u64,
    /// After the last leg of a call ends, how long a late or reconnecting leg may still join it.
    pub leg_linger_secs: u64,
    /// HTTP/2 keepalive ping interval and how long to wait for its ack.
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    /// Recording channels per call: agent, customer, and (with 3) supervisor; other legs are mixed.
    pub channels: usize,
    /// Subscription id → accepted trust tokens (`[voicestream.trust_tokens]`).
    pub trust_tokens: std::collections::BTreeMap<String, Vec<String>>,
    /// `[voicestream.webhooks]`: Five9 CTI and stream-status webhooks; absent: off.
    pub webhooks: Option<WebhooksSection>,
}

/// `[voicestream.webhooks]`: the HTTPS listener for Five9's webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// Listen address, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// Plaintext HTTP; only allowed on a loopback listen address.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// PEM certificate chain and key; default: those of `[voicestream]`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The CTI subscription's trust token: GET verification answers its SHA-256 hex.
    pub trust_token: String,
    /// API keys accepted in `x-api-key` / `X-F9-APIKEY` on POSTs.
    pub api_keys: Vec<String>,
}

impl Default for VoiceStreamSection {
    fn default() -> Self {
        VoiceStreamSection {
            listen: String::new(),
            insecure_plaintext: false,
            certificate: None,
            private_key: None,
            max_streams: 512,
            max_message_bytes: 256 * 1024,
            idle_timeout_secs: 30,
            leg_linger_secs: 5,
            keepalive_interval_secs: 300,
            keepalive_timeout_secs: 20,
            channels: 2,
            trust_tokens: std::collections::BTreeMap::new(),
            webhooks: None,
        }
    }
}

impl VoiceStreamSection {
    fn validate(&self) -> Result<Option<airlock_runtime::VoiceStreamSettings>, ConfigError> {
        let Some(listen) = optional_addr("voicestream.listen", &self.listen)? else {
            return Ok(None);
        };
        let tls = if self.insecure_plaintext {
            if !listen.ip().is_loopback() {
                return Err(invalid(
                    "voicestream.insecure_plaintext",
                    "plaintext is only allowed on a loopback listen address; configure certificate and private_key",
                ));
            }
            None
        } else {
            let certificate = self.certificate.clone().ok_or_else(|| {
                invalid(
                    "voicestream.certificate",
                    "required for TLS (or set insecure_plaintext on loopback)",
                )
            })?;
            let private_key = self
                .private_key
                .clone()
                .ok_or_else(|| invalid("voicestream.private_key", "required for TLS"))?;
            Some((certificate, private_key))
        };
        if self.trust_tokens.is_empty()
            || self
                .trust_tokens
                .values()
                .any(|tokens| tokens.is_empty() || tokens.iter().any(String::is_empty))
        {
            return Err(invalid(
                "voicestream.trust_tokens",
                "needs at least one subscription, each with non-empty tokens",
            ));
        }
        for (key, value) in [
            ("voicestream.max_streams", self.max_streams as u64),
            ("voicestream.max_message_bytes", self.max_message_bytes as u64),
            ("voicestream.idle_timeout_secs", self.idle_timeout_secs),
            (
                "voicestream.keepalive_interval_secs",
                self.keepalive_interval_secs,
            ),
            ("voicestream.keepalive_timeout_secs", self.keepalive_timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(2..=3).contains(&self.channels) {
            return Err(invalid("voicestream.channels", "must be 2 or 3"));
        }
        let settings = airlock_runtime::VoiceStreamSettings {
            listen,
            tls,
            max_streams: self.max_streams,
            max_message_bytes: self.max_message_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            leg_linger: Duration::from_secs(self.leg_linger_secs),
            keepalive_interval: Duration::from_secs(self.keepalive_interval_secs),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_secs),
            channels: self.channels,
            trust_tokens: self.trust_tokens.clone(),
            webhooks: self
                .webhooks
                .as_ref()
                .map(|webhooks| webhooks.validate(self))
                .transpose()?,
        };
        airlock_runtime::validate_voicestream(&settings)
            .map_err(|error| invalid("voicestream", error.to_string()))?;
        Ok(Some(settings))
    }
}

impl WebhooksSection {
    fn validate(
        &self,
        voicestream: &VoiceStreamSection,
    ) -> Result<airlock_runtime::WebhookSettings, ConfigError> {
        let listen = optional_addr("voicestream.webhooks.listen", &self.listen)?.ok_or_else(|| {
            invalid(
                "voicestream.webhooks.listen",
                "must be set in [voicestream.webhooks]",
            )
        })?;
        let tls = if self.insecure_plaintext {
            if !listen.ip().is_loopback() {
                return Err(invalid(
                    "voicestream.webhooks.insecure_plaintext",
                    "plaintext is only allowed on a loopback listen address",
                ));
            }
            None
        } else {
            let certificate = self
                .certificate
                .clone()
                .or_else(|| voicestream.certificate.clone());
            let private_key = self
                .private_key
                .clone()
                .or_else(|| voicestream.private_key.clone());
            match (certificate, private_key) {
                (Some(certificate), Some(private_key)) => Some((certificate, private_key)),
                _ => {
                    return Err(invalid(
                        "voicestream.webhooks.certificate",
                        "required for HTTPS (here or in [voicestream])",
                    ));
                }
            }
        };
        if self.trust_token.is_empty() {
            return Err(invalid("voicestream.webhooks.trust_token", "must not be empty"));
        }
        if self.api_keys.is_empty() || self.api_keys.iter().any(String::is_empty) {
            return Err(invalid(
                "voicestream.webhooks.api_keys",
                "needs at least one non-empty key",
            ));
        }
        Ok(airlock_runtime::WebhookSettings {
            listen,
            tls,
            trust_token: self.trust_token.clone(),
            api_keys: self.api_keys.clone(),
        })
    }
}

/// `[transcription]`: on-device speech-to-text of every call (on by default; the models come from
/// `ci/install-asr`, never from the network at run time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscriptionSection {
    pub enabled: bool,
    /// Where the model files are; empty means `<storage.data_dir>/models`.
    pub models_dir: PathBuf,
    /// The whisper.cpp (ggml) model, relative to `models_dir` or absolute. Any Whisper size may be used.
    pub model: PathBuf,
    /// The Silero VAD ONNX model, relative to `models_dir` or absolute.
    pub vad_model: PathBuf,
    /// The ONNX Runtime shared library that runs the VAD, relative to `models_dir` or absolute.
    pub onnxruntime_library: PathBuf,
    /// Whisper worker threads (each holds its own decoder state, ≈ 125 MB for tiny); 0 = one per CPU core.
    pub workers: usize,
    /// Speech segments that may wait for a worker; when full the oldest is dropped (and shows as a gap).
    pub job_queue: usize,
    /// Pieces of call audio that may wait for the VAD thread; when full new audio is dropped (a gap).
    pub audio_queue_chunks: usize,
    /// Segments waiting longer than this put the engine in the `lagging` state.
    pub lag_alarm_secs: u64,
    /// How long a finished call waits for its last segments before its transcript is written incomplete.
    pub finish_timeout_secs: u64,
    /// The longest the recorder holds a call's audio back until its words are transcribed and checked
    /// (audio redaction); audio still undecided then is silenced and listed as `UNVERIFIED`. Costs memory:
    /// sample rate × channels × 3 bytes per second held, per call.
    pub audio_hold_max_secs: u64,
    /// Speech probability (0–1) at which the VAD starts a segment.
    pub vad_threshold: f32,
    /// Quiet that ends a segment, in milliseconds.
    pub hangover_ms: u64,
    /// Bursts of speech shorter than this are ignored, in milliseconds.
    pub min_speech_ms: u64,
    /// A segment longer than this, in seconds, ends at the next pause of `split_hangover_ms`.
    pub split_after_secs: u64,
    /// The pause that ends a segment longer than `split_after_secs`, in milliseconds (never more than
    /// `hangover_ms` in effect).
    pub split_hangover_ms: u64,
    /// Longest segment before it is cut, in seconds (Whisper's window is 30 s).
    pub max_segment_secs: u64,
    /// Smallest whisper encoder context in 20 ms frames (1500 = the full 30 s window, no trimming).
    pub audio_ctx_floor: u32,
    /// Let whisper.cpp use flash attention.
    pub flash_attention: bool,
}

impl Default for TranscriptionSection {
    fn default() -> Self {
        let endpoint = airlock_transcribe::endpoint::EndpointConfig::default();
        let pool = airlock_transcribe::PoolConfig::default();
        let decoder = airlock_transcribe::DecoderConfig::default();
        TranscriptionSection {
            enabled: true,
            models_dir: PathBuf::new(),
            model: PathBuf::from("ggml-tiny.en-q8_0.bin"),
            vad_model: PathBuf::from("silero_vad.onnx"),
            onnxruntime_library: PathBuf::from("onnxruntime/libonnxruntime.so"),
            workers: 0,
            job_queue: pool.job_queue,
            audio_queue_chunks: pool.audio_queue_chunks,
            lag_alarm_secs: pool.lag_alarm.as_secs(),
            finish_timeout_secs: 30,
            audio_hold_max_secs: 45,
            vad_threshold: endpoint.threshold,
            hangover_ms: endpoint.hangover.as_millis() as u64,
            min_speech_ms: endpoint.min_speech.as_millis() as u64,
            split_after_secs: endpoint.split_after.as_secs(),
            split_hangover_ms: endpoint.split_hangover.as_millis() as u64,
            max_segment_secs: endpoint.max_segment.as_secs(),
            audio_ctx_floor: decoder.audio_ctx_floor,
            flash_attention: decoder.flash_attention,
        }
    }
}

impl TranscriptionSection {
    fn validate(
        &self,
        data_dir: &Path,
    ) -> Result<Option<airlock_runtime::TranscriptionSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let models_dir = if self.models_dir.as_os_str().is_empty() {
            data_dir.join("models")
        } else {
            self.models_dir.clone()
        };
        if !(0.05..=0.95).contains(&self.vad_threshold) {
            return Err(invalid(
                "transcription.vad_threshold",
                "must be between 0.05 and 0.95",
            ));
        }
        if !(100..=5000).contains(&self.hangover_ms) {
            return Err(invalid(
                "transcription.hangover_ms",
                "must be between 100 and 5000",
            ));
        }
        if self.min_speech_ms > 5000 {
            return Err(invalid("transcription.min_speech_ms", "must be at most 5000"));
        }
        if !(2..=28).contains(&self.max_segment_secs) {
            return Err(invalid(
                "transcription.max_segment_secs",
                "must be between 2 and 28 (whisper decodes at most 30 s at once)",
            ));
        }
        if !(1..=28).contains(&self.split_after_secs) {
            return Err(invalid(
                "transcription.split_after_secs",
                "must be between 1 and 28 (at or above max_segment_secs it never applies)",
            ));
        }
        if !(100..=5000).contains(&self.split_hangover_ms) {
            return Err(invalid(
                "transcription.split_hangover_ms",
                "must be between 100 and 5000",
            ));
        }
        if !(64..=1500).contains(&self.audio_ctx_floor) {
            return Err(invalid(
                "transcription.audio_ctx_floor",
                "must be between 64 and 1500",
            ));
        }
        if self.workers > 64 {
            return Err(invalid("transcription.workers", "must be at most 64"));
        }
        if self.job_queue == 0 || self.job_queue > 4096 {
            return Err(invalid("transcription.job_queue", "must be between 1 and 4096"));
        }
        if self.audio_queue_chunks == 0 || self.audio_queue_chunks > 1 << 20 {
            return Err(invalid(
                "transcription.audio_queue_chunks",
                "must be between 1 and 1048576",
            ));
        }
        if self.lag_alarm_secs == 0 {
            return Err(invalid("transcription.lag_alarm_secs", "must be at least 1"));
        }
        // The hold must cover the longest segment, its decoding and the redactor's hold.
        if !(self.max_segment_secs + 5..=120).contains(&self.audio_hold_max_secs) {
            return Err(invalid(
                "transcription.audio_hold_max_secs",
                "must be at least transcription.max_segment_secs + 5 and at most 120",
            ));
        }
        let workers = if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            self.workers
        };
        let endpoint = airlock_transcribe::endpoint::EndpointConfig {
            threshold: self.vad_threshold,
            hangover: Duration::from_millis(self.hangover_ms),
            min_speech: Duration::from_millis(self.min_speech_ms),
            split_after: Duration::from_secs(self.split_after_secs),
            split_hangover: Duration::from_millis(self.split_hangover_ms),
            max_segment: Duration::from_secs(self.max_segment_secs),
            ..airlock_transcribe::endpoint::EndpointConfig::default()
        };
        Ok(Some(airlock_runtime::TranscriptionSettings {
            model: models_dir.join(&self.model),
            vad_model: models_dir.join(&self.vad_model),
            onnxruntime_library: models_dir.join(&self.onnxruntime_library),
            pool: airlock_transcribe::PoolConfig {
                workers,
                job_queue: self.job_queue,
                audio_queue_chunks: self.audio_queue_chunks,
                lag_alarm: Duration::from_secs(self.lag_alarm_secs),
                endpoint,
            },
            decoder: airlock_transcribe::DecoderConfig {
                audio_ctx_floor: self.audio_ctx_floor,
                flash_attention: self.flash_attention,
                ..airlock_transcribe::DecoderConfig::default()
            },
            finish_timeout: Duration::from_secs(self.finish_timeout_secs),
            audio_hold_max: Duration::from_secs(self.audio_hold_max_secs),
        }))
    }
}

/// Checks that the transcription model files exist and the whisper model is structurally sound (what
/// check-config can know without loading them); errors name the key.
pub fn check_transcription_files(
    settings: &airlock_runtime::TranscriptionSettings,
) -> Result<(), ConfigError> {
    let this = settings;
    let hint = "install the models with ci/install-asr, or set [transcription] enabled = false";
    let file = std::fs::File::open(&this.model).map_err(|error| {
        invalid(
            "transcription.model",
            format!("{}: {error} ({hint})", this.model.display()),
        )
    })?;
    airlock_transcribe::model::check_model(std::io::BufReader::with_capacity(1 << 20, file)).map_err(
        |error| {
            invalid(
                "transcription.model",
                format!("{}: not a usable whisper model: {error}", this.model.display()),
            )
        },
    )?;
    for (key, path) in [
        ("transcription.vad_model", &this.vad_model),
        ("transcription.onnxruntime_library", &this.onnxruntime_library),
    ] {
        if !path.is_file() {
            return Err(invalid(key, format!("{}: no such file ({hint})", path.display())));
        }
    }
    Ok(())
}

/// Loads ONNX Runtime and the VAD model once, as start-up will (check-config only: a corrupt library or
/// model is found before the appliance is restarted with it).
pub fn check_vad_loads(settings: &airlock_runtime::TranscriptionSettings) -> Result<(), ConfigError> {
    airlock_transcribe::SileroModel::load(&settings.vad_model, &settings.onnxruntime_library)
        .map(drop)
        .map_err(|error| {
            invalid(
                "transcription.vad_model / transcription.onnxruntime_library",
                error.to_string(),
            )
        })
}

/// `[recording]`: who can decrypt what the appliance records.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSection {
    /// age X25519 recipients (`age1…`). Empty: a development identity is generated in the data directory.
    pub recipients: Vec<String>,
}

/// `[storage]`: where calls are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub data_dir: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            data_dir: PathBuf::from("./airlock-data"),
        }
    }
}

/// `[outbox]`: the durable spool everything leaves through, and the object key layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Spool size (records and artifact files) at which new calls are refused, in MiB (fractions allowed).
    pub max_mib: f64,
    /// Room kept below `max_mib` for calls already accepted, in MiB.
    pub reserve_mib: f64,
    /// The site's id: first part of every object key (letters, digits, `-`, `_`, `.`).
    pub site: String,
    /// Optional prefix before the site in object keys (`/`-separated parts like `site`).
    pub key_prefix: String,
    /// `[outbox.mqtt]`: the broker events go to; absent: `uplink/events.jsonl`.
    pub mqtt: Option<MqttSection>,
    /// `[outbox.s3]`: the bucket objects go to; absent: the `uplink/` directory.
    pub s3: Option<S3Section>,
}

/// `[outbox.s3]`: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …), written create-only with SHA-256
/// checksums.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// `https://host[:port]` of the service ("" for AWS's endpoint of `region`); plain `http://` only on
    /// loopback.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`); false for virtual-hosted style.
    pub path_style: bool,
    /// PEM CA bundle for a service whose certificate a public CA did not sign ("" for the system's roots).
    pub ca: PathBuf,
    /// Access key id and a file holding the secret key (its first line). Both empty: the environment's
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
    pub access_key_id: String,
    pub secret_access_key_file: PathBuf,
    /// Objects larger than this many MiB (5–5120) go as multipart uploads of `part_size_mib` parts (5–256).
    pub multipart_threshold_mib: u64,
    pub part_size_mib: u64,
    /// `[outbox.s3.object_lock]`: WORM retention on every object; absent: none.
    pub object_lock: Option<ObjectLockSection>,
}

impl Default for S3Section {
    fn default() -> Self {
        S3Section {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            path_style: true,
            ca: PathBuf::new(),
            access_key_id: String::new(),
            secret_access_key_file: PathBuf::new(),
            multipart_threshold_mib: 64,
            part_size_mib: 16,
            object_lock: None,
        }
    }
}

/// `[outbox.s3.object_lock]`: S3 Object Lock on every object written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectLockSection {
    /// `compliance` (nobody can delete or shorten) or `governance` (privileged users can).
    pub mode: String,
    /// Days each object stays locked (1–36500), counted from when it entered the outbox.
    pub retention_days: u32,
    /// Whether every object also gets a legal hold.
    pub legal_hold: bool,
    /// Upload nothing unless the bucket reports Object Lock enabled.
    pub require_locked_bucket: bool,
}

impl Default for ObjectLockSection {
    fn default() -> Self {
        ObjectLockSection {
            mode: "compliance".into(),
            retention_days: 2557,
            legal_hold: false,
            require_locked_bucket: true,
        }
    }
}

/// The first line of a secret file named by config `key` (the rest is ignored; the secret is never logged).
fn first_line_of(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid(key, format!("{}: {error}", path.display())))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Whether an endpoint's host is this machine (where plain HTTP is tolerated).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').split(']').next().unwrap_or(host);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

impl S3Section {
    fn validate(&self) -> Result<airlock_runtime::S3Settings, ConfigError> {
        if !self.endpoint.is_empty() {
            let (scheme, rest) = self
                .endpoint
                .split_once("://")
                .ok_or_else(|| invalid("outbox.s3.endpoint", "must be https://host[:port]"))?;
            let authority = rest.split('/').next().unwrap_or_default();
            let host = match authority.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => host,
                _ => authority,
            };
            if host.is_empty() || !rest.trim_end_matches('/').eq(authority) {
                return Err(invalid(
                    "outbox.s3.endpoint",
                    "must be https://host[:port] without a path",
                ));
            }
            match scheme {
                "https" => {}
                "http" if is_loopback_host(host) => {}
                "http" => {
                    return Err(invalid(
                        "outbox.s3.endpoint",
                        "plain http:// is allowed only on loopback; use https://",
                    ));
                }
                _ => return Err(invalid("outbox.s3.endpoint", "must be https://host[:port]")),
            }
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "outbox.s3.region",
                "must be a region name like us-east-1",
            ));
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !self.bucket.starts_with(['-', '.'])
            && !self.bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(invalid(
                "outbox.s3.bucket",
                "must be an S3 bucket name: 3–63 lowercase letters, digits, '-' or '.'",
            ));
        }
        let ca = if self.ca.as_os_str().is_empty() {
            None
        } else {
            airlock_runtime::check_s3_ca_bundle(&self.ca).map_err(|why| invalid("outbox.s3.ca", why))?;
            Some(self.ca.clone())
        };
        let (access_key_id, secret_access_key, session_token) = match (
            self.access_key_id.is_empty(),
            self.secret_access_key_file.as_os_str().is_empty(),
        ) {
            (false, false) => {
                let secret = first_line_of("outbox.s3.secret_access_key_file", &self.secret_access_key_file)?
                    .trim()
                    .to_string();
                if secret.is_empty() {
                    return Err(invalid(
                        "outbox.s3.secret_access_key_file",
                        format!(
                            "{}: the first line is empty",
                            self.secret_access_key_file.display()
                        ),
                    ));
                }
                (self.access_key_id.clone(), secret, None)
            }
            (true, true) => {
                let from_env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
                match (from_env("AWS_ACCESS_KEY_ID"), from_env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => (id, secret, from_env("AWS_SESSION_TOKEN")),
                    _ => {
                        return Err(invalid(
                            "outbox.s3.access_key_id",
                            "no S3 credentials: set access_key_id and secret_access_key_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "outbox.s3.access_key_id",
                    "access_key_id and secret_access_key_file go together",
                ));
            }
        };
        // A part is read into memory whole.
        if !(5..=256).contains(&self.part_size_mib) {
            return Err(invalid("outbox.s3.part_size_mib", "must be between 5 and 256"));
        }
        if !(5..=5120).contains(&self.multipart_threshold_mib) {
            return Err(invalid(
                "outbox.s3.multipart_threshold_mib",
                "must be between 5 and 5120",
            ));
        }
        let object_lock = self
            .object_lock
            .as_ref()
            .map(|lock| {
                let mode = match lock.mode.as_str() {
                    "compliance" => airlock_runtime::LockMode::Compliance,
                    "governance" => airlock_runtime::LockMode::Governance,
                    _ => {
                        return Err(invalid(
                            "outbox.s3.object_lock.mode",
                            "must be \"compliance\" or \"governance\"",
                        ));
                    }
                };
                if !(1..=36_500).contains(&lock.retention_days) {
                    return Err(invalid(
                        "outbox.s3.object_lock.retention_days",
                        "must be between 1 and 36500",
                    ));
                }
                Ok(airlock_runtime::ObjectLockSettings {
                    mode,
                    retention_days: lock.retention_days,
                    legal_hold: lock.legal_hold,
                    require_locked_bucket: lock.require_locked_bucket,
                })
            })
            .transpose()?;
        Ok(airlock_runtime::S3Settings {
            endpoint: self.endpoint.trim_end_matches('/').to_string(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            path_style: self.path_style,
            ca,
            access_key_id,
            secret_access_key,
            session_token,
            multipart_threshold: self.multipart_threshold_mib * 1_048_576,
            part_size: self.part_size_mib * 1_048_576,
            object_lock,
        })
    }
}

/// `[outbox.mqtt]`: MQTT 5 over TLS; events are published under `airlock/v1/{site}/{appliance}/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// `host:port` of the broker (TLS).
    pub broker: String,
    /// PEM CA bundle the broker's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain and its private key, for brokers that require one (both or neither).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// MQTT username ("" for none) and a file holding the password (its first line).
    pub username: String,
    pub password_file: PathBuf,
    /// This appliance's id: the topic level after the site (letters, digits, `-`, `_`, `.`).
    pub appliance: String,
    /// MQTT client id; "" = `{site}-{appliance}`.
    pub client_id: String,
    /// Keep-alive interval in seconds (5–3600).
    pub keep_alive_secs: u64,
    /// Subscribe to `cmd/pause` and `cmd/resume` (pause requests from an agent-desktop integration).
    pub commands: bool,
    /// Seconds between the retained `health` and `metrics` snapshots for the NOC (1–3600; 0 = none).
    pub health_interval_secs: u64,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            broker: String::new(),
            ca: PathBuf::new(),
            certificate: PathBuf::new(),
            private_key: PathBuf::new(),
            username: String::new(),
            password_file: PathBuf::new(),
            appliance: "airlock-1".into(),
            client_id: String::new(),
            keep_alive_secs: 30,
            commands: false,
            health_interval_secs: 60,
        }
    }
}

impl MqttSection {
    fn validate(&self, site: &str) -> Result<airlock_runtime::MqttSettings, ConfigError> {
        let (host, port) = self
            .broker
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse::<u16>().ok()?)))
            .filter(|(host, port)| !host.is_empty() && *port > 0)
            .ok_or_else(|| invalid("outbox.mqtt.broker", "must be host:port"))?;
        if self.ca.as_os_str().is_empty() {
            return Err(invalid(
                "outbox.mqtt.ca",
                "must name the PEM CA bundle of the broker",
            ));
        }
        let identity = match (
            self.certificate.as_os_str().is_empty(),
            self.private_key.as_os_str().is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some((self.certificate.clone(), self.private_key.clone())),
            _ => {
                return Err(invalid(
                    "outbox.mqtt.certificate",
                    "certificate and private_key go together",
                ));
            }
        };
        let password = if self.password_file.as_os_str().is_empty() {
            None
        } else {
            Some(first_line_of("outbox.mqtt.password_file", &self.password_file)?)
        };
        if password.is_some() && self.username.is_empty() {
            return Err(invalid("outbox.mqtt.username", "must be set with password_file"));
        }
        if !is_key_part(&self.appliance) {
            return Err(invalid(
                "outbox.mqtt.appliance",
                "must be 1–64 letters, digits, '-', '_' or '.' (it is a topic level)",
            ));
        }
        if !(5..=3600).contains(&self.keep_alive_secs) {
            return Err(invalid(
                "outbox.mqtt.keep_alive_secs",
                "must be between 5 and 3600",
            ));
        }
        if self.health_interval_secs > 3600 {
            return Err(invalid(
                "outbox.mqtt.health_interval_secs",
                "must be between 1 and 3600, or 0 for no health snapshots",
            ));
        }
        let settings = airlock_runtime::MqttSettings {
            host: host.to_string(),
            port,
            ca: self.ca.clone(),
            identity,
            username: (!self.username.is_empty()).then(|| self.username.clone()),
            password,
            client_id: if self.client_id.is_empty() {
                format!("{site}-{}", self.appliance)
            } else {
                self.client_id.clone()
            },
            appliance: self.appliance.clone(),
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            commands: self.commands,
            health_interval: Duration::from_secs(self.health_interval_secs),
        };
        airlock_runtime::mqtt_tls_config(&settings)
            .map_err(|error| invalid("outbox.mqtt", error.to_string()))?;
        Ok(settings)
    }
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection {
            max_mib: 10_240.0,
            reserve_mib: 512.0,
            site: "local".into(),
            key_prefix: String::new(),
            mqtt: None,
            s3: None,
        }
    }
}

const MIB: f64 = 1_048_576.0;

/// Whether `part` is a safe object key part.
fn is_key_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 64
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl OutboxSection {
    fn validate(
        &self,
        policy: airlock_runtime::Policy,
    ) -> Result<airlock_runtime::OutboxSettings, ConfigError> {
        if !(0.01..=16_777_216.0).contains(&self.max_mib) {
            return Err(invalid("outbox.max_mib", "must be between 0.01 and 16777216"));
        }
        if !(0.0..self.max_mib).contains(&self.reserve_mib) {
            return Err(invalid(
                "outbox.reserve_mib",
                "must be at least 0 and less than outbox.max_mib",
            ));
        }
        if !is_key_part(&self.site) {
            return Err(invalid(
                "outbox.site",
                "must be 1–64 letters, digits, '-', '_' or '.' (it starts every object key)",
            ));
        }
        if !self.key_prefix.is_empty() && !self.key_prefix.split('/').all(is_key_part) {
            return Err(invalid(
                "outbox.key_prefix",
                "must be empty or '/'-separated parts of letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(airlock_runtime::OutboxSettings {
            max_bytes: (self.max_mib * MIB) as u64,
            reserve_bytes: (self.reserve_mib * MIB) as u64,
            site: self.site.clone(),
            key_prefix: self.key_prefix.clone(),
            mqtt: self
                .mqtt
                .as_ref()
                .map(|mqtt| mqtt.validate(&self.site))
                .transpose()?,
            s3: self.s3.as_ref().map(S3Section::validate).transpose()?,
            policy,
        })
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Listen address of `GET /metrics`; an empty string disables it.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// `[shutdown]`: how SIGTERM is handled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Seconds active calls get to end after SIGTERM before they are ended and finalised anyway.
    pub grace_secs: u64,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection { grace_secs: 10 }
    }
}

/// A configuration problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid {
        key: std::borrow::Cow<'static, str>,
        problem: String,
    },
}

/// Listen addresses and limits after validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    pub sip_tls: Option<airlock_runtime::TlsSettings>,
    /// `sip.allow_sources`, parsed.
    pub sip_allow_sources: Vec<Cidr>,
    pub metrics_listen: Option<SocketAddr>,
    pub voicestream: Option<airlock_runtime::VoiceStreamSettings>,
    pub transcription: Option<airlock_runtime::TranscriptionSettings>,
    pub outbox: airlock_runtime::OutboxSettings,
    pub control_api: Option<airlock_runtime::ControlApiSettings>,
    /// The status page; its `selftest` command is filled in by `airlock run`.
    pub status_page: Option<airlock_runtime::StatusPageSettings>,
    /// `hardware.profile`, loaded and validated.
    pub hardware: Option<airlock_hw::Profile>,
    /// `[capture]`, its device resolved; `None` when off.
    pub capture: Option<airlock_runtime::CaptureSettings>,
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
            .map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            })?
            .validate()
    }

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    /// Checks every value once and resolves listen addresses.
    pub fn validate(self) -> Result<Validated, ConfigError> {
        let sip_udp = optional_addr("sip.udp", &self.sip.udp)?;
        let sip_tcp = optional_addr("sip.tcp", &self.sip.tcp)?;
        let sip_tls = self.sip.tls.as_ref().map(TlsSection::validate).transpose()?;
        if sip_udp.is_none() && sip_tcp.is_none() && sip_tls.is_none() {
            return Err(invalid(
                "sip.udp",
                "at least one of sip.udp, sip.tcp and [sip.tls] must be set",
            ));
        }
        let metrics_listen = optional_addr("metrics.listen", &self.metrics.listen)?;
        let voicestream = self.voicestream.validate()?;
        if self.sip.max_calls == 0 {
            return Err(invalid("sip.max_calls", "must be at least 1"));
        }
        let sip_allow_sources = self
            .sip
            .allow_sources
            .iter()
            .map(|entry| entry.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid("sip.allow_sources", error.to_string()))?;
        if self.sip.rate_limit_per_sec > 0 && self.sip.rate_limit_burst == 0 {
            return Err(invalid(
                "sip.rate_limit_burst",
                "must be at least 1 while sip.rate_limit_per_sec is set",
            ));
        }
        if self.sip.max_tcp_connections_per_source == 0 {
            return Err(invalid(
                "sip.max_tcp_connections_per_source",
                "must be at least 1",
            ));
        }
        let media = &self.media;
        if media.port_min == 0 || !media.port_min.is_multiple_of(2) {
            return Err(invalid("media.port_min", "must be an even port above 0"));
        }
        if media.port_max <= media.port_min {
            return Err(invalid(
                "media.port_max",
                format!("must be above media.port_min ({})", media.port_min),
            ));
        }
        if media.bind_ip.is_unspecified()
            && media
                .advertise_ip
                .is_none_or(|advertised| advertised.is_unspecified())
        {
            return Err(invalid(
                "media.advertise_ip",
                format!(
                    "is required while media.bind_ip is {} (every address): SDP answers must name the address \
                     SRCs send RTP to",
                    media.bind_ip
                ),
            ));
        }
        if media.inactivity_timeout_secs == 0 {
            return Err(invalid("media.inactivity_timeout_secs", "must be at least 1"));
        }
        if media.reorder_delay_ms > 1000 {
            return Err(invalid("media.reorder_delay_ms", "must be at most 1000"));
        }
        for recipient in &self.recording.recipients {
            if let Err(error) = airlock_recording::Recipient::parse(recipient) {
                return Err(invalid(
                    "recording.recipients",
                    format!("not an age X25519 recipient: {error}"),
                ));
            }
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        let transcription = self.transcription.validate(&self.storage.data_dir)?;
        let policy = self.policy.validate()?;
        let outbox = self.outbox.validate(policy)?;
        let control_api = self.control_api.validate()?;
        let status_page = self.status_page.validate()?;
        let hardware = self.hardware.validate()?;
        let capture = self.capture.validate(hardware.as_ref())?;
        Ok(Validated {
            config: self,
            sip_udp,
            sip_tcp,
            sip_tls,
            sip_allow_sources,
            metrics_listen,
            voicestream,
            transcription,
            outbox,
            control_api,
            status_page,
            hardware,
            capture,
        })
    }
}

impl HardwareSection {
    fn validate(&self) -> Result<Option<airlock_hw::Profile>, ConfigError> {
        let Some(path) = &self.profile else {
            return Ok(None);
        };
        let profile =
            airlock_hw::load(path).map_err(|error| invalid("hardware.profile", error.to_string()))?;
        let build = airlock_hw::Arch::of_this_build();
        if build != Some(profile.arch) {
            return Err(invalid(
                "hardware.profile",
                format!(
                    "{}: profile {:?} is for {}, this build is for {}",
                    path.display(),
                    profile.id,
                    profile.arch.name(),
                    std::env::consts::ARCH
                ),
            ));
        }
        Ok(Some(profile))
    }
}

impl TlsSection {
    /// Checks the values and loads the certificate, key and CA bundle once, so bad files are found here.
    fn validate(&self) -> Result<airlock_runtime::TlsSettings, ConfigError> {
        let listen = optional_addr("sip.tls.listen", &self.listen)?
            .ok_or_else(|| invalid("sip.tls.listen", "must be set in [sip.tls]"))?;
        if !self.allowed_clients.is_empty() && self.client_ca.is_none() {
            return Err(invalid(
                "sip.tls.allowed_clients",
                "needs sip.tls.client_ca: identities are only known from verified client certificates",
            ));
        }
        if self.allowed_clients.iter().any(|entry| entry.trim().is_empty()) {
            return Err(invalid("sip.tls.allowed_clients", "entries must not be empty"));
        }
        if self.handshake_timeout_secs == 0 {
            return Err(invalid("sip.tls.handshake_timeout_secs", "must be at least 1"));
        }
        if self.idle_timeout_secs == 0 {
            return Err(invalid("sip.tls.idle_timeout_secs", "must be at least 1"));
        }
        let settings = airlock_runtime::TlsSettings {
            listen,
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
            client_ca: self.client_ca.clone(),
            allowed_clients: self.allowed_clients.clone(),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        };
        airlock_runtime::validate_tls(&settings).map_err(|error| invalid("sip.tls", error.to_string()))?;
        Ok(settings)
    }
}

impl Validated {
    /// The source guard's settings from `[sip]`.
    pub fn sip_guard(&self) -> GuardConfig {
        GuardConfig {
            allow: self.sip_allow_sources.clone(),
            rate_per_sec: self.config.sip.rate_limit_per_sec,
            burst: self.config.sip.rate_limit_burst,
            ..GuardConfig::default()
        }
    }
}

impl ShutdownSection {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}

fn invalid(key: impl Into<std::borrow::Cow<'static, str>>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

fn optional_addr(key: &'static str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| invalid(key, format!("`{value}` is not an IP:port socket address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let validated = Config::default().validate().expect("defaults validate");
        assert_eq!(validated.sip_udp, Some("127.0.0.1:5060".parse().expect("addr")));
        assert_eq!(validated.config.storage.data_dir, PathBuf::from("./airlock-data"));
    }

    #[test]
    fn hardware_profile_is_loaded_and_checked() {
        assert!(Config::default().validate().expect("defaults").hardware.is_none());
        let hw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw");
        let config_for = |file: &str| {
            let path = hw.join(file);
            Config::parse(&format!(
                "[hardware]\nprofile = {:?}\n",
                path.display().to_string()
            ))
            .expect("parse")
        };
        let (native, foreign) = match airlock_hw::Arch::of_this_build() {
            Some(airlock_hw::Arch::Aarch64) => ("arm64-sff.toml", "x86_64-rack.toml"),
            _ => ("x86_64-rack.toml", "arm64-sff.toml"),
        };
        let profile = config_for(native).validate().expect("native profile").hardware;
        assert_eq!(
            profile.expect("loaded").arch,
            airlock_hw::Arch::of_this_build().expect("arch")
        );
        let error = config_for(foreign)
            .validate()
            .expect_err("foreign arch")
            .to_string();
        assert!(
            error.contains("hardware.profile") && error.contains(foreign),
            "{error}"
        );
        let error = config_for("missing.toml")
            .validate()
            .expect_err("missing")
            .to_string();
        assert!(
            error.contains("hardware.profile") && error.contains("missing.toml"),
            "{error}"
        );
        let error = Config::parse("[hardware]\nprofiles = \"x\"\n").expect_err("unknown key");
        assert!(error.contains("profiles"), "{error}");
    }

    #[test]
    fn capture_is_off_by_default_and_every_key_is_checked_and_named() {
        assert!(Config::default().validate().expect("defaults").capture.is_none());
        let capture = |body: &str| Config::parse(&format!("[capture]\n{body}\n")).expect("parse");
        let ok = capture("device = \"alsa:tap\"\nroles = [\"customer\"]")
            .validate()
            .expect("alsa device")
            .capture
            .expect("on");
        assert_eq!(
            (ok.pcm.as_str(), ok.device_channels, ok.rate_hz),
            ("tap", 1, 48_000)
        );
        assert_eq!(ok.roles, vec!["customer"]);
        assert!(matches!(ok.segmentation, airlock_runtime::Segmentation::Level(_)));
        let scheduled = capture("device = \"alsa:tap\"\nsegmentation = \"schedule\"\nschedule_secs = 60")
            .validate()
            .expect("schedule")
            .capture
            .expect("on");
        assert_eq!(
            scheduled.segmentation,
            airlock_runtime::Segmentation::Schedule {
                segment: Duration::from_secs(60)
            }
        );
        for (body, key) in [
            ("device = \"tap\"", "capture.device"),
            ("device = \"alsa:\"", "capture.device"),
            ("device = \"alsa:a b\"", "capture.device"),
            ("device = \"alsa:tap\"\nroles = []", "capture.roles"),
            ("device = \"alsa:tap\"\nroles = [\"caller\"]", "capture.roles"),
            (
                "device = \"alsa:tap\"\nroles = [\"agent\", \"agent\"]",
                "capture.roles",
            ),
            (
                "device = \"alsa:tap\"\nroles = [\"mixed\", \"agent\"]",
                "capture.roles",
            ),
            (
                "device = \"alsa:tap\"\nroles = [\"supervisor\", \"agent\"]",
                "capture.roles",
            ),
            ("device = \"alsa:tap\"\nrate_hz = 1000", "capture.rate_hz"),
            (
                "device = \"alsa:tap\"\nsegmentation = \"vad\"",
                "capture.segmentation",
            ),
            ("device = \"alsa:tap\"\nstart_dbfs = 3.0", "capture.start_dbfs"),
            ("device = \"alsa:tap\"\nstart_ms = 5", "capture.start_ms"),
            (
                "device = \"alsa:tap\"\nend_silence_secs = 0",
                "capture.end_silence_secs",
            ),
            (
                "device = \"alsa:tap\"\nmax_call_secs = 10",
                "capture.max_call_secs",
            ),
            (
                "device = \"alsa:tap\"\nsegmentation = \"schedule\"\nschedule_secs = 1",
                "capture.schedule_secs",
            ),
        ] {
            let error = capture(body).validate().expect_err(body).to_string();
            assert!(error.contains(key), "{body}: {error}");
        }
        let error = Config::parse("[capture]\ndevices = \"x\"\n").expect_err("unknown key");
        assert!(error.contains("devices"), "{error}");
        // A profile's [[audio]] entry: its card, channels and rate; a name it lacks is refused, naming what
        // it has.
        let dir = std::env::temp_dir().join(format!("airlock-capture-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let native = match airlock_hw::Arch::of_this_build() {
            Some(airlock_hw::Arch::Aarch64) => "arm64-sff.toml",
            _ => "x86_64-rack.toml",
        };
        let hw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw");
        let mut profile = std::fs::read_to_string(hw.join(native)).expect("profile");
        if !profile.contains("[[audio]]") {
            profile.push_str(
                "\n[[audio]]\nname = \"tap\"\ncard = \"Device\"\ndevice = 0\ndirection = \"capture\"\nchannels = 2\nrate_hz = 48000\n",
            );
        }
        let path = dir.join("profile.toml");
        std::fs::write(&path, profile).expect("write");
        let with_profile = |device: &str| {
            Config::parse(&format!(
                "[hardware]\nprofile = {:?}\n[capture]\ndevice = {device:?}\n",
                path.display().to_string()
            ))
            .expect("parse")
            .validate()
        };
        let tap = with_profile("tap").expect("tap").capture.expect("on");
        assert_eq!(
            (tap.pcm.as_str(), tap.device_channels, tap.rate_hz),
            ("plughw:CARD=Device,DEV=0", 2, 48_000)
        );
        let error = with_profile("line2").expect_err("unknown").to_string();
        assert!(
            error.contains("capture.device") && error.contains("line2") && error.contains("tap"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn outbox_keys_are_checked_and_named() {
        let defaults = Config::default().validate().expect("defaults").outbox;
        assert_eq!(defaults.max_bytes, 10_240 << 20);
        assert_eq!(defaults.reserve_bytes, 512 << 20);
        assert_eq!(
            (defaults.site.as_str(), defaults.key_prefix.as_str()),
            ("local", "")
        );
        let small = Config::parse("[outbox]\nmax_mib = 0.05\nreserve_mib = 0\nkey_prefix = \"calls/v1\"\n")
            .expect("parse")
            .validate()
            .expect("valid")
            .outbox;
        assert_eq!((small.max_bytes, small.reserve_bytes), (52_428, 0));
        for (text, key) in [
            ("max_mib = 0", "outbox.max_mib"),
            ("reserve_mib = 20000.0", "outbox.reserve_mib"),
            ("reserve_mib = -1.0", "outbox.reserve_mib"),
            ("site = \"\"", "outbox.site"),
            ("site = \"../etc\"", "outbox.site"),
            ("site = \"a/b\"", "outbox.site"),
            ("key_prefix = \"x//y\"", "outbox.key_prefix"),
            ("key_prefix = \"..\"", "outbox.key_prefix"),
        ] {
            let config = Config::parse(&format!("[outbox]\n{text}\n")).expect("parse");
            let error = config.validate().expect_err(text).to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn policy_keys_are_checked_and_named() {
        let policy = Config::parse(
            "[policy]\nrecording = \"never\"\nmanifest_sealed = []\ndefault_retention_class = \"short\"\n[policy.retention_classes]\nshort = 90\n",
        )
        .expect("parse")
        .validate()
        .expect("valid")
        .outbox
        .policy;
        assert_eq!(policy.recording, airlock_runtime::RecordingRelease::Never);
        assert_eq!(
            (policy.retention(None).class.as_str(), policy.retention(None).days),
            ("short", 90)
        );
        for (text, key) in [
            ("recording = \"plain\"", "policy.recording"),
            ("transcript = \"full\"", "policy.transcript"),
            ("manifest_sealed = [\"call\"]", "policy.manifest_sealed"),
            (
                "default_retention_class = \"gold\"",
                "policy.default_retention_class",
            ),
            (
                "[policy.retention_classes]\nstandard = 0",
                "policy.retention_classes",
            ),
            (
                "[policy.retention_classes]\n\"a/b\" = 5",
                "policy.retention_classes",
            ),
        ] {
            let error = Config::parse(&format!("[policy]\n{text}\n"))
                .expect(text)
                .validate()
                .expect_err(text)
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn retention_rules_and_on_device_keeping_are_checked_and_named() {
        let classes = "[policy.retention_classes]\nstandard = 2557\nlong = { days = 3650, keep_on_device = \"30d\" }\nheld = { days = 10, keep_on_device = \"2s\", legal_hold = true }\n";
        let rules = "[[policy.retention_rules]]\nsiprec_extension = { name = \"queue\", value = \"billing-en\" }\nparticipant_domain = \"vip.example.com\"\nclass = \"long\"\n[[policy.retention_rules]]\ncampaign = \"Collections\"\nclass = \"held\"\n";
        let policy = Config::parse(&format!("{classes}{rules}"))
            .expect("parse")
            .validate()
            .expect("valid")
            .outbox
            .policy;
        assert_eq!(policy.retention_classes["long"], 3650);
        assert_eq!(policy.keep_on_device_secs["long"], 30 * 86_400);
        assert_eq!(policy.keep_on_device_secs["held"], 2);
        assert!(
            !policy.keep_on_device_secs.contains_key("standard"),
            "days alone keep nothing on the device"
        );
        assert!(policy.held("held") && !policy.held("long"));
        assert_eq!(policy.retention_rules.len(), 2);
        assert_eq!(
            policy.retention_rules[0].siprec_extension,
            Some(airlock_runtime::ExtensionMatch {
                name: "queue".into(),
                value: "billing-en".into()
            })
        );
        assert_eq!(
            policy.retention_rules[0].participant_domain.as_deref(),
            Some("vip.example.com")
        );
        assert_eq!(policy.retention_rules[1].campaign.as_deref(), Some("Collections"));
        // A config without rules or class tables keeps the policy (and its hash) it had before them.
        assert_eq!(
            Config::parse("").unwrap().validate().unwrap().outbox.policy,
            airlock_runtime::Policy::default()
        );
        for (text, key) in [
            (
                "[[policy.retention_rules]]\ncampaign = \"c\"\nclass = \"gold\"",
                "policy.retention_rules[0].class",
            ),
            (
                "[[policy.retention_rules]]\ncampaign = \"c\"\nclass = \"long\"\n[[policy.retention_rules]]\nclass = \"long\"",
                "policy.retention_rules[1]`",
            ),
            (
                "[[policy.retention_rules]]\nskill = \" \"\nclass = \"long\"",
                "policy.retention_rules[0].skill",
            ),
            (
                "[[policy.retention_rules]]\nsiprec_extension = { name = \"\", value = \"x\" }\nclass = \"long\"",
                "policy.retention_rules[0].siprec_extension.name",
            ),
            (
                "[policy.retention_classes.long]\ndays = 5\nkeep_on_device = \"30 days\"",
                "policy.retention_classes.long.keep_on_device",
            ),
            (
                "[policy.retention_classes.long]\ndays = 5\nkeep_on_device = \"36501d\"",
                "policy.retention_classes.long.keep_on_device",
            ),
            (
                "[policy.retention_classes.long]\ndays = 0\nkeep_on_device = \"1d\"",
                "policy.retention_classes",
            ),
        ] {
            let text = format!("[policy.retention_classes]\nstandard = 9\nlong = 90\n{text}\n").replace(
                "long = 90\n[policy.retention_classes.long]",
                "[policy.retention_classes.long]",
            );
            let error = Config::parse(&text)
                .expect(&text)
                .validate()
                .expect_err(&text)
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
        assert_eq!(parse_duration("90m"), Some(5_400));
        assert_eq!(parse_duration("0"), Some(0));
        for bad in ["", "d", "5", "-1d", "1.5d", "5w"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn s3_keys_are_checked_and_named() {
        let dir = std::env::temp_dir().join(format!("airlock-s3-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret-key\nignored\n").expect("secret");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("empty");
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "not a certificate\n").expect("ca");
        let section = |extra: &str, lock: &str| {
            format!(
                "[outbox.s3]\nbucket = \"calls\"\naccess_key_id = \"AKIA1\"\nsecret_access_key_file = \"{}\"\n{extra}\n{lock}",
                secret.display()
            )
        };
        let settings = Config::parse(&section("endpoint = \"http://127.0.0.1:9000/\"", ""))
            .expect("parse")
            .validate()
            .expect("valid");
        let s3 = settings.outbox.s3.expect("s3");
        assert_eq!(
            (s3.endpoint.as_str(), s3.secret_access_key.as_str(), s3.part_size),
            ("http://127.0.0.1:9000", "s3cret-key", 16 * 1_048_576)
        );
        let lock = "[outbox.s3.object_lock]\n";
        for (extra, lock, key) in [
            ("endpoint = \"http://s3.example.net\"", "", "outbox.s3.endpoint"),
            ("endpoint = \"ftp://127.0.0.1\"", "", "outbox.s3.endpoint"),
            ("endpoint = \"https://host/path\"", "", "outbox.s3.endpoint"),
            ("bucket = \"Not_A_Bucket\"", "", "outbox.s3.bucket"),
            ("region = \"\"", "", "outbox.s3.region"),
            (&format!("ca = \"{}\"", not_pem.display()), "", "outbox.s3.ca"),
            ("part_size_mib = 4", "", "outbox.s3.part_size_mib"),
            (
                "multipart_threshold_mib = 9000",
                "",
                "outbox.s3.multipart_threshold_mib",
            ),
            (
                "",
                &format!("{lock}mode = \"strict\""),
                "outbox.s3.object_lock.mode",
            ),
            (
                "",
                &format!("{lock}retention_days = 0"),
                "outbox.s3.object_lock.retention_days",
            ),
        ] {
            let text = match extra.strip_prefix("bucket = ") {
                Some(bucket) => section("", lock).replace("\"calls\"", bucket),
                None => section(extra, lock),
            };
            let error = Config::parse(&text)
                .expect(extra)
                .validate()
                .expect_err(extra)
                .to_string();
            assert!(error.contains(key), "{extra}{lock}: {error}");
        }
        for (text, key) in [
            (
                format!(
                    "[outbox.s3]\nbucket = \"calls\"\nsecret_access_key_file = \"{}\"\n",
                    secret.display()
                ),
                "outbox.s3.access_key_id",
            ),
            (
                format!(
                    "[outbox.s3]\nbucket = \"calls\"\naccess_key_id = \"A\"\nsecret_access_key_file = \"{}\"\n",
                    empty.display()
                ),
                "outbox.s3.secret_access_key_file",
            ),
        ] {
            let error = Config::parse(&text)
                .expect(key)
                .validate()
                .expect_err(key)
                .to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mqtt_keys_are_checked_and_named() {
        let dir = std::env::temp_dir().join(format!("airlock-mqtt-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let password = dir.join("password");
        std::fs::write(&password, "s3cret\nignored\n").expect("password");
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "not a certificate\n").expect("ca");
        let section = |extra: &str| {
            let broker = if extra.starts_with("broker") {
                ""
            } else {
                "broker = \"127.0.0.1:8883\"\n"
            };
            format!(
                "[outbox]\nsite = \"ber\"\n[outbox.mqtt]\n{broker}ca = \"{}\"\n{extra}\n",
                not_pem.display()
            )
        };
        for (extra, key) in [
            ("broker = \"nohost\"", "outbox.mqtt.broker"),
            ("broker = \"host:0\"", "outbox.mqtt.broker"),
            ("certificate = \"/x.pem\"", "outbox.mqtt.certificate"),
            ("password_file = \"/nonexistent/pw\"", "outbox.mqtt.password_file"),
            (
                &format!("password_file = \"{}\"", password.display()),
                "outbox.mqtt.username",
            ),
            ("appliance = \"a/b\"", "outbox.mqtt.appliance"),
            ("keep_alive_secs = 1", "outbox.mqtt.keep_alive_secs"),
            ("health_interval_secs = 3601", "outbox.mqtt.health_interval_secs"),
            // The CA bundle is loaded at validation: a file without a PEM certificate is named.
            ("", "ca.pem"),
        ] {
            let error = Config::parse(&section(extra))
                .expect(extra)
                .validate()
                .expect_err(extra)
                .to_string();
            assert!(error.contains(key), "{extra}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn transcription_keys_are_named_and_paths_resolve_under_the_data_dir() {
        let plan = Config::default()
            .validate()
            .expect("defaults")
            .transcription
            .expect("on by default");
        assert_eq!(
            plan.model,
            PathBuf::from("./airlock-data/models/ggml-tiny.en-q8_0.bin")
        );
        assert_eq!(
            plan.onnxruntime_library,
            PathBuf::from("./airlock-data/models/onnxruntime/libonnxruntime.so")
        );
        let off = Config::parse("[transcription]\nenabled = false\n").expect("parse");
        assert!(off.validate().expect("valid").transcription.is_none());
        for (text, key) in [
            ("hangover_ms = 20", "transcription.hangover_ms"),
            ("max_segment_secs = 40", "transcription.max_segment_secs"),
            ("split_after_secs = 0", "transcription.split_after_secs"),
            ("split_hangover_ms = 50", "transcription.split_hangover_ms"),
            ("vad_threshold = 1.5", "transcription.vad_threshold"),
            ("job_queue = 0", "transcription.job_queue"),
        ] {
            let config = Config::parse(&format!("[transcription]\n{text}\n")).expect("parse");
            let error = config.validate().expect_err(text).to_string();
            assert!(error.contains(key), "{error}");
        }
        let missing = Config::parse("[transcription]\nmodels_dir = \"/nonexistent\"\n")
            .expect("parse")
            .validate()
            .expect("valid")
            .transcription
            .expect("on");
        let error = check_transcription_files(&missing)
            .expect_err("missing model")
            .to_string();
        assert!(
            error.contains("transcription.model") && error.contains("ci/install-asr"),
            "{error}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let message = Config::parse("[sip]\nudpp = \"127.0.0.1:5060\"\n").expect_err("unknown key");
        assert!(message.contains("udpp"), "{message}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let config = Config::parse("[media]\nport_min = 3000\nport_max = 2000\n").expect("parses");
        let error = config.validate().expect_err("range inverted").to_string();
        assert!(error.contains("media.port_max"), "{error}");
        let config = Config::parse("[sip]\nudp = \"localhost\"\n").expect("parses");
        let error = config.validate().expect_err("not an address").to_string();
        assert!(error.contains("sip.udp"), "{error}");
        let config = Config::parse("[media]\nbind_ip = \"0.0.0.0\"\n").expect("parses");
        let error = config.validate().expect_err("no address for SDP").to_string();
        assert!(error.contains("media.advertise_ip"), "{error}");
        let config =
            Config::parse("[media]\nbind_ip = \"0.0.0.0\"\nadvertise_ip = \"192.0.2.10\"\n").expect("parses");
        config
            .validate()
            .expect("an advertised address completes an unspecified bind");
        let config = Config::parse("[recording]\nrecipients = [\"age1nope\"]\n").expect("parses");
        let error = config.validate().expect_err("bad recipient").to_string();
        assert!(error.contains("recording.recipients"), "{error}");
    }

    #[test]
    fn tls_section_names_its_keys() {
        let config = Config::parse(
            "[sip.tls]\nlisten = \"127.0.0.1:5061\"\ncertificate = \"/nonexistent/cert.pem\"\n\
             private_key = \"/nonexistent/key.pem\"\n",
        )
        .expect("parses");
        let error = config.validate().expect_err("no such files").to_string();
        assert!(
            error.contains("sip.tls") && error.contains("/nonexistent/cert.pem"),
            "{error}"
        );
        let config = Config::parse(
            "[sip.tls]\nlisten = \"127.0.0.1:5061\"\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n\
             allowed_clients = [\"sbc1.example.net\"]\n",
        )
        .expect("parses");
        let error = config.validate().expect_err("allow-list without CA").to_string();
        assert!(error.contains("sip.tls.allowed_clients"), "{error}");
        let message = Config::parse("[sip.tls]\nlisten = \"127.0.0.1:5061\"\n").expect_err("no cert");
        assert!(message.contains("certificate"), "{message}");
        let message = Config::parse(
            "[sip.tls]\nlisten = \"x\"\ncertificate = \"c\"\nprivate_key = \"k\"\nciphers = 1\n",
        )
        .expect_err("unknown key");
        assert!(message.contains("ciphers"), "{message}");
    }

    #[test]
    fn guard_keys_parse_and_bad_entries_are_named() {
        let config = Config::parse(
            "[sip]\nallow_sources = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n\
             rate_limit_per_sec = 50\nrate_limit_burst = 80\n",
        )
        .expect("parses");
        let validated = config.validate().expect("valid");
        let guard = validated.sip_guard();
        assert_eq!(guard.allow.len(), 3);
        assert_eq!((guard.rate_per_sec, guard.burst), (50, 80));
        let defaults = Config::default().validate().expect("defaults").sip_guard();
        assert!(defaults.allow.is_empty());
        assert_eq!((defaults.rate_per_sec, defaults.burst), (2000, 4000));

        let config =
            Config::parse("[sip]\nallow_sources = [\"10.0.0.0/8\", \"10.0.0.1/33\"]\n").expect("parses");
        let error = config.validate().expect_err("bad cidr").to_string();
        assert!(
            error.contains("sip.allow_sources") && error.contains("`10.0.0.1/33`"),
            "{error}"
        );
        let config = Config::parse("[sip]\nrate_limit_burst = 0\n").expect("parses");
        let error = config.validate().expect_err("no burst").to_string();
        assert!(error.contains("sip.rate_limit_burst"), "{error}");
        let config = Config::parse("[sip]\nmax_tcp_connections_per_source = 0\n").expect("parses");
        let error = config.validate().expect_err("no connections").to_string();
        assert!(error.contains("sip.max_tcp_connections_per_source"), "{error}");
    }

    #[test]
    fn voicestream_section_names_its_keys() {
        let config = Config::parse(
            "[voicestream]\nlisten = \"127.0.0.1:50051\"\ninsecure_plaintext = true\n\
             [voicestream.trust_tokens]\nsub-1 = [\"t\"]\n",
        )
        .expect("parses");
        let settings = config.validate().expect("valid").voicestream.expect("enabled");
        assert_eq!(settings.trust_tokens.get("sub-1"), Some(&vec!["t".to_owned()]));
        assert!(settings.tls.is_none() && settings.webhooks.is_none());
        let cases = [
            (
                "[voicestream]\nlisten = \"0.0.0.0:50051\"\ninsecure_plaintext = true\n\
                 [voicestream.trust_tokens]\nsub-1 = [\"t\"]\n",
                "voicestream.insecure_plaintext",
            ),
            (
                "[voicestream]\nlisten = \"127.0.0.1:50051\"\n[voicestream.trust_tokens]\nsub-1 = [\"t\"]\n",
                "voicestream.certificate",
            ),
            (
                "[voicestream]\nlisten = \"127.0.0.1:50051\"\ninsecure_plaintext = true\n",
                "voicestream.trust_tokens",
            ),
            (
                "[voicestream]\nlisten = \"127.0.0.1:50051\"\ninsecure_plaintext = true\nchannels = 5\n\
                 [voicestream.trust_tokens]\nsub-1 = [\"t\"]\n",
                "voicestream.channels",
            ),
            (
                "[voicestream]\nlisten = \"127.0.0.1:50051\"\ninsecure_plaintext = true\n\
                 [voicestream.trust_tokens]\nsub-1 = [\"t\"]\n[voicestream.webhooks]\n\
                 listen = \"127.0.0.1:8443\"\ninsecure_plaintext = true\ntrust_token = \"x\"\napi_keys = []\n",
                "voicestream.webhooks.api_keys",
            ),
        ];
        for (text, key) in cases {
            let error = Config::parse(text)
                .expect("parses")
                .validate()
                .expect_err(key)
                .to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
        assert!(
            Config::default()
                .validate()
                .expect("defaults")
                .voicestream
                .is_none()
        );
    }

    #[test]
    fn capture_roles_that_would_share_a_channel_are_told_apart() {
        for fine in [
            &["agent", "customer"][..],
            &["customer"],
            &["mixed"],
            &["agent", "mixed"],
            &["agent", "customer", "supervisor"],
            &["agent", "customer", "mixed"],
            &["customer", "agent"],
        ] {
            assert!(!shares_a_channel(fine), "{fine:?}");
        }
        for shared in [
            &["mixed", "agent"][..],
            &["supervisor", "agent"],
            &["mixed", "customer", "agent"],
        ] {
            assert!(shares_a_channel(shared), "{shared:?}");
        }
    }

    #[test]
    fn control_api_section_names_its_keys() {
        let dir = std::env::temp_dir().join(format!("airlock-control-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let short = dir.join("short-token");
        std::fs::write(&short, "too-short\n").expect("write");
        let good = dir.join("token");
        std::fs::write(&good, "0123456789abcdef-token\nignored\n").expect("write");
        let base = "[control_api]\nlisten = \"127.0.0.1:8444\"\n";
        let files = "certificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/nonexistent/key.pem\"\n";
        let cases = [
            (base.to_string(), "control_api.certificate"),
            (
                format!("{base}certificate = \"c.pem\"\n"),
                "control_api.private_key",
            ),
            (format!("{base}{files}"), "control_api.token_file"),
            (
                format!(
                    "{base}{files}token_file = \"{}\"\n",
                    dir.join("missing").display()
                ),
                "control_api.token_file",
            ),
            (
                format!("{base}{files}token_file = \"{}\"\n", short.display()),
                "control_api.token_file",
            ),
            (
                format!(
                    "{base}{files}token_file = \"{}\"\nmax_connections = 0\n",
                    good.display()
                ),
                "control_api.max_connections",
            ),
            (
                format!(
                    "{base}{files}token_file = \"{}\"\nrequest_timeout_secs = 0\n",
                    good.display()
                ),
                "control_api.request_timeout_secs",
            ),
            (
                format!("{base}{files}token_file = \"{}\"\n", good.display()),
                "control_api",
            ),
            (
                "[control_api]\nlisten = \"nowhere\"\n".to_string(),
                "control_api.listen",
            ),
        ];
        for (text, key) in cases {
            let error = Config::parse(&text)
                .expect("parses")
                .validate()
                .expect_err(key)
                .to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(
                !error.contains("0123456789abcdef"),
                "the token is never shown: {error}"
            );
        }
        let unknown = Config::parse("[control_api]\ntoken = \"x\"\n").expect_err("unknown key");
        assert!(unknown.contains("token"), "{unknown}");
        assert!(
            Config::default()
                .validate()
                .expect("defaults")
                .control_api
                .is_none()
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn wrong_type_is_named() {
        let message = Config::parse("[sip]\nmax_calls = \"many\"\n").expect_err("wrong type");
        assert!(message.contains("max_calls"), "{message}");
    }
}
