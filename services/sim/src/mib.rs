//! The MIB a simulated printer serves: OIDs, values, and the walk order.
//!
//! A [`Mib`] is an ordered map from instance OID to value plus the set of
//! object types it implements. The map gives GETNEXT its lexicographic
//! successor; the object set tells a GET whether a missing name is an
//! unknown object (`noSuchObject`) or a known column/scalar without that
//! instance (`noSuchInstance`) — e.g. an alert row that has cleared.
//!
//! OIDs follow RFC 1213 (system, interfaces), RFC 2790 (Host Resources:
//! hrDeviceTable, hrPrinterTable) and RFC 3805 (Printer-MIB).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::str::FromStr;

use fleetpulse_core::records::PrinterErrorFlag;

use crate::model::{Activity, Condition, Health, LevelUnit, Printer, SupplyKind};

/// An OBJECT IDENTIFIER; orders like SNMP does (arc by arc, prefix first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(Vec<u32>);

impl Oid {
    /// An OID from its arcs.
    pub fn new(arcs: impl Into<Vec<u32>>) -> Self {
        Oid(arcs.into())
    }

    /// The arcs.
    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    /// Whether `self` starts with `prefix` (or equals it).
    pub fn starts_with(&self, prefix: &[u32]) -> bool {
        self.0.starts_with(prefix)
    }

    fn join(object: &[u32], instance: &[u32]) -> Self {
        let mut v = Vec::with_capacity(object.len() + instance.len());
        v.extend_from_slice(object);
        v.extend_from_slice(instance);
        Oid(v)
    }
}

// `Vec<u32>` and `[u32]` order identically, so maps keyed by `Oid` can be
// searched with a plain slice.
impl Borrow<[u32]> for Oid {
    fn borrow(&self) -> &[u32] {
        &self.0
    }
}

impl From<&[u32]> for Oid {
    fn from(arcs: &[u32]) -> Self {
        Oid(arcs.to_vec())
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for arc in &self.0 {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            write!(f, "{arc}")?;
        }
        Ok(())
    }
}

/// Text that is not a dotted OID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dotted OID: {0:?}")]
pub struct OidParseError(String);

impl FromStr for Oid {
    type Err = OidParseError;

    /// Parses `1.3.6.1` (a leading dot is accepted, as net-snmp prints it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.strip_prefix('.').unwrap_or(s);
        t.split('.')
            .map(|a| a.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map(Oid)
            .map_err(|_| OidParseError(s.to_string()))
    }
}

/// A value of the SMIv2 types the simulator serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// INTEGER / Integer32 / enumerations.
    Integer(i64),
    /// OCTET STRING (text, MAC addresses, BITS).
    OctetString(Vec<u8>),
    /// OBJECT IDENTIFIER.
    ObjectId(Oid),
    /// Counter32.
    Counter32(u32),
    /// Gauge32.
    Gauge32(u32),
    /// TimeTicks (hundredths of a second).
    TimeTicks(u32),
}

impl Value {
    fn text(s: &str) -> Self {
        Value::OctetString(s.as_bytes().to_vec())
    }

    /// The number, for the integer-like types.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(v) => Some(*v),
            Value::Counter32(v) | Value::Gauge32(v) | Value::TimeTicks(v) => Some(i64::from(*v)),
            _ => None,
        }
    }

    /// The text, for UTF-8 octet strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::OctetString(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// sysDescr.0
pub const SYS_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
/// sysObjectID.0
pub const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];
/// sysUpTime.0
pub const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
/// sysName.0
pub const SYS_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
/// ifPhysAddress.1
pub const IF_PHYS_ADDRESS: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 6, 1];
/// hrDeviceStatus.1
pub const HR_DEVICE_STATUS: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 2, 1, 5, 1];
/// hrPrinterStatus.1
pub const HR_PRINTER_STATUS: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 5, 1, 1, 1];
/// hrPrinterDetectedErrorState.1
pub const HR_PRINTER_ERROR_STATE: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 5, 1, 2, 1];
/// prtGeneralSerialNumber.1
pub const PRT_GENERAL_SERIAL: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 5, 1, 1, 17, 1];
/// prtMarkerLifeCount.1.1
pub const PRT_MARKER_LIFE_COUNT: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1];
/// prtInputEntry (columns follow).
pub const PRT_INPUT_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 8, 2, 1];
/// prtMarkerSuppliesEntry (columns follow).
pub const PRT_SUPPLIES_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 11, 1, 1];
/// prtAlertEntry (columns follow).
pub const PRT_ALERT_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 18, 1, 1];

