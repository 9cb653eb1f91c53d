//! `dnngov-eval`: one command that measures dnngovd against the board's own governor.
//!
//! Given app commands and a duration, it runs the apps (a) under a dnngovd of its own and
//! (b) under the governor the board runs without it (the kernel's schedutil on a real
//! board, the emulated schedutil of a virtual board), one after the other, and prints the
//! side by side: per app frames, latency mean and p99, misses and accuracy, as each app's
//! own process measured them (the client shim's trace, `DNNGOV_TRACE_DIR`), and the
//! board's energy from the best sensor there is. It writes the traces, a CSV time series
//! of clocks and power, an SVG of it and the report under `--out`.
//!
//! It refuses to start while another tool holds the clocks, checks after each run that
//! every governor, limit and lock file is back as it found it (putting it back with the
//! saved state if dnngovd did not), and stops what it started on Ctrl-C.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dnngov_agent::control::{kind_of, matching_spec};
use dnngov_agent::eval::{self, Inference, RunSummary, Sample};
use dnngov_agent::platform::power::{EstimatedDomain, Estimator};
use dnngov_agent::platform::{self, EnergyMeter, Nanos, Platform, SensorKind, Sysfs};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

#[derive(Parser, Debug)]
#[command(
    name = "dnngov-eval",
    version,
    about = "Runs apps under dnngovd and under the board's own governor, and compares what they measured"
)]
struct Cli {
    /// An app to run: `NAME=COMMAND` (run with `sh -c`), or `NAME@CLUSTER=COMMAND` to
    /// place it in a cgroup board's cluster (index or domain name; default 0, the
    /// cluster whose CPUs are this machine's first ones). Repeat for several apps. NAME
    /// must be the name the app registers with.
    #[arg(long = "app", required = true, value_name = "NAME[@CLUSTER]=COMMAND")]
    apps: Vec<String>,
    /// Seconds each side runs.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Run on a virtual board of this description (platforms/*.toml) instead of this
    /// machine's own /sys.
    #[arg(long, value_name = "PLATFORM")]
    vboard: Option<PathBuf>,
    /// With --vboard: back its CPU clusters with cgroups, so that the clocks really slow
    /// the apps (needs root and the cgroup cpu controller).
    #[arg(long, requires = "vboard")]
    cgroup: bool,
    /// With --cgroup: this machine's CPUs per cluster, `;`-separated (see dnngov-vboard).
    #[arg(long, requires = "cgroup")]
    cluster_cpus: Option<String>,
    /// The real board's sysfs root (without --vboard).
    #[arg(long, default_value = "/", conflicts_with = "vboard")]
    sysfs_root: PathBuf,
    /// Board description for dnngovd's power model (with --vboard: that description).
    #[arg(long)]
    platform: Option<PathBuf>,
    /// dnngovd configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to write the report, the CSV and SVG time series and the traces (default: a
    /// new directory under the current one, `dnngov-eval-<time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Interval between samples of the clocks and power, ms.
    #[arg(long, default_value_t = 100)]
    sample_ms: u64,
    /// Seconds at the start of each run left out of the figures, under both governors
    /// alike (the agent learning the apps, a governor's first ramp): their inferences
    /// and energy stay in the traces and the CSV files, not in the report.
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Seconds to wait between the two runs (lets a real board cool down to where it
    /// started).
    #[arg(long, default_value_t = 3.0)]
    pause: f64,
    /// Where processes are listed, to find tools that hold the clocks.
    #[arg(long, default_value = "/proc", hide = true)]
    proc_root: PathBuf,
    /// More log output (-v debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// One app as given on the command line.
#[derive(Debug, Clone)]
struct AppCommand {
    name: String,
    cluster: Option<String>,
    command: String,
}

fn parse_app(spec: &str) -> Result<AppCommand> {
    let Some((head, command)) = spec.split_once('=') else {
        bail!("--app {spec:?}: expected NAME=COMMAND or NAME@CLUSTER=COMMAND");
    };
    let (name, cluster) = match head.split_once('@') {
        Some((n, c)) => (n.trim(), Some(c.trim().to_string())),
        None => (head.trim(), None),
    };
    if name.is_empty() || name.contains(['/', ',']) || command.trim().is_empty() {
        bail!("--app {spec:?}: the name must be non-empty without '/' or ',', and the command non-empty");
    }
    Ok(AppCommand {
        name: name.to_string(),
        cluster,
        command: command.to_string(),
    })
}

/// The sibling binaries this one runs (`dnngovd`, `dnngovctl`, `dnngov-vboard`).
fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating dnngov-eval")?;
    let dir = me.parent().context("dnngov-eval has no directory")?;
    let path = dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    // Installed: look on PATH.
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "{name} is neither beside {} nor on PATH: build it (cargo build --release) or install dnngov",
                me.display()
            )
        })
}

