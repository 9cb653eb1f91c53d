//! The control loop: telemetry in, policy decision, frequencies and sub-networks out.
//!
//! Two threads, joined by a channel (the registry and admin threads feed them):
//! - `control` owns the eBPF skeletons (or the procfs fallback) through a [`Sampler`] that
//!   reads the machine every tick (CPU busy time, inference records; the GPU load every
//!   100 ms; current frequencies, ceilings and power every 200 ms), turns each sample and the registered
//!   apps into a policy snapshot, runs the policy [`Manager`], writes sub-network requests
//!   into the apps' pages and sends frequency changes on (a frequency hold, [`Holds`], set
//!   through the admin socket for profiling, replaces the policy's choice for the domains
//!   it names). Sampling lives on this thread
//!   rather than its own: a hand-off per tick cost as much CPU as the sampling itself;
//! - `actuation` owns the [`Takeover`]: it applies frequencies (sysfs writes may block on
//!   a slow driver; the loop must not) and, when the loop stops (or the control thread
//!   panics and the channel closes), drops the takeover, which restores every governor
//!   and limit saved at start.
//!
//! Units: the platform layer, the telemetry and the policy each keep their own newtypes;
//! the conversions between them live in this file only.

use crate::admin::{
    DomainStatus, EnergyStatus, Holds, PlanStatus, RailStatus, SourceStatus, StatusReport,
};
use crate::config::{Config, Objective};
use crate::metrics::{app_labels, label, Metrics};
use crate::platform::{
    self, Actuator, Domain, DomainId, EnergyMeter, Platform, PowerReading, PowerSensor, Sysfs,
    Takeover,
};
use crate::registry::{AppHandle, AppTable, RegistryEvent};
use anyhow::Result;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use dnngov_bpf::{AppBinary, InferenceRecord, Source, Telemetry};
use dnngov_policy as policy;
use governor_proto::shm::Reason;
use governor_proto::Device;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the loop governs, decided once at start.
pub struct Governed {
    pub sysfs: Sysfs,
    /// Index = the policy's domain id.
    pub domains: Vec<Domain>,
    /// Why nothing (or only part) of the machine is governed, one sentence each.
    pub notes: Vec<String>,
    pub power: Option<PowerSensor>,
    pub gpu_load: Option<PathBuf>,
    /// The board description, when one is configured.
    pub board: Option<policy::platform::Platform>,
}

impl Governed {
    /// Discovers the machine under `root` and decides what to govern. Never fails: a
    /// machine with nothing to govern gives no domains and a note saying why.
    pub fn discover(root: &Path) -> Governed {
        let sysfs = Sysfs::new(root);
        let platform = Platform::discover(sysfs.clone());
        let mut notes = Vec::new();
        let domains = match platform.plan() {
            Ok(plan) => {
                for part in &plan.unavailable {
                    notes.push(format!("{} is not governed: {}", part.what, part.why));
                }
                plan.domains
            }
            Err(cannot) => {
                notes.push(format!("{cannot}; apps' sub-networks are still governed"));
                Vec::new()
            }
        };
        Governed {
            sysfs,
            domains,
            notes,
            power: platform.power,
            gpu_load: platform.gpu_load,
            board: None,
        }
    }

    /// Adds a board description (`platforms/*.toml`).
    pub fn with_board(mut self, board: Option<policy::platform::Platform>) -> Governed {
        self.board = board;
        self
    }
}

/// Ticks between two reads of what changes slowly (current frequencies, ceilings, online
/// CPUs, power, and the telemetry's sources for status): at the default 10 ms tick, every
/// 200 ms. Reading them every tick cost the daemon more CPU than all the rest of its work.
const SLOW_EVERY: u32 = 20;

/// Ticks between two reads of the GPU load file (100 ms at the default tick): the GPU's
/// base governor follows it, and the driver averages it over tens of ms itself.
const GPU_LOAD_EVERY: u32 = 10;

/// The longest a stop waits for the control thread to notice it, whatever the tick.
const MAX_STOP_DELAY: Duration = Duration::from_millis(50);

/// How often the status `dnngovctl` reads and the metrics are refreshed.
const STATUS_EVERY_NS: u64 = 250_000_000;

/// One tick's observations.
pub struct Sample {
    pub at: policy::Nanos,
    /// Busy time per CPU (the rest of the telemetry is read with the slow sample).
    pub bpf: dnngov_bpf::Snapshot,
    pub records: Vec<InferenceRecord>,
    /// Cumulative GPU busy time integrated from the load file, when there is one.
    pub gpu_busy: Option<u64>,
    /// Read every [`SLOW_EVERY`] ticks only; `None` in between.
    pub slow: Option<SlowSample>,
}

/// What changes on the scale of a few hundred ms.
#[derive(Clone)]
pub struct SlowSample {
    /// Per governed domain: what the hardware reports and the highest allowed now.
    pub current: Vec<Option<platform::Hz>>,
    pub ceiling: Vec<Option<platform::Hz>>,
    pub online: Option<Vec<u32>>,
    pub power: Option<PowerReading>,
    /// The GPU load file's reading (0..=1), when there is one.
    pub gpu_load: Option<f64>,
    /// Every telemetry counter (processes, apps, the GPU, and where each comes from).
    pub telemetry: dnngov_bpf::Snapshot,
}

