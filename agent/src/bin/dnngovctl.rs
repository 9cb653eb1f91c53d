//! dnngovctl: asks the running dnngovd what it does (once, or live with `top`), overrides an app's target, holds
//! frequencies for profiling, and restores the machine after a crash.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dnngov_agent::admin::{AdminReply, AdminRequest, AppStatus, HoldStatus, StatusReport};
use dnngov_agent::config::{Config, DEFAULT_CONFIG_PATH};
use dnngov_agent::platform;
use dnngov_client::admin::{refused_as_error, request};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "dnngovctl", version, about = "Control and inspect dnngovd")]
struct Args {
    /// dnngovd's configuration (for the admin socket, state directory and sysfs root).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The admin socket (overrides the configuration).
    #[arg(long, global = true)]
    admin_socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Frequency domains, power, apps, telemetry sources and degraded modes.
    Status,
    /// The registered apps.
    Apps,
    /// A live view of domains, power and apps, polled every 250 ms; keys set or clear
    /// the selected app's deadline (q quits).
    Top,
    /// Override an app's target (by id or name); --clear gives it back to the app.
    SetTarget {
        app: String,
        #[arg(long)]
        deadline_ms: Option<f64>,
        #[arg(long = "accuracy-floor")]
        accuracy_floor_pct: Option<f64>,
        #[arg(long, conflicts_with_all = ["deadline_ms", "accuracy_floor_pct"])]
        clear: bool,
    },
    /// Hold frequencies for profiling, over the policy's choice, until `release` or the
    /// end of the lease
    ///
    /// Each value snaps to the nearest frequency the domain offers that is not above its
    /// ceiling. A second hold replaces the first; sending the same hold again renews it.
    Hold {
        /// Every CPU domain (cpufreq policy) at this frequency.
        #[arg(long)]
        cpu_mhz: Option<f64>,
        /// Every GPU domain at this frequency.
        #[arg(long)]
        gpu_mhz: Option<f64>,
        /// The memory clock (EMC, or memory devfreq) at this frequency.
        #[arg(long)]
        mem_mhz: Option<f64>,
        /// How long the hold lasts unless renewed, in seconds (default 30, at most 600).
        #[arg(long)]
        lease_s: Option<f64>,
    },
    /// End the frequency hold: the policy sets every domain again.
    Release,
    /// Put back the governors and limits dnngovd saved (after a crash; the systemd unit
    /// runs this after every stop). Does nothing when nothing is saved.
    Restore {
        /// The saved state (default: state_dir/saved-state.json of the configuration).
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// The sysfs root to restore under (default: the one recorded in the state file).
        #[arg(long)]
        sysfs_root: Option<PathBuf>,
    },
}

