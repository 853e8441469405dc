//! Pseudonym keys per purpose, with versions and rotation.
//!
//! One key per purpose: the per-tenant lake (`pseudonym_key`) and the
//! cross-tenant benchmark (`benchmark.pseudonym_key`) never share a key, so a
//! benchmark pseudonym cannot be joined with the lake's device ids, and a
//! leaked benchmark table cannot be linked to a tenant's own data.
//!
//! Rotation is calendar based (UTC): the key used at event time `t` is
//! derived from the configured master key and the period holding `t`
//! (`HMAC(master, "rotation|<purpose>|<period>")`), and its version
//! `<key_id>@<period>` (e.g. `b1@2026-03`) is written in every row. With
//! `never` the master key itself is used and the version is the key id, which
//! is what the lake did before rotation existed. Rotating at calendar
//! boundaries keeps a pseudonym stable inside a benchmark month (so a device
//! is counted once per cohort) while making months unlinkable.

use chrono::{DateTime, Datelike, Utc};
use fleetpulse_core::config::{resolve_secret, ConfigError};
use fleetpulse_core::pseudonym::Pseudonymizer;
use serde::{Deserialize, Serialize};

/// How often a purpose's key changes (calendar periods, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyRotation {
    /// One key for ever (version = key id).
    #[default]
    Never,
    /// A new derived key every calendar month.
    Monthly,
    /// Every calendar quarter.
    Quarterly,
    /// Every calendar year.
    Yearly,
}

impl KeyRotation {
    /// Label of the rotation period holding `ms`, e.g. `2026-03`, `2026-Q1`,
    /// `2026`; `None` for `never` or a time out of range.
    pub fn period_label(self, ms: i64) -> Option<String> {
        let d = DateTime::<Utc>::from_timestamp_millis(ms)?;
        match self {
            KeyRotation::Never => None,
            KeyRotation::Monthly => Some(format!("{:04}-{:02}", d.year(), d.month())),
            KeyRotation::Quarterly => Some(format!("{:04}-Q{}", d.year(), d.month0() / 3 + 1)),
            KeyRotation::Yearly => Some(format!("{:04}", d.year())),
        }
    }
}

/// What a key is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Per-tenant lake tables.
    Lake,
    /// Cross-tenant benchmarks.
    Benchmark,
}

impl KeyPurpose {
    /// Stable name, mixed into derived keys.
    pub fn name(self) -> &'static str {
        match self {
            KeyPurpose::Lake => "lake",
            KeyPurpose::Benchmark => "benchmark",
        }
    }
}

/// A master key for one purpose, its id and its rotation.
#[derive(Clone, Debug)]
pub struct PurposeKey {
    purpose: KeyPurpose,
    master: Pseudonymizer,
    rotation: KeyRotation,
}

impl PurposeKey {
    /// A key for `purpose`.
    pub fn new(purpose: KeyPurpose, key: &[u8], key_id: &str, rotation: KeyRotation) -> PurposeKey {
        PurposeKey {
            purpose,
            master: Pseudonymizer::new(key, key_id),
            rotation,
        }
    }

    /// The purpose.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// The rotation.
    pub fn rotation(&self) -> KeyRotation {
        self.rotation
    }

    /// Version of the key in force at `ms`: the key id, plus `@<period>`
    /// when the key rotates.
    pub fn version_at(&self, ms: i64) -> String {
        match self.rotation.period_label(ms) {
            Some(p) => format!("{}@{p}", self.master.key_id()),
            None => self.master.key_id().to_string(),
        }
    }

    /// The pseudonymiser in force at `ms` (its `key_id()` is the version).
    pub fn at(&self, ms: i64) -> Pseudonymizer {
        match self.rotation.period_label(ms) {
            None => self.master.clone(),
            Some(p) => {
                let derived = self
                    .master
                    .pseudonymize("rotation", &format!("{}|{p}", self.purpose.name()));
                Pseudonymizer::new(derived.as_bytes(), &self.version_at(ms))
            }
        }
    }
}

/// A pseudonym made with the benchmark key. Only [`BenchmarkKey`] makes
/// them, so the benchmark operator cannot be fed lake pseudonyms or raw ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BenchmarkPseudonym(String);

impl BenchmarkPseudonym {
    /// The pseudonym text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tenant and device of a record, as the benchmark may see them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BenchmarkIdentity {
    /// Benchmark pseudonym of the tenant.
    pub tenant: BenchmarkPseudonym,
    /// Benchmark pseudonym of the device.
    pub device: BenchmarkPseudonym,
    /// Version of the benchmark key used.
    pub key_version: String,
}

/// The benchmark purpose's key.
#[derive(Clone, Debug)]
pub struct BenchmarkKey(PurposeKey);

impl BenchmarkKey {
    /// Wrap a key made for [`KeyPurpose::Benchmark`].
    pub fn new(key: &[u8], key_id: &str, rotation: KeyRotation) -> BenchmarkKey {
        BenchmarkKey(PurposeKey::new(
            KeyPurpose::Benchmark,
            key,
            key_id,
            rotation,
        ))
    }

