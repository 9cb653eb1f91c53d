//! The manager: holds the state that outlives one tick (PELT signals, models, controllers,
//! the plan in force, dwell timers) and combines the three levels into one decision.
//! `step` is deterministic: the same sequence of snapshots gives the same decisions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::controller::{AppController, ControllerAction, ControllerConfig};
use crate::decision::{AppDecision, Decision, DomainDecision, FreqReason, SubnetReason};
use crate::governor::{BaseChoice, BaseGovernor, GovernorConfig};
use crate::model::{
    ClockRatios, DomainLoad, LatencyCoefs, LatencyModel, PlatformPower, PowerModel,
};
use crate::optimiser::{
    evaluate, optimise, AppProblem, DomainOption, Mode, OptimiserConfig, Plan, Problem,
    SubnetOption,
};
use crate::snapshot::{AppState, DomainKind, FreqDomain, Snapshot};
use crate::units::{Hz, Nanos};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub governor: GovernorConfig,
    pub controller: ControllerConfig,
    pub optimiser: OptimiserConfig,
    /// Forgetting factors of the latency and power fits (closer to 1: longer memory).
    pub latency_forgetting: f64,
    pub power_forgetting: f64,
    /// The platform description that seeds the power model.
    pub platform: PlatformPower,
    /// The optimiser also runs this often without any event.
    pub reoptimise_every: Nanos,
    /// A plan stays at least this long unless an event or a predicted miss forces a change.
    pub dwell: Nanos,
    /// A periodic plan replaces the one in force only if it saves this fraction of power ...
    pub gain_threshold: f64,
    /// ... or gains this many priority-weighted accuracy points.
    pub accuracy_gain_points: f64,
    /// Hysteresis on deadlines: a plan is adopted only if every predicted latency is under
    /// `deadline * (1 - optimiser.margin)`, and stays in force while they are under
    /// `deadline * (1 - keep_margin)` (a smaller margin).
    pub keep_margin: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            governor: GovernorConfig::default(),
            controller: ControllerConfig::default(),
            optimiser: OptimiserConfig::default(),
            latency_forgetting: 0.98,
            power_forgetting: 0.995,
            platform: PlatformPower::default(),
            reoptimise_every: Nanos::from_millis(500),
            dwell: Nanos::from_millis(2000),
            gain_threshold: 0.05,
            accuracy_gain_points: 1.0,
            keep_margin: 0.05,
        }
    }
}

/// How many samples the declared full-clock latency is worth to the cautious latency fit:
/// as many as the data at one operating point weighs at steady state (1 / (1 - 0.98)), so
/// that neither the declaration nor the measurements alone decide the full-clock figure.
const ANCHOR_WEIGHT: f64 = 50.0;

#[derive(Clone, Debug)]
struct AppEntry {
    /// What the app declared, to notice a change of targets or library.
    declared: AppState,
    models: Vec<LatencyModel>,
    /// The same data fitted from the cautious seed ([`LatencyCoefs::seed_flat`]), anchored
    /// at the declared full-clock latency.
    cautious: Vec<LatencyModel>,
    /// Latency at full clocks assumed before any observation, per sub-network.
    prior_ms: Vec<f64>,
    controller: AppController,
}

/// Everything about the hardware whose change calls for a new plan.
#[derive(Clone, Debug, PartialEq)]
struct HardwareKey {
    /// The domains with their moving parts (current frequency, busy counter) blanked.
    domains: Vec<FreqDomain>,
    online: Vec<(u32, bool)>,
    caps: crate::snapshot::Caps,
}

/// The stateful policy. Create one per governed machine and call [`Manager::step`] at each
/// tick.
#[derive(Clone, Debug)]
pub struct Manager {
    cfg: Config,
    base: BaseGovernor,
    apps: BTreeMap<u32, AppEntry>,
    power: Option<PowerModel>,
    hardware: Option<HardwareKey>,
    plan: Option<Plan>,
    plan_since: Nanos,
    last_optimised: Option<Nanos>,
}

