//! `fleetpulse poll` against a simulated printer, cross-checked with net-snmp.

use std::process::Command;
use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, Proc};

fn snmpget(port: u16, oid: &str) -> Option<String> {
    let out = Command::new("snmpget")
        .args([
            "-v2c",
            "-c",
            "public",
            "-Oqv",
            "-t",
            "1",
            "-r",
            "2",
            &format!("127.0.0.1:{port}"),
            oid,
        ])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_matches('"')
            .to_string()
    })
}

#[test]
fn poll_prints_what_net_snmp_reads() {
    if Command::new("snmpget").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have net-snmp (apt-get install snmp)"
        );
        eprintln!("skipped: net-snmp's snmpget is not installed (apt-get install snmp)");
        return;
    }
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = 41000 + (std::process::id() % 1000) as u16 * 2;
    let _sim = Proc::spawn(
        &bin,
        "sim",
        &[
            "sim",
            "--printers",
            "2",
            "--base-port",
            &port.to_string(),
            "--seed",
            "3",
        ],
        &[],
        dir.path(),
    );
    let serial_oid = "1.3.6.1.2.1.43.5.1.1.17.1";
    let start = Instant::now();
    let serial = loop {
        if let Some(s) = snmpget(port + 1, serial_oid) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "simulator did not answer net-snmp"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = Command::new(&bin)
        .args([
            "poll",
            &format!("127.0.0.1:{}", port + 1),
            "--community",
            "public",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("poll --json prints JSON");
    let text = v.to_string();
    assert!(
        text.contains(&serial),
        "poll --json does not show serial {serial}: {text}"
    );
    // The black supply level that net-snmp reads is the one we print (it may move between reads, so compare shapes).
    let level = snmpget(port + 1, "1.3.6.1.2.1.43.11.1.1.9.1.1").expect("supply level");
    assert!(level.parse::<i64>().is_ok(), "net-snmp level {level}");
    assert!(text.contains("supplies"), "{text}");

    let human = Command::new(&bin)
        .args([
            "poll",
            &format!("127.0.0.1:{}", port + 1),
            "--community",
            "public",
        ])
        .output()
        .unwrap();
    assert!(human.status.success());
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains(&serial), "{human}");

    // A wrong community: a clear error, no panic.
    let bad = Command::new(&bin)
        .args([
            "poll",
            &format!("127.0.0.1:{}", port + 1),
            "--community",
            "wrong",
            "--timeout",
            "300ms",
            "--retries",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.to_lowercase().contains("timed out") || err.to_lowercase().contains("timeout"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// net-snmp's agent with one SNMPv3 user, killed on drop.
struct Snmpd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Snmpd {
    fn start() -> Snmpd {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("snmpd.conf");
        std::fs::write(
            &conf,
            "createUser fpuser SHA-256 \"authpass123\" AES \"privpass123\"\n\
             rouser fpuser authpriv\n\
             sysName fp-v3-agent\n",
        )
        .unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/sbin/snmpd")
            .env("MIBS", "")
            .env("MIBDIRS", "/nonexistent")
            .arg("-f")
            .arg("-Lf")
            .arg(dir.path().join("snmpd.log"))
            .arg("-C")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("snmpd.pid"))
            .arg(format!("--persistentDir={}", dir.path().display()))
            .args(["-I", "-smux"])
            .arg(format!("udp:127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn snmpd");
        Snmpd {
            child,
            port,
            _dir: dir,
        }
    }

    /// sysName/sysDescr read by net-snmp's own SNMPv3 client.
    fn netsnmp_get(&self, oid: &str) -> Option<String> {
        let out = Command::new("snmpget")
            .args([
                "-v3",
                "-l",
                "authPriv",
                "-u",
                "fpuser",
                "-a",
                "SHA-256",
                "-A",
                "authpass123",
                "-x",
                "AES",
                "-X",
                "privpass123",
                "-Oqv",
                "-t",
                "1",
                "-r",
                "1",
            ])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(oid)
            .env("MIBS", "")
            .output()
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_matches('"')
                .to_string()
        })
    }
}

#[test]
fn poll_snmpv3_flags_against_net_snmp_agent() {
    let have_tools = std::path::Path::new("/usr/sbin/snmpd").exists()
        && Command::new("snmpget").arg("--version").output().is_ok();
    if !have_tools {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have net-snmp (apt-get install snmp snmpd)"
        );
        eprintln!("skipped: net-snmp's snmpd/snmpget are not installed");
        return;
    }
    let bin = fleetpulse_bin();
    let agent = Snmpd::start();
    let start = Instant::now();
    let sys_name = loop {
        if let Some(s) = agent.netsnmp_get("1.3.6.1.2.1.1.5.0") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "snmpd did not answer net-snmp's snmpget"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sys_name, "fp-v3-agent");
    let addr = format!("127.0.0.1:{}", agent.port);
    let v3 = |auth: &str, extra: &[&str]| {
        Command::new(&bin)
            .args(["poll", &addr, "--snmp-version", "v3", "--user", "fpuser"])
            .args([
                "--auth-protocol",
                "sha256",
                "--auth-password",
                "env:FP_POLL_AUTH",
            ])
            .args(extra)
            .args(["--timeout", "500ms", "--retries", "0"])
            .env("FP_POLL_AUTH", auth)
            .env("FP_POLL_PRIV", "privpass123")
            .output()
            .unwrap()
    };

    let out = v3(
        "authpass123",
        &[
            "--priv-password",
            "env:FP_POLL_PRIV",
            "--security-level",
            "authPriv",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("poll --json prints JSON");
    assert_eq!(v["identity"]["sys_name"], "fp-v3-agent", "{v}");
    assert_eq!(v["protocol"], "snmp", "{v}");
    let descr = agent.netsnmp_get("1.3.6.1.2.1.1.1.0").expect("sysDescr");
    assert_eq!(v["identity"]["sys_descr"], descr.as_str(), "{v}");

    // A wrong auth password: the agent's report, not a timeout.
    let bad = v3("wrongpass123", &["--priv-password", "env:FP_POLL_PRIV"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // authPriv without a privacy password: refused before any packet, naming the setting.
    let incomplete = v3("authpass123", &["--security-level", "authPriv"]);
    assert!(!incomplete.status.success());
    let err = String::from_utf8_lossy(&incomplete.stderr);
    assert!(err.contains("priv_password"), "{err}");

    // SNMP flags on an IPP URL are a usage error.
    let ipp = Command::new(&bin)
        .args(["poll", "ipp://127.0.0.1:9/ipp/print", "--user", "fpuser"])
        .output()
        .unwrap();
    assert!(!ipp.status.success());
    assert!(
        String::from_utf8_lossy(&ipp.stderr).contains("IPP URL"),
        "{}",
        String::from_utf8_lossy(&ipp.stderr)
    );
}

/// `fleetpulse sim --printers-3d 1` serves a 3D printer over HTTPS;
/// `fleetpulse poll https://…` reads it with the certificate pinned or
/// trusted as a CA, refuses a wrong pin and unverified TLS, and rejects
/// flags of the other protocol.
#[test]
fn poll_https_3d_printer_from_sim() {
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cert = dir.path().join("sim-3d.pem");
    let sim = Proc::spawn(
        &bin,
        "sim-3d",
        &[
            "sim",
            "--printers",
            "0",
            "--printers-3d",
            "1",
            "--seed",
            "5",
        ],
        &[
            ("FLEETPULSE__HTTPS_BASE_PORT", &port.to_string()),
            ("FLEETPULSE__TLS_CERT_OUT", &cert.display().to_string()),
        ],
        dir.path(),
    );
    // The simulator logs the certificate's pin once it listens.
    let start = Instant::now();
    let pin = loop {
        let log = strip_ansi(&sim.log());
        let found = log.split("pin_sha256=").nth(1).map(|rest| {
            rest.trim_start_matches('"')
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        });
        if let Some(p) = found.filter(|p| p.len() == 64) {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "simulator did not start: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(cert.exists(), "tls_cert_out not written");
    let url = format!("https://127.0.0.1:{port}/");
    let poll = |extra: &[&str]| {
        let out = Command::new(&bin)
            .args(["poll", &url, "--timeout", "5s"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = poll(&["--pin-sha256", &pin, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("poll --json prints JSON");
    let serial = v["device"]["device_id"]
        .as_str()
        .expect("device id")
        .to_string();
    assert!(!serial.is_empty() && !serial.starts_with("addr:"), "{v}");
    assert!(v["jobs"].as_array().is_some_and(|j| !j.is_empty()), "{v}");
    assert!(!out.contains("PRIVATE-"), "a job or part name was shown");

    let (ok, out, err) = poll(&["--ca-file", &cert.display().to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains(&serial), "{out}");

    let (ok, _, err) = poll(&["--pin-sha256", &"00".repeat(32)]);
    assert!(!ok);
    assert!(err.contains("PinMismatch"), "{err}");
    let (ok, _, err) = poll(&[]);
    assert!(!ok);
    assert!(err.contains("--pin-sha256 or --ca-file"), "{err}");
    let (ok, _, err) = poll(&["--pin-sha256", &pin, "--user", "fpuser"]);
    assert!(!ok);
    assert!(err.contains("do not apply to an https:// URL"), "{err}");
    let snmp = Command::new(&bin)
        .args(["poll", "127.0.0.1:1", "--pin-sha256", &pin])
        .output()
        .unwrap();
    assert!(!snmp.status.success());
    assert!(
        String::from_utf8_lossy(&snmp.stderr).contains("only apply to an https://"),
        "{}",
        String::from_utf8_lossy(&snmp.stderr)
    );
}

/// The log without terminal colour codes (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