static STOP: AtomicBool = AtomicBool::new(false);

fn install_stop_handler() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
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
    Ok(())
}

/// A child that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Started {
    what: String,
    child: Child,
    /// Signal its process group, not only itself (`sh -c` and what it starts).
    group: bool,
}

impl Started {
    fn spawn(what: &str, command: &mut Command, group: bool) -> Result<Started> {
        if group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Started {
            what: what.to_string(),
            child,
            group,
        })
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = if self.group {
            killpg(pid, signal)
        } else {
            kill(pid, signal)
        };
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns whether it ended on the SIGTERM.
    fn stop(&mut self, grace: Duration) -> bool {
        if !self.running() {
            return true;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!(
            "{} did not stop within {grace:?} of SIGTERM: killed",
            self.what
        );
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
        false
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted while waiting for {what}");
        }
        if Instant::now() > deadline {
            bail!("{what} was not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Which governor a run is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Dnngovd,
    Board,
}

/// Where the board of a run is, and what started it.
struct Board {
    root: PathBuf,
    vboard: Option<Started>,
    label: String,
}

struct Eval {
    cli: Cli,
    apps: Vec<AppCommand>,
    out: PathBuf,
}

/// What one run produced.
struct RunOutput {
    summary: RunSummary,
    samples: Vec<Sample>,
    domains: Vec<String>,
    traces: BTreeMap<String, Vec<Inference>>,
    board_label: String,
    notes: Vec<String>,
}

impl Eval {
    fn start_board(&self, dir: &Path) -> Result<Board> {
        let Some(platform) = &self.cli.vboard else {
            return Ok(Board {
                root: self.cli.sysfs_root.clone(),
                vboard: None,
                label: format!("real board (sysfs under {})", self.cli.sysfs_root.display()),
            });
        };
        let root = dir.join("board");
        let mut command = Command::new(sibling("dnngov-vboard")?);
        command
            .arg("--platform")
            .arg(platform)
            .arg("--root")
            .arg(&root)
            // Outlives the run: the eval stops it.
            .args(["--duration", &format!("{}", self.cli.duration + 120.0)])
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("vboard.log"))?);
        if self.cli.cgroup {
            command.arg("--cgroup");
            if let Some(cpus) = &self.cli.cluster_cpus {
                command.args(["--cluster-cpus", cpus]);
            }
        }
        let mut vboard = Started::spawn("dnngov-vboard", &mut command, false)?;
        let ready = if self.cli.cgroup {
            root.join("run/dnngov-vboard/cgroups")
        } else {
            root.join("sys/class/devfreq")
        };
        let log = dir.join("vboard.log");
        wait_for("the virtual board", Duration::from_secs(30), || {
            ready.exists() || !vboard.running()
        })?;
        if !vboard.running() {
            bail!(
                "dnngov-vboard stopped: {}",
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            );
        }
        let name = platform.file_stem().unwrap_or_default().to_string_lossy();
        let label = if self.cli.cgroup {
            format!(
                "cgroup board ({name}: CPU clusters are cgroups of this machine throttled to the clock in force, CPU power from their measured busy time; GPU and memory emulated)"
            )
        } else {
            format!("emulated board ({name}: every clock, load and power from the board model)")
        };
        Ok(Board {
            root,
            vboard: Some(vboard),
            label,
        })
    }

    /// Runs every app under `side` for the duration; returns what was measured.
    fn run(&self, side: Side) -> Result<RunOutput> {
        let name = match side {
            Side::Dnngovd => "dnngovd",
            Side::Board => "board",
        };
        let dir = self.out.join(name);
        // A previous evaluation's traces in the same place would count as this one's.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("clearing the previous run in {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut board = self.start_board(&dir)?;
        let sysfs = Sysfs::new(&board.root);
        let mut platform = discover(&sysfs);
        let plan = platform
            .plan()
            .map_err(|e| anyhow::anyhow!("nothing to govern on {}: {e:?}", board.label))?;
        let conflicts = eval::clock_conflicts(&self.cli.proc_root, &platform, &plan);
        if !conflicts.is_empty() {
            let text = conflicts.join("\n  ");
            if board.vboard.is_none() {
                bail!("the clocks are not free to compare governors on:\n  {text}");
            }
            log::warn!("on this machine (the virtual board is not affected):\n  {text}");
        }
        let before = eval::snapshot_knobs(&sysfs, &plan);
        let baseline = plan
            .domains
            .iter()
            .filter_map(|d| {
                let g = sysfs.read(d.file(d.knobs.governor?)).ok()?;
                Some(format!("{}: {g}", d.id))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let governor = match side {
            Side::Dnngovd => "dnngovd".to_string(),
            Side::Board => plan
                .domains
                .iter()
                .find_map(|d| sysfs.read(d.file(d.knobs.governor?)).ok())
                .unwrap_or_else(|| "kernel".into()),
        };
        log::info!(
            "{governor}: {} for {} s ({baseline})",
            board.label,
            self.cli.duration
        );

        let state_dir = dir.join("state");
        let socket = dir.join("agent.sock");
        let admin = dir.join("admin.sock");
        let mut daemon = None;
        if side == Side::Dnngovd {
            let mut command = Command::new(sibling("dnngovd")?);
            command
                .arg("--sysfs-root")
                .arg(&board.root)
                .arg("--socket")
                .arg(&socket)
                .arg("--admin-socket")
                .arg(&admin)
                .arg("--state-dir")
                .arg(&state_dir)
                .stdout(Stdio::null())
                .stderr(File::create(dir.join("dnngovd.log"))?);
            if let Some(p) = self.cli.platform.as_ref().or(self.cli.vboard.as_ref()) {
                command.arg("--platform").arg(p);
            }
            if let Some(c) = &self.cli.config {
                command.arg("--config").arg(c);
            }
            let mut d = Started::spawn("dnngovd", &mut command, false)?;
            wait_for("dnngovd", Duration::from_secs(30), || {
                dnngov_client::admin::status(&admin).is_ok() || !d.running()
            })?;
            if !d.running() {
                bail!(
                    "dnngovd stopped: {}",
                    std::fs::read_to_string(dir.join("dnngovd.log")).unwrap_or_default()
                );
            }
            daemon = Some(d);
        }

        let trace = dir.join("trace");
        std::fs::create_dir_all(&trace)?;
        let mut apps = Vec::new();
        for app in &self.apps {
            let mut command = if self.cli.cgroup {
                let cluster = app.cluster.clone().unwrap_or_else(|| "0".to_string());
                let mut c = Command::new(sibling("dnngov-vboard")?);
                c.arg("run").arg("--root").arg(&board.root).args([
                    "--cluster",
                    &cluster,
                    "--",
                    "sh",
                    "-c",
                    &app.command,
                ]);
                c
            } else {
                let mut c = Command::new("sh");
                c.args(["-c", &app.command]);
                c
            };
            command
                .env("DNNGOV_TRACE_DIR", &trace)
                .env("DNNGOV_SOCKET", &socket)
                .env("DNNGOV_ADMIN_SOCKET", &admin)
                .stdin(Stdio::null())
                .stdout(File::create(dir.join(format!("{}.out", app.name)))?)
                .stderr(File::create(dir.join(format!("{}.err", app.name)))?);
            apps.push(Started::spawn(&app.name, &mut command, true)?);
        }

        // Sample the clocks and the power until the duration is over.
        let domains: Vec<String> = plan.domains.iter().map(|d| d.id.to_string()).collect();
        let mut meter = EnergyMeter::new();
        let mut samples = Vec::new();
        let start = Instant::now();
        // The shim's trace stamps inferences on CLOCK_MONOTONIC, as `Instant` is here.
        let start_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0);
        let settle = Duration::from_secs_f64(self.cli.settle);
        let every = Duration::from_millis(self.cli.sample_ms.max(10));
        let mut next = start;
        let mut sensor_kind = platform.power.as_ref().map(|p| p.kind());
        // Without a sensor, the board description (--platform) gives an estimate, as
        // dnngovd's own is made.
        let description = match (&platform.power, &self.cli.platform) {
            (None, Some(path)) => Some(
                dnngov_policy::platform::Platform::load(path)
                    .with_context(|| format!("loading the board description {}", path.display()))?,
            ),
            _ => None,
        };
        let specs: Vec<Option<dnngov_policy::platform::DomainSpec>> = plan
            .domains
            .iter()
            .map(|d| {
                description
                    .as_ref()
                    .and_then(|b| matching_spec(b, d, kind_of(d)))
            })
            .collect();
        let mut estimator = Estimator::new();
        let mut sensor_errors = 0u32;
        while start.elapsed().as_secs_f64() < self.cli.duration && !STOP.load(Ordering::Relaxed) {
            let now = Nanos(start.elapsed().as_nanos() as u64);
            let hz: Vec<Option<u64>> = plan
                .domains
                .iter()
                .map(|d| d.read_current(&sysfs).ok().map(|f| f.0))
                .collect();
            let mhz = hz
                .iter()
                .map(|f| f.map_or(f64::NAN, |f| f as f64 / 1e6))
                .collect();
            let mut power_w = f64::NAN;
            if let Some(sensor) = platform.power.as_mut() {
                match sensor.read(&sysfs, now) {
                    Ok(Some(reading)) => {
                        power_w = reading.total.0;
                        if start.elapsed() >= settle {
                            meter.record(now, &reading);
                        }
                    }
                    Ok(None) => {}
                    // A reading can fail now and then (a file read while it is being
                    // rewritten): skip that sample, give up only if it keeps failing.
                    Err(e) => {
                        sensor_errors += 1;
                        if sensor_errors == 1 {
                            log::warn!("power sensor: {e}; skipping that sample");
                        }
                        if sensor_errors > 20 && meter.elapsed().0 == 0 {
                            log::warn!("power sensor: {e}; no energy from here on");
                            platform.power = None;
                            sensor_kind = None;
                        }
                    }
                }
            }
            if let (None, Some(board)) = (&platform.power, &description) {
                let busy: Vec<(u32, u64)> = dnngov_bpf::procfs_cpu_busy(&self.cli.proc_root)
                    .iter()
                    .map(|c| (c.cpu, c.busy.0))
                    .collect();
                let online = platform::cpufreq::online_cpus(&sysfs)
                    .ok()
                    .flatten()
                    .map(|l| l.cpus().to_vec());
                let gpu = platform
                    .gpu_load
                    .as_ref()
                    .and_then(|f| platform::devfreq::read_gpu_load(&sysfs, f).ok());
                let domains: Vec<EstimatedDomain<'_>> = plan
                    .domains
                    .iter()
                    .zip(&specs)
                    .zip(&hz)
                    .map(|((d, spec), freq)| EstimatedDomain {
                        spec: spec.as_ref(),
                        kind: kind_of(d),
                        freq: *freq,
                    })
                    .collect();
                let reading =
                    estimator.estimate(board, &domains, now.0, &busy, online.as_deref(), gpu);
                power_w = reading.total.0;
                sensor_kind = Some(SensorKind::Estimated);
                if start.elapsed() >= settle {
                    meter.record(now, &reading);
                }
            }
            samples.push(Sample {
                t_s: now.as_secs_f64(),
                mhz,
                power_w,
            });
            if apps.iter_mut().all(|a| !a.running()) {
                log::warn!("every app has exited before the end of the run");
                break;
            }
            next += every;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }

        // Stop the apps first (they finish their frame), then the agent, which puts the
        // clocks back.
        // An app that ended on its own before the end failed, or was told too few frames:
        // say so, with what it said last, rather than leave a short row unexplained.
        let mut notes = Vec::new();
        for (a, app) in apps.iter_mut().zip(&self.apps) {
            if let Ok(Some(status)) = a.child.try_wait() {
                let err = std::fs::read_to_string(dir.join(format!("{}.err", app.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                notes.push(format!(
                    "app {} ended before the run did ({status}){}",
                    app.name,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; its stderr ended with:\n    {}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
                        )
                    }
                ));
            }
        }
        for a in &mut apps {
            a.stop(Duration::from_secs(10));
        }
        if let Some(mut d) = daemon.take() {
            if !d.stop(Duration::from_secs(15)) {
                log::warn!("dnngovd was killed: restoring from its saved state");
            }
        }
        let mut restored = notes;
        let changed = eval::knob_changes(&before, &eval::snapshot_knobs(&sysfs, &plan));
        if !changed.is_empty() {
            restored.push(format!("not put back by dnngovd: {}", changed.join("; ")));
            let state_file = state_dir.join("saved-state.json");
            match platform::restore(&state_file, &board.root) {
                Ok(report) => restored.push(format!(
                    "restored {} files from {}",
                    report.restored.len(),
                    state_file.display()
                )),
                Err(e) => restored.push(format!("restoring from {}: {e}", state_file.display())),
            }
            let still = eval::knob_changes(&before, &eval::snapshot_knobs(&sysfs, &plan));
            if !still.is_empty() {
                bail!(
                    "the board is not as it was: {}. Put these back by hand.",
                    still.join("; ")
                );
            }
        }
        if let Some(mut v) = board.vboard.take() {
            v.stop(Duration::from_secs(10));
        }

        let traces = eval::read_traces(&trace)?;
        let mut summary = RunSummary {
            governor,
            apps: traces
                .iter()
                .map(|(app, inferences)| {
                    let from = start_ns + settle.as_nanos() as u64;
                    let counted: Vec<Inference> = inferences
                        .iter()
                        .copied()
                        .filter(|i| i.end_ns >= from)
                        .collect();
                    (app.clone(), eval::AppSummary::of(&counted))
                })
                .collect(),
            energy: eval::EnergySummary::default(),
            whole_run: (settle > Duration::ZERO).then(|| {
                let all = traces.values().flatten();
                let frames = all.clone().count() as u64;
                let misses = all
                    .filter(|i| i.deadline_ns != 0 && i.latency_ns > i.deadline_ns)
                    .count() as u64;
                (misses, frames)
            }),
        };
        for app in &self.apps {
            summary.apps.entry(app.name.clone()).or_default();
        }
        summary.energy = eval::EnergySummary {
            energy_j: meter.total().0,
            mean_power_w: meter.average_power().map_or(f64::NAN, |w| w.0),
            seconds: meter.elapsed().as_secs_f64(),
            source: energy_source(
                sensor_kind,
                board.vboard.is_some() || self.cli.vboard.is_some(),
                self.cli.platform.as_deref(),
            ),
        };
        Ok(RunOutput {
            summary,
            samples,
            domains,
            traces,
            board_label: board.label.clone(),
            notes: restored,
        })
    }
}

/// The board's parts. A virtual board rewrites its files as it runs, and a read can
/// catch one empty: a part that could not be read is tried again before it is left out.
fn discover(sysfs: &Sysfs) -> Platform {
    let mut platform = Platform::discover(sysfs.clone());
    for _ in 0..20 {
        if platform.problems.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        platform = Platform::discover(sysfs.clone());
    }
    for p in &platform.problems {
        log::warn!("{}: {}", p.what, p.why);
    }
    platform
}

/// The energy figure's label.
fn energy_source(
    kind: Option<SensorKind>,
    virtual_board: bool,
    description: Option<&Path>,
) -> String {
    let sensor = match kind {
        Some(SensorKind::Ina3221Hwmon) => "INA3221 (hwmon)",
        Some(SensorKind::JetsonIio) => "Jetson iio power monitor",
        Some(SensorKind::Rapl) => "RAPL package energy",
        Some(SensorKind::Estimated) => {
            return format!(
                "estimated from {} (no power sensor): the description's power model with measured CPU busy time and GPU load",
                description.map_or("the board description".into(), |p| p.display().to_string())
            )
        }
        None => {
            return "none: no power sensor found (give --platform for an estimate)".into()
        }
    };
    if virtual_board {
        format!("{sensor} of the virtual board: modelled, not measured")
    } else {
        format!("{sensor}: measured")
    }
}

fn write_outputs(out: &Path, board: &str, runs: &[RunOutput], text: &str) -> Result<()> {
    std::fs::write(out.join("report.txt"), text)?;
    let summaries: Vec<&RunSummary> = runs.iter().map(|r| &r.summary).collect();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "board": board,
            "runs": summaries,
        }))?,
    )?;
    let domains = &runs[0].domains;
    let series: Vec<(String, Vec<Sample>)> = runs
        .iter()
        .map(|r| (r.summary.governor.clone(), r.samples.clone()))
        .collect();
    std::fs::write(out.join("series.csv"), eval::series_csv(domains, &series))?;
    let mut inferences =
        String::from("governor,app,end_s,latency_ms,deadline_ms,subnet,accuracy_pct\n");
    for r in runs {
        let t0 = r
            .traces
            .values()
            .flat_map(|v| v.first())
            .map(|i| i.end_ns)
            .min()
            .unwrap_or(0);
        for (app, v) in &r.traces {
            for i in v {
                inferences.push_str(&format!(
                    "{},{app},{:.4},{:.3},{:.3},{},{}\n",
                    r.summary.governor,
                    i.end_ns.saturating_sub(t0) as f64 / 1e9,
                    i.latency_ns as f64 / 1e6,
                    i.deadline_ns as f64 / 1e6,
                    i.subnet,
                    i.accuracy_pct
                ));
            }
        }
    }
    std::fs::write(out.join("inferences.csv"), inferences)?;
    plot(out, board, runs)
}

