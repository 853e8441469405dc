//! Device JSON → [`Snapshot3d`] → records (`DeviceStatus` with printheads
//! and build unit, `DeviceHeartbeat` with protocol `http`, `JobRecord` of
//! kind `print3d`).
//!
//! Text from the device is cut to 255 bytes like SNMP DisplayStrings, lists
//! are capped, and numbers that are not finite never get in (JSON cannot
//! carry them anyway). Job and part names are never read (see `wire`), and
//! `user_name` is always `None`.

use fleetpulse_core::new_event_id;
use fleetpulse_core::records::{
    BoundingBox, BuildUnit, DeviceHeartbeat, DeviceStatus, HrDeviceStatus, HrPrinterStatus,
    JobCompletion, JobKind, JobPart, JobRecord, PollProtocol, PrinterErrorFlag, Printhead, Supply,
    SupplyType, SupplyUnit, SCHEMA_VERSION,
};
use serde::Serialize;

use super::wire;
use crate::mapping::{display_text, percent_of};
use crate::poller::Origin;

/// Most agents, printheads and error codes kept per device.
const MAX_ITEMS: usize = 64;
/// Most parts kept per job.
pub(crate) const MAX_PARTS: usize = 1000;

/// A 3D printer's state as the edge keeps it (no names of anything printed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device3d {
    /// The record key: the serial, else `addr:<ip>`.
    pub device_id: String,
    /// Manufacturer.
    pub vendor: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Firmware version.
    pub firmware: Option<String>,
    /// Host name (dropped in the lake).
    pub hostname: Option<String>,
    /// Location text (generalised in the lake).
    pub location: Option<String>,
    /// MAC address (dropped in the lake).
    pub mac_address: Option<String>,
    /// Device state as reported (`idle`, `printing`, …).
    pub state: Option<String>,
    /// Device error codes as reported (`agent_low:F`, …).
    pub errors: Vec<String>,
    /// Seconds since boot.
    pub uptime_s: Option<i64>,
    /// hrDeviceStatus equivalent.
    pub hr_device_status: Option<HrDeviceStatus>,
    /// hrPrinterStatus equivalent.
    pub hr_printer_status: Option<HrPrinterStatus>,
    /// Error codes as Printer-MIB flags (agent low/empty → lowToner/noToner,
    /// printhead error → serviceRequested).
    pub detected_errors: Vec<PrinterErrorFlag>,
    /// Agents as supplies (ink, tenths of millilitres).
    pub supplies: Vec<Supply>,
    /// Printheads.
    pub printheads: Vec<Printhead>,
    /// Loaded build unit.
    pub build_unit: Option<BuildUnit>,
}

/// A job as the edge keeps it: every schema field, no job or part name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job3d {
    /// Device-local job id.
    pub job_id: String,
    /// How it ended (`running` while it runs).
    pub completion_status: JobCompletion,
    /// ms since the epoch.
    pub created_at: Option<i64>,
    /// ms since the epoch.
    pub started_at: Option<i64>,
    /// ms since the epoch.
    pub ended_at: Option<i64>,
    /// Job bounding box.
    pub bounding_box: Option<BoundingBox>,
    /// Printed volume.
    pub volume_cm3: Option<f64>,
    /// Printed surface.
    pub surface_cm2: Option<f64>,
    /// Packing density.
    pub packing_density_pct: Option<f64>,
    /// Layers of the job (`layer_count`, else the number of layer timings).
    pub layers: Option<i32>,
    /// Layer thickness.
    pub layer_thickness_um: Option<f64>,
    /// Sum of the per-layer timings reported (not in the schema; shown by `fleetpulse poll`).
    pub layer_time_total_s: Option<f64>,
    /// Material.
    pub material_type: Option<String>,
    /// Recyclable share of the material.
    pub recyclable_material_pct: Option<f64>,
    /// Recycled share used.
    pub recycled_material_pct: Option<f64>,
    /// Print mode.
    pub print_mode: Option<String>,
    /// Build unit used.
    pub build_unit_id: Option<String>,
    /// Parts (ids and geometry only).
    pub parts: Vec<JobPart>,
}

impl Job3d {
    /// Whether the job is over (and so due to be published once).
    pub fn is_finished(&self) -> bool {
        match self.completion_status {
            JobCompletion::Completed
            | JobCompletion::Failed
            | JobCompletion::Canceled
            | JobCompletion::Aborted => true,
            JobCompletion::Running => false,
            // A status we do not know: over once it has an end date.
            JobCompletion::Unknown => self.ended_at.is_some(),
        }
    }
}

