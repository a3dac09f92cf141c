//! The Five9 VoiceStream destination: a tonic server for `five9.voicestream.Voice/StreamingVoice` (TLS with
//! the configured certificate, or plaintext h2c on loopback only), with grpc.health.v1 and server
//! reflection. Each stream is one call leg, driven by a sans-IO `LegSession`; its audio goes to the call the
//! hub joins it to. Limits: `max_streams` legs at once (more: RESOURCE_EXHAUSTED), message size, HTTP/2
//! keepalive, the session's idle timeout. On shutdown every leg is told 1011 (SRV_REQ_DISCONNECT) and ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_telemetry::{Metrics, StreamResult};
use airlock_voicestream::proto::{StreamingStatus, StreamingVoiceRequest, StreamingVoiceResponse};
use airlock_voicestream::{LegEnd, LegEvent, LegOutput, LegSession, Refusal, SessionConfig, TrustTokens};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::vs_call::{LegFinish, VsCallInput};
use crate::vs_hub::{Hub, LegAttachment};

mod generated {
    #![allow(clippy::all, missing_debug_implementations, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/five9.voicestream.rs"));
}

use generated::voice_server::{Voice, VoiceServer};

/// After the request stream ends, how long to watch for the response stream being dropped (a cancelled RPC)
/// before taking it for a clean half-close.
const CANCEL_SETTLE: Duration = Duration::from_millis(200);
/// A stream must bring its streaming config within this long of opening.
const CONFIG_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes beyond `max_message_bytes` a request message may take for its own fields.
const MESSAGE_FRAMING_ALLOWANCE: usize = 1024;
/// Five9's SRV_ERROR_GENERIC.
const SRV_ERROR_GENERIC: i32 = 1102;
/// Responses queued toward one client before the leg waits for it to read.
const RESPONSE_QUEUE: usize = 16;

/// What the operator configured for VoiceStream (validated by the binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceStreamSettings {
    pub listen: SocketAddr,
    /// Certificate chain and private key (PEM) for TLS; `None`: plaintext h2c (loopback only).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_streams: usize,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub leg_linger: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Recording channels per call (2: agent, customer; 3: and supervisor).
    pub channels: usize,
    /// Subscription id → accepted trust tokens.
    pub trust_tokens: std::collections::BTreeMap<String, Vec<String>>,
    /// The Five9 webhooks listener; `None` when not configured.
    pub webhooks: Option<crate::vs_webhooks::WebhookSettings>,
}

/// Why the VoiceStream server cannot start; names the file or address.
#[derive(Debug, thiserror::Error)]
pub enum VoiceStreamError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// Reads the TLS files once (for `check-config` and start-up).
pub fn validate(settings: &VoiceStreamSettings) -> Result<(), VoiceStreamError> {
    tls_identity(settings)?;
    if let Some(webhooks) = &settings.webhooks
        && let Some((certificate, key)) = &webhooks.tls
    {
        crate::tls::plain_server_config(certificate, key, &[b"http/1.1"])
            .map_err(|error| VoiceStreamError::Tls(error.to_string()))?;
    }
    Ok(())
}

fn tls_identity(
    settings: &VoiceStreamSettings,
) -> Result<Option<tonic::transport::Identity>, VoiceStreamError> {
    let Some((certificate, private_key)) = &settings.tls else {
        return Ok(None);
    };
    // The same checks as SIP over TLS: readable PEM, a certificate, a key that matches it.
    let check = crate::tls::TlsSettings {
        listen: settings.listen,
        certificate: certificate.clone(),
        private_key: private_key.clone(),
        client_ca: None,
        allowed_clients: Vec::new(),
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };
    crate::tls::validate(&check).map_err(|error| VoiceStreamError::Tls(error.to_string()))?;
    let read = |what, path: &PathBuf| {
        std::fs::read(path).map_err(|source| VoiceStreamError::Read {
            what,
            path: path.clone(),
            source,
        })
    };
    let certificate_pem = read("certificate", certificate)?;
    let key_pem = read("private key", private_key)?;
    Ok(Some(tonic::transport::Identity::from_pem(
        certificate_pem,
        key_pem,
    )))
}