/// One SVG: power, each domain's clock, each app's latency against its deadline; a line
/// per governor.
fn plot(out: &Path, board: &str, runs: &[RunOutput]) -> Result<()> {
    use dnngov_plot::{draw_panels, smooth, thin, Line};
    use plotters::style::{RGBColor, BLUE, RED};
    const COLOURS: [RGBColor; 2] = [BLUE, RED];
    let mut panels = Vec::new();
    let power: Vec<Line> = runs
        .iter()
        .zip(COLOURS)
        .map(|(r, c)| {
            let t: Vec<f64> = r.samples.iter().map(|s| s.t_s).collect();
            let p: Vec<f64> = r.samples.iter().map(|s| s.power_w).collect();
            (
                r.summary.governor.clone(),
                c,
                thin(&t, &smooth(&p, 5), false),
            )
        })
        .collect();
    panels.push((
        format!("board power ({})", runs[0].summary.energy.source),
        "W".to_string(),
        power,
    ));
    for (i, d) in runs[0].domains.iter().enumerate() {
        let lines: Vec<Line> = runs
            .iter()
            .zip(COLOURS)
            .map(|(r, c)| {
                let t: Vec<f64> = r.samples.iter().map(|s| s.t_s).collect();
                let f: Vec<f64> = r
                    .samples
                    .iter()
                    .map(|s| s.mhz.get(i).copied().unwrap_or(f64::NAN))
                    .collect();
                (r.summary.governor.clone(), c, thin(&t, &f, false))
            })
            .collect();
        panels.push((d.clone(), "MHz".to_string(), lines));
    }
    let apps: Vec<&String> = runs[0].traces.keys().collect();
    for app in apps {
        let mut lines: Vec<Line> = Vec::new();
        for (r, c) in runs.iter().zip(COLOURS) {
            let Some(v) = r.traces.get(app) else { continue };
            let t0 = v.first().map_or(0, |i| i.end_ns);
            let t: Vec<f64> = v
                .iter()
                .map(|i| i.end_ns.saturating_sub(t0) as f64 / 1e9)
                .collect();
            let ms: Vec<f64> = v.iter().map(|i| i.latency_ns as f64 / 1e6).collect();
            lines.push((
                format!("{} latency", r.summary.governor),
                c,
                thin(&t, &ms, true),
            ));
            if let Some(d) = v.iter().map(|i| i.deadline_ns).find(|d| *d > 0) {
                let deadline = d as f64 / 1e6;
                if !lines.iter().any(|l| l.0 == "deadline") {
                    lines.push((
                        "deadline".into(),
                        plotters::style::BLACK,
                        vec![
                            (0.0, deadline),
                            (t.last().copied().unwrap_or(1.0), deadline),
                        ],
                    ));
                }
            }
        }
        panels.push((
            format!("{app}: latency measured by the app"),
            "ms".into(),
            lines,
        ));
    }
    draw_panels(
        &out.join("eval.svg"),
        board,
        "time since the run started (s)",
        panels,
    )
}

