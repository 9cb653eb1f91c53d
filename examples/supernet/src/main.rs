//! `dnngov-supernet`: train the super-network, train fixed baselines, and measure accuracy,
//! latency and switch time per candidate sub-network.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use log::{info, warn};
use serde::Serialize;

use dnngov_supernet::dataset::{Dataset, Split};
use dnngov_supernet::latency::{self, Timing};
use dnngov_supernet::train::{self, TrainConfig};
use dnngov_supernet::{SubnetConfig, SuperNet};

#[derive(Parser)]
#[command(name = "dnngov-supernet", version, about)]
struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Threads for candle's matrix products and element-wise operations. Default: training
    /// uses every core for matrix products and one thread for element-wise operations;
    /// `eval` and `compare` use one thread throughout (steadier batch-1 latency).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the super-network with the sandwich rule, calibrate per-candidate BatchNorm
    /// statistics, record held-out accuracy, and write one safetensors file.
    Train {
        /// Where to write the weights.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        opts: TrainOpts,
    },
    /// Train fixed (non-elastic) networks shaped like chosen candidates, same budget each.
    TrainFixed {
        /// Directory for `fixed-<name>.safetensors` files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Candidates to mirror, comma-separated (default: smallest, middle, largest).
        #[arg(long, value_delimiter = ',')]
        subnets: Vec<String>,
        #[command(flatten)]
        opts: TrainOpts,
    },
    /// Held-out top-1, MACs and batch-1 CPU latency per candidate, and the switch time.
    Eval {
        /// Weights written by `train`.
        #[arg(long)]
        weights: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed inferences per candidate.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Timed switches.
        #[arg(long, default_value_t = 10_000)]
        switches: usize,
        /// Write the measured top-1 back into the weights file's manifest.
        #[arg(long)]
        record: bool,
    },
    /// Top-1 of fixed networks next to the super-network's candidates of the same shape.
    Compare {
        /// Weights written by `train`.
        #[arg(long)]
        weights: PathBuf,
        /// Directory written by `train-fixed`.
        #[arg(long)]
        fixed: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest of a weights file: candidates, MACs, stored top-1, training run.
    Info {
        /// A weights file.
        #[arg(long)]
        weights: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct TrainOpts {
    /// The tiny configuration (16x16 images, small network): seconds, for tests.
    #[arg(long)]
    tiny: bool,
    /// Training seed (initial weights, example order, sampled sub-networks).
    #[arg(long)]
    seed: Option<u64>,
    /// Passes over the training split.
    #[arg(long)]
    epochs: Option<usize>,
    /// Images in the training split.
    #[arg(long)]
    train_images: Option<usize>,
    /// Images per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Random candidates per step besides the largest and smallest.
    #[arg(long)]
    random_subnets: Option<usize>,
    /// Train smaller candidates on the labels instead of the largest one's predictions.
    #[arg(long)]
    no_distill: bool,
    /// Data set: standard deviation of the pixel noise.
    #[arg(long)]
    noise: Option<f32>,
    /// Data set: most clutter strokes per image.
    #[arg(long)]
    clutter: Option<usize>,
    /// Data set: smallest shape radius as a fraction of the image side.
    #[arg(long)]
    min_scale: Option<f32>,
    /// Stem stride (1 or 2).
    #[arg(long)]
    stem_stride: Option<usize>,
}

impl TrainOpts {
    fn config(&self) -> TrainConfig {
        let mut cfg = if self.tiny {
            TrainConfig::tiny()
        } else {
            TrainConfig::default()
        };
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(e) = self.epochs {
            cfg.epochs = e;
        }
        if let Some(n) = self.train_images {
            cfg.dataset.train = n;
        }
        if let Some(b) = self.batch_size {
            cfg.batch_size = b;
        }
        if let Some(lr) = self.lr {
            cfg.learning_rate = lr;
        }
        if let Some(r) = self.random_subnets {
            cfg.random_subnets = r;
        }
        if self.no_distill {
            cfg.distill = false;
        }
        if let Some(v) = self.noise {
            cfg.dataset.noise = v;
        }
        if let Some(v) = self.clutter {
            cfg.dataset.clutter = v;
        }
        if let Some(v) = self.min_scale {
            cfg.dataset.min_scale = v;
        }
        if let Some(v) = self.stem_stride {
            cfg.arch.stem_stride = v;
        }
        cfg
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let inference = matches!(cli.command, Command::Eval { .. } | Command::Compare { .. });
    dnngov_supernet::choose_threads(cli.threads, inference);
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let device = Device::Cpu;
    match cli.command {
        Command::Train { out, opts } => cmd_train(&out, &opts, &device),
        Command::TrainFixed { out, subnets, opts } => {
            cmd_train_fixed(&out, &subnets, &opts, &device)
        }
        Command::Eval {
            weights,
            json,
            runs,
            switches,
            record,
        } => cmd_eval(&weights, json, runs, switches, record, &device),
        Command::Compare {
            weights,
            fixed,
            json,
        } => cmd_compare(&weights, &fixed, json, &device),
        Command::Info { weights, json } => cmd_info(&weights, json),
    }
}

fn cmd_train(out: &Path, opts: &TrainOpts, device: &Device) -> Result<()> {
    let cfg = opts.config();
    let (net, report) =
        train::train_supernet(&cfg, device).context("training the super-network")?;
    net.save(out)
        .with_context(|| format!("saving weights to {}", out.display()))?;
    println!(
        "trained {} steps in {:.1}s (calibration {:.1}s, evaluation {:.1}s, total {:.1}s); wrote {}",
        report.steps,
        report.train_secs,
        report.calib_secs,
        report.eval_secs,
        report.total_secs,
        out.display()
    );
    for (c, (name, acc)) in net.candidates().iter().zip(&report.top1) {
        println!(
            "  {name:<16} {:>9} MACs  top-1 {:5.1}%",
            c.macs,
            acc * 100.0
        );
    }
    Ok(())
}

fn cmd_train_fixed(out: &Path, names: &[String], opts: &TrainOpts, device: &Device) -> Result<()> {
    let cfg = opts.config();
    let candidates = cfg.arch.default_candidates();
    let chosen: Vec<SubnetConfig> = if names.is_empty() {
        let n = candidates.len();
        let mut idx = vec![0, n / 2, n - 1];
        idx.dedup();
        idx.into_iter().map(|i| candidates[i].clone()).collect()
    } else {
        names
            .iter()
            .map(|n| {
                let s = SubnetConfig::parse(n)?;
                s.validate(&cfg.arch)?;
                Ok(s)
            })
            .collect::<dnngov_supernet::Result<_>>()
            .context("--subnets")?
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for s in chosen {
        let (net, report) =
            train::train_fixed(&cfg, &s, device).with_context(|| format!("training fixed {s}"))?;
        let path = out.join(format!("fixed-{}.safetensors", s.name()));
        net.save(&path)
            .with_context(|| format!("saving {}", path.display()))?;
        println!(
            "fixed {:<16} {:>9} MACs  top-1 {:5.1}%  {} steps in {:.1}s -> {}",
            s.name(),
            net.candidates()[0].macs,
            report.top1[0].1 * 100.0,
            report.steps,
            report.train_secs,
            path.display()
        );
    }
    Ok(())
}

/// Measurements of one candidate, as `eval --json` prints them.
#[derive(Serialize)]
struct CandidateEval {
    name: String,
    macs: u64,
    relative_macs: f64,
    params: u64,
    top1: f64,
    stored_top1: Option<f64>,
    latency: Timing,
}

/// What `eval --json` prints.
#[derive(Serialize)]
struct EvalReport {
    weights: PathBuf,
    test_images: usize,
    /// Threads of matrix products.
    threads: usize,
    /// Threads of element-wise operations.
    elementwise_threads: usize,
    candidates: Vec<CandidateEval>,
    switch: Timing,
    plan_build_smallest: Timing,
    plan_build_largest: Timing,
    stored_values: usize,
    plan_values: usize,
    load_ms: f64,
}

fn held_out(net: &SuperNet, weights: &Path) -> Result<Dataset> {
    let ds = net.provenance().dataset.clone().with_context(|| {
        format!(
            "{} records no data set, so there is no held-out split to evaluate on",
            weights.display()
        )
    })?;
    Ok(Dataset::generate(&ds, Split::Test)?)
}

fn cmd_eval(
    weights: &Path,
    json: bool,
    runs: usize,
    switches: usize,
    record: bool,
    device: &Device,
) -> Result<()> {
    if runs == 0 || switches == 0 {
        bail!("--runs and --switches must be > 0");
    }
    let t = Instant::now();
    let mut net = SuperNet::load(weights, device)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let test = held_out(&net, weights)?;
    let stored: Vec<Option<f64>> = net.candidates().iter().map(|c| c.top1).collect();
    let acc = train::evaluate(&mut net, &test, 256)?;
    let (image, _) = test.batch(&[0], device)?;
    let mut rows = Vec::new();
    for (i, (a, s)) in acc.iter().zip(stored).enumerate() {
        net.set_subnet_index(i)?;
        let lat = latency::inference_latency(&net, &image, 20, runs)?;
        let c = &net.candidates()[i];
        rows.push(CandidateEval {
            name: c.name.clone(),
            macs: c.macs,
            relative_macs: c.relative_macs,
            params: c.params,
            top1: *a,
            stored_top1: s,
            latency: lat,
        });
    }
    let switch = latency::switch_time(&mut net, switches)?;
    let n = net.candidates().len();
    let report = EvalReport {
        weights: weights.to_path_buf(),
        test_images: test.len(),
        threads: std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        elementwise_threads: std::env::var("CANDLE_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        candidates: rows,
        switch,
        plan_build_smallest: latency::plan_build_time(&net, 0, 200)?,
        plan_build_largest: latency::plan_build_time(&net, n - 1, 200)?,
        stored_values: net.stored_values(),
        plan_values: net.plan_values(),
        load_ms,
    };
    if record {
        net.save(weights)
            .with_context(|| format!("recording top-1 in {}", weights.display()))?;
        info!("recorded top-1 per candidate in {}", weights.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: {} candidates, held-out split of {} images, {} matrix / {} element-wise threads, loaded in {:.1} ms",
        weights.display(),
        n,
        report.test_images,
        report.threads,
        report.elementwise_threads,
        report.load_ms
    );
    println!(
        "{:<16} {:>9} {:>5} {:>8} {:>7} {:>12} {:>12}",
        "sub-network", "MACs", "rel.", "params", "top-1", "latency p50", "p10..p90"
    );
    for r in &report.candidates {
        println!(
            "{:<16} {:>9} {:>5.2} {:>8} {:>6.1}% {:>9.0} us {:>5.0}..{:.0} us",
            r.name,
            r.macs,
            r.relative_macs,
            r.params,
            r.top1 * 100.0,
            r.latency.median_us,
            r.latency.p10_us,
            r.latency.p90_us
        );
    }
    println!(
        "switch (set_subnet, prepared plans): median {:.3} us, p90 {:.3} us over {} switches",
        report.switch.median_us, report.switch.p90_us, report.switch.runs
    );
    println!(
        "plan build from shared weights (switch without prepared plans): smallest {:.0} us, largest {:.0} us",
        report.plan_build_smallest.median_us, report.plan_build_largest.median_us
    );
    println!(
        "memory: {} stored values (shared weights + statistics), {} in prepared plans",
        report.stored_values, report.plan_values
    );
    Ok(())
}

/// One line of `compare`.
#[derive(Serialize)]
struct CompareRow {
    name: String,
    macs: u64,
    supernet_top1: f64,
    fixed_top1: f64,
    fixed_file: PathBuf,
}

fn cmd_compare(weights: &Path, fixed_dir: &Path, json: bool, device: &Device) -> Result<()> {
    let mut net = SuperNet::load(weights, device)?;
    let test = held_out(&net, weights)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixed_dir)
        .with_context(|| format!("reading {}", fixed_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .safetensors files", fixed_dir.display());
    }
    let mut rows = Vec::new();
    for f in files {
        let fixed = SuperNet::load(&f, device)?;
        let Some(name) = fixed.provenance().fixed_for.clone() else {
            warn!("{} is not a fixed network; skipped", f.display());
            continue;
        };
        if fixed.provenance().dataset != net.provenance().dataset {
            warn!(
                "{} was trained on another data set than {}",
                f.display(),
                weights.display()
            );
        }
        let index = net
            .find(&name)
            .with_context(|| format!("{} mirrors {name}", f.display()))?;
        net.set_subnet_index(index)?;
        let macs = net.candidates()[index].macs;
        if fixed.candidates()[0].macs != macs {
            bail!(
                "{} has {} MACs, candidate {name} {macs}",
                f.display(),
                fixed.candidates()[0].macs
            );
        }
        rows.push(CompareRow {
            name,
            macs,
            supernet_top1: train::top1(&net, &test, 256)?,
            fixed_top1: train::top1(&fixed, &test, 256)?,
            fixed_file: f,
        });
    }
    rows.sort_by_key(|r| r.macs);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "held-out split of {} images; top-1 of the super-network's sub-network vs a fixed network of the same shape",
        test.len()
    );
    println!(
        "{:<16} {:>9} {:>10} {:>8} {:>7}",
        "sub-network", "MACs", "supernet", "fixed", "delta"
    );
    for r in &rows {
        println!(
            "{:<16} {:>9} {:>9.1}% {:>7.1}% {:>+6.1}",
            r.name,
            r.macs,
            r.supernet_top1 * 100.0,
            r.fixed_top1 * 100.0,
            (r.supernet_top1 - r.fixed_top1) * 100.0
        );
    }
    Ok(())
}

fn cmd_info(weights: &Path, json: bool) -> Result<()> {
    let m = SuperNet::read_manifest(weights)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    println!("{}: {}", weights.display(), m.format);
    if let Some(t) = &m.provenance.training {
        println!(
            "trained: {} seed {} epochs {} steps {} in {:.1}s",
            t.method, t.seed, t.epochs, t.steps, t.train_secs
        );
    }
    if let Some(f) = &m.provenance.fixed_for {
        println!("fixed network shaped like {f}");
    }
    for c in &m.candidates {
        let acc = c
            .top1
            .map_or_else(|| "-".to_string(), |a| format!("{:.1}%", a * 100.0));
        println!(
            "  {:<16} {:>9} MACs {:>8} params  top-1 {acc}",
            c.name, c.macs, c.params
        );
    }
    Ok(())
}
