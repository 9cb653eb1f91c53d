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
//!   it (0 by default: exact ties), upgrades sub-networks greedily (best accuracy gain per
//!   resource) inside that power budget, so near-equal energy buys accuracy. Accuracy mode
//!   runs the same greedy upgrade at every point inside the power cap, with branch and
//!   bound: the accuracy upper bound only falls as clocks fall, so a point whose bound is
//!   below the best prunes everything under it.
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
    /// Energy mode: configurations within this fraction of the least power count as ties,
    /// and the most accurate of them is taken. 0 by default: energy mode is the least
    /// power that keeps every deadline and accuracy floor, and only an exact tie buys
    /// accuracy. At 2 % (the default before), plans bought a fraction of a point of
    /// accuracy for up to 2 % more power, and the upgrades so bought were most of the
    /// sub-network changes taken back within seconds (docs/evaluation.md has the sweeps).
    pub tie_tolerance: f64,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        OptimiserConfig {
            mode: Mode::Energy,
            margin: 0.1,
            tie_tolerance: 0.0,
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
    /// The latency at full clocks the app declared for this sub-network (or the manager's
    /// guess from its relative cost); 0 where none is known. Best effort runs the app's
    /// declared fastest sub-network: fits learned while apps queue for a saturated GPU can
    /// rank a larger sub-network faster than a smaller one (see [`Prepared::best_effort`]).
    pub declared_ms: f64,
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
    /// The margin its measured latency spread calls for (0 when not known): the app is
    /// planned with the larger of this and the configured margin, so that a plan at the
    /// edge of its bound still meets the deadline on most frames when latencies scatter
    /// widely around the fits (see the manager's `SPREAD_QUANTILE`).
    pub spread_margin: f64,
    /// Whether it measurably misses its deadline now (the manager's miss feedback has
    /// widened its margin). Degraded for priority, such an app runs at best effort.
    pub missing: bool,
    /// Whether its collisions on a shared GPU (see [`COLLISION_SHARE`]) are judged with
    /// each inference holding the GPU for at least the device share its declared
    /// full-clock latency has under the seed split ([`LatencyCoefs::seed`]: 80 % for a
    /// GPU app, scaled by the GPU and memory clocks, never more than its latency). Split
    /// fits learned from a few noisy samples with waits in them can put nearly all of a
    /// GPU app's latency on the CPU, and a collision test that trusts them sees an
    /// inference that hardly holds the GPU. The manager sets it for the apps a re-plan
    /// raises (`Manager::raise_with_margin`); plans are otherwise made with the fits.
    pub cautious_device: bool,
}

impl AppProblem {
    /// The margin this app is planned with when nothing forces a thinner one.
    pub fn margin(&self, cfg: &OptimiserConfig) -> f64 {
        cfg.margin.max(self.min_margin())
    }

    /// The thinnest margin its accuracy floor is kept with: the spread's. Thinner tiers
    /// keep a floor at the cost of frames late; with a wide spread that cost is most
    /// frames, and a deadline comes before accuracy, so the floor is given up instead.
    pub fn min_margin(&self) -> f64 {
        if self.spread_margin.is_finite() {
            self.spread_margin.clamp(0.0, MAX_SPREAD_MARGIN)
        } else {
            0.0
        }
    }
}

/// Where the other apps hold the GPU for more than this share of the time, an app's
/// frames run into one of their inferences more often than a frame in a hundred, and such
/// a frame must still meet its deadline: its latency, plus for each other app the part of
/// that app's inference it shares the GPU with (the GPU is time-shared, so a collision
/// slows the frame by at most the shorter of the two device times), within its deadline
/// less the configured margin. The expected wait that the deadline test with the margin
/// budgets is an average; with an app of long inferences at a low rate beside one of
/// short ones at a high rate, it is a few milliseconds while one frame in six waits tens
/// of milliseconds and misses.
const COLLISION_SHARE: f64 = 0.01;

/// The largest margin a latency spread asks for: past it, a plan would give up too much
/// (accuracy, or serving the app at all) for frames that only the tail of the spread
/// makes late.
pub const MAX_SPREAD_MARGIN: f64 = 0.3;

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub domains: Vec<DomainOption>,
    pub apps: Vec<AppProblem>,
    pub power: PowerCoefs,
    pub power_cap: Option<Watts>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Frequencies of the domains the served apps use, and of the CPU domains only degraded
    /// apps use (see [`plan_degraded_domains`]); other domains stay with the base governor.
    pub freqs: Vec<(u32, Hz)>,
    /// Sub-network of every served app.
    pub subnets: Vec<(u32, u32)>,
    /// Apps whose targets the plan does not meet, with the cause. An app listed here and
    /// in `subnets` is planned in degraded form: its accuracy floor is given up so that its
    /// deadline is met (`DeadlineUnreachable`). One listed here and in `best_effort` runs
    /// at best effort. One listed here only is left to run its cheapest sub-network.
    pub unserved: Vec<(u32, UnservedCause)>,
    pub power: Watts,
    /// Sum over served apps of (1 + priority) x accuracy.
    pub score: f64,
    /// For each app of `subnets`, the deadline margin it was planned with: the configured
    /// margin, or a thinner one (down to 0) when the configured one leaves no feasible plan.
    #[serde(default)]
    pub margins: Vec<(u32, f64)>,
    /// Apps no sub-network can serve even with the floor given up and no margin: (app,
    /// sub-network), the fastest sub-network, with the clocks of the domains it uses set to
    /// minimise its latency (within the power cap).
    #[serde(default)]
    pub best_effort: Vec<(u32, u32)>,
}

impl Plan {
    /// The margin an app of `subnets` was planned with.
    pub fn margin_of(&self, app: u32) -> Option<f64> {
        self.margins.iter().find(|m| m.0 == app).map(|m| m.1)
    }

    /// The sub-network the plan runs an app at best effort with.
    pub fn best_effort_of(&self, app: u32) -> Option<u32> {
        self.best_effort.iter().find(|m| m.0 == app).map(|m| m.1)
    }
}

/// How one app enters a search: the deadline margin it must keep, the accuracy floor it
/// must meet (minus infinity when given up), and whether it runs at best effort (no
/// deadline or floor constraint: only its latency matters).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Terms {
    margin: f64,
    floor: f64,
    best_effort: bool,
}

impl Terms {
    /// No deadline or floor held: an app at best effort, or only the shared devices and
    /// the power cap checked.
    const BEST_EFFORT: Terms = Terms {
        margin: 0.0,
        floor: f64::NEG_INFINITY,
        best_effort: true,
    };
}

