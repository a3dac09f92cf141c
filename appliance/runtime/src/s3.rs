//! The S3 object sink: delivers the outbox's object records to an S3-compatible bucket with aws-sdk-s3 over
//! rustls (ring). Every write is create-only (`If-None-Match: *`) and carries the object's SHA-256 — as the
//! `x-amz-checksum-sha256` the server verifies, and as user metadata `sha256` (hex, whole object) that lets
//! a later attempt recognise its own object: a 412 on a key whose metadata names the same SHA-256 is a
//! delivery that was not yet acknowledged (a crash, a lost response), anything else under the key is
//! refused and the record kept. Objects above the multipart threshold go in parts, each with its own
//! SHA-256; the upload's id and finished parts are kept durably in `<data>/s3-uploads/{seq}.json`, so an
//! upload interrupted by a restart resumes with the next part, and one whose record is gone is aborted. An
//! unfinished multipart upload is invisible in the bucket, so a crash never leaves half an object.
//!
//! Object Lock (when configured): each object gets the mode and a retain-until date of the record's
//! creation plus the configured days, and a legal hold when configured. The bucket is checked before
//! the first upload and after every failure: reachable, the credentials accepted, and — when Object Lock is
//! required — lock-enabled; a bucket that should be locked and is not gets nothing.
//!
//! The SDK runs on a small current-thread tokio runtime owned by the sink, inside the outbox's objects
//! thread; the SDK's own retries are limited to one quick repeat, the outbox's backoff does the rest. Every
//! request has a deadline: 60 s, plus the time its body needs at [`MIN_UPLINK_BYTES_PER_SEC`], so a slow
//! site link still completes large parts and a stalled connection cannot hold the sink.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use airlock_outbox::{Body, Record, Seq};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockEnabled, ObjectLockLegalHoldStatus,
    ObjectLockMode,
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Object Lock mode of the objects written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, root included, can delete or shorten before the date.
    Compliance,
    /// Users with the bypass permission can.
    Governance,
}

/// Object Lock settings.
#[derive(Debug, Clone)]
pub struct ObjectLockSettings {
    pub mode: LockMode,
    /// Days each object stays locked, counted from when it entered the outbox.
    pub retention_days: u32,
    /// Whether every object also gets a legal hold.
    pub legal_hold: bool,
    /// Whether the bucket must report Object Lock enabled before anything is uploaded.
    pub require_locked_bucket: bool,
}

/// Where and how objects are uploaded (validated by configuration).
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 service; "" for AWS's own endpoint of `region`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), what most on-prem stores expect.
    pub path_style: bool,
    /// PEM CA bundle for an endpoint whose certificate is not signed by a public CA.
    pub ca: Option<PathBuf>,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Objects larger than this go in parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub object_lock: Option<ObjectLockSettings>,
}

/// The slowest uplink an upload deadline allows for (512 kbit/s).
pub const MIN_UPLINK_BYTES_PER_SEC: u64 = 64 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request moving `bytes` may take before it counts as failed.
fn deadline_for(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / MIN_UPLINK_BYTES_PER_SEC)
}

/// Per-request timeouts for a request moving `bytes`.
fn timeouts_for(bytes: u64) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::Config::builder().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(deadline_for(bytes))
            .build(),
    )
}

/// Checks that `ca` holds PEM certificates that can serve as trust anchors (the SDK's TLS set-up would
/// abort on a damaged one).
pub fn check_ca_bundle(ca: &Path) -> Result<(), String> {
    crate::tls::trust_anchors(ca)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Why a delivery did not happen; all but `Unavailable` also raise an alarm.
#[derive(Debug)]
pub(crate) enum S3Failure {
    /// The service could not be reached or failed (network, 5xx, timeout).
    Unavailable(String),
    /// The service refused the credentials or the signature.
    Refused(String),
    /// The bucket is missing, in another region, or not lock-enabled although that is required.
    Bucket(String),
    /// The service or the sink refuses this object (a conflicting object under the key, an invalid
    /// request, an artifact that no longer matches its SHA-256); the records behind it wait.
    Object(String),
}

impl std::fmt::Display for S3Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Failure::Unavailable(why) => write!(f, "S3 unavailable: {why}"),
            S3Failure::Refused(why) => write!(f, "S3 refused the credentials: {why}"),
            S3Failure::Bucket(why) => write!(f, "S3 bucket not usable: {why}"),
            S3Failure::Object(why) => write!(f, "S3 object refused: {why}"),
        }
    }
}

