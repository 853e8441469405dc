//! Industrial 3D printers (HP Jet Fusion-like): who one is ([`Profile3d`])
//! and how its jobs, agents, printheads and build unit evolve ([`State3d`]).
//!
//! Same rules as the 2D model: everything comes from a ChaCha stream keyed
//! by `(seed, index)` (with its own key tag, so 3D printer 0 and 2D printer 0
//! are unrelated), state changes only in whole sim steps, and each step
//! draws from the stream in a fixed order — so the state at step `n` is a
//! pure function of `(seed, index, n)`.
//!
//! Times are kept in sim seconds since sim start (`i64`, negative for the
//! history): a printer is simulated for [`HISTORY_STEPS`] before step 0, so
//! it starts with finished jobs, used agents and aged printheads. The HTTPS
//! responder turns sim seconds into dates with the fleet's start time.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::SIM_STEP;
use crate::model::{base36, splitmix};

/// Sim seconds per step.
pub(crate) const STEP_S: i64 = SIM_STEP.as_secs() as i64;
/// Steps simulated before step 0 (three sim days), so history exists at start.
pub(crate) const HISTORY_STEPS: i64 = 3 * 24 * 60;
/// Finished jobs a printer remembers (older ones fall off its job list).
pub(crate) const JOB_HISTORY: usize = 50;
/// An agent at or below this percentage is "low".
pub(crate) const LOW_AGENT_PCT: f64 = 10.0;
/// Printhead usage beyond which it reports "warning" (end of rated life).
const PRINTHEAD_RATED_S: i64 = 800 * 3600;

/// A 3D printer model.
#[derive(Debug)]
pub(crate) struct Model3d {
    pub(crate) name: &'static str,
    /// Build volume x, y, z in mm.
    build_mm: [f64; 3],
    printheads: usize,
    printhead_type: &'static str,
    /// (code, name, capacity ml, ml per printing minute).
    agents: &'static [(&'static str, &'static str, f64, f64)],
    fw_prefix: &'static str,
}

const MODELS: [Model3d; 4] = [
    Model3d {
        name: "HP Jet Fusion 5200",
        build_mm: [380.0, 284.0, 380.0],
        printheads: 6,
        printhead_type: "HP 3D600 Printhead",
        agents: &[
            ("F", "HP 3D600 Fusing Agent", 3000.0, 0.9),
            ("D", "HP 3D600 Detailing Agent", 3000.0, 0.6),
        ],
        fw_prefix: "JF5200",
    },
    Model3d {
        name: "HP Jet Fusion 5210",
        build_mm: [380.0, 284.0, 380.0],
        printheads: 6,
        printhead_type: "HP 3D600 Printhead",
        agents: &[
            ("F", "HP 3D600 Fusing Agent", 3000.0, 0.9),
            ("D", "HP 3D600 Detailing Agent", 3000.0, 0.6),
        ],
        fw_prefix: "JF5210",
    },
    Model3d {
        name: "HP Jet Fusion 4200",
        build_mm: [380.0, 284.0, 380.0],
        printheads: 6,
        printhead_type: "HP 3D600 Printhead",
        agents: &[
            ("F", "HP 3D600 Fusing Agent", 3000.0, 1.0),
            ("D", "HP 3D600 Detailing Agent", 3000.0, 0.7),
        ],
        fw_prefix: "JF4200",
    },
    Model3d {
        name: "HP Jet Fusion 580 Color",
        build_mm: [332.0, 190.0, 248.0],
        printheads: 4,
        printhead_type: "HP 3D500 Printhead",
        agents: &[
            ("F", "HP 3D500 Fusing Agent", 2000.0, 0.6),
            ("D", "HP 3D500 Detailing Agent", 2000.0, 0.4),
            ("C", "HP 3D500 Cyan Agent", 500.0, 0.1),
            ("M", "HP 3D500 Magenta Agent", 500.0, 0.1),
            ("Y", "HP 3D500 Yellow Agent", 500.0, 0.1),
        ],
        fw_prefix: "JF580",
    },
];

/// (material, recommended recyclable share %, solid density g/cm³).
const MATERIALS: [(&str, f64, f64); 4] = [
    ("HP 3D HR PA 12", 80.0, 1.01),
    ("HP 3D HR PA 11", 70.0, 1.05),
    ("HP 3D HR PA 12 GB", 70.0, 1.30),
    ("HP 3D HR TPA", 80.0, 1.15),
];

