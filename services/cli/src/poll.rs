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
//!
//! SNMPv3 takes the same settings as a `[[devices]]` entry of the edge
//! config (`--user`, `--auth-password env:NAME`, ...), checked by the same
//! validation, so a working `fleetpulse poll` line translates 1:1 to config.

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
    /// SNMP v1/v2c community.
    #[arg(long, default_value = "public")]
    community: String,
    /// SNMP version: `v1`, `v2c` (default), or `v3` (default when `--user` is given).
    #[arg(long, value_parser = parse_enum::<fleetpulse_edge::SnmpVersion>)]
    snmp_version: Option<fleetpulse_edge::SnmpVersion>,
    /// SNMPv3 user name.
    #[arg(long)]
    user: Option<String>,
    /// SNMPv3 security level: `noAuthNoPriv`, `authNoPriv` or `authPriv`
    /// (default: the highest the given passwords allow).
    #[arg(long, value_parser = parse_enum::<fleetpulse_edge::SecurityLevel>)]
    security_level: Option<fleetpulse_edge::SecurityLevel>,
    /// SNMPv3 authentication protocol: `md5`, `sha1`, `sha224`, `sha256` (default), `sha384`, `sha512`.
    #[arg(long, value_parser = parse_enum::<fleetpulse_edge::AuthProtocol>)]
    auth_protocol: Option<fleetpulse_edge::AuthProtocol>,
    /// SNMPv3 authentication password: `env:NAME`, `file:/path`, or inline
    /// (inline shows in the process list; prefer `env:`).
    #[arg(long)]
    auth_password: Option<String>,
    /// SNMPv3 privacy protocol: `aes128` (default).
    #[arg(long, value_parser = parse_enum::<fleetpulse_edge::PrivProtocol>)]
    priv_protocol: Option<fleetpulse_edge::PrivProtocol>,
    /// SNMPv3 privacy password: `env:NAME`, `file:/path`, or inline.
    #[arg(long)]
    priv_password: Option<String>,
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

/// Parse a flag value with the same names the TOML config uses (serde).
fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

impl PollArgs {
    /// The SNMP target these flags describe, validated like a config entry.
    fn snmp_target(&self) -> anyhow::Result<fleetpulse_edge::DeviceConfig> {
        let mut t = fleetpulse_edge::DeviceConfig::new(self.target.clone(), self.community.clone());
        t.version = self.snmp_version;
        t.user = self.user.clone();
        t.security_level = self.security_level;
        t.auth_protocol = self.auth_protocol;
        t.auth_password = self.auth_password.clone();
        t.priv_protocol = self.priv_protocol;
        t.priv_password = self.priv_password.clone();
        // Errors name the setting as `poll.<flag with _>`, e.g. `poll.priv_password`.
        t.credentials()
            .validate("poll", fleetpulse_edge::SnmpVersion::V2c)?;
        Ok(t)
    }

    fn has_snmp_settings(&self) -> bool {
        self.snmp_version.is_some()
            || self.user.is_some()
            || self.security_level.is_some()
            || self.auth_protocol.is_some()
            || self.auth_password.is_some()
            || self.priv_protocol.is_some()
            || self.priv_password.is_some()
    }

    fn has_tls_settings(&self) -> bool {
        self.pin_sha256.is_some() || self.ca_file.is_some()
    }
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
        if args.has_snmp_settings() {
            anyhow::bail!(
                "{}: SNMP flags (--snmp-version, --user, --*-password, ...) do not apply to an https:// URL",
                args.target
            );
        }
        return poll_3d(&args).await;
    }
    if args.has_tls_settings() {
        anyhow::bail!(
            "{}: --pin-sha256 and --ca-file only apply to an https:// 3D printer URL",
            args.target
        );
    }
    let snap = if args.target.contains("://") {
        if args.has_snmp_settings() {
            anyhow::bail!(
                "{}: SNMP flags (--snmp-version, --user, --*-password, ...) do not apply to an IPP URL",
                args.target
            );
        }
        let target = fleetpulse_edge::IppTarget::parse(&args.target)?;
        let opts = fleetpulse_edge::IppOptions {
            timeout: args.timeout,
            ..Default::default()
        };
        fleetpulse_edge::poll_ipp(&target, &opts)
            .await
            .with_context(|| format!("polling {}", args.target))?
    } else {
        let target = args.snmp_target()?;
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
