//! Tests: determinism and drift of the model, MIB semantics, the PDU handler
//! against hostile input, and real net-snmp tools against running agents.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::config::{from_toml, Validate};
use fleetpulse_core::records::PrinterErrorFlag;
use rand::{Rng, SeedableRng};
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::{v2, v2c};

use crate::agent::{Agent, AgentSettings, Handled};
use crate::mib::{self, Lookup, Mib};
use crate::model::{Knobs, Printer, TICKS_PER_STEP};
use crate::*;

// ---------------------------------------------------------------- helpers

fn col(entry: &[u32], column: u32, index: &[u32]) -> Vec<u32> {
    let mut v = entry.to_vec();
    v.push(column);
    v.extend_from_slice(index);
    v
}

fn int(mib: &Mib, oid: &[u32]) -> i64 {
    mib.value(oid)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no integer at {}", Oid::from(oid)))
}

fn flags(mib: &Mib) -> Vec<PrinterErrorFlag> {
    match mib.value(HR_PRINTER_ERROR_STATE) {
        Some(Value::OctetString(b)) => PrinterErrorFlag::decode(b),
        other => panic!("hrPrinterDetectedErrorState missing: {other:?}"),
    }
}

/// (alert index, code) of every alert row.
fn alerts(mib: &Mib) -> Vec<(u32, i64)> {
    let code_col = col(PRT_ALERT_ENTRY, 7, &[]);
    mib.values()
        .iter()
        .filter(|(oid, _)| oid.starts_with(&code_col))
        .map(|(oid, v)| (*oid.arcs().last().unwrap(), v.as_i64().unwrap()))
        .collect()
}

/// Walk a printer step by step, building the MIB at every step.
fn history(seed: u64, index: usize, steps: u64) -> impl Iterator<Item = (u64, bool, Mib)> {
    let mut printer = Printer::new(seed, index, Knobs::default());
    (0..=steps).map(move |step| {
        printer.advance_to(step);
        let m = mib::build(&printer, printer.state.uptime_at_step());
        (step, printer.state.is_silent(), m)
    })
}

fn settings(max: usize) -> Arc<AgentSettings> {
    Arc::new(AgentSettings {
        community: b"public".to_vec(),
        max_response_bytes: max,
        malformed_log_interval: Duration::from_secs(60),
    })
}

fn oid(arcs: &[u32]) -> ObjectIdentifier {
    ObjectIdentifier::new_unchecked(arcs.to_vec().into())
}

fn request(version: i64, community: &str, pdu: v2::Pdus) -> Vec<u8> {
    let msg = v2c::Message {
        version: Integer::from(version),
        community: OctetString::from(community.as_bytes().to_vec()),
        data: pdu,
    };
    rasn::ber::encode(&msg).expect("encode request")
}

fn pdu(request_id: i32, names: &[&[u32]]) -> v2::Pdu {
    v2::Pdu {
        request_id,
        error_status: 0,
        error_index: 0,
        variable_bindings: names
            .iter()
            .map(|n| v2::VarBind {
                name: oid(n),
                value: v2::VarBindValue::Unspecified,
            })
            .collect(),
    }
}

fn get(version: i64, community: &str, names: &[&[u32]]) -> Vec<u8> {
    request(
        version,
        community,
        v2::Pdus::GetRequest(v2::GetRequest(pdu(7, names))),
    )
}

fn response(bytes: &[u8]) -> v2::Pdu {
    let msg: v2c::Message<v2::Pdus> = rasn::ber::decode(bytes).expect("decode response");
    match msg.data {
        v2::Pdus::Response(v2::Response(p)) => p,
        other => panic!("not a response: {other:?}"),
    }
}

