//! CPU time from `sched_switch`: busy (non-idle) ns of every CPU, and on-CPU ns
//! of the processes the agent watches. Two programs with one map layout: the
//! BTF-typed tracepoint where the kernel has BTF, the classic tracefs one
//! elsewhere.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{ErrorKind, Link, MapCore, MapFlags};

use crate::error::Error;
use crate::owned::OwnedSkel;
use crate::probe::KernelProbe;
use crate::sched_classic_skel::{SchedClassicSkel, SchedClassicSkelBuilder};
use crate::sched_skel::types::cpu_state;

/// Slots in the programs' CPU array (`DNNGOV_MAX_CPUS` in `intf.h`).
const DNNGOV_MAX_CPUS: usize = 1024;
use crate::sched_skel::{SchedSkel, SchedSkelBuilder};
use crate::snapshot::{CpuBusy, ProcessCpu};
use crate::source::{Nanos, Source};

/// Which `sched_switch` program to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedVariant {
    /// `tp_btf` when the kernel's BTF has the tracepoint, else classic.
    #[default]
    Auto,
    /// `tp_btf/sched_switch`: needs kernel BTF.
    Btf,
    /// `tracepoint/sched/sched_switch`: needs tracefs mounted.
    Classic,
}

enum Loaded {
    Btf(OwnedSkel<SchedSkel<'static>>),
    Classic(OwnedSkel<SchedClassicSkel<'static>>),
}

pub(crate) struct Scheduler {
    // Dropping the link detaches the program; declared first so it goes before
    // the object that owns the program.
    _link: Link,
    loaded: Loaded,
    watched: BTreeSet<u32>,
    /// Possible CPUs with a slot (at most [`DNNGOV_MAX_CPUS`]).
    cpus: usize,
}

impl Scheduler {
    pub(crate) fn load(variant: SchedVariant, probe: &KernelProbe) -> Result<Scheduler, Error> {
        let variant = match variant {
            SchedVariant::Auto if probe.btf_tracepoint("sched_switch") => SchedVariant::Btf,
            SchedVariant::Auto => SchedVariant::Classic,
            v => v,
        };
        if variant == SchedVariant::Classic && !probe.has_tracefs() {
            let why = if !probe.has_btf() {
                "no kernel BTF and tracefs is not mounted"
            } else if probe.btf_tracepoint("sched_switch") {
                "the classic sched_switch tracepoint needs tracefs, which is not mounted"
            } else {
                "kernel BTF lacks sched_switch and tracefs is not mounted"
            };
            return Err(Error::Unsupported(why.into()));
        }
        let (loaded, link) = match variant {
            SchedVariant::Btf => {
                let skel = OwnedSkel::new(|storage| {
                    SchedSkelBuilder::default()
                        .open(storage)
                        .and_then(|open| open.load())
                        .map_err(|e| Error::bpf("loading sched_switch (tp_btf)", e))
                })?;
                let link = skel
                    .get()
                    .progs
                    .dnngov_sched_switch
                    .attach()
                    .map_err(|e| Error::bpf("attaching tp_btf/sched_switch", e))?;
                (Loaded::Btf(skel), link)
            }
            _ => {
                let skel = OwnedSkel::new(|storage| {
                    SchedClassicSkelBuilder::default()
                        .open(storage)
                        .and_then(|open| open.load())
                        .map_err(|e| Error::bpf("loading sched_switch (tracepoint)", e))
                })?;
                let link = skel
                    .get()
                    .progs
                    .dnngov_sched_switch_classic
                    .attach()
                    .map_err(|e| Error::bpf("attaching tracepoint/sched/sched_switch", e))?;
                (Loaded::Classic(skel), link)
            }
        };
        let possible = libbpf_rs::num_possible_cpus()
            .map_err(|e| Error::bpf("counting the possible CPUs", e))?;
        let cpus = possible.min(DNNGOV_MAX_CPUS);
        if possible > cpus {
            log::warn!("{possible} possible CPUs: busy time is counted for the first {cpus}");
        }
        log::info!(
            "sched_switch telemetry attached ({})",
            match variant {
                SchedVariant::Btf => "tp_btf",
                _ => "classic tracepoint",
            }
        );
        Ok(Scheduler {
            _link: link,
            loaded,
            watched: BTreeSet::new(),
            cpus,
        })
    }

    /// The first of the [`DNNGOV_MAX_CPUS`] slots in the program's mapped `.bss`.
    fn slots(&self) -> Option<*const cpu_state> {
        match &self.loaded {
            Loaded::Btf(s) => s
                .get()
                .maps
                .bss_data
                .as_deref()
                .map(|bss| bss.dnngov_cpus.as_ptr()),
            // The same header defines both variants' slots.
            Loaded::Classic(s) => s
                .get()
                .maps
                .bss_data
                .as_deref()
                .map(|bss| bss.dnngov_cpus.as_ptr().cast::<cpu_state>()),
        }
    }

    fn proc_on_cpu(&self) -> &dyn MapCore {
        match &self.loaded {
            Loaded::Btf(s) => &s.get().maps.proc_on_cpu,
            Loaded::Classic(s) => &s.get().maps.proc_on_cpu,
        }
    }

    pub(crate) fn program_fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.loaded {
            Loaded::Btf(s) => vec![s.get().progs.dnngov_sched_switch.as_fd()],
            Loaded::Classic(s) => vec![s.get().progs.dnngov_sched_switch_classic.as_fd()],
        }
    }

    pub(crate) fn is_btf(&self) -> bool {
        matches!(self.loaded, Loaded::Btf(_))
    }

    pub(crate) fn watch(&mut self, pid: u32) -> Result<(), Error> {
        if self.watched.contains(&pid) {
            return Ok(());
        }
        match self
            .proc_on_cpu()
            .update(&pid.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::NO_EXIST)
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::bpf(format!("watching pid {pid}"), e)),
        }
        self.watched.insert(pid);
        Ok(())
    }

    pub(crate) fn unwatch(&mut self, pid: u32) {
        if self.watched.remove(&pid) {
            if let Err(e) = self.proc_on_cpu().delete(&pid.to_ne_bytes()) {
                log::debug!("unwatching pid {pid}: {e}");
            }
        }
    }

    /// Every possible CPU's slot, read from mapped memory (no system call).
    fn read_states(&self) -> Vec<cpu_state> {
        let Some(first) = self.slots() else {
            log::warn!("the scheduler program's .bss is not mapped");
            return Vec::new();
        };
        (0..self.cpus)
            // SAFETY: `cpus` <= DNNGOV_MAX_CPUS, the length of the array `first` starts,
            // which lives in the skeleton's mapping for as long as `self`.
            .map(|cpu| read_slot(unsafe { first.add(cpu) }))
            .collect()
    }

    /// Busy time per CPU at `now`.
    pub(crate) fn read_cpus(&self, now: Nanos) -> Vec<CpuBusy> {
        cpus_of(&self.read_states(), now)
    }

    /// Busy time per CPU and on-CPU time per watched process at `now`.
    pub(crate) fn read(&self, now: Nanos) -> (Vec<CpuBusy>, Vec<ProcessCpu>) {
        let states = self.read_states();
        let cpus = cpus_of(&states, now);
        let processes = self
            .watched
            .iter()
            .filter_map(|&pid| {
                let stored = self
                    .proc_on_cpu()
                    .lookup(&pid.to_ne_bytes(), MapFlags::ANY)
                    .ok()
                    .flatten()?;
                let mut ns = read_u64(&stored)?;
                // Time since the last switch is not in the map yet: add the
                // slice each CPU is running for this process right now.
                for st in states.iter().filter(|st| st.cur_tgid == pid) {
                    ns = ns.wrapping_add(running_for(st, now));
                }
                Some(ProcessCpu {
                    pid,
                    on_cpu: Nanos(ns),
                    source: Source::Bpf,
                })
            })
            .collect();
        (cpus, processes)
    }
}

