//! Profiling an app's candidate sub-networks and choosing the library it registers.
//!
//! Model-independent: the app says how to run one inference of candidate `i`, this module
//! does the rest.
//!
//! 1. [`sweep`] asks the agent to hold each DVFS [`Setting`] in turn (admin socket,
//!    [`crate::admin::hold`]), times inferences of every candidate there, and reads the
//!    agent's energy counter around them for the energy per inference. Without an agent (or
//!    on a machine with no governed frequency domain) it measures at the current clocks
//!    only; [`model_other_settings`] then lets the caller fill in the other settings from
//!    its own model of the platform, flagged `modelled`.
//! 2. [`pareto_library`] keeps the candidates that no other beats on both accuracy and
//!    energy per inference, at most [`MAX_LIBRARY_ENTRIES`], ordered as the protocol
//!    wants (least to most accurate).
//! 3. A [`Profile`] keeps the measurements and the library in a versioned JSON file;
//!    [`AppSpec::from_profile`] (or `dnngov.Session.from_profile` in Python) registers
//!    with that library.
//!
//! ```no_run
//! use dnngov_client::profile::{self, CandidateInfo, Profile, Setting, SweepOptions};
//! use dnngov_client::{AppSpec, Device, Options, Session, Target};
//!
//! let candidates = vec![
//!     CandidateInfo { name: "w0.5-d2".into(), accuracy_pct: 71.3, relative_cost: Some(0.4) },
//!     CandidateInfo { name: "w0.75-d3".into(), accuracy_pct: 75.0, relative_cost: Some(0.7) },
//!     CandidateInfo { name: "w1.0-d4".into(), accuracy_pct: 77.9, relative_cost: Some(1.0) },
//! ];
//! let settings = [
//!     Setting { cpu_hz: None, gpu_hz: Some(306_000_000), mem_hz: None },
//!     Setting { cpu_hz: None, gpu_hz: Some(599_250_000), mem_hz: None },
//!     Setting { cpu_hz: None, gpu_hz: Some(1_109_250_000), mem_hz: None },
//! ];
//! // Runs one inference of candidate `index` (a real app switches its super-network to
//! // that sub-network and runs it on a sample input).
//! let mut run_one = |index: usize| -> anyhow::Result<()> {
//!     std::thread::sleep(std::time::Duration::from_millis(2 + index as u64));
//!     Ok(())
//! };
//! let measurements = profile::sweep(&SweepOptions::default(), &candidates, &settings, &mut run_one)?;
//! let profile = Profile::new("classifier", &profile::this_machine(), measurements, 8);
//! profile.save("classifier.profile.json".as_ref())?;
//!
//! // Later, in the app:
//! let profile = Profile::load("classifier.profile.json".as_ref())?;
//! let target = Target { deadline_ms: 50.0, period_ms: None, accuracy_floor_pct: None, priority: 0 };
//! let spec = AppSpec::from_profile(&profile, "classifier", target, vec![Device::Gpu])?;
//! let session = Session::register(spec, Options::default())?;
//! # drop(session);
//! # Ok::<(), anyhow::Error>(())
//! ```

use crate::admin::{self, AdminError};
use crate::session::{monotonic_ns, AppSpec, ClientError};
use anyhow::Context;
use governor_proto::admin::{DomainKind, EnergyStatus, HoldStatus, StatusReport};
use governor_proto::validate::validate_subnets;
use governor_proto::{Device, ErrorCode, ProtoError, Subnet, Target};
use governor_proto::{MAX_DEADLINE_MS, MAX_NAME_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The version of the profile file format [`Profile::save`] writes and [`Profile::load`]
/// reads.
pub const PROFILE_FORMAT_VERSION: u32 = 1;

/// Most entries [`pareto_library`] keeps.
pub const MAX_LIBRARY_ENTRIES: usize = 8;

/// Pause between the agent showing a held setting and the first inference there.
const SETTLE_AFTER_APPLIED: Duration = Duration::from_millis(50);

/// Rounds the timed inferences of a setting are split into (fewer when there are fewer
/// inferences); see [`sweep`].
const SWEEP_ROUNDS: usize = 4;

/// A DVFS setting: the frequency held for each kind of domain. `None`: that kind of domain
/// is not held (the governor sets it as it would anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    #[serde(default)]
    pub cpu_hz: Option<u64>,
    #[serde(default)]
    pub gpu_hz: Option<u64>,
    #[serde(default)]
    pub mem_hz: Option<u64>,
}

