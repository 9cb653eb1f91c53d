//! `dnngov-vboard`: a simulated board exposed as a sysfs-like tree, in real time.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use dnngov_sim::vboard::VirtualBoard;
use dnngov_sim::{run, Platform, Scenario};

#[derive(Parser)]
#[command(
    version,
    about = "Keeps a sysfs-like tree under --root in step with a simulated board, in real time"
)]
struct Cli {
    /// Platform file (platforms/*.toml).
    #[arg(long)]
    platform: PathBuf,
    /// Directory the tree is laid under (its sys/... mirrors /sys/...).
    #[arg(long)]
    root: PathBuf,
    /// Workload to run on the board; an idle board without one.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// How long to run, seconds (default: the scenario's duration, or one hour idle).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let plat = Platform::load(&cli.platform)?;
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
    let mut board = VirtualBoard::create(&cli.root, &plat, true)?;
    log::info!(
        "virtual {} under {} for {} s ({}); writes to its control files take effect within {} ms",
        plat.name,
        cli.root.display(),
        scn.duration_s,
        scn.name,
        scn.tick_ms
    );
    let r = run(&scn, &plat, &mut board, cli.seed)?;
    log::info!(
        "done: {:.1} J, mean {:.2} W",
        r.metrics.energy_j,
        r.metrics.mean_power_w
    );
    Ok(())
}
