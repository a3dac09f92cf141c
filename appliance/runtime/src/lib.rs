//! The Airlock runtime: the only place where sockets, files, tasks and clocks meet the sans-IO cores.
//! [`run`] binds the SIP and metrics listeners, finalises recordings a crash interrupted, then drives the
//! SIPREC server (and, when configured, VoiceStream and local capture from a sound card) until shutdown,
//! with one task per recorded call, telling a [`Supervisor`] (systemd) when it is
//! ready, what it is doing, when it stops, and that it is alive.

mod admission;
mod alarm;
mod audio_redaction;
mod call;
mod capture;
mod clock;
mod control;
mod control_api;
mod health;
mod https;
mod manifest;
mod metrics_http;
mod mqtt;
mod mqtt_commands;
mod outbox;
mod policy;
mod requests;
mod retained;
mod s3;
mod sip_io;
mod status_page;
mod storage;
mod supervision;
mod tls;
mod transcript;
mod vs_call;
mod vs_hub;
mod vs_server;
mod vs_webhooks;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_recording::Recipient;
use airlock_siprec::srs::{Srs, SrsConfig};
use airlock_telemetry::{CallOutcome, Metrics};
use serde::Serialize;
use tokio::sync::mpsc;

pub use airlock_media::segment::{LevelConfig, Segmentation};
pub use airlock_sip::{Cidr, GuardConfig};
pub use capture::{CAPTURE_ROLES, CaptureSettings};
pub use clock::rfc3339;
pub use control_api::{ControlApiError, ControlApiSettings, validate as validate_control_api};
pub use mqtt::{BrokerProbe, MqttSettings, probe_broker, tls_config as mqtt_tls_config};
pub use outbox::OutboxSettings;
pub use policy::{
    ExtensionMatch, Policy, RecordingRelease, RetentionRule, SEALED_MANIFEST_FIELDS, TranscriptRelease,
};
pub use s3::{
    BucketProbe, LockMode, ObjectLockSettings, S3Settings, check_ca_bundle as check_s3_ca_bundle,
    probe_bucket,
};
pub use status_page::{
    SelftestCommand, StatusPageError, StatusPageSettings, check_password_hash, hash_password,
    validate as validate_status_page,
};
pub use storage::DataDir;
pub use supervision::Supervisor;
pub use tls::{TlsError, TlsSettings, validate as validate_tls};
pub use transcript::{Transcription, TranscriptionError, TranscriptionSettings};
pub use vs_server::{VoiceStreamError, VoiceStreamSettings, validate as validate_voicestream};
pub use vs_webhooks::WebhookSettings;

/// After SIPREC calls have ended, how long the VoiceStream server may take to close its streams.
const VOICESTREAM_STOP_BOUND: Duration = Duration::from_secs(3);

