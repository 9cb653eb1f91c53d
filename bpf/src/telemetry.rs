//! The agent's one entry point: loads the BPF programs when the kernel and
//! privileges allow, falls back to procfs and shared memory otherwise, and
//! hands out snapshots in which every figure names its source.

use std::collections::BTreeSet;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::gpu::Gpu;
use crate::inference::{AppBinary, Inferences};
use crate::probe::{KernelPaths, KernelProbe};
use crate::procfs::Procfs;
use crate::scheduler::{SchedVariant, Scheduler};
use crate::snapshot::{AppInferences, GpuActivity, InferenceCounters, InferenceRecord, Snapshot};
use crate::source::{Nanos, Source};
use crate::stats::{self, ProgramRunStats};

/// Paths and choices; the defaults suit a real machine, tests redirect them.
#[derive(Debug, Clone)]
pub struct Config {
    /// procfs mount, read by the fallback.
    pub proc_root: PathBuf,
    pub kernel: KernelPaths,
    pub sched_variant: SchedVariant,
    /// Attach GPU tracepoints where they exist.
    pub gpu: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            proc_root: PathBuf::from("/proc"),
            kernel: KernelPaths::default(),
            sched_variant: SchedVariant::Auto,
            gpu: true,
        }
    }
}

/// Inference counters that apps keep in their shared-memory pages. The agent
/// owns those pages, so it implements this; telemetry uses it for apps whose
/// markers are not probed (fallback mode, or an app whose binary could not be
/// attached), marking those figures `Source::SharedMemory`.
pub trait SharedMemoryInferences: Send {
    /// Cumulative counters of every app that has a page, by app id.
    fn inference_counters(&self) -> Vec<(u32, InferenceCounters)>;
}

struct BpfParts {
    sched: Scheduler,
    infer: Inferences,
    gpu: Option<Gpu>,
}

pub struct Telemetry {
    bpf: Option<BpfParts>,
    procfs: Procfs,
    watched: BTreeSet<u32>,
    shm: Option<Box<dyn SharedMemoryInferences>>,
    fallback_reason: Option<String>,
}

