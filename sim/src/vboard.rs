//! The virtual board: a sysfs-like tree under a root directory kept in step with the
//! simulated board in real time, so a governor that reads and writes sysfs (the agent, or
//! a shell) can run against it as against a board.
//!
//! It lays down the files of FACTS §3 for every domain of a platform file (cpufreq
//! policies, the GPU devfreq device and its load file, the EMC debugfs clock, CPU online
//! flags, the INA3221 power monitor), then at every control tick: publishes the current
//! frequencies, GPU load and power reading, reads the control files, and sets each domain
//! the way its governor file says: `userspace` from `scaling_setspeed` / `userspace/set_freq`,
//! `performance` / `powersave` at the limits, any other governor emulated by the policy
//! crate's schedutil within `min`/`max`; the EMC follows `rate` while `mrq_rate_locked` is 1,
//! else the GPU as the stock board does.
//!
//! Apps outside the model (`dnngov-vapp`, which registers through the client shim) report
//! their virtual GPU and CPU time in [`external_busy_dir`]; the board adds it to the GPU
//! load, to CPU 0's busy time (where its emulated governors see both) and to the power
//! reading. Not modelled: thermal zones, `stats/time_in_state`.
//!
//! With [`VirtualBoard::with_cgroups`] (`dnngov-vboard --cgroup`), the CPU clusters are
//! cgroups of this machine ([`crate::cgroup`]): the clock in force for a cluster becomes
//! its CPU quota, so real processes placed in it run slower at a lower clock, and their
//! measured busy time (scaled to the clock in force) feeds the board's emulated
//! governors and its power reading. The GPU and memory stay emulated.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dnngov_policy::snapshot::{resolve_at_least, resolve_at_most};
use dnngov_policy::{BaseGovernor, DomainKind, GovernorConfig, Hz, Snapshot};

use crate::cgroup::ClusterGroups;
use crate::engine::{Control, Strategy};
use crate::platform::{DomainSpec, Kind, Platform};

/// Where the INA3221 monitor lives under the root when the platform file names none.
const DEFAULT_HWMON: &str = "sys/bus/i2c/drivers/ina3221/7-0040/hwmon";
/// The GPU load file of Xavier-era kernels (per mille).
const GPU_LOAD: &str = "sys/devices/gpu.0/load";
/// Board input voltage reported with the power reading, mV.
const RAIL_MV: f64 = 5000.0;

/// Where apps outside the model report their cumulative busy time, one file per process
/// holding `<GPU ns> <CPU ns>`.
pub fn external_busy_dir(root: &Path) -> PathBuf {
    root.join("run/dnngov-vboard/busy")
}

/// The board's one GPU, shared by every emulated app on it: an app holds an exclusive lock
/// on this file for its inference's GPU part and waits for it otherwise, so two apps' GPU
/// parts run one after the other, as a real GPU time-slices the processes that use it.
pub fn virtual_gpu_lock(root: &Path) -> PathBuf {
    root.join("run/dnngov-vboard/gpu.lock")
}

fn read_pair(path: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>());
    let gpu = it.next()?.ok()?;
    let cpu = match it.next() {
        Some(c) => c.ok()?,
        None => 0,
    };
    Some((gpu, cpu))
}

/// As the kernel does, `sys/class/<class>/<device>` points at the device's directory
/// wherever the platform puts it; the agent discovers devfreq devices and power monitors
/// through their class.
fn link_class(root: &Path, class: &str, dir: &Path) -> io::Result<()> {
    let class = root.join("sys/class").join(class);
    // The class entry bears the device's own name, the last part of its directory.
    let Some(name) = dir.file_name() else {
        return Ok(());
    };
    let link = class.join(name);
    if link == dir || fs::symlink_metadata(&link).is_ok() {
        return Ok(());
    }
    fs::create_dir_all(&class)?;
    // Relative, like the kernel's, so the tree can be moved.
    let relative = dir
        .strip_prefix(root.join("sys"))
        .map(|rest| Path::new("../..").join(rest))
        .unwrap_or_else(|_| dir.to_path_buf());
    std::os::unix::fs::symlink(relative, link)
}

