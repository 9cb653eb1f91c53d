//! eBPF telemetry for dnngovd: busy time of every CPU, on-CPU time of the
//! processes the agent watches, every inference's begin/end/deadline from
//! uprobes on the client's markers, and GPU activity where scheduler
//! tracepoints exist; with a procfs / shared-memory fallback behind the same
//! API. Each figure says which [`Source`] it came from.
//!
//! ```no_run
//! use dnngov_bpf::{AppBinary, Config, Telemetry};
//! let mut telemetry = Telemetry::open(&Config::default());
//! telemetry.watch(1234)?;
//! telemetry.attach_app(&AppBinary {
//!     app_id: 1,
//!     binary: "/usr/lib/libdnngov_client.so".into(),
//!     pid: Some(1234),
//! })?;
//! let snapshot = telemetry.snapshot();
//! let mut records = Vec::new();
//! telemetry.drain_inferences(&mut records);
//! telemetry.detach_app(1);
//! # Ok::<(), dnngov_bpf::Error>(())
//! ```

mod elf;
mod error;
mod gpu;
mod inference;
mod libbpf_logger;
mod owned;
mod probe;
mod procfs;
mod scheduler;
mod snapshot;
mod source;
mod stats;
mod telemetry;

#[allow(clippy::all, clippy::pedantic)]
mod gpu_skel;
#[allow(clippy::all, clippy::pedantic)]
mod infer_skel;
#[allow(clippy::all, clippy::pedantic)]
mod sched_classic_skel;
#[allow(clippy::all, clippy::pedantic)]
mod sched_skel;

pub use elf::defines_symbol;
pub use error::Error;
pub use inference::{AppBinary, MARKER_BEGIN, MARKER_END};
pub use probe::KernelPaths;
pub use scheduler::SchedVariant;
pub use snapshot::{
    AppInferences, CpuBusy, GpuActivity, GpuProcess, InferenceCounters, InferenceRecord,
    ProcessCpu, Snapshot,
};
pub use source::{Nanos, Source};
pub use stats::{loaded_program_ids, ProgramRunStats, StatsEnabled};
pub use telemetry::{Config, SharedMemoryInferences, Telemetry};

/// Each CPU's busy time from `<proc_root>/stat` (tick resolution), without loading
/// anything: for tools that only need utilisation.
pub fn procfs_cpu_busy(proc_root: &std::path::Path) -> Vec<CpuBusy> {
    procfs::Procfs::new(proc_root.to_path_buf()).cpus()
}
