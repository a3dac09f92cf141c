//! Entry point for the `voicestream_session` fuzz target: arbitrary bytes become a script of gRPC requests
//! (raw protobuf chunks decoded with prost, plus well-formed configs, audio and status events built from
//! the input so the fuzzer reaches the streaming states quickly) and stream events (half-close, transport
//! error, drain, reconnect, pause/resume, time passing) for up to [`SLOTS`] concurrent [`LegSession`]s
//! joined by one [`CallJoiner`], all in virtual time. Checks the invariants after every step. Lives here so
//! the fuzz crate stays thin.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use prost::Message;

use crate::join::{CallJoiner, CallKey, JoinDecision, JoinerConfig};
use crate::proto::streaming_voice_request::StreamingRequest;
use crate::proto::{StreamingConfig, StreamingStatus, StreamingVoiceRequest, VoiceConfig};
use crate::session::{LegOutput, LegSession, OUTPUT_CAPACITY, SessionConfig, TrustTokens};

/// Concurrent streams one input drives.
pub const SLOTS: usize = 4;

const TOKEN: &str = "fuzz-token";
const SUBSCRIPTION: &str = "fuzz-sub";

/// Reads bytes off the input; past the end it yields zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// One stream and what the harness knows about it.
struct Slot {
    session: LegSession,
    started: bool,
    terminal: bool,
    /// Set when the joiner admitted the leg and it has not been reported ended.
    call: Option<CallKey>,
}

struct Harness {
    now: Instant,
    slots: Vec<Option<Slot>>,
    joiner: CallJoiner,
    config: SessionConfig,
    started_legs: usize,
    finished_calls: HashSet<CallKey>,
}

/// Drives sessions and the joiner with `data` (see the module doc), then ends every stream and lets every
/// call linger out. Returns how many legs started (for tests). Panics only when an invariant is broken.
pub fn drive_session(start: Instant, data: &[u8]) -> usize {
    let mut config = SessionConfig::new(TrustTokens::new([(
        SUBSCRIPTION.to_owned(),
        vec![TOKEN.to_owned()],
    )]));
    config.max_audio_chunk_bytes = 512;
    config.idle_timeout = Duration::from_secs(10);
    let mut harness = Harness {
        now: start,
        slots: (0..SLOTS).map(|_| None).collect(),
        joiner: CallJoiner::new(
            JoinerConfig {
                max_calls: 3,
                max_legs_per_call: 3,
                linger: Duration::from_secs(2),
            },
            0x5eed,
        ),
        config,
        started_legs: 0,
        finished_calls: HashSet::new(),
    };
    let mut input = Input { data };
    let mut current = 0usize;
    harness.open(current);
    while !input.data.is_empty() {
        let op = input.byte();
        match op % 12 {
            // A raw, length-prefixed protobuf request; garbage is skipped.
            0 | 1 => {
                let len = usize::from(input.byte()) | (usize::from(op >> 7) << 8);
                let chunk = input.bytes(len);
                if let Ok(request) = StreamingVoiceRequest::decode(chunk) {
                    harness.request(current, request);
                }
            }
            2 => {
                let request = synth_config(&mut input);
                harness.request(current, request);
            }
            3 | 4 => {
                let len = usize::from(input.byte()) * 3;
                let bytes = input.bytes(len).to_vec();
                harness.request(current, request(StreamingRequest::AudioContent(bytes)));
            }
            5 => {
                let code = match input.byte() % 12 {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    3 => 3,
                    4 => 4,
                    5 => 100,
                    6 => 101,
                    7 => 102,
                    8 => 2001,
                    9 => 1001,
                    _ => i32::from(input.byte()) - 64,
                };
                let status = StreamingStatus {
                    code,
                    message: String::new(),
                };
                harness.request(current, request(StreamingRequest::StreamingStatus(status)));
            }
            6 => {
                let choice = input.byte();
                let now = harness.now;
                harness.with_session(current, |session| match choice % 7 {
                    0 => session.handle_end_of_stream(now),
                    1 => session.handle_transport_error(now),
                    2 => session.drain(now),
                    3 => session.request_reconnect(now),
                    4 => session.pause(now),
                    5 => session.resume(now),
                    _ => session.set_header_token(Some(TOKEN.to_owned())),
                });
            }
            7 | 8 => {
                let step = u64::from(input.byte()) * 100;
                harness.advance(Duration::from_millis(step));
            }
            9 => {
                current = usize::from(input.byte()) % SLOTS;
                harness.open(current);
            }
            10 => current = usize::from(input.byte()) % SLOTS,
            _ => {
                let choice = input.byte();
                harness.with_session(current, |session| {
                    if choice.is_multiple_of(2) {
                        session.set_header_token(None);
                    }
                });
            }
        }
    }
    // Every stream goes; every call lingers out and is finished exactly once.
    for index in 0..SLOTS {
        harness.with_session(index, |session| session.handle_end_of_stream(start));
    }
    for _ in 0..4 {
        harness.advance(Duration::from_secs(60));
    }
    assert_eq!(
        harness.joiner.active_calls(),
        0,
        "calls left after every leg ended"
    );
    assert_eq!(harness.joiner.poll_timeout(), None);
    harness.started_legs
}

