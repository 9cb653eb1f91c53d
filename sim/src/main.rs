//! `dnngov-sim`: runs scenario files against the governors and prints or plots the results.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use dnngov_policy::GovernorKind;
use dnngov_sim::governors::Which;
use dnngov_sim::report::{app_table, compare, table, write_plots};
use dnngov_sim::{run, Platform, Scenario};

#[derive(Parser)]
#[command(
    version,
    about = "Simulated boards and DNN workloads for dnngov, in virtual time"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every governor and the oracle on one scenario and seed: a table and SVG plots.
    Compare {
        scenario: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the SVG plots go.
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
        /// A platform file to use instead of the scenario's.
        #[arg(long)]
        platform: Option<PathBuf>,
        /// Comma-separated governors to run (default: all); the oracle runs unless
        /// --no-oracle.
        #[arg(long, value_delimiter = ',')]
        governors: Vec<String>,
        #[arg(long)]
        no_oracle: bool,
    },
    /// schedutil against dnngov over several seeds: energy and misses per seed.
    Seeds {
        scenario: PathBuf,
        /// Seeds 1 to this.
        #[arg(long, default_value_t = 5)]
        count: u64,
        #[arg(long)]
        platform: Option<PathBuf>,
        /// Also search and run the oracle at every seed, and compare dnngov with it
        /// (energy ratio, missed frames).
        #[arg(long)]
        oracle: bool,
    },
    /// Writes the random scenario of a seed as an ordinary scenario file.
    Generate {
        #[arg(long)]
        seed: u64,
        /// Length of the scenario in seconds.
        #[arg(long, default_value_t = 120.0)]
        duration: f64,
        /// The board: a platform file.
        #[arg(long, default_value = "platforms/jetson-xavier-nx.toml")]
        platform: PathBuf,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generated scenarios run with schedutil, subnet-only, dnngov and the oracle, dnngov
    /// judged against the oracle: one row per scenario, then the verdicts. Exits 1 when a
    /// criterion fails.
    Sweep {
        /// How many scenarios: seeds --first-seed to --first-seed + count - 1.
        #[arg(long, default_value_t = 200)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        #[arg(long, default_value_t = 120.0)]
        duration: f64,
        #[arg(long, default_value = "platforms/jetson-xavier-nx.toml")]
        platform: PathBuf,
        /// Threads (default: the CPUs available).
        #[arg(long)]
        jobs: Option<usize>,
        /// Where the distribution plots (SVG) go; none without it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One governor on one scenario; prints its metrics and the simulation speed.
    Run {
        scenario: PathBuf,
        #[arg(long, default_value = "dnngov")]
        governor: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        platform: Option<PathBuf>,
        /// Also print the sampled time series as CSV.
        #[arg(long)]
        series: bool,
        /// Also print every plan the governor adopted (dnngov, dvfs-only), when and why.
        #[arg(long)]
        plans: bool,
    },
}

fn load(scenario: &Path, platform: Option<&Path>) -> Result<(Scenario, Platform)> {
    let scn = Scenario::load(scenario)?;
    let plat = match platform {
        Some(p) => Platform::load(p)?,
        None => Platform::load(&scn.platform_path())?,
    };
    Ok((scn, plat))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Compare {
            scenario,
            seed,
            out,
            platform,
            governors,
            no_oracle,
        } => {
            let (scn, plat) = load(&scenario, platform.as_deref())?;
            let which = if governors.is_empty() {
                Which::ALL.to_vec()
            } else {
                governors
                    .iter()
                    .map(|g| which_by_name(g))
                    .collect::<Result<Vec<_>>>()?
            };
            let c = compare(&scn, &plat, seed, &which, !no_oracle)?;
            println!(
                "{} ({}), seed {seed}, {} s simulated on {} (all figures simulated)\n",
                scn.name, scn.description, scn.duration_s, plat.name
            );
            print!("{}", table(&c));
            let per_app = app_table(&c);
            if !per_app.is_empty() {
                print!("\nPer app:\n\n{per_app}");
            }
            let total: f64 = c.runs.iter().map(|r| r.metrics.simulated_s).sum();
            let wall: f64 = c.wall.iter().map(|w| w.as_secs_f64()).sum();
            println!(
                "\n{} runs, {total:.0} virtual s in {wall:.2} wall-clock s (oracle search included): {:.0}x real time",
                c.runs.len(),
                total / wall.max(1e-9)
            );
            let prefix = scn.name.to_lowercase();
            for f in write_plots(&c, &out, &prefix)? {
                println!("wrote {}", f.display());
            }
        }
        Cmd::Seeds {
            scenario,
            count,
            platform,
            oracle,
        } => {
            let (scn, plat) = load(&scenario, platform.as_deref())?;
            if oracle && scn.apps.is_empty() {
                anyhow::bail!(
                    "{}: no app, so no oracle to compare with",
                    scenario.display()
                );
            }
            println!(
                "{} ({}), {} s simulated on {} (all figures simulated)\n",
                scn.name, scn.description, scn.duration_s, plat.name
            );
            if oracle {
                println!("| seed | schedutil energy J | dnngov energy J | oracle energy J | dnngov / schedutil | dnngov / oracle | schedutil miss % | dnngov miss % | oracle miss % | dnngov missed frames | oracle missed frames |");
                println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            } else {
                println!("| seed | schedutil energy J | dnngov energy J | energy / schedutil | schedutil miss % | dnngov miss % | schedutil latency mean ms | dnngov latency mean ms |");
                println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
            }
            for seed in 1..=count {
                let c = compare_pair(&scn, &plat, seed)?;
                let (a, b) = (&c.0.metrics, &c.1.metrics);
                if !oracle {
                    println!(
                        "| {seed} | {:.1} | {:.1} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} |",
                        a.energy_j,
                        b.energy_j,
                        b.energy_j / a.energy_j,
                        a.miss_pct,
                        b.miss_pct,
                        a.latency_mean_ms,
                        b.latency_mean_ms
                    );
                    continue;
                }
                let Some(mut o) = dnngov_sim::oracle::oracle(&scn, &plat, seed)? else {
                    anyhow::bail!("no oracle for {}", scenario.display());
                };
                let o = run(&scn, &plat, &mut o, seed)?.metrics;
                let missed =
                    |m: &dnngov_sim::Metrics| (m.miss_pct * m.frames as f64 / 100.0).round();
                println!(
                    "| {seed} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    a.energy_j,
                    b.energy_j,
                    o.energy_j,
                    b.energy_j / a.energy_j,
                    b.energy_j / o.energy_j,
                    a.miss_pct,
                    b.miss_pct,
                    o.miss_pct,
                    missed(b),
                    missed(&o)
                );
            }
        }
        Cmd::Generate {
            seed,
            duration,
            platform,
            out,
        } => {
            if !(duration.is_finite() && duration >= 40.0) {
                bail!("--duration must be at least 40 s (events need room to start and end), not {duration}");
            }
            let plat = Platform::load(&platform)?;
            // The file names its platform relative to itself, as the shipped ones do.
            let named = match &out {
                Some(o) => relative_to(&platform, o.parent().unwrap_or(Path::new(".")))?,
                None => platform.clone(),
            };
            let board = dnngov_sim::generate::Board::of(&plat, &named.to_string_lossy());
            let scn = dnngov_sim::generate::generate(seed, duration, &board);
            let text = dnngov_sim::generate::to_toml(&scn, seed)?;
            match out {
                Some(o) => {
                    std::fs::write(&o, text)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", o.display()))?;
                    println!("wrote {}", o.display());
                }
                None => print!("{text}"),
            }
        }
        Cmd::Sweep {
            count,
            first_seed,
            duration,
            platform,
            jobs,
            out,
        } => {
            use dnngov_sim::sweep::{sweep, table, write_plots, Criteria, Summary};
            if !(duration.is_finite() && duration >= 40.0) {
                bail!("--duration must be at least 40 s, not {duration}");
            }
            let plat = Platform::load(&platform)?;
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let seeds: Vec<u64> = (first_seed..first_seed + count).collect();
            let c = Criteria::default();
            let start = Instant::now();
            let rows = sweep(&seeds, duration, &plat, &platform, jobs, &c)?;
            println!(
                "{count} generated scenarios (seeds {first_seed}-{}), {duration} s each, on {} (all figures simulated)\n",
                first_seed + count - 1,
                plat.name
            );
            print!("{}", table(&rows, &c));
            let summary = Summary::of(&rows, &c);
            println!();
            let mut all = true;
            for (text, ok) in summary.verdicts(&c) {
                println!("{} {text}", if ok { "ok  " } else { "FAIL" });
                all &= ok;
            }
            println!(
                "\n{} scenarios in {:.0} s of wall-clock time on {jobs} thread(s)",
                rows.len(),
                start.elapsed().as_secs_f64()
            );
            if let Some(dir) = out {
                for f in write_plots(&rows, &dir)? {
                    println!("wrote {}", f.display());
                }
            }
            if !all {
                std::process::exit(1);
            }
        }
        Cmd::Run {
            scenario,
            governor,
            seed,
            platform,
            series,
            plans,
        } => {
            let (scn, plat) = load(&scenario, platform.as_deref())?;
            let mut g = which_by_name(&governor)?.build(&scn, &plat)?;
            let start = Instant::now();
            let r = run(&scn, &plat, g.as_mut(), seed)?;
            let wall = start.elapsed().as_secs_f64();
            if series {
                print_series(&r.series);
            }
            if plans {
                println!("plans adopted: {}", r.trace.plans.len());
                for (t, why) in &r.trace.plans {
                    println!("{:9.3} s  {why}", t / 1000.0);
                }
            }
            println!("{:#?}", r.metrics);
            println!(
                "simulated {:.1} s in {:.3} s of wall-clock time: {:.0}x real time",
                r.metrics.simulated_s,
                wall,
                r.metrics.simulated_s / wall.max(1e-9)
            );
        }
    }
    Ok(())
}

