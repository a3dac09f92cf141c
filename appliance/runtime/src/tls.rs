//! SIP over TLS: the rustls server configuration (TLS 1.2 and 1.3 only; optionally mutual TLS against a CA
//! bundle plus an allow-list of client identities), its reload when SIGHUP arrives or the files change,
//! and the accept path (a bounded number of handshakes in flight, a handshake timeout, then the connection
//! is handed to `sip_io` like a TCP one, with an idle timeout).
//!
//! A reload builds a whole new server configuration and swaps it for new connections only; connections
//! already up keep theirs, so no call is dropped. A reload that fails keeps the previous configuration.
//! [`watch`] (the file/SIGHUP trigger) and [`CurrentConfig`] also serve the control API's listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use airlock_sip::Transport;
use airlock_telemetry::{Metrics, ReloadResult, TlsHandshakeResult};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::sip_io::{ACCEPT_ERROR_PAUSE, SipSender};

/// TLS handshakes in progress at once; more connections are closed at once (`refused_busy`).
const MAX_HANDSHAKES_IN_FLIGHT: usize = 256;
/// How often the certificate, key and CA files are checked for changes (a change is loaded once the files
/// have been stable for one interval).
const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What the operator configured for SIP over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    /// PEM: the server certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// PEM: CAs that sign client certificates. Set: clients must present a certificate (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Client identities allowed (a DNS or URI subjectAltName, or the subject CN), compared exactly
    /// (DNS names case-insensitively). Empty: any client certificate the CA signed.
    pub allowed_clients: Vec<String>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Why the TLS material could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the certificate {certificate} cannot be used with the key {key}: {reason}")]
    Mismatch {
        certificate: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("the client CA bundle {path} is not usable: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("the certificate {path} cannot be parsed: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// A loaded server configuration and when its certificate expires.
pub(crate) struct Loaded {
    pub(crate) config: Arc<ServerConfig>,
    expires_unix: i64,
}

/// Loads and checks the certificate, key and CA bundle; used at start-up, on reload, and by `check-config`.
pub fn validate(settings: &TlsSettings) -> Result<(), TlsError> {
    load(settings).map(|_| ())
}

/// A server configuration for another HTTPS listener (no client certificates) offering `alpn`.
pub(crate) fn plain_server_config(
    certificate: &Path,
    private_key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = load(&plain_settings(certificate, private_key))?.config;
    Ok(with_alpn(config, alpn))
}

/// The settings of another HTTPS listener's certificate and key (no client certificates), for [`watch`].
pub(crate) fn plain_settings(certificate: &Path, private_key: &Path) -> TlsSettings {
    TlsSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        certificate: certificate.to_owned(),
        private_key: private_key.to_owned(),
        client_ca: None,
        allowed_clients: Vec::new(),
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    }
}

/// `config` offering `alpn`.
pub(crate) fn with_alpn(config: Arc<ServerConfig>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key file",
            path: path.to_path_buf(),
            expected: "private key",
        },
        other => TlsError::Read {
            what: "private key file",
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// A TLS client configuration (TLS 1.2/1.3, ring) that trusts the CAs in `ca` and, with `identity`
/// (certificate chain, private key), presents a client certificate.
pub(crate) fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = trust_anchors(ca)?;
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| TlsError::ClientCa {
                path: ca.to_path_buf(),
                reason: error.to_string(),
            })?
            .with_root_certificates(roots);
    let config = match identity {
        Some((certificate, key)) => builder
            .with_client_auth_cert(
                read_certificates(certificate, "certificate file")?,
                read_private_key(key)?,
            )
            .map_err(|error| TlsError::Mismatch {
                certificate: certificate.to_path_buf(),
                key: key.to_path_buf(),
                reason: error.to_string(),
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn load(settings: &TlsSettings) -> Result<Loaded, TlsError> {
    let certificates = read_certificates(&settings.certificate, "certificate file")?;
    let key = read_private_key(&settings.private_key)?;
    let expires_unix = certificates
        .first()
        .map(|leaf| not_after(leaf, &settings.certificate))
        .transpose()?
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError::Mismatch {
            certificate: settings.certificate.clone(),
            key: settings.private_key.clone(),
            reason: error.to_string(),
        })?;
    let builder = match &settings.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certificates(path, "client CA bundle")? {
                roots.add(ca).map_err(|error| TlsError::ClientCa {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::ClientCa {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates, key)
        .map_err(|error| TlsError::Mismatch {
            certificate: settings.certificate.clone(),
            key: settings.private_key.clone(),
            reason: error.to_string(),
        })?;
    Ok(Loaded {
        config: Arc::new(config),
        expires_unix,
    })
}

/// The CA bundle `ca` as trust anchors: every certificate must be PEM and usable as an anchor.
pub(crate) fn trust_anchors(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca, "CA bundle")? {
        roots.add(certificate).map_err(|error| TlsError::ClientCa {
            path: ca.to_path_buf(),
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}

fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| read_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    Ok(certificates)
}

fn not_after(certificate: &CertificateDer<'_>, path: &Path) -> Result<i64, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(certificate.as_ref()).map_err(|error| TlsError::Parse {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    Ok(parsed.validity().not_after.timestamp())
}

/// The identities a client certificate carries: DNS and URI subjectAltNames and subject common names.
fn client_identities(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let mut identities = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => identities.push(dns.to_string()),
                x509_parser::extensions::GeneralName::URI(uri) => identities.push(uri.to_string()),
                _ => {}
            }
        }
    }
    for common_name in parsed.subject().iter_common_name() {
        if let Ok(text) = common_name.as_str() {
            identities.push(text.to_owned());
        }
    }
    identities
}

/// True when one of `presented` is on `allowed` (DNS-like names compare case-insensitively).
fn identity_allowed(allowed: &[String], presented: &[String]) -> bool {
    allowed.is_empty()
        || presented
            .iter()
            .any(|name| allowed.iter().any(|entry| entry.eq_ignore_ascii_case(name)))
}

/// The server configuration in use for new connections, swapped on reload.
#[derive(Clone)]
pub(crate) struct CurrentConfig(Arc<RwLock<Arc<ServerConfig>>>);

impl CurrentConfig {
    pub(crate) fn new(config: Arc<ServerConfig>) -> CurrentConfig {
        CurrentConfig(Arc::new(RwLock::new(config)))
    }

    pub(crate) fn get(&self) -> Option<Arc<ServerConfig>> {
        self.0.read().ok().map(|config| Arc::clone(&config))
    }

    pub(crate) fn set(&self, config: Arc<ServerConfig>) {
        if let Ok(mut current) = self.0.write() {
            *current = config;
        }
    }
}

/// Loads the TLS material, binds the listener and starts the accept and reload tasks.
pub async fn start(
    settings: TlsSettings,
    sip: SipSender,
    metrics: Metrics,
) -> Result<(), crate::RuntimeError> {
    let loaded = load(&settings).map_err(crate::RuntimeError::Tls)?;
    metrics
        .security
        .tls_certificate_expiry_seconds
        .set(loaded.expires_unix);
    let current = CurrentConfig::new(loaded.config);
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(crate::RuntimeError::SipListen)?;
    let settings = Arc::new(settings);
    tokio::spawn(reload_on_change(
        Arc::clone(&settings),
        current.clone(),
        metrics.clone(),
    ));
    tokio::spawn(accept_loop(listener, settings, current, sip, metrics));
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<TlsSettings>,
    current: CurrentConfig,
    sip: SipSender,
    metrics: Metrics,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES_IN_FLIGHT));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "SIP TLS accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if !sip.source_allowed(peer.ip()) {
            continue;
        }
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            metrics.security.tls_handshake(TlsHandshakeResult::Busy);
            continue;
        };
        let Some(slot) = sip.inbound_slot(peer.ip()) else {
            metrics.security.tls_handshake(TlsHandshakeResult::Busy);
            continue;
        };
        let Some(config) = current.get() else {
            continue;
        };
        let settings = Arc::clone(&settings);
        let sip = sip.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let acceptor = TlsAcceptor::from(config);
            let handshake = tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await;
            drop(permit);
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "SIP TLS handshake failed");
                    metrics.security.tls_handshake(TlsHandshakeResult::Failed);
                    return;
                }
                Err(_) => {
                    tracing::debug!("SIP TLS handshake timed out");
                    metrics.security.tls_handshake(TlsHandshakeResult::Timeout);
                    return;
                }
            };
            if settings.client_ca.is_some() {
                let presented = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(client_identities)
                    .unwrap_or_default();
                if !identity_allowed(&settings.allowed_clients, &presented) {
                    tracing::warn!("SIP TLS client certificate is not on the allow-list; closing");
                    metrics
                        .security
                        .tls_handshake(TlsHandshakeResult::ClientNotAllowed);
                    return;
                }
            }
            metrics.security.tls_handshake(TlsHandshakeResult::Ok);
            metrics.security.tls_connections.inc();
            let gauge = metrics.security.tls_connections.clone();
            let (outbound, reader) = sip.adopt_stream(
                stream,
                peer,
                Transport::Tls,
                Some(settings.idle_timeout),
                Some(slot),
            );
            drop(outbound);
            let _ended = reader.await;
            gauge.dec();
        });
    }
}

