//! The manager: holds the state that outlives one tick (PELT signals, models, controllers,
//! the plan in force, dwell timers) and combines the three levels into one decision.
//! `step` is deterministic: the same sequence of snapshots gives the same decisions.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::controller::{AppController, ControllerAction, ControllerConfig};
use crate::decision::{
    AppDecision, Decision, DomainDecision, FreqReason, PlanTrigger, SubnetReason, UnservedCause,
};
use crate::governor::{BaseChoice, BaseGovernor, GovernorConfig};
use crate::model::{
    ClockRatios, DomainLoad, LatencyCoefs, LatencyModel, PlatformPower, PowerModel,
};
use crate::optimiser::{
    evaluate_plan, evaluate_plan_resources, optimise, pinned_for_misses, AppProblem, DomainOption,
    Mode, OptimiserConfig, Plan, Problem, SubnetOption, MAX_SPREAD_MARGIN,
};
use crate::snapshot::{AppState, DomainKind, FreqDomain, Snapshot};
use crate::units::{Hz, Nanos, Watts};

/// How long the base governor waits before lowering a domain no plan sets: long enough
/// that a steady but noisy load (other programs' short tasks) does not move the clock every
/// tick, short enough that a load that went away stops costing power at once. Measured in
/// the simulator: 1 s cut the changes of such a domain from thousands a minute to tens but
/// cost S5 (CPU bursts, no app) 8.8 % more energy than schedutil; 0.5 s costs 3.2 %.
pub const BASE_DOWN_RATE_LIMIT: Nanos = Nanos(500_000_000);

/// How long it waits before lowering such a domain to half its clock or more: a dip of a
/// load that is still there (see [`GovernorConfig::dip_rate_limit`]). Measured in the
/// simulator: clusters with no app under a steady stream of short tasks changed clock 2-3
/// times less often (generated seed 3: 79 changes to 32 in 120 s), and S5, whose bursts
/// stop outright, uses 3.8 % more energy than schedutil instead of 3.3 %.
pub const BASE_DIP_RATE_LIMIT: Nanos = Nanos(2_000_000_000);

/// How long such a domain keeps the peak of its load as the floor of a step down to half
/// its clock or more (see [`GovernorConfig::peak_hold`]). Measured in the simulator: the
/// clusters with no app in generated seeds 61 and 65 changed clock 18.1 and 25.9 times a
/// minute with the dip limit alone, 5.6 and none with the hold; S1-S5 and R1-R3 are
/// unchanged (their loads stop outright, which is not a dip). 10 s calmed the same
/// scenarios for more energy (docs/evaluation.md).
pub const BASE_PEAK_HOLD: Nanos = Nanos(5_000_000_000);

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
    /// An upgrade (a plan that raises an app's sub-network) is planned with this much more
    /// margin for the apps it raises (see `Manager::plan_without_upgrades` and `Manager::upgrade`); 0 turns the
    /// hysteresis on sub-networks off.
    pub upgrade_margin: f64,
    /// Hysteresis on clocks: a re-plan keeps the clocks of the plan in force wherever they
    /// still meet its constraints, for at most this fraction more predicted power (see
    /// `Manager::keep_clocks`); 0 turns it off.
    #[serde(default = "default_keep_clock_power")]
    pub keep_clock_power: f64,
    /// After a plan lowered a domain's clock and the next raised it within 5 s, re-plans
    /// keep that domain at the clock in force (where it meets their constraints) for this
    /// long, doubled at each further failure up to 8 times as long (see `LOWER_TRIAL`);
    /// 0 turns it off.
    #[serde(default = "default_lower_hold")]
    pub lower_hold: Nanos,
    /// A planned CPU domain whose online CPUs were all busy this many ticks in a row,
    /// while an app that runs there missed a deadline (or has an inference stalled in
    /// flight, see `STALLED`), is saturated: its demand is taken
    /// as twice what it measured and a plan is made at once (see `CPU_SATURATED`). The GPU
    /// is judged over as many ticks (see `raise_saturated_gpu`); 0 turns both off.
    #[serde(default = "default_saturated_ticks")]
    pub saturated_ticks: u32,
    /// For this long after a plan raised an app's sub-network, while the app does not
    /// miss, re-plans keep it there where that serves as many apps for little more power
    /// (see `Manager::keep_upgrades`); 0 turns it off.
    #[serde(default = "default_upgrade_trial")]
    pub upgrade_trial: Nanos,
    /// While an app uses the GPU, no plan runs the GPU or the memory clock below this
    /// fraction of its highest clock, unless a power cap is in force that no plan above it
    /// keeps with every app served (see `GPU_FLOOR`); 0 turns it off.
    #[serde(default = "default_gpu_floor")]
    pub gpu_floor: f64,
    /// Whether the power model takes each domain's shape from the platform description's
    /// voltage curve (`model::VoltageCurve`) rather than `speed^3`. Off by default: on the
    /// simulated Xavier NX it did better on the generated scenarios (seeds 1-200: within
    /// the oracle's misses + 1 point in 194 against 190, slow to come back in 5 against
    /// 9, median energy 1.058 against 1.064 times the oracle's) but worse where two models
    /// share the GPU (S2: 757.5 J against 727.6 J; the quick start's emulated board 25-28 %
    /// less energy than schedutil against 38-40 %): the plans' accounting of busy time
    /// was tuned with `speed^3`, and the exact shape exposes it (docs/evaluation.md, measured
    /// at `bc0c597`, where it was on).
    #[serde(default)]
    pub voltage_curves: bool,
    /// Under a power cap, a plan's predicted power counts the domains it does not set at
    /// their busy share averaged over about this long (see `CAP_LOAD_WINDOW`); 0 takes it
    /// as measured at the tick.
    #[serde(default = "default_cap_load_window")]
    pub cap_load_window: Nanos,
    /// An app the plan in force leaves degraded (to run its cheapest sub-network) that
    /// measurably misses is run at best effort by the next plan that serves as many apps,
    /// whatever that costs (see `Manager::should_replace`); false leaves the plan in force
    /// to the usual rules.
    #[serde(default = "default_best_effort_on_misses")]
    pub best_effort_on_misses: bool,
    /// A CPU cluster no app runs on that other programs' tasks saturate at a low clock is
    /// raised to half its highest clock at once, and the free clusters are held there as
    /// after a spill (see `FREE_SATURATED_TICKS`); false leaves them to the base governor
    /// until a spill makes an app miss.
    #[serde(default = "default_raise_free_clusters")]
    pub raise_free_clusters: bool,
    /// A GPU busy all the time for `saturated_ticks` ticks while an app that uses it
    /// misses is planned at once, and the plans after it keep it at least a quarter over
    /// the clock it was saturated at for a while (see `GPU_SATURATED_HOLD`); false, the
    /// default, leaves a slowed GPU to the apps' slow samples.
    #[serde(default = "default_raise_saturated_gpu")]
    pub raise_saturated_gpu: bool,
}

fn default_raise_free_clusters() -> bool {
    true
}

fn default_raise_saturated_gpu() -> bool {
    false
}

fn default_best_effort_on_misses() -> bool {
    true
}

fn default_cap_load_window() -> Nanos {
    CAP_LOAD_WINDOW
}

fn default_keep_clock_power() -> f64 {
    0.015
}

fn default_lower_hold() -> Nanos {
    Nanos::from_millis(10_000)
}

fn default_saturated_ticks() -> u32 {
    5
}

fn default_upgrade_trial() -> Nanos {
    Nanos::from_millis(10_000)
}

fn default_gpu_floor() -> f64 {
    GPU_FLOOR
}

impl Default for Config {
    fn default() -> Self {
        Config {
            governor: GovernorConfig {
                down_rate_limit: BASE_DOWN_RATE_LIMIT,
                dip_rate_limit: BASE_DIP_RATE_LIMIT,
                peak_hold: BASE_PEAK_HOLD,
                ..GovernorConfig::default()
            },
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
            upgrade_margin: 0.05,
            keep_clock_power: default_keep_clock_power(),
            lower_hold: default_lower_hold(),
            saturated_ticks: default_saturated_ticks(),
            upgrade_trial: default_upgrade_trial(),
            gpu_floor: default_gpu_floor(),
            voltage_curves: false,
            cap_load_window: CAP_LOAD_WINDOW,
            best_effort_on_misses: default_best_effort_on_misses(),
            raise_free_clusters: default_raise_free_clusters(),
            raise_saturated_gpu: default_raise_saturated_gpu(),
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
    /// Recent inferences (start, end, sub-network), to estimate how much of another app's
    /// latency was waiting for this one on a shared GPU.
    recent: VecDeque<(Nanos, Nanos, u32)>,
    /// Samples the controller found representative, held until every other app sharing
    /// the GPU has reported what ran beside them (see [`Manager::learn`]).
    pending: VecDeque<Pending>,
    /// Per sub-network: whether the last sample was rejected as an outlier.
    rejected_last: Vec<bool>,
    /// Contended samples (see [`CLEAN_WAIT`]) skipped since the last clean one.
    contended: u32,
    /// Learned samples in a row slower than the constraints predicted by more than
    /// the optimiser's margin (see [`BIAS_SAMPLES`]) ...
    slow_run: u32,
    /// ... the least ratio of one of them to what the fits predicted before the run ...
    slow_ratio: f64,
    /// ... and those fits' coefficients per sub-network (split, cautious), as the run
    /// started.
    before_slow: Vec<(LatencyCoefs, Option<LatencyCoefs>)>,
    /// An inference in flight that overran (see [`Manager::track_overruns`]).
    boost: Option<Boost>,
    /// Inferences judged, and those over the deadline, since the plan in force was adopted
    /// (see [`MISS_RATE`]).
    judged: u32,
    missed: u32,
    /// The spread of the app's latency from frame to frame, free of the fits' errors: the
    /// exponentially weighted mean of `d^2 / 2`, `d` the relative difference between two
    /// learned samples in a row of the same sub-network at the same clocks (for
    /// independent frames, `d^2 / 2` averages the squared relative deviation), how many
    /// went in, and the last sample (see [`SPREAD_QUANTILE`]).
    spread_var: f64,
    spread_n: u32,
    spread_last: Option<(usize, ClockRatios, f64)>,
    /// The margin the spread calls for, in steps of [`SPREAD_STEP`], with hysteresis.
    spread_level: f64,
    /// The slowest clocks (highest `f_max / f`) of each device kind that a learned sample
    /// of this app ran at (see [`EXPLORE_STEP`]); none before the first, when the plans
    /// follow the declared latencies and the seeded split.
    explored: Option<ClockRatios>,
    /// A sub-network the app left downwards, and until when it and those above it stay
    /// out of reach (see [`RETURN_HOLD`]).
    left: Option<(u32, Nanos)>,
    /// The sub-network the plan in force chose for the app when [`RETURN_HOLD`] kept it
    /// lower, and until when: the plan's choice is taken once the hold is over.
    held_back: Option<(u32, Nanos)>,
    /// The sub-network a plan last raised the app to, and when (see [`UPGRADE_TRIAL`]).
    raised: Option<(u32, Nanos)>,
    /// A sub-network an upgrade to failed: until when no upgrade takes the app to it or
    /// above, and the back-off that set it.
    upgrade_block: Option<(u32, Nanos)>,
    upgrade_backoff: Nanos,
    /// Margin added on measured misses (see [`MISS_MARGIN_STEP`]), and the inferences
    /// judged and missed since it last moved.
    miss_margin: f64,
    fb_judged: u32,
    fb_missed: u32,
    /// When its last inference judged against the plan ended over the deadline.
    last_miss: Option<Nanos>,
}

impl AppEntry {
    /// Missed its deadline at least twice since the plan in force was adopted, and on more
    /// than [`MISS_RATE`] of its inferences.
    fn missing(&self) -> bool {
        self.missed >= 2 && f64::from(self.missed) > MISS_RATE * f64::from(self.judged)
    }
}

/// The clocks raised for an app whose inference in flight overran.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Boost {
    /// When the overrunning inference began ...
    begin: Nanos,
    /// ... when it was seen overrunning, and the clocks it ran at until then.
    at: Nanos,
    ratios: ClockRatios,
    /// It has finished. The boost then holds until a plan is adopted (made with its sample
    /// learned) or a later inference meets its prediction (a one-off).
    ended: bool,
    /// False once the inference is taken as stalled (see [`OVERRUN_GIVE_UP`]): the boost is
    /// dropped, and not raised again for the same inference.
    active: bool,
}

/// One inference waiting to be learned.
#[derive(Clone, Copy, Debug)]
struct Pending {
    subnet: usize,
    ratios: ClockRatios,
    use_: Use,
    latency_ms: f64,
    start: Nanos,
    end: Nanos,
}

/// What a sample is good for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// Learned, and counted towards a slow-down.
    Learn,
    /// Counted towards a slow-down only.
    SlowDownOnly,
    /// Learned, but it ran under an overrun boost: slower than predicted, it counts towards
    /// a slow-down (slow even at the boosted clocks); within its prediction, it does not end
    /// a run of slow samples, as the boost's clocks are not the plan's. Otherwise a plan
    /// too slow for an app whose every other inference overran stayed in force: each
    /// boosted inference, fast at the highest clocks, ended the run its overrunning
    /// neighbour had started.
    LearnBoosted,
    /// Neither.
    Skip,
}

/// How long inference intervals are kept for the interference estimate.
const RECENT_SPAN: Nanos = Nanos::from_millis(2000);
/// At most this many are kept per app.
const RECENT_MAX: usize = 64;
/// A sample is learned at the latest this long after it ended, even if another app that
/// shares the GPU has not reported since (it is then taken as idle).
const SETTLE: Nanos = Nanos::from_millis(1000);
/// A sample more than this many times its prediction is learned only if the next one of
/// the same sub-network is too: a one-off (a switch, a page fault storm) is not the
/// sub-network's latency, a lasting change is.
const OUTLIER_RATIO: f64 = 2.0;
/// A sample whose estimated wait for other apps is over this fraction of its latency is
/// contended: the estimate's error would be a large part of what is learned. Contended
/// samples are skipped while clean ones come, and learned (corrected) after
/// [`CONTENDED_RUN`] in a row, so an app that always shares still learns.
///
/// A skipped sample still counts towards a slow-down (see [`BIAS_SAMPLES`]) where it ran
/// over [`OUTLIER_RATIO`] times its prediction once its estimated wait is taken out: the
/// estimate can be off by tens of per cent, not by that much. A GPU job that slows every
/// app makes their inferences overlap, so every sample after it is contended: skipped
/// until 20 came in a row, the slow-down went unseen while four of five apps missed
/// every frame for 5 s (generated seed 473: a job taking 48 % of the GPU, 7.36 % of
/// frames missed against 4.02 %). Counted from twice the margin, or from the margin, the estimate's
/// errors made slow-downs of their own: in the generated scenarios of seeds 1-200, 13 and
/// 14 restless against 4, and median energy over 1.05 times the oracle's.
const CLEAN_WAIT: f64 = 0.1;
const CONTENDED_RUN: u32 = 20;
/// A sudden, lasting slow-down (another job takes part of the GPU, a clock the telemetry
/// does not show) is learned by the fits over tens of samples, and meanwhile they mix data
/// from before and after it: plans are made with latencies that are too short, and the
/// split between clocks can come out anywhere (a CPU part learned as nothing, and the CPU
/// then planned at its minimum). When this many learned samples in a row all ran slower
/// than the constraints predicted them by more than the optimiser's margin (the model
/// error plans are made to absorb), or two in a row by more than twice the margin, every
/// observed fit of the app is scaled by the least of those ratios, its split between
/// clocks kept and its history dropped as out of date, and the optimiser runs at once.
///
/// Where the app's own latencies spread wider than that margin, the margin is the app's
/// spread level instead (the margin its plans get for it, `AppEntry::spread_level`),
/// unless the measured demand of a domain the app runs on has just risen (see
/// [`DEMAND_RISE`]). Jitter of 10 % puts three samples in a row 10 % over their prediction
/// every few seconds: each such run scaled every fit up by 10-35 %, a plan raised the
/// clocks, and the next samples took them back down (generated seed 147: 10.7 GPU changes
/// a minute, 6.1 with the spread level). Another program's job on the GPU is a slow-down
/// the busy counters show: with them the margin stays the optimiser's, so a moderate one is
/// still caught in three samples (generated seed 170, a third of the GPU taken: back within
/// 5 s, where the spread level alone took 12 s).
const BIAS_SAMPLES: u32 = 3;
/// An inference in flight overruns once it has run past its deadline bound
/// (`min(deadline, period)` less `keep_margin`, the bound plans are held to) and past its
/// prediction at the clocks in force by more than twice the optimiser's margin (the
/// lasting slow-down check's "sudden" ratio), so that neither a plan with a thin margin
/// nor an app with slack to spare is boosted by its own expected latency. A lasting slow-down is otherwise
/// seen only when inferences finish slow, one to two inferences late; this raises the
/// clocks while the first slow one still has work to do. An overrunning inference still
/// running after this many times its bound is taken as stalled (an app blocked between
/// its marks, or one that died and is not yet unregistered): clocks cannot help it.
const OVERRUN_GIVE_UP: f64 = 4.0;
/// The band between the adoption margin and `keep_margin` holds a plan through the model's
/// noise; it must not hold one that measurably misses. Once an app the plan serves has
/// missed its deadline at least twice since the plan was adopted, and more often than this
/// fraction of its inferences, the plan in force is judged with the full margin and without
/// the measured-meeting exception, so a plan the fits now predict too close to the deadline
/// is replaced at the next periodic run.
const MISS_RATE: f64 = 0.005;

