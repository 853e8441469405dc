//! `ProcessorConfig`: where to read, where to write, how to anonymise.
//!
//! Secrets (the pseudonym key, the connectors' signing secrets) are never
//! written in the config itself in production: values are secret specs
//! (`env:NAME`, `file:/path`, or inline for tests) resolved once at startup by
//! [`fleetpulse_core::config::resolve_secret`], so a missing secret fails the
//! start and names its key instead of failing on the first record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

use crate::benchmark::BenchmarkConfig;
use crate::kpi::KpiConfig;
use crate::ledger::LedgerConfig;
use crate::privacy::keys::KeyRotation;

/// Configuration of the processor (anonymiser and lake writer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// Cluster and topic names.
    pub kafka: KafkaConfig,
    /// Consumer group. Every processor of one lake shares it, so partitions are
    /// split between them and committed offsets mark what the lake holds.
    pub group_id: String,
    /// Root of the Parquet lake: `<lake_dir>/<record_type>/date=YYYY-MM-DD/part-….parquet`.
    pub lake_dir: PathBuf,
    /// Roll a file when its buffered rows reach about this many bytes (estimate
    /// from the JSON size of the rows, so the Parquet file is smaller).
    pub roll_bytes: u64,
    /// Roll a file at the latest this long after its first row was buffered.
    #[serde(with = "humantime_serde")]
    pub roll_age: Duration,
    /// Roll a file when no row was added to it for this long.
    #[serde(with = "humantime_serde")]
    pub roll_idle: Duration,
    /// Key of the pseudonyms, as a secret spec (`env:NAME`, `file:/path`).
    /// Required: there is deliberately no default key.
    pub pseudonym_key: Option<String>,
    /// Id stored beside every pseudonym (`<field>_key_id`), so keys can rotate.
    pub pseudonym_key_id: String,
    /// Signing secret of each connector id, as secret specs. Records of a
    /// connector not listed here go to the dead-letter topic.
    pub connector_secrets: BTreeMap<String, String>,
    /// Largest accepted distance between a record's signing time (`fp-ts`)
    /// and its Kafka timestamp (CreateTime or LogAppendTime; the processor's
    /// clock only when the message has none). Older records are dead-lettered
    /// as `stale_signature`, newer ones as `clock_skew`. The Kafka timestamp is
    /// the reference, not the processor's clock, so a processor working
    /// through a backlog accepts records that were fresh when they were
    /// written. Sequence numbers are remembered for 3 × this span (see
    /// `crate::replay`), so it also sizes the replay memory.
    #[serde(with = "humantime_serde")]
    pub signature_window: Duration,
    /// Also write the alerter's maintenance alerts into the lake.
    pub include_alerts: bool,
    /// Serve `/healthz` and `/metrics` here when set.
    pub metrics_addr: Option<SocketAddr>,
    /// Also read the S3 objects an edge → Firehose delivery stream writes
    /// (`[firehose]`; absent: Kafka only).
    pub firehose: Option<crate::firehose::FirehoseSourceConfig>,
    /// Secret spec of the key that seals dead letters (payload encrypted,
    /// message key pseudonymised; see `seal`). Unset: derived from
    /// `pseudonym_key`, with a warning.
    pub dlq_key: Option<String>,
    /// Id of `dlq_key`, in each sealed dead letter's `fp-sealed` header.
    pub dlq_key_id: String,
    /// Rotation of the lake pseudonym key: `never` (default; the version is
    /// `pseudonym_key_id`), `monthly`, `quarterly` or `yearly` (the version
    /// becomes `<pseudonym_key_id>@<period>`; pseudonyms change at each
    /// period, so joins across periods break: choose on purpose).
    pub pseudonym_rotation: KeyRotation,
    /// Cross-customer benchmarks (their own key, see `crate::benchmark`).
    pub benchmark: BenchmarkConfig,
    /// Pay-per-use usage ledger (see `crate::ledger`).
    pub ledger: LedgerConfig,
    /// Daily KPI aggregates: watermark and lateness (see `crate::kpi`).
    pub kpi: KpiConfig,
    /// Computing the derived tables while running (see `crate::derived::runner`).
    pub derived: crate::derived::runner::DerivedConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            kafka: KafkaConfig::default(),
            group_id: "fleetpulse-processor".into(),
            lake_dir: PathBuf::from("./fleetpulse-data/lake"),
            roll_bytes: 64 * 1024 * 1024,
            roll_age: Duration::from_secs(60),
            roll_idle: Duration::from_secs(10),
            pseudonym_key: None,
            pseudonym_key_id: "v1".into(),
            connector_secrets: BTreeMap::new(),
            signature_window: Duration::from_secs(300),
            include_alerts: false,
            metrics_addr: None,
            firehose: None,
            dlq_key: None,
            dlq_key_id: "dlq-v1".into(),
            pseudonym_rotation: KeyRotation::Never,
            benchmark: BenchmarkConfig::default(),
            ledger: LedgerConfig::default(),
            kpi: KpiConfig::default(),
            derived: Default::default(),
        }
    }
}

