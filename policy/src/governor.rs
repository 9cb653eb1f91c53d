//! Level 1: the base governor, one per frequency domain, run at every tick. It governs every
//! domain that no app constrains, so a machine with no registered app behaves as under the
//! kernel's schedutil. ondemand, conservative, performance and powersave sit beside it as
//! reference baselines for the simulator.
//!
//! Utilisation follows PELT: 1024 us periods, a 32-period half-life, range 0..=1024, and
//! frequency invariance (time busy at half the maximum clock counts half), because schedutil's
//! formula `next = 1.25 * max_freq * util / 1024` is only right for invariant utilisation.
//! The kernel accumulates PELT at every scheduler event; here it is advanced once per tick
//! from the busy-time delta, assuming the busy time was spread evenly over the tick.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decision::FreqReason;
use crate::snapshot::{
    resolve_at_least, resolve_at_most, resolve_closest, DomainKind, FreqDomain, Snapshot,
};
use crate::units::{Hz, Nanos};

/// Capacity scale of the kernel's utilisation signals.
pub const SCHED_CAPACITY: u32 = 1024;
/// Length of one PELT accumulation period.
pub const PELT_PERIOD: Nanos = Nanos(1_024_000);
/// Periods after which a PELT contribution has decayed to half.
pub const PELT_HALF_LIFE_PERIODS: f64 = 32.0;

/// With a [`GovernorConfig::down_rate_limit`], the least relative step down worth a change,
/// and the room kept above the most schedutil wanted during the wait when lowering.
const DOWN_BAND: f64 = 0.10;
const PEAK_ROOM: f64 = 0.10;
/// With a [`GovernorConfig::dip_rate_limit`], a step down to under this share of the
/// current frequency is a load that went away, and waits only `down_rate_limit`. A load so
/// lowered that wants over this share of the clock it left again within `down_rate_limit`
/// of the lowering was a lull: it gets that clock back at once, not an entry per tick as
/// its utilisation climbs. Measured in the simulator: the cluster no app ran on in
/// generated seed 187, lowered from 1344 to 653 MHz at a lull and climbing back in nine
/// changes over 9.5 s, changed clock 12.5 times a minute in steady phases, 8.4 with this.
/// A load back later than that, as S5's bursts after 1.5 s off, climbs as before.
const DEEP_DROP: f64 = 0.5;
/// ... but only from a clock over this share of the domain's highest. Lower in a table one
/// entry is 30-70 % of the clock, and a light load's lulls take what schedutil wants under
/// half the clock for as long as `down_rate_limit` and back: such a step down waits the
/// `dip_rate_limit` and keeps the peak (see [`GovernorConfig::peak_hold`]) like any dip,
/// for little power, the voltage being near its floor there. Measured in the simulator:
/// the clusters no app ran on in generated seeds 240 and 26, lowered from 268-499 MHz to
/// 115 MHz at lulls and climbing back an entry at a time, changed clock 15.3 and 10.3
/// times a minute in steady phases, 8.2 and 1.9 with this floor (docs/evaluation.md).
const DEEP_FLOOR: f64 = 0.3;
/// With a [`GovernorConfig::peak_hold`], a CPU domain lowered while its load is still
/// there (a dip, or a load called gone whose wait still wanted half the clock or more)
/// and that wants more again within the hold gets the clock it left back at once, and its
/// next dip waits twice as long, up to this many doublings; a lowering the load keeps for
/// the whole hold takes one doubling off. The wait before calling a load gone is not
/// doubled: S5's bursts, off for 1.5 s, would no longer be followed down (4 % more
/// energy). A steady stream of other programs' short tasks has lulls and peaks every few
/// seconds: lowered at a lull, the cluster climbed back an entry per tick at the next
/// peak (schedutil wants at most a quarter more than a saturated CPU's clock), five or
/// six changes for each lowering. Measured in the simulator, see
/// docs/policy.md ("Level 1").
const DIP_TAKEN_BACK: u32 = 3;

/// Which base governor runs the unconstrained domains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GovernorKind {
    #[default]
    Schedutil,
    Ondemand,
    Conservative,
    Performance,
    Powersave,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GovernorConfig {
    pub kind: GovernorKind,
    /// schedutil's headroom over utilisation (the kernel's `util + util/4`).
    pub headroom: f64,
    /// Minimum gap between two frequency changes of one domain (schedutil `rate_limit_us`).
    pub rate_limit: Nanos,
    /// schedutil only: a lower frequency is taken only once schedutil has wanted less than
    /// the current one for this long, and then the highest it wanted meanwhile (the
    /// `down_rate_limit_us` of Android kernels). Raising stays immediate. Zero: the
    /// mainline kernel's behaviour, which follows every dip of a noisy load.
    #[serde(default)]
    pub down_rate_limit: Nanos,
    /// schedutil with a `down_rate_limit` only: a lower frequency of at least half the
    /// current one (a dip of a noisy load rather than a load that went away), or any lower
    /// one from a clock low in the table ([`DEEP_FLOOR`]), waits this long instead, and
    /// then takes the most it wanted meanwhile. Zero or shorter than
    /// `down_rate_limit`: `down_rate_limit` for every step down.
    #[serde(default)]
    pub dip_rate_limit: Nanos,
    /// schedutil with a `down_rate_limit` only: a CPU domain's step down to half its clock
    /// or more (any step down, from low in the table) goes no lower than the peak
    /// schedutil wanted within this long before (a peak is kept this long, or until it is
    /// wanted again). A steady but noisy load, such
    /// as other programs' short tasks, reaches its peaks again every few seconds: lowered
    /// to the most of one dip wait, it was raised back at the next peak, a table entry or
    /// two at a time, and lowered again two seconds later. Zero: only the wait's own peak.
    #[serde(default)]
    pub peak_hold: Nanos,
    /// ondemand: load percentage above which it goes straight to the maximum.
    pub ondemand_up_threshold: u32,
    /// conservative: load percentages that trigger a step up or down.
    pub conservative_up_threshold: u32,
    pub conservative_down_threshold: u32,
    /// conservative: step size, percent of the maximum frequency.
    pub conservative_step_percent: u32,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            kind: GovernorKind::Schedutil,
            headroom: 1.25,
            rate_limit: Nanos::from_millis(2),
            down_rate_limit: Nanos(0),
            dip_rate_limit: Nanos(0),
            peak_hold: Nanos(0),
            ondemand_up_threshold: 80,
            conservative_up_threshold: 80,
            conservative_down_threshold: 20,
            conservative_step_percent: 5,
        }
    }
}

