//! Rust mirrors of the Avro records in `schemas/`.
//!
//! Field names and enum symbols match the `.avsc` files exactly; the test
//! `schemas_round_trip` in this crate encodes a sample of each type with its
//! schema and decodes it back, so a drift between the two fails the build.
//! Every record starts with the same six envelope fields.

use serde::{Deserialize, Serialize};

/// The six fields every record carries, in schema order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUID v7.
    pub event_id: String,
    /// Customer owning the connector.
    pub tenant_id: String,
    /// Connector that produced the record.
    pub connector_id: String,
    /// Device serial number.
    pub device_id: String,
    /// Milliseconds since the epoch, UTC.
    pub observed_at: i64,
    /// Contract version of the record.
    pub schema_version: i32,
}

/// Current contract version written by this build.
pub const SCHEMA_VERSION: i32 = 1;

macro_rules! envelope_fields {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            /// UUID v7.
            pub event_id: String,
            /// Customer owning the connector.
            pub tenant_id: String,
            /// Connector that produced the record.
            pub connector_id: String,
            /// Device serial number.
            pub device_id: String,
            /// Milliseconds since the epoch, UTC.
            pub observed_at: i64,
            /// Contract version of the record.
            pub schema_version: i32,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $name {
            /// The envelope fields of this record.
            pub fn envelope(&self) -> Envelope {
                Envelope {
                    event_id: self.event_id.clone(),
                    tenant_id: self.tenant_id.clone(),
                    connector_id: self.connector_id.clone(),
                    device_id: self.device_id.clone(),
                    observed_at: self.observed_at,
                    schema_version: self.schema_version,
                }
            }
        }
    };
}

/// Protocol a device answered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollProtocol {
    /// SNMP v1/v2c/v3.
    Snmp,
    /// IPP Get-Printer-Attributes.
    Ipp,
    /// HTTP(S) device API.
    Http,
}

envelope_fields! {
    /// `DeviceHeartbeat`.
    pub struct DeviceHeartbeat {
        /// Protocol the device answered on.
        pub protocol: PollProtocol,
        /// Address polled.
        pub ip_address: Option<String>,
        /// Poll round trip, ms.
        pub response_ms: i32,
        /// sysUpTime, hundredths of a second.
        pub sys_uptime_ticks: Option<i64>,
    }
}

/// hrDeviceStatus (RFC 2790).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HrDeviceStatus {
    /// 1
    Unknown,
    /// 2
    Running,
    /// 3
    Warning,
    /// 4
    Testing,
    /// 5
    Down,
}

impl HrDeviceStatus {
    /// From the MIB integer.
    pub fn from_mib(v: i64) -> Option<Self> {
        Some(match v {
            1 => Self::Unknown,
            2 => Self::Running,
            3 => Self::Warning,
            4 => Self::Testing,
            5 => Self::Down,
            _ => return None,
        })
    }
}

/// hrPrinterStatus (RFC 2790).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HrPrinterStatus {
    /// 1
    Other,
    /// 2
    Unknown,
    /// 3
    Idle,
    /// 4
    Printing,
    /// 5
    Warmup,
}

impl HrPrinterStatus {
    /// From the MIB integer.
    pub fn from_mib(v: i64) -> Option<Self> {
        Some(match v {
            1 => Self::Other,
            2 => Self::Unknown,
            3 => Self::Idle,
            4 => Self::Printing,
            5 => Self::Warmup,
            _ => return None,
        })
    }
}

/// One bit of hrPrinterDetectedErrorState, in bit order (bit 0 = MSB of octet 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PrinterErrorFlag {
    /// bit 0
    LowPaper,
    /// bit 1
    NoPaper,
    /// bit 2
    LowToner,
    /// bit 3
    NoToner,
    /// bit 4
    DoorOpen,
    /// bit 5
    Jammed,
    /// bit 6
    Offline,
    /// bit 7
    ServiceRequested,
    /// bit 8
    InputTrayMissing,
    /// bit 9
    OutputTrayMissing,
    /// bit 10
    MarkerSupplyMissing,
    /// bit 11
    OutputNearFull,
    /// bit 12
    OutputFull,
    /// bit 13
    InputTrayEmpty,
    /// bit 14
    OverduePreventMaint,
}

