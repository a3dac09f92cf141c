//! Virtual-time tests of the endpoint's transactions: only `Instant` arithmetic, no sleeping.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use airlock_sip::{
    ConnectionId, Dialog, Endpoint, EndpointConfig, EndpointEvent, Message, Method, Remote, Request,
    Response, ServerTxnId, Transport,
};

const SIPREC_INVITE: &str = "INVITE sip:srs@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-inv-1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Recorder\" <sip:src@198.51.100.7>;tag=src-tag-1\r\n\
To: <sip:srs@192.0.2.10>\r\n\
Call-ID: siprec-call-1@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:src@198.51.100.7:5060>;+sip.src\r\n\
Require: siprec\r\n\
Accept: application/sdp, application/rs-metadata, application/rs-metadata-request\r\n\
Content-Type: multipart/mixed;boundary=UniqueBoundary\r\n\
MIME-Version: 1.0\r\n\
Content-Length: 580\r\n\
\r\n\
--UniqueBoundary\r\n\
Content-Type: application/sdp\r\n\
\r\n\
v=0\r\n\
o=SRC 2890844526 2890844526 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=label:1\r\n\
a=sendonly\r\n\
m=audio 20002 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=label:2\r\n\
a=sendonly\r\n\
\r\n\
--UniqueBoundary\r\n\
Content-Type: application/rs-metadata+xml\r\n\
Content-Disposition: recording-session\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode></recording>\r\n\
--UniqueBoundary--\r\n";

struct Harness {
    endpoint: Endpoint,
    start: Instant,
    udp: Remote,
}

impl Harness {
    fn new() -> Self {
        let start = Instant::now();
        let udp = Remote {
            transport: Transport::Udp,
            addr: SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 5060)),
            connection: None,
        };
        Self {
            endpoint: Endpoint::new(EndpointConfig::default()),
            start,
            udp,
        }
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    fn events(&mut self) -> Vec<EndpointEvent> {
        std::iter::from_fn(|| self.endpoint.poll_event()).collect()
    }

    /// Runs timers up to `until`, returning (fire time in ms since start, event) pairs.
    fn run_until(&mut self, until: Instant) -> Vec<(u128, EndpointEvent)> {
        let mut out = Vec::new();
        while let Some(deadline) = self.endpoint.poll_timeout().filter(|deadline| *deadline <= until) {
            self.endpoint.handle_timeout(deadline);
            for event in self.events() {
                out.push((deadline.duration_since(self.start).as_millis(), event));
            }
        }
        out
    }

    fn receive_invite(&mut self, millis: u64) -> (ServerTxnId, Request) {
        self.endpoint
            .handle_message(self.at(millis), self.udp, SIPREC_INVITE.as_bytes());
        let events = self.events();
        assert_eq!(events.len(), 2, "100 Trying and the request: {events:?}");
        assert_eq!(status_of(&events[0]), Some(100));
        match &events[1] {
            EndpointEvent::Request { txn, request, .. } => (*txn, request.clone()),
            other => panic!("expected a request, got {other:?}"),
        }
    }
}

fn status_of(event: &EndpointEvent) -> Option<u16> {
    match event {
        EndpointEvent::Transmit { bytes, .. } => match Message::parse(bytes) {
            Ok(Message::Response(response)) => Some(response.status()),
            _ => None,
        },
        _ => None,
    }
}

fn ack_for(response: &Response, branch: &str) -> String {
    format!(
        "ACK sip:src@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        response.headers().get("From").unwrap_or_default(),
        response.headers().get("To").unwrap_or_default(),
        response.headers().call_id().unwrap_or_default(),
    )
}

#[test]
fn invite_gets_100_trying_and_retransmissions_are_absorbed() {
    let mut harness = Harness::new();
    let (_txn, request) = harness.receive_invite(0);
    assert!(request.headers().has_token("Require", "siprec"));
    harness
        .endpoint
        .handle_message(harness.at(500), harness.udp, SIPREC_INVITE.as_bytes());
    let events = harness.events();
    assert_eq!(events.len(), 1, "only the 100 is resent: {events:?}");
    assert_eq!(status_of(&events[0]), Some(100));
    assert_eq!(harness.endpoint.stats().retransmissions_absorbed, 1);
}