/// A PELT-like decayed utilisation, 0..=1024.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pelt {
    util: f64,
}

impl Pelt {
    pub fn new(util: f64) -> Pelt {
        Pelt {
            util: util.clamp(0.0, SCHED_CAPACITY as f64),
        }
    }

    /// Advances by `elapsed`, during which the entity ran for `running` of the time
    /// (0..=1, already scaled for frequency invariance).
    pub fn update(&mut self, elapsed: Nanos, running: f64) {
        let periods = elapsed.0 as f64 / PELT_PERIOD.0 as f64;
        let decay = 0.5f64.powf(periods / PELT_HALF_LIFE_PERIODS);
        let running = running.clamp(0.0, 1.0);
        self.util = self.util * decay + SCHED_CAPACITY as f64 * running * (1.0 - decay);
    }

    /// The utilisation as the kernel's integer signal.
    pub fn util(&self) -> u32 {
        (self.util.floor() as u32).min(SCHED_CAPACITY)
    }
}

/// schedutil's raw target: `max_freq * min(util * headroom, 1024) / 1024`, in integer
/// arithmetic as `sugov_effective_cpu_perf()` + `map_util_freq()` compute it.
pub fn schedutil_raw_target(util: u32, max_freq: Hz, headroom: f64) -> Hz {
    let boosted =
        ((util.min(SCHED_CAPACITY) as f64 * headroom).floor() as u64).min(SCHED_CAPACITY as u64);
    Hz(max_freq.0 * boosted / SCHED_CAPACITY as u64)
}

/// schedutil's frequency: the raw target resolved to the lowest table entry at or above it,
/// then clamped under `allowed_max`.
pub fn schedutil_freq(util: u32, table: &[Hz], allowed_max: Hz, headroom: f64) -> Hz {
    let max = table.last().copied().unwrap_or(allowed_max);
    let f = resolve_at_least(table, schedutil_raw_target(util, max, headroom));
    f.min(allowed_max)
}

/// ondemand: above the threshold go to the maximum, else `min + load * (max - min) / 100`
/// resolved to the closest table entry.
pub fn ondemand_freq(load_percent: u32, table: &[Hz], allowed_max: Hz, up_threshold: u32) -> Hz {
    let min = table.first().copied().unwrap_or(allowed_max);
    if load_percent > up_threshold {
        return allowed_max;
    }
    let span = allowed_max.0.saturating_sub(min.0);
    let target = Hz(min.0 + span * load_percent.min(100) as u64 / 100);
    resolve_closest(table, target).min(allowed_max)
}

/// What the base governor chose for one domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaseChoice {
    pub domain: u32,
    pub freq: Hz,
    pub reason: FreqReason,
    /// Frequency-invariant utilisation, 0..=1024 (max over the domain's online CPUs).
    pub util: u32,
    /// Busy fraction over the last tick, 0..=1, not frequency-invariant (max over CPUs).
    pub load: f64,
    /// Busy fraction over the last tick summed over online CPUs and divided by the domain's
    /// CPU count (1 = every CPU busy); equal to `load` for a device.
    pub mean_load: f64,
}

/// A wait before lowering (see [`GovernorConfig::down_rate_limit`]).
#[derive(Clone, Copy, Debug)]
struct LowerWait {
    since: Nanos,
    /// The most schedutil wanted meanwhile, and that with room above it.
    most: Hz,
    most_roomy: Hz,
    /// Whether what it wanted changed during the wait (a noisy load).
    varied: bool,
    /// Since when it has wanted less than half the current clock without a break.
    deep_since: Option<Nanos>,
}

#[derive(Clone, Debug, Default)]
struct DomainState {
    pelt: BTreeMap<u32, Pelt>,
    device_pelt: Pelt,
    last_change: Option<Nanos>,
    /// conservative's running request, kept between ticks as the kernel does.
    requested: Option<Hz>,
    /// Since when schedutil has wanted less than the current frequency, and the most it
    /// wanted since then (see [`GovernorConfig::down_rate_limit`]).
    lower_since: Option<LowerWait>,
    /// What it chose at the previous tick: the clock a down rate limit holds, whatever the
    /// device reports (a device may report another clock than the one asked for).
    chosen: Option<Hz>,
    /// Until when it is not lowered below a floor, and the floor (see
    /// [`BaseGovernor::hold_lowering`]).
    hold_lower: Option<(Nanos, Hz)>,
    /// Whether the hold's floor raises the clock too (see [`BaseGovernor::raise_to`]).
    raise: bool,
    /// The peak schedutil wanted and since when (see [`GovernorConfig::peak_hold`]).
    peak: Option<(Nanos, Hz)>,
    /// When schedutil last lowered it as a load gone, and the clock it left (see
    /// [`DEEP_DROP`]).
    gone: Option<(Nanos, Hz)>,
    /// When schedutil last lowered a CPU domain while its load was still there (a dip, or
    /// a load called gone to half the clock or more), and the clock it left (see
    /// [`DIP_TAKEN_BACK`]).
    dipped: Option<(Nanos, Hz)>,
    /// How many times the dip wait is doubled (see [`DIP_TAKEN_BACK`]).
    dip_doublings: u32,
}