impl PrinterErrorFlag {
    /// Flags in bit order.
    pub const BITS: [PrinterErrorFlag; 15] = [
        Self::LowPaper,
        Self::NoPaper,
        Self::LowToner,
        Self::NoToner,
        Self::DoorOpen,
        Self::Jammed,
        Self::Offline,
        Self::ServiceRequested,
        Self::InputTrayMissing,
        Self::OutputTrayMissing,
        Self::MarkerSupplyMissing,
        Self::OutputNearFull,
        Self::OutputFull,
        Self::InputTrayEmpty,
        Self::OverduePreventMaint,
    ];

    /// Decode the BITS octets (MSB first) into named flags.
    pub fn decode(octets: &[u8]) -> Vec<PrinterErrorFlag> {
        Self::BITS
            .iter()
            .enumerate()
            .filter(|(bit, _)| {
                octets
                    .get(bit / 8)
                    .is_some_and(|o| o & (0x80 >> (bit % 8)) != 0)
            })
            .map(|(_, f)| *f)
            .collect()
    }

    /// Encode flags into the two BITS octets.
    pub fn encode(flags: &[PrinterErrorFlag]) -> [u8; 2] {
        let mut out = [0u8; 2];
        for f in flags {
            if let Some(bit) = Self::BITS.iter().position(|b| b == f) {
                out[bit / 8] |= 0x80 >> (bit % 8);
            }
        }
        out
    }
}

/// prtMarkerSuppliesType (RFC 3805 PrtMarkerSuppliesTypeTC), declared in MIB
/// order: the variant at position `i` of [`SupplyType::ALL`] is MIB value `i + 1`.
macro_rules! supply_types {
    ($($variant:ident),* $(,)?) => {
        /// prtMarkerSuppliesType (RFC 3805 PrtMarkerSuppliesTypeTC).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(missing_docs)]
        pub enum SupplyType { $($variant),* }

        impl SupplyType {
            /// Every type, in MIB order (1 = other … 36 = matteInk).
            pub const ALL: &'static [SupplyType] = &[$(SupplyType::$variant),*];
        }
    };
}

supply_types!(
    Other,
    Unknown,
    Toner,
    WasteToner,
    Ink,
    InkCartridge,
    InkRibbon,
    WasteInk,
    Opc,
    Developer,
    FuserOil,
    SolidWax,
    RibbonWax,
    WasteWax,
    Fuser,
    CoronaWire,
    FuserOilWick,
    CleanerUnit,
    FuserCleaningPad,
    TransferUnit,
    TonerCartridge,
    FuserOiler,
    Water,
    WasteWater,
    GlueWaterAdditive,
    WastePaper,
    BindingSupply,
    BandingSupply,
    StitchingWire,
    ShrinkWrap,
    PaperWrap,
    Staples,
    Inserts,
    Covers,
    MatteToner,
    MatteInk,
);

impl SupplyType {
    /// From the MIB integer (1 = other … 36 = matteInk); `None` when out of range.
    pub fn from_mib(v: i64) -> Option<Self> {
        v.checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| Self::ALL.get(i))
            .copied()
    }

    /// Whether the supply fills up as it is used (waste containers).
    pub fn is_waste(self) -> bool {
        matches!(
            self,
            SupplyType::WasteToner
                | SupplyType::WasteInk
                | SupplyType::WasteWax
                | SupplyType::WasteWater
                | SupplyType::WastePaper
        )
    }
}

/// prtMarkerSuppliesSupplyUnit (RFC 3805 PrtMarkerSuppliesSupplyUnitTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum SupplyUnit {
    Other,
    Unknown,
    TenThousandthsOfInches,
    Micrometers,
    Impressions,
    Sheets,
    Hours,
    ThousandthsOfOunces,
    TenthsOfGrams,
    HundrethsOfFluidOunces,
    TenthsOfMilliliters,
    Feet,
    Meters,
    Items,
    Percent,
}

impl SupplyUnit {
    /// From the MIB integer.
    pub fn from_mib(v: i64) -> Self {
        use SupplyUnit::*;
        match v {
            1 => Other,
            3 => TenThousandthsOfInches,
            4 => Micrometers,
            7 => Impressions,
            8 => Sheets,
            11 => Hours,
            12 => ThousandthsOfOunces,
            13 => TenthsOfGrams,
            14 => HundrethsOfFluidOunces,
            15 => TenthsOfMilliliters,
            16 => Feet,
            17 => Meters,
            18 => Items,
            19 => Percent,
            _ => Unknown,
        }
    }
}

