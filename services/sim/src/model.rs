//! Who a printer is ([`Profile`]) and how it drifts ([`State::advance`]).
//!
//! Both come from ChaCha streams keyed by `(seed, index)`: the profile from
//! one stream, the day-to-day drift from another. State only changes in whole
//! sim steps and each step draws from the stream in a fixed order, so the
//! state at step `n` is a pure function of `(seed, index, n)` (and the
//! behaviour knobs). Wall time and acceleration only decide *which* step a
//! request sees.
//!
//! Nothing here knows about OIDs; `mib.rs` renders a state into the MIB.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use fleetpulse_core::records::PrinterErrorFlag;

use crate::config::{SimConfig, SIM_STEP};

/// TimeTicks (hundredths of a second) per sim step.
pub(crate) const TICKS_PER_STEP: u64 = SIM_STEP.as_secs() * 100;

/// A toner at or below this percentage is "low".
pub(crate) const LOW_TONER_PCT: f64 = 10.0;

/// A tray at or below this percentage is "low".
pub(crate) const LOW_PAPER_PCT: u32 = 10;

/// Behaviour knobs in per-step terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Knobs {
    /// `activity`: scales the chance to start printing.
    activity: f64,
    silence_per_step: f64,
    silence_min_steps: u64,
    silence_max_steps: u64,
    jam_per_step: f64,
}

impl Knobs {
    /// Per-step probabilities and lengths from a (validated) config.
    pub(crate) fn from_config(cfg: &SimConfig) -> Self {
        let steps = |d: std::time::Duration| (d.as_secs() / SIM_STEP.as_secs()).max(1);
        let per_step = |p_per_hour: f64| {
            let steps_per_hour = 3600.0 / SIM_STEP.as_secs_f64();
            (p_per_hour / steps_per_hour).clamp(0.0, 1.0)
        };
        let silence_min_steps = steps(cfg.silence_min);
        Knobs {
            activity: cfg.activity,
            silence_per_step: per_step(cfg.silence_probability),
            silence_min_steps,
            silence_max_steps: steps(cfg.silence_max).max(silence_min_steps),
            jam_per_step: per_step(cfg.jam_probability),
        }
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs::from_config(&SimConfig::default())
    }
}

/// What a vendor's devices look like on the wire.
#[derive(Debug)]
pub(crate) struct Vendor {
    /// Brand as printed in model names.
    pub(crate) brand: &'static str,
    /// sysObjectID.
    pub(crate) object_id: &'static [u32],
    mono_models: &'static [&'static str],
    colour_models: &'static [&'static str],
    /// sysDescr with `{model}` and `{fw}` placeholders.
    descr: &'static str,
    serial_prefixes: &'static [&'static str],
    host_prefix: &'static str,
    oui: [u8; 3],
    /// Whether toner levels are reported in percent (else in impressions).
    toner_in_percent: bool,
}

