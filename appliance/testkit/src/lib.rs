//! Test-only tools for Airlock: a Five9 VoiceStream **client**, for load and many-stream cases where the
//! Python harness (tests/system/harness/voicestream.py, one thread per leg) is too heavy.
//!
//! Nothing in the appliance depends on this crate and it is never shipped. It holds the tonic client for
//! `five9.voicestream.Voice/StreamingVoice` (generated in build.rs from the proto owned by
//! airlock-voicestream, reusing its prost messages), [`LegStreamer`], which plays one call leg the way
//! Five9 does (config → wait for SRV_REQ_START_STREAMING (1001) → LINEAR16 8 kHz audio paced in real
//! time on an absolute schedule, each chunk with `send_time` → CLT_CALL_ENDED → half-close) and reports
//! what the server answered, and [`tone_pcm`], deterministic audio to stream. The `vs_load` binary
//! (src/bin/vs_load.rs) is the concurrent-legs benchmark of docs/BENCHMARKS.md.

use std::time::{Duration, SystemTime};

use airlock_voicestream::proto::streaming_config::CallLeg;
use airlock_voicestream::proto::streaming_status::StatusCode;
use airlock_voicestream::proto::streaming_voice_request::StreamingRequest;
use airlock_voicestream::proto::voice_config::AudioEncoding;
use airlock_voicestream::proto::{
    StreamingConfig, StreamingStatus, StreamingVoiceRequest, StreamingVoiceResponse, VoiceConfig,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

mod generated {
    #![allow(clippy::all, missing_debug_implementations, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/five9.voicestream.rs"));
}

/// The generated tonic client of `five9.voicestream.Voice`.
pub use generated::voice_client::VoiceClient;

/// The sample rate VoiceStream sends today (LINEAR16 at 8000 Hz).
pub const SAMPLE_RATE: u32 = 8000;

/// Requests queued toward the transport before the sender waits (HTTP/2 flow control shows up as lag).
const REQUEST_QUEUE: usize = 8;

/// Who one stream is: the fields of `StreamingConfig` a test chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegSpec {
    pub vcc_call_id: String,
    pub call_leg: CallLeg,
    pub domain_id: String,
    pub subscription_id: String,
    pub trust_token: String,
    pub campaign_id: String,
    pub agent_id: String,
    pub skill_id: String,
}

impl LegSpec {
    /// A leg of call `vcc_call_id` with placeholder campaign, agent and skill values.
    pub fn new(
        vcc_call_id: impl Into<String>,
        call_leg: CallLeg,
        domain_id: impl Into<String>,
        subscription_id: impl Into<String>,
        trust_token: impl Into<String>,
    ) -> Self {
        LegSpec {
            vcc_call_id: vcc_call_id.into(),
            call_leg,
            domain_id: domain_id.into(),
            subscription_id: subscription_id.into(),
            trust_token: trust_token.into(),
            campaign_id: "campaign-1".into(),
            agent_id: "agent-1".into(),
            skill_id: "skill-1".into(),
        }
    }

    fn config(&self) -> StreamingConfig {
        StreamingConfig {
            voice_config: Some(VoiceConfig {
                encoding: AudioEncoding::Linear16.into(),
                sample_rate_hertz: SAMPLE_RATE as i32,
            }),
            vcc_call_id: self.vcc_call_id.clone(),
            domain_id: self.domain_id.clone(),
            campaign_id: self.campaign_id.clone(),
            agent_id: self.agent_id.clone(),
            call_leg: self.call_leg.into(),
            trust_token: self.trust_token.clone(),
            subscription_id: self.subscription_id.clone(),
            skill_id: self.skill_id.clone(),
        }
    }
}

/// How a leg is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Audio per `audio_content` message (100 ms = 1600 bytes at 8 kHz).
    pub chunk: Duration,
    /// How long to wait for SRV_REQ_START_STREAMING before giving up on the stream.
    pub wait_start: Duration,
    /// How long to wait for the server to end the RPC after the half-close.
    pub wait_end: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            chunk: Duration::from_millis(100),
            wait_start: Duration::from_secs(10),
            wait_end: Duration::from_secs(15),
        }
    }
}

/// One status the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The `StreamingStatus.code` number (1001 = SRV_REQ_START_STREAMING, 1011 = SRV_REQ_DISCONNECT, …).
    pub code: i32,
    pub message: String,
}

