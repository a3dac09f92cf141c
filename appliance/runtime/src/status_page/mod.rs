//! The `[status_page]` HTTPS listener for the field technician (on the management NIC): health and why it is
//! degraded, live calls in numbers and states, the outbox spool, the uplink, transcription, software version,
//! image, slot and boot state, the last warnings and errors, and the selftest — run from the page, since a
//! production box has no console login. `docs/STATUS_PAGE.md` describes it for technicians.
//!
//! Routes: `GET /login` and `POST /login` (form field `password`, checked against the configured Argon2
//! hash), `GET /` (the page), `GET /status.json` (the same as JSON), `POST /selftest` and `POST /logout` (form
//! field `form_token`, the session's CSRF token), `GET /style.css`. Everything but the login page and the
//! style sheet needs a session (`sessions`): without one, pages redirect to `/login` and the JSON answers 401.
//! Responses are never cached and allow no scripts or framing. Passwords, cookies and tokens are never
//! logged; a wrong password is logged as a warning (without the peer's address), so it shows in the page's
//! last problems. The listener itself (TLS, reload, bounds) is `https`.

mod selftest;
mod sessions;
mod system;
pub(crate) mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_telemetry::{Metrics, RecentProblems};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::requests::Registry;
pub use selftest::SelftestCommand;
use sessions::{Sessions, TOKEN_BYTES};

/// The session cookie (`__Host-`: only over HTTPS, for this host and every path).
const COOKIE: &str = "__Host-airlock_session";
/// Largest form body read (a password or a token).
const MAX_FORM_BYTES: usize = 4096;
/// Headers every response carries.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("strict-transport-security", "max-age=31536000"),
];

/// What the operator configured (validated by the binary).
#[derive(Clone)]
pub struct StatusPageSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key of the listener.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The technician password's Argon2 hash (PHC string, `airlock status-password` makes one).
    pub password_hash: String,
    /// A session without a request for this long ends.
    pub session_idle: Duration,
    pub max_connections: usize,
    pub request_timeout: Duration,
    /// How the page runs the selftest.
    pub selftest: SelftestCommand,
}

impl std::fmt::Debug for StatusPageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPageSettings")
            .field("listen", &self.listen)
            .field("certificate", &self.certificate)
            .field("private_key", &self.private_key)
            .field("password_hash", &"<redacted>")
            .field("session_idle", &self.session_idle)
            .field("max_connections", &self.max_connections)
            .field("request_timeout", &self.request_timeout)
            .field("selftest", &self.selftest)
            .finish()
    }
}

/// Start-up failures of the listener.
pub use crate::https::ListenerError as StatusPageError;

/// Checks the password hash and loads the certificate and key (also used by `check-config`); the error
/// names what is wrong.
pub fn validate(settings: &StatusPageSettings) -> Result<(), String> {
    check_password_hash(&settings.password_hash)?;
    crate::https::validate(&settings.certificate, &settings.private_key).map_err(|error| error.to_string())
}

/// Whether `hash` is an Argon2 PHC string this page can verify passwords against.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|error| {
        format!("not a PHC password hash ({error}); make one with `airlock status-password`")
    })?;
    if !matches!(parsed.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
        return Err(format!(
            "the hash is {}, not Argon2; make one with `airlock status-password`",
            parsed.algorithm
        ));
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash value".into());
    }
    Ok(())
}

/// The Argon2id PHC hash of `password` with a fresh random salt (`airlock status-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|error| format!("no OS randomness for the salt: {error}"))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt).map_err(|error| error.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// Where the page's data comes from.
pub(crate) struct Sources {
    pub metrics: Metrics,
    pub registry: Registry,
    pub recent_problems: RecentProblems,
    pub started: Instant,
    pub site: String,
    pub appliance: String,
    pub objects_go_to: &'static str,
    pub events_go_to: &'static str,
}

struct Context {
    sources: Sources,
    password_hash: String,
    sessions: Mutex<Sessions>,
    /// One password check at a time (Argon2 is deliberately slow; a flood of logins must not take the CPU):
    /// the permit goes with the check into its blocking task, so a client that hangs up frees nothing early.
    verifying: Arc<tokio::sync::Semaphore>,
    selftests: selftest::Selftests,
}

