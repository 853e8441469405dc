//! Signed configuration from the operator, over a Kafka control topic.
//!
//! The operator publishes a complete edge configuration (the TOML of the
//! config file) to `<topic_prefix>.control.<connector_id>` with
//! `fleetpulse config publish`; a connector with `control.enabled = true`
//! consumes that topic (an outbound connection, like the producer's) and
//! applies what verifies, like a SIGHUP reload ([`crate::reload`]).
//!
//! Why it is safe to accept:
//!
//! - **Signed with a key only the operator and the connector hold.** The
//!   key is `HMAC-SHA256(connector secret, "fleetpulse-config-v1|" +
//!   connector_id)`: derived from the secret that never crosses the network,
//!   but distinct from the record signing key (other label), so a signed
//!   telemetry record can never pass as a config object or the reverse.
//! - **The signature covers the version, the time and the document**:
//!   `HMAC(key, len|connector_id, version, ts, len|payload)`, in headers
//!   `fp-config-version`, `fp-config-ts`, `fp-key-id`, `fp-sig`. Unsigned,
//!   wrongly signed or foreign-connector objects are rejected.
//! - **Versions only go up.** An object whose version is not above the last
//!   applied one is a replay (or stale) and is rejected. The connector reads
//!   the topic from its beginning at every start, so it ends on the newest
//!   valid object even after a restart; an old object re-appended by an
//!   attacker stays older than the newest and is rejected.
//! - **Same rules as a file.** The document is loaded like the config file
//!   (defaults, the document, then `FLEETPULSE__…` env overrides), validated,
//!   and must not change identity, uplink or storage keys.
//!
//! Every rejection is logged and counted in
//! `fleetpulse_edge_config_rejected_total{reason}`. (An S3 key as the
//! source is not implemented; the topic is the one channel.)

use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::Shutdown;
use hmac::{Hmac, Mac};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::EdgeConfig;

type HmacSha256 = Hmac<Sha256>;

/// Header: the object's version (decimal, must increase).
pub const HDR_VERSION: &str = "fp-config-version";
/// Header: signing time, ms since the epoch.
pub const HDR_TS: &str = "fp-config-ts";
/// Header: id of the config signing key.
pub const HDR_KEY_ID: &str = "fp-key-id";
/// Header: hex HMAC.
pub const HDR_SIG: &str = "fp-sig";

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Consume signed configuration objects from the control topic.
    pub enabled: bool,
    /// Control topic; default `<kafka.topic_prefix>.control.<connector_id>`.
    pub topic: Option<String>,
    /// Largest configuration document accepted, bytes.
    pub max_bytes: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            enabled: false,
            topic: None,
            max_bytes: 1024 * 1024,
        }
    }
}

/// The control topic of a connector.
pub fn control_topic(kafka: &KafkaConfig, connector_id: &str) -> String {
    format!("{}.control.{connector_id}", kafka.topic_prefix)
}

/// The key configuration objects of one connector are signed with.
#[derive(Clone)]
pub struct ConfigSigningKey {
    key: [u8; 32],
    key_id: String,
    connector_id: String,
}

impl std::fmt::Debug for ConfigSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A signed configuration object, as sent on the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedConfig {
    /// Monotonic version.
    pub version: u64,
    /// Signing time, ms.
    pub ts: i64,
    /// Key id.
    pub key_id: String,
    /// Hex HMAC.
    pub sig: String,
    /// The TOML document.
    pub payload: Vec<u8>,
}

impl SignedConfig {
    /// The message headers carrying the signature.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (HDR_VERSION, self.version.to_string()),
            (HDR_TS, self.ts.to_string()),
            (HDR_KEY_ID, self.key_id.clone()),
            (HDR_SIG, self.sig.clone()),
        ]
    }
}

impl ConfigSigningKey {
    /// Derive the config key of `connector_id` from its secret.
    pub fn derive(secret: &[u8], connector_id: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"fleetpulse-config-v1|");
        mac.update(connector_id.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let key_id = hex::encode(&Sha256::digest(key)[..8]);
        ConfigSigningKey {
            key,
            key_id,
            connector_id: connector_id.to_string(),
        }
    }