/// The `Voice` service: one task per stream.
struct VoiceService {
    hub: Hub,
    metrics: Metrics,
    session: SessionConfig,
    streams: Arc<Semaphore>,
    drain: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Voice for VoiceService {
    type StreamingVoiceStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamingVoiceResponse, Status>> + Send + 'static>>;

    async fn streaming_voice(
        &self,
        request: Request<Streaming<StreamingVoiceRequest>>,
    ) -> Result<Response<Self::StreamingVoiceStream>, Status> {
        let Ok(permit) = Arc::clone(&self.streams).try_acquire_owned() else {
            self.metrics.voicestream.stream(StreamResult::RefusedCapacity);
            return Err(Status::resource_exhausted("too many VoiceStream streams"));
        };
        let header_token = request
            .metadata()
            .get("x-five9-trust-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let inbound = request.into_inner();
        let (responses, response_rx) = mpsc::channel(RESPONSE_QUEUE);
        let leg = Leg {
            session: LegSession::new(Instant::now(), self.session.clone()),
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
            responses,
            attachment: None,
        };
        let drain = self.drain.clone();
        tokio::spawn(async move {
            let _permit = permit;
            leg.run(inbound, header_token, drain).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(response_rx))))
    }
}

/// One call leg: the session, and where its audio goes once it has joined a call.
struct Leg {
    session: LegSession,
    hub: Hub,
    metrics: Metrics,
    responses: mpsc::Sender<Result<StreamingVoiceResponse, Status>>,
    attachment: Option<LegAttachment>,
}

impl Leg {
    async fn run(
        mut self,
        mut inbound: Streaming<StreamingVoiceRequest>,
        header_token: Option<String>,
        mut drain: watch::Receiver<bool>,
    ) {
        self.session.set_header_token(header_token);
        if *drain.borrow() {
            self.session.drain(Instant::now());
        }
        // The stream slot is held from the first byte: a client must send its config promptly.
        let first = tokio::time::timeout(CONFIG_DEADLINE, inbound.message()).await;
        let now = Instant::now();
        match first {
            Ok(Ok(Some(request))) => self.session.handle_request(now, request),
            Ok(Ok(None)) => self.session.handle_end_of_stream(now),
            Ok(Err(_)) => self.session.handle_transport_error(now),
            Err(_) => {
                self.metrics.voicestream.stream(StreamResult::RefusedProtocol);
                let status = Status::deadline_exceeded("no streaming config within 10 s");
                let _ = self.responses.send(Err(status)).await;
                return;
            }
        }
        loop {
            if !self.forward_outputs().await {
                return;
            }
            let deadline = self.session.poll_timeout();
            tokio::select! {
                message = inbound.message() => {
                    let now = Instant::now();
                    match message {
                        Ok(Some(request)) => self.session.handle_request(now, request),
                        // A cancelled RPC also ends the request stream cleanly; it differs from a
                        // half-close in that nobody reads our responses any more, which tonic shows by
                        // dropping the response stream, sometimes a moment later.
                        Ok(None) => {
                            let cancelled = self.responses.is_closed()
                                || tokio::time::timeout(CANCEL_SETTLE, self.responses.closed())
                                    .await
                                    .is_ok();
                            if cancelled {
                                self.session.handle_transport_error(now);
                            } else {
                                self.session.handle_end_of_stream(now);
                            }
                        }
                        Err(status) => {
                            // Undecodable or oversized input is the client's protocol error: tell it
                            // (1102 and the gRPC status) before the leg ends; anything else is a broken
                            // transport.
                            if matches!(
                                status.code(),
                                tonic::Code::Internal | tonic::Code::OutOfRange | tonic::Code::InvalidArgument
                            ) {
                                let five9_status = StreamingVoiceResponse {
                                    status: Some(StreamingStatus {
                                        code: SRV_ERROR_GENERIC,
                                        message: "malformed or oversized message".to_owned(),
                                    }),
                                    feedback: None,
                                };
                                let _ = self.responses.send(Ok(five9_status)).await;
                                let _ = self.responses.send(Err(status)).await;
                            }
                            self.session.handle_transport_error(now)
                        }
                    }
                }
                () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
                changed = drain.changed() => {
                    if changed.is_err() || *drain.borrow() {
                        self.session.drain(Instant::now());
                    }
                }
            }
        }
    }