impl Context {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Binds the listener and serves the page until the task is aborted.
pub(crate) async fn start(
    settings: StatusPageSettings,
    sources: Sources,
) -> Result<tokio::task::JoinHandle<()>, StatusPageError> {
    let context = Arc::new(Context {
        sources,
        password_hash: settings.password_hash.clone(),
        sessions: Mutex::new(Sessions::new(settings.session_idle)),
        verifying: Arc::new(tokio::sync::Semaphore::new(1)),
        selftests: selftest::Selftests::new(settings.selftest.clone()),
    });
    let listener = crate::https::Listener {
        what: "status page",
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

/// What a request asks for, from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    StyleSheet,
    LoginPage,
    Login,
    Page,
    Json,
    Selftest,
    Logout,
    WrongMethod,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let (wanted, route) = match path {
        "/style.css" => (Method::GET, Route::StyleSheet),
        "/login" if method == Method::POST => (Method::POST, Route::Login),
        "/login" => (Method::GET, Route::LoginPage),
        "/" => (Method::GET, Route::Page),
        "/status.json" => (Method::GET, Route::Json),
        "/selftest" => (Method::POST, Route::Selftest),
        "/logout" => (Method::POST, Route::Logout),
        _ => return Route::NotFound,
    };
    if *method == wanted || (wanted == Method::GET && *method == Method::HEAD) {
        route
    } else {
        Route::WrongMethod
    }
}

async fn handle(context: &Context, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let route = route(request.method(), request.uri().path());
    let cookie = session_cookie(&request);
    let now = Instant::now();
    // The page's own refresh (`/?refresh`) does not count as the technician using it: an unattended open
    // tab still ends at the idle time.
    let activity = request.uri().query() != Some(view::REFRESH_QUERY);
    let form_token = cookie
        .as_deref()
        .and_then(|cookie| context.sessions().check(now, cookie, activity));
    match route {
        Route::StyleSheet => respond(StatusCode::OK, "text/css", view::STYLE_SHEET.to_string()),
        Route::NotFound => respond(StatusCode::NOT_FOUND, "text/plain", "no such page\n".into()),
        Route::WrongMethod => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "wrong method for this page\n".into(),
        ),
        Route::LoginPage if form_token.is_some() => redirect("/"),
        Route::LoginPage => html(StatusCode::OK, view::login_page(None)),
        Route::Login => login(context, request).await,
        Route::Page | Route::Json | Route::Selftest | Route::Logout => {
            let (Some(cookie), Some(form_token)) = (cookie, form_token) else {
                return if route == Route::Json {
                    respond(
                        StatusCode::UNAUTHORIZED,
                        "application/json",
                        r#"{"error": "log in first: POST /login"}"#.into(),
                    )
                } else {
                    redirect("/login")
                };
            };
            match route {
                Route::Page => html(StatusCode::OK, view::status_page(&status(context), &form_token)),
                Route::Json => respond(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&status(context)).unwrap_or_default(),
                ),
                _ => form_action(context, request, route, &cookie).await,
            }
        }
    }
}

/// `POST /selftest` and `POST /logout`: only with the session's form token.
async fn form_action(
    context: &Context,
    request: Request<Incoming>,
    route: Route,
    cookie: &str,
) -> Response<Full<Bytes>> {
    let Some(form) = read_form(request).await else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "the form could not be read\n".into(),
        );
    };
    let presented = form_value(&form, "form_token").unwrap_or_default();
    if !context
        .sessions()
        .form_token_matches(Instant::now(), cookie, &presented)
    {
        return respond(
            StatusCode::FORBIDDEN,
            "text/plain",
            "this form is not from your session; reload the page\n".into(),
        );
    }
    if route == Route::Logout {
        context.sessions().close(cookie);
        let mut response = redirect("/login");
        response.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "__Host-airlock_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        return response;
    }
    // The run is the selftest module's own: the page answers now and shows it running until the report is in.
    let _started = context.selftests.start();
    redirect("/#selftest")
}

