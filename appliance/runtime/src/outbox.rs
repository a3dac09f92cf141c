//! The runtime side of the outbox: finished calls and events go into the durable spool
//! (`<data>/outbox/`, airlock-outbox), and one thread per sink delivers them, oldest first, deleting a record
//! only after its sink took it. Objects go to the embedded default sink: written create-only under
//! `<data>/uplink/` with the bucket's key layout `{prefix/}{site}/{yyyy}/{mm}/{dd}/{call}/{name}` (a call's
//! manifest last). Events go to the MQTT broker when one is configured (`crate::mqtt`), otherwise they are
//! appended to `<data>/uplink/events.jsonl` (at least once: a crash between the append and the
//! acknowledgement repeats that line). A failed delivery is retried after a jittered backoff;
//! nothing is dropped. The spool also answers admission: when it nears its limit, new calls are refused.
//!
//! Nothing enters the spool without passing the last gate (`airlock_compliance::scan_json` /
//! `scan_webvtt`, and an age header for audio): an item with card data, an SSN or an unmasked digit run, or
//! audio that is not age-encrypted, is held in `<data>/blocked/` instead, audited and alarmed
//! (`leak_blocked`, raised while `blocked/` holds anything). Every artifact spooled, blocked, uploaded and
//! purged (its on-prem copy deleted once its sink took it) goes into the hash-chained audit log
//! (`<data>/audit/`, airlock-audit), whose signed checkpoints are published as `audit/checkpoint` events.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_outbox::{
    Admission, Backoff, Body, NewRecord, Payload, Record, Sink, Spool, SpoolConfig, SpoolError,
};
use airlock_telemetry::{Alarm, Metrics, OutboxSink};

use crate::alarm::Alarms;
use crate::mqtt::MqttSettings;
use crate::policy::Policy;
use crate::retained::Retained;
use crate::s3::{S3Failure, S3Settings, S3Sink};
use airlock_audit::{AuditLog, EventKind as AuditKind};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Outbox settings (validated by configuration).
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Spool size at which new calls are refused (see `reserve_bytes`).
    pub max_bytes: u64,
    /// Room kept below `max_bytes` for calls already accepted.
    pub reserve_bytes: u64,
    /// The site's id: the first part of every object key.
    pub site: String,
    /// Optional key prefix before the site ("" for none).
    pub key_prefix: String,
    /// The MQTT broker events go to; None: `uplink/events.jsonl`.
    pub mqtt: Option<MqttSettings>,
    /// The S3 bucket objects go to; None: the `uplink/` directory.
    pub s3: Option<S3Settings>,
    /// What may leave, and how long it is kept where it goes.
    pub policy: Policy,
}

/// How often an idle delivery thread refreshes the spool and disk gauges.
const IDLE_REFRESH: Duration = Duration::from_secs(1);

