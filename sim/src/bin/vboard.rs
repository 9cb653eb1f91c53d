//! `dnngov-vboard`: a simulated board exposed as a sysfs-like tree, in real time; with
//! `--cgroup`, its CPU clusters are cgroups that really slow the processes placed in them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dnngov_sim::cgroup::{self, ClusterGroups, Layout};
use dnngov_sim::platform::Kind;
use dnngov_sim::scenario::Event;
use dnngov_sim::vboard::{cluster_entry, Meter, VirtualBoard};
use dnngov_sim::{run, Platform, Scenario};

#[derive(Parser)]
#[command(
    version,
    about = "Keeps a sysfs-like tree under --root in step with a simulated board, in real time",
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Platform file (platforms/*.toml).
    #[arg(long, required = true)]
    platform: Option<PathBuf>,
    /// Directory the tree is laid under (its sys/... mirrors /sys/...).
    #[arg(long, required = true)]
    root: Option<PathBuf>,
    /// Workload to run on the board; an idle board without one.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// How long to run, seconds (default: the scenario's duration, or one hour idle).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Back the CPU clusters with cgroups of this machine: the clock in force becomes each
    /// cluster's CPU quota, so processes started with `dnngov-vboard run` really slow down.
    /// Needs root and the cgroup cpu controller (v2, or the v1 cpu and cpuacct hierarchies).
    #[arg(long)]
    cgroup: bool,
    /// This machine's CPUs for each cluster, in the board's cluster order, separated by
    /// `;` (for example `0;1;0-1`). Default: each cluster's own CPU numbers where this
    /// machine has them (so the agent's per-CPU view matches the board), this machine's
    /// other CPUs in turn for the rest.
    #[arg(long, requires = "cgroup")]
    cluster_cpus: Option<String>,
    /// CFS period of the cluster groups, µs. The kernel's smallest quota is 1000 µs, so
    /// clocks below 1000/period of the highest run at that share.
    #[arg(long, default_value_t = cgroup::DEFAULT_PERIOD_US, requires = "cgroup")]
    cgroup_period_us: u64,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a command in one of a cgroup board's clusters (it and its children stay there).
    Run {
        /// The board's root (as given with --root).
        #[arg(long)]
        root: PathBuf,
        /// The cluster: its index (0 = the board's first CPU domain) or its domain name.
        #[arg(long, default_value = "0")]
        cluster: String,
        /// Threads the command runs in parallel: its group may use that many of the
        /// cluster's CPUs at the clock in force.
        #[arg(long, default_value_t = 1)]
        threads: u32,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Moves a running process (all its threads) into one of a cgroup board's clusters.
    Place {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "0")]
        cluster: String,
        #[arg(long, default_value_t = 1)]
        threads: u32,
        #[arg(long)]
        pid: u32,
    },
    /// Removes the groups of boards that are no longer running (after a SIGKILL).
    Clean {
        #[arg(long, default_value = "/sys/fs/cgroup")]
        cgroup_root: PathBuf,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run {
            ref root,
            ref cluster,
            threads,
            ref command,
        }) => run_in(root, cluster, threads, command),
        Some(Command::Place {
            ref root,
            ref cluster,
            threads,
            pid,
        }) => cluster_entry(root, cluster).and_then(|c| {
            cgroup::join_cluster(&c.dirs, c.cpus, pid, threads)?;
            log::info!(
                "placed {pid} in cluster {cluster} ({})",
                c.dirs[0].display()
            );
            Ok(())
        }),
        Some(Command::Clean { ref cgroup_root }) => clean(cgroup_root),
        None => board(&cli),
    };
    if let Err(e) = result {
        eprintln!("dnngov-vboard: {e:#}");
        std::process::exit(1);
    }
}

/// Joins the cluster, then becomes `command`.
fn run_in(root: &Path, cluster: &str, threads: u32, command: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let c = cluster_entry(root, cluster)?;
    cgroup::join_cluster(&c.dirs, c.cpus, std::process::id(), threads)?;
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    bail!("cannot run {:?}: {err}", command[0])
}

fn clean(cgroup_root: &Path) -> Result<()> {
    let layout = Layout::detect(cgroup_root)?;
    let removed = cgroup::remove_stale(&layout);
    let left = cgroup::board_groups(&layout);
    println!(
        "removed {} stale board group(s){}; {} left (boards still running)",
        removed.len(),
        if removed.is_empty() {
            String::new()
        } else {
            format!(" ({})", removed.join(", "))
        },
        left.len()
    );
    Ok(())
}

/// Set by SIGTERM and SIGINT: the board removes its groups and reports before it exits.
fn stop_flag() -> Result<&'static AtomicBool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    static FLAG: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: nix::libc::c_int) {
        FLAG.store(true, Ordering::Relaxed);
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.context("installing the signal handler")?;
    }
    Ok(&FLAG)
}

/// The CPUs this process may use.
fn allowed_cpus() -> Result<Vec<u32>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .context("reading this process's CPU affinity")?;
    Ok((0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .map(|c| c as u32)
        .collect())
}

/// Takes the board's CPUs that this machine has no CPU of the same number for offline
/// for the whole run, scenario events included: an agent on this machine sees CPUs by
/// this machine's numbers, so work on those would be invisible to it, and nothing of
/// this machine would back them. The board then runs as a smaller configuration of
/// itself (the Xavier NX on 2 CPUs: its 2-core mode).
fn offline_absent_cpus(scn: &mut Scenario, plat: &Platform, allowed: &[u32]) {
    let absent: Vec<u32> = (0..plat.cpu_count() as u32)
        .filter(|c| !allowed.contains(c))
        .collect();
    if absent.is_empty() {
        return;
    }
    for e in &mut scn.events {
        if let Some(off) = &mut e.offline_cpus {
            let missing: Vec<u32> = absent
                .iter()
                .copied()
                .filter(|c| !off.contains(c))
                .collect();
            off.extend(missing);
        }
    }
    scn.events.insert(
        0,
        Event {
            at_s: 0.0,
            offline_cpus: Some(absent.clone()),
            ..Event::default()
        },
    );
    log::info!(
        "board CPUs {absent:?} are offline: this machine has no CPU of those numbers to back them"
    );
}

/// Host CPUs per cluster: `--cluster-cpus`, else [`cgroup::deal_cpus`] over the CPUs
/// this process may use.
fn host_cpus(spec: Option<&str>, own: &[Vec<u32>]) -> Result<Vec<Vec<u32>>> {
    let clusters = own.len();
    match spec {
        Some(spec) => {
            let lists = spec
                .split(';')
                .map(cgroup::parse_cpu_list)
                .collect::<Result<Vec<_>>>()
                .context("--cluster-cpus")?;
            if lists.len() != clusters {
                bail!(
                    "--cluster-cpus names {} clusters; the board has {clusters}",
                    lists.len()
                );
            }
            Ok(lists)
        }
        None => Ok(cgroup::deal_cpus(&allowed_cpus()?, own)),
    }
}

fn board(cli: &Cli) -> Result<()> {
    let (Some(platform), Some(root)) = (&cli.platform, &cli.root) else {
        bail!("--platform and --root are required");
    };
    let plat = Platform::load(platform)?;
    let mut scn = match &cli.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::parse(
            "name = \"idle\"\nplatform = \"-\"\nduration_s = 3600\n",
            std::path::Path::new("."),
        )?,
    };
    if let Some(d) = cli.duration {
        scn.duration_s = d;
    }
    let stop = stop_flag()?;
    if cli.cgroup {
        offline_absent_cpus(&mut scn, &plat, &allowed_cpus()?);
    }
    let mut board = VirtualBoard::create(root, &plat, true)?;
    let mut groups = None;
    if cli.cgroup {
        let layout = Layout::detect(&cli.cgroup_root)?;
        let own: Vec<Vec<u32>> = plat
            .domains
            .iter()
            .filter(|d| d.kind == Kind::Cpu)
            .map(|d| d.cpus.clone())
            .collect();
        let cpus = host_cpus(cli.cluster_cpus.as_deref(), &own)?;
        let made = Arc::new(Mutex::new(ClusterGroups::create(
            layout,
            &cpus,
            cli.cgroup_period_us,
        )?));
        for (i, c) in cpus.iter().enumerate() {
            log::info!("cluster {i} runs on this machine's CPU(s) {c:?}");
        }
        board = board.with_cgroups(made.clone())?;
        groups = Some(made);
    }
    log::info!(
        "virtual {} under {} for {} s ({}); writes to its control files take effect within {} ms",
        plat.name,
        root.display(),
        scn.duration_s,
        scn.name,
        scn.tick_ms
    );
    let meter = board.meter();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let seed = cli.seed;
    std::thread::Builder::new()
        .name("board".into())
        .spawn(move || {
            let result = run(&scn, &plat, &mut board, seed);
            let _ = done_tx.send(result.map(|_| ()));
        })
        .context("starting the board thread")?;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            log::info!("stopping on a signal");
            break Ok(());
        }
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => break r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the board thread ended without a result"))
            }
        }
    };
    if let Some(groups) = groups {
        let mut g = groups.lock().unwrap_or_else(|e| e.into_inner());
        match g.remove() {
            Ok(()) => log::info!("removed the cluster cgroups"),
            Err(e) => log::warn!("removing the cluster cgroups: {e:#}"),
        }
    }
    let m: Meter = *meter.lock().unwrap_or_else(|e| e.into_inner());
    log::info!(
        "done: {:.1} J, mean {:.2} W over {:.1} s",
        m.energy_j,
        m.mean_power_w(),
        m.seconds
    );
    result
}
