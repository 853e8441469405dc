//! `[firehose]`: where the delivery stream's S3 objects are and how to read them.

use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use serde::{Deserialize, Serialize};

/// The S3 side of an edge → Firehose → S3 delivery stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirehoseSourceConfig {
    /// Bucket the delivery stream writes to.
    pub bucket: String,
    /// The stream's S3 prefix (Firehose appends `YYYY/MM/DD/HH/`), e.g. `raw/`.
    pub prefix: String,
    /// AWS region (default chain when absent).
    pub region: Option<String>,
    /// Endpoint override (an S3-compatible store, or moto in tests).
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// S3-compatible stores.
    pub path_style: bool,
    /// Static access key id (secret spec `env:`/`file:`/inline); the default
    /// credential chain when absent.
    pub access_key_id: Option<String>,
    /// Static secret access key (secret spec); set with `access_key_id`.
    pub secret_access_key: Option<String>,
    /// How often the prefix is listed for new objects.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Added to `signature_window` for records read from Firehose objects:
    /// their reference time is the object's LastModified, which trails the
    /// signing time by up to the stream's buffering interval (≤ 900 s).
    #[serde(with = "humantime_serde")]
    pub delivery_allowance: Duration,
    /// How long processed object keys are remembered in the checkpoint.
    /// Keys older than this (by LastModified) are folded into the listing's
    /// start-after point; an object that appears later under a key sorting
    /// before that point would not be read.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Largest object read (bytes); larger ones are dead-lettered whole.
    pub max_object_bytes: u64,
}

impl Default for FirehoseSourceConfig {
    fn default() -> Self {
        FirehoseSourceConfig {
            bucket: String::new(),
            prefix: String::new(),
            region: None,
            endpoint_url: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            poll_interval: Duration::from_secs(30),
            delivery_allowance: Duration::from_secs(15 * 60),
            lookback: Duration::from_secs(24 * 3600),
            max_object_bytes: 128 * 1024 * 1024,
        }
    }
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid(format!("firehose.{key}: {reason}"))
}

impl FirehoseSourceConfig {
    /// Reject contradictions, naming the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.bucket.trim().is_empty() {
            return Err(invalid("bucket", "required when [firehose] is present"));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(invalid(
                "access_key_id",
                "set both access_key_id and secret_access_key, or neither (default credential chain)",
            ));
        }
        if let Some(u) = &self.endpoint_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    "endpoint_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.poll_interval.is_zero() {
            return Err(invalid("poll_interval", "must be greater than 0"));
        }
        if self.lookback < Duration::from_secs(3600) {
            return Err(invalid(
                "lookback",
                "must be at least 1h: Firehose objects become visible out of key order within the buffering interval",
            ));
        }
        if self.max_object_bytes == 0 {
            return Err(invalid("max_object_bytes", "must be greater than 0"));
        }
        Ok(())
    }
}
