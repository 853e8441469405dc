//! From Get-Printer-Attributes to the normalised device view.
//!
//! Pure and infallible like [`crate::mapping`]: absent attributes become
//! empty lists and nulls. The correspondences, and where IPP and SNMP differ:
//!
//! - **Supplies**: `printer-supply` (PWG 5100.13) carries the Printer-MIB
//!   columns as `key=value;` text: `index`, `type`, `unit`, `maxcapacity`,
//!   `level` (same -1/-2/-3 special values, split with
//!   [`fleetpulse_core::records::split_level`]), `class`, `colorantname`;
//!   `printer-supply-description` gives the descriptions in the same order.
//!   Without `printer-supply`, the CUPS `marker-*` arrays are used: levels
//!   are percent, capacity 100. `device_index` is 1 (IPP has no hrDeviceIndex).
//! - **printer-state** → hrPrinterStatus: idle(3) → idle, processing(4) →
//!   printing, stopped(5) → other (RFC 3805's reverse of its IPP mapping).
//!   hrDeviceStatus: stopped → down, any reason other than `none` or a
//!   `-report` → warning, else running.
//! - **printer-state-reasons** → hrPrinterDetectedErrorState flags (suffixes
//!   `-report`/`-warning`/`-error` stripped, `none` and unknown keywords
//!   ignored). There are no raw octets, so `detected_error_state_hex` is null.
//! - **printer-alert** (PWG 5100.9, `code=…;index=…;severity=…;group=…`) →
//!   alert rows, diffed between polls exactly like prtAlertTable rows.
//! - Identity: serial from `printer-device-id`, else `printer-uuid`;
//!   model `printer-make-and-model`; `printer-info` → sysName,
//!   `printer-location` → sysLocation, `printer-up-time` (s) → ticks.

use std::collections::HashMap;

use fleetpulse_core::records::{
    split_level, AlertSeverity, HrDeviceStatus, HrPrinterStatus, PollProtocol, PrinterErrorFlag,
    Supply, SupplyType, SupplyUnit,
};

use super::codec::{tag, Attribute, Message, Value};
use crate::alerts::{alert_code, alert_code_name, alert_group, AlertRow};
use crate::device::DeviceSnapshot;
use crate::mapping::{display_text, percent_of, DeviceIdSource, Identity, Status};

/// Printer attributes by name (the first occurrence wins).
struct Attrs<'a>(HashMap<&'a str, &'a Attribute>);

impl<'a> Attrs<'a> {
    fn of(msg: &'a Message) -> Self {
        let mut map = HashMap::new();
        for g in msg.groups.iter().filter(|g| g.tag == tag::PRINTER) {
            for a in &g.attributes {
                map.entry(a.name.as_str()).or_insert(a);
            }
        }
        Attrs(map)
    }

    fn values(&self, name: &str) -> &'a [Value] {
        self.0.get(name).map(|a| a.values.as_slice()).unwrap_or(&[])
    }

    /// The first value as display text (empty → `None`).
    fn text(&self, name: &str) -> Option<String> {
        self.values(name)
            .first()
            .and_then(Value::as_text)
            .and_then(|t| display_text(t.as_bytes()))
    }

    fn texts(&self, name: &str) -> Vec<String> {
        self.values(name)
            .iter()
            .map(|v| v.as_text().map(|t| t.into_owned()).unwrap_or_default())
            .collect()
    }

    fn int(&self, name: &str) -> Option<i32> {
        self.values(name).first().and_then(Value::as_int)
    }

    fn ints(&self, name: &str) -> Vec<Option<i32>> {
        self.values(name).iter().map(Value::as_int).collect()
    }
}

/// `key=value;key=value;` pairs (keys lower-cased, blanks trimmed).
pub fn key_values(text: &str) -> HashMap<String, String> {
    text.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// IEEE 1284 device id `KEY:value;` pairs (keys upper-cased).
pub fn device_id_fields(text: &str) -> HashMap<String, String> {
    text.split(';')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_string()))
        .collect()
}

/// `waste-toner` → `wasteToner` (marker-types use hyphens, the MIB camelCase).
fn camel_case(keyword: &str) -> String {
    let mut out = String::with_capacity(keyword.len());
    let mut upper = false;
    for c in keyword.chars() {
        if c == '-' || c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A Printer-MIB enumeration by its name (`toner`, `wasteToner`, `percent`…).
fn mib_enum<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(camel_case(name.trim()))).ok()
}

fn supply_type(name: Option<&String>) -> SupplyType {
    let Some(name) = name else {
        return SupplyType::Unknown;
    };
    match name.parse::<i64>() {
        Ok(n) => SupplyType::from_mib(n),
        Err(_) => mib_enum(name),
    }
    .unwrap_or(SupplyType::Unknown)
}

