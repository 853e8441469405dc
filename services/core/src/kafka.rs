//! Kafka client settings shared by every service, and the topic names.
//!
//! Topics are one per record type, named `<prefix>.raw.<record_type>` for
//! what the edge publishes, `<prefix>.alerts.maintenance` for the alerter's
//! output and `<prefix>.dlq` for records that failed validation.
//!
//! # Security
//!
//! `[kafka.tls]` and `[kafka.sasl]` are typed keys for the common cases;
//! `security.protocol` is derived from them (`PLAINTEXT`, `SSL`,
//! `SASL_SSL`, or `SASL_PLAINTEXT` with a warning). When TLS is on, the
//! broker certificate is always verified (`enable.ssl.certificate.verification
//! = true`) and its name checked (`ssl.endpoint.identification.algorithm =
//! https`): there is no typed key to turn that off. Raw `properties` still
//! override everything (an escape hatch for odd brokers), and weakening
//! verification through them is logged as a warning at every start.
//!
//! Whether TLS is on when `tls.enabled` is not set depends on the service
//! ([`TlsDefault`]): the edge connector, which crosses networks, defaults to
//! TLS unless every broker is a loopback address; the in-cluster services
//! keep the historical plaintext default, so existing configs keep working.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::config::{read_secret, ConfigError};
use crate::schema::RecordType;

/// How to reach the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.mechanism`).
    /// They override what fleetpulse sets.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// TLS to the brokers (`[kafka.tls]`).
    #[serde(default)]
    pub tls: KafkaTls,
    /// SASL authentication (`[kafka.sasl]`; none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// `[kafka.tls]`: TLS to the brokers, server verification always on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTls {
    /// Use TLS. Unset: the service's default ([`TlsDefault`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// PEM file with the CA certificate(s) that signed the brokers'
    /// certificates. Unset: the system trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mTLS); needs `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Passphrase of an encrypted `key_file`: `env:NAME`, `file:/path` or inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_password: Option<String>,
}