/// The index in `p.apps` of each app of `subnets`; None when one is not in the problem.
fn app_indices(p: &Problem, subnets: &[(u32, u32)]) -> Option<Vec<usize>> {
    subnets
        .iter()
        .map(|(id, _)| p.apps.iter().position(|a| a.id == *id))
        .collect()
}

/// The margins tried, as fractions of the configured one, before an app is degraded.
const MARGIN_TIERS: [f64; 5] = [1.0, 0.75, 0.5, 0.25, 0.0];

/// Grid axes and per-app constants derived from a problem for a given set of served apps.
struct Prepared<'a> {
    p: &'a Problem,
    cfg: OptimiserConfig,
    apps: Vec<usize>,
    /// Per prepared app: its margin, floor and best-effort flag.
    terms: Vec<Terms>,
    /// Per prepared app: whether it time-shares the planned GPU.
    gpu_user: Vec<bool>,
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
    /// Per domain of the problem and entry of its table: (dynamic, idle) power shape.
    shapes: Vec<Vec<(f64, f64)>>,
    max_subnets: usize,
    /// Apps of the problem that use the GPU but are not planned here (see
    /// [`Prepared::with_background`]).
    background: Vec<usize>,
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
    /// Flattened [app][subnet]: feasible with the least interference the other apps can
    /// cause, marginal power, CPU share (latency / period), GPU share (device time /
    /// period), the most GPU share of the other apps it tolerates (see
    /// [`Prepared::eval`]), and latency alone.
    ok: Vec<bool>,
    dp: Vec<f64>,
    share: Vec<f64>,
    gshare: Vec<f64>,
    tol: Vec<f64>,
    lat: Vec<f64>,
    /// Device time per inference for the collision test: `gshare` times the period, or
    /// more for an app planned with [`AppProblem::cautious_device`].
    cdev: Vec<f64>,
    /// The GPU share of the apps that run beside the planned ones.
    background: f64,
    /// Their device time per inference.
    background_dev: Vec<f64>,
}

fn speed(d: &DomainOption, f: Hz) -> f64 {
    f.as_f64() / d.max_freq.as_f64().max(1.0)
}

/// Each app's terms as configured: the configured margin, its own floor, no best effort.
fn configured_terms(p: &Problem, cfg: &OptimiserConfig, apps: &[usize]) -> Vec<Terms> {
    apps.iter()
        .map(|a| Terms {
            margin: p.apps[*a].margin(cfg),
            floor: p.apps[*a].accuracy_floor,
            best_effort: false,
        })
        .collect()
}

