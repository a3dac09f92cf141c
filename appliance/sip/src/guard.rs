//! The source guard: which peers may talk to us at all, and how fast. Sans-IO: the runtime asks
//! [`SourceGuard::check`] about every inbound message (with the time) before the message reaches the
//! endpoint or any queue behind it, and carries out the [`Verdict`].
//!
//! - **Allow-list.** Requests from a source outside [`GuardConfig::allow`] are refused: answered 403
//!   "Forbidden: source not allowed" statelessly (never ACKs, never responses — those are dropped), so an SBC
//!   misconfiguration is visible at the SBC. An empty list allows everyone. The 403s themselves are capped by
//!   one shared token bucket ([`GuardConfig::forbidden_answers_per_sec`]); beyond it refused messages are
//!   dropped unanswered, so spoofed sources cannot turn the appliance into a reflector. Refused sources are
//!   never tracked, so they cannot fill the rate table.
//! - **Rate limit.** Each allowed source IP has a token bucket ([`GuardConfig::rate_per_sec`] tokens per
//!   second, at most [`GuardConfig::burst`]). Every message costs one token. New requests (INVITE, OPTIONS,
//!   re-INVITE, UPDATE, …) need a whole token. Messages that finish work already admitted — responses (to
//!   our BYE), ACK, BYE and CANCEL — may also borrow from a reserve of one more burst (the balance may go
//!   down to `-burst`), so a source that saturates its rate with new requests still completes and ends the
//!   calls it has; once the reserve is spent they are limited too, so nothing bypasses the limit for long
//!   (a source gets at most `rate × t + 2 × burst` messages through in any interval `t`). Over the limit,
//!   messages are dropped silently: answering would amplify a flood, and UDP peers retransmit.
//! - **Bounded table.** At most [`GuardConfig::max_tracked_sources`] buckets. When a new source arrives and
//!   the table is full, the longest-idle source is evicted only if its bucket has refilled completely (a
//!   full bucket is indistinguishable from a fresh one, so forgetting it loses nothing). Otherwise the new
//!   source is charged against one shared overflow bucket with the same rate and burst: churning through
//!   source addresses can neither reset a tracked source's bucket nor earn fresh bursts. Deploy with an
//!   allow-list so only SBCs can occupy the table.
//!
//! Addresses are keyed in canonical form (an IPv4-mapped IPv6 address is its IPv4 address).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Instant;

use crate::message::{Message, Response, stateless_answer};

/// The reason phrase of the 403 sent to a source outside the allow-list.
pub const FORBIDDEN_REASON: &str = "Forbidden: source not allowed";

/// An IPv4 or IPv6 network: an address and a prefix length. Written `10.0.0.0/8`, `2001:db8::/32`, or a
/// bare address (a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a [`Cidr`] did not parse; `Display` names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not a network: {problem}")]
pub struct CidrError {
    /// The text that was given.
    pub entry: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Cidr {
    /// Whether `addr` (in canonical form) lies inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(addr)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(addr) & mask == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(addr)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(addr) & mask == u128::from(network)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let error = |problem| CidrError {
            entry: text.to_owned(),
            problem,
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| error("not an IPv4 or IPv6 address"))?;
        let network = network.to_canonical();
        let width: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => Some(prefix)
                .filter(|prefix| !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|prefix| prefix.parse::<u8>().ok())
                .filter(|prefix| *prefix <= width)
                .ok_or_else(|| {
                    error("the prefix length must be a number from 0 to 32 (IPv4) or 128 (IPv6)")
                })?,
        };
        let cidr = Cidr { network, prefix };
        if !cidr.contains(network) {
            return Err(error("address bits are set beyond the prefix length"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Limits of the [`SourceGuard`].
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Source networks allowed to send SIP; empty allows every source.
    pub allow: Vec<Cidr>,
    /// Tokens added to each source's bucket per second; 0 disables the rate limit. Default 2000: one SBC
    /// at the design target of 500 call set-ups per second sends INVITE, ACK and BYE per call (1500/s),
    /// plus OPTIONS pings and re-INVITEs.
    pub rate_per_sec: u32,
    /// Most tokens a bucket holds (the largest burst of new requests). Default 4000.
    pub burst: u32,
    /// Most sources with a bucket; see the module docs for what happens when full. Default 4096 (about
    /// 100 bytes each).
    pub max_tracked_sources: usize,
    /// 403 answers to non-allowed sources per second, all sources together; beyond it (plus a burst of
    /// twice as many) refused requests are dropped unanswered. Default 20.
    pub forbidden_answers_per_sec: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            rate_per_sec: 2000,
            burst: 4000,
            max_tracked_sources: 4096,
            forbidden_answers_per_sec: 20,
        }
    }
}

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it to the endpoint.
    Allow,
    /// The source is not on the allow-list: do not process it. When `answer` is true, send back what
    /// [`forbidden_answer`] makes of it (it is a request other than ACK and the answer budget allowed it).
    Forbidden { answer: bool },
    /// The source is over its rate: drop the message without answering.
    RateLimited,
}

