//! The super-network as a governed app: profiling its candidates into a library
//! ([`profile`]) and classifying a stream of frames under the agent ([`run`]).
//!
//! Both use the client shim like any app: `profile` asks the agent (admin socket) to hold
//! each DVFS setting in turn and times every candidate there; `run` registers the library,
//! runs the sub-network the agent asks for, acknowledges each switch and marks every
//! inference, so the agent's probes see real latencies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Device as CandleDevice;
use dnngov_client::profile::{
    self, CandidateInfo, Measurement, Modelled, Profile, Setting, SweepOptions,
};
use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
use dnngov_policy::platform::{Kind, Platform};
use serde::Serialize;

use dnngov_supernet::dataset::{Dataset, Split};
use dnngov_supernet::SuperNet;

/// What [`profile`] needs (also the `profile` command's options).
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// Weights written by `dnngov-supernet train` (with top-1 recorded).
    #[arg(long)]
    pub weights: PathBuf,
    /// The app name recorded in the profile.
    #[arg(long, default_value = "supernet")]
    pub app: String,
    /// The agent's admin socket (default: $DNNGOV_ADMIN_SOCKET, else /run/dnngov/admin.sock).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// A board description (platforms/*.toml) to model the settings that cannot be held
    /// here.
    #[arg(long)]
    pub platform: Option<PathBuf>,
    /// CPU settings, as fractions of the CPU domain's highest frequency (the agent snaps
    /// each to its table).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.0, 0.75, 0.5])]
    pub cpu_fractions: Vec<f64>,
    /// Timed inferences per candidate and setting.
    #[arg(long, default_value_t = 30)]
    pub inferences: u32,
    /// Untimed inferences first.
    #[arg(long, default_value_t = 5)]
    pub warmup: u32,
    /// Average the board's power over at least this long per candidate and setting
    /// (0: no energy, latency only).
    #[arg(long, default_value_t = 500)]
    pub energy_window_ms: u64,
    /// Library entries at most (the protocol allows 32).
    #[arg(long, default_value_t = 8)]
    pub max_entries: usize,
    /// Images per inference, as `run --batch` will classify them.
    #[arg(long, default_value_t = 1, value_parser = batch_size)]
    pub batch: usize,
}

/// `--batch`: a whole number from 1 to [`MAX_BATCH`].
fn batch_size(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number of images from 1 to {MAX_BATCH}"
        )),
    }
}

/// Most images per inference: 1024 images of 3x32x32 are 12 MB of input and about 0.3 s
/// per inference of the largest candidate on one core, far past any frame period.
pub const MAX_BATCH: usize = 1024;

/// The profile's `workload` key for the images per inference.
const BATCH_KEY: &str = "batch";

/// Profiles every candidate of the weights at a sweep of CPU settings and chooses the
/// library: measured where an agent governs this machine's CPU, at the current clocks
/// otherwise, with the other settings modelled from `args.platform` when given.
pub fn profile(args: &ProfileArgs) -> Result<Profile> {
    let mut net = SuperNet::load(&args.weights, &CandleDevice::Cpu)
        .with_context(|| format!("loading {}", args.weights.display()))?;
    net.prepare_all()?;
    let candidates = candidate_infos(&net)?;
    let images = probe_batch(&net, args.batch)?;

    let mut opts = SweepOptions {
        warmup: args.warmup,
        inferences: args.inferences.max(1),
        energy_window: Duration::from_millis(args.energy_window_ms),
        ..SweepOptions::default()
    };
    if let Some(socket) = &args.admin_socket {
        opts.admin_socket = socket.clone();
    }
    let settings = cpu_settings(&opts.admin_socket, &args.cpu_fractions);
    let mut run_one = |index: usize| -> Result<()> {
        net.set_subnet_index(index)?;
        std::hint::black_box(net.classify(&images)?);
        Ok(())
    };
    let measured = profile::sweep(&opts, &candidates, &settings, &mut run_one)?;

    let all_measured = !settings.is_empty() && measured.iter().all(|m| !m.modelled);
    let measurements = match (&args.platform, all_measured) {
        (Some(path), false) => {
            let board = Platform::load(path)
                .with_context(|| format!("loading the board description {}", path.display()))?;
            let modelled_settings = board_settings(&board, &args.cpu_fractions)?;
            let mut model =
                |reference: &Measurement, setting: &Setting| model_on(&board, reference, setting);
            profile::model_other_settings(&measured, &modelled_settings, &mut model)
        }
        _ => measured,
    };
    let mut result = Profile::new(
        &args.app,
        &profile::this_machine(),
        measurements,
        args.max_entries,
    );
    record_batch(&mut result, args.batch);
    if !all_measured {
        result.notes.push(match &args.platform {
            Some(path) => format!(
                "measured at this machine's current clocks only (no agent holding DVFS settings); the other settings are modelled from {}, taking the current clocks as the board's highest CPU frequency",
                path.display()
            ),
            None => "measured at this machine's current clocks only (no agent holding DVFS settings, no board description to model others)".to_string(),
        });
    }
    Ok(result)
}

