//! The AWS Firehose uplink: `PutRecordBatch` of signed envelope lines.
//!
//! - **Limits.** A call carries at most [`MAX_BATCH_RECORDS`] records and
//!   [`MAX_BATCH_BYTES`] of record data; one record is at most
//!   [`MAX_RECORD_BYTES`]. [`plan`] splits what the buffer hands over
//!   accordingly.
//! - **Oversized records are never silently dropped.** A record whose
//!   envelope exceeds 1,000 KiB cannot go through Firehose at all: it is
//!   written to `uplink.firehose.rejected_dir` (one file per record, the
//!   envelope line itself), logged at error level and counted in
//!   `fleetpulse_edge_firehose_rejected_total`, and only then removed from
//!   the buffer. If that write fails, the record stays in the buffer.
//! - **Retry only what failed.** Firehose answers a batch with
//!   `FailedPutCount` and one `RequestResponses` entry per record, in order;
//!   entries with an `ErrorCode` are re-sent (alone, same signature) with
//!   exponential backoff, up to `entry_retries` times; the others are
//!   acknowledged individually at once. What still fails goes back to the
//!   buffer and is sent again later.
//! - **Proxy.** The HTTP client (hyper 1 + rustls/ring, through
//!   `aws-smithy-http-client`) reads `HTTPS_PROXY`, `HTTP_PROXY`,
//!   `ALL_PROXY` and `NO_PROXY` (and their lower-case forms); HTTPS
//!   endpoints are reached through a `CONNECT` tunnel, so TLS stays end to
//!   end.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_firehose::operation::put_record_batch::PutRecordBatchOutput;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record as FirehoseRecord;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::{http_client_fn, SharedHttpClient, SharedHttpConnector};
use fleetpulse_core::config::{read_secret, ConfigError};
use fleetpulse_core::envelope::Envelope;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use crate::buffer::{Class, StoredRecord};
use crate::publish::{Delivery, DeliveryError, Signer};

/// Records per `PutRecordBatch`, at most (Firehose's limit).
pub const MAX_BATCH_RECORDS: usize = 500;
/// Record data per `PutRecordBatch`, at most (Firehose's 4 MiB).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// One record's data, at most (Firehose's 1,000 KiB).
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// `[uplink.firehose]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirehoseConfig {
    /// Delivery stream name. Required with `uplink.kind = "firehose"`.
    pub stream: String,
    /// AWS region. Unset: the default chain (`AWS_REGION`, profile, IMDS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override (VPC endpoint, FIPS endpoint, a test server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Static access key id (`env:NAME`, `file:/path` or inline); with
    /// `secret_access_key`. Unset: the default credential chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Static secret access key (`env:NAME`, `file:/path` or inline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Re-sends of the entries Firehose reported as failed, per batch,
    /// before they go back to the buffer.
    pub entry_retries: u32,
    /// First backoff between those re-sends (doubles, at most 20 s).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Timeout of one API call (all SDK attempts included).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Where records too large for Firehose (> 1,000 KiB) are written.
    pub rejected_dir: PathBuf,
}

impl Default for FirehoseConfig {
    fn default() -> Self {
        FirehoseConfig {
            stream: String::new(),
            region: None,
            endpoint_url: None,
            access_key_id: None,
            secret_access_key: None,
            entry_retries: 5,
            retry_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
            rejected_dir: PathBuf::from("./fleetpulse-data/edge-rejected"),
        }
    }
}

impl FirehoseConfig {
    /// Validate (keys named `uplink.firehose.*`); secrets are read now.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, r: &str| ConfigError::Contradiction {
            key: format!("uplink.firehose.{k}"),
            reason: r.to_string(),
        };
        if self.stream.trim().is_empty() {
            return Err(bad("stream", "required with uplink.kind = \"firehose\""));
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(bad("region", "must not be empty when set"));
        }
        if let Some(u) = &self.endpoint_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(bad("endpoint_url", "must be an http:// or https:// URL"));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(a), Some(s)) => {
                read_secret("uplink.firehose.access_key_id", a)?;
                read_secret("uplink.firehose.secret_access_key", s)?;
            }
            (Some(_), None) => return Err(bad("secret_access_key", "required with access_key_id")),
            (None, Some(_)) => return Err(bad("access_key_id", "required with secret_access_key")),
            (None, None) => {}
        }
        if self.request_timeout < Duration::from_secs(1) {
            return Err(bad("request_timeout", "must be at least 1s"));
        }
        if self.rejected_dir.as_os_str().is_empty() {
            return Err(bad("rejected_dir", "must not be empty"));
        }
        Ok(())
    }
}

