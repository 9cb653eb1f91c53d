//! Kernel feature probes: ask the kernel's BTF and tracefs whether a tracepoint
//! exists, instead of inferring it from a version number (backports and
//! vendor kernels such as Jetson's make versions unreliable).

use std::path::{Path, PathBuf};

use libbpf_rs::btf::BtfType;
use libbpf_rs::Btf;

/// What is known about one tracepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    /// Neither BTF nor tracefs could tell (e.g. a module tracepoint with tracefs
    /// unmounted); attaching is the only way to find out.
    Unknown,
}

/// Where to look; configurable so tests and unusual layouts can redirect it.
#[derive(Debug, Clone)]
pub struct KernelPaths {
    /// Raw BTF of the running kernel.
    pub vmlinux_btf: PathBuf,
    /// tracefs mount points, in the order to try.
    pub tracefs: Vec<PathBuf>,
}

impl Default for KernelPaths {
    fn default() -> Self {
        KernelPaths {
            vmlinux_btf: PathBuf::from("/sys/kernel/btf/vmlinux"),
            tracefs: vec![
                PathBuf::from("/sys/kernel/tracing"),
                PathBuf::from("/sys/kernel/debug/tracing"),
            ],
        }
    }
}

pub(crate) struct KernelProbe {
    btf: Option<Btf<'static>>,
    tracefs: Option<PathBuf>,
}

impl KernelProbe {
    pub(crate) fn new(paths: &KernelPaths) -> KernelProbe {
        let btf = if paths.vmlinux_btf.exists() {
            match Btf::from_path(&paths.vmlinux_btf) {
                Ok(btf) => Some(btf),
                Err(e) => {
                    log::warn!("{}: unreadable BTF: {e}", paths.vmlinux_btf.display());
                    None
                }
            }
        } else {
            None
        };
        let tracefs = paths
            .tracefs
            .iter()
            .find(|p| p.join("events").is_dir())
            .cloned();
        KernelProbe { btf, tracefs }
    }

    pub(crate) fn has_btf(&self) -> bool {
        self.btf.is_some()
    }

    pub(crate) fn has_tracefs(&self) -> bool {
        self.tracefs.is_some()
    }

    /// Whether the kernel has a BTF-typed (`tp_btf`) tracepoint `name`.
    pub(crate) fn btf_tracepoint(&self, name: &str) -> bool {
        self.btf.as_ref().is_some_and(|btf| {
            btf.type_by_name::<BtfType<'_>>(&format!("btf_trace_{name}"))
                .is_some()
        })
    }

    /// Whether tracepoint `category:name` exists, from BTF or tracefs.
    pub(crate) fn tracepoint(&self, category: &str, name: &str) -> Presence {
        if self.btf_tracepoint(name) {
            return Presence::Present;
        }
        match &self.tracefs {
            Some(root) => tracefs_presence(root, category, name),
            None => Presence::Unknown,
        }
    }
}

fn tracefs_presence(root: &Path, category: &str, name: &str) -> Presence {
    if root.join("events").join(category).join(name).is_dir() {
        Presence::Present
    } else {
        Presence::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracefs_presence_follows_the_events_tree() {
        let dir = std::env::temp_dir().join(format!("dnngov-bpf-probe-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("events/gpu_scheduler/drm_run_job")).unwrap();
        assert_eq!(
            tracefs_presence(&dir, "gpu_scheduler", "drm_run_job"),
            Presence::Present
        );
        assert_eq!(
            tracefs_presence(&dir, "gpu_scheduler", "drm_sched_job_run"),
            Presence::Absent
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_btf_knows_sched_switch_and_not_a_made_up_event() {
        let paths = KernelPaths::default();
        if !paths.vmlinux_btf.exists() {
            eprintln!("skipping: {} absent", paths.vmlinux_btf.display());
            return;
        }
        let probe = KernelProbe::new(&paths);
        assert!(probe.has_btf());
        assert!(probe.btf_tracepoint("sched_switch"));
        assert!(!probe.btf_tracepoint("dnngov_no_such_event"));
        assert_eq!(probe.tracepoint("sched", "sched_switch"), Presence::Present);
    }

    #[test]
    fn missing_btf_and_tracefs_leave_module_tracepoints_unknown() {
        let probe = KernelProbe::new(&KernelPaths {
            vmlinux_btf: PathBuf::from("/nonexistent/vmlinux"),
            tracefs: vec![PathBuf::from("/nonexistent/tracing")],
        });
        assert!(!probe.has_btf());
        assert_eq!(
            probe.tracepoint("gk20a", "gk20a_channel_submit_gpfifo"),
            Presence::Unknown
        );
    }
}
