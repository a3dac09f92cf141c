//! The deadline index against a brute-force scan of every timer: random sequences of requests,
//! retransmissions, responses, ACKs, CANCELs, requests we send, their responses and timeouts, drawn from a
//! small deterministic PRNG, with a small event queue so deferred timers are exercised too. After every
//! step `poll_timeout` must equal the scanned minimum and every timer owner must be filed exactly once,
//! under its earliest deadline.

use std::net::{Ipv4Addr, SocketAddr};

use super::*;
use crate::transport::{ConnectionId, Transport};

/// SplitMix64: deterministic, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn index(&mut self, len: usize) -> Option<usize> {
        (len > 0).then(|| (self.next() % len as u64) as usize)
    }
}

/// The earliest deadline found by visiting every timer (what `poll_timeout` did before the index).
fn scanned_timeout(endpoint: &Endpoint) -> Option<Instant> {
    let server = endpoint
        .server_txns
        .values()
        .flat_map(|txn| [txn.retransmit.map(|retransmit| retransmit.at), txn.ends_at])
        .flatten();
    let acks = endpoint
        .pending_acks
        .values()
        .map(|pending| pending.retransmit_at.min(pending.gives_up_at));
    let client = endpoint
        .client_txns
        .values()
        .flat_map(|txn| [txn.retransmit.map(|retransmit| retransmit.at), Some(txn.ends_at)])
        .flatten();
    server.chain(acks).chain(client).min()
}

fn assert_index_consistent(endpoint: &Endpoint) {
    let server: BTreeSet<(Instant, ServerTxnId)> = endpoint
        .server_txns
        .values()
        .filter_map(|txn| {
            assert_eq!(txn.scheduled, txn.next_deadline(), "server txn {:?}", txn.id);
            txn.scheduled.map(|at| (at, txn.id))
        })
        .collect();
    assert_eq!(server, endpoint.server_deadlines.entries);
    let acks: BTreeSet<(Instant, ServerTxnId)> = endpoint
        .pending_acks
        .iter()
        .filter_map(|(key, pending)| {
            assert_eq!(pending.scheduled, pending.next_deadline());
            assert_eq!(endpoint.pending_ack_keys.get(&pending.txn), Some(key));
            pending.scheduled.map(|at| (at, pending.txn))
        })
        .collect();
    assert_eq!(acks, endpoint.ack_deadlines.entries);
    assert_eq!(endpoint.pending_ack_keys.len(), endpoint.pending_acks.len());
    let client: BTreeSet<(Instant, ClientTxnId)> = endpoint
        .client_txns
        .values()
        .filter_map(|txn| {
            assert_eq!(txn.scheduled, txn.next_deadline(), "client txn {:?}", txn.id);
            txn.scheduled.map(|at| (at, txn.id))
        })
        .collect();
    assert_eq!(client, endpoint.client_deadlines.entries);
}

/// Branches the peer draws from: small, so retransmissions and reused keys are frequent.
const BRANCHES: u64 = 24;

/// Every third branch arrives over TCP, the rest over UDP.
fn remote_for(branch: u64) -> Remote {
    let addr = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 5060));
    if branch.is_multiple_of(3) {
        Remote {
            transport: Transport::Tcp,
            addr,
            connection: Some(ConnectionId(branch)),
        }
    } else {
        Remote {
            transport: Transport::Udp,
            addr,
            connection: None,
        }
    }
}

