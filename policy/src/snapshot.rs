//! The input of a decision: what the agent (or the simulator) observed at one control tick.
//! Counters are cumulative, as the kernel reports them; the [`crate::Manager`] keeps the
//! previous snapshot's values and works on deltas.

use serde::{Deserialize, Serialize};

use crate::units::{Hz, Nanos, Watts};

/// What a frequency domain clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DomainKind {
    /// A cpufreq policy: one or more CPUs sharing a clock.
    Cpu,
    /// A GPU devfreq device.
    Gpu,
    /// The memory controller clock (EMC on Jetson).
    Memory,
}

/// One frequency domain and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreqDomain {
    /// Stable id chosen by the caller (cpufreq policy number, or any unique number).
    pub id: u32,
    pub kind: DomainKind,
    /// Available frequencies, strictly ascending, not empty.
    pub table: Vec<Hz>,
    /// The frequency the domain runs at now.
    pub cur: Hz,
    /// The highest frequency someone else allows (cpufreq `scaling_max_freq` as lowered by
    /// thermal or power capping). Decisions never exceed it.
    pub max_limit: Hz,
    /// CPUs of a CPU domain; empty for other kinds.
    pub cpus: Vec<u32>,
    /// Cumulative busy time of a non-CPU device (GPU, memory controller), if it is known.
    pub busy: Option<Nanos>,
}

impl FreqDomain {
    pub fn max_freq(&self) -> Hz {
        self.table.last().copied().unwrap_or(self.cur)
    }

    pub fn min_freq(&self) -> Hz {
        self.table.first().copied().unwrap_or(self.cur)
    }
}

/// One CPU's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSample {
    pub cpu: u32,
    pub online: bool,
    /// Cumulative time this CPU was not idle.
    pub busy: Nanos,
}

/// One entry of an app's sub-network library.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubNetwork {
    /// Top-1 accuracy, in percent.
    pub accuracy: f64,
    /// Latency measured by the app at full clocks, when it declares one.
    pub latency_full: Option<Nanos>,
    /// Cost relative to the other entries (FLOPs, say), when declared.
    pub relative_cost: Option<f64>,
}

/// The devices an app's inference runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    pub cpu: bool,
    pub gpu: bool,
}

/// What an app asks for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Latency target of one inference.
    pub deadline: Nanos,
    /// Time between frames when the app is periodic; when absent the app is assumed to run
    /// back to back, one inference per deadline.
    pub period: Option<Nanos>,
    /// Lowest acceptable accuracy, in percent.
    pub accuracy_floor: f64,
    /// Higher is more important; decides who is degraded first.
    pub priority: u8,
}

/// One finished inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inference {
    pub end: Nanos,
    pub latency: Nanos,
    /// The sub-network (index in the app's library) that ran.
    pub subnet: u32,
}

/// A registered app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    pub id: u32,
    /// Ordered from the cheapest, least accurate (index 0) to the most accurate. A sub-network
    /// id is its index here.
    pub library: Vec<SubNetwork>,
    pub targets: Targets,
    pub devices: Devices,
    /// Ids of the CPU domains its threads run on; empty means every CPU domain.
    pub cpu_domains: Vec<u32>,
    /// Inferences finished since the previous snapshot, oldest first.
    pub finished: Vec<Inference>,
    /// When the inference in flight began (the app's begin mark, on the snapshot's clock),
    /// if one is. An inference that runs well past its prediction is seen here before it
    /// ends, so the clocks can be raised while it still has work to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Nanos>,
}

/// A thermal (or administrator) cap on one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCap {
    pub domain: u32,
    pub max: Hz,
}

/// Limits the decision must respect.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Caps {
    /// Board power budget.
    pub power: Option<Watts>,
    /// Per-domain frequency caps, e.g. from a thermal zone.
    pub thermal: Vec<DomainCap>,
}

/// Everything the policy sees at one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic time of the observation.
    pub now: Nanos,
    pub domains: Vec<FreqDomain>,
    pub cpus: Vec<CpuSample>,
    pub apps: Vec<AppState>,
    /// Board power averaged since the previous snapshot, when a sensor exists.
    pub power: Option<Watts>,
    pub caps: Caps,
}

impl Snapshot {
    /// The highest table frequency a domain may be set to under its limit and caps. A cap
    /// below the lowest table entry cannot be honoured by any setting, so the lowest entry
    /// is returned.
    pub fn allowed_max(&self, domain: &FreqDomain) -> Hz {
        let mut cap = domain.max_limit;
        for c in self.caps.thermal.iter().filter(|c| c.domain == domain.id) {
            cap = cap.min(c.max);
        }
        domain
            .table
            .iter()
            .rev()
            .find(|f| **f <= cap)
            .copied()
            .unwrap_or_else(|| domain.min_freq())
    }

    /// Number of online CPUs in a domain.
    pub fn online_cpus(&self, domain: &FreqDomain) -> usize {
        domain
            .cpus
            .iter()
            .filter(|c| self.cpus.iter().any(|s| s.cpu == **c && s.online))
            .count()
    }
}

/// Lowest table frequency at or above `target`, or the highest entry when none is.
/// This is cpufreq's `CPUFREQ_RELATION_L`.
pub fn resolve_at_least(table: &[Hz], target: Hz) -> Hz {
    table
        .iter()
        .find(|f| **f >= target)
        .or(table.last())
        .copied()
        .unwrap_or(target)
}

/// Highest table frequency at or below `target`, or the lowest entry when none is
/// (`CPUFREQ_RELATION_H`).
pub fn resolve_at_most(table: &[Hz], target: Hz) -> Hz {
    table
        .iter()
        .rev()
        .find(|f| **f <= target)
        .or(table.first())
        .copied()
        .unwrap_or(target)
}

/// Closest table frequency to `target` (`CPUFREQ_RELATION_C`), the lower one on a tie.
pub fn resolve_closest(table: &[Hz], target: Hz) -> Hz {
    let mut best = match table.first() {
        Some(f) => *f,
        None => return target,
    };
    for f in table {
        if f.0.abs_diff(target.0) < best.0.abs_diff(target.0) {
            best = *f;
        }
    }
    best
}