/// Everything the runtime needs, already validated by the binary.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    /// SIP over TLS; `None` when not configured.
    pub sip_tls: Option<TlsSettings>,
    /// Accept SDES keys (`a=crypto`) received over UDP/TCP, where anyone on the path can read them.
    pub insecure_sdes_without_tls: bool,
    /// Allow-list and per-source rate limit applied to every inbound SIP message.
    pub sip_guard: airlock_sip::GuardConfig,
    /// Inbound SIP TCP connections one source IP may hold open.
    pub max_tcp_connections_per_source: usize,
    pub strict_src: bool,
    pub max_calls: usize,
    pub retry_after_secs: u32,
    pub media_bind_ip: IpAddr,
    pub media_advertise_ip: IpAddr,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub inactivity_timeout: Duration,
    pub reorder_delay: Duration,
    pub recipients: Vec<Recipient>,
    pub data_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub grace: Duration,
    /// The Five9 VoiceStream destination; `None` when not configured.
    pub voicestream: Option<VoiceStreamSettings>,
    /// On-device transcription; `None` when disabled.
    pub transcription: Option<TranscriptionSettings>,
    /// The outbox spool and its key layout.
    pub outbox: OutboxSettings,
    /// The HTTPS control API (pause/resume on request); `None` when off.
    pub control_api: Option<ControlApiSettings>,
    /// The technician's HTTPS status page; `None` when off.
    pub status_page: Option<StatusPageSettings>,
    /// The warnings and errors logged lately (the tracing layer fills it; the status page shows it).
    pub recent_problems: airlock_telemetry::RecentProblems,
    /// Local capture from a sound card; `None` when off.
    pub capture: Option<CaptureSettings>,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot open the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the outbox: {0}")]
    Outbox(airlock_outbox::SpoolError),
    #[error("MQTT TLS: {0}")]
    MqttTls(TlsError),
    #[error("cannot listen for SIP: {0}")]
    SipListen(std::io::Error),
    #[error("SIP over TLS: {0}")]
    Tls(TlsError),
    #[error("VoiceStream: {0}")]
    VoiceStream(VoiceStreamError),
    #[error("{0}")]
    Transcription(TranscriptionError),
    #[error("control API: {0}")]
    ControlApi(ControlApiError),
    #[error("status page: {0}")]
    StatusPage(StatusPageError),
    #[error("cannot start the local capture thread: {0}")]
    Capture(std::io::Error),
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the appliance until `shutdown` resolves, then ends calls within the grace period and returns.
/// `supervisor` hears `ready` once every listener is bound, status lines and keep-alives while the control
/// loop answers its liveness probes, and `stopping` when shutdown begins.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
    supervisor: Arc<dyn Supervisor>,
) -> Result<(), RuntimeError> {
    let started = std::time::Instant::now();
    let metrics = Metrics::default();
    metrics.admission_open.set(1);
    let mqtt_tls = settings
        .outbox
        .mqtt
        .as_ref()
        .map(mqtt::tls_config)
        .transpose()
        .map_err(RuntimeError::MqttTls)?;
    let registry = requests::Registry::new();
    let (mqtt_commands, mqtt_command_rx) = match &settings.outbox.mqtt {
        Some(mqtt) if mqtt.commands => {
            let (sender, receiver) = mpsc::channel(mqtt_commands::COMMAND_QUEUE);
            (Some(sender), Some(receiver))
        }
        _ => (None, None),
    };
    let outbox = outbox::Outbox::start(
        &settings.data_dir,
        settings.outbox.clone(),
        mqtt_tls,
        mqtt_commands,
        metrics.clone(),
    )
    .map_err(RuntimeError::Outbox)?;
    let data_dir =
        DataDir::open(&settings.data_dir, outbox.clone()).map_err(|source| RuntimeError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
    recover_interrupted_calls(&data_dir, &metrics);
    let transcription = match &settings.transcription {
        Some(transcription) => Some(
            transcript::start(transcription, metrics.transcription.clone())
                .map_err(RuntimeError::Transcription)?,
        ),
        None => None,
    };

    let metrics_task = match settings.metrics_listen {
        Some(addr) => {
            let listener = metrics_http::bind(addr)
                .await
                .map_err(|source| RuntimeError::MetricsListen { addr, source })?;
            Some(tokio::spawn(metrics_http::serve(listener, metrics.clone())))
        }
        None => None,
    };

    let (inbound_tx, inbound_rx) = mpsc::channel(control::CONTROL_QUEUE);
    let sip = sip_io::start(
        settings.sip_udp,
        settings.sip_tcp,
        inbound_tx.clone(),
        metrics.clone(),
        settings.sip_guard.clone(),
        settings.max_tcp_connections_per_source,
    )
    .await
    .map_err(RuntimeError::SipListen)?;
    if settings.insecure_sdes_without_tls {
        tracing::warn!(
            "sip.insecure_sdes_without_tls is set: SRTP keys received over UDP/TCP are accepted, and anyone \
             on the signalling path can decrypt that media. Use SIP over TLS ([sip.tls]) instead."
        );
    }
    if let Some(tls) = settings.sip_tls.clone() {
        tls::start(tls, sip.clone(), metrics.clone()).await?;
    }
    let srs = Srs::new(srs_config(&settings));
    let probes = inbound_tx.clone();
    let environment = call::CallEnvironment {
        data_dir,
        recipients: Arc::new(settings.recipients.clone()),
        bind_ip: settings.media_bind_ip,
        inactivity_timeout: settings.inactivity_timeout,
        reorder_delay: settings.reorder_delay,
        metrics,
        control: inbound_tx,
        transcription,
        registry: registry.clone(),
    };
    let mqtt_command_task = mqtt_command_rx.map(|commands| {
        tokio::spawn(mqtt_commands::serve(
            commands,
            registry.clone(),
            environment.data_dir.clone(),
            environment.metrics.clone(),
        ))
    });
    let status_page_task = match settings.status_page.clone() {
        Some(page) => {
            let sources = status_page::Sources {
                metrics: environment.metrics.clone(),
                registry: registry.clone(),
                recent_problems: settings.recent_problems.clone(),
                started,
                site: settings.outbox.site.clone(),
                appliance: settings
                    .outbox
                    .mqtt
                    .as_ref()
                    .map_or_else(|| "appliance".to_string(), |mqtt| mqtt.appliance.clone()),
                objects_go_to: if settings.outbox.s3.is_some() {
                    "S3 bucket"
                } else {
                    "local directory"
                },
                events_go_to: if settings.outbox.mqtt.is_some() {
                    "MQTT broker"
                } else {
                    "local log"
                },
            };
            Some(
                status_page::start(page, sources)
                    .await
                    .map_err(RuntimeError::StatusPage)?,
            )
        }
        None => None,
    };
    let control_api_task = match settings.control_api.clone() {
        Some(api) => Some(
            control_api::start(api, registry, environment.metrics.clone())
                .await
                .map_err(RuntimeError::ControlApi)?,
        ),
        None => None,
    };
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let capture = match settings.capture.clone() {
        Some(capture) => Some(
            capture::start(
                capture,
                environment.clone(),
                stopping.clone(),
                srs_config(&settings).call_id_seed,
            )
            .map_err(RuntimeError::Capture)?,
        ),
        None => {
            // An alarm raised while capture was configured must not outlive the configuration.
            environment.data_dir.outbox().set_alarm(
                airlock_telemetry::Alarm::CaptureDevice,
                false,
                "local capture is off",
            );
            None
        }
    };
    let voicestream = match settings.voicestream.clone() {
        Some(vs) => {
            let hub = vs_hub::Hub::new(
                airlock_voicestream::JoinerConfig {
                    max_calls: vs.max_streams,
                    max_legs_per_call: 8,
                    linger: vs.leg_linger,
                },
                environment.clone(),
                vs_hub::CallFormat {
                    channels: vs.channels,
                },
                srs_config(&settings).call_id_seed,
            );
            let webhooks = match vs.webhooks.clone() {
                Some(webhooks) => Some(
                    vs_webhooks::start(webhooks, hub.clone(), environment.metrics.clone())
                        .await
                        .map_err(RuntimeError::VoiceStream)?,
                ),
                None => None,
            };
            let server = vs_server::start(vs, hub.clone(), environment.metrics.clone(), stopping)
                .await
                .map_err(RuntimeError::VoiceStream)?;
            Some((hub, server, webhooks))
        }
        None => None,
    };
    tracing::info!(
        sip_udp = ?settings.sip_udp,
        sip_tcp = ?settings.sip_tcp,
        sip_tls = ?settings.sip_tls.as_ref().map(|tls| tls.listen),
        voicestream = ?settings.voicestream.as_ref().map(|vs| vs.listen),
        metrics = ?settings.metrics_listen,
        control_api = ?settings.control_api.as_ref().map(|api| api.listen),
        status_page = ?settings.status_page.as_ref().map(|page| page.listen),
        capture = ?settings.capture.as_ref().map(|capture| &capture.device),
        "airlock is recording"
    );
    supervisor.ready(&supervision::status_line(&supervision::Health {
        active_calls: 0,
        admission_open: true,
        stopping: false,
        uplink_up: None,
    }));
    let supervision = tokio::spawn(supervision::supervise(supervisor.clone(), move || {
        let probes = probes.clone();
        async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            probes.send(control::ControlInput::Probe(reply)).await.ok()?;
            answer.await.ok()
        }
    }));
    let shutdown = async move {
        shutdown.await;
        supervisor.stopping("stopping; ending active calls");
        // VoiceStream legs are told 1011 now, while SIPREC calls get their grace period.
        let _ = stopping_tx.send(true);
    };
    control::Control::new(srs, inbound_rx, sip, environment, settings.grace)
        .run(shutdown)
        .await;
    // The control loop has ended and cannot answer probes; what is left below is bounded (seconds).
    supervision.abort();
    if let Some((hub, server, webhooks)) = voicestream {
        // The legs were told 1011 when shutdown began and had the SIPREC grace period to end; the server
        // and the recorders get a short bound more, not a second grace period.
        let _ = tokio::time::timeout(VOICESTREAM_STOP_BOUND, server).await;
        if let Some(webhooks) = webhooks {
            webhooks.abort();
        }
        let _ = tokio::time::timeout(settings.grace.max(VOICESTREAM_STOP_BOUND), hub.shutdown()).await;
    }
    if let Some(capture) = capture {
        // Its call was ended when shutdown began; this waits for its recording to close.
        let bound = settings.grace.max(VOICESTREAM_STOP_BOUND);
        let _ = tokio::time::timeout(bound, capture.shutdown()).await;
    }
    // Deliveries to a working sink take milliseconds; what cannot go now stays in the spool for the next run.
    if !outbox.drain(OUTBOX_DRAIN_BOUND) {
        tracing::warn!(
            "stopping with records still in the outbox spool; they are delivered after the restart"
        );
    }
    for task in [
        metrics_task,
        control_api_task,
        status_page_task,
        mqtt_command_task,
    ]
    .into_iter()
    .flatten()
    {
        task.abort();
    }
    tracing::info!("all calls finalised; stopped");
    Ok(())
}