const SYSTEM: &[u32] = &[1, 3, 6, 1, 2, 1, 1];
const IF_NUMBER: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 1];
const IF_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1];
const HR_DEVICE_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 2, 1];
const HR_PRINTER_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 5, 1];
/// hrDevicePrinter, the hrDeviceType of a printer.
const HR_DEVICE_PRINTER: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 1, 5];
const PRT_GENERAL_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 5, 1, 1];
const PRT_MARKER_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 10, 2, 1];

/// hrDeviceIndex of the printer device.
const DEVICE: u32 = 1;

/// Result of looking up one name for a GET.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Lookup<'a> {
    Found(&'a Value),
    NoSuchObject,
    NoSuchInstance,
}

/// A printer's MIB at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mib {
    values: BTreeMap<Oid, Value>,
    objects: BTreeSet<Oid>,
}

impl Mib {
    /// All instances and their values, in walk order.
    pub fn values(&self) -> &BTreeMap<Oid, Value> {
        &self.values
    }

    /// All instances and their values, in walk order.
    pub fn into_values(self) -> BTreeMap<Oid, Value> {
        self.values
    }

    /// The value of one instance.
    pub fn value(&self, oid: &[u32]) -> Option<&Value> {
        self.values.get(oid)
    }

    /// GET semantics for one name.
    pub(crate) fn get(&self, oid: &[u32]) -> Lookup<'_> {
        if let Some(v) = self.values.get(oid) {
            return Lookup::Found(v);
        }
        let known_object = (1..=oid.len()).any(|n| self.objects.contains(&oid[..n]));
        if known_object {
            Lookup::NoSuchInstance
        } else {
            Lookup::NoSuchObject
        }
    }

    /// GETNEXT semantics: the first instance after `oid`.
    pub(crate) fn next(&self, oid: &[u32]) -> Option<(&Oid, &Value)> {
        self.values
            .range::<[u32], _>((Bound::Excluded(oid), Bound::Unbounded))
            .next()
    }

    /// Replace sysUpTime (the agent sets it from the exact sim time).
    pub(crate) fn set_uptime(&mut self, ticks: u32) {
        self.values
            .insert(Oid::from(SYS_UPTIME), Value::TimeTicks(ticks));
    }

    fn put(&mut self, object: &[u32], instance: &[u32], value: Value) {
        self.declare(object);
        self.values.insert(Oid::join(object, instance), value);
    }

    /// Register an object type that may have no instances right now.
    fn declare(&mut self, object: &[u32]) {
        if !self.objects.contains(object) {
            self.objects.insert(Oid::from(object));
        }
    }
}

fn col(entry: &[u32], column: u32) -> Vec<u32> {
    let mut v = entry.to_vec();
    v.push(column);
    v
}

/// One prtAlertTable row's column values.
struct AlertRow {
    severity: i64,
    training: i64,
    group: i64,
    group_index: i64,
    location: i64,
    code: i64,
    description: String,
}

fn alert_row(printer: &Printer, condition: Condition) -> AlertRow {
    let profile = &printer.profile;
    let tray_name = |i: usize| {
        profile
            .trays
            .get(i)
            .map(|t| t.name.clone())
            .unwrap_or_default()
    };
    let supply = |i: usize| {
        profile
            .supplies
            .get(i)
            .map(|s| match s.kind {
                SupplyKind::Toner(c) => c.name().to_string(),
                _ => s.description.clone(),
            })
            .unwrap_or_default()
    };
    // Severity: critical(3) / warning(4). Training: untrained(3) / trained(4).
    // Group: input(8), markerSupplies(11), mediaPath(13). Codes: RFC 3805 PrtAlertCodeTC.
    match condition {
        Condition::Jam(area) => AlertRow {
            severity: 3,
            training: 3,
            group: 13,
            group_index: 1,
            location: i64::from(area),
            code: 8,
            description: format!("Paper jam in area {area}"),
        },
        Condition::TrayLow(i) => AlertRow {
            severity: 4,
            training: 3,
            group: 8,
            group_index: i as i64 + 1,
            location: -2,
            code: 807,
            description: format!("{} low", tray_name(i)),
        },
        Condition::TrayEmpty(i) => AlertRow {
            severity: 3,
            training: 3,
            group: 8,
            group_index: i as i64 + 1,
            location: -2,
            code: 808,
            description: format!("{} empty", tray_name(i)),
        },
        Condition::TonerLow(i) => AlertRow {
            severity: 4,
            training: 4,
            group: 11,
            group_index: i as i64 + 1,
            location: -2,
            code: 1104,
            description: format!("{} toner low", supply(i)),
        },
        Condition::TonerEmpty(i) => AlertRow {
            severity: 3,
            training: 4,
            group: 11,
            group_index: i as i64 + 1,
            location: -2,
            code: 1101,
            description: format!("{} toner empty", supply(i)),
        },
    }
}

