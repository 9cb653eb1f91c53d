//! dnngov client shim: what a DNN app links to be governed by `dnngovd`.
//!
//! ```no_run
//! use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
//! use std::time::Duration;
//!
//! let spec = AppSpec {
//!     name: "detector".into(),
//!     devices: vec![Device::Gpu],
//!     subnets: vec![
//!         Subnet { id: 0, name: "small".into(), accuracy_pct: 74.2, latency_ms: Some(41.2), relative_cost: None },
//!         Subnet { id: 1, name: "large".into(), accuracy_pct: 79.0, latency_ms: Some(61.7), relative_cost: None },
//!     ],
//!     target: Target { deadline_ms: 60.0, period_ms: Some(66.7), accuracy_floor_pct: Some(74.0), priority: 0 },
//!     default_subnet: None,
//! };
//! let session = Session::register(spec, Options::default())?;
//! loop {
//!     let subnet = session.current_subnet();   // one atomic load
//!     // ... switch the model to `subnet` if it changed, then:
//!     session.ack_subnet(subnet);
//!     session.begin(Duration::from_millis(60));
//!     // ... run one inference ...
//!     session.end();
//! }
//! # Ok::<(), dnngov_client::ClientError>(())
//! ```
//!
//! Without an agent the session runs the default sub-network and reconnects in the
//! background; no call on the inference path blocks or makes a syscall.
//!
//! Choosing the library to register: [`profile`] measures the candidate sub-networks at
//! a sweep of DVFS settings (holding each through the agent's admin socket, [`admin`]),
//! keeps the Pareto-optimal ones and saves them as a profile that
//! [`AppSpec::from_profile`] registers.

pub mod admin;
pub mod ffi;
pub mod markers;
mod page;
pub mod profile;
pub mod session;
mod trace;

pub use governor_proto::{Device, Subnet, Target};
pub use markers::{dnngov_marker_begin, dnngov_marker_end};
pub use session::{monotonic_ns, AppSpec, ClientError, Options, Session};
pub use trace::{TRACE_DIR_ENV, TRACE_HEADER};