impl Setting {
    /// No domain held: whatever clocks the machine runs at.
    pub fn is_current_clocks(&self) -> bool {
        self.cpu_hz.is_none() && self.gpu_hz.is_none() && self.mem_hz.is_none()
    }

    /// What the agent actually set for a hold.
    pub fn held(hold: &HoldStatus) -> Setting {
        Setting {
            cpu_hz: hold.hz_of(DomainKind::Cpu),
            gpu_hz: hold.hz_of(DomainKind::Gpu),
            mem_hz: hold.hz_of(DomainKind::Memory),
        }
    }

    fn values(&self) -> [Option<u64>; 3] {
        [self.cpu_hz, self.gpu_hz, self.mem_hz]
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_current_clocks() {
            return f.write_str("the current clocks");
        }
        let parts: Vec<String> = [
            ("CPU", self.cpu_hz),
            ("GPU", self.gpu_hz),
            ("memory", self.mem_hz),
        ]
        .iter()
        .filter_map(|(name, hz)| hz.map(|hz| format!("{name} {} MHz", hz as f64 / 1e6)))
        .collect();
        f.write_str(&parts.join(", "))
    }
}

/// One candidate sub-network at one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    /// The candidate's name (becomes the sub-network's name in the library).
    pub candidate: String,
    /// Its accuracy, in percent, as the app knows it (not measured here).
    pub accuracy_pct: f64,
    /// Its cost relative to the others (for example FLOPs), when the app knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_cost: Option<f64>,
    /// Where it was measured: what the agent actually set (after snapping).
    pub setting: Setting,
    /// Median latency of one inference, in milliseconds.
    pub latency_ms: f64,
    /// 90th percentile latency, in milliseconds.
    pub latency_p90_ms: f64,
    /// Energy of one inference (whole board, idle share included), in millijoules, when
    /// the agent has a power source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<f64>,
    /// Whether that energy comes from the agent's estimate rather than a sensor.
    #[serde(default)]
    pub energy_estimated: bool,
    /// True when not measured at this setting but modelled (see [`model_other_settings`]).
    pub modelled: bool,
    /// Inferences timed (0 when modelled).
    pub samples: u32,
}

/// What the sweep is told about each candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateInfo {
    pub name: String,
    pub accuracy_pct: f64,
    pub relative_cost: Option<f64>,
}

/// What [`pareto_library`] compared candidates by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cost {
    /// Least energy per inference over the settings, in millijoules.
    EnergyMj(f64),
    /// Latency at full clocks, in milliseconds (no energy readings).
    LatencyMs(f64),
}

impl Cost {
    pub fn value(&self) -> f64 {
        match *self {
            Cost::EnergyMj(v) | Cost::LatencyMs(v) => v,
        }
    }
}

/// One entry of a library chosen by [`pareto_library`].
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryEntry {
    /// What is registered. `id` is the candidate's index in the order candidates first
    /// appear in the measurements (for [`sweep`]'s output: the index in its candidate
    /// list); `latency_ms` is the latency at the highest setting measured.
    pub subnet: Subnet,
    /// What it was chosen by.
    pub cost: Cost,
    /// Where its energy per inference is least (or, by latency, the highest setting).
    pub best_setting: Setting,
}

/// One candidate's figures, as `pareto_library` compares them.
struct Summary {
    id: u32,
    name: String,
    accuracy_pct: f64,
    relative_cost: Option<f64>,
    latency_full_ms: f64,
    cost: Cost,
    best_setting: Setting,
}

fn usable(m: &Measurement) -> bool {
    m.accuracy_pct.is_finite()
        && (0.0..=100.0).contains(&m.accuracy_pct)
        && m.latency_ms.is_finite()
        && m.latency_ms > 0.0
}

fn usable_energy(m: &Measurement) -> Option<f64> {
    m.energy_mj.filter(|e| e.is_finite() && *e >= 0.0)
}

/// The measurement at the highest setting: each domain's frequency over the highest the
/// candidate was measured at, summed; ties go to a measured (not modelled) one, then to
/// the lower latency.
fn at_full_clocks<'a>(measurements: &[&'a Measurement]) -> &'a Measurement {
    let mut maxima = [0u64; 3];
    for m in measurements {
        for (max, hz) in maxima.iter_mut().zip(m.setting.values()) {
            *max = (*max).max(hz.unwrap_or(0));
        }
    }
    let score = |m: &Measurement| -> f64 {
        m.setting
            .values()
            .iter()
            .zip(maxima)
            .filter(|(_, max)| *max > 0)
            .map(|(hz, max)| hz.unwrap_or(0) as f64 / max as f64)
            .sum()
    };
    measurements
        .iter()
        .copied()
        .max_by(|a, b| {
            score(a)
                .total_cmp(&score(b))
                .then(b.modelled.cmp(&a.modelled))
                .then(b.latency_ms.total_cmp(&a.latency_ms))
        })
        .expect("every candidate has a measurement")
}