/// Printer-MIB special values of capacities and levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LevelSpecial {
    /// -1: other / no restriction.
    Unrestricted,
    /// -2: unknown.
    Unknown,
    /// -3: at least one unit remains.
    SomeRemaining,
}

/// A raw Printer-MIB level or capacity split into a number or a special value.
pub fn split_level(raw: i64) -> (Option<i32>, Option<LevelSpecial>) {
    match raw {
        -1 => (None, Some(LevelSpecial::Unrestricted)),
        -2 => (None, Some(LevelSpecial::Unknown)),
        -3 => (None, Some(LevelSpecial::SomeRemaining)),
        v if v >= 0 => (Some(i32::try_from(v).unwrap_or(i32::MAX)), None),
        // Other negatives are out of range for the MIB: treated as unknown.
        _ => (None, Some(LevelSpecial::Unknown)),
    }
}

/// A prtMarkerSuppliesTable row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supply {
    /// prtMarkerSuppliesIndex.
    pub index: i32,
    /// hrDeviceIndex.
    pub device_index: i32,
    /// prtMarkerSuppliesType.
    pub supply_type: SupplyType,
    /// prtMarkerSuppliesSupplyUnit.
    pub unit: SupplyUnit,
    /// prtMarkerSuppliesDescription.
    pub description: String,
    /// Capacity when a number.
    pub max_capacity: Option<i32>,
    /// Capacity when a special value.
    pub max_capacity_special: Option<LevelSpecial>,
    /// Level when a number.
    pub level: Option<i32>,
    /// Level when a special value.
    pub level_special: Option<LevelSpecial>,
    /// Percent full, where computable.
    pub percent: Option<f64>,
}

/// A prtInputTable row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputTray {
    /// prtInputIndex.
    pub index: i32,
    /// hrDeviceIndex.
    pub device_index: i32,
    /// prtInputName.
    pub name: Option<String>,
    /// prtInputMediaName.
    pub media_name: Option<String>,
    /// Capacity when a number.
    pub max_capacity: Option<i32>,
    /// Capacity when a special value.
    pub max_capacity_special: Option<LevelSpecial>,
    /// Level when a number.
    pub level: Option<i32>,
    /// Level when a special value.
    pub level_special: Option<LevelSpecial>,
    /// Percent full, where computable.
    pub percent: Option<f64>,
}

/// A 3D printhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Printhead {
    pub printhead_id: String,
    pub printhead_type: Option<String>,
    pub status: Option<String>,
    pub agent_used_ml: Option<f64>,
    pub installed_at: Option<i64>,
    pub usage_time_s: Option<i64>,
    pub last_error: Option<String>,
}

/// A 3D build unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BuildUnit {
    pub build_unit_id: String,
    pub recycled_material_pct: Option<f64>,
    pub material_quantity_kg: Option<f64>,
    pub non_genuine_material: bool,
    pub expired_material: bool,
}

envelope_fields! {
    /// `DeviceStatus`.
    pub struct DeviceStatus {
        /// Manufacturer from sysObjectID.
        pub vendor: Option<String>,
        /// hrDeviceDescr or sysDescr.
        pub model: Option<String>,
        /// sysDescr.
        pub sys_descr: Option<String>,
        /// sysObjectID.
        pub sys_object_id: Option<String>,
        /// sysName (dropped downstream).
        pub sys_name: Option<String>,
        /// sysContact (dropped downstream).
        pub sys_contact: Option<String>,
        /// sysLocation (generalised downstream).
        pub sys_location: Option<String>,
        /// Address polled.
        pub ip_address: Option<String>,
        /// MAC address (dropped downstream).
        pub mac_address: Option<String>,
        /// hrDeviceStatus.
        pub hr_device_status: Option<HrDeviceStatus>,
        /// hrPrinterStatus.
        pub hr_printer_status: Option<HrPrinterStatus>,
        /// Decoded hrPrinterDetectedErrorState.
        pub detected_errors: Vec<PrinterErrorFlag>,
        /// Raw hrPrinterDetectedErrorState as hex.
        pub detected_error_state_hex: Option<String>,
        /// prtMarkerSuppliesTable.
        pub supplies: Vec<Supply>,
        /// prtInputTable.
        pub input_trays: Vec<InputTray>,
        /// 3D printheads.
        pub printheads: Vec<Printhead>,
        /// 3D build unit.
        pub build_unit: Option<BuildUnit>,
    }
}

/// prtMarkerCounterUnit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum CounterUnit {
    Unknown,
    TenThousandthsOfInches,
    Micrometers,
    Characters,
    Lines,
    Impressions,
    Sheets,
    DotRow,
    Hours,
    Feet,
    Meters,
}

