//! Models learned online from telemetry: latency of each app's sub-networks as a function of
//! the clocks, and board power as a function of clocks and utilisation. Both are linear in
//! their parameters and fitted by recursive least squares with exponential forgetting, so
//! they follow slow drift (temperature, other load) without storing history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Devices, DomainKind};
use crate::units::Watts;

/// Recursive least squares with forgetting over a handful of parameters, constrained to
/// non-negative parameters.
///
/// Every term these models fit is a cost that cannot be negative: a negative latency
/// coefficient would predict that slowing a clock speeds inference up, and the optimiser's
/// pruning relies on latency never rising with a clock. The constraint is enforced exactly:
/// the state is the information form of the exponentially weighted least-squares problem
/// (`A = sum lambda^k x x'`, `b = sum lambda^k x y`, plus the prior), and the parameters
/// are its non-negative least-squares solution (Lawson-Hanson active set), recomputed at
/// each update. Clipping the parameters of a covariance-form RLS instead, as an earlier
/// version did, lets the estimate and its covariance disagree: on closed-loop data, where
/// the clocks barely move, each later sample then pushed the clipped estimate further
/// from the data, and a latency model observed at a flat 50 ms predicted 15 s within
/// half a second (the daemon then declared the app's deadline unreachable).
///
/// Forgetting is directional: each sample discounts only the information along its own
/// regressor (`A <- A - (1 - lambda) A x x' A / x' A x + x x'`, and `b` alike), not the
/// whole matrix. Uniform forgetting would let everything learned at other operating points
/// and the prior itself decay whenever the clocks stay put, as they do under a stable
/// plan: the fit would wind up to whatever the last operating point allows, a
/// configuration already tried and found wanting would look promising again a few
/// seconds later, and the plans would cycle. With directional forgetting a direction the
/// data stops exciting keeps what was learned about it (or the prior), and the estimate
/// still follows drift at the operating point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rls {
    theta: Vec<f64>,
    /// Row-major n x n information matrix (inverse covariance) and its right-hand side.
    info: Vec<f64>,
    rhs: Vec<f64>,
    forgetting: f64,
}

impl Rls {
    /// `prior_var` is the initial covariance's diagonal, in units of the squared parameter
    /// per unit noise variance: small values trust the seed, large ones the data.
    pub fn new(theta: Vec<f64>, prior_var: &[f64], forgetting: f64) -> Rls {
        let n = theta.len();
        let theta: Vec<f64> = theta
            .into_iter()
            .map(|t| if t.is_finite() { t.max(0.0) } else { 0.0 })
            .collect();
        let prior_info: Vec<f64> = (0..n)
            .map(|i| {
                let v = prior_var.get(i).copied().unwrap_or(1.0);
                1.0 / if v.is_finite() { v.max(1e-9) } else { 1e9 }
            })
            .collect();
        let rhs: Vec<f64> = theta.iter().zip(&prior_info).map(|(t, a)| t * a).collect();
        let mut info = vec![0.0; n * n];
        for i in 0..n {
            info[i * n + i] = prior_info[i];
        }
        Rls {
            rhs,
            theta,
            info,
            forgetting: forgetting.clamp(0.5, 1.0),
        }
    }

    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    pub fn predict(&self, x: &[f64]) -> f64 {
        self.theta.iter().zip(x).map(|(t, x)| t * x).sum()
    }

    /// Adds a weighted observation without forgetting anything: prior knowledge that is
    /// not a simple per-parameter variance, such as a measurement at one operating point.
    pub fn add_information(&mut self, x: &[f64], y: f64, weight: f64) {
        let n = self.theta.len();
        if x.len() != n || !y.is_finite() || !weight.is_finite() || weight <= 0.0 {
            return;
        }
        if x.iter().any(|v| !v.is_finite()) {
            return;
        }
        for i in 0..n {
            for j in 0..n {
                self.info[i * n + j] += weight * x[i] * x[j];
            }
            self.rhs[i] += weight * x[i] * y;
        }
        if let Some(theta) = nnls(&self.info, &self.rhs, n) {
            self.theta = theta;
        }
    }

