//! dnngov-sim: virtual boards and DNN workloads in virtual time, to run and measure the real
//! `dnngov-policy` decisions without a board, side by side with the kernel's governors, a
//! sub-network-only switcher and an exhaustive oracle, on the same workload and seed.
//!
//! - [`platform`]: board descriptions (`platforms/*.toml`), the ground truth of power.
//! - [`scenario`]: workload files (`sim/scenarios/*.toml`): apps, background load, events.
//! - [`engine`]: the virtual-time simulation and the [`Strategy`] a governor implements.
//! - [`governors`]: the compared governors, adapters to the policy crate.
//! - [`generate`]: random scenarios from a seed; [`sweep`]: many of them, judged by the
//!   oracle.
//! - [`oracle`]: the best fixed configuration per phase, found with the ground truth.
//! - [`report`]: comparison tables and SVG plots.
//! - [`vboard`]: the same model behind a sysfs-like tree, in real time.
//! - [`cgroup`]: a virtual board's CPU clusters as cgroups that really throttle processes.

pub mod cgroup;
pub mod engine;
pub mod generate;
pub mod governors;
pub mod oracle;
pub mod platform;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sweep;
pub mod vboard;

pub use engine::{run, Control, Metrics, RunResult, Series, Strategy};
pub use platform::Platform;
pub use scenario::Scenario;
