//! Metric families of the outbox: what waits in the spool (per sink, bytes against the limit, the oldest
//! record's age), delivery results and time per sink, whether each uplink works, quarantined records, the
//! data partition's free space, and the alarms an operator must act on. Labels are bounded enums; no key, call or payload becomes a label.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Where outbox records go.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OutboxSink {
    /// Object storage (S3, or the local bucket directory).
    Objects,
    /// The event bus (MQTT, or the local event log).
    Events,
}

impl OutboxSink {
    pub const ALL: [OutboxSink; 2] = [Self::Objects, Self::Events];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Objects => "objects",
            Self::Events => "events",
        }
    }
}

impl EncodeLabelValue for OutboxSink {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The result of one delivery attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DeliveryResult {
    Ok,
    Error,
}

impl DeliveryResult {
    fn of(ok: bool) -> DeliveryResult {
        if ok { Self::Ok } else { Self::Error }
    }
}

impl EncodeLabelValue for DeliveryResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            encoder,
            match self {
                Self::Ok => "ok",
                Self::Error => "error",
            },
        )
    }
}

/// A condition an operator must act on; raised and cleared by the outbox (also published on `alarm/{name}`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Alarm {
    /// The spool is past its limit less the reserve: new calls are refused.
    SpoolFull,
    /// The S3 service refuses the configured credentials.
    S3Credentials,
    /// The S3 bucket is missing, in another region, or not lock-enabled although that is required.
    S3Bucket,
    /// The S3 service refuses an object (a conflicting object under its key, an invalid request); the
    /// objects behind it wait.
    S3Object,
    /// The MQTT broker refuses the connection or the appliance's publishes.
    MqttRefused,
    /// The last gate found card data, an SSN or an unmasked digit run in something about to leave, or an
    /// artifact that is not what it must be (unencrypted audio): it is held in `blocked/` for review.
    LeakBlocked,
    /// The local capture device (`[capture]`) cannot be opened or failed; it is being reopened.
    CaptureDevice,
}

impl Alarm {
    pub const ALL: [Alarm; 7] = [
        Self::SpoolFull,
        Self::S3Credentials,
        Self::S3Bucket,
        Self::S3Object,
        Self::MqttRefused,
        Self::LeakBlocked,
        Self::CaptureDevice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpoolFull => "spool_full",
            Self::S3Credentials => "s3_credentials",
            Self::S3Bucket => "s3_bucket",
            Self::S3Object => "s3_object",
            Self::MqttRefused => "mqtt_refused",
            Self::LeakBlocked => "leak_blocked",
            Self::CaptureDevice => "capture_device",
        }
    }
}

impl EncodeLabelValue for Alarm {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabel {
    alarm: Alarm,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: OutboxSink,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabel {
    sink: OutboxSink,
    result: DeliveryResult,
}

/// Outbox families; part of [`crate::Metrics`].
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    records: Family<SinkLabel, Gauge>,
    oldest_age_seconds: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    deliveries: Family<DeliveryLabel, Counter>,
    delivery_seconds: Family<SinkLabel, Histogram>,
    uplink_up: Family<SinkLabel, Gauge>,
    alarms: Family<AlarmLabel, Gauge>,
    /// Bytes in the spool (records and their artifact files).
    pub spool_bytes: Gauge,
    /// The configured spool limit.
    pub spool_limit_bytes: Gauge,
    /// Damaged records set aside at start-up.
    pub quarantined_records: Gauge,
    /// Delivered artifacts a retention class keeps on the device (`<data>/retained/`), and their bytes.
    pub retained_objects: Gauge,
    pub retained_bytes: Gauge,
    /// Free and total bytes of the filesystem holding the data directory.
    pub data_disk_free_bytes: Gauge,
    pub data_disk_size_bytes: Gauge,
}

impl Default for OutboxMetrics {
    fn default() -> Self {
        OutboxMetrics {
            records: Family::default(),
            oldest_age_seconds: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
                ])
            }),
            uplink_up: Family::default(),
            alarms: Family::default(),
            spool_bytes: Gauge::default(),
            spool_limit_bytes: Gauge::default(),
            quarantined_records: Gauge::default(),
            retained_objects: Gauge::default(),
            retained_bytes: Gauge::default(),
            data_disk_free_bytes: Gauge::default(),
            data_disk_size_bytes: Gauge::default(),
        }
    }
}

