//! The Avro contract in `schemas/`, compiled into the binary.
//!
//! Each record type has one `.avsc` file, one Kafka topic and one lake table.
//! The schemas are parsed once; their Rabin (CRC-64-AVRO) fingerprints are the
//! 8 bytes after the `C3 01` magic of single-object encoding, so a reader picks
//! the schema from the message itself, without a registry.

use std::sync::OnceLock;

use apache_avro::{rabin::Rabin, Schema};

/// One record type of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// `DeviceHeartbeat`: the device answered a poll.
    DeviceHeartbeat,
    /// `DeviceStatus`: identity, state, supplies and trays.
    DeviceStatus,
    /// `UsageCounters`: cumulative marker counters.
    UsageCounters,
    /// `AlertEvent`: prtAlertTable row opened or cleared.
    AlertEvent,
    /// `JobRecord`: job metadata, 2D or 3D.
    JobRecord,
    /// `ConnectorHeartbeat`: the edge connector's own health.
    ConnectorHeartbeat,
    /// `MaintenanceAlert`: emitted by the alerter.
    MaintenanceAlert,
}

/// A parsed schema with what the codec needs to find it again.
#[derive(Debug)]
pub struct CompiledSchema {
    /// The record type it describes.
    pub record_type: RecordType,
    /// The parsed schema.
    pub schema: Schema,
    /// CRC-64-AVRO fingerprint of the canonical form, little-endian.
    pub fingerprint: [u8; 8],
    /// The `.avsc` text as shipped.
    pub source: &'static str,
}

impl RecordType {
    /// Every record type, in a stable order.
    pub const ALL: [RecordType; 7] = [
        RecordType::DeviceHeartbeat,
        RecordType::DeviceStatus,
        RecordType::UsageCounters,
        RecordType::AlertEvent,
        RecordType::JobRecord,
        RecordType::ConnectorHeartbeat,
        RecordType::MaintenanceAlert,
    ];

    /// Snake-case name: the `.avsc` file stem, the lake table, the topic suffix.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::DeviceHeartbeat => "device_heartbeat",
            RecordType::DeviceStatus => "device_status",
            RecordType::UsageCounters => "usage_counters",
            RecordType::AlertEvent => "alert_event",
            RecordType::JobRecord => "job_record",
            RecordType::ConnectorHeartbeat => "connector_heartbeat",
            RecordType::MaintenanceAlert => "maintenance_alert",
        }
    }

    /// Look a record type up by [`RecordType::name`].
    pub fn from_name(name: &str) -> Option<RecordType> {
        RecordType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The `.avsc` text.
    pub fn source(self) -> &'static str {
        match self {
            RecordType::DeviceHeartbeat => include_str!("../../../schemas/device_heartbeat.avsc"),
            RecordType::DeviceStatus => include_str!("../../../schemas/device_status.avsc"),
            RecordType::UsageCounters => include_str!("../../../schemas/usage_counters.avsc"),
            RecordType::AlertEvent => include_str!("../../../schemas/alert_event.avsc"),
            RecordType::JobRecord => include_str!("../../../schemas/job_record.avsc"),
            RecordType::ConnectorHeartbeat => {
                include_str!("../../../schemas/connector_heartbeat.avsc")
            }
            RecordType::MaintenanceAlert => include_str!("../../../schemas/maintenance_alert.avsc"),
        }
    }

    /// The compiled schema (parsed on first use).
    pub fn compiled(self) -> &'static CompiledSchema {
        &all_compiled()[self as usize]
    }

    /// The parsed schema.
    pub fn schema(self) -> &'static Schema {
        &self.compiled().schema
    }

    /// Find the record type whose fingerprint is `fp`: the current schema or
    /// any released version of it (see [`writer_schema`]).
    pub fn from_fingerprint(fp: &[u8]) -> Option<RecordType> {
        all_compiled()
            .iter()
            .find(|c| c.fingerprint == fp)
            .map(|c| c.record_type)
            .or_else(|| writer_schema(fp).map(|w| w.record_type))
    }

    /// Every released version of this record type, oldest first.
    pub fn versions(self) -> impl Iterator<Item = &'static WriterSchema> {
        released_versions()
            .iter()
            .filter(move |w| w.record_type == self)
    }
}

/// A released version of a record type's schema, as a writer may have used it.
///
/// Records on Kafka, in Firehose objects and in edge buffers outlive the binary
/// that wrote them. The reader keeps every released version
/// (`schemas/history/<type>/v<N>.avsc`), finds the writer's by the fingerprint
/// in the message, and resolves the datum to the current schema, so an old
/// edge and a new processor (or a replay of old data) agree on one table
/// layout: fields added since are filled with their defaults.
#[derive(Debug)]
pub struct WriterSchema {
    /// The record type.
    pub record_type: RecordType,
    /// `N` of `v<N>.avsc`.
    pub version: u32,
    /// The parsed schema.
    pub schema: Schema,
    /// CRC-64-AVRO fingerprint, as in single-object encoding.
    pub fingerprint: [u8; 8],
    /// Whether this version is the current `schemas/<type>.avsc`.
    pub is_current: bool,
}

