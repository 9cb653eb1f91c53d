//! The governors compared: thin adapters from the engine's [`Strategy`] to the policy
//! crate's base governors and [`Manager`], plus the Dynamic-OFA demo's sub-network rule and
//! a fixed schedule (the oracle's). Every frequency decision comes from `dnngov-policy`;
//! only the sub-network-only baseline's switching rule lives here, as published.

use dnngov_policy::snapshot::resolve_at_least;
use dnngov_policy::{
    BaseGovernor, Config, DomainKind, GovernorConfig, GovernorKind, Hz, Manager, Snapshot,
};

use crate::engine::{Control, Strategy};
use crate::platform::Platform;
use crate::scenario::Scenario;

/// Which governor to run, by the name the CLI and the report use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Kernel(GovernorKind),
    SubnetOnly,
    DvfsOnly,
    Dnngov,
}

impl Which {
    pub const ALL: [Which; 8] = [
        Which::Kernel(GovernorKind::Schedutil),
        Which::Kernel(GovernorKind::Ondemand),
        Which::Kernel(GovernorKind::Conservative),
        Which::Kernel(GovernorKind::Performance),
        Which::Kernel(GovernorKind::Powersave),
        Which::SubnetOnly,
        Which::DvfsOnly,
        Which::Dnngov,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Which::Kernel(GovernorKind::Schedutil) => "schedutil",
            Which::Kernel(GovernorKind::Ondemand) => "ondemand",
            Which::Kernel(GovernorKind::Conservative) => "conservative",
            Which::Kernel(GovernorKind::Performance) => "performance",
            Which::Kernel(GovernorKind::Powersave) => "powersave",
            Which::SubnetOnly => "subnet-only",
            Which::DvfsOnly => "dvfs-only",
            Which::Dnngov => "dnngov",
        }
    }

    pub fn build(self, scn: &Scenario, plat: &Platform) -> anyhow::Result<Box<dyn Strategy>> {
        let statics = scn
            .apps
            .iter()
            .map(|a| a.static_subnet().map(|s| s as u32))
            .collect::<anyhow::Result<Vec<u32>>>()?;
        Ok(match self {
            Which::Kernel(kind) => Box::new(Kernel::new(kind, statics)),
            Which::SubnetOnly => Box::new(SubnetOnly::new(statics)),
            Which::DvfsOnly => Box::new(DvfsOnly {
                manager: Manager::new(manager_config(plat)),
                statics,
            }),
            Which::Dnngov => Box::new(Dnngov::new(manager_config(plat))),
        })
    }
}

/// The configuration the agent would run with on this board: defaults, seeded with the
/// platform file's power figures.
pub fn manager_config(plat: &Platform) -> Config {
    Config {
        platform: plat.declared_power(),
        ..Config::default()
    }
}

/// The base governor's choice on CPU and GPU domains. The memory clock is not a cpufreq or
/// devfreq device on a Jetson: the stock board raises it with the GPU clock (the GPU
/// driver's bandwidth request), so it follows the chosen GPU frequency proportionally,
/// rounded up. An assumption standing for the stock EMC scaling, not its algorithm.
fn base_control(
    snap: &Snapshot,
    choices: &[dnngov_policy::governor::BaseChoice],
) -> Vec<(u32, Hz)> {
    let mut freqs: Vec<(u32, Hz)> = choices.iter().map(|c| (c.domain, c.freq)).collect();
    let gpu = snap.domains.iter().find(|d| d.kind == DomainKind::Gpu);
    let gpu_speed = gpu.and_then(|g| {
        let f = freqs.iter().find(|x| x.0 == g.id)?.1;
        Some(f.as_f64() / g.max_freq().as_f64())
    });
    for d in snap.domains.iter().filter(|d| d.kind == DomainKind::Memory) {
        let Some(speed) = gpu_speed else { continue };
        let target = Hz((d.max_freq().as_f64() * speed).ceil() as u64);
        let f = resolve_at_least(&d.table, target);
        if let Some(x) = freqs.iter_mut().find(|x| x.0 == d.id) {
            x.1 = f;
        }
    }
    freqs
}