/// The domain's directory under `root`: its platform `sysfs` entry, else the usual place.
pub fn domain_dir(root: &Path, d: &DomainSpec) -> PathBuf {
    let rel = match &d.sysfs {
        Some(p) => p.trim_start_matches('/').to_string(),
        None => match d.kind {
            Kind::Cpu => format!("sys/devices/system/cpu/cpufreq/policy{}", d.id),
            Kind::Gpu => format!("sys/class/devfreq/{}", d.name),
            Kind::Memory => "sys/kernel/debug/bpmp/debug/clk/emc".to_string(),
        },
    };
    root.join(rel)
}

fn write(path: &Path, value: impl ToString) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, format!("{}\n", value.to_string()))
}

/// A reading that a reader may keep open and read again at any moment (the INA3221's
/// current, read by dnngovd every tick through a kept-open descriptor): rewritten in
/// place, at a fixed width (zero-padded), in one write, so the file is never seen empty or
/// with a longer value's tail, as `fs::write`'s truncate-then-write let it be. A read
/// that races the write may still see some digits of the old value and some of the new
/// one: Linux copies a regular file's page to a reader without the lock a writer takes, and
/// no in-place rewrite of a file is atomic to a reader that keeps it open (a rename would
/// be, but such a reader keeps reading the old file). Such a reading is one sample of the
/// modelled power, off by the digits that changed.
fn write_reading(path: &Path, value: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all_at(format!("{value:09}\n").as_bytes(), 0)
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_word(path: &Path) -> Option<String> {
    Some(fs::read_to_string(path).ok()?.trim().to_string())
}

fn join<T: ToString>(xs: impl IntoIterator<Item = T>) -> String {
    xs.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where a cgroup board records its clusters' groups for `dnngov-vboard run`: one line
/// per directory, `<cluster> <domain> <this machine's CPUs in it> <path>`.
pub fn cgroup_map(root: &Path) -> PathBuf {
    root.join("run/dnngov-vboard/cgroups")
}

/// A cluster of a cgroup board, as [`cgroup_map`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEntry {
    /// Its group directories, cpu first.
    pub dirs: Vec<PathBuf>,
    /// How many of this machine's CPUs it runs on.
    pub cpus: usize,
}

/// Cluster `cluster` (its index or its domain name) of the cgroup board under `root`.
pub fn cluster_entry(root: &Path, cluster: &str) -> Result<ClusterEntry> {
    let path = cgroup_map(root);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is a board running under {} with --cgroup?)",
            path.display(),
            root.display()
        )
    })?;
    let mut known = Vec::new();
    let mut entry = ClusterEntry {
        dirs: Vec::new(),
        cpus: 1,
    };
    for line in text.lines() {
        let mut it = line.splitn(4, ' ');
        let (Some(index), Some(domain), Some(cpus), Some(dir)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if index == cluster || domain == cluster {
            entry.dirs.push(PathBuf::from(dir));
            entry.cpus = cpus.parse().unwrap_or(1);
        }
        let name = format!("{index} ({domain})");
        if !known.contains(&name) {
            known.push(name);
        }
    }
    if entry.dirs.is_empty() {
        anyhow::bail!(
            "the board has no cluster {cluster:?}; its clusters: {}",
            known.join(", ")
        );
    }
    Ok(entry)
}

/// What the board's meter has shown since it started: the integral of the power it
/// published (the model's, plus external apps' and the cgroup clusters' measured work).
#[derive(Clone, Copy, Debug, Default)]
pub struct Meter {
    pub energy_j: f64,
    pub seconds: f64,
}

impl Meter {
    pub fn mean_power_w(&self) -> f64 {
        if self.seconds > 0.0 {
            self.energy_j / self.seconds
        } else {
            0.0
        }
    }
}

