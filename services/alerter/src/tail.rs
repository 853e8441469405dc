//! `fleetpulse alerts tail`: the alert topic, one readable line per alert.

use std::io::Write;

use fleetpulse_core::codec;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{
    MaintenanceAlert, MaintenanceKind, MaintenanceSeverity, MaintenanceState,
};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::Shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

use crate::consumer::client_config;
use crate::AlerterError;

/// `2026-11-21T07:01:02Z` for epoch milliseconds; the raw number if out of range.
pub(crate) fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn kind_name(k: MaintenanceKind) -> &'static str {
    match k {
        MaintenanceKind::ConsumableDepletion => "consumable_depletion",
        MaintenanceKind::DeviceSilent => "device_silent",
        MaintenanceKind::PartWear => "part_wear",
        MaintenanceKind::ErrorBurst => "error_burst",
    }
}

fn state_name(s: MaintenanceState) -> &'static str {
    match s {
        MaintenanceState::Raised => "RAISED",
        MaintenanceState::Cleared => "CLEARED",
    }
}

fn severity_name(s: MaintenanceSeverity) -> &'static str {
    match s {
        MaintenanceSeverity::Info => "info",
        MaintenanceSeverity::Warning => "warning",
        MaintenanceSeverity::Critical => "critical",
    }
}

/// Metric label of a kind.
pub(crate) fn kind_label(k: MaintenanceKind) -> &'static str {
    kind_name(k)
}

/// Metric label of a state.
pub(crate) fn state_label(s: MaintenanceState) -> &'static str {
    match s {
        MaintenanceState::Raised => "raised",
        MaintenanceState::Cleared => "cleared",
    }
}

/// One readable line (no newline):
/// `2026-11-21T07:01:02Z RAISED   warning  consumable_depletion  device=SN-1234 supply=1 level=12.0% days_to_empty=2.3  <message>`.
pub(crate) fn format_line(a: &MaintenanceAlert) -> String {
    let mut facts = format!("device={}", a.device_id);
    if let Some(i) = a.supply_index {
        facts.push_str(&format!(" supply={i}"));
    }
    if let Some(l) = a.level_percent {
        facts.push_str(&format!(" level={l:.1}%"));
    }
    if let Some(d) = a.days_to_empty {
        facts.push_str(&format!(" days_to_empty={d:.1}"));
    }
    if let Some(s) = a.silent_for_s {
        facts.push_str(&format!(" silent_for={s}s"));
    }
    format!(
        "{} {:<8} {:<8} {:<21} {}  {}",
        utc(a.observed_at),
        state_name(a.state),
        severity_name(a.severity),
        kind_name(a.kind),
        facts,
        a.message
    )
}

fn undecodable_alert(partition: i32, offset: i64, err: &codec::CodecError) {
    tracing::warn!(partition, offset, error = %err, "skipping undecodable record on the alert topic");
    metrics::counter!("fleetpulse_alerts_tail_undecodable_total", "class" => err.class())
        .increment(1);
}

/// `fleetpulse alerts tail`: print alerts from the alert topic in readable form, one line each, until shutdown
/// (or until `max` alerts if Some). `from_beginning` reads from the earliest offset with a throwaway group.
///
/// The group is always a throwaway one (`fleetpulse-alerts-tail-<uuid>`,
/// offsets never committed): tailing must not move anyone's offsets.
/// Without `from_beginning` only alerts published after the partitions are
/// assigned are shown. `json` prints each alert as one JSON object instead.
/// Returns the number of alerts printed.
pub async fn tail(
    kafka: KafkaConfig,
    from_beginning: bool,
    max: Option<usize>,
    json: bool,
    out: &mut (dyn Write + Send),
    shutdown: Shutdown,
) -> Result<usize, AlerterError> {
    if max == Some(0) {
        return Ok(0);
    }
    let topic = kafka.topic(RecordType::MaintenanceAlert);
    let group = format!("fleetpulse-alerts-tail-{}", fleetpulse_core::new_event_id());
    let reset = if from_beginning { "earliest" } else { "latest" };
    let consumer: StreamConsumer = client_config(
        &kafka,
        &[
            ("group.id", group.as_str()),
            ("client.id", "fleetpulse-alerts-tail"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", reset),
        ],
    )
    .create()
    .map_err(AlerterError::kafka("create the tail consumer"))?;
    consumer
        .subscribe(&[topic.as_str()])
        .map_err(AlerterError::kafka("subscribe to the alert topic"))?;
    let mut printed = 0usize;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading the alert topic failed; retrying");
                continue;
            }
        };
        let alert = match codec::decode::<MaintenanceAlert>(msg.payload().unwrap_or_default()) {
            Ok(a) => a,
            Err(e) => {
                undecodable_alert(msg.partition(), msg.offset(), &e);
                continue;
            }
        };
        let line = if json {
            serde_json::to_string(&alert).map_err(|e| AlerterError::Output(e.into()))?
        } else {
            format_line(&alert)
        };
        writeln!(out, "{line}").map_err(AlerterError::Output)?;
        out.flush().map_err(AlerterError::Output)?;
        printed += 1;
        if max.is_some_and(|m| printed >= m) {
            break;
        }
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::samples;

    #[test]
    fn readable_line_of_a_depletion() {
        let mut a = samples::maintenance_alert("SN-1234");
        a.observed_at = 1_795_244_462_000; // 2026-11-21T07:01:02Z
        a.kind = MaintenanceKind::ConsumableDepletion;
        a.state = MaintenanceState::Raised;
        a.severity = MaintenanceSeverity::Warning;
        a.supply_index = Some(1);
        a.level_percent = Some(12.0);
        a.days_to_empty = Some(2.31);
        a.silent_for_s = None;
        a.message =
            "Black Cartridge HP CF410A (supply 1) at 12.0% will be empty in 2.3 days".into();
        assert_eq!(
            format_line(&a),
            "2026-11-21T07:01:02Z RAISED   warning  consumable_depletion  device=SN-1234 supply=1 level=12.0% days_to_empty=2.3  Black Cartridge HP CF410A (supply 1) at 12.0% will be empty in 2.3 days"
        );
    }

    #[test]
    fn readable_line_of_a_silent_device() {
        let mut a = samples::maintenance_alert("SN-9");
        a.observed_at = 0;
        a.kind = MaintenanceKind::DeviceSilent;
        a.state = MaintenanceState::Cleared;
        a.severity = MaintenanceSeverity::Info;
        a.supply_index = None;
        a.supply_description = None;
        a.level_percent = None;
        a.days_to_empty = None;
        a.silent_for_s = Some(95);
        a.message = "back".into();
        assert_eq!(
            format_line(&a),
            "1970-01-01T00:00:00Z CLEARED  info     device_silent         device=SN-9 silent_for=95s  back"
        );
    }
}