/// Where an app's inferences are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InferenceSource {
    Bpf,
    SharedMemory,
}

struct TrackedApp {
    handle: Arc<AppHandle>,
    source: InferenceSource,
    last_count: u64,
    last_latency_sum: u64,
}

/// The apps' own counters in their pages, for the telemetry of apps whose markers are
/// not probed (no eBPF, or a binary without the marker symbols).
struct PageCounters(AppTable);

impl dnngov_bpf::SharedMemoryInferences for PageCounters {
    fn inference_counters(&self) -> Vec<(u32, dnngov_bpf::InferenceCounters)> {
        self.0
            .apps()
            .iter()
            .map(|app| {
                let report = app.report();
                (
                    app.app_id,
                    dnngov_bpf::InferenceCounters {
                        count: report.inferences_completed,
                        misses: report.deadline_misses,
                        latency_sum: dnngov_bpf::Nanos(report.latency_sum_ns),
                    },
                )
            })
            .collect()
    }
}

/// The running loop's threads; dropping it (or [`ControlLoop::stop`]) stops them and
/// restores the machine.
pub struct ControlLoop {
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    holds: Holds,
}

impl ControlLoop {
    /// Takes over `governed`'s domains and starts the control and actuation threads.
    /// `heartbeat` gets the monotonic time of every finished tick, so the caller can
    /// tell systemd's watchdog the loop is alive rather than just the process.
    pub fn start(
        config: &Config,
        governed: Governed,
        table: AppTable,
        events: Receiver<RegistryEvent>,
        status: Arc<Mutex<StatusReport>>,
        metrics: Arc<Metrics>,
        heartbeat: Arc<AtomicU64>,
    ) -> Result<ControlLoop> {
        let board = governed.board.clone();
        let mut notes = governed.notes.clone();
        let takeover = if governed.domains.is_empty() {
            None
        } else {
            match Takeover::begin(
                governed.sysfs.clone(),
                governed.domains.clone(),
                &config.agent.state_file(),
            ) {
                Ok(takeover) => {
                    for error in &takeover.prepare_report().errors {
                        notes.push(format!("{error}; that domain is left ungoverned"));
                    }
                    Some(takeover)
                }
                Err(e) => {
                    notes.push(format!("frequencies are not governed: {e:#}"));
                    None
                }
            }
        };
        // Only the domains the takeover kept are governed.
        let domains: Vec<Domain> = match &takeover {
            Some(t) => t.actuator().domains().to_vec(),
            None => Vec::new(),
        };
        for note in &notes {
            log::warn!("{note}");
        }
        if domains.is_empty() {
            log::info!("no frequency domain to govern; governing apps' sub-networks only");
        } else {
            log::info!(
                "governing {}",
                domains
                    .iter()
                    .map(|d| d.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }

        let governed_power_missing = governed.power.is_none();
        let tick_period = Duration::from_millis(config.control.tick_ms);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (apply_tx, apply_rx) = crossbeam_channel::unbounded::<platform::Decision>();
        let mut threads = Vec::new();

        // The sampler reads the same few dozen files every slow tick: keep them open.
        let kept_open = governed.sysfs.keeping_files_open();
        let mut sampler = Sampler {
            telemetry: Telemetry::open(&dnngov_bpf::Config::default()),
            sysfs: kept_open.clone(),
            readers: Actuator::new(kept_open, domains.clone()),
            power: governed.power,
            gpu_load: governed.gpu_load,
            gpu_busy_ns: 0,
            last_at: None,
            last_gpu_load: 0.0,
            ticks: 0,
        };
        if let Some(reason) = sampler.telemetry.fallback_reason() {
            notes.push(format!("{reason}; using procfs and shared-memory counters"));
            log::warn!("{reason}; using procfs and shared-memory counters");
        }
        let bpf_source = sampler.telemetry.source();
        sampler
            .telemetry
            .set_shared_memory(Box::new(PageCounters(table.clone())));
        // Known before the first tick, so `dnngovctl status` says it from the start.
        lock(&status).notes = notes.clone();
        threads.push(spawn("actuation", move || actuate(takeover, apply_rx))?);

        let kinds: Vec<policy::DomainKind> = domains.iter().map(kind_of).collect();
        let holds = Holds::new(
            governed.sysfs.clone(),
            domains
                .iter()
                .cloned()
                .zip(kinds.iter().map(|k| admin_kind(*k)))
                .collect(),
        );
        let specs: Vec<Option<policy::platform::DomainSpec>> = match &board {
            Some(board) => domains
                .iter()
                .zip(&kinds)
                .map(|(d, kind)| matching_spec(board, d, *kind))
                .collect(),
            None => vec![None; domains.len()],
        };
        if let Some(board) = &board {
            let described = specs.iter().filter(|s| s.is_some()).count();
            log::info!(
                "board description {}: {described} of {} governed domains described",
                board.name,
                domains.len()
            );
            if governed_power_missing {
                notes.push(format!(
                    "no power sensor: power is estimated from the {} description",
                    board.name
                ));
            }
        }
        let declared = board.as_ref().map(|board| declared_power(board, &specs));
        let manager = policy::Manager::new(policy::Config {
            optimiser: policy::OptimiserConfig {
                mode: match config.control.objective {
                    Objective::Energy => policy::Mode::Energy,
                    Objective::Accuracy => policy::Mode::Accuracy,
                },
                tie_tolerance: config.control.tie_tolerance,
                ..policy::OptimiserConfig::default()
            },
            reoptimise_every: policy::Nanos::from_millis(config.control.optimiser_period_ms),
            platform: declared.unwrap_or_default(),
            gpu_floor: config.control.gpu_floor,
            ..policy::Config::default()
        });
        let control = Control {
            manager,
            tables: domains.iter().map(table_of).collect(),
            kinds,
            board,
            specs,
            estimator: platform::power::Estimator::new(),
            domains,
            table,
            apps: BTreeMap::new(),
            sampler,
            apply: apply_tx,
            sent: BTreeMap::new(),
            energy: EnergyMeter::new(),
            status,
            notes,
            bpf_source,
            last_status: None,
            plan: None,
            slow: None,
            metrics,
            exported: BTreeMap::new(),
            heartbeat,
            holds: holds.clone(),
            energy_at: 0,
        };
        threads.push(spawn("control", move || {
            control.run(events, tick_period, stop_rx)
        })?);
        Ok(ControlLoop {
            stop: Some(stop_tx),
            threads,
            holds,
        })
    }

    /// The frequency hold the admin socket sets; the loop applies it over the policy.
    pub fn holds(&self) -> Holds {
        self.holds.clone()
    }

    /// Stops every thread and restores the machine; returns once that is done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes every thread selecting on it.
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            let name = thread.thread().name().unwrap_or("?").to_string();
            if thread.join().is_err() {
                log::error!("the {name} thread panicked");
            }
        }
    }
}