    /// Benchmark pseudonyms of a tenant and a device at event time `ms`.
    pub fn identify(&self, ms: i64, tenant_id: &str, device_id: &str) -> BenchmarkIdentity {
        let p = self.0.at(ms);
        BenchmarkIdentity {
            tenant: BenchmarkPseudonym(p.pseudonymize("tenant_id", tenant_id)),
            device: BenchmarkPseudonym(p.pseudonymize("device_id", device_id)),
            key_version: p.key_id().to_string(),
        }
    }
}

/// Resolve the lake key and (when configured) the benchmark key, and check
/// that they differ. Errors name the config key.
pub fn resolve_keys(
    config: &crate::ProcessorConfig,
) -> Result<(PurposeKey, Option<BenchmarkKey>), ConfigError> {
    let lake_spec = config.pseudonym_key.as_deref().unwrap_or_default();
    let lake = resolve_secret("pseudonym_key", lake_spec)?;
    let lake_key = PurposeKey::new(
        KeyPurpose::Lake,
        &lake,
        &config.pseudonym_key_id,
        config.pseudonym_rotation,
    );
    let bench = match config.benchmark.pseudonym_key.as_deref() {
        None | Some("") => None,
        Some(spec) => {
            let key = resolve_secret("benchmark.pseudonym_key", spec)?;
            if key == lake {
                return Err(ConfigError::Invalid(
                    "benchmark.pseudonym_key: resolves to the same key as pseudonym_key; \
                     each purpose needs its own key"
                        .into(),
                ));
            }
            Some(BenchmarkKey::new(
                &key,
                &config.benchmark.pseudonym_key_id,
                config.benchmark.pseudonym_rotation,
            ))
        }
    };
    Ok((lake_key, bench))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAR: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

    #[test]
    fn rotation_changes_pseudonyms_at_period_boundaries_only() {
        let k = BenchmarkKey::new(b"bench-key", "b1", KeyRotation::Monthly);
        let a = k.identify(MAR, "t", "SN1");
        let b = k.identify(MAR + 20 * 86_400_000, "t", "SN1");
        let c = k.identify(MAR - 1, "t", "SN1");
        assert_eq!(a, b);
        assert_eq!(a.key_version, "b1@2026-03");
        assert_eq!(c.key_version, "b1@2026-02");
        assert_ne!(a.device, c.device);
        assert_ne!(a.tenant, c.tenant);
    }

    #[test]
    fn the_lake_writes_the_rotated_key_version_in_the_row() {
        use fleetpulse_core::{codec, samples};
        let key = PurposeKey::new(
            KeyPurpose::Lake,
            b"lake-key-0123456789",
            "v2",
            KeyRotation::Monthly,
        );
        let tr = crate::Transformer::new(Pseudonymizer::new(b"unused-key-0123456", "v0"))
            .unwrap()
            .with_key(key.clone());
        let s = samples::device_status("SERIAL-XYZ-1");
        let (t, v) = codec::decode_value(&codec::encode(&s).unwrap()).unwrap();
        let row = tr.transform(t, &v).unwrap();
        // The sample is observed in November 2025.
        assert_eq!(row["device_id_key_id"], "v2@2025-11");
        assert_eq!(
            row["device_id"],
            key.at(s.observed_at)
                .pseudonymize("device_id", "SERIAL-XYZ-1")
        );
    }

    #[test]
    fn never_rotating_is_the_plain_key() {
        let k = PurposeKey::new(KeyPurpose::Lake, b"lake-key", "v1", KeyRotation::Never);
        let plain = Pseudonymizer::new(b"lake-key", "v1");
        assert_eq!(
            k.at(MAR).pseudonymize("device_id", "SN1"),
            plain.pseudonymize("device_id", "SN1")
        );
        assert_eq!(k.version_at(MAR), "v1");
        assert_eq!(
            KeyRotation::Quarterly.period_label(MAR).as_deref(),
            Some("2026-Q1")
        );
    }

    #[test]
    fn purposes_with_the_same_secret_are_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.key");
        std::fs::write(&file, "same-secret-0123456789\n").unwrap();
        let mut cfg = crate::ProcessorConfig {
            pseudonym_key: Some("same-secret-0123456789".into()),
            ..Default::default()
        };
        // Different specs, same key: caught after resolving.
        cfg.benchmark.pseudonym_key = Some(format!("file:{}", file.display()));
        let err = resolve_keys(&cfg).unwrap_err().to_string();
        assert!(err.contains("benchmark.pseudonym_key"), "{err}");
        cfg.benchmark.pseudonym_key = Some("other-secret-0123456789".into());
        let (lake, bench) = resolve_keys(&cfg).unwrap();
        let bench = bench.unwrap();
        let lake_id = lake.at(MAR).pseudonymize("device_id", "SN1");
        let bench_id = bench.identify(MAR, "t", "SN1");
        assert_ne!(lake_id, bench_id.device.as_str());
        assert_eq!(lake.purpose(), KeyPurpose::Lake);
    }
}