/// The CPU clusters as cgroups, and what was read of them.
struct Throttled {
    groups: Arc<Mutex<ClusterGroups>>,
    /// Per platform domain: its cluster index, for CPU domains.
    cluster_of: Vec<Option<usize>>,
    /// Per cluster: the last usage read (ns of this machine's CPU time).
    last_usage: Vec<Option<u64>>,
    /// Per cluster: busy time at the board's clock read but not yet accounted (ns).
    backlog: Vec<u64>,
    /// Per cluster, per CPU of it that this machine backs: busy time at the board's
    /// clock, accounted so far (ns).
    busy_total: Vec<Vec<u64>>,
    /// Per cluster: the share of full speed the quota allowed since the last read.
    speed: Vec<f64>,
}

/// A board in a directory. Use it as the [`Strategy`] of [`crate::run`].
pub struct VirtualBoard {
    root: PathBuf,
    plat: Platform,
    base: BaseGovernor,
    hwmon: PathBuf,
    /// Pace virtual time to the wall clock; off in tests that only check the files.
    realtime: bool,
    start: Option<Instant>,
    last_tick: Option<u64>,
    last_gpu_busy: Option<(u64, u64)>,
    /// Last reading of each external app's busy file: (GPU, CPU) ns.
    external: std::collections::BTreeMap<PathBuf, (u64, u64)>,
    /// External busy time reported but not yet accounted: apps report an inference's time
    /// when it ends, the board spreads it over the ticks that had room for it.
    gpu_backlog: u64,
    cpu_backlog: u64,
    /// External busy time accounted so far, added to the model's counters.
    gpu_total: u64,
    cpu_total: u64,
    throttled: Option<Throttled>,
    meter: Arc<Mutex<Meter>>,
}

impl VirtualBoard {
    /// Lays the tree down under `root` (creating it), every domain at its maximum clock
    /// with the governor a stock board boots with.
    pub fn create(root: &Path, plat: &Platform, realtime: bool) -> Result<VirtualBoard> {
        let hwmon = root
            .join(
                plat.power_sensor
                    .as_ref()
                    .map(|s| s.sysfs.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| DEFAULT_HWMON.to_string()),
            )
            .join("hwmon1");
        let board = VirtualBoard {
            root: root.to_path_buf(),
            plat: plat.clone(),
            base: BaseGovernor::new(GovernorConfig::default()),
            hwmon,
            realtime,
            start: None,
            last_tick: None,
            last_gpu_busy: None,
            external: std::collections::BTreeMap::new(),
            gpu_backlog: 0,
            cpu_backlog: 0,
            gpu_total: 0,
            cpu_total: 0,
            throttled: None,
            meter: Arc::new(Mutex::new(Meter::default())),
        };
        board
            .lay_down()
            .with_context(|| format!("laying the virtual board down under {}", root.display()))?;
        Ok(board)
    }

    /// Backs the CPU clusters with `groups` (one group per CPU domain, in platform order)
    /// and records where they are for `dnngov-vboard run`.
    pub fn with_cgroups(mut self, groups: Arc<Mutex<ClusterGroups>>) -> Result<Self> {
        let mut cluster_of = Vec::new();
        let mut map = String::new();
        let mut n = 0;
        {
            let g = groups.lock().unwrap_or_else(|e| e.into_inner());
            for d in &self.plat.domains {
                if d.kind == Kind::Cpu && n < g.len() {
                    for dir in g.cluster_dirs(n) {
                        map.push_str(&format!(
                            "{n} {} {} {}\n",
                            d.name,
                            g.host_cpus(n).len(),
                            dir.display()
                        ));
                    }
                    cluster_of.push(Some(n));
                    n += 1;
                } else {
                    cluster_of.push(None);
                }
            }
            anyhow::ensure!(n == g.len(), "{} cgroups for {} CPU clusters", g.len(), n);
        }
        let busy_total = {
            let g = groups.lock().unwrap_or_else(|e| e.into_inner());
            (0..n)
                .map(|i| vec![0; g.host_cpus(i).len().max(1)])
                .collect()
        };
        let path = cgroup_map(&self.root);
        write(&path, map.trim_end()).with_context(|| format!("writing {}", path.display()))?;
        self.throttled = Some(Throttled {
            groups,
            cluster_of,
            last_usage: vec![None; n],
            backlog: vec![0; n],
            busy_total,
            speed: vec![1.0; n],
        });
        Ok(self)
    }

