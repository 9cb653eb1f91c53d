//! GPU activity from scheduler tracepoints, where this kernel has them: the DRM
//! GPU scheduler (amdgpu, panfrost, v3d, etnaviv, xe; old and renamed event
//! names) and Jetson's nvgpu (`gk20a`). A tracepoint that does not exist makes
//! its source unavailable; only an unexpected failure is logged as a warning.

use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, ProgramMut};

use crate::error::Error;
use crate::gpu_skel::types::{gpu_device_stats, gpu_event, gpu_proc_stats};
use crate::gpu_skel::{GpuSkel, GpuSkelBuilder};
use crate::owned::OwnedSkel;
use crate::probe::{KernelProbe, Presence};
use crate::snapshot::{GpuActivity, GpuProcess};
use crate::source::{Nanos, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Queue,
    Run,
    Done,
    Gk20aSubmit,
}

/// (category, event, role): recent kernels' names before the historic ones.
const TRACEPOINTS: [(&str, &str, Role); 7] = [
    ("gpu_scheduler", "drm_sched_job_queue", Role::Queue),
    ("gpu_scheduler", "drm_sched_job", Role::Queue),
    ("gpu_scheduler", "drm_sched_job_run", Role::Run),
    ("gpu_scheduler", "drm_run_job", Role::Run),
    ("gpu_scheduler", "drm_sched_job_done", Role::Done),
    ("gpu_scheduler", "drm_sched_process_job", Role::Done),
    ("gk20a", "gk20a_channel_submit_gpfifo", Role::Gk20aSubmit),
];

struct Attached {
    name: String,
    role: Role,
    _link: Link,
}

pub(crate) struct Gpu {
    links: Vec<Attached>,
    skel: OwnedSkel<GpuSkel<'static>>,
}

impl Gpu {
    /// `Ok(None)` when no GPU tracepoint exists here.
    pub(crate) fn load(probe: &KernelProbe) -> Result<Option<Gpu>, Error> {
        Gpu::load_from(probe, &TRACEPOINTS)
    }

