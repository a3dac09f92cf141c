//! The SRS call-control state machine: turns SIP requests from an SRC into recording calls.
//!
//! Owns admission (before any call state exists), SIPREC recognition (lenient by default, `strict_src`
//! for RFC 7866 §6.2), the four rejection classes (400 malformed, 415 body type, 420 extension, 488 media),
//! the SDP answer (plain `application/sdp`, `+sip.srs` Contact), re-INVITE/UPDATE with SDP-only or
//! metadata-only bodies, pause/resume (`a=inactive`, `c=0.0.0.0`, metadata without `send`), call end (BYE,
//! CANCEL, ACK timeout, media failures, shutdown) and the media [`PortPool`]. The SIP transactions below
//! it are `airlock_sip::Endpoint`'s. Sans-IO: time is a parameter, the runtime binds ports and sockets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use airlock_media::Codec;
use airlock_sip::{
    ClientTxnId, Dialog, DialogId, Endpoint, EndpointConfig, EndpointEvent, EndpointStats, Method, Remote,
    Request, Response, ServerTxnId,
};
use airlock_telemetry::Pii;

/// Methods we implement, for Allow.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";
/// Body types we take, for Accept.
const ACCEPT: &str = "application/sdp, multipart/mixed, application/rs-metadata+xml, application/rs-metadata";
/// The only option tag we implement.
const SIPREC_OPTION_TAG: &str = "siprec";

/// Our identifier for a recording call. Never the SIP Call-ID (PII-adjacent): a counter mixed with a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

impl fmt::Display for CallId {
    /// Sixteen hex digits: short and filesystem-safe.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl CallId {
    /// SplitMix64 of seed + counter: a bijection, so distinct counters never collide for one seed.
    fn from_counter(seed: u64, counter: u64) -> CallId {
        let mut z = seed.wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        CallId(z ^ (z >> 31))
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The SRC sent BYE.
    RemoteBye,
    /// The SRC cancelled the INVITE before it was answered.
    Cancelled,
    /// No ACK for our 2xx.
    AckTimeout,
    /// The runtime saw no RTP for too long.
    RtpInactivityTimeout,
    /// The runtime could not bind the media ports.
    MediaBindFailed,
    /// The recording could not be written.
    RecordingFailed,
    /// The appliance is shutting down.
    Shutdown,
}

/// Something the runtime observed about a call's media; each makes the SRS send BYE and end the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaEvent {
    RtpInactivityTimeout,
    MediaBindFailed,
    RecordingFailed,
}

impl MediaEvent {
    fn end_reason(self) -> EndReason {
        match self {
            MediaEvent::RtpInactivityTimeout => EndReason::RtpInactivityTimeout,
            MediaEvent::MediaBindFailed => EndReason::MediaBindFailed,
            MediaEvent::RecordingFailed => EndReason::RecordingFailed,
        }
    }
}

/// One stream to receive: an SDP m-line we accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStream {
    /// `a=label` of the offer (or `stream-N` by m-line index when the SRC sent none).
    pub label: String,
    /// The even RTP port to bind (RTCP is `local_port + 1`).
    pub local_port: u16,
    /// Accepted codecs with their payload types, in the SRC's preference order.
    pub codecs: Vec<(u8, Codec)>,
    /// RFC 4733 telephone-event payload type, when offered.
    pub telephone_event_pt: Option<u8>,
    /// The SRC paused this stream (`a=inactive`, `c=0.0.0.0`, or metadata without `send`).
    pub paused: bool,
    /// The metadata participant sending this stream (AoR when given, else its id).
    pub participant: Option<Pii<String>>,
}

/// What the runtime should record for a call, complete each time (a removed stream is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingPlan {
    /// Accepted streams in m-line order.
    pub streams: Vec<PlannedStream>,
    /// The metadata document carried by *this* request, if any, verbatim.
    pub metadata_xml: Option<Pii<String>>,
    /// Every stream is paused.
    pub paused: bool,
}

/// What the SRS asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrsOutput {
    /// Send these bytes.
    Transmit { to: Remote, bytes: Vec<u8> },
    /// Bind the plan's ports and start recording.
    StartCall { call: CallId, plan: RecordingPlan },
    /// Apply a changed plan (streams added/removed, paused/resumed, new metadata).
    UpdateCall { call: CallId, plan: RecordingPlan },
    /// Stop recording, release the ports, finalise.
    EndCall { call: CallId, reason: EndReason },
}

/// SRS configuration. Units are in the field names; see `Default` for values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrsConfig {
    /// Require both `Require: siprec` and `+sip.src` (RFC 7866 §6.2). Default off: either signal, or a
    /// `recording-session` body part, is enough.
    pub strict_src: bool,
    /// Most concurrent calls; more INVITEs get 503 + Retry-After.
    pub max_calls: usize,
    /// Seconds in Retry-After of 503s.
    pub retry_after_secs: u32,
    /// Lowest RTP port (rounded up to even).
    pub rtp_port_min: u16,
    /// Highest port usable (RTCP included).
    pub rtp_port_max: u16,
    /// Address put in the SDP answer's `c=` line.
    pub media_address: IpAddr,
    /// Address for our Contact and Via; `media_address:5060` when `None`.
    pub contact_address: Option<SocketAddr>,
    /// Mixed into call ids and SIP branches so they differ across restarts.
    pub call_id_seed: u64,
    /// Most streams accepted per call; more is 488.
    pub max_streams_per_call: usize,
    /// Largest metadata document accepted, in bytes; more is 400.
    pub max_metadata_bytes: usize,
    /// Outputs held before `handle_sip`/`handle_media_event` refuse input (the input is dropped and
    /// counted; SIP retransmits). Shutdown and timers may add up to two outputs per call beyond it.
    pub max_outputs: usize,
    /// SIP timers and limits (its `via_sent_by` and `branch_seed` are filled from the fields above).
    pub sip: EndpointConfig,
}

impl Default for SrsConfig {
    fn default() -> Self {
        Self {
            strict_src: false,
            max_calls: 200,
            retry_after_secs: 30,
            rtp_port_min: 20_000,
            rtp_port_max: 29_999,
            media_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            contact_address: None,
            call_id_seed: 0,
            max_streams_per_call: 8,
            max_metadata_bytes: 64 * 1024,
            max_outputs: 1024,
            sip: EndpointConfig::default(),
        }
    }
}

/// Counters for telemetry; all saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrsStats {
    pub calls_started: u64,
    pub calls_ended: u64,
    pub rejected_overload: u64,
    pub rejected_not_siprec: u64,
    pub rejected_bad_extension: u64,
    pub rejected_malformed: u64,
    pub rejected_media_type: u64,
    pub rejected_not_acceptable: u64,
    pub session_updates: u64,
    pub byes_sent: u64,
    pub bye_failures: u64,
    pub inputs_dropped_output_full: u64,
    /// The SIP endpoint's counters, refreshed after every call into the SRS.
    pub sip: EndpointStats,
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Even RTP ports over a configured range; RTCP takes the odd port above. Released ports go to the back
/// of the queue so a port is not reused while stray packets of its last call may still arrive.
#[derive(Debug, Clone)]
pub struct PortPool {
    /// Bounded by the configured range (at most 32,768 entries).
    free: VecDeque<u16>,
    in_use: HashSet<u16>,
}

impl PortPool {
    /// Every even port `p` with `min <= p` and `p + 1 <= max`.
    pub fn new(min: u16, max: u16) -> Self {
        let first = min.saturating_add(min % 2);
        let free = (first..max).step_by(2).collect();
        Self {
            free,
            in_use: HashSet::new(),
        }
    }

    /// An unused even port, `None` when all are taken.
    pub fn allocate(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
        self.in_use.insert(port);
        Some(port)
    }

    /// Returns a port; unknown or already free ports are ignored.
    pub fn release(&mut self, port: u16) {
        if self.in_use.remove(&port) {
            self.free.push_back(port);
        }
    }

