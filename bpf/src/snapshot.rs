//! The typed telemetry the agent reads: cumulative counters stamped with the
//! time they were read and the source of each figure. Rates come from two
//! snapshots (`busy_fraction`), never from one.

use crate::source::{Nanos, Source};

/// Non-idle time of one CPU since telemetry started (BPF) or boot (procfs).
/// In a VM both count time stolen by the host while a task was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBusy {
    pub cpu: u32,
    pub busy: Nanos,
    pub source: Source,
}

/// On-CPU time of one watched process, all its threads together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCpu {
    pub pid: u32,
    /// BPF: since `watch`; procfs: since the process started. Take deltas.
    pub on_cpu: Nanos,
    pub source: Source,
}

/// Counters of finished inferences of one app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InferenceCounters {
    pub count: u64,
    /// Inferences whose latency exceeded their (non-zero) deadline.
    pub misses: u64,
    pub latency_sum: Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppInferences {
    pub app_id: u32,
    pub counters: InferenceCounters,
    /// Records the kernel could not queue (ring full); counters still include them.
    pub dropped_records: u64,
    pub source: Source,
}

/// One finished inference, in the order the app's ring delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceRecord {
    pub pid: u32,
    pub app_id: u32,
    pub seq: u64,
    pub begin: Nanos,
    pub end: Nanos,
    /// Relative to `begin`; `None` when the app gave no deadline.
    pub deadline: Option<Nanos>,
    pub subnet: u32,
}

impl InferenceRecord {
    pub fn latency(&self) -> Nanos {
        self.end.since(self.begin)
    }

    /// Same rule as the kernel's miss counter.
    pub fn missed(&self) -> bool {
        self.deadline.is_some_and(|d| self.latency() > d)
    }
}

/// Submissions of GPU work by one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: u32,
    pub submissions: u64,
    pub last_submit: Nanos,
}

/// GPU activity seen through scheduler tracepoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuActivity {
    /// `Unavailable` when no GPU tracepoint exists here.
    pub source: Source,
    /// Tracepoints attached, e.g. `drm_sched_job_run`.
    pub tracepoints: Vec<String>,
    /// Device-wide time with at least one job running (DRM scheduler only).
    pub busy: Option<Nanos>,
    pub jobs_run: u64,
    pub jobs_done: u64,
    pub processes: Vec<GpuProcess>,
}

impl GpuActivity {
    pub fn unavailable() -> GpuActivity {
        GpuActivity {
            source: Source::Unavailable,
            tracepoints: Vec::new(),
            busy: None,
            jobs_run: 0,
            jobs_done: 0,
            processes: Vec::new(),
        }
    }
}

/// Everything read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `CLOCK_MONOTONIC` when the snapshot was read.
    pub at: Nanos,
    /// In CPU order: every possible CPU (BPF) or every online CPU (procfs).
    pub cpus: Vec<CpuBusy>,
    /// Watched processes in pid order. procfs omits those that have exited;
    /// BPF keeps their last figure until `unwatch`.
    pub processes: Vec<ProcessCpu>,
    /// Apps attached or reported through shared memory, in app id order.
    pub apps: Vec<AppInferences>,
    pub gpu: GpuActivity,
}

impl Snapshot {
    pub fn process(&self, pid: u32) -> Option<&ProcessCpu> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    pub fn app(&self, app_id: u32) -> Option<&AppInferences> {
        self.apps.iter().find(|a| a.app_id == app_id)
    }

    /// Sum of all CPUs' busy time.
    pub fn total_busy(&self) -> Nanos {
        Nanos(
            self.cpus
                .iter()
                .fold(0u64, |acc, c| acc.wrapping_add(c.busy.0)),
        )
    }

    /// Fraction of the interval since `earlier` that `cpu` was busy, 0..=1.
    pub fn busy_fraction(&self, earlier: &Snapshot, cpu: u32) -> Option<f64> {
        let now = self.cpus.iter().find(|c| c.cpu == cpu)?;
        let then = earlier.cpus.iter().find(|c| c.cpu == cpu)?;
        let wall = self.at.since(earlier.at);
        if wall.0 == 0 {
            return None;
        }
        Some((now.busy.since(then.busy).0 as f64 / wall.0 as f64).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(at: u64, busy: &[u64]) -> Snapshot {
        Snapshot {
            at: Nanos(at),
            cpus: busy
                .iter()
                .enumerate()
                .map(|(i, b)| CpuBusy {
                    cpu: i as u32,
                    busy: Nanos(*b),
                    source: Source::Bpf,
                })
                .collect(),
            processes: Vec::new(),
            apps: Vec::new(),
            gpu: GpuActivity::unavailable(),
        }
    }

    #[test]
    fn busy_fraction_is_busy_delta_over_wall_delta() {
        let a = cpus(1_000, &[100, 0]);
        let b = cpus(2_000, &[600, 1_000]);
        assert_eq!(b.busy_fraction(&a, 0), Some(0.5));
        assert_eq!(b.busy_fraction(&a, 1), Some(1.0));
        assert_eq!(b.busy_fraction(&a, 2), None);
        assert_eq!(a.busy_fraction(&a, 0), None);
    }

    #[test]
    fn miss_needs_a_deadline_and_a_longer_latency() {
        let mut r = InferenceRecord {
            pid: 1,
            app_id: 1,
            seq: 0,
            begin: Nanos(10),
            end: Nanos(20),
            deadline: None,
            subnet: 0,
        };
        assert!(!r.missed());
        r.deadline = Some(Nanos(10));
        assert!(!r.missed());
        r.deadline = Some(Nanos(9));
        assert!(r.missed());
    }
}