/// A protocol-valid sub-network name: at most 64 bytes, control characters replaced.
fn subnet_name(name: &str, id: u32) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        format!("candidate-{id}")
    } else {
        out
    }
}

/// Chooses the library to register from `measurements`.
///
/// For each candidate (measurements grouped by `candidate`): its least energy per
/// inference over the settings (ties: the lower latency), and its latency at the highest
/// setting. When some candidate has no energy figure at all, every candidate is compared
/// by that latency instead. The candidates no other beats (at least as accurate and at
/// most as costly, better on one) are kept, ordered from least to most accurate (and so
/// from cheapest to costliest), then thinned to `max_entries` (at most
/// [`MAX_LIBRARY_ENTRIES`]) keeping the least and the most accurate and, between them, the
/// entries nearest to evenly spaced accuracies. With `max_entries == 1` the most accurate
/// is kept; with 0, none.
///
/// Measurements with an accuracy outside 0..=100 or a latency that is not a positive
/// number are left out; so are energies that are not a non-negative number. The entries
/// always make a valid library for the protocol (unique ids, names of 1..=64 printable
/// bytes, valid latencies and costs, non-decreasing accuracy).
pub fn pareto_library(measurements: &[Measurement], max_entries: usize) -> Vec<LibraryEntry> {
    let max_entries = max_entries.min(MAX_LIBRARY_ENTRIES);
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&Measurement>> = HashMap::new();
    for m in measurements {
        let name = m.candidate.as_str();
        if !order.contains(&name) {
            order.push(name);
        }
        if usable(m) {
            groups.entry(name).or_default().push(m);
        }
    }
    let by_energy = !groups.is_empty()
        && groups
            .values()
            .all(|ms| ms.iter().any(|m| usable_energy(m).is_some()));
    let mut summaries: Vec<Summary> = Vec::new();
    for (id, name) in order.iter().enumerate() {
        let Some(ms) = groups.get(name) else { continue };
        let full = at_full_clocks(ms);
        let (cost, best_setting) = if by_energy {
            let best = ms
                .iter()
                .filter_map(|m| usable_energy(m).map(|e| (e, *m)))
                .min_by(|(ea, a), (eb, b)| {
                    ea.total_cmp(eb).then(a.latency_ms.total_cmp(&b.latency_ms))
                })
                .expect("by_energy: every candidate has an energy");
            (Cost::EnergyMj(best.0), best.1.setting)
        } else {
            (Cost::LatencyMs(full.latency_ms), full.setting)
        };
        summaries.push(Summary {
            id: id as u32,
            name: subnet_name(name, id as u32),
            accuracy_pct: ms[0].accuracy_pct,
            relative_cost: ms.iter().find_map(|m| m.relative_cost),
            latency_full_ms: full.latency_ms,
            cost,
            best_setting,
        });
    }
    // Most accurate first, then cheapest: a candidate is on the front when it is cheaper
    // than every one at least as accurate.
    summaries.sort_by(|a, b| {
        b.accuracy_pct
            .total_cmp(&a.accuracy_pct)
            .then(a.cost.value().total_cmp(&b.cost.value()))
            .then(a.id.cmp(&b.id))
    });
    let mut front: Vec<Summary> = Vec::new();
    for s in summaries {
        if front
            .last()
            .is_none_or(|cheapest| s.cost.value() < cheapest.cost.value())
        {
            front.push(s);
        }
    }
    front.reverse();
    thin(front.len(), max_entries, |i| front[i].accuracy_pct)
        .into_iter()
        .map(|i| {
            let s = &front[i];
            LibraryEntry {
                subnet: Subnet {
                    id: s.id,
                    name: s.name.clone(),
                    accuracy_pct: s.accuracy_pct,
                    latency_ms: Some(s.latency_full_ms)
                        .filter(|l| l.is_finite() && *l > 0.0 && *l <= MAX_DEADLINE_MS),
                    relative_cost: s.relative_cost.filter(|c| c.is_finite() && *c > 0.0),
                },
                cost: s.cost,
                best_setting: s.best_setting,
            }
        })
        .collect()
}

