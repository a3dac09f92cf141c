//! [`LegSession`]: the state machine of one `StreamingVoice` gRPC stream, i.e. one call leg.
//!
//! Owns the per-stream protocol of voicestream.md §2.4: the first request must be a `streaming_config`;
//! the trust token (config field or `x-five9-trust-token` header) is checked in constant time against the
//! subscription's tokens; the config is validated (call id, encoding, sample rate); then the leg starts
//! ([`LegOutput::Started`], followed by the `SRV_REQ_START_STREAMING` (1001) response); audio chunks are
//! decoded to PCM (LINEAR16 with an odd trailing byte carried to the next chunk, or G.711 µ-law); client
//! status events become hold/resume events or the end of the leg. Server-side requests (drain,
//! reconnect, pause/resume) and the idle timeout are inputs too.
//!
//! Sans-IO: no clock is read (`now` is a parameter, the idle deadline is offered by
//! [`LegSession::poll_timeout`]), no socket is touched; the runtime feeds decoded requests and sends what
//! [`LegSession::poll_output`] yields. The output queue is bounded (see [`OUTPUT_CAPACITY`]).
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use airlock_telemetry::Pii;
use subtle::ConstantTimeEq;

use crate::proto;
use crate::proto::streaming_status::StatusCode;
use crate::proto::streaming_voice_request::StreamingRequest;
use crate::proto::voice_config::AudioEncoding as WireEncoding;

/// How many non-final outputs the queue holds. When it is full, further audio chunks, hold/resume events
/// and pause/resume responses are dropped and counted in [`SessionStats::outputs_dropped`]; the final
/// outputs (the last status response and `Ended`/`Refused`, at most two) are always queued, so the queue
/// never holds more than `OUTPUT_CAPACITY + 2` items. The runtime drains the queue after every input, so
/// in practice it holds at most three.
pub const OUTPUT_CAPACITY: usize = 64;

/// Default for [`SessionConfig::max_audio_chunk_bytes`]: 64 KiB (4 s of 8 kHz LINEAR16).
pub const DEFAULT_MAX_AUDIO_CHUNK_BYTES: usize = 64 * 1024;
/// Default for [`SessionConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Accepted LINEAR16 sample rates, in Hz.
pub const LINEAR16_RATES: std::ops::RangeInclusive<i32> = 8000..=48000;
/// The one accepted µ-law sample rate, in Hz.
pub const MULAW_RATE: i32 = 8000;
/// The undocumented client code that Google's server treats as a disconnect (voicestream.md §5.2).
pub const CLT_DISCONNECT_UNDOCUMENTED: i32 = 2001;

/// Limits and credentials of one leg session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The accepted trust tokens per subscription.
    pub trust_tokens: TrustTokens,
    /// The largest accepted `audio_content`, in bytes; a larger chunk is a protocol error
    /// ([`Refusal::ChunkTooLarge`]). Default 64 KiB.
    pub max_audio_chunk_bytes: usize,
    /// No request for this long: the leg is lost ([`LegEnd::Lost`]).
    pub idle_timeout: Duration,
}

impl SessionConfig {
    /// The defaults with these tokens.
    pub fn new(trust_tokens: TrustTokens) -> Self {
        SessionConfig {
            trust_tokens,
            max_audio_chunk_bytes: DEFAULT_MAX_AUDIO_CHUNK_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The accepted trust tokens of each subscription. A subscription with no tokens accepts nobody; an
/// empty token is never accepted. `Debug` shows the subscriptions and how many tokens each has, never a
/// token.
#[derive(Clone, Default)]
pub struct TrustTokens {
    by_subscription: HashMap<String, Vec<Vec<u8>>>,
}

impl TrustTokens {
    /// Tokens per subscription id; entries for the same subscription are merged, empty tokens dropped.
    pub fn new(map: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        let mut by_subscription: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (subscription, tokens) in map {
            let entry = by_subscription.entry(subscription).or_default();
            entry.extend(
                tokens
                    .into_iter()
                    .filter(|token| !token.is_empty())
                    .map(String::into_bytes),
            );
        }
        TrustTokens { by_subscription }
    }

    /// Whether `token` is one of the subscription's tokens. Every token of the subscription is compared,
    /// each in constant time, so the time taken does not tell which bytes matched.
    pub fn check(&self, subscription_id: &str, token: &str) -> bool {
        if token.is_empty() {
            return false;
        }
        let Some(tokens) = self.by_subscription.get(subscription_id) else {
            return false;
        };
        let mut accepted = subtle::Choice::from(0);
        for candidate in tokens {
            accepted |= candidate.as_slice().ct_eq(token.as_bytes());
        }
        bool::from(accepted)
    }
}

impl fmt::Debug for TrustTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (subscription, tokens) in &self.by_subscription {
            map.entry(subscription, &format_args!("{} token(s)", tokens.len()));
        }
        map.finish()
    }
}

/// Which participant a stream carries (`StreamingConfig.call_leg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallLeg {
    Agent,
    Customer,
    Supervisor,
    /// A value the proto does not name (open enum); kept for the channel label.
    Other(i32),
}

impl CallLeg {
    /// The wire value as a leg.
    pub fn from_wire(value: i32) -> Self {
        match value {
            0 => CallLeg::Agent,
            1 => CallLeg::Customer,
            2 => CallLeg::Supervisor,
            other => CallLeg::Other(other),
        }
    }

    /// `agent`, `customer`, `supervisor` or `leg_<n>`: a channel label.
    pub fn as_str(&self) -> Cow<'static, str> {
        match self {
            CallLeg::Agent => Cow::Borrowed("agent"),
            CallLeg::Customer => Cow::Borrowed("customer"),
            CallLeg::Supervisor => Cow::Borrowed("supervisor"),
            CallLeg::Other(value) => Cow::Owned(format!("leg_{value}")),
        }
    }
}

