//! The SIP endpoint: RFC 3261 server transactions (INVITE and non-INVITE), CANCEL, the UAS core's 2xx
//! retransmission until ACK (§13.3.1.4), and non-INVITE client transactions for requests we send (BYE).
//!
//! Input: whole messages ([`Endpoint::handle_message`]), responses from the transaction user
//! ([`Endpoint::respond`]), requests to send ([`Endpoint::send_request`]) and time
//! ([`Endpoint::handle_timeout`]). Output: [`EndpointEvent`]s from [`Endpoint::poll_event`]. Retransmitted
//! requests are absorbed here and never surface twice. Responses go back to the address the request came
//! from (symmetric response routing, as `rport` asks), on the same connection for streams.
//!
//! Timers: every transaction and pending 2xx keeps its earliest deadline in an ordered index
//! (`Deadlines`), one entry per timer owner, updated wherever a retransmission or end time is set,
//! cleared or the owner is removed. So [`Endpoint::poll_timeout`] costs O(log n) and
//! [`Endpoint::handle_timeout`] visits only the owners that are due, which matters at SIPREC scale
//! (tens of thousands of live transactions, `poll_timeout` asked after every input).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::message::{BRANCH_MAGIC_COOKIE, Message, Method, ParseError, Request, Response, stateless_answer};
use crate::timers::TimerConfig;
use crate::transport::Remote;

/// Free event-queue slots an incoming message needs; with fewer, the message is dropped and counted
/// (`inputs_dropped_queue_full`) so the peer retransmits it later. One message yields at most three events
/// (100 Trying, the request, and a CANCEL's 200 + 487 + Cancelled is three).
const INPUT_HEADROOM: usize = 3;

/// Identifies a server transaction (a request we must answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxnId(u64);

/// Identifies a client transaction (a request we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxnId(u64);

/// Endpoint limits and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// T1/T2/T4.
    pub timers: TimerConfig,
    /// Our `host[:port]` for the Via of requests we send.
    pub via_sent_by: String,
    /// Most live server transactions; a new request beyond it is answered 503 with Retry-After, statelessly.
    /// 2xx responses awaiting ACK are bounded by this too (one per INVITE transaction).
    ///
    /// Default 40,000. Sizing: every SIPREC call leaves an INVITE transaction (2xx sent, absorbing
    /// retransmissions until Timer L) and a BYE transaction (Timer J), each living up to 64×T1 = 32 s over
    /// UDP, so 500 setups/s hold up to 500 × 2 × 32 s = 32,000 at steady state; the rest is headroom for
    /// bursts and OPTIONS pings. Memory, measured roughly: a `ServerTxn` is 256 bytes, plus its key stored
    /// twice (~200 bytes with the strings), its deadline-index entry, the retained request and the retained
    /// last response: ~1.3 KB for a BYE (~0.7 KB parsed request, ~0.25 KB 200 OK) and ~3 KB for a SIPREC
    /// INVITE with a small metadata body (~1.8 KB parsed request, ~0.6 KB 2xx, plus a second copy of the 2xx
    /// and its ACK key until the ACK), more with larger metadata. A full table is on the order of 100 MB.
    pub max_server_transactions: usize,
    /// Most live client transactions; `send_request` beyond it fails with `TooManyClientTransactions`.
    pub max_client_transactions: usize,
    /// Capacity of the event queue. When nearly full, incoming messages are dropped (the peer retransmits),
    /// `respond`/`send_request` fail with `EventQueueFull`, and due timers wait for the next
    /// `handle_timeout` (poll_timeout then returns an instant in the past). Nothing is lost or grows.
    pub max_events: usize,
    /// Largest message accepted, in bytes; larger input is dropped and counted.
    pub max_message_bytes: usize,
    /// Seconds put in Retry-After when refusing for overload.
    pub overload_retry_after_secs: u32,
    /// Mixed into generated branch parameters so they differ across restarts.
    pub branch_seed: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            via_sent_by: "127.0.0.1:5060".to_owned(),
            max_server_transactions: 40_000,
            max_client_transactions: 1024,
            max_events: 1024,
            max_message_bytes: crate::framing::MAX_DATAGRAM_BYTES,
            overload_retry_after_secs: 5,
            branch_seed: 0,
        }
    }
}

