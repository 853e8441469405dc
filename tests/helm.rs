//! The Helm chart is well formed: yamllint on its YAML, static template checks
//! (every `.Values` path exists, includes resolve, blocks balance) and, where
//! `.ci/run` could install it, Helm's own lint through helm-sdkpy.

use std::process::Command;

#[test]
fn helm_chart_lints() {
    let root = fleetpulse::repo_root();
    let chart = root.join("helm/fleetpulse");
    let python = std::env::var("FLEETPULSE_HELM_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(chart.join("tests/render_check.py"))
        .arg(&chart)
        .output()
        .expect("running render_check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "chart checks failed:\n{text}");
    if std::env::var_os("FLEETPULSE_HELM_PYTHON").is_some() {
        assert!(
            !text.contains("helm lint: skipped"),
            "helm-sdkpy was installed but its lint did not run:\n{text}"
        );
    }
    let lint = Command::new("python3")
        .args(["-m", "yamllint", "-c"])
        .arg(chart.join(".yamllint"))
        .arg(chart.join("values.yaml"))
        .arg(chart.join("Chart.yaml"))
        .output()
        .expect("running yamllint");
    assert!(
        lint.status.success(),
        "yamllint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}
