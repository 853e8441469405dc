//! prtAlertTable rows, their RFC 3805 names, and opened/cleared diffing.
//!
//! Printers keep their current alerts as rows of a table and delete a row
//! when the condition ends; they do not send us events. The edge turns the
//! table into events by remembering, per device, the rows of the last
//! successful poll: a row that appears is `opened`, a row that disappears is
//! `cleared`. A device that does not answer keeps its remembered rows, so a
//! network blip does not clear (and later re-open) every alert.

use std::collections::BTreeMap;

use fleetpulse_core::records::AlertSeverity;
use serde::Serialize;

/// One prtAlertTable row as read from the device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// hrDeviceIndex of the row.
    pub device_index: i32,
    /// prtAlertIndex.
    pub alert_index: i32,
    /// prtAlertSeverityLevel.
    pub severity: AlertSeverity,
    /// prtAlertGroup name (RFC 3805), `group<N>` when unknown.
    pub group: Option<String>,
    /// prtAlertGroupIndex.
    pub group_index: Option<i32>,
    /// prtAlertLocation.
    pub location: Option<i32>,
    /// prtAlertCode name (RFC 3805), `code<N>` when unknown.
    pub code: String,
    /// prtAlertCode number.
    pub code_raw: i32,
    /// prtAlertDescription.
    pub description: Option<String>,
    /// prtAlertTime, sysUpTime ticks when the alert was added.
    pub time_ticks: Option<i64>,
}

impl AlertRow {
    /// Identity of a row across polls: device index, alert index and code.
    /// An index reused for a different condition counts as a new alert.
    pub fn key(&self) -> AlertKey {
        (self.device_index, self.alert_index, self.code_raw)
    }
}

/// Identity of an alert row: (hrDeviceIndex, prtAlertIndex, prtAlertCode).
pub type AlertKey = (i32, i32, i32);

/// What changed between two readings of a device's alert table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AlertDiff {
    /// Rows present now and not before.
    pub opened: Vec<AlertRow>,
    /// Rows present before and gone now.
    pub cleared: Vec<AlertRow>,
}

/// The remembered alert rows of one device.
#[derive(Debug, Default, Clone)]
pub struct AlertTracker {
    previous: BTreeMap<AlertKey, AlertRow>,
}

impl AlertTracker {
    /// A tracker that has seen nothing yet: every row of the first poll opens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compare `current` with the previous reading and remember it.
    pub fn update(&mut self, current: &[AlertRow]) -> AlertDiff {
        let now: BTreeMap<AlertKey, AlertRow> =
            current.iter().map(|r| (r.key(), r.clone())).collect();
        let opened = now
            .iter()
            .filter(|(k, _)| !self.previous.contains_key(k))
            .map(|(_, r)| r.clone())
            .collect();
        let cleared = self
            .previous
            .iter()
            .filter(|(k, _)| !now.contains_key(k))
            .map(|(_, r)| r.clone())
            .collect();
        self.previous = now;
        AlertDiff { opened, cleared }
    }

    /// Rows currently remembered.
    pub fn len(&self) -> usize {
        self.previous.len()
    }

    /// Whether no rows are remembered.
    pub fn is_empty(&self) -> bool {
        self.previous.is_empty()
    }
}