impl fmt::Display for CallLeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// The audio encoding of an accepted leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioEncoding {
    /// Signed 16-bit little-endian PCM (also `ENCODING_UNSPECIFIED`).
    Linear16,
    /// G.711 µ-law, 8000 Hz.
    Mulaw,
}

/// What an accepted config says about the leg. Identifiers that could identify a person or a call are
/// [`Pii`]; the subscription id is configuration, not personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegInfo {
    pub vcc_call_id: Pii<String>,
    pub domain_id: Pii<String>,
    pub campaign_id: Pii<String>,
    pub agent_id: Pii<String>,
    pub skill_id: Pii<String>,
    pub subscription_id: String,
    pub call_leg: CallLeg,
    /// Of the decoded PCM in [`LegOutput::Audio`], in Hz.
    pub sample_rate: u32,
    pub encoding: AudioEncoding,
}

/// A client event that does not end the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegEvent {
    /// `CLT_CALL_HOLD`.
    Hold,
    /// `CLT_CALL_RESUME`.
    Resume,
}

/// How a leg ended without a protocol error; the stream ends with gRPC OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegEnd {
    /// `CLT_CALL_ENDED`.
    CallEnded,
    /// `CLT_DISCONNECT` or the undocumented 2001.
    Disconnected,
    /// The client closed its side without an end event.
    HalfClosed,
    /// `CLT_ERROR_*` (100..=102), with the code.
    ClientError(i32),
    /// Transport error, or no request for `idle_timeout`.
    Lost,
    /// We asked the client to go (drain or reconnect).
    Drained,
}

/// Why a stream was refused. The stream ends with [`Refusal::grpc_code`] after a status response with
/// [`Refusal::status_code`] and [`Refusal::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// The first request was not a `streaming_config`.
    #[error("the first request must be a streaming_config")]
    ConfigNotFirst,
    /// No accepted trust token for the subscription, in the config or the header.
    #[error("trust token not accepted for this subscription")]
    Unauthenticated,
    /// AMR, AMR-WB or an unknown encoding (the wire value).
    #[error("unsupported audio encoding {0}")]
    UnsupportedEncoding(i32),
    /// LINEAR16 outside 8000..=48000 Hz, or µ-law not at 8000 Hz (the wire value).
    #[error("unsupported sample rate {0}")]
    BadSampleRate(i32),
    /// The config has an empty `vcc_call_id`.
    #[error("vcc_call_id is missing")]
    MissingCallId,
    /// An `audio_content` over `max_audio_chunk_bytes`.
    #[error("audio chunk of {bytes} bytes is over the limit")]
    ChunkTooLarge { bytes: usize },
    /// A second `streaming_config` on the same stream.
    #[error("streaming_config sent twice")]
    ConfigRepeated,
}

/// gRPC status codes used here (numeric, as tonic's `Code` is not a dependency of this crate).
pub mod grpc_code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl Refusal {
    /// The gRPC status code the stream ends with.
    pub fn grpc_code(&self) -> i32 {
        match self {
            Refusal::Unauthenticated => grpc_code::UNAUTHENTICATED,
            Refusal::UnsupportedEncoding(_) => grpc_code::UNIMPLEMENTED,
            Refusal::ConfigNotFirst
            | Refusal::BadSampleRate(_)
            | Refusal::MissingCallId
            | Refusal::ChunkTooLarge { .. }
            | Refusal::ConfigRepeated => grpc_code::INVALID_ARGUMENT,
        }
    }

    /// The Five9 status code of the response sent before the stream ends: `SRV_ERROR_GENERIC` (1102) for
    /// all of them — the client's mistakes; there is no more specific server code.
    pub fn status_code(&self) -> i32 {
        StatusCode::SrvErrorGeneric as i32
    }

    /// A human reason for the status message and the gRPC status; it carries no PII.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::ConfigNotFirst => "the first request must be a streaming_config",
            Refusal::Unauthenticated => "trust token not accepted for this subscription",
            Refusal::UnsupportedEncoding(_) => "unsupported audio encoding: only LINEAR16 and MULAW",
            Refusal::BadSampleRate(_) => "unsupported sample rate: LINEAR16 8000..=48000 Hz, MULAW 8000 Hz",
            Refusal::MissingCallId => "vcc_call_id is missing",
            Refusal::ChunkTooLarge { .. } => "audio chunk over the size limit",
            Refusal::ConfigRepeated => "streaming_config sent twice",
        }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::ConfigNotFirst => "config_not_first",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::UnsupportedEncoding(_) => "unsupported_encoding",
            Refusal::BadSampleRate(_) => "bad_sample_rate",
            Refusal::MissingCallId => "missing_call_id",
            Refusal::ChunkTooLarge { .. } => "chunk_too_large",
            Refusal::ConfigRepeated => "config_repeated",
        }
    }
}

/// What the runtime does next, in order.
///
/// Order guarantees: an accepted config yields `Started` **then** `Respond(1001)`, so the runtime can run
/// admission (the `CallJoiner`) on `Started` and, if it refuses, send its own status and end the stream
/// instead of forwarding the 1001. A refusal yields `Respond(1102)` then `Refused`; drain and reconnect
/// yield `Respond(1011)`/`Respond(1012)` then `Ended(Drained)`; the idle timeout yields
/// `Respond(SRV_ERROR_TIMEOUT 1101)` then `Ended(Lost)`. `Ended`/`Refused` is always the last output.
#[derive(Debug, Clone, PartialEq)]
pub enum LegOutput {
    /// Send to the client.
    Respond(proto::StreamingVoiceResponse),
    /// The config was accepted (after authentication).
    Started(LegInfo),
    /// Decoded PCM at [`LegInfo::sample_rate`], in order.
    Audio {
        samples: Vec<i16>,
    },
    Event(LegEvent),
    /// End the stream with `refusal.grpc_code()`.
    Refused(Refusal),
    /// End the stream with gRPC OK.
    Ended(LegEnd),
}

