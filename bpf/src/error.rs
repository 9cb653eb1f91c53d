//! Errors the agent branches on: whether BPF is usable at all, and what is wrong
//! with an app's binary.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This kernel or process cannot run the programs (no root/CAP_BPF, no BTF
    /// and no tracefs, ...): use the fallback.
    #[error("BPF telemetry unavailable: {0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: libbpf_rs::Error,
    },
    /// The binary has no such symbol: not linked with dnngov-client, or stripped
    /// without the markers exported.
    #[error("{}: symbol `{symbol}` not found (not linked with dnngov-client, or stripped without exporting it)", binary.display())]
    MarkerNotFound {
        binary: PathBuf,
        symbol: &'static str,
    },
    #[error("{}: {source}", binary.display())]
    Binary {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("app {0} is already attached")]
    AppAttached(u32),
    #[error("{0} needs BPF telemetry; running on the procfs fallback")]
    NeedsBpf(&'static str),
}

impl Error {
    pub(crate) fn bpf(what: impl Into<String>, source: libbpf_rs::Error) -> Error {
        Error::Bpf {
            what: what.into(),
            source,
        }
    }
}