/// Indices (ascending) of at most `keep` of `n` points ordered by `accuracy`: both ends,
/// and between them the points nearest to evenly spaced accuracies.
fn thin(n: usize, keep: usize, accuracy: impl Fn(usize) -> f64) -> Vec<usize> {
    if keep == 0 || n == 0 {
        return Vec::new();
    }
    if n <= keep {
        return (0..n).collect();
    }
    if keep == 1 {
        return vec![n - 1];
    }
    let (low, high) = (accuracy(0), accuracy(n - 1));
    let mut picked = vec![0, n - 1];
    for j in 1..keep - 1 {
        let wanted = low + (high - low) * j as f64 / (keep - 1) as f64;
        let nearest = (1..n - 1)
            .filter(|i| !picked.contains(i))
            .min_by(|&a, &b| {
                (accuracy(a) - wanted)
                    .abs()
                    .total_cmp(&(accuracy(b) - wanted).abs())
                    .then(a.cmp(&b))
            })
            .expect("fewer picks than interior points");
        picked.push(nearest);
    }
    picked.sort_unstable();
    picked
}

/// A model's figures for one candidate at one setting (see [`model_other_settings`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Modelled {
    pub latency_ms: f64,
    pub latency_p90_ms: f64,
    pub energy_mj: Option<f64>,
}

/// Completes a sweep that could measure only some settings (no agent, or no governed
/// frequency domain, so only the current clocks): for every candidate and every setting
/// it was not measured at, `model(reference, setting)` gives the figures, where
/// `reference` is that candidate's first measured (not modelled) measurement. The result
/// is `measured` followed by the modelled measurements (`modelled: true`, `samples: 0`);
/// `model` returning `None` leaves that setting out.
///
/// The model is the caller's: typically a platform description (frequency tables and
/// power figures) scaling latency with the clock of the device the candidate runs on.
pub fn model_other_settings(
    measured: &[Measurement],
    settings: &[Setting],
    model: &mut dyn FnMut(&Measurement, &Setting) -> Option<Modelled>,
) -> Vec<Measurement> {
    let mut out = measured.to_vec();
    let mut seen: Vec<&str> = Vec::new();
    for reference in measured.iter().filter(|m| !m.modelled) {
        if seen.contains(&reference.candidate.as_str()) {
            continue;
        }
        seen.push(&reference.candidate);
        for setting in settings {
            let known = measured
                .iter()
                .any(|m| m.candidate == reference.candidate && m.setting == *setting);
            if known {
                continue;
            }
            if let Some(figures) = model(reference, setting) {
                out.push(Measurement {
                    setting: *setting,
                    latency_ms: figures.latency_ms,
                    latency_p90_ms: figures.latency_p90_ms,
                    energy_mj: figures.energy_mj,
                    energy_estimated: figures.energy_mj.is_some(),
                    modelled: true,
                    samples: 0,
                    ..reference.clone()
                });
            }
        }
    }
    out
}

/// How [`sweep`] measures.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The agent's admin socket (default: `$DNNGOV_ADMIN_SOCKET`, else
    /// `/run/dnngov/admin.sock`). Holding frequencies needs root or group `dnngov`.
    pub admin_socket: PathBuf,
    /// Untimed inferences of each candidate before timing it at a setting.
    pub warmup: u32,
    /// Timed inferences of each candidate at each setting (at least 1), for its latency.
    pub inferences: u32,
    /// After timing, run each candidate until the agent's energy counter has covered this
    /// long, for the energy per inference. Zero: no energy.
    pub energy_window: Duration,
    /// Stop a candidate's energy run after this long (its energy is then left out unless
    /// the counter covered some time).
    pub max_time_per_candidate: Duration,
    /// The lease each hold asks for; the sweep renews it long before it runs out, and a
    /// sweep that dies leaves the clocks held for at most this long.
    pub lease: Duration,
    /// How long to wait for the agent to show a held setting applied.
    pub settle_timeout: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            admin_socket: admin::default_socket(),
            warmup: 3,
            inferences: 20,
            energy_window: Duration::from_secs(1),
            max_time_per_candidate: Duration::from_secs(10),
            lease: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(2),
        }
    }
}

/// The hold a sweep has in force; dropping it releases the hold (on error too).
struct HoldGuard<'a> {
    socket: &'a Path,
    lease: Duration,
    /// The setting asked for, and when the hold was last sent.
    active: Option<(Setting, Instant)>,
}