fn static_subnets(snap: &Snapshot, statics: &[u32]) -> Vec<(u32, u32)> {
    snap.apps
        .iter()
        .map(|a| (a.id, statics.get(a.id as usize).copied().unwrap_or(0)))
        .collect()
}

/// A kernel governor (the policy crate's implementation of its formula) on every domain,
/// each app on its static deployment.
pub struct Kernel {
    kind: GovernorKind,
    base: BaseGovernor,
    statics: Vec<u32>,
}

impl Kernel {
    pub fn new(kind: GovernorKind, statics: Vec<u32>) -> Kernel {
        Kernel {
            kind,
            base: BaseGovernor::new(GovernorConfig {
                kind,
                ..GovernorConfig::default()
            }),
            statics,
        }
    }
}

impl Strategy for Kernel {
    fn name(&self) -> String {
        Which::Kernel(self.kind).name().into()
    }

    fn decide(&mut self, snap: &Snapshot) -> Control {
        Control {
            freqs: base_control(snap, &self.base.update(snap)),
            subnets: static_subnets(snap, &self.statics),
            plan: None,
        }
    }
}

/// Frames between two decisions of the Dynamic-OFA runtime demo (FACTS §1).
const DOFA_WINDOW: usize = 20;

/// The Dynamic-OFA demo's rule on top of schedutil: every 20 frames, step down a level if
/// the moving-average latency is above the target, else step up if accuracy is below the
/// floor. It starts from the static deployment (the demo starts at level 4, which is the
/// static deployment of its own 60 ms target).
pub struct SubnetOnly {
    base: BaseGovernor,
    levels: Vec<u32>,
    recent: Vec<Vec<f64>>,
}

impl SubnetOnly {
    pub fn new(statics: Vec<u32>) -> SubnetOnly {
        SubnetOnly {
            base: BaseGovernor::new(GovernorConfig::default()),
            recent: vec![Vec::new(); statics.len()],
            levels: statics,
        }
    }
}

impl Strategy for SubnetOnly {
    fn name(&self) -> String {
        Which::SubnetOnly.name().into()
    }

    fn decide(&mut self, snap: &Snapshot) -> Control {
        let mut subnets = Vec::new();
        for a in &snap.apps {
            let i = a.id as usize;
            if i >= self.levels.len() {
                continue;
            }
            for inf in &a.finished {
                self.recent[i].push(inf.latency.as_millis_f64());
                if self.recent[i].len() == DOFA_WINDOW {
                    let avg = self.recent[i].iter().sum::<f64>() / DOFA_WINDOW as f64;
                    self.recent[i].clear();
                    let level = self.levels[i] as usize;
                    let top = a.library.len().saturating_sub(1);
                    if avg > a.targets.deadline.as_millis_f64() {
                        self.levels[i] = level.saturating_sub(1) as u32;
                    } else if a.library[level.min(top)].accuracy < a.targets.accuracy_floor {
                        self.levels[i] = (level + 1).min(top) as u32;
                    }
                }
            }
            subnets.push((a.id, self.levels[i]));
        }
        Control {
            freqs: base_control(snap, &self.base.update(snap)),
            subnets,
            plan: None,
        }
    }
}

/// dnngov with the sub-network fixed to the static deployment. The policy `Manager` has no
/// switch to pin a sub-network, so the app is registered with a one-entry library (its
/// static sub-network) and the decision's index 0 is mapped back.
pub struct DvfsOnly {
    manager: Manager,
    statics: Vec<u32>,
}

impl Strategy for DvfsOnly {
    fn name(&self) -> String {
        Which::DvfsOnly.name().into()
    }