    /// Ports still free.
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

/// Why an INVITE/UPDATE is refused, grouped by whose fault. Each maps to a status and reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Rejection {
    // Our limits.
    #[error("Service Unavailable")]
    Overloaded,
    // The peer asks for what we do not support.
    #[error("Bad Extension")]
    BadExtension(Vec<String>),
    #[error("Unsupported Media Type")]
    UnsupportedMediaType,
    #[error("Not a recording session")]
    NotRecordingSession,
    #[error("{0}")]
    NotAcceptable(&'static str),
    // The peer sent garbage.
    #[error("{0}")]
    Malformed(&'static str),
}

impl Rejection {
    fn status(&self) -> u16 {
        match self {
            Rejection::Overloaded => 503,
            Rejection::BadExtension(_) => 420,
            Rejection::UnsupportedMediaType => 415,
            Rejection::NotRecordingSession => 403,
            Rejection::NotAcceptable(_) => 488,
            Rejection::Malformed(_) => 400,
        }
    }
}

/// One m-line of a call as last negotiated.
#[derive(Debug, Clone)]
struct CallStream {
    label: String,
    local_port: u16,
    codecs: Vec<(u8, Codec)>,
    telephone_event_pt: Option<u8>,
    paused_by_sdp: bool,
}

#[derive(Debug)]
struct Call {
    dialog: Dialog,
    remote: Remote,
    /// The INVITE whose 2xx still waits for ACK.
    awaiting_ack: Option<ServerTxnId>,
    /// EndCall already emitted; the BYE waits for the ACK (RFC 3261 §15: no BYE before ACK).
    ending: bool,
    streams: Vec<CallStream>,
    metadata: MetadataState,
    sdp_session_id: u64,
    sdp_version: u64,
    last_answer: Vec<u8>,
}

/// Who sends which stream, accumulated over complete and partial metadata documents.
#[derive(Debug, Default)]
struct MetadataState {
    stream_labels: HashMap<String, String>,
    participant_names: HashMap<String, String>,
    sender_of_label: HashMap<String, String>,
    paused_labels: HashSet<String>,
}

/// The SRS. See the module docs.
pub struct Srs {
    config: SrsConfig,
    endpoint: Endpoint,
    ports: PortPool,
    calls: HashMap<CallId, Call>,
    dialogs: HashMap<DialogId, CallId>,
    byes: HashMap<ClientTxnId, CallId>,
    /// Bounded by `config.max_outputs` for input-driven outputs; see [`SrsConfig::max_outputs`].
    outputs: VecDeque<SrsOutput>,
    call_counter: u64,
    admission_open: bool,
    shutting_down: bool,
    stats: SrsStats,
}

impl fmt::Debug for Srs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srs")
            .field("calls", &self.calls.len())
            .field("admission_open", &self.admission_open)
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

impl Srs {
    /// An SRS with no calls, admission open.
    pub fn new(mut config: SrsConfig) -> Self {
        let contact = config
            .contact_address
            .unwrap_or(SocketAddr::new(config.media_address, 5060));
        config.sip.via_sent_by = contact.to_string();
        config.sip.branch_seed = config.call_id_seed;
        Self {
            endpoint: Endpoint::new(config.sip.clone()),
            ports: PortPool::new(config.rtp_port_min, config.rtp_port_max),
            config,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            byes: HashMap::new(),
            outputs: VecDeque::new(),
            call_counter: 0,
            admission_open: true,
            shutting_down: false,
            stats: SrsStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &SrsStats {
        &self.stats
    }

    /// Calls currently recording (or waiting for their ACK).
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|call| !call.ending).count()
    }

    /// Opens or closes admission (e.g. spool full). Closed: new INVITEs get 503 + Retry-After.
    pub fn set_admission_open(&mut self, open: bool) {
        self.admission_open = open;
    }

    /// One whole SIP message from the network.
    pub fn handle_sip(&mut self, now: Instant, from: Remote, bytes: &[u8]) {
        if self.outputs.len() >= self.config.max_outputs {
            bump(&mut self.stats.inputs_dropped_output_full);
            return;
        }
        self.endpoint.handle_message(now, from, bytes);
        self.drain_endpoint(now);
    }

    /// A media problem reported by the runtime: BYE to the SRC and end the call.
    pub fn handle_media_event(&mut self, now: Instant, call: CallId, event: MediaEvent) {
        tracing::info!(%call, ?event, "ending call on media event");
        self.end_call(now, call, event.end_reason());
        self.drain_endpoint(now);
    }

    /// Fires due SIP timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.drain_endpoint(now);
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<SrsOutput> {
        self.outputs.pop_front()
    }

    /// Stops admitting calls (503) and ends every call with BYE.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let calls: Vec<CallId> = self.calls.keys().copied().collect();
        for call in calls {
            self.end_call(now, call, EndReason::Shutdown);
        }
        self.drain_endpoint(now);
    }

    fn drain_endpoint(&mut self, now: Instant) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                EndpointEvent::Transmit { to, bytes } => {
                    self.outputs.push_back(SrsOutput::Transmit { to, bytes })
                }
                EndpointEvent::Request { txn, request, from } => self.handle_request(now, txn, request, from),
                EndpointEvent::Ack { request, .. } => self.handle_ack(now, &request),
                EndpointEvent::Cancelled { invite_txn } => {
                    if let Some(call) = self.call_awaiting_ack(invite_txn) {
                        self.finish_call(call, EndReason::Cancelled);
                    }
                }
                EndpointEvent::AckTimeout { txn } => {
                    if let Some(call) = self.call_awaiting_ack(txn) {
                        if let Some(state) = self.calls.get_mut(&call) {
                            state.awaiting_ack = None;
                        }
                        self.end_call(now, call, EndReason::AckTimeout);
                    }
                }
                EndpointEvent::Response { txn, response } => {
                    if self.byes.remove(&txn).is_some() && !response.is_success() && response.status() != 481
                    {
                        bump(&mut self.stats.bye_failures);
                    }
                }
                EndpointEvent::RequestTimeout { txn } => {
                    if self.byes.remove(&txn).is_some() {
                        bump(&mut self.stats.bye_failures);
                    }
                }
            }
        }
        self.stats.sip = self.endpoint.stats();
    }

    fn call_awaiting_ack(&self, txn: ServerTxnId) -> Option<CallId> {
        self.calls
            .iter()
            .find(|(_, call)| call.awaiting_ack == Some(txn))
            .map(|(id, _)| *id)
    }

    fn respond(&mut self, now: Instant, txn: ServerTxnId, response: Response) {
        if let Err(error) = self.endpoint.respond(now, txn, response) {
            tracing::warn!(%error, "could not send a SIP response");
        }
    }

    fn reject(&mut self, now: Instant, txn: ServerTxnId, request: &Request, rejection: &Rejection) {
        let counter = match rejection {
            Rejection::Overloaded => &mut self.stats.rejected_overload,
            Rejection::BadExtension(_) => &mut self.stats.rejected_bad_extension,
            Rejection::UnsupportedMediaType => &mut self.stats.rejected_media_type,
            Rejection::NotRecordingSession => &mut self.stats.rejected_not_siprec,
            Rejection::NotAcceptable(_) => &mut self.stats.rejected_not_acceptable,
            Rejection::Malformed(_) => &mut self.stats.rejected_malformed,
        };
        bump(counter);
        tracing::debug!(status = rejection.status(), reason = %rejection, "refusing a request");
        let mut response = Response::for_request(request, rejection.status(), &rejection.to_string());
        match rejection {
            Rejection::Overloaded => {
                response.add_header("Retry-After", &self.config.retry_after_secs.to_string())
            }
            Rejection::BadExtension(tags) => response.add_header("Unsupported", &tags.join(", ")),
            Rejection::UnsupportedMediaType => response.add_header("Accept", ACCEPT),
            _ => {}
        }
        self.respond(now, txn, response);
    }

    fn handle_request(&mut self, now: Instant, txn: ServerTxnId, request: Request, from: Remote) {
        match request.method() {
            Method::Options => {
                let response = Response::for_request(&request, 200, "OK")
                    .with_header("Allow", ALLOW)
                    .with_header("Supported", SIPREC_OPTION_TAG)
                    .with_header("Accept", ACCEPT);
                self.respond(now, txn, response);
            }
            Method::Invite | Method::Update | Method::Bye => {
                match DialogId::from_incoming_request(&request) {
                    Some(dialog_id) => match self.dialogs.get(&dialog_id).copied() {
                        Some(call) => self.handle_in_dialog(now, txn, call, &request),
                        None => {
                            let response =
                                Response::for_request(&request, 481, "Call/Transaction Does Not Exist");
                            self.respond(now, txn, response);
                        }
                    },
                    None if *request.method() == Method::Invite => {
                        self.handle_new_invite(now, txn, &request, from)
                    }
                    None => {
                        let response =
                            Response::for_request(&request, 481, "Call/Transaction Does Not Exist");
                        self.respond(now, txn, response);
                    }
                }
            }
            Method::Extension(_) => {
                let response =
                    Response::for_request(&request, 501, "Not Implemented").with_header("Allow", ALLOW);
                self.respond(now, txn, response);
            }
            _ => {
                let response =
                    Response::for_request(&request, 405, "Method Not Allowed").with_header("Allow", ALLOW);
                self.respond(now, txn, response);
            }
        }
    }

    fn handle_new_invite(&mut self, now: Instant, txn: ServerTxnId, invite: &Request, from: Remote) {
        if self.shutting_down || !self.admission_open || self.active_calls() >= self.config.max_calls {
            self.reject(now, txn, invite, &Rejection::Overloaded);
            return;
        }
        match self.admit(invite, from) {
            Ok((call, ok)) => {
                self.respond(now, txn, ok);
                if let Some(state) = self.calls.get_mut(&call) {
                    state.awaiting_ack = Some(txn);
                }
            }
            Err(rejection) => self.reject(now, txn, invite, &rejection),
        }
    }

    /// Validates a new INVITE, allocates ports and creates the call; returns the 200 OK to send.
    fn admit(&mut self, invite: &Request, from: Remote) -> Result<(CallId, Response), Rejection> {
        check_required_extensions(invite)?;
        let bodies = body::split(invite, self.config.max_metadata_bytes)?;
        let has_require = invite.headers().has_token("Require", SIPREC_OPTION_TAG);
        let has_src_tag = invite.headers().contacts().iter().any(|contact| {
            contact.has_param("+sip.src") || contact.has_param("src") || contact.has_param("+sip-src")
        });
        let recognised = if self.config.strict_src {
            has_require && has_src_tag
        } else {
            has_require || has_src_tag || bodies.recording_session_part
        };
        if !recognised {
            return Err(Rejection::NotRecordingSession);
        }
        let offer = bodies.sdp.ok_or(Rejection::Malformed("Missing SDP offer"))?;
        let offer = body::Offer::parse(&offer).ok_or(Rejection::Malformed("Malformed SDP"))?;
        let mut metadata = MetadataState::default();
        let metadata_xml = match bodies.metadata {
            Some(xml) => {
                metadata
                    .apply(&xml)
                    .ok_or(Rejection::Malformed("Malformed recording metadata"))?;
                Some(xml)
            }
            None => None,
        };

        self.call_counter = self.call_counter.wrapping_add(1);
        let call = CallId::from_counter(self.config.call_id_seed, self.call_counter);
        let mut streams = Vec::new();
        let answer_lines = self.negotiate(&offer, &[], &mut streams)?;
        let sdp_session_id = call.0 >> 1;
        let answer = self.answer_sdp(sdp_session_id, 1, &answer_lines);
        let mut ok = self.success_response(invite, &answer);
        ok.set_to_tag(&call.to_string());
        let dialog = match Dialog::new_uas(invite, &ok) {
            Ok(dialog) => dialog,
            Err(_) => {
                self.release_ports(&streams);
                return Err(Rejection::Malformed("Missing Contact"));
            }
        };
        let state = Call {
            dialog,
            remote: from,
            awaiting_ack: None,
            ending: false,
            streams,
            metadata,
            sdp_session_id,
            sdp_version: 1,
            last_answer: answer,
        };
        let plan = plan_for(&state, metadata_xml);
        self.dialogs.insert(state.dialog.id().clone(), call);
        self.calls.insert(call, state);
        bump(&mut self.stats.calls_started);
        tracing::info!(%call, streams = plan.streams.len(), "recording call admitted");
        self.outputs.push_back(SrsOutput::StartCall { call, plan });
        Ok((call, ok))
    }

    fn success_response(&self, request: &Request, sdp: &[u8]) -> Response {
        let contact = self
            .config
            .contact_address
            .unwrap_or(SocketAddr::new(self.config.media_address, 5060));
        let mut response = Response::for_request(request, 200, "OK")
            .with_header("Contact", &format!("<sip:srs@{contact}>;+sip.srs"))
            .with_header("Allow", ALLOW)
            .with_header("Supported", SIPREC_OPTION_TAG);
        if !sdp.is_empty() {
            response.set_body("application/sdp", sdp.to_vec());
        }
        response
    }

    /// Matches the offer's m-lines to `existing` streams by label, allocating ports for new ones and
    /// releasing ports of streams that disappeared. Fills `streams` with the result (m-line order) and
    /// returns the answer's media sections.
    fn negotiate(
        &mut self,
        offer: &body::Offer,
        existing: &[CallStream],
        streams: &mut Vec<CallStream>,
    ) -> Result<Vec<String>, Rejection> {
        let accepted: Vec<(usize, body::Negotiated)> = offer
            .media
            .iter()
            .enumerate()
            .filter_map(|(index, media)| media.negotiate().map(|n| (index, n)))
            .collect();
        if accepted.is_empty() {
            return Err(Rejection::NotAcceptable("No acceptable codec"));
        }
        if accepted.len() > self.config.max_streams_per_call {
            return Err(Rejection::NotAcceptable("Too many streams"));
        }
        let new_needed = accepted
            .iter()
            .filter(|(index, _)| {
                !existing
                    .iter()
                    .any(|stream| stream.label == offer.label_of(*index))
            })
            .count();
        if new_needed > self.ports.available() {
            return Err(Rejection::Overloaded);
        }
        let mut lines = Vec::new();
        for (index, media) in offer.media.iter().enumerate() {
            let label = offer.label_of(index);
            let Some((_, negotiated)) = accepted
                .iter()
                .find(|(accepted_index, _)| *accepted_index == index)
            else {
                lines.push(media.rejected_answer_line());
                continue;
            };
            let port = match existing.iter().find(|stream| stream.label == label) {
                Some(stream) => stream.local_port,
                None => self.ports.allocate().ok_or(Rejection::Overloaded)?,
            };
            lines.push(negotiated.answer_section(port, media.label.as_deref()));
            streams.push(CallStream {
                label,
                local_port: port,
                codecs: negotiated.codecs.clone(),
                telephone_event_pt: negotiated.telephone_event_pt,
                paused_by_sdp: negotiated.paused || offer.session_connection_zero && !media.has_connection,
            });
        }
        for stream in existing {
            if !streams.iter().any(|kept| kept.label == stream.label) {
                self.ports.release(stream.local_port);
            }
        }
        Ok(lines)
    }

    fn answer_sdp(&self, session_id: u64, version: u64, media_sections: &[String]) -> Vec<u8> {
        let address_type = if self.config.media_address.is_ipv6() {
            "IP6"
        } else {
            "IP4"
        };
        let address = self.config.media_address;
        let mut sdp = format!(
            "v=0\r\no=airlock {} {} IN {address_type} {address}\r\ns=airlock\r\nc=IN {address_type} {address}\r\nt=0 0\r\n",
            session_id, version
        );
        for section in media_sections {
            sdp.push_str(section);
        }
        sdp.into_bytes()
    }

    fn release_ports(&mut self, streams: &[CallStream]) {
        for stream in streams {
            self.ports.release(stream.local_port);
        }
    }

    fn handle_ack(&mut self, now: Instant, ack: &Request) {
        let Some(call) = DialogId::from_incoming_request(ack).and_then(|id| self.dialogs.get(&id).copied())
        else {
            return;
        };
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        state.awaiting_ack = None;
        if state.ending {
            self.send_bye_and_forget(now, call);
        }
    }

    fn handle_in_dialog(&mut self, now: Instant, txn: ServerTxnId, call: CallId, request: &Request) {
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        if let Err(error) = state.dialog.handle_remote_request(request) {
            let response = Response::for_request(request, error.status(), &error.to_string());
            self.respond(now, txn, response);
            return;
        }
        match request.method() {
            Method::Bye => {
                self.respond(now, txn, Response::for_request(request, 200, "OK"));
                self.finish_call(call, EndReason::RemoteBye);
                self.forget_call(call);
            }
            _ if state.ending => {
                let response = Response::for_request(request, 481, "Call/Transaction Does Not Exist");
                self.respond(now, txn, response);
            }
            _ => match self.modify_session(call, request) {
                Ok(response) => {
                    let is_invite = *request.method() == Method::Invite;
                    self.respond(now, txn, response);
                    if is_invite && let Some(state) = self.calls.get_mut(&call) {
                        state.awaiting_ack = Some(txn);
                    }
                }
                Err(rejection) => self.reject(now, txn, request, &rejection),
            },
        }
    }

    /// re-INVITE or UPDATE: SDP and/or metadata changes. A failed request leaves the call unchanged.
    fn modify_session(&mut self, call: CallId, request: &Request) -> Result<Response, Rejection> {
        check_required_extensions(request)?;
        let bodies = body::split(request, self.config.max_metadata_bytes)?;
        let Some(state) = self.calls.get(&call) else {
            return Err(Rejection::Malformed("Unknown call"));
        };
        let previous_plan = plan_for(state, None);
        let existing = state.streams.clone();
        let (session_id, version, last_answer) =
            (state.sdp_session_id, state.sdp_version, state.last_answer.clone());
        let offer = match &bodies.sdp {
            Some(sdp) => Some(body::Offer::parse(sdp).ok_or(Rejection::Malformed("Malformed SDP"))?),
            None => None,
        };
        let mut metadata_update = None;
        if let Some(xml) = &bodies.metadata {
            let mut metadata = state.metadata.clone_state();
            metadata
                .apply(xml)
                .ok_or(Rejection::Malformed("Malformed recording metadata"))?;
            metadata_update = Some(metadata);
        }
        let mut streams = Vec::new();
        let answer_lines = match &offer {
            Some(offer) => Some(self.negotiate(offer, &existing, &mut streams)?),
            None => None,
        };
        let answer = match answer_lines {
            Some(lines) => {
                // RFC 3264 §8: the version moves only when the answer changes (session refreshes keep it).
                let mut version = version;
                let mut sdp = self.answer_sdp(session_id, version, &lines);
                if sdp != last_answer {
                    version = version.saturating_add(1);
                    sdp = self.answer_sdp(session_id, version, &lines);
                }
                let Some(state) = self.calls.get_mut(&call) else {
                    return Err(Rejection::Malformed("Unknown call"));
                };
                state.streams = streams;
                state.sdp_version = version;
                state.last_answer = sdp.clone();
                sdp
            }
            // An offerless re-INVITE (session refresh): our current SDP is the offer.
            None if *request.method() == Method::Invite => last_answer,
            None => Vec::new(),
        };
        if let (Some(metadata), Some(state)) = (metadata_update, self.calls.get_mut(&call)) {
            state.metadata = metadata;
        }
        let Some(state) = self.calls.get(&call) else {
            return Err(Rejection::Malformed("Unknown call"));
        };
        let plan = plan_for(state, bodies.metadata.clone());
        if plan.metadata_xml.is_some() || plan.streams != previous_plan.streams {
            bump(&mut self.stats.session_updates);
            self.outputs.push_back(SrsOutput::UpdateCall { call, plan });
        }
        Ok(self.success_response(request, &answer))
    }

    /// Ends a call we decided to end: EndCall now, BYE now or (before ACK) when the ACK arrives.
    fn end_call(&mut self, now: Instant, call: CallId, reason: EndReason) {
        let Some(state) = self.calls.get(&call) else {
            return;
        };
        if state.ending {
            return;
        }
        let awaiting_ack = state.awaiting_ack.is_some();
        self.finish_call(call, reason);
        if awaiting_ack {
            if let Some(state) = self.calls.get_mut(&call) {
                state.ending = true;
            }
        } else {
            self.send_bye_and_forget(now, call);
        }
    }

    /// Emits EndCall and releases the ports; the dialog may live on until the BYE is sent.
    fn finish_call(&mut self, call: CallId, reason: EndReason) {
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        if state.ending {
            return;
        }
        state.ending = true;
        let streams = std::mem::take(&mut state.streams);
        self.release_ports(&streams);
        bump(&mut self.stats.calls_ended);
        tracing::info!(%call, ?reason, "recording call ended");
        self.outputs.push_back(SrsOutput::EndCall { call, reason });
        if reason == EndReason::Cancelled {
            self.forget_call(call);
        }
    }

    fn send_bye_and_forget(&mut self, now: Instant, call: CallId) {
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        let contact = self
            .config
            .contact_address
            .unwrap_or(SocketAddr::new(self.config.media_address, 5060));
        let bye = state
            .dialog
            .build_request(Method::Bye)
            .with_header("Contact", &format!("<sip:srs@{contact}>;+sip.srs"));
        let remote = state.remote;
        match self.endpoint.send_request(now, bye, remote) {
            Ok(txn) => {
                bump(&mut self.stats.byes_sent);
                self.byes.insert(txn, call);
            }
            Err(error) => {
                bump(&mut self.stats.bye_failures);
                tracing::warn!(%error, "could not send BYE");
            }
        }
        self.forget_call(call);
    }

    fn forget_call(&mut self, call: CallId) {
        if let Some(state) = self.calls.remove(&call) {
            self.dialogs.remove(state.dialog.id());
            self.release_ports(&state.streams);
        }
    }
}

