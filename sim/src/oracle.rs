//! The oracle: the best fixed configuration (every domain's frequency, every app's
//! sub-network) per scenario phase, found with the ground truth. It is a bound, not a
//! governor: it knows the latency split, the power constants and what happens when.
//!
//! Exhaustive in two stages. Every configuration (a common CPU level, each GPU and EMC
//! frequency, each combination of sub-networks) is scored with the ground-truth mean
//! model; the least-power ones that pass the deadlines with a margin (two margins, so the
//! shortlist is not all on one edge) are then simulated over the phase with the scenario's
//! seed, and the least energy with at most 1 % missed frames (and the power cap kept) wins.
//! The mean model leaves out queueing on a shared GPU, jitter and contention, so when no
//! configuration of a stage qualifies, the next stage screens with tighter margins; when
//! none of any stage qualifies, the fewest misses wins.

use anyhow::Result;
use dnngov_policy::Hz;

use crate::engine::{run, Control, MEM_PER_CPU_BUSY, MEM_PER_GPU_BACKGROUND};
use crate::governors::Fixed;
use crate::platform::{Kind, Platform};
use crate::scenario::Scenario;

/// Phases shorter than this are merged into the next one.
const MIN_PHASE_S: f64 = 1.0;
/// Configurations simulated per phase and margin.
const SHORTLIST: usize = 5;
/// A phase is simulated for at most this long to rank its shortlist.
const MAX_TRIAL_S: f64 = 30.0;
/// Miss rate the oracle accepts.
pub const MISS_BUDGET_PCT: f64 = 1.0;

/// Deadline margins screened, stage by stage: a later stage (tighter margins, so more
/// headroom for jitter, queueing and contention that the mean model leaves out) is
/// simulated only when no configuration of the earlier ones kept the miss budget.
const STAGES: [&[f64]; 3] = [&[0.9, 0.75], &[0.6, 0.5], &[0.4, 0.3]];

/// The best simulated configuration of a phase so far.
struct Best {
    ok: bool,
    /// Misses plus time over the power cap, in %, when not `ok`.
    miss: f64,
    energy: f64,
    control: Control,
}

impl Best {
    /// Within the budget first, then fewer misses, then less energy.
    fn beats(&self, other: &Best) -> bool {
        (self.ok && !other.ok)
            || (self.ok == other.ok
                && (self.miss < other.miss
                    || (self.miss == other.miss && self.energy < other.energy)))
    }
}

#[derive(Clone, Debug)]
struct Candidate {
    control: Control,
    power: f64,
    violation: f64,
}

/// The oracle's per-phase schedule, or `None` for a scenario without apps (with no deadline
/// to meet there is nothing to bound).
pub fn oracle(scn: &Scenario, plat: &Platform, seed: u64) -> Result<Option<Fixed>> {
    if scn.apps.is_empty() {
        return Ok(None);
    }
    let mut starts: Vec<f64> = Vec::new();
    for s in scn.phase_starts() {
        if starts.last().is_none_or(|l| s - l >= MIN_PHASE_S) {
            starts.push(s);
        }
    }
    let mut schedule = Vec::new();
    for (i, from) in starts.iter().enumerate() {
        let to = starts.get(i + 1).copied().unwrap_or(scn.duration_s);
        let phase = scn.slice(*from, to);
        let mut trial = phase.clone();
        trial.duration_s = trial.duration_s.min(MAX_TRIAL_S);
        let mut tried: Vec<Control> = Vec::new();
        let mut best: Option<Best> = None;
        for stage in STAGES {
            let mut shortlist = Vec::new();
            for floors in [true, false] {
                if !floors && shortlist.iter().any(|c: &Candidate| c.violation == 0.0) {
                    // Accuracy floors are given up only when no configuration keeps them and
                    // its deadlines.
                    break;
                }
                for margin in stage {
                    for c in screen(&phase, plat, *margin, floors) {
                        if !tried.contains(&c.control) {
                            tried.push(c.control.clone());
                            shortlist.push(c);
                        }
                    }
                }
            }
            for c in shortlist {
                let mut fixed = Fixed {
                    name: "trial".into(),
                    schedule: vec![(0.0, c.control.clone())],
                };
                let m = run(&trial, plat, &mut fixed, seed)?.metrics;
                let ok = m.miss_pct <= MISS_BUDGET_PCT && m.over_cap_pct <= MISS_BUDGET_PCT;
                let cand = Best {
                    ok,
                    miss: if ok { 0.0 } else { m.miss_pct + m.over_cap_pct },
                    energy: m.energy_j,
                    control: c.control,
                };
                if best.as_ref().is_none_or(|b| cand.beats(b)) {
                    best = Some(cand);
                }
            }
            if best.as_ref().is_some_and(|b| b.ok) {
                break;
            }
        }
        if let Some(b) = best {
            schedule.push((from * 1000.0, b.control));
        }
    }
    Ok(Some(Fixed {
        name: "oracle".into(),
        schedule,
    }))
}

