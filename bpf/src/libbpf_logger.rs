//! Routes libbpf's own messages to `log`, so they follow `RUST_LOG` and reach
//! the journal like the rest of the agent's output.

use std::sync::Once;

use libbpf_rs::PrintLevel;

fn forward(level: PrintLevel, msg: String) {
    let msg = msg.trim_end();
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