const VENDORS: [Vendor; 6] = [
    Vendor {
        brand: "HP",
        object_id: &[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 1],
        mono_models: &[
            "LaserJet Pro M404dn",
            "LaserJet Enterprise M507",
            "LaserJet Enterprise M611",
        ],
        colour_models: &[
            "Color LaserJet Pro M454dw",
            "Color LaserJet Enterprise M555",
        ],
        descr: "HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD153,EEPROM {fw}",
        serial_prefixes: &["PHB", "VNB", "CNB"],
        host_prefix: "NPI",
        oui: [0x3c, 0xd9, 0x2b],
        toner_in_percent: true,
    },
    Vendor {
        brand: "Brother",
        object_id: &[1, 3, 6, 1, 4, 1, 2435, 2, 3, 9, 1],
        mono_models: &["HL-L6200DW series", "MFC-L5750DW series"],
        colour_models: &["HL-L8360CDW series", "MFC-L8900CDW series"],
        descr: "Brother NC-9300h, Firmware Ver.{fw},MID 8CE-K12,FID 2",
        serial_prefixes: &["E73", "U64", "E78"],
        host_prefix: "BRN",
        oui: [0x00, 0x80, 0x77],
        toner_in_percent: true,
    },
    Vendor {
        brand: "Canon",
        object_id: &[1, 3, 6, 1, 4, 1, 1602, 4, 7],
        mono_models: &["imageRUNNER 2630", "iR-ADV 4545"],
        colour_models: &["iR-ADV C3530", "iR-ADV C5535"],
        descr: "Canon {model} /P",
        serial_prefixes: &["XLN", "QVP", "2UD"],
        host_prefix: "CNB",
        oui: [0x00, 0x1e, 0x8f],
        toner_in_percent: false,
    },
    Vendor {
        brand: "Xerox",
        object_id: &[1, 3, 6, 1, 4, 1, 253, 8, 62, 1, 20, 1, 24, 1],
        mono_models: &["VersaLink B405", "AltaLink B8145"],
        colour_models: &["VersaLink C405", "AltaLink C8130"],
        descr: "Xerox {model}; SS {fw}, NC {fw}",
        serial_prefixes: &["3BX", "KXR", "3TB"],
        host_prefix: "XRX",
        oui: [0x9c, 0x93, 0x4e],
        toner_in_percent: false,
    },
    Vendor {
        brand: "RICOH",
        object_id: &[1, 3, 6, 1, 4, 1, 367, 1, 1],
        mono_models: &["SP 5300DN", "IM 430F"],
        colour_models: &["IM C3000", "IM C4500"],
        descr: "RICOH {model} {fw} / RICOH Network Printer C model / RICOH Network Scanner C model",
        serial_prefixes: &["C7A", "3C8", "G52"],
        host_prefix: "RNP",
        oui: [0x00, 0x26, 0x73],
        toner_in_percent: false,
    },
    Vendor {
        brand: "Kyocera",
        object_id: &[1, 3, 6, 1, 4, 1, 1347, 41],
        mono_models: &["ECOSYS P3155dn", "ECOSYS M3860idn"],
        colour_models: &["ECOSYS P6235cdn", "TASKalfa 2554ci"],
        descr: "KYOCERA Document Solutions Printing System",
        serial_prefixes: &["VCF", "RVK", "W9R"],
        host_prefix: "KM",
        oui: [0x00, 0xc0, 0xee],
        toner_in_percent: true,
    },
];

const SITES: [&str; 6] = [
    "Berlin HQ",
    "Munich Office",
    "Hamburg Branch",
    "Vienna Office",
    "Zurich Lab",
    "Lyon Plant",
];
const ROOMS: [&str; 5] = [
    "Copy Room",
    "Reception",
    "Finance",
    "Engineering",
    "Mail Room",
];
const SERIAL_CHARS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/// A toner's colorant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Colorant {
    Black,
    Cyan,
    Magenta,
    Yellow,
}

impl Colorant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Colorant::Black => "Black",
            Colorant::Cyan => "Cyan",
            Colorant::Magenta => "Magenta",
            Colorant::Yellow => "Yellow",
        }
    }
}

/// Kind of a consumable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SupplyKind {
    /// Consumed per page (per colour page for C/M/Y).
    Toner(Colorant),
    /// Photoconductor drum, worn per page.
    Drum,
    /// Waste toner receptacle; reports "some remaining" of unknown capacity.
    Waste,
}

/// Unit a supply level is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LevelUnit {
    /// 0..=100.
    Percent,
    /// Pages left out of `capacity`.
    Impressions,
}

/// A consumable slot of a printer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SupplySpec {
    pub(crate) kind: SupplyKind,
    pub(crate) description: String,
    /// Pages a fresh unit lasts (at 5% coverage for toner).
    pub(crate) life_pages: u32,
    pub(crate) unit: LevelUnit,
}

impl SupplySpec {
    /// Printer-MIB max capacity (−2 = unknown for the waste box).
    pub(crate) fn max_capacity(&self) -> i64 {
        match (self.kind, self.unit) {
            (SupplyKind::Waste, _) => -2,
            (_, LevelUnit::Percent) => 100,
            (_, LevelUnit::Impressions) => i64::from(self.life_pages),
        }
    }