/// A SASL mechanism (`kafka.sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// SCRAM with SHA-256 (the password never crosses the network).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// PLAIN: the password is sent as is, so TLS is required.
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` value.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

/// `[kafka.sasl]`: SASL authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `"SCRAM-SHA-256"`, `"SCRAM-SHA-512"` or `"PLAIN"`.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password: `env:NAME`, `file:/path` or inline.
    pub password: String,
}

/// What an unset `kafka.tls.enabled` means for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsDefault {
    /// Plaintext (the in-cluster services; the historical default).
    Off,
    /// TLS unless every broker is a loopback address (the edge connector).
    OnUnlessLoopback,
}

/// librdkafka properties that weaken server verification when set in `properties`.
const WEAKENING: [(&str, &str); 2] = [
    ("enable.ssl.certificate.verification", "false"),
    ("ssl.endpoint.identification.algorithm", "none"),
];

/// Whether every `host:port` of a bootstrap list is a loopback address.
pub fn brokers_are_loopback(brokers: &str) -> bool {
    let mut any = false;
    for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        any = true;
        let host = match b.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => b,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return false;
        }
    }
    any
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "fleetpulse".into(),
            properties: BTreeMap::new(),
            tls: KafkaTls::default(),
            sasl: None,
        }
    }
}

impl KafkaConfig {
    /// A librdkafka config with the brokers, the security settings (TLS off
    /// unless `tls.enabled = true`: [`TlsDefault::Off`]) and the extra
    /// properties. A SASL password that cannot be read is logged and left
    /// out (authentication then fails visibly); services that validated
    /// with [`KafkaConfig::check`] never hit that.
    pub fn client_config(&self) -> ClientConfig {
        match self.try_client_config(TlsDefault::Off) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "Kafka client config incomplete");
                let mut c = ClientConfig::new();
                c.set("bootstrap.servers", &self.brokers);
                c
            }
        }
    }

    /// Whether TLS is used, given the service's default.
    pub fn tls_enabled(&self, default: TlsDefault) -> bool {
        self.tls.enabled.unwrap_or(match default {
            TlsDefault::Off => false,
            TlsDefault::OnUnlessLoopback => !brokers_are_loopback(&self.brokers),
        })
    }

    /// The derived `security.protocol`.
    pub fn security_protocol(&self, default: TlsDefault) -> &'static str {
        match (self.tls_enabled(default), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (true, true) => "SASL_SSL",
            (false, true) => "SASL_PLAINTEXT",
        }
    }

    /// A librdkafka config: brokers, `security.protocol`, TLS (verification
    /// always on), SASL (the password read now), then the raw `properties`,
    /// which override. Warns when SASL goes without TLS and when raw
    /// properties weaken server verification.
    pub fn try_client_config(&self, default: TlsDefault) -> Result<ClientConfig, ConfigError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        let protocol = self.security_protocol(default);
        c.set("security.protocol", protocol);
        if self.tls_enabled(default) {
            c.set("enable.ssl.certificate.verification", "true");
            c.set("ssl.endpoint.identification.algorithm", "https");
            let t = &self.tls;
            for (prop, path) in [
                ("ssl.ca.location", &t.ca_file),
                ("ssl.certificate.location", &t.cert_file),
                ("ssl.key.location", &t.key_file),
            ] {
                if let Some(p) = path {
                    c.set(prop, p.to_string_lossy());
                }
            }
            if let Some(spec) = &t.key_password {
                c.set(
                    "ssl.key.password",
                    read_secret("kafka.tls.key_password", spec)?,
                );
            }
        }
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanism", s.mechanism.name());
            c.set("sasl.username", &s.username);
            c.set(
                "sasl.password",
                read_secret("kafka.sasl.password", &s.password)?,
            );
            if protocol == "SASL_PLAINTEXT" {
                tracing::warn!(
                    mechanism = s.mechanism.name(),
                    "Kafka SASL without TLS (kafka.tls.enabled = false): traffic is readable on the wire"
                );
            }
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, weak) in WEAKENING {
            if self
                .properties
                .get(k)
                .is_some_and(|v| v.eq_ignore_ascii_case(weak))
            {
                tracing::warn!(
                    property = k,
                    value = weak,
                    "kafka.properties DISABLES broker certificate verification: anyone on the path can impersonate the broker"
                );
            }
        }
        Ok(c)
    }

    /// Validate the brokers and the security keys, naming them under
    /// `prefix` (e.g. `kafka`): files readable, mTLS pairs complete, no TLS
    /// keys with TLS off, PLAIN only over TLS, secrets resolvable now.
    pub fn check(&self, prefix: &str, default: TlsDefault) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Contradiction {
            key: format!("{prefix}.{key}"),
            reason,
        };
        if self.brokers.trim().is_empty() {
            return Err(bad("brokers", "must not be empty".into()));
        }
        let t = &self.tls;
        let tls = self.tls_enabled(default);
        if !tls {
            for (k, set) in [
                ("ca_file", t.ca_file.is_some()),
                ("cert_file", t.cert_file.is_some()),
                ("key_file", t.key_file.is_some()),
                ("key_password", t.key_password.is_some()),
            ] {
                if set {
                    return Err(bad(
                        &format!("tls.{k}"),
                        "is set but TLS is off (kafka.tls.enabled = false, or loopback brokers with enabled unset)".into(),
                    ));
                }
            }
        }
        match (&t.cert_file, &t.key_file) {
            (Some(_), None) => {
                return Err(bad(
                    "tls.key_file",
                    "required with tls.cert_file (mTLS)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "tls.cert_file",
                    "required with tls.key_file (mTLS)".into(),
                ))
            }
            _ => {}
        }
        if t.key_password.is_some() && t.key_file.is_none() {
            return Err(bad(
                "tls.key_password",
                "only used with tls.key_file".into(),
            ));
        }
        for (k, path) in [
            ("ca_file", &t.ca_file),
            ("cert_file", &t.cert_file),
            ("key_file", &t.key_file),
        ] {
            if let Some(p) = path {
                if let Err(e) = std::fs::File::open(p) {
                    return Err(bad(
                        &format!("tls.{k}"),
                        format!("cannot read {}: {e}", p.display()),
                    ));
                }
            }
        }
        if let Some(spec) = &t.key_password {
            read_secret(&format!("{prefix}.tls.key_password"), spec)?;
        }
        if let Some(s) = &self.sasl {
            if s.username.trim().is_empty() {
                return Err(bad("sasl.username", "must not be empty".into()));
            }
            read_secret(&format!("{prefix}.sasl.password"), &s.password)?;
            if s.mechanism == SaslMechanism::Plain && !tls {
                return Err(bad(
                    "sasl.mechanism",
                    "PLAIN sends the password in clear: it needs TLS (kafka.tls.enabled = true) or a SCRAM mechanism".into(),
                ));
            }
        }
        Ok(())
    }

    /// The topic of a record type.
    pub fn topic(&self, record_type: RecordType) -> String {
        match record_type {
            RecordType::MaintenanceAlert => format!("{}.alerts.maintenance", self.topic_prefix),
            t => format!("{}.raw.{}", self.topic_prefix, t.name()),
        }
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic_prefix)
    }

    /// Every topic fleetpulse uses.
    pub fn all_topics(&self) -> Vec<String> {
        let mut v: Vec<String> = RecordType::ALL.iter().map(|t| self.topic(*t)).collect();
        v.push(self.dlq_topic());
        v
    }

    /// The record type a raw topic carries, if it is one of ours.
    pub fn record_type_of(&self, topic: &str) -> Option<RecordType> {
        RecordType::ALL
            .into_iter()
            .find(|t| self.topic(*t) == topic)
    }
}

/// Headers put on dead-letter records.
pub mod dlq_headers {
    /// Error class (`bad_signature`, `wrong_schema`, …).
    pub const ERROR_CLASS: &str = "fp-error-class";
    /// Human-readable reason.
    pub const REASON: &str = "fp-error-reason";
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "fp-original-topic";
    /// Partition it was read from.
    pub const ORIGINAL_PARTITION: &str = "fp-original-partition";
    /// Offset it was read at.
    pub const ORIGINAL_OFFSET: &str = "fp-original-offset";
    /// Service that rejected it.
    pub const STAGE: &str = "fp-stage";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &ClientConfig, k: &str) -> Option<String> {
        c.get(k).map(str::to_string)
    }

    #[test]
    fn loopback_detection() {
        assert!(brokers_are_loopback("127.0.0.1:9092"));
        assert!(brokers_are_loopback("localhost:9092, [::1]:9093"));
        assert!(!brokers_are_loopback("127.0.0.1:9092,kafka:9092"));
        assert!(!brokers_are_loopback("10.0.0.1:9092"));
        assert!(!brokers_are_loopback(""));
    }

    #[test]
    fn defaults_stay_plaintext_and_edge_defaults_to_verified_tls() {
        let mut k = KafkaConfig::default();
        let c = k.try_client_config(TlsDefault::OnUnlessLoopback).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("PLAINTEXT"));
        k.brokers = "kafka.example.com:9093".into();
        // In-cluster services: unchanged.
        assert_eq!(
            get(&k.client_config(), "security.protocol").as_deref(),
            Some("PLAINTEXT")
        );
        let c = k.try_client_config(TlsDefault::OnUnlessLoopback).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SSL"));
        assert_eq!(
            get(&c, "enable.ssl.certificate.verification").as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&c, "ssl.endpoint.identification.algorithm").as_deref(),
            Some("https")
        );
        assert_eq!(get(&c, "ssl.ca.location"), None);
        k.tls.enabled = Some(false);
        let c = k.try_client_config(TlsDefault::OnUnlessLoopback).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("PLAINTEXT"));
        assert_eq!(get(&c, "enable.ssl.certificate.verification"), None);
    }

    #[test]
    fn sasl_and_mtls_render() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "x").unwrap();
            p
        };
        let k: KafkaConfig = toml_kafka(&format!(
            "brokers = \"b1:9093,b2:9093\"\ntopic_prefix = \"fp\"\n\
             [tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
             [sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"edge\"\npassword = \"inline-pw\"\n",
            f("ca.pem"),
            f("c.pem"),
            f("k.pem")
        ));
        k.check("kafka", TlsDefault::OnUnlessLoopback).unwrap();
        let c = k.try_client_config(TlsDefault::OnUnlessLoopback).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get(&c, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get(&c, "sasl.username").as_deref(), Some("edge"));
        assert_eq!(get(&c, "sasl.password").as_deref(), Some("inline-pw"));
        assert!(get(&c, "ssl.ca.location").unwrap().ends_with("ca.pem"));
        assert!(get(&c, "ssl.certificate.location")
            .unwrap()
            .ends_with("c.pem"));
        assert!(get(&c, "ssl.key.location").unwrap().ends_with("k.pem"));
        // SCRAM over plaintext: allowed (with a warning), protocol derived.
        let mut plain = k.clone();
        plain.tls = KafkaTls {
            enabled: Some(false),
            ..KafkaTls::default()
        };
        plain.check("kafka", TlsDefault::OnUnlessLoopback).unwrap();
        assert_eq!(
            plain.security_protocol(TlsDefault::OnUnlessLoopback),
            "SASL_PLAINTEXT"
        );
        // Raw properties still win.
        let mut raw = k.clone();
        raw.properties
            .insert("security.protocol".into(), "SSL".into());
        let c = raw.try_client_config(TlsDefault::OnUnlessLoopback).unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("SSL"));
    }

    fn toml_kafka(text: &str) -> KafkaConfig {
        #[derive(Deserialize)]
        struct W {
            kafka: KafkaConfig,
        }
        let nested = text
            .replace("[tls]", "[kafka.tls]")
            .replace("[sasl]", "[kafka.sasl]");
        let w: W = toml_from(&format!("[kafka]\n{nested}"));
        w.kafka
    }

    fn toml_from<T: serde::de::DeserializeOwned>(s: &str) -> T {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(s)).extract().unwrap()
    }

    #[test]
    fn validation_names_the_key() {
        let base = || KafkaConfig {
            brokers: "kafka.example.com:9093".into(),
            ..KafkaConfig::default()
        };
        let err = |k: KafkaConfig| {
            k.check("kafka", TlsDefault::OnUnlessLoopback)
                .unwrap_err()
                .to_string()
        };
        let mut k = base();
        k.tls.cert_file = Some("/etc/hostname".into());
        assert!(err(k).contains("kafka.tls.key_file"));
        let mut k = base();
        k.tls.key_file = Some("/etc/hostname".into());
        assert!(err(k).contains("kafka.tls.cert_file"));
        let mut k = base();
        k.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let e = err(k);
        assert!(
            e.contains("kafka.tls.ca_file") && e.contains("/nonexistent"),
            "{e}"
        );
        let mut k = base();
        k.tls.enabled = Some(false);
        k.tls.ca_file = Some("/etc/hostname".into());
        assert!(err(k).contains("kafka.tls.ca_file"));
        let mut k = base();
        k.tls.enabled = Some(false);
        k.sasl = Some(KafkaSasl {
            mechanism: SaslMechanism::Plain,
            username: "u".into(),
            password: "p".into(),
        });
        assert!(err(k).contains("kafka.sasl.mechanism"));
        let mut k = base();
        k.sasl = Some(KafkaSasl {
            mechanism: SaslMechanism::ScramSha256,
            username: "u".into(),
            password: "env:FP_TEST_SURELY_UNSET_PW".into(),
        });
        let e = err(k);
        assert!(
            e.contains("kafka.sasl.password") && e.contains("FP_TEST_SURELY_UNSET_PW"),
            "{e}"
        );
        let mut k = base();
        k.brokers = " ".into();
        assert!(err(k).contains("kafka.brokers"));
        // Unknown keys and mechanisms are named by serde.
        use figment::providers::{Format, Toml};
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct W {
            kafka: KafkaConfig,
        }
        let e = figment::Figment::from(Toml::string(
            "[kafka]\nbrokers = \"b:1\"\ntopic_prefix = \"p\"\n[kafka.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"p\"\n",
        ))
        .extract::<W>()
        .unwrap_err()
        .to_string();
        assert!(e.contains("GSSAPI") || e.contains("mechanism"), "{e}");
        let e = figment::Figment::from(Toml::string(
            "[kafka]\nbrokers = \"b:1\"\ntopic_prefix = \"p\"\n[kafka.tls]\nverify = false\n",
        ))
        .extract::<W>()
        .unwrap_err()
        .to_string();
        assert!(e.contains("verify"), "{e}");
    }
}
