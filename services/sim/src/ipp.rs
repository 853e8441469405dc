//! An IPP responder per printer (optional, `ipp_base_port`): answers
//! Get-Printer-Attributes over HTTP/1.1 from the very MIB the printer's SNMP
//! agent serves at the same sim step.
//!
//! Why: to check that the edge reads the same supply levels over IPP as over
//! SNMP, both protocols must describe one printer. So the IPP attributes are
//! derived from [`crate::mib::build`]'s output — `printer-supply` carries the
//! prtMarkerSuppliesTable columns verbatim (PWG 5100.13), `printer-alert`
//! the prtAlertTable rows (PWG 5100.9), `printer-state(-reasons)` the
//! hrPrinterStatus / hrPrinterDetectedErrorState — never recomputed from the
//! model. A silent printer closes IPP connections without answering.
//!
//! Self-contained on purpose (a ~150-line encoder, no dependency on the edge
//! crate): the simulator must not share the edge's decoder, or a bug in one
//! would be mirrored by the other.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse_core::records::PrinterErrorFlag;
use fleetpulse_core::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::SimClock;
use crate::mib::{
    self, Mib, Value, HR_DEVICE_STATUS, HR_PRINTER_ERROR_STATE, HR_PRINTER_STATUS, PRT_ALERT_ENTRY,
    PRT_GENERAL_SERIAL, PRT_SUPPLIES_ENTRY, SYS_UPTIME,
};
use crate::model::{Printer, TICKS_PER_STEP};

/// Largest request accepted (headers + body).
const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a silent printer holds a connection without answering.
const SILENT_HOLD: Duration = Duration::from_secs(30);

// Value tags (RFC 8010 §3.5.2).
const T_INTEGER: u8 = 0x21;
const T_ENUM: u8 = 0x23;
const T_OCTETS: u8 = 0x30;
const T_TEXT: u8 = 0x41;
const T_NAME: u8 = 0x42;
const T_KEYWORD: u8 = 0x44;
const T_URI: u8 = 0x45;
const T_CHARSET: u8 = 0x47;
const T_LANGUAGE: u8 = 0x48;

/// An attribute: name, value tag, values (already encoded).
struct Attr {
    name: &'static str,
    tag: u8,
    values: Vec<Vec<u8>>,
}

fn texts(name: &'static str, tag: u8, values: impl IntoIterator<Item = String>) -> Attr {
    Attr {
        name,
        tag,
        values: values.into_iter().map(String::into_bytes).collect(),
    }
}

fn one(name: &'static str, tag: u8, value: &str) -> Attr {
    texts(name, tag, [value.to_string()])
}

fn int(name: &'static str, tag: u8, v: i32) -> Attr {
    Attr {
        name,
        tag,
        values: vec![v.to_be_bytes().to_vec()],
    }
}

/// Encode a response: header, operation group, printer group, end tag.
/// Values longer than 65535 octets are cut (none are near that).
fn encode(status: u16, request_id: i32, printer: &[Attr]) -> Vec<u8> {
    let mut out = vec![2, 0];
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    let put = |out: &mut Vec<u8>, a: &Attr| {
        for (i, v) in a.values.iter().enumerate() {
            let name = if i == 0 { a.name.as_bytes() } else { b"" };
            let v = &v[..v.len().min(usize::from(u16::MAX))];
            out.push(a.tag);
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
        }
    };
    out.push(0x01);
    put(&mut out, &one("attributes-charset", T_CHARSET, "utf-8"));
    put(
        &mut out,
        &one("attributes-natural-language", T_LANGUAGE, "en"),
    );
    if !printer.is_empty() {
        out.push(0x04);
        for a in printer {
            put(&mut out, a);
        }
    }
    out.push(0x03);
    out
}

fn int_at(mib: &Mib, oid: &[u32]) -> Option<i64> {
    mib.value(oid).and_then(Value::as_i64)
}

