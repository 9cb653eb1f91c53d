//! Scenario files (`sim/scenarios/*.toml`): which platform, which apps with which
//! sub-network libraries and targets, what background load, and what changes when. They are
//! data: the engine runs any file a user writes, and rejects keys it does not know, naming
//! them, so a typo is not silently ignored.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Dynamic-OFA six-level library (`nets_6`): (top-1 %, latency ms at full clocks), FACTS §1.
pub const DYNAMIC_OFA_6: [(f64, f64); 6] = [
    (74.20, 41.16),
    (74.97, 45.42),
    (76.13, 49.44),
    (77.54, 51.08),
    (78.35, 56.75),
    (79.03, 61.73),
];

/// Dynamic-OFA seven-level library (`nets_7`), FACTS §1.
pub const DYNAMIC_OFA_7: [(f64, f64); 7] = [
    (73.18, 37.53),
    (74.54, 41.49),
    (75.23, 45.36),
    (76.39, 47.32),
    (77.03, 48.14),
    (77.75, 51.32),
    (78.05, 59.10),
];

/// A built-in sub-network library by name: (accuracy, latency ms at full clocks).
pub fn builtin_library(name: &str) -> Option<Vec<(f64, f64)>> {
    match name {
        "dynamic-ofa-6" => Some(DYNAMIC_OFA_6.to_vec()),
        "dynamic-ofa-7" => Some(DYNAMIC_OFA_7.to_vec()),
        _ => None,
    }
}

/// How an inference's latency at full clocks splits over the devices. Each part scales
/// with its own clock's `f_max / f`; `fixed` (driver, launch, copies) does not scale.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub gpu: f64,
    pub cpu: f64,
    pub mem: f64,
    pub fixed: f64,
}

impl Default for Split {
    /// Assumption, not measured: a GPU-bound CNN on a Jetson spends most of its time in
    /// GPU kernels, a memory-bound share in them, a little in CPU pre/post-processing.
    /// Deliberately not the policy's own seed split, so the policy has to learn it.
    fn default() -> Self {
        Split {
            gpu: 0.70,
            cpu: 0.10,
            mem: 0.15,
            fixed: 0.05,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    /// A built-in library: `dynamic-ofa-6` or `dynamic-ofa-7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Or an inline one: `[[top-1 %, latency ms at full clocks], ...]`, cheapest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<(f64, f64)>>,
    pub fps: f64,
    pub deadline_ms: f64,
    pub accuracy_floor: f64,
    #[serde(default)]
    pub priority: u8,
    #[serde(default)]
    pub start_s: f64,
    /// When the app leaves (unregisters): no frame arrives from then on, and the one in
    /// flight is abandoned. Absent: it stays to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_s: Option<f64>,
    #[serde(default)]
    pub split: Split,
    /// Extra time of the first inference after a sub-network switch.
    #[serde(default)]
    pub switch_cost_ms: f64,
    /// Frames waiting beyond this are dropped (and count as missed).
    #[serde(default = "default_queue")]
    pub queue_depth: usize,
    /// The inference thread keeps its core busy while it waits for the GPU. Default true:
    /// CUDA's default synchronisation spins when a process has fewer contexts than cores.
    #[serde(default = "default_spin")]
    pub spin_wait: bool,
}

fn default_queue() -> usize {
    2
}

fn default_spin() -> bool {
    true
}

impl AppSpec {
    /// (accuracy, latency ms at full clocks), cheapest first.
    pub fn library(&self) -> Result<Vec<(f64, f64)>> {
        let lib = match (&self.library, &self.subnets) {
            (Some(name), None) => match builtin_library(name) {
                Some(lib) => lib,
                None => bail!(
                    "app {}: unknown library {name:?} (known: dynamic-ofa-6, dynamic-ofa-7)",
                    self.name
                ),
            },
            (None, Some(s)) => s.clone(),
            _ => bail!("app {}: give exactly one of library or subnets", self.name),
        };
        if lib.is_empty() {
            bail!("app {}: empty sub-network library", self.name);
        }
        if lib
            .iter()
            .any(|(a, l)| !a.is_finite() || !l.is_finite() || *l <= 0.0)
        {
            bail!("app {}: sub-network latencies must be positive", self.name);
        }
        Ok(lib)
    }

    /// The static deployment: the most accurate sub-network that meets the deadline at full
    /// clocks, or the fastest one when none does.
    pub fn static_subnet(&self) -> Result<usize> {
        let lib = self.library()?;
        let fits = lib
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| *l <= self.deadline_ms)
            .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
            .map(|(i, _)| i);
        Ok(fits.unwrap_or_else(|| {
            lib.iter()
                .enumerate()
                .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        }))
    }

    pub fn period_ms(&self) -> f64 {
        1000.0 / self.fps
    }

    /// Whether the app runs at some time in `[0, duration_s)`.
    pub fn present(&self, duration_s: f64) -> bool {
        self.start_s < duration_s && self.stop_s.is_none_or(|stop| stop > 0.0)
    }

    /// Whether the app is registered at `t_s`.
    pub fn running_at(&self, t_s: f64) -> bool {
        self.start_s <= t_s && self.stop_s.is_none_or(|stop| t_s < stop)
    }
}

/// Generic CPU tasks: Poisson arrivals at `rate_hz` during bursts of `on_s` separated by
/// `off_s` of silence, each needing `work_ms` of one core at its maximum clock.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CpuLoad {
    pub rate_hz: f64,
    pub work_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_s: Option<f64>,
    #[serde(default)]
    pub off_s: f64,
    #[serde(default)]
    pub start_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
}