#[test]
fn non_2xx_final_is_retransmitted_with_timer_g_doubling_and_timer_h_fires_at_32s() {
    let mut harness = Harness::new();
    let (txn, request) = harness.receive_invite(0);
    harness
        .endpoint
        .respond(
            harness.at(0),
            txn,
            Response::for_request(&request, 488, "Not Acceptable Here"),
        )
        .expect("respond");
    assert_eq!(harness.events().len(), 1);
    let fired = harness.run_until(harness.at(40_000));
    let retransmit_times: Vec<u128> = fired
        .iter()
        .filter(|(_, event)| status_of(event) == Some(488))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(
        retransmit_times,
        vec![
            500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ],
        "T1, 2T1, 4T1, then capped at T2"
    );
    let timeouts: Vec<&(u128, EndpointEvent)> = fired
        .iter()
        .filter(|(_, event)| matches!(event, EndpointEvent::AckTimeout { .. }))
        .collect();
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0].0, 32_000);
    assert_eq!(timeouts[0].1, EndpointEvent::AckTimeout { txn });
    assert_eq!(harness.endpoint.server_transaction_count(), 0);
}

#[test]
fn ack_for_a_non_2xx_stops_retransmissions_silently() {
    let mut harness = Harness::new();
    let (txn, request) = harness.receive_invite(0);
    let busy = Response::for_request(&request, 486, "Busy Here");
    harness
        .endpoint
        .respond(harness.at(0), txn, busy.clone())
        .expect("respond");
    harness.events();
    harness.endpoint.handle_message(
        harness.at(100),
        harness.udp,
        ack_for(&busy, "z9hG4bK-inv-1").as_bytes(),
    );
    assert!(harness.events().is_empty(), "the ACK to a non-2xx is absorbed");
    let fired = harness.run_until(harness.at(40_000));
    assert!(
        fired.is_empty(),
        "no retransmission or timeout after the ACK: {fired:?}"
    );
    assert_eq!(harness.endpoint.server_transaction_count(), 0, "Timer I ended it");
}

#[test]
fn two_hundred_ok_is_retransmitted_until_ack() {
    let mut harness = Harness::new();
    let (txn, request) = harness.receive_invite(0);
    let ok =
        Response::for_request(&request, 200, "OK").with_header("Contact", "<sip:srs@192.0.2.10>;+sip.srs");
    harness
        .endpoint
        .respond(harness.at(0), txn, ok.clone())
        .expect("respond");
    assert_eq!(harness.events().len(), 1);
    let fired = harness.run_until(harness.at(3_600));
    let times: Vec<u128> = fired
        .iter()
        .filter(|(_, event)| status_of(event) == Some(200))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(times, vec![500, 1500, 3500]);
    // The ACK to a 2xx has its own branch and is matched by dialog and CSeq.
    harness.endpoint.handle_message(
        harness.at(3_700),
        harness.udp,
        ack_for(&ok, "z9hG4bK-ack-9").as_bytes(),
    );
    let events = harness.events();
    assert!(
        matches!(events.as_slice(), [EndpointEvent::Ack { .. }]),
        "{events:?}"
    );
    let fired = harness.run_until(harness.at(60_000));
    assert!(
        fired.iter().all(|(_, event)| status_of(event).is_none()),
        "no more 200s"
    );
    assert!(
        fired
            .iter()
            .all(|(_, event)| !matches!(event, EndpointEvent::AckTimeout { .. }))
    );
    // A retransmitted ACK is stray, not surfaced twice.
    harness.endpoint.handle_message(
        harness.at(61_000),
        harness.udp,
        ack_for(&ok, "z9hG4bK-ack-9").as_bytes(),
    );
    assert!(harness.events().is_empty());
}

