//! dnngovd: the dnngov agent. Registers apps, measures them and the machine, and governs
//! CPU/GPU/memory frequencies together with each app's sub-network.
//!
//! Start-up order matters for "leave the machine as it was found": the app registry and
//! admin socket come first (nothing changed yet), then the control loop takes over the
//! frequency domains (saving their settings first). Shutdown runs in reverse on the main
//! thread: SIGTERM/SIGINT stop the control loop, whose actuation thread restores every
//! saved setting before the process exits. A panic in any thread closes the channels the
//! actuation thread waits on, so it restores too, and the process exits non-zero.

use anyhow::{Context, Result};
use clap::Parser;
use crossbeam_channel::{select, tick, Receiver};
use dnngov_agent::admin::{
    app_status, Access, AdminReply, AdminRequest, AdminServer, Holds, StatusReport,
};
use dnngov_agent::config::{Config, DEFAULT_CONFIG_PATH};
use dnngov_agent::control::{ControlLoop, Governed};
use dnngov_agent::metrics::{Metrics, MetricsServer};
use dnngov_agent::notify;
use dnngov_agent::registry::{AppTable, Registry, RegistryConfig};
use governor_proto::validate::validate_target;
use nix::sys::signal::{SigSet, Signal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "dnngovd",
    version,
    about = "DNN-aware frequency and sub-network governor"
)]
struct Args {
    /// Configuration file (default /etc/dnngov/config.toml; absent means defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Root of the sysfs tree to govern (overrides agent.sysfs_root).
    #[arg(long)]
    sysfs_root: Option<PathBuf>,
    /// Socket apps register on (overrides agent.socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Admin socket for dnngovctl (overrides agent.admin_socket).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Directory of the saved-state file (overrides agent.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Board description, platforms/*.toml (overrides agent.platform).
    #[arg(long)]
    platform: Option<PathBuf>,
    /// Seconds between log lines summarising each app (0: none).
    #[arg(long, default_value_t = 10)]
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

fn load_config(args: &Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(DEFAULT_CONFIG_PATH.as_ref(), false)?,
    };
    let agent = &mut config.agent;
    for (flag, field) in [
        (&args.sysfs_root, &mut agent.sysfs_root),
        (&args.socket, &mut agent.socket),
        (&args.admin_socket, &mut agent.admin_socket),
        (&args.state_dir, &mut agent.state_dir),
    ] {
        if let Some(value) = flag {
            *field = value.clone();
        }
    }
    if args.platform.is_some() {
        agent.platform = args.platform.clone();
    }
    Ok(config)
}

fn run(args: Args) -> Result<()> {
    let config = load_config(&args)?;
    let signals = block_termination_signals()?;
    let panics = forward_panics();
    let started = Instant::now();
    std::fs::create_dir_all(&config.agent.state_dir).with_context(|| {
        format!(
            "creating the state directory {}",
            config.agent.state_dir.display()
        )
    })?;
    let group = Some(config.agent.group.as_str()).filter(|g| !g.is_empty());
    let registry = Registry::start(RegistryConfig {
        socket_path: config.agent.socket.clone(),
        group: group.map(str::to_string),
        ..RegistryConfig::default()
    })?;
    let status = Arc::new(Mutex::new(StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        sysfs_root: config.agent.sysfs_root.display().to_string(),
        app_socket: config.agent.socket.display().to_string(),
        ..StatusReport::default()
    }));
    let heartbeat = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(Metrics::new());
    let metrics_server = match config.metrics.listen {
        Some(addr) => Some(MetricsServer::start(addr, metrics.clone())?),
        None => None,
    };
    let board = match &config.agent.platform {
        Some(path) => Some(dnngov_policy::platform::Platform::load(path)?),
        None => None,
    };
    let governed = Governed::discover(&config.agent.sysfs_root).with_board(board);
    let control = ControlLoop::start(
        &config,
        governed,
        registry.table(),
        registry.events().clone(),
        status.clone(),
        metrics,
        heartbeat.clone(),
    )?;
    // Last, so that a status request never sees a half-started agent.
    let admin = AdminServer::start(
        &config.agent.admin_socket,
        group,
        Access::new(&config.agent.admin_group),
        admin_handler(registry.table(), status.clone(), control.holds(), started),
    )?;
    notify::notify("READY=1");
    log::info!(
        "dnngovd ready: apps register on {}, dnngovctl talks to {}",
        config.agent.socket.display(),
        config.agent.admin_socket.display()
    );

    let report = every(args.report_every);
    let watchdog = notify::watchdog_interval().map_or_else(crossbeam_channel::never, tick);
    let deadline = if args.exit_after > 0 {
        crossbeam_channel::after(Duration::from_secs(args.exit_after))
    } else {
        crossbeam_channel::never()
    };
    let table = registry.table();
    let stall_limit =
        Duration::from_millis(config.control.tick_ms * 50).max(Duration::from_secs(5));
    let mut failed = false;
    loop {
        select! {
            recv(panics) -> _ => {
                log::error!("a thread panicked; restoring and exiting");
                failed = true;
                break;
            }
            recv(signals) -> signal => {
                log::info!("{} received; restoring and shutting down", signal.map(|s| s.as_str()).unwrap_or("signal"));
                break;
            }
            recv(deadline) -> _ => {
                log::info!("--exit-after elapsed; restoring and shutting down");
                break;
            }
            // Only a control loop that still ticks keeps the watchdog quiet: a stuck loop
            // gets the service restarted (and the machine restored by ExecStopPost).
            recv(watchdog) -> _ => {
                let last = heartbeat.load(Ordering::Relaxed);
                let now = dnngov_bpf::Nanos::monotonic_now().0;
                if last != 0 && now.saturating_sub(last) < stall_limit.as_nanos() as u64 {
                    notify::notify("WATCHDOG=1");
                } else {
                    log::warn!("the control loop has not ticked for {:.1} s", now.saturating_sub(last) as f64 / 1e9);
                }
            }
            recv(report) -> _ => report_apps(&table),
        }
    }
    notify::notify("STOPPING=1");
    control.stop();
    drop(metrics_server);
    drop(admin);
    drop(registry);
    if failed {
        anyhow::bail!("stopped after a panic; the machine was restored");
    }
    log::info!("dnngovd stopped");
    Ok(())
}

