//! Frequency domains: the things the governor sets one frequency for (a cpufreq policy, a
//! devfreq device, the Jetson EMC), how each is driven, and which files that touches. The
//! plan turns a discovered platform into domains, and says plainly when nothing can be
//! governed and why.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::cpufreq::{self, Frequencies};
use super::cpulist::CpuList;
use super::devfreq;
use super::emc;
use super::thermal::CoolingTarget;
use super::units::{FreqUnit, Hz};
use super::Platform;

/// Names a domain in decisions, the state file and messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DomainId {
    /// cpufreq `policyN`.
    Cpu(u32),
    /// A devfreq device by its directory name.
    Devfreq(String),
    /// The Jetson memory clock.
    Emc,
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainId::Cpu(n) => write!(f, "cpufreq policy{n}"),
            DomainId::Devfreq(name) => write!(f, "devfreq {name}"),
            DomainId::Emc => f.write_str("EMC"),
        }
    }
}

/// How a domain's frequency is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mechanism {
    /// The `userspace` governor and its speed file.
    Userspace,
    /// The current governor stays; min and max are both set to the frequency.
    Pin,
    /// bpmp debugfs: lock the clock, then write its rate.
    EmcLock,
}

/// The files of one domain, relative to its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    pub governor: Option<&'static str>,
    pub min: Option<&'static str>,
    pub max: Option<&'static str>,
    /// `scaling_setspeed`, `userspace/set_freq` or the EMC `rate`.
    pub speed: &'static str,
    /// EMC `mrq_rate_locked`.
    pub lock: Option<&'static str>,
    /// The frequency the hardware runs at now (`scaling_cur_freq`, `cur_freq`, `rate`).
    pub current: &'static str,
    pub unit: FreqUnit,
}

pub const CPUFREQ_KNOBS: Knobs = Knobs {
    governor: Some(cpufreq::GOVERNOR),
    min: Some(cpufreq::MIN),
    max: Some(cpufreq::MAX),
    speed: cpufreq::SETSPEED,
    lock: None,
    current: cpufreq::CURRENT,
    unit: cpufreq::UNIT,
};

pub const DEVFREQ_KNOBS: Knobs = Knobs {
    governor: Some(devfreq::GOVERNOR),
    min: Some(devfreq::MIN),
    max: Some(devfreq::MAX),
    speed: devfreq::SET_FREQ,
    lock: None,
    current: devfreq::CURRENT,
    unit: devfreq::UNIT,
};

pub const EMC_KNOBS: Knobs = Knobs {
    governor: None,
    min: None,
    max: Some(emc::MAX_RATE),
    speed: emc::RATE,
    lock: Some(emc::LOCK),
    current: emc::RATE,
    unit: emc::UNIT,
};

/// One governable domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: DomainId,
    /// Root-relative directory holding its files.
    pub dir: PathBuf,
    pub mechanism: Mechanism,
    pub knobs: Knobs,
    pub frequencies: Frequencies,
    /// CPUs of a cpufreq policy.
    pub cpus: Option<CpuList>,
    /// The maximum in force when the domain was discovered: what nvpmodel, an operator or a
    /// power cap allowed. Pinning writes max itself, so this is remembered rather than re-read.
    pub max_at_discovery: Hz,
    /// `cur_state` files of the cooling devices throttling this domain.
    pub cooling_states: Vec<PathBuf>,
}

impl Domain {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The frequency the hardware reports now.
    pub fn read_current(&self, sysfs: &super::Sysfs) -> Result<Hz, super::SysfsError> {
        sysfs.read_freq(self.file(self.knobs.current), self.knobs.unit)
    }
}

/// A part of the machine that will not be governed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub what: String,
    pub why: String,
}

/// The domains to govern and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub domains: Vec<Domain>,
    pub unavailable: Vec<Unavailable>,
}

/// Nothing on this machine can be governed. One message, every reason, grouped so that
/// eight identical policies give one line and not eight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot govern this machine, because {}", summarise(.reasons))]
pub struct CannotGovern {
    pub reasons: Vec<Unavailable>,
}

/// Groups reasons by their text: `cpufreq policy0, policy1: <why>; devfreq x: <why>`.
pub fn summarise(reasons: &[Unavailable]) -> String {
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in reasons {
        let entry = by_reason.entry(r.why.as_str()).or_default();
        if entry.is_empty() {
            order.push(r.why.as_str());
        }
        entry.push(r.what.as_str());
    }
    order
        .iter()
        .map(|why| format!("{}: {}", by_reason[why].join(", "), why))
        .collect::<Vec<_>>()
        .join("; ")
}