const PRINT_MODES: [&str; 4] = ["balanced", "fast", "mechanical", "cosmetic"];
const JOB_WORDS: [&str; 6] = [
    "brackets",
    "housings",
    "clips",
    "manifold",
    "gears",
    "prototypes",
];
const PART_WORDS: [&str; 6] = ["bracket", "housing", "clip", "manifold", "gear", "lattice"];
const SITES: [&str; 4] = [
    "Stuttgart Plant",
    "Eindhoven Lab",
    "Lyon Plant",
    "Barcelona Hub",
];
const SERIAL_CHARS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/// ChaCha stream of 3D printer `index` in fleet `seed`.
fn rng_for(seed: u64, index: usize, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    key[16..].copy_from_slice(b"fleetpulse-3d/01");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The fixed identity of 3D printer `index` in fleet `seed`.
#[derive(Debug, Clone)]
pub(crate) struct Profile3d {
    pub(crate) model: &'static Model3d,
    pub(crate) serial: String,
    pub(crate) firmware: String,
    pub(crate) hostname: String,
    pub(crate) location: String,
    pub(crate) mac: [u8; 6],
    pub(crate) build_unit_id: String,
    pub(crate) material: (&'static str, f64, f64),
    /// Long-run share of time spent printing (drives idle gaps).
    busy: f64,
}

impl Profile3d {
    pub(crate) fn new(seed: u64, index: usize) -> Self {
        let mut rng = rng_for(seed, index, 1);
        let model = pick(&mut rng, &MODELS);
        // "SG" + three random characters + four base-36 digits permuting the
        // index (unique per index, like the 2D serials; see model.rs).
        let mut serial = String::from("SG");
        for _ in 0..3 {
            serial.push(char::from(*pick(&mut rng, SERIAL_CHARS)));
        }
        const SUFFIX_SPACE: u64 = 36 * 36 * 36 * 36;
        let i = index as u64;
        if i < SUFFIX_SPACE {
            let mixed = (i * 1_000_003 + splitmix(seed ^ 0x3d3d) % SUFFIX_SPACE) % SUFFIX_SPACE;
            serial.push_str(&base36(mixed, 4));
        } else {
            serial.push_str(&base36(i, 5));
        }
        let tail = (i
            .wrapping_mul(0x5b_d1e5)
            .wrapping_add(splitmix(seed ^ 0x3d4d_4143)))
            & 0xff_ffff;
        let mac = [
            0x10,
            0x1f,
            0x74,
            (tail >> 16) as u8,
            (tail >> 8) as u8,
            tail as u8,
        ];
        let firmware = format!(
            "{}_{:02}{:02}{}",
            model.fw_prefix,
            rng.random_range(21..=25),
            rng.random_range(1..=12),
            char::from(b'A' + rng.random_range(0..4u8))
        );
        let hostname = format!("JF-{:02X}{:02X}{:02X}", mac[3], mac[4], mac[5]);
        let location = format!(
            "{} / Hall {} / Bay {}",
            pick(&mut rng, &SITES),
            rng.random_range(1..=4),
            rng.random_range(1..=12)
        );
        let build_unit_id = format!("BU-{}", base36(rng.random_range(0..36u64.pow(6)), 6));
        let material = *pick(&mut rng, &MATERIALS);
        let busy = rng.random_range(0.4..0.85);
        Profile3d {
            model,
            serial,
            firmware,
            hostname,
            location,
            mac,
            build_unit_id,
            material,
            busy,
        }
    }
}

/// How a job ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }
}

/// A part of a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    pub(crate) id: String,
    /// Customer file name: private, never leaves the site.
    pub(crate) name: String,
    pub(crate) bbox_mm: [f64; 3],
    pub(crate) volume_cm3: f64,
    pub(crate) material_used_g: f64,
}