/// Why Firehose did not take a record. Everything but a local write
/// failure may succeed later.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// The whole `PutRecordBatch` call failed (network, throttling,
    /// credentials, missing stream...).
    #[error("PutRecordBatch failed: {0}")]
    Call(String),
    /// Firehose rejected this entry (`ErrorCode`: `ErrorMessage`).
    #[error("Firehose rejected the record: {code}: {message}")]
    Entry {
        /// `ServiceUnavailableException`, `InternalFailure`, ...
        code: String,
        /// Firehose's message.
        message: String,
    },
    /// An oversized record could not be written to the rejected directory.
    #[error("cannot write oversized record to {path}: {source}")]
    Reject {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl FirehoseError {
    /// Whether trying again may succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, FirehoseError::Reject { .. })
    }
}

/// One record ready for Firehose: its buffer identity and its envelope line.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) class: Class,
    pub(crate) data: Vec<u8>,
}

/// Split entries into `PutRecordBatch` calls within Firehose's limits;
/// entries over [`MAX_RECORD_BYTES`] come back apart (they cannot be sent).
pub(crate) fn plan(entries: Vec<Entry>) -> (Vec<Vec<Entry>>, Vec<Entry>) {
    let mut batches = Vec::new();
    let mut oversized = Vec::new();
    let mut cur: Vec<Entry> = Vec::new();
    let mut bytes = 0usize;
    for e in entries {
        if e.data.len() > MAX_RECORD_BYTES {
            oversized.push(e);
            continue;
        }
        if !cur.is_empty()
            && (cur.len() == MAX_BATCH_RECORDS || bytes + e.data.len() > MAX_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += e.data.len();
        cur.push(e);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    (batches, oversized)
}

/// Which entries of a `PutRecordBatch` of `sent` records failed, with
/// their error: `RequestResponses` is positional. A response that does not
/// have one entry per record is not trusted: every record counts as failed.
pub(crate) fn failed_entries(
    sent: usize,
    out: &PutRecordBatchOutput,
) -> Vec<(usize, FirehoseError)> {
    let responses = out.request_responses();
    if responses.len() != sent {
        return (0..sent)
            .map(|i| {
                (
                    i,
                    FirehoseError::Call(format!(
                        "{} responses for {sent} records (FailedPutCount {})",
                        responses.len(),
                        out.failed_put_count()
                    )),
                )
            })
            .collect();
    }
    responses
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.error_code().map(|code| {
                (
                    i,
                    FirehoseError::Entry {
                        code: code.to_string(),
                        message: r.error_message().unwrap_or_default().to_string(),
                    },
                )
            })
        })
        .collect()
}

fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(20))
}

fn entries_failed(n: usize, attempt: u32, e: &FirehoseError, wait: Duration) {
    tracing::warn!(records = n, attempt, error = %e, ?wait, "Firehose did not take some records; re-sending only those");
    metrics::counter!("fleetpulse_edge_firehose_entry_failures_total").increment(n as u64);
}

