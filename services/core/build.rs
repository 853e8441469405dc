//! Compiles every released schema version in `schemas/history/<type>/v<N>.avsc`
//! into the binary, so a reader can decode records written by any older writer
//! (an edge connector that has not been upgraded yet, a replay of old data).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let history = Path::new(&manifest).join("../../schemas/history");
    println!("cargo:rerun-if-changed={}", history.display());
    let mut entries = Vec::new();
    if let Ok(types) = std::fs::read_dir(&history) {
        for t in types.flatten() {
            let path = t.path();
            if !path.is_dir() {
                continue;
            }
            println!("cargo:rerun-if-changed={}", path.display());
            let name = t.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let file = f.path();
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
                let is_avsc = file.extension().is_some_and(|e| e == "avsc");
                let version = stem
                    .as_deref()
                    .and_then(|s| s.strip_prefix('v'))
                    .and_then(|v| v.parse::<u32>().ok());
                match (is_avsc, version) {
                    (true, Some(v)) => entries.push((
                        name.clone(),
                        v,
                        file.canonicalize().expect("listed file exists"),
                    )),
                    _ => panic!(
                        "schemas/history/{name}/{}: expected v<N>.avsc",
                        f.file_name().to_string_lossy()
                    ),
                }
            }
        }
    }
    entries.sort();
    let mut out = String::from("/// Released schema versions: (record type name, version, .avsc text).\npub(crate) static HISTORY: &[(&str, u32, &str)] = &[\n");
    for (name, v, path) in &entries {
        writeln!(
            out,
            "    ({name:?}, {v}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to String");
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("schema_history.rs");
    std::fs::write(dest, out).expect("write OUT_DIR/schema_history.rs");
}
