//! `[buffer]` settings of the edge connector.

use std::path::PathBuf;
use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use serde::{Deserialize, Serialize};

/// When appended records are forced to stable storage.
///
/// What "stored" means after a power loss depends on it; after a process
/// crash (SIGKILL, panic, OOM kill) every appended record survives under
/// every policy, because the write itself completed before `append` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` after every appended batch (one poll of one device),
    /// before `append` returns: a record reported stored survives a power loss.
    Batch,
    /// `fdatasync` every `fsync_interval`: a power loss may lose the records
    /// appended during the last interval. Fewer writes for SD-card gateways.
    Interval,
}

/// The on-disk store-and-forward buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Directory of the segment files and the acknowledgement checkpoint.
    /// One connector per directory: it is locked (`LOCK`) while in use, and
    /// a second connector on it fails at start.
    pub dir: PathBuf,
    /// Upper bound of the buffer's files on disk, in bytes (default 1 GiB).
    /// Compaction needs room for one segment, so at most
    /// `max_bytes - segment_bytes` hold records at rest.
    pub max_bytes: u64,
    /// Size at which a segment file is sealed and a new one started.
    pub segment_bytes: u64,
    /// When appends are made durable (`batch` or `interval`).
    pub fsync: FsyncPolicy,
    /// Period of `fsync = "interval"`.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Upload bandwidth cap in bytes per second for everything the buffer
    /// sends (a backlog replays at this pace); `0` = unlimited.
    pub replay_bytes_per_sec: u64,
    /// Records sent to Kafka but not yet acknowledged, at most.
    pub max_in_flight: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            dir: PathBuf::from("./fleetpulse-data/edge-buffer"),
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            fsync: FsyncPolicy::Batch,
            fsync_interval: Duration::from_secs(1),
            replay_bytes_per_sec: 1 << 20,
            max_in_flight: 5_000,
        }
    }
}

/// Smallest segment: a frame must always fit into an empty segment.
pub(crate) const MIN_SEGMENT_BYTES: u64 = 256 * 1024;

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key: key.into(),
        reason: reason.into(),
    }
}

impl BufferConfig {
    /// Reject contradictions, naming the dotted key (`buffer.…`).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(bad("buffer.dir", "must not be empty"));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(bad(
                "buffer.segment_bytes",
                format!(
                    "must be at least {MIN_SEGMENT_BYTES} (a record of a large printer must fit)"
                ),
            ));
        }
        if self.max_bytes < self.segment_bytes.saturating_mul(4) {
            return Err(bad(
                "buffer.max_bytes",
                format!(
                    "must be at least 4 × buffer.segment_bytes ({}): one segment is reserved for compaction",
                    self.segment_bytes.saturating_mul(4)
                ),
            ));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval.is_zero() {
            return Err(bad(
                "buffer.fsync_interval",
                "must be positive with fsync = \"interval\"",
            ));
        }
        if self.replay_bytes_per_sec != 0 && self.replay_bytes_per_sec < 16 * 1024 {
            return Err(bad(
                "buffer.replay_bytes_per_sec",
                "must be 0 (unlimited) or at least 16384",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(bad("buffer.max_in_flight", "must be at least 1"));
        }
        Ok(())
    }
}
