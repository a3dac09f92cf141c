//! SIP sockets: a UDP socket and a TCP listener whose connections are framed by `airlock_sip::StreamFramer`.
//! Every received message goes to the control loop through one bounded queue; outgoing messages go back
//! out through [`SipSender`]. Queue policies: inbound UDP datagrams are dropped (and counted) when the control
//! queue is full — the peer retransmits; a TCP connection is read no faster than the control loop drains
//! (back-pressure); a TCP connection whose outbound queue is full is closed (the peer is not reading).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_sip::{ConnectionId, Remote, StreamFramer, Transport};
use airlock_telemetry::Metrics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::control::ControlInput;

/// Largest UDP datagram accepted (RFC 3261 §18.1.1: SIPREC INVITEs are often large).
const MAX_DATAGRAM: usize = 65_535;
/// Messages queued toward one TCP connection before it is considered stuck and closed.
const TCP_OUTBOUND_QUEUE: usize = 256;
/// TCP and TLS connections open at once; further connections are refused by closing them.
pub(crate) const MAX_TCP_CONNECTIONS: usize = 1024;

/// Sends SIP messages to a peer over the transport it used.
#[derive(Clone, Debug)]
pub struct SipSender {
    udp: Option<Arc<UdpSocket>>,
    connections: Arc<Mutex<HashMap<ConnectionId, mpsc::Sender<Vec<u8>>>>>,
    next_connection: Arc<std::sync::atomic::AtomicU64>,
    inbound: mpsc::Sender<ControlInput>,
    metrics: Metrics,
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
                        Ok(stream) => self.adopt(stream, to.addr),
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

    fn connection(&self, id: ConnectionId) -> Option<mpsc::Sender<Vec<u8>>> {
        self.connections.lock().ok()?.get(&id).cloned()
    }

    fn forget(&self, id: ConnectionId) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(&id);
        }
    }

    /// Starts reader and writer tasks for a TCP connection and returns its outbound queue.
    fn adopt(&self, stream: TcpStream, peer: SocketAddr) -> mpsc::Sender<Vec<u8>> {
        self.adopt_stream(stream, peer, Transport::Tcp, None).0
    }

    /// Starts reader and writer tasks for a byte-stream connection (TCP, or TLS after its handshake) and
    /// returns its outbound queue and the reader task, which ends when the connection closes. With `idle_timeout`, a connection that sends nothing for that long is
    /// closed (SBCs keep their connections alive with OPTIONS or CRLF keep-alives).
    pub(crate) fn adopt_stream<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
        idle_timeout: Option<Duration>,
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
        tokio::spawn(async move {
            while let Some(bytes) = outbound_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _closed = writer.shutdown().await;
        });
        let sender = self.clone();
        let reader_task = tokio::spawn(async move {
            let remote = Remote {
                transport,
                addr: peer,
                connection: Some(id),
            };
            let mut framer = StreamFramer::new(MAX_DATAGRAM);
            let mut buf = vec![0u8; 16 * 1024];
            'read: loop {
                let read = match idle_timeout {
                    Some(limit) => match tokio::time::timeout(limit, reader.read(&mut buf)).await {
                        Ok(read) => read,
                        Err(_) => {
                            tracing::info!(?transport, "closing an idle SIP connection");
                            break;
                        }
                    },
                    None => reader.read(&mut buf).await,
                };
                let read = match read {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                framer.push(buf.get(..read).unwrap_or_default());
                loop {
                    match framer.next_message() {
                        Ok(Some(message)) => {
                            let input = ControlInput::Sip {
                                from: remote,
                                bytes: message,
                            };
                            if sender.inbound.send(input).await.is_err() {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            sender.metrics.sip_malformed.inc();
                            tracing::info!(%error, ?transport, "closing a SIP connection after a framing error");
                            break 'read;
                        }
                    }
                }
            }
            sender.forget(id);
        });
        (outbound, reader_task)
    }

    /// Stream connections open now (TCP and TLS).
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// Binds the configured SIP sockets and starts their receive tasks.
pub async fn start(
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    inbound: mpsc::Sender<ControlInput>,
    metrics: Metrics,
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
    };
    if let Some(udp) = udp {
        let inbound = inbound.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let bytes = buf.get(..len).unwrap_or_default().to_vec();
                let from = Remote {
                    transport: Transport::Udp,
                    addr: peer,
                    connection: None,
                };
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
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                if acceptor.open_connections() >= MAX_TCP_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                acceptor.adopt(stream, peer);
            }
        });
    }
    Ok(sender)
}
