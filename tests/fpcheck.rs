//! The independent lake checker must be able to fail: `fpcheck.py lake
//! --serials` decodes every column (nested lists and structs included),
//! because a serial inside a zstd-compressed page is not in the file's raw
//! bytes. `selftest` writes such a file with a canary and a clean twin.

use fleetpulse::fpcheck;

#[test]
fn lake_serial_scan_finds_a_serial_hidden_in_compressed_pages() {
    let r = fpcheck(&["selftest"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["found"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["clean_hits"].as_array().map(Vec::len), Some(0), "{r}");
    // What the byte scan alone would have missed.
    assert_eq!(r["raw_bytes_alone_found_it"], false, "{r}");
}
