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

use fleetpulse_core::config::{read_secret, ConfigError, Validate};
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::schema::RecordType;
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
    /// Root of the local lake (`lake.store = "local"`):
    /// `<lake_dir>/table=<t>/date=YYYY-MM-DD[/hour=HH]/part-….parquet`. Also
    /// holds the processor's local state (`_state/`), with either store.
    pub lake_dir: PathBuf,
    /// Roll a file when it reaches about this many bytes of Parquet (target
    /// file size; files close earlier when `lake.buffer_budget_bytes` is hit).
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
    /// `[lake]`: where files go and how they are laid out.
    pub lake: LakeConfig,
}

/// Where lake files are stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A local (or mounted) folder: `lake_dir`.
    #[default]
    Local,
    /// An S3 bucket (or an S3-compatible store): `[lake.s3]`.
    S3,
}

/// Server-side encryption of the objects written to S3.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Sse {
    /// No `x-amz-server-side-encryption` header (the bucket default applies).
    #[default]
    #[serde(rename = "none")]
    None,
    /// SSE-S3.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS, with `sse_kms_key_id` or the account's default KMS key.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// `[lake]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// `"local"` (files under `lake_dir`) or `"s3"` (objects under `[lake.s3]`).
    pub store: StoreKind,
    /// zstd level of the Parquet pages (1..=22).
    pub zstd_level: i32,
    /// Close a row group when its encoded size reaches about this many bytes.
    pub row_group_bytes: u64,
    /// ... or when it holds this many rows.
    pub row_group_rows: usize,
    /// Bound of the memory all open files hold together (buffered rows plus
    /// encoded Parquet not yet stored). When exceeded, the largest open file
    /// is closed early.
    pub buffer_budget_bytes: u64,
    /// Tables partitioned by `hour=HH` below `date=` (high-volume tables).
    pub hourly_tables: Vec<String>,
    /// `[lake.s3]`, used with `store = "s3"`.
    pub s3: S3Config,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            store: StoreKind::Local,
            zstd_level: 3,
            row_group_bytes: 64 * 1024 * 1024,
            row_group_rows: 1024 * 1024,
            buffer_budget_bytes: 512 * 1024 * 1024,
            hourly_tables: vec!["device_heartbeat".into(), "device_status".into()],
            s3: S3Config::default(),
        }
    }
}

/// `[lake.s3]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket name. Required with `lake.store = "s3"`.
    pub bucket: String,
    /// Key prefix of every object (`""`: the bucket root).
    pub prefix: String,
    /// AWS region. Unset: the default chain (`AWS_REGION`, profile, IMDS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override (MinIO, a VPC endpoint, a test server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`), as most
    /// S3-compatible stores need.
    pub force_path_style: bool,
    /// Static access key id (`env:NAME`, `file:/path` or inline), with
    /// `secret_access_key`. Unset: the default credential chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Static secret access key (`env:NAME`, `file:/path` or inline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Server-side encryption: `"none"`, `"AES256"` or `"aws:kms"`.
    pub sse: Sse,
    /// KMS key id or ARN with `sse = "aws:kms"` (unset: the AWS-managed key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
    /// Files larger than this go up by multipart upload, in parts of this
    /// size (at least 5 MiB, S3's minimum part size).
    pub part_size: u64,
    /// Timeout of one API call (all SDK attempts included).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            sse: Sse::None,
            sse_kms_key_id: None,
            part_size: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// S3's minimum part size (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's maximum part size.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

impl LakeConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err(invalid("lake.zstd_level", "must be within 1..=22"));
        }
        if self.row_group_bytes < 1024 * 1024 {
            return Err(invalid("lake.row_group_bytes", "must be at least 1 MiB"));
        }
        if self.row_group_rows < 1024 {
            return Err(invalid("lake.row_group_rows", "must be at least 1024"));
        }
        if self.buffer_budget_bytes < 1024 * 1024 {
            return Err(invalid(
                "lake.buffer_budget_bytes",
                "must be at least 1 MiB",
            ));
        }
        for t in &self.hourly_tables {
            if !RecordType::ALL.iter().any(|r| r.name() == t) {
                return Err(invalid(
                    "lake.hourly_tables",
                    &format!("unknown table {t:?}"),
                ));
            }
        }
        if self.store == StoreKind::S3 {
            self.s3.check()?;
        }
        Ok(())
    }
}