    /// One sample with forgetting. Allocates nothing for up to [`STACK_N`] parameters: the
    /// power model runs it at every tick with a power reading.
    pub fn update(&mut self, x: &[f64], y: f64) {
        let n = self.theta.len();
        if x.len() != n || !y.is_finite() || x.iter().any(|v| !v.is_finite()) {
            return;
        }
        let l = self.forgetting;
        let mut ax_stack = [0.0; STACK_N];
        let mut ax_heap = Vec::new();
        let ax: &mut [f64] = if n <= STACK_N {
            &mut ax_stack[..n]
        } else {
            ax_heap.resize(n, 0.0);
            &mut ax_heap
        };
        for (i, v) in ax.iter_mut().enumerate() {
            *v = (0..n).map(|j| self.info[i * n + j] * x[j]).sum();
        }
        let xax: f64 = x.iter().zip(ax.iter()).map(|(a, b)| a * b).sum();
        if xax > 1e-300 && l < 1.0 {
            let xb: f64 = x.iter().zip(&self.rhs).map(|(a, b)| a * b).sum();
            let k = (1.0 - l) / xax;
            for i in 0..n {
                for j in 0..n {
                    self.info[i * n + j] -= k * ax[i] * ax[j];
                }
                self.rhs[i] -= k * ax[i] * xb;
            }
        }
        for i in 0..n {
            for j in 0..n {
                self.info[i * n + j] += x[i] * x[j];
            }
            self.rhs[i] += x[i] * y;
        }
        if n <= STACK_N {
            let mut ws = Workspace::<[f64; STACK_N], [bool; STACK_N]>::stack();
            if nnls_in(&self.info, &self.rhs, n, &mut ws.view(n)) {
                self.theta.copy_from_slice(&ws.x[..n]);
            }
        } else if let Some(theta) = nnls(&self.info, &self.rhs, n) {
            self.theta = theta;
        }
    }
}

/// Problems up to this many parameters are solved in stack buffers.
const STACK_N: usize = 8;

/// Buffers of the non-negative solver: the solution, the passive set, the gradient, the
/// subset solution, the subset's augmented matrix and its indices.
struct Workspace<F, B> {
    x: F,
    passive: B,
    w: F,
    z: F,
    mat: [f64; STACK_N * (STACK_N + 1)],
    idx: [usize; STACK_N],
}

impl Workspace<[f64; STACK_N], [bool; STACK_N]> {
    fn stack() -> Self {
        Workspace {
            x: [0.0; STACK_N],
            passive: [false; STACK_N],
            w: [0.0; STACK_N],
            z: [0.0; STACK_N],
            mat: [0.0; STACK_N * (STACK_N + 1)],
            idx: [0; STACK_N],
        }
    }

    fn view(&mut self, n: usize) -> View<'_> {
        View {
            x: &mut self.x[..n],
            passive: &mut self.passive[..n],
            w: &mut self.w[..n],
            z: &mut self.z[..n],
            mat: &mut self.mat[..],
            idx: &mut self.idx[..],
        }
    }
}

struct View<'a> {
    x: &'a mut [f64],
    passive: &'a mut [bool],
    w: &'a mut [f64],
    z: &'a mut [f64],
    mat: &'a mut [f64],
    idx: &'a mut [usize],
}

/// Non-negative least squares in normal-equation form: the `t >= 0` minimising
/// `t' A t - 2 b' t` for a symmetric positive definite `A` (Lawson and Hanson's active-set
/// method). None when a linear solve fails, which a positive definite `A` rules out.
fn nnls(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let (mut x, mut passive, mut w, mut z) =
        (vec![0.0; n], vec![false; n], vec![0.0; n], vec![0.0; n]);
    let (mut mat, mut idx) = (vec![0.0; n * (n + 1)], vec![0; n]);
    let mut v = View {
        x: &mut x,
        passive: &mut passive,
        w: &mut w,
        z: &mut z,
        mat: &mut mat,
        idx: &mut idx,
    };
    nnls_in(a, b, n, &mut v).then_some(x)
}