/// Counters of one leg, for metrics and the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Requests handled (including ignored ones).
    pub requests: u64,
    /// Non-empty audio chunks decoded.
    pub audio_chunks: u64,
    pub audio_bytes: u64,
    pub samples: u64,
    /// Empty `audio_content` chunks (ignored).
    pub empty_audio_chunks: u64,
    /// Requests with no `streaming_request` after the config (ignored).
    pub empty_requests: u64,
    /// `SUCCESS` statuses from the client (ignored).
    pub status_success: u64,
    /// Client status codes we do not act on (ignored).
    pub status_unknown: u64,
    /// Audio received while we had asked for a pause (still delivered).
    pub audio_while_paused: u64,
    /// Outputs dropped because the queue was full.
    pub outputs_dropped: u64,
    /// Inputs after the leg ended or was refused (ignored).
    pub after_end: u64,
    /// A LINEAR16 odd byte left over when the leg ended.
    pub trailing_bytes_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the config.
    AwaitingConfig,
    /// Config accepted; audio flows.
    Streaming,
    /// `Ended` or `Refused` was queued.
    Finished,
}

/// One `StreamingVoice` stream. See the module doc.
#[derive(Debug)]
pub struct LegSession {
    config: SessionConfig,
    state: State,
    header_token: Option<Pii<String>>,
    info: Option<LegInfo>,
    paused: bool,
    /// LINEAR16: the odd byte of the previous chunk.
    carry: Option<u8>,
    last_activity: Instant,
    outputs: VecDeque<LegOutput>,
    stats: SessionStats,
}

impl LegSession {
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        LegSession {
            config,
            state: State::AwaitingConfig,
            header_token: None,
            info: None,
            paused: false,
            carry: None,
            last_activity: now,
            outputs: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    /// The header `x-five9-trust-token` if the client sent one (accepted as an alternative to the config
    /// field). Call before the config is handled.
    pub fn set_header_token(&mut self, token: Option<String>) {
        self.header_token = token.map(Pii::new);
    }

    /// One request from the client.
    pub fn handle_request(&mut self, now: Instant, request: proto::StreamingVoiceRequest) {
        if self.state == State::Finished {
            self.stats.after_end += 1;
            return;
        }
        self.stats.requests += 1;
        self.last_activity = now;
        match (self.state, request.streaming_request) {
            (State::AwaitingConfig, Some(StreamingRequest::StreamingConfig(config))) => {
                self.handle_config(config)
            }
            (State::AwaitingConfig, _) => self.refuse(Refusal::ConfigNotFirst),
            (_, Some(StreamingRequest::StreamingConfig(_))) => self.refuse(Refusal::ConfigRepeated),
            (_, Some(StreamingRequest::AudioContent(bytes))) => self.handle_audio(&bytes),
            (_, Some(StreamingRequest::StreamingStatus(status))) => self.handle_status(status.code),
            (_, None) => self.stats.empty_requests += 1,
        }
    }

    /// The client half-closed its side.
    pub fn handle_end_of_stream(&mut self, _now: Instant) {
        self.end(None, LegEnd::HalfClosed);
    }

    /// The transport failed (reset, keepalive timeout); nothing can be sent any more.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        self.end(None, LegEnd::Lost);
    }

    /// The server is shutting down: `Respond(SRV_REQ_DISCONNECT 1011)` then `Ended(Drained)`.
    pub fn drain(&mut self, _now: Instant) {
        self.end(
            Some((StatusCode::SrvReqDisconnect, "server shutting down")),
            LegEnd::Drained,
        );
    }

    /// Ask the client to reconnect on a new stream: `Respond(SRV_REQ_RECONNECT 1012)` then `Ended(Drained)`.
    pub fn request_reconnect(&mut self, _now: Instant) {
        self.end(
            Some((StatusCode::SrvReqReconnect, "reconnect on a new stream")),
            LegEnd::Drained,
        );
    }

    /// Ask the client to stop sending audio (`SRV_REQ_PAUSE_STREAMING` 1002). Only while streaming and
    /// not already paused; otherwise nothing happens.
    pub fn pause(&mut self, _now: Instant) {
        if self.state == State::Streaming && !self.paused {
            self.paused = true;
            self.push(respond(StatusCode::SrvReqPauseStreaming, "pause streaming"));
        }
    }

    /// Ask the client to send audio again (`SRV_REQ_START_STREAMING` 1001) after [`LegSession::pause`].
    pub fn resume(&mut self, _now: Instant) {
        if self.state == State::Streaming && self.paused {
            self.paused = false;
            self.push(respond(StatusCode::SrvReqStartStreaming, "start streaming"));
        }
    }