/// One poll of a 3D printer: the device and the jobs listed after the cursor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot3d {
    /// Base URL polled.
    pub url: String,
    /// IP address polled.
    pub ip_address: String,
    /// Poll start, ms since the epoch.
    pub polled_at: i64,
    /// Wall time of the whole poll, ms.
    pub response_ms: u32,
    /// The device.
    pub device: Device3d,
    /// Jobs after the `since` cursor, oldest first (running ones included).
    pub jobs: Vec<Job3d>,
    /// The device has more jobs after these.
    pub more_jobs: bool,
}

fn text(s: Option<String>) -> Option<String> {
    s.and_then(|s| display_text(s.as_bytes()))
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// RFC 3339 → ms since the epoch; anything else → `None`.
pub(crate) fn date(s: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s?.trim())
        .ok()
        .map(|d| d.timestamp_millis())
}

fn bbox(b: Option<wire::Box3>) -> Option<BoundingBox> {
    let b = b?;
    [b.x, b.y, b.z]
        .iter()
        .all(|v| v.is_finite())
        .then_some(BoundingBox {
            x_mm: b.x,
            y_mm: b.y,
            z_mm: b.z,
        })
}

fn to_i32(v: f64) -> Option<i32> {
    (v.is_finite() && v >= 0.0 && v <= f64::from(i32::MAX)).then(|| v.round() as i32)
}

pub(crate) fn device(d: wire::Device, ip: &str) -> Device3d {
    let id = d.identity;
    let serial = text(id.serial).filter(|s| !s.is_empty());
    let state = text(d.status.state).map(|s| s.to_ascii_lowercase());
    let errors: Vec<String> = d
        .status
        .errors
        .into_iter()
        .take(MAX_ITEMS)
        .filter_map(|e| text(Some(e)))
        .collect();
    let mut flags = Vec::new();
    for e in &errors {
        let flag = match e.split(':').next().unwrap_or_default() {
            "agent_low" => PrinterErrorFlag::LowToner,
            "agent_empty" => PrinterErrorFlag::NoToner,
            "printhead_error" => PrinterErrorFlag::ServiceRequested,
            _ => continue,
        };
        if !flags.contains(&flag) {
            flags.push(flag);
        }
    }
    let (hr_device_status, hr_printer_status) = match state.as_deref() {
        Some("error") => (Some(HrDeviceStatus::Down), Some(HrPrinterStatus::Other)),
        Some(s) => {
            let printer = match s {
                "idle" => HrPrinterStatus::Idle,
                "printing" => HrPrinterStatus::Printing,
                "warming_up" => HrPrinterStatus::Warmup,
                _ => HrPrinterStatus::Unknown,
            };
            let device = if errors.is_empty() {
                HrDeviceStatus::Running
            } else {
                HrDeviceStatus::Warning
            };
            (Some(device), Some(printer))
        }
        None => (None, None),
    };
    let supplies = d
        .agents
        .into_iter()
        .take(MAX_ITEMS)
        .enumerate()
        .map(|(k, a)| {
            let max_capacity = finite(a.capacity_ml).and_then(|v| to_i32(v * 10.0));
            let level = finite(a.remaining_ml).and_then(|v| to_i32(v * 10.0));
            let percent = finite(a.level_pct)
                .map(|p| (p.clamp(0.0, 100.0) * 100.0).round() / 100.0)
                .or_else(|| percent_of(level, max_capacity, false));
            let description = text(a.name)
                .or_else(|| text(a.code).map(|c| format!("Agent {c}")))
                .unwrap_or_else(|| format!("Agent {}", k + 1));
            Supply {
                index: i32::try_from(k + 1).unwrap_or(i32::MAX),
                device_index: 1,
                supply_type: SupplyType::Ink,
                unit: SupplyUnit::TenthsOfMilliliters,
                description,
                max_capacity,
                max_capacity_special: None,
                level,
                level_special: None,
                percent,
            }
        })
        .collect();
    let printheads = d
        .printheads
        .into_iter()
        .take(MAX_ITEMS)
        .enumerate()
        .map(|(k, p)| Printhead {
            printhead_id: text(p.serial).unwrap_or_else(|| {
                format!(
                    "slot-{}",
                    p.slot.unwrap_or(u32::try_from(k + 1).unwrap_or(0))
                )
            }),
            printhead_type: text(p.kind),
            status: text(p.status),
            agent_used_ml: finite(p.agent_used_ml),
            installed_at: date(p.installed_at.as_deref()),
            usage_time_s: p.usage_time_s,
            last_error: text(p.last_error),
        })
        .collect();
    let build_unit = d.build_unit.map(|b| BuildUnit {
        build_unit_id: text(b.id).unwrap_or_default(),
        recycled_material_pct: finite(b.recycled_material_pct),
        material_quantity_kg: finite(b.material_quantity_kg),
        non_genuine_material: b.non_genuine_material,
        expired_material: b.expired_material,
    });
    Device3d {
        device_id: serial.unwrap_or_else(|| format!("addr:{ip}")),
        vendor: text(id.vendor),
        model: text(id.model),
        firmware: text(id.firmware),
        hostname: text(id.hostname),
        location: text(id.location),
        mac_address: text(id.mac).map(|m| m.to_ascii_lowercase()),
        state,
        errors,
        uptime_s: d.status.uptime_s.filter(|u| *u >= 0),
        hr_device_status,
        hr_printer_status,
        detected_errors: flags,
        supplies,
        printheads,
        build_unit,
    }
}