/// One print job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    /// Increasing per printer.
    pub(crate) id: u64,
    /// Customer job name: private, never leaves the site.
    pub(crate) name: String,
    pub(crate) status: JobStatus,
    /// Sim seconds.
    pub(crate) created_s: i64,
    /// Printing starts (after warm-up).
    pub(crate) started_s: i64,
    pub(crate) ended_s: Option<i64>,
    pub(crate) bbox_mm: [f64; 3],
    pub(crate) volume_cm3: f64,
    pub(crate) surface_cm2: f64,
    pub(crate) packing_density_pct: f64,
    pub(crate) layer_thickness_um: f64,
    pub(crate) material_type: &'static str,
    pub(crate) recyclable_material_pct: f64,
    pub(crate) recycled_material_pct: f64,
    pub(crate) print_mode: &'static str,
    pub(crate) build_unit_id: String,
    /// Planned duration of every layer, seconds.
    pub(crate) layer_times_s: Vec<f64>,
    pub(crate) parts: Vec<Part>,
    /// Layers printed when the job ends, and how it ends.
    end_layer: usize,
    outcome: JobStatus,
    /// Print seconds to `end_layer`.
    end_after_s: f64,
}

impl Job {
    /// Layers finished at sim second `now_s`.
    pub(crate) fn layers_done(&self, now_s: i64) -> usize {
        if self.status != JobStatus::Running {
            return self.end_layer;
        }
        self.count_layers(now_s)
    }

    /// Layers of the planned run finished after `now_s - started_s` seconds.
    fn count_layers(&self, now_s: i64) -> usize {
        let elapsed = (now_s - self.started_s) as f64;
        let mut sum = 0.0;
        let mut n = 0;
        for t in &self.layer_times_s[..self.end_layer] {
            sum += t;
            if sum > elapsed {
                break;
            }
            n += 1;
        }
        n
    }
}

/// An agent cartridge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentState {
    pub(crate) code: &'static str,
    pub(crate) name: &'static str,
    pub(crate) capacity_ml: f64,
    pub(crate) remaining_ml: f64,
    rate_ml_min: f64,
    replace_at: Option<i64>,
}

/// A printhead in its slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PrintheadState {
    pub(crate) slot: usize,
    pub(crate) serial: String,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    pub(crate) agent_used_ml: f64,
    pub(crate) installed_s: i64,
    pub(crate) usage_time_s: i64,
    pub(crate) last_error: Option<String>,
    replace_at: Option<i64>,
}

/// The loaded build unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildUnitState {
    pub(crate) id: String,
    pub(crate) recycled_material_pct: f64,
    pub(crate) material_quantity_kg: f64,
    pub(crate) non_genuine_material: bool,
    pub(crate) expired_material: bool,
}

/// What the printer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity3d {
    Idle,
    WarmingUp,
    Printing,
    /// Cannot print (agent empty, printhead failed) until serviced.
    Error,
}

impl Activity3d {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Activity3d::Idle => "idle",
            Activity3d::WarmingUp => "warming_up",
            Activity3d::Printing => "printing",
            Activity3d::Error => "error",
        }
    }
}

/// The changing part of a 3D printer.
#[derive(Debug, Clone)]
pub(crate) struct State3d {
    rng: ChaCha8Rng,
    /// Current step (may be negative while replaying history).
    pub(crate) step: i64,
    /// Uptime at sim second 0.
    uptime_at_zero_s: i64,
    pub(crate) current: Option<Job>,
    /// Finished jobs, oldest first, at most [`JOB_HISTORY`].
    pub(crate) history: VecDeque<Job>,
    next_job_id: u64,
    /// No new job before this step.
    idle_until: i64,
    pub(crate) agents: Vec<AgentState>,
    pub(crate) printheads: Vec<PrintheadState>,
    pub(crate) build_unit: BuildUnitState,
    next_printhead_serial: u64,
}