    /// The board's meter, shared: it keeps counting while the board runs.
    pub fn meter(&self) -> Arc<Mutex<Meter>> {
        self.meter.clone()
    }

    /// Sets each cluster's quota to the clock in force and reads the busy time its
    /// processes used since the last tick, scaled to the board's clock (a process that
    /// used all of a half-speed quota kept a CPU of the board busy all the time). Returns
    /// the power that busy time draws, beyond the model's idle clusters.
    fn throttle(&mut self, snap: &Snapshot, span: u64) -> f64 {
        let Some(t) = self.throttled.as_mut() else {
            return 0.0;
        };
        let mut groups = t.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut watts = 0.0;
        for ((d, s), cluster) in self
            .plat
            .domains
            .iter()
            .zip(&snap.domains)
            .zip(&t.cluster_of)
        {
            let Some(i) = *cluster else { continue };
            let cpus = groups.host_cpus(i).len().max(1) as u64;
            match groups.usage_ns(i) {
                Ok(now) => {
                    let used = t.last_usage[i].map_or(0, |before| now.saturating_sub(before));
                    t.last_usage[i] = Some(now);
                    // Throttled work arrives in bursts (the kernel hands out quota in
                    // slices): spread it over the ticks that had room for it.
                    t.backlog[i] += (used as f64 / t.speed[i]) as u64;
                    let busy = t.backlog[i].min(span * cpus);
                    t.backlog[i] -= busy;
                    // Packed onto the cluster's CPUs in turn, as one busy thread keeps
                    // one CPU busy (schedutil takes the busiest CPU of a policy).
                    let mut left = busy;
                    for total in t.busy_total[i].iter_mut() {
                        let part = left.min(span);
                        *total += part;
                        left -= part;
                    }
                    watts += d.dynamic_w(s.cur, 1.0 - d.idle_activity) * busy as f64 / span as f64;
                }
                Err(e) => log::warn!("virtual board: cluster {i}'s busy time: {e:#}"),
            }
            let ratio = s.cur.as_f64() / d.max_hz().as_f64();
            if let Err(e) = groups.set_speed(i, ratio) {
                log::warn!("virtual board: cluster {i}'s quota: {e:#}");
            }
            // What the quota really allows: the kernel's floor may lift it above `ratio`.
            t.speed[i] = groups.quota(i).map_or(1.0, |q| {
                q as f64 / (groups.period_us() as f64 * cpus as f64)
            });
        }
        watts
    }

