//! dnngov client shim.
pub mod markers;
pub use markers::{dnngov_marker_begin, dnngov_marker_end};
