//! SNMPv3 against net-snmp's real agent (`snmpd`), with net-snmp's own
//! `snmpget`/`snmpbulkwalk` as the independent reader.
//!
//! Skips (printing "skipped: snmpd not installed") when snmpd is missing,
//! except under CI (`CI` set), where a missing snmpd fails the test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::credentials::{Security, SnmpCredentials};
use super::usm::{AuthProtocol, SecurityLevel};
use super::{oid, Oid, SnmpClient, SnmpError, SnmpOptions, SnmpSession, SnmpValue, SnmpVersion};

pub(crate) const SNMPD: &str = "/usr/sbin/snmpd";

/// A running snmpd child, killed on drop.
pub(crate) struct Snmpd {
    child: Child,
    pub(crate) addr: std::net::SocketAddr,
    _dir: Arc<tempfile::TempDir>,
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether snmpd is available; when it is not, fail under CI, else say so.
pub(crate) fn snmpd_available() -> bool {
    if Path::new(SNMPD).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("snmpd is not installed (apt-get install snmpd) and CI is set");
    }
    println!("skipped: snmpd not installed");
    false
}

fn free_udp_port(ip: &str) -> u16 {
    let s = std::net::UdpSocket::bind((ip, 0)).expect("bind an ephemeral UDP port");
    s.local_addr().expect("local addr").port()
}

impl Snmpd {
    /// Start snmpd on `ip:<free port>` with our users and `extra` config lines.
    pub(crate) async fn start(ip: &str, extra: &str) -> Snmpd {
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_udp_port(ip);
            let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            match Snmpd::start_at(addr, extra).await {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("snmpd did not start: {last_err}");
    }

    /// Start snmpd on exactly `addr`.
    pub(crate) async fn start_at(addr: std::net::SocketAddr, extra: &str) -> Result<Snmpd, String> {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let conf = dir.path().join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "createUser fpuser SHA-256 \"authpass123\" AES \"privpass123\"\n\
                 createUser fpsha512 SHA-512 \"authpass123\"\n\
                 createUser fpsha224 SHA-224 \"authpass123\" AES \"privpass123\"\n\
                 rouser fpuser authpriv\n\
                 rouser fpsha512 authnopriv\n\
                 rouser fpsha224 authpriv\n\
                 sysName fp-agent\n\
                 sysLocation test-lab\n\
                 sysContact ops@example.com\n\
                 {extra}\n"
            ),
        )
        .expect("write snmpd.conf");
        let child = Command::new(SNMPD)
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
            .arg("-I")
            .arg("-smux")
            .arg(format!("udp:{addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn snmpd");
        let mut snmpd = Snmpd {
            child,
            addr,
            _dir: dir.clone(),
        };
        let mut last_err = String::new();
        // Wait until it answers (v3 engine discovery through our client).
        for _ in 0..100 {
            if let Ok(Some(_)) = snmpd.child.try_wait() {
                break;
            }
            let mut c = client(addr, "fpuser", true, AuthProtocol::Sha256).await;
            match c.get(&[oid(SYS_NAME)]).await {
                Ok(_) => return Ok(snmpd),
                Err(e) => last_err = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("snmpd.log")).unwrap_or_default();
        Err(format!("{last_err}; log: {log}"))
    }
}

pub(crate) const SYS_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
pub(crate) const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];
pub(crate) const SYS_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
pub(crate) const SYS_LOCATION: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 6, 0];

fn opts() -> SnmpOptions {
    SnmpOptions {
        timeout: Duration::from_millis(400),
        retries: 1,
        version: SnmpVersion::V3,
        ..SnmpOptions::default()
    }
}

fn creds(user: &str, privacy: bool, auth: AuthProtocol, pw: &str) -> SnmpCredentials {
    SnmpCredentials {
        user: Some(user.into()),
        auth_protocol: Some(auth),
        auth_password: Some(pw.into()),
        priv_password: privacy.then(|| "privpass123".to_string()),
        ..Default::default()
    }
}

async fn client_with(
    addr: std::net::SocketAddr,
    c: &SnmpCredentials,
    session: SnmpSession,
) -> SnmpClient {
    let security = c.resolve("test", SnmpVersion::V2c).expect("credentials");
    SnmpClient::connect_with(addr, security, &opts(), session)
        .await
        .expect("connect")
}