/// How a message is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A request that starts new work (or anything unrecognisable).
    NewRequest,
    /// ACK, BYE or CANCEL: completes or ends work already admitted.
    Completing { is_ack: bool },
    /// A response to a request we sent.
    Response,
}

impl Kind {
    /// Classifies by the first token of the start line, without parsing the message.
    fn of(bytes: &[u8]) -> Kind {
        let start = bytes
            .iter()
            .position(|byte| !matches!(byte, b'\r' | b'\n'))
            .unwrap_or(bytes.len());
        let rest = bytes.get(start..).unwrap_or_default();
        let token = rest
            .iter()
            .position(|byte| *byte == b' ')
            .and_then(|end| rest.get(..end))
            .unwrap_or_default();
        match token {
            b"SIP/2.0" => Kind::Response,
            b"ACK" => Kind::Completing { is_ack: true },
            b"BYE" | b"CANCEL" => Kind::Completing { is_ack: false },
            _ => Kind::NewRequest,
        }
    }
}

/// A token bucket. The balance may go negative (down to `-burst`) through the completing-message reserve.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = self.updated.max(now);
    }

    /// Takes one token if the balance allows it: a whole token for new work, or down to `floor` otherwise.
    fn take(&mut self, floor: f64) -> bool {
        if self.tokens - 1.0 < floor {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Whether it would be full at `now`, i.e. equal to a fresh bucket.
    fn refilled_by(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// The allow-list and per-source rate limit. See the module docs.
#[derive(Debug)]
pub struct SourceGuard {
    config: GuardConfig,
    /// At most `config.max_tracked_sources` entries.
    buckets: HashMap<IpAddr, Bucket>,
    /// `(last update, source)` for every entry of `buckets`, oldest first: the eviction order.
    idle_order: BTreeSet<(Instant, IpAddr)>,
    /// Charged for new sources while the table is full of sources that still carry state.
    overflow: Option<Bucket>,
    /// The budget of 403 answers, all refused sources together.
    forbidden_answers: Option<Bucket>,
}

impl SourceGuard {
    /// A guard with no sources tracked yet.
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            buckets: HashMap::new(),
            idle_order: BTreeSet::new(),
            overflow: None,
            forbidden_answers: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Sources with a bucket now (never more than `max_tracked_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }

    /// Decides what happens to `bytes`, a whole message from `source` received at `now`.
    pub fn check(&mut self, now: Instant, source: IpAddr, bytes: &[u8]) -> Verdict {
        let source = source.to_canonical();
        let kind = Kind::of(bytes);
        if !self.allowed(source) {
            let answerable = kind == Kind::NewRequest || kind == Kind::Completing { is_ack: false };
            return Verdict::Forbidden {
                answer: answerable && self.take_forbidden_answer(now),
            };
        }
        if self.config.rate_per_sec == 0 {
            return Verdict::Allow;
        }
        let burst = f64::from(self.config.burst);
        let floor = match kind {
            Kind::NewRequest => 0.0,
            Kind::Completing { .. } | Kind::Response => -burst,
        };
        let rate = f64::from(self.config.rate_per_sec);
        let admitted = match self.bucket_for(now, source) {
            Some(bucket) => {
                bucket.refill(now, rate, burst);
                bucket.take(floor)
            }
            None => {
                let overflow = self.overflow.get_or_insert_with(|| Bucket::full(burst, now));
                overflow.refill(now, rate, burst);
                overflow.take(floor)
            }
        };
        if admitted {
            Verdict::Allow
        } else {
            Verdict::RateLimited
        }
    }

    /// Whether `source` is on the allow-list (always, when the list is empty).
    pub fn allowed(&self, source: IpAddr) -> bool {
        self.config.allow.is_empty() || self.config.allow.iter().any(|cidr| cidr.contains(source))
    }

    fn take_forbidden_answer(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.forbidden_answers_per_sec);
        let burst = rate * 2.0;
        let bucket = self
            .forbidden_answers
            .get_or_insert_with(|| Bucket::full(burst, now));
        bucket.refill(now, rate, burst);
        bucket.take(0.0)
    }

    /// The bucket of `source`, created (evicting a refilled idle source if the table is full) when
    /// missing; `None` when the table is full of sources that still carry state (use the overflow bucket).
    /// The source's place in the idle order is moved to `now`.
    fn bucket_for(&mut self, now: Instant, source: IpAddr) -> Option<&mut Bucket> {
        let burst = f64::from(self.config.burst);
        let rate = f64::from(self.config.rate_per_sec);
        if let Some(bucket) = self.buckets.get(&source) {
            self.idle_order.remove(&(bucket.updated, source));
        } else {
            if self.buckets.len() >= self.config.max_tracked_sources {
                let (updated, oldest) = self.idle_order.first().copied()?;
                let settled = self
                    .buckets
                    .get(&oldest)
                    .is_none_or(|bucket| bucket.refilled_by(now, rate, burst));
                if !settled {
                    return None;
                }
                self.idle_order.remove(&(updated, oldest));
                self.buckets.remove(&oldest);
            }
            self.buckets.insert(source, Bucket::full(burst, now));
        }
        let bucket = self.buckets.get_mut(&source)?;
        // The caller refills it to `now` (or later, never earlier): file it under that.
        self.idle_order.insert((bucket.updated.max(now), source));
        Some(bucket)
    }
}

/// The stateless 403 for a request from a source outside the allow-list, if it can be answered (a request
/// other than ACK with Via, Call-ID and CSeq, even if otherwise malformed).
pub fn forbidden_answer(bytes: &[u8]) -> Option<Vec<u8>> {
    let request = match Message::parse(bytes) {
        Ok(Message::Request(request)) => request,
        Ok(Message::Response(_)) => return None,
        Err(error) => *error.salvaged_request?,
    };
    stateless_answer(&request, 403, FORBIDDEN_REASON)
}

/// The reason phrase of [`rate_limited_answer`].
pub const RATE_LIMITED_REASON: &str = "Rate Limited";

/// A stateless 503 "Rate Limited" with `Retry-After` for a request refused by the rate limit, for stream
/// transports only: a TCP/TLS peer does not retransmit (RFC 3261 §17.1.1.1), so a silent drop would lose its
/// request, while its address cannot be spoofed (no reflection). `None` for responses, ACKs and input too
/// broken to answer.
pub fn rate_limited_answer(bytes: &[u8], retry_after_secs: u32) -> Option<Vec<u8>> {
    let request = match Message::parse(bytes) {
        Ok(Message::Request(request)) => request,
        Ok(Message::Response(_)) => return None,
        Err(error) => *error.salvaged_request?,
    };
    stateless_answer(&request, 503, RATE_LIMITED_REASON)?;
    Some(
        Response::for_request(&request, 503, RATE_LIMITED_REASON)
            .with_header("Retry-After", &retry_after_secs.to_string())
            .to_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    fn invite() -> Vec<u8> {
        b"INVITE sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
From: <sip:src@198.51.100.7>;tag=a\r\nTo: <sip:srs@192.0.2.10>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n"
            .to_vec()
    }

    fn ack() -> Vec<u8> {
        b"ACK sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
From: <sip:src@198.51.100.7>;tag=a\r\nTo: <sip:srs@192.0.2.10>;tag=b\r\nCall-ID: c1\r\nCSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n"
            .to_vec()
    }

    fn response() -> Vec<u8> {
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK2\r\nFrom: <sip:srs@192.0.2.10>;tag=b\r\n\
To: <sip:src@198.51.100.7>;tag=a\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            .to_vec()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn cidrs(entries: &[&str]) -> Vec<Cidr> {
        entries.iter().map(|e| e.parse().expect("cidr")).collect()
    }

    #[test]
    fn rate_limited_requests_on_streams_get_503_with_retry_after() {
        let answer = rate_limited_answer(&invite(), 2).expect("an INVITE is answerable");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("SIP/2.0 503 Rate Limited\r\n"), "{text}");
        assert!(text.contains("\r\nRetry-After: 2\r\n"), "{text}");
        let ack = String::from_utf8_lossy(&invite())
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK");
        assert!(
            rate_limited_answer(ack.as_bytes(), 2).is_none(),
            "never answer an ACK"
        );
        assert!(rate_limited_answer(b"SIP/2.0 200 OK\r\n\r\n", 2).is_none());
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.0.0.0/8".parse().expect("v4 net");
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped())));
        let host: Cidr = "192.0.2.7".parse().expect("host");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6 net");
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all v4");
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!("::/0".parse::<Cidr>().expect("all v6").contains(ip("::1")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn bad_cidrs_name_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "example.com",
            "10.0.0.0/",
            "::/129",
            "10.0.0.0/+8",
            "",
        ] {
            let error = bad.parse::<Cidr>().expect_err(bad);
            assert_eq!(error.entry, bad);
            assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
        }
        let error = "10.0.0.1/8".parse::<Cidr>().expect_err("host bits");
        assert!(error.to_string().contains("beyond the prefix"), "{error}");
    }

    #[test]
    fn allow_list_refuses_others_and_answers_403_to_requests_only() {
        let mut guard = SourceGuard::new(GuardConfig {
            allow: cidrs(&["10.0.0.0/8", "192.0.2.7"]),
            ..GuardConfig::default()
        });
        let now = Instant::now();
        assert_eq!(guard.check(now, ip("10.1.2.3"), &invite()), Verdict::Allow);
        assert_eq!(guard.check(now, ip("192.0.2.7"), &invite()), Verdict::Allow);
        let stranger = ip("192.0.2.8");
        assert_eq!(
            guard.check(now, stranger, &invite()),
            Verdict::Forbidden { answer: true }
        );
        assert_eq!(
            guard.check(now, stranger, &ack()),
            Verdict::Forbidden { answer: false }
        );
        assert_eq!(
            guard.check(now, stranger, &response()),
            Verdict::Forbidden { answer: false }
        );
        assert_eq!(guard.tracked_sources(), 2, "refused sources are never tracked");

        let answer = forbidden_answer(&invite()).expect("answerable");
        let text = String::from_utf8(answer).expect("utf-8");
        assert!(
            text.starts_with("SIP/2.0 403 Forbidden: source not allowed\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Call-ID: c1") && text.contains("CSeq: 1 INVITE"),
            "{text}"
        );
        assert_eq!(forbidden_answer(&ack()), None);
        assert_eq!(forbidden_answer(&response()), None);
        assert_eq!(forbidden_answer(b"\x00garbage"), None);
    }

    #[test]
    fn empty_allow_list_allows_everyone() {
        let mut guard = SourceGuard::new(GuardConfig::default());
        let now = Instant::now();
        assert_eq!(guard.check(now, ip("203.0.113.1"), &invite()), Verdict::Allow);
        assert_eq!(guard.check(now, ip("2001:db8::1"), &invite()), Verdict::Allow);
    }

    #[test]
    fn forbidden_answers_share_one_budget() {
        let mut guard = SourceGuard::new(GuardConfig {
            allow: cidrs(&["10.0.0.0/8"]),
            forbidden_answers_per_sec: 5,
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let answered = (0..100u8)
            .filter(|i| {
                let source = IpAddr::V4(Ipv4Addr::new(192, 0, 2, *i));
                guard.check(start, source, &invite()) == Verdict::Forbidden { answer: true }
            })
            .count();
        assert_eq!(answered, 10, "burst of twice the rate");
        let later = start + Duration::from_secs(1);
        assert_eq!(
            guard.check(later, ip("192.0.2.1"), &invite()),
            Verdict::Forbidden { answer: true }
        );
    }

    #[test]
    fn rate_limit_admits_burst_then_rate() {
        let mut guard = SourceGuard::new(GuardConfig {
            rate_per_sec: 10,
            burst: 20,
            ..GuardConfig::default()
        });
        let source = ip("10.0.0.1");
        let start = Instant::now();
        let admitted = (0..50)
            .filter(|_| guard.check(start, source, &invite()) == Verdict::Allow)
            .count();
        assert_eq!(admitted, 20);
        // 1 s later: 10 more tokens.
        let later = start + Duration::from_secs(1);
        let admitted = (0..50)
            .filter(|_| guard.check(later, source, &invite()) == Verdict::Allow)
            .count();
        assert_eq!(admitted, 10);
        // A second source has its own bucket.
        assert_eq!(guard.check(later, ip("10.0.0.2"), &invite()), Verdict::Allow);
        // Over a long run the rate holds: 100 s at 100 requests/s admits about 10/s.
        let mut admitted = 0;
        for tick in 1..=10_000u64 {
            let now = later + Duration::from_millis(10 * tick);
            if guard.check(now, source, &invite()) == Verdict::Allow {
                admitted += 1;
            }
        }
        assert!((999..=1001).contains(&admitted), "{admitted}");
    }

    #[test]
    fn completing_messages_use_a_reserve_but_are_bounded() {
        let mut guard = SourceGuard::new(GuardConfig {
            rate_per_sec: 10,
            burst: 20,
            ..GuardConfig::default()
        });
        let source = ip("10.0.0.1");
        let now = Instant::now();
        while guard.check(now, source, &invite()) == Verdict::Allow {}
        assert_eq!(guard.check(now, source, &invite()), Verdict::RateLimited);
        // The flood's own new requests are limited, yet ACKs, BYEs and responses still get through ...
        assert_eq!(guard.check(now, source, &ack()), Verdict::Allow);
        assert_eq!(guard.check(now, source, &response()), Verdict::Allow);
        assert_eq!(
            guard.check(now, source, b"BYE sip:x SIP/2.0\r\n\r\n"),
            Verdict::Allow
        );
        assert_eq!(
            guard.check(now, source, b"\r\nCANCEL sip:x SIP/2.0\r\n\r\n"),
            Verdict::Allow
        );
        // ... until the reserve of one burst is spent.
        let more = (0..100)
            .filter(|_| guard.check(now, source, &ack()) == Verdict::Allow)
            .count();
        assert_eq!(more, 16);
        assert_eq!(guard.check(now, source, &response()), Verdict::RateLimited);
        // The debt is paid back before new requests pass again: 4 s to climb from -20 to +1 at 10/s.
        let later = now + Duration::from_millis(2_000);
        assert_eq!(guard.check(later, source, &invite()), Verdict::RateLimited);
        let later = now + Duration::from_millis(4_100);
        assert_eq!(guard.check(later, source, &invite()), Verdict::Allow);
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let mut guard = SourceGuard::new(GuardConfig {
            rate_per_sec: 0,
            ..GuardConfig::default()
        });
        let now = Instant::now();
        assert!((0..10_000).all(|_| guard.check(now, ip("10.0.0.1"), &invite()) == Verdict::Allow));
        assert_eq!(guard.tracked_sources(), 0);
    }

    #[test]
    fn full_table_evicts_only_refilled_sources_else_shares_overflow() {
        let mut guard = SourceGuard::new(GuardConfig {
            rate_per_sec: 10,
            burst: 5,
            max_tracked_sources: 2,
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let (a, b, c, d) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4"));
        let admitted = |guard: &mut SourceGuard, now, source, tries| {
            (0..tries)
                .filter(|_| guard.check(now, source, &invite()) == Verdict::Allow)
                .count()
        };
        assert_eq!(admitted(&mut guard, start, a, 6), 5);
        let t1 = start + Duration::from_millis(10);
        assert_eq!(admitted(&mut guard, t1, b, 1), 1);
        // Table full and its longest-idle source (a) still owes tokens: c and d share one overflow bucket.
        let shared = (0..10)
            .filter(|i| {
                let source = if i % 2 == 0 { c } else { d };
                guard.check(t1, source, &invite()) == Verdict::Allow
            })
            .count();
        assert_eq!(shared, 5);
        assert_eq!(guard.tracked_sources(), 2);
        // a was not evicted, so the churn did not reset its limit: 200 ms refilled 2 tokens, not 5.
        let mid = start + Duration::from_millis(200);
        assert_eq!(admitted(&mut guard, mid, a, 5), 2);
        // Now b is the longest idle and has refilled completely: c takes its place with its own bucket.
        assert_eq!(admitted(&mut guard, mid, c, 10), 5);
        assert_eq!(guard.tracked_sources(), 2);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut guard = SourceGuard::new(GuardConfig {
            rate_per_sec: 1,
            burst: 1,
            ..GuardConfig::default()
        });
        let now = Instant::now() + Duration::from_secs(10);
        assert_eq!(guard.check(now, ip("10.0.0.1"), &invite()), Verdict::Allow);
        let earlier = now - Duration::from_secs(5);
        assert_eq!(
            guard.check(earlier, ip("10.0.0.1"), &invite()),
            Verdict::RateLimited
        );
        assert_eq!(
            guard.check(now + Duration::from_secs(1), ip("10.0.0.1"), &invite()),
            Verdict::Allow
        );
    }
}