impl Drop for ControlLoop {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new().name(name.into()).spawn(f)?)
}

/// The actuation thread: applies what the control loop decides. When the channel closes
/// the takeover is dropped, which restores the machine (also when the control thread
/// died of a panic: its sender is dropped while unwinding).
fn actuate(takeover: Option<Takeover>, decisions: Receiver<platform::Decision>) {
    let mut reported = BTreeSet::new();
    for decision in decisions {
        let Some(takeover) = &takeover else { continue };
        let report = takeover.apply(&decision);
        for error in report.errors {
            // A file that keeps failing would otherwise log every tick.
            let text = error.to_string();
            if reported.insert(text.clone()) {
                log::error!("{text}");
            }
        }
    }
    if let Some(takeover) = takeover {
        match takeover.restore() {
            Ok(report) if report.is_ok() => log::info!(
                "restored {} files the agent had changed",
                report.restored.len()
            ),
            Ok(report) => {
                for error in report.errors {
                    log::error!("not restored: {error}");
                }
            }
            Err(e) => log::error!("restore failed: {e:#}"),
        }
    }
}

/// Every read of the machine the loop makes.
struct Sampler {
    telemetry: Telemetry,
    sysfs: Sysfs,
    /// Reads current frequencies and ceilings; never prepared, never writes.
    readers: Actuator,
    power: Option<PowerSensor>,
    gpu_load: Option<PathBuf>,
    /// GPU busy time integrated up to `last_at`, and the load read then.
    gpu_busy_ns: u64,
    last_at: Option<u64>,
    last_gpu_load: f64,
    ticks: u32,
}

impl Sampler {
    fn forget(&mut self, app_id: u32, pid: u32) {
        self.telemetry.detach_app(app_id);
        self.telemetry.unwatch(pid);
    }

    /// Counts the on-CPU time of `app`'s process, and probes its markers when `probe`
    /// (its binary defines them).
    fn watch(&mut self, app: AppBinary, probe: bool) {
        if let Some(pid) = app.pid {
            if let Err(e) = self.telemetry.watch(pid) {
                log::debug!("cannot watch pid {pid}: {e}");
            }
        }
        let app_id = app.app_id;
        if !probe {
            log::info!(
                "app {app_id}: using its shared-memory counters ({} does not define {}: the \
                 app does not use the client library)",
                app.binary.display(),
                dnngov_bpf::MARKER_BEGIN
            );
            return;
        }
        match self.telemetry.attach_app(&app) {
            Ok(()) => log::info!(
                "app {app_id}: inferences probed in {}",
                app.binary.display()
            ),
            Err(e) => log::info!("app {app_id}: using its shared-memory counters ({e})"),
        }
    }

    fn sample(&mut self) -> Sample {
        let bpf = self.telemetry.cpu_snapshot();
        let mut records = Vec::new();
        self.telemetry.drain_inferences(&mut records);
        let at = bpf.at.0;
        if self.ticks.is_multiple_of(GPU_LOAD_EVERY) {
            self.read_gpu_load(at);
        }
        let slow = self
            .ticks
            .is_multiple_of(SLOW_EVERY)
            .then(|| self.slow_sample(at));
        self.ticks = self.ticks.wrapping_add(1);
        // Between reads of the load file the busy time grows at the last load read.
        let gpu_busy = self.gpu_load.as_ref().map(|_| {
            let since = at.saturating_sub(self.last_at.unwrap_or(at));
            self.gpu_busy_ns
                .wrapping_add((since as f64 * self.last_gpu_load) as u64)
        });
        Sample {
            at: policy::Nanos(at),
            bpf,
            records,
            gpu_busy,
            slow,
        }
    }