impl State3d {
    fn initial(seed: u64, index: usize, profile: &Profile3d) -> Self {
        let mut rng = rng_for(seed, index, 2);
        let start = -HISTORY_STEPS;
        let agents = profile
            .model
            .agents
            .iter()
            .map(|(code, name, cap, rate)| AgentState {
                code,
                name,
                capacity_ml: *cap,
                remaining_ml: cap * rng.random_range(0.3..1.0),
                rate_ml_min: *rate,
                replace_at: None,
            })
            .collect();
        let mut next_printhead_serial = rng.random_range(0..36u64.pow(5));
        let printheads = (1..=profile.model.printheads)
            .map(|slot| {
                let used_h = rng.random_range(10..600);
                next_printhead_serial += 1;
                PrintheadState {
                    slot,
                    serial: format!("PH{}", base36(next_printhead_serial, 7)),
                    kind: profile.model.printhead_type,
                    status: "ok",
                    agent_used_ml: f64::from(used_h) * rng.random_range(20.0..40.0),
                    installed_s: start * STEP_S - i64::from(used_h) * 3600 * 2,
                    usage_time_s: i64::from(used_h) * 3600,
                    last_error: None,
                    replace_at: None,
                }
            })
            .collect();
        let build_unit = BuildUnitState {
            id: profile.build_unit_id.clone(),
            recycled_material_pct: round2(rng.random_range(60.0..85.0)),
            material_quantity_kg: round2(rng.random_range(20.0..60.0)),
            non_genuine_material: false,
            expired_material: false,
        };
        State3d {
            uptime_at_zero_s: rng.random_range(3600..30 * 86_400) + HISTORY_STEPS * STEP_S,
            rng,
            step: start,
            current: None,
            history: VecDeque::new(),
            next_job_id: 1000 + (splitmix(seed ^ index as u64) % 9000),
            idle_until: start,
            agents,
            printheads,
            build_unit,
            next_printhead_serial,
        }
    }

    /// Seconds since boot at sim second `now_s` (the printer never reboots).
    pub(crate) fn uptime_s(&self, now_s: i64) -> i64 {
        (self.uptime_at_zero_s + now_s).max(0)
    }

    fn broken(&self) -> bool {
        self.agents.iter().any(|a| a.remaining_ml <= 0.0)
            || self.printheads.iter().any(|p| p.status == "error")
    }

    /// What the printer is doing at sim second `now_s` (within the current step).
    pub(crate) fn activity(&self, now_s: i64) -> Activity3d {
        if self.broken() {
            Activity3d::Error
        } else if let Some(j) = &self.current {
            if now_s < j.started_s {
                Activity3d::WarmingUp
            } else {
                Activity3d::Printing
            }
        } else {
            Activity3d::Idle
        }
    }

