//! Level 3: the system optimiser. Chooses every app's sub-network and the frequency of every
//! domain the apps use, jointly, from the latency and power models.
//!
//! Search. An exhaustive search over sub-networks and per-domain frequencies is
//! `prod(library sizes) * prod(table sizes)`: far too many for eight apps. Instead:
//! - The frequency space is enumerated on a grid of (CPU level, GPU frequency, memory
//!   frequency). All CPU domains the apps use share one level (each resolved to its own
//!   table), so three CPU clusters cost 20 points, not 8000.
//! - At each grid point the apps decouple except through shared devices and the power cap:
//!   each app's feasible sub-networks (deadline x (1 - margin), accuracy floor) and their
//!   marginal power are computed, and the least-power feasible choice gives a lower bound of
//!   the point's power.
//! - The grid is walked from the highest clocks down. Latency never rises with a clock, so
//!   once an app misses its deadline with every sub-network, every point lower in all
//!   coordinates is skipped; points whose idle power alone exceeds the best found are
//!   skipped too.
//! - Energy mode takes the least-power point, then, among points within a tie tolerance of
//!   it, upgrades sub-networks greedily (best accuracy gain per resource) inside that power
//!   budget, so near-equal energy buys accuracy. Accuracy mode runs the same greedy upgrade
//!   at every point inside the power cap, with branch and bound: the accuracy upper bound
//!   only falls as clocks fall, so a point whose bound is below the best prunes everything
//!   under it.
//! - Finally each planned CPU domain is lowered one table step at a time while the plan
//!   stays feasible (coordinate descent), recovering what the shared CPU level gives away.
//!
//! Cost: O(grid * apps * library) with small constants; see the benchmark.

use serde::{Deserialize, Serialize};

use crate::decision::UnservedCause;
use crate::model::{ClockRatios, LatencyCoefs, PowerCoefs};
use crate::snapshot::{Devices, DomainKind};
use crate::units::{Hz, Watts};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Meet every target with the least energy; higher accuracy among near-equal energy.
    #[default]
    Energy,
    /// Highest priority-weighted accuracy within the power cap.
    Accuracy,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimiserConfig {
    pub mode: Mode,
    /// Predicted latency must stay under `deadline * (1 - margin)`, against model error.
    pub margin: f64,
    /// Energy mode: configurations within this fraction of the least power count as ties.
    pub tie_tolerance: f64,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        OptimiserConfig {
            mode: Mode::Energy,
            margin: 0.1,
            tie_tolerance: 0.02,
        }
    }
}

/// A frequency domain as the optimiser sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainOption {
    pub id: u32,
    pub kind: DomainKind,
    /// Allowed frequencies (under limits and caps), ascending, not empty.
    pub freqs: Vec<Hz>,
    /// The table's maximum: the reference of speed ratios in the models.
    pub max_freq: Hz,
    /// CPUs in the domain, and how many are online (0 for devices).
    pub cpu_count: usize,
    pub online_cpus: usize,
    /// Utilisation (0..=1) and speed (f / f_max) of a domain the plan does not set, for
    /// the power estimate.
    pub util: f64,
    pub speed: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubnetOption {
    pub accuracy: f64,
    /// The latency model: its split between clocks also apportions the sub-network's
    /// power between domains.
    pub coefs: LatencyCoefs,
    /// A second fit of the same data that assumes no speed-up from a clock until the data
    /// shows one. The latency used for every constraint is the larger of the two, so a
    /// configuration away from everything observed is never predicted faster than the
    /// evidence allows (see `model::LatencyCoefs::seed_flat`). None: `coefs` alone.
    pub cautious: Option<LatencyCoefs>,
}

