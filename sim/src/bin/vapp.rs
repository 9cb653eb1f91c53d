//! `dnngov-vapp`: an emulated DNN app for the virtual board. It registers through the real
//! client shim (so `dnngovd` sees it as any app), runs the sub-network the agent asks for,
//! and makes each inference last what the model says at the virtual board's current clocks:
//! real CPU work for the CPU part, a spin (or a sleep, with `--no-spin-wait`) for the GPU
//! and memory parts. The GPU part holds the board's one virtual GPU
//! ([`dnngov_sim::vboard::virtual_gpu_lock`]): two apps' GPU parts run one after the other,
//! and an app waits (spinning, as CUDA's default synchronisation does) while another's
//! runs. It reports its virtual GPU and CPU time to the board, whose emulated governors and
//! power reading account it.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
use dnngov_sim::platform::{Kind, Platform};
use dnngov_sim::scenario::{builtin_library, Split};
use dnngov_sim::vboard::{domain_dir, external_busy_dir, virtual_gpu_lock};

#[derive(Parser)]
#[command(version, about = "An emulated DNN app that runs against dnngov-vboard")]
struct Cli {
    /// The virtual board's root (as given to dnngov-vboard).
    #[arg(long)]
    root: PathBuf,
    /// The virtual board's platform file.
    #[arg(long)]
    platform: PathBuf,
    #[arg(long, default_value = "dynamic-ofa-6")]
    library: String,
    #[arg(long, default_value = "vapp")]
    name: String,
    #[arg(long, default_value_t = 15.0)]
    fps: f64,
    #[arg(long, default_value_t = 60.0)]
    deadline_ms: f64,
    #[arg(long, default_value_t = 76.0)]
    floor: f64,
    /// Stop after this many frames (default: run until killed).
    #[arg(long)]
    frames: Option<u64>,
    /// The agent's socket (default: the client's default or DNNGOV_SOCKET).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Sleep while the virtual GPU works instead of spinning the CPU as CUDA's default
    /// synchronisation does (and as the simulator assumes).
    #[arg(long)]
    no_spin_wait: bool,
}

