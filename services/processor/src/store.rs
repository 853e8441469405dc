//! Where lake files live: a local folder or an S3 bucket, behind one
//! create-if-absent interface.
//!
//! Both stores publish a finished file atomically and only if its name is
//! free: the folder by `hard_link(tmp, final)` (fails when the name exists),
//! S3 by `PutObject` / `CompleteMultipartUpload` with `If-None-Match: *`
//! (412 Precondition Failed when the key exists). "Already there" is a normal
//! outcome ([`Put::AlreadyExists`]), not an error: it means an earlier run
//! wrote the same file before it crashed, which is how replays are absorbed
//! ([`crate::lake`]).
//!
//! Readers never see a partial file: a local file is written under a hidden
//! temporary name first; an S3 object appears when its upload completes, and
//! a multipart upload that fails is aborted (a lifecycle rule for incomplete
//! uploads covers the ones a SIGKILL leaves behind).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::{http_client_fn, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use fleetpulse_core::config::{read_secret, ConfigError};

use crate::config::{S3Config, Sse};

/// Object metadata key (S3 user metadata) of a file's first Kafka offset.
pub const S3_META_FIRST_OFFSET: &str = "fleetpulse-first-offset";
/// Object metadata key (S3 user metadata) of a file's last Kafka offset.
pub const S3_META_LAST_OFFSET: &str = "fleetpulse-last-offset";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed (disk full, permissions…).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An S3 call failed.
    #[error("s3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        /// The API call.
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// Status, error code and message.
        message: String,
        /// Whether trying again may succeed (network, throttling, 5xx).
        retriable: bool,
    },
}

impl StoreError {
    /// Whether trying again later may succeed: I/O errors and transient S3
    /// failures may; a missing bucket, denied access or a bad request need a
    /// person.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Io { .. } => true,
            StoreError::S3 { retriable, .. } => *retriable,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What a create-if-absent put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The file was created.
    Created,
    /// A file of that name exists already; nothing was written.
    AlreadyExists,
}

/// Offsets a file holds, stored beside the bytes where the store allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOffsets {
    /// Offset of the first row.
    pub first: i64,
    /// Offset of the last row.
    pub last: i64,
}

/// A lake store. Keys are relative, `/`-separated
/// (`table=t/date=d/part-….parquet`).
#[derive(Debug, Clone)]
pub enum Store {
    /// Files under a folder.
    Local(LocalStore),
    /// Objects in an S3 bucket.
    S3(S3Store),
}

impl Store {
    /// Names (relative keys) in folder `dir` starting with `name_prefix`.
    pub async fn list(&self, dir: &str, name_prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                let (dir, name_prefix) = (dir.to_string(), name_prefix.to_string());
                blocking(move || l.list(&dir, &name_prefix)).await
            }
            Store::S3(s) => s.list(dir, name_prefix).await,
        }
    }

    /// Store `bytes` under `key` unless the key exists.
    pub async fn put_if_absent(
        &self,
        key: &str,
        bytes: Vec<u8>,
        offsets: FileOffsets,
    ) -> Result<Put, StoreError> {
        match self {
            Store::Local(l) => {
                let l = l.clone();
                let key = key.to_string();
                blocking(move || l.put_if_absent(&key, &bytes)).await
            }
            Store::S3(s) => s.put_if_absent(key, bytes, offsets).await,
        }
    }

    /// Where to read a present file's offsets: the local file's footer, or
    /// the object's user metadata when present (no download), else its bytes.
    pub async fn offsets_of(&self, key: &str) -> Result<StoredOffsets, StoreError> {
        match self {
            Store::Local(l) => Ok(StoredOffsets::File(l.path(key))),
            Store::S3(s) => s.offsets_of(key).await,
        }
    }

    /// A printable location of `key` (path or `s3://` URL).
    pub fn describe(&self, key: &str) -> String {
        match self {
            Store::Local(l) => l.path(key).display().to_string(),
            Store::S3(s) => format!("s3://{}/{}", s.bucket, s.full_key(key)),
        }
    }
}

/// Where to find a present file's offsets.
#[derive(Debug)]
pub enum StoredOffsets {
    /// From the object's metadata.
    Known(FileOffsets),
    /// In the footer of this local file.
    File(PathBuf),
    /// In the footer of these bytes (an object without metadata).
    Bytes(bytes::Bytes),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io {
            op: "run blocking task",
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        })?
}

