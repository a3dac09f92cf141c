//! The MQTT event sink: publishes the outbox's event records, oldest first and one at a time, to
//! `airlock/v1/{site}/{appliance}/{topic}` with QoS 1 over TLS (rumqttc, MQTT 5), and acknowledges a record in
//! the spool only when the broker's PUBACK for exactly that publish reports success. rumqttc's own queue is
//! memory only, so nothing waits there: a lost connection drops the in-flight publish, which is published
//! again from the spool after the reconnect (at least once). The retained `state` topic says `online` after
//! every connect; the broker publishes the retained last will `offline` when the appliance vanishes.
//!
//! With `commands` set, every connection also subscribes (QoS 1) to `cmd/pause` and `cmd/resume` under the
//! same root and hands what arrives to `mqtt_commands` through its bounded queue (never waiting: a full queue
//! drops the command, counted as `busy`). The subscription is renewed after every connect (clean start).
//!
//! rumqttc does not return the packet id of a publish; with a single publisher its `Outgoing::Publish(pkid)`
//! events come in publish order, which pairs each PUBACK with its record. Every connection gets a fresh client,
//! so a publish handed to a connection that then failed is never sent on the next one.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_outbox::{Backoff, Body, Seq, Sink};
use airlock_telemetry::{Alarm, OutboxSink};
use airlock_telemetry::{RequestAction, RequestOutcome, RequestSource};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, LastWill, Packet, PubAckReason, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::mqtt_commands::MqttCommand;

/// The largest packet the broker may send us (commands are well under 1 KiB; acknowledgements tiny).
const MAX_INCOMING_PACKET: u32 = 10 * 1024;
use crate::outbox::Shared;
use crate::tls::TlsError;

/// Where and how to publish events (validated by configuration).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// CA bundle the broker's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain and private key, when the broker asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
    /// This appliance's id: the topic level after the site.
    pub appliance: String,
    pub keep_alive: Duration,
    /// Subscribe to `cmd/pause` and `cmd/resume` (pause requests from an agent-desktop integration).
    pub commands: bool,
    /// Between the retained `health` and `metrics` snapshots (crate::health); zero: none.
    pub health_interval: Duration,
}

/// Builds the TLS client configuration (also used by `check-config` to catch bad files early).
pub fn tls_config(settings: &MqttSettings) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    crate::tls::client_config(
        &settings.ca,
        settings
            .identity
            .as_ref()
            .map(|(certificate, key)| (certificate.as_path(), key.as_path())),
    )
}

/// Events from rumqttc's event loop, forwarded so the pump can wait on them and the spool at once.
type Forwarded = Result<Event, ConnectionError>;

/// Runs the MQTT sink until the process ends: one connection at a time, each with a fresh rumqttc client and
/// event loop, so nothing handed to an old connection can be sent (and mis-paired) on the next one.
pub(crate) async fn run(
    shared: Arc<Shared>,
    settings: MqttSettings,
    tls: Arc<rustls::ClientConfig>,
    site: String,
    commands: Option<mpsc::Sender<MqttCommand>>,
) {
    let root = format!("airlock/v1/{site}/{}", settings.appliance);
    let state_topic = format!("{root}/state");
    let started = Instant::now();
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
    options.set_keep_alive(settings.keep_alive);
    // Advertised in CONNECT, so the broker drops (rather than sends) anything larger: an oversized command
    // must not break the connection that carries every event.
    options.set_max_packet_size(Some(MAX_INCOMING_PACKET));
    options.set_clean_start(true);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
        options.set_credentials(username.clone(), password.clone());
    }
    options.set_last_will(LastWill::new(
        &state_topic,
        "offline",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let backoff = Backoff::default();
    let mut failures = 0u32;
    shared.metrics.outbox.set_uplink_up(OutboxSink::Events, false);
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 16);
        let (events_tx, events) = mpsc::channel::<Forwarded>(64);
        let forwarder = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        let link = Link {
            client: &client,
            root: &root,
            state_topic: &state_topic,
            commands: commands.as_ref(),
            started,
            health_interval: settings.health_interval,
        };
        let connected = connection(&shared, &link, events, &backoff).await;
        forwarder.abort();
        shared.metrics.outbox.set_uplink_up(OutboxSink::Events, false);
        failures = if connected { 0 } else { failures.saturating_add(1) };
        tokio::time::sleep(backoff.delay(failures, crate::outbox::random())).await;
    }
}

