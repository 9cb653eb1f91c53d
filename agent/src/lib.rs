//! dnngov agent library: platform discovery and actuation, the app registry, and the
//! parts the `dnngovd` and `dnngovctl` binaries are made of.
pub mod admin;
pub mod config;
pub mod control;
pub mod eval;
pub mod log_limit;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod platform;
pub mod registry;
pub mod socket;
pub mod top;
