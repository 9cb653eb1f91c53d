//! Kernel-side run-time statistics of our programs (`kernel.bpf_stats_enabled`),
//! for measuring what the telemetry costs per event.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;

/// Keeps the kernel's BPF run-time accounting on while alive: it costs a few ns
/// per program run, so it is switched off again when this is dropped.
pub struct StatsEnabled {
    _fd: OwnedFd,
}

impl StatsEnabled {
    pub fn new() -> std::io::Result<StatsEnabled> {
        // SAFETY: plain syscall wrapper; it returns a new fd or a negative errno.
        let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: the kernel just handed us this fd and nothing else owns it.
        Ok(StatsEnabled {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

/// Cumulative run count and run time of one program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramRunStats {
    pub id: u32,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl ProgramRunStats {
    /// Average ns per run between `earlier` and `self`.
    pub fn ns_per_run_since(&self, earlier: &ProgramRunStats) -> Option<f64> {
        let runs = self.run_cnt.wrapping_sub(earlier.run_cnt);
        let ns = self.run_time_ns.wrapping_sub(earlier.run_time_ns);
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}

fn prog_info(fd: BorrowedFd<'_>) -> Option<libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is writable and `len` says how large it is.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (ret == 0).then_some(info)
}

pub(crate) fn program_id(fd: BorrowedFd<'_>) -> Option<u32> {
    prog_info(fd).map(|i| i.id)
}

pub(crate) fn run_stats(fd: BorrowedFd<'_>) -> Option<ProgramRunStats> {
    prog_info(fd).map(|i| ProgramRunStats {
        id: i.id,
        run_cnt: i.run_cnt,
        run_time_ns: i.run_time_ns,
    })
}

/// Ids of every BPF program loaded in the kernel now.
pub fn loaded_program_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    let mut id = 0u32;
    // SAFETY: plain syscall wrapper writing the next id into `id`.
    while unsafe { libbpf_sys::bpf_prog_get_next_id(id, &mut id) } == 0 {
        ids.push(id);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_run_uses_wrapping_deltas() {
        let a = ProgramRunStats {
            id: 1,
            run_cnt: u64::MAX,
            run_time_ns: 1_000,
        };
        let b = ProgramRunStats {
            id: 1,
            run_cnt: 9,
            run_time_ns: 2_000,
        };
        assert_eq!(b.ns_per_run_since(&a), Some(100.0));
        assert_eq!(a.ns_per_run_since(&a), None);
    }
}
