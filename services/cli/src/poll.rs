//! `fleetpulse poll`: read one printer once and print what the connector sees.
//!
//! The first thing an operator runs against a new printer: it uses exactly
//! the edge connector's SNMP client and mapping, so what it prints is what
//! would be published (before the processor's anonymisation). An
//! `ipp://host[:port]/path` target is polled with IPP Get-Printer-Attributes
//! instead, through the same mapping to the same snapshot. An
//! `https://host[:port]/` target is an industrial 3D printer's JSON API,
//! polled by the edge's 3D driver with `--pin-sha256` or `--ca-file` (one
//! is required: certificates are never accepted unverified); job and part
//! names are not shown, because the connector never keeps them.

use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct PollArgs {
    /// Printer address, `host` or `host:port` (default port 161), an
    /// `ipp://host[:port]/path` URL to poll over IPP, or an
    /// `https://host[:port]/` 3D printer API.
    target: String,
    /// https:// targets: hex SHA-256 of the printer's certificate DER.
    #[arg(long, conflicts_with = "ca_file")]
    pin_sha256: Option<String>,
    /// https:// targets: PEM CA bundle to verify the printer against.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
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

async fn poll_3d(args: &PollArgs) -> anyhow::Result<()> {
    let trust = fleetpulse_edge::TlsTrust {
        ca_file: args.ca_file.clone(),
        pin_sha256: args.pin_sha256.clone(),
    };
    if trust.ca_file.is_none() && trust.pin_sha256.is_none() {
        anyhow::bail!("an https:// target needs --pin-sha256 or --ca-file");
    }
    let client = fleetpulse_edge::Https3dClient::new(&args.target, &trust)?;
    let opts = fleetpulse_edge::Https3dOptions {
        timeout: args.timeout,
        ..Default::default()
    };
    let snap = fleetpulse_edge::poll_3d(&client, &opts, |_| None)
        .await
        .with_context(|| format!("polling {}", args.target))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", fleetpulse_edge::http3d::render_text(&snap));
    }
    Ok(())
}

pub(crate) async fn run(args: PollArgs) -> anyhow::Result<()> {
    if args.target.to_ascii_lowercase().starts_with("https://") {
        return poll_3d(&args).await;
    }
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