fn request(request: StreamingRequest) -> StreamingVoiceRequest {
    StreamingVoiceRequest {
        streaming_request: Some(request),
        send_time: None,
    }
}

/// A config whose fields are mostly valid, chosen by the input.
fn synth_config(input: &mut Input<'_>) -> StreamingVoiceRequest {
    let flags = input.byte();
    let encoding = i32::from(input.byte() % 6) - i32::from(flags & 0x80 != 0);
    let sample_rate_hertz = match input.byte() % 6 {
        0 => 8000,
        1 => 16000,
        2 => 48000,
        3 => 0,
        4 => 48001,
        _ => i32::from(input.byte()) * 1000,
    };
    let call_id = input.byte() % 5;
    request(StreamingRequest::StreamingConfig(StreamingConfig {
        voice_config: (flags & 0x40 == 0).then_some(VoiceConfig {
            encoding,
            sample_rate_hertz,
        }),
        vcc_call_id: if call_id == 0 {
            String::new()
        } else {
            format!("30000000011525{call_id}")
        },
        domain_id: format!("domain-{}", flags & 1),
        campaign_id: "campaign".into(),
        agent_id: "agent".into(),
        call_leg: i32::from(input.byte() % 4),
        trust_token: if flags & 2 == 0 {
            TOKEN.into()
        } else {
            "wrong".into()
        },
        subscription_id: if flags & 4 == 0 {
            SUBSCRIPTION.into()
        } else {
            "other".into()
        },
        skill_id: "skill".into(),
    }))
}

impl Harness {
    /// A new stream in `index`; a stream still there loses its transport first.
    fn open(&mut self, index: usize) {
        let now = self.now;
        self.with_session(index, |session| session.handle_transport_error(now));
        self.slots[index] = Some(Slot {
            session: LegSession::new(self.now, self.config.clone()),
            started: false,
            terminal: false,
            call: None,
        });
    }

    fn request(&mut self, index: usize, request: StreamingVoiceRequest) {
        let now = self.now;
        self.with_session(index, |session| session.handle_request(now, request));
    }