impl Manager {
    pub fn new(cfg: Config) -> Manager {
        Manager {
            base: BaseGovernor::new(cfg.governor),
            cfg,
            apps: BTreeMap::new(),
            power: None,
            hardware: None,
            plan: None,
            plan_since: Nanos::ZERO,
            last_optimised: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The plan in force, if any app is registered.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The learned power model (seeded at the first snapshot).
    pub fn power_model(&self) -> Option<&PowerModel> {
        self.power.as_ref()
    }

    /// Predicted latency of an app's sub-network at the snapshot's clocks, in ms.
    pub fn predict_latency_ms(&self, snap: &Snapshot, app: u32, subnet: u32) -> Option<f64> {
        let e = self.apps.get(&app)?;
        let option = subnet_option(e, subnet as usize)?;
        Some(option.latency_ms(clock_ratios(snap, &e.declared)))
    }

    pub fn step(&mut self, snap: &Snapshot) -> Decision {
        let base = self.base.update(snap);
        let mut event = self.track_hardware(snap);
        event |= self.track_apps(snap);
        event |= self.learn(snap, &base);

        let mut optimised = false;
        let mut adopted = false;
        let due = self
            .last_optimised
            .is_none_or(|t| snap.now.saturating_sub(t) >= self.cfg.reoptimise_every);
        if self.apps.is_empty() {
            self.plan = None;
        } else if event || due {
            optimised = true;
            self.last_optimised = Some(snap.now);
            let problem = self.problem(snap, &base);
            let new = optimise(&problem, &self.cfg.optimiser);
            if event || self.should_replace(snap, &problem, &new) {
                self.adopt(snap, new);
                adopted = true;
            }
        }
        self.assemble(snap, &base, optimised, adopted)
    }

    fn track_hardware(&mut self, snap: &Snapshot) -> bool {
        let key = HardwareKey {
            domains: snap
                .domains
                .iter()
                .map(|d| FreqDomain {
                    cur: Hz(0),
                    busy: None,
                    ..d.clone()
                })
                .collect(),
            online: snap.cpus.iter().map(|c| (c.cpu, c.online)).collect(),
            caps: snap.caps.clone(),
        };
        // The power model depends on which domains exist, not on their limits: a thermal
        // cap must not throw away what was learned.
        let kinds = |v: &[FreqDomain]| v.iter().map(|d| (d.id, d.kind)).collect::<Vec<_>>();
        let same_domains = self
            .hardware
            .as_ref()
            .is_some_and(|h| kinds(&h.domains) == kinds(&key.domains));
        if !same_domains {
            let ids: Vec<(u32, DomainKind)> = snap.domains.iter().map(|d| (d.id, d.kind)).collect();
            self.power = Some(PowerModel::seeded(
                &self.cfg.platform,
                &ids,
                self.cfg.power_forgetting,
            ));
        }
        let changed = self.hardware.as_ref() != Some(&key);
        self.hardware = Some(key);
        changed
    }

    fn track_apps(&mut self, snap: &Snapshot) -> bool {
        let mut changed = false;
        let before = self.apps.len();
        self.apps
            .retain(|id, _| snap.apps.iter().any(|a| a.id == *id));
        changed |= self.apps.len() != before;
        for app in &snap.apps {
            let same = self
                .apps
                .get(&app.id)
                .is_some_and(|e| same_declaration(&e.declared, app));
            if same {
                continue;
            }
            changed = true;
            let keep_models = self.apps.get(&app.id).is_some_and(|e| {
                e.declared.library == app.library && e.declared.devices == app.devices
            });
            let entry = if keep_models {
                let mut e = self.apps.remove(&app.id).expect("checked above");
                e.declared = declaration(app);
                e
            } else {
                self.new_entry(app)
            };
            self.apps.insert(app.id, entry);
        }
        changed
    }

    fn new_entry(&self, app: &AppState) -> AppEntry {
        let n = app.library.len();
        let deadline = app.targets.deadline.as_millis_f64();
        let anchor = app
            .library
            .iter()
            .find_map(|s| Some((s.latency_full?, s.relative_cost?)));
        let max_cost = app
            .library
            .iter()
            .filter_map(|s| s.relative_cost)
            .fold(0.0f64, f64::max);
        let prior_ms: Vec<f64> = app
            .library
            .iter()
            .enumerate()
            .map(|(i, s)| match (s.latency_full, s.relative_cost, anchor) {
                (Some(l), _, _) => l.as_millis_f64(),
                (None, Some(c), Some((al, ac))) if ac > 0.0 => al.as_millis_f64() * c / ac,
                // No measurement at all: assume the largest entry just fits the deadline at
                // full clocks and the others scale with their cost (or position).
                (None, Some(c), _) if max_cost > 0.0 => deadline * c / max_cost,
                _ => deadline * (i + 1) as f64 / n.max(1) as f64,
            })
            .collect();
        let models = prior_ms
            .iter()
            .map(|l| {
                LatencyModel::seeded(
                    LatencyCoefs::seed(*l, app.devices),
                    self.cfg.latency_forgetting,
                )
            })
            .collect();
        let cautious = prior_ms
            .iter()
            .map(|l| {
                LatencyModel::anchored(
                    LatencyCoefs::seed_flat(*l),
                    self.cfg.latency_forgetting,
                    ANCHOR_WEIGHT,
                )
            })
            .collect();
        let lowest = lowest_meeting_floor(app);
        // Until the first plan, the app runs its cheapest acceptable entry.
        let controller = AppController::new(self.cfg.controller, deadline, lowest, lowest);
        AppEntry {
            declared: declaration(app),
            models,
            cautious,
            prior_ms,
            controller,
        }
    }

    /// Feeds models and controllers; true when a controller needs the optimiser.
    fn learn(&mut self, snap: &Snapshot, base: &[BaseChoice]) -> bool {
        let mut escalate = false;
        for app in &snap.apps {
            let Some(e) = self.apps.get_mut(&app.id) else {
                continue;
            };
            let r = clock_ratios(snap, &e.declared);
            let deadline =
                e.declared.targets.deadline.as_millis_f64() * (1.0 - self.cfg.optimiser.margin);
            // Predictions from the models as they stood at the start of the tick.
            let fits: Vec<bool> = (0..e.models.len())
                .map(|i| subnet_option(e, i).is_some_and(|o| o.latency_ms(r) <= deadline))
                .collect();
            for inf in &app.finished {
                let s = inf.subnet as usize;
                if s >= e.models.len() {
                    continue;
                }
                let (action, usable) = e.controller.on_inference(inf, |next| {
                    fits.get(next as usize).copied().unwrap_or(false)
                });
                if usable {
                    e.models[s].observe(r, inf.latency.as_millis_f64());
                    e.cautious[s].observe(r, inf.latency.as_millis_f64());
                }
                escalate |= action == ControllerAction::Exhausted;
            }
        }
        if let (Some(pm), Some(measured)) = (self.power.as_mut(), snap.power) {
            let loads: Vec<DomainLoad> = snap
                .domains
                .iter()
                .zip(base)
                .filter(|(_, b)| b.reason != FreqReason::NoTelemetry)
                .map(|(d, b)| DomainLoad {
                    domain: d.id,
                    util: b.mean_load,
                    speed: d.cur.as_f64() / d.max_freq().as_f64().max(1.0),
                })
                .collect();
            if loads.len() == snap.domains.len() {
                pm.observe(&loads, measured);
            }
        }
        escalate
    }

    fn problem(&self, snap: &Snapshot, base: &[BaseChoice]) -> Problem {
        let domains = snap
            .domains
            .iter()
            .zip(base)
            .map(|(d, b)| {
                let allowed = snap.allowed_max(d);
                let mut freqs: Vec<Hz> =
                    d.table.iter().copied().filter(|f| *f <= allowed).collect();
                if freqs.is_empty() {
                    freqs.push(d.min_freq());
                }
                DomainOption {
                    id: d.id,
                    kind: d.kind,
                    freqs,
                    max_freq: d.max_freq(),
                    cpu_count: d.cpus.len(),
                    online_cpus: snap.online_cpus(d),
                    util: b.mean_load,
                    speed: b.freq.as_f64() / d.max_freq().as_f64().max(1.0),
                }
            })
            .collect();
        let apps = snap
            .apps
            .iter()
            .filter_map(|a| {
                let e = self.apps.get(&a.id)?;
                let t = &e.declared.targets;
                Some(AppProblem {
                    id: a.id,
                    priority: t.priority,
                    deadline_ms: t.deadline.as_millis_f64(),
                    period_ms: t.period.unwrap_or(t.deadline).as_millis_f64(),
                    accuracy_floor: t.accuracy_floor,
                    devices: e.declared.devices,
                    cpu_domains: e.declared.cpu_domains.clone(),
                    subnets: e
                        .declared
                        .library
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            subnet_option(e, i).unwrap_or(SubnetOption {
                                accuracy: s.accuracy,
                                coefs: LatencyCoefs::seed(0.0, e.declared.devices),
                                cautious: None,
                            })
                        })
                        .collect(),
                })
            })
            .collect();
        Problem {
            domains,
            apps,
            power: self
                .power
                .as_ref()
                .map(|p| p.coefs())
                .unwrap_or(crate::model::PowerCoefs {
                    static_w: 0.0,
                    domains: Vec::new(),
                }),
            power_cap: snap.caps.power,
        }
    }