/// When each watched file last changed, to notice edits and replacements.
fn file_stamps(settings: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    std::iter::once(&settings.certificate)
        .chain(std::iter::once(&settings.private_key))
        .chain(settings.client_ca.iter())
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len())))
        })
        .collect()
}

async fn reload_on_change(settings: Arc<TlsSettings>, current: CurrentConfig, metrics: Metrics) {
    watch(settings, |why, result| match result {
        Ok(loaded) => {
            current.set(loaded.config);
            metrics
                .security
                .tls_certificate_expiry_seconds
                .set(loaded.expires_unix);
            metrics.security.tls_reload(ReloadResult::Ok);
            tracing::info!(trigger = why, "SIP TLS certificate reloaded");
        }
        Err(error) => {
            metrics.security.tls_reload(ReloadResult::Failed);
            tracing::error!(trigger = why, %error, "SIP TLS reload failed; the previous certificate stays in use");
        }
    })
    .await;
}

/// Reloads the files of `settings` when SIGHUP arrives or they change (polled every `FILE_POLL_INTERVAL`)
/// and hands each result, with its trigger, to `reloaded`. Runs until dropped.
pub(crate) async fn watch(
    settings: Arc<TlsSettings>,
    mut reloaded: impl FnMut(&'static str, Result<Loaded, TlsError>),
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; TLS files are still watched");
            None
        }
    };
    let mut loaded_stamps = file_stamps(&settings);
    // A change is acted on once the files have stayed the same for one more poll, so a key and a
    // certificate replaced one after the other give one reload, not a failed one in between.
    let mut settling: Option<Vec<Option<(SystemTime, u64)>>> = None;
    let mut poll = tokio::time::interval(FILE_POLL_INTERVAL);
    loop {
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => None } } => "SIGHUP",
            _ = poll.tick() => {
                let stamps = file_stamps(&settings);
                if stamps == loaded_stamps {
                    settling = None;
                    continue;
                }
                if settling.as_ref() != Some(&stamps) {
                    settling = Some(stamps);
                    continue;
                }
                "file change"
            }
        };
        loaded_stamps = file_stamps(&settings);
        settling = None;
        reloaded(why, load(&settings));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_exactly_and_dns_case_insensitively() {
        let allowed = vec!["sbc1.example.net".to_owned(), "spiffe://site/sbc2".to_owned()];
        assert!(identity_allowed(&allowed, &["SBC1.Example.NET".to_owned()]));
        assert!(identity_allowed(&allowed, &["spiffe://site/sbc2".to_owned()]));
        assert!(!identity_allowed(&allowed, &["sbc3.example.net".to_owned()]));
        assert!(!identity_allowed(&allowed, &["x.sbc1.example.net".to_owned()]));
        assert!(!identity_allowed(&allowed, &[]));
        assert!(identity_allowed(&[], &[]));
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let settings = TlsSettings {
            listen: "127.0.0.1:0".parse().expect("address"),
            certificate: PathBuf::from("/nonexistent/airlock-cert.pem"),
            private_key: PathBuf::from("/nonexistent/airlock-key.pem"),
            client_ca: None,
            allowed_clients: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        };
        let error = validate(&settings)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("/nonexistent/airlock-cert.pem"), "{error}");
        assert!(error.contains("certificate file"), "{error}");
    }
}
