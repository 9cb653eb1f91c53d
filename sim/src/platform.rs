//! Board descriptions: defined in `dnngov-policy` (the agent reads the same files), used
//! here as the simulator's ground truth.

pub use dnngov_policy::platform::{DomainSpec, Kind, Platform, PowerSensor};