fn main() {
    let cli = Cli::parse();
    let level = if cli.verbose > 0 { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("dnngov-eval: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if !(cli.duration.is_finite() && cli.duration > 0.0) {
        bail!(
            "--duration must be a positive number of seconds, not {}",
            cli.duration
        );
    }
    if !(cli.settle.is_finite() && cli.settle >= 0.0 && cli.settle < cli.duration) {
        bail!(
            "--settle must be at least 0 and shorter than --duration ({} s), not {}",
            cli.duration,
            cli.settle
        );
    }
    let apps = cli
        .apps
        .iter()
        .map(|a| parse_app(a))
        .collect::<Result<Vec<_>>>()?;
    let mut names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        bail!("two --app entries share a name: each app needs its own");
    }
    install_stop_handler()?;
    let out = match &cli.out {
        Some(o) => o.clone(),
        None => PathBuf::from(format!(
            "dnngov-eval-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let eval = Eval { cli, apps, out };
    let mut runs = Vec::new();
    for (i, side) in [Side::Dnngovd, Side::Board].into_iter().enumerate() {
        if i > 0 && eval.cli.pause > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(eval.cli.pause));
        }
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted; everything started was stopped and the board checked");
        }
        runs.push(eval.run(side)?);
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted; everything started was stopped and the board checked");
        }
    }
    let board = runs[0].board_label.clone();
    let summaries: Vec<RunSummary> = runs.iter().map(|r| r.summary.clone()).collect();
    let mut text = eval::report(&board, &summaries);
    if eval.cli.settle > 0.0 {
        text.push_str(&format!(
            "figures leave out the first {} s of each run (--settle)\n",
            eval.cli.settle
        ));
    }
    for r in &runs {
        for note in &r.notes {
            text.push_str(&format!("{}: {note}\n", r.summary.governor));
        }
    }
    text.push_str(&format!(
        "board restored after each run: every governor, limit and lock file as before\nfiles: {}\n",
        eval.out.display()
    ));
    print!("{text}");
    write_outputs(&eval.out, &board, &runs, &text)
}
