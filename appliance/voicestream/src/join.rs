//! [`CallJoiner`]: groups the legs (streams) of one Five9 call, keyed on the exact (domain_id,
//! vcc_call_id) strings, and decides when a call is over.
//!
//! Owns call admission for VoiceStream (a cap on open calls and on concurrent legs per call), the opaque
//! [`CallKey`] a call is known by everywhere downstream (never the Five9 call id, which is PII), and the
//! linger after the last leg ended: a late or reconnecting leg (Five9's `SRV_REQ_RECONNECT` flow, or a
//! leg that starts after another ended) joins the same call while it is open or lingering. When the
//! linger has passed, the call is offered by [`CallJoiner::poll_finished`] for finalisation. Sans-IO:
//! time is a parameter and the linger deadlines are offered by [`CallJoiner::poll_timeout`].
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use airlock_telemetry::Pii;

use crate::session::{LegInfo, grpc_code};

/// Limits of the joiner.
#[derive(Debug, Clone)]
pub struct JoinerConfig {
    /// Calls held at once: open, lingering, or finished and not yet taken by `poll_finished`.
    pub max_calls: usize,
    /// Legs of one call streaming at once (e.g. 8: agent, customer, supervisor, conference legs,
    /// overlapping reconnects).
    pub max_legs_per_call: usize,
    /// After the last leg ended, how long to wait for a late or reconnecting leg before the call is
    /// finished.
    pub linger: Duration,
}

impl Default for JoinerConfig {
    fn default() -> Self {
        JoinerConfig {
            max_calls: 256,
            max_legs_per_call: 8,
            linger: Duration::from_secs(5),
        }
    }
}

/// Our identifier for a VoiceStream call: opaque, never derived from the Five9 ids. Displays as sixteen
/// hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(u64);

impl CallKey {
    /// SplitMix64 of seed + counter: a bijection, so distinct counters never collide for one seed.
    fn from_counter(seed: u64, counter: u64) -> CallKey {
        let mut z = seed.wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        CallKey(z ^ (z >> 31))
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What to do with a leg that started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinDecision {
    /// The first leg of a new call.
    NewCall { call: CallKey },
    /// A further, late or reconnecting leg of an open or lingering call.
    Joined { call: CallKey },
    /// Not admitted: end the stream with `refusal.grpc_code()` after a `refusal.status_code()` response.
    Refused(JoinRefusal),
}

/// Why a leg was not admitted. Our limits, not the client's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JoinRefusal {
    /// `max_calls` calls are held.
    #[error("too many calls")]
    TooManyCalls,
    /// The call has `max_legs_per_call` legs streaming.
    #[error("too many legs for this call")]
    TooManyLegs,
    /// The appliance takes no new calls now: what waits to leave it is near its storage limit. Decided by
    /// the runtime (the joiner knows nothing of storage); legs of calls already recording are not refused.
    #[error("no room for new calls: the appliance's outbox is full")]
    OutboxFull,
}

impl JoinRefusal {
    /// gRPC RESOURCE_EXHAUSTED (8) for all.
    pub fn grpc_code(&self) -> i32 {
        grpc_code::RESOURCE_EXHAUSTED
    }

    /// Five9 `SRV_ERROR_NO_RESOURCE` (1100).
    pub fn status_code(&self) -> i32 {
        crate::proto::streaming_status::StatusCode::SrvErrorNoResource as i32
    }

    /// A human reason without PII.
    pub fn message(&self) -> &'static str {
        match self {
            JoinRefusal::TooManyCalls => "too many calls",
            JoinRefusal::TooManyLegs => "too many legs for this call",
            JoinRefusal::OutboxFull => "no room for new calls: the appliance's outbox is full",
        }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            JoinRefusal::TooManyCalls => "too_many_calls",
            JoinRefusal::TooManyLegs => "too_many_legs",
            JoinRefusal::OutboxFull => "outbox_full",
        }
    }
}

/// (domain_id, vcc_call_id), compared exactly.
type Identity = Pii<(String, String)>;

#[derive(Debug)]
struct Call {
    identity: Identity,
    /// Legs streaming now.
    active_legs: usize,
    /// Set while no leg is streaming.
    linger_until: Option<Instant>,
}

/// Joins legs into calls. See the module doc.
#[derive(Debug)]
pub struct CallJoiner {
    config: JoinerConfig,
    seed: u64,
    counter: u64,
    calls: HashMap<CallKey, Call>,
    by_identity: HashMap<Identity, CallKey>,
    /// Linger deadlines of calls with no leg.
    deadlines: BTreeSet<(Instant, CallKey)>,
    /// Finished calls not yet taken by `poll_finished`; they count toward `max_calls`.
    finished: VecDeque<CallKey>,
}