/// Something that changes at `at_s`. Every field but `at_s` is optional; `app` names the app
/// that `deadline_ms` applies to.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub at_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<f64>,
    /// Fraction of GPU time a background job takes from now on (0 ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_background_share: Option<f64>,
    /// CPUs offline from now on (replaces the previous list; empty brings all back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_cpus: Option<Vec<u32>>,
    /// Board power budget from now on (0 removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_cap_w: Option<f64>,
    /// Frequency caps by domain name (`{ gpu = 600 }`, MHz) from now on, as a thermal
    /// zone or an administrator would set them: no domain runs above its cap, whatever the
    /// governor asks. A cap of 0 removes that domain's cap; domains not named keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mhz: Option<BTreeMap<String, f64>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Platform file, relative to the scenario file.
    pub platform: String,
    pub duration_s: f64,
    /// Control period of every governor.
    #[serde(default = "default_tick")]
    pub tick_ms: f64,
    /// Simulation step.
    #[serde(default = "default_step")]
    pub step_ms: f64,
    /// Relative standard deviation of an inference's time (ground truth jitter).
    #[serde(default = "default_jitter")]
    pub latency_jitter: f64,
    /// Relative standard deviation of the power sensor's readings, instead of the
    /// platform file's `sensor_noise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor_noise: Option<f64>,
    #[serde(default, rename = "app")]
    pub apps: Vec<AppSpec>,
    #[serde(default, rename = "cpu_load")]
    pub cpu_loads: Vec<CpuLoad>,
    #[serde(default, rename = "event")]
    pub events: Vec<Event>,
    /// Where the file was read from, to resolve `platform`.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Finite and above zero (NaN is not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn default_tick() -> f64 {
    10.0
}
/// Inferences and tasks start and finish at exact times inside a step, so the step only
/// bounds how finely sharing and power are resolved: S1's results at 0.25, 0.5 and 1 ms
/// agree within 0.2 %.
fn default_step() -> f64 {
    1.0
}
fn default_jitter() -> f64 {
    0.03
}