fn cpus_of(states: &[cpu_state], now: Nanos) -> Vec<CpuBusy> {
    states
        .iter()
        .enumerate()
        .map(|(cpu, st)| CpuBusy {
            cpu: cpu as u32,
            busy: Nanos(st.busy_ns.wrapping_add(running_for(st, now))),
            source: Source::Bpf,
        })
        .collect()
}

/// The unaccounted slice of a CPU running a non-idle task since its last switch.
fn running_for(st: &cpu_state, now: Nanos) -> u64 {
    if st.since_ns == 0 || st.cur_idle != 0 || now.0 < st.since_ns {
        0
    } else {
        now.0 - st.since_ns
    }
}

/// Reads after this many changes under the reader take the last values read: a CPU
/// switching tasks that often is busy, and its figures are at most one switch old.
const SLOT_RETRIES: u32 = 16;

/// One CPU's slot, consistent: the fields are read between two equal, even values of
/// its sequence count (the program makes it odd while it writes).
fn read_slot(slot: *const cpu_state) -> cpu_state {
    // SAFETY (all loads): `slot` points to a live, aligned `cpu_state` in memory shared
    // with the kernel, which writes it concurrently; every field is read atomically.
    let u64_at = |field: *const u64| unsafe { AtomicU64::from_ptr(field.cast_mut()) };
    let u32_at = |field: *const u32| unsafe { AtomicU32::from_ptr(field.cast_mut()) };
    let (seq, busy, since, tgid, idle) = unsafe {
        (
            u64_at(&raw const (*slot).seq),
            u64_at(&raw const (*slot).busy_ns),
            u64_at(&raw const (*slot).since_ns),
            u32_at(&raw const (*slot).cur_tgid),
            u32_at(&raw const (*slot).cur_idle),
        )
    };
    let mut st = cpu_state::default();
    for _ in 0..SLOT_RETRIES {
        let before = seq.load(Ordering::Acquire);
        st.busy_ns = busy.load(Ordering::Acquire);
        st.since_ns = since.load(Ordering::Acquire);
        st.cur_tgid = tgid.load(Ordering::Acquire);
        st.cur_idle = idle.load(Ordering::Acquire);
        if before % 2 == 0 && seq.load(Ordering::Acquire) == before {
            break;
        }
        std::hint::spin_loop();
    }
    st
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_slice_counts_only_busy_cpus_after_their_first_switch() {
        let mut st = cpu_state {
            busy_ns: 0,
            since_ns: 100,
            cur_tgid: 7,
            cur_idle: 0,
            ..Default::default()
        };
        assert_eq!(running_for(&st, Nanos(150)), 50);
        assert_eq!(running_for(&st, Nanos(50)), 0);
        st.cur_idle = 1;
        assert_eq!(running_for(&st, Nanos(150)), 0);
        st.cur_idle = 0;
        st.since_ns = 0;
        assert_eq!(running_for(&st, Nanos(150)), 0);
    }

    #[test]
    fn a_slot_reads_whole() {
        let slot = cpu_state {
            busy_ns: 42,
            since_ns: 7,
            cur_tgid: 9,
            cur_idle: 1,
            seq: 4,
            ..Default::default()
        };
        let read = read_slot(&slot);
        assert_eq!(
            (read.busy_ns, read.since_ns, read.cur_tgid, read.cur_idle),
            (42, 7, 9, 1)
        );
        // A slot left odd (a writer that never finishes) still reads, after the retries.
        let odd = cpu_state { seq: 5, ..slot };
        assert_eq!(read_slot(&odd).busy_ns, 42);
    }

    use std::mem::size_of;

    #[test]
    fn both_variants_share_the_slot_layout() {
        assert_eq!(
            size_of::<crate::sched_skel::types::bss>(),
            DNNGOV_MAX_CPUS * size_of::<cpu_state>(),
            "DNNGOV_MAX_CPUS matches intf.h"
        );
        assert_eq!(
            size_of::<cpu_state>(),
            size_of::<crate::sched_classic_skel::types::cpu_state>()
        );
        assert_eq!(size_of::<cpu_state>(), 64, "one cache line per CPU");
    }
}