/// `f_max / f` of the clocks the inference sees, read from the board's files.
struct Ratios {
    cpu: f64,
    gpu: f64,
    mem: f64,
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn ratios(root: &Path, plat: &Platform) -> Ratios {
    let mut r = Ratios {
        cpu: 1.0,
        gpu: 1.0,
        mem: 1.0,
    };
    for d in &plat.domains {
        let dir = domain_dir(root, d);
        let max = d.max_hz().0 as f64;
        let cur = match d.kind {
            // The inference thread runs on CPU 0's cluster (the board places it there too).
            Kind::Cpu if d.cpus.contains(&0) => {
                read_u64(&dir.join("scaling_cur_freq")).map(|k| k * 1000)
            }
            Kind::Cpu => None,
            Kind::Gpu => read_u64(&dir.join("cur_freq")),
            Kind::Memory => read_u64(&dir.join("rate")),
        };
        if let Some(cur) = cur.filter(|c| *c > 0) {
            let ratio = max / cur as f64;
            match d.kind {
                Kind::Cpu => r.cpu = ratio,
                Kind::Gpu => r.gpu = ratio,
                Kind::Memory => r.mem = ratio,
            }
        }
    }
    r
}

/// Real CPU work for `d`: the busy time the agent's scheduler probes should see.
fn spin(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// Takes the board's virtual GPU: spinning between tries (the host thread of a CUDA app
/// spins while its work waits for the device), or asleep in the kernel with `sleep`.
fn take_gpu(gpu: &File, sleep: bool) -> std::io::Result<()> {
    if sleep {
        return gpu.lock();
    }
    loop {
        match gpu.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => spin(Duration::from_micros(50)),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

fn ms(x: f64) -> Duration {
    Duration::from_secs_f64(x.max(0.0) / 1000.0)
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let plat = Platform::load(&cli.platform)?;
    let Some(lib) = builtin_library(&cli.library) else {
        bail!(
            "unknown library {:?} (known: dynamic-ofa-6, dynamic-ofa-7)",
            cli.library
        );
    };
    if !(cli.fps.is_finite() && cli.fps > 0.0) {
        bail!("--fps must be positive");
    }
    let period_ms = 1000.0 / cli.fps;
    let spec = AppSpec {
        name: cli.name.clone(),
        devices: vec![Device::Cpu, Device::Gpu],
        subnets: lib
            .iter()
            .enumerate()
            .map(|(i, (acc, l))| Subnet {
                id: i as u32,
                name: format!("level{i}"),
                accuracy_pct: *acc,
                latency_ms: Some(*l),
                relative_cost: None,
            })
            .collect(),
        target: Target {
            deadline_ms: cli.deadline_ms,
            period_ms: Some(period_ms),
            accuracy_floor_pct: Some(cli.floor),
            priority: 0,
        },
        // Without an agent the app runs its static deployment, as an app tuned offline
        // would: the most accurate sub-network that meets the deadline at full clocks.
        default_subnet: lib
            .iter()
            .rposition(|(_, latency)| *latency <= cli.deadline_ms)
            .map(|i| i as u32),
    };
    let mut options = Options::default();
    if let Some(s) = &cli.socket {
        options.socket_path = s.clone();
    }
    let session = Session::register(spec, options).context("registering the app")?;
    let busy_dir = external_busy_dir(&cli.root);
    fs::create_dir_all(&busy_dir).with_context(|| format!("creating {}", busy_dir.display()))?;
    let busy_file = busy_dir.join(std::process::id().to_string());
    let gpu_path = virtual_gpu_lock(&cli.root);
    let gpu_device = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&gpu_path)
        .with_context(|| format!("opening the virtual GPU {}", gpu_path.display()))?;
    let split = Split::default();
    let deadline = ms(cli.deadline_ms);
    let (mut gpu_busy_ns, mut cpu_busy_ns) = (0u64, 0u64);
    let (mut done, mut missed, mut latency_sum, mut accuracy_sum) = (0u64, 0u64, 0.0, 0.0);
    let mut next = Instant::now();
    while cli.frames.is_none_or(|n| done < n) {
        let subnet = session.current_subnet().min(lib.len() as u32 - 1);
        session.ack_subnet(subnet);
        let r = ratios(&cli.root, &plat);
        let l = lib[subnet as usize].1;
        let cpu = ms(split.cpu * l * r.cpu);
        let gpu = ms(split.gpu * l * r.gpu + split.mem * l * r.mem);
        let fixed = ms(split.fixed * l);
        session.begin(deadline);
        spin(cpu);
        let waiting = Instant::now();
        take_gpu(&gpu_device, cli.no_spin_wait)
            .with_context(|| format!("taking the virtual GPU {}", gpu_path.display()))?;
        let waited = waiting.elapsed();
        if !cli.no_spin_wait {
            spin(gpu);
        } else {
            std::thread::sleep(gpu);
        }
        gpu_device
            .unlock()
            .with_context(|| format!("releasing the virtual GPU {}", gpu_path.display()))?;
        if !cli.no_spin_wait {
            spin(fixed);
        } else {
            std::thread::sleep(fixed);
        }
        let latency = session.end();
        done += 1;
        latency_sum += latency.as_secs_f64() * 1000.0;
        accuracy_sum += lib[subnet as usize].0;
        if latency > deadline {
            missed += 1;
        }
        gpu_busy_ns += gpu.as_nanos() as u64;
        cpu_busy_ns += if !cli.no_spin_wait {
            (cpu + waited + gpu + fixed).as_nanos() as u64
        } else {
            cpu.as_nanos() as u64
        };
        // Written whole then renamed, so the board never reads half a number.
        let tmp = busy_file.with_extension("tmp");
        fs::write(&tmp, format!("{gpu_busy_ns} {cpu_busy_ns}"))
            .and_then(|_| fs::rename(&tmp, &busy_file))
            .with_context(|| format!("writing {}", busy_file.display()))?;
        next += ms(period_ms);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    println!(
        "{done} frames, mean latency {:.1} ms, {missed} missed the {} ms deadline, mean accuracy {:.2} %",
        latency_sum / done.max(1) as f64,
        cli.deadline_ms,
        accuracy_sum / done.max(1) as f64
    );
    Ok(())
}