    /// Integrates the GPU busy time up to `at` at the last load read, then reads the load.
    fn read_gpu_load(&mut self, at: u64) {
        if let Some(file) = &self.gpu_load {
            if let Some(last) = self.last_at {
                let since = at.saturating_sub(last);
                self.gpu_busy_ns = self
                    .gpu_busy_ns
                    .wrapping_add((since as f64 * self.last_gpu_load) as u64);
            }
            if let Ok(load) = platform::devfreq::read_gpu_load(&self.sysfs, file) {
                self.last_gpu_load = load.clamp(0.0, 1.0);
            }
            self.last_at = Some(at);
        }
    }

    fn slow_sample(&mut self, at: u64) -> SlowSample {
        let domains = self.readers.domains();
        SlowSample {
            current: domains
                .iter()
                .map(|d| d.read_current(&self.sysfs).ok())
                .collect(),
            ceiling: domains
                .iter()
                .map(|d| self.readers.ceiling(d).ok())
                .collect(),
            online: platform::cpufreq::online_cpus(&self.sysfs)
                .ok()
                .flatten()
                .map(|list| list.cpus().to_vec()),
            power: match &mut self.power {
                Some(sensor) => sensor.read(&self.sysfs, platform::Nanos(at)).ok().flatten(),
                None => None,
            },
            gpu_load: self.gpu_load.as_ref().map(|_| self.last_gpu_load),
            telemetry: self.telemetry.snapshot(),
        }
    }
}

struct Control {
    manager: policy::Manager,
    domains: Vec<Domain>,
    /// Per domain, computed once: the policy's frequency table and the domain's kind.
    tables: Vec<Vec<policy::Hz>>,
    kinds: Vec<policy::DomainKind>,
    /// The board description, and per governed domain the entry describing it.
    board: Option<policy::platform::Platform>,
    specs: Vec<Option<policy::platform::DomainSpec>>,
    /// CPU busy counters at the last estimate, and when.
    estimator: platform::power::Estimator,
    table: AppTable,
    apps: BTreeMap<u32, TrackedApp>,
    sampler: Sampler,
    apply: Sender<platform::Decision>,
    /// What was last sent to actuation, per domain index.
    sent: BTreeMap<usize, platform::Hz>,
    energy: EnergyMeter,
    status: Arc<Mutex<StatusReport>>,
    notes: Vec<String>,
    bpf_source: Source,
    /// When the status and metrics were last published (the sample's monotonic ns).
    last_status: Option<u64>,
    /// The latest slow sample; the first tick always brings one.
    slow: Option<SlowSample>,
    metrics: Arc<Metrics>,
    /// Counter values already added to the metrics, by series, so only deltas are added.
    exported: BTreeMap<String, f64>,
    heartbeat: Arc<AtomicU64>,
    /// Frequencies held for profiling, applied over the policy's.
    holds: Holds,
    /// When the energy meter last counted (`CLOCK_MONOTONIC` ns).
    energy_at: u64,
    /// The plan in force: when it was adopted (the sample's monotonic ns), what made it,
    /// and its predicted power.
    plan: Option<(u64, policy::PlanTrigger, Option<f64>)>,
}

