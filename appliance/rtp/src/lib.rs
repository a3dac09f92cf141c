//! RTP reception for recorded streams, sans-IO: [`RtpPacket::parse`] reads one datagram (RFC 3550, with
//! RFC 5761 RTCP multiplexing recognised), and a [`Receiver`] per stream turns datagrams into media
//! payloads and telephone-events in playout order with positions on a continuous timeline, counting
//! loss, reordering, duplicates and SSRC changes. No sockets, no tasks, no clocks: every entry point takes
//! `now`, and time-driven work is asked for through [`Receiver::poll_timeout`].

mod packet;
mod receiver;
mod telephone_event;

pub use packet::{HeaderExtension, RtpError, RtpPacket};
pub use receiver::{
    CONTINUITY_SNAP, OUTPUT_CAPACITY, REORDER_CAPACITY, Receiver, ReceiverConfig, ReceiverOutput, RtpStats,
};
