//! One realistic sample of every record type, for tests, benchmarks and docs.
//! Every optional field is filled, so a round trip exercises the whole schema.

use crate::records::*;

fn env(device_id: &str) -> (String, String, String, String, i64, i32) {
    (
        crate::new_event_id(),
        "tenant-a".into(),
        "conn-1".into(),
        device_id.into(),
        1_763_700_000_000,
        SCHEMA_VERSION,
    )
}

macro_rules! with_env {
    ($t:ident, $dev:expr, { $($f:ident : $v:expr),* $(,)? }) => {{
        let (event_id, tenant_id, connector_id, device_id, observed_at, schema_version) = env($dev);
        $t { event_id, tenant_id, connector_id, device_id, observed_at, schema_version, $($f: $v),* }
    }};
}

/// A heartbeat.
pub fn device_heartbeat(device_id: &str) -> DeviceHeartbeat {
    with_env!(DeviceHeartbeat, device_id, {
        protocol: PollProtocol::Snmp,
        ip_address: Some("192.0.2.17".into()),
        response_ms: 12,
        sys_uptime_ticks: Some(123_456),
    })
}

/// A status with supplies, a special level, trays and 3D parts.
pub fn device_status(device_id: &str) -> DeviceStatus {
    with_env!(DeviceStatus, device_id, {
        vendor: Some("HP".into()),
        model: Some("HP Color LaserJet M452nw".into()),
        sys_descr: Some("HP ETHERNET MULTI-ENVIRONMENT".into()),
        sys_object_id: Some("1.3.6.1.4.1.11.2.3.9.1".into()),
        sys_name: Some("printer-floor2.example".into()),
        sys_contact: Some("Jane Admin".into()),
        sys_location: Some("Berlin, DE, 2nd floor".into()),
        ip_address: Some("192.0.2.17".into()),
        mac_address: Some("00:11:22:33:44:55".into()),
        hr_device_status: Some(HrDeviceStatus::Warning),
        hr_printer_status: Some(HrPrinterStatus::Idle),
        detected_errors: vec![PrinterErrorFlag::LowToner, PrinterErrorFlag::InputTrayEmpty],
        detected_error_state_hex: Some("2004".into()),
        supplies: vec![
            Supply { index: 1, device_index: 1, supply_type: SupplyType::TonerCartridge, unit: SupplyUnit::Percent,
                description: "Black Cartridge HP CF410A".into(), max_capacity: Some(100), max_capacity_special: None,
                level: Some(54), level_special: None, percent: Some(54.0) },
            Supply { index: 2, device_index: 1, supply_type: SupplyType::WasteToner, unit: SupplyUnit::Other,
                description: "Waste Toner Box".into(), max_capacity: None, max_capacity_special: Some(LevelSpecial::Unknown),
                level: None, level_special: Some(LevelSpecial::SomeRemaining), percent: None },
        ],
        input_trays: vec![InputTray { index: 1, device_index: 1, name: Some("Tray 1".into()), media_name: Some("A4".into()),
            max_capacity: Some(250), max_capacity_special: None, level: Some(100), level_special: None, percent: Some(40.0) }],
        printheads: vec![Printhead { printhead_id: "PH-1".into(), printhead_type: Some("HP 3D600".into()), status: Some("ok".into()),
            agent_used_ml: Some(12.5), installed_at: Some(1_760_000_000_000), usage_time_s: Some(3600), last_error: None }],
        build_unit: Some(BuildUnit { build_unit_id: "BU-7".into(), recycled_material_pct: Some(80.0),
            material_quantity_kg: Some(12.0), non_genuine_material: false, expired_material: false }),
    })
}

/// Counters of one marker.
pub fn usage_counters(device_id: &str) -> UsageCounters {
    with_env!(UsageCounters, device_id, {
        markers: vec![MarkerCounter { marker_index: 1, device_index: 1, unit: CounterUnit::Impressions,
            life_count: 123_456, power_on_count: Some(42), event: CounterEvent::None,
            wrap_modulus: None, previous_life_count: None },
            MarkerCounter { marker_index: 2, device_index: 1, unit: CounterUnit::Impressions,
            life_count: 17, power_on_count: None, event: CounterEvent::Wrapped,
            wrap_modulus: Some(1_000_000), previous_life_count: Some(999_990) }],
    })
}

/// An opened jam alert.
pub fn alert_event(device_id: &str) -> AlertEvent {
    with_env!(AlertEvent, device_id, {
        transition: AlertTransition::Opened,
        alert_index: 3,
        severity: AlertSeverity::Critical,
        group: Some("mediaPath".into()),
        group_index: Some(1),
        location: Some(0),
        code: "jam".into(),
        code_raw: 8,
        description: Some("Paper jam in tray 2".into()),
        alert_time_ticks: Some(99_000),
    })
}

/// A 3D job with a part.
pub fn job_record(device_id: &str) -> JobRecord {
    with_env!(JobRecord, device_id, {
        job_id: "job-42".into(),
        kind: JobKind::Print3d,
        created_at: Some(1_763_690_000_000),
        started_at: Some(1_763_690_100_000),
        ended_at: Some(1_763_699_000_000),
        completion_status: JobCompletion::Completed,
        user_name: None,
        pages: None,
        copies: None,
        media_width_mm: None,
        media_length_mm: None,
        media_area_m2: None,
        ink_ml: None,
        toner_g: None,
        bounding_box: Some(BoundingBox { x_mm: 380.0, y_mm: 284.0, z_mm: 120.5 }),
        volume_cm3: Some(812.5),
        surface_cm2: Some(2210.0),
        packing_density_pct: Some(11.2),
        layers: Some(1506),
        layer_thickness_um: Some(80.0),
        material_type: Some("PA12".into()),
        recyclable_material_pct: Some(82.0),
        print_mode: Some("balanced".into()),
        build_unit_id: Some("BU-7".into()),
        recycled_material_pct: Some(80.0),
        parts: vec![JobPart { part_id: "p-1".into(), bounding_box: Some(BoundingBox { x_mm: 20.0, y_mm: 30.0, z_mm: 5.0 }),
            volume_cm3: Some(3.1), material_used_g: Some(3.2) }],
    })
}

/// A connector heartbeat.
pub fn connector_heartbeat(connector_id: &str) -> ConnectorHeartbeat {
    with_env!(ConnectorHeartbeat, connector_id, {
        version: crate::VERSION.into(),
        device_count: 13,
        devices_reachable: 12,
        buffer_depth: 0,
        oldest_buffered_age_ms: None,
        last_upload_at: Some(1_763_700_000_000),
        uptime_s: 3600,
        devices: vec![
            DeviceLiveness { device_id: "SN-0001".into(), reachable: true, last_seen_at: Some(1_763_700_000_000) },
            DeviceLiveness { device_id: "SN-0002".into(), reachable: false, last_seen_at: None },
        ],
    })
}

/// A depletion alert.
pub fn maintenance_alert(device_id: &str) -> MaintenanceAlert {
    with_env!(MaintenanceAlert, device_id, {
        alert_key: format!("{device_id}/consumable_depletion/1"),
        kind: MaintenanceKind::ConsumableDepletion,
        state: MaintenanceState::Raised,
        severity: MaintenanceSeverity::Warning,
        supply_index: Some(1),
        supply_description: Some("Black Cartridge".into()),
        level_percent: Some(8.0),
        days_to_empty: Some(2.5),
        silent_for_s: None,
        message: "Black Cartridge runs out in 2.5 days".into(),
    })
}