/// The candidates as the profiler sees them: name, held-out top-1 in percent, MACs as
/// the relative cost. Every candidate needs its top-1 recorded in the weights.
fn candidate_infos(net: &SuperNet) -> Result<Vec<CandidateInfo>> {
    net.candidates()
        .iter()
        .map(|c| {
            let Some(top1) = c.top1 else {
                bail!(
                    "candidate {} has no recorded top-1: run `dnngov-supernet eval --record` on the weights first",
                    c.name
                );
            };
            Ok(CandidateInfo {
                name: c.name.clone(),
                accuracy_pct: top1 * 100.0,
                relative_cost: Some(c.macs as f64),
            })
        })
        .collect()
}

/// The first `batch` held-out images as one tensor, for timing.
fn probe_batch(net: &SuperNet, batch: usize) -> Result<candle_core::Tensor> {
    let data = test_images(net, Some(batch))?;
    let indices: Vec<usize> = (0..batch).map(|i| i % data.len()).collect();
    let (images, _) = data.batch(&indices, net.device())?;
    Ok(images)
}

/// Records in `profile` that its latencies are for `batch` images per inference.
fn record_batch(profile: &mut Profile, batch: usize) {
    profile
        .workload
        .insert(BATCH_KEY.into(), serde_json::Value::from(batch));
}

/// The images per inference a profile was made with: what it recorded, else 1 (profiles
/// from before the option recorded nothing and were made at one image).
fn profile_batch(profile: &Profile, path: &Path) -> Result<usize> {
    match profile.workload.get(BATCH_KEY) {
        None => Ok(1),
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_BATCH).contains(n))
            .with_context(|| {
                format!(
                    "{}: workload.{BATCH_KEY} is {value}; it must be a whole number from 1 to {MAX_BATCH}",
                    path.display()
                )
            }),
    }
}

/// The held-out images a net was evaluated on (its manifest's dataset), `limit` of them
/// at most.
fn test_images(net: &SuperNet, limit: Option<usize>) -> Result<Dataset> {
    let Some(mut config) = net.provenance().dataset.clone() else {
        bail!("the weights do not say which dataset they were trained on");
    };
    if let Some(limit) = limit {
        config.test = config.test.min(limit.max(1));
    }
    Ok(Dataset::generate(&config, Split::Test)?)
}

/// Settings to hold: `fractions` of the governed CPU domain's range, when an agent runs
/// and governs one; none otherwise (the sweep then measures the current clocks).
fn cpu_settings(admin_socket: &Path, fractions: &[f64]) -> Vec<Setting> {
    let Ok(status) = dnngov_client::admin::status(admin_socket) else {
        return Vec::new();
    };
    let Some(cpu) = status
        .domains
        .iter()
        .find(|d| d.kind == Some(governor_proto::admin::DomainKind::Cpu))
    else {
        return Vec::new();
    };
    let mut settings: Vec<Setting> = fractions
        .iter()
        .map(|f| {
            let hz = ((cpu.max_hz as f64) * f.clamp(0.0, 1.0)) as u64;
            Setting {
                cpu_hz: Some(hz.clamp(cpu.min_hz, cpu.max_hz)),
                ..Setting::default()
            }
        })
        .collect();
    settings.dedup();
    settings
}

/// The same fractions of the board description's CPU table, for modelling.
fn board_settings(board: &Platform, fractions: &[f64]) -> Result<Vec<Setting>> {
    let cpu = board
        .domains
        .iter()
        .find(|d| d.kind == Kind::Cpu)
        .context("the board description has no CPU domain")?;
    let top = *cpu
        .freqs_khz
        .last()
        .context("the CPU domain has no frequencies")?;
    let mut settings: Vec<Setting> = fractions
        .iter()
        .map(|f| {
            let want = (top as f64 * f.clamp(0.0, 1.0)) as u64;
            // The lowest table frequency at or above the wish.
            let khz = cpu
                .freqs_khz
                .iter()
                .copied()
                .find(|&k| k >= want)
                .unwrap_or(top);
            Setting {
                cpu_hz: Some(khz * 1000),
                ..Setting::default()
            }
        })
        .collect();
    settings.dedup();
    Ok(settings)
}

