//! The output of a decision: a frequency per domain, a sub-network per app, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::governor::GovernorKind;
use crate::units::{Hz, Watts};

/// Why a domain gets its frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreqReason {
    /// No app constrains the domain: the base governor chose.
    Base(GovernorKind),
    /// The base governor wanted a change but its rate limit has not elapsed.
    RateLimited(GovernorKind),
    /// schedutil keeps a busy single-CPU domain from slowing down.
    HeldWhileBusy,
    /// No busy-time telemetry for this device: its frequency is left as it is.
    NoTelemetry,
    /// A memory clock without busy-time telemetry that no plan sets: it follows the speed
    /// of the GPU's decided clock (of the fastest CPU domain when there is no GPU), as the
    /// stock EMC scaling follows GPU activity.
    FollowsUsers,
    /// The system optimiser's plan.
    Plan,
    /// An app controller raised the plan's frequency after repeated misses.
    AppFloor { app: u32 },
    /// The app's inference in flight has run past its prediction: the domain runs at the
    /// highest clock allowed (under the power budget) until the slow-down is measured and
    /// planned for, or the next inference shows it was a one-off.
    Overrun { app: u32 },
}

/// Why an app gets its sub-network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubnetReason {
    /// The system optimiser's plan.
    Plan,
    /// The app controller stepped down after this many consecutive misses.
    StepDown { misses: u32 },
    /// The app controller stepped back up after persistent slack.
    StepUp,
    /// No plan could serve the app; it gets its cheapest sub-network.
    Unserved(UnservedCause),
}

/// Why an app cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnservedCause {
    /// No sub-network of its library reaches its accuracy floor.
    AccuracyFloorUnreachable,
    /// Even alone, at the highest allowed clocks, no sub-network above its floor meets its
    /// deadline.
    DeadlineUnreachable,
    /// Serving it together with higher-priority apps is infeasible (deadlines, shared
    /// devices, power cap): it was degraded first because of its priority.
    DegradedForPriority,
    /// At its accuracy floor it cannot be served together with the other apps of its
    /// priority (deadlines, shared devices, power cap): it runs below its floor so that
    /// every deadline is kept, the others' and its own.
    FloorGivenUpToShare,
}

/// A sentence for logs and status output, e.g. "unserved, told to run its cheapest
/// sub-network: it cannot be served together with ...".
impl fmt::Display for FreqReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |k: &GovernorKind| format!("{k:?}").to_lowercase();
        match self {
            FreqReason::Base(k) => write!(f, "{} (no app constrains it)", kind(k)),
            FreqReason::RateLimited(k) => write!(f, "{} rate limit", kind(k)),
            FreqReason::HeldWhileBusy => f.write_str("held: the CPU stayed busy"),
            FreqReason::NoTelemetry => f.write_str("left as is: no utilisation telemetry"),
            FreqReason::FollowsUsers => {
                f.write_str("follows the GPU's clock (no utilisation telemetry of its own)")
            }
            FreqReason::Plan => f.write_str("the optimiser's plan for the apps"),
            FreqReason::AppFloor { app } => write!(f, "raised for app {app}'s misses"),
            FreqReason::Overrun { app } => {
                write!(
                    f,
                    "raised: app {app}'s inference in flight overran its prediction"
                )
            }
        }
    }
}

impl fmt::Display for SubnetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubnetReason::Plan => write!(f, "the optimiser's plan"),
            SubnetReason::StepDown { misses } => {
                write!(f, "stepped down after {misses} consecutive deadline misses")
            }
            SubnetReason::StepUp => write!(f, "stepped back up after persistent slack"),
            SubnetReason::Unserved(
                cause @ (UnservedCause::DeadlineUnreachable | UnservedCause::FloorGivenUpToShare),
            ) => write!(f, "served below its accuracy floor: {cause}"),
            SubnetReason::Unserved(cause) => {
                write!(f, "unserved, told to run its cheapest sub-network: {cause}")
            }
        }
    }
}

impl fmt::Display for UnservedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnservedCause::AccuracyFloorUnreachable => {
                "no sub-network of its library reaches its accuracy floor"
            }
            UnservedCause::DeadlineUnreachable => {
                "no sub-network meeting its accuracy floor is predicted to meet its deadline \
                 (less the margin), even alone at the highest allowed clocks"
            }
            UnservedCause::DegradedForPriority => {
                "it cannot be served together with the apps of higher priority (on equal \
                 priority, those with lower ids, i.e. registered earlier): their deadlines, \
                 shared devices or the power cap leave no room for it"
            }
            UnservedCause::FloorGivenUpToShare => {
                "at its accuracy floor it cannot be served together with the other apps of \
                 its priority (deadlines, shared devices or the power cap): it runs below \
                 the floor so that every deadline is kept"
            }
        })
    }
}