impl Telemetry {
    /// BPF telemetry if it loads, else the fallback; says which once, in the log.
    pub fn open(config: &Config) -> Telemetry {
        match Telemetry::with_bpf(config) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{e}; falling back to procfs and shared-memory counters");
                let mut t = Telemetry::with_procfs(config);
                t.fallback_reason = Some(e.to_string());
                t
            }
        }
    }

    /// BPF telemetry or an error saying why it cannot load.
    pub fn with_bpf(config: &Config) -> Result<Telemetry, Error> {
        crate::libbpf_logger::install();
        let probe = KernelProbe::new(&config.kernel);
        let sched = Scheduler::load(config.sched_variant, &probe).map_err(unsupported)?;
        let infer = Inferences::load().map_err(unsupported)?;
        let gpu = if config.gpu {
            Gpu::load(&probe).unwrap_or_else(|e| {
                log::warn!("{e}: GPU activity unavailable");
                None
            })
        } else {
            None
        };
        Ok(Telemetry {
            bpf: Some(BpfParts { sched, infer, gpu }),
            procfs: Procfs::new(config.proc_root.clone()),
            watched: BTreeSet::new(),
            shm: None,
            fallback_reason: None,
        })
    }

    /// The fallback only: procfs for CPU time, shared memory for inferences.
    pub fn with_procfs(config: &Config) -> Telemetry {
        Telemetry {
            bpf: None,
            procfs: Procfs::new(config.proc_root.clone()),
            watched: BTreeSet::new(),
            shm: None,
            fallback_reason: None,
        }
    }

    /// `Bpf`, or `Procfs` when running on the fallback.
    pub fn source(&self) -> Source {
        if self.bpf.is_some() {
            Source::Bpf
        } else {
            Source::Procfs
        }
    }

    /// Why BPF did not load, when `open` fell back.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Starts counting the on-CPU time of process `pid` (all its threads).
    pub fn watch(&mut self, pid: u32) -> Result<(), Error> {
        if let Some(bpf) = &mut self.bpf {
            bpf.sched.watch(pid)?;
        }
        self.watched.insert(pid);
        Ok(())
    }

    pub fn unwatch(&mut self, pid: u32) {
        if let Some(bpf) = &mut self.bpf {
            bpf.sched.unwatch(pid);
        }
        self.watched.remove(&pid);
    }

    /// Probes the marker functions in `app.binary` and counts app `app.app_id`.
    /// Fails with `MarkerNotFound` naming the binary and symbol when the file
    /// lacks them; on the fallback, with `NeedsBpf`.
    pub fn attach_app(&mut self, app: &AppBinary) -> Result<(), Error> {
        match &mut self.bpf {
            Some(bpf) => bpf.infer.attach(app),
            None => Err(Error::NeedsBpf("probing inference markers")),
        }
    }

    /// Stops counting an app; its probes go when no other app shares them.
    pub fn detach_app(&mut self, app_id: u32) -> bool {
        self.bpf
            .as_mut()
            .is_some_and(|bpf| bpf.infer.detach(app_id))
    }

    pub fn set_shared_memory(&mut self, source: Box<dyn SharedMemoryInferences>) {
        self.shm = Some(source);
    }

    /// Busy time per CPU now, and nothing else: one map read with BPF (`/proc/stat` on the
    /// fallback). What a control loop needs every tick; processes and apps are empty and
    /// the GPU unavailable. [`Telemetry::snapshot`] reads everything.
    pub fn cpu_snapshot(&self) -> Snapshot {
        let at = Nanos::monotonic_now();
        let cpus = match &self.bpf {
            Some(bpf) => bpf.sched.read_cpus(at),
            None => self.procfs.cpus(),
        };
        Snapshot {
            at,
            cpus,
            processes: Vec::new(),
            apps: Vec::new(),
            gpu: GpuActivity::unavailable(),
        }
    }

    /// Reads every counter now.
    pub fn snapshot(&self) -> Snapshot {
        let at = Nanos::monotonic_now();
        let (cpus, mut processes, mut apps, gpu) = match &self.bpf {
            Some(bpf) => {
                let (cpus, processes) = bpf.sched.read(at);
                let apps: Vec<AppInferences> = bpf
                    .infer
                    .attached()
                    .filter_map(|id| bpf.infer.counters(id))
                    .collect();
                let gpu = bpf
                    .gpu
                    .as_ref()
                    .map_or_else(GpuActivity::unavailable, |g| g.read(at));
                (cpus, processes, apps, gpu)
            }
            None => {
                let processes = self
                    .watched
                    .iter()
                    .filter_map(|&pid| self.procfs.process(pid))
                    .collect();
                (
                    self.procfs.cpus(),
                    processes,
                    Vec::new(),
                    GpuActivity::unavailable(),
                )
            }
        };
        if let Some(shm) = &self.shm {
            for (app_id, counters) in shm.inference_counters() {
                if !apps.iter().any(|a| a.app_id == app_id) {
                    apps.push(AppInferences {
                        app_id,
                        counters,
                        dropped_records: 0,
                        source: Source::SharedMemory,
                    });
                }
            }
        }
        processes.sort_by_key(|p| p.pid);
        apps.sort_by_key(|a| a.app_id);
        Snapshot {
            at,
            cpus,
            processes,
            apps,
            gpu,
        }
    }

    /// Moves the finished inferences recorded since the last call into `out`
    /// (BPF only; the fallback has no per-inference records).
    pub fn drain_inferences(&mut self, out: &mut Vec<InferenceRecord>) {
        if let Some(bpf) = &mut self.bpf {
            bpf.infer.drain(out);
        }
    }

    /// Blocks up to `timeout` until an attached app finishes an inference
    /// (BPF only; the fallback just sleeps). True if `drain_inferences` has
    /// records to return.
    pub fn wait_inferences(&mut self, timeout: Duration) -> bool {
        match &mut self.bpf {
            Some(bpf) => bpf.infer.wait(timeout),
            None => {
                std::thread::sleep(timeout);
                false
            }
        }
    }

    /// An epoll fd that becomes readable when an inference finishes, for an
    /// event loop of the agent's own; it changes whenever apps attach or
    /// detach, so fetch it again after either. `None` with no app attached.
    pub fn inference_wait_fd(&self) -> Option<RawFd> {
        self.bpf.as_ref().and_then(|b| b.infer.wait_fd())
    }

    fn programs(&self) -> Vec<(&'static str, BorrowedFd<'_>)> {
        let Some(bpf) = &self.bpf else {
            return Vec::new();
        };
        let mut out: Vec<(&'static str, BorrowedFd<'_>)> = bpf
            .sched
            .program_fds()
            .into_iter()
            .map(|fd| ("sched_switch", fd))
            .collect();
        let infer = bpf.infer.program_fds();
        out.extend(["marker_begin", "marker_end"].into_iter().zip(infer));
        if let Some(gpu) = &bpf.gpu {
            let names = ["gpu_queue", "gpu_run", "gpu_done", "gpu_gk20a_submit"];
            out.extend(names.into_iter().zip(gpu.program_fds()));
        }
        out
    }

    /// Kernel ids of the programs this instance loaded.
    pub fn program_ids(&self) -> Vec<u32> {
        self.programs()
            .into_iter()
            .filter_map(|(_, fd)| stats::program_id(fd))
            .collect()
    }

    /// Run counts and times of each program (non-zero only while a
    /// [`crate::StatsEnabled`] is alive).
    pub fn program_run_stats(&self) -> Vec<(&'static str, ProgramRunStats)> {
        self.programs()
            .into_iter()
            .filter_map(|(name, fd)| Some((name, stats::run_stats(fd)?)))
            .collect()
    }

    /// Whether the BTF-typed sched_switch program is the one loaded.
    pub fn sched_is_btf(&self) -> bool {
        self.bpf.as_ref().is_some_and(|b| b.sched.is_btf())
    }

    /// The procfs root the fallback reads.
    pub fn proc_root(&self) -> &std::path::Path {
        self.procfs.root()
    }
}

fn unsupported(e: Error) -> Error {
    match e {
        Error::Bpf { what, source }
            if matches!(
                source.kind(),
                libbpf_rs::ErrorKind::PermissionDenied | libbpf_rs::ErrorKind::Unsupported
            ) =>
        {
            Error::Unsupported(format!("{what}: {source}"))
        }
        other => other,
    }
}

// SAFETY: the only non-Send parts are libbpf ring-buffer handles (an epoll fd
// and mmaps, usable from any thread) and their callbacks, which capture only an
// `Arc<Mutex<..>>`. Telemetry is used by one thread at a time (`&mut self`).
unsafe impl Send for Telemetry {}