    fn lay_down(&self) -> io::Result<()> {
        let cpu_base = self.root.join("sys/devices/system/cpu");
        let n = self.plat.cpu_count();
        let all = format!("0-{}", n.saturating_sub(1));
        for f in ["online", "possible", "present"] {
            write(&cpu_base.join(f), &all)?;
        }
        for d in &self.plat.domains {
            let dir = domain_dir(&self.root, d);
            let (lo, hi) = (d.freqs_khz[0], *d.freqs_khz.last().expect("validated"));
            match d.kind {
                Kind::Cpu => {
                    let cpus = join(&d.cpus);
                    write(&dir.join("related_cpus"), &cpus)?;
                    write(&dir.join("affected_cpus"), &cpus)?;
                    write(&dir.join("scaling_driver"), "tegra194")?;
                    write(
                        &dir.join("scaling_available_governors"),
                        "interactive conservative ondemand userspace powersave performance schedutil",
                    )?;
                    write(&dir.join("scaling_governor"), "schedutil")?;
                    write(&dir.join("cpuinfo_min_freq"), lo)?;
                    write(&dir.join("cpuinfo_max_freq"), hi)?;
                    write(
                        &dir.join("cpuinfo_transition_latency"),
                        d.transition_us * 1000,
                    )?;
                    write(
                        &dir.join("scaling_available_frequencies"),
                        join(&d.freqs_khz),
                    )?;
                    write(&dir.join("scaling_min_freq"), lo)?;
                    write(&dir.join("scaling_max_freq"), hi)?;
                    write(&dir.join("scaling_cur_freq"), hi)?;
                    write(&dir.join("scaling_setspeed"), "<unsupported>")?;
                    for c in &d.cpus {
                        write(&cpu_base.join(format!("cpu{c}/online")), 1)?;
                    }
                }
                Kind::Gpu => {
                    let hz: Vec<u64> = d.freqs_khz.iter().map(|k| k * 1000).collect();
                    write(&dir.join("name"), &d.name)?;
                    write(&dir.join("governor"), "nvhost_podgov")?;
                    write(
                        &dir.join("available_governors"),
                        "wmark_active nvhost_podgov userspace performance simple_ondemand",
                    )?;
                    write(&dir.join("available_frequencies"), join(&hz))?;
                    write(&dir.join("cur_freq"), hi * 1000)?;
                    write(&dir.join("target_freq"), hi * 1000)?;
                    write(&dir.join("min_freq"), lo * 1000)?;
                    write(&dir.join("max_freq"), hi * 1000)?;
                    write(&dir.join("polling_interval"), 50)?;
                    write(&dir.join("userspace/set_freq"), "undefined")?;
                    write(&self.root.join(GPU_LOAD), 0)?;
                    link_class(&self.root, "devfreq", &dir)?;
                }
                Kind::Memory => {
                    write(&dir.join("rate"), hi * 1000)?;
                    write(&dir.join("min_rate"), lo * 1000)?;
                    write(&dir.join("max_rate"), hi * 1000)?;
                    write(&dir.join("mrq_rate_locked"), 0)?;
                }
            }
        }
        let rail = self
            .plat
            .power_sensor
            .as_ref()
            .map_or("VDD_IN".to_string(), |s| s.rail.clone());
        write(&self.hwmon.join("name"), "ina3221")?;
        write(&self.hwmon.join("in1_label"), rail)?;
        write(&self.hwmon.join("in1_input"), RAIL_MV)?;
        write_reading(&self.hwmon.join("curr1_input"), 0)?;
        link_class(&self.root, "hwmon", &self.hwmon)?;
        Ok(())
    }