    /// Device error codes at this step.
    pub(crate) fn errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.agents {
            if a.remaining_ml <= 0.0 {
                out.push(format!("agent_empty:{}", a.code));
            } else if a.remaining_ml / a.capacity_ml * 100.0 <= LOW_AGENT_PCT {
                out.push(format!("agent_low:{}", a.code));
            }
        }
        for p in &self.printheads {
            if p.status == "error" {
                out.push(format!("printhead_error:{}", p.slot));
            }
        }
        if self.build_unit.non_genuine_material {
            out.push("non_genuine_material".into());
        }
        if self.build_unit.expired_material {
            out.push("expired_material".into());
        }
        out
    }

    fn new_job(&mut self, profile: &Profile3d, now_s: i64) -> Job {
        let rng = &mut self.rng;
        let [bx, by, bz] = profile.model.build_mm;
        let bbox = [
            round2(rng.random_range(100.0..bx)),
            round2(rng.random_range(80.0..by)),
            round2(rng.random_range(20.0..bz.min(250.0))),
        ];
        let layer_thickness_um = 80.0;
        let layers = ((bbox[2] * 1000.0 / layer_thickness_um).round() as usize).max(1);
        let base = rng.random_range(7.0..11.0);
        let layer_times_s: Vec<f64> = (0..layers)
            .map(|_| round2(base * rng.random_range(0.95..1.08)))
            .collect();
        let packing_density_pct = round2(rng.random_range(5.0..18.0));
        let bbox_cm3 = bbox[0] * bbox[1] * bbox[2] / 1000.0;
        let volume_cm3 = round2(bbox_cm3 * packing_density_pct / 100.0);
        let n_parts = rng.random_range(1..=24usize);
        let weights: Vec<f64> = (0..n_parts).map(|_| rng.random_range(0.2..1.0)).collect();
        let total: f64 = weights.iter().sum();
        let (material_type, recyclable, density) = profile.material;
        let id = self.next_job_id;
        self.next_job_id += 1;
        let parts: Vec<Part> = weights
            .iter()
            .enumerate()
            .map(|(k, w)| {
                let v = volume_cm3 * w / total;
                Part {
                    id: format!("{id}-{}", k + 1),
                    name: format!(
                        "PRIVATE-part-{:04}-{}.3mf",
                        rng.random_range(0..10_000),
                        pick(rng, &PART_WORDS)
                    ),
                    bbox_mm: [
                        round2(bbox[0] * rng.random_range(0.05..0.5)),
                        round2(bbox[1] * rng.random_range(0.05..0.5)),
                        round2(bbox[2] * rng.random_range(0.1..1.0)),
                    ],
                    volume_cm3: round2(v),
                    material_used_g: round2(v * density),
                }
            })
            .collect();
        let surface_cm2 = round2(
            parts
                .iter()
                .map(|p| 6.5 * p.volume_cm3.powf(2.0 / 3.0))
                .sum(),
        );
        let roll = rng.random_range(0.0..1.0);
        let (outcome, end_layer) = if roll < 0.90 {
            (JobStatus::Completed, layers)
        } else if roll < 0.96 {
            (
                JobStatus::Failed,
                rng.random_range(layers / 10..=layers * 9 / 10).max(1),
            )
        } else {
            (JobStatus::Canceled, rng.random_range(0..=layers / 2).max(1))
        };
        let end_after_s = layer_times_s[..end_layer].iter().sum();
        let warmup_s = rng.random_range(10..=20) * STEP_S;
        let queued_s = rng.random_range(1..=120) * STEP_S;
        let name = format!(
            "PRIVATE-order-{:05}-{}",
            rng.random_range(0..100_000),
            pick(rng, &JOB_WORDS)
        );
        let print_mode = *pick(rng, &PRINT_MODES);
        Job {
            id,
            name,
            status: JobStatus::Running,
            created_s: now_s - queued_s,
            started_s: now_s + warmup_s,
            ended_s: None,
            bbox_mm: bbox,
            volume_cm3,
            surface_cm2,
            packing_density_pct,
            layer_thickness_um,
            material_type,
            recyclable_material_pct: recyclable,
            recycled_material_pct: self.build_unit.recycled_material_pct,
            print_mode,
            build_unit_id: self.build_unit.id.clone(),
            layer_times_s,
            parts,
            end_layer,
            outcome,
            end_after_s,
        }
    }

    fn finish(&mut self, status: JobStatus, ended_s: i64) {
        if let Some(mut job) = self.current.take() {
            job.status = status;
            job.ended_s = Some(ended_s);
            if status != JobStatus::Completed {
                // layers_done() of a finished job is end_layer: keep it honest.
                job.end_layer = job.count_layers(ended_s);
            }
            self.history.push_back(job);
            while self.history.len() > JOB_HISTORY {
                self.history.pop_front();
            }
        }
        self.idle_until = self.step + self.rng.random_range(20..=600);
    }

    /// Move to the next sim step.
    fn advance(&mut self, profile: &Profile3d) {
        self.step += 1;
        let now_s = self.step * STEP_S;
        // Service visits scheduled earlier.
        for a in &mut self.agents {
            if a.replace_at.is_some_and(|at| at <= self.step) {
                a.remaining_ml = a.capacity_ml;
                a.replace_at = None;
            }
        }
        for p in &mut self.printheads {
            if p.replace_at.is_some_and(|at| at <= self.step) {
                self.next_printhead_serial += 1;
                p.serial = format!("PH{}", base36(self.next_printhead_serial, 7));
                p.status = "ok";
                p.agent_used_ml = 0.0;
                p.installed_s = now_s;
                p.usage_time_s = 0;
                p.last_error = None;
                p.replace_at = None;
            }
        }

        let printing = self
            .current
            .as_ref()
            .is_some_and(|j| now_s > j.started_s && !self.broken());
        if printing {
            let n_heads = self.printheads.len().max(1) as f64;
            let mut agent_used = 0.0;
            for a in &mut self.agents {
                if a.remaining_ml <= 0.0 {
                    continue;
                }
                let used = (a.rate_ml_min * self.rng.random_range(0.8..1.2)).min(a.remaining_ml);
                a.remaining_ml = round2(a.remaining_ml - used);
                agent_used += used;
                if a.remaining_ml <= 0.0 {
                    a.remaining_ml = 0.0;
                    a.replace_at = Some(self.step + self.rng.random_range(30..=240));
                }
            }
            for p in &mut self.printheads {
                p.usage_time_s += STEP_S;
                p.agent_used_ml = round2(p.agent_used_ml + agent_used / n_heads);
                if p.status == "ok" && p.usage_time_s > PRINTHEAD_RATED_S {
                    p.status = "warning";
                }
                if self.rng.random_bool(0.000_03) {
                    p.status = "error";
                    p.last_error = Some(format!(
                        "0x{:04X}: nozzle health below threshold",
                        self.rng.random_range(0x2000..0x2fff)
                    ));
                    p.replace_at = Some(self.step + self.rng.random_range(30..=240));
                }
            }
        }

        if self.current.is_some() {
            if self.broken() {
                self.finish(JobStatus::Failed, now_s);
            } else if let Some(j) = &self.current {
                let end = j.started_s + j.end_after_s.ceil() as i64;
                if now_s >= end {
                    let outcome = j.outcome;
                    self.finish(outcome, end);
                }
            }
        } else if !self.broken() && self.step >= self.idle_until {
            // People start a job once the printer is free; busier printers sooner.
            let chance = profile.busy * 0.05;
            if self.rng.random_bool(chance) {
                let job = self.new_job(profile, now_s);
                let powder_kg = job.bbox_mm.iter().product::<f64>() / 1000.0 * 0.45 / 1000.0;
                let fresh_kg = powder_kg * (1.0 - self.build_unit.recycled_material_pct / 100.0)
                    + job.volume_cm3 * profile.material.2 / 1000.0;
                if self.build_unit.material_quantity_kg < fresh_kg + 1.0 {
                    self.refill_build_unit();
                }
                self.build_unit.material_quantity_kg =
                    round2((self.build_unit.material_quantity_kg - fresh_kg).max(0.0));
                self.current = Some(job);
            }
        }
    }

    fn refill_build_unit(&mut self) {
        let b = &mut self.build_unit;
        b.material_quantity_kg = round2(self.rng.random_range(40.0..60.0));
        b.recycled_material_pct = round2(self.rng.random_range(60.0..85.0));
        b.non_genuine_material = self.rng.random_bool(0.02);
        b.expired_material = self.rng.random_bool(0.03);
    }
}

