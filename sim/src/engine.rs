//! The engine: advances a board, its apps and its background load in virtual time, feeds a
//! governor the telemetry a board would give it (cumulative busy counters, current
//! frequencies, finished inferences, a noisy power reading) at each control tick, and
//! applies its decision after the domain's transition latency. Ground truth (the latency
//! split, the power constants, the jitter) never reaches the governor.
//!
//! Scheduling model, an assumption: each inference runs its CPU part, then its GPU part
//! (compute and memory-bound work, scaling with the GPU and EMC clocks), then a fixed part.
//! Each app's inference thread lives on a home core (the apps take the online cores in
//! turn), the core its CPU domain is reported from, as the agent reports the CPU a thread
//! runs on. Tasks, in arrival order, go to the least-loaded online core at each step,
//! preferring one that is no running app's home; a core shared by several items is
//! time-shared equally.
//! The GPU is time-shared equally among the inferences in their GPU part, after a
//! background job's fixed share.

use std::collections::VecDeque;

use anyhow::{bail, Result};
use dnngov_policy::{
    AppState, Caps, CpuSample, Devices, FreqDomain, Hz, Inference, Nanos, PlanTrigger, Snapshot,
    SubNetwork, Targets, Watts,
};

use crate::platform::{DomainSpec, Kind, Platform};
use crate::rng::Rng;
use crate::scenario::{AppSpec, CpuLoad, Scenario};

/// Sampling period of the time series kept for plots.
pub const SERIES_PERIOD_MS: f64 = 100.0;

/// Memory-controller activity caused by a busy CPU core, and by the GPU background job per
/// unit of its share. Assumptions: CPU tasks here are mostly cache-resident; a GPU job
/// streams more.
pub(crate) const MEM_PER_CPU_BUSY: f64 = 0.05;
pub(crate) const MEM_PER_GPU_BACKGROUND: f64 = 0.2;

/// What a governor sets at one tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Control {
    /// (domain id, frequency); domains left out keep their frequency.
    pub freqs: Vec<(u32, Hz)>,
    /// (app id, sub-network index); apps left out keep theirs.
    pub subnets: Vec<(u32, u32)>,
    /// What made the policy adopt a new plan at this tick, for a governor that plans.
    pub plan: Option<PlanTrigger>,
}

/// A governor under test: sees one snapshot per tick, nothing else.
pub trait Strategy {
    fn name(&self) -> String;
    fn decide(&mut self, snap: &Snapshot) -> Control;
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub energy_j: f64,
    pub mean_power_w: f64,
    /// Frame response time (arrival to result) over every app.
    pub latency_mean_ms: f64,
    pub latency_p99_ms: f64,
    /// Late, dropped, or still unfinished past their deadline at the end.
    pub miss_pct: f64,
    pub mean_accuracy: f64,
    pub frames: u64,
    pub switches: u64,
    pub freq_changes: u64,
    pub task_latency_mean_ms: f64,
    pub task_latency_p99_ms: f64,
    pub tasks: u64,
    /// Share of 100 ms windows whose mean power exceeded the power cap in force.
    pub over_cap_pct: f64,
    /// Virtual seconds simulated.
    pub simulated_s: f64,
    /// The frame figures per app, in scenario order.
    pub apps: Vec<AppMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppMetrics {
    pub name: String,
    pub miss_pct: f64,
    pub latency_mean_ms: f64,
    pub mean_accuracy: f64,
}

/// Time series sampled every [`SERIES_PERIOD_MS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub t_s: Vec<f64>,
    pub domain_names: Vec<String>,
    /// MHz, per domain, per sample.
    pub freq_mhz: Vec<Vec<f64>>,
    pub power_w: Vec<f64>,
    pub app_names: Vec<String>,
    /// Worst response time of the frames finished in the window (NaN if none), per app.
    pub latency_ms: Vec<Vec<f64>>,
    pub deadline_ms: Vec<Vec<f64>>,
    pub subnet: Vec<Vec<f64>>,
}

/// Every change a governor made and every frame's fate, with its time, for judging how a
/// run behaved over time (see `sweep`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// (time in ms, domain index in the platform) of every frequency the governor changed.
    pub freq_changes: Vec<(f64, usize)>,
    /// (time in ms, app index, from, to) of every sub-network switch.
    pub switches: Vec<(f64, usize, u32, u32)>,
    /// (arrival in ms, app index, missed) of every frame judged: completed, dropped, or
    /// still waiting past its deadline at the end.
    pub frames: Vec<(f64, usize, bool)>,
    /// (time in ms, what made it) of every plan a planning governor adopted.
    pub plans: Vec<(f64, PlanTrigger)>,
}