/// Upper bound of `signature_window` (it sizes the replay memory).
const MAX_SIGNATURE_WINDOW: Duration = Duration::from_secs(24 * 3600);

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid(format!("{key}: {reason}"))
}

impl Validate for ProcessorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.pseudonym_key.as_deref() {
            None | Some("") => {
                return Err(invalid(
                    "pseudonym_key",
                    "required (a secret spec such as \"env:FLEETPULSE_PSEUDONYM_KEY\"); \
                     there is no default key",
                ))
            }
            Some(_) => {}
        }
        if self.pseudonym_key_id.trim().is_empty() {
            return Err(invalid("pseudonym_key_id", "must not be empty"));
        }
        if self.connector_secrets.is_empty() {
            return Err(invalid(
                "connector_secrets",
                "required: at least one connector id = secret spec, \
                 otherwise every record would be dead-lettered",
            ));
        }
        if let Some((id, _)) = self.connector_secrets.iter().find(|(_, v)| v.is_empty()) {
            return Err(invalid(
                &format!("connector_secrets.{id}"),
                "empty secret spec",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("group_id", "must not be empty"));
        }
        if self.lake_dir.as_os_str().is_empty() {
            return Err(invalid("lake_dir", "must not be empty"));
        }
        if self.roll_bytes == 0 {
            return Err(invalid("roll_bytes", "must be greater than 0"));
        }
        if self.roll_age.is_zero() {
            return Err(invalid("roll_age", "must be greater than 0"));
        }
        if self.roll_idle.is_zero() {
            return Err(invalid("roll_idle", "must be greater than 0"));
        }
        if self.signature_window.is_zero() {
            return Err(invalid("signature_window", "must be greater than 0"));
        }
        if self.signature_window > MAX_SIGNATURE_WINDOW {
            return Err(invalid(
                "signature_window",
                "must be at most 24h: the replay memory holds every sequence number \
                 signed within 3 x this span",
            ));
        }
        if self.dlq_key_id.trim().is_empty() {
            return Err(invalid("dlq_key_id", "must not be empty"));
        }
        if self.dlq_key.is_some() && self.dlq_key == self.pseudonym_key {
            return Err(invalid(
                "dlq_key",
                "must differ from pseudonym_key: each purpose has its own key",
            ));
        }
        if let Some(fh) = &self.firehose {
            fh.check()?;
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        self.benchmark.validate()?;
        if let Some(spec) = self.benchmark.pseudonym_key.as_deref() {
            if self.pseudonym_key.as_deref() == Some(spec) {
                return Err(invalid(
                    "benchmark.pseudonym_key",
                    "must differ from pseudonym_key: the lake and the cross-tenant \
                     benchmark each need their own key",
                ));
            }
            if self.benchmark.pseudonym_key_id == self.pseudonym_key_id {
                return Err(invalid(
                    "benchmark.pseudonym_key_id",
                    "must differ from pseudonym_key_id, so a row's key version names its purpose",
                ));
            }
        }
        self.ledger.validate("ledger.")?;
        self.kpi.validate()?;
        self.derived.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::config::from_toml;

    #[test]
    fn pseudonym_key_is_required_and_named() {
        let err = from_toml::<ProcessorConfig>("[connector_secrets]\nconn-1 = \"env:X\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pseudonym_key: required"), "{err}");
    }

    #[test]
    fn parses_a_full_config_and_rejects_unknown_keys() {
        let cfg: ProcessorConfig = from_toml(
            r#"
            pseudonym_key = "env:PK"
            roll_age = "5s"
            roll_bytes = 1000
            [connector_secrets]
            conn-1 = "env:C1"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.roll_age, Duration::from_secs(5));
        assert_eq!(cfg.roll_idle, Duration::from_secs(10));
        assert_eq!(cfg.roll_bytes, 1000);
        assert_eq!(cfg.group_id, "fleetpulse-processor");
        assert_eq!(cfg.signature_window, Duration::from_secs(300));
        assert!(!cfg.include_alerts);

        let err = from_toml::<ProcessorConfig>(
            "pseudonym_key = \"env:PK\"\nroll_byts = 3\n[connector_secrets]\nc = \"env:C\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("roll_byts"), "{err}");

        let err = from_toml::<ProcessorConfig>(
            "pseudonym_key = \"env:PK\"\nroll_bytes = 0\n[connector_secrets]\nc = \"env:C\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("roll_bytes"), "{err}");

        let base = "pseudonym_key = \"env:PK\"\n[connector_secrets]\nc = \"env:C\"\n";
        let cfg: ProcessorConfig =
            from_toml(&format!("signature_window = \"90s\"\n{base}")).unwrap();
        assert_eq!(cfg.signature_window, Duration::from_secs(90));
        for bad in ["0s", "2d"] {
            let err =
                from_toml::<ProcessorConfig>(&format!("signature_window = \"{bad}\"\n{base}"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("signature_window"), "{bad}: {err}");
        }
    }

    #[test]
    fn keys_per_purpose_must_differ_and_errors_name_the_key() {
        let base = "pseudonym_key = \"env:PK\"\n[connector_secrets]\nc = \"env:C\"\n";
        let cfg: ProcessorConfig = from_toml(&format!(
            "pseudonym_rotation = \"never\"\n{base}[benchmark]\npseudonym_key = \"env:BK\"\n\
             min_tenants = 7\n[ledger]\nperiod = \"quarterly\"\n[kpi]\nallowed_lateness = \"2h\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.benchmark.min_tenants, 7);
        assert_eq!(cfg.benchmark.pseudonym_rotation, KeyRotation::Monthly);
        assert_eq!(cfg.ledger.period, crate::ledger::ContractPeriod::Quarterly);
        assert_eq!(cfg.kpi.allowed_lateness, Duration::from_secs(7200));
        for (extra, key) in [
            ("pseudonym_key = \"env:PK\"\n", "benchmark.pseudonym_key:"),
            (
                "pseudonym_key = \"env:BK\"\npseudonym_key_id = \"v1\"\n",
                "benchmark.pseudonym_key_id",
            ),
            (
                "pseudonym_key = \"env:BK\"\npseudonym_rotation = \"never\"\n",
                "benchmark.pseudonym_rotation",
            ),
            ("min_tenants = 1\n", "benchmark.min_tenants"),
        ] {
            let err = from_toml::<ProcessorConfig>(&format!("{base}[benchmark]\n{extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let err = from_toml::<ProcessorConfig>(&format!("{base}[ledger]\nmax_delta = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ledger.max_delta"), "{err}");
    }
}