    fn decide(&mut self, snap: &Snapshot) -> Control {
        let mut pinned = snap.clone();
        for a in &mut pinned.apps {
            let s = self.statics.get(a.id as usize).copied().unwrap_or(0) as usize;
            let entry = a.library[s.min(a.library.len() - 1)].clone();
            // A floor above the pinned entry would leave the app unserved, which is not
            // what pinning means.
            a.targets.accuracy_floor = a.targets.accuracy_floor.min(entry.accuracy);
            a.library = vec![entry];
            for f in &mut a.finished {
                f.subnet = 0;
            }
        }
        let d = self.manager.step(&pinned);
        Control {
            freqs: d.domains.iter().map(|x| (x.domain, x.freq)).collect(),
            subnets: static_subnets(snap, &self.statics),
            plan: d.trigger,
        }
    }
}

/// The joint policy, as the agent runs it.
pub struct Dnngov {
    manager: Manager,
}

impl Dnngov {
    /// The policy with a configuration of the caller's (`Which::Dnngov` uses the board's,
    /// [`manager_config`]).
    pub fn new(cfg: Config) -> Dnngov {
        Dnngov {
            manager: Manager::new(cfg),
        }
    }
}

impl Strategy for Dnngov {
    fn name(&self) -> String {
        Which::Dnngov.name().into()
    }

    fn decide(&mut self, snap: &Snapshot) -> Control {
        let d = self.manager.step(snap);
        Control {
            freqs: d.domains.iter().map(|x| (x.domain, x.freq)).collect(),
            subnets: d.apps.iter().map(|x| (x.app, x.subnet)).collect(),
            plan: d.trigger,
        }
    }
}

/// A configuration fixed per phase: `(start in ms, control)`, starts ascending.
pub struct Fixed {
    pub name: String,
    pub schedule: Vec<(f64, Control)>,
}

impl Strategy for Fixed {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn decide(&mut self, snap: &Snapshot) -> Control {
        let now = snap.now.as_millis_f64();
        self.schedule
            .iter()
            .rev()
            .find(|(start, _)| *start <= now + 1e-6)
            .or(self.schedule.first())
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnngov_policy::{AppState, Caps, Devices, Inference, Nanos, SubNetwork, Targets};

    fn snap(latency_ms: f64, frames: usize, floor: f64) -> Snapshot {
        Snapshot {
            now: Nanos::from_millis(1000),
            domains: Vec::new(),
            cpus: Vec::new(),
            apps: vec![AppState {
                id: 0,
                library: crate::scenario::DYNAMIC_OFA_6
                    .iter()
                    .map(|(a, l)| SubNetwork {
                        accuracy: *a,
                        latency_full: Some(Nanos::from_millis_f64(*l)),
                        relative_cost: None,
                    })
                    .collect(),
                targets: Targets {
                    deadline: Nanos::from_millis(60),
                    period: None,
                    accuracy_floor: floor,
                    priority: 0,
                },
                devices: Devices {
                    cpu: true,
                    gpu: true,
                },
                cpu_domains: Vec::new(),
                finished: (0..frames)
                    .map(|i| Inference {
                        end: Nanos::from_millis(i as u64),
                        latency: Nanos::from_millis_f64(latency_ms),
                        subnet: 4,
                    })
                    .collect(),
                running_since: None,
            }],
            power: None,
            caps: Caps::default(),
        }
    }

    #[test]
    fn subnet_only_steps_down_after_twenty_slow_frames() {
        let mut g = SubnetOnly::new(vec![4]);
        assert_eq!(g.decide(&snap(70.0, 19, 76.0)).subnets, vec![(0, 4)]);
        assert_eq!(g.decide(&snap(70.0, 1, 76.0)).subnets, vec![(0, 3)]);
    }

    #[test]
    fn subnet_only_steps_up_when_below_the_floor_and_fast_enough() {
        let mut g = SubnetOnly::new(vec![1]);
        // Level 1 is 74.97 %, below a 76 % floor; latency is within target.
        assert_eq!(g.decide(&snap(50.0, 20, 76.0)).subnets, vec![(0, 2)]);
        // At or above the floor it stays.
        assert_eq!(g.decide(&snap(50.0, 20, 76.0)).subnets, vec![(0, 2)]);
    }
}