/// One connection's client, its topics, where commands go (`None`: no subscription), and the health cadence.
struct Link<'a> {
    client: &'a AsyncClient,
    root: &'a str,
    state_topic: &'a str,
    commands: Option<&'a mpsc::Sender<MqttCommand>>,
    /// When the appliance's uplink task started (the health summary's uptime).
    started: Instant,
    health_interval: Duration,
}

/// Drives one connection until it fails; true when it had been established.
async fn connection(
    shared: &Shared,
    link: &Link<'_>,
    mut events: mpsc::Receiver<Forwarded>,
    backoff: &Backoff,
) -> bool {
    let Link {
        client,
        root,
        state_topic,
        ..
    } = *link;
    let metrics = &shared.metrics.outbox;
    let mut connected = false;
    // Who each publish handed to rumqttc belongs to (None: the state message), in publish order, until its
    // Outgoing event names its packet id.
    let mut unnamed: VecDeque<Option<Seq>> = VecDeque::new();
    let mut by_packet: HashMap<u16, Option<Seq>> = HashMap::new();
    let mut in_flight: Option<(Seq, Instant)> = None;
    // After a refused publish: no publishing before this instant.
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut refusals = 0u32;
    // The next health and metrics snapshot: right after the CONNACK, then every interval.
    let mut next_health = tokio::time::Instant::now();
    // The largest packet the broker accepts (its CONNACK says; rumqttc fails the connection on a larger one).
    let mut broker_max_packet: Option<u32> = None;
    loop {
        if retry_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
            retry_at = None;
        }
        let health_on = connected && !link.health_interval.is_zero();
        if health_on && next_health <= tokio::time::Instant::now() {
            next_health = tokio::time::Instant::now() + link.health_interval;
            publish_health(shared, link, broker_max_packet, &mut unnamed).await;
        }
        let may_publish = connected && in_flight.is_none() && retry_at.is_none();
        if may_publish && let Some((seq, topic, body)) = next_event(shared) {
            match client
                .publish(format!("{root}/{topic}"), QoS::AtLeastOnce, false, body)
                .await
            {
                Ok(()) => {
                    unnamed.push_back(Some(seq));
                    in_flight = Some((seq, Instant::now()));
                }
                Err(error) => tracing::warn!(%error, "cannot hand an event to the MQTT client"),
            }
        }
        let mut wake = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        if health_on {
            wake = wake.min(next_health);
        }
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return connected,
            },
            () = shared.events_waiting.notified(), if may_publish => continue,
            () = tokio::time::sleep_until(wake) => continue,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                connected = true;
                next_health = tokio::time::Instant::now();
                broker_max_packet = ack
                    .properties
                    .as_ref()
                    .and_then(|properties| properties.max_packet_size);
                metrics.set_uplink_up(OutboxSink::Events, true);
                tracing::info!("connected to the MQTT broker");
                shared.set_alarm(Alarm::MqttRefused, false, "the MQTT broker accepts the appliance");
                if client
                    .publish(state_topic, QoS::AtLeastOnce, true, "online")
                    .await
                    .is_ok()
                {
                    unnamed.push_back(None);
                }
                if link.commands.is_some() {
                    // Retained commands are never delivered: a stale pause must not come back at a reconnect.
                    let filters = ["pause", "resume"].map(|command| Filter {
                        retain_forward_rule: RetainForwardRule::Never,
                        ..Filter::new(format!("{root}/cmd/{command}"), QoS::AtLeastOnce)
                    });
                    if let Err(error) = client.subscribe_many(filters).await {
                        tracing::warn!(%error, "cannot subscribe to MQTT commands");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(commands) = link.commands
                    && !publish.retain
                {
                    forward_command(shared, commands, root, &publish.topic, &publish.payload);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                {
                    tracing::warn!(codes = ?ack.return_codes,
                        "the MQTT broker refused the command subscription (ACL?); pause commands will not arrive");
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(packet))) => {
                if let Some(owner) = unnamed.pop_front() {
                    by_packet.insert(packet, owner);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let Some(owner) = by_packet.remove(&ack.pkid) else {
                    continue;
                };
                let accepted = matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                );
                let Some(seq) = owner else {
                    if !accepted {
                        tracing::warn!(reason = ?ack.reason, "the MQTT broker refused the state message or a health snapshot");
                    }
                    continue;
                };
                let took = in_flight
                    .take()
                    .map_or(0.0, |(_, started)| started.elapsed().as_secs_f64());
                metrics.delivered(OutboxSink::Events, accepted, took);
                if accepted {
                    refusals = 0;
                    shared.set_alarm(Alarm::MqttRefused, false, "the MQTT broker accepts the appliance");
                    if let Err(error) = shared.ack(seq) {
                        tracing::error!(%error, "cannot remove a delivered event from the spool; it may be sent again");
                    }
                } else {
                    // Kept in the spool and retried in order: nothing is skipped (the alarm is uplink_up 0).
                    let delay = backoff.delay(refusals, crate::outbox::random());
                    refusals = refusals.saturating_add(1);
                    metrics.set_uplink_up(OutboxSink::Events, false);
                    tracing::warn!(reason = ?ack.reason, retry_in_ms = delay.as_millis() as u64,
                        "the MQTT broker refused an event (ACL?); kept in the spool");
                    shared.set_alarm(
                        Alarm::MqttRefused,
                        true,
                        "the MQTT broker refuses the appliance's publishes (ACL?)",
                    );
                    retry_at = Some(tokio::time::Instant::now() + delay);
                }
            }
            Ok(_) => {}
            Err(error) => {
                if let ConnectionError::ConnectionRefused(code) = &error {
                    shared.set_alarm(
                        Alarm::MqttRefused,
                        true,
                        &format!("the MQTT broker refused the connection: {code:?}"),
                    );
                }
                if connected {
                    tracing::warn!(error = %describe(&error), "MQTT connection lost; events wait in the spool");
                } else {
                    tracing::warn!(error = %describe(&error), "cannot connect to the MQTT broker; events wait in the spool");
                }
                if let Some((_, started)) = in_flight.take() {
                    metrics.delivered(OutboxSink::Events, false, started.elapsed().as_secs_f64());
                }
                return connected;
            }
        }
    }
}