impl CounterUnit {
    /// From the MIB integer.
    pub fn from_mib(v: i64) -> Self {
        use CounterUnit::*;
        match v {
            3 => TenThousandthsOfInches,
            4 => Micrometers,
            5 => Characters,
            6 => Lines,
            7 => Impressions,
            8 => Sheets,
            9 => DotRow,
            11 => Hours,
            16 => Feet,
            17 => Meters,
            _ => Unknown,
        }
    }
}

/// One marker's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerCounter {
    /// prtMarkerIndex.
    pub marker_index: i32,
    /// hrDeviceIndex.
    pub device_index: i32,
    /// prtMarkerCounterUnit.
    pub unit: CounterUnit,
    /// prtMarkerLifeCount.
    pub life_count: i64,
    /// prtMarkerPowerOnCount.
    pub power_on_count: Option<i64>,
    /// What happened to `life_count` since the previous record of this marker.
    #[serde(default)]
    pub event: CounterEvent,
    /// When `event` is `Wrapped`: the modulus it wrapped at.
    #[serde(default)]
    pub wrap_modulus: Option<i64>,
    /// When `event` is `Wrapped` or `Reset`: `life_count` of the previous record.
    #[serde(default)]
    pub previous_life_count: Option<i64>,
}

/// What happened to a marker's life count between two records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CounterEvent {
    /// It grew or stayed the same.
    #[default]
    None,
    /// It passed its modulus (2^32, 1,000,000 or 2^24) and restarted from 0.
    Wrapped,
    /// It went back for another reason (board or counter replaced, reset).
    Reset,
}

envelope_fields! {
    /// `UsageCounters`.
    pub struct UsageCounters {
        /// One entry per marker.
        pub markers: Vec<MarkerCounter>,
    }
}

/// Whether an alert row appeared or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertTransition {
    /// The row appeared.
    Opened,
    /// The row went away.
    Cleared,
}

/// prtAlertSeverityLevel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum AlertSeverity {
    Other,
    Critical,
    Warning,
    WarningBinaryChangeEvent,
}

impl AlertSeverity {
    /// From the MIB integer.
    pub fn from_mib(v: i64) -> Self {
        match v {
            3 => Self::Critical,
            4 => Self::Warning,
            5 => Self::WarningBinaryChangeEvent,
            _ => Self::Other,
        }
    }
}

envelope_fields! {
    /// `AlertEvent`.
    pub struct AlertEvent {
        /// Opened or cleared.
        pub transition: AlertTransition,
        /// prtAlertIndex.
        pub alert_index: i32,
        /// prtAlertSeverityLevel.
        pub severity: AlertSeverity,
        /// prtAlertGroup name.
        pub group: Option<String>,
        /// prtAlertGroupIndex.
        pub group_index: Option<i32>,
        /// prtAlertLocation.
        pub location: Option<i32>,
        /// prtAlertCode name.
        pub code: String,
        /// prtAlertCode number.
        pub code_raw: i32,
        /// prtAlertDescription.
        pub description: Option<String>,
        /// prtAlertTime.
        pub alert_time_ticks: Option<i64>,
    }
}

/// 2D or 3D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum JobKind {
    Print2d,
    Print3d,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum JobCompletion {
    Unknown,
    Completed,
    Canceled,
    Aborted,
    Failed,
    Running,
}

/// A 3D bounding box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BoundingBox {
    pub x_mm: f64,
    pub y_mm: f64,
    pub z_mm: f64,
}

/// A part of a 3D job (never its name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct JobPart {
    pub part_id: String,
    pub bounding_box: Option<BoundingBox>,
    pub volume_cm3: Option<f64>,
    pub material_used_g: Option<f64>,
}

envelope_fields! {
    /// `JobRecord`.
    #[allow(missing_docs)]
    pub struct JobRecord {
        pub job_id: String,
        pub kind: JobKind,
        pub created_at: Option<i64>,
        pub started_at: Option<i64>,
        pub ended_at: Option<i64>,
        pub completion_status: JobCompletion,
        pub user_name: Option<String>,
        pub pages: Option<i64>,
        pub copies: Option<i32>,
        pub media_width_mm: Option<f64>,
        pub media_length_mm: Option<f64>,
        pub media_area_m2: Option<f64>,
        pub ink_ml: Option<f64>,
        pub toner_g: Option<f64>,
        pub bounding_box: Option<BoundingBox>,
        pub volume_cm3: Option<f64>,
        pub surface_cm2: Option<f64>,
        pub packing_density_pct: Option<f64>,
        pub layers: Option<i32>,
        pub layer_thickness_um: Option<f64>,
        pub material_type: Option<String>,
        pub recyclable_material_pct: Option<f64>,
        pub print_mode: Option<String>,
        pub build_unit_id: Option<String>,
        pub recycled_material_pct: Option<f64>,
        pub parts: Vec<JobPart>,
    }
}