/// What the endpoint asks of its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// Send these bytes.
    Transmit { to: Remote, bytes: Vec<u8> },
    /// A new request (never a retransmission, never ACK or CANCEL): answer it with [`Endpoint::respond`].
    Request {
        txn: ServerTxnId,
        request: Request,
        from: Remote,
    },
    /// The ACK for a 2xx we sent: the dialog is confirmed.
    Ack { request: Request, from: Remote },
    /// The INVITE was cancelled; the endpoint already answered 487 to it and 200 to the CANCEL.
    Cancelled { invite_txn: ServerTxnId },
    /// No ACK came for our final response to this INVITE within 64×T1 (Timer H, or the 2xx give-up).
    AckTimeout { txn: ServerTxnId },
    /// The final response to a request we sent.
    Response { txn: ClientTxnId, response: Response },
    /// No final response to a request we sent within 64×T1 (Timer F).
    RequestTimeout { txn: ClientTxnId },
}

/// Errors from calls by the transaction user. Our side's fault; `status` is what the peer would see if the
/// transaction user turns it into an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("unknown or finished server transaction")]
    UnknownTransaction,
    #[error("a final response was already sent on this transaction")]
    FinalResponseAlreadySent,
    #[error("the event queue is full; drain poll_event first")]
    EventQueueFull,
    #[error("too many client transactions")]
    TooManyClientTransactions,
    #[error("this endpoint sends no {0} requests")]
    UnsupportedClientMethod(Method),
}

impl EndpointError {
    /// The SIP status corresponding to the failure (500 for misuse, 503 for limits).
    pub fn status(&self) -> u16 {
        match self {
            EndpointError::EventQueueFull | EndpointError::TooManyClientTransactions => 503,
            EndpointError::UnknownTransaction
            | EndpointError::FinalResponseAlreadySent
            | EndpointError::UnsupportedClientMethod(_) => 500,
        }
    }
}

/// Counters for telemetry. All saturate instead of wrapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub requests_received: u64,
    pub responses_received: u64,
    /// Unparsable messages answered 400/505.
    pub malformed_answered: u64,
    /// Unparsable messages that could not be answered.
    pub malformed_dropped: u64,
    /// Messages above `max_message_bytes`.
    pub oversized_dropped: u64,
    /// Retransmitted requests absorbed by a transaction.
    pub retransmissions_absorbed: u64,
    /// Our own retransmissions (responses and requests).
    pub retransmissions_sent: u64,
    /// New requests refused with 503 because of `max_server_transactions`.
    pub overload_rejections: u64,
    /// Messages dropped because the event queue had no headroom.
    pub inputs_dropped_queue_full: u64,
    /// ACKs matching no transaction and no 2xx.
    pub stray_acks: u64,
    /// Responses matching no client transaction.
    pub stray_responses: u64,
    /// CANCELs matching no INVITE (answered 481).
    pub unmatched_cancels: u64,
    /// INVITE transactions that ended without ACK.
    pub ack_timeouts: u64,
    /// Client transactions that ended without a final response.
    pub request_timeouts: u64,
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Server transaction key (RFC 3261 §17.2.3): branch + sent-by + method, ACK and CANCEL looked up with
/// method INVITE. Requests without an RFC 3261 branch get a key from Call-ID, From-tag and CSeq number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxnKey {
    branch: String,
    sent_by: String,
    method: Method,
}