    /// Printer-MIB level for a remaining fraction (−3 = some remaining for the waste box).
    pub(crate) fn level(&self, remaining: f64) -> i64 {
        let remaining = remaining.clamp(0.0, 1.0);
        match (self.kind, self.unit) {
            (SupplyKind::Waste, _) => -3,
            // Round up: only a truly empty unit reports 0.
            (_, LevelUnit::Percent) => (remaining * 100.0).ceil() as i64,
            (_, LevelUnit::Impressions) => (remaining * f64::from(self.life_pages)).ceil() as i64,
        }
    }
}

/// An input tray.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraySpec {
    pub(crate) name: String,
    pub(crate) media: &'static str,
    /// Sheets.
    pub(crate) capacity: u32,
}

/// The fixed identity of printer `index` in fleet `seed`.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) vendor: &'static Vendor,
    /// Full model name (hrDeviceDescr), e.g. "HP LaserJet Pro M404dn".
    pub(crate) model: String,
    pub(crate) colour: bool,
    pub(crate) serial: String,
    pub(crate) mac: [u8; 6],
    pub(crate) sys_descr: String,
    pub(crate) sys_name: String,
    pub(crate) sys_location: String,
    pub(crate) sys_contact: String,
    pub(crate) supplies: Vec<SupplySpec>,
    pub(crate) trays: Vec<TraySpec>,
    /// Rated pages per minute.
    ppm: u32,
    /// Long-run fraction of sim minutes spent printing.
    duty: f64,
    /// Fraction of pages printed in colour (colour devices).
    colour_share: f64,
    /// Whether the black toner starts just above the low mark (demo liveliness).
    near_low_start: bool,
}