fn supply_unit(name: Option<&String>) -> SupplyUnit {
    match name {
        None => SupplyUnit::Unknown,
        Some(n) => match n.parse::<i64>() {
            Ok(v) => SupplyUnit::from_mib(v),
            Err(_) => mib_enum(n).unwrap_or(SupplyUnit::Unknown),
        },
    }
}

fn level_of(v: Option<&String>) -> (Option<i32>, Option<fleetpulse_core::records::LevelSpecial>) {
    match v.and_then(|s| s.parse::<i64>().ok()) {
        Some(raw) => split_level(raw),
        None => (None, None),
    }
}

fn supply(
    index: i32,
    supply_type: SupplyType,
    unit: SupplyUnit,
    description: String,
    capacity: (Option<i32>, Option<fleetpulse_core::records::LevelSpecial>),
    level: (Option<i32>, Option<fleetpulse_core::records::LevelSpecial>),
) -> Supply {
    Supply {
        index,
        device_index: 1,
        supply_type,
        unit,
        description,
        max_capacity: capacity.0,
        max_capacity_special: capacity.1,
        level: level.0,
        level_special: level.1,
        percent: percent_of(level.0, capacity.0, unit == SupplyUnit::Percent),
    }
}

fn nth_text(list: &[String], i: usize) -> Option<String> {
    list.get(i).and_then(|s| display_text(s.as_bytes()))
}

/// Supplies from `printer-supply`, else from the `marker-*` arrays.
fn supplies(a: &Attrs<'_>) -> Vec<Supply> {
    let descriptions = a.texts("printer-supply-description");
    let rows = a.texts("printer-supply");
    if !rows.is_empty() {
        return rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let kv = key_values(row);
                let position = i32::try_from(i + 1).unwrap_or(i32::MAX);
                let index = kv
                    .get("index")
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(position);
                let description = nth_text(&descriptions, i)
                    .or_else(|| {
                        kv.get("colorantname")
                            .and_then(|c| display_text(c.as_bytes()))
                    })
                    .unwrap_or_default();
                supply(
                    index,
                    supply_type(kv.get("type")),
                    supply_unit(kv.get("unit")),
                    description,
                    level_of(kv.get("maxcapacity")),
                    level_of(kv.get("level")),
                )
            })
            .collect();
    }
    let names = a.texts("marker-names");
    let types = a.texts("marker-types");
    a.ints("marker-levels")
        .into_iter()
        .enumerate()
        .map(|(i, level)| {
            supply(
                i32::try_from(i + 1).unwrap_or(i32::MAX),
                supply_type(types.get(i)),
                SupplyUnit::Percent,
                nth_text(&names, i).unwrap_or_default(),
                (Some(100), None),
                level
                    .map(|l| split_level(i64::from(l)))
                    .unwrap_or((None, None)),
            )
        })
        .collect()
}

/// The hrPrinterDetectedErrorState flag of a printer-state-reasons keyword.
pub fn reason_flag(keyword: &str) -> Option<PrinterErrorFlag> {
    let k = keyword.trim().to_ascii_lowercase();
    let base = ["-report", "-warning", "-error"]
        .iter()
        .find_map(|s| k.strip_suffix(s))
        .unwrap_or(&k);
    use PrinterErrorFlag::*;
    Some(match base {
        "media-low" => LowPaper,
        "media-empty" | "media-needed" => NoPaper,
        "toner-low" | "marker-supply-low" => LowToner,
        "toner-empty" | "marker-supply-empty" => NoToner,
        "door-open" | "cover-open" | "interlock-open" => DoorOpen,
        "media-jam" => Jammed,
        "offline" | "shutdown" => Offline,
        "input-tray-missing" => InputTrayMissing,
        "output-tray-missing" => OutputTrayMissing,
        "marker-supply-missing" => MarkerSupplyMissing,
        "output-area-almost-full" => OutputNearFull,
        "output-area-full" => OutputFull,
        _ => return None,
    })
}