/// Per-domain base governor state across ticks.
#[derive(Clone, Debug, Default)]
pub struct BaseGovernor {
    cfg: GovernorConfig,
    domains: BTreeMap<u32, DomainState>,
    cpu_busy: BTreeMap<u32, Nanos>,
    device_busy: BTreeMap<u32, Nanos>,
    last_now: Option<Nanos>,
}

/// What one tick's counters said about a domain.
struct Activity {
    util: u32,
    load: f64,
    mean_load: f64,
    never_idle_single_cpu: bool,
}

impl BaseGovernor {
    pub fn new(cfg: GovernorConfig) -> BaseGovernor {
        BaseGovernor {
            cfg,
            ..BaseGovernor::default()
        }
    }

    pub fn config(&self) -> &GovernorConfig {
        &self.cfg
    }

    /// Keeps schedutil from lowering `domain` below `floor` (the lowest table entry at or
    /// above it), or below its clock where that is lower, until `until`; it still raises
    /// it, and lowers it as usual down to the floor. A later hold than one in force
    /// extends it, and its floor replaces the one in force. The manager holds the CPU
    /// clusters no app runs on this way when other programs' tasks, arriving while they
    /// were slow, spilled onto an app's CPUs.
    pub fn hold_lowering(&mut self, domain: u32, until: Nanos, floor: Hz) {
        let s = self.domains.entry(domain).or_default();
        let until = s.hold_lower.map_or(until, |(u, _)| u.max(until));
        s.hold_lower = Some((until, floor));
    }

    /// Raises `domain` to `floor` at once and holds it there until `until`.
    pub fn raise_to(&mut self, domain: u32, until: Nanos, floor: Hz) {
        self.hold_lowering(domain, until, floor);
        if let Some(s) = self.domains.get_mut(&domain) {
            s.raise = true;
        }
    }

    /// Advances utilisation with this snapshot's counters and chooses a frequency for every
    /// domain, in the snapshot's order.
    pub fn update(&mut self, snap: &Snapshot) -> Vec<BaseChoice> {
        let mut choices = Vec::with_capacity(snap.domains.len());
        self.update_into(snap, &mut choices);
        choices
    }

    /// [`BaseGovernor::update`] into a buffer the caller keeps from tick to tick.
    pub fn update_into(&mut self, snap: &Snapshot, choices: &mut Vec<BaseChoice>) {
        let elapsed = self.last_now.map(|t| snap.now.saturating_sub(t));
        choices.clear();
        for d in &snap.domains {
            let activity = self.observe(snap, d, elapsed);
            let choice = self.choose(snap, d, activity);
            if let Some(state) = self.domains.get_mut(&d.id) {
                state.chosen = Some(choice.freq);
            }
            choices.push(choice);
        }
        for c in &snap.cpus {
            self.cpu_busy.insert(c.cpu, c.busy);
        }
        for d in &snap.domains {
            if let Some(b) = d.busy {
                self.device_busy.insert(d.id, b);
            }
        }
        self.last_now = Some(snap.now);
    }

    fn observe(
        &mut self,
        snap: &Snapshot,
        d: &FreqDomain,
        elapsed: Option<Nanos>,
    ) -> Option<Activity> {
        let elapsed = elapsed.filter(|e| e.0 > 0)?;
        let invariance = d.cur.as_f64() / d.max_freq().as_f64().max(1.0);
        let state = self.domains.entry(d.id).or_default();
        match d.kind {
            DomainKind::Cpu => {
                let mut util = 0;
                let mut load: f64 = 0.0;
                let mut load_sum = 0.0;
                let mut online = 0;
                let mut never_idle = false;
                for cpu in &d.cpus {
                    let Some(sample) = snap.cpus.iter().find(|s| s.cpu == *cpu && s.online) else {
                        // An offline CPU's history is stale when it comes back.
                        state.pelt.remove(cpu);
                        continue;
                    };
                    online += 1;
                    let prev = self.cpu_busy.get(cpu).copied().unwrap_or(sample.busy);
                    let busy = sample.busy.saturating_sub(prev);
                    let frac = (busy.0 as f64 / elapsed.0 as f64).clamp(0.0, 1.0);
                    let pelt = state.pelt.entry(*cpu).or_default();
                    pelt.update(elapsed, frac * invariance);
                    util = util.max(pelt.util());
                    load = load.max(frac);
                    load_sum += frac;
                    never_idle = busy >= elapsed;
                }
                if online == 0 {
                    return None;
                }
                Some(Activity {
                    util,
                    load,
                    mean_load: load_sum / d.cpus.len().max(1) as f64,
                    never_idle_single_cpu: online == 1 && never_idle,
                })
            }
            DomainKind::Gpu | DomainKind::Memory => {
                let now_busy = d.busy?;
                let prev = self.device_busy.get(&d.id).copied().unwrap_or(now_busy);
                let busy = now_busy.saturating_sub(prev);
                let frac = (busy.0 as f64 / elapsed.0 as f64).clamp(0.0, 1.0);
                state.device_pelt.update(elapsed, frac * invariance);
                Some(Activity {
                    util: state.device_pelt.util(),
                    load: frac,
                    mean_load: frac,
                    never_idle_single_cpu: false,
                })
            }
        }
    }

