//! CPU time from `sched_switch`: busy (non-idle) ns of every CPU, and on-CPU ns
//! of the processes the agent watches. Two programs with one map layout: the
//! BTF-typed tracepoint where the kernel has BTF, the classic tracefs one
//! elsewhere.

use std::collections::BTreeSet;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{ErrorKind, Link, MapCore, MapFlags};

use crate::error::Error;
use crate::owned::OwnedSkel;
use crate::probe::KernelProbe;
use crate::sched_classic_skel::{SchedClassicSkel, SchedClassicSkelBuilder};
use crate::sched_skel::types::cpu_state;
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
        })
    }

    fn cpu_states(&self) -> &dyn MapCore {
        match &self.loaded {
            Loaded::Btf(s) => &s.get().maps.cpu_states,
            Loaded::Classic(s) => &s.get().maps.cpu_states,
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

    fn read_states(&self) -> Vec<cpu_state> {
        match self
            .cpu_states()
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        {
            Ok(Some(per_cpu)) => per_cpu.iter().map(|b| parse_cpu_state(b)).collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                log::warn!("reading per-CPU scheduler state: {e}");
                Vec::new()
            }
        }
    }

    /// Busy time per CPU and on-CPU time per watched process at `now`.
    pub(crate) fn read(&self, now: Nanos) -> (Vec<CpuBusy>, Vec<ProcessCpu>) {
        let states = self.read_states();
        let cpus = states
            .iter()
            .enumerate()
            .map(|(cpu, st)| CpuBusy {
                cpu: cpu as u32,
                busy: Nanos(st.busy_ns.wrapping_add(running_for(st, now))),
                source: Source::Bpf,
            })
            .collect();
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

/// The unaccounted slice of a CPU running a non-idle task since its last switch.
fn running_for(st: &cpu_state, now: Nanos) -> u64 {
    if st.since_ns == 0 || st.cur_idle != 0 || now.0 < st.since_ns {
        0
    } else {
        now.0 - st.since_ns
    }
}

fn parse_cpu_state(bytes: &[u8]) -> cpu_state {
    if bytes.len() < size_of::<cpu_state>() {
        return cpu_state::default();
    }
    // SAFETY: the length was checked; `cpu_state` is plain old data and the
    // buffer may be unaligned, hence read_unaligned.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<cpu_state>()) }
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
    fn short_buffers_parse_as_empty_state() {
        assert_eq!(parse_cpu_state(&[0u8; 3]).busy_ns, 0);
        let mut raw = vec![0u8; size_of::<cpu_state>() + 1];
        raw[1..9].copy_from_slice(&42u64.to_ne_bytes());
        assert_eq!(parse_cpu_state(&raw[1..]).busy_ns, 42);
    }
}