#[derive(Clone, Debug)]
pub struct RunResult {
    pub governor: String,
    pub metrics: Metrics,
    pub series: Series,
    pub trace: Trace,
}

struct DomainRt {
    spec: DomainSpec,
    table: Vec<Hz>,
    cur: Hz,
    target: Hz,
    switch_at: f64,
    busy_ns: f64,
    /// Power constants at `cur`, kept up to date by [`DomainRt::set_cur`]: dynamic power
    /// per unit of activity, and leakage.
    dyn_w: f64,
    leak_w: f64,
    speed: f64,
}

impl DomainRt {
    fn set_cur(&mut self, f: Hz) {
        self.cur = f;
        self.dyn_w = self.spec.dynamic_w(f, 1.0);
        self.leak_w = self.spec.leakage(f);
        self.speed = f.as_f64() / self.spec.max_hz().as_f64();
    }

    /// Power of one core (or the device) at `activity`, without leakage.
    fn unit_power(&self, activity: f64) -> f64 {
        let a = activity.clamp(0.0, 1.0);
        self.dyn_w * (a + (1.0 - a) * self.spec.idle_activity)
    }
}

struct Core {
    cpu: u32,
    domain: usize,
    online: bool,
    busy_ns: f64,
    step_busy: f64,
    load: u32,
    /// Running apps whose inference thread lives on this core.
    homes: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Cpu,
    Gpu,
    Fixed,
}

struct Running {
    arrival: f64,
    start: f64,
    subnet: usize,
    phase: Phase,
    cpu_left: f64,
    gpu_left: f64,
    gpu_ms: f64,
    mem_ms: f64,
    fixed_left: f64,
    /// Time left to this inference in the current step.
    avail: f64,
}

struct AppRt {
    spec: AppSpec,
    lib: Vec<(f64, f64)>,
    deadline_ms: f64,
    next_arrival: f64,
    frames: u64,
    queue: VecDeque<f64>,
    run: Option<Running>,
    subnet: usize,
    switched: bool,
    finished: Vec<Inference>,
    window_worst: f64,
    /// When the previous inference finished: the next one may start then, mid-step.
    free_at: f64,
    /// Frames completed, completed late, dropped; sums of latency and accuracy.
    completed: u64,
    late: u64,
    dropped: u64,
    latency_sum: f64,
    accuracy_sum: f64,
}

struct Task {
    arrival: f64,
    left: f64,
    /// Where in its first step it arrived; zero afterwards.
    offset: f64,
}

struct LoadRt {
    spec: CpuLoad,
    rng: Rng,
    on_time: f64,
    next: f64,
}

impl LoadRt {
    fn new(spec: CpuLoad, rng: Rng) -> LoadRt {
        let mut l = LoadRt {
            spec,
            rng,
            on_time: 0.0,
            next: 0.0,
        };
        l.advance();
        l
    }

    /// Draws the next arrival. Arrivals are Poisson in "on" time, mapped onto the real
    /// timeline of bursts, so the sequence depends on the seed only.
    fn advance(&mut self) {
        if self.spec.rate_hz <= 0.0 {
            self.next = f64::INFINITY;
            return;
        }
        self.on_time += self.rng.exponential(1000.0 / self.spec.rate_hz);
        let start = self.spec.start_s * 1000.0;
        self.next = match self.spec.on_s {
            Some(on) => {
                let on = on * 1000.0;
                let cycles = (self.on_time / on).floor();
                start + cycles * (on + self.spec.off_s * 1000.0) + (self.on_time - cycles * on)
            }
            None => start + self.on_time,
        };
    }
}

#[derive(Default)]
struct Tally {
    energy_j: f64,
    latencies: Vec<f64>,
    /// Completed after their deadline.
    missed: u64,
    dropped: u64,
    accuracy_sum: f64,
    completed: u64,
    switches: u64,
    freq_changes: u64,
    task_latencies: Vec<f64>,
    windows: u64,
    windows_over_cap: u64,
}

/// Runs a scenario with one governor. Deterministic for a given seed.
pub fn run(
    scn: &Scenario,
    plat: &Platform,
    strategy: &mut dyn Strategy,
    seed: u64,
) -> Result<RunResult> {
    let mut sim = Sim::new(scn, plat, seed)?;
    sim.run(strategy)
}

