//! fleetpulse processor: the anonymiser and lake writer.
//!
//! It reads the raw topics the edge connectors publish, trusts only records
//! whose signature verifies with the sending connector's key, strips or
//! coarsens every field the Avro contract marks as personal, and writes the
//! rest as zstd Parquet files under `table=<t>/date=YYYY-MM-DD[/hour=HH]/`
//! in a local folder or an S3 bucket.
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
//! - **Exactly-once into plain files, local or on S3.** Offsets are
//!   committed only after a file is durable under a name derived from its
//!   topic, partition and first offset, created only if absent (`hard_link`
//!   locally, `If-None-Match: *` on S3; [`store`]); after a crash the replay
//!   meets the file already published and skips what it holds ([`lake`]).
//!   No transaction log, no external store: a restart (even after SIGKILL)
//!   neither duplicates nor loses rows, and readers see whole files only.
//! - **Bounded memory whatever the partition count.** Files are encoded as
//!   they fill, and all open files together stay within
//!   `lake.buffer_budget_bytes`: past it, the largest is published early.
//! - **Derived tables ride on the same commits.** Every accepted record also
//!   feeds the KPI, ledger and benchmark operators ([`derived::runner`]),
//!   whose state is saved beside the lake before each lake file is published,
//!   so it always covers what the committed offsets cover; re-read records
//!   are applied once, and versions keep growing across restarts.

use std::sync::Arc;

use fleetpulse_core::config::{resolve_secret, ConfigError, Validate};
use fleetpulse_core::{telemetry, Shutdown};

pub mod arrow_schema;
pub mod batch;
pub mod benchmark;
pub mod columnar;
pub mod config;
mod consumer;
pub mod derived;
pub mod firehose;
pub mod kpi;
pub mod lake;
pub mod ledger;
pub mod privacy;
pub mod replay;
pub mod seal;
pub mod store;
pub mod verify;

#[cfg(test)]
mod tests;

pub use config::{LakeConfig, ProcessorConfig, S3Config, Sse, StoreKind};
pub use consumer::CONSUMER_DEFAULTS;
pub use lake::{LakeError, LakeWriter, PartitionDir, Segment};
pub use privacy::{TransformError, Transformer};
pub use replay::SeqWindow;
pub use store::{Store, StoreError};
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
    /// The Firehose source could not read its bucket or checkpoint.
    #[error("firehose source: {0}")]
    Firehose(#[from] firehose::FirehoseError),
    /// The saved state of the derived tables cannot be used.
    #[error(transparent)]
    DerivedState(#[from] derived::runner::StateError),
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
            ProcessorError::Firehose(e) => e.is_retriable(),
            ProcessorError::DerivedState(_) => false,
            ProcessorError::Task(_) => true,
        }
    }
}

/// Run the processor until `shutdown` is cancelled; then flush every buffer
/// durably, commit, and return.
pub async fn run(config: ProcessorConfig, shutdown: Shutdown) -> Result<(), ProcessorError> {
    run_with_stats(config, shutdown, Arc::default()).await
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Rows written (offsets whose file was missing).
    pub rows_written: u64,
    /// Files written.
    pub files_written: u64,
    /// Present files met (their rows were skipped).
    pub files_present: u64,
    /// Records rejected again (the live run dead-lettered them).
    pub rejected: u64,
    /// Records read whose observed date is outside the range.
    pub outside_range: u64,
}

