//! Human-readable rendering of a [`DeviceSnapshot`] for `fleetpulse poll`.

use std::fmt::Write as _;

use fleetpulse_core::records::LevelSpecial;

use crate::device::DeviceSnapshot;

fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

fn special(s: Option<LevelSpecial>) -> &'static str {
    match s {
        Some(LevelSpecial::Unrestricted) => "unrestricted(-1)",
        Some(LevelSpecial::Unknown) => "unknown(-2)",
        Some(LevelSpecial::SomeRemaining) => "someRemaining(-3)",
        None => "",
    }
}

fn num(v: Option<i32>, s: Option<LevelSpecial>) -> String {
    match (v, s) {
        (Some(v), _) => v.to_string(),
        (None, Some(LevelSpecial::Unrestricted)) => "-1".into(),
        (None, Some(LevelSpecial::Unknown)) => "-2".into(),
        (None, Some(LevelSpecial::SomeRemaining)) => "-3".into(),
        (None, None) => "-".into(),
    }
}

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.1}%")).unwrap_or_else(|| "-".into())
}

fn camel<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A multi-line report: identity, status and error flags, supplies (raw
/// level/capacity, special value, percent), trays, counters and open alerts.
pub fn render_text(s: &DeviceSnapshot) -> String {
    let mut out = String::new();
    let id = &s.identity;
    let _ = writeln!(out, "Device {} ({})", s.address, s.ip_address);
    let _ = writeln!(
        out,
        "  device id    {} (from {})",
        id.device_id,
        camel(&id.device_id_source)
    );
    let _ = writeln!(out, "  vendor       {}", or_dash(id.vendor.as_deref()));
    let _ = writeln!(out, "  model        {}", or_dash(id.model.as_deref()));
    let _ = writeln!(out, "  sysDescr     {}", or_dash(id.sys_descr.as_deref()));
    let _ = writeln!(
        out,
        "  sysObjectID  {}",
        or_dash(id.sys_object_id.as_deref())
    );
    let _ = writeln!(out, "  sysName      {}", or_dash(id.sys_name.as_deref()));
    let _ = writeln!(
        out,
        "  sysLocation  {}",
        or_dash(id.sys_location.as_deref())
    );
    let _ = writeln!(out, "  sysContact   {}", or_dash(id.sys_contact.as_deref()));
    let _ = writeln!(out, "  MAC          {}", or_dash(id.mac_address.as_deref()));
    let uptime = id
        .sys_uptime_ticks
        .map(|t| humantime_secs(t / 100))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "  uptime       {uptime}");
    let _ = writeln!(out, "  response     {} ms", s.response_ms);

    let st = &s.status;
    let _ = writeln!(out, "Status");
    let _ = writeln!(
        out,
        "  device       {}",
        st.hr_device_status
            .map(|v| camel(&v))
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "  printer      {}",
        st.hr_printer_status
            .map(|v| camel(&v))
            .unwrap_or_else(|| "-".into())
    );
    let flags = if st.detected_errors.is_empty() {
        "none".to_string()
    } else {
        st.detected_errors
            .iter()
            .map(camel)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "  errors       {flags} (raw {})",
        or_dash(st.detected_error_state_hex.as_deref())
    );

    let _ = writeln!(out, "Supplies ({})", s.supplies.len());
    if !s.supplies.is_empty() {
        let _ = writeln!(
            out,
            "  {:>5}  {:<18} {:>9} {:>9}  {:<30} {:>7}  description",
            "index", "type", "level", "capacity", "special", "percent"
        );
    }
    for x in &s.supplies {
        let sp = [special(x.level_special), special(x.max_capacity_special)]
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            out,
            "  {:>5}  {:<18} {:>9} {:>9}  {:<30} {:>7}  {}",
            format!("{}.{}", x.device_index, x.index),
            camel(&x.supply_type),
            num(x.level, x.level_special),
            num(x.max_capacity, x.max_capacity_special),
            if sp.is_empty() { "-".into() } else { sp },
            pct(x.percent),
            x.description
        );
    }

    let _ = writeln!(out, "Trays ({})", s.trays.len());
    for t in &s.trays {
        let _ = writeln!(
            out,
            "  {:>5}  {:<20} level {:>6} / {:<9} {:>7}  media {}",
            format!("{}.{}", t.device_index, t.index),
            or_dash(t.name.as_deref()),
            num(t.level, t.level_special),
            num(t.max_capacity, t.max_capacity_special),
            pct(t.percent),
            or_dash(t.media_name.as_deref())
        );
    }

    let _ = writeln!(out, "Counters ({})", s.counters.len());
    for c in &s.counters {
        let _ = writeln!(
            out,
            "  marker {}.{}  life {} {}  since power-on {}",
            c.device_index,
            c.marker_index,
            c.life_count,
            camel(&c.unit),
            c.power_on_count
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }

    let _ = writeln!(out, "Open alerts ({})", s.alerts.len());
    for a in &s.alerts {
        let _ = writeln!(
            out,
            "  #{} {:<9} {} (code {}) group {} [{}] {}",
            a.alert_index,
            camel(&a.severity),
            a.code,
            a.code_raw,
            or_dash(a.group.as_deref()),
            a.group_index
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            or_dash(a.description.as_deref())
        );
    }
    out
}

fn humantime_secs(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else {
        format!("{h}h {m}m {s}s")
    }
}