/// A 3D printer: identity and state at some step.
#[derive(Debug, Clone)]
pub(crate) struct Printer3d {
    pub(crate) profile: Profile3d,
    pub(crate) state: State3d,
}

impl Printer3d {
    /// 3D printer `index` of fleet `seed` at step 0 (with its history).
    pub(crate) fn new(seed: u64, index: usize) -> Self {
        let profile = Profile3d::new(seed, index);
        let mut state = State3d::initial(seed, index, &profile);
        while state.step < 0 {
            state.advance(&profile);
        }
        Printer3d { profile, state }
    }

    /// Advance to `step` (never backwards).
    pub(crate) fn advance_to(&mut self, step: u64) {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        while self.state.step < step {
            self.state.advance(&self.profile);
        }
    }

    /// All jobs the printer lists, oldest first: history, then the current one.
    pub(crate) fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.state.history.iter().chain(self.state.current.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_progressing() {
        let mut a = Printer3d::new(5, 2);
        let mut b = Printer3d::new(5, 2);
        a.advance_to(2_000);
        b.advance_to(1_000);
        b.advance_to(2_000);
        assert_eq!(a.profile.serial, b.profile.serial);
        assert_eq!(a.state.history, b.state.history);
        assert_eq!(a.state.current, b.state.current);
        assert_eq!(a.state.agents, b.state.agents);
        assert_ne!(Printer3d::new(5, 3).profile.serial, a.profile.serial);
        // History exists at step 0 and every finished job is terminal, ordered, consistent.
        let p = Printer3d::new(1, 0);
        assert!(!p.state.history.is_empty(), "three sim days give jobs");
        let mut last = 0;
        for j in p.jobs() {
            assert!(j.id > last);
            last = j.id;
            assert!(j.name.starts_with("PRIVATE-"));
            assert!(!j.parts.is_empty() && j.parts.iter().all(|p| p.name.starts_with("PRIVATE-")));
            assert!(j.created_s <= j.started_s);
            if j.status != JobStatus::Running {
                let ended = j.ended_s.expect("finished jobs have an end");
                assert!(ended >= j.started_s);
                assert!(j.layers_done(ended) <= j.layer_times_s.len());
            }
        }
        // Jobs keep finishing over sim time.
        let before = a.jobs().last().map(|j| j.id).unwrap_or(0);
        a.advance_to(20_000);
        assert!(a.jobs().last().map(|j| j.id).unwrap_or(0) > before);
        assert!(a.state.history.len() <= JOB_HISTORY);
    }
}