/// The phase's state as the slice starts it (the merged first event).
struct PhaseState {
    gpu_background: f64,
    offline: Vec<u32>,
    cap: Option<f64>,
    /// Frequency caps in MHz by domain name.
    max_mhz: std::collections::BTreeMap<String, f64>,
}

fn phase_state(s: &Scenario) -> PhaseState {
    let mut st = PhaseState {
        gpu_background: 0.0,
        offline: Vec::new(),
        cap: None,
        max_mhz: Default::default(),
    };
    for e in s.events.iter().filter(|e| e.at_s <= 0.0) {
        if let Some(b) = e.gpu_background_share {
            st.gpu_background = b;
        }
        if let Some(o) = &e.offline_cpus {
            st.offline = o.clone();
        }
        if let Some(c) = e.power_cap_w {
            st.cap = (c > 0.0).then_some(c);
        }
        if let Some(m) = &e.max_mhz {
            st.max_mhz.extend(m.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    st.max_mhz.retain(|_, v| *v > 0.0);
    st
}

/// A domain's table under the phase's cap on it (at least its lowest entry).
fn capped_table(plat: &Platform, i: usize, st: &PhaseState) -> Vec<Hz> {
    let d = &plat.domains[i];
    let mut t = d.table();
    if let Some(cap) = st.max_mhz.get(&d.name) {
        let cap = Hz((cap * 1e6).round() as u64);
        let lowest = t[0];
        t.retain(|f| *f <= cap);
        if t.is_empty() {
            t.push(lowest);
        }
    }
    t
}

/// The entries of an app's library worth trying: nothing in the score rewards accuracy
/// above the floor, and a faster entry never costs more power nor misses more, so only the
/// fastest entry that keeps the floor (when one does) and the fastest of all can win.
/// Keeps the search small with five apps of ten entries.
fn worth_trying(lib: &[(f64, f64)], floor: f64) -> Vec<usize> {
    let fastest = |ok: &dyn Fn(&(f64, f64)) -> bool| {
        lib.iter()
            .enumerate()
            .filter(|(_, e)| ok(e))
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(i, _)| i)
    };
    let mut out: Vec<usize> = fastest(&|e| e.0 >= floor).into_iter().collect();
    if let Some(i) = fastest(&|_| true) {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Ground-truth mean scoring of every configuration; returns the least-power ones that fit
/// the deadlines with `margin` (and the accuracy floors, with `floors`), or the
/// least-violating ones when none fits.
fn screen(s: &Scenario, plat: &Platform, margin: f64, floors: bool) -> Vec<Candidate> {
    let st = phase_state(s);
    let cpu_domains: Vec<usize> = (0..plat.domains.len())
        .filter(|i| plat.domains[*i].kind == Kind::Cpu)
        .collect();
    let gpu = plat.domains.iter().position(|d| d.kind == Kind::Gpu);
    let mem = plat.domains.iter().position(|d| d.kind == Kind::Memory);
    let levels = cpu_domains
        .iter()
        .map(|i| plat.domains[*i].freqs_khz.len())
        .max()
        .unwrap_or(1);
    let mut cores: Vec<(u32, usize)> = cpu_domains
        .iter()
        .flat_map(|i| plat.domains[*i].cpus.iter().map(move |c| (*c, *i)))
        .filter(|(c, _)| !st.offline.contains(c))
        .collect();
    cores.sort();
    if cores.is_empty() {
        cores.push((0, cpu_domains[0]));
    }
    let online = cores.len() as f64;
    let bg_cpu: f64 = s
        .cpu_loads
        .iter()
        .map(|l| {
            let duty = l.on_s.map_or(1.0, |on| on / (on + l.off_s));
            l.rate_hz * l.work_ms / 1000.0 * duty
        })
        .sum();
    // Only the apps that run in this phase, by their place in the scenario.
    let present: Vec<usize> = (0..s.apps.len())
        .filter(|a| s.apps[*a].present(s.duration_s))
        .collect();
    let libs: Vec<Vec<(f64, f64)>> = present
        .iter()
        .map(|a| s.apps[*a].library().unwrap_or_default())
        .collect();
    let tries: Vec<Vec<usize>> = present
        .iter()
        .zip(&libs)
        .map(|(a, l)| worth_trying(l, s.apps[*a].accuracy_floor))
        .collect();
    let combos: usize = tries.iter().map(|l| l.len()).product();
    let list = |i: Option<usize>| -> Vec<Option<Hz>> {
        match i {
            Some(i) => capped_table(plat, i, &st).into_iter().map(Some).collect(),
            None => vec![None],
        }
    };
    let ratio = |i: Option<usize>, f: Option<Hz>| -> f64 {
        match (i, f) {
            (Some(i), Some(f)) => plat.domains[i].max_hz().as_f64() / f.as_f64(),
            _ => 1.0,
        }
    };
    let mut all: Vec<Candidate> = Vec::new();
    for level in 0..levels {
        let cpu_freqs: Vec<(usize, Hz)> = cpu_domains
            .iter()
            .map(|i| {
                let t = capped_table(plat, *i, &st);
                let k = if levels > 1 {
                    ((level as f64) * (t.len() - 1) as f64 / (levels - 1) as f64).round() as usize
                } else {
                    t.len() - 1
                };
                (*i, t[k])
            })
            .collect();
        let rc_of = |d: usize| -> f64 {
            let f = cpu_freqs.iter().find(|x| x.0 == d).map(|x| x.1);
            ratio(Some(d), f)
        };
        let app_core_domain = cores[0].1;
        let rc = rc_of(app_core_domain);
        for gf in list(gpu) {
            let rg = ratio(gpu, gf);
            for mf in list(mem) {
                let rm = ratio(mem, mf);
                for combo in 0..combos {
                    let mut rest = combo;
                    let picks: Vec<usize> = tries
                        .iter()
                        .map(|l| {
                            let p = l[rest % l.len()];
                            rest /= l.len();
                            p
                        })
                        .collect();
                    let apps: Vec<&crate::scenario::AppSpec> =
                        present.iter().map(|a| &s.apps[*a]).collect();
                    let mut violation: f64 = 0.0;
                    let mut gpu_util = 0.0;
                    let mut mem_util = 0.0;
                    let mut app_cpu = 0.0;
                    let mut gpu_times = Vec::new();
                    for (a, (spec, p)) in apps.iter().zip(&picks).enumerate() {
                        let (acc, l) = libs[a][*p];
                        let reachable = libs[a].iter().any(|x| x.0 >= spec.accuracy_floor);
                        if floors && reachable && acc < spec.accuracy_floor {
                            violation = f64::INFINITY;
                        }
                        let sp = spec.split;
                        let g = sp.gpu * l * rg + sp.mem * l * rm;
                        gpu_times.push(g);
                        gpu_util += g / spec.period_ms();
                        mem_util += sp.mem * l * rm / spec.period_ms();
                        app_cpu += sp.cpu * l * rc / spec.period_ms();
                    }
                    let avail = 1.0 - st.gpu_background;
                    violation = violation.max(gpu_util / (margin * avail) - 1.0);
                    for (a, spec) in apps.iter().enumerate() {
                        let l = libs[a][picks[a]].1;
                        let others = gpu_util - gpu_times[a] / spec.period_ms();
                        let slowdown = 1.0 + (others / avail).min(1.0);
                        let lat = spec.split.cpu * l * rc
                            + spec.split.fixed * l
                            + gpu_times[a] / avail * slowdown;
                        violation = violation.max(lat / (margin * spec.deadline_ms) - 1.0);
                    }
                    // Spread CPU work over the online cores, each at its own clock.
                    let mut power = plat.base_power_w;
                    let mut cpu_busy_total = 0.0;
                    for d in &cpu_domains {
                        let n = cores.iter().filter(|c| c.1 == *d).count();
                        if n == 0 {
                            continue;
                        }
                        let f = cpu_freqs.iter().find(|x| x.0 == *d).expect("all levels").1;
                        let mut act = bg_cpu / online * rc_of(*d);
                        if *d == app_core_domain {
                            act += app_cpu / n as f64;
                        }
                        violation = violation.max(act / 0.8 - 1.0);
                        cpu_busy_total += act.min(1.0) * n as f64;
                        power += plat.domains[*d].power_w(f, &vec![act.min(1.0); n]);
                    }
                    if let (Some(i), Some(f)) = (gpu, gf) {
                        let act = (st.gpu_background + gpu_util).min(1.0);
                        power += plat.domains[i].power_w(f, &[act]);
                    }
                    if let (Some(i), Some(f)) = (mem, mf) {
                        let act = (mem_util
                            + MEM_PER_CPU_BUSY * cpu_busy_total
                            + MEM_PER_GPU_BACKGROUND * st.gpu_background)
                            .min(1.0);
                        power += plat.domains[i].power_w(f, &[act]);
                    }
                    if let Some(cap) = st.cap {
                        violation = violation.max(power / (0.95 * cap) - 1.0);
                    }
                    let mut freqs: Vec<(u32, Hz)> = cpu_freqs
                        .iter()
                        .map(|(i, f)| (plat.domains[*i].id, *f))
                        .collect();
                    if let (Some(i), Some(f)) = (gpu, gf) {
                        freqs.push((plat.domains[i].id, f));
                    }
                    if let (Some(i), Some(f)) = (mem, mf) {
                        freqs.push((plat.domains[i].id, f));
                    }
                    all.push(Candidate {
                        control: Control {
                            freqs,
                            subnets: picks
                                .iter()
                                .zip(&present)
                                .map(|(p, a)| (*a as u32, *p as u32))
                                .collect(),
                            plan: None,
                        },
                        power,
                        violation: violation.max(0.0),
                    });
                }
            }
        }
    }
    let feasible = all.iter().filter(|c| c.violation == 0.0).count();
    if feasible > 0 {
        all.retain(|c| c.violation == 0.0);
        all.sort_by(|a, b| a.power.total_cmp(&b.power));
    } else {
        all.sort_by(|a, b| {
            a.violation
                .total_cmp(&b.violation)
                .then(a.power.total_cmp(&b.power))
        });
    }
    all.truncate(SHORTLIST);
    all
}