/// ChaCha key of printer `index` in fleet `seed`; `stream` separates identity from drift.
fn rng_for(seed: u64, index: usize, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    key[16..].copy_from_slice(b"fleetpulse-sim/1");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// SplitMix64 finaliser: spreads a seed over all 64 bits.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

impl Profile {
    /// The identity of printer `index` in fleet `seed`.
    pub(crate) fn new(seed: u64, index: usize) -> Self {
        let mut rng = rng_for(seed, index, 1);
        let vendor = pick(&mut rng, &VENDORS);
        let colour = rng.random_bool(0.4);
        let model_name = *pick(
            &mut rng,
            if colour {
                vendor.colour_models
            } else {
                vendor.mono_models
            },
        );
        let model = format!("{} {}", vendor.brand, model_name);
        // Serial: vendor prefix, three random characters, and four base-36
        // digits that are a bijection of the index (for a given seed), so
        // serials are unique per index by construction yet do not count up.
        let mut serial = pick(&mut rng, vendor.serial_prefixes).to_string();
        for _ in 0..3 {
            serial.push(char::from(*pick(&mut rng, SERIAL_CHARS)));
        }
        const SUFFIX_SPACE: u64 = 36 * 36 * 36 * 36;
        let i = index as u64;
        if i < SUFFIX_SPACE {
            // 1_000_003 is coprime to 36^4 = 2^8 * 3^8, so this permutes 0..36^4.
            let mixed = (i * 1_000_003 + splitmix(seed) % SUFFIX_SPACE) % SUFFIX_SPACE;
            serial.push_str(&base36(mixed, 4));
        } else {
            // Longer than four digits: cannot collide with the permuted range.
            serial.push_str(&base36(i, 5));
        }
        // MAC: vendor OUI and a 24-bit permutation of the index (odd multiplier).
        let tail = (i
            .wrapping_mul(0x5b_d1e5)
            .wrapping_add(splitmix(seed ^ 0x4d41_4321)))
            & 0xff_ffff;
        let mac = [
            vendor.oui[0],
            vendor.oui[1],
            vendor.oui[2],
            (tail >> 16) as u8,
            (tail >> 8) as u8,
            tail as u8,
        ];
        let fw = format!(
            "{}.{}.{:02}",
            rng.random_range(1..=5),
            rng.random_range(0..=9),
            rng.random_range(0..=99)
        );
        let sys_descr = vendor
            .descr
            .replace("{model}", model_name)
            .replace("{fw}", &fw);
        let sys_name = format!(
            "{}{:02X}{:02X}{:02X}",
            vendor.host_prefix, mac[3], mac[4], mac[5]
        );
        let sys_location = format!(
            "{} / Floor {} / {}",
            pick(&mut rng, &SITES),
            rng.random_range(0..=6),
            pick(&mut rng, &ROOMS)
        );
        let sys_contact = "IT Service Desk <it-helpdesk@example.com>".to_string();
        let ppm = if colour {
            rng.random_range(20..=40)
        } else {
            rng.random_range(25..=55)
        };
        let near_low_start = rng.random_bool(0.25);
        let duty = if near_low_start {
            rng.random_range(0.45..0.7)
        } else {
            rng.random_range(0.15..0.55)
        };
        let colour_share = rng.random_range(0.2..0.6);

        let unit = if vendor.toner_in_percent {
            LevelUnit::Percent
        } else {
            LevelUnit::Impressions
        };
        let mut supplies = Vec::new();
        let colorants: &[Colorant] = if colour {
            &[
                Colorant::Black,
                Colorant::Cyan,
                Colorant::Magenta,
                Colorant::Yellow,
            ]
        } else {
            &[Colorant::Black]
        };
        for &c in colorants {
            let life_pages = if colour {
                rng.random_range(23..=60) * 100
            } else {
                rng.random_range(30..=110) * 100
            };
            supplies.push(SupplySpec {
                kind: SupplyKind::Toner(c),
                description: format!("{} Toner Cartridge", c.name()),
                life_pages,
                unit,
            });
        }
        if !colour {
            supplies.push(SupplySpec {
                kind: SupplyKind::Drum,
                description: "Imaging Drum Unit".into(),
                life_pages: rng.random_range(12..=60) * 1000,
                unit: LevelUnit::Impressions,
            });
        }
        supplies.push(SupplySpec {
            kind: SupplyKind::Waste,
            description: "Waste Toner Container".into(),
            life_pages: 0,
            unit: LevelUnit::Impressions,
        });
        let media = if rng.random_bool(0.8) {
            "ISO A4"
        } else {
            "NA Letter"
        };
        let trays = vec![
            TraySpec {
                name: "Tray 1".into(),
                media,
                capacity: 250,
            },
            TraySpec {
                name: "Tray 2".into(),
                media,
                capacity: *pick(&mut rng, &[250, 500, 550]),
            },
        ];
        Profile {
            vendor,
            model,
            colour,
            serial,
            mac,
            sys_descr,
            sys_name,
            sys_location,
            sys_contact,
            supplies,
            trays,
            ppm,
            duty,
            colour_share,
            near_low_start,
        }
    }
}

/// A consumable's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SupplyState {
    /// Fraction of a fresh unit left, 0..=1.
    pub(crate) remaining: f64,
    /// Step at which an empty unit gets replaced.
    replace_at: Option<u64>,
}

/// A tray's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrayState {
    /// Sheets left.
    pub(crate) level: u32,
    /// Step at which an empty tray gets refilled.
    refill_at: Option<u64>,
}

/// A condition that shows as a row in prtAlertTable while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Condition {
    /// Paper jam in the given area.
    Jam(i32),
    /// Tray (0-based) below the low mark.
    TrayLow(usize),
    /// Tray (0-based) empty.
    TrayEmpty(usize),
    /// Toner supply (0-based supply position) below the low mark.
    TonerLow(usize),
    /// Toner supply (0-based supply position) empty.
    TonerEmpty(usize),
}

/// An open alert.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Alert {
    /// prtAlertIndex: increases with every new alert, never reused.
    pub(crate) index: i32,
    pub(crate) condition: Condition,
    /// sysUpTime when the alert opened.
    pub(crate) time_ticks: u32,
}

/// hrDeviceStatus in the simulator's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Running,
    Warning,
    Down,
}

/// hrPrinterStatus in the simulator's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Down: hrPrinterStatus other(1), as RFC 2790 prescribes.
    Other,
    Idle,
    Printing,
    Warmup,
}