    /// Adds the busy time external apps reported since the previous call to the backlogs.
    fn collect_external(&mut self) {
        let Ok(entries) = fs::read_dir(external_busy_dir(&self.root)) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Some(now) = read_pair(&path) else {
                continue;
            };
            let before = self.external.insert(path, now).unwrap_or(now);
            self.gpu_backlog += now.0.saturating_sub(before.0);
            self.cpu_backlog += now.1.saturating_sub(before.1);
        }
    }

    /// Writes what a board would show now: current clocks, CPU online flags, GPU load,
    /// the power reading.
    fn publish(&mut self, snap: &Snapshot) -> io::Result<()> {
        self.collect_external();
        let mut external_w = 0.0;
        let span = self
            .last_tick
            .map_or(0, |t0| snap.now.0.saturating_sub(t0))
            .max(1);
        let first = self.last_tick.is_none();
        self.last_tick = Some(snap.now.0);
        if !first {
            external_w += self.throttle(snap, span);
        } else {
            self.throttle(snap, span);
        }
        let cpu_extra = self.cpu_backlog.min(span);
        self.cpu_backlog -= cpu_extra;
        self.cpu_total += cpu_extra;
        for (d, s) in self.plat.domains.iter().zip(&snap.domains) {
            let dir = domain_dir(&self.root, d);
            match d.kind {
                Kind::Cpu => {
                    write(&dir.join("scaling_cur_freq"), s.cur.khz())?;
                    if d.cpus.contains(&0) {
                        external_w += d.dynamic_w(s.cur, 1.0 - d.idle_activity) * cpu_extra as f64
                            / span as f64;
                    }
                }
                Kind::Gpu => {
                    write(&dir.join("cur_freq"), s.cur.0)?;
                    write(&dir.join("target_freq"), s.cur.0)?;
                    if let Some(busy) = s.busy {
                        let now = snap.now.0;
                        if let Some((t0, b0)) = self.last_gpu_busy {
                            let span = now.saturating_sub(t0).max(1);
                            let own = busy.0.saturating_sub(b0);
                            let extra = self.gpu_backlog.min(span.saturating_sub(own));
                            self.gpu_backlog -= extra;
                            self.gpu_total += extra;
                            // The busy share the model did not account, at this clock.
                            external_w += d.dynamic_w(s.cur, 1.0 - d.idle_activity) * extra as f64
                                / span as f64;
                            let load = (own + extra) * 1000 / span;
                            write(&self.root.join(GPU_LOAD), load.min(1000))?;
                        }
                        self.last_gpu_busy = Some((now, busy.0));
                    }
                }
                // Locked, `rate` is the request a governor wrote: the clock reaches it
                // within the transition latency, and overwriting it would undo the write.
                Kind::Memory => {
                    if read_u64(&dir.join("mrq_rate_locked")) != Some(1) {
                        write(&dir.join("rate"), s.cur.0)?;
                    }
                }
            }
        }
        let cpu_base = self.root.join("sys/devices/system/cpu");
        for c in &snap.cpus {
            write(
                &cpu_base.join(format!("cpu{}/online", c.cpu)),
                u8::from(c.online),
            )?;
        }
        if let Some(p) = snap.power {
            // P = mV * mA / 1000 (mW), FACTS §3.
            let watts = p.0 + external_w;
            // The reading covers the tick that ended now.
            let mut meter = self.meter.lock().unwrap_or_else(|e| e.into_inner());
            meter.energy_j += watts * span as f64 / 1e9;
            meter.seconds += span as f64 / 1e9;
            write_reading(
                &self.hwmon.join("curr1_input"),
                (watts * 1e6 / RAIL_MV).round().max(0.0) as u64,
            )?;
        }
        Ok(())
    }

    /// The frequency each domain's control files ask for.
    fn requested(&self, d: &DomainSpec, table: &[Hz], emulated: Hz, gpu_speed: f64) -> Hz {
        let dir = domain_dir(&self.root, d);
        let (min, max, want) = match d.kind {
            Kind::Cpu => {
                let khz = |f: &str| read_u64(&dir.join(f)).map(Hz::from_khz);
                let want = match read_word(&dir.join("scaling_governor")).as_deref() {
                    Some("userspace") => khz("scaling_setspeed").unwrap_or(emulated),
                    Some("performance") => Hz(u64::MAX),
                    Some("powersave") => Hz(0),
                    _ => emulated,
                };
                (khz("scaling_min_freq"), khz("scaling_max_freq"), want)
            }
            Kind::Gpu => {
                let hz = |f: &str| read_u64(&dir.join(f)).map(Hz);
                let want = match read_word(&dir.join("governor")).as_deref() {
                    Some("userspace") => hz("userspace/set_freq").unwrap_or(emulated),
                    Some("performance") => Hz(u64::MAX),
                    Some("powersave") => Hz(0),
                    _ => emulated,
                };
                (hz("min_freq"), hz("max_freq"), want)
            }
            Kind::Memory => {
                let hz = |f: &str| read_u64(&dir.join(f)).map(Hz);
                let want = if read_u64(&dir.join("mrq_rate_locked")) == Some(1) {
                    hz("rate").unwrap_or(emulated)
                } else {
                    let max = d.max_hz().as_f64();
                    resolve_at_least(table, Hz((max * gpu_speed).ceil() as u64))
                };
                (hz("min_rate"), hz("max_rate"), want)
            }
        };
        let lo = min.unwrap_or(table[0]);
        let hi = max.unwrap_or(*table.last().expect("validated")).max(lo);
        // As cpufreq does: clamp into [min, max], then the lowest table entry at or above,
        // unless that would pass max.
        let up = resolve_at_least(table, want.clamp(lo, hi));
        if up <= hi {
            up
        } else {
            resolve_at_most(table, hi)
        }
    }
}