async fn login(context: &Context, request: Request<Incoming>) -> Response<Full<Bytes>> {
    // A login posted from another site's page (a browser says so) is refused: it could only lock the
    // technician out.
    if let Some(site) = request.headers().get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return html(
            StatusCode::FORBIDDEN,
            view::login_page(Some("Log in from this page.")),
        );
    }
    let Some(form) = read_form(request).await else {
        return html(
            StatusCode::BAD_REQUEST,
            view::login_page(Some("The form could not be read.")),
        );
    };
    let password = form_value(&form, "password").unwrap_or_default();
    let Ok(permit) = Arc::clone(&context.verifying).try_acquire_owned() else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            view::login_page(Some("Another login is being checked; try again in a moment.")),
        );
    };
    // Checked while holding the permit, so logins waiting at once cannot all pass it.
    if let Err(wait) = context.sessions().login_allowed(Instant::now()) {
        let wait_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = html(
            StatusCode::TOO_MANY_REQUESTS,
            view::login_page(Some(&format!(
                "Too many wrong passwords. Try again in {} s.",
                wait_secs.max(1)
            ))),
        );
        if let Ok(value) = HeaderValue::from_str(&wait_secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let hash = context.password_hash.clone();
    let matches = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = permit;
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    let now = Instant::now();
    if !matches {
        context.sessions().login_failed(now);
        tracing::warn!("status page: a login with a wrong password was refused");
        return html(
            StatusCode::UNAUTHORIZED,
            view::login_page(Some("Wrong password.")),
        );
    }
    let mut random = [[0u8; TOKEN_BYTES]; 2];
    if random.iter_mut().any(|bytes| getrandom::fill(bytes).is_err()) {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            view::login_page(Some("No randomness for a session; try again.")),
        );
    }
    let cookie = context.sessions().open(now, random);
    tracing::info!("status page: a technician logged in");
    let mut response = redirect("/");
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{COOKIE}={cookie}; Path=/; Secure; HttpOnly; SameSite=Strict"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn status(context: &Context) -> view::Status {
    let sources = &context.sources;
    let (problems, problems_total) = sources.recent_problems.snapshot();
    view::Status {
        site: sources.site.clone(),
        appliance: sources.appliance.clone(),
        health: crate::health::health(
            &sources.metrics,
            sources.started.elapsed(),
            Duration::ZERO,
            std::time::SystemTime::now(),
        ),
        calls: sources.registry.summary(Instant::now()),
        objects_go_to: sources.objects_go_to,
        events_go_to: sources.events_go_to,
        system: system::SystemInfo::read(),
        selftest: context.selftests.last(),
        selftest_running: context.selftests.is_running(),
        problems: problems.into_iter().map(view::ProblemLine::from).collect(),
        problems_total,
    }
}

/// The session cookie's value, if the request carries one.
fn session_cookie(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_string())
        })
}

/// The body of a form post, if it fits `MAX_FORM_BYTES`.
async fn read_form(request: Request<Incoming>) -> Option<String> {
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// A field of an `application/x-www-form-urlencoded` body, decoded.
fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (url_decode(key)? == name).then(|| url_decode(value)).flatten()
    })
}

/// Decodes `+` and `%XX`; `None` for a bad escape or bytes that are not UTF-8.
fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            _ => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/html; charset=utf-8", body)
}

/// 303 See Other to `location` (after a form post the browser gets the page again).
fn redirect(location: &'static str) -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::SEE_OTHER, "text/plain", String::new());
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(route(&Method::GET, "/"), Route::Page);
        assert_eq!(route(&Method::HEAD, "/"), Route::Page);
        assert_eq!(route(&Method::GET, "/login"), Route::LoginPage);
        assert_eq!(route(&Method::POST, "/login"), Route::Login);
        assert_eq!(route(&Method::GET, "/status.json"), Route::Json);
        assert_eq!(route(&Method::POST, "/selftest"), Route::Selftest);
        assert_eq!(route(&Method::GET, "/selftest"), Route::WrongMethod);
        assert_eq!(route(&Method::GET, "/logout"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/"), Route::WrongMethod);
        assert_eq!(route(&Method::GET, "/metrics"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/style.css"), Route::StyleSheet);
    }

    #[test]
    fn form_fields_are_url_decoded() {
        let form = "form_token=ab12&password=p%C3%A4ss+word%26%3D&empty=";
        assert_eq!(form_value(form, "password").as_deref(), Some("päss word&="));
        assert_eq!(form_value(form, "form_token").as_deref(), Some("ab12"));
        assert_eq!(form_value(form, "empty").as_deref(), Some(""));
        assert_eq!(form_value(form, "missing"), None);
        assert_eq!(form_value("password=%zz", "password"), None);
        assert_eq!(form_value("password=%ff", "password"), None);
    }

    #[test]
    fn passwords_hash_and_verify_and_bad_hashes_are_named() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert_eq!(check_password_hash(&hash), Ok(()));
        let parsed = PasswordHash::new(&hash).expect("parse");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"correct h0rse", &parsed)
                .is_err()
        );
        assert_ne!(hash, hash_password("correct horse").expect("hash"), "salted");
        assert!(check_password_hash("hunter2").is_err_and(|error| error.contains("not a PHC")));
        assert!(
            check_password_hash("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
                .is_err_and(|error| error.contains("not Argon2"))
        );
    }

    #[test]
    fn the_password_hash_is_not_in_debug_output() {
        let settings = StatusPageSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            certificate: PathBuf::from("c.pem"),
            private_key: PathBuf::from("k.pem"),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            session_idle: Duration::from_secs(900),
            max_connections: 8,
            request_timeout: Duration::from_secs(10),
            selftest: SelftestCommand::Child {
                program: PathBuf::from("airlock"),
                args: Vec::new(),
            },
        };
        assert!(!format!("{settings:?}").contains("argon2id"));
    }
}