/// [`nnls`] in caller-provided buffers; the solution is left in `v.x`. False when a linear
/// solve fails.
fn nnls_in(a: &[f64], b: &[f64], n: usize, v: &mut View<'_>) -> bool {
    let tol = 1e-12 * (1.0 + b.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    v.x.iter_mut().for_each(|x| *x = 0.0);
    v.passive.iter_mut().for_each(|p| *p = false);
    // Each outer round adds one variable; the inner loop only removes. 3n rounds is far
    // more than the method needs on these sizes, and bounds the work on bad input.
    for _ in 0..3 * n.max(1) {
        for i in 0..n {
            v.w[i] = b[i] - (0..n).map(|j| a[i * n + j] * v.x[j]).sum::<f64>();
        }
        let (w, passive) = (&*v.w, &*v.passive);
        let Some(j) = (0..n)
            .filter(|i| !passive[*i] && w[*i] > tol)
            .max_by(|p, q| w[*p].total_cmp(&w[*q]))
        else {
            break;
        };
        v.passive[j] = true;
        loop {
            if !solve_subset(a, b, n, v.passive, v.z, v.mat, v.idx) {
                return false;
            }
            let (x, z, passive) = (&mut *v.x, &*v.z, &mut *v.passive);
            if (0..n).all(|i| !passive[i] || z[i] > 0.0) {
                x.copy_from_slice(z);
                break;
            }
            // Step from x towards z until the first passive variable reaches zero.
            let alpha = (0..n)
                .filter(|i| passive[*i] && z[*i] <= 0.0)
                .map(|i| x[i] / (x[i] - z[i]))
                .fold(1.0f64, f64::min);
            for i in 0..n {
                x[i] += alpha * (z[i] - x[i]);
                if passive[i] && x[i] <= tol {
                    passive[i] = false;
                    x[i] = 0.0;
                }
            }
            if !passive.iter().any(|p| *p) {
                break;
            }
        }
    }
    true
}

/// Solves `A_PP z_P = b_P` for the passive variables (Gaussian elimination with partial
/// pivoting) into `z`; the others are zero. `mat` holds at least `m * (m + 1)` and `idx`
/// `m` entries for `m` passive variables. False when the solve fails.
fn solve_subset(
    a: &[f64],
    b: &[f64],
    n: usize,
    passive: &[bool],
    z: &mut [f64],
    mat: &mut [f64],
    idx: &mut [usize],
) -> bool {
    let mut m = 0;
    for i in (0..n).filter(|i| passive[*i]) {
        idx[m] = i;
        m += 1;
    }
    let idx = &idx[..m];
    let w = m + 1;
    let mut k = 0;
    for &i in idx {
        for &j in idx {
            mat[k] = a[i * n + j];
            k += 1;
        }
        mat[k] = b[i];
        k += 1;
    }
    for col in 0..m {
        let Some(pivot) =
            (col..m).max_by(|p, q| mat[p * w + col].abs().total_cmp(&mat[q * w + col].abs()))
        else {
            return false;
        };
        if mat[pivot * w + col].abs() < 1e-300 {
            return false;
        }
        if pivot != col {
            for k in 0..w {
                mat.swap(col * w + k, pivot * w + k);
            }
        }
        for row in col + 1..m {
            let f = mat[row * w + col] / mat[col * w + col];
            if f != 0.0 {
                for k in col..w {
                    mat[row * w + k] -= f * mat[col * w + k];
                }
            }
        }
    }
    z.iter_mut().for_each(|v| *v = 0.0);
    for r in (0..m).rev() {
        let s: f64 = (r + 1..m).map(|k| mat[r * w + k] * z[idx[k]]).sum();
        z[idx[r]] = (mat[r * w + m] - s) / mat[r * w + r];
    }
    z.iter().all(|v| v.is_finite())
}

/// How much slower than full speed each device runs: `f_max / f`, 1 at full clocks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockRatios {
    pub gpu: f64,
    pub cpu: f64,
    pub mem: f64,
}

impl ClockRatios {
    pub const FULL: ClockRatios = ClockRatios {
        gpu: 1.0,
        cpu: 1.0,
        mem: 1.0,
    };

    fn features(self) -> [f64; 4] {
        [self.gpu, self.cpu, self.mem, 1.0]
    }
}

/// Latency split at full clocks, in milliseconds: `latency = gpu * r_gpu + cpu * r_cpu +
/// mem * r_mem + fixed`, i.e. `a/f_gpu + b/f_cpu + c/f_mem + d` with the constants scaled
/// by the maximum frequencies so that all four parameters share a unit and a magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyCoefs {
    pub gpu_ms: f64,
    pub cpu_ms: f64,
    pub mem_ms: f64,
    pub fixed_ms: f64,
}

impl LatencyCoefs {
    pub fn latency_ms(&self, r: ClockRatios) -> f64 {
        self.gpu_ms * r.gpu + self.cpu_ms * r.cpu + self.mem_ms * r.mem + self.fixed_ms
    }

    /// An assumed split of a latency measured at full clocks, used until data says
    /// otherwise. Inference on a GPU is mostly GPU time with a memory-bound share; on a
    /// CPU mostly CPU time.
    pub fn seed(latency_full_ms: f64, devices: Devices) -> LatencyCoefs {
        let l = latency_full_ms.max(0.0);
        if devices.gpu {
            LatencyCoefs {
                gpu_ms: 0.60 * l,
                cpu_ms: 0.15 * l,
                mem_ms: 0.20 * l,
                fixed_ms: 0.05 * l,
            }
        } else {
            LatencyCoefs {
                gpu_ms: 0.0,
                cpu_ms: 0.75 * l,
                mem_ms: 0.20 * l,
                fixed_ms: 0.05 * l,
            }
        }
    }

    /// The cautious seed: the whole latency fixed, no clock assumed to matter. Fitted to
    /// the same data as the split seed (and anchored at the declared full-clock latency,
    /// see [`LatencyModel::anchored`]), it gives a clock a share of the latency only for
    /// what the measurements show: the slow-down measured at lower clocks, or differences
    /// between operating points. Where the split fit extrapolates a speed-up from a single
    /// operating point (which a board whose latency does not follow that clock never
    /// delivers), this one predicts what was measured.
    pub fn seed_flat(latency_full_ms: f64) -> LatencyCoefs {
        LatencyCoefs {
            gpu_ms: 0.0,
            cpu_ms: 0.0,
            mem_ms: 0.0,
            fixed_ms: latency_full_ms.max(0.0),
        }
    }