/// Turns a panic in any thread into an orderly shutdown: the default hook prints it, then
/// the main thread is told, stops the control loop (which restores the machine) and exits
/// non-zero. Without this a panicked control thread would leave the daemon running
/// ungoverned.
fn forward_panics() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let _ = tx.try_send(());
    }));
    rx
}

fn every(seconds: u64) -> Receiver<Instant> {
    if seconds == 0 {
        crossbeam_channel::never()
    } else {
        tick(Duration::from_secs(seconds))
    }
}

fn admin_handler(
    table: AppTable,
    status: Arc<Mutex<StatusReport>>,
    holds: Holds,
    started: Instant,
) -> dnngov_agent::admin::Handler {
    Arc::new(move |request, caller| match request {
        AdminRequest::Status => {
            let mut report = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            report.uptime_s = started.elapsed().as_secs_f64();
            report.apps = table.apps().iter().map(|a| app_status(a)).collect();
            for app in &report.apps {
                if let Some(problem) = &app.page_problem {
                    report.notes.push(format!(
                        "app {} \"{}\" wrote figures in its shared page that cannot be: {problem}",
                        app.app_id, app.name
                    ));
                }
            }
            holds.describe(&mut report);
            AdminReply::Status(report)
        }
        AdminRequest::Apps => AdminReply::Apps {
            apps: table.apps().iter().map(|a| app_status(a)).collect(),
        },
        AdminRequest::Hold {
            cpu_hz,
            gpu_hz,
            mem_hz,
            lease_ms,
        } => match holds.hold(cpu_hz, gpu_hz, mem_hz, lease_ms) {
            Ok(hold) => AdminReply::Held(hold),
            Err(message) => AdminReply::Error { message },
        },
        AdminRequest::Release => AdminReply::Done {
            message: match holds.release() {
                Some(domains) => format!(
                    "released the hold of {}; the policy sets them again",
                    domains
                        .iter()
                        .map(|d| d.domain.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "nothing was held".to_string(),
            },
        },
        AdminRequest::SetTarget {
            app,
            deadline_ms,
            accuracy_floor_pct,
            clear,
        } => {
            let handle = match table.find(&app) {
                Ok(handle) => handle,
                Err(e) => {
                    return AdminReply::Error {
                        message: e.to_string(),
                    }
                }
            };
            // An app's owner may change its target; anyone else needs the admin's rights.
            if !caller.admin && caller.peer.uid != handle.uid {
                return AdminReply::Error {
                    message: format!(
                        "permission denied: app {} \"{}\" belongs to {}; setting another \
                         user's app target is for root, dnngovd's user or the admin group",
                        handle.app_id,
                        handle.name,
                        dnngov_agent::peer::user_name(handle.uid)
                    ),
                };
            }
            if clear {
                handle.set_operator_target(None);
                log::info!(
                    "{} cleared the target override of app {}",
                    dnngov_agent::peer::user_name(caller.peer.uid),
                    handle.app_id
                );
                return AdminReply::Done {
                    message: format!(
                        "app {} \"{}\" is back on its own target",
                        handle.app_id, handle.name
                    ),
                };
            }
            let mut target = handle.target();
            if let Some(deadline) = deadline_ms {
                target.deadline_ms = deadline;
            }
            if accuracy_floor_pct.is_some() {
                target.accuracy_floor_pct = accuracy_floor_pct;
            }
            if let Err(e) = validate_target(&target) {
                return AdminReply::Error { message: e.message };
            }
            let message = format!(
                "app {} \"{}\": deadline {} ms, accuracy floor {}",
                handle.app_id,
                handle.name,
                target.deadline_ms,
                target
                    .accuracy_floor_pct
                    .map_or("none".to_string(), |f| format!("{f} %"))
            );
            log::info!(
                "target override by {}: {message}",
                dnngov_agent::peer::user_name(caller.peer.uid)
            );
            handle.set_operator_target(Some(target));
            AdminReply::Done { message }
        }
    })
}

fn report_apps(table: &AppTable) {
    for app in table.apps() {
        let s = app_status(&app);
        log::info!(
            "app {} \"{}\": {} inferences, {:.1} % missed, last {:.2} ms against {} ms, sub-network {}",
            s.app_id,
            s.name,
            s.inferences,
            s.miss_pct,
            s.last_latency_ms,
            s.deadline_ms,
            s.active_subnet.map_or("-".to_string(), |a| a.to_string()),
        );
    }
}

/// Blocks SIGTERM and SIGINT in every thread (they inherit the mask) and delivers them
/// on a channel, so shutdown runs on the main thread, in order.
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
