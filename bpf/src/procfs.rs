//! The fallback when BPF cannot load: per-CPU busy time from `/proc/stat` and
//! per-process CPU time from `/proc/<pid>/stat`, both in clock ticks (usually
//! 10 ms), converted to ns here and nowhere else.

use std::fs;
use std::path::{Path, PathBuf};

use crate::snapshot::{CpuBusy, ProcessCpu};
use crate::source::{Nanos, Source};

pub(crate) struct Procfs {
    root: PathBuf,
    ns_per_tick: u64,
}

impl Procfs {
    pub(crate) fn new(root: PathBuf) -> Procfs {
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Procfs {
            root,
            ns_per_tick: 1_000_000_000 / hz,
        }
    }

    pub(crate) fn cpus(&self) -> Vec<CpuBusy> {
        let path = self.root.join("stat");
        match fs::read_to_string(&path) {
            Ok(text) => parse_stat(&text)
                .into_iter()
                .map(|(cpu, ticks)| CpuBusy {
                    cpu,
                    busy: Nanos(ticks.wrapping_mul(self.ns_per_tick)),
                    source: Source::Procfs,
                })
                .collect(),
            Err(e) => {
                log::warn!("{}: {e}", path.display());
                Vec::new()
            }
        }
    }

    /// `None` once the process has gone.
    pub(crate) fn process(&self, pid: u32) -> Option<ProcessCpu> {
        let text = fs::read_to_string(self.pid_stat(pid)).ok()?;
        let ticks = parse_pid_stat(&text)?;
        Some(ProcessCpu {
            pid,
            on_cpu: Nanos(ticks.wrapping_mul(self.ns_per_tick)),
            source: Source::Procfs,
        })
    }

    fn pid_stat(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string()).join("stat")
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

/// Busy ticks per CPU from the `cpuN` lines: everything but idle and iowait.
/// Steal counts as busy because the BPF source sees a task running then too.
fn parse_stat(text: &str) -> Vec<(u32, u64)> {
    let mut cpus: Vec<(u32, u64)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse::<u32>().ok()?;
            let v: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal [guest guest_nice]:
            // guest time is already inside user and nice.
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            let busy = [0, 1, 2, 5, 6, 7]
                .iter()
                .fold(0u64, |acc, &i| acc.wrapping_add(at(i)));
            Some((cpu, busy))
        })
        .collect();
    cpus.sort_by_key(|c| c.0);
    cpus
}

/// utime + stime ticks of all threads; the command name may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn parse_pid_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.wrapping_add(stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_busy_excludes_idle_and_iowait_and_skips_the_total_line() {
        let text = "cpu  10 10 10 1000 50 1 1 1 0 0\n\
                    cpu0 1 2 3 400 20 4 5 6 7 8\n\
                    cpu1 10 0 0 600 30 0 0 0 0 0\n\
                    intr 123\n";
        assert_eq!(parse_stat(text), vec![(0, 21), (1, 10)]);
    }

    #[test]
    fn offline_cpus_are_simply_absent() {
        let text = "cpu  1 1 1 1 1 1 1 1\ncpu0 1 0 0 0 0 0 0 0\ncpu3 2 0 0 0 0 0 0 0\n";
        assert_eq!(parse_stat(text), vec![(0, 1), (3, 2)]);
    }

    #[test]
    fn pid_stat_survives_odd_command_names() {
        let text = "4242 (a) b (c) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    17 5 0 0 20 0 3 0 12345 1000 100 18446744073709551615";
        assert_eq!(parse_pid_stat(text), Some(22));
        assert_eq!(parse_pid_stat("4242 (truncated"), None);
    }

    #[test]
    fn fixture_tree_is_read_in_nanoseconds() {
        let dir = std::env::temp_dir().join(format!("dnngov-bpf-procfs-{}", std::process::id()));
        fs::create_dir_all(dir.join("77")).unwrap();
        fs::write(dir.join("stat"), "cpu 3 0 0 0\ncpu0 3 0 0 9 0 0 0 0\n").unwrap();
        fs::write(
            dir.join("77/stat"),
            "77 (x) S 1 1 1 0 -1 0 0 0 0 0 4 6 0 0 20 0 1 0 1 1 1",
        )
        .unwrap();
        let procfs = Procfs::new(dir.clone());
        let tick = procfs.ns_per_tick;
        assert_eq!(procfs.cpus()[0].busy, Nanos(3 * tick));
        assert_eq!(procfs.process(77).unwrap().on_cpu, Nanos(10 * tick));
        assert!(procfs.process(78).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
