//! Five9 webhooks on their own HTTPS listener (plaintext only on loopback, for development):
//!
//! - `GET /cti` (and `GET /subscriptions/{id}`): Five9's verification before it saves a subscription,
//!   answered with the SHA-256 hex of the trust token as a JSON string.
//! - `POST /cti`: a CTI call event; its call id is `payload.attached_variables["Call.call_id"]`.
//! - `POST /subscriptions/{id}`: a stream-status event; its call id is `callId`.
//!
//! POSTs must carry one of the configured API keys in `x-api-key` or `X-F9-APIKEY` (401 otherwise); bodies
//! are JSON of at most `MAX_BODY_BYTES` (413 beyond, 400 with the parser's reason when malformed). The event
//! is sealed into the matching VoiceStream call's manifest (ANI/DNIS, dispositions and attached variables
//! are personal data: nothing of it is logged), or kept until that call opens (see `vs_hub`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_telemetry::{Metrics, WebhookResult};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::vs_hub::Hub;

/// Largest webhook body accepted.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// A client has this long to send its request (and to finish a TLS handshake).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handled at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// What the operator configured for the webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    /// Certificate chain and key (PEM); `None`: plaintext (loopback only, checked by the binary).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The trust token of the CTI subscription, for the GET verification.
    pub trust_token: String,
    /// API keys accepted on POSTs.
    pub api_keys: Vec<String>,
}

struct Context {
    hub: Hub,
    metrics: Metrics,
    verification: String,
    api_keys: Vec<Vec<u8>>,
}

/// Binds the webhook listener and serves it until the task is aborted.
pub(crate) async fn start(
    settings: WebhookSettings,
    hub: Hub,
    metrics: Metrics,
) -> Result<tokio::task::JoinHandle<()>, crate::VoiceStreamError> {
    let tls = match &settings.tls {
        Some((certificate, key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::plain_server_config(certificate, key, &[b"http/1.1"])
                .map_err(|error| crate::VoiceStreamError::Tls(error.to_string()))?,
        )),
        None => None,
    };
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| crate::VoiceStreamError::Listen {
                addr: settings.listen,
                source,
            })?;
    let digest = Sha256::digest(settings.trust_token.as_bytes());
    let context = Arc::new(Context {
        hub,
        metrics,
        verification: serde_json::Value::String(hex::encode(digest)).to_string(),
        api_keys: settings
            .api_keys
            .iter()
            .map(|key| key.as_bytes().to_vec())
            .collect(),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (stream, _peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(crate::sip_io::ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let context = Arc::clone(&context);
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let context = Arc::clone(&context);
                    async move { Ok::<_, Infallible>(handle(&context, request).await) }
                });
                // One request per connection: the 10 s limit is then a request limit, and a slow or idle
                // client cannot keep a connection slot.
                let mut http = hyper::server::conn::http1::Builder::new();
                http.keep_alive(false);
                let served = async {
                    match tls {
                        Some(acceptor) => {
                            let stream = acceptor.accept(stream).await?;
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                                .map_err(std::io::Error::other)
                        }
                        None => http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                            .map_err(std::io::Error::other),
                    }
                };
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, served).await;
            });
        }
    }))
}

async fn handle(context: &Context, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let subscription = path
        .strip_prefix("/subscriptions/")
        .map(|id| id.trim_end_matches('/').to_owned());
    let is_cti = path.trim_end_matches('/') == "/cti";
    if !is_cti && subscription.is_none() {
        return reply(
            context,
            WebhookResult::NotFound,
            StatusCode::NOT_FOUND,
            "no such webhook",
        );
    }
    if let Some(id) = &subscription
        && (id.is_empty() || id.len() > 128 || id.contains('/'))
    {
        return reply(
            context,
            WebhookResult::Malformed,
            StatusCode::BAD_REQUEST,
            "the subscription id must be 1-128 characters without '/'",
        );
    }
    match *request.method() {
        Method::GET => {
            context.metrics.voicestream.webhook(WebhookResult::Verified);
            json_response(StatusCode::OK, context.verification.clone())
        }
        Method::POST => {
            if !authorised(context, &request) {
                return reply(
                    context,
                    WebhookResult::Unauthorised,
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API key (x-api-key or X-F9-APIKEY)",
                );
            }
            let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    return reply(
                        context,
                        WebhookResult::Malformed,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body is larger than 256 KiB",
                    );
                }
                Err(_) => {
                    return reply(
                        context,
                        WebhookResult::Malformed,
                        StatusCode::BAD_REQUEST,
                        "the body could not be read",
                    );
                }
            };
            let event: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(event) => event,
                Err(error) => {
                    let reason = format!(
                        "malformed JSON: {} at line {} column {}",
                        json_error_kind(&error),
                        error.line(),
                        error.column()
                    );
                    return reply(
                        context,
                        WebhookResult::Malformed,
                        StatusCode::BAD_REQUEST,
                        &reason,
                    );
                }
            };
            let (kind, call_id) = match &subscription {
                None => ("cti_event", cti_call_id(&event)),
                Some(_) => ("stream_status", json_text(event.get("callId"))),
            };
            let Some(call_id) = call_id else {
                let reason = match kind {
                    "cti_event" => "no call id in payload.attached_variables[\"Call.call_id\"]",
                    _ => "no callId in the stream-status event",
                };
                return reply(context, WebhookResult::Malformed, StatusCode::BAD_REQUEST, reason);
            };
            let note = serde_json::json!({
                "kind": kind,
                "subscription_id": subscription,
                "received_at": crate::clock::rfc3339(SystemTime::now()),
                "event": event,
            });
            let matched = context.hub.annotate(&call_id, note.to_string()).await;
            context.metrics.voicestream.webhook(WebhookResult::Accepted);
            json_response(
                StatusCode::OK,
                serde_json::json!({ "accepted": true, "call_open": matched }).to_string(),
            )
        }
        _ => reply(
            context,
            WebhookResult::NotFound,
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET (verification) and POST (events)",
        ),
    }
}

fn authorised(context: &Context, request: &Request<Incoming>) -> bool {
    let presented = ["x-api-key", "x-f9-apikey"]
        .iter()
        .filter_map(|name| request.headers().get(*name))
        .map(|value| value.as_bytes());
    presented.into_iter().any(|key| {
        context
            .api_keys
            .iter()
            .any(|accepted| bool::from(accepted.ct_eq(key)))
    })
}

/// The Five9 call id of a CTI event: `payload.attached_variables["Call.call_id"]` (string or number).
fn cti_call_id(event: &serde_json::Value) -> Option<String> {
    json_text(
        event
            .get("payload")
            .and_then(|payload| payload.get("attached_variables"))
            .and_then(|variables| variables.get("Call.call_id")),
    )
}

fn json_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The parser's category, without the offending text (which may be personal data).
fn json_error_kind(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    }
}

fn reply(
    context: &Context,
    result: WebhookResult,
    status: StatusCode,
    reason: &str,
) -> Response<Full<Bytes>> {
    context.metrics.voicestream.webhook(result);
    json_response(status, serde_json::json!({ "error": reason }).to_string())
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