impl HoldGuard<'_> {
    fn hold(&mut self, setting: &Setting) -> Result<HoldStatus, AdminError> {
        self.active = Some((*setting, Instant::now()));
        admin::hold(
            self.socket,
            setting.cpu_hz,
            setting.gpu_hz,
            setting.mem_hz,
            Some(self.lease),
        )
    }

    /// Sends the hold again once a third of its lease is gone.
    fn renew_if_due(&mut self) -> Result<(), AdminError> {
        if let Some((setting, sent)) = self.active {
            if sent.elapsed() >= self.lease / 3 {
                self.hold(&setting)?;
            }
        }
        Ok(())
    }

    fn release(&mut self) -> Result<(), AdminError> {
        if self.active.take().is_some() {
            admin::release(self.socket)?;
        }
        Ok(())
    }
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!("dnngov: releasing the frequency hold failed ({e}); it ends with its lease");
        }
    }
}

/// Profiles every candidate at every setting.
///
/// For each setting in turn the agent is asked to hold it (the setting recorded is what
/// the agent set, after snapping to the frequencies the domains offer) and the sweep waits
/// until the agent shows it applied; then each candidate runs `warmup` untimed
/// inferences and `inferences` timed ones (`run_one(index)`, `index` into `candidates`).
/// The timed ones run in up to 4 rounds, every candidate its share in each round and one
/// more untimed inference before it (none when `warmup` is 0), so that a load which comes
/// or goes during the setting shifts every candidate alike: on a machine where something
/// else runs, the order of the candidates' latencies holds. When the agent reports an
/// energy counter, each candidate then runs on its own until the counter has covered
/// `energy_window`, and the energy per inference is the average power over that window
/// times those inferences' mean latency. The hold is
/// renewed before its lease runs out and released at the end, on error too. A setting
/// with no frequency (`Setting::default()`) is measured without a hold.
///
/// When no agent answers on the admin socket, or it governs no frequency domain, or
/// `settings` is empty, every candidate is measured once at the current clocks
/// (`Setting::default()`); complete the rest with [`model_other_settings`]. An agent that
/// refuses a setting (a frequency outside a domain's range, a kind of domain the machine
/// does not have) stops the sweep with its reason, as does an error from `run_one`.
///
/// Run it with nothing else busy on the machine: the energy is the whole board's.
pub fn sweep(
    opts: &SweepOptions,
    candidates: &[CandidateInfo],
    settings: &[Setting],
    run_one: &mut dyn FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Measurement>> {
    anyhow::ensure!(!candidates.is_empty(), "no candidates to profile");
    anyhow::ensure!(
        opts.inferences >= 1,
        "SweepOptions::inferences must be at least 1"
    );
    let socket = opts.admin_socket.as_path();
    let status = match admin::status(socket) {
        Ok(status) => Some(status),
        Err(e) if e.is_not_running() => {
            log::warn!("dnngov: {e}; profiling at the current clocks only");
            None
        }
        Err(e) => return Err(e).context("asking the agent for its status"),
    };
    let mut measurer = Measurer {
        opts,
        socket,
        energy: status.as_ref().is_some_and(|s| s.energy.is_some())
            && !opts.energy_window.is_zero(),
        guard: HoldGuard {
            socket,
            lease: opts.lease,
            active: None,
        },
    };
    let governed = status.as_ref().is_some_and(|s| !s.domains.is_empty());
    if !governed || settings.is_empty() {
        if status.is_some() && settings.iter().any(|s| !s.is_current_clocks()) {
            log::warn!("dnngov: the agent governs no frequency domain; profiling at the current clocks only");
        }
        return measurer.setting(candidates, Setting::default(), run_one);
    }
    let mut measurements = Vec::new();
    for setting in settings {
        let applied = if setting.is_current_clocks() {
            measurer.guard.release()?;
            Setting::default()
        } else {
            let held = measurer
                .guard
                .hold(setting)
                .with_context(|| format!("holding {setting}"))?;
            measurer.wait_applied(&held);
            Setting::held(&held)
        };
        measurements.extend(measurer.setting(candidates, applied, run_one)?);
    }
    measurer
        .guard
        .release()
        .context("releasing the frequency hold")?;
    Ok(measurements)
}

struct Measurer<'a> {
    opts: &'a SweepOptions,
    socket: &'a Path,
    /// Whether the agent has an energy counter to read.
    energy: bool,
    guard: HoldGuard<'a>,
}