    /// The public identifier of this key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn mac(&self, version: u64, ts: i64, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(&(self.connector_id.len() as u64).to_be_bytes());
        mac.update(self.connector_id.as_bytes());
        mac.update(&version.to_be_bytes());
        mac.update(&ts.to_be_bytes());
        mac.update(&(payload.len() as u64).to_be_bytes());
        mac.update(payload);
        mac
    }

    /// Sign a configuration document.
    pub fn sign(&self, version: u64, ts: i64, payload: &[u8]) -> SignedConfig {
        SignedConfig {
            version,
            ts,
            key_id: self.key_id.clone(),
            sig: hex::encode(self.mac(version, ts, payload).finalize().into_bytes()),
            payload: payload.to_vec(),
        }
    }
}

/// Why a configuration object was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ControlRejected {
    /// No signature headers.
    #[error("unsigned configuration object (missing header {0})")]
    Unsigned(&'static str),
    /// Signed with another key (another secret or connector).
    #[error("configuration object signed with key {found}, expected {expected}")]
    WrongKey {
        /// Our key id.
        expected: String,
        /// The object's key id.
        found: String,
    },
    /// The HMAC does not match.
    #[error("configuration object has a bad signature")]
    BadSignature,
    /// Not newer than what was applied.
    #[error("configuration version {version} is not above the applied version {applied}")]
    Replayed {
        /// The object's version.
        version: u64,
        /// The last applied version.
        applied: u64,
    },
    /// Larger than `control.max_bytes`.
    #[error("configuration object of {0} bytes exceeds control.max_bytes")]
    TooLarge(usize),
    /// Not a valid edge configuration.
    #[error("configuration object is not a valid edge configuration: {0}")]
    Invalid(#[source] ConfigError),
}

impl ControlRejected {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlRejected::Unsigned(_) => "unsigned",
            ControlRejected::WrongKey { .. } => "wrong_key",
            ControlRejected::BadSignature => "bad_signature",
            ControlRejected::Replayed { .. } => "replayed",
            ControlRejected::TooLarge(_) => "too_large",
            ControlRejected::Invalid(_) => "invalid",
        }
    }
}

/// Checks objects in order; remembers the last applied version.
#[derive(Debug)]
pub struct Verifier {
    key: ConfigSigningKey,
    applied: u64,
    max_bytes: usize,
}

impl Verifier {
    /// A verifier for a connector's key; nothing applied yet.
    pub fn new(key: ConfigSigningKey, max_bytes: usize) -> Self {
        Verifier {
            key,
            applied: 0,
            max_bytes,
        }
    }

    /// Verify one object (headers as name/value pairs) and load its
    /// configuration; on success its version becomes the applied one.
    pub fn check<'a>(
        &mut self,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        payload: &[u8],
    ) -> Result<EdgeConfig, ControlRejected> {
        let (mut version, mut ts, mut key_id, mut sig) = (None, None, None, None);
        for (k, v) in headers {
            let v = std::str::from_utf8(v).ok();
            match k {
                HDR_VERSION => version = v.and_then(|v| v.parse::<u64>().ok()),
                HDR_TS => ts = v.and_then(|v| v.parse::<i64>().ok()),
                HDR_KEY_ID => key_id = v.map(str::to_string),
                HDR_SIG => sig = v.and_then(|v| hex::decode(v).ok()),
                _ => {}
            }
        }
        let version = version.ok_or(ControlRejected::Unsigned(HDR_VERSION))?;
        let ts = ts.ok_or(ControlRejected::Unsigned(HDR_TS))?;
        let key_id = key_id.ok_or(ControlRejected::Unsigned(HDR_KEY_ID))?;
        let sig = sig.ok_or(ControlRejected::Unsigned(HDR_SIG))?;
        if key_id != self.key.key_id {
            return Err(ControlRejected::WrongKey {
                expected: self.key.key_id.clone(),
                found: key_id,
            });
        }
        self.key
            .mac(version, ts, payload)
            .verify_slice(&sig)
            .map_err(|_| ControlRejected::BadSignature)?;
        if version <= self.applied {
            return Err(ControlRejected::Replayed {
                version,
                applied: self.applied,
            });
        }
        if payload.len() > self.max_bytes {
            return Err(ControlRejected::TooLarge(payload.len()));
        }
        let text = std::str::from_utf8(payload).map_err(|_| {
            ControlRejected::Invalid(ConfigError::Invalid("document is not UTF-8".into()))
        })?;
        let config = fleetpulse_core::config::load_str::<EdgeConfig>(text)
            .map_err(ControlRejected::Invalid)?;
        self.applied = version;
        Ok(config)
    }
}

