//! `fleetpulse poll`: read one printer once and print what the connector sees.
//!
//! The first thing an operator runs against a new printer: it uses exactly
//! the edge connector's SNMP client and mapping, so what it prints is what
//! would be published (before the processor's anonymisation).

use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct PollArgs {
    /// Printer address, `host` or `host:port` (default port 161).
    target: String,
    /// SNMP v2c community.
    #[arg(long, default_value = "public")]
    community: String,
    /// Print the normalised record as JSON.
    #[arg(long)]
    json: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Retries per request.
    #[arg(long, default_value_t = 1)]
    retries: u32,
}

pub(crate) async fn run(args: PollArgs) -> anyhow::Result<()> {
    let target = fleetpulse_edge::DeviceConfig {
        address: args.target.clone(),
        community: args.community.clone(),
    };
    let mut opts = fleetpulse_edge::SnmpOptions::default();
    opts.timeout = args.timeout;
    opts.retries = args.retries;
    let snap = fleetpulse_edge::poll_device(&target, &opts)
        .await
        .with_context(|| format!("polling {}", args.target))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", fleetpulse_edge::render_text(&snap));
    }
    Ok(())
}