impl Measurer<'_> {
    /// Waits until the agent's status shows every held domain at its held frequency.
    fn wait_applied(&self, held: &HoldStatus) {
        let deadline = Instant::now() + self.opts.settle_timeout;
        loop {
            let applied = admin::status(self.socket).is_ok_and(|status| shows(&status, held));
            if applied {
                // The agent shows what it sent; give the driver and the clock a moment to
                // get there.
                std::thread::sleep(SETTLE_AFTER_APPLIED);
                return;
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "dnngov: the agent did not show the hold applied within {:.1} s; measuring anyway",
                    self.opts.settle_timeout.as_secs_f64()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Measures every candidate at `setting` (already in force).
    ///
    /// The timed inferences run in rounds, every candidate its share in each round, so
    /// that a load which comes or goes while the setting is measured (another program, a
    /// sibling hyperthread) shifts every candidate alike rather than the one timed then.
    /// Each candidate starts the first round with `warmup` untimed inferences, and later
    /// rounds with one (none when `warmup` is 0): the first inference after a switch runs
    /// on cold caches. With an energy counter each candidate then runs on its own until the
    /// counter has covered `energy_window` (or `max_time_per_candidate` passed).
    fn setting(
        &mut self,
        candidates: &[CandidateInfo],
        setting: Setting,
        run_one: &mut dyn FnMut(usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Measurement>> {
        let context = |index: usize| {
            format!(
                "candidate {} ({:?}) at {setting}",
                index, candidates[index].name
            )
        };
        let inferences = self.opts.inferences as usize;
        let rounds = inferences.min(SWEEP_ROUNDS);
        let mut latencies: Vec<Vec<f64>> = vec![Vec::with_capacity(inferences); candidates.len()];
        for round in 0..rounds {
            // This round's share of the timed inferences: the first `inferences % rounds`
            // rounds take one more.
            let share = inferences / rounds + usize::from(round < inferences % rounds);
            let untimed = if round == 0 {
                self.opts.warmup
            } else {
                self.opts.warmup.min(1)
            };
            for (index, samples) in latencies.iter_mut().enumerate() {
                for _ in 0..untimed {
                    run_one(index).with_context(|| context(index))?;
                    self.guard.renew_if_due()?;
                }
                for _ in 0..share {
                    let begin = Instant::now();
                    run_one(index).with_context(|| context(index))?;
                    samples.push(begin.elapsed().as_secs_f64() * 1e3);
                    self.guard.renew_if_due()?;
                }
            }
        }
        let mut measurements = Vec::with_capacity(candidates.len());
        for (index, (candidate, mut samples)) in candidates.iter().zip(latencies).enumerate() {
            let energy = if self.energy {
                self.energy_per_inference(index, run_one)
                    .with_context(|| context(index))?
            } else {
                None
            };
            samples.sort_by(f64::total_cmp);
            measurements.push(Measurement {
                candidate: candidate.name.clone(),
                accuracy_pct: candidate.accuracy_pct,
                relative_cost: candidate.relative_cost,
                setting,
                latency_ms: micro(percentile(&samples, 0.5)),
                latency_p90_ms: micro(percentile(&samples, 0.9)),
                energy_mj: energy.map(|(e, _)| micro(e)),
                energy_estimated: energy.is_some_and(|(_, estimated)| estimated),
                modelled: false,
                samples: samples.len() as u32,
            });
        }
        Ok(measurements)
    }

    /// Runs candidate `index` on its own until the agent's energy counter has covered
    /// `energy_window` (or `max_time_per_candidate` passed): the energy of one inference is
    /// the average power over the covered time times the mean latency of those inferences,
    /// and whether it is estimated. `None` when the counter covered no time.
    fn energy_per_inference(
        &mut self,
        index: usize,
        run_one: &mut dyn FnMut(usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<Option<(f64, bool)>> {
        let started = Instant::now();
        let started_ns = monotonic_ns();
        let (mut total_ms, mut count) = (0.0, 0u32);
        let mut first: Option<EnergyStatus> = None;
        let mut last: Option<EnergyStatus> = None;
        let mut next_read = Instant::now();
        loop {
            let begin = Instant::now();
            run_one(index)?;
            total_ms += begin.elapsed().as_secs_f64() * 1e3;
            count += 1;
            self.guard.renew_if_due()?;
            if Instant::now() >= next_read {
                next_read = Instant::now() + Duration::from_millis(100);
                // Only readings taken after this block started count.
                if let Some(reading) = admin::status(self.socket)
                    .ok()
                    .and_then(|s| s.energy)
                    .filter(|e| e.at_monotonic_ns >= started_ns)
                {
                    match &first {
                        None => first = Some(reading),
                        Some(f) if reading.at_monotonic_ns > f.at_monotonic_ns => {
                            last = Some(reading)
                        }
                        Some(_) => {}
                    }
                }
            }
            let covered = match (&first, &last) {
                (Some(f), Some(l)) => Duration::from_nanos(l.at_monotonic_ns - f.at_monotonic_ns),
                _ => Duration::ZERO,
            };
            if covered >= self.opts.energy_window
                || started.elapsed() >= self.opts.max_time_per_candidate
            {
                break;
            }
        }
        let mean_ms = total_ms / f64::from(count);
        Ok(match (&first, &last) {
            (Some(f), Some(l)) if l.at_monotonic_ns > f.at_monotonic_ns => {
                let watts =
                    (l.joules - f.joules) / ((l.at_monotonic_ns - f.at_monotonic_ns) as f64 / 1e9);
                // W x ms = mJ.
                Some((watts * mean_ms, f.estimated || l.estimated))
            }
            _ => None,
        })
    }
}

/// Whether `status` shows every domain of `held` at its held frequency.
fn shows(status: &StatusReport, held: &HoldStatus) -> bool {
    held.domains.iter().all(|h| {
        status
            .domains
            .iter()
            .any(|d| d.name == h.domain && d.current_hz == Some(h.hz))
    })
}

/// Rounded to six decimals (ns in ms, nJ in mJ): finer is noise, and such a number reads
/// back from a profile file exactly as it was written.
fn micro(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The `q` quantile (0..=1) of sorted values, interpolated between neighbours.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Why a profile could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// Where in the file, as `measurements[3].setting.gpu_hz` (empty: the whole file).
        field: String,
        message: String,
    },
    #[error(
        "{}: format_version is {found}; this library reads version {PROFILE_FORMAT_VERSION}: profile again, or use the library version that wrote it",
        path.display()
    )]
    Version { path: PathBuf, found: String },
}

/// A profiling run's results: every measurement, and the library chosen from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always [`PROFILE_FORMAT_VERSION`] when written by this library.
    pub format_version: u32,
    /// The app profiled.
    pub app: String,
    /// The machine it was profiled on (see [`this_machine`]).
    pub machine: String,
    pub created_unix_s: u64,
    pub measurements: Vec<Measurement>,
    /// The library to register, least to most accurate.
    pub library: Vec<Subnet>,
    /// What one inference of the profiled app was, in the app's own terms (for example
    /// `{"batch": 8}`): its latencies hold only for that work, so an app can refuse a
    /// profile made for other work. Empty: not recorded.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub workload: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Profile {
    /// A profile of `measurements`, its library chosen by [`pareto_library`].
    pub fn new(
        app: &str,
        machine: &str,
        measurements: Vec<Measurement>,
        max_entries: usize,
    ) -> Profile {
        let entries = pareto_library(&measurements, max_entries);
        let mut notes = Vec::new();
        match entries.first().map(|e| e.cost) {
            Some(Cost::EnergyMj(_)) => notes.push(
                "library chosen by accuracy against the least energy per inference over the settings"
                    .to_string(),
            ),
            Some(Cost::LatencyMs(_)) => notes.push(
                "no energy figure for every candidate: library chosen by accuracy against latency at full clocks"
                    .to_string(),
            ),
            None => notes.push("no usable measurement: the library is empty".to_string()),
        }
        let modelled = measurements.iter().filter(|m| m.modelled).count();
        if modelled > 0 {
            notes.push(format!(
                "{modelled} of {} measurements are modelled, not measured",
                measurements.len()
            ));
        }
        let created_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Profile {
            format_version: PROFILE_FORMAT_VERSION,
            app: app.to_string(),
            machine: machine.to_string(),
            created_unix_s,
            measurements,
            library: entries.into_iter().map(|e| e.subnet).collect(),
            workload: serde_json::Map::new(),
            notes,
        }
    }

    /// Reads a profile written by [`Profile::save`] (or by hand: unknown fields are
    /// refused, and every error names the file and the field).
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::from_json(&text, path)
    }

    /// Parses a profile's JSON; `path` only names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let invalid = |field: &str, message: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        // The version first, so a file of another version says so rather than
        // complaining about a field it has.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(&path_at(text, &e), e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(invalid("", "a profile is a JSON object".into()));
        };
        match object.get("format_version") {
            None => return Err(invalid("format_version", "missing".into())),
            Some(v) if v.as_u64() == Some(u64::from(PROFILE_FORMAT_VERSION)) => {}
            Some(v) => {
                return Err(ProfileError::Version {
                    path: path.to_path_buf(),
                    found: v.to_string(),
                })
            }
        }
        let profile: Profile =
            serde_json::from_str(text).map_err(|e| invalid(&path_at(text, &e), e.to_string()))?;
        profile
            .check()
            .map_err(|(field, message)| invalid(&field, message))?;
        Ok(profile)
    }

    /// Writes the profile as pretty JSON (through a temporary file, so a reader never
    /// sees half of it).
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        if let Err((field, message)) = self.check() {
            return Err(ProfileError::Invalid {
                path: path.to_path_buf(),
                field,
                message,
            });
        }
        let io = |source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).expect("profiles always serialise");
        text.push('\n');
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io(e)
        })
    }

    /// What serde cannot check: the version, the figures' ranges, the library.
    fn check(&self) -> Result<(), (String, String)> {
        if self.format_version != PROFILE_FORMAT_VERSION {
            return Err((
                "format_version".into(),
                format!(
                    "is {}; it must be {PROFILE_FORMAT_VERSION}",
                    self.format_version
                ),
            ));
        }
        for (i, m) in self.measurements.iter().enumerate() {
            let field = |name: &str| format!("measurements[{i}].{name}");
            if !(m.accuracy_pct.is_finite() && (0.0..=100.0).contains(&m.accuracy_pct)) {
                return Err((
                    field("accuracy_pct"),
                    format!("is {}; it must be from 0 to 100", m.accuracy_pct),
                ));
            }
            for (name, value) in [
                ("latency_ms", m.latency_ms),
                ("latency_p90_ms", m.latency_p90_ms),
            ] {
                if !(value.is_finite() && value >= 0.0) {
                    return Err((
                        field(name),
                        format!("is {value}; it must be a non-negative number"),
                    ));
                }
            }
            if let Some(energy) = m.energy_mj {
                if !(energy.is_finite() && energy >= 0.0) {
                    return Err((
                        field("energy_mj"),
                        format!("is {energy}; it must be a non-negative number"),
                    ));
                }
            }
        }
        if !self.library.is_empty() {
            validate_subnets(&self.library).map_err(|e| ("library".to_string(), e.message))?;
        }
        Ok(())
    }
}