fn completion(status: Option<&str>) -> JobCompletion {
    match status.map(str::to_ascii_lowercase).as_deref() {
        Some("completed" | "complete" | "success" | "succeeded" | "done") => {
            JobCompletion::Completed
        }
        Some("failed" | "error") => JobCompletion::Failed,
        Some("canceled" | "cancelled") => JobCompletion::Canceled,
        Some("aborted") => JobCompletion::Aborted,
        Some("running" | "printing" | "queued" | "pending" | "warming_up" | "cooling") => {
            JobCompletion::Running
        }
        _ => JobCompletion::Unknown,
    }
}

pub(crate) fn job(j: wire::Job) -> Job3d {
    let sum: f64 = j.layer_times_s.iter().filter(|t| t.is_finite()).sum();
    let layers = j
        .layer_count
        .and_then(|n| i32::try_from(n).ok())
        .or_else(|| {
            (!j.layer_times_s.is_empty())
                .then(|| i32::try_from(j.layer_times_s.len()).unwrap_or(i32::MAX))
        });
    Job3d {
        job_id: text(Some(j.id.into_string())).unwrap_or_default(),
        completion_status: completion(j.status.as_deref()),
        created_at: date(j.created_at.as_deref()),
        started_at: date(j.started_at.as_deref()),
        ended_at: date(j.ended_at.as_deref()),
        bounding_box: bbox(j.bounding_box_mm),
        volume_cm3: finite(j.volume_cm3),
        surface_cm2: finite(j.surface_cm2),
        packing_density_pct: finite(j.packing_density_pct),
        layers,
        layer_thickness_um: finite(j.layer_thickness_um),
        layer_time_total_s: (!j.layer_times_s.is_empty()).then(|| (sum * 100.0).round() / 100.0),
        material_type: text(j.material_type),
        recyclable_material_pct: finite(j.recyclable_material_pct),
        recycled_material_pct: finite(j.recycled_material_pct),
        print_mode: text(j.print_mode),
        build_unit_id: text(j.build_unit_id),
        parts: j
            .parts
            .into_iter()
            .take(MAX_PARTS)
            .map(|p| JobPart {
                part_id: text(Some(p.id.into_string())).unwrap_or_default(),
                bounding_box: bbox(p.bounding_box_mm),
                volume_cm3: finite(p.volume_cm3),
                material_used_g: finite(p.material_used_g),
            })
            .collect(),
    }
}

macro_rules! envelope {
    ($o:expr, $device_id:expr, $at:expr, $t:ident { $($f:ident : $v:expr),* $(,)? }) => {
        $t {
            event_id: new_event_id(),
            tenant_id: $o.tenant_id.clone(),
            connector_id: $o.connector_id.clone(),
            device_id: $device_id.to_string(),
            observed_at: $at,
            schema_version: SCHEMA_VERSION,
            $($f: $v),*
        }
    };
}

/// `DeviceHeartbeat` of a poll (protocol `http`).
pub(crate) fn heartbeat(o: &Origin, s: &Snapshot3d) -> DeviceHeartbeat {
    envelope!(
        o,
        s.device.device_id,
        s.polled_at,
        DeviceHeartbeat {
            protocol: PollProtocol::Http,
            ip_address: Some(s.ip_address.clone()),
            response_ms: i32::try_from(s.response_ms).unwrap_or(i32::MAX),
            sys_uptime_ticks: s.device.uptime_s.map(|u| u.saturating_mul(100)),
        }
    )
}

