//! dnngov-policy: the decisions of the dnngov governor as pure functions of a telemetry
//! snapshot. No I/O, no clock reads, no threads: for a given sequence of snapshots the
//! [`Manager`] returns the same decisions, so the agent and the simulator run the same code.
//!
//! Three levels (see `docs/policy.md`):
//! 1. [`governor`]: a schedutil-equivalent base governor per frequency domain, plus
//!    ondemand, conservative, performance and powersave as baselines.
//! 2. [`controller`]: a per-app controller reacting to each finished inference.
//! 3. [`optimiser`]: a joint choice of every app's sub-network and every domain's
//!    frequency, using the online [`model`]s.
//!
//! ```
//! use dnngov_policy::*;
//!
//! let table: Vec<Hz> = [600, 1200, 1800].map(Hz::from_mhz).to_vec();
//! let snapshot = |ms: u64, busy_ms: u64| Snapshot {
//!     now: Nanos::from_millis(ms),
//!     domains: vec![FreqDomain {
//!         id: 0,
//!         kind: DomainKind::Cpu,
//!         table: table.clone(),
//!         cur: Hz::from_mhz(1800),
//!         max_limit: Hz::from_mhz(1800),
//!         cpus: vec![0, 1],
//!         busy: None,
//!     }],
//!     cpus: (0..2)
//!         .map(|cpu| CpuSample { cpu, online: true, busy: Nanos::from_millis(busy_ms) })
//!         .collect(),
//!     apps: vec![],
//!     power: None,
//!     caps: Caps::default(),
//! };
//! let mut manager = Manager::new(Config::default());
//! manager.step(&snapshot(0, 0));
//! // Idle: with no app registered, schedutil lowers the clock, once it has wanted less
//! // for the base governor's down rate limit (half a second).
//! let held = manager.step(&snapshot(10, 0));
//! assert_eq!(held.domains[0].freq, Hz::from_mhz(1800));
//! let decision = manager.step(&snapshot(510, 0));
//! assert_eq!(decision.domains[0].freq, Hz::from_mhz(600));
//! assert_eq!(decision.domains[0].reason, FreqReason::Base(GovernorKind::Schedutil));
//! ```

pub mod controller;
pub mod decision;
pub mod governor;
pub mod manager;
pub mod model;
pub mod optimiser;
pub mod platform;
pub mod snapshot;
pub mod units;

pub use controller::ControllerConfig;
pub use decision::{
    AppDecision, Decision, DomainDecision, FreqReason, PlanTrigger, SubnetReason, UnservedCause,
};
pub use governor::{BaseGovernor, GovernorConfig, GovernorKind};
pub use manager::{Config, Manager};
pub use model::{DomainPower, PlatformPower, VoltageCurve};
pub use optimiser::{Mode, OptimiserConfig, Plan};
pub use snapshot::{
    AppState, Caps, CpuSample, Devices, DomainCap, DomainKind, FreqDomain, Inference, Snapshot,
    SubNetwork, Targets,
};
pub use units::{Hz, Nanos, Watts};
