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

/// Entry point for the `sip_stream_framing` target: the byte stream of a TCP or TLS connection, cut into
/// reads at fuzzer-chosen points (the first byte seeds the cut lengths), through a small-limit framer that
/// is drained after every read, as the runtime does. Checks that no frame exceeds the message limit, that
/// the framer never holds more than its buffer limit, and that the frames before any error are the same as
/// when the stream arrives in one-byte reads (framing must not depend on how TLS records or TCP segments
/// split the stream).
pub fn frame_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let config = StreamFramerConfig {
        max_header_bytes: 512,
        max_message_bytes: 2048,
    };
    let by_cuts = frames(stream, config, |index| {
        1 + (usize::from(seed) * 31 + index * 17) % 700
    });
    let by_bytes = frames(stream, config, |_| 1);
    for frame in by_cuts.0.iter().chain(&by_bytes.0) {
        assert!(frame.len() <= config.max_message_bytes, "frame beyond the limit");
    }
    let common = by_cuts.0.len().min(by_bytes.0.len());
    assert_eq!(
        by_cuts.0.get(..common),
        by_bytes.0.get(..common),
        "framing depends on read sizes"
    );
    if !by_cuts.1 && !by_bytes.1 {
        assert_eq!(
            by_cuts.0, by_bytes.0,
            "without errors both read patterns give the same frames"
        );
    }
}

/// The frames of `stream` read in chunks of `chunk_len(read_index)` bytes, and whether an error ended it.
fn frames(
    stream: &[u8],
    config: StreamFramerConfig,
    chunk_len: impl Fn(usize) -> usize,
) -> (Vec<Vec<u8>>, bool) {
    let mut framer = StreamFramer::with_config(config);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut read = 0;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(read).min(rest.len()));
        rest = tail;
        read += 1;
        framer.push(chunk);
        assert!(
            framer.buffered() <= framer.buffer_limit(),
            "framer over its buffer limit"
        );
        loop {
            match framer.next_message() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(error) => {
                    let _ = framer.rejection(&error);
                    return (out, true);
                }
            }
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_framing_is_independent_of_read_sizes() {
        let message = "OPTIONS sip:srs@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.2;branch=z9hG4bK1\r\n\
                       Content-Length: 5\r\n\r\nhello";
        let mut stream = vec![7u8];
        for _ in 0..3 {
            stream.extend_from_slice(b"\r\n");
            stream.extend_from_slice(message.as_bytes());
        }
        frame_stream(&stream);
        let (frames, failed) = frames(&stream[1..], StreamFramerConfig::default(), |index| {
            3 + index % 50
        });
        assert_eq!((frames.len(), failed), (3, false));
        stream.extend_from_slice(&[b'X'; 4096]);
        frame_stream(&stream);
    }
}
