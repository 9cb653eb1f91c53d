//! CPU clusters of a virtual board backed by cgroups, so that a clock written for a
//! cluster really slows the processes placed in it (FACTS §8).
//!
//! Each cluster is a group under a parent of the board's own (`dnngov-vboard-<pid>`),
//! pinned to some of this machine's CPUs with `cpuset`, its CPU bandwidth limited to
//! `f / f_max` of those CPUs with the CFS quota, its busy time read back from the
//! accounting files. Both layouts are handled: cgroup v2 (`cpu.max`, `cpu.stat`,
//! `cpuset.cpus`, controllers enabled through `cgroup.subtree_control`) and the v1 `cpu`,
//! `cpuacct` and `cpuset` hierarchies (`cpu.cfs_quota_us`, `cpuacct.usage`,
//! `cpuset.cpus` + `cpuset.mems`). Every path starts from a configurable root, so the
//! same code runs against `/sys/fs/cgroup` and against a fixture tree.
//!
//! What throttling does not model: memory-bound work does not stretch with the quota (on
//! a real board a lower CPU clock slows memory stalls less than compute), voltage is the
//! board model's, and within one period the work runs at full speed, so latencies are
//! quantised to about one period.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The kernel refuses a CFS quota below this (EINVAL).
pub const MIN_QUOTA_US: u64 = 1000;
/// Default CFS period: short enough that a 10-60 ms inference is slowed smoothly (a
/// 100 ms period would run it at full speed and then stop it for the rest), long enough
/// that the 1 ms minimum quota still reaches a tenth of full speed.
pub const DEFAULT_PERIOD_US: u64 = 10_000;
/// CPU weight of the board's groups, the highest each layout accepts: within its quota a
/// cluster's process must not wait for other work of this machine, or a busy machine
/// would slow it on top of the clock and a quota would not bind (measured: a shell loop
/// at half the quota took only 1.2-1.35x as long while two compilers ran, 1.85x once weighted).
const V1_SHARES: &str = "262144";
const V2_WEIGHT: &str = "10000";
/// Name prefix of a board's parent group; its pid follows.
pub const GROUP_PREFIX: &str = "dnngov-vboard-";

/// Where the controllers this module needs live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One unified hierarchy with the `cpu` controller available.
    V2 {
        root: PathBuf,
        /// Whether `cpuset` is available too (pinning is skipped without it).
        cpuset: bool,
    },
    /// Separate v1 hierarchies; `cpuacct` and `cpuset` may be co-mounted with `cpu`.
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
        cpuset: Option<PathBuf>,
    },
}