#[test]
fn two_hundred_ok_without_ack_times_out() {
    let mut harness = Harness::new();
    let (txn, request) = harness.receive_invite(0);
    harness
        .endpoint
        .respond(harness.at(0), txn, Response::for_request(&request, 200, "OK"))
        .expect("respond");
    harness.events();
    let fired = harness.run_until(harness.at(40_000));
    let timeouts: Vec<u128> = fired
        .iter()
        .filter(|(_, event)| *event == EndpointEvent::AckTimeout { txn })
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(timeouts, vec![32_000]);
}

#[test]
fn invite_retransmission_after_2xx_resends_the_2xx_and_never_surfaces() {
    let mut harness = Harness::new();
    let (txn, request) = harness.receive_invite(0);
    harness
        .endpoint
        .respond(harness.at(0), txn, Response::for_request(&request, 200, "OK"))
        .expect("respond");
    harness.events();
    harness
        .endpoint
        .handle_message(harness.at(200), harness.udp, SIPREC_INVITE.as_bytes());
    let events = harness.events();
    assert_eq!(events.len(), 1);
    assert_eq!(status_of(&events[0]), Some(200));
}

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
         From: <sip:src@198.51.100.7>;tag=o1\r\nTo: <sip:srs@192.0.2.10>\r\nCall-ID: opt-1\r\nCSeq: 5 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn non_invite_transaction_absorbs_retransmissions_until_timer_j() {
    let mut harness = Harness::new();
    harness
        .endpoint
        .handle_message(harness.at(0), harness.udp, options("z9hG4bK-o1").as_bytes());
    let events = harness.events();
    let [EndpointEvent::Request { txn, request, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    // Retransmission before any response: silently absorbed.
    harness
        .endpoint
        .handle_message(harness.at(500), harness.udp, options("z9hG4bK-o1").as_bytes());
    assert!(harness.events().is_empty());
    harness
        .endpoint
        .respond(harness.at(600), *txn, Response::for_request(request, 200, "OK"))
        .expect("respond");
    assert_eq!(harness.events().len(), 1);
    // Retransmission in Completed: the final response is resent.
    harness
        .endpoint
        .handle_message(harness.at(1_500), harness.udp, options("z9hG4bK-o1").as_bytes());
    let events = harness.events();
    assert_eq!(events.len(), 1);
    assert_eq!(status_of(&events[0]), Some(200));
    let fired = harness.run_until(harness.at(40_000));
    assert!(fired.is_empty());
    assert_eq!(
        harness.endpoint.server_transaction_count(),
        0,
        "Timer J at 600 ms + 32 s ended it"
    );
    assert_eq!(
        harness.endpoint.respond(
            harness.at(40_000),
            *txn,
            Response::for_request(request, 200, "OK")
        ),
        Err(airlock_sip::EndpointError::UnknownTransaction)
    );
}

#[test]
fn non_invite_over_tcp_ends_at_the_final_response() {
    let mut harness = Harness::new();
    let tcp = Remote {
        transport: Transport::Tcp,
        connection: Some(ConnectionId(7)),
        ..harness.udp
    };
    harness
        .endpoint
        .handle_message(harness.at(0), tcp, options("z9hG4bK-o2").as_bytes());
    let events = harness.events();
    let [EndpointEvent::Request { txn, request, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    harness
        .endpoint
        .respond(harness.at(1), *txn, Response::for_request(request, 200, "OK"))
        .expect("respond");
    let events = harness.events();
    assert!(
        matches!(&events[0], EndpointEvent::Transmit { to, .. } if to.connection == Some(ConnectionId(7)))
    );
    assert_eq!(harness.endpoint.server_transaction_count(), 0);
}

#[test]
fn cancel_answers_200_and_487_and_reports_cancelled() {
    let mut harness = Harness::new();
    let (txn, _request) = harness.receive_invite(0);
    let cancel = "CANCEL sip:srs@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-inv-1;rport\r\n\
From: \"Recorder\" <sip:src@198.51.100.7>;tag=src-tag-1\r\nTo: <sip:srs@192.0.2.10>\r\n\
Call-ID: siprec-call-1@198.51.100.7\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    harness
        .endpoint
        .handle_message(harness.at(100), harness.udp, cancel.as_bytes());
    let events = harness.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(status_of(&events[0]), Some(200));
    assert_eq!(status_of(&events[1]), Some(487));
    assert_eq!(events[2], EndpointEvent::Cancelled { invite_txn: txn });
    // The TU can no longer answer the INVITE.
    assert!(
        harness
            .endpoint
            .respond(harness.at(200), txn, Response::new(200, "OK"))
            .is_err()
    );

    let unknown = cancel.replace("z9hG4bK-inv-1", "z9hG4bK-nothing");
    harness
        .endpoint
        .handle_message(harness.at(300), harness.udp, unknown.as_bytes());
    let events = harness.events();
    assert_eq!(events.len(), 1);
    assert_eq!(status_of(&events[0]), Some(481));
}

fn bye_request(harness: &mut Harness) -> Request {
    let (txn, request) = harness.receive_invite(0);
    let ok = Response::for_request(&request, 200, "OK");
    let mut dialog = Dialog::new_uas(&request, &ok).expect("dialog");
    harness
        .endpoint
        .respond(harness.at(0), txn, ok.clone())
        .expect("respond");
    harness.endpoint.handle_message(
        harness.at(10),
        harness.udp,
        ack_for(&ok, "z9hG4bK-ack").as_bytes(),
    );
    harness.events();
    assert!(
        harness.run_until(harness.at(40_000)).is_empty(),
        "the INVITE transaction ends quietly"
    );
    dialog.build_request(Method::Bye)
}

#[test]
fn bye_client_transaction_retransmits_with_timer_e_and_times_out_with_timer_f() {
    let mut harness = Harness::new();
    let bye = bye_request(&mut harness);
    let client_txn = harness
        .endpoint
        .send_request(harness.at(41_000), bye, harness.udp)
        .expect("send");
    let events = harness.events();
    let [EndpointEvent::Transmit { bytes, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    let Ok(Message::Request(sent)) = Message::parse(bytes) else {
        panic!("not a request")
    };
    assert_eq!(sent.method(), &Method::Bye);
    assert!(
        sent.headers()
            .top_via()
            .and_then(|via| via.branch)
            .is_some_and(|branch| branch.starts_with("z9hG4bK"))
    );
    let fired = harness.run_until(harness.at(80_000));
    let resends: Vec<u128> = fired
        .iter()
        .filter(|(_, event)| matches!(event, EndpointEvent::Transmit { .. }))
        .map(|(at, _)| at - 41_000)
        .collect();
    assert_eq!(
        resends,
        vec![
            500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ]
    );
    let timeouts: Vec<u128> = fired
        .iter()
        .filter(|(_, event)| *event == EndpointEvent::RequestTimeout { txn: client_txn })
        .map(|(at, _)| at - 41_000)
        .collect();
    assert_eq!(timeouts, vec![32_000]);
}

#[test]
fn bye_over_tcp_uses_timer_f_only_and_reports_the_response() {
    let mut harness = Harness::new();
    let bye = bye_request(&mut harness);
    let tcp = Remote {
        transport: Transport::Tcp,
        connection: Some(ConnectionId(3)),
        ..harness.udp
    };
    let client_txn = harness
        .endpoint
        .send_request(harness.at(41_000), bye, tcp)
        .expect("send");
    let events = harness.events();
    let [EndpointEvent::Transmit { bytes, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    let Ok(Message::Request(sent)) = Message::parse(bytes) else {
        panic!("not a request")
    };
    assert_eq!(
        harness.endpoint.poll_timeout(),
        Some(harness.at(73_000)),
        "only Timer F"
    );
    let ok = Response::for_request(&sent, 200, "OK");
    harness
        .endpoint
        .handle_message(harness.at(41_100), tcp, &ok.to_bytes());
    let events = harness.events();
    assert!(
        matches!(events.as_slice(), [EndpointEvent::Response { txn, response }] if *txn == client_txn && response.status() == 200)
    );
    // A duplicate response matches nothing any more.
    harness
        .endpoint
        .handle_message(harness.at(41_200), tcp, &ok.to_bytes());
    assert!(harness.events().is_empty());
    assert_eq!(harness.endpoint.poll_timeout(), None);
}

#[test]
fn overload_is_refused_with_503_and_retry_after() {
    let mut harness = Harness::new();
    harness.endpoint = Endpoint::new(EndpointConfig {
        max_server_transactions: 1,
        ..EndpointConfig::default()
    });
    harness.receive_invite(0);
    harness
        .endpoint
        .handle_message(harness.at(1), harness.udp, options("z9hG4bK-over").as_bytes());
    let events = harness.events();
    let [EndpointEvent::Transmit { bytes, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    let Ok(Message::Response(response)) = Message::parse(bytes) else {
        panic!("not a response")
    };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get("Retry-After"), Some("5"));
    assert_eq!(harness.endpoint.stats().overload_rejections, 1);
}

#[test]
fn malformed_requests_are_answered_400_naming_the_problem_or_dropped() {
    let mut harness = Harness::new();
    let bad_cseq = options("z9hG4bK-bad").replace("CSeq: 5 OPTIONS", "CSeq: five OPTIONS");
    harness
        .endpoint
        .handle_message(harness.at(0), harness.udp, bad_cseq.as_bytes());
    let events = harness.events();
    assert!(
        events.is_empty(),
        "without a parsable CSeq there is nothing to answer: {events:?}"
    );
    let no_to = options("z9hG4bK-bad").replace("To: <sip:srs@192.0.2.10>\r\n", "");
    harness
        .endpoint
        .handle_message(harness.at(0), harness.udp, no_to.as_bytes());
    let events = harness.events();
    let [EndpointEvent::Transmit { bytes, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(
        bytes.starts_with(b"SIP/2.0 400 Missing To header\r\n"),
        "a response without To is still sent"
    );
    harness
        .endpoint
        .handle_message(harness.at(0), harness.udp, b"\x00\xffgarbage\r\n\r\n");
    assert!(harness.events().is_empty());
    let stats = harness.endpoint.stats();
    assert_eq!((stats.malformed_answered, stats.malformed_dropped), (1, 2));
}

#[test]
fn event_queue_headroom_drops_input_instead_of_growing() {
    let mut harness = Harness::new();
    harness.endpoint = Endpoint::new(EndpointConfig {
        max_events: 3,
        ..EndpointConfig::default()
    });
    harness
        .endpoint
        .handle_message(harness.at(0), harness.udp, options("z9hG4bK-q1").as_bytes());
    harness
        .endpoint
        .handle_message(harness.at(0), harness.udp, options("z9hG4bK-q2").as_bytes());
    assert_eq!(harness.endpoint.stats().inputs_dropped_queue_full, 1);
    assert_eq!(harness.events().len(), 1);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let start = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let base = SIPREC_INVITE.as_bytes();
    for round in 0..2_000 {
        let mut data = base.to_vec();
        for _ in 0..(round % 17) {
            if data.is_empty() {
                break;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let position = (seed as usize) % data.len().max(1);
            let byte = (seed >> 32) as u8;
            match seed % 4 {
                0 => data[position] = byte,
                1 => data.truncate(position),
                2 => data.insert(position, byte),
                _ => data.insert(position, b'\n'),
            }
        }
        airlock_sip::fuzz::parse_and_frame(start, &data);
    }
    for sample in [
        &b""[..],
        b"\r\n",
        b"\r\n\r\n",
        b"SIP/2.0",
        b"SIP/2.0 99999999 x\r\n\r\n",
        b":\r\n\r\n",
        b"A B C\r\n v\r\n\r\n",
    ] {
        airlock_sip::fuzz::parse_and_frame(start, sample);
    }
}
