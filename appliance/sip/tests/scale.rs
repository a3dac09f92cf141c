//! The endpoint at SIPREC steady-state scale (500 setups/s leave ~30,000 live transactions): every
//! non-INVITE transaction over UDP ends exactly at Timer J, `poll_timeout` always names the earliest
//! deadline, and an ignored micro-benchmark times `poll_timeout` with 30,000 live transactions
//! (`cargo test --release -p airlock-sip --test scale -- --ignored --nocapture`). Virtual time only.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use airlock_sip::{Endpoint, EndpointConfig, EndpointEvent, Message, Remote, Response, Transport};

/// Live transactions at 500 setups/s: one INVITE and one BYE per call, each living up to 32 s.
const LIVE: u32 = 30_000;
/// Transactions started in the same millisecond, so several share a deadline.
const PER_MILLI: u32 = 3;

fn udp() -> Remote {
    Remote {
        transport: Transport::Udp,
        addr: SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 5060)),
        connection: None,
    }
}

/// An OPTIONS (even `i`) or in-dialog BYE (odd `i`) with a branch and Call-ID of its own.
fn non_invite(i: u32) -> String {
    let (method, to_tag) = if i.is_multiple_of(2) {
        ("OPTIONS", "")
    } else {
        ("BYE", ";tag=srs-tag")
    };
    format!(
        "{method} sip:srs@192.0.2.10:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-scale-{i};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:src@198.51.100.7>;tag=src-{i}\r\n\
         To: <sip:srs@192.0.2.10>{to_tag}\r\n\
         Call-ID: scale-{i}@198.51.100.7\r\n\
         CSeq: 2 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Receives `LIVE` requests, `PER_MILLI` per millisecond from `start`, and answers each 200 at once.
fn fill(endpoint: &mut Endpoint, start: Instant) {
    for i in 0..LIVE {
        let now = start + Duration::from_millis(u64::from(i / PER_MILLI));
        endpoint.handle_message(now, udp(), non_invite(i).as_bytes());
        let Some(EndpointEvent::Request { txn, request, .. }) = endpoint.poll_event() else {
            panic!("request {i} did not surface");
        };
        endpoint
            .respond(now, txn, Response::for_request(&request, 200, "OK"))
            .expect("respond");
        let Some(EndpointEvent::Transmit { bytes, .. }) = endpoint.poll_event() else {
            panic!("no 200 for request {i}");
        };
        assert!(matches!(Message::parse(&bytes), Ok(Message::Response(ok)) if ok.status() == 200));
        assert_eq!(endpoint.poll_event(), None);
    }
}

#[test]
fn thirty_thousand_non_invite_transactions_end_exactly_at_timer_j() {
    let mut endpoint = Endpoint::new(EndpointConfig::default());
    let timer_j = endpoint.config().timers.transaction_timeout();
    let start = Instant::now();
    fill(&mut endpoint, start);
    assert_eq!(endpoint.server_transaction_count(), LIVE as usize);
    assert_eq!(endpoint.stats().overload_rejections, 0);

    let mut live = LIVE as usize;
    for milli in 0..u64::from(LIVE / PER_MILLI) {
        let due = start + Duration::from_millis(milli) + timer_j;
        assert_eq!(
            endpoint.poll_timeout(),
            Some(due),
            "earliest deadline at step {milli}"
        );
        endpoint.handle_timeout(due - Duration::from_nanos(1));
        assert_eq!(
            endpoint.server_transaction_count(),
            live,
            "nothing ends before Timer J"
        );
        endpoint.handle_timeout(due);
        live -= PER_MILLI as usize;
        assert_eq!(
            endpoint.server_transaction_count(),
            live,
            "Timer J at step {milli}"
        );
        assert_eq!(endpoint.poll_event(), None, "Timer J ends a transaction silently");
    }
    assert_eq!(endpoint.server_transaction_count(), 0);
    assert_eq!(endpoint.poll_timeout(), None);
}

#[test]
#[ignore = "micro-benchmark; run in release with --nocapture"]
fn poll_timeout_with_thirty_thousand_live_transactions() {
    let mut endpoint = Endpoint::new(EndpointConfig {
        max_server_transactions: 40_000,
        ..EndpointConfig::default()
    });
    let start = Instant::now();
    fill(&mut endpoint, start);

    let clock = Instant::now();
    let mut earliest = None;
    for _ in 0..100_000 {
        earliest = std::hint::black_box(std::hint::black_box(&endpoint).poll_timeout());
    }
    let polls = clock.elapsed();
    assert!(earliest.is_some());

    let clock = Instant::now();
    while let Some(deadline) = endpoint.poll_timeout() {
        endpoint.handle_timeout(deadline);
    }
    let reap = clock.elapsed();
    assert_eq!(endpoint.server_transaction_count(), 0);
    eprintln!(
        "100k poll_timeout with {LIVE} live transactions: {polls:?} ({:?} per call); \
         reaping all {LIVE} through poll_timeout/handle_timeout: {reap:?}",
        polls / 100_000
    );
}