    fn choose(
        &mut self,
        snap: &Snapshot,
        d: &FreqDomain,
        activity: Option<Activity>,
    ) -> BaseChoice {
        let cfg = self.cfg;
        let allowed = snap.allowed_max(d);
        let cur = d.cur.min(allowed);
        let state = self.domains.entry(d.id).or_default();
        let mut choice = BaseChoice {
            domain: d.id,
            freq: cur,
            reason: FreqReason::Base(cfg.kind),
            util: 0,
            load: 0.0,
            mean_load: 0.0,
        };
        if let Some(a) = &activity {
            choice.util = a.util;
            choice.load = a.load;
            choice.mean_load = a.mean_load;
        }
        let wanted = match (cfg.kind, &activity) {
            (GovernorKind::Performance, _) => allowed,
            (GovernorKind::Powersave, _) => d.min_freq(),
            (_, None) => {
                // A table lookup keeps `cur` legal even when the device reported a frequency
                // outside its table.
                choice.freq = resolve_at_most(&d.table, cur);
                choice.reason = FreqReason::NoTelemetry;
                return choice;
            }
            (GovernorKind::Schedutil, Some(a)) => {
                let mut f = schedutil_freq(a.util, &d.table, allowed, cfg.headroom);
                if let Some((at, _)) = state.dipped {
                    if snap.now.saturating_sub(at) >= cfg.peak_hold {
                        state.dipped = None;
                        state.dip_doublings = state.dip_doublings.saturating_sub(1);
                    }
                }
                // Only CPU domains are held at their peak (see the step down below).
                if cfg.peak_hold.0 > 0 && d.kind == DomainKind::Cpu {
                    state.peak = match state.peak {
                        Some((t, p)) if f < p && snap.now.saturating_sub(t) < cfg.peak_hold => {
                            Some((t, p))
                        }
                        _ => Some((snap.now, f)),
                    };
                }
                if a.never_idle_single_cpu && f < cur {
                    choice.freq = resolve_at_most(&d.table, cur);
                    choice.reason = FreqReason::HeldWhileBusy;
                    return choice;
                }
                let prev = state.chosen.map_or(cur, |c| c.min(allowed));
                if state.hold_lower.is_none_or(|h| snap.now >= h.0) {
                    state.raise = false;
                }
                if let Some((_, floor)) = state.hold_lower.filter(|h| snap.now < h.0) {
                    let cap = if state.raise { allowed } else { prev };
                    let floor = resolve_at_least(&d.table, floor).min(cap);
                    if f < prev && floor >= prev {
                        state.lower_since = None;
                        choice.freq = resolve_at_most(&d.table, prev);
                        choice.reason = FreqReason::RateLimited(cfg.kind);
                        return choice;
                    }
                    f = f.max(floor);
                }
                if f >= prev || cfg.down_rate_limit.0 == 0 {
                    state.lower_since = None;
                    // A load lowered as gone that wants over half the clock it left
                    // within the time that called it gone was a lull: back to that clock
                    // at once, not an entry per tick as its utilisation climbs.
                    let f = match state.gone {
                        Some((at, _)) if snap.now.saturating_sub(at) >= cfg.down_rate_limit => {
                            state.gone = None;
                            f
                        }
                        Some((_, left)) if f > prev && f.as_f64() >= left.as_f64() * DEEP_DROP => {
                            state.gone = None;
                            left.min(allowed).max(f)
                        }
                        _ => f,
                    };
                    // A dip the load took back: the clock it left, and a longer wait
                    // before the next.
                    match state.dipped {
                        Some((_, left)) if f > prev => {
                            state.dipped = None;
                            state.dip_doublings = (state.dip_doublings + 1).min(DIP_TAKEN_BACK);
                            left.min(allowed).max(f)
                        }
                        _ => f,
                    }
                } else {
                    // The most it wanted; where that varied (a noisy load), with room
                    // above it for the next peak, which would otherwise raise the clock
                    // again at once. A steady want is taken as it is.
                    let raw = schedutil_raw_target(a.util, d.max_freq(), cfg.headroom);
                    let roomy =
                        resolve_at_least(&d.table, Hz((raw.as_f64() * (1.0 + PEAK_ROOM)) as u64))
                            .max(f)
                            .min(prev);
                    // A want under half the clock that lasts the down rate limit is a load
                    // that went away; a dip that comes back is noise, waited out longer.
                    let deep = f.as_f64() < prev.as_f64() * DEEP_DROP
                        && prev.as_f64() > d.max_freq().as_f64() * DEEP_FLOOR;
                    let wait = match state.lower_since {
                        Some(w) => LowerWait {
                            since: w.since,
                            most: w.most.max(f),
                            most_roomy: w.most_roomy.max(roomy),
                            varied: w.varied || w.most != f,
                            deep_since: if deep {
                                w.deep_since.or(Some(snap.now))
                            } else {
                                None
                            },
                        },
                        None => LowerWait {
                            since: snap.now,
                            most: f,
                            most_roomy: roomy,
                            varied: false,
                            deep_since: deep.then_some(snap.now),
                        },
                    };
                    let gone = wait
                        .deep_since
                        .is_some_and(|t| snap.now.saturating_sub(t) >= cfg.down_rate_limit);
                    let target = if wait.varied {
                        wait.most_roomy
                    } else {
                        wait.most
                    };
                    // A dip of a load that is still there stays at its recent peak.
                    let target = match state.peak {
                        Some((_, peak)) if !gone => target.max(peak.min(prev)),
                        _ => target,
                    };
                    let limit = if gone {
                        cfg.down_rate_limit
                    } else {
                        cfg.down_rate_limit
                            .max(Nanos(cfg.dip_rate_limit.0 << state.dip_doublings))
                    };
                    let held = snap.now.saturating_sub(wait.since) < limit;
                    // After the wait, a step down smaller than the band, or of a single
                    // table entry, is not worth a change: the wait starts over. Low in a
                    // table one entry is 30-70 % of the clock, and a light noisy load
                    // would dither between two neighbours.
                    let small = || {
                        target.as_f64() > prev.as_f64() * (1.0 - DOWN_BAND)
                            || d.table
                                .iter()
                                .filter(|f| **f < prev && **f >= target)
                                .count()
                                < 2
                    };
                    if held || small() {
                        state.lower_since = held.then_some(wait);
                        choice.freq = resolve_at_most(&d.table, prev);
                        choice.reason = FreqReason::RateLimited(cfg.kind);
                        return choice;
                    }
                    state.lower_since = None;
                    state.gone = gone.then_some((snap.now, prev));
                    let deep_target = target.as_f64() < prev.as_f64() * DEEP_DROP;
                    if !(gone && deep_target) && cfg.peak_hold.0 > 0 && d.kind == DomainKind::Cpu {
                        state.dipped = Some((snap.now, prev));
                    }
                    target
                }
            }
            (GovernorKind::Ondemand, Some(a)) => ondemand_freq(
                (a.load * 100.0).round() as u32,
                &d.table,
                allowed,
                cfg.ondemand_up_threshold,
            ),
            (GovernorKind::Conservative, Some(a)) => {
                let step = d.max_freq().0 * cfg.conservative_step_percent as u64 / 100;
                let req = state.requested.unwrap_or(cur);
                let load = (a.load * 100.0).round() as u32;
                let (req, f) = if load > cfg.conservative_up_threshold {
                    let r = Hz((req.0 + step).min(allowed.0));
                    (r, resolve_at_most(&d.table, r))
                } else if load < cfg.conservative_down_threshold {
                    let r = Hz(req.0.saturating_sub(step).max(d.min_freq().0));
                    (r, resolve_at_least(&d.table, r))
                } else {
                    (req, resolve_at_most(&d.table, req))
                };
                state.requested = Some(req);
                f.min(allowed)
            }
        };
        let rate_limited = matches!(cfg.kind, GovernorKind::Schedutil)
            && wanted != cur
            && d.cur <= allowed
            && state
                .last_change
                .is_some_and(|t| snap.now.saturating_sub(t) < cfg.rate_limit);
        if rate_limited {
            choice.freq = resolve_at_most(&d.table, cur);
            choice.reason = FreqReason::RateLimited(cfg.kind);
            return choice;
        }
        if wanted != d.cur {
            state.last_change = Some(snap.now);
        }
        choice.freq = wanted;
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Caps, CpuSample, DomainCap};