pub const NO_CPUFREQ: &str = "the kernel exposes no cpufreq policy (no CPU frequency scaling \
driver is loaded, as in most virtual machines), so CPU frequencies cannot be set";

pub const INTEL_PSTATE_ACTIVE: &str = "the scaling driver is intel_pstate in active mode, \
which picks P-states itself and offers neither a frequency table nor the userspace governor; \
boot with intel_pstate=passive (or write passive to /sys/devices/system/cpu/intel_pstate/status) \
to let dnngov set CPU frequencies";

/// Decides the domains of a discovered platform.
pub fn plan(platform: &Platform) -> Result<Plan, CannotGovern> {
    let mut domains = Vec::new();
    let mut unavailable = platform.problems.clone();

    if platform.cpufreq.is_empty() && !platform.cpufreq_present {
        unavailable.push(Unavailable {
            what: "CPUs".into(),
            why: NO_CPUFREQ.into(),
        });
    }
    for (index, policy) in platform.cpufreq.iter().enumerate() {
        let what = format!("cpufreq policy{}", policy.id);
        let why = if policy.is_intel_pstate_active() {
            Some(INTEL_PSTATE_ACTIVE.to_string())
        } else if policy.affected_cpus.is_empty() {
            Some("all its CPUs are offline".to_string())
        } else if policy.frequencies.lowest() == policy.frequencies.highest() {
            Some("it runs at a single frequency".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            unavailable.push(Unavailable { what, why });
            continue;
        }
        let mechanism = if policy.has_governor("userspace") {
            Mechanism::Userspace
        } else {
            Mechanism::Pin
        };
        let cooling_states = platform
            .cooling
            .iter()
            .filter(|c| match &c.target {
                CoolingTarget::Cpu(cpu) => policy.related_cpus.contains(*cpu),
                CoolingTarget::CpufreqIndex(k) => *k as usize == index,
                _ => false,
            })
            .map(|c| c.cur_state_file())
            .collect();
        domains.push(Domain {
            id: DomainId::Cpu(policy.id),
            dir: policy.dir.clone(),
            mechanism,
            knobs: CPUFREQ_KNOBS,
            frequencies: policy.frequencies.clone(),
            cpus: Some(policy.related_cpus.clone()),
            max_at_discovery: policy.scaling_max,
            cooling_states,
        });
    }
    for device in &platform.devfreq {
        let Some(frequencies) = device.frequencies.clone() else {
            unavailable.push(Unavailable {
                what: format!("devfreq {}", device.name),
                why: "it lists no available frequencies".into(),
            });
            continue;
        };
        let mechanism = if device.has_governor("userspace") {
            Mechanism::Userspace
        } else {
            Mechanism::Pin
        };
        let cooling_states = platform
            .cooling
            .iter()
            .filter(|c| c.target == CoolingTarget::Devfreq(device.name.clone()))
            .map(|c| c.cur_state_file())
            .collect();
        domains.push(Domain {
            id: DomainId::Devfreq(device.name.clone()),
            dir: device.dir.clone(),
            mechanism,
            knobs: DEVFREQ_KNOBS,
            frequencies,
            cpus: None,
            max_at_discovery: device.max,
            cooling_states,
        });
    }
    if let Some(emc) = &platform.emc {
        domains.push(Domain {
            id: DomainId::Emc,
            dir: emc.dir.clone(),
            mechanism: Mechanism::EmcLock,
            knobs: EMC_KNOBS,
            frequencies: Frequencies::Range {
                min: emc.min_rate,
                max: emc.max_rate,
            },
            cpus: None,
            max_at_discovery: emc.max_rate,
            cooling_states: Vec::new(),
        });
    }
    if domains.is_empty() {
        return Err(CannotGovern {
            reasons: unavailable,
        });
    }
    Ok(Plan {
        domains,
        unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_reasons_are_reported_once() {
        let reasons: Vec<Unavailable> = (0..8)
            .map(|i| Unavailable {
                what: format!("cpufreq policy{i}"),
                why: "same".into(),
            })
            .chain([Unavailable {
                what: "devfreq x".into(),
                why: "other".into(),
            }])
            .collect();
        let text = CannotGovern { reasons }.to_string();
        assert_eq!(text.matches("same").count(), 1);
        assert!(text.starts_with("cannot govern this machine, because cpufreq policy0, "));
        assert!(text.ends_with("devfreq x: other"));
    }
}
