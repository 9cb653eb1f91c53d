//! `dnngov-supernet-app`: the trained super-network as an app that dnngovd governs.
//!
//! `profile` times every candidate sub-network at a sweep of CPU settings that the agent
//! holds in turn (or at the current clocks, with the rest modelled from a board
//! description) and writes the app's profile: the Pareto library it registers with.
//! `run` registers that library, classifies held-out images at a frame rate, switches to
//! the sub-network the agent asks for, acknowledges, and marks every inference.

mod app;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dnngov-supernet-app", version, about)]
struct Cli {
    /// More log output (-v debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time every candidate at a sweep of CPU settings and write the profile (the library
    /// to register, with declared latencies, and every measurement).
    Profile {
        #[command(flatten)]
        args: app::ProfileArgs,
        /// Where to write the profile (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Register the library and classify frames at a rate under the agent.
    Run {
        #[command(flatten)]
        args: app::RunArgs,
        /// Print the final report as JSON (and no status line).
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    // One thread for inference (an app shares the machine), unless the user says otherwise.
    dnngov_supernet::choose_threads(None, true);
    let level = match cli.verbose {
        0 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if let Err(e) = run(cli.command) {
        eprintln!("dnngov-supernet-app: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Profile { args, out } => {
            let profile = app::profile(&args)?;
            profile.save(&out)?;
            println!(
                "{} measurements ({} modelled); library of {}:",
                profile.measurements.len(),
                profile.measurements.iter().filter(|m| m.modelled).count(),
                profile.library.len()
            );
            for subnet in &profile.library {
                println!(
                    "  {:>2} {:<16} top-1 {:6.2} %  {:8.3} ms at full clocks",
                    subnet.id,
                    subnet.name,
                    subnet.accuracy_pct,
                    subnet.latency_ms.unwrap_or(f64::NAN)
                );
            }
            for note in &profile.notes {
                println!("note: {note}");
            }
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Run { args, json } => {
            let interrupted = interrupt_flag()?;
            let mut last_line = std::time::Instant::now();
            let report = app::run(&args, &mut |report, subnet| {
                if !json && last_line.elapsed() >= Duration::from_millis(500) {
                    last_line = std::time::Instant::now();
                    eprint!(
                        "\rframes {:>6}  top-1 {:5.1} %  latency {:6.2} ms  misses {:>4}  switches {:>3}  running {subnet:<16}",
                        report.frames,
                        report.accuracy_pct,
                        report.latency_mean_ms,
                        report.deadline_misses,
                        report.switches
                    );
                    let _ = std::io::stderr().flush();
                }
                !interrupted.load(Ordering::Relaxed)
            })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                eprintln!();
                println!(
                    "{} frames of {} image(s), top-1 {:.2} %, latency mean {:.2} ms (p99 {:.2} ms), {} over the deadline, {} switches ({:.1} us each)",
                    report.frames,
                    report.batch,
                    report.accuracy_pct,
                    report.latency_mean_ms,
                    report.latency_p99_ms,
                    report.deadline_misses,
                    report.switches,
                    report.switch_mean_us
                );
                for (subnet, count) in &report.frames_per_subnet {
                    println!("  {subnet:<16} {count} frames");
                }
            }
            Ok(())
        }
    }
}

/// Set on SIGINT or SIGTERM, so a run ends with its report instead of dying mid-frame.
fn interrupt_flag() -> Result<&'static AtomicBool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    static FLAG: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        FLAG.store(true, Ordering::Relaxed);
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(&FLAG)
}