fn read_trim(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn v2_controllers(dir: &Path) -> Option<Vec<String>> {
    let text = read_trim(&dir.join("cgroup.controllers")).ok()?;
    Some(text.split_whitespace().map(str::to_string).collect())
}

impl Layout {
    /// Finds the `cpu` controller under `root` (normally `/sys/fs/cgroup`): cgroup v2 at
    /// the root, else the v1 hierarchies, else a v2 hierarchy at `root/unified` (hybrid).
    /// The error says what was found and how to enable the controller.
    pub fn detect(root: &Path) -> Result<Layout> {
        let v2 = |dir: &Path| {
            v2_controllers(dir)
                .filter(|c| c.iter().any(|x| x == "cpu"))
                .map(|c| Layout::V2 {
                    root: dir.to_path_buf(),
                    cpuset: c.iter().any(|x| x == "cpuset"),
                })
        };
        if let Some(layout) = v2(root) {
            return Ok(layout);
        }
        let cpu = root.join("cpu");
        if cpu.join("cpu.cfs_quota_us").exists() {
            let cpuacct = [root.join("cpu"), root.join("cpuacct")]
                .into_iter()
                .find(|d| d.join("cpuacct.usage").exists())
                .with_context(|| {
                    format!(
                        "the cgroup v1 cpu hierarchy is at {} but no cpuacct hierarchy (cpuacct.usage) is mounted there or at {}: mount it (mount -t cgroup -o cpuacct none {}) to measure the clusters' busy time",
                        cpu.display(),
                        root.join("cpuacct").display(),
                        root.join("cpuacct").display()
                    )
                })?;
            let cpuset = [root.join("cpu"), root.join("cpuset")]
                .into_iter()
                .find(|d| d.join("cpuset.cpus").exists());
            return Ok(Layout::V1 {
                cpu,
                cpuacct,
                cpuset,
            });
        }
        if let Some(layout) = v2(&root.join("unified")) {
            return Ok(layout);
        }
        let mut found = Vec::new();
        for dir in [root.to_path_buf(), root.join("unified")] {
            if let Some(c) = v2_controllers(&dir) {
                found.push(format!(
                    "cgroup v2 at {} offers [{}] without cpu",
                    dir.display(),
                    c.join(" ")
                ));
            }
        }
        if cpu.exists() {
            found.push(format!(
                "{} exists but has no cpu.cfs_quota_us (a kernel without CONFIG_CFS_BANDWIDTH)",
                cpu.display()
            ));
        }
        if found.is_empty() {
            found.push(format!("no cgroup hierarchy under {}", root.display()));
        }
        bail!(
            "no cgroup cpu controller to throttle with: {}. Enable it: on cgroup v2, the cpu controller must be listed in {}/cgroup.controllers (it is missing when a v1 hierarchy holds it, or with cgroup_disable=cpu on the kernel command line); on cgroup v1, mount it with `mount -t cgroup -o cpu,cpuacct none {}/cpu`",
            found.join("; "),
            root.display(),
            root.display()
        )
    }

    /// The directories of one group named `rel`, one per hierarchy it lives in, in the
    /// order cpu, cpuacct, cpuset (no repeats where hierarchies are co-mounted).
    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let mut push = |d: PathBuf| {
            if !out.contains(&d) {
                out.push(d);
            }
        };
        match self {
            Layout::V2 { root, .. } => push(root.join(rel)),
            Layout::V1 {
                cpu,
                cpuacct,
                cpuset,
            } => {
                push(cpu.join(rel));
                push(cpuacct.join(rel));
                if let Some(c) = cpuset {
                    push(c.join(rel));
                }
            }
        }
        out
    }

    /// The hierarchies' roots, where a group's tasks go back to.
    fn roots(&self) -> Vec<PathBuf> {
        self.dirs(Path::new(""))
    }

    fn describe(&self) -> String {
        match self {
            Layout::V2 { root, cpuset } => format!(
                "cgroup v2 at {}{}",
                root.display(),
                if *cpuset {
                    ""
                } else {
                    " (no cpuset: not pinned)"
                }
            ),
            Layout::V1 {
                cpu,
                cpuacct,
                cpuset,
            } => format!(
                "cgroup v1: cpu at {}, cpuacct at {}, {}",
                cpu.display(),
                cpuacct.display(),
                cpuset
                    .as_ref()
                    .map_or("no cpuset (not pinned)".to_string(), |c| format!(
                        "cpuset at {}",
                        c.display()
                    ))
            ),
        }
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        match (lo, hi) {
            (Ok(lo), Ok(hi)) if lo <= hi && hi - lo < 4096 => cpus.extend(lo..=hi),
            _ => bail!("{part:?} in the CPU list {text:?} is not a CPU number or range"),
        }
    }
    if cpus.is_empty() {
        bail!("the CPU list {text:?} names no CPU");
    }
    Ok(cpus.into_iter().collect())
}

fn format_cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One CPU cluster of the board as a group.
#[derive(Debug)]
struct Cluster {
    /// Its path relative to each hierarchy's root.
    rel: PathBuf,
    /// Its directories (cpu, cpuacct, cpuset), as [`Layout::dirs`] lists them.
    dirs: Vec<PathBuf>,
    host_cpus: Vec<u32>,
    quota_us: Option<u64>,
}

/// A board's clusters as cgroups. Dropping it removes them (their tasks go back to the
/// root group, unthrottled).
#[derive(Debug)]
pub struct ClusterGroups {
    layout: Layout,
    /// The parent's name, relative to each hierarchy's root.
    parent: PathBuf,
    period_us: u64,
    clusters: Vec<Cluster>,
    removed: bool,
}

/// How the quota for `ratio` of full speed on `cpus` CPUs comes out: at least the
/// kernel's minimum, so clocks below `MIN_QUOTA_US / period` run at that share.
pub fn quota_us(ratio: f64, period_us: u64, cpus: usize) -> u64 {
    let want = ratio.clamp(0.0, 1.0) * period_us as f64 * cpus.max(1) as f64;
    (want.round() as u64).max(MIN_QUOTA_US)
}