/// Publishes the retained `health` summary and `metrics` exposition (QoS 1, not spooled: only the latest
/// matters, and a reconnect publishes a fresh one). A snapshot larger than the broker's maximum packet size is
/// skipped (with a warning) rather than sent: rumqttc would end the connection that carries every event.
async fn publish_health(
    shared: &Shared,
    link: &Link<'_>,
    broker_max_packet: Option<u32>,
    unnamed: &mut VecDeque<Option<Seq>>,
) {
    let health = crate::health::health(
        &shared.metrics,
        link.started.elapsed(),
        link.health_interval,
        std::time::SystemTime::now(),
    );
    let summary = match serde_json::to_vec(&health) {
        Ok(summary) => summary,
        Err(error) => {
            tracing::warn!(%error, "cannot encode the health summary");
            return;
        }
    };
    for (name, body) in [
        ("health", summary),
        ("metrics", shared.metrics.encode().into_bytes()),
    ] {
        let topic = format!("{}/{name}", link.root);
        if let Some(max) = broker_max_packet
            && publish_packet_bytes(&topic, body.len()) > max as usize
        {
            tracing::warn!(
                topic = name,
                bytes = body.len(),
                broker_max_packet = max,
                "health snapshot larger than the broker's maximum packet size; not published"
            );
            continue;
        }
        match link.client.publish(topic, QoS::AtLeastOnce, true, body).await {
            Ok(()) => unnamed.push_back(None),
            Err(error) => {
                tracing::warn!(%error, topic = name, "cannot hand a health snapshot to the MQTT client")
            }
        }
    }
}