impl Strategy for VirtualBoard {
    fn name(&self) -> String {
        "vboard".into()
    }

    fn decide(&mut self, snap: &Snapshot) -> Control {
        if self.realtime {
            let start = *self.start.get_or_insert_with(Instant::now);
            let due = start + Duration::from_nanos(snap.now.0);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if let Err(e) = self.publish(snap) {
            log::warn!(
                "virtual board: publishing under {}: {e}",
                self.root.display()
            );
        }
        // The emulated governors see the external apps' busy time too.
        let mut seen = snap.clone();
        for d in &mut seen.domains {
            if d.kind == DomainKind::Gpu {
                d.busy = d.busy.map(|b| dnngov_policy::Nanos(b.0 + self.gpu_total));
            }
        }
        for c in seen.cpus.iter_mut().filter(|c| c.cpu == 0) {
            c.busy = dnngov_policy::Nanos(c.busy.0 + self.cpu_total);
        }
        // A cgroup cluster's measured busy time lands on as many of its CPUs as this
        // machine backs it with.
        if let Some(t) = &self.throttled {
            for (d, cluster) in self.plat.domains.iter().zip(&t.cluster_of) {
                let Some(i) = *cluster else { continue };
                for (cpu, total) in d.cpus.iter().zip(&t.busy_total[i]) {
                    for c in seen.cpus.iter_mut().filter(|c| c.cpu == *cpu) {
                        c.busy = dnngov_policy::Nanos(c.busy.0 + total);
                    }
                }
            }
        }
        let snap = &seen;
        let emulated = self.base.update(snap);
        let gpu_speed = snap
            .domains
            .iter()
            .zip(&emulated)
            .find(|(d, _)| d.kind == DomainKind::Gpu)
            .map(|(d, _)| {
                let requested = self
                    .plat
                    .domains
                    .iter()
                    .find(|p| p.id == d.id)
                    .map(|p| self.requested(p, &d.table, d.cur, 1.0))
                    .unwrap_or(d.cur);
                requested.as_f64() / d.max_freq().as_f64()
            })
            .unwrap_or(1.0);
        let freqs = self
            .plat
            .domains
            .iter()
            .zip(snap.domains.iter().zip(&emulated))
            .map(|(p, (d, e))| (d.id, self.requested(p, &d.table, e.freq, gpu_speed)))
            .collect();
        Control {
            freqs,
            subnets: Vec::new(),
            plan: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A reader that keeps the file open and reads it again from offset 0, as dnngovd does,
    /// never sees the reading empty or of another width while it is rewritten with values
    /// of every width: always nine digits and a newline. (`fs::write` truncates first: such
    /// a reader saw an empty file now and then.) The digits themselves may mix the old and
    /// the new value when the read races the write (see `write_reading`): one run of the
    /// suite read 49, a value never written.
    #[test]
    fn a_reading_is_never_seen_empty_while_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curr1_input");
        write_reading(&path, 0).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    write_reading(&path, [7, 123_456, 42, 9_999_999][i as usize % 4]).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let file = fs::File::open(&path).unwrap();
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let mut buf = [0u8; 64];
            let n = file.read_at(&mut buf, 0).unwrap();
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(
                text.len() == 10
                    && text.ends_with('\n')
                    && text[..9].bytes().all(|b| b.is_ascii_digit()),
                "read {text:?} after {reads} reads"
            );
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
    }
}