    /// Runs `action` on the stream in `index` (if any), then checks and routes its outputs.
    fn with_session(&mut self, index: usize, action: impl FnOnce(&mut LegSession)) {
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        let was_terminal = slot.terminal;
        action(&mut slot.session);
        let outputs: Vec<LegOutput> = std::iter::from_fn(|| slot.session.poll_output()).collect();
        assert!(
            outputs.len() <= OUTPUT_CAPACITY + 2,
            "{} outputs queued",
            outputs.len()
        );
        if was_terminal {
            assert!(outputs.is_empty(), "output after the end: {outputs:?}");
        }
        for (position, output) in outputs.iter().enumerate() {
            assert!(!slot.terminal, "output after Ended/Refused: {output:?}");
            match output {
                LegOutput::Started(info) => {
                    assert!(!slot.started, "started twice");
                    assert!(!info.vcc_call_id.expose().trim().is_empty());
                    assert!(matches!(outputs.get(position + 1), Some(LegOutput::Respond(r))
                        if r.status.as_ref().is_some_and(|status| status.code == 1001)));
                    slot.started = true;
                    self.started_legs += 1;
                    match self.joiner.leg_started(self.now, info) {
                        JoinDecision::NewCall { call } | JoinDecision::Joined { call } => {
                            assert!(!self.finished_calls.contains(&call), "joined a finished call");
                            slot.call = Some(call);
                        }
                        JoinDecision::Refused(refusal) => assert_eq!(refusal.grpc_code(), 8),
                    }
                }
                LegOutput::Audio { samples } => {
                    assert!(slot.started, "audio before Started");
                    assert!(!samples.is_empty());
                }
                LegOutput::Event(_) => assert!(slot.started, "event before Started"),
                LegOutput::Respond(response) => assert!(response.status.is_some()),
                LegOutput::Refused(refusal) => {
                    assert_eq!(position + 1, outputs.len(), "Refused is not last");
                    assert!([3, 12, 16].contains(&refusal.grpc_code()));
                    let previous = position.checked_sub(1).and_then(|before| outputs.get(before));
                    assert!(matches!(previous, Some(LegOutput::Respond(r))
                        if r.status.as_ref().is_some_and(|status| status.code == refusal.status_code())));
                    slot.terminal = true;
                }
                LegOutput::Ended(_) => {
                    assert_eq!(position + 1, outputs.len(), "Ended is not last");
                    slot.terminal = true;
                }
            }
        }
        assert_eq!(slot.session.is_finished(), slot.terminal);
        if slot.terminal {
            assert_eq!(slot.session.poll_timeout(), None);
            if let Some(call) = slot.call.take() {
                self.joiner.leg_ended(self.now, call);
            }
        } else {
            assert!(
                slot.session
                    .poll_timeout()
                    .is_some_and(|deadline| deadline > self.now)
            );
        }
    }

    /// Moves virtual time on and fires every timer that is due.
    fn advance(&mut self, step: Duration) {
        self.now += step;
        let now = self.now;
        for index in 0..SLOTS {
            if self.slots[index]
                .as_ref()
                .is_some_and(|slot| slot.session.poll_timeout().is_some_and(|at| at <= now))
            {
                self.with_session(index, |session| session.handle_timeout(now));
            }
        }
        if self.joiner.poll_timeout().is_some_and(|at| at <= now) {
            self.joiner.handle_timeout(now);
        }
        assert!(self.joiner.poll_timeout().is_none_or(|at| at > now));
        let live: HashSet<CallKey> = self.slots.iter().flatten().filter_map(|slot| slot.call).collect();
        while let Some(call) = self.joiner.poll_finished() {
            assert!(!live.contains(&call), "a call with a live leg finished");
            assert!(self.finished_calls.insert(call), "a call finished twice");
        }
        assert!(self.joiner.active_calls() <= 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted input: a valid config, audio, hold, time, a second leg of the same call, end.
    #[test]
    fn scripted_call_starts_legs() {
        let script = [
            2, 0, 1, 0, 1, 1, // config: LINEAR16 8 kHz, call 1, customer
            3, 2, 1, 2, 3, 4, 5, 6, // audio, 6 bytes
            5, 2, // hold
            7, 5, // 0.5 s
            9, 1, // slot 1
            2, 0, 1, 0, 1, 0, // config: same call, agent
            5, 1, // call ended
        ];
        assert_eq!(drive_session(Instant::now(), &script), 2);
    }

    #[test]
    fn pseudo_random_inputs_hold_the_invariants() {
        let start = Instant::now();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut started = 0;
        for round in 0..3000 {
            let len = round % 300;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            started += drive_session(start, &data);
        }
        assert!(started > 0, "no leg ever started");
    }

    #[test]
    fn empty_input() {
        assert_eq!(drive_session(Instant::now(), &[]), 0);
    }
}