impl TxnKey {
    fn for_request(request: &Request, method: Method) -> Option<TxnKey> {
        let headers = request.headers();
        let via = headers.top_via()?;
        let branch = match via.branch {
            Some(branch) if branch.starts_with(BRANCH_MAGIC_COOKIE) => branch,
            _ => {
                let from_tag = headers
                    .from()
                    .and_then(|from| from.tag().map(str::to_owned))
                    .unwrap_or_default();
                format!(
                    "legacy|{}|{}|{}",
                    headers.call_id()?,
                    from_tag,
                    headers.cseq()?.seq
                )
            }
        };
        Some(TxnKey {
            branch,
            sent_by: via.sent_by,
            method,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Non-INVITE, no response yet.
    Trying,
    /// A provisional response was sent (INVITE starts here with 100 Trying).
    Proceeding,
    /// A final non-2xx response was sent (INVITE) or any final response (non-INVITE).
    Completed,
    /// INVITE: ACK for the non-2xx arrived; absorbing ACK retransmissions until Timer I.
    Confirmed,
    /// INVITE: 2xx sent; absorbing INVITE retransmissions until Timer L (RFC 6026).
    Accepted,
}

/// The timer owners of one kind, ordered by their earliest deadline. Each owner has at most one entry,
/// `(deadline, key)`, mirrored in the owner's `scheduled` field so it can be found and moved; the index
/// holds no more entries than there are live owners (bounded by the transaction limits).
#[derive(Debug)]
struct Deadlines<K> {
    entries: BTreeSet<(Instant, K)>,
}

/// Something with timers: a transaction or a pending 2xx.
trait TimerOwner {
    type Key: Ord + Copy;
    fn timer_key(&self) -> Self::Key;
    /// The earliest instant at which its timers have work.
    fn next_deadline(&self) -> Option<Instant>;
    /// The deadline it is filed under in its [`Deadlines`].
    fn scheduled(&mut self) -> &mut Option<Instant>;
}

impl<K: Ord + Copy> Deadlines<K> {
    fn new() -> Self {
        Self {
            entries: BTreeSet::new(),
        }
    }

    /// Files `owner` under its current earliest deadline; call after changing any of its timers.
    fn sync<T: TimerOwner<Key = K>>(&mut self, owner: &mut T) {
        let next = owner.next_deadline();
        let key = owner.timer_key();
        let scheduled = owner.scheduled();
        if *scheduled == next {
            return;
        }
        if let Some(at) = scheduled.take() {
            self.entries.remove(&(at, key));
        }
        if let Some(at) = next {
            self.entries.insert((at, key));
        }
        *scheduled = next;
    }

    /// Drops the entry of an owner being removed.
    fn forget<T: TimerOwner<Key = K>>(&mut self, owner: &mut T) {
        let key = owner.timer_key();
        if let Some(at) = owner.scheduled().take() {
            self.entries.remove(&(at, key));
        }
    }

    fn earliest(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _)| *at)
    }

    /// The owners due at `now`, earliest first.
    fn due(&self, now: Instant) -> Vec<K> {
        self.entries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, key)| *key)
            .collect()
    }
}

fn earliest_of(retransmit: Option<Retransmit>, ends_at: Option<Instant>) -> Option<Instant> {
    match (retransmit.map(|retransmit| retransmit.at), ends_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug)]
struct ServerTxn {
    id: ServerTxnId,
    is_invite: bool,
    request: Request,
    remote: Remote,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    retransmit: Option<Retransmit>,
    /// Timer H (Completed INVITE: fires AckTimeout), I, J or L (silent end).
    ends_at: Option<Instant>,
    /// Its entry in `Endpoint::server_deadlines`.
    scheduled: Option<Instant>,
}

impl TimerOwner for ServerTxn {
    type Key = ServerTxnId;
    fn timer_key(&self) -> ServerTxnId {
        self.id
    }
    fn next_deadline(&self) -> Option<Instant> {
        earliest_of(self.retransmit, self.ends_at)
    }
    fn scheduled(&mut self) -> &mut Option<Instant> {
        &mut self.scheduled
    }
}

#[derive(Debug, Clone, Copy)]
struct Retransmit {
    at: Instant,
    interval: Duration,
}

/// A 2xx to an INVITE that the UAS core retransmits until its ACK arrives.
#[derive(Debug)]
struct PendingAck {
    txn: ServerTxnId,
    remote: Remote,
    bytes: Vec<u8>,
    retransmit_at: Instant,
    interval: Duration,
    gives_up_at: Instant,
    /// Its entry in `Endpoint::ack_deadlines`.
    scheduled: Option<Instant>,
}

impl TimerOwner for PendingAck {
    type Key = ServerTxnId;
    fn timer_key(&self) -> ServerTxnId {
        self.txn
    }
    fn next_deadline(&self) -> Option<Instant> {
        Some(self.retransmit_at.min(self.gives_up_at))
    }
    fn scheduled(&mut self) -> &mut Option<Instant> {
        &mut self.scheduled
    }
}