/// The changing part of a printer, at sim step `step`.
#[derive(Debug, Clone)]
pub(crate) struct State {
    rng: ChaCha8Rng,
    knobs: Knobs,
    pub(crate) step: u64,
    printing: bool,
    warming_up: bool,
    idle_steps: u32,
    /// prtMarkerLifeCount (wraps like a Counter32).
    pub(crate) life_count: u32,
    /// prtMarkerPowerOnCount: pages since the last boot.
    pub(crate) power_on_count: u32,
    pub(crate) supplies: Vec<SupplyState>,
    pub(crate) trays: Vec<TrayState>,
    /// Open jam: (clears at step, area).
    jam: Option<(u64, i32)>,
    /// Silent (not answering) until this step.
    silent_until: Option<u64>,
    boot_step: u64,
    uptime_at_boot: u32,
    pub(crate) alerts: Vec<Alert>,
    next_alert_index: i32,
    /// hrDeviceErrors.
    pub(crate) device_errors: u32,
}

impl State {
    /// The state at step 0.
    pub(crate) fn initial(seed: u64, index: usize, profile: &Profile, knobs: Knobs) -> Self {
        let mut rng = rng_for(seed, index, 2);
        let life_count = rng.random_range(2_000..400_000);
        let power_on_count = rng.random_range(0..3_000);
        // Up between an hour and a month.
        let uptime_at_boot = rng.random_range(360_000..259_200_000);
        let supplies = profile
            .supplies
            .iter()
            .map(|spec| {
                let remaining = match spec.kind {
                    SupplyKind::Toner(Colorant::Black) if profile.near_low_start => {
                        rng.random_range(0.103..0.13)
                    }
                    SupplyKind::Toner(_) => {
                        if rng.random_bool(0.03) {
                            rng.random_range(0.04..0.09)
                        } else {
                            rng.random_range(0.15..1.0)
                        }
                    }
                    SupplyKind::Drum => rng.random_range(0.2..1.0),
                    SupplyKind::Waste => 1.0,
                };
                SupplyState {
                    remaining,
                    replace_at: None,
                }
            })
            .collect();
        let trays = profile
            .trays
            .iter()
            .map(|t| TrayState {
                level: (f64::from(t.capacity) * rng.random_range(0.3..1.0)) as u32,
                refill_at: None,
            })
            .collect();
        let printing = rng.random_bool(profile.duty);
        let mut state = State {
            rng,
            knobs,
            step: 0,
            printing,
            warming_up: false,
            idle_steps: 0,
            life_count,
            power_on_count,
            supplies,
            trays,
            jam: None,
            silent_until: None,
            boot_step: 0,
            uptime_at_boot,
            alerts: Vec::new(),
            next_alert_index: 1,
            device_errors: 0,
        };
        state.refresh_alerts(profile);
        state
    }

    /// sysUpTime at an exact sim time (hundredths of a second since sim start).
    pub(crate) fn uptime_ticks(&self, sim_ticks: u64) -> u32 {
        let since_boot = sim_ticks.saturating_sub(self.boot_step * TICKS_PER_STEP);
        self.uptime_at_boot.wrapping_add(since_boot as u32)
    }

    /// sysUpTime at the start of the current step.
    pub(crate) fn uptime_at_step(&self) -> u32 {
        self.uptime_ticks(self.step * TICKS_PER_STEP)
    }

    /// Whether the printer is not answering at this step.
    pub(crate) fn is_silent(&self) -> bool {
        self.silent_until.is_some()
    }

    fn toner_empty(&self, profile: &Profile) -> bool {
        profile
            .supplies
            .iter()
            .zip(&self.supplies)
            .any(|(spec, s)| matches!(spec.kind, SupplyKind::Toner(_)) && s.remaining <= 0.0)
    }

    fn can_print(&self, profile: &Profile) -> bool {
        self.jam.is_none() && !self.toner_empty(profile) && self.trays.iter().any(|t| t.level > 0)
    }

