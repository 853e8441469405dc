//! Where the forwarder sends: Kafka or AWS Firehose (`[uplink] kind`).
//!
//! Two concrete uplinks behind one enum, not a plugin registry: both sign
//! each record at send time with the same key and the same signed fields
//! ([`crate::publish::Signer`]), and the buffer forgets a record only when
//! its uplink acknowledged it.
//!
//! - **Kafka** ([`crate::publish::Publisher`]): idempotent producer,
//!   `acks=all`, zstd (or lz4); TLS with server verification on by default
//!   for non-loopback brokers, SASL/SCRAM, mTLS (`[kafka.tls]`,
//!   `[kafka.sasl]`, see `fleetpulse_core::kafka`). librdkafka speaks the
//!   Kafka protocol over plain TCP and has no HTTP(S) proxy support: a
//!   Kafka uplink needs a TCP egress path to the brokers; `HTTPS_PROXY`
//!   is ignored for it, with a warning at start.
//! - **Firehose** ([`firehose::FirehoseUplink`]): `PutRecordBatch` within
//!   Firehose's limits, each record an envelope line
//!   (`fleetpulse_core::envelope`) carrying topic, key, signature headers
//!   and payload; only the entries Firehose reports as failed are re-sent.
//!   The HTTP client honours `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`.

pub mod firehose;

use serde::{Deserialize, Serialize};

pub use firehose::{FirehoseConfig, FirehoseError, FirehoseUplink};

/// Which uplink the connector sends through (`uplink.kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKind {
    /// Kafka, the `[kafka]` table.
    #[default]
    Kafka,
    /// AWS Firehose, the `[uplink.firehose]` table.
    Firehose,
}

/// `[uplink]`: the uplink choice and the Firehose settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// `"kafka"` (default) or `"firehose"`.
    pub kind: UplinkKind,
    /// Firehose delivery stream and client settings (`kind = "firehose"`).
    pub firehose: FirehoseConfig,
}

/// The names of the proxy variables set in the environment (values are not
/// logged: they may carry credentials).
pub fn proxy_env() -> Vec<&'static str> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
    .collect()
}