    fn table() -> Vec<Hz> {
        (1..=10).map(|i| Hz::from_mhz(200 * i)).collect()
    }

    fn snap(now_ms: u64, cur: Hz, busy: &[(u32, u64)], cpus: Vec<u32>) -> Snapshot {
        Snapshot {
            now: Nanos::from_millis(now_ms),
            domains: vec![FreqDomain {
                id: 0,
                kind: DomainKind::Cpu,
                table: table(),
                cur,
                max_limit: Hz::from_mhz(2000),
                cpus,
                busy: None,
            }],
            cpus: busy
                .iter()
                .map(|(cpu, b)| CpuSample {
                    cpu: *cpu,
                    online: true,
                    busy: Nanos::from_millis(*b),
                })
                .collect(),
            apps: vec![],
            power: None,
            caps: Caps::default(),
        }
    }

    #[test]
    fn tipping_point_of_schedutil_is_eighty_percent() {
        let t = table();
        let max = Hz::from_mhz(2000);
        assert_eq!(schedutil_freq(820, &t, max, 1.25), max);
        // 1.25 * 2000 * 512 / 1024 = 1250 MHz, resolved up to 1400.
        assert_eq!(schedutil_freq(512, &t, max, 1.25), Hz::from_mhz(1400));
        assert_eq!(schedutil_freq(0, &t, max, 1.25), Hz::from_mhz(200));
        assert_eq!(
            schedutil_freq(1024, &t, Hz::from_mhz(1000), 1.25),
            Hz::from_mhz(1000)
        );
    }

    #[test]
    fn headroom_matches_kernel_integer_shift() {
        for util in 0..=1024u32 {
            let kernel = (util + (util >> 2)).min(1024) as u64;
            let ours = schedutil_raw_target(util, Hz(1024), 1.25);
            assert_eq!(ours, Hz(kernel), "util {util}");
        }
    }

    #[test]
    fn pelt_halves_after_32_periods_of_idle() {
        let mut p = Pelt::new(800.0);
        p.update(Nanos(PELT_PERIOD.0 * 32), 0.0);
        assert!((p.util as i64 - 400).abs() <= 1, "{}", p.util);
        let mut q = Pelt::default();
        q.update(Nanos::from_millis(2000), 1.0);
        assert!(q.util() >= 1023, "{}", q.util());
    }

    #[test]
    fn first_tick_without_history_keeps_frequency() {
        let mut g = BaseGovernor::new(GovernorConfig::default());
        let c = g.update(&snap(0, Hz::from_mhz(1000), &[(0, 0), (1, 0)], vec![0, 1]));
        assert_eq!(c[0].freq, Hz::from_mhz(1000));
        assert_eq!(c[0].reason, FreqReason::NoTelemetry);
    }

    #[test]
    fn busy_single_cpu_domain_is_not_lowered() {
        let cfg = GovernorConfig {
            rate_limit: Nanos(0),
            ..GovernorConfig::default()
        };
        let mut g = BaseGovernor::new(cfg);
        g.update(&snap(0, Hz::from_mhz(2000), &[(0, 0)], vec![0]));
        // Fully busy but PELT starts at zero: schedutil alone would pick the minimum.
        let c = g.update(&snap(10, Hz::from_mhz(2000), &[(0, 10)], vec![0]));
        assert_eq!(c[0].freq, Hz::from_mhz(2000));
        assert_eq!(c[0].reason, FreqReason::HeldWhileBusy);
        // Two CPUs, same load: no hold.
        let mut g = BaseGovernor::new(cfg);
        g.update(&snap(0, Hz::from_mhz(2000), &[(0, 0), (1, 0)], vec![0, 1]));
        let c = g.update(&snap(
            10,
            Hz::from_mhz(2000),
            &[(0, 10), (1, 10)],
            vec![0, 1],
        ));
        assert!(c[0].freq < Hz::from_mhz(2000));
    }

