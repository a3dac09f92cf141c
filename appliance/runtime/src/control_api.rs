//! The `[control_api]` HTTPS listener: an agent-desktop integration pauses and resumes the recording of a
//! live call (see `requests` for how a call is named and what a pause does).
//!
//! - `POST /v1/calls/{id}/pause`, `POST /v1/calls/{id}/resume`: 200 `{"call": "...", "state": "paused" |
//!   "recording"}`; idempotent.
//! - `GET /v1/calls/{id}`: the same answer, changing nothing.
//!
//! `{id}` is one percent-encoded path segment. Every request must carry `Authorization: Bearer <token>`
//! (compared in constant time; 401 otherwise, checked before anything else). Errors are JSON
//! `{"error": "<reason>"}`: 400 malformed id, 404 unknown path or call, 405 wrong method, 413 body over
//! `MAX_BODY_BYTES` (bodies are not needed and otherwise ignored), 429 too many pauses, 503 the call did not
//! answer in time. Bounded: `max_connections` at once (more wait in the listen backlog), one request per
//! connection, each within `request_timeout` (TLS handshake included; the listener is `https`). Nothing of a
//! request (id, token) is logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_telemetry::{Metrics, RequestAction, RequestOutcome, RequestSource};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::requests::{Registry, RequestError};

/// Largest request body read (bodies carry nothing the API needs).
const MAX_BODY_BYTES: usize = 4096;

/// What the operator configured (validated by the binary).
#[derive(Clone)]
pub struct ControlApiSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key of the listener.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The bearer token clients must present (read from `token_file`).
    pub token: String,
    pub max_connections: usize,
    pub request_timeout: Duration,
}