/// Files under a folder, published with `hard_link` (create-if-absent),
/// fsynced with their directory entries.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key.
    pub fn path(&self, key: &str) -> PathBuf {
        key.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    fn list(&self, dir: &str, name_prefix: &str) -> Result<Vec<String>, StoreError> {
        let path = self.path(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &path)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &path))?;
            if let Some(name) = entry.file_name().to_str() {
                if name.starts_with(name_prefix) {
                    out.push(format!("{}/{name}", dir.trim_end_matches('/')));
                }
            }
        }
        Ok(out)
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        // Make the new directory entries durable too.
        let mut d = dir.parent();
        while let Some(p) = d {
            sync_dir(p)?;
            if p == self.root || !p.starts_with(&self.root) {
                break;
            }
            d = p.parent();
        }
        Ok(())
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<Put, StoreError> {
        let path = self.path(key);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.ensure_dir(&dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let written = (|| {
            let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&dir)?;
                Ok(Put::Created)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Put::AlreadyExists),
            Err(e) => Err(io_err("publish", &path)(e)),
        }
    }

    /// Remove temporary files older than `max_age` left by crashed writers.
    /// Younger ones may belong to a live processor and are left alone.
    pub fn sweep_temp_files(&self, max_age: Duration) -> usize {
        fn walk(dir: &Path, depth: usize, now: SystemTime, max_age: Duration) -> usize {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            let mut removed = 0;
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && depth < 4 && !name.starts_with('_') {
                    removed += walk(&e.path(), depth + 1, now, max_age);
                    continue;
                }
                if !(name.starts_with(".part-") && name.ends_with(".tmp")) {
                    continue;
                }
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > max_age);
                if old && std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
            removed
        }
        walk(&self.root, 0, SystemTime::now(), max_age)
    }
}

/// `fsync` a directory so the entries created in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Objects in an S3 bucket, created with `If-None-Match: *`.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    sse: Sse,
    sse_kms_key_id: Option<String>,
    part_size: usize,
}

/// The HTTP client: hyper 1, rustls with ring, proxies from the environment
/// (the same stack as the edge's Firehose uplink).
fn http_client() -> SharedHttpClient {
    http_client_fn(|settings, components| {
        let mut b = Connector::builder()
            .connector_settings(settings.clone())
            .proxy_config(ProxyConfig::from_env());
        b.set_sleep_impl(components.sleep_impl());
        SharedHttpConnector::new(b.tls_provider(Provider::Rustls(CryptoMode::Ring)).build())
    })
}

/// How to reach an S3 endpoint: shared by the lake's store and the Firehose
/// source, so both use the same HTTP stack and credential rules.
pub(crate) struct S3Connection<'a> {
    /// AWS region (default chain when absent).
    pub(crate) region: Option<&'a str>,
    /// Endpoint override.
    pub(crate) endpoint_url: Option<&'a str>,
    /// Path-style addressing.
    pub(crate) force_path_style: bool,
    /// Static credentials as secret specs (both or neither).
    pub(crate) access_key_id: Option<&'a str>,
    /// See `access_key_id`.
    pub(crate) secret_access_key: Option<&'a str>,
    /// Config table the keys are named under in errors (`lake.s3`, `firehose`).
    pub(crate) section: &'a str,
    /// Time limit of one operation, SDK retries included.
    pub(crate) operation_timeout: Option<Duration>,
}

/// An S3 client for `c` (no network call yet). Static credentials are read
/// now; otherwise the default chain (env, profile, web identity, IMDS).
pub(crate) async fn s3_client(c: &S3Connection<'_>) -> Result<aws_sdk_s3::Client, ConfigError> {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client());
    if let Some(t) = c.operation_timeout {
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(t)
                .connect_timeout(Duration::from_secs(10))
                .build(),
        );
    }
    if let Some(r) = c.region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(u) = c.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    if let (Some(a), Some(s)) = (c.access_key_id, c.secret_access_key) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            read_secret(&format!("{}.access_key_id", c.section), a)?,
            read_secret(&format!("{}.secret_access_key", c.section), s)?,
            None,
            None,
            "fleetpulse-config",
        ));
    }
    let sdk = loader.load().await;
    let s3 = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(c.force_path_style)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(s3))
}

