//! Routes libbpf's own messages to `log`, so they follow `RUST_LOG` and reach
//! the journal like the rest of the agent's output.
//!
//! Attaching to a tracepoint that may not exist (a GPU driver's, when neither
//! BTF nor tracefs can say) is expected to fail on most machines; libbpf still
//! reports each failure as a warning. [`speculative`] marks such attempts on
//! the calling thread so their messages go to debug instead of alarming an
//! operator about hardware the machine does not have.

use std::cell::Cell;
use std::sync::Once;

use libbpf_rs::PrintLevel;

thread_local! {
    static SPECULATIVE: Cell<bool> = const { Cell::new(false) };
}

fn forward(level: PrintLevel, msg: String) {
    let msg = msg.trim_end();
    let level = if SPECULATIVE.with(Cell::get) {
        PrintLevel::Debug
    } else {
        level
    };
    match level {
        PrintLevel::Debug => log::debug!(target: "libbpf", "{msg}"),
        PrintLevel::Info => log::info!(target: "libbpf", "{msg}"),
        PrintLevel::Warn => log::warn!(target: "libbpf", "{msg}"),
    }
}

pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, forward)));
    });
}

/// Runs `attempt` with libbpf's warnings demoted to debug on this thread.
pub(crate) fn speculative<T>(attempt: impl FnOnce() -> T) -> T {
    SPECULATIVE.with(|s| s.set(true));
    let result = attempt();
    SPECULATIVE.with(|s| s.set(false));
    result
}