fn main() {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("dnngovctl: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> Result<i32> {
    let config = match &args.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(DEFAULT_CONFIG_PATH.as_ref(), false)?,
    };
    let admin_socket = args
        .admin_socket
        .clone()
        .unwrap_or_else(|| config.agent.admin_socket.clone());
    match args.command {
        Command::Status => {
            let reply = request(&admin_socket, &AdminRequest::Status)?;
            let AdminReply::Status(status) = refused_as_error(reply)? else {
                bail!("dnngovd answered something other than a status");
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        Command::Apps => {
            let reply = request(&admin_socket, &AdminRequest::Apps)?;
            let AdminReply::Apps { apps } = refused_as_error(reply)? else {
                bail!("dnngovd answered something other than a list of apps");
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                print_apps(&apps);
            }
        }
        Command::Top => dnngov_agent::top::terminal::run(&admin_socket)?,
        Command::SetTarget {
            app,
            deadline_ms,
            accuracy_floor_pct,
            clear,
        } => {
            if !clear && deadline_ms.is_none() && accuracy_floor_pct.is_none() {
                bail!("give --deadline-ms, --accuracy-floor, or --clear");
            }
            let set = AdminRequest::SetTarget {
                app,
                deadline_ms,
                accuracy_floor_pct,
                clear,
            };
            let AdminReply::Done { message } = refused_as_error(request(&admin_socket, &set)?)?
            else {
                bail!("dnngovd answered something unexpected");
            };
            print_done(args.json, &message);
        }
        Command::Hold {
            cpu_mhz,
            gpu_mhz,
            mem_mhz,
            lease_s,
        } => {
            if cpu_mhz.is_none() && gpu_mhz.is_none() && mem_mhz.is_none() {
                bail!("give at least one of --cpu-mhz, --gpu-mhz, --mem-mhz");
            }
            let hold = AdminRequest::Hold {
                cpu_hz: hz_of("--cpu-mhz", cpu_mhz)?,
                gpu_hz: hz_of("--gpu-mhz", gpu_mhz)?,
                mem_hz: hz_of("--mem-mhz", mem_mhz)?,
                lease_ms: match lease_s {
                    Some(s) if s.is_finite() && s > 0.0 => Some((s * 1e3).round() as u64),
                    Some(s) => bail!("--lease-s {s}: give a number of seconds above 0"),
                    None => None,
                },
            };
            let AdminReply::Held(held) = refused_as_error(request(&admin_socket, &hold)?)? else {
                bail!("dnngovd answered something other than a hold");
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&held)?);
            } else {
                print_hold(&held);
            }
        }
        Command::Release => {
            let AdminReply::Done { message } =
                refused_as_error(request(&admin_socket, &AdminRequest::Release)?)?
            else {
                bail!("dnngovd answered something unexpected");
            };
            print_done(args.json, &message);
        }
        Command::Restore {
            state_file,
            sysfs_root,
        } => {
            let state_file = state_file.unwrap_or_else(|| config.agent.state_file());
            may_restore(&state_file)?;
            // The root the state was taken under is the one to put back, whatever the
            // configuration says now (a demo may have run against a virtual board).
            let sysfs_root = match sysfs_root {
                Some(root) => root,
                None if state_file.exists() => platform::SavedState::load(&state_file)
                    .map(|state| state.sysfs_root)
                    .unwrap_or_else(|_| config.agent.sysfs_root.clone()),
                None => config.agent.sysfs_root.clone(),
            };
            let report = platform::restore(&state_file, &sysfs_root)
                .with_context(|| format!("restoring from {}", state_file.display()))?;
            let failed = !report.errors.is_empty();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "state_file": state_file,
                        "nothing_to_restore": report.nothing_to_restore,
                        "restored": report.restored,
                        "errors": report.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    })
                );
            } else if report.nothing_to_restore {
                println!(
                    "nothing to restore ({} does not exist)",
                    state_file.display()
                );
            } else {
                println!(
                    "restored {} files from {}",
                    report.restored.len(),
                    state_file.display()
                );
                for error in &report.errors {
                    eprintln!("  not restored: {error}");
                }
            }
            return Ok(i32::from(failed));
        }
    }
    Ok(0)
}

/// Refuses, with who may, a restore by a user who cannot read the state file (mode 0600,
/// owned by dnngovd's user): such a user could not write the frequency files either.
fn may_restore(state_file: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Err(e) = std::fs::File::open(state_file) else {
        return Ok(());
    };
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        // Missing (nothing to restore) or another error the restore itself reports.
        return Ok(());
    }
    let me = dnngov_agent::peer::user_name(nix::unistd::geteuid().as_raw());
    let owner = std::fs::metadata(state_file).map_or_else(
        |_| "dnngovd's user".to_string(),
        |meta| {
            format!(
                "user {} (the owner of {}, mode {:04o})",
                dnngov_agent::peer::user_name(meta.uid()),
                state_file.display(),
                meta.mode() & 0o7777
            )
        },
    );
    bail!(
        "permission denied: restore is for root or {owner}, and {me} is not: it reads the \
         saved state and writes the frequency files dnngovd changed (sudo dnngovctl restore)"
    )
}

/// A frequency flag in MHz as Hz.
fn hz_of(flag: &str, mhz: Option<f64>) -> Result<Option<u64>> {
    match mhz {
        None => Ok(None),
        Some(m) if m.is_finite() && m > 0.0 => Ok(Some((m * 1e6).round() as u64)),
        Some(m) => bail!("{flag} {m}: give a frequency in MHz above 0"),
    }
}

