//! Build and process metrics: `callgate_build_info` and the standard
//! `process_*` families (the names every Prometheus client library
//! exports, so stock dashboards and alerts work), read from `/proc/self`
//! at scrape time. Linux only: elsewhere only the build information is
//! written.
//!
//! `/proc/<pid>/stat` (proc(5)) gives CPU time and start time in clock
//! ticks of `USER_HZ`, which the kernel fixes at 100 for user space on
//! every architecture (the Prometheus procfs library assumes the same).

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use crate::exposition::{counter, gauge, info, one_gauge, Exposed};

/// Clock ticks per second in `/proc` times (`USER_HZ`).
const USER_HZ: f64 = 100.0;

/// The commit callgate was built from, when the build said
/// (`CALLGATE_COMMIT=$(git rev-parse HEAD) cargo build`).
const COMMIT: Option<&str> = option_env!("CALLGATE_COMMIT");

/// The build and process families.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    /// `[instance] name`: the `instance_name` label of
    /// `callgate_build_info` (not `instance`, which Prometheus sets to the
    /// scrape target and would rename ours `exported_instance`).
    pub instance: String,
}

/// What `/proc/self` says about this process.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self`; `None` where it cannot be read (not Linux).
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let mut sample = ProcessSample::parse(&stat, &status, &boot)?;
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        sample.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        Some(sample)
    }

    /// From `/proc/self/stat`, `/proc/self/status` and `/proc/stat`.
    fn parse(stat: &str, status: &str, boot: &str) -> Option<ProcessSample> {
        // The command name (field 2) is in parentheses and may hold
        // spaces or parentheses itself: fields from 3 on follow the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let ticks = field(14)? + field(15)?;
        let btime: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Some(ProcessSample {
            cpu_seconds: ticks as f64 / USER_HZ,
            start_time_seconds: btime as f64 + field(22)? as f64 / USER_HZ,
            resident_bytes: rss_kb * 1024,
            virtual_bytes: field(23)?,
            threads: field(20)?,
            open_fds: 0,
            max_fds: None,
        })
    }
}

/// The soft limit on open files from `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Exposed for ProcessMetrics {
    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        info(
            e,
            "callgate_build_info",
            "The callgate build serving: its version, the commit when the build was given CALLGATE_COMMIT, and instance_name, this instance's [instance] name (the start of its decision ids).",
        )?
        .info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", COMMIT.unwrap_or("unknown")),
            ("instance_name", self.instance.as_str()),
        ])?;
        let Some(p) = ProcessSample::read() else {
            return Ok(());
        };
        counter(
            e,
            "process_cpu_seconds_total",
            "User and system CPU time spent in seconds.",
        )?
        .counter_f64(&[], p.cpu_seconds)?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?
        .gauge_f64(&[], p.start_time_seconds)?;
        for (name, help, v) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                p.threads,
            ),
        ] {
            one_gauge(e, name, help, i64::try_from(v).unwrap_or(i64::MAX))?;
        }
        if let Some(max) = p.max_fds {
            one_gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                i64::try_from(max).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 104857600 2000 18446744073709551615";
        let status = "Name:\tx\nVmRSS:\t    8000 kB\nThreads:\t7\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let p = ProcessSample::parse(stat, status, boot).unwrap_or_default();
        assert_eq!(p.cpu_seconds, 3.0, "(250 + 50) ticks at USER_HZ 100");
        assert!(
            (p.start_time_seconds - 1_700_000_123.45).abs() < 1e-3,
            "{p:?}"
        );
        assert_eq!(
            (p.resident_bytes, p.virtual_bytes),
            (8000 * 1024, 104_857_600)
        );
        assert_eq!(p.threads, 7);
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessSample::read().unwrap_or_default();
        assert!(
            p.threads >= 1 && p.open_fds >= 3 && p.resident_bytes > 0,
            "{p:?}"
        );
        assert!(p.max_fds.is_some_and(|m| m >= p.open_fds), "{p:?}");
        assert!(p.start_time_seconds > 1.6e9, "{p:?}");
    }

    #[test]
    fn the_limits_line_gives_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }
}