impl CallJoiner {
    /// `seed` makes the call keys of this process unpredictable (the runtime passes a random one).
    pub fn new(config: JoinerConfig, seed: u64) -> Self {
        CallJoiner {
            config,
            seed,
            counter: 0,
            calls: HashMap::new(),
            by_identity: HashMap::new(),
            deadlines: BTreeSet::new(),
            finished: VecDeque::new(),
        }
    }

    /// A leg's config was accepted ([`crate::LegOutput::Started`]): which call it belongs to.
    pub fn leg_started(&mut self, _now: Instant, info: &LegInfo) -> JoinDecision {
        let identity: Identity =
            Pii::new((info.domain_id.expose().clone(), info.vcc_call_id.expose().clone()));
        if let Some(&key) = self.by_identity.get(&identity)
            && let Some(call) = self.calls.get_mut(&key)
        {
            if call.active_legs >= self.config.max_legs_per_call {
                return JoinDecision::Refused(JoinRefusal::TooManyLegs);
            }
            call.active_legs += 1;
            if let Some(deadline) = call.linger_until.take() {
                self.deadlines.remove(&(deadline, key));
            }
            return JoinDecision::Joined { call: key };
        }
        if self.calls.len() + self.finished.len() >= self.config.max_calls {
            return JoinDecision::Refused(JoinRefusal::TooManyCalls);
        }
        if self.config.max_legs_per_call == 0 {
            return JoinDecision::Refused(JoinRefusal::TooManyLegs);
        }
        let key = self.next_key();
        self.by_identity.insert(identity.clone(), key);
        self.calls.insert(
            key,
            Call {
                identity,
                active_legs: 1,
                linger_until: None,
            },
        );
        JoinDecision::NewCall { call: key }
    }