/// Why a leg did not stream to the end normally.
#[derive(Debug, Clone)]
pub enum LegFailure {
    /// The RPC could not be opened (connection refused, stream refused, …).
    Open(tonic::Status),
    /// No SRV_REQ_START_STREAMING within `wait_start`.
    NoStart,
    /// The first response was another status code.
    Refused(Received),
    /// The server ended the RPC with a non-OK gRPC status.
    Grpc(tonic::Status),
    /// The server ended the RPC (or the request stream broke) before all the audio was sent.
    EndedEarly,
    /// No end of the RPC within `wait_end` after the half-close.
    NoEnd,
}

/// What happened to one leg.
#[derive(Debug, Clone, Default)]
pub struct LegReport {
    /// Every status the server sent, in order.
    pub responses: Vec<Received>,
    /// Audio messages sent.
    pub chunks_sent: usize,
    /// When the first audio chunk was due (after 1001), for lining legs up.
    pub audio_started: Option<Instant>,
    /// The latest any chunk was handed to the transport after its scheduled time.
    pub max_lag: Duration,
    /// The server asked us to stop (1011 or 1012) before the audio ran out.
    pub stopped_by_server: bool,
    /// `None`: 1001 came first, all audio went out, the RPC ended with gRPC OK.
    pub failure: Option<LegFailure>,
}

impl LegReport {
    pub fn started(&self) -> bool {
        self.responses
            .first()
            .is_some_and(|r| r.code == StatusCode::SrvReqStartStreaming as i32)
    }

    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Plays call legs over one HTTP/2 connection (a tonic [`Channel`], cheap to clone; many legs may share it).
#[derive(Debug, Clone)]
pub struct LegStreamer {
    client: VoiceClient<Channel>,
    pacing: Pacing,
}

impl LegStreamer {
    pub fn new(channel: Channel, pacing: Pacing) -> Self {
        LegStreamer {
            client: VoiceClient::new(channel)
                .max_decoding_message_size(64 * 1024)
                .max_encoding_message_size(1024 * 1024),
            pacing,
        }
    }

    /// A plaintext (h2c) channel to `target` ("http://127.0.0.1:port"), connected lazily.
    pub fn plaintext_channel(target: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(tonic::transport::Endpoint::from_shared(target.to_string())?
            .tcp_nodelay(true)
            .connect_lazy())
    }

    /// Streams `pcm` (LINEAR16 samples at 8 kHz) as leg `spec`: config, wait for 1001, audio chunks on an
    /// absolute real-time schedule from the moment 1001 arrived, CLT_CALL_ENDED, half-close, then waits
    /// for the server to end the RPC. If the server says 1011 or 1012 it stops the audio and half-closes
    /// at once, as Five9 would.
    pub async fn stream(&self, spec: &LegSpec, pcm: &[i16]) -> LegReport {
        let mut report = LegReport::default();
        let (tx, rx) = mpsc::channel::<StreamingVoiceRequest>(REQUEST_QUEUE);
        let config = request(StreamingRequest::StreamingConfig(spec.config()), false);
        // The queue is empty, so this cannot wait; the receiver lives until the RPC is dropped.
        if tx.send(config).await.is_err() {
            report.failure = Some(LegFailure::EndedEarly);
            return report;
        }
        let mut client = self.client.clone();
        let mut inbound = match client.streaming_voice(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                report.failure = Some(LegFailure::Open(status));
                return report;
            }
        };

        // The first response must be SRV_REQ_START_STREAMING.
        match timeout(self.pacing.wait_start, inbound.message()).await {
            Err(_) => {
                report.failure = Some(LegFailure::NoStart);
                return report;
            }
            Ok(Err(status)) => {
                report.failure = Some(LegFailure::Grpc(status));
                return report;
            }
            Ok(Ok(None)) => {
                report.failure = Some(LegFailure::NoStart);
                return report;
            }
            Ok(Ok(Some(response))) => {
                let first = received(response);
                let start = first.code == StatusCode::SrvReqStartStreaming as i32;
                report.responses.push(first.clone());
                if !start {
                    report.failure = Some(LegFailure::Refused(first));
                    return report;
                }
            }
        }