async fn client(
    addr: std::net::SocketAddr,
    user: &str,
    privacy: bool,
    auth: AuthProtocol,
) -> SnmpClient {
    client_with(
        addr,
        &creds(user, privacy, auth, "authpass123"),
        SnmpSession::new(),
    )
    .await
}

/// Run a net-snmp command-line tool; its stdout lines.
fn netsnmp(tool: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(tool)
        .env("MIBS", "")
        .env("MIBDIRS", "/nonexistent")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn v3_args<'a>(level: &'a str, user: &'a str, auth: &'a str) -> Vec<&'a str> {
    let mut a = vec![
        "-v3",
        "-l",
        level,
        "-u",
        user,
        "-a",
        auth,
        "-A",
        "authpass123",
        "-On",
        "-Oq",
        "-t",
        "2",
    ];
    if level == "authPriv" {
        a.extend(["-x", "AES", "-X", "privpass123"]);
    }
    a
}

fn text(v: &SnmpValue) -> String {
    match v {
        SnmpValue::OctetString(b) => String::from_utf8_lossy(b).into_owned(),
        SnmpValue::ObjectId(o) => format!(".{o}"),
        other => format!("{other:?}"),
    }
}

/// Compare our v3 reads with snmpget/snmpbulkwalk's for one user.
async fn compare_with_netsnmp(snmpd: &Snmpd, user: &str, level: &str, auth: AuthProtocol) {
    let net_auth = match auth {
        AuthProtocol::Sha224 => "SHA-224",
        AuthProtocol::Sha256 => "SHA-256",
        AuthProtocol::Sha512 => "SHA-512",
        _ => unreachable!("not used here"),
    };
    let mut c = client(snmpd.addr, user, level == "authPriv", auth).await;
    let ours = c
        .get(&[
            oid(SYS_DESCR),
            oid(SYS_OBJECT_ID),
            oid(SYS_NAME),
            oid(SYS_LOCATION),
        ])
        .await
        .unwrap_or_else(|e| panic!("{user} {level}: {e}"));
    let target = snmpd.addr.to_string();
    let mut args = v3_args(level, user, net_auth);
    args.extend([
        "-Ov",
        target.as_str(),
        ".1.3.6.1.2.1.1.1.0",
        ".1.3.6.1.2.1.1.2.0",
        ".1.3.6.1.2.1.1.5.0",
        ".1.3.6.1.2.1.1.6.0",
    ]);
    let theirs = netsnmp("snmpget", &args);
    let ours_text: Vec<String> = ours.iter().map(|(_, v)| text(v)).collect();
    let theirs: Vec<String> = theirs
        .iter()
        .map(|l| l.trim_matches('"').to_string())
        .collect();
    assert_eq!(ours_text, theirs, "{user} {level}: GET values differ");
    assert_eq!(ours_text[2], "fp-agent");
    assert_eq!(ours_text[3], "test-lab");

    // A GETBULK walk of the interfaces and system groups: same OIDs, same order.
    for subtree in ["1.3.6.1.2.1.1", "1.3.6.1.2.1.2"] {
        let walked = c
            .walk(&subtree.parse::<Oid>().expect("oid"))
            .await
            .unwrap_or_else(|e| panic!("{user} walk {subtree}: {e}"));
        let mut args = v3_args(level, user, net_auth);
        args.extend([target.as_str(), subtree]);
        let theirs: Vec<String> = netsnmp("snmpbulkwalk", &args)
            .iter()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        let ours: Vec<String> = walked.iter().map(|(o, _)| format!(".{o}")).collect();
        assert!(!ours.is_empty(), "{subtree}: empty walk");
        assert_eq!(ours, theirs, "{user} {level}: walk of {subtree} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_matches_net_snmp() {
    if !snmpd_available() {
        return;
    }
    let snmpd = Snmpd::start("127.0.0.1", "").await;
    compare_with_netsnmp(&snmpd, "fpuser", "authPriv", AuthProtocol::Sha256).await;
    compare_with_netsnmp(&snmpd, "fpsha512", "authNoPriv", AuthProtocol::Sha512).await;
    compare_with_netsnmp(&snmpd, "fpsha224", "authPriv", AuthProtocol::Sha224).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_wrong_credentials_are_typed_errors() {
    if !snmpd_available() {
        return;
    }
    let snmpd = Snmpd::start("127.0.0.1", "").await;
    let get = |c: SnmpCredentials| async move {
        let mut client = client_with(snmpd.addr, &c, SnmpSession::new()).await;
        client.get(&[oid(SYS_NAME)]).await
    };
    let wrong_auth = get(creds("fpuser", true, AuthProtocol::Sha256, "wrongpass123")).await;
    assert!(
        matches!(&wrong_auth, Err(SnmpError::AuthFailed { reason }) if reason.contains("digest")),
        "{wrong_auth:?}"
    );
    let wrong_protocol = get(creds("fpuser", true, AuthProtocol::Sha512, "authpass123")).await;
    assert!(
        matches!(&wrong_protocol, Err(SnmpError::AuthFailed { .. })),
        "{wrong_protocol:?}"
    );
    let mut bad_priv = creds("fpuser", true, AuthProtocol::Sha256, "authpass123");
    bad_priv.priv_password = Some("wrongpriv123".into());
    // net-snmp drops a PDU that decrypts to garbage (no usmStatsDecryptionErrors
    // report); the client notices the agent still answers authNoPriv.
    let wrong_priv = get(bad_priv).await;
    assert!(
        matches!(&wrong_priv, Err(SnmpError::AuthFailed { reason }) if reason.contains("priv_password")),
        "{wrong_priv:?}"
    );
    let unknown = get(creds("nobody", true, AuthProtocol::Sha256, "authpass123")).await;
    assert!(
        matches!(&unknown, Err(SnmpError::UnknownUser { user }) if user == "nobody"),
        "{unknown:?}"
    );
    // fpsha512 may only read at authNoPriv... and asking authPriv of a user
    // without privacy keys is refused by the agent.
    let no_priv_user = get(creds("fpsha512", true, AuthProtocol::Sha512, "authpass123")).await;
    assert!(no_priv_user.is_err(), "{no_priv_user:?}");
    assert!(
        !matches!(no_priv_user, Err(SnmpError::Timeout { .. })),
        "wrong credentials must not look like silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_resyncs_clock_and_rediscovers_engine() {
    if !snmpd_available() {
        return;
    }
    let snmpd = Snmpd::start("127.0.0.1", "").await;
    let session = SnmpSession::new();
    let c = creds("fpuser", true, AuthProtocol::Sha256, "authpass123");
    let mut client = client_with(snmpd.addr, &c, session.clone()).await;
    client.get(&[oid(SYS_NAME)]).await.expect("first get");
    let real_id = {
        let mut s = session.lock();
        let e = s.engine.as_mut().expect("engine discovered");
        // Our idea of the agent's clock is now 10 minutes off: the agent
        // answers notInTimeWindow, we resynchronise and retry.
        e.time = e.time.saturating_add(600);
        e.id.clone()
    };
    let got = client
        .get(&[oid(SYS_NAME)])
        .await
        .expect("get after resync");
    assert_eq!(got[0].1, SnmpValue::OctetString(b"fp-agent".to_vec()));
    let drift = session
        .lock()
        .engine
        .as_ref()
        .map(|e| e.time_now())
        .unwrap_or_default();
    assert!(drift < 600, "clock resynchronised, engine time now {drift}");

    // A stale engine id (device replaced behind the same address): rediscover.
    {
        let mut s = session.lock();
        let e = s.engine.as_mut().expect("engine");
        e.id = b"\x80\x00\x1f\x88\x04stale-engine".to_vec();
        s.keys = None;
    }
    let got = client
        .get(&[oid(SYS_NAME)])
        .await
        .expect("get after rediscovery");
    assert_eq!(got[0].1, SnmpValue::OctetString(b"fp-agent".to_vec()));
    assert_eq!(
        session.lock().engine.as_ref().map(|e| e.id.clone()),
        Some(real_id)
    );
}

#[test]
fn security_level_of_resolved_user() {
    let c = creds("u", false, AuthProtocol::Sha256, "authpass123");
    match c.resolve("x", SnmpVersion::V2c).expect("resolve") {
        Security::Usm(u) => {
            assert_eq!(u.level, SecurityLevel::AuthNoPriv);
            assert!(u.privacy.is_none());
            let _: &Arc<_> = &u;
        }
        other => panic!("{other:?}"),
    }
}