impl ClusterGroups {
    /// Creates `<prefix><pid>/cluster<i>` for every entry of `clusters` (the host CPUs
    /// each cluster runs on), pinned and at full speed. Groups left by a board that died
    /// are removed first.
    pub fn create(layout: Layout, clusters: &[Vec<u32>], period_us: u64) -> Result<Self> {
        if !(MIN_QUOTA_US..=1_000_000).contains(&period_us) {
            bail!("the CFS period must be 1000..=1000000 us, not {period_us}");
        }
        for removed in remove_stale(&layout) {
            log::info!("removed the groups of a board that is gone: {removed}");
        }
        let parent = PathBuf::from(format!("{GROUP_PREFIX}{}", std::process::id()));
        let mut groups = ClusterGroups {
            layout,
            parent,
            period_us,
            clusters: Vec::new(),
            removed: false,
        };
        // From here on, a failure drops `groups`, which removes what was made.
        groups.make(clusters)?;
        log::info!(
            "{} clusters as cgroups under {} ({}), CFS period {} us",
            groups.clusters.len(),
            groups.parent.display(),
            groups.layout.describe(),
            period_us
        );
        Ok(groups)
    }

    fn make(&mut self, clusters: &[Vec<u32>]) -> Result<()> {
        let all: Vec<u32> = clusters
            .iter()
            .flatten()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Layout::V2 { root, cpuset } = &self.layout {
            let wanted = if *cpuset { "+cpu +cpuset" } else { "+cpu" };
            enable_controllers(root, wanted)?;
        }
        for dir in self.layout.dirs(&self.parent) {
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        self.weigh(&self.parent)?;
        match &self.layout {
            Layout::V2 { root, cpuset } => {
                let dir = root.join(&self.parent);
                if *cpuset {
                    write_file(&dir.join("cpuset.cpus"), &format_cpu_list(&all))?;
                }
                let wanted = if *cpuset { "+cpu +cpuset" } else { "+cpu" };
                write_file(&dir.join("cgroup.subtree_control"), wanted)?;
            }
            Layout::V1 {
                cpuset: Some(cpuset),
                ..
            } => {
                // v1 cpuset: both lists must be set before a task may join.
                let mems = read_trim(&cpuset.join("cpuset.mems"))
                    .with_context(|| format!("reading {}/cpuset.mems", cpuset.display()))?;
                let dir = cpuset.join(&self.parent);
                write_file(&dir.join("cpuset.cpus"), &format_cpu_list(&all))?;
                write_file(&dir.join("cpuset.mems"), &mems)?;
            }
            Layout::V1 { cpuset: None, .. } => {}
        }
        for (i, cpus) in clusters.iter().enumerate() {
            let rel = self.parent.join(format!("cluster{i}"));
            let dirs = self.layout.dirs(&rel);
            for dir in &dirs {
                fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            self.weigh(&rel)?;
            let cpu_list = format_cpu_list(cpus);
            match &self.layout {
                Layout::V2 { root, cpuset } => {
                    if *cpuset {
                        write_file(&root.join(&rel).join("cpuset.cpus"), &cpu_list)?;
                    }
                    // Processes live in groups of their own below (v2 allows tasks only
                    // in leaves once controllers are enabled for children).
                    let wanted = if *cpuset { "+cpu +cpuset" } else { "+cpu" };
                    write_file(&root.join(&rel).join("cgroup.subtree_control"), wanted)?;
                }
                Layout::V1 {
                    cpuset: Some(cpuset),
                    ..
                } => {
                    let mems = read_trim(&cpuset.join(&self.parent).join("cpuset.mems"))?;
                    write_file(&cpuset.join(&rel).join("cpuset.cpus"), &cpu_list)?;
                    write_file(&cpuset.join(&rel).join("cpuset.mems"), &mems)?;
                }
                Layout::V1 { cpuset: None, .. } => {}
            }
            self.clusters.push(Cluster {
                rel,
                dirs,
                host_cpus: cpus.clone(),
                quota_us: None,
            });
            self.set_speed(i, 1.0)?;
        }
        Ok(())
    }

    /// Gives group `rel` the highest CPU weight.
    fn weigh(&self, rel: &Path) -> Result<()> {
        match &self.layout {
            Layout::V2 { root, .. } => write_file(&root.join(rel).join("cpu.weight"), V2_WEIGHT),
            Layout::V1 { cpu, .. } => write_file(&cpu.join(rel).join("cpu.shares"), V1_SHARES),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn period_us(&self) -> u64 {
        self.period_us
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// The host CPUs cluster `i` runs on.
    pub fn host_cpus(&self, i: usize) -> &[u32] {
        &self.clusters[i].host_cpus
    }

    /// The directory of cluster `i` in each hierarchy: a process joins the cluster by
    /// writing its pid to `cgroup.procs` in every one of them.
    pub fn cluster_dirs(&self, i: usize) -> &[PathBuf] {
        &self.clusters[i].dirs
    }

    /// The quota now in force for cluster `i`, in µs per period.
    pub fn quota(&self, i: usize) -> Option<u64> {
        self.clusters[i].quota_us
    }

    /// Limits cluster `i` to `ratio` (`f / f_max`) of its CPUs, and each process group in
    /// it to that share of the CPUs it may use; writes only on a change.
    pub fn set_speed(&mut self, i: usize, ratio: f64) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let period = self.period_us;
        let v2 = matches!(self.layout, Layout::V2 { .. });
        let cluster = &mut self.clusters[i];
        let n = cluster.host_cpus.len().max(1);
        let quota = quota_us(ratio, period, n);
        if cluster.quota_us == Some(quota) {
            return Ok(());
        }
        let dir = &cluster.dirs[0];
        let write_leaves = || -> Result<()> {
            for (leaf, threads) in leaves(dir) {
                let q = quota_us(ratio, period, (threads as usize).min(n));
                match write_limit(&leaf, q, period, v2) {
                    // A group removed meanwhile has nothing left to limit.
                    Err(_) if !leaf.exists() => {}
                    other => other?,
                }
            }
            Ok(())
        };
        // cgroup v1 refuses a child a larger share than its parent: going down, the
        // children first; going up, the parent first. A group that a process adds between
        // the listing and the parent's write (`join_cluster`) makes the parent's refused:
        // list them again and retry.
        let down = cluster.quota_us.is_some_and(|q| quota < q);
        retry_racing_writes(|| {
            if down {
                write_leaves().and_then(|()| write_limit(dir, quota, period, v2))
            } else {
                write_limit(dir, quota, period, v2).and_then(|()| write_leaves())
            }
        })?;
        cluster.quota_us = Some(quota);
        Ok(())
    }

    /// CPU time the processes of cluster `i` have used since it was made, in ns.
    pub fn usage_ns(&self, i: usize) -> Result<u64> {
        let cluster = &self.clusters[i];
        match &self.layout {
            Layout::V2 { .. } => {
                let path = cluster.dirs[0].join("cpu.stat");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                text.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|us| us * 1000)
                    .with_context(|| format!("{} has no usage_usec line", path.display()))
            }
            Layout::V1 { cpuacct, .. } => {
                let path = cpuacct.join(&cluster.rel).join("cpuacct.usage");
                read_trim(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .parse::<u64>()
                    .with_context(|| format!("{} is not a number", path.display()))
            }
        }
    }

    /// Moves process `pid` into cluster `i`, in a group of its own limited to `threads`
    /// of the cluster's CPUs (see [`join_cluster`]).
    pub fn place(&self, i: usize, pid: u32, threads: u32) -> Result<()> {
        let c = &self.clusters[i];
        join_cluster(&c.dirs, c.host_cpus.len(), pid, threads)
    }

    /// Removes the groups, their tasks going back to the root groups. Idempotent.
    pub fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        remove_tree(&self.layout, &self.parent)
    }
}

impl Drop for ClusterGroups {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            log::warn!("removing the board's cgroups: {e:#}");
        }
    }
}

/// Writes a CFS limit into group `dir`.
fn write_limit(dir: &Path, quota: u64, period: u64, v2: bool) -> Result<()> {
    if v2 {
        write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))
    } else {
        // The period first: a quota is checked against the period in force.
        write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
    }
}

