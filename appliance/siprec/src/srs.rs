//! The SRS call-control state machine: turns SIP requests from an SRC into recording calls.
//!
//! Owns admission (before any call state exists), SIPREC recognition (lenient by default, `strict_src`
//! for RFC 7866 §6.2), which response a refused request gets (403, 420, 488, 503 here; 400/413/415 and
//! 488/503 from the body modules' errors, with their reason phrases), re-INVITE/UPDATE with SDP-only or
//! metadata-only bodies, pause/resume (`a=inactive`, `c=0.0.0.0`, a metadata sender that stops sending),
//! call end (BYE, CANCEL, ACK timeout, media failures, shutdown) and the media [`PortPool`]: a stream keeps
//! its port under the same label for the whole call.
//!
//! Five9 VoiceStream over SIP is recognised here too: an INVITE with no SIPREC signal but an
//! `X-Five9-StreamingPairId` header is one streamed leg (plain `application/sdp`, `sendrecv` although the
//! media is one-way: answered `recvonly` like any offer). The first leg of a pair id starts a call
//! ([`CallSource::VoiceStreamSip`], streams labelled `leg-1`, `leg-2`, … by arrival order); later legs with
//! the same id keep their own dialogs but add their streams to that call (UpdateCall). A leg's BYE removes
//! its streams; the last one ends the call. The pair id is never logged and is forgotten with the call.
//!
//! Bodies are read only by this crate's body modules: [`crate::multipart::classify`] splits them,
//! [`crate::sdp`] parses the offer, [`crate::negotiate`] decides the streams and writes the answer (plain
//! `application/sdp`, one [`crate::sdp::AnswerOrigin`] per dialog), and each call keeps one
//! [`crate::metadata::RecordingMetadata`] that every document is applied to. The SIP transactions below
//! it are `airlock_sip::Endpoint`'s. Sans-IO: time is a parameter, the runtime binds ports and sockets.
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use airlock_media::Codec;
use airlock_sip::{
    ClientTxnId, Dialog, DialogId, Endpoint, EndpointConfig, EndpointEvent, EndpointStats, Method, Remote,
    Request, Response, ServerTxnId, Transport,
};
use airlock_telemetry::Pii;

use crate::metadata::{self, MetadataError, Participant, RecordingMetadata};
use crate::multipart::{self, BodyError, MetadataPart};
use crate::negotiate::{self, NegotiateError, Negotiation};
use crate::sdes::SdesKey;
use crate::sdp::{AnswerOrigin, SdpError, SessionDescription};

/// Methods we implement, for Allow.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";
/// The only option tag we implement.
const SIPREC_OPTION_TAG: &str = "siprec";
/// The header that marks a Five9 VoiceStream leg sent over plain SIP and ties the legs of one call together.
const PAIR_ID_HEADER: &str = "X-Five9-StreamingPairId";
/// Longest pair id accepted, in bytes; longer (or empty, or repeated) is 400.
pub const MAX_PAIR_ID_BYTES: usize = 256;

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
    /// Who the metadata says sends this stream now (AoR when given, else the participant id; several,
    /// comma-separated, for a mixed stream).
    pub participant: Option<Pii<String>>,
    /// For an SRTP stream: the SDES key the SRC protects it with (a re-INVITE may change it: rekey).
    pub srtp: Option<SdesKey>,
}

/// How a call reached us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CallSource {
    /// A SIPREC Recording Session (RFC 7866): one dialog, streams labelled by the SRC.
    #[default]
    Siprec,
    /// Five9 VoiceStream over plain SIP: one dialog per streamed leg, joined by `X-Five9-StreamingPairId`.
    VoiceStreamSip,
}

impl CallSource {
    /// The manifest's `source` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallSource::Siprec => "siprec",
            CallSource::VoiceStreamSip => "voicestream_sip",
        }
    }
}

/// What the runtime should record for a call, complete each time (a removed stream is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingPlan {
    /// Accepted streams in m-line order (VoiceStream: leg by leg, in arrival order).
    pub streams: Vec<PlannedStream>,
    /// The metadata document carried by *this* request, if any, verbatim.
    pub metadata_xml: Option<Pii<String>>,
    /// Every stream is paused.
    pub paused: bool,
    /// Where the call came from (the manifest's `source`).
    pub source: CallSource,
    /// Channels to reserve when the recording is created, beyond one per stream of the first plan (legs
    /// that join later get a channel of their own instead of being mixed); 0 for SIPREC.
    pub min_channels: usize,
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
    /// Our SIP-over-TLS listener: the Contact of dialogs that arrived over TLS (`;transport=tls`).
    pub tls_contact_address: Option<SocketAddr>,
    /// Accept SDES keys (`a=crypto`) that arrived over UDP/TCP, readable by anyone on the path (RFC 4568
    /// §8.3). Off: an SRTP offer over a plain transport is refused with 488.
    pub insecure_sdes_without_tls: bool,
    /// Mixed into call ids and SIP branches so they differ across restarts.
    pub call_id_seed: u64,
    /// Most streams accepted per call (VoiceStream: over all its legs); more is 488.
    pub max_streams_per_call: usize,
    /// Channels reserved for a VoiceStream-over-SIP call (one per leg; agent and customer by default).
    pub voicestream_channels: usize,
    /// Largest metadata document accepted, in bytes (at most `metadata::MAX_METADATA_BYTES` applies
    /// anyway); more is 413.
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
            tls_contact_address: None,
            insecure_sdes_without_tls: false,
            call_id_seed: 0,
            max_streams_per_call: 8,
            voicestream_channels: 2,
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
    /// 400 and 413: malformed bodies, or bodies beyond our limits.
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

/// Why an INVITE/UPDATE is refused. The body modules' errors carry their own status and reason phrase;
/// the other variants are the SRS's own decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejection {
    /// Our limits (calls, admission, shutdown): 503 + Retry-After.
    Overloaded,
    /// `Require` lists option tags we do not implement: 420 + Unsupported.
    BadExtension(Vec<String>),
    /// Not recognised as a Recording Session: 403.
    NotRecordingSession,
    /// A leg over a plain transport joining a VoiceStream pair that started over TLS: 403.
    TlsRequired,
    /// An offer beyond our per-call limits: 488.
    NotAcceptable(&'static str),
    /// Malformed beyond what the body modules check (no Contact, repeated stream label): 400.
    Malformed(&'static str),
    /// The body framing or type (400, 413, 415 + Accept).
    Body(BodyError),
    /// The SDP offer does not parse (400).
    Sdp(SdpError),
    /// Nothing recordable in the offer (488), or no media ports left (503 + Retry-After).
    Negotiate(NegotiateError),
    /// The metadata document or the state it would grow (400, 413).
    Metadata(MetadataError),
}

impl Rejection {
    fn status(&self) -> u16 {
        match self {
            Rejection::Overloaded => 503,
            Rejection::BadExtension(_) => 420,
            Rejection::NotRecordingSession | Rejection::TlsRequired => 403,
            Rejection::NotAcceptable(_) => 488,
            Rejection::Malformed(_) | Rejection::Sdp(_) => 400,
            Rejection::Body(error) => error.sip_status(),
            Rejection::Negotiate(error) => error.sip_status(),
            Rejection::Metadata(error) => error.sip_status(),
        }
    }

    /// The reason phrase: fixed text, never peer data.
    fn reason_phrase(&self) -> &'static str {
        match self {
            Rejection::Overloaded => "Service Unavailable",
            Rejection::BadExtension(_) => "Bad Extension",
            Rejection::NotRecordingSession => "Not a recording session",
            Rejection::TlsRequired => "TLS Required For This Pair",
            Rejection::NotAcceptable(reason) | Rejection::Malformed(reason) => reason,
            Rejection::Body(error) => error.reason_phrase(),
            Rejection::Sdp(error) => error.reason_phrase(),
            Rejection::Negotiate(error) => error.reason_phrase(),
            Rejection::Metadata(error) => error.reason_phrase(),
        }
    }
}

