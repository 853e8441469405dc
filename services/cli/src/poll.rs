//! `fleetpulse poll`: read one printer once and print what the connector sees.
//!
//! The first thing an operator runs against a new printer: it uses exactly
//! the edge connector's SNMP client and mapping, so what it prints is what
//! would be published (before the processor's anonymisation). An
//! `ipp://host[:port]/path` target is polled with IPP Get-Printer-Attributes
//! instead, through the same mapping to the same snapshot.

use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct PollArgs {
    /// Printer address, `host` or `host:port` (default port 161), or an
    /// `ipp://host[:port]/path` URL to poll over IPP.
    target: String,
    /// SNMP v2c community.
    #[arg(long, default_value = "public")]
    community: String,
    /// Print the normalised record as JSON.
    #[arg(long)]
    json: bool,
    /// Per-request timeout (IPP: the whole exchange).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Retries per request.
    #[arg(long, default_value_t = 1)]
    retries: u32,
}

pub(crate) async fn run(args: PollArgs) -> anyhow::Result<()> {
    let snap = if args.target.contains("://") {
        let target = fleetpulse_edge::IppTarget::parse(&args.target)?;
        let opts = fleetpulse_edge::IppOptions {
            timeout: args.timeout,
            ..Default::default()
        };
        fleetpulse_edge::poll_ipp(&target, &opts)
            .await
            .with_context(|| format!("polling {}", args.target))?
    } else {
        let target =
            fleetpulse_edge::DeviceConfig::new(args.target.clone(), args.community.clone());
        let opts = fleetpulse_edge::SnmpOptions {
            timeout: args.timeout,
            retries: args.retries,
            ..Default::default()
        };
        fleetpulse_edge::poll_device(&target, &opts)
            .await
            .with_context(|| format!("polling {}", args.target))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", fleetpulse_edge::render_text(&snap));
    }
    Ok(())
}