/// Render a printer's current state, with sysUpTime `uptime`.
pub(crate) fn build(printer: &Printer, uptime: u32) -> Mib {
    let p = &printer.profile;
    let s = &printer.state;
    let mut mib = Mib::default();

    // system (RFC 1213)
    mib.put(&col(SYSTEM, 1), &[0], Value::text(&p.sys_descr));
    mib.put(
        &col(SYSTEM, 2),
        &[0],
        Value::ObjectId(Oid::from(p.vendor.object_id)),
    );
    mib.put(&col(SYSTEM, 3), &[0], Value::TimeTicks(uptime));
    mib.put(&col(SYSTEM, 4), &[0], Value::text(&p.sys_contact));
    mib.put(&col(SYSTEM, 5), &[0], Value::text(&p.sys_name));
    mib.put(&col(SYSTEM, 6), &[0], Value::text(&p.sys_location));
    mib.put(&col(SYSTEM, 7), &[0], Value::Integer(72));

    // interfaces (RFC 1213): one Ethernet port.
    mib.put(IF_NUMBER, &[0], Value::Integer(1));
    mib.put(&col(IF_ENTRY, 1), &[1], Value::Integer(1));
    mib.put(&col(IF_ENTRY, 2), &[1], Value::text("Ethernet"));
    mib.put(&col(IF_ENTRY, 3), &[1], Value::Integer(6));
    mib.put(&col(IF_ENTRY, 5), &[1], Value::Gauge32(1_000_000_000));
    mib.put(&col(IF_ENTRY, 6), &[1], Value::OctetString(p.mac.to_vec()));
    mib.put(&col(IF_ENTRY, 8), &[1], Value::Integer(1));

    // hrDeviceTable / hrPrinterTable (RFC 2790)
    let health = s.health(p);
    mib.put(&col(HR_DEVICE_ENTRY, 1), &[DEVICE], Value::Integer(1));
    mib.put(
        &col(HR_DEVICE_ENTRY, 2),
        &[DEVICE],
        Value::ObjectId(Oid::from(HR_DEVICE_PRINTER)),
    );
    mib.put(&col(HR_DEVICE_ENTRY, 3), &[DEVICE], Value::text(&p.model));
    mib.put(
        &col(HR_DEVICE_ENTRY, 4),
        &[DEVICE],
        Value::ObjectId(Oid::new(vec![0, 0])),
    );
    let hr_status = match health {
        Health::Running => 2,
        Health::Warning => 3,
        Health::Down => 5,
    };
    mib.put(
        &col(HR_DEVICE_ENTRY, 5),
        &[DEVICE],
        Value::Integer(hr_status),
    );
    mib.put(
        &col(HR_DEVICE_ENTRY, 6),
        &[DEVICE],
        Value::Counter32(s.device_errors),
    );
    let printer_status = match s.activity(p) {
        Activity::Other => 1,
        Activity::Idle => 3,
        Activity::Printing => 4,
        Activity::Warmup => 5,
    };
    mib.put(
        &col(HR_PRINTER_ENTRY, 1),
        &[DEVICE],
        Value::Integer(printer_status),
    );
    mib.put(
        &col(HR_PRINTER_ENTRY, 2),
        &[DEVICE],
        Value::OctetString(PrinterErrorFlag::encode(&s.error_flags(p)).to_vec()),
    );

    // prtGeneralTable
    mib.put(
        &col(PRT_GENERAL_ENTRY, 16),
        &[DEVICE],
        Value::text(&p.model),
    );
    mib.put(
        &col(PRT_GENERAL_ENTRY, 17),
        &[DEVICE],
        Value::text(&p.serial),
    );

    // prtInputTable: type sheetFeedAutoRemovableTray(3), capacity unit sheets(8).
    for (i, (spec, tray)) in p.trays.iter().zip(&s.trays).enumerate() {
        let idx = [DEVICE, i as u32 + 1];
        mib.put(&col(PRT_INPUT_ENTRY, 2), &idx, Value::Integer(3));
        mib.put(&col(PRT_INPUT_ENTRY, 8), &idx, Value::Integer(8));
        mib.put(
            &col(PRT_INPUT_ENTRY, 9),
            &idx,
            Value::Integer(i64::from(spec.capacity)),
        );
        mib.put(
            &col(PRT_INPUT_ENTRY, 10),
            &idx,
            Value::Integer(i64::from(tray.level)),
        );
        mib.put(&col(PRT_INPUT_ENTRY, 12), &idx, Value::text(spec.media));
        mib.put(&col(PRT_INPUT_ENTRY, 13), &idx, Value::text(&spec.name));
    }

    // prtMarkerTable: electrophotographicLaser(4), counter unit impressions(7).
    let marker = [DEVICE, 1];
    mib.put(&col(PRT_MARKER_ENTRY, 2), &marker, Value::Integer(4));
    mib.put(&col(PRT_MARKER_ENTRY, 3), &marker, Value::Integer(7));
    mib.put(
        &col(PRT_MARKER_ENTRY, 4),
        &marker,
        Value::Counter32(s.life_count),
    );
    mib.put(
        &col(PRT_MARKER_ENTRY, 5),
        &marker,
        Value::Counter32(s.power_on_count),
    );
    mib.put(
        &col(PRT_MARKER_ENTRY, 6),
        &marker,
        Value::Integer(if p.colour { 4 } else { 1 }),
    );

    // prtMarkerSuppliesTable. Class: supplyThatIsConsumed(3) /
    // receptacleThatIsFilled(4). Type: toner(3), wasteToner(4), opc(9).
    // Unit: impressions(7) / percent(19).
    for (i, (spec, supply)) in p.supplies.iter().zip(&s.supplies).enumerate() {
        let idx = [DEVICE, i as u32 + 1];
        let (class, kind) = match spec.kind {
            SupplyKind::Toner(_) => (3, 3),
            SupplyKind::Drum => (3, 9),
            SupplyKind::Waste => (4, 4),
        };
        let unit = match spec.unit {
            LevelUnit::Percent => 19,
            LevelUnit::Impressions => 7,
        };
        mib.put(&col(PRT_SUPPLIES_ENTRY, 2), &idx, Value::Integer(1));
        mib.put(&col(PRT_SUPPLIES_ENTRY, 4), &idx, Value::Integer(class));
        mib.put(&col(PRT_SUPPLIES_ENTRY, 5), &idx, Value::Integer(kind));
        mib.put(
            &col(PRT_SUPPLIES_ENTRY, 6),
            &idx,
            Value::text(&spec.description),
        );
        mib.put(&col(PRT_SUPPLIES_ENTRY, 7), &idx, Value::Integer(unit));
        mib.put(
            &col(PRT_SUPPLIES_ENTRY, 8),
            &idx,
            Value::Integer(spec.max_capacity()),
        );
        mib.put(
            &col(PRT_SUPPLIES_ENTRY, 9),
            &idx,
            Value::Integer(spec.level(supply.remaining)),
        );
    }

    // prtAlertTable: one row per open condition; rows come and go.
    for c in 2..=9 {
        mib.declare(&col(PRT_ALERT_ENTRY, c));
    }
    for alert in &s.alerts {
        let row = alert_row(printer, alert.condition);
        let idx = [DEVICE, alert.index as u32];
        mib.put(&col(PRT_ALERT_ENTRY, 2), &idx, Value::Integer(row.severity));
        mib.put(&col(PRT_ALERT_ENTRY, 3), &idx, Value::Integer(row.training));
        mib.put(&col(PRT_ALERT_ENTRY, 4), &idx, Value::Integer(row.group));
        mib.put(
            &col(PRT_ALERT_ENTRY, 5),
            &idx,
            Value::Integer(row.group_index),
        );
        mib.put(&col(PRT_ALERT_ENTRY, 6), &idx, Value::Integer(row.location));
        mib.put(&col(PRT_ALERT_ENTRY, 7), &idx, Value::Integer(row.code));
        mib.put(
            &col(PRT_ALERT_ENTRY, 8),
            &idx,
            Value::text(&row.description),
        );
        mib.put(
            &col(PRT_ALERT_ENTRY, 9),
            &idx,
            Value::TimeTicks(alert.time_ticks),
        );
    }
    mib
}
