//! RTP reception for recorded streams, sans-IO: [`RtpPacket::parse`] reads one datagram (RFC 3550, with
//! RFC 5761 RTCP multiplexing recognised), and a [`Receiver`] per stream turns datagrams into media
//! payloads and telephone-events in playout order with positions on a continuous timeline, counting
//! loss, reordering, duplicates and SSRC changes. No sockets, no tasks, no clocks: every entry point takes
//! `now`, and time-driven work is asked for through [`Receiver::poll_timeout`].
//!
//! SDES-SRTP streams (RFC 3711, RFC 7714 AES-GCM) are unprotected first by an [`SrtpInbound`] per stream
//! (see the `srtp` module: suites, master keys, per-SSRC rollover and replay state, rekey grace); the plain
//! packets it yields go to the [`Receiver`] as any RTP datagram. [`fuzz`] holds the fuzz targets' logic.

pub mod fuzz;
mod packet;
mod receiver;
mod srtp;
mod telephone_event;

pub use packet::{HeaderExtension, RtpError, RtpPacket};
pub use receiver::{
    CONTINUITY_SNAP, OUTPUT_CAPACITY, REORDER_CAPACITY, Receiver, ReceiverConfig, ReceiverOutput, RtpStats,
};
pub use srtp::{
    MAX_REPLAY_WINDOW, MAX_SSRCS, MIN_REPLAY_WINDOW, SrtpConfig, SrtpContext, SrtpError, SrtpInbound,
    SrtpMasterKey, SrtpStats, SrtpSuite,
};