impl S3Config {
    fn check(&self) -> Result<(), ConfigError> {
        if self.bucket.trim().is_empty() {
            return Err(invalid(
                "lake.s3.bucket",
                "required with lake.store = \"s3\"",
            ));
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(invalid("lake.s3.region", "must not be empty when set"));
        }
        if let Some(u) = &self.endpoint_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(invalid(
                    "lake.s3.endpoint_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(a), Some(s)) => {
                read_secret("lake.s3.access_key_id", a)?;
                read_secret("lake.s3.secret_access_key", s)?;
            }
            (Some(_), None) => {
                return Err(invalid(
                    "lake.s3.secret_access_key",
                    "required with access_key_id",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "lake.s3.access_key_id",
                    "required with secret_access_key",
                ))
            }
            (None, None) => {}
        }
        if self.sse_kms_key_id.is_some() && self.sse != Sse::AwsKms {
            return Err(invalid(
                "lake.s3.sse_kms_key_id",
                "only with sse = \"aws:kms\"",
            ));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(invalid("lake.s3.part_size", "must be within 5 MiB..=5 GiB"));
        }
        if self.request_timeout < Duration::from_secs(1) {
            return Err(invalid("lake.s3.request_timeout", "must be at least 1s"));
        }
        Ok(())
    }
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            kafka: KafkaConfig::default(),
            group_id: "fleetpulse-processor".into(),
            lake_dir: PathBuf::from("./fleetpulse-data/lake"),
            roll_bytes: 128 * 1024 * 1024,
            roll_age: Duration::from_secs(15 * 60),
            roll_idle: Duration::from_secs(60),
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
            lake: LakeConfig::default(),
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
        self.lake.check()
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
        assert_eq!(cfg.roll_idle, Duration::from_secs(60));
        assert_eq!(cfg.roll_bytes, 1000);
        assert_eq!(cfg.lake, LakeConfig::default());
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

    #[test]
    fn lake_section_parses_and_contradictions_are_named() {
        let base = "pseudonym_key = \"env:PK\"\n[connector_secrets]\nc = \"env:C\"\n";
        let cfg: ProcessorConfig = from_toml(&format!(
            "{base}[lake]\nstore = \"s3\"\nhourly_tables = [\"device_status\"]\n\
             [lake.s3]\nbucket = \"b\"\nprefix = \"lake\"\nendpoint_url = \"http://127.0.0.1:9\"\n\
             force_path_style = true\nsse = \"aws:kms\"\nsse_kms_key_id = \"alias/x\"\npart_size = 8388608\n"
        ))
        .unwrap();
        assert_eq!(cfg.lake.store, StoreKind::S3);
        assert_eq!(cfg.lake.s3.sse, Sse::AwsKms);
        assert_eq!(cfg.lake.s3.part_size, 8 * 1024 * 1024);
        assert_eq!(cfg.lake.hourly_tables, ["device_status"]);
        for (bad, key) in [
            ("[lake]\nstore = \"s3\"\n", "lake.s3.bucket"),
            (
                "[lake]\nstore = \"s3\"\n[lake.s3]\nbucket = \"b\"\npart_size = 1000\n",
                "lake.s3.part_size",
            ),
            (
                "[lake]\nstore = \"s3\"\n[lake.s3]\nbucket = \"b\"\nsse_kms_key_id = \"k\"\n",
                "lake.s3.sse_kms_key_id",
            ),
            (
                "[lake]\nstore = \"s3\"\n[lake.s3]\nbucket = \"b\"\naccess_key_id = \"a\"\n",
                "lake.s3.secret_access_key",
            ),
            ("[lake]\nhourly_tables = [\"nope\"]\n", "lake.hourly_tables"),
            ("[lake]\nzstd_level = 0\n", "lake.zstd_level"),
        ] {
            let err = from_toml::<ProcessorConfig>(&format!("{base}{bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let err = from_toml::<ProcessorConfig>(&format!("{base}[lake.s3]\nsse = \"aes\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sse") || err.contains("aes"), "{err}");
    }

    #[test]
    fn the_shipped_config_parses_with_the_defaults() {
        let cfg: ProcessorConfig =
            from_toml(include_str!("../../../deploy/processor.toml")).unwrap();
        let defaults = ProcessorConfig::default();
        assert_eq!(cfg.lake, defaults.lake);
        assert_eq!(
            (cfg.roll_bytes, cfg.roll_age, cfg.roll_idle),
            (defaults.roll_bytes, defaults.roll_age, defaults.roll_idle)
        );
    }
}