/// 420 for any Require option tag other than `siprec`.
fn check_required_extensions(request: &Request) -> Result<(), Rejection> {
    let unsupported: Vec<String> = request
        .headers()
        .require()
        .into_iter()
        .filter(|tag| !tag.eq_ignore_ascii_case(SIPREC_OPTION_TAG))
        .map(str::to_owned)
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(Rejection::BadExtension(unsupported))
    }
}

fn plan_for(call: &Call, metadata_xml: Option<String>) -> RecordingPlan {
    let streams: Vec<PlannedStream> = call
        .streams
        .iter()
        .map(|stream| PlannedStream {
            label: stream.label.clone(),
            local_port: stream.local_port,
            codecs: stream.codecs.clone(),
            telephone_event_pt: stream.telephone_event_pt,
            paused: stream.paused_by_sdp || call.metadata.paused_labels.contains(&stream.label),
            participant: call.metadata.participant_for(&stream.label).map(Pii::new),
        })
        .collect();
    let paused = !streams.is_empty() && streams.iter().all(|stream| stream.paused);
    RecordingPlan {
        streams,
        metadata_xml: metadata_xml.map(Pii::new),
        paused,
    }
}

impl MetadataState {
    fn clone_state(&self) -> MetadataState {
        MetadataState {
            stream_labels: self.stream_labels.clone(),
            participant_names: self.participant_names.clone(),
            sender_of_label: self.sender_of_label.clone(),
            paused_labels: self.paused_labels.clone(),
        }
    }

