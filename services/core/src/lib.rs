//! Shared foundation of every fleetpulse service.
//!
//! It is deliberately small: the wire contract (`schema`, `records`, `codec`),
//! the security primitives every hop must agree on (`signing`, `pseudonym`),
//! and the operational plumbing each service needs in the same shape
//! (`config`, `kafka`, `telemetry`, `shutdown`). Anything that only one
//! service uses lives in that service's crate.

pub mod codec;
pub mod config;
pub mod envelope;
pub mod generalize;
pub mod kafka;
pub mod pseudonym;
pub mod records;
pub mod samples;
pub mod schema;
pub mod shutdown;
pub mod signing;
pub mod telemetry;

pub use shutdown::Shutdown;

/// Version of the fleetpulse binaries, carried in connector heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch, the unit of every `timestamp-millis` field.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new UUID v7 as text: time-ordered, so event ids sort by creation.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