impl S3Store {
    /// Build the client (no network call yet). Static credentials are read
    /// now; otherwise the default chain (env, profile, web identity, IMDS).
    pub async fn new(config: &S3Config) -> Result<S3Store, ConfigError> {
        let client = s3_client(&S3Connection {
            region: config.region.as_deref(),
            endpoint_url: config.endpoint_url.as_deref(),
            force_path_style: config.force_path_style,
            access_key_id: config.access_key_id.as_deref(),
            secret_access_key: config.secret_access_key.as_deref(),
            section: "lake.s3",
            operation_timeout: Some(config.request_timeout),
        })
        .await?;
        Ok(S3Store {
            client,
            bucket: config.bucket.clone(),
            prefix: config.prefix.trim_matches('/').to_string(),
            sse: config.sse,
            sse_kms_key_id: config.sse_kms_key_id.clone(),
            part_size: usize::try_from(config.part_size).unwrap_or(usize::MAX),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn err<E>(&self, op: &'static str, key: &str, e: &SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::fmt::Debug,
    {
        let (message, retriable) = classify(e);
        StoreError::S3 {
            op,
            bucket: self.bucket.clone(),
            key: self.full_key(key),
            message,
            retriable,
        }
    }

    async fn list(&self, dir: &str, name_prefix: &str) -> Result<Vec<String>, StoreError> {
        let rel = format!("{}/{name_prefix}", dir.trim_end_matches('/'));
        let full = self.full_key(&rel);
        let strip = self.full_key("");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.err("ListObjectsV2", &rel, &e))?;
            for o in resp.contents() {
                if let Some(k) = o.key() {
                    let k = if self.prefix.is_empty() {
                        k
                    } else {
                        k.strip_prefix(&strip).unwrap_or(k)
                    };
                    out.push(k.to_string());
                }
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn offsets_of(&self, key: &str) -> Result<StoredOffsets, StoreError> {
        let full = self.full_key(key);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("HeadObject", key, &e))?;
        let meta = head.metadata();
        let get = |k: &str| meta.and_then(|m| m.get(k)).and_then(|v| v.parse().ok());
        if let (Some(first), Some(last)) = (get(S3_META_FIRST_OFFSET), get(S3_META_LAST_OFFSET)) {
            return Ok(StoredOffsets::Known(FileOffsets { first, last }));
        }
        // Written by something else (a copy without metadata): read the bytes.
        let obj = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, &e))?;
        let body = obj.body.collect().await.map_err(|e| StoreError::S3 {
            op: "GetObject",
            bucket: self.bucket.clone(),
            key: full.clone(),
            message: e.to_string(),
            retriable: true,
        })?;
        Ok(StoredOffsets::Bytes(body.into_bytes()))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        bytes: Vec<u8>,
        offsets: FileOffsets,
    ) -> Result<Put, StoreError> {
        if bytes.len() <= self.part_size {
            let full = self.full_key(key);
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .content_type("application/vnd.apache.parquet")
                .metadata(S3_META_FIRST_OFFSET, offsets.first.to_string())
                .metadata(S3_META_LAST_OFFSET, offsets.last.to_string())
                .body(ByteStream::from(bytes));
            req = match self.sse {
                Sse::None => req,
                Sse::Aes256 => req.server_side_encryption(ServerSideEncryption::Aes256),
                Sse::AwsKms => req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(self.sse_kms_key_id.clone()),
            };
            return match req.send().await {
                Ok(_) => Ok(Put::Created),
                Err(e) if is_precondition_failed(&e) => Ok(Put::AlreadyExists),
                Err(e) => Err(self.err("PutObject", key, &e)),
            };
        }
        self.multipart(key, bytes, offsets).await
    }

    /// Multipart upload in `part_size` parts, completed with
    /// `If-None-Match: *`; aborted on any failure.
    async fn multipart(
        &self,
        key: &str,
        bytes: Vec<u8>,
        offsets: FileOffsets,
    ) -> Result<Put, StoreError> {
        let full = self.full_key(key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .content_type("application/vnd.apache.parquet")
            .metadata(S3_META_FIRST_OFFSET, offsets.first.to_string())
            .metadata(S3_META_LAST_OFFSET, offsets.last.to_string());
        create = match self.sse {
            Sse::None => create,
            Sse::Aes256 => create.server_side_encryption(ServerSideEncryption::Aes256),
            Sse::AwsKms => create
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(self.sse_kms_key_id.clone()),
        };
        let created = create
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StoreError::S3 {
                op: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: full,
                message: "no upload id in the response".into(),
                retriable: true,
            });
        };
        let result = self
            .upload_parts(key, &full, &upload_id, &bytes, offsets)
            .await;
        match result {
            Ok(Put::Created) => Ok(Put::Created),
            other => {
                // Nothing of this upload may linger: abort it (also after
                // PreconditionFailed, which leaves the upload open).
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(e) = aborted {
                    multipart_abort_failed(&full, &classify(&e).0);
                }
                other
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        bytes: &[u8],
        offsets: FileOffsets,
    ) -> Result<Put, StoreError> {
        let mut parts = Vec::new();
        for (i, chunk) in bytes.chunks(self.part_size.max(1)).enumerate() {
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk.to_vec()));
            // Parts inherit the upload's SSE settings (only SSE-C needs headers here).
            let out = req
                .send()
                .await
                .map_err(|e| self.err("UploadPart", key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match done {
            Ok(_) => Ok(Put::Created),
            Err(e) if is_precondition_failed(&e) => Ok(Put::AlreadyExists),
            // HTTP 200 with a body that is neither the expected result nor an
            // S3 error document (some S3-compatible stores, e.g. moto, name
            // the root element differently): the upload completed. Confirm
            // that the object is there and is this upload's.
            Err(e) if status_of(&e) == Some(200) && error_code(&e).is_none() => {
                match self.offsets_of(key).await? {
                    StoredOffsets::Known(o) if o == offsets => Ok(Put::Created),
                    _ => Err(self.err("CompleteMultipartUpload", key, &e)),
                }
            }
            Err(e) => Err(self.err("CompleteMultipartUpload", key, &e)),
        }
    }
}

/// Whether a failure is S3's answer to `If-None-Match: *` on an existing key.
fn is_precondition_failed<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(se) => {
            se.err().code() == Some("PreconditionFailed") || status_of(e) == Some(412)
        }
        _ => false,
    }
}

fn error_code<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<&str> {
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// A readable message and whether retrying may help.
fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: &SdkError<E, HttpResponse>,
) -> (String, bool) {
    match e {
        SdkError::ServiceError(se) => {
            let status = status_of(e).unwrap_or(0);
            let code = se.err().code().unwrap_or("unknown");
            let msg = se.err().message().unwrap_or("");
            // 409 ConditionalRequestConflict (a concurrent conditional
            // write), 408, throttling and server errors may pass later.
            let retriable = status >= 500
                || matches!(status, 408 | 409 | 429)
                || matches!(code, "SlowDown" | "RequestTimeout" | "InternalError");
            if se.err().code().is_none() {
                // Not an S3 error document (an unreadable answer): show all.
                return (format!("HTTP {status}: {:?}", se.err()), true);
            }
            (format!("HTTP {status} {code}: {msg}"), retriable)
        }
        SdkError::ConstructionFailure(_) => (format!("{e:?}"), false),
        // Timeouts, connection failures, unreadable responses.
        other => (format!("{other:?}"), true),
    }
}

fn multipart_abort_failed(key: &str, error: &str) {
    tracing::warn!(
        %key,
        %error,
        "could not abort a multipart upload (a bucket lifecycle rule removes it later)"
    );
    metrics::counter!("fleetpulse_processor_multipart_abort_failures_total").increment(1);
}

/// Group present objects by name: first offset -> key (helper for callers).
pub(crate) fn by_first_offset(keys: &[String], name_prefix: &str) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    for key in keys {
        let name = key.rsplit('/').next().unwrap_or(key);
        let Some(first) = name
            .strip_prefix(name_prefix)
            .and_then(|n| n.strip_suffix(".parquet"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        out.insert(first, key.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_by_exact_prefix() {
        let keys = [
            "table=t/date=d/part-a-1-00000000000000000010.parquet",
            "table=t/date=d/part-a-1-5-00000000000000000010.parquet",
            "table=t/date=d/part-a-12-00000000000000000003.parquet",
            "table=t/date=d/.part-a-1-00000000000000000011.parquet.1-2.tmp",
        ]
        .map(String::from);
        let m = by_first_offset(&keys, "part-a-1-");
        assert_eq!(m.len(), 1);
        assert_eq!(m[&10], keys[0]);
    }

    #[test]
    fn local_put_is_create_if_absent() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        assert_eq!(s.put_if_absent("x=1/y/f", b"one").unwrap(), Put::Created);
        assert_eq!(
            s.put_if_absent("x=1/y/f", b"two").unwrap(),
            Put::AlreadyExists
        );
        assert_eq!(std::fs::read(dir.path().join("x=1/y/f")).unwrap(), b"one");
        assert_eq!(s.list("x=1/y", "f").unwrap(), ["x=1/y/f"]);
        assert!(s.list("nope", "f").unwrap().is_empty());
    }

    /// The S3 emulator (`FLEETPULSE_MOTO`, started by `.ci/run`), or `None`
    /// with a printed reason; under CI a missing emulator is a failure.
    fn moto_or_skip(test: &str) -> Option<String> {
        match std::env::var("FLEETPULSE_MOTO") {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{test}: FLEETPULSE_MOTO is not set under CI; .ci/run starts moto_server"
                );
                eprintln!("skipped {test}: FLEETPULSE_MOTO is not set (run `bash .ci/run`)");
                None
            }
        }
    }

    async fn moto_store(endpoint: &str, bucket: &str, sse: Sse) -> S3Store {
        let cfg = S3Config {
            bucket: bucket.into(),
            prefix: "lake/".into(),
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint.into()),
            force_path_style: true,
            access_key_id: Some("testing-key-id".into()),
            secret_access_key: Some("testing-secret".into()),
            sse,
            part_size: crate::config::MIN_PART_SIZE,
            ..S3Config::default()
        };
        S3Store::new(&cfg).await.unwrap()
    }

    #[tokio::test]
    async fn s3_put_is_create_if_absent_single_and_multipart() {
        let Some(endpoint) = moto_or_skip("s3_put_is_create_if_absent_single_and_multipart") else {
            return;
        };
        let bucket = format!("fp-store-{}", std::process::id());
        let s = moto_store(&endpoint, &bucket, Sse::Aes256).await;
        s.client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let o = |first, last| FileOffsets { first, last };

        let small = "table=t/date=d/part-x-0-00000000000000000000.parquet";
        assert_eq!(
            s.put_if_absent(small, vec![1; 1000], o(0, 9))
                .await
                .unwrap(),
            Put::Created
        );
        assert_eq!(
            s.put_if_absent(small, vec![2; 1000], o(0, 99))
                .await
                .unwrap(),
            Put::AlreadyExists
        );
        // Larger than a part: multipart upload, completed only if absent.
        let big = "table=t/date=d/part-x-0-00000000000000000010.parquet";
        let bytes: Vec<u8> = (0..11 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            s.put_if_absent(big, bytes.clone(), o(10, 20))
                .await
                .unwrap(),
            Put::Created
        );
        assert_eq!(
            s.put_if_absent(big, vec![0; 6 * 1024 * 1024], o(10, 30))
                .await
                .unwrap(),
            Put::AlreadyExists
        );
        // The losing upload was aborted, not left behind.
        let uploads = s
            .client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());

        let got = s
            .client
            .get_object()
            .bucket(&bucket)
            .key(format!("lake/{big}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.server_side_encryption(),
            Some(&ServerSideEncryption::Aes256)
        );
        let body = got.body.collect().await.unwrap().into_bytes();
        assert!(body == bytes, "the first upload's bytes, intact");

        let mut listed = s.list("table=t/date=d", "part-x-0-").await.unwrap();
        listed.sort();
        assert_eq!(listed, [small, big]);
        assert!(s
            .list("table=t/date=d", "part-x-1-")
            .await
            .unwrap()
            .is_empty());
        match s.offsets_of(big).await.unwrap() {
            StoredOffsets::Known(k) => assert_eq!(k, o(10, 20)),
            other => panic!("{other:?}"),
        }

        // SSE-KMS with a key id, on both upload paths.
        let mut kms = moto_store(&endpoint, &bucket, Sse::AwsKms).await;
        kms.sse_kms_key_id = Some("alias/fleet-lake".into());
        let k1 = "table=t/date=d/part-x-1-00000000000000000000.parquet";
        let k2 = "table=t/date=d/part-x-1-00000000000000000100.parquet";
        assert_eq!(
            kms.put_if_absent(k1, vec![1; 10], o(0, 1)).await.unwrap(),
            Put::Created
        );
        assert_eq!(
            kms.put_if_absent(k2, vec![1; 6 * 1024 * 1024], o(100, 101))
                .await
                .unwrap(),
            Put::Created
        );
        for k in [k1, k2] {
            let head = kms
                .client
                .head_object()
                .bucket(&bucket)
                .key(format!("lake/{k}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.server_side_encryption(),
                Some(&ServerSideEncryption::AwsKms),
                "{k}"
            );
            assert!(
                head.ssekms_key_id()
                    .is_some_and(|id| id.contains("alias/fleet-lake")),
                "{k}: {:?}",
                head.ssekms_key_id()
            );
        }

        // A missing bucket is not worth retrying; the error says so.
        let gone = moto_store(&endpoint, "fp-no-such-bucket", Sse::None).await;
        let e = gone
            .put_if_absent(small, vec![1], o(0, 0))
            .await
            .unwrap_err();
        assert!(!e.is_retriable(), "{e}");
        assert!(e.to_string().contains("NoSuchBucket"), "{e}");
    }
}