/// Matches an ACK to its 2xx: Call-ID, From-tag (remote), To-tag (local), CSeq number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AckKey {
    call_id: String,
    remote_tag: String,
    local_tag: String,
    cseq: u32,
}

impl AckKey {
    fn for_message(headers: &crate::message::Headers) -> Option<AckKey> {
        Some(AckKey {
            call_id: headers.call_id()?.to_owned(),
            remote_tag: headers.from()?.tag()?.to_owned(),
            local_tag: headers.to()?.tag()?.to_owned(),
            cseq: headers.cseq()?.seq,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Trying,
    Proceeding,
    /// Final response received; absorbing its retransmissions until Timer K.
    Completed,
}

#[derive(Debug)]
struct ClientTxn {
    id: ClientTxnId,
    method: Method,
    remote: Remote,
    bytes: Vec<u8>,
    state: ClientState,
    retransmit: Option<Retransmit>,
    /// Timer F (Trying/Proceeding: RequestTimeout) or K (Completed: silent end).
    ends_at: Instant,
    /// Its entry in `Endpoint::client_deadlines`.
    scheduled: Option<Instant>,
}

impl TimerOwner for ClientTxn {
    type Key = ClientTxnId;
    fn timer_key(&self) -> ClientTxnId {
        self.id
    }
    fn next_deadline(&self) -> Option<Instant> {
        earliest_of(self.retransmit, Some(self.ends_at))
    }
    fn scheduled(&mut self) -> &mut Option<Instant> {
        &mut self.scheduled
    }
}

/// The SIP endpoint. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    server_txns: HashMap<TxnKey, ServerTxn>,
    server_keys: HashMap<ServerTxnId, TxnKey>,
    server_deadlines: Deadlines<ServerTxnId>,
    pending_acks: HashMap<AckKey, PendingAck>,
    /// The key of each pending 2xx by the INVITE transaction that sent it.
    pending_ack_keys: HashMap<ServerTxnId, AckKey>,
    ack_deadlines: Deadlines<ServerTxnId>,
    client_txns: HashMap<String, ClientTxn>,
    client_branches: HashMap<ClientTxnId, String>,
    client_deadlines: Deadlines<ClientTxnId>,
    /// Bounded by `config.max_events`; see [`EndpointConfig::max_events`].
    events: VecDeque<EndpointEvent>,
    next_id: u64,
    stats: EndpointStats,
}

impl Endpoint {
    /// An endpoint with no transactions.
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            server_txns: HashMap::new(),
            server_keys: HashMap::new(),
            server_deadlines: Deadlines::new(),
            pending_acks: HashMap::new(),
            pending_ack_keys: HashMap::new(),
            ack_deadlines: Deadlines::new(),
            client_txns: HashMap::new(),
            client_branches: HashMap::new(),
            client_deadlines: Deadlines::new(),
            events: VecDeque::new(),
            next_id: 0,
            stats: EndpointStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Live server transactions (for admission decisions and tests).
    pub fn server_transaction_count(&self) -> usize {
        self.server_txns.len()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    fn free_event_slots(&self) -> usize {
        self.config.max_events.saturating_sub(self.events.len())
    }

    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn transmit(&mut self, to: Remote, bytes: Vec<u8>) {
        self.events.push_back(EndpointEvent::Transmit { to, bytes });
    }

    /// Handles one whole message from `from` (a datagram, or a frame from a [`crate::StreamFramer`]).
    pub fn handle_message(&mut self, now: Instant, from: Remote, bytes: &[u8]) {
        if bytes.len() > self.config.max_message_bytes {
            bump(&mut self.stats.oversized_dropped);
            return;
        }
        if self.free_event_slots() < INPUT_HEADROOM {
            bump(&mut self.stats.inputs_dropped_queue_full);
            return;
        }
        match Message::parse(bytes) {
            Ok(Message::Request(request)) => {
                bump(&mut self.stats.requests_received);
                self.handle_request(now, from, request);
            }
            Ok(Message::Response(response)) => {
                bump(&mut self.stats.responses_received);
                self.handle_response(now, response);
            }
            Err(error) => self.handle_malformed(from, error),
        }
    }

    fn handle_malformed(&mut self, from: Remote, error: ParseError) {
        let reason = error.kind.to_string();
        let answer = error
            .salvaged_request
            .and_then(|request| stateless_answer(&request, error.kind.status(), &reason));
        match answer {
            Some(bytes) => {
                tracing::debug!(problem = %error.kind, "answering a malformed SIP request");
                bump(&mut self.stats.malformed_answered);
                self.transmit(from, bytes);
            }
            None => {
                tracing::debug!(problem = %error.kind, "dropping an unparsable SIP message");
                bump(&mut self.stats.malformed_dropped);
            }
        }
    }

    fn handle_request(&mut self, now: Instant, from: Remote, request: Request) {
        match request.method() {
            Method::Ack => self.handle_ack(now, from, request),
            Method::Cancel => self.handle_cancel(now, from, request),
            method => {
                let method = method.clone();
                let Some(key) = TxnKey::for_request(&request, method.clone()) else {
                    bump(&mut self.stats.malformed_dropped);
                    return;
                };
                if !self.admits_new_server_txn(&key, from, &request) {
                    return;
                }
                let is_invite = method == Method::Invite;
                let txn = self.create_server_txn(key, from, request.clone(), is_invite);
                if is_invite {
                    self.send_provisional_trying(txn);
                }
                self.events
                    .push_back(EndpointEvent::Request { txn, request, from });
            }
        }
    }

    /// Whether `request` (whose transaction key is `key`) starts a new server transaction. A retransmission
    /// of a known one is absorbed (its last response is sent again) and a request beyond
    /// `max_server_transactions` is refused with 503; both return false.
    fn admits_new_server_txn(&mut self, key: &TxnKey, from: Remote, request: &Request) -> bool {
        if let Some(txn) = self.server_txns.get(key) {
            bump(&mut self.stats.retransmissions_absorbed);
            if let Some(bytes) = txn.last_response.clone() {
                let remote = txn.remote;
                bump(&mut self.stats.retransmissions_sent);
                self.transmit(remote, bytes);
            }
            return false;
        }
        if self.server_txns.len() >= self.config.max_server_transactions {
            self.refuse_overloaded(from, request);
            return false;
        }
        true
    }

    fn refuse_overloaded(&mut self, from: Remote, request: &Request) {
        bump(&mut self.stats.overload_rejections);
        let response = Response::for_request(request, 503, "Service Unavailable")
            .with_header("Retry-After", &self.config.overload_retry_after_secs.to_string());
        self.transmit(from, response.to_bytes());
    }

    fn create_server_txn(
        &mut self,
        key: TxnKey,
        remote: Remote,
        request: Request,
        is_invite: bool,
    ) -> ServerTxnId {
        let id = ServerTxnId(self.next_id());
        let state = if is_invite {
            ServerState::Proceeding
        } else {
            ServerState::Trying
        };
        self.server_keys.insert(id, key.clone());
        self.server_txns.insert(
            key,
            ServerTxn {
                id,
                is_invite,
                request,
                remote,
                state,
                last_response: None,
                retransmit: None,
                ends_at: None,
                scheduled: None,
            },
        );
        id
    }

    fn send_provisional_trying(&mut self, txn: ServerTxnId) {
        let Some(key) = self.server_keys.get(&txn) else {
            return;
        };
        let Some(server_txn) = self.server_txns.get_mut(key) else {
            return;
        };
        let bytes = Response::for_request(&server_txn.request, 100, "Trying").to_bytes();
        server_txn.last_response = Some(bytes.clone());
        let remote = server_txn.remote;
        self.transmit(remote, bytes);
    }

    fn handle_ack(&mut self, now: Instant, from: Remote, request: Request) {
        let invite_txn = TxnKey::for_request(&request, Method::Invite)
            .and_then(|key| self.server_txns.get_mut(&key))
            .filter(|txn| matches!(txn.state, ServerState::Completed | ServerState::Confirmed));
        if let Some(txn) = invite_txn {
            if txn.state == ServerState::Completed {
                txn.state = ServerState::Confirmed;
                txn.retransmit = None;
                let linger = if txn.remote.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    self.config.timers.t4
                };
                txn.ends_at = Some(now + linger);
                self.server_deadlines.sync(txn);
            }
            return;
        }
        let pending = AckKey::for_message(request.headers()).and_then(|key| self.remove_pending_ack(&key));
        if pending.is_some() {
            self.events.push_back(EndpointEvent::Ack { request, from });
        } else {
            bump(&mut self.stats.stray_acks);
        }
    }

    fn handle_cancel(&mut self, now: Instant, from: Remote, cancel: Request) {
        let (Some(cancel_key), Some(invite_key)) = (
            TxnKey::for_request(&cancel, Method::Cancel),
            TxnKey::for_request(&cancel, Method::Invite),
        ) else {
            bump(&mut self.stats.malformed_dropped);
            return;
        };
        if !self.admits_new_server_txn(&cancel_key, from, &cancel) {
            return;
        }
        let cancel_txn = self.create_server_txn(cancel_key, from, cancel.clone(), false);
        let invite = self
            .server_txns
            .get(&invite_key)
            .map(|txn| (txn.id, txn.state, txn.request.clone()));
        match invite {
            None => {
                bump(&mut self.stats.unmatched_cancels);
                let response = Response::for_request(&cancel, 481, "Call/Transaction Does Not Exist");
                self.send_response(now, cancel_txn, response);
            }
            Some((invite_txn, state, invite_request)) => {
                self.send_response(now, cancel_txn, Response::for_request(&cancel, 200, "OK"));
                if state == ServerState::Proceeding {
                    let terminated = Response::for_request(&invite_request, 487, "Request Terminated");
                    self.send_response(now, invite_txn, terminated);
                    self.events.push_back(EndpointEvent::Cancelled { invite_txn });
                }
            }
        }
    }

    fn handle_response(&mut self, now: Instant, response: Response) {
        let headers = response.headers();
        let (Some(branch), Some(cseq)) = (headers.top_via().and_then(|via| via.branch), headers.cseq())
        else {
            bump(&mut self.stats.stray_responses);
            return;
        };
        let Some(txn) = self
            .client_txns
            .get_mut(&branch)
            .filter(|txn| txn.method == cseq.method)
        else {
            bump(&mut self.stats.stray_responses);
            return;
        };
        if txn.state == ClientState::Completed {
            return;
        }
        if response.is_provisional() {
            txn.state = ClientState::Proceeding;
            return;
        }
        txn.state = ClientState::Completed;
        txn.retransmit = None;
        let id = txn.id;
        if txn.remote.transport.is_reliable() {
            self.remove_client_txn(id);
        } else {
            txn.ends_at = now + self.config.timers.t4;
            self.client_deadlines.sync(txn);
        }
        self.events
            .push_back(EndpointEvent::Response { txn: id, response });
    }

    fn remove_client_txn(&mut self, id: ClientTxnId) {
        if let Some(mut txn) = self
            .client_branches
            .remove(&id)
            .and_then(|branch| self.client_txns.remove(&branch))
        {
            self.client_deadlines.forget(&mut txn);
        }
    }

    fn remove_server_txn(&mut self, id: ServerTxnId) {
        if let Some(mut txn) = self
            .server_keys
            .remove(&id)
            .and_then(|key| self.server_txns.remove(&key))
        {
            self.server_deadlines.forget(&mut txn);
        }
    }

    /// Files a 2xx awaiting its ACK. One with the same [`AckKey`] (a peer reusing Call-ID, tags and CSeq
    /// on another INVITE) is replaced, as the ACK could only confirm one of them.
    fn insert_pending_ack(&mut self, key: AckKey, pending: PendingAck) {
        let txn = pending.txn;
        if let Some(mut replaced) = self.pending_acks.insert(key.clone(), pending) {
            self.ack_deadlines.forget(&mut replaced);
            self.pending_ack_keys.remove(&replaced.txn);
        }
        if let Some(pending) = self.pending_acks.get_mut(&key) {
            self.ack_deadlines.sync(pending);
        }
        self.pending_ack_keys.insert(txn, key);
    }

    fn remove_pending_ack(&mut self, key: &AckKey) -> Option<PendingAck> {
        let mut pending = self.pending_acks.remove(key)?;
        self.pending_ack_keys.remove(&pending.txn);
        self.ack_deadlines.forget(&mut pending);
        Some(pending)
    }

    /// Sends `response` on server transaction `txn`. Provisional responses may repeat; after a final
    /// response the transaction only absorbs retransmissions. A 2xx to an INVITE is retransmitted until the
    /// ACK arrives or 64×T1 passes ([`EndpointEvent::AckTimeout`]).
    pub fn respond(
        &mut self,
        now: Instant,
        txn: ServerTxnId,
        response: Response,
    ) -> Result<(), EndpointError> {
        let key = self
            .server_keys
            .get(&txn)
            .ok_or(EndpointError::UnknownTransaction)?;
        let state = self.server_txns.get(key).map(|server_txn| server_txn.state);
        if !matches!(state, Some(ServerState::Trying | ServerState::Proceeding)) {
            return Err(EndpointError::FinalResponseAlreadySent);
        }
        if self.free_event_slots() == 0 {
            return Err(EndpointError::EventQueueFull);
        }
        self.send_response(now, txn, response);
        Ok(())
    }

    /// Sends a response and moves the transaction on; the caller checked the state allows it.
    fn send_response(&mut self, now: Instant, txn: ServerTxnId, response: Response) {
        let timers = self.config.timers;
        let Some(key) = self.server_keys.get(&txn) else {
            return;
        };
        let Some(server_txn) = self.server_txns.get_mut(key) else {
            return;
        };
        let bytes = response.to_bytes();
        let remote = server_txn.remote;
        let unreliable = !remote.transport.is_reliable();
        server_txn.last_response = Some(bytes.clone());
        let mut remove_now = false;
        let mut pending_ack = None;
        if response.is_provisional() {
            server_txn.state = ServerState::Proceeding;
        } else if server_txn.is_invite && response.is_success() {
            server_txn.state = ServerState::Accepted;
            server_txn.ends_at = Some(now + timers.transaction_timeout());
            pending_ack = AckKey::for_message(response.headers()).map(|ack_key| {
                let pending = PendingAck {
                    txn,
                    remote,
                    bytes: bytes.clone(),
                    retransmit_at: now + timers.t1,
                    interval: timers.t1,
                    gives_up_at: now + timers.transaction_timeout(),
                    scheduled: None,
                };
                (ack_key, pending)
            });
        } else if server_txn.is_invite {
            server_txn.state = ServerState::Completed;
            server_txn.retransmit = unreliable.then_some(Retransmit {
                at: now + timers.t1,
                interval: timers.t1,
            });
            server_txn.ends_at = Some(now + timers.transaction_timeout());
        } else {
            server_txn.state = ServerState::Completed;
            if unreliable {
                server_txn.ends_at = Some(now + timers.transaction_timeout());
            } else {
                remove_now = true;
            }
        }
        self.server_deadlines.sync(server_txn);
        if let Some((ack_key, pending)) = pending_ack {
            self.insert_pending_ack(ack_key, pending);
        }
        self.transmit(remote, bytes);
        if remove_now {
            self.remove_server_txn(txn);
        }
    }

    /// Sends a request outside any server transaction (BYE, in-dialog requests built by a
    /// [`crate::Dialog`]). The endpoint adds the top Via with a fresh branch. Retransmitted with Timer E over
    /// UDP; [`EndpointEvent::Response`] or [`EndpointEvent::RequestTimeout`] (Timer F) follows.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Request,
        to: Remote,
    ) -> Result<ClientTxnId, EndpointError> {
        if matches!(request.method(), Method::Invite | Method::Ack | Method::Cancel) {
            return Err(EndpointError::UnsupportedClientMethod(request.method().clone()));
        }
        if self.client_txns.len() >= self.config.max_client_transactions {
            return Err(EndpointError::TooManyClientTransactions);
        }
        if self.free_event_slots() == 0 {
            return Err(EndpointError::EventQueueFull);
        }
        let id = ClientTxnId(self.next_id());
        let branch = format!(
            "{BRANCH_MAGIC_COOKIE}-{:016x}-{:x}",
            self.config.branch_seed, id.0
        );
        let rport = if to.transport.is_reliable() { "" } else { ";rport" };
        let via = format!(
            "SIP/2.0/{} {};branch={branch}{rport}",
            to.transport.via_token(),
            self.config.via_sent_by
        );
        request.headers_mut().push_front("Via", &via);
        let bytes = request.to_bytes();
        let timers = self.config.timers;
        let retransmit = (!to.transport.is_reliable()).then_some(Retransmit {
            at: now + timers.t1,
            interval: timers.t1,
        });
        let mut txn = ClientTxn {
            id,
            method: request.method().clone(),
            remote: to,
            bytes: bytes.clone(),
            state: ClientState::Trying,
            retransmit,
            ends_at: now + timers.transaction_timeout(),
            scheduled: None,
        };
        self.client_deadlines.sync(&mut txn);
        self.client_txns.insert(branch.clone(), txn);
        self.client_branches.insert(id, branch);
        self.transmit(to, bytes);
        Ok(id)
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work; may be in the past
    /// when work was deferred for a full event queue.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.server_deadlines.earliest(),
            self.ack_deadlines.earliest(),
            self.client_deadlines.earliest(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer due at `now`. Each firing emits at most one event; when the queue is full the rest
    /// waits for the next call.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_server_timers(now);
        self.fire_pending_acks(now);
        self.fire_client_timers(now);
    }

    fn fire_server_timers(&mut self, now: Instant) {
        let timers = self.config.timers;
        for id in self.server_deadlines.due(now) {
            if self.free_event_slots() == 0 {
                return;
            }
            let Some(txn) = self
                .server_keys
                .get(&id)
                .and_then(|key| self.server_txns.get_mut(key))
            else {
                continue;
            };
            if txn.ends_at.is_some_and(|at| at <= now) {
                let ack_timed_out = txn.is_invite && txn.state == ServerState::Completed;
                self.remove_server_txn(id);
                if ack_timed_out {
                    bump(&mut self.stats.ack_timeouts);
                    self.events.push_back(EndpointEvent::AckTimeout { txn: id });
                }
                continue;
            }
            if let (Some(retransmit), Some(bytes)) = (txn.retransmit, txn.last_response.clone()) {
                let interval = timers.next_interval(retransmit.interval);
                txn.retransmit = Some(Retransmit {
                    at: retransmit.at + interval,
                    interval,
                });
                self.server_deadlines.sync(txn);
                let remote = txn.remote;
                bump(&mut self.stats.retransmissions_sent);
                self.transmit(remote, bytes);
            }
        }
    }

    fn fire_pending_acks(&mut self, now: Instant) {
        let timers = self.config.timers;
        for txn in self.ack_deadlines.due(now) {
            if self.free_event_slots() == 0 {
                return;
            }
            let Some(key) = self.pending_ack_keys.get(&txn) else {
                continue;
            };
            let Some(pending) = self.pending_acks.get_mut(key) else {
                continue;
            };
            if pending.gives_up_at <= now {
                let key = key.clone();
                self.remove_pending_ack(&key);
                bump(&mut self.stats.ack_timeouts);
                self.events.push_back(EndpointEvent::AckTimeout { txn });
                continue;
            }
            let interval = timers.next_interval(pending.interval);
            pending.interval = interval;
            pending.retransmit_at += interval;
            self.ack_deadlines.sync(pending);
            let (remote, bytes) = (pending.remote, pending.bytes.clone());
            bump(&mut self.stats.retransmissions_sent);
            self.transmit(remote, bytes);
        }
    }

    fn fire_client_timers(&mut self, now: Instant) {
        let timers = self.config.timers;
        for id in self.client_deadlines.due(now) {
            if self.free_event_slots() == 0 {
                return;
            }
            let Some(txn) = self
                .client_branches
                .get(&id)
                .and_then(|branch| self.client_txns.get_mut(branch))
            else {
                continue;
            };
            if txn.ends_at <= now {
                let timed_out = txn.state != ClientState::Completed;
                self.remove_client_txn(id);
                if timed_out {
                    bump(&mut self.stats.request_timeouts);
                    self.events.push_back(EndpointEvent::RequestTimeout { txn: id });
                }
                continue;
            }
            if let Some(retransmit) = txn.retransmit {
                let interval = match txn.state {
                    ClientState::Proceeding => timers.t2,
                    _ => timers.next_interval(retransmit.interval),
                };
                txn.retransmit = Some(Retransmit {
                    at: retransmit.at + interval,
                    interval,
                });
                self.client_deadlines.sync(txn);
                let (remote, bytes) = (txn.remote, txn.bytes.clone());
                bump(&mut self.stats.retransmissions_sent);
                self.transmit(remote, bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests;