impl SubnetOption {
    /// The latency the constraints use at the given clocks.
    pub fn latency_ms(&self, r: ClockRatios) -> f64 {
        let l = self.coefs.latency_ms(r);
        match &self.cautious {
            Some(c) => l.max(c.latency_ms(r)),
            None => l,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppProblem {
    pub id: u32,
    pub priority: u8,
    pub deadline_ms: f64,
    pub period_ms: f64,
    pub accuracy_floor: f64,
    pub devices: Devices,
    /// Ids of the CPU domains its threads use (empty: every CPU domain with online CPUs).
    pub cpu_domains: Vec<u32>,
    pub subnets: Vec<SubnetOption>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub domains: Vec<DomainOption>,
    pub apps: Vec<AppProblem>,
    pub power: PowerCoefs,
    pub power_cap: Option<Watts>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Frequencies of the domains the served apps use; other domains stay with the base
    /// governor.
    pub freqs: Vec<(u32, Hz)>,
    /// Sub-network of every served app.
    pub subnets: Vec<(u32, u32)>,
    pub unserved: Vec<(u32, UnservedCause)>,
    pub power: Watts,
    /// Sum over served apps of (1 + priority) x accuracy.
    pub score: f64,
}

/// Grid axes and per-app constants derived from a problem for a given set of served apps.
struct Prepared<'a> {
    p: &'a Problem,
    cfg: OptimiserConfig,
    apps: Vec<usize>,
    gpu: Option<usize>,
    mem: Option<usize>,
    /// Planned CPU domains (indices into `p.domains`).
    cpus: Vec<usize>,
    /// For each served app, positions in `cpus` of its domains.
    app_cpus: Vec<Vec<usize>>,
    levels: Vec<Hz>,
    /// For each CPU level, the frequency index of each planned CPU domain.
    level_cpus: Vec<Vec<usize>>,
    fixed_power: f64,
    max_subnets: usize,
}

/// One grid point: a frequency index per planned domain.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Point {
    gpu: usize,
    mem: usize,
    cpus: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Evaluated,
    /// Idle power over the bound: no app was evaluated.
    Pruned,
    /// Some app meets its deadline with no sub-network here. Latency cannot rise with a
    /// clock (every latency coefficient is non-negative), so it misses at every point that
    /// is lower in every coordinate too.
    DeadlineMissed,
}

/// What a grid visitor tells the walk.
enum Flow {
    /// Go on, pruning points whose idle power exceeds this bound.
    Bound(f64),
    /// Nothing lower in every coordinate can be better.
    SkipLower,
}

/// Per-point evaluation of every (app, sub-network).
#[derive(Clone, Debug, Default)]
struct PointEval {
    base_power: f64,
    /// Flattened [app][subnet]: feasible alone, marginal power, device share lat/period.
    ok: Vec<bool>,
    dp: Vec<f64>,
    share: Vec<f64>,
}

fn speed(d: &DomainOption, f: Hz) -> f64 {
    f.as_f64() / d.max_freq.as_f64().max(1.0)
}

impl<'a> Prepared<'a> {
    fn new(p: &'a Problem, cfg: OptimiserConfig, apps: Vec<usize>) -> Prepared<'a> {
        let first = |k: DomainKind| p.domains.iter().position(|d| d.kind == k);
        let gpu = first(DomainKind::Gpu).filter(|_| apps.iter().any(|a| p.apps[*a].devices.gpu));
        let mem = first(DomainKind::Memory).filter(|_| !apps.is_empty());
        let usable = |i: &usize| {
            let d = &p.domains[*i];
            d.kind == DomainKind::Cpu && d.online_cpus > 0
        };
        let all_cpu: Vec<usize> = (0..p.domains.len()).filter(usable).collect();
        let mut app_doms: Vec<Vec<usize>> = Vec::new();
        for a in &apps {
            let app = &p.apps[*a];
            let mut v: Vec<usize> = all_cpu
                .iter()
                .copied()
                .filter(|i| {
                    app.cpu_domains.is_empty() || app.cpu_domains.contains(&p.domains[*i].id)
                })
                .collect();
            if v.is_empty() {
                // Its declared domains are all offline: the scheduler will migrate it.
                v = all_cpu.clone();
            }
            app_doms.push(v);
        }
        let mut cpus: Vec<usize> = app_doms.iter().flatten().copied().collect();
        cpus.sort_unstable();
        cpus.dedup();
        let app_cpus = app_doms
            .iter()
            .map(|v| {
                v.iter()
                    .map(|i| cpus.iter().position(|c| c == i).unwrap_or(0))
                    .collect()
            })
            .collect();
        let mut levels: Vec<Hz> = cpus
            .iter()
            .flat_map(|i| p.domains[*i].freqs.iter().copied())
            .collect();
        levels.sort_unstable();
        levels.dedup();
        let planned = |i: usize| Some(i) == gpu || Some(i) == mem || cpus.contains(&i);
        let fixed_power = p.power.static_w
            + (0..p.domains.len())
                .filter(|i| !planned(*i))
                .map(|i| {
                    let d = &p.domains[i];
                    let (busy, idle) = p.power.domain(d.id);
                    let s = d.speed.clamp(0.0, 1.0);
                    busy * d.util.clamp(0.0, 1.0) * s * s * s + idle * s
                })
                .sum::<f64>();
        let max_subnets = apps
            .iter()
            .map(|a| p.apps[*a].subnets.len())
            .max()
            .unwrap_or(0);
        let level_cpus = levels
            .iter()
            .map(|l| {
                cpus.iter()
                    .map(|i| {
                        let f = &p.domains[*i].freqs;
                        f.iter().position(|x| x >= l).unwrap_or(f.len() - 1)
                    })
                    .collect()
            })
            .collect();
        Prepared {
            p,
            cfg,
            apps,
            gpu,
            mem,
            cpus,
            app_cpus,
            levels,
            level_cpus,
            fixed_power,
            max_subnets,
        }
    }

    fn axis_len(&self, d: Option<usize>) -> usize {
        d.map_or(1, |i| self.p.domains[i].freqs.len())
    }

    fn set_point(&self, pt: &mut Point, level: usize, gpu: usize, mem: usize) {
        pt.gpu = gpu;
        pt.mem = mem;
        pt.cpus.clear();
        if let Some(c) = self.level_cpus.get(level) {
            pt.cpus.extend_from_slice(c);
        }
    }

    fn max_point(&self) -> Point {
        Point {
            gpu: self.axis_len(self.gpu) - 1,
            mem: self.axis_len(self.mem) - 1,
            cpus: self
                .cpus
                .iter()
                .map(|i| self.p.domains[*i].freqs.len() - 1)
                .collect(),
        }
    }

    fn freq(&self, d: Option<usize>, idx: usize) -> (f64, f64) {
        // (ratio f_max / f, speed f / f_max); an absent device runs "at full speed".
        match d {
            Some(i) => {
                let dom = &self.p.domains[i];
                let s = speed(dom, dom.freqs[idx]).max(1e-6);
                (1.0 / s, s)
            }
            None => (1.0, 1.0),
        }
    }

    /// Evaluates a point. Stops early (and says so) when its idle power alone exceeds
    /// `bound`, or when some app has no sub-network meeting its deadline there.
    fn eval(&self, pt: &Point, out: &mut PointEval, bound: f64) -> Status {
        let p = self.p;
        let n = self.max_subnets;
        out.ok.clear();
        out.ok.resize(self.apps.len() * n, false);
        out.dp.clear();
        out.dp.resize(self.apps.len() * n, 0.0);
        out.share.clear();
        out.share.resize(self.apps.len() * n, 0.0);
        let (rg, sg) = self.freq(self.gpu, pt.gpu);
        let (rm, sm) = self.freq(self.mem, pt.mem);
        let (bg, ig) = self
            .gpu
            .map_or((0.0, 0.0), |i| p.power.domain(p.domains[i].id));
        let (bm, im) = self
            .mem
            .map_or((0.0, 0.0), |i| p.power.domain(p.domains[i].id));
        let mut base = self.fixed_power + ig * sg + im * sm;
        // Per planned CPU domain: ratio, dynamic watts per unit of one busy CPU.
        let mut cpu_r = [0.0f64; 16];
        let mut cpu_w = [0.0f64; 16];
        let mut cpu_r_vec;
        let mut cpu_w_vec;
        let (cr, cw): (&mut [f64], &mut [f64]) = if self.cpus.len() <= 16 {
            (&mut cpu_r[..self.cpus.len()], &mut cpu_w[..self.cpus.len()])
        } else {
            cpu_r_vec = vec![0.0; self.cpus.len()];
            cpu_w_vec = vec![0.0; self.cpus.len()];
            (&mut cpu_r_vec[..], &mut cpu_w_vec[..])
        };
        for (k, i) in self.cpus.iter().enumerate() {
            let d = &p.domains[*i];
            let s = speed(d, d.freqs[pt.cpus[k]]).max(1e-6);
            let (b, idle) = p.power.domain(d.id);
            base += idle * s;
            cr[k] = 1.0 / s;
            cw[k] = b * s * s * s / d.cpu_count.max(1) as f64;
        }
        out.base_power = base;
        if base > bound {
            return Status::Pruned;
        }
        let margin = 1.0 - self.cfg.margin;
        for (ai, a) in self.apps.iter().enumerate() {
            let app = &p.apps[*a];
            let doms = &self.app_cpus[ai];
            let mut rc: f64 = 1.0;
            let mut wc = 0.0;
            for k in doms {
                rc = rc.max(cr[*k]);
                wc += cw[*k];
            }
            wc /= doms.len().max(1) as f64;
            let r = ClockRatios {
                gpu: rg,
                cpu: rc,
                mem: rm,
            };
            let period = app.period_ms.max(1e-6);
            let mut any = false;
            for (si, s) in app.subnets.iter().enumerate() {
                let c = &s.coefs;
                let lat = s.latency_ms(r);
                let j = ai * n + si;
                out.ok[j] = s.accuracy >= app.accuracy_floor && lat <= app.deadline_ms * margin;
                any |= out.ok[j];
                out.share[j] = lat / period;
                out.dp[j] = (bg * sg * sg * sg * c.gpu_ms * rg
                    + wc * (c.cpu_ms * rc + c.fixed_ms)
                    + bm * sm * sm * sm * c.mem_ms * rm)
                    / period;
            }
            if !any {
                return Status::DeadlineMissed;
            }
        }
        Status::Evaluated
    }

    fn capacity(&self, slot: usize) -> f64 {
        if slot == 0 {
            1.0
        } else {
            self.p.domains[self.cpus[slot - 1]].online_cpus as f64
        }
    }

    /// Adds app `ai`'s share to the device loads (slot 0: GPU, slot 1 + k: planned CPU k).
    fn add_load(&self, loads: &mut [f64], ai: usize, share: f64) {
        let app = &self.p.apps[self.apps[ai]];
        if app.devices.gpu && self.gpu.is_some() {
            loads[0] += share;
        }
        if app.devices.cpu {
            let doms = &self.app_cpus[ai];
            for k in doms {
                loads[1 + k] += share / doms.len() as f64;
            }
        }
    }

    fn loads_fit(&self, loads: &[f64]) -> bool {
        loads
            .iter()
            .enumerate()
            .all(|(i, l)| *l <= self.capacity(i) + 1e-9)
    }

    fn weight(&self, ai: usize) -> f64 {
        1.0 + self.p.apps[self.apps[ai]].priority as f64
    }

    /// Least-power feasible choice per app; None if an app has none or devices overflow.
    fn least_power(&self, e: &PointEval, choice: &mut Vec<usize>) -> Option<f64> {
        let n = self.max_subnets;
        choice.clear();
        let mut power = e.base_power;
        let mut loads = vec![0.0; 1 + self.cpus.len()];
        for (ai, a) in self.apps.iter().enumerate() {
            let mut best: Option<usize> = None;
            for si in 0..self.p.apps[*a].subnets.len() {
                let j = ai * n + si;
                if !e.ok[j] {
                    continue;
                }
                best = match best {
                    Some(b) if e.dp[ai * n + b] < e.dp[j] - 1e-12 => Some(b),
                    Some(b)
                        if (e.dp[ai * n + b] - e.dp[j]).abs() <= 1e-12
                            && e.share[ai * n + b] <= e.share[j] =>
                    {
                        Some(b)
                    }
                    _ => Some(si),
                };
            }
            let b = best?;
            power += e.dp[ai * n + b];
            self.add_load(&mut loads, ai, e.share[ai * n + b]);
            choice.push(b);
        }
        if !self.loads_fit(&loads) {
            return None;
        }
        if let Some(cap) = self.p.power_cap {
            if power > cap.0 {
                return None;
            }
        }
        Some(power)
    }

    fn score(&self, choice: &[usize]) -> f64 {
        choice
            .iter()
            .enumerate()
            .map(|(ai, s)| self.weight(ai) * self.p.apps[self.apps[ai]].subnets[*s].accuracy)
            .sum()
    }

    /// Power of every app at its most accurate feasible sub-network, if that fits.
    fn best_each(&self, e: &PointEval, choice: &mut Vec<usize>) -> Option<f64> {
        let n = self.max_subnets;
        choice.clear();
        let mut loads = vec![0.0; 1 + self.cpus.len()];
        let mut power = e.base_power;
        for (ai, a) in self.apps.iter().enumerate() {
            let subnets = &self.p.apps[*a].subnets;
            let si = (0..subnets.len())
                .filter(|si| e.ok[ai * n + si])
                .max_by(|x, y| subnets[*x].accuracy.total_cmp(&subnets[*y].accuracy))?;
            power += e.dp[ai * n + si];
            self.add_load(&mut loads, ai, e.share[ai * n + si]);
            choice.push(si);
        }
        let capped = self.p.power_cap.is_some_and(|c| power > c.0);
        (self.loads_fit(&loads) && !capped).then_some(power)
    }

    /// Upper bound of the score at a point: every app at its most accurate feasible entry.
    fn score_bound(&self, e: &PointEval) -> f64 {
        let n = self.max_subnets;
        self.apps
            .iter()
            .enumerate()
            .map(|(ai, a)| {
                let best = self.p.apps[*a]
                    .subnets
                    .iter()
                    .enumerate()
                    .filter(|(si, _)| e.ok[ai * n + si])
                    .map(|(_, s)| s.accuracy)
                    .fold(f64::NEG_INFINITY, f64::max);
                self.weight(ai) * best
            })
            .sum()
    }

    /// Greedy upgrades from the least-power choice, inside `budget` watts: at each round the
    /// move with the best weighted-accuracy gain per unit of the resources it uses.
    /// The largest fraction of any device's capacity that moving app `ai`'s share by
    /// `delta` would use, or None when some device would overflow.
    fn load_step(&self, loads: &[f64], ai: usize, delta: f64) -> Option<f64> {
        let app = &self.p.apps[self.apps[ai]];
        let mut used: f64 = 0.0;
        if app.devices.gpu && self.gpu.is_some() {
            if loads[0] + delta > self.capacity(0) + 1e-9 {
                return None;
            }
            used = used.max(delta / self.capacity(0));
        }
        if app.devices.cpu {
            let doms = &self.app_cpus[ai];
            let d = delta / doms.len().max(1) as f64;
            for k in doms {
                let cap = self.capacity(1 + k).max(1e-9);
                if loads[1 + k] + d > cap + 1e-9 {
                    return None;
                }
                used = used.max(d / cap);
            }
        }
        Some(used)
    }

    /// Greedy upgrades from the least-power choice, inside `budget` watts: at each round the
    /// move with the best weighted-accuracy gain per unit of the scarcest resource it uses.
    fn upgrade(&self, e: &PointEval, choice: &mut [usize], mut power: f64, budget: f64) -> f64 {
        let n = self.max_subnets;
        let mut loads = vec![0.0; 1 + self.cpus.len()];
        for (ai, s) in choice.iter().enumerate() {
            self.add_load(&mut loads, ai, e.share[ai * n + s]);
        }
        let norm = if budget.is_finite() {
            budget.max(1e-9)
        } else {
            f64::INFINITY
        };
        loop {
            let mut best: Option<(f64, usize, usize)> = None;
            for (ai, a) in self.apps.iter().enumerate() {
                let subnets = &self.p.apps[*a].subnets;
                let cur = choice[ai];
                for si in 0..subnets.len() {
                    let j = ai * n + si;
                    let gain = subnets[si].accuracy - subnets[cur].accuracy;
                    if !e.ok[j] || gain <= 0.0 {
                        continue;
                    }
                    let dp = e.dp[j] - e.dp[ai * n + cur];
                    if power + dp > budget {
                        continue;
                    }
                    let Some(used) = self.load_step(&loads, ai, e.share[j] - e.share[ai * n + cur])
                    else {
                        continue;
                    };
                    let used = used.max(0.0) + (dp / norm).max(0.0);
                    let value = self.weight(ai) * gain / (used + 1e-6);
                    if best.is_none_or(|(v, _, _)| value > v) {
                        best = Some((value, ai, si));
                    }
                }
            }
            let Some((_, ai, si)) = best else { break };
            let cur = choice[ai];
            power += e.dp[ai * n + si] - e.dp[ai * n + cur];
            self.add_load(&mut loads, ai, e.share[ai * n + si] - e.share[ai * n + cur]);
            choice[ai] = si;
        }
        power
    }

    /// Power of a given choice at a point, None if infeasible.
    fn check(&self, pt: &Point, choice: &[usize], e: &mut PointEval) -> Option<f64> {
        if self.eval(pt, e, f64::INFINITY) != Status::Evaluated {
            return None;
        }
        let n = self.max_subnets;
        let mut loads = vec![0.0; 1 + self.cpus.len()];
        let mut power = e.base_power;
        for (ai, s) in choice.iter().enumerate() {
            let j = ai * n + s;
            if !e.ok[j] {
                return None;
            }
            power += e.dp[j];
            self.add_load(&mut loads, ai, e.share[j]);
        }
        let capped = self.p.power_cap.is_some_and(|c| power > c.0);
        (self.loads_fit(&loads) && !capped).then_some(power)
    }

    /// Visits the grid from the highest clocks down, skipping the points below a deadline
    /// miss (see [`Status::DeadlineMissed`]) or below a point `visit` declares hopeless.
    fn walk(&self, mut bound: f64, mut visit: impl FnMut(&Point, &PointEval, f64) -> Flow) {
        let nl = self.levels.len().max(1);
        let ng = self.axis_len(self.gpu);
        let nm = self.axis_len(self.mem);
        let mut pt = Point {
            gpu: 0,
            mem: 0,
            cpus: Vec::new(),
        };
        let mut e = PointEval::default();
        for l in (0..nl).rev() {
            let mut level_dead = true;
            for g in (0..ng).rev() {
                let mut gpu_dead = true;
                for m in (0..nm).rev() {
                    self.set_point(&mut pt, l, g, m);
                    match self.eval(&pt, &mut e, bound) {
                        Status::DeadlineMissed => break,
                        Status::Pruned => {}
                        Status::Evaluated => match visit(&pt, &e, bound) {
                            Flow::Bound(b) => bound = b,
                            Flow::SkipLower => break,
                        },
                    }
                    gpu_dead = false;
                }
                if gpu_dead {
                    break;
                }
                level_dead = false;
            }
            if level_dead {
                break;
            }
        }
    }

    /// The best plan for the prepared app set, or None when no grid point serves them all.
    fn solve(&self) -> Option<(Point, Vec<usize>, f64, f64)> {
        let mut choice = Vec::new();
        let cap = self.p.power_cap.map_or(f64::INFINITY, |c| c.0);
        let tol = 1.0 + self.cfg.tie_tolerance;
        let mut best: Option<(Point, Vec<usize>, f64, f64)> = None;
        match self.cfg.mode {
            Mode::Energy => {
                let mut feasible: Vec<(Point, f64)> = Vec::new();
                let mut least = f64::INFINITY;
                self.walk(cap, |pt, e, bound| {
                    if let Some(pw) = self.least_power(e, &mut choice) {
                        least = least.min(pw);
                        feasible.push((pt.clone(), pw));
                    }
                    Flow::Bound(bound.min(least * tol))
                });
                let budget = (least * tol).min(cap);
                let mut e = PointEval::default();
                for (pt, pw) in feasible {
                    if pw > budget {
                        continue;
                    }
                    self.eval(&pt, &mut e, f64::INFINITY);
                    if self.least_power(&e, &mut choice).is_none() {
                        continue;
                    }
                    let pw = self.upgrade(&e, &mut choice, pw, budget);
                    let sc = self.score(&choice);
                    if better(&best, sc, pw) {
                        best = Some((pt, choice.clone(), pw, sc));
                    }
                }
            }
            Mode::Accuracy => {
                let mut top = Vec::new();
                self.walk(cap, |pt, e, bound| {
                    let ub = self.score_bound(e);
                    if let Some((_, _, bp, bs)) = &best {
                        // The bound only falls as clocks fall: everything below is worse.
                        if ub < *bs - 1e-9 {
                            return Flow::SkipLower;
                        }
                        if ub <= *bs + 1e-9 {
                            // Only the all-best choice reaches the bound; it may do so with
                            // less power here.
                            if let Some(pw) = self.best_each(e, &mut top).filter(|pw| pw < bp) {
                                best = Some((pt.clone(), top.clone(), pw, ub));
                            }
                            return Flow::Bound(bound);
                        }
                    }
                    let Some(pw) = self.least_power(e, &mut choice) else {
                        return Flow::Bound(bound);
                    };
                    let pw = self.upgrade(e, &mut choice, pw, cap);
                    let sc = self.score(&choice);
                    if better(&best, sc, pw) {
                        best = Some((pt.clone(), choice.clone(), pw, sc));
                    }
                    Flow::Bound(bound)
                });
            }
        }
        let mut e = PointEval::default();
        let (mut pt, choice, mut pw, sc) = best?;
        // Coordinate descent on the CPU domains the shared level set together.
        loop {
            let mut improved = false;
            for k in 0..pt.cpus.len() {
                while pt.cpus[k] > 0 {
                    let mut trial = pt.clone();
                    trial.cpus[k] -= 1;
                    match self.check(&trial, &choice, &mut e) {
                        Some(p2) if p2 < pw - 1e-12 => {
                            pt = trial;
                            pw = p2;
                            improved = true;
                        }
                        _ => break,
                    }
                }
            }
            if !improved {
                break;
            }
        }
        Some((pt, choice, pw, sc))
    }

    /// Whether the single prepared app can meet its deadline and floor at the highest
    /// allowed clocks. The power cap is left out: an app over the cap is degraded by
    /// priority, not declared impossible.
    fn feasible_alone_at_max(&self) -> bool {
        let mut e = PointEval::default();
        if self.eval(&self.max_point(), &mut e, f64::INFINITY) != Status::Evaluated {
            return false;
        }
        let app = &self.p.apps[self.apps[0]];
        let mut loads = vec![0.0; 1 + self.cpus.len()];
        (0..app.subnets.len()).any(|si| {
            loads.iter_mut().for_each(|l| *l = 0.0);
            self.add_load(&mut loads, 0, e.share[si]);
            e.ok[si] && self.loads_fit(&loads)
        })
    }

    fn plan(
        &self,
        sol: (Point, Vec<usize>, f64, f64),
        unserved: Vec<(u32, UnservedCause)>,
    ) -> Plan {
        let (pt, choice, pw, sc) = sol;
        let mut freqs = Vec::new();
        if let Some(i) = self.gpu {
            freqs.push((self.p.domains[i].id, self.p.domains[i].freqs[pt.gpu]));
        }
        if let Some(i) = self.mem {
            freqs.push((self.p.domains[i].id, self.p.domains[i].freqs[pt.mem]));
        }
        for (k, i) in self.cpus.iter().enumerate() {
            freqs.push((self.p.domains[*i].id, self.p.domains[*i].freqs[pt.cpus[k]]));
        }
        freqs.sort_unstable_by_key(|f| f.0);
        Plan {
            freqs,
            subnets: self
                .apps
                .iter()
                .zip(&choice)
                .map(|(a, s)| (self.p.apps[*a].id, *s as u32))
                .collect(),
            unserved,
            power: Watts(pw),
            score: sc,
        }
    }
}

fn better(best: &Option<(Point, Vec<usize>, f64, f64)>, score: f64, power: f64) -> bool {
    match best {
        None => true,
        Some((_, _, bp, bs)) => {
            score > bs + 1e-9 || ((score - bs).abs() <= 1e-9 && power < bp - 1e-12)
        }
    }
}

/// Chooses sub-networks and frequencies for every app of the problem. Apps that cannot be
/// served are listed in `unserved` with the cause; the rest are planned.
pub fn optimise(p: &Problem, cfg: &OptimiserConfig) -> Plan {
    let mut unserved = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (i, app) in p.apps.iter().enumerate() {
        if app.subnets.iter().all(|s| s.accuracy < app.accuracy_floor) {
            unserved.push((app.id, UnservedCause::AccuracyFloorUnreachable));
        } else if !Prepared::new(p, *cfg, vec![i]).feasible_alone_at_max() {
            unserved.push((app.id, UnservedCause::DeadlineUnreachable));
        } else {
            candidates.push(i);
        }
    }
    loop {
        let prep = Prepared::new(p, *cfg, candidates.clone());
        if candidates.is_empty() {
            let pw = prep.fixed_power;
            return Plan {
                freqs: Vec::new(),
                subnets: Vec::new(),
                unserved,
                power: Watts(pw),
                score: 0.0,
            };
        }
        if let Some(sol) = prep.solve() {
            return prep.plan(sol, unserved);
        }
        // Degrade the least important app (on a tie, the one registered last: the highest id).
        let (pos, _) = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, a)| (p.apps[**a].priority, std::cmp::Reverse(p.apps[**a].id)))
            .expect("candidates is not empty");
        let dropped = candidates.remove(pos);
        unserved.push((p.apps[dropped].id, UnservedCause::DegradedForPriority));
    }
}