    /// Time passed: when the idle deadline has passed, `Respond(1101)` then `Ended(Lost)`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
        {
            self.end(
                Some((StatusCode::SrvErrorTimeout, "no request within the idle timeout")),
                LegEnd::Lost,
            );
        }
    }

    /// When [`LegSession::handle_timeout`] should be called next; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Finished => None,
            _ => Some(self.last_activity + self.config.idle_timeout),
        }
    }

    /// The next output, in order. Bounded: see [`OUTPUT_CAPACITY`].
    pub fn poll_output(&mut self) -> Option<LegOutput> {
        self.outputs.pop_front()
    }

    /// Whether the leg has ended or been refused: no input is acted on any more. Outputs may still be
    /// queued; drain [`LegSession::poll_output`] first.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The accepted config, once started.
    pub fn info(&self) -> Option<&LegInfo> {
        self.info.as_ref()
    }

    /// Whether we asked the client to pause.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    fn handle_config(&mut self, config: proto::StreamingConfig) {
        let config_token_ok = self
            .config
            .trust_tokens
            .check(&config.subscription_id, &config.trust_token);
        let header_token_ok = self.header_token.as_ref().is_some_and(|token| {
            self.config
                .trust_tokens
                .check(&config.subscription_id, token.expose())
        });
        if !(config_token_ok | header_token_ok) {
            return self.refuse(Refusal::Unauthenticated);
        }
        if config.vcc_call_id.trim().is_empty() {
            return self.refuse(Refusal::MissingCallId);
        }
        let voice = config.voice_config.unwrap_or_default();
        let encoding = match WireEncoding::try_from(voice.encoding) {
            Ok(WireEncoding::EncodingUnspecified | WireEncoding::Linear16) => AudioEncoding::Linear16,
            Ok(WireEncoding::Mulaw) => AudioEncoding::Mulaw,
            Ok(WireEncoding::Amr | WireEncoding::AmrWb) | Err(_) => {
                return self.refuse(Refusal::UnsupportedEncoding(voice.encoding));
            }
        };
        let rate_ok = match encoding {
            AudioEncoding::Linear16 => LINEAR16_RATES.contains(&voice.sample_rate_hertz),
            AudioEncoding::Mulaw => voice.sample_rate_hertz == MULAW_RATE,
        };
        let Ok(sample_rate) = u32::try_from(voice.sample_rate_hertz) else {
            return self.refuse(Refusal::BadSampleRate(voice.sample_rate_hertz));
        };
        if !rate_ok {
            return self.refuse(Refusal::BadSampleRate(voice.sample_rate_hertz));
        }
        let info = LegInfo {
            vcc_call_id: Pii::new(config.vcc_call_id),
            domain_id: Pii::new(config.domain_id),
            campaign_id: Pii::new(config.campaign_id),
            agent_id: Pii::new(config.agent_id),
            skill_id: Pii::new(config.skill_id),
            subscription_id: config.subscription_id,
            call_leg: CallLeg::from_wire(config.call_leg),
            sample_rate,
            encoding,
        };
        self.state = State::Streaming;
        self.info = Some(info.clone());
        self.push(LegOutput::Started(info));
        self.push(respond(StatusCode::SrvReqStartStreaming, "start streaming"));
    }

    fn handle_audio(&mut self, bytes: &[u8]) {
        if bytes.len() > self.config.max_audio_chunk_bytes {
            return self.refuse(Refusal::ChunkTooLarge { bytes: bytes.len() });
        }
        if bytes.is_empty() {
            self.stats.empty_audio_chunks += 1;
            return;
        }
        if self.paused {
            self.stats.audio_while_paused += 1;
        }
        self.stats.audio_chunks += 1;
        self.stats.audio_bytes += bytes.len() as u64;
        let encoding = self
            .info
            .as_ref()
            .map_or(AudioEncoding::Linear16, |info| info.encoding);
        let samples = match encoding {
            AudioEncoding::Mulaw => bytes
                .iter()
                .map(|&code| airlock_media::g711::ulaw_to_linear(code))
                .collect(),
            AudioEncoding::Linear16 => self.decode_linear16(bytes),
        };
        if samples.is_empty() {
            return;
        }
        self.stats.samples += samples.len() as u64;
        self.push(LegOutput::Audio { samples });
    }

    fn decode_linear16(&mut self, bytes: &[u8]) -> Vec<i16> {
        let mut samples = Vec::with_capacity(bytes.len().div_ceil(2));
        let mut rest = bytes;
        if let Some(low) = self.carry.take()
            && let Some((&high, tail)) = rest.split_first()
        {
            samples.push(i16::from_le_bytes([low, high]));
            rest = tail;
        }
        let mut pairs = rest.chunks_exact(2);
        samples.extend(pairs.by_ref().map(|pair| i16::from_le_bytes([pair[0], pair[1]])));
        self.carry = pairs.remainder().first().copied();
        samples
    }

    fn handle_status(&mut self, code: i32) {
        match code {
            0 => self.stats.status_success += 1,
            1 => self.end(None, LegEnd::CallEnded),
            2 => self.push(LegOutput::Event(LegEvent::Hold)),
            3 => self.push(LegOutput::Event(LegEvent::Resume)),
            4 | CLT_DISCONNECT_UNDOCUMENTED => self.end(None, LegEnd::Disconnected),
            100..=102 => self.end(None, LegEnd::ClientError(code)),
            _ => self.stats.status_unknown += 1,
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.finish(
            Some(respond_code(refusal.status_code(), refusal.message())),
            LegOutput::Refused(refusal),
        );
    }

    fn end(&mut self, status: Option<(StatusCode, &'static str)>, end: LegEnd) {
        self.finish(
            status.map(|(code, message)| respond_code(code as i32, message)),
            LegOutput::Ended(end),
        );
    }

    /// Queues the final outputs (never dropped) and stops acting on input.
    fn finish(&mut self, response: Option<LegOutput>, last: LegOutput) {
        if self.state == State::Finished {
            self.stats.after_end += 1;
            return;
        }
        self.state = State::Finished;
        if self.carry.take().is_some() {
            self.stats.trailing_bytes_dropped += 1;
        }
        self.outputs.extend(response);
        self.outputs.push_back(last);
    }

    /// Queues a non-final output, or drops and counts it when the queue is full.
    fn push(&mut self, output: LegOutput) {
        if self.outputs.len() >= OUTPUT_CAPACITY {
            self.stats.outputs_dropped += 1;
        } else {
            self.outputs.push_back(output);
        }
    }
}

fn respond(code: StatusCode, message: &'static str) -> LegOutput {
    respond_code(code as i32, message)
}

fn respond_code(code: i32, message: &'static str) -> LegOutput {
    LegOutput::Respond(proto::StreamingVoiceResponse {
        status: Some(proto::StreamingStatus {
            code,
            message: message.to_owned(),
        }),
        feedback: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::streaming_config::CallLeg as WireLeg;
    use crate::proto::{StreamingConfig, StreamingStatus, StreamingVoiceRequest, VoiceConfig};

    const TOKEN: &str = "0123456789abcdef-token";

    fn tokens() -> TrustTokens {
        TrustTokens::new([
            (
                "sub-1".to_owned(),
                vec![TOKEN.to_owned(), "second-token".to_owned()],
            ),
            ("sub-empty".to_owned(), vec![String::new()]),
            ("sub-2".to_owned(), vec!["other-token".to_owned()]),
        ])
    }

    fn session(now: Instant) -> LegSession {
        LegSession::new(now, SessionConfig::new(tokens()))
    }

    fn config(encoding: i32, rate: i32) -> StreamingConfig {
        StreamingConfig {
            voice_config: Some(VoiceConfig {
                encoding,
                sample_rate_hertz: rate,
            }),
            vcc_call_id: "300000000115255".into(),
            domain_id: "domain-1".into(),
            campaign_id: "campaign".into(),
            agent_id: "agent-7".into(),
            call_leg: WireLeg::Customer as i32,
            trust_token: TOKEN.into(),
            subscription_id: "sub-1".into(),
            skill_id: "skill".into(),
        }
    }

    fn req(request: StreamingRequest) -> StreamingVoiceRequest {
        StreamingVoiceRequest {
            streaming_request: Some(request),
            send_time: None,
        }
    }

    fn config_req(config: StreamingConfig) -> StreamingVoiceRequest {
        req(StreamingRequest::StreamingConfig(config))
    }

    fn audio(bytes: &[u8]) -> StreamingVoiceRequest {
        req(StreamingRequest::AudioContent(bytes.to_vec()))
    }

    fn status(code: i32) -> StreamingVoiceRequest {
        req(StreamingRequest::StreamingStatus(StreamingStatus {
            code,
            message: "x".into(),
        }))
    }

    fn drain_outputs(session: &mut LegSession) -> Vec<LegOutput> {
        std::iter::from_fn(|| session.poll_output()).collect()
    }

    fn status_of(output: &LegOutput) -> i32 {
        match output {
            LegOutput::Respond(response) => response.status.as_ref().map_or(-1, |status| status.code),
            other => panic!("not a response: {other:?}"),
        }
    }

    /// A started LINEAR16 8 kHz session with its start outputs drained.
    fn started(now: Instant) -> LegSession {
        let mut session = session(now);
        session.handle_request(now, config_req(config(1, 8000)));
        let outputs = drain_outputs(&mut session);
        assert_eq!(outputs.len(), 2, "{outputs:?}");
        session
    }

    fn refusal_after(first: StreamingVoiceRequest) -> (Vec<LegOutput>, LegSession) {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_request(now, first);
        (drain_outputs(&mut session), session)
    }

    fn assert_refused(outputs: &[LegOutput], refusal: Refusal) {
        assert_eq!(outputs.len(), 2, "{outputs:?}");
        assert_eq!(status_of(&outputs[0]), 1102);
        let LegOutput::Respond(response) = &outputs[0] else {
            unreachable!()
        };
        assert_eq!(response.status.as_ref().unwrap().message, refusal.message());
        assert_eq!(outputs[1], LegOutput::Refused(refusal));
    }

    #[test]
    fn config_starts_the_leg_then_1001() {
        let now = Instant::now();
        let mut session = session(now);
        assert!(!session.is_finished());
        session.handle_request(now, config_req(config(1, 8000)));
        let outputs = drain_outputs(&mut session);
        assert_eq!(outputs.len(), 2);
        let LegOutput::Started(info) = &outputs[0] else {
            panic!("{outputs:?}")
        };
        assert_eq!(info.vcc_call_id.expose(), "300000000115255");
        assert_eq!(info.domain_id.expose(), "domain-1");
        assert_eq!(info.campaign_id.expose(), "campaign");
        assert_eq!(info.agent_id.expose(), "agent-7");
        assert_eq!(info.skill_id.expose(), "skill");
        assert_eq!(info.subscription_id, "sub-1");
        assert_eq!(info.call_leg, CallLeg::Customer);
        assert_eq!(info.sample_rate, 8000);
        assert_eq!(info.encoding, AudioEncoding::Linear16);
        assert_eq!(status_of(&outputs[1]), 1001);
        assert_eq!(session.info(), Some(info));
        assert!(!format!("{info:?}").contains("300000000115255"));
        assert!(!session.is_finished());
    }

    #[test]
    fn first_request_must_be_config() {
        let (outputs, session) = refusal_after(audio(&[0, 0]));
        assert_refused(&outputs, Refusal::ConfigNotFirst);
        assert!(session.is_finished());
        let (outputs, _) = refusal_after(status(1));
        assert_refused(&outputs, Refusal::ConfigNotFirst);
        let (outputs, _) = refusal_after(StreamingVoiceRequest::default());
        assert_refused(&outputs, Refusal::ConfigNotFirst);
    }

    #[test]
    fn token_is_checked_against_the_subscription() {
        let wrong = StreamingConfig {
            trust_token: "wrong".into(),
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(wrong)).0, Refusal::Unauthenticated);
        let empty = StreamingConfig {
            trust_token: String::new(),
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(empty)).0, Refusal::Unauthenticated);
        let other_subscription = StreamingConfig {
            subscription_id: "sub-2".into(),
            ..config(1, 8000)
        };
        assert_refused(
            &refusal_after(config_req(other_subscription)).0,
            Refusal::Unauthenticated,
        );
        let unknown_subscription = StreamingConfig {
            subscription_id: "nope".into(),
            ..config(1, 8000)
        };
        assert_refused(
            &refusal_after(config_req(unknown_subscription)).0,
            Refusal::Unauthenticated,
        );
        let no_tokens = StreamingConfig {
            subscription_id: "sub-empty".into(),
            trust_token: String::new(),
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(no_tokens)).0, Refusal::Unauthenticated);
        let second = StreamingConfig {
            trust_token: "second-token".into(),
            ..config(1, 8000)
        };
        assert!(matches!(
            refusal_after(config_req(second)).0[0],
            LegOutput::Started(_)
        ));
        // A prefix of a token is not the token.
        let prefix = StreamingConfig {
            trust_token: TOKEN[..5].into(),
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(prefix)).0, Refusal::Unauthenticated);
    }

    #[test]
    fn header_token_is_an_alternative() {
        let now = Instant::now();
        let mut session = session(now);
        session.set_header_token(Some(TOKEN.into()));
        session.handle_request(
            now,
            config_req(StreamingConfig {
                trust_token: String::new(),
                ..config(1, 8000)
            }),
        );
        assert!(matches!(session.poll_output(), Some(LegOutput::Started(_))));

        let mut session = self::session(now);
        session.set_header_token(Some("wrong".into()));
        session.handle_request(
            now,
            config_req(StreamingConfig {
                trust_token: "also wrong".into(),
                ..config(1, 8000)
            }),
        );
        assert_refused(&drain_outputs(&mut session), Refusal::Unauthenticated);

        // A wrong header does not spoil a right config token.
        let mut session = self::session(now);
        session.set_header_token(Some("wrong".into()));
        session.handle_request(now, config_req(config(1, 8000)));
        assert!(matches!(session.poll_output(), Some(LegOutput::Started(_))));
    }

    #[test]
    fn trust_tokens_debug_prints_no_token() {
        let printed = format!("{:?} {:?}", tokens(), SessionConfig::new(tokens()));
        assert!(
            !printed.contains(TOKEN) && !printed.contains("second-token"),
            "{printed}"
        );
        assert!(printed.contains("sub-1"));
        assert!(!tokens().check("sub-1", ""));
        assert!(tokens().check("sub-1", TOKEN));
    }

    #[test]
    fn missing_call_id_is_refused() {
        let missing = StreamingConfig {
            vcc_call_id: String::new(),
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(missing)).0, Refusal::MissingCallId);
        let blank = StreamingConfig {
            vcc_call_id: "  ".into(),
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(blank)).0, Refusal::MissingCallId);
    }

    #[test]
    fn unauthenticated_is_checked_before_the_rest() {
        let bad = StreamingConfig {
            vcc_call_id: String::new(),
            trust_token: "wrong".into(),
            ..config(3, 0)
        };
        assert_refused(&refusal_after(config_req(bad)).0, Refusal::Unauthenticated);
    }

    #[test]
    fn encodings() {
        for (encoding, rate, expected) in [
            (0, 16000, AudioEncoding::Linear16),
            (1, 8000, AudioEncoding::Linear16),
            (2, 8000, AudioEncoding::Mulaw),
        ] {
            let outputs = refusal_after(config_req(config(encoding, rate))).0;
            let LegOutput::Started(info) = &outputs[0] else {
                panic!("{outputs:?}")
            };
            assert_eq!(info.encoding, expected);
            assert_eq!(info.sample_rate, rate as u32);
        }
        for encoding in [3, 4, 5, -1] {
            let outputs = refusal_after(config_req(config(encoding, 8000))).0;
            assert_refused(&outputs, Refusal::UnsupportedEncoding(encoding));
            assert_eq!(Refusal::UnsupportedEncoding(encoding).grpc_code(), 12);
        }
        // No voice_config at all: LINEAR16 at rate 0 is refused.
        let bare = StreamingConfig {
            voice_config: None,
            ..config(1, 8000)
        };
        assert_refused(&refusal_after(config_req(bare)).0, Refusal::BadSampleRate(0));
    }

    #[test]
    fn sample_rates() {
        for rate in [8000, 11025, 16000, 44100, 48000] {
            assert!(
                matches!(
                    refusal_after(config_req(config(1, rate))).0[0],
                    LegOutput::Started(_)
                ),
                "{rate}"
            );
        }
        for rate in [0, 7999, 48001, -8000, i32::MIN, i32::MAX] {
            assert_refused(
                &refusal_after(config_req(config(1, rate))).0,
                Refusal::BadSampleRate(rate),
            );
        }
        for rate in [16000, 0, 7999] {
            assert_refused(
                &refusal_after(config_req(config(2, rate))).0,
                Refusal::BadSampleRate(rate),
            );
        }
    }

    #[test]
    fn linear16_odd_byte_carries_to_the_next_chunk() {
        let now = Instant::now();
        let mut session = started(now);
        session.handle_request(now, audio(&[0x01, 0x02, 0x03]));
        assert_eq!(
            session.poll_output(),
            Some(LegOutput::Audio {
                samples: vec![0x0201]
            })
        );
        session.handle_request(now, audio(&[0x04]));
        assert_eq!(
            session.poll_output(),
            Some(LegOutput::Audio {
                samples: vec![0x0403]
            })
        );
        session.handle_request(now, audio(&[0xff]));
        assert_eq!(session.poll_output(), None);
        session.handle_request(now, audio(&[0xff, 0x00, 0x80]));
        assert_eq!(
            session.poll_output(),
            Some(LegOutput::Audio {
                samples: vec![-1, i16::MIN]
            })
        );
        assert_eq!(session.stats().samples, 4);
        assert_eq!(session.stats().audio_bytes, 8);
        session.handle_request(now, audio(&[0x10]));
        session.handle_end_of_stream(now);
        assert_eq!(
            drain_outputs(&mut session),
            vec![LegOutput::Ended(LegEnd::HalfClosed)]
        );
        assert_eq!(session.stats().trailing_bytes_dropped, 1);
    }

    #[test]
    fn mulaw_is_decoded() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_request(now, config_req(config(2, 8000)));
        drain_outputs(&mut session);
        session.handle_request(now, audio(&[0xff, 0x80, 0x00]));
        assert_eq!(
            session.poll_output(),
            Some(LegOutput::Audio {
                samples: vec![0, 32124, -32124]
            })
        );
    }

    #[test]
    fn audio_limits() {
        let now = Instant::now();
        let mut session = started(now);
        session.handle_request(now, audio(&[]));
        assert_eq!(session.poll_output(), None);
        assert_eq!(session.stats().empty_audio_chunks, 1);
        session.handle_request(now, audio(&vec![0; DEFAULT_MAX_AUDIO_CHUNK_BYTES]));
        assert!(
            matches!(session.poll_output(), Some(LegOutput::Audio { samples }) if samples.len() == DEFAULT_MAX_AUDIO_CHUNK_BYTES / 2)
        );
        session.handle_request(now, audio(&vec![0; DEFAULT_MAX_AUDIO_CHUNK_BYTES + 1]));
        let refusal = Refusal::ChunkTooLarge {
            bytes: DEFAULT_MAX_AUDIO_CHUNK_BYTES + 1,
        };
        assert_refused(&drain_outputs(&mut session), refusal);
        assert_eq!(refusal.grpc_code(), 3);
        assert!(session.is_finished());
    }

    #[test]
    fn config_twice_is_refused() {
        let now = Instant::now();
        let mut session = started(now);
        session.handle_request(now, config_req(config(1, 8000)));
        assert_refused(&drain_outputs(&mut session), Refusal::ConfigRepeated);
    }

    #[test]
    fn empty_request_after_config_is_ignored() {
        let now = Instant::now();
        let mut session = started(now);
        session.handle_request(now, StreamingVoiceRequest::default());
        assert_eq!(session.poll_output(), None);
        assert_eq!(session.stats().empty_requests, 1);
    }

    #[test]
    fn client_status_codes() {
        let now = Instant::now();
        for (code, end) in [
            (1, LegEnd::CallEnded),
            (4, LegEnd::Disconnected),
            (2001, LegEnd::Disconnected),
            (100, LegEnd::ClientError(100)),
            (101, LegEnd::ClientError(101)),
            (102, LegEnd::ClientError(102)),
        ] {
            let mut session = started(now);
            session.handle_request(now, status(code));
            assert_eq!(drain_outputs(&mut session), vec![LegOutput::Ended(end)], "{code}");
            assert!(session.is_finished());
            assert_eq!(session.poll_timeout(), None);
        }
        let mut session = started(now);
        session.handle_request(now, status(2));
        session.handle_request(now, status(3));
        assert_eq!(
            drain_outputs(&mut session),
            vec![
                LegOutput::Event(LegEvent::Hold),
                LegOutput::Event(LegEvent::Resume)
            ]
        );
        for code in [0, 0, 5, 99, 103, 1001, 1011, 2000, -1] {
            session.handle_request(now, status(code));
        }
        assert_eq!(session.poll_output(), None);
        assert_eq!(session.stats().status_success, 2);
        assert_eq!(session.stats().status_unknown, 7);
        assert!(!session.is_finished());
    }

    #[test]
    fn nothing_after_the_end() {
        let now = Instant::now();
        let mut session = started(now);
        session.handle_request(now, status(1));
        drain_outputs(&mut session);
        session.handle_request(now, audio(&[1, 2]));
        session.handle_request(now, status(2));
        session.handle_request(now, config_req(config(1, 8000)));
        session.handle_end_of_stream(now);
        session.handle_transport_error(now);
        session.drain(now);
        session.request_reconnect(now);
        session.pause(now);
        session.resume(now);
        session.handle_timeout(now + Duration::from_secs(3600));
        assert_eq!(session.poll_output(), None);
        assert!(session.is_finished());
        assert!(session.stats().after_end >= 5);

        let (_, mut refused) = refusal_after(audio(&[0]));
        refused.handle_request(now, config_req(config(1, 8000)));
        refused.drain(now);
        assert_eq!(refused.poll_output(), None);
    }

    #[test]
    fn half_close_and_transport_error() {
        let now = Instant::now();
        let mut session = started(now);
        session.handle_end_of_stream(now);
        assert_eq!(
            drain_outputs(&mut session),
            vec![LegOutput::Ended(LegEnd::HalfClosed)]
        );
        let mut session = started(now);
        session.handle_transport_error(now);
        assert_eq!(drain_outputs(&mut session), vec![LegOutput::Ended(LegEnd::Lost)]);
        let mut session = self::session(now);
        session.handle_end_of_stream(now);
        assert_eq!(
            drain_outputs(&mut session),
            vec![LegOutput::Ended(LegEnd::HalfClosed)]
        );
    }

    #[test]
    fn drain_and_reconnect() {
        let now = Instant::now();
        let mut session = started(now);
        session.drain(now);
        let outputs = drain_outputs(&mut session);
        assert_eq!(status_of(&outputs[0]), 1011);
        assert_eq!(outputs[1..], [LegOutput::Ended(LegEnd::Drained)]);
        let mut session = started(now);
        session.request_reconnect(now);
        let outputs = drain_outputs(&mut session);
        assert_eq!(status_of(&outputs[0]), 1012);
        assert_eq!(outputs[1..], [LegOutput::Ended(LegEnd::Drained)]);
        // Before the config too.
        let mut session = self::session(now);
        session.drain(now);
        let outputs = drain_outputs(&mut session);
        assert_eq!(status_of(&outputs[0]), 1011);
        assert_eq!(outputs[1..], [LegOutput::Ended(LegEnd::Drained)]);
    }

    #[test]
    fn pause_and_resume() {
        let now = Instant::now();
        let mut session = self::session(now);
        session.pause(now);
        assert_eq!(session.poll_output(), None);
        let mut session = started(now);
        session.resume(now);
        assert_eq!(session.poll_output(), None);
        session.pause(now);
        session.pause(now);
        assert!(session.is_paused());
        let outputs = drain_outputs(&mut session);
        assert_eq!(outputs.len(), 1);
        assert_eq!(status_of(&outputs[0]), 1002);
        session.handle_request(now, audio(&[0, 0]));
        assert!(matches!(session.poll_output(), Some(LegOutput::Audio { .. })));
        assert_eq!(session.stats().audio_while_paused, 1);
        session.resume(now);
        session.resume(now);
        let outputs = drain_outputs(&mut session);
        assert_eq!(outputs.len(), 1);
        assert_eq!(status_of(&outputs[0]), 1001);
        assert!(!session.is_paused());
    }

    #[test]
    fn idle_timeout_in_virtual_time() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let mut session = LegSession::new(
            t0,
            SessionConfig {
                idle_timeout: idle,
                ..SessionConfig::new(tokens())
            },
        );
        assert_eq!(session.poll_timeout(), Some(t0 + idle));
        session.handle_request(t0 + Duration::from_secs(4), config_req(config(1, 8000)));
        drain_outputs(&mut session);
        assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(14)));
        // Four hours of audio every 9 s keeps it alive.
        let mut now = t0 + Duration::from_secs(4);
        let mut audio_outputs = 0;
        for _ in 0..1600 {
            now += Duration::from_secs(9);
            session.handle_timeout(now);
            session.handle_request(now, audio(&[0, 0]));
            audio_outputs += drain_outputs(&mut session).len();
        }
        assert!(!session.is_finished());
        assert_eq!(audio_outputs, 1600);
        let deadline = session.poll_timeout().unwrap();
        assert_eq!(deadline, now + idle);
        session.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(session.poll_output(), None);
        session.handle_timeout(deadline);
        let outputs = drain_outputs(&mut session);
        assert_eq!(status_of(&outputs[0]), 1101);
        assert_eq!(outputs[1..], [LegOutput::Ended(LegEnd::Lost)]);
        assert_eq!(session.poll_timeout(), None);
    }

    #[test]
    fn idle_before_config_is_lost() {
        let t0 = Instant::now();
        let mut session = session(t0);
        session.handle_timeout(t0 + DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            drain_outputs(&mut session).last(),
            Some(&LegOutput::Ended(LegEnd::Lost))
        );
    }

    #[test]
    fn output_queue_is_bounded() {
        let now = Instant::now();
        let mut session = started(now);
        for _ in 0..OUTPUT_CAPACITY + 36 {
            session.handle_request(now, audio(&[1, 0]));
        }
        session.handle_request(now, status(2));
        session.pause(now);
        assert_eq!(session.stats().outputs_dropped, 38);
        session.drain(now);
        let outputs = drain_outputs(&mut session);
        assert_eq!(outputs.len(), OUTPUT_CAPACITY + 2);
        assert_eq!(outputs.last(), Some(&LegOutput::Ended(LegEnd::Drained)));
    }

    #[test]
    fn refusal_codes() {
        assert_eq!(Refusal::ConfigNotFirst.grpc_code(), 3);
        assert_eq!(Refusal::Unauthenticated.grpc_code(), 16);
        assert_eq!(Refusal::UnsupportedEncoding(3).grpc_code(), 12);
        assert_eq!(Refusal::BadSampleRate(1).grpc_code(), 3);
        assert_eq!(Refusal::MissingCallId.grpc_code(), 3);
        assert_eq!(Refusal::ConfigRepeated.grpc_code(), 3);
        for refusal in [
            Refusal::ConfigNotFirst,
            Refusal::Unauthenticated,
            Refusal::ChunkTooLarge { bytes: 1 },
        ] {
            assert_eq!(refusal.status_code(), 1102);
            assert!(!refusal.message().is_empty());
            assert!(!refusal.label().is_empty());
        }
    }

    #[test]
    fn call_leg_labels() {
        assert_eq!(CallLeg::from_wire(0).as_str(), "agent");
        assert_eq!(CallLeg::from_wire(1).as_str(), "customer");
        assert_eq!(CallLeg::from_wire(2).as_str(), "supervisor");
        assert_eq!(CallLeg::from_wire(7), CallLeg::Other(7));
        assert_eq!(CallLeg::Other(7).as_str(), "leg_7");
        assert_eq!(CallLeg::Other(-3).to_string(), "leg_-3");
    }
}