struct Sim<'a> {
    scn: &'a Scenario,
    seed: u64,
    base_power_w: f64,
    sensor_noise: f64,
    domains: Vec<DomainRt>,
    cores: Vec<Core>,
    gpu: Option<usize>,
    mem: Option<usize>,
    apps: Vec<AppRt>,
    loads: Vec<LoadRt>,
    tasks: Vec<Task>,
    /// Indices of online cores, in CPU order; scratch lists reused every step.
    online: Vec<usize>,
    app_cpu: Vec<usize>,
    task_core: Vec<usize>,
    gpu_background: f64,
    power_cap: Option<f64>,
    /// Frequency cap per domain (index as in `domains`), from `max_mhz` events.
    freq_caps: Vec<Option<Hz>>,
    events_applied: usize,
    tally: Tally,
    series: Series,
    trace: Trace,
}

impl<'a> Sim<'a> {
    fn new(scn: &'a Scenario, plat: &Platform, seed: u64) -> Result<Sim<'a>> {
        let domains: Vec<DomainRt> = plat
            .domains
            .iter()
            .map(|d| {
                let mut rt = DomainRt {
                    spec: d.clone(),
                    table: d.table(),
                    cur: d.max_hz(),
                    target: d.max_hz(),
                    switch_at: 0.0,
                    busy_ns: 0.0,
                    dyn_w: 0.0,
                    leak_w: 0.0,
                    speed: 1.0,
                };
                rt.set_cur(d.max_hz());
                rt
            })
            .collect();
        let mut cores = Vec::new();
        for (i, d) in plat.domains.iter().enumerate() {
            for c in &d.cpus {
                cores.push(Core {
                    cpu: *c,
                    domain: i,
                    online: true,
                    busy_ns: 0.0,
                    step_busy: 0.0,
                    load: 0,
                    homes: 0,
                });
            }
        }
        cores.sort_by_key(|c| c.cpu);
        if cores.is_empty() {
            bail!("platform {} has no CPU", plat.name);
        }
        let online = (0..cores.len()).collect();
        let gpu = plat.domains.iter().position(|d| d.kind == Kind::Gpu);
        let mem = plat.domains.iter().position(|d| d.kind == Kind::Memory);
        for e in &scn.events {
            for name in e.max_mhz.iter().flat_map(|m| m.keys()) {
                if !plat.domains.iter().any(|d| &d.name == name) {
                    let known: Vec<&str> = plat.domains.iter().map(|d| d.name.as_str()).collect();
                    bail!(
                        "event at {} s: max_mhz names domain {name:?}, which {} does not have (it has {})",
                        e.at_s,
                        plat.name,
                        known.join(", ")
                    );
                }
            }
        }
        let mut apps = Vec::new();
        for a in &scn.apps {
            apps.push(AppRt {
                lib: a.library()?,
                deadline_ms: a.deadline_ms,
                next_arrival: a.start_s * 1000.0,
                frames: 0,
                queue: VecDeque::new(),
                run: None,
                subnet: a.static_subnet()?,
                switched: false,
                finished: Vec::new(),
                window_worst: f64::NAN,
                free_at: 0.0,
                completed: 0,
                late: 0,
                dropped: 0,
                latency_sum: 0.0,
                accuracy_sum: 0.0,
                spec: a.clone(),
            });
        }
        let loads = scn
            .cpu_loads
            .iter()
            .enumerate()
            .map(|(i, l)| LoadRt::new(l.clone(), Rng::keyed(seed, 0x10ad, i as u64)))
            .collect();
        let series = Series {
            domain_names: plat.domains.iter().map(|d| d.name.clone()).collect(),
            freq_mhz: vec![Vec::new(); plat.domains.len()],
            app_names: scn.apps.iter().map(|a| a.name.clone()).collect(),
            latency_ms: vec![Vec::new(); scn.apps.len()],
            deadline_ms: vec![Vec::new(); scn.apps.len()],
            subnet: vec![Vec::new(); scn.apps.len()],
            ..Series::default()
        };
        Ok(Sim {
            scn,
            seed,
            base_power_w: plat.base_power_w,
            sensor_noise: scn.sensor_noise.unwrap_or(plat.sensor_noise),
            domains,
            cores,
            gpu,
            mem,
            apps,
            loads,
            tasks: Vec::new(),
            online,
            app_cpu: Vec::new(),
            task_core: Vec::new(),
            gpu_background: 0.0,
            power_cap: None,
            freq_caps: vec![None; plat.domains.len()],
            events_applied: 0,
            tally: Tally::default(),
            series,
            trace: Trace::default(),
        })
    }

    fn run(&mut self, strategy: &mut dyn Strategy) -> Result<RunResult> {
        let dt = self.scn.step_ms;
        let end = self.scn.duration_s * 1000.0;
        let steps = (end / dt).round() as u64;
        let tick_every = (self.scn.tick_ms / dt).round().max(1.0) as u64;
        let series_every = (SERIES_PERIOD_MS / dt).round().max(1.0) as u64;
        let mut events = self.scn.events.clone();
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut tick_energy = 0.0;
        let mut window_energy = 0.0;
        let mut tick_no = 0u64;
        for step in 0..steps {
            let t = step as f64 * dt;
            while self.events_applied < events.len()
                && events[self.events_applied].at_s * 1000.0 <= t
            {
                self.apply_event(t, &events[self.events_applied]);
                self.events_applied += 1;
            }
            for d in &mut self.domains {
                if d.cur != d.target && t >= d.switch_at {
                    d.set_cur(d.target);
                }
            }
            if step % tick_every == 0 {
                let power = if step == 0 {
                    None
                } else {
                    let mean = tick_energy / (tick_every as f64 * dt / 1000.0);
                    let noise = Rng::keyed(self.seed, 0x5e45, tick_no).normal();
                    Some(Watts((mean * (1.0 + self.sensor_noise * noise)).max(0.0)))
                };
                tick_energy = 0.0;
                tick_no += 1;
                let snap = self.snapshot(t, power);
                let control = strategy.decide(&snap);
                self.apply(t, &control);
            }
            self.arrivals(t, dt);
            let p = self.advance(t, dt);
            let e = p * dt / 1000.0;
            self.tally.energy_j += e;
            tick_energy += e;
            window_energy += e;
            if (step + 1) % series_every == 0 {
                let mean = window_energy / (series_every as f64 * dt / 1000.0);
                window_energy = 0.0;
                self.sample(t + dt, mean);
            }
        }
        Ok(self.finish(strategy.name(), end))
    }

    fn apply_event(&mut self, t: f64, e: &crate::scenario::Event) {
        if let Some(caps) = &e.max_mhz {
            for (name, mhz) in caps {
                let Some(i) = self.domains.iter().position(|d| &d.spec.name == name) else {
                    continue;
                };
                let cap = (*mhz > 0.0).then(|| Hz((*mhz * 1e6).round() as u64));
                self.freq_caps[i] = cap;
                // The cap takes the clock down itself, as a thermal zone does: not a
                // change the governor made.
                let d = &mut self.domains[i];
                if let Some(cap) = cap {
                    let f = dnngov_policy::snapshot::resolve_at_most(&d.table, cap);
                    if d.target > f {
                        d.target = f;
                        d.switch_at = t + d.spec.transition_us as f64 / 1000.0;
                    }
                }
            }
        }
        if let (Some(app), Some(d)) = (&e.app, e.deadline_ms) {
            if let Some(a) = self.apps.iter_mut().find(|a| &a.spec.name == app) {
                a.deadline_ms = d;
            }
        }
        if let Some(s) = e.gpu_background_share {
            self.gpu_background = s;
        }
        if let Some(off) = &e.offline_cpus {
            for c in &mut self.cores {
                c.online = !off.contains(&c.cpu);
            }
            if self.cores.iter().all(|c| !c.online) {
                // Linux never takes the last CPU offline.
                self.cores[0].online = true;
            }
            self.online = (0..self.cores.len())
                .filter(|i| self.cores[*i].online)
                .collect();
        }
        if let Some(cap) = e.power_cap_w {
            self.power_cap = (cap > 0.0).then_some(cap);
        }
    }

    fn snapshot(&mut self, t: f64, power: Option<Watts>) -> Snapshot {
        let now = Nanos((t * 1e6) as u64);
        let domains = self
            .domains
            .iter()
            .map(|d| FreqDomain {
                id: d.spec.id,
                kind: d.spec.kind.policy(),
                table: d.table.clone(),
                cur: d.cur,
                max_limit: d.spec.max_hz(),
                cpus: d.spec.cpus.clone(),
                busy: (d.spec.kind != Kind::Cpu && d.spec.busy_telemetry)
                    .then_some(Nanos(d.busy_ns as u64)),
            })
            .collect();
        let cpus = self
            .cores
            .iter()
            .map(|c| CpuSample {
                cpu: c.cpu,
                online: c.online,
                busy: Nanos(c.busy_ns as u64),
            })
            .collect();
        // The core each inference thread runs on (see `advance`), so its CPU domain is
        // known as the agent knows it from the thread's placement.
        let home: Vec<u32> = (0..self.apps.len())
            .map(|i| self.domains[self.cores[self.home_core(i)].domain].spec.id)
            .collect();
        let apps = self
            .apps
            .iter_mut()
            .enumerate()
            .filter(|(_, a)| a.spec.running_at(t / 1000.0))
            .map(|(i, a)| AppState {
                id: i as u32,
                library: a
                    .lib
                    .iter()
                    .map(|(acc, l)| SubNetwork {
                        accuracy: *acc,
                        latency_full: Some(Nanos::from_millis_f64(*l)),
                        relative_cost: None,
                    })
                    .collect(),
                targets: Targets {
                    deadline: Nanos::from_millis_f64(a.deadline_ms),
                    period: Some(Nanos::from_millis_f64(a.spec.period_ms())),
                    accuracy_floor: a.spec.accuracy_floor,
                    priority: a.spec.priority,
                },
                devices: Devices {
                    cpu: true,
                    gpu: true,
                },
                cpu_domains: vec![home[i]],
                finished: std::mem::take(&mut a.finished),
                // The begin mark of the inference in flight, as the client shim writes it.
                running_since: a
                    .run
                    .as_ref()
                    .filter(|r| r.start <= t)
                    .map(|r| Nanos::from_millis_f64(r.start)),
            })
            .collect();
        Snapshot {
            now,
            domains,
            cpus,
            apps,
            power,
            caps: Caps {
                power: self.power_cap.map(Watts),
                thermal: self
                    .freq_caps
                    .iter()
                    .zip(&self.domains)
                    .filter_map(|(cap, d)| {
                        cap.map(|max| dnngov_policy::DomainCap {
                            domain: d.spec.id,
                            max,
                        })
                    })
                    .collect(),
            },
        }
    }

    fn apply(&mut self, t: f64, c: &Control) {
        if let Some(why) = c.plan {
            self.trace.plans.push((t, why));
        }
        for (id, f) in &c.freqs {
            if !self.domains.iter().any(|d| d.spec.id == *id) {
                continue;
            }
            let i = self
                .domains
                .iter()
                .position(|x| x.spec.id == *id)
                .expect("found");
            let d = &mut self.domains[i];
            let wanted = self.freq_caps[i].map_or(*f, |cap| (*f).min(cap));
            let f = dnngov_policy::snapshot::resolve_at_most(&d.table, wanted);
            if f != d.target {
                d.target = f;
                d.switch_at = t + d.spec.transition_us as f64 / 1000.0;
                self.tally.freq_changes += 1;
                self.trace.freq_changes.push((t, i));
            }
        }
        for (id, s) in &c.subnets {
            let Some(a) = self.apps.get_mut(*id as usize) else {
                continue;
            };
            let s = (*s as usize).min(a.lib.len() - 1);
            if s != a.subnet {
                self.trace
                    .switches
                    .push((t, *id as usize, a.subnet as u32, s as u32));
                a.subnet = s;
                a.switched = true;
                self.tally.switches += 1;
            }
        }
    }

    /// Queues what arrives during the step starting at `t` and starts inferences at the
    /// exact time they can start (an arrival, or the end of the previous one), so latencies
    /// do not depend on the step size.
    fn arrivals(&mut self, t: f64, dt: f64) {
        let end = self.scn.duration_s * 1000.0;
        for (i, a) in self.apps.iter_mut().enumerate() {
            let stop = a.spec.stop_s.map_or(f64::INFINITY, |s| s * 1000.0);
            if stop <= t {
                // Gone: what was queued or in flight is abandoned with the app, not judged.
                a.queue.clear();
                a.run = None;
                a.finished.clear();
                continue;
            }
            while a.next_arrival < (t + dt).min(stop) {
                if a.queue.len() >= a.spec.queue_depth.max(1) && a.run.is_some() {
                    // Dropped at the camera: counts as a missed frame.
                    self.tally.dropped += 1;
                    a.dropped += 1;
                    self.trace.frames.push((a.next_arrival, i, true));
                } else {
                    a.queue.push_back(a.next_arrival);
                }
                a.frames += 1;
                a.next_arrival = a.spec.start_s * 1000.0 + a.frames as f64 * a.spec.period_ms();
            }
            if a.run.is_none() {
                if let Some(arrival) = a.queue.pop_front() {
                    let start = arrival.max(a.free_at);
                    let (_, l) = a.lib[a.subnet];
                    // Keyed by the frame, so every governor sees the same frame cost.
                    let frame = ((arrival - a.spec.start_s * 1000.0) / a.spec.period_ms()).round();
                    let jitter = Rng::keyed(self.seed, i as u64, frame as u64).normal();
                    let k = (1.0 + self.scn.latency_jitter * jitter).max(0.5) * l;
                    let s = a.spec.split;
                    let switch = if a.switched {
                        a.spec.switch_cost_ms
                    } else {
                        0.0
                    };
                    a.switched = false;
                    a.run = Some(Running {
                        arrival,
                        start,
                        subnet: a.subnet,
                        phase: Phase::Cpu,
                        cpu_left: s.cpu * k,
                        gpu_left: 1.0,
                        gpu_ms: s.gpu * k,
                        mem_ms: s.mem * k,
                        fixed_left: s.fixed * k + switch,
                        // More than a step when the previous one ended in the last step.
                        avail: t + dt - start,
                    });
                }
            }
        }
        for l in &mut self.loads {
            while l.next < t + dt {
                let within_end = l.spec.end_s.is_none_or(|e| l.next < e * 1000.0);
                if l.next >= 0.0 && within_end && l.next < end {
                    self.tasks.push(Task {
                        arrival: l.next,
                        left: l.spec.work_ms,
                        offset: (l.next - t).max(0.0),
                    });
                }
                l.advance();
            }
        }
    }

    /// The core app `i`'s inference thread lives on: the apps take the online cores in
    /// turn. Both the placement and the telemetry read it here.
    fn home_core(&self, i: usize) -> usize {
        self.online[i % self.online.len()]
    }

    fn ratio(&self, i: Option<usize>) -> f64 {
        i.map_or(1.0, |i| 1.0 / self.domains[i].speed)
    }

    /// Advances every piece of work by one step; returns the board's true power.
    fn advance(&mut self, t: f64, dt: f64) -> f64 {
        // CPU.
        for c in &mut self.cores {
            c.load = 0;
            c.homes = 0;
            c.step_busy = 0.0;
        }
        // Inference threads on the CPU: computing, or spinning while the GPU works.
        let mut app_cpu = std::mem::take(&mut self.app_cpu);
        app_cpu.clear();
        app_cpu.extend((0..self.apps.len()).filter(|i| {
            let a = &self.apps[*i];
            a.run
                .as_ref()
                .is_some_and(|r| r.phase == Phase::Cpu || a.spec.spin_wait)
        }));
        // An inference thread stays on its home core (the one the agent reports); tasks go
        // to the least-loaded online core, as the scheduler's idle-core search would.
        for i in &app_cpu {
            let core = self.home_core(*i);
            self.cores[core].load += 1;
        }
        // Among equally loaded cores, one that is no running app's home: an app waking on
        // its core finds it free.
        for i in 0..self.apps.len() {
            if self.apps[i].run.is_some() {
                let core = self.home_core(i);
                self.cores[core].homes += 1;
            }
        }
        let online = &self.online;
        let mut task_core = std::mem::take(&mut self.task_core);
        task_core.clear();
        for _ in 0..self.tasks.len() {
            let core = *online
                .iter()
                .min_by_key(|c| (self.cores[**c].load, self.cores[**c].homes))
                .expect("a core is always online");
            self.cores[core].load += 1;
            task_core.push(core);
        }
        let speed = |cores: &[Core], domains: &[DomainRt], core: usize| {
            domains[cores[core].domain].speed / cores[core].load.max(1) as f64
        };
        for i in &app_cpu {
            let core = self.home_core(*i);
            let v = speed(&self.cores, &self.domains, core);
            let r = self.apps[*i].run.as_mut().expect("filtered");
            if r.phase != Phase::Cpu {
                // Spinning: busy for the step, no progress (the GPU part finishes it).
                self.cores[core].step_busy = dt;
                continue;
            }
            let need = r.cpu_left / v;
            let used = need.min(r.avail);
            r.cpu_left -= used * v;
            r.avail -= used;
            if need <= used + 1e-9 {
                r.cpu_left = 0.0;
                r.phase = Phase::Gpu;
            }
            let c = &mut self.cores[core];
            c.step_busy = c.step_busy.max(used);
        }
        let mut finished_tasks = false;
        for (j, task) in self.tasks.iter_mut().enumerate() {
            let core = task_core[j];
            let v = speed(&self.cores, &self.domains, core);
            let need = task.left / v;
            let window = dt - task.offset;
            let used = need.min(window);
            task.left -= used * v;
            if need <= window {
                task.left = 0.0;
                finished_tasks = true;
                self.tally
                    .task_latencies
                    .push(t + task.offset + used - task.arrival);
            }
            task.offset = 0.0;
            let c = &mut self.cores[core];
            c.step_busy = c.step_busy.max(used);
        }
        if finished_tasks {
            // `retain` keeps arrival order, which decides core placement.
            self.tasks.retain(|task| task.left > 0.0);
        }
        self.app_cpu = app_cpu;
        self.task_core = task_core;
        // GPU.
        let rg = self.ratio(self.gpu);
        let rm = self.ratio(self.mem);
        let users = self
            .apps
            .iter()
            .filter(|a| {
                a.run
                    .as_ref()
                    .is_some_and(|r| r.phase == Phase::Gpu && r.avail > 0.0)
            })
            .count();
        let share = if users > 0 {
            (1.0 - self.gpu_background) / users as f64
        } else {
            0.0
        };
        let mut gpu_time = 0.0;
        let mut mem_time = 0.0;
        for a in &mut self.apps {
            let Some(r) = a.run.as_mut() else { continue };
            if r.phase != Phase::Gpu {
                continue;
            }
            let full = r.gpu_ms * rg + r.mem_ms * rm;
            let need = if full <= 0.0 {
                0.0
            } else if share > 0.0 {
                r.gpu_left * full / share
            } else {
                f64::INFINITY
            };
            // An inference whose CPU part ended exactly at the step's end still finishes
            // a GPU part of zero length now, not one step later.
            if r.avail <= 0.0 && need > 0.0 {
                continue;
            }
            let used = need.min(r.avail);
            if full > 0.0 {
                r.gpu_left -= used * share / full;
                mem_time += used * share * r.mem_ms * rm / full;
            }
            gpu_time += used * share;
            r.avail -= used;
            if need <= used {
                r.gpu_left = 0.0;
                r.phase = Phase::Fixed;
            }
        }
        // Fixed part and completions.
        for (app_index, a) in self.apps.iter_mut().enumerate() {
            let Some(r) = a.run.as_mut() else { continue };
            if r.phase != Phase::Fixed || (r.avail <= 0.0 && r.fixed_left > 0.0) {
                continue;
            }
            let used = r.fixed_left.min(r.avail);
            r.fixed_left -= used;
            r.avail -= used;
            if r.fixed_left <= 0.0 {
                let end = t + dt - r.avail;
                a.free_at = end;
                let latency = end - r.arrival;
                a.finished.push(Inference {
                    end: Nanos::from_millis_f64(end),
                    latency: Nanos::from_millis_f64(end - r.start),
                    subnet: r.subnet as u32,
                });
                self.tally.latencies.push(latency);
                if latency > a.deadline_ms {
                    self.tally.missed += 1;
                    a.late += 1;
                }
                self.trace
                    .frames
                    .push((r.arrival, app_index, latency > a.deadline_ms));
                a.completed += 1;
                a.latency_sum += latency;
                a.accuracy_sum += a.lib[r.subnet].0;
                self.tally.accuracy_sum += a.lib[r.subnet].0;
                self.tally.completed += 1;
                a.window_worst = if a.window_worst.is_nan() {
                    latency
                } else {
                    a.window_worst.max(latency)
                };
                a.run = None;
            }
        }
        for a in &mut self.apps {
            if let Some(r) = &mut a.run {
                r.avail = dt;
            }
        }
        // Counters and power. An inference started in the previous step's leftover time
        // is accounted in this one, so busy time is capped at the step.
        for c in &mut self.cores {
            c.step_busy = c.step_busy.min(dt);
        }
        let gpu_busy = (self.gpu_background * dt + gpu_time).min(dt);
        let cpu_busy: f64 = self.cores.iter().map(|c| c.step_busy).sum();
        let mem_busy = (mem_time
            + MEM_PER_CPU_BUSY * cpu_busy
            + MEM_PER_GPU_BACKGROUND * self.gpu_background * dt)
            .min(dt);
        let mut power = self.base_power_w;
        for (i, d) in self.domains.iter_mut().enumerate() {
            power += match d.spec.kind {
                Kind::Cpu => {
                    let mut p = 0.0;
                    let mut any = false;
                    for c in self.cores.iter().filter(|c| c.domain == i && c.online) {
                        p += d.unit_power(c.step_busy / dt);
                        any = true;
                    }
                    // A cluster with every core offline is power-gated.
                    if any {
                        p + d.leak_w
                    } else {
                        0.0
                    }
                }
                Kind::Gpu => {
                    d.busy_ns += gpu_busy * 1e6;
                    d.unit_power(gpu_busy / dt) + d.leak_w
                }
                Kind::Memory => {
                    d.busy_ns += mem_busy * 1e6;
                    d.unit_power(mem_busy / dt) + d.leak_w
                }
            };
        }
        for c in &mut self.cores {
            if c.online {
                c.busy_ns += c.step_busy * 1e6;
            }
        }
        power
    }

    fn sample(&mut self, t: f64, mean_power: f64) {
        let s = &mut self.series;
        s.t_s.push(t / 1000.0);
        for (i, d) in self.domains.iter().enumerate() {
            s.freq_mhz[i].push(d.cur.as_f64() / 1e6);
        }
        s.power_w.push(mean_power);
        for (i, a) in self.apps.iter_mut().enumerate() {
            s.latency_ms[i].push(a.window_worst);
            a.window_worst = f64::NAN;
            s.deadline_ms[i].push(a.deadline_ms);
            s.subnet[i].push(a.subnet as f64);
        }
        self.tally.windows += 1;
        if self.power_cap.is_some_and(|cap| mean_power > cap) {
            self.tally.windows_over_cap += 1;
        }
    }

    fn finish(&mut self, governor: String, end: f64) -> RunResult {
        let mut overdue = 0;
        let mut apps = Vec::new();
        for a in &self.apps {
            let waiting = a
                .queue
                .iter()
                .copied()
                .chain(a.run.as_ref().map(|r| r.arrival));
            let mut late_at_end = 0;
            for arrival in waiting.filter(|arr| end - arr > a.deadline_ms) {
                late_at_end += 1;
                self.trace.frames.push((arrival, apps.len(), true));
            }
            overdue += late_at_end;
            let judged = a.completed + a.dropped + late_at_end;
            let ratio = |x: f64, n: u64| if n > 0 { x / n as f64 } else { f64::NAN };
            apps.push(AppMetrics {
                name: a.spec.name.clone(),
                miss_pct: 100.0 * ratio((a.late + a.dropped + late_at_end) as f64, judged),
                latency_mean_ms: ratio(a.latency_sum, a.completed),
                mean_accuracy: ratio(a.accuracy_sum, a.completed),
            });
        }
        let t = &mut self.tally;
        let judged = t.completed + t.dropped + overdue;
        let missed = t.missed + t.dropped + overdue;
        let (lat_mean, lat_p99) = mean_p99(&mut t.latencies);
        let (task_mean, task_p99) = mean_p99(&mut t.task_latencies);
        let secs = end / 1000.0;
        let metrics = Metrics {
            energy_j: t.energy_j,
            mean_power_w: t.energy_j / secs,
            latency_mean_ms: lat_mean,
            latency_p99_ms: lat_p99,
            miss_pct: if judged > 0 {
                100.0 * missed as f64 / judged as f64
            } else {
                0.0
            },
            mean_accuracy: if t.completed > 0 {
                t.accuracy_sum / t.completed as f64
            } else {
                f64::NAN
            },
            frames: t.completed,
            switches: t.switches,
            freq_changes: t.freq_changes,
            task_latency_mean_ms: task_mean,
            task_latency_p99_ms: task_p99,
            tasks: t.task_latencies.len() as u64,
            over_cap_pct: if t.windows > 0 {
                100.0 * t.windows_over_cap as f64 / t.windows as f64
            } else {
                0.0
            },
            simulated_s: secs,
            apps,
        };
        self.trace.frames.sort_by(|a, b| a.0.total_cmp(&b.0));
        RunResult {
            governor,
            metrics,
            series: std::mem::take(&mut self.series),
            trace: std::mem::take(&mut self.trace),
        }
    }
}

/// Mean and 99th percentile (nearest rank); NaN for no samples.
pub fn mean_p99(xs: &mut [f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let rank = ((0.99 * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    (mean, xs[rank - 1])
}