    pub fn scaled(&self, k: f64) -> LatencyCoefs {
        LatencyCoefs {
            gpu_ms: self.gpu_ms * k,
            cpu_ms: self.cpu_ms * k,
            mem_ms: self.mem_ms * k,
            fixed_ms: self.fixed_ms * k,
        }
    }
}

/// The latency model of one sub-network of one app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyModel {
    rls: Rls,
    samples: u64,
}

impl LatencyModel {
    pub fn seeded(seed: LatencyCoefs, forgetting: f64) -> LatencyModel {
        let theta = vec![seed.gpu_ms, seed.cpu_ms, seed.mem_ms, seed.fixed_ms];
        // Prior standard deviation of about half the seeded total per term: a declared
        // latency is a good guide at full clocks but its split is a guess.
        let total = seed.latency_ms(ClockRatios::FULL).max(1.0);
        let var = (0.5 * total).powi(2);
        LatencyModel {
            rls: Rls::new(theta, &[var; 4], forgetting),
            samples: 0,
        }
    }

    /// Seeded like [`LatencyModel::seeded`], and the seed's latency at full clocks also
    /// held as a measurement worth `weight` samples: a declared latency is the app's own
    /// measurement at full clocks. Data at lower clocks is then explained by the clocks
    /// (what slowed down) rather than by moving the full-clock figure, which forgetting
    /// keeps until the model is observed at full clocks itself.
    pub fn anchored(seed: LatencyCoefs, forgetting: f64, weight: f64) -> LatencyModel {
        let mut m = LatencyModel::seeded(seed, forgetting);
        m.rls.add_information(
            &ClockRatios::FULL.features(),
            seed.latency_ms(ClockRatios::FULL),
            weight,
        );
        m
    }

    pub fn observe(&mut self, r: ClockRatios, latency_ms: f64) {
        self.rls.update(&r.features(), latency_ms);
        self.samples += 1;
    }

