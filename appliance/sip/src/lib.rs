//! airlock-sip: the SIP layer of the SRS, sans-IO.
//!
//! Owns SIP message parsing and serialisation (our own wrapper types, see [`message`]), transport framing
//! ([`framing`]), the source allow-list and rate limit ([`guard`]), RFC 3261 transactions and 2xx/ACK handling ([`endpoint`]) and UAS dialogs ([`dialog`]).
//! Nothing here reads a clock or touches a socket: every entry point takes `now`, timers are asked for with
//! [`Endpoint::poll_timeout`], and bytes to send come out as [`EndpointEvent::Transmit`].
//!
//! Why not `rsip` on the input path: `rsip` 0.4 rejects inputs real SBCs send (IPv6 `sent-by` in Via, `tel:`
//! URIs in From/To, any method it does not know — which makes a 501 impossible —, compact header forms and
//! folded lines) and ignores Content-Length. The parser here is tolerant where SBCs deviate and strict where
//! safety needs it; the wrapper types keep any parser swappable behind them.

pub mod dialog;
pub mod endpoint;
pub mod framing;
pub mod fuzz;
pub mod guard;
pub mod message;
pub mod timers;
pub mod transport;

pub use dialog::{Dialog, DialogError, DialogId};
pub use endpoint::{
    ClientTxnId, Endpoint, EndpointConfig, EndpointError, EndpointEvent, EndpointStats, ServerTxnId,
};
pub use framing::{FramingError, MAX_DATAGRAM_BYTES, StreamFramer, StreamFramerConfig};
pub use guard::{Cidr, CidrError, GuardConfig, SourceGuard, Verdict};
pub use message::{
    CSeq, Headers, Message, Method, NameAddr, ParseError, Request, Response, stateless_answer,
};
pub use timers::TimerConfig;
pub use transport::{ConnectionId, Remote, Transport};
