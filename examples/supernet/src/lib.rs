//! A weight-shared elastic CNN (a super-network) for the CPU, built on candle.
//!
//! One set of weights holds every candidate sub-network: a sub-network runs the first few
//! blocks of each stage (elastic depth) on the first channels of every layer (elastic width).
//! Each candidate keeps its own BatchNorm statistics in the weights file, so switching needs
//! no reload and no recalibration: [`SuperNet::set_subnet`] changes an index.
//!
//! ```no_run
//! use candle_core::Device;
//! use dnngov_supernet::SuperNet;
//!
//! # fn main() -> dnngov_supernet::Result<()> {
//! let mut net = SuperNet::load("weights.safetensors", &Device::Cpu)?;
//! for c in net.candidates() {
//!     println!("{} {} MACs top-1 {:?}", c.name, c.macs, c.top1);
//! }
//! net.set_subnet_by_name("d1-1-1_w0.5")?;
//! let image = vec![0f32; net.image_shape().iter().product()];
//! let class = net.classify_image(&image)?;
//! # let _ = class;
//! # Ok(())
//! # }
//! ```
//!
//! The training data are drawn by [`dataset`]; [`train`] trains with the sandwich rule and
//! calibrates the statistics; [`latency`] times inference and switching.

#![warn(missing_docs)]

pub mod arch;
pub mod dataset;
pub mod error;
pub mod latency;
mod layers;
mod rng;
pub mod supernet;
pub mod train;

pub use arch::{ArchConfig, SubnetConfig};
pub use dataset::{Dataset, DatasetConfig, Split};
pub use error::{Error, Result};
pub use supernet::{BnStats, Candidate, Manifest, Provenance, SuperNet, TrainingSummary};
pub use train::{TrainConfig, TrainReport};

/// Chooses candle's thread counts; call it first thing in `main`, before any tensor
/// operation and before other threads start (candle sizes its element-wise pool once per
/// process). `threads` sets both pools; without it the element-wise pool gets one thread
/// (its threads spin while they wait: on a machine with two cores shared with other work
/// the spinning took several times longer than running those operations on one thread),
/// and so does rayon's when `inference` (batch-1 inference on two threads was sometimes
/// faster and, while other work ran, up to twice as slow: one thread gives steadier
/// figures, and an inference app shares the machine). Variables the user set are kept.
pub fn choose_threads(threads: Option<usize>, inference: bool) {
    let set = |k: &str, v: &str| {
        // Called before other threads start: nothing reads the environment concurrently.
        std::env::set_var(k, v);
    };
    let user_set = |k: &str| std::env::var_os(k).is_some();
    match threads {
        Some(n) => {
            set("RAYON_NUM_THREADS", &n.max(1).to_string());
            set("CANDLE_NUM_THREADS", &n.max(1).to_string());
        }
        None => {
            if inference && !user_set("RAYON_NUM_THREADS") {
                set("RAYON_NUM_THREADS", "1");
            }
            if !user_set("CANDLE_NUM_THREADS") {
                set("CANDLE_NUM_THREADS", "1");
            }
        }
    }
}