    /// hrPrinterDetectedErrorState flags.
    pub(crate) fn error_flags(&self, profile: &Profile) -> Vec<PrinterErrorFlag> {
        let mut flags = Vec::new();
        let mut low_paper = false;
        let mut no_paper = false;
        for (spec, t) in profile.trays.iter().zip(&self.trays) {
            if t.level == 0 {
                no_paper = true;
            } else if t.level * 100 <= spec.capacity * LOW_PAPER_PCT {
                low_paper = true;
            }
        }
        let mut low_toner = false;
        let mut no_toner = false;
        for (spec, s) in profile.supplies.iter().zip(&self.supplies) {
            if matches!(spec.kind, SupplyKind::Toner(_)) {
                if s.remaining <= 0.0 {
                    no_toner = true;
                } else if s.remaining * 100.0 <= LOW_TONER_PCT {
                    low_toner = true;
                }
            }
        }
        if low_paper {
            flags.push(PrinterErrorFlag::LowPaper);
        }
        if no_paper {
            flags.push(PrinterErrorFlag::NoPaper);
        }
        if low_toner {
            flags.push(PrinterErrorFlag::LowToner);
        }
        if no_toner {
            flags.push(PrinterErrorFlag::NoToner);
        }
        if self.jam.is_some() {
            flags.push(PrinterErrorFlag::Jammed);
        }
        flags
    }

    /// hrDeviceStatus.
    pub(crate) fn health(&self, profile: &Profile) -> Health {
        if !self.can_print(profile) {
            Health::Down
        } else if self.error_flags(profile).is_empty() {
            Health::Running
        } else {
            Health::Warning
        }
    }

    /// hrPrinterStatus.
    pub(crate) fn activity(&self, profile: &Profile) -> Activity {
        if !self.can_print(profile) {
            Activity::Other
        } else if self.warming_up {
            Activity::Warmup
        } else if self.printing {
            Activity::Printing
        } else {
            Activity::Idle
        }
    }

    /// Move to the next sim step.
    pub(crate) fn advance(&mut self, profile: &Profile) {
        let now = self.step + 1;
        self.step = now;

        if let Some(until) = self.silent_until {
            if now < until {
                return;
            }
            self.reboot(now, profile);
            return;
        }
        if self.rng.random_bool(self.knobs.silence_per_step) {
            let len = self
                .rng
                .random_range(self.knobs.silence_min_steps..=self.knobs.silence_max_steps);
            self.silent_until = Some(now + len);
            self.printing = false;
            self.warming_up = false;
            return;
        }

        // Service visits scheduled earlier.
        for s in &mut self.supplies {
            if s.replace_at.is_some_and(|at| at <= now) {
                s.remaining = 1.0;
                s.replace_at = None;
            }
        }
        for (spec, t) in profile.trays.iter().zip(&mut self.trays) {
            if t.refill_at.is_some_and(|at| at <= now) {
                t.level = spec.capacity;
                t.refill_at = None;
            }
        }
        if self.jam.is_some_and(|(until, _)| until <= now) {
            self.jam = None;
        }

        // Two-state activity chain whose stationary share of printing is `duty`.
        self.warming_up = false;
        if self.printing {
            if self.rng.random_bool((1.0 - profile.duty) * 0.4) {
                self.printing = false;
            }
        } else if self
            .rng
            .random_bool((profile.duty * 0.4 * self.knobs.activity).clamp(0.0, 1.0))
        {
            self.printing = true;
            self.warming_up = self.idle_steps >= 15;
        }
        if self.printing {
            self.idle_steps = 0;
        } else {
            self.idle_steps = self.idle_steps.saturating_add(1);
        }

        if self.printing && !self.warming_up && self.can_print(profile) {
            self.print_some(now, profile);
        }

        // People top up trays that look low, and eventually refill empty ones.
        for (spec, t) in profile.trays.iter().zip(&mut self.trays) {
            if t.refill_at.is_some() {
                continue;
            }
            if t.level == 0 {
                t.refill_at = Some(now + self.rng.random_range(5..=60));
            } else if t.level * 10 < spec.capacity * 4 && self.rng.random_bool(0.1) {
                t.level = spec.capacity;
            }
        }

        self.refresh_alerts(profile);
    }