    /// A noisy load: the down rate limit lowers only after the wait, to the most schedutil
    /// wanted meanwhile, and only for a step worth the change; raising stays immediate.
    #[test]
    fn down_rate_limit_waits_and_takes_the_peak() {
        let cfg = GovernorConfig {
            down_rate_limit: Nanos::from_millis(200),
            ..GovernorConfig::default()
        };
        // 1.5 or 3.5 ms of work at the highest clock in every 10 ms, switching every 60 ms.
        let work = |t: u64| {
            if (t / 6).is_multiple_of(2) {
                1500
            } else {
                3500
            }
        };
        let run = |cfg: GovernorConfig| {
            let (changes, lowered, f, g) = run_load(cfg, 400, work);
            let lowered_at: Vec<u64> = lowered.iter().map(|t| t * 10).collect();
            (changes, lowered_at, f, g)
        };
        let (plain, _, _, _) = run(GovernorConfig::default());
        let (held, lowered_at, f, g) = run(cfg);
        assert!(held * 4 < plain, "{held} changes vs {plain}");
        // Never lowered before the wait, nor twice within it.
        assert!(
            lowered_at.windows(2).all(|w| w[1] - w[0] >= 200),
            "{lowered_at:?}"
        );
        assert!(
            lowered_at.first().is_some_and(|t| *t >= 200),
            "{lowered_at:?}"
        );
        // It came down from the maximum, to cover the busier phases.
        assert!(f < Hz::from_mhz(2000) && f >= Hz::from_mhz(400), "{f:?}");
        // A burst is followed at once.
        let mut g = g;
        let mut s = snap(4000, Hz::from_mhz(400), &[], vec![0, 1]);
        for cpu in [0, 1] {
            s.cpus.push(CpuSample {
                cpu,
                online: true,
                busy: Nanos::from_millis(100_000),
            });
        }
        assert!(g.update(&s)[0].freq > Hz::from_mhz(400));
    }

    #[test]
    fn down_rate_limit_skips_a_single_entry_step() {
        let cfg = GovernorConfig {
            down_rate_limit: Nanos::from_millis(200),
            ..GovernorConfig::default()
        };
        // A light load (30 % busy at the clock in force, 400 MHz: schedutil wants 200 MHz,
        // the lowest entry) for 1 s from `from`.
        let settle = |from: Hz| {
            let mut g = BaseGovernor::new(cfg);
            let mut f = from;
            let mut busy_us = 0u64;
            for t in 0..100u64 {
                busy_us += 3000 * 400 / (f.0 / 1_000_000);
                let mut s = snap(t * 10, f, &[], vec![0]);
                s.cpus.push(CpuSample {
                    cpu: 0,
                    online: true,
                    busy: Nanos::from_micros(busy_us),
                });
                f = g.update(&s)[0].freq;
            }
            f
        };
        // One entry above what it wants: held. Two: lowered, after the wait.
        assert_eq!(settle(Hz::from_mhz(400)), Hz::from_mhz(400));
        assert_eq!(settle(Hz::from_mhz(600)), Hz::from_mhz(200));
    }

    #[test]
    fn rate_limit_delays_a_second_change() {
        let cfg = GovernorConfig {
            rate_limit: Nanos::from_millis(20),
            ..GovernorConfig::default()
        };
        let mut g = BaseGovernor::new(cfg);
        g.update(&snap(0, Hz::from_mhz(2000), &[(0, 0), (1, 0)], vec![0, 1]));
        // Busy for 10 ms: util ~195, target 1.25 * 2000 * 195 / 1024 -> 600 MHz.
        let c = g.update(&snap(
            10,
            Hz::from_mhz(2000),
            &[(0, 10), (1, 10)],
            vec![0, 1],
        ));
        assert_eq!(c[0].freq, Hz::from_mhz(600));
        // Idle: util decays and schedutil wants 400 MHz, but 20 ms have not passed.
        let c = g.update(&snap(
            20,
            Hz::from_mhz(600),
            &[(0, 10), (1, 10)],
            vec![0, 1],
        ));
        assert_eq!(
            c[0].reason,
            FreqReason::RateLimited(GovernorKind::Schedutil)
        );
        assert_eq!(c[0].freq, Hz::from_mhz(600));
        let c = g.update(&snap(
            35,
            Hz::from_mhz(600),
            &[(0, 10), (1, 10)],
            vec![0, 1],
        ));
        assert_eq!(c[0].reason, FreqReason::Base(GovernorKind::Schedutil));
        assert!(c[0].freq < Hz::from_mhz(600));
    }

    #[test]
    fn ondemand_follows_kernel_formula() {
        let t = table();
        let max = Hz::from_mhz(2000);
        assert_eq!(ondemand_freq(81, &t, max, 80), max);
        // 200 + 50 * 1800 / 100 = 1100 MHz: closest entries 1000 and 1200, lower wins the tie.
        assert_eq!(ondemand_freq(50, &t, max, 80), Hz::from_mhz(1000));
        assert_eq!(ondemand_freq(0, &t, max, 80), Hz::from_mhz(200));
    }

    #[test]
    fn conservative_steps_five_percent_of_max() {
        let cfg = GovernorConfig {
            kind: GovernorKind::Conservative,
            ..GovernorConfig::default()
        };
        let mut g = BaseGovernor::new(cfg);
        g.update(&snap(0, Hz::from_mhz(1000), &[(0, 0)], vec![0]));
        // Busy: 1000 + 100 = 1100 MHz requested, resolved down to 1000 (RELATION_H) ...
        let c = g.update(&snap(10, Hz::from_mhz(1000), &[(0, 10)], vec![0]));
        assert_eq!(c[0].freq, Hz::from_mhz(1000));
        // ... and the request accumulates: 1200 on the next busy tick.
        let c = g.update(&snap(20, Hz::from_mhz(1000), &[(0, 20)], vec![0]));
        assert_eq!(c[0].freq, Hz::from_mhz(1200));
        // Idle: 1200 - 100 = 1100 resolved up (RELATION_L) to 1200.
        let c = g.update(&snap(30, Hz::from_mhz(1200), &[(0, 20)], vec![0]));
        assert_eq!(c[0].freq, Hz::from_mhz(1200));
        let c = g.update(&snap(40, Hz::from_mhz(1200), &[(0, 20)], vec![0]));
        assert_eq!(c[0].freq, Hz::from_mhz(1000));
    }