/// Classifies an SDK error by the S3 error code and HTTP status.
fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &str,
    error: SdkError<E>,
) -> S3Failure {
    let status = error.raw_response().map(|response| response.status().as_u16());
    let code = error.code().map(str::to_string);
    let described = match (&code, status) {
        (Some(code), Some(status)) => format!("{operation}: {code} (HTTP {status})"),
        // HEAD answers carry no error code.
        (None, Some(403)) => format!(
            "{operation}: HTTP 403 (the access key or secret is wrong, or the key may not use the bucket)"
        ),
        (None, Some(status)) => format!("{operation}: HTTP {status}"),
        _ => format!("{operation}: {}", aws_sdk_s3::error::DisplayErrorContext(&error)),
    };
    match (code.as_deref(), status) {
        (
            Some(
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "ExpiredToken"
                | "InvalidToken",
            ),
            _,
        )
        | (None, Some(401 | 403)) => S3Failure::Refused(described),
        (Some("NoSuchBucket" | "PermanentRedirect" | "AuthorizationHeaderMalformed"), _) => {
            S3Failure::Bucket(described)
        }
        // HEAD answers carry no code: 404 is no such bucket, 301/400 a bucket in another region.
        (None, Some(301 | 400 | 404)) if operation == "HeadBucket" => S3Failure::Bucket(described),
        (_, Some(status)) if status < 500 && status != 408 && status != 429 => S3Failure::Object(described),
        _ => S3Failure::Unavailable(described),
    }
}

fn status_of<E>(error: &SdkError<E>) -> Option<u16> {
    error.raw_response().map(|response| response.status().as_u16())
}

/// Builds the SDK client (no network).
fn client(settings: &S3Settings) -> Result<aws_sdk_s3::Client, String> {
    use aws_smithy_http_client::tls;
    let mut trust = tls::TrustStore::default();
    if let Some(ca) = &settings.ca {
        check_ca_bundle(ca)?;
        let pem = std::fs::read(ca).map_err(|error| format!("{}: {error}", ca.display()))?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|error| format!("TLS set-up: {error}"))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .credentials_provider(Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            settings.session_token.clone(),
            None,
            "airlock-config",
        ))
        .http_client(http)
        .force_path_style(settings.path_style)
        // Checksums are set explicitly per request; the SDK's default CRC32 trailer breaks some stores.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(deadline_for(0))
                .build(),
        );
    if !settings.endpoint.is_empty() {
        config = config.endpoint_url(settings.endpoint.clone());
    }
    Ok(aws_sdk_s3::Client::from_conf(config.build()))
}