fn print_done(json: bool, message: &str) {
    if json {
        println!("{}", serde_json::json!({ "done": message }));
    } else {
        println!("{message}");
    }
}

fn print_hold(hold: &HoldStatus) {
    for d in &hold.domains {
        println!(
            "held {} at {} MHz (asked {} MHz)",
            d.domain,
            d.hz as f64 / 1e6,
            d.requested_hz as f64 / 1e6
        );
    }
    println!(
        "for {:.1} s unless renewed (send the same hold again); `dnngovctl release` ends it",
        hold.lease_ms as f64 / 1e3
    );
}

fn print_status(status: &StatusReport) {
    println!(
        "dnngovd {} (pid {}), up {:.0} s, governing {}",
        status.version, status.pid, status.uptime_s, status.sysfs_root
    );
    println!();
    if status.domains.is_empty() {
        println!("frequency domains: none governed");
    } else {
        println!(
            "{:<24} {:>9} {:>9} {:>9}  {:<28} why",
            "domain", "now MHz", "min MHz", "max MHz", "set by"
        );
        for d in &status.domains {
            let now = d
                .current_hz
                .map_or("-".to_string(), |hz| format!("{:.1}", hz as f64 / 1e6));
            println!(
                "{:<24} {:>9} {:>9.1} {:>9.1}  {:<28} {}",
                d.name,
                now,
                d.min_hz as f64 / 1e6,
                d.max_hz as f64 / 1e6,
                d.set_by,
                d.reason
            );
        }
    }
    if let Some(plan) = &status.plan {
        let power = plan
            .predicted_w
            .map_or(String::new(), |w| format!(", {w:.2} W predicted"));
        println!();
        println!(
            "plan: adopted {:.1} s ago ({}){power}",
            plan.age_s, plan.why
        );
    }
    if !status.power.is_empty() {
        println!();
        for rail in &status.power {
            println!(
                "power {:<16} {:>8.2} W {:>10.1} J{}",
                rail.rail,
                rail.watts,
                rail.joules,
                if rail.estimated { "  (estimated)" } else { "" }
            );
        }
    }
    if let Some(energy) = &status.energy {
        println!(
            "energy {:>17.1} J since dnngovd started (board){}",
            energy.joules,
            if energy.estimated {
                "  (estimated)"
            } else {
                ""
            }
        );
    }
    println!();
    print_apps(&status.apps);
    if !status.telemetry.is_empty() {
        println!();
        for source in &status.telemetry {
            println!("telemetry: {} from {}", source.what, source.source);
        }
    }
    for note in &status.notes {
        println!("note: {note}");
    }
}

fn print_apps(apps: &[AppStatus]) {
    if apps.is_empty() {
        println!("apps: none registered");
        return;
    }
    println!(
        "{:>4} {:<20} {:>8} {:>10} {:>9} {:>8} {:>8} {:>10} {:>9}",
        "id", "app", "pid", "deadline", "latency", "misses", "subnet", "accuracy", "inferences"
    );
    for app in apps {
        let subnet = match app.active_subnet {
            Some(active) if active == app.requested_subnet => active.to_string(),
            Some(active) => format!("{active}->{}", app.requested_subnet),
            None => format!("?->{}", app.requested_subnet),
        };
        let flag = if app.page_problem.is_some() { "!" } else { " " };
        println!(
            "{:>4}{flag}{:<20} {:>8} {:>8.1}{} {:>7.2}ms {:>7.1}% {:>8} {:>9} {:>9}",
            app.app_id,
            app.name,
            app.pid,
            app.deadline_ms,
            if app.operator_override { "*" } else { " " },
            app.last_latency_ms,
            app.miss_pct,
            subnet,
            app.accuracy_pct.map_or("-".into(), |a| format!("{a:.2}%")),
            app.inferences
        );
    }
    if apps.iter().any(|a| a.operator_override) {
        println!("* target set by an operator (dnngovctl set-target --clear gives it back)");
    }
    for app in apps {
        if let Some(problem) = &app.page_problem {
            println!(
                "! app {} \"{}\": its shared page holds figures that cannot be: {problem}",
                app.app_id, app.name
            );
        }
    }
}