    pub fn predict_ms(&self, r: ClockRatios) -> f64 {
        self.rls.predict(&r.features())
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Keeps a re-seeded model counted as observed (see the manager's lasting slow-down).
    pub(crate) fn with_samples(mut self, samples: u64) -> LatencyModel {
        self.samples = samples;
        self
    }

    pub fn coefs(&self) -> LatencyCoefs {
        let t = self.rls.theta();
        LatencyCoefs {
            gpu_ms: t[0],
            cpu_ms: t[1],
            mem_ms: t[2],
            fixed_ms: t[3],
        }
    }
}

/// How a domain's dynamic power scales with its clock, from the board description's
/// voltage-frequency curve: points `(f / f_max, V / V_max)`, linear between them and flat
/// outside. Dynamic power goes as `C V^2 f`, so at the same activity a domain at speed `s`
/// draws `s * v(s)^2` of what it draws at its highest clock.
///
/// Without a curve, voltage is taken as proportional to frequency (`s^3`). That is far off
/// at the low end of a real table, where the voltage stays near its floor (the Xavier NX
/// GPU: 0.6 V at 115 MHz, 0.7 V at 599, 1.0 V at 1109), and for memory, whose voltage
/// barely moves: there `s^3` makes a slower clock look several times cheaper than it is,
/// and plans run the memory slow and the GPU fast to make up for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VoltageCurve(pub Vec<(f64, f64)>);

impl VoltageCurve {
    /// The curve of a description's `(kHz, volts)` points, relative to its highest
    /// frequency `max_khz` and the voltage there.
    pub fn relative(points: &[(u64, f64)], max_khz: u64) -> VoltageCurve {
        let fmax = max_khz.max(1) as f64;
        let absolute = VoltageCurve(points.iter().map(|(k, v)| (*k as f64 / fmax, *v)).collect());
        let vmax = absolute.volts(1.0);
        if absolute.is_empty() || vmax <= 0.0 {
            return VoltageCurve::default();
        }
        VoltageCurve(absolute.0.iter().map(|(s, v)| (*s, v / vmax)).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `V / V_max` at speed `s`.
    pub fn volts(&self, s: f64) -> f64 {
        let pts = &self.0;
        let Some(first) = pts.first() else {
            return s;
        };
        if s <= first.0 {
            return first.1;
        }
        for w in pts.windows(2) {
            let ((s0, v0), (s1, v1)) = (w[0], w[1]);
            if s <= s1 {
                return v0 + (v1 - v0) * (s - s0) / (s1 - s0).max(1e-12);
            }
        }
        pts[pts.len() - 1].1
    }

    /// Dynamic power at speed `s` over that at the highest clock, at equal activity.
    pub fn dynamic(&self, s: f64) -> f64 {
        let v = self.volts(s);
        s * v * v
    }

    /// Idle power at speed `s` over that at the highest clock: the clock tree's dynamic
    /// power, as [`VoltageCurve::dynamic`]. Without a curve, `s` (idle power taken to go
    /// roughly with voltage, as the model always had it).
    pub fn idle(&self, s: f64) -> f64 {
        if self.is_empty() {
            s
        } else {
            self.dynamic(s)
        }
    }
}

/// Power of one domain in the platform description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainPower {
    pub domain: u32,
    /// Extra power with every CPU of the domain (or the whole device) busy at its maximum
    /// frequency.
    pub busy_at_max: Watts,
    /// Extra power of the domain clocked at its maximum frequency while idle.
    pub idle_at_max: Watts,
    /// Its voltage-frequency curve; empty where the description gives none.
    #[serde(default, skip_serializing_if = "VoltageCurve::is_empty")]
    pub voltage: VoltageCurve,
}

/// The platform description's power model, the seed of the learned one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlatformPower {
    /// Board power that no domain's clock changes.
    pub static_power: Watts,
    pub domains: Vec<DomainPower>,
}

impl Default for PlatformPower {
    fn default() -> Self {
        PlatformPower {
            static_power: Watts(2.0),
            domains: Vec::new(),
        }
    }
}

impl PlatformPower {
    /// Figures for a domain the description leaves out: rough Jetson-class magnitudes,
    /// only a starting point for the fit.
    pub fn domain_or_default(&self, domain: u32, kind: DomainKind) -> DomainPower {
        self.domains
            .iter()
            .find(|d| d.domain == domain)
            .cloned()
            .unwrap_or(match kind {
                DomainKind::Cpu => DomainPower {
                    domain,
                    busy_at_max: Watts(1.5),
                    idle_at_max: Watts(0.15),
                    voltage: VoltageCurve::default(),
                },
                DomainKind::Gpu => DomainPower {
                    domain,
                    busy_at_max: Watts(5.0),
                    idle_at_max: Watts(0.4),
                    voltage: VoltageCurve::default(),
                },
                DomainKind::Memory => DomainPower {
                    domain,
                    busy_at_max: Watts(1.0),
                    idle_at_max: Watts(0.3),
                    voltage: VoltageCurve::default(),
                },
            })
    }
}

/// A domain's operating point for the power model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DomainLoad {
    pub domain: u32,
    /// Busy fraction, 0..=1 (for CPU domains, averaged over all the domain's CPUs).
    pub util: f64,
    /// `f / f_max`.
    pub speed: f64,
}

/// Effective per-domain coefficients of the learned power model, for fast evaluation:
/// `P = static + sum(busy * util * dynamic(speed) + idle * idle(speed))`, with the shapes
/// of each domain's [`VoltageCurve`] (`speed^3` and `speed` where it has none).
#[derive(Clone, Debug, PartialEq)]
pub struct PowerCoefs {
    pub static_w: f64,
    /// (domain id, busy watts at max, idle watts at max)
    pub domains: Vec<(u32, f64, f64)>,
    /// The domains' voltage curves, by id; a domain not here has none.
    pub voltage: Vec<(u32, VoltageCurve)>,
}

/// The shape of a domain without a voltage curve.
static NO_CURVE: VoltageCurve = VoltageCurve(Vec::new());

impl PowerCoefs {
    pub fn domain(&self, id: u32) -> (f64, f64) {
        self.domains
            .iter()
            .find(|d| d.0 == id)
            .map(|d| (d.1, d.2))
            .unwrap_or((0.0, 0.0))
    }

    /// The voltage curve of a domain (an empty one where it has none).
    pub fn curve(&self, id: u32) -> &VoltageCurve {
        self.voltage
            .iter()
            .find(|d| d.0 == id)
            .map_or(&NO_CURVE, |d| &d.1)
    }

    /// Power of a domain at `speed` with a busy share `util`, without the static term.
    pub fn domain_power(&self, id: u32, util: f64, speed: f64) -> f64 {
        let (busy, idle) = self.domain(id);
        let c = self.curve(id);
        let s = speed.clamp(0.0, 1.0);
        busy * util.clamp(0.0, 1.0) * c.dynamic(s) + idle * c.idle(s)
    }
}

/// Board power model: the platform description's shape per domain, with a learned scale
/// per domain and a learned static term. Learning scales rather than free coefficients
/// keeps the fit identifiable from the little variation closed-loop operation produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerModel {
    /// Seeded (busy, idle) watts per domain id; ordered, so parameter i+1 is entry i.
    seeds: BTreeMap<u32, (f64, f64)>,
    /// The description's voltage curves, by domain id (see [`VoltageCurve`]).
    #[serde(default)]
    curves: BTreeMap<u32, VoltageCurve>,
    rls: Rls,
}