/// One accepted m-line of a call as last negotiated, with what the metadata says about it.
#[derive(Debug, Clone)]
struct CallStream {
    label: String,
    local_port: u16,
    codecs: Vec<(u8, Codec)>,
    telephone_event_pt: Option<u8>,
    paused_by_sdp: bool,
    /// Who the metadata says sends on it now (see [`refresh_senders`]).
    participant: Option<Pii<String>>,
    /// The metadata named a sender for it at some point of the call.
    had_sender: bool,
    srtp: Option<SdesKey>,
}

impl CallStream {
    /// Paused by SDP, or by metadata: someone sent on it and nobody does now (hold, or the sender left).
    fn paused(&self) -> bool {
        self.paused_by_sdp || self.had_sender && self.participant.is_none()
    }
}

#[derive(Debug)]
struct Call {
    /// The recording this dialog feeds: its own id for SIPREC and the first leg of a VoiceStream pair,
    /// the first leg's id for legs that joined it.
    recording: CallId,
    /// VoiceStream leg number within its pair (1, 2, … in arrival order); `None` for SIPREC.
    leg: Option<u32>,
    dialog: Dialog,
    remote: Remote,
    /// The INVITE whose 2xx still waits for ACK.
    awaiting_ack: Option<ServerTxnId>,
    /// EndCall already emitted; the BYE waits for the ACK (RFC 3261 §15: no BYE before ACK).
    ending: bool,
    streams: Vec<CallStream>,
    /// The Recording Session's metadata, merged over every document received.
    metadata: RecordingMetadata,
    /// Our `o=` line for this dialog.
    answer_origin: AnswerOrigin,
    /// The negotiation our current answer was rendered from, and that answer.
    negotiation: Negotiation,
    answer: String,
}

/// A checked SDP offer: the decisions, the streams they give, and the ports taken for it that the call did
/// not hold before (to be released if the request fails after all).
struct MediaChange {
    negotiation: Negotiation,
    streams: Vec<CallStream>,
    allocated: Vec<u16>,
}

/// The open VoiceStream-over-SIP recordings: one per pair id, with the legs (dialogs) feeding it.
#[derive(Debug)]
struct Pair {
    /// The `X-Five9-StreamingPairId` value (PII-adjacent: never logged).
    pair_id: Pii<String>,
    /// Legs that have not ended, in arrival order.
    legs: Vec<CallId>,
    /// Legs ever admitted: numbers the next one.
    legs_seen: u32,
    /// The first leg's transport: a pair that started over TLS is joined over TLS only.
    transport: Transport,
}

/// The SRS. See the module docs.
pub struct Srs {
    config: SrsConfig,
    endpoint: Endpoint,
    ports: PortPool,
    calls: HashMap<CallId, Call>,
    dialogs: HashMap<DialogId, CallId>,
    byes: HashMap<ClientTxnId, CallId>,
    /// VoiceStream pair id → recording, and recording → pair. Bounded by calls: an entry lives as long as
    /// one of its legs does.
    pair_recordings: HashMap<Pii<String>, CallId>,
    pairs: HashMap<CallId, Pair>,
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
            pair_recordings: HashMap::new(),
            pairs: HashMap::new(),
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