/// Send one planned batch; re-send only failed entries, `retries` times at
/// most, waiting `first_backoff` (doubling) in between. One [`Delivery`]
/// per entry. `put` is the `PutRecordBatch` call (a closure for tests).
pub(crate) async fn put_with_retry<F, Fut>(
    entries: Vec<Entry>,
    retries: u32,
    first_backoff: Duration,
    mut put: F,
) -> Vec<Delivery>
where
    F: FnMut(Vec<Vec<u8>>) -> Fut,
    Fut: std::future::Future<Output = Result<PutRecordBatchOutput, FirehoseError>>,
{
    let mut out = Vec::with_capacity(entries.len());
    let mut pending = entries;
    let mut attempt = 0;
    loop {
        let data: Vec<Vec<u8>> = pending.iter().map(|e| e.data.clone()).collect();
        let failed: Vec<(usize, FirehoseError)> = match put(data).await {
            Ok(resp) => failed_entries(pending.len(), &resp),
            Err(e) => {
                let msg = e.to_string();
                (0..pending.len())
                    .map(|i| (i, FirehoseError::Call(msg.clone())))
                    .collect()
            }
        };
        let mut retry = Vec::with_capacity(failed.len());
        let mut errors = Vec::with_capacity(failed.len());
        let mut fi = failed.into_iter().peekable();
        for (i, e) in pending.into_iter().enumerate() {
            if fi.peek().is_some_and(|(j, _)| *j == i) {
                let (_, err) = fi.next().expect("peeked");
                retry.push(e);
                errors.push(err);
            } else {
                out.push((e.seq, e.class, Ok(())));
            }
        }
        if retry.is_empty() {
            return out;
        }
        if attempt >= retries {
            for (e, err) in retry.into_iter().zip(errors) {
                out.push((e.seq, e.class, Err(DeliveryError::Firehose(err))));
            }
            return out;
        }
        let wait = backoff(first_backoff, attempt);
        entries_failed(retry.len(), attempt + 1, &errors[0], wait);
        tokio::time::sleep(wait).await;
        attempt += 1;
        pending = retry;
    }
}

/// The HTTP client: hyper 1, rustls with ring, proxies from the environment.
fn http_client() -> SharedHttpClient {
    http_client_fn(|settings, components| {
        let mut b = Connector::builder()
            .connector_settings(settings.clone())
            .proxy_config(ProxyConfig::from_env());
        b.set_sleep_impl(components.sleep_impl());
        SharedHttpConnector::new(b.tls_provider(Provider::Rustls(CryptoMode::Ring)).build())
    })
}

/// A signing Firehose client for one delivery stream.
pub struct FirehoseUplink {
    client: aws_sdk_firehose::Client,
    config: FirehoseConfig,
    signer: std::sync::Arc<Signer>,
}

