//! Where a figure came from, and the unit every time figure is kept in.

use std::fmt;

/// The mechanism that produced a figure, so the agent can say in its status
/// which ones are exact and which are estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// eBPF programs in the kernel.
    Bpf,
    /// `/proc/stat` and `/proc/<pid>/stat` (tick resolution).
    Procfs,
    /// Counters the app itself writes into its shared-memory page.
    SharedMemory,
    /// No mechanism on this machine provides the figure.
    Unavailable,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Bpf => "bpf",
            Source::Procfs => "procfs",
            Source::SharedMemory => "shared-memory",
            Source::Unavailable => "unavailable",
        })
    }
}

/// Nanoseconds: cumulative counters and `CLOCK_MONOTONIC` timestamps (the clock
/// `bpf_ktime_get_ns` reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Growth of a cumulative counter since `earlier`; kernel counters may wrap.
    pub fn since(self, earlier: Nanos) -> Nanos {
        Nanos(self.0.wrapping_sub(earlier.0))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Reads `CLOCK_MONOTONIC`, the clock BPF timestamps use.
    pub fn monotonic_now() -> Nanos {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Nanos(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_survives_counter_wrap() {
        assert_eq!(Nanos(5).since(Nanos(u64::MAX - 4)), Nanos(10));
        assert_eq!(Nanos(15).since(Nanos(5)), Nanos(10));
    }
}