fn reply(h: Handled) -> Vec<u8> {
    match h {
        Handled::Reply(b) => b,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// First step at which printer `index` of `seed` answers (default knobs).
fn answering_step(seed: u64, index: usize) -> u64 {
    (0..).find(|s| !silent_at(seed, index, *s)).unwrap()
}

// ---------------------------------------------------------------- model

#[test]
fn same_inputs_give_identical_mib() {
    for (seed, index, step) in [(1, 0, 0), (1, 7, 500), (42, 3, 2_000)] {
        assert_eq!(mib_at(seed, index, step), mib_at(seed, index, step));
    }
    // Advancing one live printer gives the same states as fresh replays.
    let mut live = Printer::new(5, 2, Knobs::default());
    for step in [0, 1, 59, 60, 61, 600, 3_000] {
        live.advance_to(step);
        let built = mib::build(&live, live.state.uptime_at_step()).into_values();
        assert_eq!(built, mib_at(5, 2, step), "step {step}");
    }
}

#[test]
fn different_seeds_and_indexes_differ() {
    assert_ne!(mib_at(1, 0, 100), mib_at(2, 0, 100));
    assert_ne!(mib_at(1, 0, 100), mib_at(1, 1, 100));
    assert_ne!(serial_for(1, 0), serial_for(2, 0));
    // Unique over the whole configurable range (base_port 0 .. 65535 printers).
    let serials: BTreeSet<String> = (0..65_536).map(|i| serial_for(1, i)).collect();
    assert_eq!(serials.len(), 65_536, "serials must be unique per index");
    let macs: BTreeSet<Value> = (0..500)
        .map(|i| mib_at(1, i, 0)[&Oid::from(IF_PHYS_ADDRESS)].clone())
        .collect();
    assert_eq!(macs.len(), 500, "MAC addresses must be unique per index");
    let m = mib_at(9, 4, 0);
    assert_eq!(
        m[&Oid::from(PRT_GENERAL_SERIAL)].as_str(),
        Some(serial_for(9, 4).as_str())
    );
    // Vendors vary across a fleet.
    let vendors: BTreeSet<Vec<u32>> = (0..50)
        .map(|i| match &mib_at(1, i, 0)[&Oid::from(SYS_OBJECT_ID)] {
            Value::ObjectId(o) => o.arcs().to_vec(),
            other => panic!("sysObjectID: {other:?}"),
        })
        .collect();
    assert!(vendors.len() >= 4, "only {} vendors", vendors.len());
}

#[test]
fn lifecount_is_monotonic_and_toner_only_drains_between_replacements() {
    let mut replacements = 0;
    let mut pages_printed = 0;
    for index in 0..4 {
        let mut prev: Option<Mib> = None;
        for (step, _silent, m) in history(3, index, 6_000) {
            if let Some(p) = &prev {
                let (before, after) = (
                    int(p, PRT_MARKER_LIFE_COUNT),
                    int(&m, PRT_MARKER_LIFE_COUNT),
                );
                assert!(
                    after >= before,
                    "printer {index} step {step}: lifecount {before} -> {after}"
                );
                pages_printed += after - before;
                for n in 1..=6u32 {
                    let ty = col(PRT_SUPPLIES_ENTRY, 5, &[1, n]);
                    if m.value(&ty).and_then(Value::as_i64) != Some(3) {
                        continue; // not a toner
                    }
                    let level = col(PRT_SUPPLIES_ENTRY, 9, &[1, n]);
                    let max = int(&m, &col(PRT_SUPPLIES_ENTRY, 8, &[1, n]));
                    let (a, b) = (int(p, &level), int(&m, &level));
                    if b > a {
                        // A new cartridge, possibly printed with in the same step.
                        assert!(b * 100 >= max * 97, "printer {index} step {step}: toner rose {a} -> {b} (max {max}) without a replacement");
                        replacements += 1;
                    }
                }
            }
            prev = Some(m);
        }
    }
    assert!(pages_printed > 10_000, "only {pages_printed} pages printed");
    assert!(replacements >= 1, "no cartridge was ever replaced");
}

#[test]
fn jam_alert_opens_and_later_clears() {
    for index in 0..20 {
        let mut open: Option<(u64, u32)> = None;
        for (step, silent, m) in history(1, index, 20_000) {
            if silent {
                continue;
            }
            let jam = alerts(&m).into_iter().find(|(_, code)| *code == 8);
            match (open, jam) {
                (None, Some((row, _))) => {
                    assert!(flags(&m).contains(&PrinterErrorFlag::Jammed));
                    assert_eq!(int(&m, &col(PRT_ALERT_ENTRY, 2, &[1, row])), 3, "critical");
                    assert_eq!(
                        int(&m, &col(PRT_ALERT_ENTRY, 4, &[1, row])),
                        13,
                        "mediaPath"
                    );
                    assert_eq!(int(&m, HR_DEVICE_STATUS), 5, "down while jammed");
                    open = Some((step, row));
                }
                (Some((opened, row)), None) => {
                    assert!(!flags(&m).contains(&PrinterErrorFlag::Jammed));
                    assert!(m.value(&col(PRT_ALERT_ENTRY, 7, &[1, row])).is_none());
                    assert!(step > opened);
                    return;
                }
                _ => {}
            }
        }
    }
    panic!("no jam opened and cleared in 20 printers x 20000 steps");
}

#[test]
fn a_printer_goes_silent_and_comes_back_rebooted() {
    for index in 0..20 {
        let mut printer = Printer::new(1, index, Knobs::default());
        let mut was_silent = false;
        let mut uptime_before = 0;
        for step in 0..20_000 {
            printer.advance_to(step);
            let silent = printer.state.is_silent();
            if silent && !was_silent {
                uptime_before = printer.state.uptime_at_step();
                assert!(silent_at(1, index, step));
            }
            if !silent && was_silent {
                let after = printer.state.uptime_at_step();
                assert!(
                    after < uptime_before,
                    "no reboot: {after} >= {uptime_before}"
                );
                assert_eq!(printer.state.power_on_count, 0);
                return;
            }
            was_silent = silent;
        }
    }
    panic!("no silent stretch in 20 printers x 20000 steps");
}

#[test]
fn some_printers_reach_low_toner_within_two_wall_minutes_by_default() {
    // Default acceleration 60: one step per wall second.
    for seed in 1..=3 {
        let newly_low = (0..50)
            .filter(|&i| {
                let m0 = mib_at(seed, i, 0);
                let low0 = m0.iter().any(|(o, v)| {
                    o.starts_with(&col(PRT_ALERT_ENTRY, 7, &[])) && v.as_i64() == Some(1104)
                });
                let mut p = Printer::new(seed, i, Knobs::default());
                !low0
                    && (1..=120).any(|s| {
                        p.advance_to(s);
                        let m = mib::build(&p, 0);
                        flags(&m).contains(&PrinterErrorFlag::LowToner)
                            && alerts(&m).iter().any(|(_, c)| *c == 1104)
                    })
            })
            .count();
        assert!(
            newly_low >= 1,
            "seed {seed}: no printer reached low toner in 120 steps"
        );
    }
}

#[test]
fn trays_empty_with_no_paper_flag_and_alert() {
    for index in 0..20 {
        for (_, silent, m) in history(2, index, 10_000) {
            if !silent && alerts(&m).iter().any(|(_, c)| *c == 808) {
                assert!(flags(&m).contains(&PrinterErrorFlag::NoPaper));
                let empty_tray =
                    (1..=2u32).any(|t| int(&m, &col(PRT_INPUT_ENTRY, 10, &[1, t])) == 0);
                assert!(empty_tray);
                return;
            }
        }
    }
    panic!("no tray ever ran empty");
}

#[test]
fn mib_has_rfc_objects_and_special_values() {
    let m = answering_mib_at(1, 0);
    let v = m.values();
    assert!(matches!(v[&Oid::from(SYS_UPTIME)], Value::TimeTicks(_)));
    assert!(matches!(&v[&Oid::from(IF_PHYS_ADDRESS)], Value::OctetString(b) if b.len() == 6));
    assert_eq!(
        v[&"1.3.6.1.2.1.25.3.2.1.2.1".parse::<Oid>().unwrap()],
        Value::ObjectId("1.3.6.1.2.1.25.3.1.5".parse().unwrap())
    );
    assert!(
        matches!(&v[&Oid::from(HR_PRINTER_ERROR_STATE)], Value::OctetString(b) if b.len() == 2)
    );
    assert!(matches!(
        v[&Oid::from(PRT_MARKER_LIFE_COUNT)],
        Value::Counter32(_)
    ));
    assert_eq!(int(&m, &col(PRT_INPUT_ENTRY, 8, &[1, 1])), 8, "sheets");
    // The waste toner box reports unknown capacity and "some remaining".
    let waste = (1..=6u32)
        .find(|n| {
            m.value(&col(PRT_SUPPLIES_ENTRY, 5, &[1, *n]))
                .and_then(Value::as_i64)
                == Some(4)
        })
        .expect("waste toner supply");
    assert_eq!(
        int(&m, &col(PRT_SUPPLIES_ENTRY, 4, &[1, waste])),
        4,
        "receptacleThatIsFilled"
    );
    assert_eq!(int(&m, &col(PRT_SUPPLIES_ENTRY, 8, &[1, waste])), -2);
    assert_eq!(int(&m, &col(PRT_SUPPLIES_ENTRY, 9, &[1, waste])), -3);
    // Mono printers: toner + drum + waste; colour: CMYK + waste.
    for i in 0..30 {
        let m = mib_at(1, i, 0);
        let types: Vec<i64> = m
            .iter()
            .filter(|(o, _)| o.starts_with(&col(PRT_SUPPLIES_ENTRY, 5, &[])))
            .map(|(_, v)| v.as_i64().unwrap())
            .collect();
        assert!(
            types == [3, 9, 4] || types == [3, 3, 3, 3, 4],
            "printer {i}: {types:?}"
        );
    }
}

fn answering_mib_at(seed: u64, index: usize) -> Mib {
    let step = answering_step(seed, index);
    let mut p = Printer::new(seed, index, Knobs::default());
    p.advance_to(step);
    mib::build(&p, p.state.uptime_at_step())
}

#[test]
fn get_and_getnext_semantics() {
    let m = answering_mib_at(1, 1);
    assert!(matches!(
        m.get(SYS_DESCR),
        Lookup::Found(Value::OctetString(_))
    ));
    assert_eq!(m.get(&[1, 3, 6, 1, 2, 1, 99, 0]), Lookup::NoSuchObject);
    assert_eq!(m.get(&[1, 3, 6, 1, 2, 1, 1, 1, 1]), Lookup::NoSuchInstance);
    // A cleared / never opened alert row is a missing instance of a known column.
    assert_eq!(
        m.get(&col(PRT_ALERT_ENTRY, 7, &[1, 999_999])),
        Lookup::NoSuchInstance
    );
    // GETNEXT visits every instance in strictly increasing order.
    let mut cursor: Vec<u32> = vec![1, 3];
    let mut seen = 0;
    while let Some((o, _)) = m.next(&cursor) {
        assert!(o.arcs() > cursor.as_slice());
        cursor = o.arcs().to_vec();
        seen += 1;
    }
    assert_eq!(seen, m.values().len());
    assert!(m.next(&[2]).is_none());
}

#[test]
fn config_defaults_validation_and_toml() {
    let d = SimConfig::default();
    d.validate().unwrap();
    assert_eq!((d.printers, d.base_port, d.seed), (50, 16100, 1));
    assert_eq!(d.acceleration, 60.0);
    assert_eq!(d.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let bad = |f: fn(&mut SimConfig), key: &str| {
        let mut c = SimConfig::default();
        f(&mut c);
        let e = c.validate().expect_err(key).to_string();
        assert!(e.contains(&format!("`{key}`")), "{e}");
    };
    bad(|c| c.printers = 0, "printers");
    bad(|c| c.base_port = 65_500, "printers");
    bad(|c| c.acceleration = 0.0, "acceleration");
    bad(|c| c.acceleration = f64::NAN, "acceleration");
    bad(|c| c.acceleration = 1e9, "acceleration");
    bad(|c| c.silence_probability = 1.5, "silence_probability");
    bad(|c| c.silence_max = Duration::from_secs(60), "silence_max");
    bad(|c| c.max_response_bytes = 100, "max_response_bytes");
    let c: SimConfig = from_toml(
        "printers = 3\nbase_port = 0\nseed = 9\nacceleration = 600.0\nsilence_min = \"5m\"\nsilence_max = \"1h\"",
    )
    .unwrap();
    assert_eq!((c.printers, c.base_port, c.seed), (3, 0, 9));
    assert_eq!(c.silence_max, Duration::from_secs(3600));
    assert!(from_toml::<SimConfig>("printerz = 3").is_err());
}

// ---------------------------------------------------------------- handler

#[test]
fn malformed_datagrams_never_panic_and_agent_keeps_answering() {
    let index = 0;
    let step = answering_step(1, index);
    let ticks = step * TICKS_PER_STEP;
    let mut agent = Agent::new(
        index,
        Printer::new(1, index, Knobs::default()),
        settings(1472),
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for _ in 0..3_000 {
        let len = rng.random_range(0..300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        match agent.handle(&bytes, ticks) {
            Handled::Reply(_) => panic!("answered random bytes {bytes:02x?}"),
            // rasn itself must reject garbage; the agent's catch_unwind is only a backstop.
            Handled::Malformed(reason) => assert!(!reason.contains("panicked"), "{bytes:02x?}"),
            _ => {}
        }
    }
    let valid = get(1, "public", &[SYS_DESCR, PRT_GENERAL_SERIAL]);
    for cut in 0..valid.len() {
        let h = agent.handle(&valid[..cut], ticks);
        assert!(matches!(h, Handled::Malformed(_)), "prefix {cut}: {h:?}");
    }
    // Bit flips of a valid request: anything but a panic is fine.
    for i in 0..valid.len() {
        let mut b = valid.clone();
        b[i] ^= 0xff;
        let _ = agent.handle(&b, ticks);
    }
    let p = response(&reply(agent.handle(&valid, ticks)));
    assert_eq!(p.request_id, 7);
    assert_eq!(p.error_status, 0);
    assert_eq!(p.variable_bindings.len(), 2);
    let serial = serial_for(1, index);
    assert!(matches!(
        &p.variable_bindings[1].value,
        v2::VarBindValue::Value(v2::ObjectSyntax::Simple(rasn_smi::v2::SimpleSyntax::String(s)))
            if s.as_ref() == serial.as_bytes()
    ));
}

#[test]
fn wrong_community_and_silence_get_no_answer() {
    let mut agent = Agent::new(0, Printer::new(1, 0, Knobs::default()), settings(1472));
    let step = answering_step(1, 0);
    let h = agent.handle(&get(1, "private", &[SYS_DESCR]), step * TICKS_PER_STEP);
    assert!(matches!(h, Handled::BadCommunity), "{h:?}");
    // Find a silent step of some printer and ask it.
    let (index, silent_step) = (0..20)
        .find_map(|i| {
            let mut p = Printer::new(1, i, Knobs::default());
            (0..20_000u64)
                .find(|s| {
                    p.advance_to(*s);
                    p.state.is_silent()
                })
                .map(|s| (i, s))
        })
        .expect("a silent step");
    assert!(silent_at(1, index, silent_step));
    let mut agent = Agent::new(
        index,
        Printer::new(1, index, Knobs::default()),
        settings(1472),
    );
    let h = agent.handle(
        &get(1, "public", &[SYS_DESCR]),
        silent_step * TICKS_PER_STEP,
    );
    assert!(matches!(h, Handled::Silent), "{h:?}");
}

#[test]
fn v2c_exceptions_and_v1_errors() {
    let step = answering_step(1, 0);
    let ticks = step * TICKS_PER_STEP + 1234;
    let mut agent = Agent::new(0, Printer::new(1, 0, Knobs::default()), settings(1472));
    let missing_obj: &[u32] = &[1, 3, 6, 1, 2, 1, 99, 0];
    let missing_inst: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 5, 1];
    let p = response(&reply(agent.handle(
        &get(1, "public", &[SYS_UPTIME, missing_obj, missing_inst]),
        ticks,
    )));
    let expected_uptime = {
        let mut pr = Printer::new(1, 0, Knobs::default());
        pr.advance_to(step);
        pr.state.uptime_ticks(ticks)
    };
    assert!(matches!(
        &p.variable_bindings[0].value,
        v2::VarBindValue::Value(v2::ObjectSyntax::ApplicationWide(rasn_smi::v2::ApplicationSyntax::Ticks(t)))
            if t.0 == expected_uptime
    ));
    assert_eq!(p.variable_bindings[1].value, v2::VarBindValue::NoSuchObject);
    assert_eq!(
        p.variable_bindings[2].value,
        v2::VarBindValue::NoSuchInstance
    );

    // GETNEXT past the end.
    let req = request(
        1,
        "public",
        v2::Pdus::GetNextRequest(v2::GetNextRequest(pdu(8, &[&[1, 3, 6, 2]]))),
    );
    let p = response(&reply(agent.handle(&req, ticks)));
    assert_eq!(p.variable_bindings[0].value, v2::VarBindValue::EndOfMibView);

    // SNMPv1: the missing name fails the request with noSuchName at its position.
    let bytes = reply(agent.handle(&get(0, "public", &[SYS_NAME, missing_inst]), ticks));
    let msg: rasn_snmp::v1::Message<rasn_snmp::v1::GetResponse> =
        rasn::ber::decode(&bytes).unwrap();
    assert_eq!(msg.version, Integer::from(0));
    assert_eq!(msg.data.0.error_status, Integer::from(2));
    assert_eq!(msg.data.0.error_index, Integer::from(2));
    let bytes = reply(agent.handle(&get(0, "public", &[SYS_NAME]), ticks));
    let msg: rasn_snmp::v1::Message<rasn_snmp::v1::GetResponse> =
        rasn::ber::decode(&bytes).unwrap();
    assert_eq!(msg.data.0.error_status, Integer::from(0));
    assert_eq!(msg.data.0.variable_bindings.len(), 1);
    // SNMPv1 has no GETBULK.
    let bulk = request(
        0,
        "public",
        v2::Pdus::GetBulkRequest(v2::GetBulkRequest(bulk_pdu(0, 5, &[&[1, 3]]))),
    );
    assert!(matches!(
        agent.handle(&bulk, ticks),
        Handled::Unsupported(_)
    ));
}

fn bulk_pdu(non_repeaters: u32, max_repetitions: u32, names: &[&[u32]]) -> v2::BulkPdu {
    v2::BulkPdu {
        request_id: 11,
        non_repeaters,
        max_repetitions,
        variable_bindings: pdu(0, names).variable_bindings,
    }
}

#[test]
fn getbulk_repeats_trims_to_whole_repetitions_and_ends_cleanly() {
    let step = answering_step(1, 2);
    let ticks = step * TICKS_PER_STEP;
    let mut agent = Agent::new(2, Printer::new(1, 2, Knobs::default()), settings(1472));
    let mib = answering_mib_at(1, 2);

    // One non-repeater and two repeaters, few repetitions: exact RFC 3416 layout.
    let descr_col = col(PRT_SUPPLIES_ENTRY, 6, &[]);
    let level_col = col(PRT_SUPPLIES_ENTRY, 9, &[]);
    let req = request(
        1,
        "public",
        v2::Pdus::GetBulkRequest(v2::GetBulkRequest(bulk_pdu(
            1,
            2,
            &[&[1, 3, 6, 1, 2, 1, 1, 3], &descr_col, &level_col],
        ))),
    );
    let p = response(&reply(agent.handle(&req, ticks)));
    let names: Vec<Vec<u32>> = p
        .variable_bindings
        .iter()
        .map(|vb| vb.name.as_ref().to_vec())
        .collect();
    assert_eq!(names.len(), 5);
    assert_eq!(names[0], SYS_UPTIME);
    assert_eq!(names[1], col(PRT_SUPPLIES_ENTRY, 6, &[1, 1]));
    assert_eq!(names[2], col(PRT_SUPPLIES_ENTRY, 9, &[1, 1]));
    assert_eq!(names[3], col(PRT_SUPPLIES_ENTRY, 6, &[1, 2]));
    assert_eq!(names[4], col(PRT_SUPPLIES_ENTRY, 9, &[1, 2]));

    // Huge max-repetitions over the whole MIB: trimmed to fit 1472 bytes, whole rows.
    let req = request(
        1,
        "public",
        v2::Pdus::GetBulkRequest(v2::GetBulkRequest(bulk_pdu(
            0,
            u32::MAX,
            &[&[1, 3], &[1, 3, 6, 1, 2, 1, 43]],
        ))),
    );
    let bytes = reply(agent.handle(&req, ticks));
    assert!(bytes.len() <= 1472, "{} bytes", bytes.len());
    let p = response(&bytes);
    assert!(
        p.variable_bindings.len() >= 20,
        "only {}",
        p.variable_bindings.len()
    );
    assert_eq!(p.variable_bindings.len() % 2, 0, "whole repetitions");

    // With room for everything, the walk ends with endOfMibView and covers every instance.
    let mut big = Agent::new(
        2,
        Printer::new(1, 2, Knobs::default()),
        settings(MAX_UDP_PAYLOAD),
    );
    let req = request(
        1,
        "public",
        v2::Pdus::GetBulkRequest(v2::GetBulkRequest(bulk_pdu(0, 10_000, &[&[1, 3]]))),
    );
    let p = response(&reply(big.handle(&req, ticks)));
    let last = p.variable_bindings.last().unwrap();
    assert_eq!(last.value, v2::VarBindValue::EndOfMibView);
    assert_eq!(p.variable_bindings.len(), mib.values().len() + 1);
}

// ---------------------------------------------------------------- network

fn have_net_snmp() -> bool {
    let present = std::path::Path::new("/usr/bin/snmpbulkwalk").exists()
        && std::path::Path::new("/usr/bin/snmpget").exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "net-snmp (snmpbulkwalk, snmpget) is required under CI (apt-get install snmp)"
        );
        println!("skipped: snmpbulkwalk not installed");
    }
    present
}

/// Run a net-snmp tool without loading any MIB files; (exit ok, stdout, stderr).
async fn net_snmp(tool: &str, args: Vec<String>) -> (bool, String, String) {
    let tool = format!("/usr/bin/{tool}");
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&tool)
            .args(["-m", ""])
            .args(&args)
            .env("MIBS", "")
            .output()
            .expect("run net-snmp tool");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// Parse `-On` output lines `.1.3.6... = TYPE: value` into (oid, value text).
fn parse_walk(out: &str) -> Vec<(Oid, String)> {
    out.lines()
        .filter_map(|l| {
            let (o, rest) = l.split_once(" = ")?;
            // The endOfMibView exception that ends a walk at the end of the MIB.
            if rest.starts_with("No more variables") {
                return None;
            }
            let value = rest.split_once(": ").map(|(_, v)| v).unwrap_or(rest);
            Some((o.parse().ok()?, value.trim_matches('"').to_string()))
        })
        .collect()
}

fn test_config(seed: u64) -> SimConfig {
    SimConfig {
        printers: 3,
        base_port: 0,
        seed,
        // Sim time practically frozen at step 0 for the test's duration, so
        // the expected values are exactly mib_at(seed, i, 0).
        acceleration: 0.001,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_snmp_tools_walk_and_get_real_agents() {
    if !have_net_snmp() {
        return;
    }
    // A seed whose first three printers all answer at step 0.
    let seed = (1..)
        .find(|s| (0..3).all(|i| !silent_at(*s, i, 0)))
        .unwrap();
    let shutdown = Shutdown::new();
    let fleet = start(test_config(seed), shutdown.clone()).await.unwrap();
    assert_eq!(fleet.printers().len(), 3);
    let ports: BTreeSet<u16> = fleet.printers().iter().map(|p| p.addr.port()).collect();
    assert_eq!(ports.len(), 3, "one port per printer");

    for (i, printer) in fleet.printers().iter().enumerate() {
        let expected = mib_at(seed, i, 0);
        let target = printer.addr.to_string();

        // Supplies table via GETBULK.
        let (ok, out, err) = net_snmp(
            "snmpbulkwalk",
            vec![
                "-v2c".into(),
                "-c".into(),
                "public".into(),
                "-On".into(),
                target.clone(),
                "1.3.6.1.2.1.43.11".into(),
            ],
        )
        .await;
        assert!(ok, "snmpbulkwalk failed: {err}");
        let walked = parse_walk(&out);
        let want: Vec<(Oid, String)> = expected
            .iter()
            .filter(|(o, _)| o.starts_with(&[1, 3, 6, 1, 2, 1, 43, 11]))
            .map(|(o, v)| {
                let text = match v {
                    Value::OctetString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => other.as_i64().unwrap().to_string(),
                };
                (o.clone(), text)
            })
            .collect();
        assert!(want.iter().any(|(_, t)| t.contains("Toner Cartridge")));
        assert_eq!(walked, want, "printer {i}: supplies walk\n{out}");

        // The whole mib-2 subtree walks to a clean end, in order (net-snmp checks).
        let (ok, out, err) = net_snmp(
            "snmpbulkwalk",
            vec![
                "-v2c".into(),
                "-c".into(),
                "public".into(),
                "-On".into(),
                target.clone(),
                "1.3.6.1.2.1".into(),
            ],
        )
        .await;
        assert!(ok, "full walk failed: {err}");
        assert_eq!(
            parse_walk(&out).len(),
            expected.len(),
            "every instance walked once"
        );

        // SNMPv1 GETNEXT walk of the system group.
        let (ok, out, err) = net_snmp(
            "snmpwalk",
            vec![
                "-v1".into(),
                "-c".into(),
                "public".into(),
                "-On".into(),
                target.clone(),
                "1.3.6.1.2.1.1".into(),
            ],
        )
        .await;
        assert!(ok, "v1 walk failed: {err}");
        assert_eq!(parse_walk(&out).len(), 7);

        // GET of the serial.
        let (ok, out, err) = net_snmp(
            "snmpget",
            vec![
                "-v2c".into(),
                "-c".into(),
                "public".into(),
                "-On".into(),
                target.clone(),
                "1.3.6.1.2.1.43.5.1.1.17.1".into(),
            ],
        )
        .await;
        assert!(ok, "snmpget failed: {err}");
        assert!(out.contains(&printer.serial), "{out}");
        assert_eq!(printer.serial, serial_for(seed, i));
    }

    // Wrong community: no answer at all, so the tool times out.
    let target = fleet.printers()[0].addr.to_string();
    let (ok, out, err) = net_snmp(
        "snmpget",
        vec![
            "-v2c".into(),
            "-c".into(),
            "wrong".into(),
            "-t".into(),
            "1".into(),
            "-r".into(),
            "0".into(),
            target,
            "1.3.6.1.2.1.1.1.0".into(),
        ],
    )
    .await;
    assert!(!ok, "wrong community answered: {out}");
    assert!(err.contains("Timeout"), "{err}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), fleet.join())
        .await
        .expect("agents stop on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_udp_does_not_stop_an_agent() {
    let seed = (1..).find(|s| !silent_at(*s, 0, 0)).unwrap();
    let shutdown = Shutdown::new();
    let mut cfg = test_config(seed);
    cfg.printers = 1;
    let fleet = start(cfg, shutdown.clone()).await.unwrap();
    let addr = fleet.printers()[0].addr;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let valid = get(1, "public", &[SYS_NAME]);
    for i in 0..200 {
        let junk: Vec<u8> = if i % 2 == 0 {
            (0..rng.random_range(1..500))
                .map(|_| rng.random())
                .collect()
        } else {
            valid[..rng.random_range(0..valid.len())].to_vec()
        };
        sock.send_to(&junk, addr).await.unwrap();
    }
    sock.send_to(&valid, addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("agent still answers after garbage")
        .unwrap();
    let p = response(&buf[..n]);
    assert_eq!(p.request_id, 7);
    shutdown.cancel();
    fleet.join().await;
}

#[tokio::test]
async fn start_rejects_bad_config_and_busy_ports() {
    let e = start(
        SimConfig {
            printers: 0,
            ..SimConfig::default()
        },
        Shutdown::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SimError::Config(_)) && !e.is_retriable());
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = SimConfig {
        printers: 1,
        base_port: port,
        ..SimConfig::default()
    };
    let e = start(cfg, Shutdown::new()).await.unwrap_err();
    assert!(
        matches!(e, SimError::Bind { .. }) && e.is_retriable(),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_uptime_runs_at_the_configured_acceleration() {
    let shutdown = Shutdown::new();
    let cfg = SimConfig {
        printers: 1,
        base_port: 0,
        silence_probability: 0.0,
        ..SimConfig::default()
    };
    let ticks_per_wall_second = cfg.acceleration * 100.0;
    let fleet = start(cfg, shutdown.clone()).await.unwrap();
    let addr = fleet.printers()[0].addr;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = get(1, "public", &[SYS_UPTIME]);
    let (s1, r1, u1) = uptime_sample(&sock, addr, &req).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s2, r2, u2) = uptime_sample(&sock, addr, &req).await;
    let diff = f64::from(u2.wrapping_sub(u1));
    let min = (s2 - r1).as_secs_f64() * ticks_per_wall_second - 1.0;
    let max = (r2 - s1).as_secs_f64() * ticks_per_wall_second + 1.0;
    assert!(
        (min..=max).contains(&diff),
        "uptime advanced {diff} ticks, expected {min:.0}..={max:.0}"
    );
    shutdown.cancel();
    fleet.join().await;
}

/// (sent at, answered at, sysUpTime) of one GET.
async fn uptime_sample(
    sock: &tokio::net::UdpSocket,
    addr: std::net::SocketAddr,
    req: &[u8],
) -> (std::time::Instant, std::time::Instant, u32) {
    let mut buf = vec![0u8; 2048];
    let sent = std::time::Instant::now();
    sock.send_to(req, addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("answer")
        .unwrap();
    let got = std::time::Instant::now();
    let p = response(&buf[..n]);
    match &p.variable_bindings[0].value {
        v2::VarBindValue::Value(v2::ObjectSyntax::ApplicationWide(
            rasn_smi::v2::ApplicationSyntax::Ticks(t),
        )) => (sent, got, t.0),
        other => panic!("sysUpTime: {other:?}"),
    }
}

/// `activity` scales the print volume: the default is lively (about 200
/// pages per printer and hour), 0.12 an office volume (about 30), as the
/// config docs and the WAN benchmark state.
#[test]
fn activity_scales_the_print_volume() {
    let per_hour = |activity: f64| {
        let cfg = crate::SimConfig {
            activity,
            seed: 13,
            ..Default::default()
        };
        // 24 simulated hours of 13 printers.
        let pages: u64 = (0..13)
            .map(|i| crate::pages_printed(&cfg, i, 0, 24 * 60))
            .sum();
        pages as f64 / 13.0 / 24.0
    };
    let lively = per_hour(1.0);
    let office = per_hour(0.12);
    eprintln!("pages per printer and hour: activity 1 -> {lively:.0}, 0.12 -> {office:.0}");
    assert!((120.0..=320.0).contains(&lively), "{lively}");
    assert!((15.0..=50.0).contains(&office), "{office}");
}
