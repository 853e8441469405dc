//! Checkpoint folding and persistence, object naming, config checks. The
//! S3 path itself is tested end to end against moto in `tests/firehose_lake.rs`.

use super::checkpoint::Checkpoint;
use super::config::FirehoseSourceConfig;
use super::object_topic;

const HOUR: i64 = 3_600_000;

#[test]
fn marked_keys_are_done_and_old_ones_fold_into_start_after() {
    let mut cp = Checkpoint::new("b", "edge/");
    cp.mark("edge/2026/11/21/08/a", 0, 24 * HOUR);
    cp.mark("edge/2026/11/21/09/b", HOUR, 24 * HOUR);
    assert!(cp.is_done("edge/2026/11/21/08/a"));
    assert!(!cp.is_done("edge/2026/11/21/08/c"));
    assert_eq!(cp.start_after, None);
    // A day later the first two fall out of the lookback: folded.
    cp.mark("edge/2026/11/22/10/c", 26 * HOUR, 24 * HOUR);
    assert_eq!(cp.start_after.as_deref(), Some("edge/2026/11/21/09/b"));
    assert_eq!(cp.done.len(), 1);
    assert!(cp.is_done("edge/2026/11/21/08/a"), "below start_after");
    assert!(cp.is_done("edge/2026/11/22/10/c"));
    assert!(!cp.is_done("edge/2026/11/22/10/d"));
}

#[test]
fn folding_stops_at_a_recent_key() {
    // A recent key sorting first blocks folding of older keys after it:
    // start_after may only cover a prefix of done keys.
    let mut cp = Checkpoint::new("b", "p/");
    cp.mark("p/a", 30 * HOUR, 24 * HOUR);
    cp.mark("p/b", 0, 24 * HOUR);
    assert_eq!(cp.start_after, None);
    assert!(cp.is_done("p/b"));
}

#[test]
fn checkpoint_survives_a_restart_and_refuses_another_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("_state/firehose-x.json");
    let mut cp = Checkpoint::load(&path, "b", "p/").unwrap();
    assert!(cp.done.is_empty());
    cp.mark("p/k1", 5, 24 * HOUR);
    cp.save(&path).unwrap();
    let back = Checkpoint::load(&path, "b", "p/").unwrap();
    assert_eq!(back, cp);
    let err = Checkpoint::load(&path, "other", "p/").unwrap_err();
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("s3://b/p/"), "{err}");
    std::fs::write(&path, b"{not json").unwrap();
    assert!(Checkpoint::load(&path, "b", "p/").is_err());
}

#[test]
fn object_topic_is_stable_and_distinct() {
    let a = object_topic(
        "bucket",
        "edge/2026/11/21/08/stream-1-2026-11-21-08-00-00-abc",
    );
    assert_eq!(
        a,
        object_topic(
            "bucket",
            "edge/2026/11/21/08/stream-1-2026-11-21-08-00-00-abc"
        )
    );
    assert_ne!(
        a,
        object_topic(
            "bucket",
            "edge/2026/11/21/08/stream-1-2026-11-21-08-00-00-abd"
        )
    );
    assert_ne!(
        a,
        object_topic(
            "other",
            "edge/2026/11/21/08/stream-1-2026-11-21-08-00-00-abc"
        )
    );
    assert!(a.starts_with("fh-") && a.len() == 19, "{a}");
}

#[test]
fn config_names_the_bad_key() {
    let ok = FirehoseSourceConfig {
        bucket: "b".into(),
        ..FirehoseSourceConfig::default()
    };
    ok.check().unwrap();
    let err = FirehoseSourceConfig::default()
        .check()
        .unwrap_err()
        .to_string();
    assert!(err.contains("firehose.bucket"), "{err}");
    let half = FirehoseSourceConfig {
        access_key_id: Some("env:A".into()),
        ..ok.clone()
    };
    assert!(half
        .check()
        .unwrap_err()
        .to_string()
        .contains("firehose.access_key_id"));
    let short = FirehoseSourceConfig {
        lookback: std::time::Duration::from_secs(60),
        ..ok
    };
    assert!(short
        .check()
        .unwrap_err()
        .to_string()
        .contains("firehose.lookback"));
}