impl AppSpec {
    /// The registration of an app whose library is the profile's.
    pub fn from_profile(
        profile: &Profile,
        name: impl Into<String>,
        target: Target,
        devices: Vec<Device>,
    ) -> Result<AppSpec, ClientError> {
        if profile.library.is_empty() {
            return Err(ClientError::InvalidSpec(ProtoError::new(
                ErrorCode::InvalidSubnets,
                format!(
                    "the profile of {:?} on {:?} has an empty library: nothing was measured usably",
                    profile.app, profile.machine
                ),
            )));
        }
        validate_subnets(&profile.library).map_err(ClientError::InvalidSpec)?;
        Ok(AppSpec {
            name: name.into(),
            devices,
            subnets: profile.library.clone(),
            target,
            default_subnet: None,
        })
    }
}

/// A name for this machine: the device-tree model (Jetson and most ARM boards), else the
/// DMI product name, else the host name and architecture.
pub fn this_machine() -> String {
    for file in [
        "/proc/device-tree/model",
        "/sys/devices/virtual/dmi/id/product_name",
    ] {
        if let Ok(text) = std::fs::read_to_string(file) {
            let name = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    match nix::sys::utsname::uname() {
        Ok(u) => format!(
            "{} ({})",
            u.nodename().to_string_lossy(),
            u.machine().to_string_lossy()
        ),
        Err(_) => "unknown machine".to_string(),
    }
}

/// The path (`measurements[3].setting.gpu_hz`) of the value where a parse error of `text`
/// was found.
fn path_at(text: &str, error: &serde_json::Error) -> String {
    if error.line() == 0 {
        return String::new();
    }
    let offset: usize = text
        .split_inclusive('\n')
        .take(error.line() - 1)
        .map(str::len)
        .sum::<usize>()
        + error.column().saturating_sub(1);
    enum Frame {
        Object(Option<String>),
        Array(usize),
    }
    let bytes = text.as_bytes();
    let end = offset.min(bytes.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut expecting_key = false;
    let mut i = 0;
    while i < end {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(Frame::Object(key)) = stack.last_mut() {
                    if expecting_key {
                        *key = Some(
                            String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned(),
                        );
                        expecting_key = false;
                    }
                }
            }
            b'{' => {
                stack.push(Frame::Object(None));
                expecting_key = true;
            }
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
                expecting_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object(_)) => expecting_key = true,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    // "missing field" points at the object's end: name the object, not its last key.
    if error.to_string().starts_with("missing field") {
        if let Some(Frame::Object(key)) = stack.last_mut() {
            *key = None;
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests;