fn which_by_name(name: &str) -> Result<Which> {
    match Which::ALL.iter().find(|w| w.name() == name) {
        Some(w) => Ok(*w),
        None => {
            let names: Vec<&str> = Which::ALL.iter().map(|w| w.name()).collect();
            bail!("unknown governor {name:?}; known: {}", names.join(", "))
        }
    }
}

fn compare_pair(
    scn: &Scenario,
    plat: &Platform,
    seed: u64,
) -> Result<(dnngov_sim::RunResult, dnngov_sim::RunResult)> {
    let mut out = Vec::new();
    for w in [Which::Kernel(GovernorKind::Schedutil), Which::Dnngov] {
        let mut g = w.build(scn, plat)?;
        out.push(run(scn, plat, g.as_mut(), seed)?);
    }
    let b = out.pop().expect("two runs");
    let a = out.pop().expect("two runs");
    Ok((a, b))
}

fn print_series(s: &dnngov_sim::Series) {
    let mut head = vec!["t_s".to_string()];
    head.extend(s.domain_names.iter().map(|d| format!("{d}_mhz")));
    head.push("power_w".into());
    for a in &s.app_names {
        head.extend([
            format!("{a}_latency_ms"),
            format!("{a}_deadline_ms"),
            format!("{a}_subnet"),
        ]);
    }
    println!("{}", head.join(","));
    for i in 0..s.t_s.len() {
        let mut row = vec![format!("{:.1}", s.t_s[i])];
        row.extend(s.freq_mhz.iter().map(|f| format!("{:.1}", f[i])));
        row.push(format!("{:.3}", s.power_w[i]));
        for a in 0..s.app_names.len() {
            row.push(format!("{:.2}", s.latency_ms[a][i]));
            row.push(format!("{:.1}", s.deadline_ms[a][i]));
            row.push(format!("{}", s.subnet[a][i]));
        }
        println!("{}", row.join(","));
    }
}

/// `path` as seen from `dir`: `../../platforms/x.toml` for a scenario in `sim/scenarios`.
fn relative_to(path: &Path, dir: &Path) -> Result<PathBuf> {
    let abs = |p: &Path| -> Result<PathBuf> {
        let base = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        std::fs::canonicalize(base).map_err(|e| anyhow::anyhow!("{}: {e}", base.display()))
    };
    let (path, dir) = (abs(path)?, abs(dir)?);
    let common = path
        .components()
        .zip(dir.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in dir.components().skip(common) {
        out.push("..");
    }
    for c in path.components().skip(common) {
        out.push(c);
    }
    Ok(out)
}