impl<'a> Prepared<'a> {
    fn new(p: &'a Problem, cfg: OptimiserConfig, apps: Vec<usize>) -> Prepared<'a> {
        let terms = configured_terms(p, &cfg, &apps);
        Prepared::with_terms(p, cfg, apps, terms)
    }

    fn with_terms(
        p: &'a Problem,
        cfg: OptimiserConfig,
        apps: Vec<usize>,
        terms: Vec<Terms>,
    ) -> Prepared<'a> {
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
                    p.power.domain_power(d.id, d.util, d.speed)
                })
                .sum::<f64>();
        // Per domain and table entry: dynamic and idle power over those at the highest
        // clock (see `VoltageCurve`).
        let shapes = p
            .domains
            .iter()
            .map(|d| {
                let c = p.power.curve(d.id);
                d.freqs
                    .iter()
                    .map(|f| {
                        let s = speed(d, *f).max(1e-6);
                        (c.dynamic(s), c.idle(s))
                    })
                    .collect()
            })
            .collect();
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
        let gpu_user = apps
            .iter()
            .map(|a| gpu.is_some() && p.apps[*a].devices.gpu)
            .collect();
        Prepared {
            p,
            cfg,
            apps,
            terms,
            gpu_user,
            gpu,
            mem,
            cpus,
            app_cpus,
            levels,
            level_cpus,
            fixed_power,
            shapes,
            max_subnets,
            background: Vec::new(),
        }
    }

    /// The same, with every other app of the problem that uses the GPU counted as a load
    /// beside the planned ones: its lightest sub-network's device time over its period.
    /// An app a plan leaves out (degraded, at best effort, or with no sub-network at its
    /// floor) still runs its inferences, and the planned apps wait behind them; the
    /// latency fits are learned net of that wait, so a plan that does not budget it
    /// misses where it looks safe, for as long as the set stays as it is.
    fn with_background(mut self) -> Prepared<'a> {
        self.background = (0..self.p.apps.len())
            .filter(|a| self.gpu.is_some() && self.p.apps[*a].devices.gpu && !self.apps.contains(a))
            .collect();
        self
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
    ///
    /// GPU time-sharing is planned explicitly. An app's device time per inference is the
    /// GPU and memory-bound part of its latency model (`gpu_ms * r_gpu + mem_ms * r_mem`,
    /// scaled up to the constraint latency when the cautious fit is the larger); its GPU
    /// share is that over its period. While another app's inference holds the GPU, an
    /// inference's device part is slowed. With `u` the other apps' GPU share, the
    /// expected wait is taken as `device * u / (1 - u)` (the device time-shared with a load
    /// `u`: small while `u` is small, unbounded as the GPU saturates, where queues build
    /// and every app misses), so an app's latency with interference is `latency + device *
    /// u / (1 - u)`, and it meets its deadline when the others' share is at most
    /// `tol = slack / (device + slack)`, `slack = deadline * (1 - margin) - latency`. Here a
    /// sub-network is `ok` when it meets that against the least share the other apps can
    /// have (each at its lightest sub-network above its floor), which only grows as clocks
    /// fall, so the deadline pruning of the walk stays valid; the sub-networks actually
    /// chosen are checked together by [`Prepared::gpu_fits`].
    fn eval(&self, pt: &Point, out: &mut PointEval, bound: f64) -> Status {
        let p = self.p;
        let n = self.max_subnets;
        let len = self.apps.len() * n;
        for v in [
            &mut out.dp,
            &mut out.share,
            &mut out.gshare,
            &mut out.tol,
            &mut out.lat,
            &mut out.cdev,
        ] {
            v.clear();
            v.resize(len, 0.0);
        }
        out.ok.clear();
        out.ok.resize(len, false);
        let (rg, _) = self.freq(self.gpu, pt.gpu);
        let (rm, _) = self.freq(self.mem, pt.mem);
        let (bg, ig) = self
            .gpu
            .map_or((0.0, 0.0), |i| p.power.domain(p.domains[i].id));
        let (bm, im) = self
            .mem
            .map_or((0.0, 0.0), |i| p.power.domain(p.domains[i].id));
        let shape = |d: Option<usize>, idx: usize| {
            d.and_then(|i| self.shapes[i].get(idx).copied())
                .unwrap_or((1.0, 1.0))
        };
        let ((dg, idg), (dm, idm)) = (shape(self.gpu, pt.gpu), shape(self.mem, pt.mem));
        let mut base = self.fixed_power + ig * idg + im * idm;
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
            let (dc, idc) = self.shapes[*i][pt.cpus[k]];
            base += idle * idc;
            cr[k] = 1.0 / s;
            cw[k] = b * dc / d.cpu_count.max(1) as f64;
        }
        out.base_power = base;
        if base > bound {
            return Status::Pruned;
        }
        // First pass: latency, device time and power of every (app, sub-network), and the
        // least GPU share of each app above its floor.
        let mut least_total = 0.0;
        let mut least_own = [0.0f64; 16];
        let mut least_dev_own = [0.0f64; 16];
        let mut least_vec;
        let mut least_dev_vec;
        let (least, least_dev): (&mut [f64], &mut [f64]) = if self.apps.len() <= 16 {
            (
                &mut least_own[..self.apps.len()],
                &mut least_dev_own[..self.apps.len()],
            )
        } else {
            least_vec = vec![0.0; self.apps.len()];
            least_dev_vec = vec![0.0; self.apps.len()];
            (&mut least_vec[..], &mut least_dev_vec[..])
        };
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
            let floor = self.terms[ai].floor;
            let mut lightest = f64::INFINITY;
            let mut lightest_c = f64::INFINITY;
            for (si, s) in app.subnets.iter().enumerate() {
                let c = &s.coefs;
                let lat = s.latency_ms(r);
                let j = ai * n + si;
                out.lat[j] = lat;
                out.share[j] = lat / period;
                // Its device part: the GPU is busy for all of it, memory-bound stalls
                // included, in the capacity test and in the power below alike.
                let device = c.gpu_ms * rg + c.mem_ms * rm;
                if self.gpu_user[ai] {
                    let split = c.latency_ms(r);
                    let dev = if split > 1e-12 {
                        device * (lat / split).max(1.0)
                    } else {
                        0.0
                    };
                    out.gshare[j] = dev / period;
                    out.cdev[j] = out.gshare[j] * period;
                    if app.cautious_device && s.declared_ms > 0.0 {
                        let d = LatencyCoefs::seed(s.declared_ms, app.devices);
                        let declared = d.gpu_ms * rg + d.mem_ms * rm;
                        out.cdev[j] = out.cdev[j].max(declared.min(lat));
                    }
                    if s.accuracy >= floor {
                        lightest = lightest.min(out.gshare[j]);
                        lightest_c = lightest_c.min(out.cdev[j]);
                    }
                }
                // Its thread holds a CPU for the whole inference (as the capacity test
                // has it): a CUDA host thread spins while the GPU works.
                let cpu_busy = if app.devices.cpu {
                    lat
                } else {
                    c.cpu_ms * rc + c.fixed_ms
                };
                let gpu_busy = if self.gpu_user[ai] {
                    device
                } else {
                    c.gpu_ms * rg
                };
                out.dp[j] = (bg * dg * gpu_busy + wc * cpu_busy + bm * dm * c.mem_ms * rm) / period;
            }
            least[ai] = if lightest.is_finite() { lightest } else { 0.0 };
            least_dev[ai] = if lightest_c.is_finite() {
                lightest_c
            } else {
                0.0
            };
            least_total += least[ai];
        }
        out.background = 0.0;
        out.background_dev.clear();
        for a in &self.background {
            let app = &p.apps[*a];
            let dev = app
                .subnets
                .iter()
                .map(|s| s.coefs.gpu_ms * rg + s.coefs.mem_ms * rm)
                .fold(f64::INFINITY, f64::min);
            if dev.is_finite() {
                out.background += dev / app.period_ms.max(1e-6);
                out.background_dev.push(dev);
            }
        }
        least_total += out.background;
        // Second pass: deadlines, with the least interference the others can cause.
        for (ai, a) in self.apps.iter().enumerate() {
            let app = &p.apps[*a];
            let t = self.terms[ai];
            // An app's inferences run one after another: one that takes longer than its
            // period falls behind whatever its deadline, as frames queue up.
            let bound_ms = app.deadline_ms.min(app.period_ms) * (1.0 - t.margin);
            let others = least_total - least[ai];
            let period = app.period_ms.max(1e-6);
            let mut any = false;
            for (si, s) in app.subnets.iter().enumerate() {
                let j = ai * n + si;
                if t.best_effort {
                    out.tol[j] = f64::INFINITY;
                    out.ok[j] = true;
                    any = true;
                    continue;
                }
                let dev = out.gshare[j] * period;
                let cdev = out.cdev[j];
                let slack = bound_ms - out.lat[j];
                out.tol[j] = if slack < 0.0 {
                    -1.0
                } else if dev > 1e-12 {
                    slack / (dev + slack)
                } else {
                    f64::INFINITY
                };
                let collision = if others > COLLISION_SHARE {
                    self.collision(ai, cdev, |o| least_dev[o], &out.background_dev)
                } else {
                    0.0
                };
                out.ok[j] = s.accuracy >= t.floor
                    && out.tol[j] >= others - 1e-12
                    && out.lat[j] + collision <= self.collision_bound(ai) + 1e-9;
                any |= out.ok[j];
            }
            if !any {
                return Status::DeadlineMissed;
            }
        }
        Status::Evaluated
    }

    /// Whether the chosen sub-networks meet every deadline together, with the interference
    /// of the others' GPU shares. `swap` replaces one app's choice for the test.
    fn gpu_fits(&self, e: &PointEval, choice: &[usize], swap: Option<(usize, usize)>) -> bool {
        if self.gpu.is_none() {
            return true;
        }
        let n = self.max_subnets;
        let pick = |ai: usize| match swap {
            Some((x, s)) if x == ai => s,
            _ => choice[ai],
        };
        let total: f64 = e.background
            + (0..choice.len())
                .map(|ai| e.gshare[ai * n + pick(ai)])
                .sum::<f64>();
        (0..choice.len()).all(|ai| {
            let j = ai * n + pick(ai);
            if !self.gpu_user[ai] {
                return true;
            }
            let others = total - e.gshare[j];
            if others > e.tol[j] + 1e-9 {
                return false;
            }
            if others <= COLLISION_SHARE || self.terms[ai].best_effort {
                return true;
            }
            let device = |a: usize| e.cdev[a * n + pick(a)];
            let collision = self.collision(ai, device(ai), device, &e.background_dev);
            e.lat[j] + collision <= self.collision_bound(ai) + 1e-9
        })
    }

    /// What one collision with each other GPU user adds to an inference of prepared app
    /// `ai` whose device time is `dev` ms (see [`COLLISION_SHARE`]): the shorter of `dev`
    /// and each other's device time (`other_dev` of a prepared app, then `background`),
    /// weighted by [`Prepared::collision_weight`].
    fn collision(
        &self,
        ai: usize,
        dev: f64,
        other_dev: impl Fn(usize) -> f64,
        background: &[f64],
    ) -> f64 {
        let sum: f64 = (0..self.apps.len())
            .filter(|o| *o != ai && self.gpu_user[*o])
            .map(|o| dev.min(other_dev(o)))
            .chain(background.iter().map(|b| dev.min(*b)))
            .sum();
        self.collision_weight(ai) * sum
    }

    /// How much of a collision prepared app `ai` is planned for: all of it at its full
    /// margin, less in proportion on the thinner tiers (a set that fits no other way), none
    /// at no margin, where only the expected wait is budgeted.
    fn collision_weight(&self, ai: usize) -> f64 {
        let full = self.p.apps[self.apps[ai]].margin(&self.cfg);
        if full <= 0.0 {
            return 1.0;
        }
        (self.terms[ai].margin / full).clamp(0.0, 1.0)
    }

    /// The latency an inference of prepared app `ai` must keep when it collides with one
    /// inference of each other app on the GPU (see [`COLLISION_SHARE`]): its deadline less
    /// the configured margin, or less the thinner margin it is planned with.
    fn collision_bound(&self, ai: usize) -> f64 {
        let t = self.terms[ai];
        if t.best_effort {
            return f64::INFINITY;
        }
        self.p.apps[self.apps[ai]].deadline_ms * (1.0 - t.margin.min(self.cfg.margin))
    }

    fn capacity(&self, slot: usize) -> f64 {
        if slot == 0 {
            1.0
        } else {
            self.p.domains[self.cpus[slot - 1]].online_cpus as f64
        }
    }

    /// Adds app `ai`'s shares to the device loads (slot 0: GPU, slot 1 + k: planned CPU
    /// k): `gpu` its device time over its period, `share` its latency over its period (its
    /// thread holds a CPU for the whole inference, waiting for the GPU included).
    fn add_load(&self, loads: &mut [f64], ai: usize, gpu: f64, share: f64) {
        let app = &self.p.apps[self.apps[ai]];
        if self.gpu_user[ai] {
            loads[0] += gpu;
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
            self.add_load(&mut loads, ai, e.gshare[ai * n + b], e.share[ai * n + b]);
            choice.push(b);
        }
        if !self.loads_fit(&loads) || !self.gpu_fits(e, choice, None) {
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
            self.add_load(&mut loads, ai, e.gshare[ai * n + si], e.share[ai * n + si]);
            choice.push(si);
        }
        let capped = self.p.power_cap.is_some_and(|c| power > c.0);
        (self.loads_fit(&loads) && !capped && self.gpu_fits(e, choice, None)).then_some(power)
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
    fn load_step(&self, loads: &[f64], ai: usize, dgpu: f64, delta: f64) -> Option<f64> {
        let app = &self.p.apps[self.apps[ai]];
        let mut used: f64 = 0.0;
        if self.gpu_user[ai] {
            if loads[0] + dgpu > self.capacity(0) + 1e-9 {
                return None;
            }
            used = used.max(dgpu / self.capacity(0));
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
            self.add_load(&mut loads, ai, e.gshare[ai * n + s], e.share[ai * n + s]);
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
                    let Some(used) = self.load_step(
                        &loads,
                        ai,
                        e.gshare[j] - e.gshare[ai * n + cur],
                        e.share[j] - e.share[ai * n + cur],
                    ) else {
                        continue;
                    };
                    if !self.gpu_fits(e, choice, Some((ai, si))) {
                        continue;
                    }
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
            self.add_load(
                &mut loads,
                ai,
                e.gshare[ai * n + si] - e.gshare[ai * n + cur],
                e.share[ai * n + si] - e.share[ai * n + cur],
            );
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
            self.add_load(&mut loads, ai, e.gshare[j], e.share[j]);
        }
        let capped = self.p.power_cap.is_some_and(|c| power > c.0);
        (self.loads_fit(&loads) && !capped && self.gpu_fits(e, choice, None)).then_some(power)
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
            self.add_load(&mut loads, 0, e.gshare[si], e.share[si]);
            e.ok[si] && self.loads_fit(&loads)
        })
    }

    /// Best effort for the prepared apps (all flagged `best_effort`): each runs its fastest
    /// sub-network at the point that minimises the worst latency over deadline, within
    /// the power cap (the highest clocks when they fit under it); ties go to less power.
    ///
    /// The fastest is the one the app declared fastest (on a tie, the one predicted
    /// fastest), not the one the fits predict fastest: each sub-network's fit learns from
    /// the frames it ran, and a sub-network last run while five apps queued for a GPU
    /// capped at half its clock learns that wait as its own latency, while a larger one
    /// last run on an idle GPU does not. At best effort, where every app is there because
    /// the GPU cannot serve them all, the fits then sent apps to larger sub-networks and
    /// the queue grew: in generated seed 319 (201-400), under a GPU cap, 0.87 % of all
    /// frames missed against 0.27 % with the smallest (in another learning history of the
    /// same scenario, three apps missed a third of their frames for 20 s).
    fn best_effort(&self) -> Option<(Point, Vec<usize>, f64, f64)> {
        let n = self.max_subnets;
        let pick = |e: &PointEval| -> (Vec<usize>, f64, f64) {
            let mut choice = Vec::with_capacity(self.apps.len());
            let mut power = e.base_power;
            let mut worst: f64 = 0.0;
            for (ai, a) in self.apps.iter().enumerate() {
                let app = &self.p.apps[*a];
                let si = declared_fastest(app, &e.lat[ai * n..]);
                power += e.dp[ai * n + si];
                worst = worst.max(e.lat[ai * n + si] / app.deadline_ms.max(1e-9));
                choice.push(si);
            }
            (choice, power, worst)
        };
        let cap = self.p.power_cap.map_or(f64::INFINITY, |c| c.0);
        let mut e = PointEval::default();
        let top = self.max_point();
        self.eval(&top, &mut e, f64::INFINITY);
        let (choice, power, _) = pick(&e);
        if power <= cap {
            let score = self.score(&choice);
            return Some((top, choice, power, score));
        }
        let mut best: Option<(Point, Vec<usize>, f64, f64)> = None;
        self.walk(f64::INFINITY, |pt, e, bound| {
            let (choice, power, worst) = pick(e);
            let better = power <= cap
                && best.as_ref().is_none_or(|(_, _, bp, bw)| {
                    worst < *bw - 1e-9 || (worst <= *bw + 1e-9 && power < *bp)
                });
            if better {
                best = Some((pt.clone(), choice, power, worst));
            }
            Flow::Bound(bound)
        });
        let (pt, choice, power, _) = best?;
        let score = self.score(&choice);
        Some((pt, choice, power, score))
    }

    /// The frequencies of a point, for the plan.
    fn freqs_of(&self, pt: &Point) -> Vec<(u32, Hz)> {
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
        freqs
    }

    fn plan(
        &self,
        sol: (Point, Vec<usize>, f64, f64),
        unserved: Vec<(u32, UnservedCause)>,
    ) -> Plan {
        let (pt, choice, pw, sc) = sol;
        Plan {
            freqs: self.freqs_of(&pt),
            subnets: self
                .apps
                .iter()
                .zip(&choice)
                .map(|(a, s)| (self.p.apps[*a].id, *s as u32))
                .collect(),
            unserved,
            power: Watts(pw),
            score: sc,
            margins: self
                .apps
                .iter()
                .zip(&self.terms)
                .map(|(a, t)| (self.p.apps[*a].id, t.margin))
                .collect(),
            best_effort: Vec::new(),
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

/// How the optimiser can take an app on, judged alone at the highest allowed clocks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    /// No sub-network reaches its floor.
    FloorUnreachable,
    /// Planned with this margin (the configured one, or the largest thinner tier that
    /// leaves it a feasible sub-network), keeping its floor or, when no sub-network above
    /// the floor can meet the deadline even with no margin, giving the floor up.
    Planned { margin: f64, floor_kept: bool },
    /// Even its fastest sub-network misses the deadline at the highest clocks.
    BestEffort,
}

fn classify(p: &Problem, cfg: &OptimiserConfig, i: usize) -> Class {
    let app = &p.apps[i];
    if app.subnets.iter().all(|s| s.accuracy < app.accuracy_floor) {
        return Class::FloorUnreachable;
    }
    for floor_kept in [true, false] {
        let floor = if floor_kept {
            app.accuracy_floor
        } else {
            f64::NEG_INFINITY
        };
        let fits = |margin: f64| {
            let terms = Terms {
                margin,
                floor,
                best_effort: false,
            };
            Prepared::with_terms(p, *cfg, vec![i], vec![terms]).feasible_alone_at_max()
        };
        let mut above = None;
        for tier in MARGIN_TIERS {
            let mut margin = app.margin(cfg) * tier;
            // A floor is kept with no thinner margin than the spread's (see `min_margin`).
            let at_min = floor_kept && margin <= app.min_margin();
            if at_min {
                margin = app.min_margin();
            }
            if fits(margin) {
                // Below the configured margin, the margin left matters more than energy:
                // the cheapest point meeting a coarse tier sits at its edge, where the
                // model's error and the latency's spread miss often. Refine between the
                // tier that fits and the one above, to the largest margin that works.
                let margin = match above {
                    Some(hi) => refine_margin(margin, hi, &fits),
                    None => margin,
                };
                return Class::Planned { margin, floor_kept };
            }
            above = Some(margin);
            if at_min {
                break;
            }
        }
    }
    Class::BestEffort
}

/// An app planned with a thinner margin than its own (no plan gives it its margin, alone
/// at the highest clocks or beside the others) that measurably misses
/// ([`AppProblem::missing`]) has the domains it uses planned at their highest allowed
/// clocks: the problem with those domains' tables cut to their top entry, or None where no
/// app of `apps` (planned with `terms`) is in that state, or a power cap is in force (the
/// cap comes first, and a plan pinned while its predicted power sat at the cap and
/// unpinned when it crossed it took the GPU up and down 31 times a minute in generated
/// seed 147). Where the top is infeasible for another reason, the plan is made without
/// this.
///
/// Below its margin, a plan still takes the cheapest point the fits predict to meet the
/// thinner one, and how much each clock matters is then the fits' word alone. With frames
/// that scatter by 9 % and CPU bursts beside them, they put most of a GPU-bound app's
/// latency in its fixed part: plans took the GPU one to three steps down for an app that
/// only the highest clocks serve, and it missed 10-15 % of its frames for 80 s, as its
/// widened margin changed nothing that fits at the highest clocks (generated seed 549,
/// where the oracle misses 0.4 %). Deadlines come before energy; once the app stops
/// missing and its margin narrows back, plans are the fits' again.
fn pin_thin_and_missing(
    p: &Problem,
    cfg: &OptimiserConfig,
    apps: &[usize],
    terms: &[Terms],
) -> Option<Problem> {
    let thin = |(a, t): &(&usize, &Terms)| thin_and_missing(&p.apps[**a], cfg, t.margin);
    if p.power_cap.is_some() || !apps.iter().zip(terms).any(|x| thin(&x)) {
        return None;
    }
    let mut pinned = p.clone();
    for (a, _) in apps.iter().zip(terms).filter(thin) {
        for d in pinned.domains.iter_mut() {
            if uses_domain(&p.apps[*a], d) {
                let top = d.freqs.len().saturating_sub(1);
                d.freqs.drain(..top);
            }
        }
    }
    Some(pinned)
}

/// An app planned with `margin`, thinner than its own, that measurably misses: the domains
/// it uses are pinned at their highest clocks (see [`pin_thin_and_missing`]).
fn thin_and_missing(app: &AppProblem, cfg: &OptimiserConfig, margin: f64) -> bool {
    app.missing && margin < app.margin(cfg) - 1e-9
}

/// Whether `app`'s inferences run on domain `d`.
fn uses_domain(app: &AppProblem, d: &DomainOption) -> bool {
    match d.kind {
        DomainKind::Gpu => app.devices.gpu,
        DomainKind::Memory => true,
        DomainKind::Cpu => {
            app.devices.cpu && (app.cpu_domains.is_empty() || app.cpu_domains.contains(&d.id))
        }
    }
}

/// Whether `plan` has domain `domain` pinned at its highest clock for an app planned below
/// its margin that measurably misses (see [`pin_thin_and_missing`]) and of which
/// `still_missing` says so too.
pub fn pinned_for_misses(
    p: &Problem,
    cfg: &OptimiserConfig,
    plan: &Plan,
    domain: u32,
    still_missing: impl Fn(u32) -> bool,
) -> bool {
    if p.power_cap.is_some() {
        return false;
    }
    let Some(d) = p.domains.iter().find(|d| d.id == domain) else {
        return false;
    };
    plan.margins.iter().any(|&(id, margin)| {
        p.apps.iter().find(|a| a.id == id).is_some_and(|a| {
            thin_and_missing(a, cfg, margin) && uses_domain(a, d) && still_missing(id)
        })
    })
}

/// The largest margin in `[lo, hi)` for which `fits` holds, `fits(lo)` being known to
/// hold: bisection to 1/64 of the interval, keeping the side that fits.
fn refine_margin(mut lo: f64, mut hi: f64, fits: &impl Fn(f64) -> bool) -> f64 {
    for _ in 0..6 {
        let mid = 0.5 * (lo + hi);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Chooses sub-networks and frequencies for every app of the problem. Apps that cannot be
/// served are listed in `unserved` with the cause; the rest are planned.
///
/// Degradation is graceful. An app that no sub-network above its floor can serve with the
/// configured margin, even alone at the highest clocks, is planned with the largest
/// thinner margin that works (down to none); if none does, its floor is given up
/// (`DeadlineUnreachable`, planned at the most accurate sub-network that meets the
/// deadline); if even its fastest sub-network misses, it runs that sub-network at best
/// effort, the clocks of its domains set to minimise its latency. Apps that cannot all be
/// served together first get thinner margins, then the least important is
/// `DegradedForPriority`, repeatedly, until the rest fit; a degraded app that measurably
/// misses ([`AppProblem::missing`]) runs at best effort beside them (see
/// [`add_best_effort`]): deadlines before energy.
pub fn optimise(p: &Problem, cfg: &OptimiserConfig) -> Plan {
    let mut unserved = Vec::new();
    let mut candidates: Vec<(usize, Terms)> = Vec::new();
    let mut best_effort: Vec<usize> = Vec::new();
    for (i, app) in p.apps.iter().enumerate() {
        match classify(p, cfg, i) {
            Class::FloorUnreachable => {
                unserved.push((app.id, UnservedCause::AccuracyFloorUnreachable));
            }
            Class::Planned { margin, floor_kept } => {
                if !floor_kept {
                    unserved.push((app.id, UnservedCause::DeadlineUnreachable));
                }
                let floor = if floor_kept {
                    app.accuracy_floor
                } else {
                    f64::NEG_INFINITY
                };
                candidates.push((
                    i,
                    Terms {
                        margin,
                        floor,
                        best_effort: false,
                    },
                ));
            }
            Class::BestEffort => {
                unserved.push((app.id, UnservedCause::DeadlineUnreachable));
                best_effort.push(i);
            }
        }
    }
    let mut plan = loop {
        if candidates.is_empty() {
            let prep = Prepared::new(p, *cfg, Vec::new());
            break Plan {
                freqs: Vec::new(),
                subnets: Vec::new(),
                unserved,
                power: Watts(prep.fixed_power),
                score: 0.0,
                margins: Vec::new(),
                best_effort: Vec::new(),
            };
        }
        let apps: Vec<usize> = candidates.iter().map(|c| c.0).collect();
        let mut solved = None;
        let mut tried: Option<Vec<Terms>> = None;
        for tier in MARGIN_TIERS {
            let terms: Vec<Terms> = candidates
                .iter()
                .map(|(a, t)| Terms {
                    margin: if t.floor.is_finite() {
                        t.margin
                            .min(p.apps[*a].margin(cfg) * tier)
                            .max(p.apps[*a].min_margin().min(t.margin))
                    } else {
                        t.margin.min(p.apps[*a].margin(cfg) * tier)
                    },
                    ..*t
                })
                .collect();
            if tried.as_ref() == Some(&terms) {
                continue;
            }
            tried = Some(terms.clone());
            let prep = Prepared::with_terms(p, *cfg, apps.clone(), terms.clone()).with_background();
            if let Some(sol) = prep.solve() {
                let pinned = pin_thin_and_missing(p, cfg, &apps, &terms).and_then(|q| {
                    let prep =
                        Prepared::with_terms(&q, *cfg, apps.clone(), terms).with_background();
                    prep.solve().map(|sol| prep.plan(sol, Vec::new()))
                });
                solved = Some(pinned.unwrap_or_else(|| prep.plan(sol, Vec::new())));
                break;
            }
        }
        if let Some(mut plan) = solved {
            plan.unserved = unserved;
            break plan;
        }
        // Floors before deadlines: while one of the least important apps keeps an accuracy
        // floor that rules sub-networks out, it gives the floor up (the last registered
        // first) and the set is solved again; only when none of them has one left is an
        // app degraded. Degrading makes no room on the GPU (a degraded app still runs its
        // cheapest sub-network, floor or not), it only stops planning for its deadline;
        // a lighter sub-network does make room.
        let least = candidates
            .iter()
            .map(|(a, _)| p.apps[*a].priority)
            .min()
            .expect("candidates is not empty");
        let floored = candidates
            .iter()
            .enumerate()
            .filter(|(_, (a, t))| {
                let app = &p.apps[*a];
                app.priority == least
                    && t.floor.is_finite()
                    && app.subnets.iter().any(|s| s.accuracy < t.floor)
            })
            .max_by_key(|(_, (a, _))| p.apps[*a].id)
            .map(|(pos, _)| pos);
        if let Some(pos) = floored {
            let (a, t) = &mut candidates[pos];
            t.floor = f64::NEG_INFINITY;
            t.margin = p.apps[*a].margin(cfg);
            unserved.push((p.apps[*a].id, UnservedCause::FloorGivenUpToShare));
            continue;
        }
        // Degrade the least important app (on a tie, the one registered last: the highest id).
        let (pos, _) = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, (a, _))| (p.apps[*a].priority, std::cmp::Reverse(p.apps[*a].id)))
            .expect("candidates is not empty");
        let (dropped, _) = candidates.remove(pos);
        let id = p.apps[dropped].id;
        unserved.retain(|u| u.0 != id);
        unserved.push((id, UnservedCause::DegradedForPriority));
        // Once it measurably misses, it runs at best effort beside the others: left to the
        // clocks planned for them, it would miss for as long as the set stays too big (a
        // stuck state, as its misses teach its fits that it is slower still). While it
        // meets its deadline at their clocks, those clocks are kept, and its fits learn
        // what they cost it.
        if p.apps[dropped].missing {
            best_effort.push(dropped);
        }
    };
    // A degraded app that the fits predict to miss at the clocks planned for the others
    // runs at best effort at once, not after it has missed: degraded when its deadline
    // tightened, an app was left to clocks the plan lowered for the app it still served,
    // and missed every frame until its misses widened its margin (generated seed 131).
    for (id, cause) in &plan.unserved {
        let Some(a) = p.apps.iter().position(|x| x.id == *id) else {
            continue;
        };
        if *cause == UnservedCause::DegradedForPriority
            && !best_effort.contains(&a)
            && !meets_at(p, cfg, &plan.freqs, a)
        {
            best_effort.push(a);
        }
    }
    if !best_effort.is_empty() {
        add_best_effort(p, cfg, &mut plan, best_effort);
    }
    plan_degraded_domains(p, cfg, &mut plan);
    plan
}

/// A degraded app (`DegradedForPriority`, not at best effort) still runs, its cheapest
/// sub-network at the clocks planned for the others. A domain it uses that no served app
/// does is planned too: at the lowest clock at which each degraded app there is predicted
/// to meet its deadline with its margin (without it where no clock does so with it). The
/// GPU and memory come first, then the CPU domains, each planned with those before it.
/// - A CPU domain left to the base governor moved with every frame: an inference thread
///   spinning while the GPU works keeps its CPU busy, schedutil climbs a table step per
///   tick while it does, and waits to come down between frames (generated seeds 10, 171
///   and 190: 14-22 changes a minute on the cluster in phases where nothing changed).
/// - The GPU left to the base governor ran at its lowest clock: an app's frames keep it
///   busy for a fraction of each period, which is all the base governor sees, while the
///   check that sends degraded apps to best effort assumes the domains no plan sets at
///   their highest clocks. Generated seed 419 (one app under a 5.9-W cap, beside bursts
///   of other programs' tasks) was degraded with the GPU at 599 MHz, and missed every
///   frame for 3 s: 3.30 % missed against the oracle's 0.17 %, never back.
///
/// A domain where one of them is predicted to miss at every clock stays with the base
/// governor, as that check assumes. The power cap is left out of the check: the base
/// governor would run the domain at up to its highest clock.
fn plan_degraded_domains(p: &Problem, cfg: &OptimiserConfig, plan: &mut Plan) {
    let degraded: Vec<usize> = plan
        .unserved
        .iter()
        .filter(|(id, cause)| {
            *cause == UnservedCause::DegradedForPriority
                && !plan.best_effort.iter().any(|b| b.0 == *id)
        })
        .filter_map(|(id, _)| p.apps.iter().position(|x| x.id == *id))
        .collect();
    if degraded.is_empty() {
        return;
    }
    // Deadlines only: the base governor would run the domain at up to its highest clock.
    let uncapped;
    let p = if p.power_cap.is_some() {
        uncapped = Problem {
            power_cap: None,
            ..p.clone()
        };
        &uncapped
    } else {
        p
    };
    let uses = |a: usize, d: &DomainOption| match d.kind {
        DomainKind::Gpu | DomainKind::Memory => p.apps[a].devices.gpu,
        DomainKind::Cpu => p.apps[a].cpu_domains.contains(&d.id),
    };
    let order = |d: &&DomainOption| match d.kind {
        DomainKind::Gpu => 0,
        DomainKind::Memory => 1,
        DomainKind::Cpu => 2,
    };
    let mut domains: Vec<&DomainOption> = p.domains.iter().collect();
    domains.sort_by_key(order);
    for dom in domains {
        if plan.freqs.iter().any(|f| f.0 == dom.id) {
            continue;
        }
        // The clock it needs; None where an app there misses at every clock.
        let mut pin: Option<Option<Hz>> = None;
        for &a in degraded.iter().filter(|a| uses(**a, dom)) {
            // Faster clocks never predict a slower inference: the first that meets, by
            // bisection.
            let at = |margin: f64| {
                let i = dom.freqs.partition_point(|f| {
                    let mut freqs = plan.freqs.clone();
                    freqs.push((dom.id, *f));
                    !meets_with(p, cfg, &freqs, a, margin)
                });
                dom.freqs.get(i).copied()
            };
            let need = at(p.apps[a].margin(cfg)).or_else(|| at(0.0));
            // Another degraded app there: the faster of the two.
            pin = Some(match pin {
                Some(f) => f.zip(need).map(|(x, y)| x.max(y)),
                None => need,
            });
        }
        if let Some(Some(f)) = pin {
            plan.freqs.push((dom.id, f));
        }
    }
    plan.freqs.sort_unstable_by_key(|f| f.0);
}

/// Whether app `a`'s cheapest sub-network is predicted to meet its deadline with `margin`
/// at `freqs`, the domains `freqs` does not name at their highest allowed clocks.
fn meets_with(
    p: &Problem,
    cfg: &OptimiserConfig,
    freqs: &[(u32, Hz)],
    a: usize,
    margin: f64,
) -> bool {
    let mut all = freqs.to_vec();
    for d in &p.domains {
        if !all.iter().any(|f| f.0 == d.id) {
            if let Some(top) = d.freqs.last() {
                all.push((d.id, *top));
            }
        }
    }
    let terms = vec![Terms {
        margin,
        floor: f64::NEG_INFINITY,
        best_effort: false,
    }];
    check_config(p, cfg, &all, &[(p.apps[a].id, 0)], vec![a], terms).is_some()
}

/// Whether app `a`'s cheapest sub-network is predicted to meet its deadline (no margin) at
/// `freqs`, the domains `freqs` does not name at their highest allowed clocks.
fn meets_at(p: &Problem, cfg: &OptimiserConfig, freqs: &[(u32, Hz)], a: usize) -> bool {
    meets_with(p, cfg, freqs, a, 0.0)
}

/// The sub-network an app runs at best effort: the one it declared fastest, on a tie the
/// one predicted fastest (`lat`: its predicted latencies, by sub-network, at the point);
/// see [`Prepared::best_effort`].
fn declared_fastest(app: &AppProblem, lat: &[f64]) -> usize {
    (0..app.subnets.len())
        .min_by(|x, y| {
            let (sx, sy) = (&app.subnets[*x], &app.subnets[*y]);
            sx.declared_ms
                .total_cmp(&sy.declared_ms)
                .then(lat[*x].total_cmp(&lat[*y]))
        })
        .unwrap_or(0)
}

/// Adds the best-effort apps to a plan: alone, the clocks that minimise their latency
/// within the power cap; beside served apps, the domains they use raised to the highest
/// allowed clocks (never slower for the served apps), under a power cap the highest that
/// keep the plan's predicted power, theirs included, under it.
fn add_best_effort(p: &Problem, cfg: &OptimiserConfig, plan: &mut Plan, apps: Vec<usize>) {
    let terms = vec![Terms::BEST_EFFORT; apps.len()];
    let prep = Prepared::with_terms(p, *cfg, apps, terms);
    let Some((pt, choice, power, _)) = (if plan.subnets.is_empty() {
        prep.best_effort()
    } else {
        let top = prep.max_point();
        let mut e = PointEval::default();
        prep.eval(&top, &mut e, f64::INFINITY);
        let n = prep.max_subnets;
        let choice: Vec<usize> = prep
            .apps
            .iter()
            .enumerate()
            .map(|(ai, a)| declared_fastest(&p.apps[*a], &e.lat[ai * n..]))
            .collect();
        Some((top, choice, plan.power.0, 0.0))
    }) else {
        return;
    };
    plan.best_effort = prep
        .apps
        .iter()
        .zip(&choice)
        .map(|(a, s)| (p.apps[*a].id, *s as u32))
        .collect();
    if plan.subnets.is_empty() {
        plan.freqs = prep.freqs_of(&pt);
        plan.power = Watts(power);
        return;
    }
    let raised_by = |steps: usize| {
        let mut freqs = plan.freqs.clone();
        for (id, top) in prep.freqs_of(&pt) {
            let table = &p
                .domains
                .iter()
                .find(|d| d.id == id)
                .expect("a prepared domain")
                .freqs;
            let at = table.iter().position(|f| *f == top).unwrap_or(0);
            let f = table[at.saturating_sub(steps)];
            match freqs.iter_mut().find(|x| x.0 == id) {
                Some(x) => x.1 = x.1.max(f),
                None => freqs.push((id, f)),
            }
        }
        freqs.sort_unstable_by_key(|f| f.0);
        freqs
    };
    let raised = if p.power_cap.is_none() {
        Some(raised_by(0))
    } else {
        // Under a power cap, the clocks a step lower at a time until the plan's predicted
        // power, the best-effort apps' included, fits under it. Left to the served apps'
        // clocks, a degraded app missed most of its frames under a cap far above what the
        // board drew (generated seed 141: a GPU cap, a 9.4 W cap, 4.5 W drawn).
        let all: Vec<(u32, u32)> = plan
            .subnets
            .iter()
            .chain(&plan.best_effort)
            .copied()
            .collect();
        let steps = p.domains.iter().map(|d| d.freqs.len()).max().unwrap_or(0);
        (0..steps)
            .map(raised_by)
            .find(|freqs| evaluate_resources(p, cfg, freqs, &all).is_some())
    };
    if let Some(freqs) = raised {
        plan.freqs = freqs;
        if let Some((power, _)) = evaluate_plan(p, cfg, plan, 0.0) {
            plan.power = power;
        }
    }
}

/// Predicted power of a plan in force under the current models, or None when it breaks a
/// constraint. Each app of `plan.subnets` is held to the margin it was planned with less
/// `slack` (hysteresis: a plan is adopted with its margins but kept while it holds with
/// thinner ones), to its floor unless the plan gave the floor up, and the apps together to
/// the shared devices and the power cap. Best-effort apps are not checked. An infinite
/// `slack` checks every app with no margin.
pub fn evaluate_plan(
    p: &Problem,
    cfg: &OptimiserConfig,
    plan: &Plan,
    slack: f64,
) -> Option<(Watts, f64)> {
    let apps = app_indices(p, &plan.subnets)?;
    let terms = plan
        .subnets
        .iter()
        .zip(&apps)
        .map(|((id, _), a)| {
            let relaxed = plan.unserved.iter().any(|u| u.0 == *id);
            Terms {
                // An infinite slack asks whether the plan holds with no margin.
                margin: if slack.is_finite() {
                    plan.margin_of(*id).unwrap_or(cfg.margin) - slack
                } else {
                    0.0
                },
                floor: if relaxed {
                    f64::NEG_INFINITY
                } else {
                    p.apps[*a].accuracy_floor
                },
                best_effort: false,
            }
        })
        .collect();
    check_config(p, cfg, &plan.freqs, &plan.subnets, apps, terms)
}

/// Predicted power of a plan with only its shared devices (the GPU's time, the CPUs'
/// capacity) and the power cap checked, latencies and floors aside; None when it breaks
/// one of them. Best-effort apps are not counted.
pub(crate) fn evaluate_plan_resources(
    p: &Problem,
    cfg: &OptimiserConfig,
    plan: &Plan,
) -> Option<(Watts, f64)> {
    evaluate_resources(p, cfg, &plan.freqs, &plan.subnets)
}

/// Predicted power of a given configuration with only the shared devices (the GPU's time,
/// the CPUs' capacity) and the power cap checked, latencies and floors aside; None when it
/// breaks one of them. `freqs` as for [`evaluate`].
pub fn evaluate_resources(
    p: &Problem,
    cfg: &OptimiserConfig,
    freqs: &[(u32, Hz)],
    subnets: &[(u32, u32)],
) -> Option<(Watts, f64)> {
    let apps = app_indices(p, subnets)?;
    let terms = vec![Terms::BEST_EFFORT; apps.len()];
    check_config(p, cfg, freqs, subnets, apps, terms)
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
    let apps = app_indices(p, subnets)?;
    let terms = configured_terms(p, cfg, &apps);
    check_config(p, cfg, freqs, subnets, apps, terms)
}

fn check_config(
    p: &Problem,
    cfg: &OptimiserConfig,
    freqs: &[(u32, Hz)],
    subnets: &[(u32, u32)],
    apps: Vec<usize>,
    terms: Vec<Terms>,
) -> Option<(Watts, f64)> {
    let choice: Vec<usize> = subnets.iter().map(|(_, s)| *s as usize).collect();
    for (a, s) in apps.iter().zip(&choice) {
        if *s >= p.apps[*a].subnets.len() {
            return None;
        }
    }
    let prep = Prepared::with_terms(p, *cfg, apps, terms).with_background();
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
