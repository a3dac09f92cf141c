//! SIP sockets: a UDP socket and a TCP listener whose connections (and TLS ones, after `tls` has done the
//! handshake) are framed by `airlock_sip::StreamFramer`.
//! Every received message goes to the control loop through one bounded queue; outgoing messages go back
//! out through [`SipSender`]. Queue policies: inbound UDP datagrams are dropped (and counted) when the control
//! queue is full — the peer retransmits; a TCP connection is read no faster than the control loop drains
//! (back-pressure); a TCP connection whose outbound queue is full is closed (the peer is not reading).
//!
//! Every inbound message passes the source guard (`airlock_sip::guard`: allow-list and per-source rate) before
//! it is queued, so a refused or flooding source costs no queue space. A TCP stream that breaks the framing
//! limits gets a best-effort answer (513/400) when its request line is visible; then its write side is
//! closed and its input discarded for a short linger, so the answer is not lost to a reset.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use airlock_sip::{ConnectionId, GuardConfig, Remote, SourceGuard, StreamFramer, Transport, Verdict};
use airlock_telemetry::{Metrics, SipRefusal, SipResponseClass, TcpRefusal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::control::ControlInput;

/// Largest UDP datagram accepted (RFC 3261 §18.1.1: SIPREC INVITEs are often large).
const MAX_DATAGRAM: usize = 65_535;
/// Messages queued toward one TCP connection before it is considered stuck and closed.
const TCP_OUTBOUND_QUEUE: usize = 256;
/// TCP and TLS connections open at once; further connections are refused by closing them.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// After answering a framing error: how long, and how many bytes, the rest of the peer's input is read and
/// discarded before the connection is dropped (closing with unread input would reset it and could destroy
/// the answer in flight).
const TCP_LINGER: Duration = Duration::from_secs(2);
const TCP_LINGER_BYTES: usize = 1 << 20;
/// Retry-After of the 503 a rate-limited request gets on a stream transport.
const RATE_LIMITED_RETRY_AFTER_SECS: u32 = 1;
/// A write to a TCP/TLS peer that takes longer than this (the peer stopped reading) closes the connection.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the loop cannot spin.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The source guard and the per-source count of inbound TCP connections, shared by the UDP task, the
/// acceptor and every TCP reader. The count map has an entry only per source with an open connection, so it
/// is bounded by `MAX_TCP_CONNECTIONS`.
#[derive(Debug, Clone)]
struct Shield {
    guard: Arc<Mutex<SourceGuard>>,
    tcp_per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_tcp_per_source: usize,
}

impl Shield {
    /// Counts a new inbound connection from `source`, or `None` if it already has the most allowed.
    fn tcp_slot(&self, source: IpAddr) -> Option<TcpSlot> {
        let source = source.to_canonical();
        let mut counts = self.tcp_per_source.lock().unwrap_or_else(PoisonError::into_inner);
        let open = counts.entry(source).or_insert(0);
        if *open >= self.max_tcp_per_source {
            return None;
        }
        *open += 1;
        Some(TcpSlot {
            counts: self.tcp_per_source.clone(),
            source,
        })
    }
}

/// One inbound connection counted against its source; released when dropped (the reader ends).
#[derive(Debug)]
pub(crate) struct TcpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = counts.get_mut(&self.source) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// Sends SIP messages to a peer over the transport it used.
#[derive(Clone, Debug)]
pub struct SipSender {
    udp: Option<Arc<UdpSocket>>,
    connections: Arc<Mutex<HashMap<ConnectionId, mpsc::Sender<Vec<u8>>>>>,
    next_connection: Arc<std::sync::atomic::AtomicU64>,
    inbound: mpsc::Sender<ControlInput>,
    metrics: Metrics,
    shield: Shield,
}

impl SipSender {
    /// Sends `bytes` to `to`; over TCP it uses the peer's connection, or opens one if it has gone.
    pub async fn send(&self, to: Remote, bytes: Vec<u8>) {
        match to.transport {
            Transport::Udp => {
                if let Some(udp) = &self.udp
                    && let Err(error) = udp.send_to(&bytes, to.addr).await
                {
                    tracing::warn!(%error, "SIP UDP send failed");
                }
            }
            _ => {
                let existing = to.connection.and_then(|id| self.connection(id));
                let queue = match existing {
                    Some(queue) => queue,
                    None if to.transport == Transport::Tls => {
                        // We hold no client trust store for SRCs: a request to a TLS peer whose
                        // connection has gone is not sent (the call is finalised on our side anyway).
                        tracing::warn!("the SIP TLS connection to the peer has closed; request not sent");
                        return;
                    }
                    None => match TcpStream::connect(to.addr).await {
                        Ok(stream) => self.adopt(stream, to.addr, None),
                        Err(error) => {
                            tracing::warn!(%error, "SIP TCP connect for an outbound request failed");
                            return;
                        }
                    },
                };
                if queue.try_send(bytes).is_err() {
                    tracing::warn!("SIP TCP connection not draining; closing it");
                    if let Some(id) = to.connection {
                        self.forget(id);
                    }
                }
            }
        }
    }

    /// Runs the source guard on one inbound message: true to pass it on; false when it is refused (counted,
    /// and answered 403 when the guard says so).
    async fn admit(&self, from: Remote, bytes: &[u8]) -> bool {
        let now = tokio::time::Instant::now().into_std();
        let verdict = self
            .shield
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(now, from.addr.ip(), bytes);
        match verdict {
            Verdict::Allow => return true,
            Verdict::RateLimited => {
                self.metrics.sip_refused(SipRefusal::RateLimited);
                if from.transport.is_reliable()
                    && let Some(response) =
                        airlock_sip::guard::rate_limited_answer(bytes, RATE_LIMITED_RETRY_AFTER_SECS)
                {
                    self.metrics.sip_response(SipResponseClass::ServerError);
                    self.send(from, response).await;
                }
            }
            Verdict::Forbidden { answer } => {
                self.metrics.sip_refused(SipRefusal::SourceNotAllowed);
                if let Some(response) = answer
                    .then(|| airlock_sip::guard::forbidden_answer(bytes))
                    .flatten()
                {
                    tracing::debug!("answering 403 to a source outside sip.allow_sources");
                    self.metrics.sip_response(SipResponseClass::ClientError);
                    self.send(from, response).await;
                }
            }
        }
        false
    }

    fn connection(&self, id: ConnectionId) -> Option<mpsc::Sender<Vec<u8>>> {
        self.connections.lock().ok()?.get(&id).cloned()
    }

    fn forget(&self, id: ConnectionId) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(&id);
        }
    }

    /// Checks the caps for a new inbound TCP or TLS connection from `peer`: the total and the per-source
    /// count. The slot counts it until dropped; a refusal is counted in metrics.
    pub(crate) fn inbound_slot(&self, peer: IpAddr) -> Option<TcpSlot> {
        if self.open_connections() >= MAX_TCP_CONNECTIONS {
            self.metrics.sip_tcp_refused(TcpRefusal::TotalLimit);
            return None;
        }
        let slot = self.shield.tcp_slot(peer);
        if slot.is_none() {
            self.metrics.sip_tcp_refused(TcpRefusal::PerSourceLimit);
        }
        slot
    }

    /// Whether `peer` may send SIP at all (`sip.allow_sources`). TLS checks it before the handshake, so a
    /// refused source costs no handshake; TCP lets the guard answer 403 per request instead.
    pub(crate) fn source_allowed(&self, peer: IpAddr) -> bool {
        let allowed = self
            .shield
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allowed(peer);
        if !allowed {
            self.metrics.sip_tcp_refused(TcpRefusal::SourceNotAllowed);
        }
        allowed
    }

    /// Stream connections open now (TCP and TLS).
    fn open_connections(&self) -> usize {
        self.connections.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Starts reader and writer tasks for a TCP connection and returns its outbound queue.
    fn adopt(&self, stream: TcpStream, peer: SocketAddr, slot: Option<TcpSlot>) -> mpsc::Sender<Vec<u8>> {
        self.adopt_stream(stream, peer, Transport::Tcp, None, slot).0
    }

    /// Starts reader and writer tasks for a byte-stream connection (TCP, or TLS after its handshake) and
    /// returns its outbound queue and the reader task, which ends when the connection closes. `slot` counts
    /// an inbound connection against its source until the reader ends. With `idle_timeout`, a connection
    /// that sends nothing for that long is closed (SBCs keep theirs alive with OPTIONS or CRLF keep-alives).
    pub(crate) fn adopt_stream<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
        idle_timeout: Option<Duration>,
        slot: Option<TcpSlot>,
    ) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let id = ConnectionId(
            self.next_connection
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let (outbound, mut outbound_rx) = mpsc::channel::<Vec<u8>>(TCP_OUTBOUND_QUEUE);
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(id, outbound.clone());
        }
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut writer_task = tokio::spawn(async move {
            while let Some(bytes) = outbound_rx.recv().await {
                match tokio::time::timeout(STREAM_WRITE_TIMEOUT, writer.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            let _closed = tokio::time::timeout(STREAM_WRITE_TIMEOUT, writer.shutdown()).await;
        });
        let sender = self.clone();
        let answers = outbound.clone();
        // The connection's slot and socket live until both halves end: the reader ends first, then the
        // writer gets `STREAM_WRITE_TIMEOUT` to flush what is queued before it is aborted.
        let reader_task = tokio::spawn(async move {
            let _slot = slot;
            sender
                .read_stream(&mut reader, remote_of(transport, peer, id), idle_timeout, answers)
                .await;
            sender.forget(id);
            if tokio::time::timeout(STREAM_WRITE_TIMEOUT, &mut writer_task)
                .await
                .is_err()
            {
                writer_task.abort();
            }
        });
        (outbound, reader_task)
    }

    /// Reads one connection until it closes, idles out, breaks the framing, or the control loop stops.
    /// A framing error is answered (513/400) when the request is visible, then the peer's further input is
    /// discarded for a short linger so the answer is not lost to a reset.
    async fn read_stream<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        remote: Remote,
        idle_timeout: Option<Duration>,
        answers: mpsc::Sender<Vec<u8>>,
    ) {
        let transport = remote.transport;
        let mut framer = StreamFramer::new(MAX_DATAGRAM);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = match idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, reader.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::info!(?transport, "closing an idle SIP connection");
                        return;
                    }
                },
                None => reader.read(&mut buf).await,
            };
            let read = match read {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            framer.push(buf.get(..read).unwrap_or_default());
            loop {
                match framer.next_message() {
                    Ok(Some(message)) => {
                        if !self.admit(remote, &message).await {
                            continue;
                        }
                        let input = ControlInput::Sip {
                            from: remote,
                            bytes: message,
                        };
                        if self.inbound.send(input).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.metrics.sip_malformed.inc();
                        tracing::info!(%error, ?transport, "closing a SIP connection after a framing error");
                        let answered = framer
                            .rejection(&error)
                            .is_some_and(|bytes| answers.try_send(bytes).is_ok());
                        if answered {
                            if let Some(class) = SipResponseClass::of_status(error.status()) {
                                self.metrics.sip_response(class);
                            }
                            // The writer sends the answer, then shuts the write side down once every
                            // sender of its queue is gone.
                            drop(answers);
                            if let Some(id) = remote.connection {
                                self.forget(id);
                            }
                            linger(reader, &mut buf).await;
                        }
                        return;
                    }
                }
            }
        }
    }
}