/// The outbox handle; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    spool: Mutex<Spool>,
    /// Signalled on every append and acknowledgement.
    changed: Condvar,
    /// Wakes the MQTT sink when an event is spooled.
    pub(crate) events_waiting: tokio::sync::Notify,
    /// The spool's admission answer as of its last change, for callers that must not wait for the spool's
    /// lock (SIP and VoiceStream admission run on async threads).
    admission_open: AtomicBool,
    alarms: Alarms,
    audit: Mutex<AuditLog>,
    settings: OutboxSettings,
    pub(crate) metrics: Metrics,
    data_root: PathBuf,
    uplink_root: PathBuf,
    /// Delivered artifacts kept on the device by their retention class (`<data>/retained/`).
    retained: Mutex<Retained>,
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn lock_spool(&self) -> MutexGuard<'_, Spool> {
        lock(&self.spool)
    }

    /// Acknowledges a delivered record and wakes whoever waits on the spool.
    pub(crate) fn ack(&self, seq: airlock_outbox::Seq) -> Result<(), SpoolError> {
        let result = {
            let mut spool = lock(&self.spool);
            let result = spool.ack(seq);
            self.admission_open
                .store(spool.admission() == Admission::Accept, Ordering::Relaxed);
            result
        };
        self.changed.notify_all();
        result
    }

    /// Appends to the audit log (never with the spool locked), and publishes a signed checkpoint every
    /// [`AUDIT_CHECKPOINT_EVERY`] entries. An audit failure is logged; it does not stop delivery.
    pub(crate) fn audit(&self, kind: AuditKind, subject: &str, detail: serde_json::Value) -> bool {
        let at = crate::clock::rfc3339(SystemTime::now());
        let detail = match detail {
            serde_json::Value::Object(fields) => Some(fields),
            _ => None,
        };
        let checkpoint = {
            let mut log = lock_audit(&self.audit);
            if let Err(error) = log.append(kind, subject, detail, &at) {
                tracing::error!(%error, "cannot append to the audit log");
                return false;
            }
            if log.entries_since_checkpoint() < AUDIT_CHECKPOINT_EVERY {
                return true;
            }
            log.checkpoint(&at)
        };
        self.publish_checkpoint(checkpoint);
        true
    }

    /// Signs what the audit log holds so far (at start-up and shutdown) and publishes it.
    pub(crate) fn audit_checkpoint(&self) {
        let checkpoint = {
            let mut log = lock_audit(&self.audit);
            if log.entries_since_checkpoint() == 0 {
                return;
            }
            log.checkpoint(&crate::clock::rfc3339(SystemTime::now()))
        };
        self.publish_checkpoint(checkpoint);
    }

    fn publish_checkpoint(&self, checkpoint: Result<airlock_audit::Checkpoint, airlock_audit::AuditError>) {
        match checkpoint {
            Ok(checkpoint) => {
                if let Err(error) = self.spool_event("audit/checkpoint", checkpoint.line.into_bytes()) {
                    tracing::error!(%error, "cannot spool the audit checkpoint");
                }
            }
            Err(error) => tracing::error!(%error, "cannot write an audit checkpoint"),
        }
    }

    /// Spools one event after the last gate; an event the gate stops is held in `blocked/` (false).
    pub(crate) fn spool_event(&self, topic: &str, body: Vec<u8>) -> Result<bool, SpoolError> {
        if let Some(leak) = airlock_compliance::scan_json(&body) {
            self.block(topic, &format!("{} at {}", leak.kind.label(), leak.place), None);
            return Ok(false);
        }
        {
            let mut spool = lock(&self.spool);
            spool.append(event_record(topic, body), unix_ms(SystemTime::now()))?;
            refresh_gauges(self, &spool);
        }
        self.changed.notify_all();
        self.events_waiting.notify_one();
        Ok(true)
    }

    /// Holds an item the last gate stopped: the file (if any) is moved to `blocked/`, a marker names what
    /// and why (never the value), and the block is audited and alarmed.
    fn block(&self, subject: &str, reason: &str, file: Option<&Path>) {
        tracing::error!(
            subject,
            reason,
            "the last gate blocked an item on its way out; it is held in blocked/ for review"
        );
        let dir = self.data_root.join("blocked");
        let held = (|| -> std::io::Result<()> {
            create_dirs_durably(&dir)?;
            let stamp = format!("{}-{:016x}", unix_ms(SystemTime::now()), random());
            if let Some(file) = file {
                let name = file
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                std::fs::rename(file, dir.join(format!("{stamp}-{name}")))?;
            }
            let marker = serde_json::json!({ "subject": subject, "reason": reason, "at": crate::clock::rfc3339(SystemTime::now()) });
            crate::storage::write_atomically(
                &dir.join(format!("{stamp}.blocked.json")),
                marker.to_string().as_bytes(),
            )
        })();
        if let Err(error) = held {
            tracing::error!(%error, "cannot hold the blocked item in blocked/");
        }
        self.audit(
            AuditKind::ArtifactBlocked,
            subject,
            serde_json::json!({ "reason": reason }),
        );
        self.set_alarm(
            Alarm::LeakBlocked,
            true,
            "the last gate blocked an item; review and remove what is in blocked/",
        );
    }

    /// Raises or clears `alarm`; on a change it is logged, shown on the gauge and spooled on `alarm/{name}`.
    /// Never call with the spool locked.
    pub(crate) fn set_alarm(&self, alarm: Alarm, raised: bool, reason: &str) {
        let Some(event) = self.alarms.transition(alarm, raised, reason) else {
            return;
        };
        self.metrics.outbox.set_alarm(alarm, raised);
        if raised {
            tracing::error!(alarm = alarm.as_str(), reason, "alarm raised");
        } else {
            tracing::info!(alarm = alarm.as_str(), reason, "alarm cleared");
        }
        let topic = format!("alarm/{}", alarm.as_str());
        // Through the last gate like every event (a reason carries service error texts).
        let appended = serde_json::to_vec(&event)
            .map_err(|error| error.to_string())
            .and_then(|body| self.spool_event(&topic, body).map_err(|error| error.to_string()));
        if let Err(error) = appended {
            tracing::error!(%error, alarm = alarm.as_str(), "cannot spool the alarm event; the gauge still shows it");
        }
        self.alarms.persist();
    }
}

