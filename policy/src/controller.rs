//! Level 2: the per-app controller. Between optimiser plans it reacts to every finished
//! inference: repeated misses step the sub-network down at once (or, at the lowest
//! sub-network that meets the accuracy floor, raise the frequency floors of the app's
//! domains); slack that persists gives back frequency first, then steps back up towards the
//! plan. Asymmetric on purpose: a miss costs a deadline, slack only costs energy.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::decision::SubnetReason;
use crate::snapshot::Inference;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControllerConfig {
    /// Inferences in the latency window.
    pub window: usize,
    /// Consecutive misses that trigger a step down.
    pub misses_to_step_down: u32,
    /// Slack is "persistent" when the window's worst latency stays under
    /// `deadline * (1 - up_slack)` ...
    pub up_slack: f64,
    /// ... for this many consecutive inferences.
    pub slack_to_step_up: u32,
    /// Most table steps a controller may raise a domain above the plan.
    pub max_floor_steps: u32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            window: 8,
            misses_to_step_down: 3,
            up_slack: 0.2,
            slack_to_step_up: 20,
            max_floor_steps: 3,
        }
    }
}

/// What one inference made the controller do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerAction {
    None,
    SteppedDown {
        misses: u32,
    },
    SteppedUp,
    RaisedFloor,
    LoweredFloor,
    /// Still missing at the lowest allowed sub-network and the highest floor it may ask
    /// for: only the optimiser can help.
    Exhausted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppController {
    cfg: ControllerConfig,
    deadline_ms: f64,
    window: VecDeque<f64>,
    misses: u32,
    slack: u32,
    subnet: u32,
    /// The plan's sub-network: step-ups stop there, since the plan chose it for energy.
    ceiling: u32,
    /// The lowest sub-network meeting the accuracy floor.
    lowest: u32,
    floor_steps: u32,
    /// The sub-network of the last inference seen. The first inference of a sub-network
    /// after another one (or the app's first inference) pays for the switch or the
    /// start-up (a rebuild, seconds in Dynamic-OFA's logs; 244 ms measured on a TX2): it
    /// says nothing about the sub-network's steady latency, so it is neither judged nor
    /// learned. Switches are detected from what the app reports, so a switch the
    /// controller did not ask for (the app's start, a plan adopted before the controller
    /// knew the app's sub-network) is caught too.
    #[serde(default)]
    last_seen: Option<u32>,
    reason: SubnetReason,
}

impl AppController {
    pub fn new(cfg: ControllerConfig, deadline_ms: f64, subnet: u32, lowest: u32) -> Self {
        AppController {
            cfg,
            deadline_ms,
            window: VecDeque::with_capacity(cfg.window),
            misses: 0,
            slack: 0,
            subnet,
            ceiling: subnet,
            lowest: lowest.min(subnet),
            floor_steps: 0,
            last_seen: None,
            reason: SubnetReason::Plan,
        }
    }

    /// Adopts a new plan: its sub-network becomes both the current one and the ceiling.
    pub fn follow_plan(&mut self, deadline_ms: f64, subnet: u32, lowest: u32) {
        *self = AppController {
            last_seen: self.last_seen,
            ..AppController::new(self.cfg, deadline_ms, subnet, lowest)
        };
    }

    pub fn subnet(&self) -> u32 {
        self.subnet
    }

    /// The sub-network of the last inference seen, if any.
    pub fn last_seen(&self) -> Option<u32> {
        self.last_seen
    }

    pub fn reason(&self) -> SubnetReason {
        self.reason
    }

    /// Whether a full window of the latest inferences of its sub-network all finished
    /// within `bound_ms`: measured evidence that the configuration in force serves the app,
    /// whatever the models predict.
    pub fn meeting(&self, bound_ms: f64) -> bool {
        self.window.len() == self.cfg.window.max(1) && self.window.iter().all(|l| *l <= bound_ms)
    }