    fn load_from(
        probe: &KernelProbe,
        tracepoints: &[(&str, &str, Role)],
    ) -> Result<Option<Gpu>, Error> {
        let wanted: Vec<_> = tracepoints
            .iter()
            .filter(|(cat, name, _)| probe.tracepoint(cat, name) != Presence::Absent)
            .collect();
        if wanted.is_empty() {
            log::info!("no GPU scheduler tracepoints on this kernel: GPU activity unavailable");
            return Ok(None);
        }
        let skel = OwnedSkel::new(|storage| {
            GpuSkelBuilder::default()
                .open(storage)
                .and_then(|open| open.load())
                .map_err(|e| Error::bpf("loading GPU tracepoint programs", e))
        })?;
        let mut links = Vec::new();
        let mut seen = Vec::new();
        for &&(cat, name, role) in &wanted {
            // One name per role: a kernel with both would count each job twice.
            if seen.contains(&role) {
                continue;
            }
            let progs = &skel.get().progs;
            let prog: &ProgramMut<'_> = match role {
                Role::Queue => &progs.dnngov_drm_job_queue,
                Role::Run => &progs.dnngov_drm_job_run,
                Role::Done => &progs.dnngov_drm_job_done,
                Role::Gk20aSubmit => &progs.dnngov_gk20a_submit,
            };
            let attach = || prog.attach_raw_tracepoint(name);
            let attached = if probe.tracepoint(cat, name) == Presence::Present {
                attach()
            } else {
                crate::libbpf_logger::speculative(attach)
            };
            match attached {
                Ok(link) => {
                    log::info!("GPU activity from {cat}:{name}");
                    seen.push(role);
                    links.push(Attached {
                        name: format!("{cat}:{name}"),
                        role,
                        _link: link,
                    });
                }
                Err(e) if probe.tracepoint(cat, name) == Presence::Present => {
                    log::warn!("attaching {cat}:{name}: {e}");
                }
                Err(e) => log::debug!("{cat}:{name} not attachable: {e}"),
            }
        }
        if links.is_empty() {
            return Ok(None);
        }
        Ok(Some(Gpu { links, skel }))
    }

    pub(crate) fn program_fds(&self) -> Vec<BorrowedFd<'_>> {
        let p = &self.skel.get().progs;
        vec![
            p.dnngov_drm_job_queue.as_fd(),
            p.dnngov_drm_job_run.as_fd(),
            p.dnngov_drm_job_done.as_fd(),
            p.dnngov_gk20a_submit.as_fd(),
        ]
    }

    pub(crate) fn read(&self, now: Nanos) -> GpuActivity {
        let maps = &self.skel.get().maps;
        let device = maps
            .gpu_device
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|raw| parse::<gpu_device_stats>(&raw))
            .unwrap_or_default();
        let has = |role| self.links.iter().any(|a| a.role == role);
        let busy = (has(Role::Run) && has(Role::Done)).then(|| {
            let running = if device.inflight > 0 && now.0 > device.busy_since_ns {
                now.0 - device.busy_since_ns
            } else {
                0
            };
            Nanos(device.busy_ns.wrapping_add(running))
        });
        let mut processes: Vec<GpuProcess> = maps
            .gpu_procs
            .keys()
            .filter_map(|key| {
                let pid = u32::from_ne_bytes(key.get(..4)?.try_into().ok()?);
                let raw = maps.gpu_procs.lookup(&key, MapFlags::ANY).ok().flatten()?;
                let p = parse::<gpu_proc_stats>(&raw)?;
                Some(GpuProcess {
                    pid,
                    submissions: p.submissions,
                    last_submit: Nanos(p.last_submit_ns),
                })
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        GpuActivity {
            source: Source::Bpf,
            tracepoints: self.links.iter().map(|a| a.name.clone()).collect(),
            busy,
            jobs_run: device.events[gpu_event::GPU_EV_DRM_RUN.0 as usize],
            jobs_done: device.events[gpu_event::GPU_EV_DRM_DONE.0 as usize],
            processes,
        }
    }
}

fn parse<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; the generated records are plain old data and the
    // buffer may be unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::KernelPaths;

    /// Stands ordinary scheduler and syscall tracepoints in for GPU ones, which
    /// this machine may lack, to check attaching by name and reading back.
    #[test]
    fn attached_events_are_counted_per_process_and_device() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping attached_events_are_counted_per_process_and_device: needs root");
            return;
        }
        let probe = KernelProbe::new(&KernelPaths::default());
        let stand_ins = [
            ("raw_syscalls", "sys_enter", Role::Queue),
            ("sched", "sched_wakeup", Role::Run),
            ("sched", "sched_switch", Role::Done),
        ];
        let gpu = Gpu::load_from(&probe, &stand_ins)
            .expect("loads")
            .expect("stand-in tracepoints exist");
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let activity = gpu.read(Nanos::monotonic_now());
        assert_eq!(activity.source, Source::Bpf);
        assert_eq!(activity.tracepoints.len(), 3);
        let me = std::process::id();
        let mine = activity.processes.iter().find(|p| p.pid == me);
        assert!(mine.is_some_and(|p| p.submissions >= 100), "{mine:?}");
        assert!(activity.jobs_run > 0 && activity.jobs_done > 0);
        assert!(activity.busy.is_some());
    }

    #[test]
    fn every_role_has_a_tracepoint_and_new_names_come_first() {
        for role in [Role::Queue, Role::Run, Role::Done, Role::Gk20aSubmit] {
            assert!(TRACEPOINTS.iter().any(|t| t.2 == role));
        }
        let run: Vec<_> = TRACEPOINTS.iter().filter(|t| t.2 == Role::Run).collect();
        assert_eq!(run[0].1, "drm_sched_job_run");
        assert_eq!(run[1].1, "drm_run_job");
    }
}