fn peer_request(method: &str, branch: u64) -> String {
    let transport = remote_for(branch).transport.via_token();
    format!(
        "{method} sip:srs@192.0.2.10:5060 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 198.51.100.7:5060;branch=z9hG4bK-p{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:src@198.51.100.7>;tag=f{branch}\r\n\
         To: <sip:srs@192.0.2.10>\r\n\
         Call-ID: p{branch}@198.51.100.7\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:src@198.51.100.7:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn ack(response: &Response, via_branch: &str, remote: Remote) -> String {
    let headers = response.headers();
    format!(
        "ACK sip:src@198.51.100.7:5060 SIP/2.0\r\n\
         Via: SIP/2.0/{} 198.51.100.7:5060;branch={via_branch}\r\n\
         Max-Forwards: 70\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        remote.transport.via_token(),
        headers.get("From").unwrap_or_default(),
        headers.get("To").unwrap_or_default(),
        headers.call_id().unwrap_or_default(),
    )
}

fn our_bye(seq: u64) -> Request {
    let mut bye = Request::new(Method::Bye, "sip:src@198.51.100.7:5060");
    let headers = bye.headers_mut();
    headers.set("Max-Forwards", "70");
    headers.set("From", "<sip:srs@192.0.2.10>;tag=srs");
    headers.set("To", "<sip:src@198.51.100.7>;tag=src");
    headers.set("Call-ID", &format!("ours-{seq}@192.0.2.10"));
    headers.set("CSeq", &format!("{seq} BYE"));
    bye
}

/// What the simulated peer and transaction user remember between steps.
#[derive(Default)]
struct World {
    /// Requests surfaced to the transaction user, maybe still unanswered.
    unanswered: Vec<(ServerTxnId, Request, Remote)>,
    /// Final responses to INVITEs: (INVITE branch, remote, response), for ACKs.
    answered_invites: Vec<(String, Remote, Response)>,
    /// Requests we sent (and their retransmissions), for the peer to answer.
    sent: Vec<(Request, Remote)>,
    acks_sent: u64,
    byes_sent: u64,
}

impl World {
    fn drain(&mut self, endpoint: &mut Endpoint) {
        while let Some(event) = endpoint.poll_event() {
            match event {
                EndpointEvent::Request { txn, request, from } => self.unanswered.push((txn, request, from)),
                EndpointEvent::Transmit { to, bytes } => {
                    if let Ok(Message::Request(request)) = Message::parse(&bytes) {
                        self.sent.push((request, to));
                    }
                }
                _ => {}
            }
        }
    }
}

fn step(rng: &mut Rng, endpoint: &mut Endpoint, world: &mut World, now: &mut Instant) {
    match rng.below(12) {
        0..=2 => {
            let method = ["INVITE", "OPTIONS", "BYE"][rng.below(3) as usize];
            let branch = rng.below(BRANCHES);
            let text = peer_request(method, branch);
            endpoint.handle_message(*now, remote_for(branch), text.as_bytes());
        }
        3 => {
            let Some(at) = world
                .unanswered
                .get(rng.index(world.unanswered.len()).unwrap_or(usize::MAX))
            else {
                return;
            };
            let (txn, request, from) = at.clone();
            let (status, reason) =
                [(100, "Trying"), (180, "Ringing"), (200, "OK"), (486, "Busy Here")][rng.below(4) as usize];
            let response = Response::for_request(&request, status, reason);
            let sent = endpoint.respond(*now, txn, response.clone());
            let finished = matches!(
                sent,
                Err(EndpointError::UnknownTransaction | EndpointError::FinalResponseAlreadySent)
            ) || (sent.is_ok() && status >= 200);
            if finished {
                world.unanswered.retain(|(other, ..)| *other != txn);
            }
            if sent.is_ok() && status >= 200 && *request.method() == Method::Invite {
                let branch = request
                    .headers()
                    .top_via()
                    .and_then(|via| via.branch)
                    .unwrap_or_default();
                world.answered_invites.push((branch, from, response));
            }
        }
        4 => {
            let Some(index) = rng.index(world.answered_invites.len()) else {
                return;
            };
            let (branch, remote, response) = world.answered_invites[index].clone();
            // The ACK to a non-2xx reuses the INVITE's branch; the ACK to a 2xx is a new transaction.
            let via_branch = if rng.below(2) == 0 {
                branch
            } else {
                world.acks_sent += 1;
                format!("z9hG4bK-ack-{}", world.acks_sent)
            };
            let text = ack(&response, &via_branch, remote);
            endpoint.handle_message(*now, remote, text.as_bytes());
        }
        5 => {
            let branch = rng.below(BRANCHES);
            let text = peer_request("CANCEL", branch);
            endpoint.handle_message(*now, remote_for(branch), text.as_bytes());
        }
        6 => {
            world.byes_sent += 1;
            let branch = rng.below(BRANCHES);
            // Refusals (queue full, too many) are part of what is exercised.
            let _ = endpoint.send_request(*now, our_bye(world.byes_sent), remote_for(branch));
        }
        7 => {
            let Some(index) = rng.index(world.sent.len()) else {
                return;
            };
            let (request, remote) = world.sent[index].clone();
            let (status, reason) = [
                (100, "Trying"),
                (180, "Ringing"),
                (200, "OK"),
                (481, "No Such Call"),
            ][rng.below(4) as usize];
            let response = Response::for_request(&request, status, reason);
            endpoint.handle_message(*now, remote, &response.to_bytes());
        }
        8 => *now += Duration::from_millis(rng.below(4_000)),
        9 => endpoint.handle_timeout(*now),
        10 => {
            if let Some(deadline) = endpoint.poll_timeout() {
                *now = (*now).max(deadline);
                endpoint.handle_timeout(*now);
            }
        }
        _ => world.drain(endpoint),
    }
}

fn run(seed: u64, steps: usize) -> EndpointStats {
    let mut rng = Rng(seed);
    let mut endpoint = Endpoint::new(EndpointConfig {
        max_server_transactions: 40,
        max_client_transactions: 16,
        max_events: 12,
        ..EndpointConfig::default()
    });
    let mut world = World::default();
    let mut now = Instant::now();
    for index in 0..steps {
        step(&mut rng, &mut endpoint, &mut world, &mut now);
        assert_eq!(
            endpoint.poll_timeout(),
            scanned_timeout(&endpoint),
            "seed {seed}, step {index}"
        );
        assert_index_consistent(&endpoint);
    }
    // Answer what the transaction user still owes (those transactions have no timer of their own), then
    // run every timer out: the index must empty with the transactions.
    world.drain(&mut endpoint);
    for (txn, request, _) in std::mem::take(&mut world.unanswered) {
        world.drain(&mut endpoint);
        let _ = endpoint.respond(
            now,
            txn,
            Response::for_request(&request, 500, "Server Internal Error"),
        );
    }
    while let Some(deadline) = endpoint.poll_timeout() {
        now = now.max(deadline);
        endpoint.handle_timeout(now);
        world.drain(&mut endpoint);
        assert_index_consistent(&endpoint);
    }
    assert_eq!(endpoint.server_transaction_count(), 0);
    assert!(endpoint.pending_acks.is_empty() && endpoint.client_txns.is_empty());
    endpoint.stats()
}

#[test]
fn indexed_poll_timeout_matches_a_scan_of_every_timer() {
    let mut totals = EndpointStats::default();
    for seed in 1..=6 {
        let stats = run(seed, 6_000);
        totals.retransmissions_sent += stats.retransmissions_sent;
        totals.retransmissions_absorbed += stats.retransmissions_absorbed;
        totals.ack_timeouts += stats.ack_timeouts;
        totals.request_timeouts += stats.request_timeouts;
        totals.inputs_dropped_queue_full += stats.inputs_dropped_queue_full;
        totals.overload_rejections += stats.overload_rejections;
        totals.responses_received += stats.responses_received;
    }
    // The sequences reached every kind of timer and both limits.
    assert!(totals.retransmissions_sent > 0, "{totals:?}");
    assert!(totals.retransmissions_absorbed > 0, "{totals:?}");
    assert!(totals.ack_timeouts > 0, "{totals:?}");
    assert!(totals.request_timeouts > 0, "{totals:?}");
    assert!(totals.inputs_dropped_queue_full > 0, "{totals:?}");
    assert!(totals.overload_rejections > 0, "{totals:?}");
    assert!(totals.responses_received > 0, "{totals:?}");
}