impl std::fmt::Debug for ControlApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlApiSettings")
            .field("listen", &self.listen)
            .field("certificate", &self.certificate)
            .field("private_key", &self.private_key)
            .field("token", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Start-up failures of the listener.
pub use crate::https::ListenerError as ControlApiError;

/// Loads the certificate and key (also used by `check-config`).
pub fn validate(settings: &ControlApiSettings) -> Result<(), ControlApiError> {
    crate::https::validate(&settings.certificate, &settings.private_key)
}

struct Context {
    registry: Registry,
    metrics: Metrics,
    token: Vec<u8>,
}

/// Binds the listener and serves it (and reloads its certificate) until the task is aborted.
pub(crate) async fn start(
    settings: ControlApiSettings,
    registry: Registry,
    metrics: Metrics,
) -> Result<tokio::task::JoinHandle<()>, ControlApiError> {
    let context = Arc::new(Context {
        registry,
        metrics,
        token: settings.token.into_bytes(),
    });
    let listener = crate::https::Listener {
        what: "control API",
        listen: settings.listen,
        certificate: &settings.certificate,
        private_key: &settings.private_key,
        max_connections: settings.max_connections,
        request_timeout: settings.request_timeout,
    };
    crate::https::start(listener, move |request| {
        let context = Arc::clone(&context);
        async move { handle(&context, request).await }
    })
    .await
}

/// A request as understood from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Call { id: String, action: RequestAction },
    BadId(&'static str),
    WrongMethod,
    NotFound,
}

/// Maps method and path to what is asked.
fn route(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v1/calls/") else {
        return Route::NotFound;
    };
    let (segment, action) = match rest.split_once('/') {
        None => (rest, RequestAction::Status),
        Some((segment, "pause")) => (segment, RequestAction::Pause),
        Some((segment, "resume")) => (segment, RequestAction::Resume),
        Some(_) => return Route::NotFound,
    };
    let wanted = match action {
        RequestAction::Status => Method::GET,
        RequestAction::Pause | RequestAction::Resume => Method::POST,
    };
    if *method != wanted {
        return Route::WrongMethod;
    }
    let Some(id) = percent_decode(segment) else {
        return Route::BadId("the call id is not valid percent-encoded UTF-8");
    };
    match crate::requests::check_id(&id) {
        Ok(()) => Route::Call { id, action },
        Err(error) => Route::BadId(error.reason()),
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Whether `authorization` is `Bearer <token>` with the configured token (constant time).
fn authorised(token: &[u8], authorization: Option<&[u8]>) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some(scheme) = value.get(..7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let presented = value.get(7..).unwrap_or_default().trim_ascii();
    bool::from(token.ct_eq(presented))
}

async fn handle(context: &Context, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let route = route(request.method(), request.uri().path());
    let action = match &route {
        Route::Call { action, .. } => *action,
        _ => RequestAction::Status,
    };
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if !authorised(&context.token, authorization) {
        let mut response = error(
            context,
            action,
            RequestOutcome::Unauthorised,
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let (id, action) = match route {
        Route::Call { id, action } => (id, action),
        Route::BadId(reason) => {
            return error(
                context,
                action,
                RequestOutcome::BadRequest,
                StatusCode::BAD_REQUEST,
                reason,
            );
        }
        Route::WrongMethod => {
            return error(
                context,
                action,
                RequestOutcome::BadRequest,
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST for /pause and /resume, GET for the call's state",
            );
        }
        Route::NotFound => {
            return error(
                context,
                action,
                RequestOutcome::BadRequest,
                StatusCode::NOT_FOUND,
                "no such endpoint: POST /v1/calls/{id}/pause, POST /v1/calls/{id}/resume, GET /v1/calls/{id}",
            );
        }
    };
    if let Err(too_large) = Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        let (status, reason) = if too_large.is::<http_body_util::LengthLimitError>() {
            (StatusCode::PAYLOAD_TOO_LARGE, "the body is larger than 4 KiB")
        } else {
            (StatusCode::BAD_REQUEST, "the body could not be read")
        };
        return error(context, action, RequestOutcome::BadRequest, status, reason);
    }
    match context.registry.request(&id, action, RequestSource::Https).await {
        Ok(state) => {
            let outcome = RequestOutcome::Ok;
            context
                .metrics
                .requests
                .request(RequestSource::Https, action, outcome);
            json_response(
                StatusCode::OK,
                serde_json::json!({ "call": state.call, "state": state.state() }).to_string(),
            )
        }
        Err(failure) => {
            let status = match failure {
                RequestError::UnknownCall | RequestError::CallEnded => StatusCode::NOT_FOUND,
                RequestError::CallBusy => StatusCode::SERVICE_UNAVAILABLE,
                RequestError::TooManyPauses => StatusCode::TOO_MANY_REQUESTS,
                RequestError::AmbiguousId => StatusCode::CONFLICT,
                RequestError::EmptyId | RequestError::IdTooLong | RequestError::IdControlCharacters => {
                    StatusCode::BAD_REQUEST
                }
            };
            error(context, action, failure.outcome(), status, failure.reason())
        }
    }
}

fn error(
    context: &Context,
    action: RequestAction,
    outcome: RequestOutcome,
    status: StatusCode,
    reason: &str,
) -> Response<Full<Bytes>> {
    context
        .metrics
        .requests
        .request(RequestSource::Https, action, outcome);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_the_call_and_the_action() {
        assert_eq!(
            route(&Method::POST, "/v1/calls/abc-1/pause"),
            Route::Call {
                id: "abc-1".into(),
                action: RequestAction::Pause
            }
        );
        assert_eq!(
            route(&Method::POST, "/v1/calls/a%2Fb%3Bc/resume"),
            Route::Call {
                id: "a/b;c".into(),
                action: RequestAction::Resume
            }
        );
        assert_eq!(
            route(&Method::GET, "/v1/calls/abc-1"),
            Route::Call {
                id: "abc-1".into(),
                action: RequestAction::Status
            }
        );
        assert_eq!(route(&Method::GET, "/v1/calls/abc-1/pause"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/v1/calls/abc-1"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/v1/calls/abc-1/stop"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/metrics"), Route::NotFound);
        assert!(matches!(
            route(&Method::POST, "/v1/calls//pause"),
            Route::BadId(_)
        ));
        assert!(matches!(
            route(&Method::POST, "/v1/calls/%zz/pause"),
            Route::BadId(_)
        ));
        assert!(matches!(
            route(&Method::POST, "/v1/calls/%ff/pause"),
            Route::BadId(_)
        ));
        assert!(matches!(
            route(&Method::POST, "/v1/calls/a%0Ab/pause"),
            Route::BadId(_)
        ));
        let long = format!("/v1/calls/{}/pause", "x".repeat(300));
        assert!(matches!(route(&Method::POST, &long), Route::BadId(_)));
    }

    #[test]
    fn only_the_configured_bearer_token_is_accepted() {
        let token = b"s3cret-token-0123456789";
        assert!(authorised(token, Some(b"Bearer s3cret-token-0123456789")));
        assert!(authorised(token, Some(b"bearer s3cret-token-0123456789 ")));
        assert!(!authorised(token, None));
        assert!(!authorised(token, Some(b"Bearer ")));
        assert!(!authorised(token, Some(b"Bearer s3cret-token-012345678")));
        assert!(!authorised(token, Some(b"Basic czNjcmV0LXRva2Vu")));
        assert!(!authorised(token, Some(b"s3cret-token-0123456789")));
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let settings = ControlApiSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            certificate: PathBuf::from("c.pem"),
            private_key: PathBuf::from("k.pem"),
            token: "s3cret-token-0123456789".into(),
            max_connections: 4,
            request_timeout: Duration::from_secs(5),
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
