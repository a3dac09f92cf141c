//! Entry point for the `sip_message` fuzz target: everything peer bytes can reach in this crate, in one
//! call. Lives here so the fuzz crate stays a thin wrapper.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::endpoint::{Endpoint, EndpointConfig};
use crate::framing::{StreamFramer, StreamFramerConfig};
use crate::guard::{GuardConfig, SourceGuard, forbidden_answer};
use crate::message::{Message, Request};
use crate::transport::{ConnectionId, Remote, Transport};

/// Parses `data` as a datagram, passes it through a source guard (and its 403 builder), frames it as a
/// stream (in two chunks, answering framing errors), and feeds both to an endpoint whose timers are then run
/// to completion (virtual time from `start`). Must never panic.
pub fn parse_and_frame(start: Instant, data: &[u8]) {
    let mut guard = SourceGuard::new(GuardConfig {
        allow: Vec::new(),
        rate_per_sec: 1,
        burst: 1,
        max_tracked_sources: 1,
        forbidden_answers_per_sec: 1,
    });
    for octet in 0..3u8 {
        let _ = guard.check(start, IpAddr::V4(Ipv4Addr::new(192, 0, 2, octet)), data);
    }
    let _ = forbidden_answer(data);
    let _ = Request::salvage_head(data);

    if let Ok(message) = Message::parse(data) {
        let bytes = match &message {
            Message::Request(request) => request.to_bytes(),
            Message::Response(response) => response.to_bytes(),
        };
        let _ = Message::parse(&bytes);
    }

    let mut endpoint = Endpoint::new(EndpointConfig::default());
    let udp = Remote {
        transport: Transport::Udp,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 5060)),
        connection: None,
    };
    endpoint.handle_message(start, udp, data);

    let tcp = Remote {
        connection: Some(ConnectionId(1)),
        transport: Transport::Tcp,
        ..udp
    };
    let mut framer = StreamFramer::with_config(StreamFramerConfig::default());
    let (first, second) = data.split_at(data.len() / 2);
    for chunk in [first, second] {
        framer.push(chunk);
        loop {
            match framer.next_message() {
                Ok(Some(frame)) => endpoint.handle_message(start, tcp, &frame),
                Ok(None) => break,
                Err(error) => {
                    let _ = framer.rejection(&error);
                    break;
                }
            }
        }
    }

    let mut now = start;
    while let Some(deadline) = endpoint.poll_timeout() {
        now = deadline.max(now + Duration::from_millis(1));
        endpoint.handle_timeout(now);
        while endpoint.poll_event().is_some() {}
        if now > start + Duration::from_secs(3600) {
            break;
        }
    }
}