/// Sets up the S3 sink, retrying (with the bucket alarm raised) until it can be: what waits stays spooled.
fn s3_sink(shared: &Shared, settings: &S3Settings, uploads_dir: &Path) -> S3Sink {
    let backoff = Backoff::default();
    let mut failures = 0;
    loop {
        match S3Sink::new(settings.clone(), uploads_dir.to_path_buf()) {
            Ok(sink) => return sink,
            Err(reason) => {
                shared.set_alarm(
                    Alarm::S3Bucket,
                    true,
                    &format!("cannot set up the S3 sink: {reason}"),
                );
                std::thread::sleep(backoff.delay(failures, random()));
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// Entries between two published audit checkpoints.
const AUDIT_CHECKPOINT_EVERY: u64 = 100;

fn lock_audit(audit: &Mutex<AuditLog>) -> MutexGuard<'_, AuditLog> {
    audit.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often the sweeper looks for kept copies that are due.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn lock_retained(retained: &Mutex<Retained>) -> MutexGuard<'_, Retained> {
    retained.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Shows the kept copies on their gauges.
fn refresh_retained_gauges(shared: &Shared, retained: &Retained) {
    let (bytes, objects) = retained.totals();
    let outbox = &shared.metrics.outbox;
    outbox
        .retained_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    outbox
        .retained_objects
        .set(i64::try_from(objects).unwrap_or(i64::MAX));
}

/// Purges the kept copies that are due (a bounded batch per sweep), unless their class is under legal hold,
/// and audits each purge with its class.
fn sweep_retained(shared: &Shared) {
    let policy = &shared.settings.policy;
    loop {
        let swept = {
            let mut retained = lock_retained(&shared.retained);
            let swept = retained.sweep(unix_ms(SystemTime::now()), &|class| policy.held(class));
            refresh_retained_gauges(shared, &retained);
            swept
        };
        let (purged, error) = swept;
        for copy in purged {
            shared.audit(
                AuditKind::ArtifactPurged,
                &copy.key,
                serde_json::json!({
                    "reason": "retention: kept on the device for its class's time",
                    "retention_class": copy.class,
                    "bytes": copy.bytes,
                }),
            );
        }
        if let Some(error) = error {
            tracing::error!(%error, "cannot purge a retained copy; tried again at the next sweep");
        }
        std::thread::sleep(SWEEP_EVERY);
    }
}

/// Keeps a delivered object on the device when its class says so; Some(the audit detail) when kept.
fn keep_delivered(shared: &Shared, record: &Record) -> std::io::Result<Option<serde_json::Value>> {
    let Some(retention) = record
        .retention
        .as_ref()
        .filter(|retention| retention.keep_on_device_secs > 0)
    else {
        return Ok(None);
    };
    let until = unix_ms(SystemTime::now()).saturating_add(retention.keep_on_device_secs.saturating_mul(1000));
    let mut retained = lock_retained(&shared.retained);
    retained.keep(&record.meta.key, &record.body, &retention.class, until)?;
    refresh_retained_gauges(shared, &retained);
    Ok(Some(serde_json::json!({
        "retention_class": retention.class,
        "until": crate::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(until)),
    })))
}

/// How often the spool-full alarm follows the admission state.
const ALARM_WATCH: Duration = Duration::from_millis(500);

/// Raises `spool_full` while the spool refuses new calls and clears it when they are admitted again, and
/// clears `leak_blocked` once `blocked/` has been emptied (reviewed).
fn watch_alarms(shared: &Shared) {
    let blocked = shared.data_root.join("blocked");
    loop {
        // Follows blocked/ both ways: an item held before a crash (whose alarm was not yet raised) is alarmed
        // after the restart.
        let held = std::fs::read_dir(&blocked).is_ok_and(|mut entries| entries.next().is_some());
        shared.set_alarm(
            Alarm::LeakBlocked,
            held,
            if held {
                "the last gate holds items in blocked/; review and remove them"
            } else {
                "blocked/ has been reviewed and emptied"
            },
        );
        let refusing = !shared.admission_open.load(Ordering::Relaxed);
        shared.set_alarm(
            Alarm::SpoolFull,
            refusing,
            if refusing {
                "the outbox spool is past its limit less the reserve; new calls are refused until the uplink drains it"
            } else {
                "the outbox spool has room again; new calls are admitted"
            },
        );
        std::thread::sleep(ALARM_WATCH);
    }
}

pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

fn sink_label(sink: Sink) -> OutboxSink {
    match sink {
        Sink::Objects => OutboxSink::Objects,
        Sink::Events => OutboxSink::Events,
    }
}

impl Outbox {
    /// Opens the spool in `<data_root>/outbox` (repairing what a crash left) and starts the delivery threads
    /// toward `<data_root>/uplink` — and, with `settings.mqtt` (and its TLS configuration `mqtt_tls`), the
    /// MQTT sink task for events. Call inside the tokio runtime.
    pub(crate) fn start(
        data_root: &Path,
        settings: OutboxSettings,
        mqtt_tls: Option<Arc<rustls::ClientConfig>>,
        mqtt_commands: Option<tokio::sync::mpsc::Sender<crate::mqtt_commands::MqttCommand>>,
        metrics: Metrics,
    ) -> Result<Outbox, SpoolError> {
        let (spool, report) = Spool::open(SpoolConfig {
            dir: data_root.join("outbox"),
            max_bytes: settings.max_bytes,
            reserve_bytes: settings.reserve_bytes,
        })?;
        if report.partial_removed + report.files_moved_in + report.delivered_files_removed > 0 {
            tracing::warn!(
                partial_removed = report.partial_removed,
                files_moved_in = report.files_moved_in,
                delivered_files_removed = report.delivered_files_removed,
                "outbox spool repaired after an interrupted run"
            );
        }
        for (record, reason) in &report.quarantined {
            tracing::error!(%record, %reason, "damaged outbox record moved to outbox/quarantine/; it will not be delivered");
        }
        metrics
            .outbox
            .quarantined_records
            .set(report.quarantined.len() as i64);
        metrics
            .outbox
            .spool_limit_bytes
            .set(i64::try_from(settings.max_bytes).unwrap_or(i64::MAX));
        if report.records > 0 {
            tracing::info!(
                records = report.records,
                "outbox spool holds undelivered records; delivering them"
            );
        }
        let audit_key = data_root.join("identity").join("audit-ed25519.key");
        let audit_failed = |error: &dyn std::fmt::Display| SpoolError::Io {
            op: "open the audit log for",
            path: data_root.join("audit"),
            source: std::io::Error::other(error.to_string()),
        };
        let key =
            airlock_audit::load_or_create_signing_key(&audit_key).map_err(|error| audit_failed(&error))?;
        let (audit, audit_report) =
            AuditLog::open(&data_root.join("audit"), key).map_err(|error| audit_failed(&error))?;
        if audit_report.torn_tail_bytes > 0 {
            tracing::warn!(
                bytes = audit_report.torn_tail_bytes,
                "audit log: an append cut short by a crash was removed"
            );
        }
        let retained = Retained::open(&data_root.join("retained")).map_err(|source| SpoolError::Io {
            op: "open the retained copies in",
            path: data_root.join("retained"),
            source,
        })?;
        let outbox = Outbox {
            shared: Arc::new(Shared {
                spool: Mutex::new(spool),
                changed: Condvar::new(),
                events_waiting: tokio::sync::Notify::new(),
                admission_open: AtomicBool::new(true),
                alarms: Alarms::load(data_root.join("alarms.json")),
                audit: Mutex::new(audit),
                settings,
                metrics,
                data_root: data_root.to_path_buf(),
                uplink_root: data_root.join("uplink"),
                retained: Mutex::new(retained),
            }),
        };
        std::fs::create_dir_all(&outbox.shared.uplink_root).map_err(|source| SpoolError::Io {
            op: "create",
            path: outbox.shared.uplink_root.clone(),
            source,
        })?;
        outbox.refresh_gauges(&lock(&outbox.shared.spool));
        refresh_retained_gauges(&outbox.shared, &lock_retained(&outbox.shared.retained));
        let raised = outbox.shared.alarms.raised();
        for alarm in Alarm::ALL {
            outbox
                .shared
                .metrics
                .outbox
                .set_alarm(alarm, raised.contains(&alarm));
        }
        // A policy other than the one in force when the appliance last ran is audited.
        let policy_file = data_root.join("policy.sha256");
        let policy_hash = outbox.shared.settings.policy.hash();
        if std::fs::read_to_string(&policy_file)
            .ok()
            .as_deref()
            .map(str::trim)
            != Some(policy_hash.as_str())
        {
            let policy = &outbox.shared.settings.policy;
            let audited = outbox.shared.audit(
                AuditKind::PolicyChanged,
                &format!("sha256:{policy_hash}"),
                serde_json::to_value(policy).unwrap_or_default(),
            );
            // Recorded as in force only once audited, so a failed entry is tried again at the next start.
            if audited
                && let Err(error) = crate::storage::write_atomically(&policy_file, policy_hash.as_bytes())
            {
                tracing::warn!(%error, "cannot record the policy in force; its change is audited again at the next start");
            }
        }
        // Entries a crash left unsigned are covered now.
        outbox.shared.audit_checkpoint();
        // Alarms of a sink no longer configured can never clear by themselves.
        let shared = &outbox.shared;
        if shared.settings.s3.is_none() {
            for alarm in [Alarm::S3Credentials, Alarm::S3Bucket, Alarm::S3Object] {
                shared.set_alarm(alarm, false, "no S3 bucket is configured any more");
            }
        }
        if shared.settings.mqtt.is_none() {
            shared.set_alarm(Alarm::MqttRefused, false, "no MQTT broker is configured any more");
        }
        let swept = outbox.shared.clone();
        std::thread::Builder::new()
            .name("outbox-retained".into())
            .spawn(move || sweep_retained(&swept))
            .map_err(|source| SpoolError::Io {
                op: "start the retention sweeper for",
                path: data_root.join("retained"),
                source,
            })?;
        let watched = outbox.shared.clone();
        std::thread::Builder::new()
            .name("outbox-alarms".into())
            .spawn(move || watch_alarms(&watched))
            .map_err(|source| SpoolError::Io {
                op: "start the alarm thread for",
                path: data_root.join("outbox"),
                source,
            })?;
        let mqtt = outbox.shared.settings.mqtt.clone().zip(mqtt_tls);
        let local_sinks: &[Sink] = if mqtt.is_some() {
            &[Sink::Objects]
        } else {
            &[Sink::Objects, Sink::Events]
        };
        if let Some((mqtt, tls)) = mqtt {
            let site = outbox.shared.settings.site.clone();
            let commands = mqtt_commands.filter(|_| mqtt.commands);
            tokio::spawn(crate::mqtt::run(outbox.shared.clone(), mqtt, tls, site, commands));
        }
        for &sink in local_sinks {
            let shared = outbox.shared.clone();
            let uploads_dir = data_root.join("s3-uploads");
            std::thread::Builder::new()
                .name(format!("outbox-{}", sink_label(sink).as_str()))
                .spawn(move || {
                    // Built on this thread: the S3 sink owns a runtime, which must not be dropped in an
                    // async context.
                    let mut target = match (sink, &shared.settings.s3) {
                        (Sink::Objects, Some(s3)) => {
                            Target::Bucket(Box::new(s3_sink(&shared, s3, &uploads_dir)))
                        }
                        (Sink::Objects, None) => Target::Directory,
                        (Sink::Events, _) => Target::EventLog,
                    };
                    deliver(&shared, sink, &mut target)
                })
                .map_err(|source| SpoolError::Io {
                    op: "start the delivery thread for",
                    path: data_root.join("outbox"),
                    source,
                })?;
        }
        Ok(outbox)
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.shared.settings.policy
    }

    /// Raises or clears `alarm` (logged, on the gauge, spooled on `alarm/{name}` when it changes).
    pub(crate) fn set_alarm(&self, alarm: Alarm, raised: bool, reason: &str) {
        self.shared.set_alarm(alarm, raised, reason);
    }

    /// Whether new calls may be accepted (the spool is below its limit less the reserve). Never waits.
    pub fn admission_open(&self) -> bool {
        self.shared.admission_open.load(Ordering::Relaxed)
    }

    /// Hands every file of the finished call in `call_dir` to the spool and spools `ended` (topic
    /// `evt/call/ended`) before the manifest, which goes last so it is delivered after the artifacts it
    /// describes; then removes the emptied directory. Safe to repeat after a crash: files already handed over
    /// are no longer in the directory, and the manifest (still there until the end) is what recovery looks for.
    /// Files are hashed before the spool is locked.
    pub fn publish_call(
        &self,
        call_dir: &Path,
        call: &str,
        started_at: &str,
        ended: &impl Serialize,
    ) -> Result<usize, SpoolError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io { op, path, source }
        };
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(call_dir).map_err(io("list", call_dir))? {
            let entry = entry.map_err(io("list", call_dir))?;
            if entry.file_type().map_err(io("inspect", &entry.path()))?.is_file() {
                files.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
            }
        }
        files.sort_by_key(|(name, _)| (name == "manifest.json", name.clone()));
        let prefix = self.call_key_prefix(call, started_at);
        let policy = &self.shared.settings.policy;
        let mut hashed = Vec::with_capacity(files.len());
        let mut stopped = Vec::new();
        let mut retention = policy.retention(None);
        for (name, path) in files {
            if !policy.releases(&name) {
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                self.shared.audit(
                    AuditKind::ArtifactPurged,
                    &format!("{prefix}/{name}"),
                    serde_json::json!({ "reason": "policy: this kind never leaves" }),
                );
                continue;
            }
            if name == "manifest.json" {
                let mut manifest: serde_json::Value = std::fs::read(&path)
                    .map_err(io("read", &path))
                    .and_then(|bytes| {
                        serde_json::from_slice(&bytes)
                            .map_err(|error| io("parse", &path)(std::io::Error::other(error)))
                    })?;
                retention = policy.apply_to_manifest(&mut manifest);
                let bytes = serde_json::to_vec_pretty(&manifest)
                    .map_err(|error| io("encode", &path)(std::io::Error::other(error)))?;
                crate::storage::write_atomically(&path, &bytes).map_err(io("write", &path))?;
            }
            if let Some(reason) = last_gate(&name, &path).map_err(io("read", &path))? {
                // Held back only after the rest of the call is spooled: until then the call directory keeps
                // its manifest, which is what crash recovery looks for.
                stopped.push((name, path, reason));
                continue;
            }
            let (sha256, size) = std::fs::File::open(&path)
                .and_then(airlock_outbox::spool::sha256_of)
                .map_err(io("read", &path))?;
            hashed.push((name, path, sha256, size));
        }
        let mut event = Some(self.encode_event(ended)?);
        if let Some(leak) = event.as_deref().and_then(airlock_compliance::scan_json) {
            event = None;
            let reason = format!("{} at {}", leak.kind.label(), leak.place);
            self.shared.block("evt/call/ended", &reason, None);
        }
        // Audited before they are spooled: a crash in between repeats the entries rather than losing them.
        for (name, _, sha256, size) in &hashed {
            self.shared.audit(
                AuditKind::ArtifactCreated,
                &format!("{prefix}/{name}"),
                serde_json::json!({ "sha256": hex::encode(sha256), "bytes": size }),
            );
        }
        let now = unix_ms(SystemTime::now());
        {
            let mut spool = lock(&self.shared.spool);
            for (name, path, sha256, size) in &hashed {
                if name == "manifest.json"
                    && let Some(event) = event.take()
                {
                    spool.append(event_record("evt/call/ended", event), now)?;
                }
                spool.append(
                    NewRecord {
                        sink: Sink::Objects,
                        key: format!("{prefix}/{name}"),
                        content_type: content_type(name).to_string(),
                        payload: Payload::HashedFile {
                            path: path.clone(),
                            sha256: *sha256,
                            size: *size,
                        },
                        retention: Some(retention.clone()),
                    },
                    now,
                )?;
            }
            if let Some(event) = event {
                spool.append(event_record("evt/call/ended", event), now)?;
            }
            self.refresh_gauges(&spool);
        }
        self.shared.changed.notify_all();
        self.shared.events_waiting.notify_one();
        for (name, path, reason) in stopped {
            self.shared
                .block(&format!("{prefix}/{name}"), &reason, Some(&path));
        }
        std::fs::remove_dir(call_dir).map_err(io("remove", call_dir))?;
        if let Some(parent) = call_dir.parent() {
            sync_directory(parent).map_err(io("sync directory", parent))?;
        }
        Ok(hashed.len())
    }

    fn encode_event(&self, event: &impl Serialize) -> Result<Vec<u8>, SpoolError> {
        serde_json::to_vec(event).map_err(|error| SpoolError::Io {
            op: "encode an event for",
            path: self.shared.data_root.join("outbox"),
            source: std::io::Error::other(error),
        })
    }

    /// Spools one event for the event sink under `topic` (relative, e.g. `evt/call/ended`), after the last
    /// gate (an event it stops is held in `blocked/`, audited and alarmed, and not sent).
    pub fn event(&self, topic: &str, event: &impl Serialize) -> Result<(), SpoolError> {
        if !self.shared.settings.policy.releases_event(topic) {
            return Ok(());
        }
        let body = self.encode_event(event)?;
        self.shared.spool_event(topic, body).map(drop)
    }

    /// Signs the audit log's last entries, then waits up to `timeout` for the spool to empty (at shutdown);
    /// true when it did.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.shared.audit_checkpoint();
        let deadline = Instant::now() + timeout;
        let mut spool = lock(&self.shared.spool);
        while spool.stats().records > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            spool = self
                .shared
                .changed
                .wait_timeout(spool, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        true
    }

    /// `{prefix/}{site}/{yyyy}/{mm}/{dd}/{call}` from the call's RFC 3339 start time.
    fn call_key_prefix(&self, call: &str, started_at: &str) -> String {
        let date = started_at.get(..10).filter(|date| {
            date.len() == 10
                && date.chars().enumerate().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        });
        let date = date.map_or_else(|| "0000/00/00".to_string(), |date| date.replace('-', "/"));
        let settings = &self.shared.settings;
        if settings.key_prefix.is_empty() {
            format!("{}/{date}/{call}", settings.site)
        } else {
            format!("{}/{}/{date}/{call}", settings.key_prefix, settings.site)
        }
    }

    fn refresh_gauges(&self, spool: &Spool) {
        refresh_gauges(&self.shared, spool);
    }
}

/// An event record for `topic` with a JSON body.
fn event_record(topic: &str, body: Vec<u8>) -> NewRecord {
    NewRecord {
        sink: Sink::Events,
        key: topic.to_string(),
        content_type: "application/json".into(),
        payload: Payload::Inline(body),
        retention: None,
    }
}

fn refresh_gauges(shared: &Shared, spool: &Spool) {
    shared
        .admission_open
        .store(spool.admission() == Admission::Accept, Ordering::Relaxed);
    let outbox = &shared.metrics.outbox;
    let stats = spool.stats();
    outbox
        .spool_bytes
        .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
    let now = unix_ms(SystemTime::now());
    for sink in [Sink::Objects, Sink::Events] {
        let mut waiting = spool.pending(sink);
        let oldest = waiting.next().map(|meta| meta.created_unix_ms);
        let records = usize::from(oldest.is_some()) + waiting.count();
        let age = oldest.map_or(0.0, |created| now.saturating_sub(created) as f64 / 1000.0);
        outbox.set_waiting(sink_label(sink), records, age);
    }
}

fn refresh_disk_gauges(shared: &Shared) {
    if let Ok(stats) = rustix::fs::statvfs(&shared.data_root) {
        let outbox = &shared.metrics.outbox;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        let size = stats.f_blocks.saturating_mul(stats.f_frsize);
        outbox
            .data_disk_free_bytes
            .set(i64::try_from(free).unwrap_or(i64::MAX));
        outbox
            .data_disk_size_bytes
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }
}

/// Where a delivery thread sends its records.
enum Target {
    /// Objects into `uplink/`, laid out like the bucket.
    Directory,
    /// Objects into an S3 bucket.
    Bucket(Box<S3Sink>),
    /// Events appended to `uplink/events.jsonl`.
    EventLog,
}

impl Target {
    fn deliver(&mut self, shared: &Shared, record: &Record) -> Result<(), String> {
        match self {
            Target::Directory => put_object(&shared.uplink_root, record),
            Target::EventLog => append_event(&shared.uplink_root, record),
            Target::Bucket(bucket) => match bucket.put(record) {
                Ok(()) => {
                    shared.set_alarm(Alarm::S3Credentials, false, "S3 accepts the credentials");
                    shared.set_alarm(Alarm::S3Bucket, false, "the S3 bucket takes uploads");
                    shared.set_alarm(Alarm::S3Object, false, "S3 takes the objects again");
                    Ok(())
                }
                Err(failure) => {
                    match &failure {
                        S3Failure::Refused(why) => shared.set_alarm(Alarm::S3Credentials, true, why),
                        S3Failure::Bucket(why) => shared.set_alarm(Alarm::S3Bucket, true, why),
                        S3Failure::Object(why) => shared.set_alarm(Alarm::S3Object, true, why),
                        S3Failure::Unavailable(_) => {}
                    }
                    Err(failure.to_string())
                }
            },
        }
    }

    /// Called once before the first delivery.
    fn prepare(&mut self, shared: &Shared) {
        if let Target::Bucket(bucket) = self {
            let waiting: Vec<airlock_outbox::Seq> = lock(&shared.spool)
                .pending(Sink::Objects)
                .map(|meta| meta.seq)
                .collect();
            bucket.abort_orphaned_uploads(&|seq| waiting.binary_search(&seq).is_ok());
        }
    }
}

/// One sink's delivery loop: the oldest waiting record, delivered, then acknowledged; on failure the same
/// record again after a backoff.
fn deliver(shared: &Shared, sink: Sink, target: &mut Target) {
    target.prepare(shared);
    let backoff = Backoff::default();
    let mut failures: u32 = 0;
    // Delivered objects in a row that could not be kept on the device (see `keep_delivered`).
    let mut keep_failures: u32 = 0;
    let label = sink_label(sink);
    shared.metrics.outbox.set_uplink_up(label, true);
    loop {
        let record = {
            let mut spool = lock(&shared.spool);
            loop {
                refresh_gauges(shared, &spool);
                if let Some(seq) = spool.pending(sink).next().map(|meta| meta.seq) {
                    break spool.read(seq);
                }
                if sink == Sink::Objects {
                    refresh_disk_gauges(shared);
                }
                spool = shared
                    .changed
                    .wait_timeout(spool, IDLE_REFRESH)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
        };
        let started = Instant::now();
        let result = record
            .map_err(|error| error.to_string())
            .and_then(|record| target.deliver(shared, &record).map(|()| record));
        shared
            .metrics
            .outbox
            .delivered(label, result.is_ok(), started.elapsed().as_secs_f64());
        match result {
            Ok(record) => {
                failures = 0;
                if sink == Sink::Objects && !artifact_uploaded(shared, &record) {
                    // Not acknowledged: the object is delivered again (a no-op, create-only) and the event
                    // spooled then.
                    std::thread::sleep(backoff.delay(0, random()));
                    continue;
                }
                let kept = if sink == Sink::Objects {
                    match keep_delivered(shared, &record) {
                        Ok(kept) => {
                            keep_failures = 0;
                            kept
                        }
                        Err(error) => {
                            // Not acknowledged: kept at the next attempt (the delivery repeats as a no-op),
                            // backing off like a failed delivery so a full disk does not re-upload in a loop.
                            tracing::error!(%error, "cannot keep a delivered artifact on the device; it stays in the spool");
                            keep_failures += 1;
                            std::thread::sleep(backoff.delay(keep_failures, random()));
                            continue;
                        }
                    }
                } else {
                    None
                };
                match shared.ack(record.meta.seq) {
                    Ok(()) if sink == Sink::Objects => match kept {
                        Some(detail) => {
                            shared.audit(AuditKind::ArtifactRetained, &record.meta.key, detail);
                        }
                        None => {
                            shared.audit(
                                AuditKind::ArtifactPurged,
                                &record.meta.key,
                                serde_json::json!({ "retention": "until_delivered" }),
                            );
                        }
                    },
                    Ok(()) => {}
                    Err(error) => {
                        tracing::error!(%error, sink = label.as_str(), "cannot remove a delivered outbox record; it may be delivered again");
                        std::thread::sleep(backoff.delay(0, random()));
                    }
                }
            }
            Err(error) => {
                let delay = backoff.delay(failures, random());
                failures = failures.saturating_add(1);
                tracing::warn!(%error, sink = label.as_str(), failures, retry_in_ms = delay.as_millis() as u64, "outbox delivery failed; kept in the spool");
                std::thread::sleep(delay);
            }
        }
    }
}

#[derive(Serialize)]
struct ArtifactUploaded<'a> {
    event: &'static str,
    key: &'a str,
    sha256: String,
    bytes: u64,
    at: String,
}

/// Spools `evt/artifact/uploaded` for an object its sink took (before the object's record is acknowledged, so
/// a crash in between repeats the event rather than losing it). False when it could not be spooled.
fn artifact_uploaded(shared: &Shared, record: &Record) -> bool {
    let (sha256, bytes) = match &record.body {
        Body::File { sha256, size, .. } => (hex::encode(sha256), *size),
        Body::Inline(body) => (hex::encode(Sha256::digest(body)), body.len() as u64),
    };
    let event = ArtifactUploaded {
        event: "artifact_uploaded",
        key: &record.meta.key,
        sha256,
        bytes,
        at: crate::clock::rfc3339(SystemTime::now()),
    };
    let appended = serde_json::to_vec(&event)
        .map_err(|error| error.to_string())
        .and_then(|body| {
            shared
                .spool_event("evt/artifact/uploaded", body)
                .map_err(|error| error.to_string())
        });
    match appended {
        Ok(_) => {
            shared.audit(
                AuditKind::ArtifactUploaded,
                &record.meta.key,
                serde_json::json!({ "sha256": event.sha256, "bytes": event.bytes }),
            );
            true
        }
        Err(error) => {
            tracing::error!(%error, "cannot spool the artifact's upload event; the object stays in the spool");
            false
        }
    }
}

/// The last gate for one file of a finished call: Some(reason) when it must not leave. Audio must be
/// age-encrypted; JSON and WebVTT must hold no card number, SSN or unmasked digit run; nothing else may
/// leave.
fn last_gate(name: &str, path: &Path) -> std::io::Result<Option<String>> {
    let found = |leak: Option<airlock_compliance::Leak>| {
        leak.map(|leak| format!("{} at {}", leak.kind.label(), leak.place))
    };
    if name.ends_with(".age") {
        let mut head = [0u8; 34];
        let read = std::fs::File::open(path)?.read(&mut head)?;
        let head = &head[..read];
        let encrypted = head.starts_with(b"age-encryption.org/v1\n")
            || head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----");
        return Ok((!encrypted).then(|| "not_encrypted: the file is not an age message".to_string()));
    }
    if name.ends_with(".json") {
        return Ok(found(airlock_compliance::scan_json(&std::fs::read(path)?)));
    }
    if name.ends_with(".vtt") {
        return Ok(found(airlock_compliance::scan_webvtt(&String::from_utf8_lossy(
            &std::fs::read(path)?,
        ))));
    }
    Ok(Some(
        "unknown_kind: only audio (.age), JSON and WebVTT artifacts may leave".to_string(),
    ))
}

pub(crate) fn random() -> u64 {
    getrandom::u64().unwrap_or_else(|_| unix_ms(SystemTime::now()))
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".vtt") {
        "text/vtt"
    } else {
        "application/octet-stream"
    }
}