    /// Carries out what the session asks; false once the stream is over.
    async fn forward_outputs(&mut self) -> bool {
        while let Some(output) = self.session.poll_output() {
            match output {
                LegOutput::Respond(response) => {
                    // A client that went away still gets its leg ended through the session.
                    let _ = self.responses.send(Ok(response)).await;
                }
                LegOutput::Started(info) => match self.hub.attach(&info).await {
                    Ok(attachment) => {
                        self.metrics.voicestream.stream(StreamResult::Accepted);
                        self.metrics.voicestream.legs_active.inc();
                        self.attachment = Some(attachment);
                    }
                    Err(refusal) => {
                        // The session's queued 1001 is never sent: 1100 and RESOURCE_EXHAUSTED instead.
                        self.metrics.voicestream.stream(StreamResult::RefusedCapacity);
                        let five9_status = StreamingVoiceResponse {
                            status: Some(StreamingStatus {
                                code: refusal.status_code(),
                                message: refusal.message().to_owned(),
                            }),
                            feedback: None,
                        };
                        let _ = self.responses.send(Ok(five9_status)).await;
                        let status = Status::new(tonic::Code::from(refusal.grpc_code()), refusal.message());
                        let _ = self.responses.send(Err(status)).await;
                        return false;
                    }
                },
                LegOutput::Audio { samples } => {
                    if let Some(attachment) = &self.attachment {
                        let input = VsCallInput::Audio {
                            leg: attachment.leg,
                            samples,
                            arrived: Instant::now(),
                        };
                        if attachment.inputs.send(input).await.is_err() {
                            // The call's recorder has stopped (its recording failed): ask Five9 to
                            // reconnect (1012), so the leg starts over on a new call instead of streaming
                            // audio nobody keeps.
                            tracing::warn!(
                                "the recorder of a VoiceStream call stopped; asking the leg to reconnect"
                            );
                            self.session.request_reconnect(Instant::now());
                        }
                    }
                }
                LegOutput::Event(event) => {
                    if let Some(attachment) = &self.attachment {
                        let leg = attachment.leg;
                        let input = match event {
                            LegEvent::Hold => VsCallInput::Hold { leg },
                            LegEvent::Resume => VsCallInput::Resume { leg },
                        };
                        let _ = attachment.inputs.send(input).await;
                    }
                }
                LegOutput::Refused(refusal) => {
                    let result = match refusal {
                        Refusal::Unauthenticated => StreamResult::RefusedAuth,
                        _ => StreamResult::RefusedProtocol,
                    };
                    self.metrics.voicestream.stream(result);
                    let status = Status::new(tonic::Code::from(refusal.grpc_code()), refusal.message());
                    let _ = self.responses.send(Err(status)).await;
                    self.end(LegFinish::Normal).await;
                    return false;
                }
                LegOutput::Ended(end) => {
                    let how = match end {
                        LegEnd::Lost | LegEnd::ClientError(_) => LegFinish::Lost,
                        _ => LegFinish::Normal,
                    };
                    self.end(how).await;
                    return false;
                }
            }
        }
        true
    }

    async fn end(&mut self, how: LegFinish) {
        if let Some(attachment) = self.attachment.take() {
            self.metrics.voicestream.legs_active.dec();
            self.hub.detach(&attachment, how).await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Binds the listener and serves until `shutdown` turns true: then every leg gets 1011 and ends, and the
/// server stops once they have.
pub(crate) async fn start(
    settings: VoiceStreamSettings,
    hub: Hub,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, VoiceStreamError> {
    let identity = tls_identity(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| VoiceStreamError::Listen {
            addr: settings.listen,
            source,
        })?;
    let session = SessionConfig {
        trust_tokens: TrustTokens::new(settings.trust_tokens.clone()),
        max_audio_chunk_bytes: settings.max_message_bytes,
        idle_timeout: settings.idle_timeout,
    };
    let service = VoiceService {
        hub,
        metrics,
        session,
        streams: Arc::new(Semaphore::new(settings.max_streams)),
        drain: shutdown.clone(),
    };
    let voice = VoiceServer::new(service)
        // Room for the message's own framing, so an oversized audio chunk reaches the session and gets its
        // clear refusal (1102 + INVALID_ARGUMENT) instead of tonic's generic one.
        .max_decoding_message_size(
            settings
                .max_message_bytes
                .saturating_add(MESSAGE_FRAMING_ALLOWANCE),
        )
        .max_encoding_message_size(64 * 1024);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<VoiceServer<VoiceService>>().await;
    // Both reflection protocols: grpcurl speaks v1, grpcio's client still v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(airlock_voicestream::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|error| VoiceStreamError::Reflection(error.to_string()))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|error| VoiceStreamError::Reflection(error.to_string()))?;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .max_concurrent_streams(u32::try_from(settings.max_streams).ok());
    if let Some(identity) = identity {
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|error| VoiceStreamError::Tls(error.to_string()))?;
    }
    let router = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(voice);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut stop = shutdown;
    Ok(tokio::spawn(async move {
        let stopped = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            // Legs have been told 1011; give them a moment to end their streams cleanly.
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if let Err(error) = router.serve_with_incoming_shutdown(incoming, stopped).await {
            tracing::error!(%error, "the VoiceStream server failed");
        }
    }))
}