/// A candidate at `setting` on `board`, from its measurement at the current clocks taken
/// as the board's highest CPU frequency: the whole inference runs on one CPU, so latency
/// scales with `f_max / f`; energy is the board's power over the latency, as a board's
/// meter would see it: its base power plus the CPU domain with one core busy and the
/// others idle (the other domains' idle draw is in neither figure).
fn model_on(board: &Platform, reference: &Measurement, setting: &Setting) -> Option<Modelled> {
    let cpu = board.domains.iter().find(|d| d.kind == Kind::Cpu)?;
    let top = *cpu.freqs_khz.last()? as f64 * 1000.0;
    let hz = setting.cpu_hz? as f64;
    let scale = top / hz;
    let latency_ms = reference.latency_ms * scale;
    let mut activities = vec![0.0; cpu.cpus.len().max(1)];
    activities[0] = 1.0;
    let watts = board.base_power_w + cpu.power_w(dnngov_policy::Hz(hz as u64), &activities);
    Some(Modelled {
        latency_ms,
        latency_p90_ms: reference.latency_p90_ms * scale,
        energy_mj: Some(watts * latency_ms),
    })
}

/// What [`run`] needs (also the `run` command's options).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Weights written by `dnngov-supernet train`.
    #[arg(long)]
    pub weights: PathBuf,
    /// A profile written by `profile` (default: time every candidate at start-up and keep
    /// a Pareto library by latency).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// The app's name, as `dnngovctl apps` shows it.
    #[arg(long, default_value = "supernet")]
    pub name: String,
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    #[arg(long, default_value_t = 30.0)]
    pub deadline_ms: f64,
    /// Lowest acceptable top-1, in percent.
    #[arg(long = "accuracy-floor")]
    pub accuracy_floor_pct: Option<f64>,
    /// Stop after this many frames (default: until interrupted).
    #[arg(long)]
    pub frames: Option<u64>,
    /// The agent's socket (default: $DNNGOV_SOCKET, else /run/dnngov/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Images per inference: held-out images classified as one tensor batch, like a
    /// tick's frames from several cameras. A profile must have been made with the same.
    #[arg(long, default_value_t = 1, value_parser = batch_size)]
    pub batch: usize,
}

/// What one run did, per sub-network and in all.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunReport {
    /// Inferences, of `batch` images each.
    pub frames: u64,
    /// Images per inference.
    pub batch: usize,
    /// Images classified: `frames * batch`.
    pub images: u64,
    /// Images classified correctly, over all of them.
    pub correct: u64,
    pub accuracy_pct: f64,
    pub deadline_misses: u64,
    pub latency_mean_ms: f64,
    pub latency_p99_ms: f64,
    pub switches: u64,
    /// Mean time `set_subnet` took per switch, in microseconds.
    pub switch_mean_us: f64,
    /// Frames per sub-network, by library name, in library order.
    pub frames_per_subnet: Vec<(String, u64)>,
    /// Whether the agent was reachable at the end.
    pub connected: bool,
}