/// Apps that share the GPU wait for each other, and how long depends on when their frames
/// arrive, which the optimiser's `u / (1 - u)` budget only estimates from latency models
/// that are themselves learned net of an estimated wait. Near saturation a small error
/// there is the difference between short waits and queues that grow without bound, and a
/// plan made from the models alone can sit there with every app missing. So, while two or
/// more apps use the GPU and one of them measurably misses (its miss margin is widened,
/// see [`MISS_MARGIN_STEP`], until a long clean run narrows it back), the GPU is never
/// planned below the clock at which its measured demand (busy time at the clock in force,
/// scaled to the highest clock, averaged over [`DEMAND_WINDOW`]) would keep it busy more
/// than this fraction of the time.
/// The measurement needs no model, and it holds at any clock: raising the clock lowers the
/// busy share in proportion, so the bound settles where the demand is.
const SHARED_GPU_UTIL: f64 = 0.8;
/// A CPU domain's CPUs are shared with every other program on the machine, which the
/// apps' latency models do not see. A plan that runs a cluster so slow that its CPUs are
/// busy all the time starves them and the apps' own threads alike: in a generated scenario
/// with 2.5 cores of other programs' tasks, plans held two clusters at their lowest clocks
/// (the apps' models had learned their CPU part as nothing) and five apps missed every
/// frame for two minutes. So no plan runs a CPU domain below the clock at which its
/// measured demand would keep its CPUs busy more than this fraction of the time. Like
/// schedutil's headroom, it keeps a plan from filling a cluster that other programs
/// already keep busy.
///
/// The demand is the other programs' busy time: the domain's busy time at the clock in
/// force less the apps' own threads' (see `own_threads`), over the CPU time those leave
/// free, scaled to the highest clock and averaged (see [`DEMAND_WINDOW`],
/// [`CPU_DEMAND_FALL`]). The apps' threads are the plans' to count (their latency models
/// and the capacity test), and a thread that spins while its GPU part runs is busy
/// whatever the clock: counted as demand that a faster clock gets done sooner, its busy
/// time raised the bound with every clock the plan set, up to the highest (R1: three apps
/// on one cluster held it at 1907 MHz for the whole run, 1213.3 J; counted apart, 1497 MHz
/// and 1124.7 J, no frame missed).
const CPU_BUSY_UTIL: f64 = 0.8;
/// Until a CPU domain's demand has been measured for [`DEMAND_WINDOW`] (from the first
/// tick it reported busy time; before any, and for the GPU and memory, for that long
/// after the manager's first tick), no plan runs it below this fraction of its highest
/// clock. The first plans are made from the apps' declared latencies before any demand is
/// known, and ran the clusters at 115-729 MHz under 2.5 cores of other programs' tasks
/// and five apps spinning on their CPUs: frames queued for 2 s behind them (generated
/// seed 124: 31 frames of the first 5 s missed, 2.02 % of all, against none and 0.67 %
/// with the bound). The samples learned at these first clocks also anchor how far later
/// plans explore down (see [`EXPLORE_STEP`]): at the highest clock instead of half, the
/// fits learned there kept every clock high for the rest of the run.
const CPU_WARM_UP: f64 = 0.5;
/// The default of `Config::gpu_floor`. The latency fits are linear in `f_max / f` and
/// learned near the clocks the plans put the apps at; the waits of apps that share the
/// GPU grow faster than that as its clock falls, and the plans that went below half the
/// GPU's or the memory's highest clock were the ones whose predictions failed: frames
/// collided, a plan a step up followed, and the GPU went down and up again. Over three
/// sets of 200 generated scenarios (seeds 1-200, 201-400 and 401-600), the bound took
/// those within the oracle's misses + 1 point from 184, 182 and 183 to 191, 183 and 187,
/// those restless in steady phases from 24, 35 and 38 to 20, 26 and 31, and those slow
/// to come back from 14, 14 and 17 to 13, 14 and 15, for median energy 1.059, 1.063 and
/// 1.062 of the oracle's against 1.063, 1.063 and 1.064: the oracle itself seldom finds
/// it worth going lower. A power cap comes first: under one, the bound is lifted where the
/// plan made with it would serve fewer apps (see `Manager::problem_under_cap`).
const GPU_FLOOR: f64 = 0.5;
/// A planned CPU domain whose online CPUs were busy this fraction of the time for
/// `Config::saturated_ticks` ticks in a row, while an app that runs there missed a
/// deadline under the plan in force (or has an inference stalled, see [`STALLED`]), is
/// saturated: its busy time says only that the
/// demand is at least the clock in force, and the bound of [`CPU_BUSY_UTIL`] would rise
/// by a quarter per re-plan, each a dwell time apart. Other programs' tasks arriving on
/// clusters a plan ran slow kept every app missing for seconds, frames queueing behind
/// them (generated seed 6: all four apps at 1.6-1.8 s for 5 s). So the domain's demand is
/// taken as twice what it measured, and a plan is made at once; each further saturation
/// doubles it again. An app's own thread spinning while it waits for the GPU keeps a CPU
/// busy too, and is no queue: hence the missed deadline, or an inference of an app there
/// in flight for [`STALLED`] times its deadline. A miss is known only once its inference
/// ends: with five apps spinning on three clusters at 268-345 MHz (generated seed 360),
/// frames stalled for 3 s while each new plan started the count of misses over.
const CPU_SATURATED: f64 = 0.98;
/// The GPU is saturated like a CPU cluster (see [`CPU_SATURATED`]): busy
/// [`CPU_SATURATED`] of the time for `Config::saturated_ticks` ticks in a row while an app
/// that uses it missed a deadline under the plan in force (or has an inference stalled),
/// and planned below its highest allowed clock. Its busy time says only that the work
/// asked of it is at least the clock in force; that is taken as its demand, a plan is made
/// at once (from the fits as they are), and the plans that follow within this long are
/// held to the GPU and memory floor of [`SHARED_GPU_UTIL`] (a quarter over the clock it
/// was saturated at, or the demand measured since), for one app as for several, whether
/// or not an app has widened its margin yet. Another program's job
/// on the GPU shows there first: the apps' samples come in slow one by one, three in a row
/// make a slow-down, and meanwhile their threads, spinning while their GPU parts wait,
/// fill the CPUs, and a plan made for that saturation raised a CPU cluster and lowered the
/// GPU. Generated seed 1100 (60 s, four apps, a job taking 46 % of the GPU at 10.6 s)
/// missed 2.21 % of its frames against the oracle's 0.65 % (0.52 % with this rule; seed
/// 1024, 1.59 % against none, 0.43 %). Off by default (`Config::raise_saturated_gpu`): on
/// the generated seeds 1-200 of docs/evaluation.md it made two scenarios slow to come
/// back and three more restless. Doubled like a CPU cluster's, the demand put the GPU at
/// its highest clock at each saturation, and the median energy of seeds 401-600 went to
/// 1.051 times the oracle's; not counting a CPU cluster as saturated while the GPU is
/// (the spinning threads' busy time) lost seeds 227, 255 and 308.
const GPU_SATURATED_HOLD: Nanos = Nanos::from_millis(2000);
/// An inference in flight this many times its deadline bound (`min(deadline, period)`)
/// has stalled (see [`CPU_SATURATED`]). Past the deadline alone, the rule raised the
/// clusters for every frame a collision on the GPU made late: a domain changed clock over
/// 10 times a minute in steady phases in 25 of 200 generated scenarios, against 14 at
/// twice, and median energy went from 1.055 to 1.063 of the oracle's.
const STALLED: f64 = 2.0;
/// Other programs' tasks that arrive in bursts on the CPU clusters no app runs on find them
/// at their lowest clocks, since schedutil lowered them while the burst was off, and spill
/// onto the apps' CPUs for the few hundred milliseconds schedutil takes to raise them: an
/// app there shares its CPU and misses a frame or two at every burst (generated seed 36:
/// 8 % of its frames, against the oracle's 0.2 %, with every cluster at 1.1 GHz). So when a
/// CPU domain an app runs on is saturated while that app missed within [`SPILL_RECENT`],
/// the clusters no app runs on are not lowered for this long, doubled at each further
/// spill within this long of the last hold's end, up to [`LOWER_HOLD_GROWTH`] times as
/// long: idle, a cluster at a higher clock costs little, and the next burst finds it fast.
/// Unlike the other holds it outlasts a change of the apps or the hardware: the bursts
/// come from other programs, which such a change does not stop. A hold of 10 s ran out
/// between spills of bursts that spill now and then (seed 36: on for 0.9 s every 2.9 s,
/// spilling every 13-20 s), and each spill after it cost a burst of misses: over the 200
/// generated scenarios of seeds 1-200, 30 s took those slow to come back after a change
/// from 12 to 9 (seeds 36, 116, 157 and 199 back; 108 a point over the oracle's misses),
/// the mean miss from 3.31 to 3.29 %, for median energy 1.064 of the oracle's against
/// 1.062.
///
/// While a hold runs, a tick in which a held cluster is saturated ([`CPU_SATURATED`] over
/// its online CPUs) renews it for its length from then: the bursts that spilled still
/// come, and fill the clusters held for them. A hold that ran out between bursts still
/// coming let those clusters fall to their lowest clocks again, and the next burst spilled
/// (seed 36: 30 s after the first spill, both apps missed frames for half a second, which
/// made the scenario 17 s slow to come back after the second app's arrival). The hold ends
/// its length after the last such burst. A cluster half busy renewed it as well, and held
/// clusters at their clocks through light loads that do not spill (seed 122: 1.7 % more
/// energy, against 0.5 %).
const SPILL_HOLD: Nanos = Nanos::from_millis(30_000);
const SPILL_RECENT: Nanos = Nanos::from_millis(1_000);
/// A spill hold keeps the clusters it holds at this share of their highest clock or more
/// (or at their clock, where that is lower), not at the clock they ran when it began: the
/// spills came from clusters at their lowest clocks (115 MHz on the Xavier NX, a sixteenth
/// of the highest), where a burst's tasks take sixteen times as long; at half the highest
/// they take twice as long, and schedutil raises the cluster within the burst. Held where
/// the burst had raised them (most often the highest clock), idle clusters cost power
/// for as long as the hold lasted, the longer since a hold lasts while the bursts come:
/// over the generated scenarios of seeds 201-400 and 401-600 the floor takes 115 J and
/// 138 J off the 200 runs, the mean miss from 2.809 to 2.805 % and 2.843 to 2.832 %, and
/// seed 45 (a steady stream of other programs' tasks beside the bursts) from 739.2 J to
/// 715.5 J.
const SPILL_FLOOR: f64 = 0.5;
/// Other programs' tasks that start on the CPU clusters no app runs on find them at their
/// lowest clock, and schedutil raises them only as the tasks' utilisation climbs: on the
/// simulated Xavier NX, from 115 to 1805 MHz in half a second, while the tasks queued there
/// spill onto the apps' CPUs. The spill hold ([`SPILL_HOLD`]) spares the bursts that follow
/// a spill that made an app miss, but not the first: generated seed 1031 at 60 s (one app
/// at 21 fps with a 50-ms deadline, a burst of 2.5 CPUs' worth of tasks at 27.4 s) missed
/// every frame for a second, 1.90 % of the run against the oracle's none. So a free
/// cluster whose online CPUs were busy [`CPU_SATURATED`] of the time for this many ticks in
/// a row at a clock under [`SPILL_FLOOR`] of its highest, while an app runs on the CPUs,
/// is raised to that share at once, and the free clusters are held as for a spill
/// (`Config::raise_free_clusters`): seed 1031 misses 0.87 %. After two ticks it missed
/// 0.32 %, but the short peaks of a steady stream of tasks set it off too, and the
/// clusters held for them spent power that plans under a later power cap would give the
/// apps (generated seed 308: 0.72 % missed at five ticks, 1.81 % at two; docs/evaluation.md
/// has both sweeps).
const FREE_SATURATED_TICKS: u32 = 5;

/// The time constant of the averaged GPU and CPU demand.
const DEMAND_WINDOW: Nanos = Nanos::from_millis(1000);
/// A CPU domain's averaged demand rises with [`DEMAND_WINDOW`] but falls with this time
/// constant, so that other programs' load that comes in bursts is planned for between the
/// bursts too, not only while one lasts. Without the apps' own threads in the demand (see
/// `own_threads`), bursts of 0.5 s every 2-3 s (generated seed 217) found the clusters
/// lowered to 268-729 MHz between them, and every app missed at each burst. Simulated
/// (`dnngov-sim sweep --count 200 --first-seed 201`, at `2ec0d96`, which took each
/// domain's window from its own record): at 5 s, 189 scenarios within the oracle's
/// misses plus 1 point (185 before), 9 slow to come back (11), 19 restless (23). At 3 s:
/// 182, 14, 24; at 8 s: 189, 12, 23 with more energy; at 15 s: 189, 8, 27, median energy
/// 1.072 of the oracle's.
const CPU_DEMAND_FALL: Nanos = Nanos::from_millis(5000);

/// The time constant of a domain's demand baseline (see [`Demand::baseline`]).
const DEMAND_BASELINE: Nanos = Nanos::from_millis(10_000);
/// A domain whose averaged demand is this much over its baseline (a share of the domain at
/// its highest clock) has more work than before: another program's job on the GPU, a CPU
/// load starting, or an app given a heavier sub-network. The apps that run on it are
/// judged for a slow-down by the optimiser's margin alone (see [`BIAS_SAMPLES`]). The rise
/// shows within a second or two of the new work and fades as the baseline follows it, in
/// 10-20 s.
const DEMAND_RISE: f64 = 0.1;

/// What [`Manager::track_demand`] found at a tick: a planned GPU or CPU domain below the
/// bound its measured demand sets, and a saturated GPU or CPU domain.
#[derive(Clone, Copy, Debug, Default)]
struct DemandEvents {
    gpu_under: bool,
    cpu_under: bool,
    cpu_saturated: bool,
    gpu_saturated: bool,
}

/// A GPU or CPU domain's averaged demand (see [`SHARED_GPU_UTIL`], [`CPU_BUSY_UTIL`]).
#[derive(Clone, Copy, Debug)]
struct Demand {
    domain: u32,
    kind: DomainKind,
    /// Busy share (over its CPUs, for a CPU domain) at the clock in force, scaled to the
    /// domain's highest clock.
    demand: f64,
    at: Nanos,
    /// When it was first measured.
    since: Nanos,
    /// `demand` averaged over [`DEMAND_BASELINE`]: what it was before a rise.
    baseline: f64,
    /// Consecutive ticks its CPUs were all busy (see [`CPU_SATURATED`]).
    saturated: u32,
}

/// Under a power cap, the time constant of the busy share that a plan's predicted power
/// counts for the domains it does not set (see [`DomainOption::util`]), which the base
/// governor runs at what the moment asks (`Config::cap_load_window`); their clock is taken
/// as it is (averaged too, it lagged a clock the base governor had just lowered, and a
/// cap that the plan in force kept looked broken). A bursty CPU load moves the busy share
/// from one tick to the next: taken as it was at the tick of each search, it moved a
/// plan's predicted power by up to 5 W from one re-plan to the next, and a plan at the
/// cap's edge was predicted to break half a second after it was adopted, again and again.
/// Generated seed 530 (one app under a 7.6-W cap beside a 46 % GPU background share and a
/// bursty CPU load): a re-plan every 0.5 s for 22 s, the GPU clock moved at each between
/// 701 and 1109 MHz (13 changes in the 6.7 s judged steady); averaged over 2 s, the plans
/// hold. Averaged over 1 s (and everywhere), 454 (a 6.1-W cap) stayed restless. Without a
/// cap the level of that power matters little (plans are compared with each other) and
/// it is taken as measured: averaged there too, 20 of seeds 1-200 moved, one (38) to
/// 2.58 % missed against the oracle's 0.79 %.
const CAP_LOAD_WINDOW: Nanos = Nanos::from_millis(2000);

/// A domain's busy share, averaged (see [`CAP_LOAD_WINDOW`]).
#[derive(Clone, Copy, Debug)]
struct AveragedLoad {
    domain: u32,
    util: f64,
    at: Nanos,
}

/// A domain seen at a new frequency: from when (see [`Manager::track_clocks`]), which, and
/// the frequency it had before.
#[derive(Clone, Copy, Debug)]
struct ClockChange {
    at: Nanos,
    domain: u32,
    from: Hz,
}

/// How long frequency changes are remembered (see [`ran_at`]); an inference that began
/// earlier is labelled with the clocks of the snapshot that reports it.
const CLOCK_HISTORY: Nanos = Nanos::from_millis(5000);
/// At most this many are kept; the oldest go first.
const CLOCK_CHANGES_MAX: usize = 256;