fn status(a: &Attrs<'_>) -> Status {
    let state = a.int("printer-state");
    let reasons = a.texts("printer-state-reasons");
    let flags: Vec<PrinterErrorFlag> = PrinterErrorFlag::BITS
        .into_iter()
        .filter(|f| reasons.iter().any(|r| reason_flag(r) == Some(*f)))
        .collect();
    let warning = reasons.iter().any(|r| {
        let r = r.trim();
        !r.is_empty() && r != "none" && !r.ends_with("-report")
    });
    Status {
        hr_device_status: state.map(|s| match s {
            5 => HrDeviceStatus::Down,
            _ if warning => HrDeviceStatus::Warning,
            3 | 4 => HrDeviceStatus::Running,
            _ => HrDeviceStatus::Unknown,
        }),
        hr_printer_status: state.map(|s| match s {
            3 => HrPrinterStatus::Idle,
            4 => HrPrinterStatus::Printing,
            5 => HrPrinterStatus::Other,
            _ => HrPrinterStatus::Unknown,
        }),
        detected_errors: flags,
        detected_error_state_hex: None,
    }
}

/// The RFC 3805 number of an alert code name (case-insensitive).
fn alert_code_number(name: &str) -> Option<i32> {
    (1..=1900)
        .find(|n| alert_code_name(i64::from(*n)).is_some_and(|c| c.eq_ignore_ascii_case(name)))
}

fn severity(v: Option<&String>) -> AlertSeverity {
    match v {
        None => AlertSeverity::Other,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => AlertSeverity::from_mib(n),
            Err(_) => mib_enum(s).unwrap_or(AlertSeverity::Other),
        },
    }
}

/// `printer-alert` entries with their descriptions.
fn alerts(a: &Attrs<'_>) -> Vec<AlertRow> {
    let descriptions = a.texts("printer-alert-description");
    a.texts("printer-alert")
        .iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let kv = key_values(row);
            let code_text = kv.get("code")?;
            let (code, code_raw) = match code_text.parse::<i64>() {
                Ok(n) => (alert_code(n), i32::try_from(n).unwrap_or(i32::MAX)),
                Err(_) => (
                    code_text.clone(),
                    // Unknown names keep their text and count as other(1).
                    alert_code_number(code_text).unwrap_or(1),
                ),
            };
            let int = |k: &str| kv.get(k).and_then(|v| v.parse::<i32>().ok());
            Some(AlertRow {
                device_index: 1,
                alert_index: int("index").unwrap_or(i32::try_from(i + 1).unwrap_or(i32::MAX)),
                severity: severity(kv.get("severity")),
                group: kv.get("group").map(|g| match g.parse::<i64>() {
                    Ok(n) => alert_group(n),
                    Err(_) => g.clone(),
                }),
                group_index: int("groupindex"),
                location: int("location"),
                code,
                code_raw,
                description: nth_text(&descriptions, i),
                time_ticks: kv.get("time").and_then(|v| v.parse::<i64>().ok()),
            })
        })
        .collect()
}

fn identity(a: &Attrs<'_>, ip: &str) -> Identity {
    // Parsed in full: IEEE 1284 ids often exceed 255 bytes, with SN: last.
    let dev = a
        .values("printer-device-id")
        .first()
        .and_then(Value::as_text)
        .map(|d| device_id_fields(&d))
        .unwrap_or_default();
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| dev.get(*k))
            .and_then(|v| display_text(v.as_bytes()))
    };
    let serial = field(&["SN", "SERN", "SERIALNUMBER"]);
    let uuid = a.text("printer-uuid");
    let (device_id, device_id_source) = match (&serial, uuid) {
        (Some(s), _) => (s.clone(), DeviceIdSource::IppDeviceId),
        (None, Some(u)) => (u.to_ascii_lowercase(), DeviceIdSource::IppUuid),
        (None, None) => (format!("addr:{ip}"), DeviceIdSource::Address),
    };
    let model = a
        .text("printer-make-and-model")
        .or_else(|| field(&["MDL", "MODEL"]));
    let firmware = a
        .texts("printer-firmware-string-version")
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let sys_descr = match (&model, firmware.is_empty()) {
        (Some(m), false) => display_text(format!("{m} (firmware {firmware})").as_bytes()),
        (Some(m), true) => Some(m.clone()),
        (None, false) => display_text(format!("firmware {firmware}").as_bytes()),
        (None, true) => None,
    };
    Identity {
        device_id,
        device_id_source,
        serial,
        vendor: field(&["MFG", "MANUFACTURER"]),
        enterprise: None,
        model,
        sys_descr,
        sys_object_id: None,
        sys_name: a.text("printer-info"),
        sys_contact: None,
        sys_location: a.text("printer-location"),
        sys_uptime_ticks: a
            .int("printer-up-time")
            .map(|s| i64::from(s).saturating_mul(100)),
        mac_address: None,
        printer_device_index: None,
    }
}