    /// One sim minute of printing.
    fn print_some(&mut self, now: u64, profile: &Profile) {
        let wanted = self.rng.random_range(1..=(profile.ppm / 2).max(1));
        let mut tray = if self.rng.random_bool(0.75) { 0 } else { 1 };
        if self.trays[tray].level == 0 {
            tray = 1 - tray;
        }
        let pages = wanted.min(self.trays[tray].level);
        if pages == 0 {
            return;
        }
        self.trays[tray].level -= pages;
        self.life_count = self.life_count.wrapping_add(pages);
        self.power_on_count = self.power_on_count.wrapping_add(pages);
        let colour_pages = if profile.colour {
            f64::from(pages) * profile.colour_share
        } else {
            0.0
        };
        let coverage = self.rng.random_range(0.6..1.4);
        for (spec, s) in profile.supplies.iter().zip(&mut self.supplies) {
            let life = f64::from(spec.life_pages.max(1));
            let used = match spec.kind {
                SupplyKind::Toner(Colorant::Black) => f64::from(pages) * coverage / life,
                SupplyKind::Toner(_) => {
                    colour_pages * coverage * self.rng.random_range(0.7..1.3) / life
                }
                SupplyKind::Drum => f64::from(pages) / life,
                SupplyKind::Waste => 0.0,
            };
            if used <= 0.0 || s.remaining <= 0.0 {
                continue;
            }
            s.remaining = (s.remaining - used).max(0.0);
            if s.remaining <= 0.0 && s.replace_at.is_none() {
                // Someone notices and fits a new unit within half an hour to four hours.
                s.replace_at = Some(now + self.rng.random_range(30..=240));
            }
        }
        if self.rng.random_bool(self.knobs.jam_per_step) {
            let until = now + self.rng.random_range(5..=45);
            let area = self.rng.random_range(1..=4);
            self.jam = Some((until, area));
            self.device_errors = self.device_errors.wrapping_add(1);
        }
    }

    /// Back from a silent stretch: a fresh boot.
    fn reboot(&mut self, now: u64, profile: &Profile) {
        self.silent_until = None;
        self.boot_step = now;
        // Booting took 20–90 s.
        self.uptime_at_boot = self.rng.random_range(2_000..=9_000);
        self.power_on_count = 0;
        self.printing = false;
        self.warming_up = false;
        self.idle_steps = 1_000;
        // The alert table is volatile: conditions still present reappear as new rows.
        self.alerts.clear();
        self.refresh_alerts(profile);
    }

    fn conditions(&self, profile: &Profile) -> Vec<Condition> {
        let mut out = Vec::new();
        if let Some((_, area)) = self.jam {
            out.push(Condition::Jam(area));
        }
        for (i, (spec, t)) in profile.trays.iter().zip(&self.trays).enumerate() {
            if t.level == 0 {
                out.push(Condition::TrayEmpty(i));
            } else if t.level * 100 <= spec.capacity * LOW_PAPER_PCT {
                out.push(Condition::TrayLow(i));
            }
        }
        for (i, (spec, s)) in profile.supplies.iter().zip(&self.supplies).enumerate() {
            if matches!(spec.kind, SupplyKind::Toner(_)) {
                if s.remaining <= 0.0 {
                    out.push(Condition::TonerEmpty(i));
                } else if s.remaining * 100.0 <= LOW_TONER_PCT {
                    out.push(Condition::TonerLow(i));
                }
            }
        }
        out
    }

    fn refresh_alerts(&mut self, profile: &Profile) {
        let wanted = self.conditions(profile);
        self.alerts.retain(|a| wanted.contains(&a.condition));
        let time_ticks = self.uptime_at_step();
        for c in wanted {
            if !self.alerts.iter().any(|a| a.condition == c) {
                self.alerts.push(Alert {
                    index: self.next_alert_index,
                    condition: c,
                    time_ticks,
                });
                self.next_alert_index = self.next_alert_index.wrapping_add(1).max(1);
            }
        }
    }
}

/// A printer: its identity and its state at some step.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    pub(crate) profile: Profile,
    pub(crate) state: State,
}

impl Printer {
    /// Printer `index` of fleet `seed` at step 0.
    pub(crate) fn new(seed: u64, index: usize, knobs: Knobs) -> Self {
        let profile = Profile::new(seed, index);
        let state = State::initial(seed, index, &profile, knobs);
        Printer { profile, state }
    }

    /// Advance to `step` (never backwards).
    pub(crate) fn advance_to(&mut self, step: u64) {
        while self.state.step < step {
            self.state.advance(&self.profile);
        }
    }
}
