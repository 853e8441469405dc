//! IPP polling against real peers: CUPS's `ippeveprinter` (checked against
//! `ipptool`, an independent reader), the simulated fleet over SNMP and IPP
//! at the same sim step, and hostile servers.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetpulse_core::records::{HrPrinterStatus, PollProtocol, SupplyType, SupplyUnit};
use fleetpulse_core::Shutdown;
use fleetpulse_edge::ipp::codec::{self, tag, Attribute, Group, Message, Value};
use fleetpulse_edge::mapping::DeviceIdSource;
use fleetpulse_edge::{
    poll_device, poll_ipp, DeviceTarget, IppError, IppOptions, IppTarget, SnmpOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn on_path(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An `ippeveprinter` this test started (killed on drop).
struct Eve(Child);

impl Drop for Eve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The URL of an ippeveprinter: `FLEETPULSE_IPP_URL` (CI starts one), else
/// one started here when the binary exists, else `None` (skip).
async fn ippeveprinter() -> Option<(String, Option<Eve>)> {
    if let Ok(url) = std::env::var("FLEETPULSE_IPP_URL") {
        return Some((url, None));
    }
    if !on_path("ippeveprinter") {
        assert!(
            std::env::var_os("CI").is_none(),
            "no FLEETPULSE_IPP_URL and no ippeveprinter: required under CI (apt-get install cups-ipp-utils)"
        );
        eprintln!(
            "SKIPPED: no FLEETPULSE_IPP_URL and no ippeveprinter (apt-get install cups-ipp-utils)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new("ippeveprinter")
        .args([
            "-p",
            &port.to_string(),
            "-M",
            "Maker",
            "-m",
            "Model",
            "Name",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ippeveprinter starts");
    let eve = Eve(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "ippeveprinter did not listen on {port} (is avahi-daemon running?)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((format!("ipp://127.0.0.1:{port}/ipp/print"), Some(eve)))
}

/// `name (syntax) = values` lines of `ipptool -tv`, values split on commas.
fn ipptool_attributes(url: &str) -> std::collections::HashMap<String, Vec<String>> {
    let out = Command::new("ipptool")
        .args(["-tv", url, "get-printer-attributes.test"])
        .output()
        .expect("ipptool runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ipptool failed:\n{text}");
    text.lines()
        .filter_map(|l| {
            let (lhs, rhs) = l.trim().split_once(" = ")?;
            let (name, _syntax) = lhs.split_once(" (")?;
            Some((
                name.to_string(),
                rhs.split(',').map(str::to_string).collect(),
            ))
        })
        .collect()
}

fn kv(s: &str, key: &str) -> Option<String> {
    s.split(';')
        .find_map(|p| p.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ippeveprinter_supplies_state_and_ipptool_agree() {
    let Some((url, _eve)) = ippeveprinter().await else {
        return;
    };
    let target = IppTarget::parse(&url).unwrap();
    let snap = poll_ipp(&target, &IppOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    println!("{}", fleetpulse_edge::render_text(&snap));
    assert_eq!(snap.protocol, PollProtocol::Ipp);
    assert_eq!(snap.identity.model.as_deref(), Some("Maker Model"));
    assert_eq!(snap.identity.vendor.as_deref(), Some("Maker"));
    assert_eq!(snap.status.hr_printer_status, Some(HrPrinterStatus::Idle));
    let find = |t: SupplyType| {
        snap.supplies
            .iter()
            .find(|s| s.supply_type == t)
            .unwrap_or_else(|| panic!("no {t:?} in {:?}", snap.supplies))
    };
    let waste = find(SupplyType::WasteToner);
    assert_eq!((waste.level, waste.percent), (Some(25), Some(25.0)));
    assert_eq!(waste.unit, SupplyUnit::Percent);
    let black = find(SupplyType::Toner);
    assert_eq!((black.level, black.percent), (Some(75), Some(75.0)));
    assert_eq!(black.description, "Black Toner");

    // The independent reader sees the same printer.
    if !on_path("ipptool") {
        assert!(std::env::var("CI").is_err(), "ipptool missing in CI");
        eprintln!("SKIPPED ipptool cross-check: no ipptool");
        return;
    }
    let theirs = ipptool_attributes(&url);
    let rows = theirs
        .get("printer-supply")
        .expect("ipptool shows printer-supply");
    assert_eq!(rows.len(), snap.supplies.len(), "{rows:?}");
    for row in rows {
        let index: i32 = kv(row, "index").unwrap().parse().unwrap();
        let level: i32 = kv(row, "level").unwrap().parse().unwrap();
        let ours = snap.supplies.iter().find(|s| s.index == index).unwrap();
        assert_eq!(ours.level, Some(level), "supply {index}: {row}");
    }
    // marker-levels, where the printer offers them, match our percentages.
    if let Some(levels) = theirs.get("marker-levels") {
        let ours: Vec<String> = snap
            .supplies
            .iter()
            .map(|s| s.level.unwrap_or(-1).to_string())
            .collect();
        assert_eq!(levels, &ours);
    }
    assert_eq!(theirs["printer-state"], vec!["idle".to_string()]);
    assert_eq!(snap.identity.device_id_source, DeviceIdSource::IppUuid);
    assert_eq!(
        theirs["printer-uuid"],
        vec![snap.identity.device_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_printer_same_supplies_over_snmp_and_ipp() {
    let shutdown = Shutdown::new();
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 8,
            base_port: 0,
            ipp_base_port: Some(0),
            silence_probability: 0.0,
            // Sim time frozen at step 0 for the test: both protocols read one step.
            acceleration: 0.001,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("sim fleet starts");
    let snmp_opts = SnmpOptions {
        timeout: Duration::from_millis(500),
        retries: 2,
        poll_deadline: Duration::from_secs(10),
        ..SnmpOptions::default()
    };
    let mut compared = 0;
    for p in fleet.printers() {
        let snmp = poll_device(
            &DeviceTarget::new(p.addr.to_string(), p.community.clone()),
            &snmp_opts,
        )
        .await
        .unwrap_or_else(|e| panic!("snmp {}: {e}", p.addr));
        let url = format!("ipp://{}/ipp/print", p.ipp_addr.expect("IPP enabled"));
        let ipp = poll_ipp(&IppTarget::parse(&url).unwrap(), &IppOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(snmp.protocol, PollProtocol::Snmp);
        assert_eq!(ipp.protocol, PollProtocol::Ipp);
        assert_eq!(ipp.identity.device_id, p.serial);
        assert_eq!(ipp.identity.device_id, snmp.identity.device_id);
        assert_eq!(ipp.identity.device_id_source, DeviceIdSource::IppDeviceId);
        assert_eq!(ipp.identity.model, snmp.identity.model);
        assert!(!snmp.supplies.is_empty());
        // Same supplies, field by field: index, type, unit, description,
        // raw level/capacity and special values, percent.
        assert_eq!(ipp.supplies, snmp.supplies, "{}", p.serial);
        compared += snmp.supplies.len();
        assert_eq!(ipp.status.detected_errors, snmp.status.detected_errors);
        let expected_state = snmp.status.hr_printer_status.map(|s| match s {
            HrPrinterStatus::Warmup => HrPrinterStatus::Printing,
            s => s,
        });
        if snmp.status.hr_device_status != Some(fleetpulse_core::records::HrDeviceStatus::Down) {
            assert_eq!(ipp.status.hr_printer_status, expected_state);
        } else {
            assert_eq!(ipp.status.hr_printer_status, Some(HrPrinterStatus::Other));
        }
        let keys = |s: &fleetpulse_edge::DeviceSnapshot| {
            s.alerts
                .iter()
                .map(|a| (a.alert_index, a.code_raw, a.code.clone(), a.severity))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&ipp), keys(&snmp));
    }
    println!("compared {compared} supplies over SNMP and IPP");
    shutdown.cancel();
    fleet.join().await;
}

// --- hostile servers ----------------------------------------------------------

#[derive(Clone)]
enum Behaviour {
    /// Read the request, answer these bytes, close.
    Answer(Vec<u8>),
    /// Read the request, never answer.
    Hang,
    /// Answer one byte every 100 ms, forever.
    Dribble,
}

async fn server(b: Behaviour) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
                match b {
                    Behaviour::Answer(bytes) => {
                        let _ = s.write_all(&bytes).await;
                        let _ = s.shutdown().await;
                    }
                    Behaviour::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    Behaviour::Dribble => {
                        for b in b"HTTP/1.1 200 OK\r\nX-Slow: "
                            .iter()
                            .chain(std::iter::repeat(&b'a'))
                        {
                            if s.write_all(&[*b]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn ipp_response(status: u16, request_id: i32, attrs: Vec<Attribute>) -> Vec<u8> {
    codec::encode(&Message {
        version: (2, 0),
        code: status,
        request_id,
        groups: vec![
            Group {
                tag: tag::OPERATION,
                attributes: vec![Attribute::new(
                    "attributes-charset",
                    vec![Value::Str(tag::CHARSET, "utf-8".into())],
                )],
            },
            Group {
                tag: tag::PRINTER,
                attributes: attrs,
            },
        ],
    })
    .unwrap()
}

fn good_attrs() -> Vec<Attribute> {
    vec![
        Attribute::new("printer-state", vec![Value::Enum(3)]),
        Attribute::new(
            "printer-supply",
            vec![Value::OctetString(
                b"index=1;type=toner;unit=percent;maxcapacity=100;level=40;".to_vec(),
            )],
        ),
    ]
}

async fn poll_at(
    addr: SocketAddr,
    timeout: Duration,
) -> (Result<fleetpulse_edge::DeviceSnapshot, IppError>, Duration) {
    let opts = IppOptions {
        timeout,
        max_response_bytes: 256 * 1024,
    };
    let t = IppTarget::parse(&format!("ipp://{addr}/ipp/print")).unwrap();
    let started = Instant::now();
    let r = poll_ipp(&t, &opts).await;
    (r, started.elapsed())
}

#[tokio::test]
async fn hostile_responses_give_typed_errors_in_bounded_time() {
    let timeout = Duration::from_millis(800);
    let bound = timeout + Duration::from_millis(700);
    let good = ipp_response(0, 1, good_attrs());

    // Sanity: the well-formed answer polls fine.
    let (r, _) = poll_at(server(Behaviour::Answer(http_ok(&good))).await, timeout).await;
    assert_eq!(r.unwrap().supplies[0].percent, Some(40.0));

    let mut deep = vec![2, 0, 0, 0, 0, 0, 0, 1, tag::PRINTER];
    for i in 0..40 {
        let name: &[u8] = if i == 0 { b"c" } else { b"" };
        deep.extend_from_slice(&[tag::BEG_COLLECTION, 0, name.len() as u8]);
        deep.extend_from_slice(name);
        deep.extend_from_slice(&[0, 0, tag::MEMBER_ATTR_NAME, 0, 0, 0, 1, b'm']);
    }
    let mut many = vec![2, 0, 0, 0, 0, 0, 0, 1, tag::PRINTER];
    for _ in 0..20_000 {
        many.extend_from_slice(&[tag::INTEGER, 0, 1, b'x', 0, 4, 0, 0, 0, 1]);
    }
    many.push(tag::END);
    let mut bad_len = good[..good.len() - 1].to_vec();
    bad_len.extend_from_slice(&[tag::TEXT, 0, 1, b'x', 0xFF, 0xFF, b'a']);

    type Check = fn(&IppError) -> bool;
    let cases: Vec<(&str, Behaviour, Check)> = vec![
        (
            "truncated body",
            Behaviour::Answer(http_ok(&good[..good.len() / 2])),
            |e| matches!(e, IppError::Decode(codec::DecodeError::Truncated { .. })),
        ),
        (
            "value length past the end",
            Behaviour::Answer(http_ok(&bad_len)),
            |e| matches!(e, IppError::Decode(codec::DecodeError::Truncated { .. })),
        ),
        (
            "wrong version",
            Behaviour::Answer(http_ok(&[&[9u8, 9][..], &good[2..]].concat())),
            |e| {
                matches!(
                    e,
                    IppError::Decode(codec::DecodeError::Version { major: 9, .. })
                )
            },
        ),
        ("empty body", Behaviour::Answer(http_ok(b"")), |e| {
            matches!(e, IppError::Decode(_))
        }),
        (
            "request-id mismatch",
            Behaviour::Answer(http_ok(&ipp_response(0, 99, good_attrs()))),
            |e| matches!(e, IppError::Decode(codec::DecodeError::Malformed { .. })),
        ),
        (
            "ipp error status",
            Behaviour::Answer(http_ok(&ipp_response(0x0406, 1, vec![]))),
            |e| matches!(e, IppError::Status { code: 0x0406, .. }) && !e.is_retriable(),
        ),
        (
            "ipp busy",
            Behaviour::Answer(http_ok(&ipp_response(0x0507, 1, vec![]))),
            |e| matches!(e, IppError::Status { code: 0x0507, .. }) && e.is_retriable(),
        ),
        ("deep collections", Behaviour::Answer(http_ok(&deep)), |e| {
            matches!(e, IppError::Decode(codec::DecodeError::Limit { .. }))
        }),
        (
            "too many attributes",
            Behaviour::Answer(http_ok(&many)),
            |e| matches!(e, IppError::Decode(codec::DecodeError::Limit { .. })),
        ),
        (
            "huge Content-Length",
            Behaviour::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n".to_vec()),
            |e| matches!(e, IppError::TooLarge { .. }),
        ),
        (
            "endless chunks",
            Behaviour::Answer(
                [
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                    b"8000\r\n".to_vec(),
                    vec![b'a'; 0x8000],
                    b"\r\n".to_vec(),
                ]
                .concat()
                .repeat(1)
                .into_iter()
                .chain(
                    std::iter::repeat_n(
                        [b"8000\r\n".to_vec(), vec![b'a'; 0x8000], b"\r\n".to_vec()].concat(),
                        10,
                    )
                    .flatten(),
                )
                .collect(),
            ),
            |e| matches!(e, IppError::TooLarge { .. }),
        ),
        (
            "HTTP 500",
            Behaviour::Answer(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ),
            |e| matches!(e, IppError::HttpStatus { status: 500, .. }) && e.is_retriable(),
        ),
        (
            "HTTP 404",
            Behaviour::Answer(b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec()),
            |e| matches!(e, IppError::HttpStatus { status: 404, .. }) && !e.is_retriable(),
        ),
        (
            "not HTTP",
            Behaviour::Answer(b"\x00\x01garbage\r\n\r\n".to_vec()),
            |e| matches!(e, IppError::Http(_)),
        ),
        ("closed at once", Behaviour::Answer(Vec::new()), |e| {
            matches!(e, IppError::Http(_) | IppError::Io(_))
        }),
        ("never answers", Behaviour::Hang, |e| {
            matches!(e, IppError::Timeout { .. }) && e.is_silence()
        }),
        ("slow loris", Behaviour::Dribble, |e| {
            matches!(e, IppError::Timeout { .. })
        }),
    ];
    for (name, behaviour, check) in cases {
        let (r, took) = poll_at(server(behaviour).await, timeout).await;
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{name}: expected an error"));
        assert!(check(&e), "{name}: unexpected {e:?}");
        assert!(took < bound, "{name}: took {took:?}");
        println!("{name:<28} -> {:<16} {e}", e.class());
    }

    // Nobody listening: a connect error, counted as silence.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (r, took) = poll_at(closed, timeout).await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, IppError::Connect { .. }) && e.is_silence() && e.is_retriable(),
        "{e:?}"
    );
    assert!(took < bound);
}