/// What made the policy adopt a new plan at a tick: an event that calls for one at once,
/// or the rule of a periodic run that let the new plan replace the one in force.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlanTrigger {
    /// The first plan.
    First,
    /// An app registered, left or changed its targets.
    AppsChanged,
    /// The hardware changed: CPUs offline or back, a frequency or power cap.
    HardwareChanged,
    /// An app's inferences ran slower than its latency fits by more than the margin (a
    /// lasting slow-down): its fits were scaled by `ratio`.
    SlowDown { app: u32, ratio: f64 },
    /// An app's controller missed deadlines with no sub-network left to step down to.
    ControllerExhausted { app: u32 },
    /// The shared GPU is busier than the plan in force allows for.
    GpuBelowDemand,
    /// A CPU cluster's CPUs are all busy while an app there misses.
    CpuSaturated,
    /// The GPU is busy all the time while an app that uses it misses.
    GpuSaturated,
    /// A periodic run: the plan in force is predicted to break under the latest fits.
    PredictedBreak,
    /// A periodic run: an app's margin widened (measured misses or spread) since the plan
    /// in force was made.
    MarginWidened,
    /// A periodic run: an app the plan in force serves measurably misses.
    AppMissing,
    /// A periodic run: the new plan serves more apps.
    ServesMore,
    /// A periodic run: the plan in force runs a CPU cluster under its measured demand.
    BelowCpuDemand,
    /// A periodic run: the new plan is predicted to save power.
    SavesPower,
    /// An app the plan that saved power serves missed a deadline within
    /// [`SAVING_TRIAL`](crate::manager::SAVING_TRIAL) of it: the plan it replaced is back.
    SavingFailed { app: u32 },
    /// A periodic run: the new plan buys accuracy.
    GainsAccuracy,
    /// An app taken up a sub-network on its own (an upgrade or a floor given back).
    Upgrade,
}

impl PlanTrigger {
    /// A short name of the cause, for metrics labels: `first`, `apps_changed`,
    /// `hardware_changed`, `slow_down`, `controller_exhausted`, `gpu_below_demand`,
    /// `cpu_saturated`, `gpu_saturated`, `predicted_break`, `margin_widened`,
    /// `app_missing`, `serves_more`, `below_cpu_demand`, `saves_power`, `saving_failed`,
    /// `gains_accuracy`, `upgrade`.
    pub fn name(&self) -> &'static str {
        match self {
            PlanTrigger::First => "first",
            PlanTrigger::AppsChanged => "apps_changed",
            PlanTrigger::HardwareChanged => "hardware_changed",
            PlanTrigger::SlowDown { .. } => "slow_down",
            PlanTrigger::ControllerExhausted { .. } => "controller_exhausted",
            PlanTrigger::GpuBelowDemand => "gpu_below_demand",
            PlanTrigger::CpuSaturated => "cpu_saturated",
            PlanTrigger::GpuSaturated => "gpu_saturated",
            PlanTrigger::PredictedBreak => "predicted_break",
            PlanTrigger::MarginWidened => "margin_widened",
            PlanTrigger::AppMissing => "app_missing",
            PlanTrigger::ServesMore => "serves_more",
            PlanTrigger::BelowCpuDemand => "below_cpu_demand",
            PlanTrigger::SavesPower => "saves_power",
            PlanTrigger::SavingFailed { .. } => "saving_failed",
            PlanTrigger::GainsAccuracy => "gains_accuracy",
            PlanTrigger::Upgrade => "upgrade",
        }
    }
}

impl fmt::Display for PlanTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanTrigger::First => f.write_str("first plan"),
            PlanTrigger::AppsChanged => f.write_str("the apps or their targets changed"),
            PlanTrigger::HardwareChanged => f.write_str("the hardware or its caps changed"),
            PlanTrigger::SlowDown { app, ratio } => write!(
                f,
                "app {app} ran slower than its latency fits: scaled by {ratio:.2}"
            ),
            PlanTrigger::ControllerExhausted { app } => {
                write!(
                    f,
                    "app {app} missed with no sub-network left to step down to"
                )
            }
            PlanTrigger::GpuBelowDemand => f.write_str("the GPU is busier than planned for"),
            PlanTrigger::CpuSaturated => {
                f.write_str("a CPU cluster is saturated while an app there misses")
            }
            PlanTrigger::GpuSaturated => {
                f.write_str("the GPU is saturated while an app on it misses")
            }
            PlanTrigger::PredictedBreak => f.write_str("the plan in force is predicted to break"),
            PlanTrigger::MarginWidened => f.write_str("an app's margin widened"),
            PlanTrigger::AppMissing => f.write_str("an app of the plan in force misses"),
            PlanTrigger::ServesMore => f.write_str("the new plan serves more apps"),
            PlanTrigger::BelowCpuDemand => {
                f.write_str("the plan in force runs a CPU cluster under its demand")
            }
            PlanTrigger::SavesPower => f.write_str("the new plan saves power"),
            PlanTrigger::SavingFailed { app } => write!(
                f,
                "app {app} missed a deadline under the plan that saved power: the plan before it is back"
            ),
            PlanTrigger::GainsAccuracy => f.write_str("the new plan buys accuracy"),
            PlanTrigger::Upgrade => f.write_str("an app goes up a sub-network"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainDecision {
    pub domain: u32,
    pub freq: Hz,
    pub reason: FreqReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppDecision {
    pub app: u32,
    /// Index in the app's library.
    pub subnet: u32,
    pub reason: SubnetReason,
}

/// What the policy decided at one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// One entry per domain of the snapshot, in the snapshot's order.
    pub domains: Vec<DomainDecision>,
    /// One entry per app of the snapshot, in the snapshot's order.
    pub apps: Vec<AppDecision>,
    /// Whether the system optimiser ran at this tick.
    pub optimised: bool,
    /// Whether a new optimiser plan was adopted at this tick.
    pub adopted_plan: bool,
    /// What made it adopt one, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<PlanTrigger>,
    /// Predicted board power of the plan in force, when there is one.
    pub predicted_power: Option<Watts>,
}

impl Decision {
    pub fn freq_of(&self, domain: u32) -> Option<Hz> {
        self.domains
            .iter()
            .find(|d| d.domain == domain)
            .map(|d| d.freq)
    }

    pub fn subnet_of(&self, app: u32) -> Option<u32> {
        self.apps.iter().find(|a| a.app == app).map(|a| a.subnet)
    }
}