envelope_fields! {
    /// `ConnectorHeartbeat`.
    pub struct ConnectorHeartbeat {
        /// Connector version.
        pub version: String,
        /// Devices configured.
        pub device_count: i32,
        /// Devices that answered their last poll.
        pub devices_reachable: i32,
        /// Records in the store-and-forward buffer.
        pub buffer_depth: i64,
        /// Age of the oldest buffered record.
        pub oldest_buffered_age_ms: Option<i64>,
        /// Last acknowledged upload.
        pub last_upload_at: Option<i64>,
        /// Seconds since start.
        pub uptime_s: i64,
        /// Liveness of every device the connector polls (known by serial).
        #[serde(default)]
        pub devices: Vec<DeviceLiveness>,
    }
}

/// One device's liveness, as carried in a [`ConnectorHeartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLiveness {
    /// Serial number.
    pub device_id: String,
    /// The device answered its last poll.
    pub reachable: bool,
    /// When it last answered a poll (ms).
    pub last_seen_at: Option<i64>,
}

/// Kind of maintenance alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum MaintenanceKind {
    ConsumableDepletion,
    DeviceSilent,
    PartWear,
    ErrorBurst,
}

/// Raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum MaintenanceState {
    Raised,
    Cleared,
}

/// Alert severity for ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum MaintenanceSeverity {
    Info,
    Warning,
    Critical,
}

envelope_fields! {
    /// `MaintenanceAlert`.
    #[allow(missing_docs)]
    pub struct MaintenanceAlert {
        pub alert_key: String,
        pub kind: MaintenanceKind,
        pub state: MaintenanceState,
        pub severity: MaintenanceSeverity,
        pub supply_index: Option<i32>,
        pub supply_description: Option<String>,
        pub level_percent: Option<f64>,
        pub days_to_empty: Option<f64>,
        pub silent_for_s: Option<i64>,
        pub message: String,
    }
}

/// A record of the contract that knows its own type.
pub trait Record: Serialize + serde::de::DeserializeOwned {
    /// Its record type.
    const TYPE: crate::schema::RecordType;
    /// Its device id (the Kafka key).
    fn device_id(&self) -> &str;
    /// Its event id.
    fn event_id(&self) -> &str;
}

macro_rules! impl_record {
    ($($t:ident),*) => {$(
        impl Record for $t {
            const TYPE: crate::schema::RecordType = crate::schema::RecordType::$t;
            fn device_id(&self) -> &str { &self.device_id }
            fn event_id(&self) -> &str { &self.event_id }
        }
    )*};
}
impl_record!(
    DeviceHeartbeat,
    DeviceStatus,
    UsageCounters,
    AlertEvent,
    JobRecord,
    ConnectorHeartbeat,
    MaintenanceAlert
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Device input is any i64: the extremes map to "none"/the fallback and
    /// never overflow (`v - 1` on `i64::MIN` did).
    #[test]
    fn from_mib_takes_any_integer() {
        for v in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            assert_eq!(HrDeviceStatus::from_mib(v), None, "{v}");
            assert_eq!(HrPrinterStatus::from_mib(v), None, "{v}");
            assert_eq!(SupplyType::from_mib(v), None, "{v}");
            assert_eq!(SupplyUnit::from_mib(v), SupplyUnit::Unknown, "{v}");
            assert_eq!(CounterUnit::from_mib(v), CounterUnit::Unknown, "{v}");
            assert_eq!(AlertSeverity::from_mib(v), AlertSeverity::Other, "{v}");
        }
        assert_eq!(SupplyType::from_mib(1), Some(SupplyType::ALL[0]));
        assert_eq!(
            SupplyType::from_mib(SupplyType::ALL.len() as i64),
            SupplyType::ALL.last().copied()
        );
        assert_eq!(SupplyType::from_mib(SupplyType::ALL.len() as i64 + 1), None);
    }
}