/// The local path of an object key; None when the key could leave the uplink directory.
pub(crate) fn object_path(root: &Path, key: &str) -> Option<PathBuf> {
    let relative = Path::new(key);
    (!key.is_empty()
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_))))
    .then(|| root.join(relative))
}

/// Writes an object create-only: an existing object with the same content counts as delivered (a crash
/// between delivery and acknowledgement), different content is an error that keeps the record.
fn put_object(root: &Path, record: &Record) -> Result<(), String> {
    let target = object_path(root, &record.meta.key)
        .ok_or_else(|| format!("object key {:?} is not a relative path", record.meta.key))?;
    let (bytes, expected): (Box<dyn Read>, [u8; 32]) = match &record.body {
        Body::Inline(body) => (
            Box::new(std::io::Cursor::new(body.clone())),
            Sha256::digest(body).into(),
        ),
        Body::File { path, sha256, .. } => (
            Box::new(
                std::fs::File::open(path).map_err(|error| format!("open the spooled artifact: {error}"))?,
            ),
            *sha256,
        ),
    };
    if target.exists() {
        let existing =
            std::fs::File::open(&target).map_err(|error| format!("read the existing object: {error}"))?;
        let (sha, _) = airlock_outbox::spool::sha256_of(existing)
            .map_err(|error| format!("read the existing object: {error}"))?;
        return if sha == expected {
            Ok(())
        } else {
            Err("an object with other content already exists under this key (create-only)".into())
        };
    }
    let parent = target.parent().ok_or("object key without a directory")?;
    create_dirs_durably(parent).map_err(|error| format!("create the object's directory: {error}"))?;
    let mut temp = target.as_os_str().to_owned();
    temp.push(".partial");
    let temp = PathBuf::from(temp);
    let written = (|| -> std::io::Result<[u8; 32]> {
        let mut out = std::fs::File::create(&temp)?;
        let mut hasher = Sha256::new();
        let mut reader = bytes;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            out.write_all(&buffer[..read])?;
        }
        out.sync_all()?;
        Ok(hasher.finalize().into())
    })();
    let sha = match written {
        Ok(sha) => sha,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(format!("write the object: {error}"));
        }
    };
    if sha != expected {
        let _ = std::fs::remove_file(&temp);
        return Err("the spooled artifact no longer matches its SHA-256; not delivered".into());
    }
    std::fs::rename(&temp, &target).map_err(|error| format!("place the object: {error}"))?;
    sync_directory(parent).map_err(|error| format!("sync the object's directory: {error}"))
}