/// Name of a process's group inside a cluster: its pid and how many threads' worth of
/// CPUs it may use.
fn leaf_name(pid: u32, threads: u32) -> String {
    format!("proc{pid}x{threads}")
}

/// The process groups inside a cluster's cpu directory, with their thread counts.
fn leaves(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let threads = name.strip_prefix("proc")?.split_once('x')?.1.parse().ok()?;
            e.path().is_dir().then(|| (e.path(), threads))
        })
        .collect()
}

/// Moves process `pid` into a cluster whose group directories are `dirs` (cpu first, as
/// [`ClusterGroups::cluster_dirs`] lists them) and which has `cpus` of this machine's
/// CPUs: into a group of its own there, limited to `threads` CPUs at the cluster's
/// speed. The cluster's quota covers all its CPUs together, so without this a
/// single-threaded process at half the clock of a two-CPU cluster would get a whole CPU
/// and run at full speed. The board updates these groups when the clock changes.
pub fn join_cluster(dirs: &[PathBuf], cpus: usize, pid: u32, threads: u32) -> Result<()> {
    let Some(cpu_dir) = dirs.first() else {
        bail!("the cluster has no group directories");
    };
    let threads = threads.max(1);
    let v2 = cpu_dir.join("cpu.max").exists();
    let leaf = leaf_name(pid, threads);
    for dir in dirs {
        let group = dir.join(&leaf);
        match fs::create_dir(&group) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", group.display()));
            }
            _ => {}
        }
        // v1 cpuset: both lists before the task joins (v2 inherits the parent's).
        if !v2 && dir.join("cpuset.mems").exists() {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                write_file(&group.join(f), &read_trim(&dir.join(f))?)?;
            }
        }
    }
    // The board may lower the cluster's limit between the read and the write below, and
    // cgroup v1 refuses a child more than its parent (EINVAL): read it again and retry.
    retry_racing_writes(|| share_parent_limit(cpu_dir, &leaf, cpus, threads, v2))?;
    let groups: Vec<PathBuf> = dirs.iter().map(|d| d.join(&leaf)).collect();
    place_in(&groups, pid)
}