    /// Table steps the app asks above the plan on the domains it uses.
    pub fn floor_steps(&self) -> u32 {
        self.floor_steps
    }

    /// Feeds one finished inference. `fits(s)` says whether sub-network `s` is predicted to
    /// meet the deadline at the current clocks; it guards step-ups so that the controller
    /// never probes a sub-network the models say would miss. Returns the action and
    /// whether the sample is representative (usable by the latency model).
    pub fn on_inference(
        &mut self,
        inf: &Inference,
        fits: impl Fn(u32) -> bool,
    ) -> (ControllerAction, bool) {
        let switched = self.last_seen != Some(inf.subnet);
        self.last_seen = Some(inf.subnet);
        if inf.subnet != self.subnet {
            // The app has not switched yet: its latency belongs to the old choice.
            return (ControllerAction::None, !switched);
        }
        if switched {
            return (ControllerAction::None, false);
        }
        let lat = inf.latency.as_millis_f64();
        if self.window.len() == self.cfg.window.max(1) {
            self.window.pop_front();
        }
        self.window.push_back(lat);
        if lat > self.deadline_ms {
            self.misses += 1;
            self.slack = 0;
        } else {
            self.misses = 0;
        }
        if self.misses >= self.cfg.misses_to_step_down.max(1) {
            let misses = self.misses;
            self.misses = 0;
            self.window.clear();
            if self.subnet > self.lowest {
                self.subnet -= 1;
                self.reason = SubnetReason::StepDown { misses };
                return (ControllerAction::SteppedDown { misses }, true);
            }
            if self.floor_steps < self.cfg.max_floor_steps {
                self.floor_steps += 1;
                return (ControllerAction::RaisedFloor, true);
            }
            return (ControllerAction::Exhausted, true);
        }
        let relaxed = self.window.len() == self.cfg.window.max(1)
            && self
                .window
                .iter()
                .all(|l| *l <= self.deadline_ms * (1.0 - self.cfg.up_slack));
        self.slack = if relaxed { self.slack + 1 } else { 0 };
        if self.slack >= self.cfg.slack_to_step_up.max(1) {
            self.slack = 0;
            if self.floor_steps > 0 {
                self.floor_steps -= 1;
                return (ControllerAction::LoweredFloor, true);
            }
            if self.subnet < self.ceiling && fits(self.subnet + 1) {
                self.subnet += 1;
                self.window.clear();
                self.reason = SubnetReason::StepUp;
                return (ControllerAction::SteppedUp, true);
            }
        }
        (ControllerAction::None, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Nanos;

    fn inf(ms: f64, subnet: u32) -> Inference {
        Inference {
            end: Nanos(0),
            latency: Nanos::from_millis_f64(ms),
            subnet,
        }
    }

    #[test]
    fn steps_down_after_k_consecutive_misses_only() {
        let mut c = AppController::new(ControllerConfig::default(), 60.0, 4, 2);
        // Misses broken by a hit do not count.
        for ms in [70.0, 70.0, 50.0, 70.0, 70.0] {
            assert_eq!(
                c.on_inference(&inf(ms, 4), |_| true).0,
                ControllerAction::None
            );
        }
        assert_eq!(
            c.on_inference(&inf(70.0, 4), |_| true).0,
            ControllerAction::SteppedDown { misses: 3 }
        );
        assert_eq!(c.subnet(), 3);
        // Late inferences of the old sub-network are ignored.
        for _ in 0..5 {
            assert_eq!(
                c.on_inference(&inf(70.0, 4), |_| true).0,
                ControllerAction::None
            );
        }
        assert_eq!(c.subnet(), 3);
    }

    #[test]
    fn at_floor_raises_frequency_then_gives_up() {
        let cfg = ControllerConfig {
            max_floor_steps: 1,
            ..ControllerConfig::default()
        };
        let mut c = AppController::new(cfg, 60.0, 2, 2);
        // The app's first inference pays its start-up: neither judged nor learned.
        assert_eq!(
            c.on_inference(&inf(900.0, 2), |_| true),
            (ControllerAction::None, false)
        );
        let mut actions = Vec::new();
        for _ in 0..6 {
            actions.push(c.on_inference(&inf(90.0, 2), |_| true).0);
        }
        assert_eq!(actions[2], ControllerAction::RaisedFloor);
        assert_eq!(actions[5], ControllerAction::Exhausted);
        assert_eq!(c.subnet(), 2);
        assert_eq!(c.floor_steps(), 1);
    }

    #[test]
    fn steps_up_only_after_persistent_slack_and_when_predicted_to_fit() {
        let cfg = ControllerConfig::default();
        let mut c = AppController::new(cfg, 60.0, 4, 0);
        c.on_inference(&inf(70.0, 4), |_| true); // the first, skipped
        for _ in 0..3 {
            c.on_inference(&inf(70.0, 4), |_| true);
        }
        assert_eq!(c.subnet(), 3);
        c.on_inference(&inf(200.0, 3), |_| true); // the switch's rebuild, skipped
        let mut stepped = None;
        for i in 0..100 {
            if c.on_inference(&inf(30.0, 3), |_| false).0 == ControllerAction::SteppedUp {
                stepped = Some(i);
            }
        }
        assert_eq!(stepped, None, "the model said the next one would miss");
        for i in 0..100 {
            if c.on_inference(&inf(30.0, 3), |_| true).0 == ControllerAction::SteppedUp {
                stepped = Some(i);
                break;
            }
        }
        // Needs a full window, then `slack_to_step_up` relaxed inferences.
        assert!(stepped.is_some());
        assert_eq!(c.subnet(), 4);
        // Never above the plan's ceiling.
        c.on_inference(&inf(30.0, 4), |_| true);
        for _ in 0..200 {
            c.on_inference(&inf(10.0, 4), |_| true);
        }
        assert_eq!(c.subnet(), 4);
    }

    /// A switch the controller did not ask for (the app's start on another sub-network, a
    /// plan adopted before the app's first report) is detected from what the app reports:
    /// the first inference of the new sub-network, with its one-off cost, is neither judged
    /// nor learned, and the next ones are.
    #[test]
    fn first_inference_after_any_switch_is_skipped() {
        let mut c = AppController::new(ControllerConfig::default(), 60.0, 2, 2);
        // The app starts on sub-network 4 (its own default): old choice, usable but not
        // judged; then switches to 2 and pays 244 ms once.
        assert_eq!(
            c.on_inference(&inf(56.0, 4), |_| true),
            (ControllerAction::None, false)
        );
        assert_eq!(
            c.on_inference(&inf(56.0, 4), |_| true),
            (ControllerAction::None, true)
        );
        assert_eq!(
            c.on_inference(&inf(290.0, 2), |_| true),
            (ControllerAction::None, false)
        );
        // Two more slow ones would step down (or raise a floor) if the first had counted.
        for _ in 0..2 {
            assert_eq!(
                c.on_inference(&inf(70.0, 2), |_| true),
                (ControllerAction::None, true)
            );
        }
        assert_eq!(c.floor_steps(), 0);
        assert_eq!(
            c.on_inference(&inf(70.0, 2), |_| true).0,
            ControllerAction::RaisedFloor
        );
    }

    #[test]
    fn slack_just_under_deadline_is_not_enough_to_step_up() {
        let mut c = AppController::new(ControllerConfig::default(), 60.0, 3, 0);
        c.follow_plan(60.0, 3, 0);
        c.on_inference(&inf(61.0, 3), |_| true); // the first, skipped
        for _ in 0..3 {
            c.on_inference(&inf(61.0, 3), |_| true);
        }
        assert_eq!(c.subnet(), 2);
        for _ in 0..500 {
            c.on_inference(&inf(55.0, 2), |_| true);
        }
        assert_eq!(
            c.subnet(),
            2,
            "hysteresis: 55 ms is under 60 but not under 48"
        );
    }
}