/// `DeviceStatus` of a poll, with printheads and build unit.
pub(crate) fn status(o: &Origin, s: &Snapshot3d) -> DeviceStatus {
    let d = &s.device;
    let sys_descr = match (&d.model, &d.firmware) {
        (Some(m), Some(f)) => Some(format!("{m}; firmware {f}")),
        (Some(m), None) => Some(m.clone()),
        (None, Some(f)) => Some(format!("firmware {f}")),
        (None, None) => None,
    };
    envelope!(
        o,
        d.device_id,
        s.polled_at,
        DeviceStatus {
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            sys_descr: sys_descr,
            sys_object_id: None,
            sys_name: d.hostname.clone(),
            sys_contact: None,
            sys_location: d.location.clone(),
            ip_address: Some(s.ip_address.clone()),
            mac_address: d.mac_address.clone(),
            hr_device_status: d.hr_device_status,
            hr_printer_status: d.hr_printer_status,
            detected_errors: d.detected_errors.clone(),
            detected_error_state_hex: None,
            supplies: d.supplies.clone(),
            input_trays: Vec::new(),
            printheads: d.printheads.clone(),
            build_unit: d.build_unit.clone(),
        }
    )
}

/// `JobRecord` (kind `print3d`) of a job; `user_name` is always `None`.
pub(crate) fn job_record(o: &Origin, device_id: &str, observed_at: i64, j: &Job3d) -> JobRecord {
    envelope!(
        o,
        device_id,
        observed_at,
        JobRecord {
            job_id: j.job_id.clone(),
            kind: JobKind::Print3d,
            created_at: j.created_at,
            started_at: j.started_at,
            ended_at: j.ended_at,
            completion_status: j.completion_status,
            user_name: None,
            pages: None,
            copies: None,
            media_width_mm: None,
            media_length_mm: None,
            media_area_m2: None,
            ink_ml: None,
            toner_g: None,
            bounding_box: j.bounding_box.clone(),
            volume_cm3: j.volume_cm3,
            surface_cm2: j.surface_cm2,
            packing_density_pct: j.packing_density_pct,
            layers: j.layers,
            layer_thickness_um: j.layer_thickness_um,
            material_type: j.material_type.clone(),
            recyclable_material_pct: j.recyclable_material_pct,
            print_mode: j.print_mode.clone(),
            build_unit_id: j.build_unit_id.clone(),
            recycled_material_pct: j.recycled_material_pct,
            parts: j.parts.clone(),
        }
    )
}

/// The jobs of a poll due for publishing, given the last one published:
/// finished jobs after `last`, in order, stopping at the first one still
/// running (it is published once it ends, and so are the ones after it).
pub fn jobs_to_emit<'a>(jobs: &'a [Job3d], last: Option<&str>) -> Vec<&'a Job3d> {
    let after_last = |id: &str| match last {
        None => true,
        Some(last) => match (id.parse::<u64>(), last.parse::<u64>()) {
            (Ok(a), Ok(b)) => a > b,
            // Opaque ids: trust the device's `since` filter, skip only a repeat.
            _ => id != last,
        },
    };
    jobs.iter()
        .filter(|j| !j.job_id.is_empty() && after_last(&j.job_id))
        .take_while(|j| j.is_finished())
        .collect()
}

/// A multi-line report for `fleetpulse poll`.
pub fn render_text(s: &Snapshot3d) -> String {
    use std::fmt::Write as _;
    let d = &s.device;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = String::new();
    let _ = writeln!(out, "3D printer {} ({})", s.url, s.ip_address);
    let _ = writeln!(out, "  device id    {}", d.device_id);
    let _ = writeln!(out, "  vendor       {}", dash(&d.vendor));
    let _ = writeln!(out, "  model        {}", dash(&d.model));
    let _ = writeln!(out, "  firmware     {}", dash(&d.firmware));
    let _ = writeln!(
        out,
        "  state        {} errors [{}]",
        dash(&d.state),
        d.errors.join(", ")
    );
    if let Some(b) = &d.build_unit {
        let _ = writeln!(
            out,
            "  build unit   {} material {:?} kg, recycled {:?} %, non-genuine {}, expired {}",
            b.build_unit_id,
            b.material_quantity_kg,
            b.recycled_material_pct,
            b.non_genuine_material,
            b.expired_material
        );
    }
    for a in &d.supplies {
        let pct = a.percent.map(|p| format!("{p:.1}%")).unwrap_or("-".into());
        let _ = writeln!(out, "  agent        {:<32} {pct}", a.description);
    }
    for p in &d.printheads {
        let _ = writeln!(
            out,
            "  printhead    {} {} status {} usage {}s last error {}",
            p.printhead_id,
            dash(&p.printhead_type),
            dash(&p.status),
            p.usage_time_s.unwrap_or(0),
            dash(&p.last_error)
        );
    }
    for j in &s.jobs {
        let _ = writeln!(
            out,
            "  job          {} {:?} layers {:?} parts {} volume {:?} cm3",
            j.job_id,
            j.completion_status,
            j.layers,
            j.parts.len(),
            j.volume_cm3
        );
    }
    out
}
