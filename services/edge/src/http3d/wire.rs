//! The device's JSON, as read. Only the fields the edge uses are declared:
//! job and part `name`s are not, so serde skips them and they never exist
//! in the connector's memory beyond the raw response buffer.
//!
//! Every field is optional (devices differ by model and firmware), but a
//! field that is present with the wrong type fails the whole response: a
//! device that sends `"volume_cm3": "lots"` is broken, and a typed error
//! says so instead of a record with silently missing data.

use serde::Deserialize;

/// A job id as a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Id {
    Text(String),
    Number(u64),
}

impl Id {
    pub(crate) fn into_string(self) -> String {
        match self {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Device {
    #[serde(default)]
    pub(crate) identity: Identity,
    #[serde(default)]
    pub(crate) status: Status,
    pub(crate) build_unit: Option<BuildUnit>,
    #[serde(default)]
    pub(crate) agents: Vec<Agent>,
    #[serde(default)]
    pub(crate) printheads: Vec<Printhead>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Identity {
    pub(crate) serial: Option<String>,
    pub(crate) vendor: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) firmware: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Status {
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) errors: Vec<String>,
    pub(crate) uptime_s: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BuildUnit {
    pub(crate) id: Option<String>,
    pub(crate) recycled_material_pct: Option<f64>,
    pub(crate) material_quantity_kg: Option<f64>,
    #[serde(default)]
    pub(crate) non_genuine_material: bool,
    #[serde(default)]
    pub(crate) expired_material: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Agent {
    pub(crate) code: Option<String>,
    /// Product name of the agent (not a customer name).
    pub(crate) name: Option<String>,
    pub(crate) capacity_ml: Option<f64>,
    pub(crate) remaining_ml: Option<f64>,
    pub(crate) level_pct: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Printhead {
    pub(crate) slot: Option<u32>,
    pub(crate) serial: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) agent_used_ml: Option<f64>,
    pub(crate) installed_at: Option<String>,
    pub(crate) usage_time_s: Option<i64>,
    pub(crate) last_error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Jobs {
    #[serde(default)]
    pub(crate) jobs: Vec<Job>,
    #[serde(default)]
    pub(crate) more: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct Box3 {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) z: f64,
}

/// A job, without its `name`.
#[derive(Debug, Deserialize)]
pub(crate) struct Job {
    pub(crate) id: Id,
    pub(crate) status: Option<String>,
    pub(crate) created_at: Option<String>,
    pub(crate) started_at: Option<String>,
    pub(crate) ended_at: Option<String>,
    pub(crate) bounding_box_mm: Option<Box3>,
    pub(crate) volume_cm3: Option<f64>,
    pub(crate) surface_cm2: Option<f64>,
    pub(crate) packing_density_pct: Option<f64>,
    pub(crate) layer_count: Option<u32>,
    pub(crate) layer_thickness_um: Option<f64>,
    /// Per-layer timings: only their count and sum are kept.
    #[serde(default)]
    pub(crate) layer_times_s: Vec<f64>,
    pub(crate) material_type: Option<String>,
    pub(crate) recyclable_material_pct: Option<f64>,
    pub(crate) recycled_material_pct: Option<f64>,
    pub(crate) print_mode: Option<String>,
    pub(crate) build_unit_id: Option<String>,
    #[serde(default)]
    pub(crate) parts: Vec<Part>,
}

/// A part, without its `name`.
#[derive(Debug, Deserialize)]
pub(crate) struct Part {
    pub(crate) id: Id,
    pub(crate) bounding_box_mm: Option<Box3>,
    pub(crate) volume_cm3: Option<f64>,
    pub(crate) material_used_g: Option<f64>,
}