    /// A leg of `call` ended (any [`crate::LegEnd`] or refusal after it joined). When it was the last
    /// streaming leg, the call lingers. Unknown or already finished calls are ignored.
    pub fn leg_ended(&mut self, now: Instant, call: CallKey) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        if entry.active_legs == 0 {
            return;
        }
        entry.active_legs -= 1;
        if entry.active_legs == 0 {
            let deadline = now + self.config.linger;
            entry.linger_until = Some(deadline);
            self.deadlines.insert((deadline, call));
        }
    }

    /// Finishes the calls whose linger has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(call) = self.calls.remove(&key) {
                self.by_identity.remove(&call.identity);
                self.finished.push_back(key);
            }
        }
    }

    /// Forgets `call` at once, legs and all (its recording failed): a later leg with the same ids starts a
    /// new call. It is not reported by `poll_finished`.
    pub fn abandon(&mut self, call: CallKey) {
        if let Some(entry) = self.calls.remove(&call) {
            self.by_identity.remove(&entry.identity);
            if let Some(deadline) = entry.linger_until {
                self.deadlines.remove(&(deadline, call));
            }
        }
    }

    /// The earliest linger deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// A call whose legs all ended and whose linger passed: finalise it. A later leg with the same ids
    /// starts a new call.
    pub fn poll_finished(&mut self) -> Option<CallKey> {
        self.finished.pop_front()
    }

    /// Calls open or lingering (not counting finished calls waiting in `poll_finished`).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Legs streaming now in `call`.
    pub fn active_legs(&self, call: CallKey) -> usize {
        self.calls.get(&call).map_or(0, |entry| entry.active_legs)
    }

    fn next_key(&mut self) -> CallKey {
        let key = CallKey::from_counter(self.seed, self.counter);
        self.counter = self.counter.wrapping_add(1);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{AudioEncoding, CallLeg};

    fn leg(domain: &str, call: &str, call_leg: CallLeg) -> LegInfo {
        LegInfo {
            vcc_call_id: Pii::new(call.into()),
            domain_id: Pii::new(domain.into()),
            campaign_id: Pii::default(),
            agent_id: Pii::default(),
            skill_id: Pii::default(),
            subscription_id: "sub".into(),
            call_leg,
            sample_rate: 8000,
            encoding: AudioEncoding::Linear16,
        }
    }

    fn joiner(max_calls: usize, max_legs_per_call: usize) -> CallJoiner {
        CallJoiner::new(
            JoinerConfig {
                max_calls,
                max_legs_per_call,
                linger: Duration::from_secs(5),
            },
            42,
        )
    }

    fn new_call(decision: JoinDecision) -> CallKey {
        match decision {
            JoinDecision::NewCall { call } => call,
            other => panic!("not a new call: {other:?}"),
        }
    }

    #[test]
    fn legs_of_one_call_join() {
        let t0 = Instant::now();
        let mut joiner = joiner(4, 8);
        let call = new_call(joiner.leg_started(t0, &leg("d", "100", CallLeg::Agent)));
        assert_eq!(
            joiner.leg_started(t0, &leg("d", "100", CallLeg::Customer)),
            JoinDecision::Joined { call }
        );
        assert_eq!(joiner.active_calls(), 1);
        assert_eq!(joiner.active_legs(call), 2);
        // Same call id in another domain, or another call id: other calls.
        let other_domain = new_call(joiner.leg_started(t0, &leg("e", "100", CallLeg::Agent)));
        let other_call = new_call(joiner.leg_started(t0, &leg("d", "1000", CallLeg::Agent)));
        assert_ne!(other_domain, call);
        assert_ne!(other_call, call);
        assert_ne!(other_call, other_domain);
        // Exact comparison: no trimming or case folding.
        assert!(matches!(
            joiner.leg_started(t0, &leg("D", "100", CallLeg::Agent)),
            JoinDecision::NewCall { .. }
        ));
        assert_eq!(joiner.active_calls(), 4);
    }

    #[test]
    fn call_finishes_after_the_linger() {
        let t0 = Instant::now();
        let mut joiner = joiner(4, 8);
        let call = new_call(joiner.leg_started(t0, &leg("d", "100", CallLeg::Agent)));
        joiner.leg_started(t0, &leg("d", "100", CallLeg::Customer));
        assert_eq!(joiner.poll_timeout(), None);
        joiner.leg_ended(t0 + Duration::from_secs(60), call);
        assert_eq!(joiner.poll_timeout(), None);
        let last_end = t0 + Duration::from_secs(61);
        joiner.leg_ended(last_end, call);
        assert_eq!(joiner.poll_timeout(), Some(last_end + Duration::from_secs(5)));
        joiner.handle_timeout(last_end + Duration::from_millis(4999));
        assert_eq!(joiner.poll_finished(), None);
        joiner.handle_timeout(last_end + Duration::from_secs(5));
        assert_eq!(joiner.poll_finished(), Some(call));
        assert_eq!(joiner.poll_finished(), None);
        assert_eq!(joiner.active_calls(), 0);
        assert_eq!(joiner.poll_timeout(), None);
        // The same ids later are a new call; stray ends of the old one are ignored.
        joiner.leg_ended(last_end, call);
        let again = new_call(joiner.leg_started(
            last_end + Duration::from_secs(6),
            &leg("d", "100", CallLeg::Agent),
        ));
        assert_ne!(again, call);
    }

    #[test]
    fn reconnecting_leg_joins_while_lingering() {
        let t0 = Instant::now();
        let mut joiner = joiner(4, 8);
        let call = new_call(joiner.leg_started(t0, &leg("d", "100", CallLeg::Customer)));
        joiner.leg_ended(t0 + Duration::from_secs(1), call);
        assert!(joiner.poll_timeout().is_some());
        assert_eq!(
            joiner.leg_started(t0 + Duration::from_secs(3), &leg("d", "100", CallLeg::Customer)),
            JoinDecision::Joined { call }
        );
        assert_eq!(joiner.poll_timeout(), None);
        joiner.handle_timeout(t0 + Duration::from_secs(100));
        assert_eq!(joiner.poll_finished(), None);
        joiner.leg_ended(t0 + Duration::from_secs(100), call);
        joiner.handle_timeout(t0 + Duration::from_secs(105));
        assert_eq!(joiner.poll_finished(), Some(call));
    }

    #[test]
    fn overlapping_reconnect_of_the_same_role_joins() {
        let t0 = Instant::now();
        let mut joiner = joiner(4, 8);
        let call = new_call(joiner.leg_started(t0, &leg("d", "100", CallLeg::Agent)));
        assert_eq!(
            joiner.leg_started(t0, &leg("d", "100", CallLeg::Agent)),
            JoinDecision::Joined { call }
        );
        joiner.leg_ended(t0, call);
        assert_eq!(joiner.poll_timeout(), None);
        assert_eq!(joiner.active_legs(call), 1);
    }

    #[test]
    fn too_many_calls() {
        let t0 = Instant::now();
        let mut joiner = joiner(2, 8);
        let first = new_call(joiner.leg_started(t0, &leg("d", "1", CallLeg::Agent)));
        new_call(joiner.leg_started(t0, &leg("d", "2", CallLeg::Agent)));
        let refused = joiner.leg_started(t0, &leg("d", "3", CallLeg::Agent));
        assert_eq!(refused, JoinDecision::Refused(JoinRefusal::TooManyCalls));
        assert_eq!(JoinRefusal::TooManyCalls.grpc_code(), 8);
        assert_eq!(JoinRefusal::TooManyCalls.status_code(), 1100);
        // Legs of held calls still join.
        assert!(matches!(
            joiner.leg_started(t0, &leg("d", "1", CallLeg::Customer)),
            JoinDecision::Joined { .. }
        ));
        // A finished call counts until it is taken.
        joiner.leg_ended(t0, first);
        joiner.leg_ended(t0, first);
        joiner.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(joiner.active_calls(), 1);
        assert_eq!(
            joiner.leg_started(t0, &leg("d", "3", CallLeg::Agent)),
            JoinDecision::Refused(JoinRefusal::TooManyCalls)
        );
        assert_eq!(joiner.poll_finished(), Some(first));
        assert!(matches!(
            joiner.leg_started(t0, &leg("d", "3", CallLeg::Agent)),
            JoinDecision::NewCall { .. }
        ));
    }

    #[test]
    fn too_many_legs() {
        let t0 = Instant::now();
        let mut joiner = joiner(2, 2);
        let call = new_call(joiner.leg_started(t0, &leg("d", "1", CallLeg::Agent)));
        joiner.leg_started(t0, &leg("d", "1", CallLeg::Customer));
        assert_eq!(
            joiner.leg_started(t0, &leg("d", "1", CallLeg::Supervisor)),
            JoinDecision::Refused(JoinRefusal::TooManyLegs)
        );
        assert_eq!(JoinRefusal::TooManyLegs.grpc_code(), 8);
        joiner.leg_ended(t0, call);
        assert!(matches!(
            joiner.leg_started(t0, &leg("d", "1", CallLeg::Supervisor)),
            JoinDecision::Joined { .. }
        ));
        let mut none = joiner_with_no_legs();
        assert_eq!(
            none.leg_started(t0, &leg("d", "1", CallLeg::Agent)),
            JoinDecision::Refused(JoinRefusal::TooManyLegs)
        );
        assert_eq!(none.active_calls(), 0);
    }

    fn joiner_with_no_legs() -> CallJoiner {
        joiner(2, 0)
    }

    #[test]
    fn many_calls_finish_in_deadline_order() {
        let t0 = Instant::now();
        let mut joiner = joiner(100, 8);
        let calls: Vec<CallKey> = (0..10)
            .map(|n| new_call(joiner.leg_started(t0, &leg("d", &n.to_string(), CallLeg::Agent))))
            .collect();
        for (n, &call) in calls.iter().enumerate().rev() {
            joiner.leg_ended(t0 + Duration::from_secs(10 - n as u64), call);
        }
        joiner.handle_timeout(t0 + Duration::from_secs(3600));
        let finished: Vec<CallKey> = std::iter::from_fn(|| joiner.poll_finished()).collect();
        let expected: Vec<CallKey> = calls.iter().rev().copied().collect();
        assert_eq!(finished, expected);
    }

    #[test]
    fn keys_are_opaque_hex_and_debug_hides_ids() {
        let t0 = Instant::now();
        let mut joiner = joiner(4, 8);
        let call = new_call(joiner.leg_started(t0, &leg("secret-domain", "300000000115255", CallLeg::Agent)));
        let shown = call.to_string();
        assert_eq!(shown.len(), 16);
        assert!(shown.chars().all(|c| c.is_ascii_hexdigit()));
        let debug = format!("{joiner:?}");
        assert!(
            !debug.contains("300000000115255") && !debug.contains("secret-domain"),
            "{debug}"
        );
        // Another seed, other keys.
        let mut other = CallJoiner::new(JoinerConfig::default(), 43);
        assert_ne!(
            new_call(other.leg_started(t0, &leg("secret-domain", "300000000115255", CallLeg::Agent))),
            call
        );
    }

    #[test]
    fn an_abandoned_call_is_forgotten_and_its_ids_start_a_new_call() {
        let start = Instant::now();
        let mut joiner = CallJoiner::new(JoinerConfig::default(), 7);
        let leg = info_for_abandon("d", "100");
        let JoinDecision::NewCall { call: first } = joiner.leg_started(start, &leg) else {
            panic!("a new call");
        };
        joiner.abandon(first);
        assert_eq!(joiner.active_calls(), 0);
        joiner.leg_ended(start, first);
        joiner.handle_timeout(start + Duration::from_secs(3600));
        assert_eq!(
            joiner.poll_finished(),
            None,
            "an abandoned call is never finished"
        );
        let JoinDecision::NewCall { call: second } = joiner.leg_started(start, &leg) else {
            panic!("the same ids start a new call");
        };
        assert_ne!(first, second);
    }

    fn info_for_abandon(domain: &str, call: &str) -> LegInfo {
        LegInfo {
            vcc_call_id: Pii::new(call.to_owned()),
            domain_id: Pii::new(domain.to_owned()),
            campaign_id: Pii::new(String::new()),
            agent_id: Pii::new(String::new()),
            skill_id: Pii::new(String::new()),
            subscription_id: "sub".to_owned(),
            call_leg: crate::CallLeg::Agent,
            sample_rate: 8000,
            encoding: crate::AudioEncoding::Linear16,
        }
    }
}