impl Control {
    fn run(mut self, events: Receiver<RegistryEvent>, period: Duration, stop: Receiver<()>) {
        // Apps registered before the loop started.
        for handle in self.table.apps() {
            self.join(handle);
        }
        let mut next = Instant::now();
        loop {
            // One sleep per tick (in steps of at most MAX_STOP_DELAY), then a look at the
            // stop channel (a stop, or the sender dropped, ends the loop within a tick).
            // Cheaper than a timed wait on the channel, which registers and unregisters a
            // waker every tick; events are rare enough to drain once a tick. One clock
            // read per tick: a sleep of the whole remainder ends at `next`.
            let mut now = Instant::now();
            while now < next {
                let left = next - now;
                std::thread::sleep(left.min(MAX_STOP_DELAY));
                match stop.try_recv() {
                    Err(TryRecvError::Empty) => {}
                    _ => return,
                }
                now = if left <= MAX_STOP_DELAY {
                    next
                } else {
                    Instant::now()
                };
            }
            // After a stall, tick from now on rather than in a burst to catch up: the
            // counters are cumulative and the inference records wait in the ring buffer.
            next += period;
            if next < now {
                next = now + period;
            }
            // Events until the next tick is due, and no longer: joining and leaving cost
            // milliseconds each (probes attached and detached), and apps that come and go
            // faster than that must not hold the tick off. Without a tick the policy does
            // not run, the watchdog's heartbeat stops and the inference records pile up
            // unread. The events left wait for the next tick.
            loop {
                match events.try_recv() {
                    Ok(RegistryEvent::Joined(handle)) => self.join(handle),
                    Ok(RegistryEvent::Left { app_id, .. }) => self.leave(app_id),
                    Ok(RegistryEvent::TargetChanged { .. }) => {}
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
                if Instant::now() >= next {
                    break;
                }
            }
            let sample = self.sampler.sample();
            let at = sample.at.0;
            self.step(sample);
            self.heartbeat.store(at, Ordering::Relaxed);
        }
    }

    fn join(&mut self, handle: Arc<AppHandle>) {
        if self.apps.contains_key(&handle.app_id) {
            return;
        }
        let pid = handle.pid as u32;
        let source = match marker_binary(pid) {
            Some(binary) if self.bpf_source == Source::Bpf => {
                let probed = defines_markers(&binary);
                self.sampler.watch(
                    AppBinary {
                        app_id: handle.app_id,
                        binary,
                        pid: Some(pid),
                    },
                    probed,
                );
                // Attaching may still fail (a stripped binary); shared-memory counters
                // then cover the app, and they are read for every app anyway.
                if probed {
                    InferenceSource::Bpf
                } else {
                    InferenceSource::SharedMemory
                }
            }
            _ => InferenceSource::SharedMemory,
        };
        let report = handle.report();
        self.apps.insert(
            handle.app_id,
            TrackedApp {
                handle,
                source,
                last_count: report.inferences_completed,
                last_latency_sum: report.latency_sum_ns,
            },
        );
    }

    fn leave(&mut self, app_id: u32) {
        if let Some(app) = self.apps.remove(&app_id) {
            self.metrics
                .remove_app(&app_labels(app_id, &app.handle.name));
            // Its counters' last exported totals go with it: app ids are never reused, so
            // they would only accumulate.
            self.exported.remove(&format!("inferences/{app_id}"));
            self.exported.remove(&format!("misses/{app_id}"));
            self.metrics.apps.set(self.apps.len() as i64);
            self.sampler.forget(app_id, app.handle.pid as u32);
        }
    }

    fn step(&mut self, mut sample: Sample) {
        let fresh_power = match sample.slow.take() {
            Some(mut slow) => {
                if slow.power.is_none() {
                    slow.power = self.estimate_power(&sample, &slow);
                }
                if let Some(reading) = &slow.power {
                    self.energy.record(platform::Nanos(sample.at.0), reading);
                    self.energy_at = sample.at.0;
                }
                let fresh = slow.power.clone();
                self.slow = Some(slow);
                fresh
            }
            None => None,
        };
        // Taken for the tick and put back, rather than cloned every tick.
        let Some(slow) = self.slow.take() else {
            return;
        };
        let snapshot = self.snapshot(&sample, &slow, fresh_power.as_ref());
        let decision = self.manager.step(&snapshot);
        if let Some(why) = decision.trigger {
            match decision.predicted_power {
                Some(w) => log::debug!("new plan ({why}): {:.2} W predicted", w.0),
                None => log::debug!("new plan ({why})"),
            }
            self.plan = Some((sample.at.0, why, decision.predicted_power.map(|w| w.0)));
            self.metrics
                .plans
                .get_or_create(&label("cause", why.name()))
                .inc();
        }
        if snapshot.apps.is_empty() {
            self.plan = None;
        }
        self.act(&snapshot, &decision);
        if self
            .last_status
            .is_none_or(|t| sample.at.0.saturating_sub(t) >= STATUS_EVERY_NS)
        {
            self.publish_status(&sample, &slow, &decision);
            self.export_metrics(&slow);
            self.last_status = Some(sample.at.0);
        }
        self.slow = Some(slow);
    }

    /// `fresh_power`: a reading taken since the previous tick (the policy's power model
    /// learns from each reading once).
    fn snapshot(
        &mut self,
        sample: &Sample,
        slow: &SlowSample,
        fresh_power: Option<&PowerReading>,
    ) -> policy::Snapshot {
        let domains = self
            .domains
            .iter()
            .enumerate()
            .map(|(index, domain)| {
                let table = self.tables[index].clone();
                let cur = self
                    .sent
                    .get(&index)
                    .copied()
                    .or(slow.current[index])
                    .map(policy_hz)
                    .unwrap_or_else(|| *table.last().expect("tables are not empty"));
                let max_limit = slow.ceiling[index]
                    .map(policy_hz)
                    .unwrap_or_else(|| *table.last().expect("tables are not empty"));
                let kind = self.kinds[index];
                policy::FreqDomain {
                    id: index as u32,
                    kind,
                    cur,
                    max_limit,
                    cpus: domain
                        .cpus
                        .as_ref()
                        .map(|c| c.cpus().to_vec())
                        .unwrap_or_default(),
                    busy: match kind {
                        policy::DomainKind::Gpu => sample.gpu_busy.map(policy::Nanos),
                        _ => None,
                    },
                    table,
                }
            })
            .collect();
        let cpus = sample
            .bpf
            .cpus
            .iter()
            .map(|c| policy::CpuSample {
                cpu: c.cpu,
                online: slow.online.as_ref().is_none_or(|o| o.contains(&c.cpu)),
                busy: policy::Nanos(c.busy.0),
            })
            .collect();
        let mut apps = Vec::new();
        for app in self.apps.values_mut() {
            let handle = &app.handle;
            let report = handle.report();
            let index_of = |id: u32| handle.subnets.iter().position(|s| s.id == id);
            let mut finished: Vec<policy::Inference> = sample
                .records
                .iter()
                .filter(|r| r.app_id == handle.app_id)
                .filter_map(|r| {
                    Some(policy::Inference {
                        end: policy::Nanos(r.end.0),
                        latency: policy::Nanos(r.latency().0),
                        subnet: index_of(r.subnet)? as u32,
                    })
                })
                .collect();
            let new = report.inferences_completed.wrapping_sub(app.last_count);
            let latency_sum = report.latency_sum_ns.wrapping_sub(app.last_latency_sum);
            app.last_count = report.inferences_completed;
            app.last_latency_sum = report.latency_sum_ns;
            if finished.is_empty() && new > 0 && app.source == InferenceSource::SharedMemory {
                // Without probes, the page has counters only: count each new inference
                // with the mean latency since the last tick (bounded, so a stalled loop
                // does not flood the model).
                let subnet = report.active_subnet.and_then(index_of).unwrap_or(0) as u32;
                for _ in 0..new.min(16) {
                    finished.push(policy::Inference {
                        end: sample.at,
                        latency: policy::Nanos(latency_sum / new),
                        subnet,
                    });
                }
            }
            if !finished.is_empty() {
                let labels = app_labels(handle.app_id, &handle.name);
                let histogram = self.metrics.latency_seconds.get_or_create(&labels);
                for inference in &finished {
                    histogram.observe(inference.latency.0 as f64 / 1e9);
                }
            }
            let target = handle.target();
            apps.push(policy::AppState {
                id: handle.app_id,
                library: handle
                    .subnets
                    .iter()
                    .map(|s| policy::SubNetwork {
                        accuracy: s.accuracy_pct,
                        latency_full: s.latency_ms.map(policy::Nanos::from_millis_f64),
                        relative_cost: s.relative_cost,
                    })
                    .collect(),
                targets: policy::Targets {
                    deadline: policy::Nanos::from_millis_f64(target.deadline_ms),
                    period: target.period_ms.map(policy::Nanos::from_millis_f64),
                    accuracy_floor: target.accuracy_floor_pct.unwrap_or(0.0),
                    priority: target.priority,
                },
                devices: policy::Devices {
                    cpu: handle.devices.contains(&Device::Cpu),
                    gpu: handle.devices.contains(&Device::Gpu),
                },
                cpu_domains: Vec::new(),
                finished,
                // The client shim's begin mark, on the same `CLOCK_MONOTONIC` as `now`.
                running_since: report.inference_begin_ns.map(policy::Nanos),
            });
        }
        policy::Snapshot {
            now: sample.at,
            domains,
            cpus,
            apps,
            power: fresh_power
                .filter(|p| !p.is_estimated())
                .map(|p| policy::Watts(p.total.0)),
            caps: policy::Caps::default(),
        }
    }

    fn act(&mut self, snapshot: &policy::Snapshot, decision: &policy::Decision) {
        let mut change = platform::Decision::new();
        // A hold (profiling) overrides the policy for the domains it names.
        let held = self.holds.held(snapshot.now.0);
        let wishes = decision
            .domains
            .iter()
            .map(|d| (d.domain as usize, platform::Hz(d.freq.0)))
            .filter(|(index, _)| held.as_ref().is_none_or(|h| !h.contains_key(index)))
            .chain(held.iter().flatten().map(|(&index, &freq)| (index, freq)));
        for (index, freq) in wishes {
            let Some(domain) = self.domains.get(index) else {
                continue;
            };
            if self.sent.get(&index) != Some(&freq) {
                change = change.with(domain.id.clone(), freq);
                self.sent.insert(index, freq);
                self.metrics
                    .frequency_hz
                    .get_or_create(&label("domain", domain.id.to_string()))
                    .set(freq.0 as i64);
                self.metrics
                    .decisions
                    .get_or_create(&label("kind", "frequency"))
                    .inc();
            }
        }
        if !change.targets.is_empty() {
            let _ = self.apply.send(change);
        }
        for (state, d) in snapshot.apps.iter().zip(&decision.apps) {
            let Some(app) = self.apps.get(&state.id) else {
                continue;
            };
            let Some(subnet) = app.handle.subnets.get(d.subnet as usize) else {
                continue;
            };
            if app.handle.page().agent.requested_subnet() != subnet.id {
                let reason = reason_of(d.reason);
                log::info!(
                    "app {} \"{}\": sub-network {} ({:.2} %): {}",
                    app.handle.app_id,
                    app.handle.name,
                    subnet.id,
                    subnet.accuracy_pct,
                    d.reason
                );
                let _ = app.handle.request_subnet(subnet.id, reason);
                self.metrics
                    .decisions
                    .get_or_create(&label("kind", "subnet"))
                    .inc();
            }
        }
    }

    /// Board power from the board description, where there is no sensor: each described
    /// domain at its frequency with its measured activity (CPUs: busy fraction since the
    /// last estimate; GPU: its load file; memory: the GPU's load, as the EMC mostly
    /// serves it), plus the board's base power. Flagged as estimated everywhere it shows.
    fn estimate_power(&mut self, sample: &Sample, slow: &SlowSample) -> Option<PowerReading> {
        let board = self.board.as_ref()?;
        let domains: Vec<platform::power::EstimatedDomain<'_>> = self
            .specs
            .iter()
            .enumerate()
            .map(|(index, spec)| platform::power::EstimatedDomain {
                spec: spec.as_ref(),
                kind: self.kinds[index],
                freq: self
                    .sent
                    .get(&index)
                    .copied()
                    .or(slow.current[index])
                    .map(|f| f.0),
            })
            .collect();
        let busy: Vec<(u32, u64)> = sample.bpf.cpus.iter().map(|c| (c.cpu, c.busy.0)).collect();
        Some(self.estimator.estimate(
            board,
            &domains,
            sample.at.0,
            &busy,
            slow.online.as_deref(),
            slow.gpu_load,
        ))
    }

    /// Adds `total - (what was added before)` to a counter series.
    fn export_total(&mut self, key: String, total: f64, counter: impl FnOnce(f64)) {
        let before = self.exported.insert(key, total).unwrap_or(0.0);
        if total > before {
            counter(total - before);
        }
    }

    fn export_metrics(&mut self, slow: &SlowSample) {
        let metrics = self.metrics.clone();
        metrics.apps.set(self.apps.len() as i64);
        if let Some(reading) = &slow.power {
            for rail in &reading.rails {
                let labels = vec![
                    ("rail".to_string(), rail.name.clone()),
                    ("estimated".to_string(), reading.is_estimated().to_string()),
                ];
                metrics.power_watts.get_or_create(&labels).set(rail.power.0);
                let joules = self.energy.rail(&rail.name).map_or(0.0, |j| j.0);
                self.export_total(format!("energy/{}", rail.name), joules, |delta| {
                    metrics.energy_joules.get_or_create(&labels).inc_by(delta);
                });
            }
        }
        let apps: Vec<Arc<AppHandle>> = self.apps.values().map(|a| a.handle.clone()).collect();
        for handle in apps {
            let labels = app_labels(handle.app_id, &handle.name);
            let report = handle.report();
            self.export_total(
                format!("inferences/{}", handle.app_id),
                report.inferences_completed as f64,
                |delta| {
                    metrics
                        .inferences
                        .get_or_create(&labels)
                        .inc_by(delta as u64);
                },
            );
            self.export_total(
                format!("misses/{}", handle.app_id),
                report.deadline_misses as f64,
                |delta| {
                    metrics
                        .deadline_misses
                        .get_or_create(&labels)
                        .inc_by(delta as u64);
                },
            );
            metrics
                .subnet
                .get_or_create(&labels)
                .set(i64::from(report.requested_subnet));
            if let Some(accuracy) = handle
                .subnets
                .iter()
                .find(|s| Some(s.id) == report.active_subnet)
                .map(|s| s.accuracy_pct)
            {
                metrics
                    .accuracy_percent
                    .get_or_create(&labels)
                    .set(accuracy);
            }
            metrics
                .deadline_seconds
                .get_or_create(&labels)
                .set(handle.target().deadline_ms / 1e3);
        }
    }

    fn publish_status(&self, sample: &Sample, slow: &SlowSample, decision: &policy::Decision) {
        let domains = self
            .domains
            .iter()
            .enumerate()
            .map(|(index, domain)| {
                let reason = decision
                    .domains
                    .iter()
                    .find(|d| d.domain as usize == index)
                    .map(|d| d.reason.to_string())
                    .unwrap_or_default();
                DomainStatus {
                    name: domain.id.to_string(),
                    kind: Some(admin_kind(self.kinds[index])),
                    current_hz: self
                        .sent
                        .get(&index)
                        .or(slow.current[index].as_ref())
                        .map(|hz| hz.0),
                    min_hz: domain.frequencies.lowest().0,
                    max_hz: slow.ceiling[index]
                        .unwrap_or(domain.frequencies.highest())
                        .0,
                    set_by: match domain.mechanism {
                        platform::Mechanism::Userspace => "dnngov (userspace governor)",
                        platform::Mechanism::Pin => "dnngov (min = max)",
                        platform::Mechanism::EmcLock => "dnngov (rate lock)",
                    }
                    .into(),
                    reason,
                }
            })
            .collect();
        let mut power = Vec::new();
        if let Some(reading) = &slow.power {
            for rail in &reading.rails {
                power.push(RailStatus {
                    rail: rail.name.clone(),
                    watts: rail.power.0,
                    joules: self.energy.rail(&rail.name).map_or(0.0, |j| j.0),
                    estimated: reading.is_estimated(),
                });
            }
        }
        let mut telemetry = vec![SourceStatus {
            what: "CPU busy time".into(),
            source: sample
                .bpf
                .cpus
                .first()
                .map_or(Source::Unavailable, |c| c.source)
                .to_string(),
        }];
        telemetry.push(SourceStatus {
            what: "GPU activity".into(),
            source: if sample.gpu_busy.is_some() {
                "GPU load file".to_string()
            } else {
                slow.telemetry.gpu.source.to_string()
            },
        });
        for app in self.apps.values() {
            let source = slow
                .telemetry
                .app(app.handle.app_id)
                .map_or(Source::Unavailable, |a| a.source);
            telemetry.push(SourceStatus {
                what: format!("inferences of app {}", app.handle.app_id),
                source: source.to_string(),
            });
        }
        let energy = slow.power.as_ref().map(|reading| EnergyStatus {
            joules: self.energy.total().0,
            at_monotonic_ns: self.energy_at,
            estimated: reading.is_estimated() || self.energy.includes_estimates(),
        });
        let plan = self.plan.map(|(at, why, predicted_w)| PlanStatus {
            why: why.to_string(),
            age_s: sample.at.0.saturating_sub(at) as f64 / 1e9,
            predicted_w,
        });
        let mut status = lock(&self.status);
        status.domains = domains;
        status.power = power;
        status.energy = energy;
        status.plan = plan;
        status.telemetry = telemetry;
        status.notes = self.notes.clone();
    }
}

/// The file holding an app's markers: the client library it maps, else its executable
/// (a Rust app links the client statically).
fn marker_binary(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    for line in maps.lines() {
        if let Some(path) = line.split_whitespace().nth(5) {
            if Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libdnngov_client"))
            {
                return Some(PathBuf::from(path));
            }
        }
    }
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `binary` defines the client's marker functions. An app that does not use the
/// client library (a client written from docs/protocol.md alone) has none; it is counted
/// from its shared page without trying the uprobes, whose failure libbpf would log as a
/// warning.
fn defines_markers(binary: &Path) -> bool {
    // Unreadable here: let the attach try, and say why if it fails.
    dnngov_bpf::defines_symbol(binary, dnngov_bpf::MARKER_BEGIN).unwrap_or(true)
}

/// The board description's entry for a governed domain: a CPU domain by the CPUs they
/// share, a GPU or memory domain by kind.
pub fn matching_spec(
    board: &policy::platform::Platform,
    domain: &Domain,
    kind: policy::DomainKind,
) -> Option<policy::platform::DomainSpec> {
    let cpus: Vec<u32> = domain
        .cpus
        .as_ref()
        .map(|c| c.cpus().to_vec())
        .unwrap_or_default();
    board
        .domains
        .iter()
        .filter(|spec| spec.kind.policy() == kind)
        .max_by_key(|spec| {
            if kind == policy::DomainKind::Cpu {
                spec.cpus.iter().filter(|c| cpus.contains(c)).count()
            } else {
                1
            }
        })
        .filter(|spec| {
            kind != policy::DomainKind::Cpu || spec.cpus.iter().any(|c| cpus.contains(c))
        })
        .cloned()
}

/// The description's power figures under the governed domains' ids (their indices).
fn declared_power(
    board: &policy::platform::Platform,
    specs: &[Option<policy::platform::DomainSpec>],
) -> policy::PlatformPower {
    let described = board.declared_power();
    policy::PlatformPower {
        static_power: described.static_power,
        domains: specs
            .iter()
            .enumerate()
            .filter_map(|(index, spec)| {
                let spec = spec.as_ref()?;
                let power = described.domains.iter().find(|d| d.domain == spec.id)?;
                Some(policy::DomainPower {
                    domain: index as u32,
                    ..power.clone()
                })
            })
            .collect(),
    }
}

fn policy_hz(hz: platform::Hz) -> policy::Hz {
    policy::Hz(hz.0)
}

/// A domain's frequency table for the policy; a range without a table (intel_cpufreq,
/// some cpufreq-dt drivers) becomes eight evenly spaced points.
fn table_of(domain: &Domain) -> Vec<policy::Hz> {
    match &domain.frequencies {
        platform::Frequencies::Table(table) => table.iter().map(|f| policy_hz(*f)).collect(),
        platform::Frequencies::Range { min, max } => {
            let steps = 8u64;
            let span = max.0.saturating_sub(min.0);
            let mut table: Vec<policy::Hz> = (0..steps)
                .map(|i| policy::Hz(min.0 + span * i / (steps - 1)))
                .collect();
            table.dedup();
            table
        }
    }
}

/// What a governed domain clocks, as the policy names it.
pub fn kind_of(domain: &Domain) -> policy::DomainKind {
    match &domain.id {
        DomainId::Cpu(_) => policy::DomainKind::Cpu,
        DomainId::Emc => policy::DomainKind::Memory,
        DomainId::Devfreq(name) => {
            let name = name.to_ascii_lowercase();
            if ["gpu", "gv11b", "ga10b", "gp10b", "gk20a", "mali", "adreno"]
                .iter()
                .any(|g| name.contains(g))
            {
                policy::DomainKind::Gpu
            } else {
                policy::DomainKind::Memory
            }
        }
    }
}

fn admin_kind(kind: policy::DomainKind) -> crate::admin::DomainKind {
    match kind {
        policy::DomainKind::Cpu => crate::admin::DomainKind::Cpu,
        policy::DomainKind::Gpu => crate::admin::DomainKind::Gpu,
        policy::DomainKind::Memory => crate::admin::DomainKind::Memory,
    }
}

fn reason_of(reason: policy::SubnetReason) -> Reason {
    match reason {
        policy::SubnetReason::Plan => Reason::Energy,
        policy::SubnetReason::StepDown { .. } => Reason::Deadline,
        policy::SubnetReason::StepUp => Reason::Slack,
        policy::SubnetReason::Unserved(
            policy::UnservedCause::DegradedForPriority | policy::UnservedCause::FloorGivenUpToShare,
        ) => Reason::Contention,
        policy::SubnetReason::Unserved(policy::UnservedCause::DeadlineUnreachable) => {
            Reason::Deadline
        }
        policy::SubnetReason::Unserved(_) => Reason::HardwareLimit,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
