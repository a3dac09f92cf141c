//! The HTTPS listeners' common part (the control API and the status page): a TLS certificate reloaded like
//! SIP's (`tls::watch`: SIGHUP or a file change; a failed reload keeps the previous pair), and an accept loop
//! serving HTTP/1.1 over TLS. Bounded: `max_connections` at once (more wait in the listen backlog), one
//! request per connection, each within `request_timeout` (TLS handshake included).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;

use crate::tls::CurrentConfig;

/// The only protocol offered.
pub(crate) const ALPN: &[&[u8]] = &[b"http/1.1"];

/// A listener's certificate, key and limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listener<'a> {
    /// Names the listener in logs ("control API", "status page").
    pub what: &'static str,
    pub listen: SocketAddr,
    pub certificate: &'a Path,
    pub private_key: &'a Path,
    pub max_connections: usize,
    pub request_timeout: Duration,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("TLS: {0}")]
    Tls(crate::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Loads the certificate and key (also used by `check-config`).
pub(crate) fn validate(certificate: &Path, private_key: &Path) -> Result<(), ListenerError> {
    crate::tls::plain_server_config(certificate, private_key, ALPN)
        .map(drop)
        .map_err(ListenerError::Tls)
}

/// Binds the listener and serves `handle` until the task is aborted.
pub(crate) async fn start<H, F>(
    listener: Listener<'_>,
    handle: H,
) -> Result<tokio::task::JoinHandle<()>, ListenerError>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let config = crate::tls::plain_server_config(listener.certificate, listener.private_key, ALPN)
        .map_err(ListenerError::Tls)?;
    let current = CurrentConfig::new(config);
    let files = Arc::new(crate::tls::plain_settings(
        listener.certificate,
        listener.private_key,
    ));
    let reloading = current.clone();
    let what = listener.what;
    let reload = crate::tls::watch(files, move |why, result| match result {
        Ok(loaded) => {
            reloading.set(crate::tls::with_alpn(loaded.config, ALPN));
            tracing::info!(trigger = why, "{what} certificate reloaded");
        }
        Err(error) => tracing::error!(trigger = why, %error,
            "{what} certificate reload failed; the previous certificate stays in use"),
    });
    let socket = TcpListener::bind(listener.listen)
        .await
        .map_err(|source| ListenerError::Listen {
            addr: listener.listen,
            source,
        })?;
    let slots = Arc::new(tokio::sync::Semaphore::new(listener.max_connections));
    let timeout = listener.request_timeout;
    let serve = async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (stream, _peer) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "{what} accept failed");
                    tokio::time::sleep(crate::sip_io::ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(config) = current.get() else {
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handle = handle.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let answer = handle(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                http.keep_alive(false);
                let served = async {
                    let stream = acceptor.accept(stream).await?;
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                        .map_err(std::io::Error::other)
                };
                let _ = tokio::time::timeout(timeout, served).await;
            });
        }
    };
    Ok(tokio::spawn(async move {
        tokio::select! {
            () = serve => {}
            () = reload => {}
        }
    }))
}