    #[test]
    fn performance_and_powersave_respect_thermal_cap() {
        for kind in [GovernorKind::Performance, GovernorKind::Powersave] {
            let mut g = BaseGovernor::new(GovernorConfig {
                kind,
                ..GovernorConfig::default()
            });
            let mut s = snap(0, Hz::from_mhz(2000), &[(0, 0)], vec![0]);
            s.caps.thermal.push(DomainCap {
                domain: 0,
                max: Hz::from_mhz(1500),
            });
            let c = g.update(&s);
            let expect = match kind {
                GovernorKind::Performance => Hz::from_mhz(1400),
                _ => Hz::from_mhz(200),
            };
            assert_eq!(c[0].freq, expect);
        }
    }

    /// splitmix64 of `slot`: a load drawn anew for each slot of ticks.
    fn splitmix(slot: u64) -> u64 {
        let mut x = slot.wrapping_add(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
        x ^ (x >> 31)
    }

    /// Runs a two-CPU domain from the highest clock for `ticks` of 10 ms, `work_us(t)` of
    /// work per tick at the highest clock on each CPU (longer at a lower clock); the clock
    /// changes, the tick of each lowering, the last clock and the governor.
    fn run_load(
        cfg: GovernorConfig,
        ticks: u64,
        work_us: impl Fn(u64) -> u64,
    ) -> (u32, Vec<u64>, Hz, BaseGovernor) {
        run_load_with(BaseGovernor::new(cfg), ticks, work_us)
    }

    fn run_load_with(
        mut g: BaseGovernor,
        ticks: u64,
        work_us: impl Fn(u64) -> u64,
    ) -> (u32, Vec<u64>, Hz, BaseGovernor) {
        let mut f = Hz::from_mhz(2000);
        let (mut busy_us, mut changes, mut lowered) = (0u64, 0, Vec::new());
        for t in 0..ticks {
            busy_us += (work_us(t) * 2000 / (f.0 / 1_000_000)).min(10_000);
            let mut s = snap(t * 10, f, &[], vec![0, 1]);
            for cpu in [0, 1] {
                s.cpus.push(CpuSample {
                    cpu,
                    online: true,
                    busy: Nanos::from_micros(busy_us),
                });
            }
            let c = g.update(&s);
            if c[0].freq < f {
                lowered.push(t);
            }
            changes += u32::from(c[0].freq != f);
            f = c[0].freq;
        }
        (changes, lowered, f, g)
    }

    #[test]
    fn dip_rate_limit_waits_out_a_noisy_load_and_follows_one_that_stops() {
        let down = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            ..GovernorConfig::default()
        };
        let dip = GovernorConfig {
            dip_rate_limit: Nanos::from_millis(2000),
            ..down
        };
        // Other programs' short tasks: 0.5-4.5 ms of work in every 10 ms, drawn anew
        // every 100 ms, for 60 s.
        let noisy = |t: u64| 500 + splitmix(t / 10) % 4000;
        let (plain, ..) = run_load(down, 6000, noisy);
        let (calm, ..) = run_load(dip, 6000, noisy);
        assert!(
            calm * 2 <= plain,
            "{calm} changes with the dip limit, {plain} without"
        );
        // A heavy load that stops at 3 s is followed down after the down rate limit, not
        // the dip limit: the want stays under half the clock.
        let stops = |t: u64| if t < 300 { 8000 } else { 0 };
        let (_, lowered, ..) = run_load(dip, 600, stops);
        let first = lowered.iter().copied().find(|t| *t >= 300);
        assert!(
            first.is_some_and(|t| (350..300 + 150).contains(&t)),
            "lowered at ticks {lowered:?}"
        );
    }