fn object_rejected(e: &ControlRejected) {
    tracing::error!(error = %e, reason = e.reason(), "control topic: configuration object rejected");
    metrics::counter!("fleetpulse_edge_config_rejected_total", "reason" => e.reason()).increment(1);
}

fn object_accepted(version: u64) {
    tracing::info!(
        version,
        "control topic: signed configuration object verified; applying"
    );
    metrics::counter!("fleetpulse_edge_config_objects_total").increment(1);
}

fn consumer_error(e: &rdkafka::error::KafkaError) {
    tracing::debug!(error = %e, "control topic: consumer error (retrying)");
    metrics::counter!("fleetpulse_edge_control_errors_total").increment(1);
}

/// Why the control consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Consumer creation or subscription failed (bad Kafka settings).
    #[error("control topic consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The document is not a valid edge configuration (publishing).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The broker did not acknowledge the object (publishing).
    #[error("control topic: publish not acknowledged: {0}")]
    NotDelivered(rdkafka::error::KafkaError),
}

impl ControlError {
    /// Whether trying again may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ControlError::NotDelivered(_))
    }
}

/// Consume the control topic from its beginning until shutdown; send every
/// verified configuration to `out`.
pub(crate) fn spawn_consumer(
    config: &EdgeConfig,
    secret: &[u8],
    out: watch::Sender<EdgeConfig>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let topic = config
        .control
        .topic
        .clone()
        .unwrap_or_else(|| control_topic(&config.kafka, &config.connector_id));
    let mut cc = config.kafka.client_config();
    cc.set(
        "group.id",
        format!("fleetpulse-edge-control-{}", config.connector_id),
    )
    .set("enable.auto.commit", "false")
    .set("auto.offset.reset", "earliest")
    .set("topic.metadata.refresh.interval.ms", "5000");
    let consumer: StreamConsumer = cc.create()?;
    consumer.subscribe(&[&topic])?;
    let mut verifier = Verifier::new(
        ConfigSigningKey::derive(secret, &config.connector_id),
        config.control.max_bytes,
    );
    tracing::info!(topic, "control topic: listening for signed configuration");
    Ok(tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    consumer_error(&e);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            };
            let headers: Vec<(&str, &[u8])> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key, x.value.unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            match verifier.check(headers, m.payload().unwrap_or_default()) {
                Ok(c) => {
                    object_accepted(verifier.applied);
                    if out.send(c).is_err() {
                        return;
                    }
                }
                Err(e) => object_rejected(&e),
            }
        }
    }))
}

