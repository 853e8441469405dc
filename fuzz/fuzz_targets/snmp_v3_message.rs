#![no_main]
//! See fuzz/README.md and `fleetpulse_fuzz::snmp_v3_message` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetpulse_fuzz::snmp_v3_message(data));
