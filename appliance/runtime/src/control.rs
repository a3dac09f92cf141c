//! The control loop: the one task that owns the sans-IO SIPREC server (`siprec::srs::Srs`). It feeds it
//! SIP messages, media events and timer expiries, and carries out what it asks for: send a message, start,
//! update or end a call task. Its inbound queue is bounded (see `sip_io` for who waits and who drops).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use airlock_sip::Remote;
use airlock_siprec::srs::{CallId, EndReason, MediaEvent, RecordingPlan, Srs, SrsOutput};
use airlock_telemetry::OutboxSink;
use airlock_telemetry::{CallOutcome, Metrics, SipMethodLabel, SipResponseClass};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::admission::FinalisingBacklog;
use crate::call::{self, CallCommand, CallEnvironment};
use crate::sip_io::SipSender;
use crate::supervision::Health;

/// Messages queued toward the control loop.
pub const CONTROL_QUEUE: usize = 4096;
/// Calls that may be finalising at once before new calls are refused with 503 (see `admission`).
const MAX_FINALISING_CALLS: usize = 64;

/// What reaches the control loop.
#[derive(Debug)]
pub enum ControlInput {
    /// One whole SIP message from a peer.
    Sip { from: Remote, bytes: Vec<u8> },
    /// Something happened to a call's media (inactivity, socket or disk failure).
    Media { call: CallId, event: MediaEvent },
    /// A call task finished: its recording is final and published.
    CallFinished { call: CallId, outcome: CallOutcome },
    /// A liveness probe (`supervision`): answered at once, so an answer proves the loop is turning.
    Probe(oneshot::Sender<Health>),
}

/// A running call as the control loop sees it.
#[derive(Debug)]
struct CallHandle {
    commands: mpsc::Sender<CallCommand>,
    /// Local RTP ports whose sockets belong to the call task.
    bound_ports: HashSet<u16>,
    /// The call was told to end and is being finalised.
    ending: bool,
}