    fn participant_for(&self, label: &str) -> Option<String> {
        let participant = self.sender_of_label.get(label)?;
        Some(
            self.participant_names
                .get(participant)
                .cloned()
                .unwrap_or_else(|| participant.clone()),
        )
    }

    /// Merges one metadata document (complete or partial). `None` when it is not XML.
    fn apply(&mut self, xml: &str) -> Option<()> {
        let summary = body::MetadataSummary::parse(xml)?;
        self.stream_labels.extend(summary.stream_labels);
        self.participant_names.extend(summary.participant_names);
        for (participant, sent_streams) in summary.sends {
            let sent_labels: HashSet<String> = sent_streams
                .iter()
                .map(|stream| {
                    self.stream_labels
                        .get(stream)
                        .cloned()
                        .unwrap_or_else(|| stream.clone())
                })
                .collect();
            let previously_sent: Vec<String> = self
                .sender_of_label
                .iter()
                .filter(|(label, sender)| **sender == participant && !sent_labels.contains(*label))
                .map(|(label, _)| label.clone())
                .collect();
            for label in previously_sent {
                self.paused_labels.insert(label);
            }
            for label in sent_labels {
                self.paused_labels.remove(&label);
                self.sender_of_label.insert(label, participant.clone());
            }
        }
        Some(())
    }
}

/// Interim body handling for the SRS: multipart split, the SDP facts negotiation needs, the answer's
/// media sections, and the who-sends-what summary of rs-metadata. The full parsers live in this crate's
/// `multipart`, `sdp`, `metadata` and `negotiate` modules (another engineer's work in progress); this
/// adapter keeps the SRS testable until their APIs land and is what to replace with them.
mod body {
    use std::collections::HashMap;

    use airlock_media::Codec;
    use airlock_sip::Request;

    use super::Rejection;

    /// The parts of a request body the SRS uses.
    #[derive(Debug, Default)]
    pub(super) struct Bodies {
        pub sdp: Option<String>,
        pub metadata: Option<String>,
        pub recording_session_part: bool,
    }