impl OutboxMetrics {
    /// Records waiting for `sink` and the age of the oldest (0 when none).
    pub fn set_waiting(&self, sink: OutboxSink, records: usize, oldest_age_seconds: f64) {
        self.records
            .get_or_create(&SinkLabel { sink })
            .set(records as i64);
        self.oldest_age_seconds
            .get_or_create(&SinkLabel { sink })
            .set(oldest_age_seconds);
    }

    /// One delivery attempt to `sink` and how long it took; sets the uplink state from its result.
    pub fn delivered(&self, sink: OutboxSink, ok: bool, seconds: f64) {
        let result = DeliveryResult::of(ok);
        self.deliveries
            .get_or_create(&DeliveryLabel { sink, result })
            .inc();
        self.delivery_seconds
            .get_or_create(&SinkLabel { sink })
            .observe(seconds);
        self.set_uplink_up(sink, ok);
    }

    pub fn set_uplink_up(&self, sink: OutboxSink, up: bool) {
        self.uplink_up
            .get_or_create(&SinkLabel { sink })
            .set(i64::from(up));
    }

    /// The last delivery result of `sink`; `None` before its first attempt.
    pub fn uplink_up(&self, sink: OutboxSink) -> Option<bool> {
        self.uplink_up
            .get(&SinkLabel { sink })
            .map(|gauge| gauge.get() != 0)
    }

    /// Records waiting for `sink` and the age of the oldest, as last set.
    pub fn waiting(&self, sink: OutboxSink) -> (i64, f64) {
        let label = SinkLabel { sink };
        (
            self.records.get(&label).map_or(0, |gauge| gauge.get()),
            self.oldest_age_seconds
                .get(&label)
                .map_or(0.0, |gauge| gauge.get()),
        )
    }

    /// Whether `alarm` is raised now.
    pub fn alarm_raised(&self, alarm: Alarm) -> bool {
        self.alarms
            .get(&AlarmLabel { alarm })
            .is_some_and(|gauge| gauge.get() != 0)
    }

    /// Shows `alarm` as raised (1) or clear (0).
    pub fn set_alarm(&self, alarm: Alarm, raised: bool) {
        self.alarms
            .get_or_create(&AlarmLabel { alarm })
            .set(i64::from(raised));
    }

    /// Delivery attempts to `sink` with the given result so far.
    pub fn deliveries_with(&self, sink: OutboxSink, ok: bool) -> u64 {
        let result = DeliveryResult::of(ok);
        self.deliveries
            .get_or_create(&DeliveryLabel { sink, result })
            .get()
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "outbox_spool_records",
            "Records waiting in the outbox spool, by sink",
            self.records.clone(),
        );
        registry.register(
            "outbox_spool_oldest_age_seconds",
            "Age of the oldest record waiting for a sink (0 when none waits)",
            self.oldest_age_seconds.clone(),
        );
        registry.register(
            "outbox_deliveries",
            "Outbox delivery attempts, by sink and result",
            self.deliveries.clone(),
        );
        registry.register(
            "outbox_delivery_seconds",
            "Time one outbox delivery attempt took, by sink",
            self.delivery_seconds.clone(),
        );
        registry.register(
            "outbox_uplink_up",
            "1 while deliveries to the sink succeed, 0 while they fail",
            self.uplink_up.clone(),
        );
        registry.register(
            "alarm",
            "1 while the alarm is raised (also published on the event topic alarm/{alarm}), 0 when clear",
            self.alarms.clone(),
        );
        registry.register(
            "outbox_spool_bytes",
            "Bytes in the outbox spool (records and artifact files)",
            self.spool_bytes.clone(),
        );
        registry.register(
            "outbox_spool_limit_bytes",
            "Spool size at which new calls are refused (less the reserve for calls in flight)",
            self.spool_limit_bytes.clone(),
        );
        registry.register(
            "outbox_quarantined_records",
            "Damaged spool records set aside at start-up (kept in quarantine/, never delivered)",
            self.quarantined_records.clone(),
        );
        registry.register(
            "retained_objects",
            "Delivered artifacts kept on the device by their retention class (in retained/)",
            self.retained_objects.clone(),
        );
        registry.register(
            "retained_bytes",
            "Bytes of the delivered artifacts kept on the device by their retention class",
            self.retained_bytes.clone(),
        );
        registry.register(
            "data_disk_free_bytes",
            "Free bytes on the filesystem of the data directory",
            self.data_disk_free_bytes.clone(),
        );
        registry.register(
            "data_disk_size_bytes",
            "Size in bytes of the filesystem of the data directory",
            self.data_disk_size_bytes.clone(),
        );
    }
}
