//! The errors the library returns, typed where a caller may branch on them (an unknown
//! sub-network, an image of the wrong shape, an unreadable weights file).

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The architecture's shapes are inconsistent.
    #[error("invalid super-network architecture: {0}")]
    InvalidArch(String),
    /// A sub-network configuration the architecture cannot run.
    #[error("invalid sub-network {0}: {1}")]
    InvalidSubnet(String, String),
    /// A sub-network name that does not follow the `d<depths>_w<width>` form.
    #[error("malformed sub-network name {0:?}: expected the form d2-2-3_w0.75")]
    BadSubnetName(String),
    /// A sub-network that is not one of the network's candidates.
    #[error("unknown sub-network {name:?}: the candidates are {}", known.join(", "))]
    UnknownSubnet {
        /// What was asked for.
        name: String,
        /// The candidates' names.
        known: Vec<String>,
    },
    /// A candidate index past the end of the list.
    #[error("sub-network index {index} is out of range: there are {count} candidates")]
    SubnetIndex {
        /// What was asked for.
        index: usize,
        /// How many candidates there are.
        count: usize,
    },
    /// An input whose shape is not `[batch, channels, height, width]` as the network expects.
    #[error("wrong image shape {got:?}: expected [batch, {}, {}, {}] (or {} values for one image)",
        expected[0], expected[1], expected[2], expected.iter().product::<usize>())]
    InputShape {
        /// The shape given.
        got: Vec<usize>,
        /// `[channels, height, width]` of one image.
        expected: [usize; 3],
    },
    /// A weights file that is missing, unreadable or not what this crate wrote.
    #[error("weights file {}: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A training or evaluation setting that cannot work.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// An error from the tensor library.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