    /// Stability: a periodic plan replaces the one in force only after the dwell time and
    /// for a clear gain (serving more apps, saving power, or gaining accuracy), unless the
    /// one in force is now predicted to break a constraint. "Break" has hysteresis: a plan
    /// is adopted only with latencies under `deadline * (1 - margin)` but kept while they
    /// stay under `deadline * (1 - keep_margin)`. Energy-optimal plans sit right at the
    /// adoption bound, so without the band every small model update would tip the plan in
    /// force over it and force a re-plan, past the dwell time.
    fn should_replace(&self, snap: &Snapshot, problem: &Problem, new: &Plan) -> bool {
        let Some(cur) = &self.plan else { return true };
        let keep = OptimiserConfig {
            margin: self.cfg.keep_margin.min(self.cfg.optimiser.margin),
            ..self.cfg.optimiser
        };
        let Some((cur_power, cur_score)) = evaluate(problem, &keep, &cur.freqs, &cur.subnets)
        else {
            return true;
        };
        if snap.now.saturating_sub(self.plan_since) < self.cfg.dwell {
            return false;
        }
        if new.unserved.len() < cur.unserved.len() {
            return true;
        }
        if new.unserved.len() > cur.unserved.len() {
            // The plan in force still serves more apps and still holds.
            return false;
        }
        let saves = new.power.0 <= cur_power.0 * (1.0 - self.cfg.gain_threshold);
        let gains = new.score >= cur_score + self.cfg.accuracy_gain_points;
        match self.cfg.optimiser.mode {
            Mode::Energy => {
                saves
                    || (gains
                        && new.power.0 <= cur_power.0 * (1.0 + self.cfg.optimiser.tie_tolerance))
            }
            Mode::Accuracy => gains || ((new.score - cur_score).abs() < 1e-9 && saves),
        }
    }