fn srs_config(settings: &Settings) -> SrsConfig {
    let contact = settings.sip_udp.or(settings.sip_tcp);
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
        ^ u64::from(std::process::id());
    SrsConfig {
        strict_src: settings.strict_src,
        max_calls: settings.max_calls,
        retry_after_secs: settings.retry_after_secs,
        rtp_port_min: settings.rtp_port_min,
        rtp_port_max: settings.rtp_port_max,
        media_address: settings.media_advertise_ip,
        contact_address: contact,
        tls_contact_address: settings.sip_tls.as_ref().map(|tls| tls.listen),
        insecure_sdes_without_tls: settings.insecure_sdes_without_tls,
        // VoiceStream over SIP reserves a channel per leg like the gRPC destination ([voicestream] channels).
        voicestream_channels: settings.voicestream.as_ref().map_or(2, |vs| vs.channels),
        call_id_seed: seed,
        ..SrsConfig::default()
    }
}

#[derive(Serialize)]
struct CallEvent<'a> {
    event: &'static str,
    call: &'a str,
    at: String,
    end_reason: Option<&'a str>,
    recording_sha256: Option<&'a str>,
}

#[derive(Serialize)]
struct CallStartedEvent<'a> {
    event: &'static str,
    call: &'a str,
    at: String,
    source: &'static str,
}