mod history {
    include!(concat!(env!("OUT_DIR"), "/schema_history.rs"));
}

/// Every released schema version, in (record type, version) order.
pub fn released_versions() -> &'static [WriterSchema] {
    static VERSIONS: OnceLock<Vec<WriterSchema>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        let mut out: Vec<WriterSchema> = history::HISTORY
            .iter()
            .filter_map(|&(name, version, source)| {
                // Like the current schemas, the history is part of the binary
                // and checked by `tests/schema_compat.rs`; a bad file there is
                // a build defect.
                let record_type = RecordType::from_name(name)?;
                let schema = Schema::parse_str(source).unwrap_or_else(|e| {
                    panic!("schemas/history/{name}/v{version}.avsc is invalid: {e}")
                });
                let fp = fingerprint(&schema);
                let mut fingerprint = [0u8; 8];
                fingerprint.copy_from_slice(&fp.bytes[..8]);
                let is_current = record_type.compiled().fingerprint == fingerprint;
                Some(WriterSchema {
                    record_type,
                    version,
                    schema,
                    fingerprint,
                    is_current,
                })
            })
            .collect();
        out.sort_by_key(|w| (w.record_type, w.version));
        out
    })
}

/// The released schema version whose fingerprint is `fp`.
pub fn writer_schema(fp: &[u8]) -> Option<&'static WriterSchema> {
    released_versions().iter().find(|w| w.fingerprint == fp)
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn all_compiled() -> &'static [CompiledSchema] {
    static COMPILED: OnceLock<Vec<CompiledSchema>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        RecordType::ALL
            .iter()
            .map(|&t| {
                // The schemas are part of the binary and covered by tests; a
                // parse failure here is a build defect, not an input error.
                let schema = Schema::parse_str(t.source())
                    .unwrap_or_else(|e| panic!("schemas/{}.avsc is invalid: {e}", t.name()));
                let fp = fingerprint(&schema);
                let mut fingerprint = [0u8; 8];
                fingerprint.copy_from_slice(&fp.bytes[..8]);
                CompiledSchema {
                    record_type: t,
                    schema,
                    fingerprint,
                    source: t.source(),
                }
            })
            .collect()
    })
}

/// CRC-64-AVRO fingerprint of the Parsing Canonical Form, as other Avro
/// libraries compute it.
///
/// apache-avro 0.21 writes a logical type's base as `{"type":"string"}` in its
/// canonical form, where the specification (and Java, fastavro) write
/// `"string"`, so its own fingerprint differs from everyone else's. Parsing that
/// canonical form again drops the logical types, and the re-parsed schema's
/// fingerprint is the standard one (checked against fastavro in
/// `tests/fastavro_interop.rs`).
fn fingerprint(schema: &Schema) -> apache_avro::schema::SchemaFingerprint {
    match Schema::parse_str(&schema.canonical_form()) {
        Ok(plain) => plain.fingerprint::<Rabin>(),
        Err(_) => schema.fingerprint::<Rabin>(),
    }
}

/// What the processor does with a field, from its `fleetpulse.privacy` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivacyAction {
    /// Never written anywhere past the processor.
    Drop,
    /// Replaced by a keyed HMAC-SHA256 pseudonym; the key id is stored beside it.
    Pseudonymize,
    /// Coarsened: the `fleetpulse.generalize` attribute says how.
    Generalize(Generalization),
}

/// How a `generalize` field is coarsened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generalization {
    /// An IPv4 address becomes its /24 network (`192.0.2.0/24`); anything else becomes null.
    Ipv4Slash24,
    /// A free-text location becomes an ISO country code when one is recognisable, else null.
    Country,
    /// A timestamp is truncated to the hour.
    Hour,
}

/// Attribute name marking a field's privacy treatment.
pub const PRIVACY_ATTR: &str = "fleetpulse.privacy";
/// Attribute name giving the method of a `generalize` field.
pub const GENERALIZE_ATTR: &str = "fleetpulse.generalize";

/// Read the privacy action of a field from its custom attributes.
///
/// Returns `Err` with a message when the attribute is present but not understood,
/// so a typo in a schema fails a test instead of leaking a field.
pub fn privacy_action(
    attrs: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<Option<PrivacyAction>, String> {
    let Some(v) = attrs.get(PRIVACY_ATTR) else {
        return Ok(None);
    };
    match v.as_str() {
        Some("drop") => Ok(Some(PrivacyAction::Drop)),
        Some("pseudonymize") => Ok(Some(PrivacyAction::Pseudonymize)),
        Some("generalize") => {
            let how = attrs.get(GENERALIZE_ATTR).and_then(|v| v.as_str());
            match how {
                Some("ipv4_24") => Ok(Some(PrivacyAction::Generalize(Generalization::Ipv4Slash24))),
                Some("country") => Ok(Some(PrivacyAction::Generalize(Generalization::Country))),
                Some("hour") => Ok(Some(PrivacyAction::Generalize(Generalization::Hour))),
                other => Err(format!("unknown {GENERALIZE_ATTR} value {other:?}")),
            }
        }
        other => Err(format!("unknown {PRIVACY_ATTR} value {other:?}")),
    }
}
