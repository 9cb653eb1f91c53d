//! dnngovd: the dnngov agent.
//!
//! Runs the app registry and reports what registered apps do. The control loop that
//! governs frequencies and sub-networks plugs in here as it lands.

use anyhow::Result;
use clap::Parser;
use crossbeam_channel::{select, tick, Receiver};
use dnngov_agent::registry::{Registry, RegistryConfig, RegistryEvent};
use nix::sys::signal::{SigSet, Signal};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "dnngovd",
    version,
    about = "DNN-aware frequency and sub-network governor"
)]
struct Args {
    /// Socket apps register on.
    #[arg(long, default_value = governor_proto::DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// Group that may register apps (the socket gets mode 0660 and this group).
    #[arg(long, default_value = "dnngov")]
    group: String,
    /// Seconds between status lines for registered apps (0: none).
    #[arg(long, default_value_t = 5)]
    report_every: u64,
    /// Exit after this many seconds (0: run until SIGTERM or SIGINT).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() {
    let args = Args::parse();
    init_logging(args.verbose);
    if let Err(e) = run(args) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    // journald stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format_timestamp(None);
    }
    builder.init();
}

fn run(args: Args) -> Result<()> {
    let signals = block_termination_signals()?;
    let registry = Registry::start(RegistryConfig {
        socket_path: args.socket.clone(),
        group: Some(args.group.clone()),
        ..RegistryConfig::default()
    })?;
    log::info!("dnngovd ready; no app registered yet");
    let report = if args.report_every > 0 {
        tick(Duration::from_secs(args.report_every))
    } else {
        crossbeam_channel::never()
    };
    let deadline = if args.exit_after > 0 {
        crossbeam_channel::after(Duration::from_secs(args.exit_after))
    } else {
        crossbeam_channel::never()
    };
    let mut last_counts: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        select! {
            recv(registry.events()) -> event => match event {
                Ok(RegistryEvent::Left { app_id, .. }) => { last_counts.remove(&app_id); }
                Ok(_) => {}
                Err(_) => anyhow::bail!("the registry stopped"),
            },
            recv(report) -> _ => report_apps(&registry, &mut last_counts),
            recv(signals) -> signal => {
                log::info!("{} received; shutting down", signal.map(|s| s.as_str()).unwrap_or("signal"));
                break;
            }
            recv(deadline) -> _ => {
                log::info!("--exit-after elapsed; shutting down");
                break;
            }
        }
    }
    drop(registry);
    log::info!("dnngovd stopped");
    Ok(())
}

fn report_apps(registry: &Registry, last_counts: &mut BTreeMap<u32, u64>) {
    for app in registry.apps() {
        let report = app.report();
        let before = last_counts
            .insert(app.app_id, report.inferences_completed)
            .unwrap_or(0);
        let new = report.inferences_completed.wrapping_sub(before);
        log::info!(
            "app {} \"{}\": {new} inferences since last report ({} in all, {} missed), last {:.2} ms, running {}",
            app.app_id,
            app.name,
            report.inferences_completed,
            report.deadline_misses,
            report.last_latency_ns as f64 / 1e6,
            report.active_subnet.map_or("-".to_string(), |s| s.to_string()),
        );
    }
}

/// Blocks SIGTERM and SIGINT in every thread and delivers them on a channel, so
/// shutdown runs on the main thread in order (and restores what the agent changed).
fn block_termination_signals() -> Result<Receiver<Signal>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(signal) = set.wait() {
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
