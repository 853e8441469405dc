//! `fleetpulse`: one binary, one subcommand per service.
//!
//! Each subcommand loads its service's config (defaults, then `--config`
//! file, then `FLEETPULSE__…` env vars), installs logging and the Ctrl-C
//! handler, and calls the service's `run(config, shutdown)`. All logic lives
//! in the service crates; this file only wires them to the command line.

mod bench;
mod poll;
mod topics;
mod up;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fleetpulse_core::{config, telemetry, Shutdown};

#[derive(Parser)]
#[command(
    name = "fleetpulse",
    version,
    about = "Printer-fleet telemetry: edge connector, stream processor, alerter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated printer fleet of SNMP agents (and 3D printers over HTTPS).
    Sim {
        /// TOML config file (see deploy/sim.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override `printers`.
        #[arg(long)]
        printers: Option<usize>,
        /// Override `base_port`.
        #[arg(long)]
        base_port: Option<u16>,
        /// Override `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// Override `acceleration`.
        #[arg(long)]
        acceleration: Option<f64>,
        /// Override `printers_3d` (3D printers serving their API over HTTPS).
        #[arg(long)]
        printers_3d: Option<usize>,
    },
    /// Run the edge connector: poll printers, publish signed records.
    Edge {
        /// TOML config file (see deploy/edge.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the stream processor: verify, anonymise, write Parquet.
    Process {
        /// TOML config file (see deploy/processor.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the predictive-maintenance alerter.
    Alert {
        /// TOML config file (see deploy/alerter.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Work with the alert topic.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Poll one printer once and print what the connector sees.
    Poll(poll::PollArgs),
    /// Run everything in one process: embedded broker, simulated fleet, edge, processor, alerter.
    Up(up::UpArgs),
    /// Benchmarks (`fleetpulse bench edge`): throughput, RSS, LAN and WAN bytes.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Manage fleetpulse's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Operator tools for edge configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Sign an edge config and publish it on the connector's control topic
    /// (`<prefix>.control.<connector_id>`); connectors with
    /// `control.enabled = true` apply it like a SIGHUP reload.
    Publish {
        /// The edge config TOML to publish (validated first).
        #[arg(long)]
        config: PathBuf,
        /// Connector the config is for.
        #[arg(long)]
        connector_id: String,
        /// The connector's secret: `env:NAME`, `file:/path` or inline.
        #[arg(long)]
        secret: String,
        /// Bootstrap servers.
        #[arg(long)]
        kafka: String,
        /// Topic prefix.
        #[arg(long, default_value = "fleetpulse")]
        topic_prefix: String,
        /// Control topic (default `<prefix>.control.<connector_id>`).
        #[arg(long)]
        topic: Option<String>,
        /// Version; must exceed the last applied one (default: now in ms).
        #[arg(long)]
        version: Option<u64>,
    },
}

/// On SIGHUP, re-read the edge config file and hand it to the running edge;
/// an unreadable or invalid file is logged and the edge keeps its config.
#[cfg(unix)]
fn reload_on_sighup(
    path: Option<PathBuf>,
    updates: tokio::sync::watch::Sender<fleetpulse_edge::EdgeConfig>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            tracing::info!("SIGHUP: re-reading the configuration");
            match config::load::<fleetpulse_edge::EdgeConfig>(path.as_deref()) {
                Ok(c) => {
                    if updates.send(c).is_err() {
                        return;
                    }
                }
                Err(e) => fleetpulse_edge::reload::file_rejected(&e),
            }
        }
    });
    Ok(())
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Print maintenance alerts as they arrive, one line each.
    Tail {
        /// Bootstrap servers (overrides the config's `kafka.brokers`).
        #[arg(long)]
        kafka: Option<String>,
        /// Topic prefix (overrides the config's `kafka.topic_prefix`).
        #[arg(long)]
        topic_prefix: Option<String>,
        /// Alerter TOML config to take the Kafka settings from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Start from the oldest alert instead of new ones only.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many alerts.
        #[arg(long)]
        max: Option<usize>,
        /// Stop after this long (e.g. `30s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Cancel `shutdown` on Ctrl-C or SIGTERM.
fn cancel_on_signal(shutdown: Shutdown) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install SIGTERM handler");
                    let _ = tokio::signal::ctrl_c().await;
                    shutdown.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_log = match cli.command {
        // `up` draws a progress bar; only problems should interrupt it.
        Command::Up(_) => "warn",
        // The benchmark prints tables; logs would interleave with them.
        Command::Bench { .. } => "warn,rdkafka=error",
        _ => "info,rdkafka=warn",
    };
    telemetry::init_logging(default_log);
    // Each service serves /healthz and /metrics itself on its `metrics_addr`.
    telemetry::init_metrics();
    let shutdown = Shutdown::new();
    match cli.command {
        Command::Sim {
            config: path,
            printers,
            base_port,
            seed,
            acceleration,
            printers_3d,
        } => {
            let mut cfg: fleetpulse_sim::SimConfig = config::load(path.as_deref())?;
            if let Some(v) = printers {
                cfg.printers = v;
            }
            if let Some(v) = base_port {
                cfg.base_port = v;
            }
            if let Some(v) = seed {
                cfg.seed = v;
            }
            if let Some(v) = acceleration {
                cfg.acceleration = v;
            }
            if let Some(v) = printers_3d {
                cfg.printers_3d = v;
            }
            config::Validate::validate(&cfg)?;
            cancel_on_signal(shutdown.clone());
            fleetpulse_sim::run(cfg, shutdown).await?;
        }
        Command::Edge { config: path } => {
            let cfg: fleetpulse_edge::EdgeConfig = config::load(path.as_deref())?;
            cancel_on_signal(shutdown.clone());
            let (tx, rx) = tokio::sync::watch::channel(cfg.clone());
            #[cfg(unix)]
            reload_on_sighup(path, tx, shutdown.clone())?;
            #[cfg(not(unix))]
            drop(tx);
            fleetpulse_edge::run_with_reload(cfg, Some(rx), shutdown).await?;
        }
        Command::Process { config: path } => {
            let cfg: fleetpulse_processor::ProcessorConfig = config::load(path.as_deref())?;
            cancel_on_signal(shutdown.clone());
            fleetpulse_processor::run(cfg, shutdown).await?;
        }
        Command::Alert { config: path } => {
            let cfg: fleetpulse_alerter::AlerterConfig = config::load(path.as_deref())?;
            cancel_on_signal(shutdown.clone());
            fleetpulse_alerter::run(cfg, shutdown).await?;
        }
        Command::Alerts {
            command:
                AlertsCommand::Tail {
                    kafka,
                    topic_prefix,
                    config: path,
                    from_beginning,
                    max,
                    timeout,
                    json,
                },
        } => {
            let mut k = match path {
                Some(p) => config::load::<fleetpulse_alerter::AlerterConfig>(Some(&p))?.kafka,
                None => fleetpulse_core::kafka::KafkaConfig::default(),
            };
            if let Some(b) = kafka {
                k.brokers = b;
            }
            if let Some(p) = topic_prefix {
                k.topic_prefix = p;
            }
            cancel_on_signal(shutdown.clone());
            if let Some(t) = timeout {
                let s = shutdown.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(t).await;
                    s.cancel();
                });
            }
            let mut out = std::io::stdout();
            fleetpulse_alerter::tail(k, from_beginning, max, json, &mut out, shutdown).await?;
        }
        Command::Poll(args) => poll::run(args).await?,
        Command::Up(args) => up::run(args, shutdown).await?,
        Command::Topics { command } => topics::run(command).await?,
        Command::Config {
            command:
                ConfigCommand::Publish {
                    config: path,
                    connector_id,
                    secret,
                    kafka,
                    topic_prefix,
                    topic,
                    version,
                },
        } => {
            let document = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let secret = config::resolve_secret("--secret", &secret)?;
            let k = fleetpulse_core::kafka::KafkaConfig {
                brokers: kafka,
                topic_prefix,
                ..Default::default()
            };
            let version = version.unwrap_or_else(|| fleetpulse_core::now_millis().max(0) as u64);
            let signed = fleetpulse_edge::control::publish_config(
                &k,
                topic.as_deref(),
                &connector_id,
                &secret,
                &document,
                version,
            )
            .await?;
            println!(
                "published config version {} for {connector_id} (key id {})",
                signed.version, signed.key_id
            );
        }
        Command::Bench { command } => bench::run(command).await?,
    }
    Ok(())
}