/// Sign `document` (an edge config TOML) for `connector_id` and publish it
/// to its control topic (`fleetpulse config publish`). The document is
/// validated first, so an invalid one is never published.
pub async fn publish_config(
    kafka: &KafkaConfig,
    topic: Option<&str>,
    connector_id: &str,
    secret: &[u8],
    document: &str,
    version: u64,
) -> Result<SignedConfig, ControlError> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let parsed: EdgeConfig = fleetpulse_core::config::from_toml(document)?;
    if parsed.connector_id != connector_id {
        return Err(ConfigError::Contradiction {
            key: "connector_id".into(),
            reason: format!(
                "the document is for {:?}, not {connector_id:?}",
                parsed.connector_id
            ),
        }
        .into());
    }
    let signed = ConfigSigningKey::derive(secret, connector_id).sign(
        version,
        fleetpulse_core::now_millis(),
        document.as_bytes(),
    );
    let topic = topic
        .map(str::to_string)
        .unwrap_or_else(|| control_topic(kafka, connector_id));
    let producer: FutureProducer = kafka.client_config().create()?;
    let mut headers = OwnedHeaders::new();
    for (k, v) in signed.headers() {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    producer
        .send(
            FutureRecord::to(&topic)
                .key(connector_id)
                .payload(&signed.payload)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| ControlError::NotDelivered(e))?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "tenant_id = \"t\"\nconnector_id = \"c1\"\nconnector_secret = \"x\"\n\
                       [[devices]]\naddress = \"10.0.0.1\"\n";
    const SECRET: &[u8] = b"0123456789abcdef-secret";

    fn hdrs(s: &SignedConfig) -> Vec<(&'static str, String)> {
        s.headers()
    }

    fn check(
        v: &mut Verifier,
        h: &[(&'static str, String)],
        p: &[u8],
    ) -> Result<EdgeConfig, ControlRejected> {
        v.check(h.iter().map(|(k, v)| (*k, v.as_bytes())), p)
    }

    #[test]
    fn accepts_signed_rejects_unsigned_wrong_replayed_invalid() {
        let key = ConfigSigningKey::derive(SECRET, "c1");
        let mut v = Verifier::new(key.clone(), 1 << 20);
        // Unsigned.
        let e = check(&mut v, &[], DOC.as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "unsigned");
        // Valid.
        let s2 = key.sign(2, 1, DOC.as_bytes());
        let c = check(&mut v, &hdrs(&s2), DOC.as_bytes()).unwrap();
        assert_eq!(c.devices[0].address, "10.0.0.1");
        // Replayed (same) and older.
        assert_eq!(
            check(&mut v, &hdrs(&s2), DOC.as_bytes())
                .unwrap_err()
                .reason(),
            "replayed"
        );
        let s1 = key.sign(1, 1, DOC.as_bytes());
        assert_eq!(
            check(&mut v, &hdrs(&s1), DOC.as_bytes())
                .unwrap_err()
                .reason(),
            "replayed"
        );
        // Tampered document, tampered version.
        let s3 = key.sign(3, 1, DOC.as_bytes());
        let evil = DOC.replace("10.0.0.1", "10.6.6.6");
        assert_eq!(
            check(&mut v, &hdrs(&s3), evil.as_bytes())
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let mut h = hdrs(&s3);
        h[0].1 = "9".into();
        assert_eq!(
            check(&mut v, &h, DOC.as_bytes()).unwrap_err().reason(),
            "bad_signature"
        );
        // Another secret, another connector, the record signing key: other key ids.
        for other in [
            ConfigSigningKey::derive(b"another-secret-0123456", "c1"),
            ConfigSigningKey::derive(SECRET, "c2"),
        ] {
            let s = other.sign(4, 1, DOC.as_bytes());
            assert_eq!(
                check(&mut v, &hdrs(&s), DOC.as_bytes())
                    .unwrap_err()
                    .reason(),
                "wrong_key"
            );
        }
        let record_key = fleetpulse_core::signing::SigningKey::derive(SECRET, "c1");
        assert_ne!(record_key.key_id(), key.key_id());
        // A forged signature under our key id.
        let mut h = hdrs(&key.sign(4, 1, DOC.as_bytes()));
        h[3].1 = "00".repeat(32);
        assert_eq!(
            check(&mut v, &h, DOC.as_bytes()).unwrap_err().reason(),
            "bad_signature"
        );
        // Signed but invalid TOML / invalid config.
        let bad = b"tenant_id = ";
        let s = key.sign(5, 1, bad);
        assert_eq!(
            check(&mut v, &hdrs(&s), bad).unwrap_err().reason(),
            "invalid"
        );
        // Still at version 2: a valid version 3 is taken.
        assert!(check(&mut v, &hdrs(&s3), DOC.as_bytes()).is_ok());
    }
}