/// Plans keep each app's predicted latency this many standard deviations of its measured
/// spread under the deadline, where that is more than the configured margin: about 1 % of
/// frames over, for a spread that is normal. The fits predict the mean; an app whose
/// frames scatter by 7-10 % (a busy board, input-dependent work) misses a frame in seven
/// to ten at a plan that puts the mean 10 % under the deadline.
const SPREAD_QUANTILE: f64 = 2.33;
/// Weight of a new pair in the spread's average (about the last 30), how many pairs are
/// needed before the spread counts, and the largest relative difference one pair may add
/// (a one-off is not spread).
const SPREAD_WEIGHT: f64 = 1.0 / 30.0;
const SPREAD_MIN_SAMPLES: u32 = 20;
/// The spread's margin moves in steps of this, up at once and down only once the spread
/// is well under the step in force: each step is a new plan, and a margin that follows the
/// estimate's noise re-plans (and switches sub-networks) on every sample.
const SPREAD_STEP: f64 = 0.05;
const SPREAD_CLIP: f64 = 0.5;

/// Plans lower an app's clocks at most this factor (in `f_max / f`) beyond the slowest
/// clocks its learned samples ran at and met the deadline at, per device. The fits are
/// linear in the clocks and learned near where the plans put them: a coefficient that
/// noise or contention pushed to nothing predicts that the lowest clock costs nothing, and
/// an unbounded plan goes straight there (the memory clock from 1600 to 204 MHz, a frame
/// then taking five times its deadline). Bounded, a plan explores lower clocks a step at
/// a time, each step learned before the next.
///
/// The step was 2, and plans still went too far on fits extrapolated from one operating
/// point: plans that lowered the GPU of four apps at 2-3 frames/s from 1109 to 599-701 MHz
/// were taken back by a slow-down within a second, 11 GPU changes a minute in steady
/// phases (generated seed 91; 7.6 at 1.5). At 1.5 each lowering is a table step or a few,
/// and its first frames say whether the fits hold there before the next one. Over three
/// sets of 200 generated scenarios (seeds 1-600), the GPUs over 10 changes a minute in
/// steady phases went from 8 scenarios to 3, those within the oracle's misses + 1 point
/// from 584 to 586, and the median energy from 1.0495, 1.0495 and 1.049 times the
/// oracle's to 1.0465, 1.047 and 1.0485. A step of 1.3 or 1.4 did as well on the sweeps but
/// spent more on S3 and R3 (docs/evaluation.md).
const EXPLORE_STEP: f64 = 1.5;
/// Under a power cap that no plan within [`EXPLORE_STEP`] keeps with as many apps served,
/// plans may lower the clocks this far below the explored ground instead: the cap comes
/// first (see [`Manager::problem_under_cap`]).
const CAP_EXPLORE_STEP: f64 = 2.0;

/// Plans see the sub-networks above the one an app runs this much slower than predicted:
/// hysteresis between going up and staying. A plan that takes an app up on a prediction
/// right at its margin finds, as often as not, that the larger sub-network misses, and the
/// app comes back down within a second or two; between two such sub-networks it stays
/// where it is.
const UP_MARGIN: f64 = 0.1;

/// After an app steps down from a sub-network (its controller on misses, a plan, or a
/// plan that no longer serves it), no plan or step-up takes it back to that sub-network or
/// above for this long, or until the apps or the hardware change. The model
/// that made the plan predicts the mean; frames that missed at that sub-network are what
/// was measured, and a plan that goes straight back finds the same misses: the app
/// switches back and forth every few seconds, paying for each switch.
const RETURN_HOLD: Nanos = Nanos::from_millis(10_000);

/// An upgrade that a plan takes back within this long failed: no upgrade takes the app to
/// that sub-network or above for [`UPGRADE_BACKOFF`], doubled at each further failure up
/// to [`UPGRADE_BACKOFF_MAX`], or until the apps or the hardware change. A fit for a
/// sub-network the app has not run borrows a sibling's, and an upgrade on it can be wrong
/// however much margin it is planned with; retried at every periodic run past the dwell,
/// it made an app switch up and back down every few seconds.
const UPGRADE_TRIAL: Nanos = Nanos::from_millis(10_000);

const UPGRADE_BACKOFF: Nanos = Nanos::from_millis(60_000);
const UPGRADE_BACKOFF_MAX: Nanos = Nanos::from_millis(240_000);

/// A plan that lowers a domain's clock, followed within this long by one that raises it
/// again, lowered it too far: the fits that made it were off by more than the margin at
/// the lower clock. For `Config::lower_hold`, doubled at each further failure up to
/// [`LOWER_HOLD_GROWTH`] times as long, or until the apps or the hardware change, a
/// re-plan keeps that domain at the clock in force wherever that still meets its
/// constraints, whatever it saves to lower it (see [`Manager::keep_clocks`]). Without it,
/// plans made as the fits of apps sharing the GPU moved took the GPU a table entry down
/// and back up every second or two.
const LOWER_TRIAL: Nanos = Nanos::from_millis(5_000);
const LOWER_HOLD_GROWTH: u64 = 8;

/// A plan adopted because it saves power is on trial this long: a second inference of an
/// app it serves that begins under it and misses its deadline (or is still running past
/// it) brings back the plan it replaced at once ([`PlanTrigger::SavingFailed`]); the
/// domains it lowered are then held as after any failed lowering (see [`LOWER_TRIAL`]).
/// Before, the misses were learned as a slow-down of the app instead (generated seed 97:
/// under a saving 5 s after a GPU job ended, an app at 18 frames/s ran 34 % over its fits;
/// they were scaled up by that, the next plan left the app unserved, and it was 5.5 s
/// after the GPU job's end before its misses were back to the oracle's).
pub const SAVING_TRIAL: Nanos = Nanos::from_millis(3_000);
/// Misses under a saving on trial that undo it. One made the trial a bet on jitter: in the
/// generated scenarios of seeds 1-600 it brought two more back within 5 s but made six
/// restless, each undone saving holding the clocks up, and the median energy of seeds
/// 401-600 went to 1.052 times the oracle's.
pub const SAVING_MISSES: u32 = 2;

/// A domain's last lowering by a plan, and the hold that follows one that failed (see
/// [`LOWER_TRIAL`]).
#[derive(Clone, Copy, Debug, Default)]
struct ClockTrial {
    /// When a plan last lowered the domain.
    lowered: Option<Nanos>,
    /// Until when the domain is not lowered from the clock in force.
    hold_until: Option<Nanos>,
    backoff: Nanos,
}

impl ClockTrial {
    /// The last lowering failed at `now`: the domain is held for `first` (`Config::lower_hold`),
    /// or twice the last hold when one was set since the apps or the hardware last changed
    /// (they clear it; the domain is lowered only once a hold is over, so this failure is a
    /// repeat), up to [`LOWER_HOLD_GROWTH`] times `first`.
    fn failed(&mut self, now: Nanos, first: Nanos) {
        self.backoff = if self.hold_until.is_some() {
            Nanos(self.backoff.0.saturating_mul(2))
                .min(Nanos(first.0.saturating_mul(LOWER_HOLD_GROWTH)))
        } else {
            first
        };
        self.hold_until = Some(now.saturating_add(self.backoff));
    }
}

/// The margin's feedback from measured misses: once an app has missed (or fallen behind
/// its frames) at least [`MISS_MARGIN_MISSES`] times and on more than
/// [`MISS_MARGIN_RATE`] of its inferences since the margin last moved, its margin widens
/// by this step, up to [`MAX_SPREAD_MARGIN`] above none, and a new plan is made; after
/// [`MISS_MARGIN_CLEAN`] inferences without a miss it narrows by a step. Whatever the
/// fits get wrong (a wait for another app on the GPU longer than budgeted, a spread, a
/// queue), the misses measure it, and the margin settles where few frames are late.
const MISS_MARGIN_STEP: f64 = 0.05;
const MISS_MARGIN_MISSES: u32 = 3;
const MISS_MARGIN_RATE: f64 = 0.02;
const MISS_MARGIN_CLEAN: u32 = 300;

/// Everything about the hardware whose change calls for a new plan.
#[derive(Clone, Debug, PartialEq)]
struct HardwareKey {
    /// The domains with their moving parts (current frequency, busy counter) blanked.
    domains: Vec<FreqDomain>,
    online: Vec<(u32, bool)>,
    caps: crate::snapshot::Caps,
}

impl HardwareKey {
    /// Whether a snapshot shows the same hardware (what [`Manager::track_hardware`] would
    /// build from it equals this key), without building it.
    fn matches(&self, snap: &Snapshot) -> bool {
        self.domains.len() == snap.domains.len()
            && self.domains.iter().zip(&snap.domains).all(|(k, d)| {
                k.id == d.id
                    && k.kind == d.kind
                    && k.table == d.table
                    && k.max_limit == d.max_limit
                    && k.cpus == d.cpus
            })
            && self.online.len() == snap.cpus.len()
            && self
                .online
                .iter()
                .zip(&snap.cpus)
                .all(|(k, c)| k.0 == c.cpu && k.1 == c.online)
            && self.caps == snap.caps
    }
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
    /// Each domain's frequency at the previous tick and that tick's time, and the changes
    /// seen since, for the last [`CLOCK_HISTORY`] (see [`ran_at`]).
    clocks: Vec<(u32, Hz)>,
    previous_tick: Option<Nanos>,
    clock_changes: VecDeque<ClockChange>,
    /// The latest period in which some app was boosted (see [`Boost`]): from the tick that
    /// first decided a boost to the first tick that decided none, `None` while it lasts.
    boosted: Option<(Nanos, Option<Nanos>)>,
    /// Buffers reused from tick to tick, so that a tick allocates only its decision.
    ids: Vec<u32>,
    settled: Vec<Settled>,
    loads: Vec<DomainLoad>,
    base_choices: Vec<BaseChoice>,
    /// The GPU's and each CPU domain's measured demand, averaged over about
    /// [`DEMAND_WINDOW`] (see [`SHARED_GPU_UTIL`], [`CPU_BUSY_UTIL`]).
    demand: Vec<Demand>,
    /// Per domain of the snapshot, the CPU time the apps' own threads held in the last tick
    /// (see `own_threads`); kept to be reused.
    own: Vec<f64>,
    /// Whether the plan in force runs a CPU domain under its bound (see [`CPU_BUSY_UTIL`]):
    /// it is replaced at the next periodic run after the dwell time.
    under_cpu_floor: bool,
    /// When the GPU was last found saturated, and whether the plans of this tick are held
    /// to its floor for it: saturated before this tick, within [`GPU_SATURATED_HOLD`].
    gpu_saturated_at: Option<Nanos>,
    gpu_saturation_held: bool,
    /// When the last upgrade was looked for (see [`Manager::upgrade`]).
    upgrade_checked: Option<Nanos>,
    /// Per planned domain, its last lowering and the hold after a failed one.
    clock_trials: BTreeMap<u32, ClockTrial>,
    /// The last hold on the CPU clusters no app runs on, until when, and its length (see
    /// [`SPILL_HOLD`]).
    spill: Option<(Nanos, Nanos)>,
    /// The first tick's time (see [`CPU_WARM_UP`]).
    started: Option<Nanos>,
    /// The plan a saving replaced while the saving is on trial (see [`SAVING_TRIAL`]), and
    /// the inferences under the saving that finished over their deadline.
    saving: Option<Plan>,
    saving_missed: u32,
    /// Each domain's busy share, averaged (see [`CAP_LOAD_WINDOW`]).
    averaged_loads: Vec<AveragedLoad>,
}