/// RFC 3805 PrtAlertCodeTC name of a code, `None` when not in the MIB.
pub fn alert_code_name(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "other",
        2 => "unknown",
        3 => "coverOpen",
        4 => "coverClosed",
        5 => "interlockOpen",
        6 => "interlockClosed",
        7 => "configurationChange",
        8 => "jam",
        9 => "subunitMissing",
        10 => "subunitLifeAlmostOver",
        11 => "subunitLifeOver",
        12 => "subunitAlmostEmpty",
        13 => "subunitEmpty",
        14 => "subunitAlmostFull",
        15 => "subunitFull",
        16 => "subunitNearLimit",
        17 => "subunitAtLimit",
        18 => "subunitOpened",
        19 => "subunitClosed",
        20 => "subunitTurnedOn",
        21 => "subunitTurnedOff",
        22 => "subunitOffline",
        23 => "subunitPowerSaver",
        24 => "subunitWarmingUp",
        25 => "subunitAdded",
        26 => "subunitRemoved",
        27 => "subunitResourceAdded",
        28 => "subunitResourceRemoved",
        29 => "subunitRecoverableFailure",
        30 => "subunitUnrecoverableFailure",
        31 => "subunitRecoverableStorageError",
        32 => "subunitUnrecoverableStorageError",
        33 => "subunitMotorFailure",
        34 => "subunitMemoryExhausted",
        35 => "subunitUnderTemperature",
        36 => "subunitOverTemperature",
        37 => "subunitTimingFailure",
        38 => "subunitThermistorFailure",
        501 => "doorOpen",
        502 => "doorClosed",
        503 => "powerUp",
        504 => "powerDown",
        505 => "printerNMSReset",
        506 => "printerManualReset",
        507 => "printerReadyToPrint",
        801 => "inputMediaTrayMissing",
        802 => "inputMediaSizeChange",
        803 => "inputMediaWeightChange",
        804 => "inputMediaTypeChange",
        805 => "inputMediaColorChange",
        806 => "inputMediaFormPartsChange",
        807 => "inputMediaSupplyLow",
        808 => "inputMediaSupplyEmpty",
        809 => "inputMediaChangeRequest",
        810 => "inputManualInputRequest",
        811 => "inputTrayPositionFailure",
        812 => "inputTrayElevationFailure",
        813 => "inputCannotFeedSizeSelected",
        901 => "outputMediaTrayMissing",
        902 => "outputMediaTrayAlmostFull",
        903 => "outputMediaTrayFull",
        904 => "outputMailboxSelectFailure",
        1001 => "markerFuserUnderTemperature",
        1002 => "markerFuserOverTemperature",
        1003 => "markerFuserTimingFailure",
        1004 => "markerFuserThermistorFailure",
        1005 => "markerAdjustingPrintQuality",
        1101 => "markerTonerEmpty",
        1102 => "markerInkEmpty",
        1103 => "markerPrintRibbonEmpty",
        1104 => "markerTonerAlmostEmpty",
        1105 => "markerInkAlmostEmpty",
        1106 => "markerPrintRibbonAlmostEmpty",
        1107 => "markerWasteTonerReceptacleAlmostFull",
        1108 => "markerWasteInkReceptacleAlmostFull",
        1109 => "markerWasteTonerReceptacleFull",
        1110 => "markerWasteInkReceptacleFull",
        1111 => "markerOpcLifeAlmostOver",
        1112 => "markerOpcLifeOver",
        1113 => "markerDeveloperAlmostEmpty",
        1114 => "markerDeveloperEmpty",
        1115 => "markerTonerCartridgeMissing",
        1301 => "mediaPathMediaTrayMissing",
        1302 => "mediaPathMediaTrayAlmostFull",
        1303 => "mediaPathMediaTrayFull",
        1304 => "mediaPathCannotDuplexMediaSelected",
        1501 => "interpreterMemoryIncrease",
        1502 => "interpreterMemoryDecrease",
        1503 => "interpreterCartridgeAdded",
        1504 => "interpreterCartridgeDeleted",
        1505 => "interpreterResourceAdded",
        1506 => "interpreterResourceDeleted",
        1507 => "interpreterResourceUnavailable",
        1509 => "interpreterComplexPageEncountered",
        1801 => "alertRemovalOfBinaryChangeEntry",
        _ => return None,
    })
}

/// The name of an alert code, or `code<N>`.
pub fn alert_code(code: i64) -> String {
    alert_code_name(code)
        .map(str::to_string)
        .unwrap_or_else(|| format!("code{code}"))
}

/// RFC 3805 PrtAlertGroupTC name of a group, or `group<N>`.
pub fn alert_group(group: i64) -> String {
    let name = match group {
        1 => "other",
        3 => "hostResourcesMIBStorageTable",
        4 => "hostResourcesMIBDeviceTable",
        5 => "generalPrinter",
        6 => "cover",
        7 => "localization",
        8 => "input",
        9 => "output",
        10 => "marker",
        11 => "markerSupplies",
        12 => "markerColorant",
        13 => "mediaPath",
        14 => "channel",
        15 => "interpreter",
        16 => "consoleDisplayBuffer",
        17 => "consoleLights",
        18 => "alert",
        30 => "finDevice",
        31 => "finSupply",
        32 => "finSupplyMediaInput",
        33 => "finAttribute",
        _ => return format!("group{group}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: i32, code: i32) -> AlertRow {
        AlertRow {
            device_index: 1,
            alert_index: index,
            severity: AlertSeverity::Warning,
            group: Some(alert_group(8)),
            group_index: Some(1),
            location: None,
            code: alert_code(i64::from(code)),
            code_raw: code,
            description: None,
            time_ticks: None,
        }
    }

    #[test]
    fn opened_then_cleared() {
        let mut t = AlertTracker::new();
        let d = t.update(&[row(1, 807), row(2, 1104)]);
        assert_eq!(d.opened.len(), 2);
        assert!(d.cleared.is_empty());
        let d = t.update(&[row(2, 1104), row(3, 8)]);
        assert_eq!(d.opened, vec![row(3, 8)]);
        assert_eq!(d.cleared, vec![row(1, 807)]);
        // Same index, new code: the old alert cleared, the new one opened.
        let d = t.update(&[row(2, 1101), row(3, 8)]);
        assert_eq!(d.opened, vec![row(2, 1101)]);
        assert_eq!(d.cleared, vec![row(2, 1104)]);
        assert_eq!(t.len(), 2);
        let d = t.update(&[]);
        assert_eq!(d.cleared.len(), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(alert_code(8), "jam");
        assert_eq!(alert_code(1104), "markerTonerAlmostEmpty");
        assert_eq!(alert_code(1301), "mediaPathMediaTrayMissing");
        assert_eq!(alert_code(42), "code42");
        assert_eq!(alert_group(33), "finAttribute");
        assert_eq!(alert_group(2), "group2");
    }
}