fn remote_of(transport: Transport, peer: SocketAddr, id: ConnectionId) -> Remote {
    Remote {
        transport,
        addr: peer,
        connection: Some(id),
    }
}

/// Reads and discards what the peer still sends, for at most `TCP_LINGER` and `TCP_LINGER_BYTES`.
async fn linger<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) {
    let drain = async {
        let mut discarded = 0usize;
        while discarded < TCP_LINGER_BYTES {
            match reader.read(buf).await {
                Ok(0) | Err(_) => break,
                Ok(read) => discarded = discarded.saturating_add(read),
            }
        }
    };
    let _ = tokio::time::timeout(TCP_LINGER, drain).await;
}

/// Binds the configured SIP sockets and starts their receive tasks. Inbound messages pass a source guard
/// built from `guard`; inbound TCP connections are capped at `max_tcp_per_source` per source IP.
pub async fn start(
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    inbound: mpsc::Sender<ControlInput>,
    metrics: Metrics,
    guard: GuardConfig,
    max_tcp_per_source: usize,
) -> std::io::Result<SipSender> {
    let udp = match udp_addr {
        Some(addr) => Some(Arc::new(UdpSocket::bind(addr).await?)),
        None => None,
    };
    let sender = SipSender {
        udp: udp.clone(),
        connections: Arc::default(),
        next_connection: Arc::default(),
        inbound: inbound.clone(),
        metrics: metrics.clone(),
        shield: Shield {
            guard: Arc::new(Mutex::new(SourceGuard::new(guard))),
            tcp_per_source: Arc::default(),
            max_tcp_per_source,
        },
    };
    if let Some(udp) = udp {
        let inbound = inbound.clone();
        let metrics = metrics.clone();
        let receiver = sender.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let from = Remote {
                    transport: Transport::Udp,
                    addr: peer,
                    connection: None,
                };
                let datagram = buf.get(..len).unwrap_or_default();
                if !receiver.admit(from, datagram).await {
                    continue;
                }
                let bytes = datagram.to_vec();
                match inbound.try_send(ControlInput::Sip { from, bytes }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics.sip_dropped_overload.inc();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        });
    }
    if let Some(addr) = tcp_addr {
        let listener = TcpListener::bind(addr).await?;
        let acceptor = sender.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "SIP TCP accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let Some(slot) = acceptor.inbound_slot(peer.ip()) else {
                    drop(stream);
                    continue;
                };
                acceptor.adopt(stream, peer, Some(slot));
            }
        });
    }
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_slots_are_capped_per_source_and_released_on_drop() {
        let shield = Shield {
            guard: Arc::new(Mutex::new(SourceGuard::new(GuardConfig::default()))),
            tcp_per_source: Arc::default(),
            max_tcp_per_source: 2,
        };
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let first = shield.tcp_slot(a).expect("first");
        let second = shield.tcp_slot(mapped).expect("second, same source");
        assert!(shield.tcp_slot(a).is_none(), "third is over the cap");
        assert!(
            shield.tcp_slot("192.0.2.2".parse().expect("ip")).is_some(),
            "other sources unaffected"
        );
        drop(first);
        let third = shield.tcp_slot(a).expect("a slot was released");
        drop((second, third));
        let counts = shield.tcp_per_source.lock().expect("lock");
        assert!(
            counts.is_empty(),
            "no entry is kept for sources without connections"
        );
    }
}