pub struct Control {
    pub srs: Srs,
    pub inbound: mpsc::Receiver<ControlInput>,
    pub sip: SipSender,
    pub environment: CallEnvironment,
    pub grace: Duration,
    calls: HashMap<CallId, CallHandle>,
    backlog: FinalisingBacklog,
    /// What the SRS was last told: new calls are admitted while the finalising backlog and the outbox
    /// spool both allow it.
    admission_open: bool,
    /// Shutdown has begun.
    stopping: bool,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("active_calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl Control {
    pub fn new(
        srs: Srs,
        inbound: mpsc::Receiver<ControlInput>,
        sip: SipSender,
        environment: CallEnvironment,
        grace: Duration,
    ) -> Control {
        Control {
            srs,
            inbound,
            sip,
            environment,
            grace,
            calls: HashMap::new(),
            backlog: FinalisingBacklog::new(MAX_FINALISING_CALLS),
            admission_open: true,
            stopping: false,
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.environment.metrics
    }

    /// Runs until `shutdown` resolves and every call has been finalised (or the grace period ran out and
    /// the remaining calls were ended and finalised anyway).
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut grace_deadline: Option<Instant> = None;
        let mut forced = false;
        loop {
            self.carry_out_outputs().await;
            if grace_deadline.is_some() && self.calls.is_empty() {
                break;
            }
            let timer = self.srs.poll_timeout().map(Instant::from_std);
            tokio::select! {
                input = self.inbound.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                () = sleep_until(timer) => self.srs.handle_timeout(Instant::now().into_std()),
                () = &mut shutdown, if grace_deadline.is_none() => {
                    tracing::info!(active_calls = self.calls.len(), "shutting down: no new calls, ending active ones");
                    self.srs.begin_shutdown(Instant::now().into_std());
                    self.stopping = true;
                    grace_deadline = Some(Instant::now() + self.grace);
                }
                () = sleep_until(grace_deadline), if !forced => {
                    forced = true;
                    tracing::warn!(active_calls = self.calls.len(), "grace period over: finalising remaining calls");
                    for handle in self.calls.values() {
                        let _ = handle.commands.try_send(CallCommand::End(CallOutcome::Shutdown));
                    }
                }
            }
        }
    }

    fn on_input(&mut self, input: ControlInput) {
        let now = Instant::now().into_std();
        match input {
            ControlInput::Sip { from, bytes } => {
                if let Some(method) = request_method(&bytes) {
                    self.metrics().sip_request(SipMethodLabel::of_method(method));
                    if method == "INVITE" {
                        // The spool fills and drains on other threads: look before a new call is decided.
                        self.update_admission();
                    }
                }
                self.srs.handle_sip(now, from, &bytes);
            }
            ControlInput::Media { call, event } => self.srs.handle_media_event(now, call, event),
            ControlInput::CallFinished { call, outcome } => {
                if let Some(handle) = self.calls.remove(&call) {
                    self.metrics().call_ended(outcome);
                    self.metrics().active_calls.set(self.calls.len() as i64);
                    if handle.ending {
                        self.backlog.call_finalised();
                        self.update_admission();
                    }
                }
            }
            ControlInput::Probe(reply) => {
                let _ = reply.send(Health {
                    active_calls: self.calls.len(),
                    admission_open: self.admission_open,
                    stopping: self.stopping,
                    uplink_up: self.metrics().outbox.uplink_up(OutboxSink::Objects),
                });
            }
        }
    }

    /// Carries out what the SRS asked for. Media sockets of new or changed calls are bound before any
    /// message goes out, so RTP the SRC sends the moment it reads our answer finds an open port.
    async fn carry_out_outputs(&mut self) {
        loop {
            let mut outputs = Vec::new();
            while let Some(output) = self.srs.poll_output() {
                outputs.push(output);
            }
            if outputs.is_empty() {
                return;
            }
            let mut in_order = Vec::with_capacity(outputs.len());
            for output in outputs {
                match output {
                    SrsOutput::StartCall { call, plan } => self.start_call(call, plan).await,
                    SrsOutput::UpdateCall { call, plan } => self.update_call(call, plan).await,
                    other => in_order.push(other),
                }
            }
            for output in in_order {
                match output {
                    SrsOutput::Transmit { to, bytes } => {
                        if let Some(class) = response_status(&bytes).and_then(SipResponseClass::of_status) {
                            self.metrics().sip_response(class);
                        }
                        self.sip.send(to, bytes).await;
                    }
                    SrsOutput::EndCall { call, reason } => {
                        let Some(handle) = self.calls.get_mut(&call) else {
                            continue;
                        };
                        let _ = handle.commands.send(CallCommand::End(outcome_of(reason))).await;
                        if !handle.ending {
                            handle.ending = true;
                            self.backlog.call_ending();
                            self.update_admission();
                        }
                    }
                    SrsOutput::StartCall { .. } | SrsOutput::UpdateCall { .. } => {}
                }
            }
        }
    }

    fn update_admission(&mut self) {
        let backlog_open = self.backlog.is_open();
        let spool_open = self.environment.data_dir.outbox().admission_open();
        let open = backlog_open && spool_open;
        if open == self.admission_open {
            return;
        }
        self.admission_open = open;
        self.metrics().admission_open.set(i64::from(open));
        if !backlog_open {
            tracing::warn!(
                finalising = self.backlog.finalising(),
                "the disk is behind finalising ended calls: refusing new calls with 503 until it catches up"
            );
        } else if !spool_open {
            tracing::warn!(
                "the outbox spool is near its limit (uplink down?): refusing new calls with 503 until it drains"
            );
        } else {
            tracing::info!("admitting new calls again");
        }
        self.srs.set_admission_open(open);
    }

    async fn start_call(&mut self, call: CallId, plan: RecordingPlan) {
        match call::bind_new_streams(self.environment.bind_ip, &plan, &HashSet::new()).await {
            Ok(sockets) => {
                let bound_ports = sockets.keys().copied().collect();
                let commands = call::spawn(call, plan, sockets, self.environment.clone());
                self.calls.insert(
                    call,
                    CallHandle {
                        commands,
                        bound_ports,
                        ending: false,
                    },
                );
                self.metrics().active_calls.set(self.calls.len() as i64);
            }
            Err(error) => {
                tracing::error!(%error, "cannot bind the RTP ports of a new call");
                self.metrics().call_ended(CallOutcome::MediaFailed);
                self.srs
                    .handle_media_event(Instant::now().into_std(), call, MediaEvent::MediaBindFailed);
            }
        }
    }

    async fn update_call(&mut self, call: CallId, plan: RecordingPlan) {
        let Some(handle) = self.calls.get_mut(&call) else {
            return;
        };
        let wanted: HashSet<u16> = plan.streams.iter().map(|stream| stream.local_port).collect();
        handle.bound_ports.retain(|port| wanted.contains(port));
        match call::bind_new_streams(self.environment.bind_ip, &plan, &handle.bound_ports).await {
            Ok(sockets) => {
                handle.bound_ports.extend(sockets.keys().copied());
                let _ = handle.commands.send(CallCommand::Update(plan, sockets)).await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot bind the RTP port of an added stream");
                self.srs
                    .handle_media_event(Instant::now().into_std(), call, MediaEvent::MediaBindFailed);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn outcome_of(reason: EndReason) -> CallOutcome {
    match reason {
        EndReason::RemoteBye => CallOutcome::RemoteBye,
        EndReason::Cancelled => CallOutcome::Cancelled,
        EndReason::AckTimeout => CallOutcome::AckTimeout,
        EndReason::RtpInactivityTimeout => CallOutcome::RtpTimeout,
        EndReason::MediaBindFailed => CallOutcome::MediaFailed,
        EndReason::RecordingFailed => CallOutcome::RecordingFailed,
        EndReason::Shutdown => CallOutcome::Shutdown,
    }
}

/// The method token of a SIP request (`None` for responses and garbage).
fn request_method(bytes: &[u8]) -> Option<&str> {
    let first_space = bytes.iter().position(|&b| b == b' ')?;
    let token = std::str::from_utf8(bytes.get(..first_space)?).ok()?;
    (!token.starts_with("SIP/") && token.bytes().all(|b| b.is_ascii_uppercase())).then_some(token)
}

/// The status code of a SIP response we are about to send.
fn response_status(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}
