//! The platform layer: what the machine offers (discovery), setting frequencies
//! (actuation), leaving the machine as it was found (takeover and restore), and measuring
//! power. Every path hangs from a configurable root ([`Sysfs`]), so the same code runs
//! against `/` on a board and against a fixture tree ([`fixture`]) in tests.
//!
//! A daemon's sequence: [`Platform::discover`], [`Platform::plan`] (or the "cannot govern"
//! message), [`Takeover::begin`], [`Takeover::apply`] every decision, drop the takeover (or
//! call [`restore`] after a crash).

pub mod actuate;
pub mod cpufreq;
pub mod cpulist;
pub mod devfreq;
pub mod domain;
pub mod emc;
pub mod fixture;
pub mod power;
pub mod state;
pub mod sysfs;
pub mod thermal;
pub mod units;

use std::path::PathBuf;

pub use actuate::{Actuator, ApplyReport, Decision, DomainError};
pub use cpufreq::{CpufreqPolicy, Frequencies};
pub use cpulist::CpuList;
pub use devfreq::DevfreqDevice;
pub use domain::{CannotGovern, Domain, DomainId, Mechanism, Plan, Unavailable};
pub use emc::Emc;
pub use power::{EnergyMeter, PowerReading, PowerSensor, SensorKind};
pub use state::{restore, RestoreReport, SavedState, Takeover, DEFAULT_STATE_FILE};
pub use sysfs::{Sysfs, SysfsError, WriteFailure};
pub use thermal::{CoolingDevice, ThermalZone};
pub use units::{Hz, Joules, Nanos, Watts};

/// Everything discovered under one root.
#[derive(Debug, Clone)]
pub struct Platform {
    pub sysfs: Sysfs,
    /// `None` when the kernel does not say (no `sys/devices/system/cpu/online`).
    pub online_cpus: Option<CpuList>,
    pub cpufreq: Vec<CpufreqPolicy>,
    /// Whether any `policyN` directory exists, readable or not.
    pub cpufreq_present: bool,
    pub devfreq: Vec<DevfreqDevice>,
    /// Jetson GPU load (per mille), root-relative.
    pub gpu_load: Option<PathBuf>,
    pub emc: Option<Emc>,
    pub thermal_zones: Vec<ThermalZone>,
    pub cooling: Vec<CoolingDevice>,
    /// The best power sensor found; `None` means power must be estimated.
    pub power: Option<PowerSensor>,
    /// Parts that exist but could not be read.
    pub problems: Vec<Unavailable>,
}

impl Platform {
    /// Reads everything once. A part that cannot be read is listed in `problems` rather than
    /// failing the rest.
    pub fn discover(sysfs: Sysfs) -> Platform {
        let mut problems = Vec::new();
        let mut note = |what: &str, e: &SysfsError| {
            problems.push(Unavailable {
                what: what.to_string(),
                why: format!("cannot be read: {e}"),
            })
        };
        let online_cpus = cpufreq::online_cpus(&sysfs).unwrap_or_else(|e| {
            note("online CPU list", &e);
            None
        });
        let policy_results = cpufreq::discover(&sysfs);
        let cpufreq_present = !policy_results.is_empty();
        let mut policies = Vec::new();
        for result in policy_results {
            match result {
                Ok(p) => policies.push(p),
                Err(e) => note("a cpufreq policy", &e),
            }
        }
        let mut devices = Vec::new();
        for result in devfreq::discover(&sysfs) {
            match result {
                Ok(d) => devices.push(d),
                Err(e) => note("a devfreq device", &e),
            }
        }
        let emc = emc::discover(&sysfs).unwrap_or_else(|e| {
            note("EMC", &e);
            None
        });
        // Found but not ours to write (dnngovd running as its own user): left alone, and
        // said once, in the log and in the status.
        let emc_blocked = emc.as_ref().and_then(|e| emc::not_writable(&sysfs, e));
        let emc = emc.filter(|_| emc_blocked.is_none());
        let (thermal_zones, cooling) = thermal::discover(&sysfs).unwrap_or_else(|e| {
            note("thermal", &e);
            (Vec::new(), Vec::new())
        });
        if let Some(why) = emc_blocked {
            problems.push(Unavailable {
                what: "the EMC (memory) clock".into(),
                why,
            });
        }
        Platform {
            online_cpus,
            cpufreq: policies,
            cpufreq_present,
            devfreq: devices,
            gpu_load: devfreq::gpu_load_file(&sysfs),
            emc,
            thermal_zones,
            cooling,
            power: power::discover(&sysfs),
            problems,
            sysfs,
        }
    }

    /// The domains to govern, or why none can be.
    pub fn plan(&self) -> Result<Plan, CannotGovern> {
        domain::plan(self)
    }
}