    fn adopt(&mut self, snap: &Snapshot, plan: Plan) {
        for (app, subnet) in &plan.subnets {
            if let (Some(e), Some(a)) = (
                self.apps.get_mut(app),
                snap.apps.iter().find(|a| a.id == *app),
            ) {
                e.controller.follow_plan(
                    a.targets.deadline.as_millis_f64(),
                    *subnet,
                    lowest_meeting_floor(a).min(*subnet),
                );
            }
        }
        self.plan = Some(plan);
        self.plan_since = snap.now;
    }

    fn assemble(
        &self,
        snap: &Snapshot,
        base: &[BaseChoice],
        optimised: bool,
        adopted: bool,
    ) -> Decision {
        let domains = snap
            .domains
            .iter()
            .zip(base)
            .map(|(d, b)| {
                let planned = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.freqs.iter().find(|f| f.0 == d.id))
                    .map(|f| f.1);
                let Some(f) = planned else {
                    return DomainDecision {
                        domain: d.id,
                        freq: b.freq,
                        reason: b.reason,
                    };
                };
                let allowed = snap.allowed_max(d);
                let mut freq = resolve_down(d, f.min(allowed));
                let mut reason = FreqReason::Plan;
                for (id, e) in &self.apps {
                    let steps = e.controller.floor_steps();
                    if steps == 0 || !self.is_served(*id) || !uses_domain(snap, &e.declared, d) {
                        continue;
                    }
                    let raised = step_up(d, f, steps).min(allowed);
                    if raised > freq {
                        freq = resolve_down(d, raised);
                        reason = FreqReason::AppFloor { app: *id };
                    }
                }
                DomainDecision {
                    domain: d.id,
                    freq,
                    reason,
                }
            })
            .collect();
        let apps = snap
            .apps
            .iter()
            .map(|a| {
                let unserved = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.unserved.iter().find(|u| u.0 == a.id));
                match (unserved, self.apps.get(&a.id)) {
                    (Some((_, cause)), _) => AppDecision {
                        app: a.id,
                        subnet: 0,
                        reason: SubnetReason::Unserved(*cause),
                    },
                    (None, Some(e)) => AppDecision {
                        app: a.id,
                        subnet: e
                            .controller
                            .subnet()
                            .min(a.library.len().saturating_sub(1) as u32),
                        reason: e.controller.reason(),
                    },
                    (None, None) => AppDecision {
                        app: a.id,
                        subnet: 0,
                        reason: SubnetReason::Plan,
                    },
                }
            })
            .collect();
        Decision {
            domains,
            apps,
            optimised,
            adopted_plan: adopted,
            predicted_power: self.plan.as_ref().map(|p| p.power),
        }
    }

    fn is_served(&self, app: u32) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.subnets.iter().any(|s| s.0 == app))
    }
}