/// Build a snapshot from a Get-Printer-Attributes response.
pub fn snapshot(
    address: &str,
    ip: &str,
    polled_at: i64,
    response_ms: u32,
    msg: &Message,
) -> DeviceSnapshot {
    let a = Attrs::of(msg);
    DeviceSnapshot {
        address: address.to_string(),
        ip_address: ip.to_string(),
        polled_at,
        response_ms,
        protocol: PollProtocol::Ipp,
        identity: identity(&a, ip),
        status: status(&a),
        supplies: supplies(&a),
        trays: Vec::new(),
        counters: Vec::new(),
        alerts: alerts(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipp::codec::Group;
    use fleetpulse_core::records::LevelSpecial;

    fn msg(attrs: Vec<Attribute>) -> Message {
        Message {
            version: (1, 1),
            code: 0,
            request_id: 1,
            groups: vec![Group {
                tag: tag::PRINTER,
                attributes: attrs,
            }],
        }
    }

    fn octets(v: &[&str]) -> Vec<Value> {
        v.iter()
            .map(|s| Value::OctetString(s.as_bytes().to_vec()))
            .collect()
    }

    fn texts(t: u8, v: &[&str]) -> Vec<Value> {
        v.iter().map(|s| Value::Str(t, s.to_string())).collect()
    }

    #[test]
    fn supplies_states_alerts_identity() {
        let m = msg(vec![
            Attribute::new("printer-state", vec![Value::Enum(5)]),
            Attribute::new(
                "printer-state-reasons",
                texts(tag::KEYWORD, &["media-jam-error", "toner-low-warning", "cover-open", "bogus", "media-empty-report"]),
            ),
            Attribute::new(
                "printer-supply",
                octets(&[
                    "index=1;class=receptacleThatIsFilled;type=wasteToner;unit=percent;maxcapacity=100;level=25;colorantname=unknown;",
                    "index=2;class=supplyThatIsConsumed;type=toner;unit=impressions;maxcapacity=8000;level=2000;colorantname=black;",
                    "index=3;type=opc;unit=impressions;maxcapacity=-2;level=-3;",
                    "garbage without pairs",
                ]),
            ),
            Attribute::new(
                "printer-supply-description",
                texts(tag::TEXT, &["Waste", "Black Toner", "Drum"]),
            ),
            Attribute::new(
                "printer-alert",
                octets(&[
                    "code=jam;index=4;severity=critical;training=untrained;group=mediaPath;groupindex=1;location=3;time=1234",
                    "code=markerTonerAlmostEmpty;severity=warning;group=11",
                    "code=somethingNew;index=9",
                    "nocode=1",
                ]),
            ),
            Attribute::new("printer-alert-description", texts(tag::TEXT, &["Paper jam"])),
            Attribute::new(
                "printer-device-id",
                vec![Value::Str(
                    tag::TEXT,
                    format!("MFG:Acme;MDL:Laser 9;CMD:{};SN:AC123456;", "PCL,".repeat(80)),
                )],
            ),
            Attribute::new("printer-uuid", texts(tag::URI, &["urn:uuid:ABC"])),
            Attribute::new("printer-make-and-model", texts(tag::TEXT, &["Acme Laser 9"])),
            Attribute::new("printer-firmware-string-version", texts(tag::TEXT, &["1.2", "boot 7"])),
            Attribute::new("printer-up-time", vec![Value::Integer(42)]),
            Attribute::new("printer-location", texts(tag::TEXT, &["Floor 2"])),
        ]);
        let s = snapshot("ipp://x/ipp/print", "10.0.0.1", 0, 1, &m);
        assert_eq!(s.protocol, PollProtocol::Ipp);
        assert_eq!(s.status.hr_printer_status, Some(HrPrinterStatus::Other));
        assert_eq!(s.status.hr_device_status, Some(HrDeviceStatus::Down));
        assert_eq!(
            s.status.detected_errors,
            vec![
                PrinterErrorFlag::NoPaper,
                PrinterErrorFlag::LowToner,
                PrinterErrorFlag::DoorOpen,
                PrinterErrorFlag::Jammed
            ]
        );
        assert_eq!(s.supplies.len(), 4);
        assert_eq!(s.supplies[0].supply_type, SupplyType::WasteToner);
        assert_eq!(s.supplies[0].percent, Some(25.0));
        assert_eq!(s.supplies[0].description, "Waste");
        assert_eq!(s.supplies[1].unit, SupplyUnit::Impressions);
        assert_eq!(s.supplies[1].percent, Some(25.0));
        assert_eq!(s.supplies[2].supply_type, SupplyType::Opc);
        assert_eq!(
            s.supplies[2].level_special,
            Some(LevelSpecial::SomeRemaining)
        );
        assert_eq!(
            s.supplies[2].max_capacity_special,
            Some(LevelSpecial::Unknown)
        );
        assert_eq!(s.supplies[2].percent, None);
        assert_eq!(s.supplies[3].index, 4);
        assert_eq!(s.supplies[3].supply_type, SupplyType::Unknown);
        assert_eq!(s.alerts.len(), 3);
        assert_eq!(
            (s.alerts[0].code.as_str(), s.alerts[0].code_raw),
            ("jam", 8)
        );
        assert_eq!(s.alerts[0].alert_index, 4);
        assert_eq!(s.alerts[0].severity, AlertSeverity::Critical);
        assert_eq!(s.alerts[0].group.as_deref(), Some("mediaPath"));
        assert_eq!(s.alerts[0].time_ticks, Some(1234));
        assert_eq!(s.alerts[0].description.as_deref(), Some("Paper jam"));
        assert_eq!(s.alerts[1].code_raw, 1104);
        assert_eq!(s.alerts[1].group.as_deref(), Some("markerSupplies"));
        assert_eq!(s.alerts[1].alert_index, 2);
        assert_eq!(
            (s.alerts[2].code.as_str(), s.alerts[2].code_raw),
            ("somethingNew", 1)
        );
        let id = &s.identity;
        assert_eq!(id.device_id, "AC123456");
        assert_eq!(id.device_id_source, DeviceIdSource::IppDeviceId);
        assert_eq!(id.vendor.as_deref(), Some("Acme"));
        assert_eq!(id.model.as_deref(), Some("Acme Laser 9"));
        assert_eq!(
            id.sys_descr.as_deref(),
            Some("Acme Laser 9 (firmware 1.2, boot 7)")
        );
        assert_eq!(id.sys_uptime_ticks, Some(4200));
        assert_eq!(id.sys_location.as_deref(), Some("Floor 2"));
    }

    #[test]
    fn marker_fallback_and_uuid() {
        let m = msg(vec![
            Attribute::new("printer-state", vec![Value::Enum(4)]),
            Attribute::new("printer-state-reasons", texts(tag::KEYWORD, &["none"])),
            Attribute::new(
                "marker-names",
                texts(tag::NAME, &["Black", "Cyan", "Waste"]),
            ),
            Attribute::new(
                "marker-types",
                texts(tag::KEYWORD, &["toner", "toner", "waste-toner"]),
            ),
            Attribute::new(
                "marker-levels",
                vec![Value::Integer(60), Value::Integer(-3), Value::Integer(10)],
            ),
            Attribute::new("printer-uuid", texts(tag::URI, &["urn:uuid:ABC-1"])),
        ]);
        let s = snapshot("ipp://x/", "10.0.0.1", 0, 1, &m);
        assert_eq!(s.status.hr_printer_status, Some(HrPrinterStatus::Printing));
        assert_eq!(s.status.hr_device_status, Some(HrDeviceStatus::Running));
        assert!(s.status.detected_errors.is_empty());
        let pct: Vec<_> = s.supplies.iter().map(|x| x.percent).collect();
        assert_eq!(pct, vec![Some(60.0), None, Some(10.0)]);
        assert_eq!(
            s.supplies[1].level_special,
            Some(LevelSpecial::SomeRemaining)
        );
        assert_eq!(s.supplies[2].supply_type, SupplyType::WasteToner);
        assert_eq!(s.supplies[2].description, "Waste");
        assert_eq!(s.identity.device_id, "urn:uuid:abc-1");
        assert_eq!(s.identity.device_id_source, DeviceIdSource::IppUuid);
        assert_eq!(s.identity.serial, None);
        // Nothing at all: no panic, address fallback.
        let s = snapshot("ipp://x/", "10.0.0.1", 0, 1, &msg(vec![]));
        assert_eq!(s.identity.device_id, "addr:10.0.0.1");
        assert!(s.supplies.is_empty() && s.alerts.is_empty());
        assert_eq!(s.status.hr_printer_status, None);
    }

    #[test]
    fn reasons() {
        assert_eq!(
            reason_flag("media-empty-error"),
            Some(PrinterErrorFlag::NoPaper)
        );
        assert_eq!(
            reason_flag("output-area-almost-full-warning"),
            Some(PrinterErrorFlag::OutputNearFull)
        );
        assert_eq!(
            reason_flag("input-tray-missing"),
            Some(PrinterErrorFlag::InputTrayMissing)
        );
        assert_eq!(
            reason_flag("offline-report"),
            Some(PrinterErrorFlag::Offline)
        );
        assert_eq!(reason_flag("none"), None);
        assert_eq!(reason_flag("marker-waste-full"), None);
    }
}
