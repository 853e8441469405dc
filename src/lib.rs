//! Harness for the end-to-end tests in `tests/`.
//!
//! The tests run the real `fleetpulse` binary as separate processes, the way
//! an operator would, against real peers started by `.ci/run` (tansu for
//! Kafka, snmpsim for printer recordings). Assertions go through independent
//! readers in `tests/py/fpcheck.py` (confluent-kafka, fastavro, DuckDB,
//! pyarrow), so the pipeline is never checked only by its own code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the `fleetpulse` binary, built (or brought up to date) first.
pub fn fleetpulse_bin() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "fleetpulse-cli", "--bin", "fleetpulse"])
        .current_dir(repo_root())
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the fleetpulse binary failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join("fleetpulse")
}

/// The Kafka bootstrap address of the test broker, or `None` (with a printed
/// reason) when it is not configured. Under CI a missing broker is a failure.
pub fn kafka_or_skip(test: &str) -> Option<String> {
    match std::env::var("FLEETPULSE_KAFKA") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: FLEETPULSE_KAFKA is not set under CI; .ci/run starts tansu and sets it"
            );
            eprintln!("skipped {test}: FLEETPULSE_KAFKA is not set (run `bash .ci/run`, which starts tansu)");
            None
        }
    }
}

/// The S3 endpoint of the test emulator (moto), or `None` (with a printed
/// reason) when it is not configured. Under CI a missing emulator is a failure.
pub fn moto_or_skip(test: &str) -> Option<String> {
    match std::env::var("FLEETPULSE_MOTO") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: FLEETPULSE_MOTO is not set under CI; .ci/run starts moto_server and sets it"
            );
            eprintln!("skipped {test}: FLEETPULSE_MOTO is not set (run `bash .ci/run`, which starts moto_server)");
            None
        }
    }
}

/// A child process whose output goes to a log file; killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Start `fleetpulse <args>` with extra environment variables.
    pub fn spawn(
        bin: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning log handle"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill with SIGKILL, as a crash would.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ask to stop with SIGTERM and wait up to `timeout`; returns whether it exited cleanly.
    pub fn sigterm(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop within {timeout:?}; killing it", self.name);
        self.sigkill();
        false
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            self.sigkill();
        }
    }
}

/// Run `tests/py/fpcheck.py <args>` and parse its JSON output.
pub fn fpcheck(args: &[&str]) -> serde_json::Value {
    pycheck("fpcheck.py", args)
}

/// Run `tests/py/<script> <args>` and parse the JSON it prints.
pub fn pycheck(script: &str, args: &[&str]) -> serde_json::Value {
    let script = repo_root().join("tests/py").join(script);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} {args:?} printed no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Run `fleetpulse <args>` to completion and return stdout; panics on failure.
pub fn fleetpulse_ok(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("running fleetpulse");
    assert!(
        out.status.success(),
        "fleetpulse {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A per-run unique suffix (topic prefixes, group ids).
pub fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}{t}{}", std::process::id())
}