/// The parts of an app's registration that define the problem (not its latest records).
fn declaration(app: &AppState) -> AppState {
    AppState {
        finished: Vec::new(),
        ..app.clone()
    }
}

fn same_declaration(a: &AppState, b: &AppState) -> bool {
    a.library == b.library
        && a.targets == b.targets
        && a.devices == b.devices
        && a.cpu_domains == b.cpu_domains
}

fn lowest_meeting_floor(app: &AppState) -> u32 {
    app.library
        .iter()
        .position(|s| s.accuracy >= app.targets.accuracy_floor)
        .unwrap_or(0) as u32
}

/// A sub-network's latency coefficients from one family of models: its own model once it
/// has data; otherwise the nearest observed sibling's, scaled by the ratio of their priors
/// (declared latencies or cost-based guesses), which carries what was learned about this
/// board and this app's sensitivity to each clock over to sub-networks it has not run yet.
fn sibling_coefs(models: &[LatencyModel], prior_ms: &[f64], s: usize) -> Option<LatencyCoefs> {
    let own = models.get(s)?;
    if own.samples() > 0 {
        return Some(own.coefs());
    }
    let sibling = (0..models.len())
        .filter(|o| models[*o].samples() > 0 && prior_ms[*o] > 0.0)
        .min_by_key(|o| (o.abs_diff(s), *o));
    Some(match sibling {
        Some(o) => models[o].coefs().scaled(prior_ms[s] / prior_ms[o]),
        None => own.coefs(),
    })
}

fn subnet_coefs(e: &AppEntry, s: usize) -> Option<LatencyCoefs> {
    sibling_coefs(&e.models, &e.prior_ms, s)
}

/// What the optimiser sees of a sub-network: both fits (see [`SubnetOption::cautious`]).
fn subnet_option(e: &AppEntry, s: usize) -> Option<SubnetOption> {
    Some(SubnetOption {
        accuracy: e.declared.library.get(s)?.accuracy,
        coefs: subnet_coefs(e, s)?,
        cautious: sibling_coefs(&e.cautious, &e.prior_ms, s),
    })
}

fn app_cpu_domains<'a>(snap: &'a Snapshot, app: &AppState) -> impl Iterator<Item = &'a FreqDomain> {
    let any_listed = snap.domains.iter().any(|d| {
        d.kind == DomainKind::Cpu && app.cpu_domains.contains(&d.id) && snap.online_cpus(d) > 0
    });
    let listed = app.cpu_domains.clone();
    snap.domains.iter().filter(move |d| {
        d.kind == DomainKind::Cpu
            && snap.online_cpus(d) > 0
            && (!any_listed || listed.contains(&d.id))
    })
}

fn uses_domain(snap: &Snapshot, app: &AppState, d: &FreqDomain) -> bool {
    match d.kind {
        DomainKind::Gpu => app.devices.gpu,
        DomainKind::Memory => false,
        DomainKind::Cpu => app.devices.cpu && app_cpu_domains(snap, app).any(|x| x.id == d.id),
    }
}

/// `f_max / f` of the clocks an app's inference sees now; the slowest of its CPU domains.
fn clock_ratios(snap: &Snapshot, app: &AppState) -> ClockRatios {
    let ratio = |d: &FreqDomain| d.max_freq().as_f64() / d.cur.as_f64().max(1.0);
    let first = |k: DomainKind| snap.domains.iter().find(|d| d.kind == k);
    ClockRatios {
        gpu: first(DomainKind::Gpu).map_or(1.0, ratio),
        cpu: app_cpu_domains(snap, app).map(ratio).fold(1.0, f64::max),
        mem: first(DomainKind::Memory).map_or(1.0, ratio),
    }
}

fn resolve_down(d: &FreqDomain, f: Hz) -> Hz {
    crate::snapshot::resolve_at_most(&d.table, f)
}

fn step_up(d: &FreqDomain, f: Hz, steps: u32) -> Hz {
    if d.table.is_empty() {
        return f;
    }
    let i = d
        .table
        .iter()
        .position(|x| *x >= f)
        .unwrap_or(d.table.len().saturating_sub(1));
    d.table[(i + steps as usize).min(d.table.len() - 1)]
}
