//! What the kernel knows about this process: thread CPU time, peak RSS, fd limit.
//!
//! Read from `/proc` (Linux), so no unsafe and no extra crate. Every reader
//! returns `None` where `/proc` is missing or unreadable; the benchmark then
//! prints "NA" rather than a made-up number.

use std::time::Duration;

/// CPU time (user + system) of the calling thread.
///
/// `/proc/thread-self/schedstat` gives nanoseconds; `/proc/thread-self/stat`
/// (clock ticks, 10 ms) is the fallback.
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            if ns > 0 {
                return Some(Duration::from_nanos(ns));
            }
        }
    }
    stat_cpu_time("/proc/thread-self/stat")
}

/// CPU time (user + system) of every thread of process `pid` so far.
pub(crate) fn process_cpu_time(pid: u32) -> Option<Duration> {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// utime + stime of a `stat` file, assuming the usual 100 ticks per second.
fn stat_cpu_time(path: &str) -> Option<Duration> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) is index 11, stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident set size of process `pid` (`"self"` for this one): (peak, current), in bytes.
pub(crate) fn rss(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Some((kb("VmHWM:")?, kb("VmRSS:")?))
}

/// Reset this process's peak RSS (VmHWM) to its current RSS; false when the
/// kernel does not allow it (then peaks include earlier phases).
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Soft and hard limits on open files of this process (`None` = unlimited).
pub(crate) fn open_files_limit() -> Option<(Option<u64>, Option<u64>)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| match v? {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    };
    let soft = parse(it.next())?;
    let hard = parse(it.next())?;
    Some((soft, hard))
}

/// Bytes as mebibytes with one decimal.
pub(crate) fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let before = thread_cpu_time().expect("thread cpu time");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = thread_cpu_time().expect("thread cpu time");
        assert!(after > before, "{before:?} -> {after:?}");
        let (peak, now) = rss("self").expect("rss");
        assert!(peak >= now && now > 0);
        let (soft, _) = open_files_limit().expect("limits");
        assert!(soft.is_none_or(|s| s > 0));
        assert!(process_cpu_time(std::process::id()).is_some());
        assert_eq!(mib(3 * 1024 * 1024 / 2), 1.5);
    }
}
