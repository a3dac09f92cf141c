//! Telemetry shared by every Airlock component: the `Pii<T>` wrapper that keeps personal data out of logs,
//! the Prometheus metric families (labels are bounded enums only, never call ids, numbers or addresses) and
//! tracing initialisation. No I/O here: the runtime serves `/metrics` by calling [`Metrics::encode`].

mod capture_metrics;
mod metrics;
mod outbox_metrics;
mod pii;
mod recent;
mod redaction_metrics;
mod request_metrics;
mod security_metrics;
mod transcription_metrics;
mod voicestream_metrics;

pub use capture_metrics::{CaptureEnd, CaptureMetrics};
pub use metrics::{CallOutcome, Metrics, SipMethodLabel, SipRefusal, SipResponseClass, TcpRefusal};
pub use outbox_metrics::{Alarm, OutboxMetrics, OutboxSink};
pub use pii::Pii;
pub use recent::{Problem, RECENT_PROBLEMS, RecentProblems};
pub use redaction_metrics::{RedactionMetrics, SilenceReason};
pub use request_metrics::{RequestAction, RequestMetrics, RequestOutcome, RequestSource};
pub use security_metrics::{ReloadResult, SecurityMetrics, SrtpDropReason, TlsHandshakeResult};
pub use transcription_metrics::{SegmentResult, TranscriptionMetrics, TranscriptionState};
pub use voicestream_metrics::{StreamResult, VoiceStreamMetrics, WebhookResult};

/// The log filter: `AIRLOCK_LOG` (default `info`).
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Installs the process-wide tracing subscriber: human-readable lines on stderr, filtered by [`log_filter`],
/// and the warnings and errors among them kept in `recent`. (Under systemd the binary logs to journald with
/// structured fields instead.)
pub fn init_tracing(recent: RecentProblems) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _already_installed = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter(log_filter()),
        )
        .with(recent.layer())
        .try_init();
}