    #[test]
    fn a_steady_load_whose_peaks_come_back_keeps_the_clock_of_its_peaks() {
        let dip = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            dip_rate_limit: Nanos::from_millis(2000),
            ..GovernorConfig::default()
        };
        let held = GovernorConfig {
            peak_hold: Nanos::from_millis(5000),
            ..dip
        };
        // 3 ms of work in every 10 ms, and 0.2 s of 5 ms every 4.5 s, for 60 s: each
        // peak is over before the dip limit has passed, and the next comes after it.
        let peaky = |t: u64| if t % 450 < 20 { 5000 } else { 3000 };
        let (followed, ..) = run_load(dip, 6000, peaky);
        let (kept, ..) = run_load(held, 6000, peaky);
        assert!(
            followed >= 20 && kept * 4 <= followed,
            "{kept} changes with the peak held, {followed} without"
        );
        // A load that stops is still followed down after the down rate limit: under half
        // the clock is a load gone, not a dip.
        let stops = |t: u64| if t < 300 { 8000 } else { 0 };
        let (_, lowered, last, _) = run_load(held, 600, stops);
        let first = lowered.iter().copied().find(|t| *t >= 300);
        assert!(
            first.is_some_and(|t| (350..450).contains(&t)),
            "lowered at ticks {lowered:?}"
        );
        assert!(last < Hz::from_mhz(1000), "{last:?} once the load stopped");
    }

    #[test]
    fn a_light_load_low_in_the_table_is_not_followed_down_at_each_lull() {
        let held = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            dip_rate_limit: Nanos::from_millis(2000),
            peak_hold: Nanos::from_millis(5000),
            ..GovernorConfig::default()
        };
        // Other programs' short tasks on a cluster no app runs on: 0.1 ms of work in every
        // 10 ms, and 0.3 s of 2.4 ms every 1.5 s, for 60 s. Its peaks want 600 MHz and
        // its lulls 200: under half the clock, but a table step low in the table, and
        // the lull is over before the peak hold is.
        let light = |t: u64| if t % 150 < 30 { 2400 } else { 100 };
        let (changes, lowered, last, _) = run_load(held, 6000, light);
        let late: Vec<u64> = lowered.iter().copied().filter(|t| *t >= 500).collect();
        assert!(
            late.is_empty() && changes <= 4,
            "{changes} changes, lowered at ticks {lowered:?}"
        );
        assert!(last <= Hz::from_mhz(600), "{last:?}");
    }

    #[test]
    fn a_load_back_within_the_time_that_called_it_gone_gets_its_clock_back() {
        let held = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            dip_rate_limit: Nanos::from_millis(2000),
            peak_hold: Nanos::from_millis(5000),
            ..GovernorConfig::default()
        };
        let top = Hz::from_mhz(2000);
        // A heavy load with a lull from 3 s to 4.3 s: lowered as a load gone at 4.05 s,
        // and back 0.25 s later. Climbing an entry per tick as PELT follows, it took
        // 10 changes in all and was at 1.6 GHz 0.3 s after the load came back.
        let lull = |t: u64| if (300..430).contains(&t) { 0 } else { 8000 };
        let (changes, lowered, last, _) = run_load(held, 600, lull);
        assert!(
            lowered.len() == 1 && changes <= 5 && last == top,
            "{changes} changes, lowered at ticks {lowered:?}, {last:?} at the end"
        );
        let (_, _, back, _) = run_load(held, 460, lull);
        assert_eq!(back, top, "0.3 s after the load came back");
        // Bursts off for 2.5 s: each is back long after it was lowered as gone, and the
        // clock climbs with it.
        let bursts = |t: u64| if t % 300 < 50 { 8000 } else { 0 };
        let (_, lowered, climbing, _) = run_load(held, 330, bursts);
        assert!(
            lowered.len() == 1 && climbing < top,
            "lowered at ticks {lowered:?}, {climbing:?} 0.3 s into the second burst"
        );
    }

    #[test]
    fn a_lowering_the_load_takes_back_returns_at_once_and_is_tried_less_often() {
        let held = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            dip_rate_limit: Nanos::from_millis(2000),
            peak_hold: Nanos::from_millis(5000),
            ..GovernorConfig::default()
        };
        // A load that wants 1.4 GHz for 1 s in every 8 s and 800 MHz between, for 60 s:
        // lowered once each peak is past the hold, and climbing back a table entry at a
        // time at the next, it took 29 changes (8 lowerings). With the rule each
        // lowering is taken back in one change, and once the dips wait 8 s the clock is
        // not lowered at all.
        let stream = |t: u64| if t % 800 < 100 { 5000 } else { 3000 };
        let (changes, lowered, ..) = run_load(held, 6000, stream);
        assert!(
            changes <= 4 && lowered.len() <= 2,
            "{changes} changes, lowered at ticks {lowered:?}"
        );
    }

    #[test]
    fn a_held_domain_is_not_lowered_until_the_hold_ends() {
        let cfg = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            ..GovernorConfig::default()
        };
        // A heavy load that stops at 0.3 s, comes back at 1 s and stops for good at
        // 1.5 s; the domain is held until 4 s.
        let load = |t: u64| {
            if t < 30 || (100..150).contains(&t) {
                8000
            } else {
                0
            }
        };
        let top = Hz::from_mhz(2000);
        let mut held = BaseGovernor::new(cfg);
        held.hold_lowering(0, Nanos::from_millis(4000), top);
        let (_, lowered, ..) = run_load_with(held, 600, load);
        assert!(
            lowered.first().is_some_and(|t| (400..460).contains(t)),
            "lowered at ticks {lowered:?}"
        );
        let (_, free, ..) = run_load(cfg, 600, load);
        assert!(free.first().is_some_and(|t| *t < 400), "{free:?}");
        // Held down to half its highest clock: lowered to that floor while the hold
        // lasts, below it once the hold ends.
        let floor = Hz::from_mhz(1000);
        let floored = || {
            let mut g = BaseGovernor::new(cfg);
            g.hold_lowering(0, Nanos::from_millis(4000), floor);
            g
        };
        let (_, lowered, during, _) = run_load_with(floored(), 400, load);
        assert!(
            lowered.first().is_some_and(|t| *t < 400) && during >= floor && during < top,
            "at {during:?} when the hold ends, lowered at ticks {lowered:?}"
        );
        let (_, _, after, _) = run_load_with(floored(), 600, load);
        assert!(after < floor, "{after:?} after the hold");
    }

    #[test]
    fn a_raised_domain_goes_to_its_floor_at_once_and_comes_down_after_the_hold() {
        let cfg = GovernorConfig {
            down_rate_limit: Nanos::from_millis(500),
            ..GovernorConfig::default()
        };
        let lowest = Hz::from_mhz(200);
        let floor = Hz::from_mhz(1000);
        // An idle domain at its lowest clock, held from the first tick until 2 s.
        let run = |raise: bool| {
            let mut g = BaseGovernor::new(cfg);
            if raise {
                g.raise_to(0, Nanos::from_millis(2000), floor);
            } else {
                g.hold_lowering(0, Nanos::from_millis(2000), floor);
            }
            let mut f = lowest;
            let mut seen = Vec::new();
            for t in 0..400 {
                let s = snap(t * 10, f, &[(0, 0), (1, 0)], vec![0, 1]);
                f = g.update(&s)[0].freq;
                seen.push(f);
            }
            seen
        };
        let raised = run(true);
        assert_eq!(raised[1], floor, "{:?}", &raised[..5]);
        assert!(raised[1..200].iter().all(|f| *f == floor));
        assert_eq!(raised[399], lowest, "lowered once the hold ends");
        // A hold alone keeps a clock from falling; it does not raise one.
        assert!(run(false).iter().all(|f| *f == lowest));
    }
}