/// An upper bound of the size of a QoS 1 PUBLISH without properties: fixed header (≤ 5), topic (2 + length),
/// packet id (2), properties length (1), payload.
fn publish_packet_bytes(topic: &str, payload: usize) -> usize {
    5 + 2 + topic.len() + 2 + 1 + payload
}

/// Hands a message on `{root}/cmd/pause|resume` to the command task without waiting.
fn forward_command(
    shared: &Shared,
    commands: &mpsc::Sender<MqttCommand>,
    root: &str,
    topic: &[u8],
    payload: &[u8],
) {
    let command = topic
        .strip_prefix(root.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"/cmd/"));
    let action = match command {
        Some(b"pause") => RequestAction::Pause,
        Some(b"resume") => RequestAction::Resume,
        _ => return,
    };
    let command = MqttCommand {
        action,
        payload: payload.to_vec(),
    };
    if commands.try_send(command).is_err() {
        shared
            .metrics
            .requests
            .request(RequestSource::Mqtt, action, RequestOutcome::Busy);
        tracing::warn!("MQTT command queue full: a pause/resume command was dropped unanswered");
    }
}

/// The oldest event waiting, with its topic and JSON body.
fn next_event(shared: &Shared) -> Option<(Seq, String, Vec<u8>)> {
    let spool = shared.lock_spool();
    let seq = spool.pending(Sink::Events).next()?.seq;
    match spool.read(seq) {
        Ok(record) => match record.body {
            Body::Inline(body) => Some((seq, record.meta.key, body)),
            Body::File { .. } => None,
        },
        Err(error) => {
            tracing::error!(%error, "cannot read an event from the spool");
            None
        }
    }
}

/// What `airlock selftest` found about the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum BrokerProbe {
    Ready,
    /// No TCP/TLS connection, or no CONNACK in time: the uplink, the broker, or its certificate.
    Unreachable(String),
    /// The broker answered CONNACK with a refusal (credentials, client id, authorisation).
    Refused(String),
}

/// `airlock selftest`: connects as `<client_id>-selftest` (so the running appliance's session is not taken
/// over), waits for the CONNACK, and disconnects cleanly. Publishes and subscribes nothing.
pub async fn probe_broker(
    settings: &MqttSettings,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> BrokerProbe {
    let mut options = MqttOptions::new(
        format!("{}-selftest", settings.client_id),
        settings.host.clone(),
        settings.port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_start(true);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
        options.set_credentials(username.clone(), password.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let connack = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return if ack.code == ConnectReturnCode::Success {
                        BrokerProbe::Ready
                    } else {
                        BrokerProbe::Refused(format!("the broker refused the connection: {:?}", ack.code))
                    };
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return BrokerProbe::Refused(format!("the broker refused the connection: {code:?}"));
                }
                Err(error) => return BrokerProbe::Unreachable(describe(&error)),
            }
        }
    })
    .await
    .unwrap_or_else(|_| BrokerProbe::Unreachable(format!("no answer within {} s", timeout.as_secs())));
    if connack == BrokerProbe::Ready && client.disconnect().await.is_ok() {
        // Sends the DISCONNECT; the broker then closes the connection.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
    connack
}

/// A connection error in words an operator can act on.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        other => other.to_string(),
    }
}