impl std::fmt::Debug for FirehoseUplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirehoseUplink")
            .field("stream", &self.config.stream)
            .field("endpoint_url", &self.config.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl FirehoseUplink {
    /// Build the client (no network call yet: a missing stream shows up as
    /// failed sends, and records stay in the buffer).
    pub async fn new(
        config: &FirehoseConfig,
        signer: std::sync::Arc<Signer>,
    ) -> Result<FirehoseUplink, ConfigError> {
        config.check()?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(timeouts);
        if let Some(r) = &config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(u) = &config.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let (Some(a), Some(s)) = (&config.access_key_id, &config.secret_access_key) {
            let creds = aws_sdk_firehose::config::Credentials::new(
                read_secret("uplink.firehose.access_key_id", a)?,
                read_secret("uplink.firehose.secret_access_key", s)?,
                None,
                None,
                "fleetpulse-config",
            );
            loader = loader.credentials_provider(creds);
        }
        let sdk = loader.load().await;
        Ok(FirehoseUplink {
            client: aws_sdk_firehose::Client::new(&sdk),
            config: config.clone(),
            signer,
        })
    }

    /// The delivery stream.
    pub fn stream(&self) -> &str {
        &self.config.stream
    }

    /// Sign records now and frame them as envelope lines.
    fn entries(&self, records: &[StoredRecord]) -> Vec<Entry> {
        records
            .iter()
            .map(|r| {
                let mut headers = r.headers.clone();
                headers.extend(self.signer.sign(r));
                let env = Envelope {
                    topic: r.topic.clone(),
                    key: r.key.clone(),
                    headers,
                    payload: r.payload.clone(),
                };
                Entry {
                    seq: r.seq,
                    class: r.class,
                    data: env.to_line(),
                }
            })
            .collect()
    }

    /// Sign and send records: oversized ones are diverted to the rejected
    /// directory at once; the rest go in `PutRecordBatch` calls run as
    /// tasks. Returns the deliveries known now and the pending calls.
    pub(crate) fn submit(
        self: &std::sync::Arc<Self>,
        records: &[StoredRecord],
    ) -> (Vec<Delivery>, Vec<BoxFuture<'static, Vec<Delivery>>>) {
        let (batches, oversized) = plan(self.entries(records));
        let now: Vec<Delivery> = oversized.into_iter().map(|e| self.reject(e)).collect();
        let calls = batches
            .into_iter()
            .map(|batch| {
                let me = self.clone();
                let ids: Vec<(u64, Class)> = batch.iter().map(|e| (e.seq, e.class)).collect();
                // A task, so calls progress while the forwarder waits elsewhere.
                let task = tokio::spawn(async move {
                    let (retries, first) = (me.config.entry_retries, me.config.retry_backoff);
                    put_with_retry(batch, retries, first, |data| me.put(data)).await
                });
                async move {
                    task.await.unwrap_or_else(|e| {
                        let msg = format!("send task failed: {e}");
                        ids.into_iter()
                            .map(|(seq, class)| {
                                (
                                    seq,
                                    class,
                                    Err(DeliveryError::Firehose(FirehoseError::Call(msg.clone()))),
                                )
                            })
                            .collect()
                    })
                }
                .boxed()
            })
            .collect();
        (now, calls)
    }

    async fn put(&self, data: Vec<Vec<u8>>) -> Result<PutRecordBatchOutput, FirehoseError> {
        let mut records = Vec::with_capacity(data.len());
        for d in data {
            records.push(
                FirehoseRecord::builder()
                    .data(Blob::new(d))
                    .build()
                    .map_err(|e| FirehoseError::Call(e.to_string()))?,
            );
        }
        self.client
            .put_record_batch()
            .delivery_stream_name(&self.config.stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| {
                FirehoseError::Call(aws_sdk_firehose::error::DisplayErrorContext(&e).to_string())
            })
    }

    /// Keep an oversized record on disk, loudly; ack it only once written.
    fn reject(&self, e: Entry) -> Delivery {
        let dir = &self.config.rejected_dir;
        let path = dir.join(format!("{}-{}.fpenv", self.signer.connector_id(), e.seq));
        let res = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, &e.data));
        match res {
            Ok(()) => {
                tracing::error!(
                    seq = e.seq,
                    class = e.class.name(),
                    bytes = e.data.len(),
                    limit = MAX_RECORD_BYTES,
                    path = %path.display(),
                    "record too large for Firehose: NOT sent, written to the rejected directory"
                );
                metrics::counter!("fleetpulse_edge_firehose_rejected_total").increment(1);
                (e.seq, e.class, Ok(()))
            }
            Err(source) => {
                tracing::error!(seq = e.seq, path = %path.display(), error = %source, "record too large for Firehose and cannot be written aside: it stays in the buffer");
                (
                    e.seq,
                    e.class,
                    Err(DeliveryError::Firehose(FirehoseError::Reject {
                        path,
                        source,
                    })),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_firehose::types::PutRecordBatchResponseEntry;
    use std::sync::{Arc, Mutex};

    fn entry(seq: u64, len: usize) -> Entry {
        Entry {
            seq,
            class: Class::Counters,
            data: vec![b'x'; len],
        }
    }

    #[test]
    fn plan_respects_firehose_limits() {
        // 1,200 small records: 500 + 500 + 200.
        let (b, over) = plan((0..1200).map(|i| entry(i, 10)).collect());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [500, 500, 200]);
        assert!(over.is_empty());
        // 900 KiB records: four fit in 4 MiB, the fifth starts a new call.
        let (b, _) = plan((0..6).map(|i| entry(i, 900 * 1024)).collect());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
        for call in &b {
            assert!(call.iter().map(|e| e.data.len()).sum::<usize>() <= MAX_BATCH_BYTES);
        }
        // Exactly 1,000 KiB goes; one byte more is set apart, order kept.
        let (b, over) = plan(vec![
            entry(1, MAX_RECORD_BYTES),
            entry(2, MAX_RECORD_BYTES + 1),
            entry(3, 5),
        ]);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(over.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    }

    fn response(failed: &[usize], n: usize) -> PutRecordBatchOutput {
        let entries = (0..n)
            .map(|i| {
                if failed.contains(&i) {
                    PutRecordBatchResponseEntry::builder()
                        .error_code("ServiceUnavailableException")
                        .error_message("Slow down.")
                        .build()
                } else {
                    PutRecordBatchResponseEntry::builder()
                        .record_id(format!("rid-{i}"))
                        .build()
                }
            })
            .collect::<Vec<_>>();
        PutRecordBatchOutput::builder()
            .failed_put_count(failed.len() as i32)
            .set_request_responses(Some(entries))
            .build()
            .expect("output")
    }

    #[tokio::test]
    async fn only_failed_entries_are_resent() {
        let calls: Arc<Mutex<Vec<Vec<Vec<u8>>>>> = Arc::default();
        let seen = calls.clone();
        let entries: Vec<Entry> = (0..5)
            .map(|i| Entry {
                seq: 100 + i,
                class: Class::Counters,
                data: format!("rec-{i}").into_bytes(),
            })
            .collect();
        let out = put_with_retry(entries, 3, Duration::from_millis(1), move |data| {
            let seen = seen.clone();
            async move {
                let n = data.len();
                let attempt = {
                    let mut c = seen.lock().unwrap();
                    c.push(data);
                    c.len()
                };
                Ok(match attempt {
                    // Entries 1 and 3 fail, then 3 (now at index 1) fails again.
                    1 => response(&[1, 3], n),
                    2 => response(&[1], n),
                    _ => response(&[], n),
                })
            }
        })
        .await;
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].len(), 5);
        assert_eq!(calls[1], vec![b"rec-1".to_vec(), b"rec-3".to_vec()]);
        assert_eq!(calls[2], vec![b"rec-3".to_vec()]);
        let mut acked: Vec<u64> = out.iter().filter(|d| d.2.is_ok()).map(|d| d.0).collect();
        acked.sort_unstable();
        assert_eq!(acked, [100, 101, 102, 103, 104]);
        // Acked individually: the first call's successes come back first.
        assert_eq!(
            out.iter().take(3).map(|d| d.0).collect::<Vec<_>>(),
            [100, 102, 104]
        );
    }

    #[tokio::test]
    async fn entries_still_failing_go_back_to_the_buffer() {
        let entries = (0..3)
            .map(|i| Entry {
                seq: i,
                class: Class::Counters,
                data: vec![i as u8],
            })
            .collect();
        // Firehose keeps refusing the record with data [2].
        let out = put_with_retry(entries, 2, Duration::from_millis(1), |data| async move {
            let bad: Vec<usize> = (0..data.len()).filter(|i| data[*i] == [2]).collect();
            Ok(response(&bad, data.len()))
        })
        .await;
        let failed: Vec<u64> = out.iter().filter(|d| d.2.is_err()).map(|d| d.0).collect();
        assert_eq!(failed, [2]);
        assert!(matches!(
            &out.iter().find(|d| d.0 == 2).unwrap().2,
            Err(DeliveryError::Firehose(FirehoseError::Entry { code, .. })) if code == "ServiceUnavailableException"
        ));
        // A whole-call failure fails every entry; a short response is not trusted.
        let out = put_with_retry(vec![entry(7, 1)], 0, Duration::ZERO, |_| async {
            Err(FirehoseError::Call("throttled".into()))
        })
        .await;
        assert!(out[0].2.is_err());
        let r = response(&[], 1);
        assert_eq!(failed_entries(2, &r).len(), 2);
    }

    #[test]
    fn config_errors_name_the_key() {
        let ok = FirehoseConfig {
            stream: "s".into(),
            ..Default::default()
        };
        ok.check().unwrap();
        for (c, key) in [
            (FirehoseConfig::default(), "uplink.firehose.stream"),
            (
                FirehoseConfig {
                    access_key_id: Some("AKIA".into()),
                    ..ok.clone()
                },
                "uplink.firehose.secret_access_key",
            ),
            (
                FirehoseConfig {
                    endpoint_url: Some("localhost:4566".into()),
                    ..ok.clone()
                },
                "uplink.firehose.endpoint_url",
            ),
            (
                FirehoseConfig {
                    access_key_id: Some("env:FP_SURELY_UNSET_AK".into()),
                    secret_access_key: Some("x".into()),
                    ..ok.clone()
                },
                "uplink.firehose.access_key_id",
            ),
        ] {
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