fn text_at(mib: &Mib, oid: &[u32]) -> Option<String> {
    match mib.value(oid) {
        Some(Value::OctetString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Rows of a `hrDeviceIndex.rowIndex` table: row index → column → value.
fn rows(mib: &Mib, entry: &[u32]) -> std::collections::BTreeMap<u32, Vec<(u32, Value)>> {
    let mut out: std::collections::BTreeMap<u32, Vec<(u32, Value)>> = Default::default();
    for (oid, v) in mib.values() {
        if let Some([col, _dev, row]) = oid.arcs().strip_prefix(entry) {
            out.entry(*row).or_default().push((*col, v.clone()));
        }
    }
    out
}

fn col(row: &[(u32, Value)], c: u32) -> Option<&Value> {
    row.iter().find(|(k, _)| *k == c).map(|(_, v)| v)
}

fn col_int(row: &[(u32, Value)], c: u32) -> Option<i64> {
    col(row, c).and_then(Value::as_i64)
}

fn col_text(row: &[(u32, Value)], c: u32) -> String {
    match col(row, c) {
        Some(Value::OctetString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// RFC 3805 names, for the values the simulator uses (else the number).
fn supply_type_name(v: i64) -> String {
    match v {
        3 => "toner".into(),
        4 => "wasteToner".into(),
        9 => "opc".into(),
        n => n.to_string(),
    }
}

fn supply_class_name(v: i64) -> String {
    match v {
        3 => "supplyThatIsConsumed".into(),
        4 => "receptacleThatIsFilled".into(),
        n => n.to_string(),
    }
}

fn supply_unit_name(v: i64) -> String {
    match v {
        7 => "impressions".into(),
        19 => "percent".into(),
        n => n.to_string(),
    }
}

fn alert_code_name(v: i64) -> String {
    match v {
        8 => "jam".into(),
        807 => "inputMediaSupplyLow".into(),
        808 => "inputMediaSupplyEmpty".into(),
        1101 => "markerTonerEmpty".into(),
        1104 => "markerTonerAlmostEmpty".into(),
        n => n.to_string(),
    }
}

fn alert_group_name(v: i64) -> String {
    match v {
        8 => "input".into(),
        11 => "markerSupplies".into(),
        13 => "mediaPath".into(),
        n => n.to_string(),
    }
}

fn severity_name(v: i64) -> &'static str {
    match v {
        3 => "critical",
        4 => "warning",
        5 => "warningBinaryChangeEvent",
        _ => "other",
    }
}

/// printer-state-reasons keyword of an hrPrinterDetectedErrorState flag.
fn reason(flag: PrinterErrorFlag) -> &'static str {
    use PrinterErrorFlag::*;
    match flag {
        LowPaper => "media-low-warning",
        NoPaper | InputTrayEmpty => "media-empty-error",
        LowToner => "toner-low-warning",
        NoToner => "toner-empty-error",
        DoorOpen => "door-open-error",
        Jammed => "media-jam-error",
        Offline => "offline-report",
        ServiceRequested | OverduePreventMaint => "other-warning",
        InputTrayMissing => "input-tray-missing-error",
        OutputTrayMissing => "output-tray-missing-error",
        MarkerSupplyMissing => "marker-supply-missing-error",
        OutputNearFull => "output-area-almost-full-warning",
        OutputFull => "output-area-full-error",
    }
}

/// A stable `urn:uuid:` from the serial (two FNV-1a hashes).
fn uuid_of(serial: &str) -> String {
    let fnv = |seed: u64| {
        serial.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x84222325_cbf29ce4));
    format!(
        "urn:uuid:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// The printer attributes of `printer` as its MIB shows them.
fn attributes(printer: &Printer, mib: &Mib) -> Vec<Attr> {
    let p = &printer.profile;
    let serial = text_at(mib, PRT_GENERAL_SERIAL).unwrap_or_default();
    let down = int_at(mib, HR_DEVICE_STATUS) == Some(5);
    // RFC 3805 §2.2.13.2: idle → idle; printing, warmup → processing; other/down → stopped.
    let (state, message) = match int_at(mib, HR_PRINTER_STATUS) {
        _ if down => (5, "Stopped."),
        Some(3) => (3, "Idle."),
        Some(4) => (4, "Printing."),
        Some(5) => (4, "Warming up."),
        _ => (5, "Stopped."),
    };
    let flags = match mib.value(HR_PRINTER_ERROR_STATE) {
        Some(Value::OctetString(b)) => PrinterErrorFlag::decode(b),
        _ => Vec::new(),
    };
    let mut reasons: Vec<String> = flags.iter().map(|f| reason(*f).to_string()).collect();
    reasons.dedup();
    if reasons.is_empty() {
        reasons.push("none".into());
    }

    let supplies = rows(mib, PRT_SUPPLIES_ENTRY);
    let supply = supplies.iter().map(|(index, r)| {
        format!(
            "index={index};class={};type={};unit={};maxcapacity={};level={};",
            supply_class_name(col_int(r, 4).unwrap_or(1)),
            supply_type_name(col_int(r, 5).unwrap_or(2)),
            supply_unit_name(col_int(r, 7).unwrap_or(2)),
            col_int(r, 8).unwrap_or(-2),
            col_int(r, 9).unwrap_or(-2),
        )
    });
    let supply_descr = supplies.values().map(|r| col_text(r, 6));

    let alerts = rows(mib, PRT_ALERT_ENTRY);
    let alert = alerts.iter().map(|(index, r)| {
        format!(
            "index={index};severity={};training={};group={};groupindex={};location={};code={};time={}",
            severity_name(col_int(r, 2).unwrap_or(1)),
            if col_int(r, 3) == Some(4) { "trained" } else { "untrained" },
            alert_group_name(col_int(r, 4).unwrap_or(1)),
            col_int(r, 5).unwrap_or(-2),
            col_int(r, 6).unwrap_or(-2),
            alert_code_name(col_int(r, 7).unwrap_or(1)),
            col_int(r, 9).unwrap_or(0),
        )
    });
    let alert_descr = alerts.values().map(|r| col_text(r, 8));
    let uptime_s = int_at(mib, SYS_UPTIME).unwrap_or(0) / 100;

    let mut out = vec![
        int("printer-state", T_ENUM, state),
        texts("printer-state-reasons", T_KEYWORD, reasons),
        one("printer-state-message", T_TEXT, message),
        Attr {
            name: "printer-supply",
            tag: T_OCTETS,
            values: supply.map(String::into_bytes).collect(),
        },
        texts("printer-supply-description", T_TEXT, supply_descr),
        Attr {
            name: "printer-alert",
            tag: T_OCTETS,
            values: alert.map(String::into_bytes).collect(),
        },
        texts("printer-alert-description", T_TEXT, alert_descr),
        one("printer-make-and-model", T_TEXT, &p.model),
        one(
            "printer-device-id",
            T_TEXT,
            &format!(
                "MFG:{};MDL:{};CMD:PCL,PWG;SN:{serial};",
                p.vendor.brand, p.model
            ),
        ),
        one("printer-uuid", T_URI, &uuid_of(&serial)),
        one("printer-info", T_TEXT, &p.sys_name),
        one("printer-location", T_TEXT, &p.sys_location),
        int(
            "printer-up-time",
            T_INTEGER,
            i32::try_from(uptime_s).unwrap_or(i32::MAX).max(1),
        ),
        one("printer-name", T_NAME, &p.sys_name),
    ];
    // An empty 1setOf cannot be encoded: leave such attributes out.
    out.retain(|a| !a.values.is_empty());
    out
}

/// What to answer to one request body.
pub(crate) fn respond(printer: &Mutex<Printer>, clock: &SimClock, body: &[u8]) -> Option<Vec<u8>> {
    let mut p = printer.lock().unwrap_or_else(|e| e.into_inner());
    let ticks = clock.sim_ticks();
    p.advance_to(ticks / TICKS_PER_STEP);
    if p.state.is_silent() {
        return None;
    }
    if body.len() < 9 {
        return Some(encode(0x0400, 0, &[]));
    }
    let request_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    if !(1..=2).contains(&body[0]) {
        return Some(encode(0x0503, request_id, &[]));
    }
    if u16::from_be_bytes([body[2], body[3]]) != 0x000B {
        return Some(encode(0x0501, request_id, &[]));
    }
    let mib = mib::build(&p, p.state.uptime_ticks(ticks));
    Some(encode(0x0000, request_id, &attributes(&p, &mib)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read one request: headers, then a `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST {
            return Err("request headers too large");
        }
        let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("closed before the headers ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("post ") {
        return Err("not a POST");
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or("no Content-Length")?;
    if len > MAX_REQUEST {
        return Err("request body too large");
    }
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("closed inside the body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf[head_end..head_end + len].to_vec())
}

async fn connection(
    mut stream: TcpStream,
    printer: Arc<Mutex<Printer>>,
    clock: Arc<SimClock>,
    index: usize,
) {
    let body = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(b)) => b,
        Ok(Err(reason)) => {
            tracing::debug!(index, reason, "simulated IPP: bad request");
            metrics::counter!("sim_ipp_requests_total", "outcome" => "bad_request").increment(1);
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        Err(_) => return,
    };
    let Some(ipp) = respond(&printer, &clock, &body) else {
        // Silent (powered off): no answer, like the SNMP agent; the client times out.
        metrics::counter!("sim_ipp_requests_total", "outcome" => "silent").increment(1);
        let mut sink = [0u8; 512];
        let _ = tokio::time::timeout(SILENT_HOLD, async {
            while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        return;
    };
    metrics::counter!("sim_ipp_requests_total", "outcome" => "ok").increment(1);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ipp.len()
    )
    .into_bytes();
    out.extend_from_slice(&ipp);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Serve IPP for one printer until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    printer: Printer,
    clock: Arc<SimClock>,
    index: usize,
    shutdown: Shutdown,
) {
    let printer = Arc::new(Mutex::new(printer));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tokio::spawn(connection(stream, printer.clone(), clock.clone(), index));
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "simulated IPP: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where printer `index` listens for IPP, given `ipp_base_port`.
pub(crate) fn addr(bind: std::net::IpAddr, base: u16, index: usize) -> SocketAddr {
    let port = if base == 0 {
        0
    } else {
        base.saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
    };
    SocketAddr::new(bind, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Knobs;

    #[test]
    fn attributes_follow_the_mib() {
        let mut printer = Printer::new(7, 0, Knobs::default());
        printer.advance_to(300);
        let mib = mib::build(&printer, printer.state.uptime_at_step());
        let attrs = attributes(&printer, &mib);
        let get = |n: &str| attrs.iter().find(|a| a.name == n).expect(n);
        let supplies = rows(&mib, PRT_SUPPLIES_ENTRY);
        assert_eq!(get("printer-supply").values.len(), supplies.len());
        for (v, (_, row)) in get("printer-supply").values.iter().zip(&supplies) {
            let s = String::from_utf8_lossy(v);
            assert!(
                s.contains(&format!("level={};", col_int(row, 9).unwrap())),
                "{s}"
            );
        }
        let dev_id = String::from_utf8_lossy(&get("printer-device-id").values[0]).into_owned();
        assert!(
            dev_id.contains(&format!("SN:{};", printer.profile.serial)),
            "{dev_id}"
        );
        let body = encode(0, 9, &attrs);
        assert_eq!(&body[..8], &[2, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(body.last(), Some(&0x03));
        assert!(uuid_of("A").starts_with("urn:uuid:") && uuid_of("A") != uuid_of("B"));
    }

    async fn post(addr: SocketAddr, body: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "POST /ipp/print HTTP/1.1\r\nHost: x\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn serves_get_printer_attributes_over_http() {
        use fleetpulse_core::config::Validate;
        let shutdown = Shutdown::new();
        let cfg = crate::SimConfig {
            printers: 2,
            base_port: 0,
            ipp_base_port: Some(0),
            acceleration: 0.001,
            silence_probability: 0.0,
            ..crate::SimConfig::default()
        };
        let fleet = crate::start(cfg, shutdown.clone()).await.unwrap();
        let p = &fleet.printers()[1];
        let addr = p.ipp_addr.expect("IPP enabled");
        // Get-Printer-Attributes, IPP/1.1, request id 0x01020304.
        let req = [1, 1, 0, 0x0B, 1, 2, 3, 4, 0x01, 0x03];
        let resp = post(addr, &req).await;
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("application/ipp"));
        let body = &resp[find(&resp, b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(&body[..8], &[2, 0, 0, 0, 1, 2, 3, 4]);
        assert!(find(body, format!("SN:{};", p.serial).as_bytes()).is_some());
        // Other operations and versions get IPP errors; garbage gets HTTP 400.
        let resp = post(addr, &[1, 1, 0, 0x02, 0, 0, 0, 9, 0x03]).await;
        let body = &resp[find(&resp, b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(&body[..8], &[2, 0, 0x05, 0x01, 0, 0, 0, 9]);
        let resp = post(addr, &[9, 9, 0, 0x0B, 0, 0, 0, 9, 0x03]).await;
        let body = &resp[find(&resp, b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(&body[2..4], &[0x05, 0x03]);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        assert!(out.starts_with(b"HTTP/1.1 400"));
        shutdown.cancel();
        fleet.join().await;

        let bad = crate::SimConfig {
            printers: 10,
            ipp_base_port: Some(65_530),
            ..crate::SimConfig::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("ipp_base_port"), "{e}");

        // SNMP off: IPP answers, nothing listens on the SNMP port.
        let shutdown = Shutdown::new();
        let cfg = crate::SimConfig {
            printers: 1,
            base_port: 0,
            ipp_base_port: Some(0),
            snmp: false,
            silence_probability: 0.0,
            ..crate::SimConfig::default()
        };
        let fleet = crate::start(cfg, shutdown.clone()).await.unwrap();
        let p = &fleet.printers()[0];
        let resp = post(p.ipp_addr.expect("IPP enabled"), &req).await;
        assert!(resp.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(p.addr.port(), 0, "no SNMP port bound");
        shutdown.cancel();
        fleet.join().await;
        let e = crate::SimConfig {
            snmp: false,
            ..crate::SimConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("snmp"), "{e}");
    }
}
