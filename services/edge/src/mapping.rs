//! From MIB values to the normalised device view and the record schemas.
//!
//! Everything here is pure: it takes the variable bindings a poll collected
//! and never fails. Missing tables and columns are normal on printers (most
//! implement a subset of the Printer-MIB), so absence maps to empty lists and
//! nulls, never to an error. Printer-MIB special values (-1/-2/-3) are kept
//! apart from numbers with [`split_level`]; a percentage is only computed
//! from two real numbers, so "some remaining" stays distinguishable from 50 %.

use std::collections::BTreeMap;

use fleetpulse_core::records::{
    split_level, AlertSeverity, CounterUnit, HrDeviceStatus, HrPrinterStatus, InputTray,
    MarkerCounter, PrinterErrorFlag, Supply, SupplyType, SupplyUnit,
};
use serde::Serialize;

use crate::alerts::{alert_code, alert_group, AlertRow};
use crate::snmp::{oid, Oid, SnmpValue};

/// Longest DisplayString (RFC 2579: SIZE (0..255)); longer values are cut.
pub const DISPLAY_STRING_MAX: usize = 255;

/// OIDs the edge reads.
pub(crate) mod oids {
    /// system group scalars.
    pub(crate) const SYS_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
    pub(crate) const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];
    pub(crate) const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
    pub(crate) const SYS_CONTACT: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 4, 0];
    pub(crate) const SYS_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
    pub(crate) const SYS_LOCATION: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 6, 0];
    /// prtGeneralSerialNumber of hrDeviceIndex 1.
    pub(crate) const PRT_GENERAL_SERIAL: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 5, 1, 1, 17, 1];
    /// HP private serial number (PML-encoded octets).
    pub(crate) const HP_SERIAL: &[u32] = &[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2, 1, 1, 3, 3, 0];
    /// ifPhysAddress column.
    pub(crate) const IF_PHYS_ADDRESS: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 6];
    /// hrDeviceEntry.
    pub(crate) const HR_DEVICE_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 2, 1];
    /// hrDeviceType value of a printer.
    pub(crate) const HR_DEVICE_PRINTER: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 1, 5];
    /// hrPrinterEntry.
    pub(crate) const HR_PRINTER_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 5, 1];
    /// prtInputEntry.
    pub(crate) const PRT_INPUT_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 8, 2, 1];
    /// prtMarkerEntry.
    pub(crate) const PRT_MARKER_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 10, 2, 1];
    /// prtMarkerSuppliesEntry.
    pub(crate) const PRT_SUPPLIES_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 11, 1, 1];
    /// prtAlertEntry.
    pub(crate) const PRT_ALERT_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 18, 1, 1];
    /// enterprises.
    pub(crate) const ENTERPRISES: &[u32] = &[1, 3, 6, 1, 4, 1];

    /// Scalars fetched with one GET.
    pub(crate) const SCALARS: &[&[u32]] = &[
        SYS_DESCR,
        SYS_OBJECT_ID,
        SYS_UPTIME,
        SYS_CONTACT,
        SYS_NAME,
        SYS_LOCATION,
        PRT_GENERAL_SERIAL,
        HP_SERIAL,
    ];

    /// Subtrees walked.
    pub(crate) const TABLES: &[&[u32]] = &[
        HR_DEVICE_ENTRY,
        HR_PRINTER_ENTRY,
        IF_PHYS_ADDRESS,
        PRT_INPUT_ENTRY,
        PRT_MARKER_ENTRY,
        PRT_SUPPLIES_ENTRY,
        PRT_ALERT_ENTRY,
    ];
}

/// Everything one poll read from a device, by OID.
#[derive(Debug, Default, Clone)]
pub struct MibData {
    values: BTreeMap<Oid, SnmpValue>,
}

impl MibData {
    /// Add variable bindings (absent values are dropped).
    pub fn extend(&mut self, varbinds: impl IntoIterator<Item = (Oid, SnmpValue)>) {
        for (o, v) in varbinds {
            if !v.is_absent() {
                self.values.insert(o, v);
            }
        }
    }