/// A sample ready to learn: (sub-network, clocks, latency less the estimated wait for
/// other apps on the GPU, that wait as a fraction of the latency, what it is good for).
type Settled = (usize, ClockRatios, f64, f64, Use);

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
            clocks: Vec::new(),
            previous_tick: None,
            clock_changes: VecDeque::with_capacity(CLOCK_CHANGES_MAX),
            boosted: None,
            ids: Vec::new(),
            settled: Vec::new(),
            loads: Vec::new(),
            base_choices: Vec::new(),
            demand: Vec::new(),
            own: Vec::new(),
            under_cpu_floor: false,
            gpu_saturated_at: None,
            gpu_saturation_held: false,
            upgrade_checked: None,
            clock_trials: BTreeMap::new(),
            saving: None,
            saving_missed: 0,
            spill: None,
            started: None,
            averaged_loads: Vec::new(),
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
        let mut base = std::mem::take(&mut self.base_choices);
        self.base.update_into(snap, &mut base);
        let decision = self.step_with(snap, &base);
        self.base_choices = base;
        decision
    }

    fn step_with(&mut self, snap: &Snapshot, base: &[BaseChoice]) -> Decision {
        self.started.get_or_insert(snap.now);
        let last_tick = self.previous_tick;
        self.track_clocks(snap);
        let hardware_changed = self.track_hardware(snap);
        let apps_changed = self.track_apps(snap);
        let changed = hardware_changed | apps_changed;
        let learned = self.learn(snap, base);
        let mut event = changed | learned.is_some();
        if changed {
            // What made an upgrade or a lowering fail, or an app leave a sub-network, may
            // be gone (see `UPGRADE_TRIAL`, `LOWER_TRIAL`, `RETURN_HOLD`).
            for e in self.apps.values_mut() {
                e.upgrade_block = None;
                e.left = None;
                e.held_back = None;
            }
            for t in self.clock_trials.values_mut() {
                t.hold_until = None;
                t.lowered = None;
            }
        }
        self.track_overruns(snap);
        self.release_held_back(snap);
        self.renew_spill(snap, base);
        let demand = self.track_demand(snap, base, last_tick);
        self.average_loads(snap, base);
        event |= demand.gpu_under | demand.gpu_saturated | demand.cpu_saturated;
        self.under_cpu_floor = demand.cpu_under;
        // What calls for a plan at once, the first cause in this order.
        let cause = if self.plan.is_none() {
            Some(PlanTrigger::First)
        } else if hardware_changed {
            Some(PlanTrigger::HardwareChanged)
        } else if apps_changed {
            Some(PlanTrigger::AppsChanged)
        } else if learned.is_some() {
            learned
        } else if demand.gpu_saturated {
            Some(PlanTrigger::GpuSaturated)
        } else if demand.gpu_under {
            Some(PlanTrigger::GpuBelowDemand)
        } else if demand.cpu_saturated {
            Some(PlanTrigger::CpuSaturated)
        } else {
            None
        };

        let mut optimised = false;
        let mut trigger = None;
        let due = self
            .last_optimised
            .is_none_or(|t| snap.now.saturating_sub(t) >= self.cfg.reoptimise_every);
        if self.saving.is_some()
            && (changed || snap.now.saturating_sub(self.plan_since) >= SAVING_TRIAL)
        {
            self.saving = None;
        }
        let failed_saving = self.failed_saving(snap);
        let failed_saving = failed_saving.and_then(|(app, finished, running)| {
            self.saving_missed += finished;
            (self.saving_missed + u32::from(running) >= SAVING_MISSES).then_some(app)
        });
        if self.apps.is_empty() {
            self.plan = None;
        } else if let Some(app) = failed_saving {
            // The plan before the saving held the deadlines; a plan made now would come
            // from the same fits that judged the saving safe.
            let before = self.saving.take().expect("a saving on trial");
            self.adopt(snap, before);
            trigger = Some(PlanTrigger::SavingFailed { app });
        } else if event || due {
            optimised = true;
            self.last_optimised = Some(snap.now);
            let slowed = match cause {
                Some(PlanTrigger::SlowDown { app, .. }) if event => Some(app),
                _ => None,
            };
            let problem = self.problem_under_cap(snap, base, slowed);
            let least = self.plan_without_upgrades(snap.now, &problem, apps_changed);
            // Power an upgrade is weighed against: the sub-networks in force at their
            // least-power clocks, not at the clocks kept from the plan in force.
            let least_power = least.power;
            // Clocks are kept through the noise of learning (see `keep_clocks`), not
            // through a change of the apps' targets or the hardware.
            let new = if changed {
                least
            } else {
                self.keep_clocks(snap.now, &problem, least)
            };
            if let Some(why) = cause
                .filter(|_| event)
                .or_else(|| self.should_replace(snap, &problem, &new))
            {
                let before = self.adopt(snap, new);
                if why == PlanTrigger::SavesPower {
                    self.saving = before;
                }
                trigger = Some(why);
            } else if let Some(up) = self
                .upgrade(snap.now, &problem)
                .filter(|up| self.upgrade_affordable(up, least_power))
                .map(|up| self.keep_clocks(snap.now, &problem, up))
                .filter(|up| self.should_replace(snap, &problem, up).is_some())
            {
                self.adopt(snap, up);
                trigger = Some(PlanTrigger::Upgrade);
            }
        }
        let decision = self.assemble(snap, base, optimised, trigger);
        let boosting = decision
            .domains
            .iter()
            .any(|d| matches!(d.reason, FreqReason::Overrun { .. }));
        self.boosted = match (self.boosted, boosting) {
            (Some((from, None)), true) => Some((from, None)),
            (_, true) => Some((snap.now, None)),
            (Some((from, None)), false) => Some((from, Some(snap.now))),
            (kept, false) => kept,
        };
        decision
    }

    /// Averages each domain's busy share over about `cap_load_window` (see
    /// [`CAP_LOAD_WINDOW`]).
    fn average_loads(&mut self, snap: &Snapshot, base: &[BaseChoice]) {
        let window = self.cfg.cap_load_window.max(Nanos(1));
        for (d, b) in snap.domains.iter().zip(base) {
            match self.averaged_loads.iter_mut().find(|l| l.domain == d.id) {
                Some(l) => {
                    let tick = snap.now.saturating_sub(l.at);
                    let w = (tick.0 as f64 / window.0 as f64).clamp(0.0, 1.0);
                    l.util += w * (b.mean_load - l.util);
                    l.at = snap.now;
                }
                None => self.averaged_loads.push(AveragedLoad {
                    domain: d.id,
                    util: b.mean_load,
                    at: snap.now,
                }),
            }
        }
    }

    /// Averages the GPU's and each CPU domain's measured demand, and says whether the plan
    /// in force runs the GPU, and whether it runs a CPU domain, more than a table step
    /// below the bound that demand sets (see [`SHARED_GPU_UTIL`], [`CPU_BUSY_UTIL`]).
    /// `last_tick`: the previous tick's time, the start of the window the loads measure.
    fn track_demand(
        &mut self,
        snap: &Snapshot,
        base: &[BaseChoice],
        last_tick: Option<Nanos>,
    ) -> DemandEvents {
        let mut events = DemandEvents::default();
        self.gpu_saturation_held = self
            .gpu_saturated_at
            .is_some_and(|t| snap.now.saturating_sub(t) < GPU_SATURATED_HOLD);
        self.own.clear();
        self.own.resize(snap.domains.len(), 0.0);
        if let Some(from) = last_tick {
            own_threads(snap, from, &mut self.own);
        }
        for (i, (d, b)) in snap.domains.iter().zip(base).enumerate() {
            let (load, own) = match d.kind {
                DomainKind::Gpu => (b.load, 0.0),
                // Over its online CPUs: with some offline, the rest carry the load.
                DomainKind::Cpu => {
                    let online = snap.online_cpus(d).max(1) as f64;
                    (
                        b.mean_load * d.cpus.len() as f64 / online,
                        self.own[i] / online,
                    )
                }
                DomainKind::Memory => continue,
            };
            if b.reason == FreqReason::NoTelemetry {
                // A GPU without a busy count has no demand to go by; a CPU domain keeps
                // its last one while its CPUs are offline.
                if d.kind == DomainKind::Gpu {
                    self.demand.retain(|x| x.domain != d.id);
                }
                continue;
            }
            // The other programs' share of the CPU time the apps' own threads leave (see
            // `CPU_BUSY_UTIL`).
            let scale = d.cur.as_f64() / d.max_freq().as_f64().max(1.0);
            let demand = (load - own).max(0.0) / (1.0 - own).max(0.25) * scale;
            match self.demand.iter_mut().find(|x| x.domain == d.id) {
                Some(x) => {
                    let tick = snap.now.saturating_sub(x.at);
                    let window = if d.kind == DomainKind::Cpu && demand < x.demand {
                        CPU_DEMAND_FALL
                    } else {
                        DEMAND_WINDOW
                    };
                    let weight = (tick.0 as f64 / window.0 as f64).clamp(0.0, 1.0);
                    x.demand += weight * (demand - x.demand);
                    let slow = (tick.0 as f64 / DEMAND_BASELINE.0 as f64).clamp(0.0, 1.0);
                    x.baseline += slow * (demand - x.baseline);
                    x.at = snap.now;
                }
                None => self.demand.push(Demand {
                    domain: d.id,
                    kind: d.kind,
                    demand,
                    at: snap.now,
                    since: snap.now,
                    baseline: demand,
                    saturated: 0,
                }),
            }
            if d.kind == DomainKind::Cpu && self.cfg.saturated_ticks > 0 {
                events.cpu_saturated |= self.track_saturation(snap, d, load, load * scale);
            }
            if d.kind == DomainKind::Gpu
                && self.cfg.raise_saturated_gpu
                && self.cfg.saturated_ticks > 0
                && self.track_saturation(snap, d, load, load * scale)
            {
                events.gpu_saturated = true;
                self.gpu_saturated_at = Some(snap.now);
            }
            if d.kind == DomainKind::Cpu && self.cfg.raise_free_clusters {
                self.raise_free_cluster(snap, d);
            }
            let floor = match d.kind {
                DomainKind::Gpu => self.shared_gpu_floor(d),
                _ => self.cpu_floor(snap.now, d),
            };
            let Some(floor) = floor else {
                continue;
            };
            let under = self
                .plan
                .as_ref()
                .and_then(|p| p.freqs.iter().find(|f| f.0 == d.id))
                .is_some_and(|f| step_up(d, f.1, 1) < floor && f.1 < snap.allowed_max(d));
            match d.kind {
                DomainKind::Gpu => events.gpu_under |= under,
                _ => events.cpu_under |= under,
            }
        }
        events
    }

    /// Counts the ticks a CPU domain's online CPUs (or the GPU) were all busy (`load`, this
    /// tick's `demand`) and says whether it is saturated (see [`CPU_SATURATED`],
    /// [`GPU_SATURATED_HOLD`]): its demand is then raised, and the count starts over.
    fn track_saturation(
        &mut self,
        snap: &Snapshot,
        d: &FreqDomain,
        load: f64,
        demand: f64,
    ) -> bool {
        let Some(i) = self.demand.iter().position(|x| x.domain == d.id) else {
            return false;
        };
        let x = &mut self.demand[i];
        x.saturated = if load >= CPU_SATURATED {
            x.saturated + 1
        } else {
            0
        };
        if x.saturated < self.cfg.saturated_ticks {
            return false;
        }
        if d.kind == DomainKind::Cpu {
            self.hold_spill(snap, d);
        }
        let planned = self
            .plan
            .as_ref()
            .and_then(|p| p.freqs.iter().find(|f| f.0 == d.id))
            .is_some_and(|f| f.1 < snap.allowed_max(d));
        let late = snap.apps.iter().any(|a| {
            self.apps.get(&a.id).is_some_and(|e| {
                let t = &e.declared.targets;
                let bound = t
                    .deadline
                    .min(t.period.unwrap_or(t.deadline))
                    .as_millis_f64();
                let stalled = a.running_since.is_some_and(|begin| {
                    snap.now.saturating_sub(begin).as_millis_f64() > STALLED * bound
                });
                (e.missed > 0 || stalled) && uses_domain(snap, &e.declared, d)
            })
        });
        if !(planned && late) {
            return false;
        }
        let x = &mut self.demand[i];
        x.saturated = 0;
        // A CPU cluster's demand is doubled; the GPU's is taken as the clock it is
        // saturated at, and its floor is a quarter over that (see `GPU_SATURATED_HOLD`).
        let factor = match d.kind {
            DomainKind::Gpu => 1.0,
            _ => 2.0,
        };
        x.demand = x.demand.max((factor * demand).min(1.0));
        true
    }

    /// Raises `d`, a CPU cluster no app runs on, at once to [`SPILL_FLOOR`] of its highest
    /// clock where its CPUs have been saturated below that for [`FREE_SATURATED_TICKS`]
    /// ticks while an app runs on the CPUs, and holds the free clusters as for a spill.
    /// The ticks are those [`Manager::track_saturation`] counts.
    fn raise_free_cluster(&mut self, snap: &Snapshot, d: &FreqDomain) {
        let floor = Hz((d.max_freq().as_f64() * SPILL_FLOOR) as u64);
        let saturated = self.cpu_demand(d).map_or(0, |x| x.saturated);
        if saturated < FREE_SATURATED_TICKS
            || d.cur >= floor
            || !free_cluster(snap, &self.apps, d)
            || !self.apps.values().any(|e| e.declared.devices.cpu)
        {
            return;
        }
        let length = match self.spill {
            Some((until, length)) if snap.now < until => length,
            _ => SPILL_HOLD,
        };
        let until = snap.now.saturating_add(length);
        self.hold_free_clusters(snap, until, length);
        self.base.raise_to(d.id, until, floor);
    }

    /// `d`, a saturated CPU domain: where an app that runs there missed a deadline in the
    /// last [`SPILL_RECENT`], the CPU clusters no app runs on are not lowered for
    /// [`SPILL_HOLD`] (see there).
    fn hold_spill(&mut self, snap: &Snapshot, d: &FreqDomain) {
        let recent = |e: &AppEntry| {
            e.last_miss
                .is_some_and(|t| snap.now.saturating_sub(t) <= SPILL_RECENT)
        };
        let late = snap.apps.iter().any(|a| {
            self.apps
                .get(&a.id)
                .is_some_and(|e| recent(e) && uses_domain(snap, &e.declared, d))
        });
        if !late {
            return;
        }
        if !snap
            .domains
            .iter()
            .any(|c| free_cluster(snap, &self.apps, c))
        {
            return;
        }
        // A spill soon after the last hold ended doubles the hold; one during it (the
        // bursts outgrow the held clocks) only extends it.
        let length = match self.spill {
            Some((until, length)) if snap.now < until => length,
            Some((until, length)) if snap.now < until.saturating_add(SPILL_HOLD) => {
                Nanos((length.0 * 2).min(SPILL_HOLD.0 * LOWER_HOLD_GROWTH))
            }
            _ => SPILL_HOLD,
        };
        self.hold_free_clusters(snap, snap.now.saturating_add(length), length);
    }

    /// Renews a spill hold that runs while a cluster it holds is saturated (see
    /// [`SPILL_HOLD`]).
    fn renew_spill(&mut self, snap: &Snapshot, base: &[BaseChoice]) {
        let Some((until, length)) = self.spill else {
            return;
        };
        if snap.now >= until {
            return;
        }
        let busy = snap.domains.iter().zip(base).any(|(c, b)| {
            let online = snap.online_cpus(c).max(1) as f64;
            free_cluster(snap, &self.apps, c)
                && b.reason != FreqReason::NoTelemetry
                && b.mean_load * c.cpus.len() as f64 / online >= CPU_SATURATED
        });
        if busy {
            self.hold_free_clusters(snap, snap.now.saturating_add(length), length);
        }
    }

    /// Holds the clusters no app runs on from lowering below [`SPILL_FLOOR`] until `until`
    /// (see [`SPILL_HOLD`]).
    fn hold_free_clusters(&mut self, snap: &Snapshot, until: Nanos, length: Nanos) {
        for c in &snap.domains {
            if free_cluster(snap, &self.apps, c) {
                let floor = Hz((c.max_freq().as_f64() * SPILL_FLOOR) as u64);
                self.base.hold_lowering(c.id, until, floor);
            }
        }
        self.spill = Some((until, length));
    }

    /// A CPU domain's measured demand, if any.
    fn cpu_demand(&self, d: &FreqDomain) -> Option<&Demand> {
        self.demand
            .iter()
            .find(|x| x.domain == d.id && x.kind == DomainKind::Cpu)
    }

    /// While the plan for an app's lasting slow-down is made: the clock in force on each
    /// domain the app runs on (its CPU clusters, and the GPU and the memory clock if it
    /// uses the GPU), as the least the plan may set there. The slow-down's ratio is the
    /// least of the first slow samples', the first of them often run only partly under
    /// the new load, and the clocks in force are those the plan set or, for an app that
    /// overran, the boost's: a plan that lowered them on that ratio could miss on until
    /// the next one (generated seed 448: one app, a job taking half the GPU at 92.1 s; the
    /// plan for a slow-down of 1.52 took the boosted clocks from 1907 to 1421 MHz on the
    /// CPU and 1109 to 1007 on the GPU, was predicted to break 0.5 s later, and 17 frames
    /// missed in a row, 1.92 % of the run against the oracle's none; 0.68 % with this
    /// floor). Lower clocks are left to later plans, made on more samples, and a plan that
    /// lowers them to save power is on trial ([`SAVING_TRIAL`]). Not under a power cap,
    /// which comes first: in generated seed 90 (five apps under a 6.8-W cap) plans held at
    /// the clocks in force were predicted to break every half second, and 4.35 % of frames
    /// missed against 0.61 %.
    fn slow_down_floor(&self, snap: &Snapshot, slowed: Option<u32>, d: &FreqDomain) -> Option<Hz> {
        let e = self.apps.get(&slowed?)?;
        let gpu = e.declared.devices.gpu && d.kind == DomainKind::Memory;
        (gpu || uses_domain(snap, &e.declared, d)).then_some(d.cur)
    }

    /// The least clock a plan may set on any domain while its demand is still being
    /// measured (see [`CPU_WARM_UP`]).
    fn warm_up_floor(&self, now: Nanos, d: &FreqDomain) -> Option<Hz> {
        let measuring = match self.cpu_demand(d) {
            Some(x) => x.at.saturating_sub(x.since) < DEMAND_WINDOW,
            None => self
                .started
                .is_some_and(|t| now.saturating_sub(t) < DEMAND_WINDOW),
        };
        measuring.then(|| Hz((d.max_freq().as_f64() * CPU_WARM_UP) as u64))
    }

    /// The least clock a plan may set on a CPU domain (see [`CPU_BUSY_UTIL`]): the
    /// warm-up floor until its demand is measured.
    fn cpu_floor(&self, now: Nanos, d: &FreqDomain) -> Option<Hz> {
        if d.kind != DomainKind::Cpu {
            return None;
        }
        self.warm_up_floor(now, d).or_else(|| {
            let x = self.cpu_demand(d)?;
            Some(Hz((d.max_freq().as_f64() * x.demand / CPU_BUSY_UTIL) as u64))
        })
    }

    /// The least GPU or memory clock a plan may set while an app uses the GPU (see
    /// [`GPU_FLOOR`]); `floored` false lifts it (under a power cap, see
    /// [`Manager::problem_under_cap`]).
    fn gpu_floor(&self, d: &FreqDomain, floored: bool) -> Option<Hz> {
        let governed = matches!(d.kind, DomainKind::Gpu | DomainKind::Memory);
        let used = self.apps.values().any(|e| e.declared.devices.gpu);
        if !governed || !used || !floored || self.cfg.gpu_floor <= 0.0 {
            return None;
        }
        Some(Hz((d.max_freq().as_f64() * self.cfg.gpu_floor) as u64))
    }

    /// Whether the demand of a domain the app runs on has risen over its baseline (see
    /// [`DEMAND_RISE`]).
    fn demand_rose(&self, snap: &Snapshot, app: &AppState) -> bool {
        self.demand.iter().any(|x| {
            x.demand - x.baseline >= DEMAND_RISE
                && snap
                    .domains
                    .iter()
                    .any(|d| d.id == x.domain && uses_domain(snap, app, d))
        })
    }

    /// The least GPU or memory clock a plan may set while the GPU is shared (see
    /// [`SHARED_GPU_UTIL`]); `None` when it is not shared or nothing is measured. The GPU's
    /// busy time includes its waits for memory, so the memory clock is held to the same
    /// fraction of its highest as the GPU's: lowering it would lengthen the busy time the
    /// bound was measured from.
    fn shared_gpu_floor(&self, d: &FreqDomain) -> Option<Hz> {
        let gpu = self.demand.iter().find(|x| x.kind == DomainKind::Gpu)?;
        let sharing = self
            .apps
            .values()
            .filter(|e| e.declared.devices.gpu)
            .count();
        // Only once the sharing apps measurably miss (see `MISS_MARGIN_STEP`): while they
        // meet their deadlines, a busier GPU costs nothing and saves power.
        let missing = self
            .apps
            .values()
            .any(|e| e.declared.devices.gpu && e.miss_margin > 0.0);
        let governed = d.id == gpu.domain || d.kind == DomainKind::Memory;
        if !governed || ((sharing < 2 || !missing) && !self.gpu_saturation_held) {
            return None;
        }
        Some(Hz(
            (d.max_freq().as_f64() * gpu.demand / SHARED_GPU_UTIL) as u64
        ))
    }

    fn track_hardware(&mut self, snap: &Snapshot) -> bool {
        // Compared in place: building the key clones every frequency table, and the
        // hardware changes only on events.
        if self.hardware.as_ref().is_some_and(|h| h.matches(snap)) {
            return false;
        }
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
            let mut platform = self.cfg.platform.clone();
            if !self.cfg.voltage_curves {
                for d in &mut platform.domains {
                    d.voltage = crate::model::VoltageCurve::default();
                }
            }
            self.power = Some(PowerModel::seeded(
                &platform,
                &ids,
                self.cfg.power_forgetting,
            ));
        }
        self.hardware = Some(key);
        true
    }

    /// Records the domains whose frequency differs from the previous tick's, as changed at
    /// the previous tick: the time the decision that moved them was taken (a change made
    /// by someone else is placed up to a tick early).
    fn track_clocks(&mut self, snap: &Snapshot) {
        let same_domains = self.clocks.len() == snap.domains.len()
            && self
                .clocks
                .iter()
                .zip(&snap.domains)
                .all(|(c, d)| c.0 == d.id);
        if same_domains {
            let at = self.previous_tick.unwrap_or(snap.now);
            for (c, d) in self.clocks.iter_mut().zip(&snap.domains) {
                if c.1 != d.cur {
                    if self.clock_changes.len() == CLOCK_CHANGES_MAX {
                        self.clock_changes.pop_front();
                    }
                    self.clock_changes.push_back(ClockChange {
                        at,
                        domain: d.id,
                        from: c.1,
                    });
                    c.1 = d.cur;
                }
            }
        } else {
            self.clocks.clear();
            self.clocks
                .extend(snap.domains.iter().map(|d| (d.id, d.cur)));
            self.clock_changes.clear();
        }
        self.previous_tick = Some(snap.now);
        while self
            .clock_changes
            .front()
            .is_some_and(|c| c.at.saturating_add(CLOCK_HISTORY) < snap.now)
        {
            self.clock_changes.pop_front();
        }
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
                if e.declared.targets != app.targets {
                    // Misses against the old target say nothing of the new one: a
                    // sub-network left on them is in reach again, and the margin they
                    // widened starts over.
                    e.left = None;
                    e.miss_margin = 0.0;
                    e.fb_judged = 0;
                    e.fb_missed = 0;
                    e.judged = 0;
                    e.missed = 0;
                }
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
            recent: VecDeque::new(),
            pending: VecDeque::new(),
            rejected_last: vec![false; n],
            contended: 0,
            slow_run: 0,
            slow_ratio: f64::INFINITY,
            before_slow: Vec::with_capacity(n),
            boost: None,
            judged: 0,
            missed: 0,
            spread_var: 0.0,
            spread_n: 0,
            spread_last: None,
            spread_level: 0.0,
            explored: None,
            left: None,
            held_back: None,
            raised: None,
            upgrade_block: None,
            upgrade_backoff: Nanos(0),
            miss_margin: 0.0,
            fb_judged: 0,
            fb_missed: 0,
            last_miss: None,
        }
    }

    /// Feeds models and controllers; true when a controller needs the optimiser.
    ///
    /// Controllers judge every inference at once. The latency models learn an app's own
    /// latency at the clocks: when apps share the GPU, part of what an app measures is
    /// waiting for the others' inferences, which is planned separately as interference
    /// (see the optimiser), so it is taken out here. A sample is held until every other
    /// app on the GPU has reported an inference ending after it (or for [`SETTLE`]); the
    /// overlap `o` of its interval with each other app's inferences then gives the wait
    /// estimate `o * f_self * d_other`: while two inferences share the GPU, each waits for
    /// the other's device work, and `d_other` is the other's device work per unit of its
    /// measured interval (its device fraction by the split model, times its predicted
    /// latency alone over what it measured); `f_self`, this one's device fraction, is the
    /// chance it was on the device itself.
    fn learn(&mut self, snap: &Snapshot, base: &[BaseChoice]) -> Option<PlanTrigger> {
        let mut escalate = None;
        for app in &snap.apps {
            let Some(e) = self.apps.get_mut(&app.id) else {
                continue;
            };
            for inf in &app.finished {
                e.recent
                    .push_back((inf.end.saturating_sub(inf.latency), inf.end, inf.subnet));
            }
            while e.recent.len() > RECENT_MAX
                || e.recent
                    .front()
                    .is_some_and(|f| f.1.saturating_add(RECENT_SPAN) < snap.now)
            {
                e.recent.pop_front();
            }
        }
        let boosted = self.boosted;
        let changes = &self.clock_changes;
        let plan = &self.plan;
        let unserved = |id: u32| {
            plan.as_ref()
                .is_some_and(|p| p.unserved.iter().any(|u| u.0 == id))
        };
        for app in &snap.apps {
            if app.finished.is_empty() {
                continue;
            }
            let Some(e) = self.apps.get_mut(&app.id) else {
                continue;
            };
            let r = clock_ratios(snap, &e.declared);
            let t = &e.declared.targets;
            let deadline = t
                .deadline
                .min(t.period.unwrap_or(t.deadline))
                .as_millis_f64()
                * (1.0 - self.cfg.optimiser.margin);
            // Predictions from the models as they stood at the start of the tick.
            // A sub-network left a moment ago is out of reach for step-ups too (see
            // `RETURN_HOLD`).
            let held = e
                .left
                .filter(|(_, until)| snap.now < *until)
                .map_or(u32::MAX, |(left, _)| left);
            // Late for the deadline, or falling behind the frames.
            let behind_ms = t
                .deadline
                .min(t.period.unwrap_or(t.deadline))
                .as_millis_f64();
            let fits: Vec<bool> = (0..e.models.len())
                .map(|i| {
                    (i as u32) < held
                        && subnet_option(e, i).is_some_and(|o| o.latency_ms(r) <= deadline)
                })
                .collect();
            for inf in &app.finished {
                let s = inf.subnet as usize;
                if s >= e.models.len() {
                    continue;
                }
                // A later inference within its prediction: the overrun was a one-off.
                let start = inf.end.saturating_sub(inf.latency);
                if e.boost.is_some_and(|b| start > b.at)
                    && subnet_option(e, s).is_some_and(|o| {
                        inf.latency.as_millis_f64()
                            <= o.latency_ms(r) * (1.0 + self.cfg.optimiser.margin)
                    })
                {
                    e.boost = None;
                }
                let (action, usable) = e.controller.on_inference(inf, |next| {
                    fits.get(next as usize).copied().unwrap_or(false)
                });
                // Misses of the plan's clocks: an inference that paid for a switch is not
                // one.
                if usable {
                    e.judged = e.judged.saturating_add(1);
                    if inf.latency > t.deadline {
                        e.missed = e.missed.saturating_add(1);
                        e.last_miss = Some(inf.end);
                    }
                    // Measured misses widen the app's margin; a long clean run narrows it.
                    e.fb_judged = e.fb_judged.saturating_add(1);
                    if inf.latency.as_millis_f64() > behind_ms {
                        e.fb_missed = e.fb_missed.saturating_add(1);
                    }
                    if e.fb_missed >= MISS_MARGIN_MISSES
                        && f64::from(e.fb_missed) > MISS_MARGIN_RATE * f64::from(e.fb_judged)
                        && e.miss_margin < MAX_SPREAD_MARGIN
                    {
                        e.miss_margin = (e.miss_margin + MISS_MARGIN_STEP).min(MAX_SPREAD_MARGIN);
                        e.fb_judged = 0;
                        e.fb_missed = 0;
                    } else if e.fb_judged >= MISS_MARGIN_CLEAN {
                        if e.fb_missed == 0 && e.miss_margin > 0.0 {
                            e.miss_margin = (e.miss_margin - MISS_MARGIN_STEP).max(0.0);
                        }
                        e.fb_judged = 0;
                        e.fb_missed = 0;
                    }
                }
                // An inference that ran across the start or the end of a boost ran at no one
                // set of clocks: it is not learned. The one that overran still counts
                // towards a slow-down, at the clocks it began at (it ran faster after).
                let straddles = |t: Nanos| start < t && inf.end > t;
                let crossed = boosted
                    .is_some_and(|(from, until)| straddles(from) || until.is_some_and(straddles));
                let within = boosted.is_some_and(|(from, until)| {
                    start >= from && until.is_none_or(|u| inf.end <= u)
                });
                let (ratios, use_) = match e.boost {
                    Some(b) if start <= b.at && inf.end >= b.at => (b.ratios, Use::SlowDownOnly),
                    _ if crossed => (r, Use::Skip),
                    _ if within => (
                        ran_at(changes, snap, app, start, inf.end),
                        Use::LearnBoosted,
                    ),
                    _ => (ran_at(changes, snap, app, start, inf.end), Use::Learn),
                };
                if usable && use_ != Use::Skip {
                    e.pending.push_back(Pending {
                        subnet: s,
                        ratios,
                        use_,
                        latency_ms: inf.latency.as_millis_f64(),
                        start: inf.end.saturating_sub(inf.latency),
                        end: inf.end,
                    });
                }
                if let ControllerAction::SteppedDown { .. } = action {
                    e.left = Some((inf.subnet, snap.now.saturating_add(RETURN_HOLD)));
                }
                // An app the plan already does not serve has nothing more to ask for.
                if action == ControllerAction::Exhausted && !unserved(app.id) {
                    escalate.get_or_insert(PlanTrigger::ControllerExhausted { app: app.id });
                }
            }
        }
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(
            self.apps
                .iter()
                .filter(|(_, e)| !e.pending.is_empty())
                .map(|(id, _)| *id),
        );
        let mut settled = std::mem::take(&mut self.settled);
        for id in ids.iter().copied() {
            self.settled_samples(id, snap.now, &mut settled);
            let rose = self
                .apps
                .get(&id)
                .is_some_and(|e| self.demand_rose(snap, &e.declared));
            let Some(e) = self.apps.get_mut(&id) else {
                continue;
            };
            // The band of the lasting slow-down check (see `BIAS_SAMPLES`).
            let band = if rose {
                self.cfg.optimiser.margin
            } else {
                self.cfg.optimiser.margin.max(e.spread_level)
            };
            let t = &e.declared.targets;
            let met_ms = t
                .deadline
                .min(t.period.unwrap_or(t.deadline))
                .as_millis_f64();
            for (subnet, r, ms, waited, use_) in settled.drain(..) {
                e.pending.pop_front();
                // Samples that waited little for other apps say the most about the app's
                // own latency: the others are learned only when clean ones are scarce.
                if waited > CLEAN_WAIT && e.contended < CONTENDED_RUN {
                    e.contended += 1;
                    // Only a slow-down the wait cannot explain (see `CLEAN_WAIT`); a fast
                    // one does not end a run.
                    track_slow_down(e, subnet, r, ms, OUTLIER_RATIO - 1.0, false);
                    continue;
                }
                if waited <= CLEAN_WAIT {
                    e.contended = 0;
                }
                track_slow_down(e, subnet, r, ms, band, use_ != Use::LearnBoosted);
                if !matches!(use_, Use::Learn | Use::LearnBoosted) {
                    continue;
                }
                let predicted = e.models[subnet].predict_ms(r).max(1e-3);
                if ms > OUTLIER_RATIO * predicted && !e.rejected_last[subnet] {
                    e.rejected_last[subnet] = true;
                    continue;
                }
                e.rejected_last[subnet] = false;
                // Only clean samples: the wait for other apps is budgeted apart, and would
                // be counted twice.
                let clean = waited <= CLEAN_WAIT;
                if let (true, Some((s0, r0, ms0))) = (clean, e.spread_last) {
                    if s0 == subnet && r0 == r && ms0 + ms > 0.0 {
                        let d = (2.0 * (ms - ms0) / (ms + ms0)).clamp(-SPREAD_CLIP, SPREAD_CLIP);
                        let x = d * d / 2.0;
                        e.spread_var = if e.spread_n == 0 {
                            x
                        } else {
                            e.spread_var + SPREAD_WEIGHT * (x - e.spread_var)
                        };
                        e.spread_n = e.spread_n.saturating_add(1);
                    }
                }
                if clean {
                    e.spread_last = Some((subnet, r, ms));
                }
                if e.spread_n >= SPREAD_MIN_SAMPLES {
                    let raw = SPREAD_QUANTILE * e.spread_var.max(0.0).sqrt();
                    let stepped = (raw / SPREAD_STEP).ceil() * SPREAD_STEP;
                    if stepped > e.spread_level || raw < e.spread_level - 1.5 * SPREAD_STEP {
                        e.spread_level = stepped;
                    }
                }
                // Only clocks the app met its deadline at are explored ground: a sample
                // that missed says the clocks were too slow, whatever the fit makes of it
                // (see `EXPLORE_STEP`). The first sample anchors the range either way.
                if e.explored.is_none() || ms <= met_ms {
                    let x = e.explored.unwrap_or(r);
                    e.explored = Some(ClockRatios {
                        gpu: x.gpu.max(r.gpu),
                        cpu: x.cpu.max(r.cpu),
                        mem: x.mem.max(r.mem),
                    });
                }
                e.models[subnet].observe(r, ms);
                e.cautious[subnet].observe(r, ms);
            }
            let sudden = e.slow_run >= 2 && e.slow_ratio > 1.0 + 2.0 * band;
            if e.slow_run >= BIAS_SAMPLES || sudden {
                let ratio = rescale(e, self.cfg.latency_forgetting);
                escalate.get_or_insert(PlanTrigger::SlowDown { app: id, ratio });
            }
        }
        self.ids = ids;
        self.settled = settled;
        if let (Some(pm), Some(measured)) = (self.power.as_mut(), snap.power) {
            let loads = &mut self.loads;
            loads.clear();
            loads.extend(
                snap.domains
                    .iter()
                    .zip(base)
                    .filter(|(_, b)| b.reason != FreqReason::NoTelemetry)
                    .map(|(d, b)| DomainLoad {
                        domain: d.id,
                        util: b.mean_load,
                        speed: d.cur.as_f64() / d.max_freq().as_f64().max(1.0),
                    }),
            );
            if loads.len() == snap.domains.len() {
                pm.observe(loads, measured);
            }
        }
        escalate
    }

    /// The app's pending samples that can be learned now, oldest first, each as
    /// (sub-network, clocks, latency less the estimated wait for other apps on the GPU,
    /// that wait as a fraction of the latency).
    fn settled_samples(&self, id: u32, now: Nanos, out: &mut Vec<Settled>) {
        out.clear();
        let Some(e) = self.apps.get(&id) else {
            return;
        };
        let gpu = e.declared.devices.gpu;
        let others = || {
            self.apps
                .iter()
                .filter(move |(o, x)| gpu && **o != id && x.declared.devices.gpu)
                .map(|(_, x)| x)
        };
        for p in &e.pending {
            let reported = others().all(|o| o.recent.back().is_some_and(|r| r.1 >= p.end));
            if !reported && now < p.end.saturating_add(SETTLE) {
                break;
            }
            let own = device_fraction(e, p.subnet, p.ratios);
            let mut wait = 0.0;
            for o in others() {
                for (start, end, subnet) in &o.recent {
                    let overlap = end.min(&p.end).saturating_sub(*start.max(&p.start));
                    if overlap.0 == 0 {
                        continue;
                    }
                    // The other's device work done during the overlap, spread evenly over
                    // its measured interval: its device time alone (its model) over what
                    // the interval took.
                    let s = *subnet as usize;
                    let measured = end.saturating_sub(*start).as_millis_f64().max(1e-3);
                    let alone = subnet_option(o, s).map_or(measured, |x| x.latency_ms(p.ratios));
                    let density =
                        device_fraction(o, s, p.ratios) * (alone / measured).clamp(0.0, 1.0);
                    wait += overlap.as_millis_f64() * own * density;
                }
            }
            // The wait cannot be more than half of what was measured (two sharing).
            let wait = wait.min(p.latency_ms / 2.0);
            out.push((
                p.subnet,
                p.ratios,
                p.latency_ms - wait,
                wait / p.latency_ms,
                p.use_,
            ));
        }
    }

    /// The problem a re-plan solves. Under a power cap the cap comes first: the GPU floor
    /// (see [`GPU_FLOOR`]) and the explore step (see [`EXPLORE_STEP`]) hold only where the
    /// plan made with them serves as many apps, and leaves as few at best effort, as the
    /// plan made with the floor lifted and the wider [`CAP_EXPLORE_STEP`]. Lifted under any
    /// cap, the floor let a plan well under the cap take the GPU to 408 MHz on fits that
    /// had put one app's GPU time in its memory term (generated seed 46, a cap of 8.2 W:
    /// the frames of both apps missed for half a second, 30 s into the cap, while the plan
    /// at 803 MHz had needed 5.5 W). Held under every cap, an explore step of 1.3 (tried)
    /// left an app unserved at clocks that missed every frame for 8 s, where a plan a
    /// little further down kept the cap (generated seed 419, a cap of 5.9 W).
    /// `slowed`: the app whose lasting slow-down the plan answers, if any (see
    /// [`Manager::slow_down_floor`]; not under a cap, which comes first).
    fn problem_under_cap(
        &self,
        snap: &Snapshot,
        base: &[BaseChoice],
        slowed: Option<u32>,
    ) -> Problem {
        if snap.caps.power.is_none() {
            return self.problem(snap, base, true, slowed);
        }
        let floored = self.problem(snap, base, true, None);
        let free = self.problem(snap, base, false, None);
        if free.domains == floored.domains {
            return floored;
        }
        let cfg = &self.cfg.optimiser;
        let (with, without) = (optimise(&floored, cfg), optimise(&free, cfg));
        if with.unserved.len() <= without.unserved.len()
            && with.best_effort.len() <= without.best_effort.len()
        {
            floored
        } else {
            free
        }
    }

    /// `floored` false: the GPU floor lifted and the wider explore step, for a plan under a
    /// power cap (see [`Manager::problem_under_cap`]). `slowed`: the app whose slow-down
    /// the plan answers (see [`Manager::slow_down_floor`]).
    fn problem(
        &self,
        snap: &Snapshot,
        base: &[BaseChoice],
        floored: bool,
        slowed: Option<u32>,
    ) -> Problem {
        let domains = snap
            .domains
            .iter()
            .zip(base)
            .map(|(d, b)| {
                let allowed = snap.allowed_max(d);
                // Under a power cap, averaged (see `CAP_LOAD_WINDOW`).
                let averaged = self
                    .averaged_loads
                    .iter()
                    .find(|l| l.domain == d.id)
                    .filter(|_| snap.caps.power.is_some() && self.cfg.cap_load_window > Nanos(0));
                // The slowest this domain may run for the apps that depend on it (see
                // `EXPLORE_STEP`).
                let max = d.max_freq().as_f64();
                let lowest = self
                    .apps
                    .values()
                    .filter_map(|e| {
                        let x = e.explored?;
                        let bound = match d.kind {
                            DomainKind::Gpu if e.declared.devices.gpu => x.gpu,
                            DomainKind::Memory if e.declared.devices.gpu => x.mem,
                            DomainKind::Cpu if uses_domain(snap, &e.declared, d) => x.cpu,
                            _ => return None,
                        };
                        let step = if floored {
                            EXPLORE_STEP
                        } else {
                            CAP_EXPLORE_STEP
                        };
                        Some(max / (bound * step))
                    })
                    .fold(0.0, f64::max)
                    .max(self.warm_up_floor(snap.now, d).map_or(0.0, |f| f.as_f64()))
                    .max(self.gpu_floor(d, floored).map_or(0.0, |f| f.as_f64()))
                    .max(self.shared_gpu_floor(d).map_or(0.0, |f| f.as_f64()))
                    .max(self.cpu_floor(snap.now, d).map_or(0.0, |f| f.as_f64()))
                    .max(
                        self.slow_down_floor(snap, slowed, d)
                            .map_or(0.0, |f| f.as_f64()),
                    );
                let mut freqs: Vec<Hz> = d
                    .table
                    .iter()
                    .copied()
                    .filter(|f| *f <= allowed && f.as_f64() >= lowest)
                    .collect();
                if freqs.is_empty() {
                    // The bound is above what is allowed: the highest allowed.
                    freqs.push(resolve_down(d, allowed));
                }
                DomainOption {
                    id: d.id,
                    kind: d.kind,
                    freqs,
                    max_freq: d.max_freq(),
                    cpu_count: d.cpus.len(),
                    online_cpus: snap.online_cpus(d),
                    util: averaged.map_or(b.mean_load, |l| l.util),
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
                // The sub-network the app runs, once it has run one (see `UP_MARGIN`).
                let current = e
                    .controller
                    .last_seen()
                    .map(|_| e.controller.subnet() as usize);
                Some(AppProblem {
                    id: a.id,
                    priority: t.priority,
                    deadline_ms: t.deadline.as_millis_f64(),
                    period_ms: t.period.unwrap_or(t.deadline).as_millis_f64(),
                    accuracy_floor: t.accuracy_floor,
                    devices: e.declared.devices,
                    cpu_domains: e.declared.cpu_domains.clone(),
                    // A spread the configured margin covers changes nothing: the thinner
                    // tiers stay open to keep a floor, as they are for model error.
                    spread_margin: {
                        let spread = if e.spread_level > self.cfg.optimiser.margin + 1e-9 {
                            e.spread_level
                        } else {
                            0.0
                        };
                        let measured = if e.miss_margin > 0.0 {
                            self.cfg.optimiser.margin + e.miss_margin
                        } else {
                            0.0
                        };
                        spread.max(measured)
                    },
                    missing: e.miss_margin > 0.0,
                    cautious_device: false,
                    subnets: e
                        .declared
                        .library
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let mut o = subnet_option(e, i).unwrap_or(SubnetOption {
                                accuracy: s.accuracy,
                                coefs: LatencyCoefs::seed(0.0, e.declared.devices),
                                cautious: None,
                                declared_ms: e.prior_ms.get(i).copied().unwrap_or(0.0),
                            });
                            if current.is_some_and(|c| i > c) {
                                o.coefs = o.coefs.scaled(1.0 + UP_MARGIN);
                                o.cautious = o.cautious.map(|c| c.scaled(1.0 + UP_MARGIN));
                            }
                            o
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
                    voltage: Vec::new(),
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
    ///
    /// Returns the rule that lets `new` replace the plan in force, or `None` to keep it.
    fn should_replace(
        &self,
        snap: &Snapshot,
        problem: &Problem,
        new: &Plan,
    ) -> Option<PlanTrigger> {
        let Some(cur) = &self.plan else {
            return Some(PlanTrigger::First);
        };
        let missing = cur
            .subnets
            .iter()
            .any(|(id, _)| self.apps.get(id).is_some_and(AppEntry::missing));
        let slack = if missing {
            0.0
        } else {
            (self.cfg.optimiser.margin - self.cfg.keep_margin).max(0.0)
        };
        let (cur_power, cur_score) = match evaluate_plan(problem, &self.cfg.optimiser, cur, slack) {
            Some(held) => held,
            None => {
                // Predicted to break. What the apps measure outweighs the prediction: while
                // every app the plan serves has a full window of inferences within its
                // bound less `keep_margin`, and the plan still fits the shared devices and
                // the power cap, it is held to the usual rules below. Otherwise the split
                // of a latency between clocks, learned at nearly one operating point,
                // swings the predicted device time, and with it the predicted wait on a
                // shared GPU, from one model update to the next, and a plan serving every
                // app and one that drops an app alternate. An app that really misses makes
                // its controller step down, raise floors and finally force a new plan.
                let measured = if !missing && self.measured_meeting(cur) {
                    evaluate_plan_resources(problem, &self.cfg.optimiser, cur)
                } else {
                    None
                };
                match measured {
                    Some(held) => held,
                    None => {
                        // A replacement that serves fewer apps also waits while the plan
                        // in force still holds with no margin at all; one that serves no
                        // more and is predicted to break as well (a power cap that the
                        // domains no plan sets already exceed) changes nothing it could
                        // keep. Re-made every half second, such plans moved the GPU between
                        // 752 and 1109 MHz and an app in and out of best effort each time
                        // (generated seed 330: three degraded apps under an 8.2-W cap, the
                        // rest of the board drawing 8.8-9.7 W).
                        let holds = || {
                            evaluate_plan(problem, &self.cfg.optimiser, cur, f64::INFINITY)
                                .is_some()
                        };
                        let breaks_too =
                            || evaluate_plan(problem, &self.cfg.optimiser, new, 0.0).is_none();
                        let wait = (new.unserved.len() > cur.unserved.len() && holds())
                            || (new.unserved.len() >= cur.unserved.len() && breaks_too());
                        return (!wait).then_some(PlanTrigger::PredictedBreak);
                    }
                }
            }
        };
        // An app whose margin has widened since (measured misses, a wider spread) gets a
        // plan made with it at the next periodic run, dwell or not: it is missing now.
        let widened = |a: &AppProblem| {
            a.spread_margin > 0.0
                && cur
                    .margin_of(a.id)
                    .is_some_and(|m| a.min_margin() > m + 1e-9)
        };
        let served = |id: u32| cur.unserved.iter().all(|u| u.0 != id);
        if problem.apps.iter().any(|a| widened(a) && served(a.id))
            && new.unserved.len() <= cur.unserved.len()
        {
            return Some(PlanTrigger::MarginWidened);
        }
        // Where such an app measurably misses under the plan in force, that plan holds only
        // on paper, and a plan made with the wider margin replaces it even if it serves
        // fewer apps, provided every app the plan in force runs is still planned or, if it
        // is one of the apps missing, runs at best effort. Otherwise two apps whose
        // collisions on the GPU made one of them miss a frame in five stayed that way for
        // 46 s (generated seed 123): the plan made with its wider margin gave up the other
        // app's floor and degraded it, so it served fewer apps, and the plan in force was
        // still predicted to hold.
        let failing = |id: u32| {
            self.apps.get(&id).is_some_and(AppEntry::missing)
                && problem.apps.iter().any(|a| a.id == id && widened(a))
        };
        let fails = cur.subnets.iter().any(|&(id, _)| served(id) && failing(id));
        let kept = || {
            cur.subnets.iter().all(|&(id, _)| {
                new.subnets.iter().any(|s| s.0 == id)
                    || (failing(id) && new.best_effort.iter().any(|b| b.0 == id))
            })
        };
        if fails && kept() {
            return Some(PlanTrigger::AppMissing);
        }
        // An app the plan in force leaves to run its cheapest sub-network (degraded, not at
        // best effort) that measurably misses, and that a plan serving as many apps now
        // runs at best effort or serves: deadlines before energy. Otherwise the plan in
        // force, cheaper and still predicted to hold for the apps it serves, stayed while
        // two such apps missed one frame in four to seven for 36 s (generated seed 84,
        // with an earlier version of the base governor; docs/policy.md).
        let left_missing = cur.unserved.iter().any(|&(id, _)| {
            !cur.subnets.iter().any(|s| s.0 == id)
                && cur.best_effort_of(id).is_none()
                && self.apps.get(&id).is_some_and(AppEntry::missing)
                && (new.best_effort_of(id).is_some() || new.subnets.iter().any(|s| s.0 == id))
        });
        if self.cfg.best_effort_on_misses
            && left_missing
            && new.unserved.len() <= cur.unserved.len()
        {
            return Some(PlanTrigger::AppMissing);
        }
        if snap.now.saturating_sub(self.plan_since) < self.cfg.dwell {
            return None;
        }
        if new.unserved.len() < cur.unserved.len() {
            return Some(PlanTrigger::ServesMore);
        }
        if self.under_cpu_floor && new.unserved.len() == cur.unserved.len() {
            return Some(PlanTrigger::BelowCpuDemand);
        }
        if new.unserved.len() > cur.unserved.len() {
            // The plan in force still serves more apps and still holds.
            return None;
        }
        // No saving while an app of the plan in force misses: a saving lowers clocks, and
        // came every dwell time, each a little lower, while an app missed half its frames
        // (generated seed 193). Misses within the last dwell time, not since the plan's
        // adoption: a frame late at the clocks before it, ending after it, held a plan at
        // the GPU's highest clock for as long as one miss outweighed 0.5 % of the frames.
        let missed = cur.subnets.iter().any(|(id, _)| {
            self.apps.get(id).is_some_and(|e| {
                e.last_miss
                    .is_some_and(|t| snap.now.saturating_sub(t) < self.cfg.dwell)
            })
        });
        let saves = !missed && new.power.0 <= cur_power.0 * (1.0 - self.cfg.gain_threshold);
        let gains = new.score >= cur_score + self.cfg.accuracy_gain_points;
        let gains_within_tie =
            || gains && new.power.0 <= cur_power.0 * (1.0 + self.cfg.optimiser.tie_tolerance);
        let tied = || (new.score - cur_score).abs() < 1e-9;
        match self.cfg.optimiser.mode {
            Mode::Energy if saves => Some(PlanTrigger::SavesPower),
            Mode::Energy if gains_within_tie() => Some(PlanTrigger::GainsAccuracy),
            Mode::Accuracy if gains => Some(PlanTrigger::GainsAccuracy),
            Mode::Accuracy if tied() && saves => Some(PlanTrigger::SavesPower),
            _ => None,
        }
    }

    /// The sub-network each app runs now, where it keeps the app's floor: an app below its
    /// floor (degraded, or stepped down past it) is not capped there.
    fn running_subnet(&self, problem: &Problem, id: u32) -> Option<u32> {
        let c = self.apps.get(&id)?.controller.subnet();
        let a = problem.apps.iter().find(|a| a.id == id)?;
        let s = a.subnets.get(c as usize)?;
        (s.accuracy >= a.accuracy_floor).then_some(c)
    }

    /// Hysteresis on clocks: a new plan keeps a domain at the clock the plan in force set
    /// wherever that still meets every constraint of the new plan (its sub-networks and
    /// margins, the shared devices, the power cap, each domain's bounds) for at most
    /// `keep_clock_power` more predicted power in all. The search's least-power point moves
    /// with every update of the fits, and the CPU clusters, a small part of the predicted
    /// power, sit on a flat optimum: re-plans made while the models learn moved their
    /// clocks back and forth by several table entries, and a plan that lowered a clock
    /// was often predicted to break a second later. The price: the power model can
    /// undercount what a kept higher clock costs (S3 in the simulator: a CPU cluster kept
    /// at 1.88 GHz rather than 1.27 GHz, 2.6 % more energy over the run).
    fn keep_clocks(&self, now: Nanos, problem: &Problem, new: Plan) -> Plan {
        let Some(cur) = &self.plan else { return new };
        if self.cfg.keep_clock_power <= 0.0 || !new.best_effort.is_empty() || new.freqs.is_empty() {
            return new;
        }
        let cfg = &self.cfg.optimiser;
        let Some((least, _)) = evaluate_plan(problem, cfg, &new, 0.0) else {
            return new;
        };
        let limit = least.0 * (1.0 + self.cfg.keep_clock_power);
        let mut kept = new;
        for &(id, f) in &cur.freqs {
            let Some(slot) = kept.freqs.iter().position(|x| x.0 == id) else {
                continue;
            };
            let allowed = problem
                .domains
                .iter()
                .find(|d| d.id == id)
                .is_some_and(|d| d.freqs.contains(&f));
            if kept.freqs[slot].1 == f || !allowed {
                continue;
            }
            let before = kept.freqs[slot].1;
            // A clock the new plan raised to the top for an app that misses below its
            // margin is not taken back down to the clock it misses at.
            let missing_now = |app: u32| self.apps.get(&app).is_some_and(AppEntry::missing);
            if f < before && pinned_for_misses(problem, cfg, &kept, id, missing_now) {
                continue;
            }
            // After a failed lowering, the clock in force is kept whatever lowering saves.
            let held = before < f
                && self
                    .clock_trials
                    .get(&id)
                    .and_then(|t| t.hold_until)
                    .is_some_and(|until| now < until);
            kept.freqs[slot].1 = f;
            match evaluate_plan(problem, cfg, &kept, 0.0) {
                Some((power, score)) if held || power.0 <= limit => {
                    kept.power = power;
                    kept.score = score;
                }
                _ => kept.freqs[slot].1 = before,
            }
        }
        kept
    }

    /// In energy mode an upgrade may cost at most the tie tolerance more than the
    /// sub-networks in force at their least-power clocks: the clocks [`Manager::keep_clocks`]
    /// holds cost a little more, and would make any upgrade look cheap beside them.
    fn upgrade_affordable(&self, up: &Plan, least: Watts) -> bool {
        let o = &self.cfg.optimiser;
        o.mode != Mode::Energy || up.power.0 <= least.0 * (1.0 + o.tie_tolerance)
    }

    /// Hysteresis on sub-networks, first half: no app goes above the sub-network it runs
    /// now as a side effect of a re-plan. With a plan in force the search is made with
    /// every app capped at the sub-network it runs (where that keeps its floor); that plan
    /// is taken when it serves every app, or as many as the search without the caps. An
    /// app either plan raises all the same (one below its floor is not capped) is raised
    /// only with the margin of an upgrade (see [`Manager::raise_with_margin`]).
    /// Without this, a re-plan made because one app's margin widened or its plan broke
    /// moved other apps on the shared GPU up to the edge of their bounds; their first
    /// samples, slower or more spread than the fits said, tipped them over, and they went
    /// back down within seconds (A->B->A), a switch each way.
    fn plan_without_upgrades(&self, now: Nanos, problem: &Problem, apps_changed: bool) -> Plan {
        if self.cfg.upgrade_margin <= 0.0 || self.plan.is_none() {
            return optimise(problem, &self.cfg.optimiser);
        }
        let mut capped = problem.clone();
        for a in &mut capped.apps {
            if let Some(c) = self.running_subnet(problem, a.id) {
                a.subnets.truncate(c as usize + 1);
            }
        }
        let held = self.keep_upgrades(now, &capped, optimise(&capped, &self.cfg.optimiser));
        if held.unserved.is_empty() && held.best_effort.is_empty() {
            return self.raise_with_margin(&capped, held, apps_changed);
        }
        let free = optimise(problem, &self.cfg.optimiser);
        if held.unserved.len() <= free.unserved.len()
            && held.best_effort.len() <= free.best_effort.len()
        {
            self.raise_with_margin(&capped, held, apps_changed)
        } else {
            self.raise_with_margin(problem, free, apps_changed)
        }
    }

    /// Hysteresis on sub-networks, for the apps a re-plan raises all the same (an app back
    /// to the floor it gave up to share the devices, or a plan that serves more apps): the
    /// raise is planned as an upgrade is (see [`Manager::upgrade`]), with `upgrade_margin`
    /// more margin for the apps it raises, none above where `plan` puts them. That plan
    /// replaces `plan` when it serves as many apps and keeps the wider margin for each app
    /// it raises. Otherwise no app is raised: each stays on the sub-network it runs (one
    /// below its floor with the floor still given up) until a later re-plan finds the
    /// room. Raised with the plain margin, an app came back to its floor at the edge of its
    /// bound, and its first samples there, slower than the fits said, took it back down
    /// within seconds (generated seeds 52, 84 and 88: an A->B->A each,
    /// docs/evaluation.md). The raised apps' collisions on the GPU are judged with the
    /// device time their declared latencies imply (see [`AppProblem::cautious_device`]):
    /// fits that put an app's latency on the CPU let one back to its floor beside four
    /// others on the GPU, whose first frames queued behind theirs (generated seed 53).
    ///
    /// Not when the apps changed (`apps_changed`: one arrived or left, or its targets
    /// changed), which is planned for as it comes: an operator who raised an app's floor
    /// must see it served at once, not the app held on the sub-network the old floor
    /// allowed. Hardware that comes back (a cap lifted, CPUs online again) raises apps as
    /// any re-plan does, with the margin. Not under a power cap, which comes first: held on
    /// its cheapest sub-network at the clocks a plan under the cap lowered, the one app of
    /// generated seed 419 missed every frame for 4 s (3.82 % of the run against 0.87 %).
    fn raise_with_margin(&self, problem: &Problem, plan: Plan, apps_changed: bool) -> Plan {
        if apps_changed || self.cfg.upgrade_margin <= 0.0 || problem.power_cap.is_some() {
            return plan;
        }
        let raised: Vec<u32> = plan
            .subnets
            .iter()
            .chain(&plan.best_effort)
            .filter(|(id, s)| {
                self.apps
                    .get(id)
                    .is_some_and(|e| *s > e.controller.subnet())
            })
            .map(|(id, _)| *id)
            .collect();
        if raised.is_empty() {
            return plan;
        }
        let mut wider = self.widen(problem, &raised, &plan);
        for a in wider.apps.iter_mut().filter(|a| raised.contains(&a.id)) {
            a.cautious_device = true;
        }
        let up = optimise(&wider, &self.cfg.optimiser);
        let room = up.margins.iter().all(|(id, m)| {
            !raised.contains(id)
                || wider
                    .apps
                    .iter()
                    .find(|a| a.id == *id)
                    .is_none_or(|a| *m >= a.min_margin() - 1e-9)
        });
        if room
            && up.unserved.len() <= plan.unserved.len()
            && up.best_effort.len() <= plan.best_effort.len()
        {
            return up;
        }
        // Each app on the sub-network it runs or below; one below its floor on the one it
        // runs, its floor still given up.
        let mut stay = problem.clone();
        let mut given_up = Vec::new();
        for a in &mut stay.apps {
            if let Some(e) = self.apps.get(&a.id) {
                a.subnets.truncate(e.controller.subnet() as usize + 1);
                if a.subnets.iter().all(|s| s.accuracy < a.accuracy_floor) {
                    a.accuracy_floor = a.subnets.last().map_or(f64::NEG_INFINITY, |s| s.accuracy);
                    given_up.push(a.id);
                }
            }
        }
        let mut kept = optimise(&stay, &self.cfg.optimiser);
        for id in given_up {
            if kept.subnets.iter().any(|s| s.0 == id) && kept.unserved.iter().all(|u| u.0 != id) {
                kept.unserved.push((id, UnservedCause::FloorGivenUpToShare));
            }
        }
        kept
    }

    /// `problem` with `upgrade_margin` more margin for the apps in `raised`, none of them
    /// above the sub-network `reach` puts it on.
    fn widen(&self, problem: &Problem, raised: &[u32], reach: &Plan) -> Problem {
        let mut wider = problem.clone();
        for a in wider.apps.iter_mut().filter(|a| raised.contains(&a.id)) {
            a.spread_margin = a.margin(&self.cfg.optimiser) + self.cfg.upgrade_margin;
            if let Some((_, to)) = reach.subnets.iter().find(|(id, _)| *id == a.id) {
                a.subnets.truncate(*to as usize + 1);
            }
        }
        wider
    }

    /// Raises the accuracy floor of every app whose upgrade is on trial (see
    /// `Config::upgrade_trial`) and that does not miss to the sub-network it runs; says
    /// whether it raised any.
    fn pin_trials(&self, now: Nanos, problem: &mut Problem) -> bool {
        let trial = self.cfg.upgrade_trial;
        let mut any = false;
        for a in &mut problem.apps {
            let Some(e) = self.apps.get(&a.id) else {
                continue;
            };
            let running = e.controller.subnet();
            let on_trial = e
                .raised
                .is_some_and(|(to, at)| to == running && now.saturating_sub(at) < trial);
            if let (true, false, Some(s)) = (on_trial, e.missing(), a.subnets.get(running as usize))
            {
                if s.accuracy > a.accuracy_floor {
                    a.accuracy_floor = s.accuracy;
                    any = true;
                }
            }
        }
        any
    }

    /// An upgrade on trial keeps its sub-network: the plan with the trials pinned (see
    /// [`Manager::pin_trials`]) replaces `plan` where it serves as many apps for at most
    /// twice `gain_threshold` more predicted power (once `gain_threshold` is what a
    /// periodic run's saving must reach: the fits of a sub-network just taken up move by a
    /// few per cent from one run to the next).
    ///
    /// Without the trial (`Config::upgrade_trial`, 10 s), the next periodic run or event
    /// took an upgrade straight back while its app met its deadline (its first samples on a
    /// sibling's fit, a CPU demand that fell, a clock a re-plan lowered): A->B->A within
    /// 2 s. With it, an upgrade taken back within [`UPGRADE_TRIAL`] past the trial's end
    /// counts as failed (see `Manager::adopt`): right after the trial, a take-back for
    /// power and the next upgrade were the same switch back and forth.
    fn keep_upgrades(&self, now: Nanos, problem: &Problem, plan: Plan) -> Plan {
        let mut pinned = problem.clone();
        if !self.pin_trials(now, &mut pinned) {
            return plan;
        }
        let kept = optimise(&pinned, &self.cfg.optimiser);
        let as_many = kept.unserved.len() <= plan.unserved.len()
            && kept.best_effort.len() <= plan.best_effort.len();
        if as_many && kept.power.0 <= plan.power.0 * (1.0 + 2.0 * self.cfg.gain_threshold) {
            kept
        } else {
            plan
        }
    }

    /// Hysteresis on sub-networks, second half: an upgrade on its own, looked for at most
    /// once per dwell time past the dwell. When the search without caps raises an app, the
    /// search is made again with `upgrade_margin` more margin for the apps it raised, none
    /// of them above where it put them, none back to a sub-network it left a moment ago
    /// (`RETURN_HOLD`) or one an upgrade to failed (`UPGRADE_TRIAL`); it is offered when it
    /// still raises one of them, serves as many apps as the plan in force and gives no
    /// other app a thinner margin than that plan does. It replaces the plan in force by
    /// the rules of a periodic run (an accuracy gain, in energy mode for no more power than
    /// the tie tolerance).
    fn upgrade(&mut self, now: Nanos, problem: &Problem) -> Option<Plan> {
        let extra = self.cfg.upgrade_margin;
        let cur = self.plan.as_ref()?;
        if extra <= 0.0
            || now.saturating_sub(self.plan_since) < self.cfg.dwell
            || self
                .upgrade_checked
                .is_some_and(|t| now.saturating_sub(t) < self.cfg.dwell)
        {
            return None;
        }
        self.upgrade_checked = Some(now);
        // Not while the plan in force had to thin an app's margin to serve them all: a
        // larger sub-network would have even less room. Unless an app gave its floor up
        // to share the devices: back at its floor is the upgrade to look for, and the
        // search judges whether it fits.
        let thinned = problem.apps.iter().any(|a| {
            cur.margin_of(a.id)
                .is_some_and(|m| m < a.margin(&self.cfg.optimiser) - 1e-9)
        });
        let below_floor = cur
            .unserved
            .iter()
            .any(|u| u.1 == UnservedCause::FloorGivenUpToShare);
        if thinned && !below_floor {
            return None;
        }
        let raises = |plan: &Plan, id: u32| {
            plan.subnets
                .iter()
                .any(|(a, s)| *a == id && self.running_subnet(problem, id).is_some_and(|c| *s > c))
        };
        let free = optimise(problem, &self.cfg.optimiser);
        let raised: Vec<u32> = problem
            .apps
            .iter()
            .map(|a| a.id)
            .filter(|id| raises(&free, *id))
            .collect();
        if raised.is_empty() {
            return None;
        }
        // No further up than the search without the wider margin went: at the higher
        // clocks that margin asks for, a larger sub-network can look cheap.
        let mut wider = self.widen(problem, &raised, &free);
        // Not at the cost of an app whose own upgrade is on trial.
        self.pin_trials(now, &mut wider);
        for a in wider.apps.iter_mut() {
            // Not to a sub-network it left a moment ago, nor to one an upgrade to failed.
            let Some(e) = self.apps.get(&a.id) else {
                continue;
            };
            let blocked = [e.left, e.upgrade_block]
                .into_iter()
                .flatten()
                .filter(|(_, until)| now < *until)
                .map(|(s, _)| s)
                .min();
            if let (Some(b), Some(c)) = (blocked, self.running_subnet(problem, a.id)) {
                a.subnets.truncate((b as usize).max(c as usize + 1));
            }
        }
        let up = optimise(&wider, &self.cfg.optimiser);
        // With room: the raised apps with the wider margin, no other app planned with a
        // thinner one than in the plan in force (the optimiser thins every margin before it
        // degrades an app).
        let room = up.margins.iter().all(|(id, m)| {
            let floor = if raised.contains(id) {
                wider
                    .apps
                    .iter()
                    .find(|a| a.id == *id)
                    .map(|a| a.spread_margin)
            } else {
                cur.margin_of(*id)
            };
            floor.is_none_or(|f| *m >= f - 1e-9)
        });
        (room
            && up.unserved.len() <= cur.unserved.len()
            && up.best_effort.len() <= cur.best_effort.len()
            && raised.iter().any(|id| raises(&up, *id)))
        .then_some(up)
    }

    /// Whether every app a plan serves has a full window of inferences within its
    /// deadline bound (`min(deadline, period)`) less `keep_margin`.
    fn measured_meeting(&self, plan: &Plan) -> bool {
        plan.subnets.iter().all(|(id, _)| {
            self.apps.get(id).is_some_and(|e| {
                let t = &e.declared.targets;
                let bound = t
                    .deadline
                    .min(t.period.unwrap_or(t.deadline))
                    .as_millis_f64()
                    * (1.0 - self.cfg.keep_margin);
                e.controller.meeting(bound)
            })
        })
    }

    /// What the saving on trial made miss at this tick, if anything: the first app it
    /// serves with an inference that began under it and ran past its deadline, how many
    /// such inferences finished at this tick (all apps), and whether one is still running.
    fn failed_saving(&self, snap: &Snapshot) -> Option<(u32, u32, bool)> {
        self.saving.as_ref()?;
        let plan = self.plan.as_ref()?;
        let since = self.plan_since;
        let mut out: Option<(u32, u32, bool)> = None;
        for a in &snap.apps {
            if !plan.subnets.iter().any(|s| s.0 == a.id) {
                continue;
            }
            let deadline = a.targets.deadline;
            let finished_late = a
                .finished
                .iter()
                .filter(|inf| {
                    inf.end.saturating_sub(inf.latency) >= since && inf.latency > deadline
                })
                .count() as u32;
            let running_late = a
                .running_since
                .is_some_and(|b| b >= since && snap.now.saturating_sub(b) > deadline);
            if finished_late > 0 || running_late {
                let o = out.get_or_insert((a.id, 0, false));
                o.1 += finished_late;
                o.2 |= running_late;
            }
        }
        out
    }

    /// Makes `plan` the plan in force; returns the plan it replaces.
    fn adopt(&mut self, snap: &Snapshot, plan: Plan) -> Option<Plan> {
        for (app, subnet) in plan.subnets.iter().chain(&plan.best_effort) {
            if let (Some(e), Some(a)) = (
                self.apps.get_mut(app),
                snap.apps.iter().find(|a| a.id == *app),
            ) {
                // An app planned below its floor (or at best effort) has no lower
                // sub-network to step down to that the plan did not already weigh.
                let kept = !plan.unserved.iter().any(|u| u.0 == *app);
                let current = e.controller.subnet();
                if *subnet < current {
                    e.left = Some((current, snap.now.saturating_add(RETURN_HOLD)));
                }
                // Not back up to a sub-network it left a moment ago (see `RETURN_HOLD`).
                // Below the plan's choice is the safe side: less work at the plan's clocks.
                let planned = *subnet;
                let subnet = match e.left {
                    Some((left, until)) if snap.now < until && *subnet >= left => (*subnet)
                        .min(left.saturating_sub(1))
                        .max(current.min(*subnet)),
                    _ => *subnet,
                };
                e.held_back = e
                    .left
                    .filter(|_| subnet < planned)
                    .map(|(_, until)| (planned, until));
                if subnet > current {
                    e.raised = Some((subnet, snap.now));
                } else if subnet < current {
                    if let Some((to, at)) = e.raised.take() {
                        let failed_within = UPGRADE_TRIAL.saturating_add(self.cfg.upgrade_trial);
                        if to <= current && snap.now.saturating_sub(at) < failed_within {
                            e.upgrade_backoff = if e.upgrade_block.is_some() {
                                Nanos(e.upgrade_backoff.0.saturating_mul(2))
                                    .min(UPGRADE_BACKOFF_MAX)
                            } else {
                                UPGRADE_BACKOFF
                            };
                            e.upgrade_block =
                                Some((to, snap.now.saturating_add(e.upgrade_backoff)));
                        }
                    }
                }
                follow_plan(e, a, subnet, kept);
            }
        }
        // An app the plan does not serve at all runs its cheapest sub-network (see
        // `assemble`): its controller follows, and the sub-network it left is held out of
        // reach as for any step down (see `RETURN_HOLD`). Before, the controller stayed
        // where it was, and the next plan to serve the app again took it straight back.
        for (app, _) in &plan.unserved {
            if plan
                .subnets
                .iter()
                .chain(&plan.best_effort)
                .any(|s| s.0 == *app)
            {
                continue;
            }
            if let (Some(e), Some(a)) = (
                self.apps.get_mut(app),
                snap.apps.iter().find(|a| a.id == *app),
            ) {
                let current = e.controller.subnet();
                if current > 0 {
                    e.left = Some((current, snap.now.saturating_add(RETURN_HOLD)));
                    e.held_back = None;
                    e.raised = None;
                    follow_plan(e, a, 0, false);
                }
            }
        }
        // A plan made after an overrunning inference finished has its sample: the plan
        // replaces the boost. One made while it still runs has not, and the boost holds.
        for e in self.apps.values_mut() {
            if e.boost.is_some_and(|b| b.ended) {
                e.boost = None;
            }
            e.judged = 0;
            e.missed = 0;
        }
        self.track_lowerings(snap.now, &plan);
        self.saving = None;
        self.saving_missed = 0;
        self.plan_since = snap.now;
        self.plan.replace(plan)
    }

    /// Notes the domains a new plan lowers, and those it raises within [`LOWER_TRIAL`] of
    /// a lowering: a failed lowering, held off for a backoff that doubles at each failure.
    fn track_lowerings(&mut self, now: Nanos, plan: &Plan) {
        let Some(cur) = &self.plan else {
            return;
        };
        let first = self.cfg.lower_hold;
        if first.0 == 0 {
            return;
        }
        for &(id, f) in &plan.freqs {
            let Some(&(_, old)) = cur.freqs.iter().find(|x| x.0 == id) else {
                continue;
            };
            if f == old {
                continue;
            }
            let t = self.clock_trials.entry(id).or_default();
            if f < old {
                t.lowered = Some(now);
            } else if t
                .lowered
                .take()
                .is_some_and(|at| now.saturating_sub(at) < LOWER_TRIAL)
            {
                t.failed(now, first);
            }
        }
    }

    /// Once [`RETURN_HOLD`] is over, an app it kept below the plan in force's choice takes
    /// that choice. Nothing else would: the plan is not made again while it holds, and an
    /// app whose floor the plan keeps would stay under it.
    fn release_held_back(&mut self, snap: &Snapshot) {
        for a in &snap.apps {
            let Some(e) = self.apps.get_mut(&a.id) else {
                continue;
            };
            let Some((subnet, until)) = e.held_back else {
                continue;
            };
            // A later hold (the controller stepped down meanwhile) is waited for too.
            if snap.now < until || e.left.is_some_and(|(_, u)| snap.now < u) {
                continue;
            }
            e.held_back = None;
            if e.controller.subnet() < subnet {
                let kept = !self
                    .plan
                    .as_ref()
                    .is_some_and(|p| p.unserved.iter().any(|u| u.0 == a.id));
                follow_plan(e, a, subnet, kept);
            }
        }
    }

    /// Notices inferences in flight that overrun (see [`OVERRUN_GIVE_UP`]) and keeps each
    /// app's [`Boost`] up to date. Only apps the plan serves are boosted (an unserved app
    /// already runs at the clocks the plan could give it), not while the app switches
    /// sub-network, and only while no other app shares the GPU with them: a shared GPU's
    /// inferences wait for each other, which the plan budgets as interference and the
    /// learning takes out of each sample, so an inference running long is not by itself a
    /// slow-down of its app, and raising the clocks under the other app's inferences would
    /// hide a plan's real shortfall from the controllers and the latency fits that correct
    /// it.
    fn track_overruns(&mut self, snap: &Snapshot) {
        let margin = self.cfg.keep_margin;
        let plan = &self.plan;
        let gpu_users = snap.apps.iter().filter(|a| a.devices.gpu).count();
        for app in &snap.apps {
            let Some(e) = self.apps.get_mut(&app.id) else {
                continue;
            };
            if let Some(b) = e.boost.as_mut() {
                if app.running_since != Some(b.begin) {
                    b.ended = true;
                }
            }
            let Some(begin) = app.running_since else {
                continue;
            };
            let served = plan
                .as_ref()
                .is_some_and(|p| p.subnets.iter().any(|s| s.0 == app.id));
            if !served || (app.devices.gpu && gpu_users > 1) {
                e.boost = None;
                continue;
            }
            // The first inference of a sub-network (or of the app) pays for the switch or
            // the start-up, which faster clocks do not shorten (see the controller).
            let switching = e.controller.last_seen() != Some(e.controller.subnet());
            let t = &e.declared.targets;
            let bound = t
                .deadline
                .min(t.period.unwrap_or(t.deadline))
                .as_millis_f64()
                * (1.0 - margin);
            let r = clock_ratios(snap, &e.declared);
            // The sub-network asked for, or the one last seen running if the app has not
            // switched yet: whichever is predicted slower.
            let predicted = [Some(e.controller.subnet()), e.controller.last_seen()]
                .into_iter()
                .flatten()
                .filter_map(|s| subnet_option(e, s as usize))
                .map(|o| o.latency_ms(r))
                .fold(0.0f64, f64::max);
            let elapsed = snap.now.saturating_sub(begin).as_millis_f64();
            let same = e.boost.is_some_and(|b| b.begin == begin);
            if elapsed > OVERRUN_GIVE_UP * bound.max(predicted) {
                if let Some(b) = e.boost.as_mut().filter(|_| same) {
                    b.active = false;
                }
                continue;
            }
            if !same
                && !switching
                && elapsed >= bound.max(predicted * (1.0 + 2.0 * self.cfg.optimiser.margin))
            {
                e.boost = Some(Boost {
                    begin,
                    at: snap.now,
                    ratios: r,
                    ended: false,
                    active: true,
                });
            }
        }
    }

    fn assemble(
        &self,
        snap: &Snapshot,
        base: &[BaseChoice],
        optimised: bool,
        trigger: Option<PlanTrigger>,
    ) -> Decision {
        let mut domains: Vec<DomainDecision> = snap
            .domains
            .iter()
            .zip(base)
            .map(|(d, b)| {
                let Some((mut freq, mut reason)) = self.planned(snap, d) else {
                    return DomainDecision {
                        domain: d.id,
                        freq: b.freq,
                        reason: b.reason,
                    };
                };
                let allowed = snap.allowed_max(d);
                for (id, e) in &self.apps {
                    let boosted = e.boost.is_some_and(|b| b.active)
                        && self.is_served(*id)
                        && (uses_domain(snap, &e.declared, d)
                            || (d.kind == DomainKind::Memory && e.declared.devices.gpu));
                    if boosted && allowed > freq {
                        freq = resolve_down(d, allowed);
                        reason = FreqReason::Overrun { app: *id };
                    }
                }
                DomainDecision {
                    domain: d.id,
                    freq,
                    reason,
                }
            })
            .collect();
        follow_for_memory(snap, &mut domains);
        self.keep_boost_under_cap(snap, base, &mut domains);
        let apps = snap
            .apps
            .iter()
            .map(|a| {
                let unserved = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.unserved.iter().find(|u| u.0 == a.id));
                let top = a.library.len().saturating_sub(1) as u32;
                match (unserved, self.apps.get(&a.id)) {
                    // Planned below its floor, or at best effort: the plan's sub-network
                    // (the controller's, which follows it), still reported unserved.
                    (Some((_, cause)), Some(e)) if self.is_served(a.id) => AppDecision {
                        app: a.id,
                        subnet: e.controller.subnet().min(top),
                        reason: SubnetReason::Unserved(*cause),
                    },
                    // At best effort: the plan's sub-network as its controller took it,
                    // within the return hold (see `RETURN_HOLD`; the plan's own choice
                    // took an app degraded a moment ago straight back up); none: the
                    // cheapest.
                    (Some((_, cause)), e) => AppDecision {
                        app: a.id,
                        subnet:
                            match (self.plan.as_ref().and_then(|p| p.best_effort_of(a.id)), e) {
                                (Some(_), Some(e)) => e.controller.subnet(),
                                (Some(s), None) => s,
                                (None, _) => 0,
                            }
                            .min(top),
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
            adopted_plan: trigger.is_some(),
            trigger,
            predicted_power: self.plan.as_ref().map(|p| p.power),
        }
    }

    /// A domain's frequency by the plan in force and the app controllers' floors, or
    /// `None` when the plan does not set it.
    fn planned(&self, snap: &Snapshot, d: &FreqDomain) -> Option<(Hz, FreqReason)> {
        let f = self.plan.as_ref()?.freqs.iter().find(|f| f.0 == d.id)?.1;
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
        Some((freq, reason))
    }

    /// Under a power budget, lowers boosted domains (see [`FreqReason::Overrun`]) a table
    /// step at a time, the fastest relative to its maximum first, until the power model
    /// predicts the decision within the budget or every boost is back at the plan. The
    /// loads are those measured at the clocks in force, which overstates the power of
    /// faster clocks (the same work keeps a faster device busy less): the check errs on
    /// the budget's side.
    fn keep_boost_under_cap(
        &self,
        snap: &Snapshot,
        base: &[BaseChoice],
        domains: &mut [DomainDecision],
    ) {
        let (Some(cap), Some(pm)) = (snap.caps.power, self.power.as_ref()) else {
            return;
        };
        if !domains
            .iter()
            .any(|x| matches!(x.reason, FreqReason::Overrun { .. }))
        {
            return;
        }
        let speed = |d: &FreqDomain, f: Hz| f.as_f64() / d.max_freq().as_f64().max(1.0);
        // Built once; each step down updates the one domain it lowered.
        let mut loads: Vec<DomainLoad> = snap
            .domains
            .iter()
            .zip(base)
            .zip(domains.iter())
            .map(|((d, b), x)| DomainLoad {
                domain: d.id,
                util: b.mean_load,
                speed: speed(d, x.freq),
            })
            .collect();
        while pm.predict(&loads).0 > cap.0 {
            let fastest = snap
                .domains
                .iter()
                .zip(domains.iter_mut())
                .zip(loads.iter_mut())
                .filter(|((_, x), _)| matches!(x.reason, FreqReason::Overrun { .. }))
                .max_by(|(_, a), (_, b)| a.speed.total_cmp(&b.speed));
            let Some(((d, x), load)) = fastest else {
                return;
            };
            // Boosted domains are planned ones (see `assemble`).
            let (planned, reason) = self
                .planned(snap, d)
                .unwrap_or((d.min_freq(), FreqReason::Plan));
            match d.table.iter().rev().find(|f| **f < x.freq) {
                Some(f) if *f > planned => x.freq = *f,
                _ => {
                    x.freq = planned;
                    x.reason = reason;
                }
            }
            load.speed = speed(d, x.freq);
        }
    }

    fn is_served(&self, app: u32) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.subnets.iter().any(|s| s.0 == app))
    }
}

/// A memory domain without activity telemetry that no plan sets (no app, or none planned)
/// follows the clocks of its users, as the stock Jetson EMC scaling raises it with GPU
/// activity: its maximum times the GPU's decided speed (`f / f_max`), rounded up to its
/// table and kept under its limit and caps. With no GPU domain it follows the fastest
/// CPU domain. Left where it was, as before, it stays at whatever it started at (the
/// maximum, on a board whose EMC the agent locks at takeover) and costs power for nothing.
fn follow_for_memory(snap: &Snapshot, domains: &mut [DomainDecision]) {
    let speed_of = |kind: DomainKind, domains: &[DomainDecision]| -> Option<f64> {
        snap.domains
            .iter()
            .zip(domains.iter())
            .filter(|(d, _)| d.kind == kind && (kind != DomainKind::Cpu || snap.online_cpus(d) > 0))
            .map(|(d, x)| x.freq.as_f64() / d.max_freq().as_f64().max(1.0))
            .reduce(f64::max)
    };
    let Some(speed) =
        speed_of(DomainKind::Gpu, domains).or_else(|| speed_of(DomainKind::Cpu, domains))
    else {
        return;
    };
    for (d, x) in snap.domains.iter().zip(domains.iter_mut()) {
        if d.kind != DomainKind::Memory || x.reason != FreqReason::NoTelemetry {
            continue;
        }
        let target = Hz((d.max_freq().as_f64() * speed.clamp(0.0, 1.0)).ceil() as u64);
        let f = crate::snapshot::resolve_at_least(&d.table, target).min(snap.allowed_max(d));
        x.freq = resolve_down(d, f);
        x.reason = FreqReason::FollowsUsers;
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

/// Sets the app's controller to the plan's sub-network. An app the plan keeps its floor
/// for steps down no further than its lowest sub-network at the floor; one planned below
/// its floor (or at best effort) has no lower sub-network the plan did not already weigh.
fn follow_plan(e: &mut AppEntry, a: &AppState, subnet: u32, kept: bool) {
    let lowest = if kept {
        lowest_meeting_floor(a).min(subnet)
    } else {
        subnet
    };
    e.controller
        .follow_plan(a.targets.deadline.as_millis_f64(), subnet, lowest);
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
        declared_ms: e.prior_ms.get(s).copied().unwrap_or(0.0),
    })
}

/// Counts a sample towards a lasting slow-down (see [`BIAS_SAMPLES`]): slower than the
/// constraints predict by more than the optimiser's margin extends the run (the first one records
/// the fits as they stand, before the run's samples move them), anything else ends it.
fn track_slow_down(
    e: &mut AppEntry,
    subnet: usize,
    r: ClockRatios,
    ms: f64,
    band: f64,
    ends_run: bool,
) {
    let predicted = subnet_option(e, subnet).map_or(ms, |o| o.latency_ms(r));
    if ms <= predicted * (1.0 + band) {
        if ends_run {
            e.slow_run = 0;
        }
        return;
    }
    if e.slow_run == 0 {
        e.before_slow.clear();
        for s in 0..e.models.len() {
            let split = sibling_coefs(&e.models, &e.prior_ms, s).unwrap_or(e.models[s].coefs());
            e.before_slow
                .push((split, sibling_coefs(&e.cautious, &e.prior_ms, s)));
        }
        e.slow_ratio = f64::INFINITY;
    }
    e.slow_run += 1;
    let before = e
        .before_slow
        .get(subnet)
        .map_or(predicted, |(split, cautious)| {
            let l = split.latency_ms(r);
            cautious.map_or(l, |c| l.max(c.latency_ms(r)))
        });
    e.slow_ratio = e.slow_ratio.min(ms / before.max(1e-3));
}

/// Re-seeds every observed latency fit of an app at the fit recorded as a run of slow
/// samples started, times the least ratio of those samples to their predictions: a
/// lasting slow-down (see [`BIAS_SAMPLES`]). The split between clocks learned before it is
/// kept as the prior, the cautious fit is anchored at its scaled full-clock latency, and
/// the samples that made the old fits are dropped. Returns the factor.
fn rescale(e: &mut AppEntry, forgetting: f64) -> f64 {
    let k = e.slow_ratio.max(1.0);
    for (s, (split, cautious)) in e.before_slow.iter().enumerate() {
        // Sub-networks not observed yet keep borrowing from an observed sibling.
        let n = e.models[s].samples();
        if n > 0 {
            e.models[s] = LatencyModel::seeded(split.scaled(k), forgetting).with_samples(n);
        }
        let n = e.cautious[s].samples();
        if n > 0 {
            let flat = cautious.unwrap_or(*split);
            e.cautious[s] =
                LatencyModel::anchored(flat.scaled(k), forgetting, ANCHOR_WEIGHT).with_samples(n);
        }
    }
    e.slow_run = 0;
    e.slow_ratio = f64::INFINITY;
    e.rejected_last.iter_mut().for_each(|r| *r = false);
    k
}

/// The share of a sub-network's latency that is device time (GPU and memory-bound parts)
/// by its split latency model, at the given clocks.
fn device_fraction(e: &AppEntry, s: usize, r: ClockRatios) -> f64 {
    let Some(c) = subnet_coefs(e, s) else {
        return 0.0;
    };
    let total = c.latency_ms(r);
    if total <= 1e-9 {
        return 0.0;
    }
    ((c.gpu_ms * r.gpu + c.mem_ms * r.mem) / total).clamp(0.0, 1.0)
}

fn app_cpu_domains<'a>(
    snap: &'a Snapshot,
    app: &'a AppState,
) -> impl Iterator<Item = &'a FreqDomain> {
    let any_listed = snap.domains.iter().any(|d| {
        d.kind == DomainKind::Cpu && app.cpu_domains.contains(&d.id) && snap.online_cpus(d) > 0
    });
    let listed = &app.cpu_domains;
    snap.domains.iter().filter(move |d| {
        d.kind == DomainKind::Cpu
            && snap.online_cpus(d) > 0
            && (!any_listed || listed.contains(&d.id))
    })
}

/// Adds to `held` (one entry per domain of the snapshot) the CPU time, in CPUs' worth over
/// the window from `from` to the snapshot, that the apps' own inference threads held on
/// each CPU domain: each inference's run from its begin mark to its end, shared evenly
/// between the CPU domains its app runs on. A thread that waits for the GPU spins on its
/// CPU (CUDA's default), so the whole run counts. This is an upper bound for a thread that
/// sleeps while it waits.
fn own_threads(snap: &Snapshot, from: Nanos, held: &mut [f64]) {
    let window = snap.now.saturating_sub(from);
    if window.0 == 0 {
        return;
    }
    for a in snap.apps.iter().filter(|a| a.devices.cpu) {
        let spans = a
            .finished
            .iter()
            .map(|i| (i.end.saturating_sub(i.latency), i.end))
            .chain(a.running_since.map(|b| (b, snap.now)));
        let ran: u64 = spans
            .map(|(b, e)| e.min(snap.now).saturating_sub(b.max(from)).0)
            .sum();
        if ran == 0 {
            continue;
        }
        let share = ran as f64 / window.0 as f64 / app_cpu_domains(snap, a).count().max(1) as f64;
        for d in app_cpu_domains(snap, a) {
            if let Some(i) = snap.domains.iter().position(|x| x.id == d.id) {
                held[i] += share;
            }
        }
    }
}

/// A CPU cluster with a CPU online that no app runs on (see [`SPILL_HOLD`]).
fn free_cluster(snap: &Snapshot, apps: &BTreeMap<u32, AppEntry>, c: &FreqDomain) -> bool {
    c.kind == DomainKind::Cpu
        && snap.online_cpus(c) > 0
        && !apps.values().any(|e| uses_domain(snap, &e.declared, c))
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

/// The clocks an inference that ran from `start` to `end` ran at: each domain's `f_max / f`
/// averaged over the run, weighted by time, from the changes recorded since it began (see
/// [`Manager::track_clocks`]); for a run with no change, the snapshot's clocks.
///
/// Labelled with the snapshot's clocks alone, an inference that ran across a change
/// teaches the latency fits that the clocks matter less than they do: a slow inference at
/// low clocks that a raise sped up is learned at the raised clocks, a fast one at high
/// clocks that ends after a cut at the low ones. The plans then lower the clocks further,
/// and fits and plans feed each other until the plan sits at the lowest clocks, held up
/// only by overrun boosts (an app left so after a CPU load went away, missing nearly every
/// frame until the end).
fn ran_at(
    changes: &VecDeque<ClockChange>,
    snap: &Snapshot,
    app: &AppState,
    start: Nanos,
    end: Nanos,
) -> ClockRatios {
    let now_ratios = clock_ratios(snap, app);
    if end <= start || changes.is_empty() || snap.now.saturating_sub(start) > CLOCK_HISTORY {
        return now_ratios;
    }
    // Mean of f_max / f over [start, end] for one domain: walking back from now, the
    // frequency before each change is its `from`.
    let mean_ratio = |d: &FreqDomain| -> f64 {
        let max = d.max_freq().as_f64();
        let mut f = d.cur;
        let mut until = snap.now.max(end);
        let mut weighted = 0.0;
        for c in changes.iter().rev().filter(|c| c.domain == d.id) {
            if c.at <= start {
                break;
            }
            // `f` held from c.at to `until`.
            let from = c.at.max(start);
            let to = until.min(end);
            if to > from {
                weighted += (to.0 - from.0) as f64 * max / f.as_f64().max(1.0);
            }
            until = c.at;
            f = c.from;
        }
        let to = until.min(end);
        if to > start {
            weighted += (to.0 - start.0) as f64 * max / f.as_f64().max(1.0);
        }
        weighted / (end.0 - start.0) as f64
    };
    let first = |k: DomainKind| snap.domains.iter().find(|d| d.kind == k);
    ClockRatios {
        gpu: first(DomainKind::Gpu).map_or(now_ratios.gpu, mean_ratio),
        cpu: app_cpu_domains(snap, app)
            .map(mean_ratio)
            .fold(1.0, f64::max),
        mem: first(DomainKind::Memory).map_or(now_ratios.mem, mean_ratio),
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
