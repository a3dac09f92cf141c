//! Fleet telemetry: the health summary the MQTT sink publishes (retained) on `…/health` every
//! `outbox.mqtt.health_interval_secs`, beside the full metrics exposition on `…/metrics`, so a NOC that cannot
//! scrape the site tells an appliance that is healthy, degraded (and why) or offline (the retained `state`
//! topic's last will, or a `health` older than three intervals) from MQTT alone. Built from the metrics only:
//! counts, states and bounded names — no call, number, address or transcript.

use std::time::{Duration, SystemTime};

use airlock_telemetry::{Alarm, Metrics, OutboxSink, TranscriptionState};
use serde::Serialize;

/// A sink's oldest waiting record older than this counts as a growing spool.
const SPOOL_OLDEST_DEGRADED: Duration = Duration::from_secs(3600);
/// Spool use above this share of its limit counts as a growing spool.
const SPOOL_SHARE_DEGRADED: f64 = 0.5;
/// The oldest waiting speech segment older than this counts as transcription lagging.
const ASR_LAG_DEGRADED_SECS: f64 = 30.0;
/// The SIP TLS certificate expiring within this counts as expiring.
const CERTIFICATE_DEGRADED: Duration = Duration::from_secs(14 * 86_400);

/// Why an appliance is degraded (bounded names; docs/asyncapi.yaml lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reason {
    SpoolGrowing,
    AsrLagging,
    CertificateExpiring,
    AdmissionClosed,
    UplinkObjectsDown,
    Alarm,
}