/// Predicted power of a given configuration, or None when it breaks a constraint (a
/// deadline, a floor, a shared device, the power cap). `freqs` must name a frequency from
/// `DomainOption::freqs` for every domain the apps use; apps missing from `subnets` are
/// left out.
pub fn evaluate(
    p: &Problem,
    cfg: &OptimiserConfig,
    freqs: &[(u32, Hz)],
    subnets: &[(u32, u32)],
) -> Option<(Watts, f64)> {
    let apps: Vec<usize> = subnets
        .iter()
        .map(|(id, _)| p.apps.iter().position(|a| a.id == *id))
        .collect::<Option<_>>()?;
    let choice: Vec<usize> = subnets.iter().map(|(_, s)| *s as usize).collect();
    for (a, s) in apps.iter().zip(&choice) {
        if *s >= p.apps[*a].subnets.len() {
            return None;
        }
    }
    let prep = Prepared::new(p, *cfg, apps);
    let idx = |d: Option<usize>| -> Option<usize> {
        match d {
            None => Some(0),
            Some(i) => {
                let dom = &p.domains[i];
                let f = freqs.iter().find(|f| f.0 == dom.id)?.1;
                dom.freqs.iter().position(|x| *x == f)
            }
        }
    };
    let pt = Point {
        gpu: idx(prep.gpu)?,
        mem: idx(prep.mem)?,
        cpus: prep
            .cpus
            .iter()
            .map(|i| idx(Some(*i)))
            .collect::<Option<_>>()?,
    };
    let mut e = PointEval::default();
    let pw = prep.check(&pt, &choice, &mut e)?;
    Some((Watts(pw), prep.score(&choice)))
}
