//! fleetpulse processor: the anonymiser and lake writer.
//!
//! It reads the raw topics the edge connectors publish, trusts only records
//! whose signature verifies with the sending connector's key, strips or
//! coarsens every field the Avro contract marks as personal, and writes the
//! rest as zstd Parquet files under `<lake_dir>/<table>/date=YYYY-MM-DD/`.
//!
//! Why it is built this way:
//!
//! - **The contract decides what is private.** `fleetpulse.privacy` on a
//!   schema field (drop / pseudonymize / generalize) drives [`privacy`], and
//!   the lake's Arrow schema is derived from the transformed Avro schema
//!   ([`arrow_schema`]), so adding a field needs no code here and cannot leak.
//! - **Nothing is lost or silently ignored.** Anything that fails (bad or
//!   missing signature, unknown connector, not Avro, wrong schema for the
//!   topic, undecodable datum) goes to the dead-letter topic with its original
//!   bytes and headers plus the reason ([`verify`]); the offset is committed
//!   only after the DLQ acknowledged it.
//! - **Only site input needs a signature.** The alerter's topic (read with
//!   `include_alerts`) is produced inside the platform by a service that
//!   holds no connector key, so it is decoded and anonymised without a
//!   signature check; broker ACLs, not signatures, guard who writes it.
//! - **A signature is good once, and only while it is fresh.** The signing
//!   time must be within `signature_window` of the record's Kafka timestamp
//!   (not of the processor's clock, so a processor working through a backlog
//!   rejects nothing that was fresh when written; [`verify`]), and a
//!   connector's sequence number may appear at one position only ([`replay`]):
//!   stale, future-dated and replayed records are dead-lettered with a reason.
//! - **Exactly-once into a plain directory of files.** Offsets are committed
//!   only after a file is fsynced and published under a name derived from its
//!   first offset with create-if-absent semantics; after a crash the replay
//!   meets the file already published and skips what it holds ([`lake`]).
//!   No transaction log, no external store: a restart (even after SIGKILL)
//!   neither duplicates nor loses rows, and readers see whole files only.

use std::sync::Arc;

use fleetpulse_core::config::{resolve_secret, ConfigError, Validate};
use fleetpulse_core::pseudonym::Pseudonymizer;
use fleetpulse_core::{telemetry, Shutdown};

pub mod arrow_schema;
pub mod config;
mod consumer;
pub mod lake;
pub mod privacy;
pub mod replay;
pub mod verify;

#[cfg(test)]
mod tests;

pub use config::ProcessorConfig;
pub use lake::{LakeError, LakeWriter, Segment};
pub use privacy::{TransformError, Transformer};
pub use replay::SeqWindow;
pub use verify::{ReferenceTime, Rejection, Verified, Verifier};

/// Temporary files older than this in the lake are leftovers of a crash.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why the processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The configuration or a secret is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A schema of the contract cannot be represented in the lake.
    #[error("schema: {0}")]
    Schema(#[from] TransformError),
    /// Kafka client setup or subscription failed.
    #[error("kafka ({context}): {source}")]
    Kafka {
        /// What was being done.
        context: &'static str,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// A record could not be delivered to the dead-letter topic; its offset
    /// was not committed, so it is retried after a restart.
    #[error("dead-letter topic: {0}")]
    DeadLetter(rdkafka::error::KafkaError),
    /// A lake file could not be written or read.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl ProcessorError {
    /// Whether running again (after a pause) may succeed without a change.
    pub fn is_retriable(&self) -> bool {
        match self {
            ProcessorError::Config(_) | ProcessorError::Schema(_) => false,
            ProcessorError::Kafka { .. } | ProcessorError::DeadLetter(_) => true,
            ProcessorError::Lake(e) => e.is_retriable(),
            ProcessorError::Metrics(_) => false,
            ProcessorError::Task(_) => true,
        }
    }
}

/// Run the processor until `shutdown` is cancelled; then flush every buffer
/// durably, commit, and return.
pub async fn run(config: ProcessorConfig, shutdown: Shutdown) -> Result<(), ProcessorError> {
    run_with_stats(config, shutdown, Arc::default()).await
}

pub(crate) async fn run_with_stats(
    config: ProcessorConfig,
    shutdown: Shutdown,
    stats: Arc<consumer::Stats>,
) -> Result<(), ProcessorError> {
    config.validate()?;
    let key_spec = config.pseudonym_key.as_deref().unwrap_or_default();
    let key = resolve_secret("pseudonym_key", key_spec)?;
    let transformer = Transformer::new(Pseudonymizer::new(&key, &config.pseudonym_key_id))?;
    let mut secrets = Vec::with_capacity(config.connector_secrets.len());
    for (id, spec) in &config.connector_secrets {
        secrets.push((
            id.as_str(),
            resolve_secret(&format!("connector_secrets.{id}"), spec)?,
        ));
    }
    let verifier = Verifier::new(secrets.iter().map(|(id, s)| (*id, s.as_slice())))
        .with_window(config.signature_window);

    std::fs::create_dir_all(&config.lake_dir).map_err(|source| LakeError::Io {
        op: "create directory",
        path: config.lake_dir.clone(),
        source,
    })?;
    let lake = LakeWriter::new(&config.lake_dir);
    let swept = lake.sweep_temp_files(STALE_TEMP_AGE);
    if swept > 0 {
        tracing::info!(files = swept, "removed stale temporary lake files");
    }
    if let Some(addr) = config.metrics_addr {
        telemetry::serve(addr, shutdown.clone())
            .await
            .map_err(ProcessorError::Metrics)?;
    }
    consumer::Pipeline::start(&config, verifier, Arc::new(transformer), lake, stats)?
        .run(shutdown)
        .await
}