fn sync_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, syncing each new directory's parent so they survive a power loss.
pub(crate) fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
        match std::fs::create_dir(dir) {
            Ok(()) => sync_directory(parent),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    } else {
        std::fs::create_dir(dir)
    }
}

/// Appends an event's JSON as one line of `events.jsonl` and syncs it.
fn append_event(root: &Path, record: &Record) -> Result<(), String> {
    let Body::Inline(body) = &record.body else {
        return Err("an event record without an inline body".into());
    };
    let mut line = body.clone();
    line.push(b'\n');
    let path = root.join("events.jsonl");
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|error| format!("open events.jsonl: {error}"))?;
    let length = file
        .metadata()
        .map_err(|error| format!("inspect events.jsonl: {error}"))?
        .len();
    if let Err(error) = file.write_all(&line).and_then(|()| file.sync_data()) {
        // Never leave half a line for the retry to append to.
        let _ = file.set_len(length);
        return Err(format!("append to events.jsonl: {error}"));
    }
    if created {
        sync_directory(root).map_err(|error| format!("sync the uplink directory: {error}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_outbox::RecordMeta;

    fn object_record(key: &str, body: &[u8]) -> Record {
        Record {
            meta: RecordMeta {
                seq: 1,
                sink: Sink::Objects,
                key: key.into(),
                created_unix_ms: 0,
                bytes: body.len() as u64,
            },
            content_type: "application/octet-stream".into(),
            body: Body::Inline(body.to_vec()),
            retention: None,
        }
    }

    #[test]
    fn objects_are_create_only_and_a_crash_leaves_nothing_half_written_or_doubled() {
        let root = std::env::temp_dir().join(format!("airlock-local-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let key = "site/2026/11/29/call/recording.wav.age";
        let target = root.join(key);
        // A crash mid-copy left a partial file: the retry replaces it and places the whole object.
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(root.join(format!("{key}.partial")), b"half").unwrap();
        put_object(&root, &object_record(key, b"the whole object")).expect("delivered");
        assert_eq!(std::fs::read(&target).unwrap(), b"the whole object");
        assert!(!root.join(format!("{key}.partial")).exists());
        // A crash after placing it but before the spool's acknowledgement: the same content again is a success,
        // and the object is not written twice (its modification time stays).
        let placed = std::fs::metadata(&target).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        put_object(&root, &object_record(key, b"the whole object")).expect("idempotent");
        assert_eq!(std::fs::metadata(&target).unwrap().modified().unwrap(), placed);
        // Other content under the same key is refused and the object left alone.
        let error = put_object(&root, &object_record(key, b"something else")).expect_err("create-only");
        assert!(error.contains("create-only"), "{error}");
        assert_eq!(std::fs::read(&target).unwrap(), b"the whole object");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn object_keys_stay_inside_the_uplink_directory() {
        let root = Path::new("/data/uplink");
        assert_eq!(
            object_path(root, "site/2026/11/29/call/manifest.json"),
            Some(PathBuf::from("/data/uplink/site/2026/11/29/call/manifest.json"))
        );
        for bad in ["../etc/passwd", "/etc/passwd", "site/../../x", "./x/..", ""] {
            assert_eq!(object_path(root, bad), None, "{bad}");
        }
    }
}