impl Reason {
    /// The reason in words, for the technician's status page.
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Reason::SpoolGrowing => {
                "the outbox spool is growing (over half full, or something waits over an hour)"
            }
            Reason::AsrLagging => "transcription lags behind the calls",
            Reason::CertificateExpiring => "the SIP TLS certificate expires within 14 days",
            Reason::AdmissionClosed => "new calls are refused (the spool is full)",
            Reason::UplinkObjectsDown => "artifacts cannot be delivered: the uplink for objects is down",
            Reason::Alarm => "an alarm is raised",
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Health {
    pub at: String,
    pub state: &'static str,
    pub reasons: Vec<Reason>,
    pub alarms: Vec<&'static str>,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub interval_secs: u64,
    pub active_calls: i64,
    pub admission_open: bool,
    pub spool: Spool,
    pub uplink_objects_up: Option<bool>,
    pub transcription: Transcription,
    /// Days until the SIP TLS server certificate expires; absent while TLS is off.
    pub certificate_days_left: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Spool {
    pub bytes: i64,
    pub limit_bytes: i64,
    pub objects_waiting: i64,
    pub events_waiting: i64,
    pub oldest_age_secs: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Transcription {
    pub state: &'static str,
    pub lag_secs: f64,
    pub queue_depth: i64,
}

/// The health summary now.
pub(crate) fn health(metrics: &Metrics, uptime: Duration, interval: Duration, now: SystemTime) -> Health {
    let outbox = &metrics.outbox;
    let (objects_waiting, objects_oldest) = outbox.waiting(OutboxSink::Objects);
    let (events_waiting, events_oldest) = outbox.waiting(OutboxSink::Events);
    let spool = Spool {
        bytes: outbox.spool_bytes.get(),
        limit_bytes: outbox.spool_limit_bytes.get(),
        objects_waiting,
        events_waiting,
        oldest_age_secs: objects_oldest.max(events_oldest),
    };
    let transcription = Transcription {
        state: metrics.transcription.state().as_str(),
        lag_secs: metrics.transcription.lag_seconds.get(),
        queue_depth: metrics.transcription.queue_depth.get(),
    };
    let expiry = metrics.security.tls_certificate_expiry_seconds.get();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let certificate_days_left = (expiry > 0).then(|| (expiry - now_secs).div_euclid(86_400));
    let alarms: Vec<&'static str> = Alarm::ALL
        .into_iter()
        .filter(|&alarm| outbox.alarm_raised(alarm))
        .map(Alarm::as_str)
        .collect();
    let admission_open = metrics.admission_open.get() != 0;
    let uplink_objects_up = outbox.uplink_up(OutboxSink::Objects);

    let mut reasons = Vec::new();
    let spool_share = if spool.limit_bytes > 0 {
        spool.bytes as f64 / spool.limit_bytes as f64
    } else {
        0.0
    };
    if spool_share > SPOOL_SHARE_DEGRADED || spool.oldest_age_secs > SPOOL_OLDEST_DEGRADED.as_secs_f64() {
        reasons.push(Reason::SpoolGrowing);
    }
    if transcription.lag_secs > ASR_LAG_DEGRADED_SECS
        || metrics.transcription.state() == TranscriptionState::Shedding
    {
        reasons.push(Reason::AsrLagging);
    }
    if expiry > 0 && expiry - now_secs < CERTIFICATE_DEGRADED.as_secs() as i64 {
        reasons.push(Reason::CertificateExpiring);
    }
    if !admission_open {
        reasons.push(Reason::AdmissionClosed);
    }
    if uplink_objects_up == Some(false) {
        reasons.push(Reason::UplinkObjectsDown);
    }
    if !alarms.is_empty() {
        reasons.push(Reason::Alarm);
    }
    Health {
        at: crate::clock::rfc3339(now),
        state: if reasons.is_empty() { "healthy" } else { "degraded" },
        reasons,
        alarms,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: uptime.as_secs(),
        interval_secs: interval.as_secs(),
        active_calls: metrics.active_calls.get(),
        admission_open,
        spool,
        uplink_objects_up,
        transcription,
        certificate_days_left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Metrics {
        let metrics = Metrics::default();
        metrics.admission_open.set(1);
        metrics.outbox.spool_limit_bytes.set(1000);
        metrics
    }

    const NOW: u64 = 1_800_000_000;

    fn at_now(metrics: &Metrics) -> Health {
        health(
            metrics,
            Duration::from_secs(5),
            Duration::from_secs(60),
            SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        )
    }

    #[test]
    fn a_quiet_appliance_is_healthy() {
        let health = at_now(&fresh());
        assert_eq!(health.state, "healthy");
        assert!(health.reasons.is_empty() && health.alarms.is_empty());
        assert_eq!(health.certificate_days_left, None);
        assert_eq!(health.interval_secs, 60);
    }

    #[test]
    fn each_degradation_is_named() {
        let metrics = fresh();
        metrics.outbox.spool_bytes.set(600);
        assert_eq!(at_now(&metrics).reasons, vec![Reason::SpoolGrowing]);

        let metrics = fresh();
        metrics
            .outbox
            .set_waiting(OutboxSink::Objects, 3, SPOOL_OLDEST_DEGRADED.as_secs_f64() + 1.0);
        assert_eq!(at_now(&metrics).reasons, vec![Reason::SpoolGrowing]);

        let metrics = fresh();
        metrics.transcription.lag_seconds.set(45.0);
        assert_eq!(at_now(&metrics).reasons, vec![Reason::AsrLagging]);
        let metrics = fresh();
        metrics.transcription.set_state(TranscriptionState::Shedding);
        assert_eq!(at_now(&metrics).reasons, vec![Reason::AsrLagging]);

        let metrics = fresh();
        metrics
            .security
            .tls_certificate_expiry_seconds
            .set((NOW + 3 * 86_400) as i64);
        let health = at_now(&metrics);
        assert_eq!(health.reasons, vec![Reason::CertificateExpiring]);
        assert_eq!(health.certificate_days_left, Some(3));
        metrics
            .security
            .tls_certificate_expiry_seconds
            .set((NOW + 90 * 86_400) as i64);
        assert_eq!(at_now(&metrics).state, "healthy");

        let metrics = fresh();
        metrics.admission_open.set(0);
        metrics.outbox.set_uplink_up(OutboxSink::Objects, false);
        metrics.outbox.set_alarm(Alarm::S3Credentials, true);
        let health = at_now(&metrics);
        assert_eq!(
            health.reasons,
            vec![Reason::AdmissionClosed, Reason::UplinkObjectsDown, Reason::Alarm]
        );
        assert_eq!(health.alarms, vec!["s3_credentials"]);
        assert_eq!(health.state, "degraded");
    }
}