impl Scenario {
    pub fn parse(text: &str, dir: &Path) -> Result<Scenario> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        s.dir = dir.to_path_buf();
        s.validate()?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Scenario::parse(&text, dir).with_context(|| format!("parsing scenario {}", path.display()))
    }

    pub fn platform_path(&self) -> PathBuf {
        self.dir.join(&self.platform)
    }

    fn validate(&self) -> Result<()> {
        if !positive(self.duration_s) {
            bail!("duration_s must be positive");
        }
        if !positive(self.step_ms) || !positive(self.tick_ms) || self.tick_ms < self.step_ms {
            bail!("need 0 < step_ms <= tick_ms");
        }
        for a in &self.apps {
            a.library()?;
            if !positive(a.fps) || !positive(a.deadline_ms) {
                bail!("app {}: fps and deadline_ms must be positive", a.name);
            }
            let s = a.split;
            if [s.gpu, s.cpu, s.mem, s.fixed].iter().any(|x| *x < 0.0)
                || ((s.gpu + s.cpu + s.mem + s.fixed) - 1.0).abs() > 1e-6
            {
                bail!(
                    "app {}: split parts must be non-negative and sum to 1",
                    a.name
                );
            }
            if self.apps.iter().filter(|o| o.name == a.name).count() > 1 {
                bail!("app name {} is used twice", a.name);
            }
            if a.stop_s.is_some_and(|s| !(s.is_finite() && s > a.start_s)) {
                bail!("app {}: stop_s must come after start_s", a.name);
            }
        }
        for l in &self.cpu_loads {
            if !(positive(l.rate_hz) || l.rate_hz == 0.0)
                || !positive(l.work_ms)
                || l.on_s.is_some_and(|o| !positive(o))
            {
                bail!("cpu_load: rate_hz >= 0, work_ms > 0 and on_s > 0 required");
            }
        }
        if self
            .sensor_noise
            .is_some_and(|n| !(n.is_finite() && (0.0..1.0).contains(&n)))
        {
            bail!("sensor_noise must be in [0, 1)");
        }
        if !(self.latency_jitter.is_finite() && (0.0..0.5).contains(&self.latency_jitter)) {
            bail!("latency_jitter must be in [0, 0.5)");
        }
        for e in &self.events {
            if let Some(caps) = &e.max_mhz {
                if let Some((d, mhz)) = caps.iter().find(|(_, m)| !(m.is_finite() && **m >= 0.0)) {
                    bail!(
                        "event at {} s: max_mhz for {d} must be a frequency in MHz (0 removes the cap), not {mhz}",
                        e.at_s
                    );
                }
            }
            if e.deadline_ms.is_some() {
                match &e.app {
                    Some(n) if self.apps.iter().any(|a| &a.name == n) => {}
                    _ => bail!(
                        "event at {} s: deadline_ms needs the name of an app",
                        e.at_s
                    ),
                }
            }
            if e.gpu_background_share
                .is_some_and(|s| !(0.0..1.0).contains(&s))
            {
                bail!(
                    "event at {} s: gpu_background_share must be in [0, 1)",
                    e.at_s
                );
            }
        }
        Ok(())
    }

    /// Times where the scenario changes (events inside the run and app arrivals), the
    /// boundaries of the oracle's phases.
    pub fn phase_starts(&self) -> Vec<f64> {
        let mut t: Vec<f64> = vec![0.0];
        t.extend(self.events.iter().map(|e| e.at_s));
        t.extend(self.apps.iter().map(|a| a.start_s));
        t.extend(self.apps.iter().filter_map(|a| a.stop_s));
        t.retain(|x| *x >= 0.0 && *x < self.duration_s);
        t.sort_by(f64::total_cmp);
        t.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        t
    }

    /// The scenario between `from` and `to`, as a scenario of its own starting at zero:
    /// what happened before `from` is in force from the start.
    pub fn slice(&self, from: f64, to: f64) -> Scenario {
        let mut s = self.clone();
        s.duration_s = to - from;
        // Every app keeps its place (app ids are scenario positions); one gone before the
        // slice starts has a stop at or before zero, one that comes after it ends starts at
        // or after its end (see [`AppSpec::present`]).
        for a in &mut s.apps {
            a.start_s = (a.start_s - from).max(0.0);
            a.stop_s = a.stop_s.map(|stop| stop - from);
        }
        let mut merged = Event::default();
        let mut later = Vec::new();
        let mut events = self.events.clone();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        for e in events {
            if e.at_s <= from {
                if let (Some(app), Some(d)) = (&e.app, e.deadline_ms) {
                    if let Some(a) = s.apps.iter_mut().find(|a| &a.name == app) {
                        a.deadline_ms = d;
                    }
                }
                merged.gpu_background_share =
                    e.gpu_background_share.or(merged.gpu_background_share);
                merged.offline_cpus = e.offline_cpus.clone().or(merged.offline_cpus);
                merged.power_cap_w = e.power_cap_w.or(merged.power_cap_w);
                if let Some(caps) = &e.max_mhz {
                    let m = merged.max_mhz.get_or_insert_with(BTreeMap::new);
                    m.extend(caps.iter().map(|(k, v)| (k.clone(), *v)));
                }
            } else if e.at_s < to {
                later.push(Event {
                    at_s: e.at_s - from,
                    ..e
                });
            }
        }
        s.events = std::iter::once(merged).chain(later).collect();
        for l in &mut s.cpu_loads {
            // A start before zero keeps the burst phase and the arrival sequence of the
            // original timeline; the engine skips arrivals before zero.
            l.start_s -= from;
            l.end_s = l.end_s.map(|e| e - from);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
platform = "x.toml"
duration_s = 1
[[app]]
name = "a"
library = "dynamic-ofa-6"
fps = 15
deadline_ms = 60
accuracy_floor = 76
"#;

    #[test]
    fn unknown_scenario_key_is_rejected_by_name() {
        let text = MINIMAL.replace("fps = 15", "fps = 15\ndeadlin_ms = 3");
        let err = format!("{:#}", Scenario::parse(&text, Path::new(".")).unwrap_err());
        assert!(err.contains("deadlin_ms"), "{err}");
        let text = format!("{MINIMAL}\n[[event]]\nat_s = 1\npower_cap = 10\n");
        let err = format!("{:#}", Scenario::parse(&text, Path::new(".")).unwrap_err());
        assert!(err.contains("power_cap"), "{err}");
    }

    #[test]
    fn static_deployment_is_most_accurate_meeting_deadline_at_full_clocks() {
        let mut s = Scenario::parse(MINIMAL, Path::new(".")).unwrap();
        // 56.75 ms fits 60 ms, 61.73 does not.
        assert_eq!(s.apps[0].static_subnet().unwrap(), 4);
        s.apps[0].deadline_ms = 100.0;
        assert_eq!(s.apps[0].static_subnet().unwrap(), 5);
        s.apps[0].deadline_ms = 45.0;
        assert_eq!(s.apps[0].static_subnet().unwrap(), 0);
        // Nothing fits: the fastest entry.
        s.apps[0].deadline_ms = 10.0;
        assert_eq!(s.apps[0].static_subnet().unwrap(), 0);
        s.apps[0].library = Some("dynamic-ofa-7".into());
        s.apps[0].deadline_ms = 100.0;
        assert_eq!(s.apps[0].static_subnet().unwrap(), 6);
    }

    #[test]
    fn inconsistent_scenarios_are_refused_with_a_reason() {
        let bad = [
            (MINIMAL.replace("fps = 15", "fps = 0"), "fps"),
            (
                MINIMAL.replace("library = \"dynamic-ofa-6\"", "library = \"dynamic-ofa-9\""),
                "dynamic-ofa-9",
            ),
            (
                format!("{MINIMAL}split = {{ gpu = 0.5, cpu = 0.1, mem = 0.1, fixed = 0.1 }}\n"),
                "sum to 1",
            ),
            (
                format!("{MINIMAL}\n[[event]]\nat_s = 1\napp = \"b\"\ndeadline_ms = 3\n"),
                "name of an app",
            ),
            (
                format!("{MINIMAL}\n[[event]]\nat_s = 1\ngpu_background_share = 1.5\n"),
                "gpu_background_share",
            ),
        ];
        for (text, reason) in bad {
            let err = format!("{:#}", Scenario::parse(&text, Path::new(".")).unwrap_err());
            assert!(err.contains(reason), "{reason}: {err}");
        }
    }

    #[test]
    fn slice_carries_earlier_events_into_its_start() {
        let text = format!(
            "{MINIMAL}\n[[event]]\nat_s = 0.3\napp = \"a\"\ndeadline_ms = 45\n[[event]]\nat_s = 0.6\npower_cap_w = 10\n"
        );
        let s = Scenario::parse(&text, Path::new(".")).unwrap();
        assert_eq!(s.phase_starts(), vec![0.0, 0.3, 0.6]);
        let mid = s.slice(0.3, 0.6);
        assert_eq!(mid.apps[0].deadline_ms, 45.0);
        assert!(mid.events.iter().all(|e| e.power_cap_w.is_none()));
        let last = s.slice(0.6, 1.0);
        assert_eq!(last.events[0].power_cap_w, Some(10.0));
    }
}