    /// The value at exactly `arcs`.
    pub fn get(&self, arcs: &[u32]) -> Option<&SnmpValue> {
        self.values.get(&oid(arcs))
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values of one column (or any subtree), in OID order.
    pub fn column(&self, prefix: &[u32]) -> impl Iterator<Item = &SnmpValue> {
        let root = oid(prefix);
        self.values
            .range(root.clone()..)
            .take_while(move |(o, _)| o.starts_with(&root))
            .map(|(_, v)| v)
    }

    /// The rows of a conceptual table: row index -> column -> value.
    pub fn table(&self, entry: &[u32]) -> BTreeMap<Vec<u32>, BTreeMap<u32, &SnmpValue>> {
        let root = oid(entry);
        let mut rows: BTreeMap<Vec<u32>, BTreeMap<u32, &SnmpValue>> = BTreeMap::new();
        for (o, v) in self.values.range(root.clone()..) {
            let Some(suffix) = o.suffix(&root) else { break };
            if let Some((col, index)) = suffix.split_first() {
                if !index.is_empty() {
                    rows.entry(index.to_vec()).or_default().insert(*col, v);
                }
            }
        }
        rows
    }
}

/// Where the device id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceIdSource {
    /// prtGeneralSerialNumber.
    PrinterMib,
    /// A vendor-private serial (HP).
    Vendor,
    /// No serial: `addr:<ip>`.
    Address,
    /// IPP: the serial in `printer-device-id` (`SN:`/`SERN:`).
    IppDeviceId,
    /// IPP: no serial, `printer-uuid` (`urn:uuid:…`).
    IppUuid,
}

/// Who the device is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The record key: the serial number, else `addr:<ip>`.
    pub device_id: String,
    /// Where `device_id` came from.
    pub device_id_source: DeviceIdSource,
    /// Serial number, when the device reports one.
    pub serial: Option<String>,
    /// Manufacturer from the sysObjectID enterprise number.
    pub vendor: Option<String>,
    /// Enterprise number of sysObjectID.
    pub enterprise: Option<u32>,
    /// hrDeviceDescr of the printer device, else sysDescr.
    pub model: Option<String>,
    /// sysDescr.
    pub sys_descr: Option<String>,
    /// sysObjectID.
    pub sys_object_id: Option<String>,
    /// sysName.
    pub sys_name: Option<String>,
    /// sysContact.
    pub sys_contact: Option<String>,
    /// sysLocation.
    pub sys_location: Option<String>,
    /// sysUpTime, hundredths of a second.
    pub sys_uptime_ticks: Option<i64>,
    /// First non-empty ifPhysAddress, `aa:bb:…`.
    pub mac_address: Option<String>,
    /// hrDeviceIndex of the printer.
    pub printer_device_index: Option<i32>,
}

/// What state the device is in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// hrDeviceStatus of the printer device.
    pub hr_device_status: Option<HrDeviceStatus>,
    /// hrPrinterStatus.
    pub hr_printer_status: Option<HrPrinterStatus>,
    /// Decoded hrPrinterDetectedErrorState.
    pub detected_errors: Vec<PrinterErrorFlag>,
    /// Raw hrPrinterDetectedErrorState as hex (`None` when absent or empty).
    pub detected_error_state_hex: Option<String>,
}

/// Decode a DisplayString: UTF-8 when valid, else Latin-1; at most 255
/// bytes; NULs removed and trailing whitespace trimmed. `None` when empty.
pub fn display_text(bytes: &[u8]) -> Option<String> {
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => {
            let mut end = s.len().min(DISPLAY_STRING_MAX);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        }
        Err(_) => bytes
            .iter()
            .take(DISPLAY_STRING_MAX)
            .map(|b| char::from(*b))
            .collect(),
    };
    let text: String = text.chars().filter(|c| *c != '\0').collect();
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

fn text_of(v: Option<&SnmpValue>) -> Option<String> {
    v.and_then(SnmpValue::as_bytes).and_then(display_text)
}

fn int_of(v: Option<&&SnmpValue>) -> Option<i64> {
    v.and_then(|v| v.as_i64())
}

fn i32_of(v: Option<&&SnmpValue>) -> Option<i32> {
    int_of(v).and_then(|v| i32::try_from(v).ok())
}

