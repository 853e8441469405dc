//! `fleetpulse bench edge --quick` runs end to end and ends with a well-formed
//! RESULT line. Figures are not asserted against targets here (a CI machine's
//! speed says nothing about the code); only that every figure was measured.

use std::process::Command;

use fleetpulse::fleetpulse_bin;

const KEYS: [&str; 5] = [
    "printers_per_min_per_core",
    "rss_mb",
    "lan_bytes_per_poll",
    "netsnmp_bytes_per_poll",
    "wan_bytes_13_printers_3h",
];

/// Parse `RESULT k=v …` into (key, value) pairs, in order.
fn parse_result(line: &str) -> Vec<(String, String)> {
    line.strip_prefix("RESULT ")
        .unwrap_or_else(|| panic!("not a RESULT line: {line:?}"))
        .split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} is not key=value in {line:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn quick_bench_ends_with_a_well_formed_result_line() {
    let bin = fleetpulse_bin();
    let out = Command::new(&bin)
        .args(["bench", "edge", "--quick"])
        .output()
        .expect("running fleetpulse bench edge --quick");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("RESULT")).count(),
        1,
        "{stdout}"
    );
    let fields = parse_result(last);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, KEYS, "{last}");
    let netsnmp_installed = Command::new("snmpbulkwalk").arg("-V").output().is_ok();
    for (k, v) in &fields {
        if k == "netsnmp_bytes_per_poll" && v == "NA" {
            assert!(
                !netsnmp_installed,
                "snmpbulkwalk is installed, yet net-snmp was not measured:\n{stdout}"
            );
            assert!(stdout.contains("net-snmp not measured:"), "{stdout}");
            continue;
        }
        let n: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{k}={v} is not a number in {last}"));
        assert!(n > 0.0 && n.is_finite(), "{k}={v} must be measured (> 0)");
        if k != "rss_mb" {
            assert!(!v.contains('.'), "{k}={v} must be an integer");
        }
    }
    // The table the RESULT line summarises is printed before it.
    for section in ["== Throughput", "== LAN bytes", "== WAN bytes", "111,530"] {
        assert!(stdout.contains(section), "missing {section:?}:\n{stdout}");
    }
    // The edge and net-snmp read the same values through the relay.
    let total = stdout
        .lines()
        .find(|l| l.starts_with("total per poll"))
        .expect("LAN total row");
    if netsnmp_installed {
        let cols: Vec<&str> = total.split_whitespace().collect();
        // total per poll | edge reqs, bytes, values | net-snmp reqs, bytes, values
        assert_eq!(cols[5], cols[9], "values read differ: {total}");
    }
}

#[test]
fn parses_result_lines() {
    let f = parse_result("RESULT a=1 b=NA");
    assert_eq!(f, vec![("a".into(), "1".into()), ("b".into(), "NA".into())]);
}

/// `fleetpulse bench process` runs the real `fleetpulse process` as a child
/// on many partitions and reports its idle and peak RSS next to the stated
/// bound: every row measured, files written, a verdict printed. (Whether
/// the bound holds is the benchmark's figure, not asserted here.)
#[test]
fn process_bench_measures_the_memory_bound_of_the_real_processor() {
    let bin = fleetpulse_bin();
    let out = Command::new(&bin)
        .args([
            "bench",
            "process",
            "--events",
            "3000",
            "--no-python",
            "--partitions",
            "1",
            "--encoder",
            "columnar",
            "--memory-partitions",
            "8",
            "--memory-budgets-mib",
            "2",
        ])
        .output()
        .expect("running fleetpulse bench process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("partitions "));
    let header = lines.next().expect("memory table header");
    assert!(header.contains("peak RSS MiB"), "{stdout}");
    let rows: Vec<Vec<&str>> = lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    // One run per partition count x budget with derived tables off, one on.
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, derived) in rows.iter().zip(["off", "on"]) {
        assert_eq!(row.len(), 10, "{row:?}");
        assert_eq!(row[0], "8", "{row:?}");
        assert_eq!(row[3], derived, "{row:?}");
        let files: u64 = row[5].parse().expect("files");
        assert!(files > 0, "{row:?}");
        for i in [6, 7, 8] {
            let mib: f64 = row[i].parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!(mib > 1.0, "{row:?}");
        }
        let (idle, peak): (f64, f64) = (row[6].parse().unwrap(), row[7].parse().unwrap());
        assert!(peak >= idle, "{row:?}");
    }
    assert!(
        stdout.contains("target: peak RSS of the lake writer within the stated memory bound"),
        "{stdout}"
    );
    assert!(stdout
        .lines()
        .last()
        .unwrap_or_default()
        .starts_with("RESULT "));
}