/// `fleetpulse process --replay --from --to`: re-read the raw topics for the
/// observed dates `from..=to` and write the lake files that are missing,
/// idempotently (a second run writes nothing). Joins no consumer group and
/// commits nothing, so it can run beside the live processor. Returns when
/// every partition is read through the high watermark it had at the start.
pub async fn backfill(
    config: ProcessorConfig,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    shutdown: Shutdown,
) -> Result<BackfillReport, ProcessorError> {
    config.validate()?;
    if from > to {
        return Err(ProcessorError::Config(ConfigError::Invalid(format!(
            "--from {from} is after --to {to}"
        ))));
    }
    let (lake_key, _benchmark_key) = privacy::keys::resolve_keys(&config)?;
    let transformer = Arc::new(Transformer::new(lake_key.at(0))?.with_key(lake_key));
    let verifier = verifier_of(&config)?;
    let lake = LakeWriter::from_config(&config).await?;
    let stats: Arc<consumer::Stats> = Arc::default();
    let pipeline = consumer::Pipeline::start_backfill(
        &config,
        verifier,
        transformer,
        lake,
        stats.clone(),
        from,
        to,
    )?;
    let (rejected, outside_range) = pipeline.run_backfill(shutdown).await?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(BackfillReport {
        rows_written: stats.rows_written.load(Relaxed),
        files_written: stats.files_written.load(Relaxed),
        files_present: stats.files_skipped.load(Relaxed),
        rejected,
        outside_range,
    })
}

fn verifier_of(config: &ProcessorConfig) -> Result<Verifier, ProcessorError> {
    let mut secrets = Vec::with_capacity(config.connector_secrets.len());
    for (id, spec) in &config.connector_secrets {
        secrets.push((
            id.as_str(),
            resolve_secret(&format!("connector_secrets.{id}"), spec)?,
        ));
    }
    Ok(
        Verifier::new(secrets.iter().map(|(id, s)| (*id, s.as_slice())))
            .with_window(config.signature_window),
    )
}

pub(crate) async fn run_with_stats(
    config: ProcessorConfig,
    shutdown: Shutdown,
    stats: Arc<consumer::Stats>,
) -> Result<(), ProcessorError> {
    config.validate()?;
    let (lake_key, benchmark_key) = privacy::keys::resolve_keys(&config)?;
    let transformer = Transformer::new(lake_key.at(0))?.with_key(lake_key.clone());
    let verifier = verifier_of(&config)?;

    std::fs::create_dir_all(&config.lake_dir).map_err(|source| {
        LakeError::Store(StoreError::Io {
            op: "create directory",
            path: config.lake_dir.clone(),
            source,
        })
    })?;
    let lake = LakeWriter::from_config(&config).await?;
    if let Store::Local(local) = lake.store() {
        let swept = local.sweep_temp_files(STALE_TEMP_AGE);
        if swept > 0 {
            tracing::info!(files = swept, "removed stale temporary lake files");
        }
    }
    if let Some(addr) = config.metrics_addr {
        telemetry::serve(addr, shutdown.clone())
            .await
            .map_err(ProcessorError::Metrics)?;
    }
    let transformer = Arc::new(transformer);
    let derived = derived::runner::Derived::start(&config, lake_key, benchmark_key)?;
    let firehose = match &config.firehose {
        Some(fh) => Some(
            firehose::FirehoseSource::new(
                fh.clone(),
                config.kafka.clone(),
                verifier.clone(),
                config.signature_window,
                transformer.clone(),
                lake.clone(),
                config.lake_dir.join("_state"),
                stats.clone(),
                seal::from_config(&config)?,
            )
            .await?
            .with_derived(derived.clone()),
        ),
        None => None,
    };
    let mut pipeline = consumer::Pipeline::start(&config, verifier, transformer, lake, stats)?;
    pipeline.derived = derived;
    match firehose {
        // Both sources end together: either failing stops the other.
        Some(fh) => {
            let stop = shutdown.child_token();
            let guard = stop.clone().drop_guard();
            let (a, b) = tokio::join!(
                async {
                    let r = pipeline.run(stop.clone()).await;
                    stop.cancel();
                    r
                },
                async {
                    let r = fh.run(stop.clone()).await;
                    stop.cancel();
                    r
                }
            );
            drop(guard);
            a.and(b)
        }
        None => pipeline.run(shutdown).await,
    }
}