/// Registers the library and classifies held-out images at `fps`, running the sub-network
/// the agent asks for. `on_frame` sees every frame's report so far (for a status line);
/// it returns `false` to stop.
pub fn run(
    args: &RunArgs,
    on_frame: &mut dyn FnMut(&RunReport, &str) -> bool,
) -> Result<RunReport> {
    anyhow::ensure!(
        args.fps > 0.0 && args.fps.is_finite(),
        "--fps must be a positive number, not {}",
        args.fps
    );
    let mut net = SuperNet::load(&args.weights, &CandleDevice::Cpu)
        .with_context(|| format!("loading {}", args.weights.display()))?;
    net.prepare_all()?;
    let target = Target {
        deadline_ms: args.deadline_ms,
        period_ms: Some(1000.0 / args.fps),
        accuracy_floor_pct: args.accuracy_floor_pct,
        priority: 0,
    };
    let library = match &args.profile {
        Some(path) => {
            let profile = Profile::load(path)?;
            let made_at = profile_batch(&profile, path)?;
            anyhow::ensure!(
                made_at == args.batch,
                "{} was made with --batch {made_at} and this run has --batch {}: its latencies are for {made_at} image(s) per inference; profile again with --batch {}, or run with --batch {made_at}",
                path.display(),
                args.batch,
                args.batch
            );
            profile
        }
        None => startup_profile(&mut net, &args.name, args.batch)?,
    };
    let spec = AppSpec::from_profile(&library, args.name.clone(), target, vec![Device::Cpu])?;
    // Library id -> candidate index, by name (the profile may come from other weights).
    let index_of: Vec<(u32, usize)> = spec
        .subnets
        .iter()
        .map(|s: &Subnet| {
            net.find(&s.name).map(|i| (s.id, i)).with_context(|| {
                format!(
                    "the profile's sub-network {:?} is not in the weights",
                    s.name
                )
            })
        })
        .collect::<Result<_>>()?;
    let names: Vec<String> = spec.subnets.iter().map(|s| s.name.clone()).collect();
    let mut options = Options::default();
    if let Some(socket) = &args.socket {
        options.socket_path = socket.clone();
    }
    let session = Session::register(spec, options)?;

    let data = test_images(&net, None)?;
    anyhow::ensure!(!data.is_empty(), "the held-out split is empty");
    let period = Duration::from_secs_f64(1.0 / args.fps);
    let deadline = Duration::from_secs_f64(args.deadline_ms / 1000.0);
    let mut report = RunReport {
        batch: args.batch,
        frames_per_subnet: names.iter().map(|n| (n.clone(), 0)).collect(),
        ..RunReport::default()
    };
    let mut indices = vec![0usize; args.batch];
    let mut next_image = 0usize;
    let mut latencies = Vec::new();
    let mut switch_total = Duration::ZERO;
    let mut active: Option<u32> = None;
    let start = Instant::now();
    let mut frame = 0u64;
    loop {
        if args.frames.is_some_and(|n| frame >= n) {
            break;
        }
        let due = start + period.mul_f64(frame as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // The sub-network the agent asks for, at the inference boundary.
        let wanted = session.current_subnet();
        if active != Some(wanted) {
            let position = index_of.iter().position(|(id, _)| *id == wanted);
            if let Some(position) = position {
                let t = Instant::now();
                net.set_subnet_index(index_of[position].1)?;
                switch_total += t.elapsed();
                if active.is_some() {
                    report.switches += 1;
                }
                active = Some(wanted);
                session.ack_subnet(wanted);
            }
        }
        let position = active
            .and_then(|a| index_of.iter().position(|(id, _)| *id == a))
            .unwrap_or(index_of.len() - 1);
        // The next `batch` held-out images, round the split.
        for index in indices.iter_mut() {
            *index = next_image;
            next_image = (next_image + 1) % data.len();
        }
        session.begin(deadline);
        // One image goes the way it always went, without copying it into a batch.
        let classes = if args.batch == 1 {
            vec![net.classify_image(data.image(indices[0]))?]
        } else {
            let (images, _) = data.batch(&indices, net.device())?;
            net.classify(&images)?
        };
        let latency = session.end();
        latencies.push(latency.as_secs_f64() * 1000.0);
        report.frames += 1;
        report.images += classes.len() as u64;
        report.correct += classes
            .iter()
            .zip(&indices)
            .filter(|(class, &i)| **class == data.labels[i] as usize)
            .count() as u64;
        report.deadline_misses += u64::from(latency > deadline);
        report.frames_per_subnet[position].1 += 1;
        frame += 1;
        summarise(&mut report, &latencies, switch_total);
        if !on_frame(&report, &names[position]) {
            break;
        }
    }
    report.connected = session.is_connected();
    Ok(report)
}

fn summarise(report: &mut RunReport, latencies: &[f64], switch_total: Duration) {
    let n = latencies.len().max(1) as f64;
    report.accuracy_pct = 100.0 * report.correct as f64 / report.images.max(1) as f64;
    report.latency_mean_ms = latencies.iter().sum::<f64>() / n;
    if report.frames.is_multiple_of(50) || report.frames < 50 {
        let mut sorted = latencies.to_vec();
        sorted.sort_by(f64::total_cmp);
        report.latency_p99_ms = sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize];
    }
    // The first selection is not a switch; its time is excluded from the mean.
    report.switch_mean_us = if report.switches == 0 {
        0.0
    } else {
        switch_total.as_secs_f64() * 1e6 / (report.switches + 1) as f64
    };
}

/// Without a profile file: times every candidate here at the current clocks (no agent
/// asked, so it works for any user), `batch` images per inference, and keeps a Pareto
/// library by latency.
fn startup_profile(net: &mut SuperNet, app: &str, batch: usize) -> Result<Profile> {
    const WARMUP: usize = 3;
    const RUNS: usize = 15;
    let candidates = candidate_infos(net)?;
    let image = probe_batch(net, batch)?;
    let mut measured = Vec::new();
    for (index, candidate) in candidates.into_iter().enumerate() {
        net.set_subnet_index(index)?;
        let timing = dnngov_supernet::latency::inference_latency(net, &image, WARMUP, RUNS)?;
        measured.push(Measurement {
            candidate: candidate.name,
            accuracy_pct: candidate.accuracy_pct,
            relative_cost: candidate.relative_cost,
            setting: Setting::default(),
            latency_ms: timing.median_us / 1000.0,
            latency_p90_ms: timing.p90_us / 1000.0,
            energy_mj: None,
            energy_estimated: false,
            modelled: false,
            samples: timing.runs as u32,
        });
    }
    let mut profile = Profile::new(
        app,
        &profile::this_machine(),
        measured,
        profile::MAX_LIBRARY_ENTRIES,
    );
    record_batch(&mut profile, batch);
    Ok(profile)
}