impl PowerModel {
    pub fn seeded(
        platform: &PlatformPower,
        domains: &[(u32, DomainKind)],
        forgetting: f64,
    ) -> PowerModel {
        let mut seeds = BTreeMap::new();
        let mut curves = BTreeMap::new();
        for (id, kind) in domains {
            let d = platform.domain_or_default(*id, *kind);
            seeds.insert(*id, (d.busy_at_max.0.max(0.0), d.idle_at_max.0.max(0.0)));
            if !d.voltage.is_empty() {
                curves.insert(*id, d.voltage);
            }
        }
        let mut theta = vec![platform.static_power.0.max(0.0)];
        theta.extend(std::iter::repeat_n(1.0, seeds.len()));
        let mut var = vec![(0.5 * platform.static_power.0).powi(2).max(0.01)];
        var.extend(std::iter::repeat_n(0.25, seeds.len()));
        PowerModel {
            seeds,
            curves,
            rls: Rls::new(theta, &var, forgetting),
        }
    }

    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.seeds.keys().copied()
    }

    fn features(&self, loads: &[DomainLoad]) -> Vec<f64> {
        let mut x = vec![0.0; self.seeds.len() + 1];
        self.features_into(loads, &mut x);
        x
    }

    /// The regressors into `x` (one more than the domains).
    fn features_into(&self, loads: &[DomainLoad], x: &mut [f64]) {
        x[0] = 1.0;
        for ((id, (busy, idle)), v) in self.seeds.iter().zip(&mut x[1..]) {
            *v = loads
                .iter()
                .find(|l| l.domain == *id)
                .map(|l| {
                    let s = l.speed.clamp(0.0, 1.0);
                    let c = self.curves.get(id).unwrap_or(&NO_CURVE);
                    busy * l.util.clamp(0.0, 1.0) * c.dynamic(s) + idle * c.idle(s)
                })
                .unwrap_or(0.0);
        }
    }

    pub fn observe(&mut self, loads: &[DomainLoad], measured: Watts) {
        let n = self.seeds.len() + 1;
        if n <= STACK_N {
            let mut x = [0.0; STACK_N];
            self.features_into(loads, &mut x[..n]);
            self.rls.update(&x[..n], measured.0);
        } else {
            let x = self.features(loads);
            self.rls.update(&x, measured.0);
        }
    }

    pub fn predict(&self, loads: &[DomainLoad]) -> Watts {
        Watts(self.rls.predict(&self.features(loads)))
    }

    pub fn coefs(&self) -> PowerCoefs {
        let t = self.rls.theta();
        PowerCoefs {
            static_w: t[0],
            domains: self
                .seeds
                .iter()
                .enumerate()
                .map(|(i, (id, (busy, idle)))| (*id, busy * t[i + 1], idle * t[i + 1]))
                .collect(),
            voltage: self.curves.iter().map(|(id, c)| (*id, c.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: tests need reproducible noise without a dependency.
    struct Noise(u64);
    impl Noise {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
            &v[((self.unit() * v.len() as f64) as usize).min(v.len() - 1)]
        }
    }

    fn xavier_ratios() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let gpu = [114.75, 306.0, 510.0, 701.25, 854.25, 1007.25, 1109.25];
        let cpu = [1190.4, 1420.8, 1651.2, 1804.8, 1907.2];
        let mem = [204.0, 800.0, 1331.0, 1600.0, 1866.0];
        let r = |v: &[f64]| v.iter().map(|f| v[v.len() - 1] / f).collect::<Vec<_>>();
        (r(&gpu), r(&cpu), r(&mem))
    }

    #[test]
    fn latency_fit_converges_on_noisy_data() {
        let truth = LatencyCoefs {
            gpu_ms: 30.0,
            cpu_ms: 4.0,
            mem_ms: 9.0,
            fixed_ms: 2.0,
        };
        // Seeded from a wrong declared latency and a wrong split.
        let mut m = LatencyModel::seeded(
            LatencyCoefs::seed(
                60.0,
                Devices {
                    cpu: true,
                    gpu: true,
                },
            ),
            0.98,
        );
        let (g, c, e) = xavier_ratios();
        let mut rng = Noise(0x9e37_79b9_7f4a_7c15);
        for _ in 0..600 {
            let r = ClockRatios {
                gpu: *rng.pick(&g),
                cpu: *rng.pick(&c),
                mem: *rng.pick(&e),
            };
            let noise = 1.0 + 0.06 * (rng.unit() - 0.5);
            m.observe(r, truth.latency_ms(r) * noise);
        }
        for &rg in &g {
            for &rc in &c {
                for &re in &e {
                    let r = ClockRatios {
                        gpu: rg,
                        cpu: rc,
                        mem: re,
                    };
                    let want = truth.latency_ms(r);
                    let got = m.predict_ms(r);
                    assert!((got - want).abs() / want < 0.05, "{r:?}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn unexcited_latency_fit_keeps_prior_split_and_matches_observed_point() {
        let mut m = LatencyModel::seeded(
            LatencyCoefs::seed(
                40.0,
                Devices {
                    cpu: true,
                    gpu: true,
                },
            ),
            0.98,
        );
        let r = ClockRatios {
            gpu: 1.5,
            cpu: 1.0,
            mem: 1.0,
        };
        for _ in 0..500 {
            m.observe(r, 70.0);
        }
        assert!((m.predict_ms(r) - 70.0).abs() < 0.5);
        let c = m.coefs();
        for v in [c.gpu_ms, c.cpu_ms, c.mem_ms, c.fixed_ms] {
            assert!(v.is_finite() && v >= 0.0);
        }
        // Slower GPU must still predict slower inference.
        let slower = ClockRatios { gpu: 3.0, ..r };
        assert!(m.predict_ms(slower) > m.predict_ms(r));
    }

    /// The active-set solver against the definition: over every subset of free
    /// variables, the best feasible stationary point.
    #[test]
    fn nnls_matches_exhaustive_search() {
        let mut rng = Noise(7);
        for n in 1..=6usize {
            for _ in 0..200 {
                // A = M'M + small ridge: symmetric positive definite.
                let m: Vec<f64> = (0..n * n).map(|_| rng.unit() - 0.3).collect();
                let mut a = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..n {
                        a[i * n + j] = (0..n).map(|k| m[k * n + i] * m[k * n + j]).sum();
                    }
                    a[i * n + i] += 1e-3;
                }
                let b: Vec<f64> = (0..n).map(|_| rng.unit() - 0.5).collect();
                let cost = |x: &[f64]| {
                    let quad: f64 = (0..n)
                        .map(|i| (0..n).map(|j| x[i] * a[i * n + j] * x[j]).sum::<f64>())
                        .sum();
                    quad - 2.0 * (0..n).map(|i| b[i] * x[i]).sum::<f64>()
                };
                let best = (0..1u32 << n)
                    .filter_map(|mask| {
                        let free: Vec<bool> = (0..n).map(|i| mask >> i & 1 == 1).collect();
                        let (mut z, mut mat, mut idx) =
                            (vec![0.0; n], vec![0.0; n * (n + 1)], vec![0; n]);
                        if !solve_subset(&a, &b, n, &free, &mut z, &mut mat, &mut idx) {
                            return None;
                        }
                        z.iter().all(|v| *v >= -1e-12).then(|| cost(&z))
                    })
                    .fold(f64::INFINITY, f64::min);
                let x = nnls(&a, &b, n).unwrap();
                assert!(x.iter().all(|v| *v >= 0.0), "{x:?}");
                assert!(cost(&x) <= best + 1e-9 * (1.0 + best.abs()), "{x:?}");
            }
        }
    }

    /// Directional forgetting: samples at one operating point do not erase what was
    /// learned at another.
    #[test]
    fn latency_fit_remembers_other_operating_points() {
        let mut m = LatencyModel::seeded(
            LatencyCoefs::seed(
                50.0,
                Devices {
                    cpu: false,
                    gpu: true,
                },
            ),
            0.98,
        );
        let a = ClockRatios {
            gpu: 1.0,
            cpu: 1.0,
            mem: 1.0,
        };
        let b = ClockRatios { gpu: 2.0, ..a };
        // The GPU does not matter on this board: 50 ms at both clocks.
        for _ in 0..100 {
            m.observe(a, 50.0);
            m.observe(b, 50.0);
        }
        // A long stay at one point ...
        for _ in 0..5000 {
            m.observe(a, 50.0);
        }
        // ... keeps the other point's lesson.
        assert!((m.predict_ms(b) - 50.0).abs() < 1.0, "{}", m.predict_ms(b));
    }

    #[test]
    fn power_fit_converges_on_noisy_data() {
        let platform = PlatformPower {
            static_power: Watts(1.0),
            domains: vec![],
        };
        let ids = [
            (0, DomainKind::Cpu),
            (1, DomainKind::Gpu),
            (2, DomainKind::Memory),
        ];
        let mut m = PowerModel::seeded(&platform, &ids, 0.99);
        // The real board: static 2.5 W, CPU 1.4x, GPU 0.7x, memory 1.2x the description.
        let truth = |l: &[DomainLoad]| {
            let scale = [1.4, 0.7, 1.2];
            let seed = [(1.5, 0.15), (5.0, 0.4), (1.0, 0.3)];
            2.5 + l
                .iter()
                .map(|d| {
                    let (b, i) = seed[d.domain as usize];
                    scale[d.domain as usize] * (b * d.util * d.speed.powi(3) + i * d.speed)
                })
                .sum::<f64>()
        };
        let mut rng = Noise(42);
        let draw = |rng: &mut Noise| -> Vec<DomainLoad> {
            (0..3)
                .map(|d| DomainLoad {
                    domain: d,
                    util: rng.unit(),
                    speed: 0.1 + 0.9 * rng.unit(),
                })
                .collect()
        };
        for _ in 0..800 {
            let l = draw(&mut rng);
            let y = truth(&l) * (1.0 + 0.04 * (rng.unit() - 0.5));
            m.observe(&l, Watts(y));
        }
        for _ in 0..200 {
            let l = draw(&mut rng);
            let want = truth(&l);
            let got = m.predict(&l).0;
            assert!((got - want).abs() / want < 0.03, "{got} vs {want}");
        }
        let c = m.coefs();
        assert!((c.static_w - 2.5).abs() < 0.2, "{}", c.static_w);
    }

    #[test]
    fn voltage_curve_gives_the_cmos_shape_relative_to_the_top_clock() {
        // The Xavier NX GPU's description: 0.6 V at 114.75 MHz, 0.7 V at 599.25, 1 V at
        // 1109.25.
        let gpu = VoltageCurve::relative(
            &[(114_750, 0.60), (599_250, 0.70), (1_109_250, 1.00)],
            1_109_250,
        );
        let s = 599_250.0 / 1_109_250.0;
        assert!((gpu.volts(s) - 0.7).abs() < 1e-9);
        assert!((gpu.dynamic(s) - s * 0.49).abs() < 1e-9);
        assert!((gpu.dynamic(1.0) - 1.0).abs() < 1e-12);
        // Flat below the first point and above the last.
        assert!((gpu.volts(0.01) - 0.6).abs() < 1e-9);
        assert_eq!(gpu.idle(s), gpu.dynamic(s));
        // A curve whose last point is below the top clock stays flat to it.
        let short = VoltageCurve::relative(&[(100_000, 0.5), (500_000, 0.8)], 1_000_000);
        assert!((short.volts(1.0) - 1.0).abs() < 1e-9 && (short.volts(0.1) - 0.625).abs() < 1e-9);
        // Without a curve: voltage proportional to frequency, idle power with voltage.
        let none = VoltageCurve::default();
        assert!((none.dynamic(0.5) - 0.125).abs() < 1e-12);
        assert!((none.idle(0.5) - 0.5).abs() < 1e-12);
    }

    /// A board whose memory voltage barely moves (as the Xavier NX description has it):
    /// with the curve the fit predicts its power; taken as `speed^3` it cannot, whatever
    /// scale it learns.
    #[test]
    fn power_fit_follows_the_voltage_curve_it_is_given() {
        let curve = VoltageCurve::relative(&[(204_000, 0.80), (1_866_000, 0.85)], 1_866_000);
        let ids = [(0, DomainKind::Memory)];
        let described = |voltage: VoltageCurve| PlatformPower {
            static_power: Watts(1.0),
            domains: vec![DomainPower {
                domain: 0,
                busy_at_max: Watts(1.2),
                idle_at_max: Watts(0.12),
                voltage,
            }],
        };
        let truth = |l: &DomainLoad| {
            1.0 + 1.2 * l.util * curve.dynamic(l.speed) + 0.12 * curve.dynamic(l.speed)
        };
        let mut fits = [
            PowerModel::seeded(&described(curve.clone()), &ids, 0.99),
            PowerModel::seeded(&described(VoltageCurve::default()), &ids, 0.99),
        ];
        let mut rng = Noise(5);
        let mut worst = [0.0f64; 2];
        for i in 0..1200 {
            let l = DomainLoad {
                domain: 0,
                util: rng.unit(),
                speed: 0.1 + 0.9 * rng.unit(),
            };
            for (k, m) in fits.iter_mut().enumerate() {
                if i >= 1000 {
                    let err = (m.predict(&[l]).0 - truth(&l)).abs() / truth(&l);
                    worst[k] = worst[k].max(err);
                } else {
                    m.observe(&[l], Watts(truth(&l)));
                }
            }
        }
        assert!(worst[0] < 0.01, "with the curve: {:.3}", worst[0]);
        assert!(worst[1] > 0.05, "as speed^3: {:.3}", worst[1]);
        assert_eq!(fits[0].coefs().curve(0), &curve);
        assert!(fits[1].coefs().curve(0).is_empty());
    }
}