/// Manufacturer of an SMI enterprise number (a small table of printer makers).
pub fn vendor_of(enterprise: u32) -> Option<&'static str> {
    Some(match enterprise {
        11 => "HP",
        236 => "Samsung",
        253 => "Xerox",
        297 => "FUJIFILM (Fuji Xerox)",
        367 => "Ricoh",
        641 => "Lexmark",
        674 => "Dell",
        1248 => "Epson",
        1347 => "Kyocera",
        1602 => "Canon",
        2001 => "OKI",
        2385 => "Sharp",
        2435 => "Brother",
        10642 => "Zebra",
        18334 => "Konica Minolta",
        _ => return None,
    })
}

/// Percent of capacity, clamped to 0..=100; only from two real numbers
/// (capacity > 0), or the level itself when the unit is percent.
pub fn percent_of(level: Option<i32>, capacity: Option<i32>, unit_is_percent: bool) -> Option<f64> {
    let level = f64::from(level?);
    let pct = if unit_is_percent {
        level
    } else {
        let cap = capacity.filter(|c| *c > 0)?;
        level / f64::from(cap) * 100.0
    };
    Some((pct.clamp(0.0, 100.0) * 100.0).round() / 100.0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// HP's private serial is PML-encoded: a type/length prefix, then the text.
fn hp_serial(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|b| *b >= 0x20)?;
    display_text(&bytes[start..])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The hrDeviceIndex of the printer: the first row whose hrDeviceType is
/// hrDevicePrinter, else the first row.
fn printer_device_index(data: &MibData) -> Option<i32> {
    let rows = data.table(oids::HR_DEVICE_ENTRY);
    let printer = oid(oids::HR_DEVICE_PRINTER);
    let index_of = |idx: &Vec<u32>| idx.first().and_then(|i| i32::try_from(*i).ok());
    rows.iter()
        .find(|(_, cols)| cols.get(&2).and_then(|v| v.as_oid()) == Some(&printer))
        .or_else(|| rows.iter().next())
        .and_then(|(idx, _)| index_of(idx))
}

/// Identity from the system group, host resources, Printer-MIB and interfaces.
pub fn identity(data: &MibData, ip: &str) -> Identity {
    let sys_object_id = data
        .get(oids::SYS_OBJECT_ID)
        .and_then(|v| v.as_oid())
        .cloned();
    let enterprise = sys_object_id
        .as_ref()
        .and_then(|o| o.suffix(&oid(oids::ENTERPRISES)))
        .and_then(|s| s.first().copied());
    let printer_index = printer_device_index(data);
    let hr_rows = data.table(oids::HR_DEVICE_ENTRY);
    let model = printer_index
        .and_then(|i| u32::try_from(i).ok())
        .and_then(|i| hr_rows.get(&vec![i]))
        .and_then(|cols| text_of(cols.get(&3).copied()));
    let sys_descr = text_of(data.get(oids::SYS_DESCR));
    let mib_serial = text_of(data.get(oids::PRT_GENERAL_SERIAL))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let vendor_serial = if enterprise == Some(11) {
        data.get(oids::HP_SERIAL)
            .and_then(SnmpValue::as_bytes)
            .and_then(hp_serial)
    } else {
        None
    };
    let (device_id, device_id_source, serial) = match (mib_serial, vendor_serial) {
        (Some(s), _) => (s.clone(), DeviceIdSource::PrinterMib, Some(s)),
        (None, Some(s)) => (s.clone(), DeviceIdSource::Vendor, Some(s)),
        (None, None) => (format!("addr:{ip}"), DeviceIdSource::Address, None),
    };
    let mac_address = data
        .column(oids::IF_PHYS_ADDRESS)
        .filter_map(SnmpValue::as_bytes)
        .find(|b| !b.is_empty() && b.iter().any(|x| *x != 0))
        .map(mac);
    Identity {
        device_id,
        device_id_source,
        serial,
        vendor: enterprise.and_then(vendor_of).map(str::to_string),
        enterprise,
        model: model.or_else(|| sys_descr.clone()),
        sys_descr,
        sys_object_id: sys_object_id.map(|o| o.to_string()),
        sys_name: text_of(data.get(oids::SYS_NAME)),
        sys_contact: text_of(data.get(oids::SYS_CONTACT)),
        sys_location: text_of(data.get(oids::SYS_LOCATION)),
        sys_uptime_ticks: data.get(oids::SYS_UPTIME).and_then(|v| v.as_i64()),
        mac_address,
        printer_device_index: printer_index,
    }
}

/// hrDeviceStatus, hrPrinterStatus and hrPrinterDetectedErrorState of the printer device.
pub fn status(data: &MibData, printer_index: Option<i32>) -> Status {
    let wanted = printer_index.and_then(|i| u32::try_from(i).ok());
    let hr = data.table(oids::HR_DEVICE_ENTRY);
    let dev_row = wanted.and_then(|i| hr.get(&vec![i]));
    let prt = data.table(oids::HR_PRINTER_ENTRY);
    let prt_row = wanted
        .and_then(|i| prt.get(&vec![i]))
        .or_else(|| prt.values().next());
    let error_bytes = prt_row
        .and_then(|c| c.get(&2))
        .and_then(|v| v.as_bytes())
        .filter(|b| !b.is_empty());
    Status {
        hr_device_status: int_of(dev_row.and_then(|c| c.get(&5)))
            .and_then(HrDeviceStatus::from_mib),
        hr_printer_status: int_of(prt_row.and_then(|c| c.get(&1)))
            .and_then(HrPrinterStatus::from_mib),
        detected_errors: error_bytes
            .map(PrinterErrorFlag::decode)
            .unwrap_or_default(),
        detected_error_state_hex: error_bytes.map(hex),
    }
}

/// Split a `hrDeviceIndex.rowIndex` table index.
fn two_part_index(index: &[u32]) -> Option<(i32, i32)> {
    match index {
        [dev, row] => Some((i32::try_from(*dev).ok()?, i32::try_from(*row).ok()?)),
        _ => None,
    }
}

/// prtMarkerSuppliesTable rows.
pub fn supplies(data: &MibData) -> Vec<Supply> {
    data.table(oids::PRT_SUPPLIES_ENTRY)
        .iter()
        .filter_map(|(index, cols)| {
            let (device_index, index) = two_part_index(index)?;
            let supply_type = int_of(cols.get(&5))
                .and_then(SupplyType::from_mib)
                .unwrap_or(SupplyType::Unknown);
            let unit = SupplyUnit::from_mib(int_of(cols.get(&7)).unwrap_or(2));
            let (max_capacity, max_capacity_special) = match int_of(cols.get(&8)) {
                Some(raw) => split_level(raw),
                None => (None, None),
            };
            let (level, level_special) = match int_of(cols.get(&9)) {
                Some(raw) => split_level(raw),
                None => (None, None),
            };
            Some(Supply {
                index,
                device_index,
                supply_type,
                unit,
                description: text_of(cols.get(&6).copied()).unwrap_or_default(),
                max_capacity,
                max_capacity_special,
                level,
                level_special,
                percent: percent_of(level, max_capacity, unit == SupplyUnit::Percent),
            })
        })
        .collect()
}

/// prtInputTable rows.
pub fn trays(data: &MibData) -> Vec<InputTray> {
    data.table(oids::PRT_INPUT_ENTRY)
        .iter()
        .filter_map(|(index, cols)| {
            let (device_index, index) = two_part_index(index)?;
            let (max_capacity, max_capacity_special) = match int_of(cols.get(&9)) {
                Some(raw) => split_level(raw),
                None => (None, None),
            };
            let (level, level_special) = match int_of(cols.get(&10)) {
                Some(raw) => split_level(raw),
                None => (None, None),
            };
            Some(InputTray {
                index,
                device_index,
                name: text_of(cols.get(&13).copied()),
                media_name: text_of(cols.get(&12).copied()),
                max_capacity,
                max_capacity_special,
                level,
                level_special,
                percent: percent_of(level, max_capacity, false),
            })
        })
        .collect()
}

/// prtMarkerTable rows that carry a life count.
pub fn counters(data: &MibData) -> Vec<MarkerCounter> {
    data.table(oids::PRT_MARKER_ENTRY)
        .iter()
        .filter_map(|(index, cols)| {
            let (device_index, marker_index) = two_part_index(index)?;
            Some(MarkerCounter {
                marker_index,
                device_index,
                unit: CounterUnit::from_mib(int_of(cols.get(&3)).unwrap_or(2)),
                life_count: int_of(cols.get(&4))?,
                power_on_count: int_of(cols.get(&5)),
                event: Default::default(),
                wrap_modulus: None,
                previous_life_count: None,
            })
        })
        .collect()
}

/// prtAlertTable rows (rows without an alert code are skipped: they cannot
/// be tracked across polls).
pub fn alerts(data: &MibData) -> Vec<AlertRow> {
    data.table(oids::PRT_ALERT_ENTRY)
        .iter()
        .filter_map(|(index, cols)| {
            let (device_index, alert_index) = two_part_index(index)?;
            let code_raw = int_of(cols.get(&7))?;
            Some(AlertRow {
                device_index,
                alert_index,
                severity: AlertSeverity::from_mib(int_of(cols.get(&2)).unwrap_or(1)),
                group: int_of(cols.get(&4)).map(alert_group),
                group_index: i32_of(cols.get(&5)),
                location: i32_of(cols.get(&6)),
                code: alert_code(code_raw),
                code_raw: i32::try_from(code_raw).unwrap_or(i32::MAX),
                description: text_of(cols.get(&8).copied()),
                time_ticks: int_of(cols.get(&9)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::records::LevelSpecial;

    fn put(d: &mut MibData, arcs: &[u32], v: SnmpValue) {
        d.extend([(oid(arcs), v)]);
    }

    fn col(entry: &[u32], rest: &[u32]) -> Vec<u32> {
        let mut v = entry.to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn display_text_rules() {
        assert_eq!(
            display_text(b"Black\0 Toner \0  "),
            Some("Black Toner".into())
        );
        assert_eq!(
            display_text(b"Gr\xfcn"),
            Some("Gr\u{fc}n".into()),
            "Latin-1 fallback"
        );
        assert_eq!(display_text("Grün".as_bytes()), Some("Grün".into()));
        assert_eq!(display_text(b"\0\0"), None);
        let long = vec![b'x'; 400];
        assert_eq!(display_text(&long).unwrap().len(), 255);
        // A cut never splits a UTF-8 character.
        let mut s = "a".repeat(254);
        s.push('é');
        assert_eq!(display_text(s.as_bytes()).unwrap().len(), 254);
    }

    #[test]
    fn percent_rules() {
        assert_eq!(percent_of(Some(50), Some(200), false), Some(25.0));
        assert_eq!(percent_of(Some(300), Some(200), false), Some(100.0));
        assert_eq!(percent_of(Some(5), None, false), None);
        assert_eq!(percent_of(Some(5), Some(0), false), None);
        assert_eq!(percent_of(Some(42), None, true), Some(42.0));
        assert_eq!(percent_of(None, Some(100), false), None);
    }

    #[test]
    fn supplies_with_special_values_and_missing_columns() {
        let e = oids::PRT_SUPPLIES_ENTRY;
        let mut d = MibData::default();
        put(
            &mut d,
            &col(e, &[6, 1, 1]),
            SnmpValue::OctetString(b"Black Toner\0".to_vec()),
        );
        put(&mut d, &col(e, &[8, 1, 1]), SnmpValue::Integer(-2));
        put(&mut d, &col(e, &[9, 1, 1]), SnmpValue::Integer(-3));
        put(&mut d, &col(e, &[5, 1, 2]), SnmpValue::Integer(4));
        put(
            &mut d,
            &col(e, &[6, 1, 2]),
            SnmpValue::OctetString(b"Waste".to_vec()),
        );
        put(&mut d, &col(e, &[8, 1, 2]), SnmpValue::Integer(1000));
        put(&mut d, &col(e, &[9, 1, 2]), SnmpValue::Integer(250));
        put(&mut d, &col(e, &[9, 1, 3]), SnmpValue::NoSuchInstance);
        let s = supplies(&d);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].supply_type, SupplyType::Unknown);
        assert_eq!(s[0].description, "Black Toner");
        assert_eq!(s[0].max_capacity_special, Some(LevelSpecial::Unknown));
        assert_eq!(s[0].level_special, Some(LevelSpecial::SomeRemaining));
        assert_eq!(s[0].percent, None);
        assert_eq!(s[1].supply_type, SupplyType::WasteToner);
        assert_eq!(s[1].percent, Some(25.0));
    }

    #[test]
    fn identity_and_status() {
        let mut d = MibData::default();
        put(
            &mut d,
            oids::SYS_OBJECT_ID,
            SnmpValue::ObjectId(oid(&[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 1])),
        );
        put(
            &mut d,
            oids::SYS_DESCR,
            SnmpValue::OctetString(b"HP ETHERNET".to_vec()),
        );
        put(
            &mut d,
            oids::HP_SERIAL,
            SnmpValue::OctetString(b"\x01\x15VNCRC48198".to_vec()),
        );
        let hr = oids::HR_DEVICE_ENTRY;
        put(
            &mut d,
            &col(hr, &[2, 1]),
            SnmpValue::ObjectId(oid(&[1, 3, 6, 1, 2, 1, 25, 3, 1, 1])),
        );
        put(
            &mut d,
            &col(hr, &[2, 7]),
            SnmpValue::ObjectId(oid(oids::HR_DEVICE_PRINTER)),
        );
        put(
            &mut d,
            &col(hr, &[3, 7]),
            SnmpValue::OctetString(b"HP LaserJet".to_vec()),
        );
        put(&mut d, &col(hr, &[5, 7]), SnmpValue::Integer(3));
        put(
            &mut d,
            &col(oids::HR_PRINTER_ENTRY, &[2, 7]),
            SnmpValue::OctetString(vec![0x20]),
        );
        put(
            &mut d,
            &col(oids::IF_PHYS_ADDRESS, &[1]),
            SnmpValue::OctetString(vec![]),
        );
        put(
            &mut d,
            &col(oids::IF_PHYS_ADDRESS, &[2]),
            SnmpValue::OctetString(vec![0, 0x1b, 0xa9, 1, 2, 3]),
        );
        let id = identity(&d, "10.0.0.9");
        assert_eq!(id.device_id, "VNCRC48198");
        assert_eq!(id.device_id_source, DeviceIdSource::Vendor);
        assert_eq!(id.vendor.as_deref(), Some("HP"));
        assert_eq!(id.model.as_deref(), Some("HP LaserJet"));
        assert_eq!(id.printer_device_index, Some(7));
        assert_eq!(id.mac_address.as_deref(), Some("00:1b:a9:01:02:03"));
        let st = status(&d, id.printer_device_index);
        assert_eq!(st.hr_device_status, Some(HrDeviceStatus::Warning));
        assert_eq!(st.detected_errors, vec![PrinterErrorFlag::LowToner]);
        assert_eq!(st.detected_error_state_hex.as_deref(), Some("20"));

        // Empty error state: no flags, hex null. No serial: addr:<ip>.
        let mut d = MibData::default();
        put(
            &mut d,
            &col(oids::HR_PRINTER_ENTRY, &[2, 1]),
            SnmpValue::OctetString(vec![]),
        );
        let st = status(&d, None);
        assert!(st.detected_errors.is_empty());
        assert_eq!(st.detected_error_state_hex, None);
        let id = identity(&d, "10.0.0.9");
        assert_eq!(id.device_id, "addr:10.0.0.9");
        assert_eq!(id.device_id_source, DeviceIdSource::Address);
    }

    #[test]
    fn alerts_and_counters() {
        let a = oids::PRT_ALERT_ENTRY;
        let mut d = MibData::default();
        put(&mut d, &col(a, &[2, 1, 4]), SnmpValue::Integer(3));
        put(&mut d, &col(a, &[4, 1, 4]), SnmpValue::Integer(8));
        put(&mut d, &col(a, &[5, 1, 4]), SnmpValue::Integer(2));
        put(&mut d, &col(a, &[7, 1, 4]), SnmpValue::Integer(808));
        put(
            &mut d,
            &col(a, &[8, 1, 4]),
            SnmpValue::OctetString(b"Tray 2 empty".to_vec()),
        );
        put(&mut d, &col(a, &[9, 1, 4]), SnmpValue::TimeTicks(1234));
        let rows = alerts(&d);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].code, "inputMediaSupplyEmpty");
        assert_eq!(rows[0].group.as_deref(), Some("input"));
        assert_eq!(rows[0].severity, AlertSeverity::Critical);
        assert_eq!(rows[0].time_ticks, Some(1234));
        let m = oids::PRT_MARKER_ENTRY;
        put(&mut d, &col(m, &[3, 1, 1]), SnmpValue::Integer(7));
        put(&mut d, &col(m, &[4, 1, 1]), SnmpValue::Counter32(12345));
        let c = counters(&d);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].unit, CounterUnit::Impressions);
        assert_eq!(c[0].life_count, 12345);
        assert_eq!(c[0].power_on_count, None);
    }
}