/// The bucket is reachable with these credentials, and lock-enabled when that is required.
async fn bucket_ready(client: &aws_sdk_s3::Client, settings: &S3Settings) -> Result<(), S3Failure> {
    let bucket = &settings.bucket;
    client
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|error| failure("HeadBucket", error))?;
    if let Some(lock) = &settings.object_lock
        && lock.require_locked_bucket
    {
        let configuration = client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
            .map_err(|error| match failure("GetObjectLockConfiguration", error) {
                S3Failure::Object(why) => S3Failure::Bucket(format!(
                    "{why}; outbox.s3.object_lock.require_locked_bucket needs a bucket created with Object Lock"
                )),
                other => other,
            })?;
        let enabled = configuration
            .object_lock_configuration()
            .and_then(|configuration| configuration.object_lock_enabled())
            == Some(&ObjectLockEnabled::Enabled);
        if !enabled {
            return Err(S3Failure::Bucket(
                "Object Lock is not enabled on the bucket (outbox.s3.object_lock.require_locked_bucket)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// What `airlock selftest` found about the bucket.
#[derive(Debug, PartialEq, Eq)]
pub enum BucketProbe {
    Ready,
    /// Network, TLS, timeout or a 5xx: the uplink or the service.
    Unreachable(String),
    /// The credentials were refused.
    CredentialsRefused(String),
    /// Reached with good credentials, but the bucket is missing, elsewhere, or not lock-enabled as required.
    BucketUnusable(String),
}

/// `airlock selftest`: one HeadBucket (and the Object Lock check when required) with the outbox's settings.
pub async fn probe_bucket(settings: &S3Settings) -> BucketProbe {
    let client = match client(settings) {
        Ok(client) => client,
        Err(why) => return BucketProbe::Unreachable(why),
    };
    match bucket_ready(&client, settings).await {
        Ok(()) => BucketProbe::Ready,
        Err(S3Failure::Refused(why)) => BucketProbe::CredentialsRefused(why),
        Err(S3Failure::Bucket(why) | S3Failure::Object(why)) => BucketProbe::BucketUnusable(why),
        Err(S3Failure::Unavailable(why)) => BucketProbe::Unreachable(why),
    }
}

/// A multipart upload in progress, kept durably between parts.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct UploadState {
    key: String,
    /// Hex SHA-256 of the whole object (identifies the content the parts belong to).
    sha256: String,
    upload_id: String,
    part_size: u64,
    parts: Vec<UploadedPart>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct UploadedPart {
    number: i32,
    etag: String,
    /// Base64 SHA-256 of the part, as S3 expects it back on completion.
    sha256: String,
}

/// The S3 sink; owned by the outbox's objects thread.
pub(crate) struct S3Sink {
    settings: S3Settings,
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
    uploads_dir: PathBuf,
    /// Whether the bucket passed its check since the last failure.
    bucket_checked: bool,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl S3Sink {
    /// Builds the client and its runtime; no network yet. `uploads_dir` keeps multipart state. Call on the
    /// thread that will deliver, never inside an async context (the sink owns a runtime).
    pub(crate) fn new(settings: S3Settings, uploads_dir: PathBuf) -> Result<S3Sink, String> {
        std::fs::create_dir_all(&uploads_dir)
            .map_err(|error| format!("create {}: {error}", uploads_dir.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("start the S3 runtime: {error}"))?;
        let client = {
            let _entered = runtime.enter();
            client(&settings)?
        };
        Ok(S3Sink {
            settings,
            client,
            runtime,
            uploads_dir,
            bucket_checked: false,
        })
    }

    /// Aborts multipart uploads whose records are no longer waiting (delivered or quarantined) and forgets
    /// their state. Best effort: an upload the service no longer knows is simply forgotten.
    pub(crate) fn abort_orphaned_uploads(&mut self, waiting: &dyn Fn(Seq) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.uploads_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(seq) = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<Seq>().ok())
            else {
                continue;
            };
            if waiting(seq) {
                continue;
            }
            if let Some(state) = self.load_state(seq) {
                let aborted = self.runtime.block_on(
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.settings.bucket)
                        .key(&state.key)
                        .upload_id(&state.upload_id)
                        .send(),
                );
                if let Err(error) = aborted
                    && status_of(&error) != Some(404)
                {
                    match failure("AbortMultipartUpload", error) {
                        // Not reached: try again at the next start.
                        unreached @ S3Failure::Unavailable(_) => {
                            tracing::warn!(error = %unreached, "cannot abort an orphaned multipart upload now; retried at the next start");
                            continue;
                        }
                        refused => {
                            tracing::warn!(error = %refused, "the service refuses to abort an orphaned multipart upload; forgetting it (a bucket lifecycle rule for incomplete uploads cleans it up)")
                        }
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Checks the bucket once after each failure (see [`bucket_ready`]).
    fn check_bucket(&mut self) -> Result<(), S3Failure> {
        if self.bucket_checked {
            return Ok(());
        }
        self.runtime
            .block_on(bucket_ready(&self.client, &self.settings))?;
        tracing::info!(
            locked = self.settings.object_lock.is_some(),
            "S3 bucket reachable"
        );
        self.bucket_checked = true;
        Ok(())
    }

    /// Delivers one object record: Ok once the bucket holds exactly this content under its key.
    pub(crate) fn put(&mut self, record: &Record) -> Result<(), S3Failure> {
        let result = self.check_bucket().and_then(|()| self.upload(record));
        if let Err(S3Failure::Unavailable(_) | S3Failure::Refused(_) | S3Failure::Bucket(_)) = &result {
            self.bucket_checked = false;
        }
        result
    }

    fn upload(&mut self, record: &Record) -> Result<(), S3Failure> {
        match &record.body {
            Body::Inline(body) => {
                let sha256: [u8; 32] = Sha256::digest(body).into();
                self.put_whole(record, ByteStream::from(body.clone()), sha256, body.len() as u64)
            }
            Body::File { path, size, sha256 } if *size > self.settings.multipart_threshold => {
                self.put_parts(record, path, *sha256, *size)
            }
            Body::File { path, size, sha256 } => {
                let body = self
                    .runtime
                    .block_on(ByteStream::from_path(path))
                    .map_err(|error| S3Failure::Object(format!("read the spooled artifact: {error}")))?;
                self.put_whole(record, body, *sha256, *size)
            }
        }
    }

    /// Object Lock headers for this record: (mode, retain until, legal hold). Retention counts from when the
    /// record entered the outbox; a creation time in the future (a clock that was wrong then) counts from
    /// now, and the date is at least a day ahead (a store refuses dates in the past, e.g. after an outage
    /// longer than the retention).
    fn lock_for(
        &self,
        record: &Record,
        now_ms: u64,
    ) -> Option<(ObjectLockMode, DateTime, Option<ObjectLockLegalHoldStatus>)> {
        let lock = self.settings.object_lock.as_ref()?;
        // The call's retention class (stamped when it was spooled) decides; the bucket setting is the fallback.
        let days = record
            .retention
            .as_ref()
            .map_or(lock.retention_days, |retention| retention.days);
        let hold = lock.legal_hold
            || record
                .retention
                .as_ref()
                .is_some_and(|retention| retention.legal_hold);
        let until_ms = retain_until_ms(record.meta.created_unix_ms, now_ms, days);
        let mode = match lock.mode {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        };
        Some((
            mode,
            DateTime::from_millis(i64::try_from(until_ms).unwrap_or(i64::MAX)),
            hold.then_some(ObjectLockLegalHoldStatus::On),
        ))
    }

    fn put_whole(
        &mut self,
        record: &Record,
        body: ByteStream,
        sha256: [u8; 32],
        size: u64,
    ) -> Result<(), S3Failure> {
        let key = &record.meta.key;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_type(&record.content_type)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(b64(&sha256))
            .metadata("sha256", hex::encode(sha256))
            .if_none_match("*")
            .body(body);
        if let Some((mode, until, hold)) = self.lock_for(record, crate::outbox::unix_ms(SystemTime::now())) {
            request = request
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until)
                .set_object_lock_legal_hold_status(hold);
        }
        let sent = request.customize().config_override(timeouts_for(size)).send();
        match self.runtime.block_on(sent) {
            Ok(output) => match output.checksum_sha256() {
                Some(echoed) if echoed != b64(&sha256) => Err(S3Failure::Object(format!(
                    "PutObject: the service stored SHA-256 {echoed}, not the artifact's"
                ))),
                _ => Ok(()),
            },
            Err(error) if status_of(&error) == Some(412) => self.already_there(key, sha256, size),
            Err(error) => Err(failure("PutObject", error)),
        }
    }

    /// After a 412: Ok when the object under `key` is this very content.
    fn already_there(&self, key: &str, sha256: [u8; 32], size: u64) -> Result<(), S3Failure> {
        match self.stored_matches(key, sha256, size)? {
            Some(true) => Ok(()),
            Some(false) => Err(S3Failure::Object(format!(
                "an object with other content already exists under {key} (create-only); the record is kept"
            ))),
            None => Err(S3Failure::Unavailable(format!(
                "{key} was reported as existing but is not there"
            ))),
        }
    }

    /// Whether the object under `key` holds exactly the content with this SHA-256 (None: no object). Reads
    /// the object back and hashes it rather than trusting its metadata: a store may keep the body of a
    /// request it refused (s3s-fs does on BadDigest). Only taken after a crash or a lost response; the
    /// credentials need s3:GetObject for it.
    fn stored_matches(&self, key: &str, sha256: [u8; 32], size: u64) -> Result<Option<bool>, S3Failure> {
        let request = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send();
        let read = async {
            let mut body = match request.await {
                Ok(output) => output.body,
                Err(error) if status_of(&error) == Some(404) => return Ok(None),
                Err(error) => return Err(failure("GetObject", error)),
            };
            let mut hasher = Sha256::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|error| {
                    S3Failure::Unavailable(format!("GetObject: reading the body: {error}"))
                })?;
                hasher.update(&chunk);
            }
            Ok(Some(<[u8; 32]>::from(hasher.finalize()) == sha256))
        };
        let deadline = deadline_for(size);
        self.runtime.block_on(async {
            tokio::time::timeout(deadline, read).await.unwrap_or_else(|_| {
                Err(S3Failure::Unavailable(format!(
                    "GetObject: not read within {} s",
                    deadline.as_secs()
                )))
            })
        })
    }

    fn state_path(&self, seq: Seq) -> PathBuf {
        self.uploads_dir.join(format!("{seq:020}.json"))
    }

    fn load_state(&self, seq: Seq) -> Option<UploadState> {
        let bytes = std::fs::read(self.state_path(seq)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the upload state durably (temp file, sync, rename, directory sync).
    fn save_state(&self, seq: Seq, state: &UploadState) -> Result<(), S3Failure> {
        serde_json::to_vec(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::storage::write_atomically(&self.state_path(seq), &bytes))
            .map_err(|error| S3Failure::Object(format!("keep the multipart upload's state: {error}")))
    }

    fn forget_state(&self, seq: Seq) {
        let _ = std::fs::remove_file(self.state_path(seq));
    }

    /// Aborts the upload (best effort) and forgets its state: the next attempt starts over.
    fn abandon_upload(&self, seq: Seq, key: &str, upload_id: &str) {
        let aborted = self.runtime.block_on(
            self.client
                .abort_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(key)
                .upload_id(upload_id)
                .send(),
        );
        if let Err(error) = aborted
            && status_of(&error) != Some(404)
        {
            tracing::warn!(error = %failure("AbortMultipartUpload", error), "cannot abort a multipart upload that is given up (a bucket lifecycle rule for incomplete uploads cleans it up)");
        }
        self.forget_state(seq);
    }

    /// A multipart upload, resumed from its saved state when there is one for this record and content. The
    /// artifact is hashed as its parts are read (on resume, the parts already sent are read again for the
    /// hash), and the upload is completed only when that hash is the SHA-256 the record was spooled with.
    fn put_parts(
        &mut self,
        record: &Record,
        path: &Path,
        sha256: [u8; 32],
        size: u64,
    ) -> Result<(), S3Failure> {
        let seq = record.meta.seq;
        let key = &record.meta.key;
        let sha_hex = hex::encode(sha256);
        let mut state = match self.load_state(seq) {
            Some(state) if state.key == *key && state.sha256 == sha_hex => {
                tracing::info!(parts_done = state.parts.len(), "resuming a multipart upload");
                state
            }
            _ => {
                // A crash after completion but before the acknowledgement leaves the object there already.
                match self.stored_matches(key, sha256, size)? {
                    Some(true) => return Ok(()),
                    Some(false) => {
                        return Err(S3Failure::Object(format!(
                            "an object with other content already exists under {key} (create-only); the record is kept"
                        )));
                    }
                    None => {}
                }
                let state = self.create_upload(record, sha256)?;
                self.save_state(seq, &state)?;
                state
            }
        };
        let local = |error: std::io::Error| S3Failure::Object(format!("read the spooled artifact: {error}"));
        let mut file = std::fs::File::open(path).map_err(local)?;
        let mut whole = Sha256::new();
        let done = (state.parts.len() as u64)
            .saturating_mul(state.part_size)
            .min(size);
        hash_prefix(&mut file, done, &mut whole).map_err(local)?;
        let parts = size.div_ceil(state.part_size);
        for index in state.parts.len() as u64..parts {
            let number = i32::try_from(index + 1).map_err(|_| S3Failure::Object("too many parts".into()))?;
            let offset = index * state.part_size;
            let length = state.part_size.min(size - offset);
            let bytes = read_part(&mut file, offset, length).map_err(local)?;
            whole.update(&bytes);
            let part_sha = b64(&Sha256::digest(&bytes));
            let uploaded = self.runtime.block_on(
                self.client
                    .upload_part()
                    .bucket(&self.settings.bucket)
                    .key(key)
                    .upload_id(&state.upload_id)
                    .part_number(number)
                    .content_length(length as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(&part_sha)
                    .body(ByteStream::from(bytes))
                    .customize()
                    .config_override(timeouts_for(length))
                    .send(),
            );
            let etag = match uploaded {
                Ok(output) => output.e_tag().unwrap_or_default().to_string(),
                // The upload is unknown (aborted, expired; s3s-fs answers 403) or parts are refused: give
                // it up, so a retry starts a fresh one instead of repeating a refused part forever.
                Err(error) if matches!(status_of(&error), Some(403 | 404)) => {
                    self.abandon_upload(seq, key, &state.upload_id);
                    return Err(failure("UploadPart", error));
                }
                Err(error) => return Err(failure("UploadPart", error)),
            };
            state.parts.push(UploadedPart {
                number,
                etag,
                sha256: part_sha,
            });
            self.save_state(seq, &state)?;
        }
        if <[u8; 32]>::from(whole.finalize()) != sha256 {
            self.abandon_upload(seq, key, &state.upload_id);
            return Err(S3Failure::Object(
                "the spooled artifact no longer matches its SHA-256; not delivered".into(),
            ));
        }
        self.complete_upload(seq, key, &state, sha256, size)
    }

    fn create_upload(&self, record: &Record, sha256: [u8; 32]) -> Result<UploadState, S3Failure> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&record.meta.key)
            .content_type(&record.content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata("sha256", hex::encode(sha256));
        if let Some((mode, until, hold)) = self.lock_for(record, crate::outbox::unix_ms(SystemTime::now())) {
            request = request
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until)
                .set_object_lock_legal_hold_status(hold);
        }
        let output = self
            .runtime
            .block_on(request.send())
            .map_err(|error| failure("CreateMultipartUpload", error))?;
        let upload_id = output
            .upload_id()
            .ok_or_else(|| S3Failure::Object("CreateMultipartUpload returned no upload id".into()))?;
        Ok(UploadState {
            key: record.meta.key.clone(),
            sha256: hex::encode(sha256),
            upload_id: upload_id.to_string(),
            part_size: self.settings.part_size,
            parts: Vec::new(),
        })
    }

    fn complete_upload(
        &mut self,
        seq: Seq,
        key: &str,
        state: &UploadState,
        sha256: [u8; 32],
        size: u64,
    ) -> Result<(), S3Failure> {
        let parts = state
            .parts
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .part_number(part.number)
                    .e_tag(&part.etag)
                    .checksum_sha256(&part.sha256)
                    .build()
            })
            .collect();
        let completed = self.runtime.block_on(
            self.client
                .complete_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(key)
                .upload_id(&state.upload_id)
                .if_none_match("*")
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .customize()
                .config_override(timeouts_for(size))
                .send(),
        );
        match completed {
            Ok(_) => {}
            // The key is taken: by this very upload before a lost response, or by other content.
            Err(error) if status_of(&error) == Some(412) => {
                let result = self.already_there(key, sha256, size);
                if result.is_ok() {
                    self.forget_state(seq);
                }
                return result;
            }
            // The upload is no longer known (completed before a lost response, aborted, expired): done if
            // the object is this content, else given up so the next attempt starts over.
            Err(error) if matches!(status_of(&error), Some(403 | 404)) => {
                if self.stored_matches(key, sha256, size)? == Some(true) {
                    self.forget_state(seq);
                    return Ok(());
                }
                self.abandon_upload(seq, key, &state.upload_id);
                return Err(failure("CompleteMultipartUpload", error));
            }
            Err(error) => return Err(failure("CompleteMultipartUpload", error)),
        }
        // Check what the service assembled before the record may go.
        let head = self
            .runtime
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.settings.bucket)
                    .key(key)
                    .send(),
            )
            .map_err(|error| failure("HeadObject", error))?;
        let stored_size = head.content_length().unwrap_or(-1);
        let stored_sha = head.metadata().and_then(|metadata| metadata.get("sha256"));
        if u64::try_from(stored_size).ok() != Some(size)
            || stored_sha.map(String::as_str) != Some(hex::encode(sha256).as_str())
        {
            return Err(S3Failure::Object(format!(
                "the assembled object under {key} is {stored_size} bytes, not the artifact's {size}, or lost its SHA-256"
            )));
        }
        self.forget_state(seq);
        Ok(())
    }
}

/// The retain-until date (Unix ms) of an object whose record entered the outbox at `created_ms`.
fn retain_until_ms(created_ms: u64, now_ms: u64, days: u32) -> u64 {
    const DAY_MS: u64 = 86_400_000;
    let from = created_ms.min(now_ms);
    from.saturating_add(u64::from(days) * DAY_MS)
        .max(now_ms.saturating_add(DAY_MS))
}

/// Feeds the first `length` bytes of `file` to `hasher`.
fn hash_prefix(file: &mut std::fs::File, length: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut left = length;
    let mut buffer = vec![0u8; 1 << 20];
    while left > 0 {
        let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    Ok(())
}

fn read_part(file: &mut std::fs::File, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0u8; usize::try_from(length).map_err(std::io::Error::other)?];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn retention_counts_from_entry_into_the_outbox_but_never_ends_in_the_past_or_from_a_future_clock() {
        let now = 1_800_000_000_000;
        // Spooled an hour ago: 30 days from then.
        assert_eq!(
            retain_until_ms(now - 3_600_000, now, 30),
            now - 3_600_000 + 30 * DAY_MS
        );
        // Spooled 40 days ago (a long outage) with 30 days' retention: still a day ahead, not in the past.
        assert_eq!(retain_until_ms(now - 40 * DAY_MS, now, 30), now + DAY_MS);
        // A clock that was years ahead when the record was spooled: counted from now.
        assert_eq!(retain_until_ms(now + 3_000 * DAY_MS, now, 30), now + 30 * DAY_MS);
    }

    #[test]
    fn a_ca_bundle_must_hold_usable_certificates() {
        let dir = std::env::temp_dir().join(format!("airlock-s3-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let damaged = dir.join("damaged.pem");
        std::fs::write(
            &damaged,
            "-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(check_ca_bundle(&damaged).is_err());
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(
            check_ca_bundle(&empty)
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(check_ca_bundle(&dir.join("missing.pem")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