    /// Calls currently recording (or waiting for their ACK); a VoiceStream pair counts once.
    pub fn active_calls(&self) -> usize {
        let siprec = self
            .calls
            .values()
            .filter(|call| !call.ending && call.leg.is_none())
            .count();
        siprec + self.pairs.len()
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
        self.end_recording(now, call, event.end_reason());
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
        let mut recordings: Vec<CallId> = self
            .calls
            .values()
            .filter(|call| !call.ending)
            .map(|call| call.recording)
            .collect();
        recordings.sort_unstable();
        recordings.dedup();
        for recording in recordings {
            self.end_recording(now, recording, EndReason::Shutdown);
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
        let status = rejection.status();
        let counter = match status {
            503 => &mut self.stats.rejected_overload,
            420 => &mut self.stats.rejected_bad_extension,
            415 => &mut self.stats.rejected_media_type,
            403 => &mut self.stats.rejected_not_siprec,
            488 => &mut self.stats.rejected_not_acceptable,
            _ => &mut self.stats.rejected_malformed,
        };
        bump(counter);
        let reason = rejection.reason_phrase();
        tracing::debug!(status, reason, "refusing a request");
        let mut response = Response::for_request(request, status, reason);
        match (status, rejection) {
            (503, _) => response.add_header("Retry-After", &self.config.retry_after_secs.to_string()),
            (_, Rejection::BadExtension(tags)) => response.add_header("Unsupported", &tags.join(", ")),
            (415, _) => response.add_header("Accept", multipart::ACCEPTED_CONTENT_TYPES),
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
                    .with_header("Accept", multipart::ACCEPTED_CONTENT_TYPES);
                self.respond(now, txn, response);
            }
            Method::Invite | Method::Update | Method::Bye => {
                match DialogId::from_incoming_request(&request) {
                    Some(dialog_id) => match self.dialogs.get(&dialog_id).copied() {
                        Some(call) => self.handle_in_dialog(now, txn, call, &request, from),
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
        if self.shutting_down {
            self.reject(now, txn, invite, &Rejection::Overloaded);
            return;
        }
        let capacity = self.admission_open && self.active_calls() < self.config.max_calls;
        match self.admit(invite, from, capacity) {
            Ok((call, ok)) => {
                self.respond(now, txn, ok);
                if let Some(state) = self.calls.get_mut(&call) {
                    state.awaiting_ack = Some(txn);
                }
            }
            Err(rejection) => self.reject(now, txn, invite, &rejection),
        }
    }

    /// Validates a new INVITE, allocates ports and creates the call (or, for a VoiceStream leg whose pair is
    /// open, joins that call); returns the 200 OK to send. `capacity`: a new call may start (a leg joining
    /// an open pair needs none).
    fn admit(
        &mut self,
        invite: &Request,
        from: Remote,
        capacity: bool,
    ) -> Result<(CallId, Response), Rejection> {
        let has_require = invite.headers().has_token("Require", SIPREC_OPTION_TAG);
        let has_src_tag = invite.headers().contacts().iter().any(|contact| {
            contact.has_param("+sip.src") || contact.has_param("src") || contact.has_param("+sip-src")
        });
        // Any SIPREC signal in the headers makes it a SIPREC INVITE, whatever else it carries.
        let pair_id = if has_require || has_src_tag {
            None
        } else {
            voicestream_pair_id(invite)?
        };
        let joins = pair_id
            .as_ref()
            .and_then(|pair_id| self.pair_recordings.get(pair_id).copied());
        if !capacity && joins.is_none() {
            return Err(Rejection::Overloaded);
        }
        check_required_extensions(invite)?;
        let body =
            multipart::classify(invite.headers().content_type(), invite.body()).map_err(Rejection::Body)?;
        let recognised = if self.config.strict_src {
            has_require && has_src_tag
        } else {
            has_require || has_src_tag || body.has_recording_session_disposition
        };
        let voicestream = match (recognised, pair_id) {
            (true, _) => None,
            (false, Some(pair_id)) => Some(pair_id),
            (false, None) => return Err(Rejection::NotRecordingSession),
        };
        if voicestream.is_none() && !capacity {
            return Err(Rejection::Overloaded);
        }
        let joins = if voicestream.is_some() { joins } else { None };
        let leg = match (&voicestream, joins) {
            (None, _) => None,
            (Some(_), None) => Some(1),
            (Some(_), Some(recording)) => {
                let pair = self.pairs.get(&recording).ok_or(Rejection::Overloaded)?;
                if pair.transport == Transport::Tls && from.transport != Transport::Tls {
                    return Err(Rejection::TlsRequired);
                }
                Some(pair.legs_seen.saturating_add(1))
            }
        };
        let offer = body.require_sdp().map_err(Rejection::Body)?;
        // A VoiceStream leg is not a Recording Session: any metadata part is not ours to read.
        let metadata = match voicestream {
            None => self.read_metadata(body.metadata, &RecordingMetadata::default())?,
            Some(_) => None,
        };
        let media = self.negotiate_offer(offer, &[], from.transport, leg)?;
        if let Some(recording) = joins {
            let held = self.recording_plan(recording, None).streams.len();
            if held.saturating_add(media.streams.len()) > self.config.max_streams_per_call {
                self.release_ports(media.allocated);
                return Err(Rejection::NotAcceptable("Too many streams"));
            }
        }

        self.call_counter = self.call_counter.wrapping_add(1);
        let call = CallId::from_counter(self.config.call_id_seed, self.call_counter);
        let recording = joins.unwrap_or(call);
        let mut answer_origin = AnswerOrigin::new(call.0 >> 1);
        let answer = media
            .negotiation
            .answer_sdp(&mut answer_origin, self.config.media_address);
        let mut ok = self.success_response(invite, &answer, from.transport);
        ok.set_to_tag(&call.to_string());
        let dialog = match Dialog::new_uas(invite, &ok) {
            Ok(dialog) => dialog,
            Err(_) => {
                self.release_ports(media.allocated);
                return Err(Rejection::Malformed("Missing Contact"));
            }
        };
        let (metadata, metadata_xml) = match metadata {
            Some((state, xml)) => (state, Some(xml)),
            None => (RecordingMetadata::default(), None),
        };
        let mut streams = media.streams;
        refresh_senders(&mut streams, &metadata);
        let state = Call {
            recording,
            leg,
            dialog,
            remote: from,
            awaiting_ack: None,
            ending: false,
            streams,
            metadata,
            answer_origin,
            negotiation: media.negotiation,
            answer,
        };
        let plan = plan_for(&state, metadata_xml);
        self.dialogs.insert(state.dialog.id().clone(), call);
        self.calls.insert(call, state);
        match (voicestream, joins) {
            (None, _) => {
                bump(&mut self.stats.calls_started);
                tracing::info!(%call, streams = plan.streams.len(), "recording call admitted");
                self.outputs.push_back(SrsOutput::StartCall { call, plan });
            }
            (Some(pair_id), None) => {
                self.pair_recordings.insert(pair_id.clone(), call);
                self.pairs.insert(
                    call,
                    Pair {
                        pair_id,
                        legs: vec![call],
                        legs_seen: 1,
                        transport: from.transport,
                    },
                );
                bump(&mut self.stats.calls_started);
                let plan = self.recording_plan(call, None);
                tracing::info!(%call, streams = plan.streams.len(), "VoiceStream SIP call admitted (leg 1)");
                self.outputs.push_back(SrsOutput::StartCall { call, plan });
            }
            (Some(_), Some(recording)) => {
                if let Some(pair) = self.pairs.get_mut(&recording) {
                    pair.legs.push(call);
                    pair.legs_seen = pair.legs_seen.saturating_add(1);
                }
                bump(&mut self.stats.session_updates);
                let plan = self.recording_plan(recording, None);
                tracing::info!(call = %recording, leg = ?leg, streams = plan.streams.len(), "VoiceStream SIP leg joined its call");
                self.outputs.push_back(SrsOutput::UpdateCall {
                    call: recording,
                    plan,
                });
            }
        }
        Ok((call, ok))
    }

    /// Our Contact for a dialog on `transport`: the TLS listener with `;transport=tls` for TLS dialogs.
    fn contact(&self, transport: Transport) -> String {
        if transport == Transport::Tls
            && let Some(tls) = self.config.tls_contact_address
        {
            return format!("<sip:srs@{tls};transport=tls>;+sip.srs");
        }
        let contact = self
            .config
            .contact_address
            .unwrap_or(SocketAddr::new(self.config.media_address, 5060));
        format!("<sip:srs@{contact}>;+sip.srs")
    }

    fn success_response(&self, request: &Request, sdp: &str, transport: Transport) -> Response {
        let mut response = Response::for_request(request, 200, "OK")
            .with_header("Contact", &self.contact(transport))
            .with_header("Allow", ALLOW)
            .with_header("Supported", SIPREC_OPTION_TAG);
        if !sdp.is_empty() {
            response.set_body("application/sdp", sdp.as_bytes().to_vec());
        }
        response
    }

    /// Parses a metadata part and applies it to a copy of `state` (complete replaces, partial merges).
    /// Returns the new state and the document; `state` itself is left for the caller to replace.
    fn read_metadata<'a>(
        &self,
        part: Option<MetadataPart<'a>>,
        state: &RecordingMetadata,
    ) -> Result<Option<(RecordingMetadata, &'a str)>, Rejection> {
        let Some(part) = part else {
            return Ok(None);
        };
        if part.xml.len() > self.config.max_metadata_bytes {
            return Err(Rejection::Metadata(MetadataError::TooLarge));
        }
        let document = metadata::parse(part.xml).map_err(Rejection::Metadata)?;
        let mut merged = state.clone();
        merged.apply(document).map_err(Rejection::Metadata)?;
        Ok(Some((merged, part.xml)))
    }

    /// Parses and negotiates an offer. A stream keeps the port it holds in `existing` under the same label
    /// (`a=label`, else the m-line index — the runtime keys streams by label); new ones get fresh ports, all
    /// or nothing. On error no port stays taken.
    fn negotiate_offer(
        &mut self,
        sdp: &str,
        existing: &[CallStream],
        transport: Transport,
        leg: Option<u32>,
    ) -> Result<MediaChange, Rejection> {
        let offer = SessionDescription::parse(sdp).map_err(Rejection::Sdp)?;
        let sdes_allowed = transport == Transport::Tls || self.config.insecure_sdes_without_tls;
        let acceptable = negotiate::acceptable_streams(&offer, sdes_allowed);
        if acceptable.len() > self.config.max_streams_per_call {
            return Err(Rejection::NotAcceptable("Too many streams"));
        }
        let labels: Vec<String> = acceptable
            .iter()
            .map(|stream| stream_label(leg, stream.index, stream.label.as_deref()))
            .collect();
        if labels
            .iter()
            .enumerate()
            .any(|(at, label)| labels[..at].contains(label))
        {
            return Err(Rejection::Malformed("Duplicate Stream Label"));
        }
        let mut ports = Vec::with_capacity(labels.len());
        let mut allocated = Vec::new();
        for label in &labels {
            let held = existing.iter().find(|stream| stream.label == *label);
            match held
                .map(|stream| stream.local_port)
                .or_else(|| self.ports.allocate())
            {
                Some(port) => {
                    if held.is_none() {
                        allocated.push(port);
                    }
                    ports.push(port);
                }
                None => {
                    self.release_ports(allocated);
                    return Err(Rejection::Negotiate(NegotiateError::NoLocalPorts));
                }
            }
        }
        let negotiation = match negotiate::negotiate(&offer, &ports, sdes_allowed) {
            Ok(negotiation) => negotiation,
            Err(error) => {
                self.release_ports(allocated);
                return Err(Rejection::Negotiate(error));
            }
        };
        let streams = negotiation
            .accepted()
            .map(|accepted| {
                let label = stream_label(leg, accepted.index, accepted.label.as_deref());
                let had_sender = existing
                    .iter()
                    .any(|stream| stream.label == label && stream.had_sender);
                CallStream {
                    label,
                    local_port: accepted.local_port,
                    codecs: accepted.codecs.clone(),
                    telephone_event_pt: accepted.telephone_event_pt,
                    paused_by_sdp: accepted.paused,
                    participant: None,
                    had_sender,
                    srtp: accepted.srtp.clone(),
                }
            })
            .collect();
        Ok(MediaChange {
            negotiation,
            streams,
            allocated,
        })
    }

    fn release_ports(&mut self, ports: impl IntoIterator<Item = u16>) {
        for port in ports {
            self.ports.release(port);
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

    /// An in-dialog request from `from`. A dialog set up over TLS takes in-dialog requests over TLS only
    /// (its SDES keys must not be replaced in clear text); otherwise the request's connection becomes the
    /// dialog's, so our BYE follows an SRC that reconnected.
    fn handle_in_dialog(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        call: CallId,
        request: &Request,
        from: Remote,
    ) {
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        if state.remote.transport == Transport::Tls && from.transport != Transport::Tls {
            let response = Response::for_request(request, 403, "TLS Required For This Dialog");
            self.respond(now, txn, response);
            return;
        }
        if let Err(error) = state.dialog.handle_remote_request(request) {
            let response = Response::for_request(request, error.status(), &error.to_string());
            self.respond(now, txn, response);
            return;
        }
        state.remote = from;
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
            _ => {
                let Some(mut state) = self.calls.remove(&call) else {
                    return;
                };
                let result = self.modify_session(&mut state, request);
                if result.is_ok() && *request.method() == Method::Invite {
                    state.awaiting_ack = Some(txn);
                }
                self.calls.insert(call, state);
                match result {
                    Ok((response, update)) => {
                        if let Some(plan) = update {
                            self.emit_update(call, plan);
                        }
                        self.respond(now, txn, response)
                    }
                    Err(rejection) => self.reject(now, txn, request, &rejection),
                }
            }
        }
    }

    /// re-INVITE or UPDATE: SDP and/or metadata changes. A failed request leaves the call unchanged.
    /// Returns the response and, when the dialog's streams changed or metadata came, its new plan.
    fn modify_session(
        &mut self,
        state: &mut Call,
        request: &Request,
    ) -> Result<(Response, Option<RecordingPlan>), Rejection> {
        check_required_extensions(request)?;
        let body =
            multipart::classify(request.headers().content_type(), request.body()).map_err(Rejection::Body)?;
        let metadata = self.read_metadata(body.metadata, &state.metadata)?;
        let media = match body.sdp {
            Some(sdp) => {
                Some(self.negotiate_offer(sdp, &state.streams, state.remote.transport, state.leg)?)
            }
            None => None,
        };
        let previous_streams = plan_for(state, None).streams;
        let answer = match media {
            Some(mut media) => {
                media.negotiation.keep_answer_keys(&state.negotiation);
                // RFC 3264 §8: the version moves only when the answer changes (session refreshes keep it).
                if media.negotiation != state.negotiation {
                    state.answer = media
                        .negotiation
                        .answer_sdp(&mut state.answer_origin, self.config.media_address);
                    state.negotiation = media.negotiation;
                }
                let removed: Vec<u16> = state
                    .streams
                    .iter()
                    .filter(|old| !media.streams.iter().any(|new| new.label == old.label))
                    .map(|old| old.local_port)
                    .collect();
                self.release_ports(removed);
                state.streams = media.streams;
                state.answer.clone()
            }
            // An offerless re-INVITE (session refresh): our current SDP is the offer.
            None if *request.method() == Method::Invite => state.answer.clone(),
            None => String::new(),
        };
        let metadata_xml = metadata.map(|(merged, xml)| {
            state.metadata = merged;
            xml
        });
        refresh_senders(&mut state.streams, &state.metadata);
        let plan = plan_for(state, metadata_xml);
        let update = (plan.metadata_xml.is_some() || plan.streams != previous_streams).then_some(plan);
        Ok((
            self.success_response(request, &answer, state.remote.transport),
            update,
        ))
    }

    /// Emits UpdateCall for a dialog's changed plan: as is for SIPREC, as the whole pair's plan under the
    /// recording's id for a VoiceStream leg.
    fn emit_update(&mut self, call: CallId, plan: RecordingPlan) {
        let recording = self.calls.get(&call).map_or(call, |state| state.recording);
        let plan = if self.pairs.contains_key(&recording) {
            self.recording_plan(recording, None)
        } else {
            plan
        };
        bump(&mut self.stats.session_updates);
        self.outputs.push_back(SrsOutput::UpdateCall {
            call: recording,
            plan,
        });
    }

    /// The plan of a recording: its dialog's for SIPREC; for a VoiceStream pair, the streams of every leg
    /// that has not ended, leg by leg in arrival order.
    fn recording_plan(&self, recording: CallId, metadata_xml: Option<&str>) -> RecordingPlan {
        let Some(pair) = self.pairs.get(&recording) else {
            return self.calls.get(&recording).map_or_else(
                || empty_plan(CallSource::Siprec, 0),
                |call| plan_for(call, metadata_xml),
            );
        };
        let mut plan = empty_plan(CallSource::VoiceStreamSip, self.config.voicestream_channels);
        for leg in &pair.legs {
            if let Some(call) = self.calls.get(leg) {
                plan.streams.extend(plan_for(call, None).streams);
            }
        }
        plan.paused = !plan.streams.is_empty() && plan.streams.iter().all(|stream| stream.paused);
        plan
    }

    /// Ends a whole recording we decided to end (media failure, shutdown): every leg of a VoiceStream pair
    /// gets BYE, and one EndCall goes out.
    fn end_recording(&mut self, now: Instant, recording: CallId, reason: EndReason) {
        let Some(pair) = self.pairs.remove(&recording) else {
            self.end_call(now, recording, reason);
            return;
        };
        self.pair_recordings.remove(&pair.pair_id);
        bump(&mut self.stats.calls_ended);
        tracing::info!(call = %recording, ?reason, "VoiceStream SIP call ended");
        self.outputs.push_back(SrsOutput::EndCall {
            call: recording,
            reason,
        });
        // The pair is gone, so ending each leg emits nothing more.
        for leg in pair.legs {
            self.end_call(now, leg, reason);
        }
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

    /// Emits EndCall and releases the ports; the dialog may live on until the BYE is sent. A VoiceStream
    /// leg leaves its pair: UpdateCall without its streams while other legs remain, EndCall after the last.
    /// A leg whose pair was already ended (see [`Srs::end_recording`]) emits nothing.
    fn finish_call(&mut self, call: CallId, reason: EndReason) {
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        if state.ending {
            return;
        }
        state.ending = true;
        let recording = state.recording;
        let is_leg = state.leg.is_some();
        let streams = std::mem::take(&mut state.streams);
        self.release_ports(streams.iter().map(|stream| stream.local_port));
        if !is_leg {
            bump(&mut self.stats.calls_ended);
            tracing::info!(%call, ?reason, "recording call ended");
            self.outputs.push_back(SrsOutput::EndCall { call, reason });
        } else if let Some(pair) = self.pairs.get_mut(&recording) {
            pair.legs.retain(|leg| *leg != call);
            if pair.legs.is_empty() {
                if let Some(pair) = self.pairs.remove(&recording) {
                    self.pair_recordings.remove(&pair.pair_id);
                }
                bump(&mut self.stats.calls_ended);
                tracing::info!(call = %recording, ?reason, "VoiceStream SIP call ended (last leg)");
                self.outputs.push_back(SrsOutput::EndCall {
                    call: recording,
                    reason,
                });
            } else {
                bump(&mut self.stats.session_updates);
                let plan = self.recording_plan(recording, None);
                tracing::info!(call = %recording, ?reason, "VoiceStream SIP leg ended");
                self.outputs.push_back(SrsOutput::UpdateCall {
                    call: recording,
                    plan,
                });
            }
        }
        if reason == EndReason::Cancelled {
            self.forget_call(call);
        }
    }

    fn send_bye_and_forget(&mut self, now: Instant, call: CallId) {
        let Some(transport) = self.calls.get(&call).map(|state| state.remote.transport) else {
            return;
        };
        let contact = self.contact(transport);
        let Some(state) = self.calls.get_mut(&call) else {
            return;
        };
        let bye = state
            .dialog
            .build_request(Method::Bye)
            .with_header("Contact", &contact);
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
            self.release_ports(state.streams.iter().map(|stream| stream.local_port));
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

/// The plan label of an m-line: its `a=label`, or `stream-N` by m-line index. A VoiceStream leg's streams
/// are labelled by leg instead (`leg-N` for its first m-line, `leg-N-M` for m-line index M > 0; the
/// offer's own `a=label`s would collide across legs): no public source names a leg or role header, so
/// legs are numbered in arrival order within their pair.
fn stream_label(leg: Option<u32>, index: usize, label: Option<&str>) -> String {
    match leg {
        Some(leg) if index == 0 => format!("leg-{leg}"),
        Some(leg) => format!("leg-{leg}-{index}"),
        None => label.map_or_else(|| format!("stream-{index}"), str::to_owned),
    }
}

/// The VoiceStream pair id of a request: `None` without the header, 400 when it is empty, repeated or
/// longer than [`MAX_PAIR_ID_BYTES`].
fn voicestream_pair_id(request: &Request) -> Result<Option<Pii<String>>, Rejection> {
    let mut values = request.headers().get_all(PAIR_ID_HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::Malformed("Repeated X-Five9-StreamingPairId"));
    }
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_PAIR_ID_BYTES {
        return Err(Rejection::Malformed("Invalid X-Five9-StreamingPairId"));
    }
    Ok(Some(Pii::new(value.to_owned())))
}

/// Names each stream's current senders from the metadata state (AoR, else participant id; several, for a
/// mixed stream, comma-separated) and remembers that it had one, so that losing them all pauses it.
fn refresh_senders(streams: &mut [CallStream], metadata: &RecordingMetadata) {
    for stream in streams {
        let senders = metadata.stream_participants(&stream.label);
        stream.had_sender |= !senders.is_empty();
        stream.participant = (!senders.is_empty()).then(|| {
            let names: Vec<&str> = senders.iter().map(|sender| participant_name(sender)).collect();
            Pii::new(names.join(", "))
        });
    }
}

fn participant_name(participant: &Participant) -> &str {
    participant
        .name_ids
        .iter()
        .find_map(|name_id| name_id.aor.as_ref())
        .map_or(participant.id.as_str(), |aor| aor.expose().as_str())
}

fn plan_for(call: &Call, metadata_xml: Option<&str>) -> RecordingPlan {
    let streams: Vec<PlannedStream> = call
        .streams
        .iter()
        .map(|stream| PlannedStream {
            label: stream.label.clone(),
            local_port: stream.local_port,
            codecs: stream.codecs.clone(),
            telephone_event_pt: stream.telephone_event_pt,
            paused: stream.paused(),
            participant: stream.participant.clone(),
            srtp: stream.srtp.clone(),
        })
        .collect();
    let paused = !streams.is_empty() && streams.iter().all(|stream| stream.paused);
    RecordingPlan {
        streams,
        metadata_xml: metadata_xml.map(|xml| Pii::new(xml.to_owned())),
        paused,
        source: CallSource::Siprec,
        min_channels: 0,
    }
}

fn empty_plan(source: CallSource, min_channels: usize) -> RecordingPlan {
    RecordingPlan {
        streams: Vec::new(),
        metadata_xml: None,
        paused: false,
        source,
        min_channels,
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

    /// Who the plan says sends on a stream.
    fn sender(stream: &PlannedStream) -> Option<&str> {
        stream
            .participant
            .as_ref()
            .map(|participant| participant.expose().as_str())
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
            sender(&plan.streams[0]),
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
        // A transfer (RFC 7865: leaving is a disassociate-time, never an omission) while P1 holds.
        let partial = "<recording xmlns=\"urn:ietf:params:xml:ns:recording\"><datamode>partial</datamode>\
<participant participant_id=\"P3\"><nameID aor=\"sip:agent2002@cc.example.com\"/></participant>\
<participantsessionassoc participant_id=\"P2\" session_id=\"X\">\
<disassociate-time>2026-11-23T09:20:00Z</disassociate-time></participantsessionassoc>\
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
        assert_eq!(sender(stream_two), Some("sip:agent2002@cc.example.com"));
        assert!(plan.streams[0].paused, "P1 no longer sends stream 1");
        assert!(plan.streams[0].participant.is_none());
        assert!(!stream_two.paused);
        assert!(!plan.paused);

        // P1 sends again: stream 1 resumes, still by metadata alone (legacy type, in an UPDATE).
        let resume = "<recording xmlns=\"urn:ietf:params:xml:ns:recording\"><datamode>partial</datamode>\
<participantstreamassoc participant_id=\"P1\"><send>S1</send><recv>S2</recv></participantstreamassoc></recording>";
        let update = src.request("UPDATE", "call-c", "", "application/rs-metadata", resume);
        let plan = updated(&src.send(40, &update)).expect("UpdateCall");
        assert!(!plan.streams[0].paused);
        assert_eq!(
            sender(&plan.streams[0]),
            Some("sip:+15551230001@carrier.example.net")
        );
        assert_eq!(src.srs.stats().session_updates, 2);
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
            (400, "Multipart Boundary Not Found")
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
            (488, "No Acceptable Audio Codec")
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

    const BOUNDARY: &str = "multipart/mixed;boundary=OSS-unique-boundary-42";

    #[test]
    fn unsupported_body_types_get_415_with_accept() {
        let mut src = Src::new(small_pool());
        let text = src.request("INVITE", "u1", "Require: siprec\r\n", "text/plain", "hello");
        let response = final_response(&src.send(0, &text));
        assert_eq!(
            (response.status(), response.reason()),
            (415, "Unsupported Media Type")
        );
        assert_eq!(
            response.headers().get("Accept"),
            Some(multipart::ACCEPTED_CONTENT_TYPES)
        );

        // An unknown part the SRC marks as required is refused the same way; an optional one is ignored.
        let required_part = |handling: &str| {
            multipart(SDP_TWO_STREAMS, METADATA).replace(
                "--OSS-unique-boundary-42--",
                &format!(
                    "--OSS-unique-boundary-42\r\nContent-Type: application/gtd\r\n\
                     Content-Disposition: signal;handling={handling}\r\n\r\nIAM,\r\n--OSS-unique-boundary-42--"
                ),
            )
        };
        let body = required_part("required");
        let invite = src.request("INVITE", "u2", "Require: siprec\r\n", BOUNDARY, &body);
        let response = final_response(&src.send(1, &invite));
        assert_eq!(response.status(), 415);
        assert!(response.headers().get("Accept").is_some());
        let body = required_part("optional");
        let invite = src.request("INVITE", "u3", "Require: siprec\r\n", BOUNDARY, &body);
        assert_eq!(final_response(&src.send(2, &invite)).status(), 200);
        assert_eq!(src.srs.stats().rejected_media_type, 2);
    }

    #[test]
    fn limits_answer_413_and_leave_the_call_unchanged() {
        let mut src = Src::new(SrsConfig {
            max_metadata_bytes: METADATA.len(),
            ..small_pool()
        });
        let (_, first) = started(&src.invite(0, "l1"));
        src.ack(0, "l1");

        let oversized = format!("{METADATA}<!-- {} -->", "x".repeat(64));
        let update = src.request("UPDATE", "l1", "", "application/rs-metadata+xml", &oversized);
        let outputs = src.send(10, &update);
        let response = final_response(&outputs);
        assert_eq!(
            (response.status(), response.reason()),
            (413, "Recording Metadata Too Large")
        );
        assert!(updated(&outputs).is_none());

        let mut body = multipart(SDP_TWO_STREAMS, METADATA);
        for _ in 0..multipart::MAX_PARTS {
            body = body.replace(
                "--OSS-unique-boundary-42--",
                "--OSS-unique-boundary-42\r\nContent-Type: text/plain\r\n\r\nx\r\n--OSS-unique-boundary-42--",
            );
        }
        let reinvite = src.request("INVITE", "l1", "", BOUNDARY, &body);
        let outputs = src.send(20, &reinvite);
        let response = final_response(&outputs);
        assert_eq!(
            (response.status(), response.reason()),
            (413, "Too Many Body Parts")
        );
        assert!(updated(&outputs).is_none());
        assert_eq!(src.srs.stats().rejected_malformed, 2);

        // The call still records as before: a refresh changes nothing and keeps the ports.
        let refresh = src.request("INVITE", "l1", "", "application/sdp", SDP_TWO_STREAMS);
        let outputs = src.send(30, &refresh);
        assert_eq!(final_response(&outputs).status(), 200);
        assert!(updated(&outputs).is_none());
        assert_eq!(src.srs.ports.available(), 3);
        assert_eq!(first.streams.len(), 2);
    }

    #[test]
    fn label_one_before_label_zero_keeps_m_line_order_and_binds_by_label() {
        // rtpengine's loopback order (siprec.md R7): never infer the stream from m-line position.
        let sdp = "v=0\r\no=SRC 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n\
m=audio 20002 RTP/AVP 8\r\na=label:0\r\na=sendonly\r\n";
        let metadata = METADATA
            .replace("<label>1</label>", "<label>0</label>")
            .replace("<label>2</label>", "<label>1</label>");
        let mut src = Src::new(small_pool());
        let body = multipart(sdp, &metadata);
        let invite = src.request("INVITE", "lb", "Require: siprec\r\n", BOUNDARY, &body);
        let outputs = src.send(0, &invite);
        let (_, plan) = started(&outputs);
        let summary: Vec<(&str, Codec, Option<&str>)> = plan
            .streams
            .iter()
            .map(|stream| (stream.label.as_str(), stream.codecs[0].1, sender(stream)))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("1", Codec::Pcmu, Some("sip:agent1001@cc.example.com")),
                ("0", Codec::Pcma, Some("sip:+15551230001@carrier.example.net")),
            ]
        );
        let ok = final_response(&outputs);
        src.local_tag = ok.headers().to().and_then(|to| to.tag().map(str::to_owned));
        let answer = String::from_utf8(ok.body().to_vec()).expect("utf8");
        let one = answer.find("a=label:1").expect("label 1 echoed");
        let zero = answer.find("a=label:0").expect("label 0 echoed");
        assert!(one < zero, "answer keeps the offer's m-line order");
        src.ack(0, "lb");

        // Dropping label 1 (port 0) keeps label 0 on its port and releases the other.
        let reinvite = src.request(
            "INVITE",
            "lb",
            "",
            "application/sdp",
            &sdp.replace("m=audio 20000", "m=audio 0"),
        );
        let plan_after = updated(&src.send(10, &reinvite)).expect("UpdateCall");
        assert_eq!(plan_after.streams.len(), 1);
        assert_eq!(plan_after.streams[0].label, "0");
        assert_eq!(plan_after.streams[0].local_port, plan.streams[1].local_port);
        assert_eq!(src.srs.ports.available(), 4);
    }

    #[test]
    fn port_exhaustion_srtp_and_duplicate_labels_are_refused_without_leaks() {
        let mut src = Src::new(small_pool());
        started(&src.invite(0, "p1"));
        src.local_tag = None;
        started(&src.invite(1, "p2"));
        src.local_tag = None;
        assert_eq!(src.srs.ports.available(), 1);
        let response = final_response(&src.invite(2, "p3"));
        assert_eq!(
            (response.status(), response.reason()),
            (503, "No Media Ports Available")
        );
        assert!(response.headers().get("Retry-After").is_some());
        assert_eq!(src.srs.ports.available(), 1, "the partly allocated port is back");

        src.local_tag = None;
        let srtp = SDP_TWO_STREAMS.replace("RTP/AVP", "RTP/SAVP");
        let invite = src.request("INVITE", "p4", "Require: siprec\r\n", "application/sdp", &srtp);
        let response = final_response(&src.send(3, &invite));
        assert_eq!(
            (response.status(), response.reason()),
            (488, "SDES-SRTP Requires SIP over TLS")
        );

        let duplicate = SDP_TWO_STREAMS.replace("a=label:2", "a=label:1");
        let invite = src.request(
            "INVITE",
            "p5",
            "Require: siprec\r\n",
            "application/sdp",
            &duplicate,
        );
        let response = final_response(&src.send(4, &invite));
        assert_eq!(
            (response.status(), response.reason()),
            (400, "Duplicate Stream Label")
        );
        assert_eq!(src.srs.ports.available(), 1);
        assert_eq!(src.srs.active_calls(), 2);
    }

    #[test]
    fn sdes_over_tls_is_answered_savp_and_a_new_key_reaches_the_plan() {
        let config = SrsConfig {
            tls_contact_address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 5061))),
            ..small_pool()
        };
        let mut src = Src::new(config);
        src.remote.transport = Transport::Tls;
        let key_a = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n";
        let key_b = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:HRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgEA\r\n";
        let offer = |key: &str| {
            SDP_TWO_STREAMS.replace("RTP/AVP", "RTP/SAVP").replace(
                "a=sendonly",
                &format!("{}a=sendonly", key.trim_end_matches("\r\n").to_owned() + "\r\n"),
            )
        };
        let invite = src.request(
            "INVITE",
            "s1",
            "Require: siprec\r\n",
            "application/sdp",
            &offer(key_a),
        );
        let outputs = src.send(0, &invite);
        let ok = final_response(&outputs);
        assert_eq!(ok.status(), 200);
        let contact = ok.headers().get("Contact").unwrap_or_default().to_owned();
        assert_eq!(contact, "<sip:srs@127.0.0.1:5061;transport=tls>;+sip.srs");
        let answer = String::from_utf8_lossy(ok.body()).into_owned();
        assert_eq!(answer.matches("RTP/SAVP").count(), 2, "{answer}");
        assert_eq!(
            answer
                .matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
                .count(),
            2,
            "{answer}"
        );
        let (_, plan) = started(&outputs);
        let first_key = plan.streams[0].srtp.clone().expect("SRTP stream");
        src.local_tag = ok.headers().to().and_then(|to| to.tag().map(str::to_owned));
        assert_eq!(first_key.key.key_and_salt(), &(0u8..30).collect::<Vec<u8>>()[..]);
        src.ack(1, "s1");

        let new_version = offer(key_b).replace("o=SRC 1 1", "o=SRC 1 2");
        src.remote.transport = Transport::Udp;
        let cleartext = src.request("INVITE", "s1", "", "application/sdp", &new_version);
        let outputs = src.send(2, &cleartext);
        let refused = final_response(&outputs);
        assert_eq!(
            (refused.status(), refused.reason()),
            (403, "TLS Required For This Dialog")
        );
        assert!(
            updated(&outputs).is_none(),
            "a key sent in clear text never reaches the plan"
        );
        src.remote.transport = Transport::Tls;
        let reinvite = src.request("INVITE", "s1", "", "application/sdp", &new_version);
        let outputs = src.send(2, &reinvite);
        let response = final_response(&outputs);
        assert_eq!(response.status(), 200, "{}", response.reason());
        let plan = updated(&outputs).expect("a new key updates the plan");
        let second_key = plan.streams[0].srtp.clone().expect("SRTP stream");
        assert_ne!(second_key, first_key);
        assert_eq!(
            second_key.key.key_and_salt(),
            &(0u8..30).rev().collect::<Vec<u8>>()[..]
        );
        let answer_after_rekey = String::from_utf8_lossy(response.body()).into_owned();
        src.ack(3, "s1");
        let refresh = src.request("INVITE", "s1", "", "application/sdp", &new_version);
        let outputs = src.send(4, &refresh);
        assert!(updated(&outputs).is_none(), "the same key again is no change");
        let refreshed = final_response(&outputs);
        assert_eq!(
            String::from_utf8_lossy(refreshed.body()),
            answer_after_rekey,
            "same answer, same o= version"
        );
    }

    const SDP_VOICESTREAM: &str = "v=0\r\no=Five9 7 7 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    /// One VoiceStream leg as the Five9 SBC would run it: a plain INVITE with the pair id, no SIPREC signal.
    struct Leg {
        call_id: String,
        to_tag: Option<String>,
        cseq: u32,
    }

    impl Leg {
        fn new(call_id: &str) -> Self {
            Self {
                call_id: call_id.to_owned(),
                to_tag: None,
                cseq: 1,
            }
        }

        fn request(&mut self, src: &mut Src, method: &str, headers: &str, body: &str) -> String {
            src.branch += 1;
            if method != "ACK" {
                self.cseq += 1;
            }
            let to_tag = self
                .to_tag
                .as_ref()
                .map(|tag| format!(";tag={tag}"))
                .unwrap_or_default();
            let content_type = if body.is_empty() {
                String::new()
            } else {
                "Content-Type: application/sdp\r\n".to_owned()
            };
            format!(
                "{method} sip:recorder@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK-vs{}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:five9@198.51.100.9>;tag=f9-{}\r\nTo: <sip:recorder@192.0.2.10>{to_tag}\r\n\
                 Call-ID: {}\r\nCSeq: {} {method}\r\nContact: <sip:five9@198.51.100.9:5060>\r\n\
                 {headers}{content_type}Content-Length: {}\r\n\r\n{body}",
                src.branch,
                self.call_id,
                self.call_id,
                self.cseq,
                body.len()
            )
        }

        fn invite(&mut self, src: &mut Src, seconds: u64, pair: &str) -> Vec<SrsOutput> {
            let header = format!("X-Five9-StreamingPairId: {pair}\r\n");
            let text = self.request(src, "INVITE", &header, SDP_VOICESTREAM);
            let outputs = src.send(seconds, &text);
            if let Some(ok) = responses(&outputs)
                .into_iter()
                .find(|response| response.status() == 200)
            {
                self.to_tag = ok.headers().to().and_then(|to| to.tag().map(str::to_owned));
                let ack = self.request(src, "ACK", "", "");
                assert!(src.send(seconds, &ack).is_empty());
            }
            outputs
        }

        fn bye(&mut self, src: &mut Src, seconds: u64) -> Vec<SrsOutput> {
            let text = self.request(src, "BYE", "", "");
            src.send(seconds, &text)
        }
    }

    fn labels(plan: &RecordingPlan) -> Vec<&str> {
        plan.streams.iter().map(|stream| stream.label.as_str()).collect()
    }

    fn updated_call(outputs: &[SrsOutput]) -> Option<(CallId, RecordingPlan)> {
        outputs.iter().find_map(|output| match output {
            SrsOutput::UpdateCall { call, plan } => Some((*call, plan.clone())),
            _ => None,
        })
    }

    #[test]
    fn voicestream_legs_with_one_pair_id_join_one_call_and_end_with_the_last_leg() {
        let mut src = Src::new(small_pool());
        let mut agent = Leg::new("vs-leg-a");
        let mut customer = Leg::new("vs-leg-b");

        let outputs = agent.invite(&mut src, 0, "5f1c0b6e-pair");
        let ok = final_response(&outputs);
        assert_eq!(ok.status(), 200);
        let answer = String::from_utf8(ok.body().to_vec()).expect("utf8");
        assert!(answer.contains("a=recvonly") && !answer.contains("a=sendrecv"));
        let (call, plan) = started(&outputs);
        assert_eq!(labels(&plan), vec!["leg-1"]);
        assert_eq!(plan.source, CallSource::VoiceStreamSip);
        assert_eq!(plan.min_channels, 2);
        assert_eq!(plan.streams[0].codecs, vec![(0, Codec::Pcmu)]);
        assert_eq!(plan.streams[0].telephone_event_pt, Some(101));
        assert!(!plan.streams[0].paused, "sendrecv is not a pause");
        let first_port = plan.streams[0].local_port;

        let outputs = customer.invite(&mut src, 1, "5f1c0b6e-pair");
        let ok = final_response(&outputs);
        assert_eq!(ok.status(), 200);
        assert_ne!(customer.to_tag, agent.to_tag, "each leg is its own dialog");
        assert!(
            !outputs
                .iter()
                .any(|output| matches!(output, SrsOutput::StartCall { .. }))
        );
        let (joined, plan) = updated_call(&outputs).expect("UpdateCall adding the second leg");
        assert_eq!(joined, call);
        assert_eq!(labels(&plan), vec!["leg-1", "leg-2"]);
        assert_eq!(plan.source, CallSource::VoiceStreamSip);
        assert_eq!(plan.streams[0].local_port, first_port);
        let second_port = plan.streams[1].local_port;
        assert_ne!(second_port, first_port);
        assert_eq!(src.srs.active_calls(), 1);
        assert_eq!(src.srs.stats().calls_started, 1);

        // A session refresh on a leg changes nothing.
        let refresh = customer.request(&mut src, "INVITE", "", SDP_VOICESTREAM);
        let outputs = src.send(30, &refresh);
        assert_eq!(final_response(&outputs).status(), 200);
        assert!(updated_call(&outputs).is_none());
        let ack = customer.request(&mut src, "ACK", "", "");
        src.send(30, &ack);

        let outputs = agent.bye(&mut src, 60);
        assert_eq!(final_response(&outputs).status(), 200);
        assert_eq!(ended(&outputs), None);
        let (same, plan) = updated_call(&outputs).expect("UpdateCall removing the first leg");
        assert_eq!(same, call);
        assert_eq!(labels(&plan), vec!["leg-2"]);
        assert_eq!(plan.streams[0].local_port, second_port);
        assert_eq!(src.srs.ports.available(), 4);
        assert_eq!(src.srs.active_calls(), 1);

        let outputs = customer.bye(&mut src, 61);
        assert_eq!(final_response(&outputs).status(), 200);
        assert!(outputs.iter().any(|output| matches!(
            output,
            SrsOutput::EndCall { call: ended_call, reason: EndReason::RemoteBye } if *ended_call == call
        )));
        assert_eq!(src.srs.active_calls(), 0);
        assert_eq!(src.srs.ports.available(), 5);
        assert!(src.srs.pairs.is_empty() && src.srs.pair_recordings.is_empty());
        assert_eq!(src.srs.stats().calls_ended, 1);

        // The same pair id after the call ended starts a new call.
        let mut again = Leg::new("vs-leg-c");
        let (next, plan) = started(&again.invite(&mut src, 70, "5f1c0b6e-pair"));
        assert_ne!(next, call);
        assert_eq!(labels(&plan), vec!["leg-1"]);
    }

    #[test]
    fn voicestream_pair_ids_are_checked_and_siprec_and_plain_invites_are_unaffected() {
        let mut src = Src::new(small_pool());
        let long = "p".repeat(MAX_PAIR_ID_BYTES + 1);
        for (pair, header) in [
            ("empty", "X-Five9-StreamingPairId: \r\n".to_owned()),
            ("long", format!("X-Five9-StreamingPairId: {long}\r\n")),
            (
                "repeated",
                "X-Five9-StreamingPairId: a\r\nX-Five9-StreamingPairId: b\r\n".to_owned(),
            ),
        ] {
            let mut leg = Leg::new(&format!("vs-bad-{pair}"));
            let text = leg.request(&mut src, "INVITE", &header, SDP_VOICESTREAM);
            let response = final_response(&src.send(0, &text));
            assert_eq!(response.status(), 400, "{pair}");
            assert!(response.reason().contains("X-Five9-StreamingPairId"), "{pair}");
        }
        let exactly = "q".repeat(MAX_PAIR_ID_BYTES);
        let mut leg = Leg::new("vs-max");
        started(&leg.invite(&mut src, 0, &exactly));
        leg.bye(&mut src, 1);

        // No pair id and no SIPREC signal: refused as before.
        let mut plain = Leg::new("plain");
        let text = plain.request(&mut src, "INVITE", "", SDP_VOICESTREAM);
        let response = final_response(&src.send(2, &text));
        assert_eq!(
            (response.status(), response.reason()),
            (403, "Not a recording session")
        );

        // A SIPREC INVITE that also carries a pair id stays SIPREC.
        let body = multipart(SDP_TWO_STREAMS, METADATA);
        let text = src.request(
            "INVITE",
            "siprec-with-pair",
            "Require: siprec\r\nX-Five9-StreamingPairId: zzz\r\n",
            "multipart/mixed;boundary=OSS-unique-boundary-42",
            &body,
        );
        let (_, plan) = started(&src.send(3, &text));
        assert_eq!(plan.source, CallSource::Siprec);
        assert_eq!(plan.min_channels, 0);
        assert_eq!(labels(&plan), vec!["1", "2"]);
        assert!(src.srs.pairs.is_empty());
    }

    #[test]
    fn a_full_appliance_still_lets_legs_join_and_media_events_end_every_leg() {
        let mut src = Src::new(SrsConfig {
            max_calls: 1,
            ..small_pool()
        });
        let mut first = Leg::new("vs-1");
        let mut second = Leg::new("vs-2");
        let (call, _) = started(&first.invite(&mut src, 0, "pair-x"));
        let outputs = second.invite(&mut src, 0, "pair-x");
        assert_eq!(
            final_response(&outputs).status(),
            200,
            "joining needs no capacity"
        );
        let mut other = Leg::new("vs-3");
        assert_eq!(final_response(&other.invite(&mut src, 0, "pair-y")).status(), 503);

        let now = src.at(5);
        src.srs
            .handle_media_event(now, call, MediaEvent::RtpInactivityTimeout);
        let outputs = src.outputs();
        let ends: Vec<_> = outputs
            .iter()
            .filter(|output| matches!(output, SrsOutput::EndCall { .. }))
            .collect();
        assert_eq!(ends.len(), 1);
        assert_eq!(ended(&outputs), Some(EndReason::RtpInactivityTimeout));
        assert!(updated_call(&outputs).is_none());
        let byes: Vec<Request> = sent_requests(&outputs)
            .into_iter()
            .filter(|request| *request.method() == Method::Bye)
            .collect();
        assert_eq!(byes.len(), 2, "one BYE per leg");
        assert_eq!(src.srs.active_calls(), 0);
        assert_eq!(src.srs.ports.available(), 5);
        assert!(src.srs.pairs.is_empty() && src.srs.pair_recordings.is_empty());
    }

    #[test]
    fn a_pair_started_over_tls_is_joined_over_tls_only() {
        let mut src = Src::new(small_pool());
        src.remote.transport = Transport::Tls;
        let mut first = Leg::new("vs-tls-1");
        started(&first.invite(&mut src, 0, "pair-tls"));
        src.remote.transport = Transport::Udp;
        let mut second = Leg::new("vs-udp-2");
        let response = final_response(&second.invite(&mut src, 0, "pair-tls"));
        assert_eq!(
            (response.status(), response.reason()),
            (403, "TLS Required For This Pair")
        );
        assert_eq!(src.srs.ports.available(), 4);
    }
}