        // Audio on an absolute schedule: chunk i is due at start + i × chunk, however late chunk i-1 was.
        let samples_per_chunk =
            (self.pacing.chunk.as_micros() as usize * SAMPLE_RATE as usize / 1_000_000).max(1);
        let start = Instant::now();
        report.audio_started = Some(start);
        let mut chunks = pcm.chunks(samples_per_chunk);
        let mut server_done = false;
        let mut next = chunks.next();
        while let Some(chunk) = next {
            let due = start + self.pacing.chunk * report.chunks_sent as u32;
            tokio::select! {
                biased;
                message = inbound.message(), if !server_done => match message {
                    Ok(Some(response)) => {
                        let r = received(response);
                        let stop = r.code == StatusCode::SrvReqDisconnect as i32
                            || r.code == StatusCode::SrvReqReconnect as i32;
                        report.responses.push(r);
                        if stop {
                            report.stopped_by_server = true;
                            break;
                        }
                    }
                    Ok(None) => server_done = true,
                    Err(status) => {
                        report.failure = Some(LegFailure::Grpc(status));
                        return report;
                    }
                },
                () = sleep_until(due) => {
                    if server_done {
                        report.failure = Some(LegFailure::EndedEarly);
                        return report;
                    }
                    let audio = request(StreamingRequest::AudioContent(pcm_bytes(chunk)), true);
                    if tx.send(audio).await.is_err() {
                        report.failure = Some(LegFailure::EndedEarly);
                        return report;
                    }
                    report.max_lag = report.max_lag.max(Instant::now().saturating_duration_since(due));
                    report.chunks_sent += 1;
                    next = chunks.next();
                }
            }
        }

        // End of call (unless the server already ended it), then half-close by dropping the sender.
        if !report.stopped_by_server {
            let ended = StreamingStatus {
                code: StatusCode::CltCallEnded.into(),
                message: "call ended".into(),
            };
            let _ = tx
                .send(request(StreamingRequest::StreamingStatus(ended), false))
                .await;
        }
        drop(tx);
        if server_done {
            return report;
        }
        let drain = async {
            loop {
                match inbound.message().await {
                    Ok(Some(response)) => report.responses.push(received(response)),
                    Ok(None) => return None,
                    Err(status) => return Some(LegFailure::Grpc(status)),
                }
            }
        };
        report.failure = match timeout(self.pacing.wait_end, drain).await {
            Ok(failure) => failure,
            Err(_) => Some(LegFailure::NoEnd),
        };
        report
    }
}

fn request(body: StreamingRequest, stamped: bool) -> StreamingVoiceRequest {
    StreamingVoiceRequest {
        streaming_request: Some(body),
        send_time: stamped.then(|| prost_types::Timestamp::from(SystemTime::now())),
    }
}

fn received(response: StreamingVoiceResponse) -> Received {
    let status = response.status.unwrap_or_default();
    Received {
        code: status.code,
        message: status.message,
    }
}

/// LINEAR16 little-endian bytes of `samples`.
pub fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `seconds` of deterministic 8 kHz audio: a tone of `hz` at about -12 dBFS with a little pseudo-random
/// noise (xorshift seeded by `seed`), so different legs carry different, reproducible samples.
pub fn tone_pcm(seconds: f64, hz: f64, seed: u32) -> Vec<i16> {
    let n = (seconds * f64::from(SAMPLE_RATE)).round() as usize;
    let mut state = seed.max(1);
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = f64::from((state >> 20) as i32 - 2048) / 2048.0;
            let t = i as f64 / f64::from(SAMPLE_RATE);
            let value = 8000.0 * (std::f64::consts::TAU * hz * t).sin() + 400.0 * noise;
            value as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_is_deterministic_and_distinct_per_seed() {
        let a = tone_pcm(0.5, 440.0, 1);
        assert_eq!(a.len(), 4000);
        assert_eq!(a, tone_pcm(0.5, 440.0, 1));
        assert_ne!(a, tone_pcm(0.5, 440.0, 2));
        assert!(a.iter().any(|&s| s > 7000) && a.iter().any(|&s| s < -7000));
    }

    #[test]
    fn config_carries_the_leg() {
        let spec = LegSpec::new("300000000115255", CallLeg::Customer, "dom-1", "sub-1", "token-1");
        let config = spec.config();
        assert_eq!(config.call_leg, CallLeg::Customer as i32);
        assert_eq!(config.trust_token, "token-1");
        let voice = config.voice_config.unwrap_or_default();
        assert_eq!(
            (voice.encoding, voice.sample_rate_hertz),
            (AudioEncoding::Linear16 as i32, 8000)
        );
        assert_eq!(pcm_bytes(&[1, -2]), vec![1, 0, 0xfe, 0xff]);
    }
}