/// Spools `evt/call/started` for a call whose recording was just opened (`source`: siprec, voicestream).
fn call_started(data_dir: &DataDir, dir_name: &str, source: &'static str, at: SystemTime) {
    let event = CallStartedEvent {
        event: "call_started",
        call: dir_name,
        at: clock::rfc3339(at),
        source,
    };
    if let Err(error) = data_dir.append_event("evt/call/started", &event) {
        tracing::error!(%error, "cannot spool the call's start event");
    }
}

/// How long a stopping appliance waits for the outbox to deliver what is waiting.
const OUTBOX_DRAIN_BOUND: Duration = Duration::from_secs(5);

/// Hands a finished call to the outbox and spools its event.
fn publish_call(data_dir: &DataDir, dir_name: &str, manifest: &manifest::Manifest) {
    let event = CallEvent {
        event: "call_recorded",
        call: dir_name,
        at: clock::rfc3339(SystemTime::now()),
        end_reason: manifest.end_reason.as_deref(),
        recording_sha256: manifest.recording.as_ref().map(|r| r.sha256.as_str()),
    };
    if let Err(error) = data_dir.publish(dir_name, &manifest.started_at, &event) {
        tracing::error!(%error, "cannot hand the finished call to the outbox; it stays in active/ and is retried at the next start");
    }
}

/// Finalises every call left in `active/` by a crash: the recording is completed from its last checkpoint
/// (no key needed), the manifest marked as recovered, and the call published.
fn recover_interrupted_calls(data_dir: &DataDir, metrics: &Metrics) {
    let Ok(entries) = std::fs::read_dir(data_dir.active_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(dir_name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let manifest_path = dir.join("manifest.json");
        let manifest: Option<manifest::Manifest> = std::fs::read(&manifest_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let Some(mut manifest) = manifest else {
            tracing::warn!(call = %dir_name, "interrupted call has no readable manifest; left in place");
            continue;
        };
        match airlock_recording::recover(&dir) {
            Ok(Some(finished)) => {
                manifest.complete(&finished, SystemTime::now(), CallOutcome::Recovered);
                if let Err(error) = storage::write_json_atomically(&manifest_path, &manifest) {
                    tracing::error!(%error, "cannot write the manifest of a recovered call");
                    continue;
                }
                metrics.call_ended(CallOutcome::Recovered);
                publish_call(data_dir, &dir_name, &manifest);
                tracing::warn!(call = %dir_name, "finalised a recording interrupted by a crash");
            }
            // The process died after the call was finalised but before all of it was in the outbox.
            Ok(None) if manifest.recording.is_some() && manifest.end_reason.is_some() => {
                publish_call(data_dir, &dir_name, &manifest);
                tracing::warn!(call = %dir_name, "published a finished call a crash left in active/");
            }
            Ok(None) => tracing::warn!(call = %dir_name, "interrupted call had no recording to recover"),
            Err(error) => {
                tracing::error!(call = %dir_name, %error, "cannot recover an interrupted recording")
            }
        }
    }
}