    fn media_type(content_type: &str) -> String {
        content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    fn is_metadata_type(media_type: &str) -> bool {
        matches!(
            media_type,
            "application/rs-metadata+xml" | "application/rs-metadata"
        )
    }

    /// Splits a request body by Content-Type: SDP alone, metadata alone, or multipart/mixed with both.
    pub(super) fn split(request: &Request, max_metadata_bytes: usize) -> Result<Bodies, Rejection> {
        let body = request.body();
        let content_type = request.headers().content_type();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Bodies::default());
        }
        let Some(content_type) = content_type else {
            return Err(Rejection::Malformed("Missing Content-Type"));
        };
        let text = std::str::from_utf8(body).map_err(|_| Rejection::Malformed("Body is not UTF-8"))?;
        let mut bodies = Bodies::default();
        match media_type(content_type).as_str() {
            "application/sdp" => bodies.sdp = Some(text.to_owned()),
            kind if is_metadata_type(kind) => bodies.metadata = Some(text.to_owned()),
            "multipart/mixed" => {
                let boundary =
                    boundary_of(content_type).ok_or(Rejection::Malformed("Malformed multipart body"))?;
                let parts = multipart_parts(text, &boundary)
                    .ok_or(Rejection::Malformed("Malformed multipart body"))?;
                for Part { headers, content } in parts {
                    let part_type = headers
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("Content-Type"))
                        .map(|(_, value)| media_type(value))
                        .unwrap_or_else(|| "text/plain".to_owned());
                    let disposition_is_recording = headers.iter().any(|(name, value)| {
                        name.eq_ignore_ascii_case("Content-Disposition")
                            && media_type(value).eq_ignore_ascii_case("recording-session")
                    });
                    bodies.recording_session_part |= disposition_is_recording;
                    if part_type == "application/sdp" && bodies.sdp.is_none() {
                        bodies.sdp = Some(content);
                    } else if is_metadata_type(&part_type) && bodies.metadata.is_none() {
                        bodies.metadata = Some(content);
                    }
                }
                if bodies.sdp.is_none() && bodies.metadata.is_none() {
                    return Err(Rejection::Malformed("Malformed multipart body"));
                }
            }
            _ => return Err(Rejection::UnsupportedMediaType),
        }
        if bodies
            .metadata
            .as_ref()
            .is_some_and(|xml| xml.len() > max_metadata_bytes)
        {
            return Err(Rejection::Malformed("Recording metadata too large"));
        }
        Ok(bodies)
    }

    fn boundary_of(content_type: &str) -> Option<String> {
        content_type
            .split(';')
            .skip(1)
            .find_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("boundary")
                    .then(|| value.trim().trim_matches('"').to_owned())
            })
            .filter(|boundary| !boundary.is_empty())
    }

    /// One body part of a multipart body.
    struct Part {
        headers: Vec<(String, String)>,
        content: String,
    }

    /// The parts between `--boundary` lines. `None` when there is no delimiter.
    fn multipart_parts(text: &str, boundary: &str) -> Option<Vec<Part>> {
        let delimiter = format!("--{boundary}");
        let mut sections = text.split(delimiter.as_str());
        sections.next()?;
        let mut parts = Vec::new();
        for section in sections {
            if section.starts_with("--") {
                break;
            }
            let section = section
                .strip_prefix("\r\n")
                .or_else(|| section.strip_prefix('\n'))
                .unwrap_or(section);
            let (head, content) = match section.find("\r\n\r\n") {
                Some(at) => (section.get(..at)?, section.get(at + 4..)?),
                None => match section.find("\n\n") {
                    Some(at) => (section.get(..at)?, section.get(at + 2..)?),
                    None => ("", section),
                },
            };
            let headers: Vec<(String, String)> = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
                .collect();
            let declared_length = headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("Content-Length"))
                .and_then(|(_, value)| value.parse::<usize>().ok());
            let content = match declared_length.and_then(|length| content.get(..length)) {
                Some(exact) => exact,
                None => content
                    .strip_suffix("\r\n")
                    .or_else(|| content.strip_suffix('\n'))
                    .unwrap_or(content),
            };
            parts.push(Part {
                headers,
                content: content.to_owned(),
            });
        }
        (!parts.is_empty()).then_some(parts)
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Direction {
        SendRecv,
        SendOnly,
        RecvOnly,
        Inactive,
    }

    /// One offered m-line.
    #[derive(Debug, Clone)]
    pub(super) struct OfferedMedia {
        kind: String,
        port: u16,
        protocol: String,
        formats: Vec<String>,
        pub label: Option<String>,
        direction: Option<Direction>,
        connection_zero: bool,
        pub has_connection: bool,
        rtpmaps: HashMap<u8, (String, u32, u8)>,
        fmtps: HashMap<u8, String>,
    }

    /// An accepted m-line.
    #[derive(Debug, Clone)]
    pub(super) struct Negotiated {
        pub codecs: Vec<(u8, Codec)>,
        pub telephone_event_pt: Option<u8>,
        pub paused: bool,
        answer_direction: &'static str,
        rtpmap_lines: Vec<String>,
    }

    /// The SDP facts the SRS uses.
    #[derive(Debug, Clone)]
    pub(super) struct Offer {
        pub media: Vec<OfferedMedia>,
        pub session_connection_zero: bool,
        session_direction: Option<Direction>,
    }

    fn direction_of(attribute: &str) -> Option<Direction> {
        match attribute {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    fn is_zero_address(connection: &str) -> bool {
        connection
            .split_whitespace()
            .nth(2)
            .is_some_and(|address| address == "0.0.0.0" || address == "::")
    }

    impl Offer {
        /// Parses the lines the SRS needs; `None` when there is no `v=` line or an m-line is malformed.
        pub(super) fn parse(sdp: &str) -> Option<Offer> {
            let mut offer = Offer {
                media: Vec::new(),
                session_connection_zero: false,
                session_direction: None,
            };
            let mut saw_version = false;
            for line in sdp.lines().map(str::trim_end) {
                let Some((kind, value)) = line.split_once('=') else {
                    continue;
                };
                match kind {
                    "v" => saw_version = true,
                    "m" => {
                        let mut fields = value.split_whitespace();
                        let media_kind = fields.next()?.to_owned();
                        let port = fields.next()?.split('/').next()?.parse().ok()?;
                        let protocol = fields.next()?.to_owned();
                        let formats = fields.map(str::to_owned).collect();
                        offer.media.push(OfferedMedia {
                            kind: media_kind,
                            port,
                            protocol,
                            formats,
                            label: None,
                            direction: None,
                            connection_zero: false,
                            has_connection: false,
                            rtpmaps: HashMap::new(),
                            fmtps: HashMap::new(),
                        });
                    }
                    "c" => match offer.media.last_mut() {
                        Some(media) => {
                            media.has_connection = true;
                            media.connection_zero = is_zero_address(value);
                        }
                        None => offer.session_connection_zero = is_zero_address(value),
                    },
                    "a" => {
                        let (name, argument) = value.split_once(':').unwrap_or((value, ""));
                        match offer.media.last_mut() {
                            None => offer.session_direction = offer.session_direction.or(direction_of(name)),
                            Some(media) => media.apply_attribute(name, argument),
                        }
                    }
                    _ => {}
                }
            }
            saw_version.then_some(offer)
        }

        /// The stream's label: `a=label`, or `stream-N` by position.
        pub(super) fn label_of(&self, index: usize) -> String {
            self.media
                .get(index)
                .and_then(|media| media.label.clone())
                .unwrap_or_else(|| format!("stream-{index}"))
        }
    }

    impl OfferedMedia {
        fn apply_attribute(&mut self, name: &str, argument: &str) {
            if let Some(direction) = direction_of(name) {
                self.direction = Some(direction);
                return;
            }
            match name {
                "label" if !argument.trim().is_empty() => self.label = Some(argument.trim().to_owned()),
                "rtpmap" => {
                    let Some((pt, encoding)) = argument.split_once(' ') else {
                        return;
                    };
                    let mut parts = encoding.trim().split('/');
                    let (Ok(pt), Some(name), Some(rate)) = (pt.parse::<u8>(), parts.next(), parts.next())
                    else {
                        return;
                    };
                    let Ok(rate) = rate.parse::<u32>() else {
                        return;
                    };
                    let channels = parts
                        .next()
                        .and_then(|channels| channels.parse().ok())
                        .unwrap_or(1);
                    self.rtpmaps.insert(pt, (name.to_owned(), rate, channels));
                }
                "fmtp" => {
                    if let Some((pt, parameters)) = argument.split_once(' ')
                        && let Ok(pt) = pt.parse::<u8>()
                    {
                        self.fmtps.insert(pt, parameters.trim().to_owned());
                    }
                }
                _ => {}
            }
        }

        /// Accepts an audio RTP/AVP m-line with at least one codec we decode.
        pub(super) fn negotiate(&self) -> Option<Negotiated> {
            if self.port == 0
                || !self.kind.eq_ignore_ascii_case("audio")
                || !self.protocol.eq_ignore_ascii_case("RTP/AVP")
            {
                return None;
            }
            let mut codecs = Vec::new();
            let mut telephone_event_pt = None;
            let mut rtpmap_lines = Vec::new();
            for format in &self.formats {
                let Ok(pt) = format.parse::<u8>() else {
                    continue;
                };
                let codec = match self.rtpmaps.get(&pt) {
                    Some((name, _, _)) if name.eq_ignore_ascii_case("telephone-event") => {
                        if telephone_event_pt.is_none() {
                            telephone_event_pt = Some(pt);
                            rtpmap_lines.push(format!("a=rtpmap:{pt} {name}/8000\r\n"));
                            if let Some(parameters) = self.fmtps.get(&pt) {
                                rtpmap_lines.push(format!("a=fmtp:{pt} {parameters}\r\n"));
                            }
                        }
                        continue;
                    }
                    Some((name, rate, channels)) => Codec::from_rtpmap(name, *rate, *channels),
                    None if pt < 96 => Codec::from_static_payload_type(pt),
                    None => None,
                };
                if let Some(codec) = codec {
                    codecs.push((pt, codec));
                    let channels = if codec.channels() > 1 {
                        format!("/{}", codec.channels())
                    } else {
                        String::new()
                    };
                    rtpmap_lines.push(format!(
                        "a=rtpmap:{pt} {}/{}{channels}\r\n",
                        codec.rtpmap_name(),
                        codec.rtp_clock_rate()
                    ));
                }
            }
            if codecs.is_empty() {
                return None;
            }
            let direction = self.direction.unwrap_or(Direction::SendRecv);
            let paused =
                matches!(direction, Direction::Inactive | Direction::RecvOnly) || self.connection_zero;
            let answer_direction = if matches!(direction, Direction::Inactive | Direction::RecvOnly) {
                "inactive"
            } else {
                "recvonly"
            };
            Some(Negotiated {
                codecs,
                telephone_event_pt,
                paused,
                answer_direction,
                rtpmap_lines,
            })
        }

        /// The answer for an m-line we refuse: same media and protocol, port 0.
        pub(super) fn rejected_answer_line(&self) -> String {
            let format = self.formats.first().map_or("0", String::as_str);
            format!("m={} 0 {} {format}\r\n", self.kind, self.protocol)
        }
    }

    impl Negotiated {
        /// The answer's media section: our port, the accepted payload types, the label echoed.
        pub(super) fn answer_section(&self, port: u16, label: Option<&str>) -> String {
            let mut payload_types: Vec<String> = self.codecs.iter().map(|(pt, _)| pt.to_string()).collect();
            if let Some(pt) = self.telephone_event_pt {
                payload_types.push(pt.to_string());
            }
            let mut section = format!("m=audio {port} RTP/AVP {}\r\n", payload_types.join(" "));
            for line in &self.rtpmap_lines {
                section.push_str(line);
            }
            if let Some(label) = label {
                section.push_str(&format!("a=label:{label}\r\n"));
            }
            section.push_str(&format!("a={}\r\n", self.answer_direction));
            section
        }
    }

    /// Who sends which stream, per one metadata document (any of the three namespaces or none).
    #[derive(Debug, Default)]
    pub(super) struct MetadataSummary {
        /// stream id → label.
        pub stream_labels: HashMap<String, String>,
        /// participant id → AoR.
        pub participant_names: HashMap<String, String>,
        /// participant id → stream ids it sends (only participants with an association in this document).
        pub sends: Vec<(String, Vec<String>)>,
    }

    fn attribute_of<'a>(node: roxmltree::Node<'a, 'a>, names: &[&str]) -> Option<&'a str> {
        names.iter().find_map(|name| node.attribute(*name))
    }

    fn child_texts<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Vec<String> {
        node.children()
            .filter(|child| child.tag_name().name().eq_ignore_ascii_case(name))
            .filter_map(|child| {
                let text = child.text().map(str::trim).filter(|text| !text.is_empty());
                text.or_else(|| {
                    child
                        .children()
                        .find(|id| id.tag_name().name() == "id")
                        .and_then(|id| id.text())
                })
                .map(|text| text.trim().to_owned())
            })
            .collect()
    }

    impl MetadataSummary {
        pub(super) fn parse(xml: &str) -> Option<MetadataSummary> {
            let document = roxmltree::Document::parse(xml).ok()?;
            let mut summary = MetadataSummary::default();
            for node in document.descendants().filter(roxmltree::Node::is_element) {
                match node.tag_name().name() {
                    "stream" => {
                        if let (Some(id), Some(label)) = (
                            attribute_of(node, &["stream_id", "id"]),
                            child_texts(node, "label").into_iter().next(),
                        ) {
                            summary.stream_labels.insert(id.to_owned(), label);
                        }
                    }
                    "participant" => {
                        let Some(id) = attribute_of(node, &["participant_id", "id"]) else {
                            continue;
                        };
                        let aor = node
                            .descendants()
                            .find(|child| child.tag_name().name() == "nameID")
                            .and_then(|name_id| name_id.attribute("aor"))
                            .map(str::to_owned)
                            .or_else(|| child_texts(node, "aor").into_iter().next());
                        if let Some(aor) = aor {
                            summary.participant_names.insert(id.to_owned(), aor);
                        }
                        let sends = child_texts(node, "send");
                        if !sends.is_empty() {
                            summary.sends.push((id.to_owned(), sends));
                        }
                    }
                    "participantstreamassoc" => {
                        if let Some(id) = attribute_of(node, &["participant_id", "id"]) {
                            summary.sends.push((id.to_owned(), child_texts(node, "send")));
                        }
                    }
                    _ => {}
                }
            }
            Some(summary)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use airlock_sip::{Message, Transport};

    use super::*;

    const SDP_TWO_STREAMS: &str = "v=0\r\no=SRC 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
a=label:1\r\na=sendonly\r\n\
m=audio 20002 RTP/AVP 8 0\r\na=label:2\r\na=sendonly\r\n";

    const METADATA: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode>\
<participant participant_id=\"P1\"><nameID aor=\"sip:+15551230001@carrier.example.net\"/></participant>\
<participant participant_id=\"P2\"><nameID aor=\"sip:agent1001@cc.example.com\"/></participant>\
<stream stream_id=\"S1\" session_id=\"X\"><label>1</label></stream>\
<stream stream_id=\"S2\" session_id=\"X\"><label>2</label></stream>\
<participantstreamassoc participant_id=\"P1\"><send>S1</send><recv>S2</recv></participantstreamassoc>\
<participantstreamassoc participant_id=\"P2\"><send>S2</send><recv>S1</recv></participantstreamassoc>\
</recording>";

    fn multipart(sdp: &str, metadata: &str) -> String {
        format!(
            "--OSS-unique-boundary-42\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
             --OSS-unique-boundary-42\r\nContent-Type: application/rs-metadata+xml\r\n\
             Content-Disposition: recording-session\r\n\r\n{metadata}\r\n--OSS-unique-boundary-42--\r\n"
        )
    }

    struct Src {
        srs: Srs,
        start: Instant,
        remote: Remote,
        cseq: u32,
        branch: u32,
        local_tag: Option<String>,
    }

    impl Src {
        fn new(config: SrsConfig) -> Self {
            let remote = Remote {
                transport: Transport::Udp,
                addr: SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 5060)),
                connection: None,
            };
            Self {
                srs: Srs::new(config),
                start: Instant::now(),
                remote,
                cseq: 1,
                branch: 0,
                local_tag: None,
            }
        }

        fn at(&self, seconds: u64) -> Instant {
            self.start + Duration::from_secs(seconds)
        }

        fn request(
            &mut self,
            method: &str,
            call: &str,
            headers: &str,
            content_type: &str,
            body: &str,
        ) -> String {
            self.branch += 1;
            if method != "ACK" {
                self.cseq += 1;
            }
            let to_tag = self
                .local_tag
                .as_ref()
                .map(|tag| format!(";tag={tag}"))
                .unwrap_or_default();
            let content_type = if content_type.is_empty() {
                String::new()
            } else {
                format!("Content-Type: {content_type}\r\n")
            };
            format!(
                "{method} sip:srs@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-{}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:src@198.51.100.7>;tag=src-1\r\nTo: <sip:srs@192.0.2.10>{to_tag}\r\n\
                 Call-ID: {call}\r\nCSeq: {} {method}\r\nContact: <sip:src@198.51.100.7:5060>;+sip.src\r\n\
                 {headers}{content_type}Content-Length: {}\r\n\r\n{body}",
                self.branch,
                self.cseq,
                body.len()
            )
        }

        fn send(&mut self, seconds: u64, text: &str) -> Vec<SrsOutput> {
            let now = self.at(seconds);
            self.srs.handle_sip(now, self.remote, text.as_bytes());
            self.outputs()
        }

        fn outputs(&mut self) -> Vec<SrsOutput> {
            std::iter::from_fn(|| self.srs.poll_output()).collect()
        }

        fn invite(&mut self, seconds: u64, call: &str) -> Vec<SrsOutput> {
            let body = multipart(SDP_TWO_STREAMS, METADATA);
            let text = self.request(
                "INVITE",
                call,
                "Require: siprec\r\n",
                "multipart/mixed;boundary=OSS-unique-boundary-42",
                &body,
            );
            let outputs = self.send(seconds, &text);
            if let Some(ok) = responses(&outputs)
                .into_iter()
                .find(|response| response.status() == 200)
            {
                self.local_tag = ok.headers().to().and_then(|to| to.tag().map(str::to_owned));
            }
            outputs
        }

        fn ack(&mut self, seconds: u64, call: &str) -> Vec<SrsOutput> {
            let text = self.request("ACK", call, "", "", "");
            self.send(seconds, &text)
        }
    }

    fn responses(outputs: &[SrsOutput]) -> Vec<Response> {
        outputs
            .iter()
            .filter_map(|output| match output {
                SrsOutput::Transmit { bytes, .. } => match Message::parse(bytes) {
                    Ok(Message::Response(response)) => Some(response),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn final_response(outputs: &[SrsOutput]) -> Response {
        responses(outputs)
            .into_iter()
            .find(|response| response.status() >= 200)
            .expect("a final response")
    }

    fn started(outputs: &[SrsOutput]) -> (CallId, RecordingPlan) {
        outputs
            .iter()
            .find_map(|output| match output {
                SrsOutput::StartCall { call, plan } => Some((*call, plan.clone())),
                _ => None,
            })
            .expect("StartCall")
    }

    fn updated(outputs: &[SrsOutput]) -> Option<RecordingPlan> {
        outputs.iter().find_map(|output| match output {
            SrsOutput::UpdateCall { plan, .. } => Some(plan.clone()),
            _ => None,
        })
    }

    fn ended(outputs: &[SrsOutput]) -> Option<EndReason> {
        outputs.iter().find_map(|output| match output {
            SrsOutput::EndCall { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    fn sent_requests(outputs: &[SrsOutput]) -> Vec<Request> {
        outputs
            .iter()
            .filter_map(|output| match output {
                SrsOutput::Transmit { bytes, .. } => Request::parse(bytes).ok(),
                _ => None,
            })
            .collect()
    }

    fn small_pool() -> SrsConfig {
        SrsConfig {
            rtp_port_min: 30_000,
            rtp_port_max: 30_009,
            call_id_seed: 42,
            ..SrsConfig::default()
        }
    }

    #[test]
    fn full_call_flow_answers_sdp_only_and_releases_ports_on_bye() {
        let mut src = Src::new(small_pool());
        let outputs = src.invite(0, "call-a");
        let (call, plan) = started(&outputs);
        assert_ne!(call.to_string(), "call-a");
        let labels: Vec<&str> = plan.streams.iter().map(|stream| stream.label.as_str()).collect();
        assert_eq!(labels, vec!["1", "2"]);
        assert!(
            plan.streams
                .iter()
                .all(|stream| stream.local_port % 2 == 0 && !stream.paused)
        );
        assert_eq!(plan.streams[0].codecs, vec![(0, Codec::Pcmu), (8, Codec::Pcma)]);
        assert_eq!(plan.streams[0].telephone_event_pt, Some(101));
        assert_eq!(
            plan.streams[0]
                .participant
                .as_ref()
                .map(|participant| participant.expose().as_str()),
            Some("sip:+15551230001@carrier.example.net")
        );
        assert!(plan.metadata_xml.is_some());
        assert_eq!(src.srs.ports.available(), 3);

        let ok = final_response(&outputs);
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers().content_type(), Some("application/sdp"));
        assert!(ok.headers().contacts()[0].has_param("+sip.srs"));
        assert!(ok.headers().has_token("Supported", "siprec"));
        let answer = String::from_utf8(ok.body().to_vec()).expect("utf8");
        assert_eq!(answer.matches("a=recvonly").count(), 2);
        assert!(answer.contains("a=label:1") && answer.contains("a=label:2"));
        assert!(!answer.contains("multipart"));

        assert!(src.ack(1, "call-a").is_empty());
        let bye = src.request("BYE", "call-a", "", "", "");
        let outputs = src.send(60, &bye);
        assert_eq!(final_response(&outputs).status(), 200);
        assert_eq!(ended(&outputs), Some(EndReason::RemoteBye));
        assert_eq!(src.srs.ports.available(), 5);
        assert_eq!(src.srs.active_calls(), 0);
    }

    #[test]
    fn reinvite_adding_a_stream_keeps_existing_ports() {
        let mut src = Src::new(small_pool());
        let (_, first) = started(&src.invite(0, "call-b"));
        src.ack(0, "call-b");
        let sdp = format!("{SDP_TWO_STREAMS}m=audio 20004 RTP/AVP 0\r\na=label:3\r\na=sendonly\r\n");
        let reinvite = src.request("INVITE", "call-b", "", "application/sdp", &sdp);
        let outputs = src.send(10, &reinvite);
        assert_eq!(final_response(&outputs).status(), 200);
        let plan = updated(&outputs).expect("UpdateCall");
        assert_eq!(plan.streams.len(), 3);
        assert_eq!(plan.streams[0].local_port, first.streams[0].local_port);
        assert_eq!(plan.streams[1].local_port, first.streams[1].local_port);
        assert!(plan.metadata_xml.is_none(), "SDP-only re-INVITE");

        // Removing stream 2 (port 0) releases its port.
        let sdp = SDP_TWO_STREAMS.replace("m=audio 20002", "m=audio 0");
        let reinvite = src.request("INVITE", "call-b", "", "application/sdp", &sdp);
        let outputs = src.send(20, &reinvite);
        let plan = updated(&outputs).expect("UpdateCall");
        assert_eq!(
            plan.streams
                .iter()
                .map(|stream| stream.label.as_str())
                .collect::<Vec<_>>(),
            vec!["1"]
        );
        let answer = String::from_utf8(final_response(&outputs).body().to_vec()).expect("utf8");
        assert_eq!(
            answer.matches("m=audio").count(),
            2,
            "same number of m-lines in the answer"
        );
        assert!(answer.contains("m=audio 0 RTP/AVP"));
        assert_eq!(src.srs.ports.available(), 4);
    }

    #[test]
    fn metadata_only_update_changes_participants_and_pauses_by_removed_send() {
        let mut src = Src::new(small_pool());
        started(&src.invite(0, "call-c"));
        src.ack(0, "call-c");
        let partial = "<recording xmlns=\"urn:ietf:params:xml:ns:recording\"><datamode>partial</datamode>\
<participant participant_id=\"P3\"><nameID aor=\"sip:agent2002@cc.example.com\"/></participant>\
<participantstreamassoc participant_id=\"P3\"><send>S2</send></participantstreamassoc>\
<participantstreamassoc participant_id=\"P1\"><recv>S2</recv></participantstreamassoc></recording>";
        let update = src.request("UPDATE", "call-c", "", "application/rs-metadata", partial);
        let outputs = src.send(30, &update);
        let ok = final_response(&outputs);
        assert_eq!(ok.status(), 200);
        assert!(
            ok.body().is_empty(),
            "no SDP in the answer to a metadata-only UPDATE"
        );
        let plan = updated(&outputs).expect("UpdateCall");
        assert_eq!(
            plan.metadata_xml.as_ref().map(|xml| xml.expose().as_str()),
            Some(partial)
        );
        let stream_two = &plan.streams[1];
        assert_eq!(
            stream_two
                .participant
                .as_ref()
                .map(|participant| participant.expose().as_str()),
            Some("sip:agent2002@cc.example.com")
        );
        assert!(plan.streams[0].paused, "P1 no longer sends stream 1");
        assert!(!stream_two.paused);
    }

    #[test]
    fn pause_and_resume_by_inactive_and_zero_connection() {
        let mut src = Src::new(small_pool());
        started(&src.invite(0, "call-d"));
        src.ack(0, "call-d");
        let inactive = SDP_TWO_STREAMS.replace("a=sendonly", "a=inactive");
        let reinvite = src.request("INVITE", "call-d", "", "application/sdp", &inactive);
        let outputs = src.send(10, &reinvite);
        let plan = updated(&outputs).expect("UpdateCall");
        assert!(plan.paused && plan.streams.iter().all(|stream| stream.paused));
        let answer = String::from_utf8(final_response(&outputs).body().to_vec()).expect("utf8");
        assert_eq!(answer.matches("a=inactive").count(), 2);

        let resumed = src.request("INVITE", "call-d", "", "application/sdp", SDP_TWO_STREAMS);
        let plan = updated(&src.send(20, &resumed)).expect("UpdateCall");
        assert!(!plan.paused);

        let zero = SDP_TWO_STREAMS.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
        let reinvite = src.request("INVITE", "call-d", "", "application/sdp", &zero);
        let plan = updated(&src.send(30, &reinvite)).expect("UpdateCall");
        assert!(plan.paused);
    }

    #[test]
    fn four_error_classes() {
        let mut src = Src::new(small_pool());
        let broken = src.request(
            "INVITE",
            "e1",
            "Require: siprec\r\n",
            "multipart/mixed;boundary=missing",
            "no delimiter here",
        );
        let response = final_response(&src.send(0, &broken));
        assert_eq!(
            (response.status(), response.reason()),
            (400, "Malformed multipart body")
        );

        let text = src.request("INVITE", "e2", "Require: siprec\r\n", "text/plain", "hello");
        let response = final_response(&src.send(0, &text));
        assert_eq!(response.status(), 415);
        assert!(
            response
                .headers()
                .get("Accept")
                .is_some_and(|accept| accept.contains("application/sdp"))
        );

        let body = multipart(SDP_TWO_STREAMS, METADATA);
        let extension = src.request(
            "INVITE",
            "e3",
            "Require: siprec, 100rel, foo\r\n",
            "multipart/mixed;boundary=OSS-unique-boundary-42",
            &body,
        );
        let response = final_response(&src.send(0, &extension));
        assert_eq!(response.status(), 420);
        assert_eq!(response.headers().list("Unsupported"), vec!["100rel", "foo"]);

        let g729 = SDP_TWO_STREAMS
            .replace("RTP/AVP 0 8 101", "RTP/AVP 18")
            .replace("RTP/AVP 8 0", "RTP/AVP 18");
        let body = multipart(&g729, METADATA);
        let codec = src.request(
            "INVITE",
            "e4",
            "Require: siprec\r\n",
            "multipart/mixed;boundary=OSS-unique-boundary-42",
            &body,
        );
        let response = final_response(&src.send(0, &codec));
        assert_eq!(
            (response.status(), response.reason()),
            (488, "No acceptable codec")
        );

        assert_eq!(src.srs.active_calls(), 0);
        assert_eq!(src.srs.ports.available(), 5, "no ports leak from rejections");
    }

    #[test]
    fn recognition_is_lenient_by_default_and_strict_on_request() {
        let mut src = Src::new(small_pool());
        let plain = src
            .request("INVITE", "r1", "", "application/sdp", SDP_TWO_STREAMS)
            .replace(";+sip.src", "");
        assert_eq!(final_response(&src.send(0, &plain)).status(), 403);
        let with_src_only = src.request("INVITE", "r2", "", "application/sdp", SDP_TWO_STREAMS);
        assert_eq!(final_response(&src.send(0, &with_src_only)).status(), 200);

        let mut strict = Src::new(SrsConfig {
            strict_src: true,
            ..small_pool()
        });
        let require_only = strict
            .request(
                "INVITE",
                "r3",
                "Require: siprec\r\n",
                "application/sdp",
                SDP_TWO_STREAMS,
            )
            .replace(";+sip.src", "");
        assert_eq!(final_response(&strict.send(0, &require_only)).status(), 403);
        assert_eq!(started(&strict.invite(1, "r4")).1.streams.len(), 2);
    }

    #[test]
    fn capacity_and_closed_admission_answer_503_with_retry_after() {
        let mut src = Src::new(SrsConfig {
            max_calls: 1,
            retry_after_secs: 7,
            ..small_pool()
        });
        started(&src.invite(0, "c1"));
        src.local_tag = None;
        let response = final_response(&src.invite(1, "c2"));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers().get("Retry-After"), Some("7"));

        let mut closed = Src::new(small_pool());
        closed.srs.set_admission_open(false);
        assert_eq!(final_response(&closed.invite(0, "c3")).status(), 503);
        closed.srs.set_admission_open(true);
        assert_eq!(final_response(&closed.invite(1, "c4")).status(), 200);
    }

    #[test]
    fn options_and_unsupported_methods() {
        let mut src = Src::new(small_pool());
        let options = src.request("OPTIONS", "o1", "", "", "");
        let response = final_response(&src.send(0, &options));
        assert_eq!(response.status(), 200);
        assert!(response.headers().has_token("Allow", "INVITE"));
        assert!(response.headers().has_token("Supported", "siprec"));
        let register = src.request("REGISTER", "o2", "", "", "");
        let response = final_response(&src.send(0, &register));
        assert_eq!(response.status(), 405);
        assert!(response.headers().get("Allow").is_some());
        let unknown = src.request("FOO", "o3", "", "", "");
        assert_eq!(final_response(&src.send(0, &unknown)).status(), 501);
    }

    #[test]
    fn media_event_sends_bye_and_ends_the_call() {
        let mut src = Src::new(small_pool());
        let (call, _) = started(&src.invite(0, "m1"));
        src.ack(0, "m1");
        src.srs
            .handle_media_event(src.at(5), call, MediaEvent::RtpInactivityTimeout);
        let outputs = src.outputs();
        assert_eq!(ended(&outputs), Some(EndReason::RtpInactivityTimeout));
        let byes = sent_requests(&outputs);
        assert_eq!(byes.len(), 1);
        assert_eq!(byes[0].method(), &Method::Bye);
        assert!(
            byes[0]
                .headers()
                .to()
                .and_then(|to| to.tag().map(str::to_owned))
                .as_deref()
                == Some("src-1")
        );
        assert_eq!(src.srs.stats().byes_sent, 1);
    }

    #[test]
    fn missing_ack_ends_the_call_with_bye() {
        let mut src = Src::new(small_pool());
        started(&src.invite(0, "a1"));
        let mut outputs = Vec::new();
        while let Some(deadline) = src.srs.poll_timeout().filter(|deadline| *deadline <= src.at(40)) {
            src.srs.handle_timeout(deadline);
            outputs.extend(src.outputs());
        }
        assert_eq!(ended(&outputs), Some(EndReason::AckTimeout));
        assert!(
            sent_requests(&outputs)
                .iter()
                .any(|request| request.method() == &Method::Bye)
        );
        assert_eq!(src.srs.ports.available(), 5);
    }

    #[test]
    fn shutdown_byes_every_call_and_refuses_new_ones() {
        let mut src = Src::new(small_pool());
        started(&src.invite(0, "s1"));
        src.ack(0, "s1");
        src.srs.begin_shutdown(src.at(10));
        let outputs = src.outputs();
        assert_eq!(ended(&outputs), Some(EndReason::Shutdown));
        assert_eq!(sent_requests(&outputs).len(), 1);
        src.local_tag = None;
        assert_eq!(final_response(&src.invite(11, "s2")).status(), 503);
    }

    #[test]
    fn four_hour_call_with_session_refreshes() {
        let mut src = Src::new(small_pool());
        let (call, plan) = started(&src.invite(0, "long"));
        src.ack(0, "long");
        let mut last_answer: Option<Vec<u8>> = None;
        for refresh in 1..=16u64 {
            let at = refresh * 15 * 60;
            while let Some(deadline) = src.srs.poll_timeout().filter(|deadline| *deadline <= src.at(at)) {
                src.srs.handle_timeout(deadline);
                assert!(ended(&src.outputs()).is_none());
            }
            let reinvite = src.request("INVITE", "long", "", "application/sdp", SDP_TWO_STREAMS);
            let outputs = src.send(at, &reinvite);
            let ok = final_response(&outputs);
            assert_eq!(ok.status(), 200);
            assert!(updated(&outputs).is_none(), "a refresh changes nothing");
            if let Some(previous) = &last_answer {
                assert_eq!(previous, &ok.body().to_vec(), "o= version unchanged by refreshes");
            }
            last_answer = Some(ok.body().to_vec());
            assert!(src.ack(at, "long").is_empty());
        }
        assert_eq!(src.srs.active_calls(), 1);
        let bye = src.request("BYE", "long", "", "", "");
        let outputs = src.send(4 * 3600 + 1, &bye);
        assert_eq!(ended(&outputs), Some(EndReason::RemoteBye));
        assert!(
            outputs
                .iter()
                .all(|output| !matches!(output, SrsOutput::EndCall { call: other, .. } if *other != call))
        );
        assert_eq!(plan.streams.len(), 2);
    }

    #[test]
    fn port_pool_is_even_bounded_and_reuses_last() {
        let mut pool = PortPool::new(10_001, 10_006);
        assert_eq!(pool.available(), 2);
        let first = pool.allocate();
        let second = pool.allocate();
        assert_eq!(
            (first, second, pool.allocate()),
            (Some(10_002), Some(10_004), None)
        );
        pool.release(10_002);
        pool.release(10_002);
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn in_dialog_request_for_an_unknown_dialog_gets_481() {
        let mut src = Src::new(small_pool());
        src.local_tag = Some("nope".to_owned());
        let bye = src.request("BYE", "ghost", "", "", "");
        assert_eq!(final_response(&src.send(0, &bye)).status(), 481);
    }
}
