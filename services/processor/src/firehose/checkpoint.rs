//! Which Firehose objects are already in the lake, kept durably.
//!
//! The checkpoint is written after an object's rows are published (files are
//! created only if absent), so a crash between the two replays the object,
//! which finds its files present and skips them: no duplicate, no gap.
//! Object keys are remembered for `lookback`; older ones are folded into the
//! listing's start-after point, which keeps the file small for years.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The durable state of one (bucket, prefix).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    /// Format version (1).
    pub(crate) version: u32,
    /// Bucket this checkpoint belongs to (checked on load).
    pub(crate) bucket: String,
    /// Prefix this checkpoint belongs to (checked on load).
    pub(crate) prefix: String,
    /// Every key up to and including this one is processed.
    pub(crate) start_after: Option<String>,
    /// Processed keys after `start_after`, with their LastModified (ms).
    pub(crate) done: BTreeMap<String, i64>,
}

/// Why a checkpoint cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error; a retry may help.
    #[error("firehose checkpoint {path}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint of this source; a retry cannot help.
    #[error(
        "firehose checkpoint {path} is unreadable or belongs to another bucket/prefix: {reason}"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl CheckpointError {
    /// Whether trying again may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CheckpointError::Io { .. })
    }
}

impl Checkpoint {
    /// A new, empty checkpoint for `bucket`/`prefix`.
    pub(crate) fn new(bucket: &str, prefix: &str) -> Checkpoint {
        Checkpoint {
            version: 1,
            bucket: bucket.into(),
            prefix: prefix.into(),
            start_after: None,
            done: BTreeMap::new(),
        }
    }

    /// Load from `path`, or start empty when there is no file.
    pub(crate) fn load(
        path: &Path,
        bucket: &str,
        prefix: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checkpoint::new(bucket, prefix))
            }
            Err(source) => {
                return Err(CheckpointError::Io {
                    op: "read",
                    path: path.into(),
                    source,
                })
            }
        };
        let invalid = |reason: String| CheckpointError::Invalid {
            path: path.into(),
            reason,
        };
        let cp: Checkpoint = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if cp.version != 1 {
            return Err(invalid(format!("version {} (expected 1)", cp.version)));
        }
        if cp.bucket != bucket || cp.prefix != prefix {
            return Err(invalid(format!(
                "it is for s3://{}/{}",
                cp.bucket, cp.prefix
            )));
        }
        Ok(cp)
    }

    /// Whether `key` was processed.
    pub(crate) fn is_done(&self, key: &str) -> bool {
        self.start_after.as_deref().is_some_and(|s| key <= s) || self.done.contains_key(key)
    }

    /// Record `key` as processed and forget keys older than `lookback_ms`
    /// before the newest LastModified seen, in key order.
    pub(crate) fn mark(&mut self, key: &str, last_modified_ms: i64, lookback_ms: i64) {
        self.done.insert(key.to_string(), last_modified_ms);
        let newest = self
            .done
            .values()
            .copied()
            .max()
            .unwrap_or(last_modified_ms);
        let cutoff = newest.saturating_sub(lookback_ms);
        // Only a prefix of the key order can be folded: every key up to the
        // new start-after point must be done.
        while let Some((k, &lm)) = self.done.iter().next() {
            if lm >= cutoff {
                break;
            }
            let k = k.clone();
            self.done.remove(&k);
            self.start_after = Some(k);
        }
    }

    /// Write atomically: temporary file, fsync, rename, fsync the directory.
    pub(crate) fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |op: &'static str| {
            move |source| CheckpointError::Io {
                op,
                path: path.into(),
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("create directory"))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::Invalid {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io("create"))?;
        f.write_all(&text).map_err(io("write"))?;
        f.sync_all().map_err(io("fsync"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io("rename"))?;
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().map_err(io("fsync directory"))?;
        }
        Ok(())
    }
}
