//! Cooperative shutdown, passed into every `run(config, shutdown)`.
//!
//! A [`Shutdown`] is a cloneable token: the owner (the CLI on Ctrl-C, or a
//! test) cancels it, and every task that holds a clone sees it in `select!`
//! and drains. Services never install signal handlers themselves, so the
//! same `run` works as a separate process, inside `fleetpulse up`, and in tests.

pub use tokio_util::sync::CancellationToken as Shutdown;