/// Tries of [`retry_racing_writes`].
const LIMIT_ATTEMPTS: u32 = 5;

/// Runs `write` (limits read and written afresh at each try) up to [`LIMIT_ATTEMPTS`]
/// times: the board ([`ClusterGroups::set_speed`]) and a process joining a cluster
/// ([`join_cluster`]) write limits of the same groups at once, and cgroup v1 refuses
/// (EINVAL) a write that would give a child more than its parent at that moment.
fn retry_racing_writes(mut write: impl FnMut() -> Result<()>) -> Result<()> {
    let mut attempt = 1;
    loop {
        match write() {
            Err(e) if attempt < LIMIT_ATTEMPTS => {
                log::debug!("{e:#}; trying again with the limits as they are now");
                std::thread::sleep(std::time::Duration::from_millis(5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Gives group `leaf` of cluster directory `cpu_dir` its share of the cluster's limit as
/// it stands now: `threads` of the cluster's `cpus`.
fn share_parent_limit(
    cpu_dir: &Path,
    leaf: &str,
    cpus: usize,
    threads: u32,
    v2: bool,
) -> Result<()> {
    let (quota, period) = if v2 {
        let text = read_trim(&cpu_dir.join("cpu.max"))?;
        let mut it = text.split_whitespace();
        (
            it.next().and_then(|q| q.parse::<u64>().ok()),
            it.next().and_then(|p| p.parse::<u64>().ok()),
        )
    } else {
        (
            read_trim(&cpu_dir.join("cpu.cfs_quota_us"))?.parse().ok(),
            read_trim(&cpu_dir.join("cpu.cfs_period_us"))?.parse().ok(),
        )
    };
    let (Some(quota), Some(period)) = (quota, period) else {
        bail!("{} has no CFS limit to share", cpu_dir.display());
    };
    let ratio = quota as f64 / (period as f64 * cpus.max(1) as f64);
    write_limit(
        &cpu_dir.join(leaf),
        quota_us(ratio, period, (threads as usize).min(cpus.max(1))),
        period,
        v2,
    )
}

/// Writes `pid` into `cgroup.procs` of every directory.
pub fn place_in(dirs: &[PathBuf], pid: u32) -> Result<()> {
    for dir in dirs {
        write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Enables `wanted` (`"+cpu +cpuset"`) in `root/cgroup.subtree_control` where missing,
/// one controller at a time so that one refusal names its controller.
fn enable_controllers(root: &Path, wanted: &str) -> Result<()> {
    let path = root.join("cgroup.subtree_control");
    let on = read_trim(&path).with_context(|| format!("reading {}", path.display()))?;
    for c in wanted.split_whitespace() {
        let name = c.trim_start_matches('+');
        if on.split_whitespace().any(|x| x == name) {
            continue;
        }
        write_file(&path, c).context(
            "enabling a controller for the board's groups (it is left enabled: other groups may rely on it from now on)",
        )?;
        log::info!("enabled the {name} controller in {}", path.display());
    }
    Ok(())
}

/// Task ids listed in a group directory (`cgroup.procs`).
fn procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Group directories under `dir` and `dir` itself, children before their parents.
fn post_order(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                post_order(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// Removes `rel` and its children in every hierarchy: children first, tasks moved to the
/// hierarchy's root so that the directories can go.
fn remove_tree(layout: &Layout, rel: &Path) -> Result<()> {
    let mut errors = Vec::new();
    for (root, dir) in layout.roots().into_iter().zip(layout.dirs(rel)) {
        if !dir.exists() {
            continue;
        }
        let mut children = Vec::new();
        post_order(&dir, &mut children);
        for group in children {
            for pid in procs(&group) {
                // A task that exits meanwhile cannot be moved, and need not be.
                let _ = fs::write(root.join("cgroup.procs"), pid.to_string());
            }
            // rmdir races a task that exits but is not yet gone from the group (EBUSY):
            // retry briefly.
            let mut last = None;
            for _ in 0..50 {
                last = match fs::remove_dir(&group) {
                    Ok(()) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    // cgroupfs never answers ENOTEMPTY (a group with children or tasks is
                    // EBUSY): this is a plain directory, a fixture tree's group.
                    Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                        fs::remove_dir_all(&group).err()
                    }
                    Err(e) => Some(e),
                };
                if last
                    .as_ref()
                    .is_none_or(|e| e.raw_os_error() != Some(libc_ebusy()))
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if let Some(e) = last {
                errors.push(format!("{}: {e}", group.display()));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("could not remove {}", errors.join(", "))
    }
}

fn libc_ebusy() -> i32 {
    nix::errno::Errno::EBUSY as i32
}

/// Whether `pid` is a running board (a reused pid of another program is not).
fn board_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("dnngov-vboard"))
}

/// Removes the groups of boards that are no longer running (killed with SIGKILL, say).
/// Returns the names removed.
pub fn remove_stale(layout: &Layout) -> Vec<String> {
    let mut names = BTreeSet::new();
    for root in layout.roots() {
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(pid) = name
                .strip_prefix(GROUP_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !board_alive(pid) {
                names.insert(name);
            }
        }
    }
    names
        .into_iter()
        .filter(|name| match remove_tree(layout, Path::new(name)) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("removing the groups of a board that is gone: {e:#}");
                false
            }
        })
        .collect()
}

/// The board groups present under any hierarchy of `layout` (for checks and clean-up).
pub fn board_groups(layout: &Layout) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in layout.roots() {
        if let Ok(entries) = fs::read_dir(&root) {
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(GROUP_PREFIX))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort();
    out
}

/// The default host CPUs of each cluster (given by the board's own CPU numbers): the
/// same numbers where this machine has them, so that what the agent sees of this
/// machine's CPUs (per-CPU busy time, where a process runs) lands in the right cluster;
/// a cluster none of whose CPUs exist here gets this machine's CPUs dealt in turn (what
/// runs there is throttled right but seen by the agent under another cluster's CPUs).
pub fn deal_cpus(allowed: &[u32], clusters: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let mut spare = allowed.iter().cycle();
    clusters
        .iter()
        .map(|own| {
            let same: Vec<u32> = own
                .iter()
                .copied()
                .filter(|c| allowed.contains(c))
                .collect();
            if same.is_empty() {
                spare.next().map(|&c| vec![c]).unwrap_or_default()
            } else {
                same
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_follows_the_ratio_with_the_kernel_floor() {
        assert_eq!(quota_us(1.0, 10_000, 1), 10_000);
        assert_eq!(quota_us(0.5, 10_000, 1), 5_000);
        assert_eq!(quota_us(0.5, 10_000, 2), 10_000);
        // 115.2 of 1907.2 MHz would be 604 us: the kernel's floor holds it at 1 ms.
        assert_eq!(quota_us(115_200.0 / 1_907_200.0, 10_000, 1), 1000);
        assert_eq!(quota_us(f64::NAN.max(0.0), 10_000, 1), 1000);
    }

    #[test]
    fn parses_kernel_cpu_lists() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn deals_a_clusters_own_cpus_where_this_machine_has_them() {
        let xavier = [vec![0, 1], vec![2, 3], vec![4, 5]];
        assert_eq!(
            deal_cpus(&[0, 1], &xavier),
            vec![vec![0, 1], vec![0], vec![1]]
        );
        assert_eq!(
            deal_cpus(&[0, 1, 2, 3, 4, 5, 6, 7], &xavier),
            vec![vec![0, 1], vec![2, 3], vec![4, 5]]
        );
        assert_eq!(
            deal_cpus(&[0, 1, 2], &xavier),
            vec![vec![0, 1], vec![2], vec![0]]
        );
    }
}
