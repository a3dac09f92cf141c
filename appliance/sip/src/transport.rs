//! Where a message came from or goes to. The runtime owns the sockets; these types only name them.

use std::fmt;
use std::net::SocketAddr;

/// The transport a SIP message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: the endpoint retransmits.
    Udp,
    /// A TCP byte stream: reliable, framed by [`crate::StreamFramer`].
    Tcp,
    /// TLS over TCP: reliable, framed by [`crate::StreamFramer`].
    Tls,
}

impl Transport {
    /// Reliable transports need no retransmissions by the transaction layer (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The token used in a Via header's sent-protocol.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Identifies one accepted TCP/TLS connection inside the runtime, so responses go back on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// The peer end of a message: transport, socket address and (for streams) the connection.
///
/// `Debug` prints no address: addresses are PII-adjacent and must not reach logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Remote {
    /// The transport the message used.
    pub transport: Transport,
    /// The peer's socket address (source of a received message, destination of a sent one).
    pub addr: SocketAddr,
    /// The connection for TCP/TLS; `None` for UDP.
    pub connection: Option<ConnectionId>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("transport", &self.transport)
            .field("addr", &"<redacted>")
            .field("connection", &self.connection)
            .finish()
    }
}
