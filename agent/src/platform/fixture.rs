//! Fixture trees: small file trees shaped like the parts of `/sys` this layer reads, one per
//! machine kind, built by code so tests, the simulator and end-to-end tests can lay one
//! down in a temporary directory. They are written from the kernel's interface descriptions
//! and published board figures; where a real value is unknown (most of a CPU table, latencies,
//! readings) a plausible one is used, and the real value is read at run time on a board.
//!
//! A fixture is plain files: it cannot behave like the kernel (refuse a governor, clamp a
//! limit, make a speed effective). Tests check what was written, and provoke errors by
//! replacing a file with a directory or removing it.

use std::fmt::Display;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A function that lays a fixture down under a root.
pub type Builder = fn(&Path) -> io::Result<()>;

/// The fixtures by name, for tools that build them all.
pub const ALL: [(&str, Builder); 6] = [
    ("xavier_nx", xavier_nx),
    ("xavier_nx_jetpack4", xavier_nx_jetpack4),
    ("orin", orin),
    ("generic_arm", generic_arm),
    ("intel_laptop", intel_laptop),
    ("no_cpufreq", no_cpufreq),
];

/// Xavier NX CPU table in kHz: the points known from the board (1190400 nvpmodel floor up to
/// 1907200 max) all sit on a 76.8 MHz ladder from 115.2 MHz, which fills in the rest.
pub fn xavier_nx_cpu_table_khz() -> Vec<u64> {
    let mut t: Vec<u64> = (0..24).map(|k| 115_200 + 76_800 * k).collect();
    t.push(1_907_200);
    t
}

/// Xavier NX gv11b GPU table in Hz (15 entries).
pub const XAVIER_NX_GPU_HZ: [u64; 15] = [
    114_750_000,
    204_000_000,
    306_000_000,
    408_000_000,
    510_000_000,
    599_250_000,
    701_250_000,
    752_250_000,
    803_250_000,
    854_250_000,
    905_250_000,
    956_250_000,
    1_007_250_000,
    1_058_250_000,
    1_109_250_000,
];

pub const XAVIER_NX_GPU_DIR: &str = "sys/devices/17000000.gv11b/devfreq/17000000.gv11b";
pub const ORIN_GPU_DIR: &str = "sys/devices/platform/17000000.ga10b/devfreq/17000000.ga10b";
pub const ORIN_GPU_HZ: [u64; 7] = [
    306_000_000,
    408_000_000,
    510_000_000,
    612_000_000,
    714_000_000,
    816_000_000,
    918_000_000,
];
pub const GENERIC_ARM_GPU_DIR: &str = "sys/devices/platform/ff9a0000.gpu/devfreq/ff9a0000.gpu";
pub const GENERIC_ARM_GPU_HZ: [u64; 5] = [
    200_000_000,
    300_000_000,
    400_000_000,
    600_000_000,
    800_000_000,
];
pub const GENERIC_ARM_LITTLE_KHZ: [u64; 6] =
    [408_000, 600_000, 816_000, 1_008_000, 1_200_000, 1_416_000];
pub const GENERIC_ARM_BIG_KHZ: [u64; 8] = [
    408_000, 600_000, 816_000, 1_008_000, 1_200_000, 1_416_000, 1_608_000, 1_800_000,
];

const JETSON_CPU_GOVERNORS: &str =
    "interactive conservative ondemand userspace powersave performance schedutil";
const GENERIC_CPU_GOVERNORS: &str =
    "conservative ondemand userspace powersave performance schedutil";

struct Tree<'a> {
    root: &'a Path,
}

impl Tree<'_> {
    /// Writes `content` and a newline, as the kernel prints attributes.
    fn file(&self, rel: impl AsRef<Path>, content: impl Display) -> io::Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, format!("{content}\n"))
    }

    fn dir(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        fs::create_dir_all(self.root.join(rel))
    }

    /// A relative symlink at `rel` (under `sys/`) pointing to `target` given relative to
    /// `sys/`: sysfs class links are relative, which keeps the tree movable.
    fn link(&self, rel: &str, target: &str) -> io::Result<()> {
        let path = self.root.join(rel);
        let parent = path.parent().expect("links live in a directory");
        fs::create_dir_all(parent)?;
        let depth = Path::new(rel).components().count() - 2;
        let mut relative = PathBuf::new();
        for _ in 0..depth {
            relative.push("..");
        }
        relative.push(target);
        symlink(relative, path)
    }
}

fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

struct Policy<'a> {
    id: u32,
    related: &'a [u32],
    online: &'a [u32],
    driver: &'a str,
    governors: &'a str,
    governor: &'a str,
    /// kHz; `None` for drivers without a table.
    table: Option<&'a [u64]>,
    cpuinfo: (u64, u64),
    scaling: (u64, u64),
    latency_ns: u64,
}

fn cpus(tree: &Tree, online: &str, count: u32, offline: &[u32]) -> io::Result<()> {
    let base = "sys/devices/system/cpu";
    let all = format!("0-{}", count - 1);
    tree.file(format!("{base}/online"), online)?;
    tree.file(format!("{base}/possible"), &all)?;
    tree.file(format!("{base}/present"), &all)?;
    tree.dir(format!("{base}/cpu0"))?;
    for cpu in 1..count {
        let state = u8::from(!offline.contains(&cpu));
        tree.file(format!("{base}/cpu{cpu}/online"), state)?;
    }
    Ok(())
}

fn policy(tree: &Tree, p: &Policy) -> io::Result<()> {
    let dir = format!("sys/devices/system/cpu/cpufreq/policy{}", p.id);
    let list = |cpus: &[u32]| {
        cpus.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let affected: Vec<u32> = p
        .related
        .iter()
        .copied()
        .filter(|c| p.online.contains(c))
        .collect();
    tree.file(format!("{dir}/related_cpus"), list(p.related))?;
    tree.file(format!("{dir}/affected_cpus"), list(&affected))?;
    tree.file(format!("{dir}/scaling_driver"), p.driver)?;
    tree.file(format!("{dir}/scaling_available_governors"), p.governors)?;
    tree.file(format!("{dir}/scaling_governor"), p.governor)?;
    tree.file(format!("{dir}/cpuinfo_min_freq"), p.cpuinfo.0)?;
    tree.file(format!("{dir}/cpuinfo_max_freq"), p.cpuinfo.1)?;
    tree.file(format!("{dir}/cpuinfo_transition_latency"), p.latency_ns)?;
    tree.file(format!("{dir}/scaling_min_freq"), p.scaling.0)?;
    tree.file(format!("{dir}/scaling_max_freq"), p.scaling.1)?;
    tree.file(format!("{dir}/scaling_cur_freq"), p.scaling.0)?;
    tree.file(format!("{dir}/scaling_setspeed"), "<unsupported>")?;
    if let Some(table) = p.table {
        tree.file(format!("{dir}/scaling_available_frequencies"), join(table))?;
        let stats: Vec<String> = table.iter().map(|f| format!("{f} 0")).collect();
        tree.file(format!("{dir}/stats/time_in_state"), stats.join("\n"))?;
    }
    for cpu in p.related {
        tree.link(
            &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq"),
            &format!("devices/system/cpu/cpufreq/policy{}", p.id),
        )?;
    }
    Ok(())
}

struct Devfreq<'a> {
    /// Root-relative device directory (`sys/devices/.../devfreq/<name>`).
    dir: &'a str,
    name_file: Option<&'a str>,
    governors: &'a str,
    governor: &'a str,
    table: &'a [u64],
}

fn devfreq(tree: &Tree, d: &Devfreq) -> io::Result<()> {
    let dir = d.dir;
    let (lo, hi) = (d.table[0], d.table[d.table.len() - 1]);
    if let Some(name) = d.name_file {
        tree.file(format!("{dir}/name"), name)?;
    }
    tree.file(format!("{dir}/governor"), d.governor)?;
    tree.file(format!("{dir}/available_governors"), d.governors)?;
    tree.file(format!("{dir}/available_frequencies"), join(d.table))?;
    tree.file(format!("{dir}/cur_freq"), hi)?;
    tree.file(format!("{dir}/target_freq"), hi)?;
    tree.file(format!("{dir}/min_freq"), lo)?;
    tree.file(format!("{dir}/max_freq"), hi)?;
    tree.file(format!("{dir}/polling_interval"), 50)?;
    tree.file(format!("{dir}/trans_stat"), "     From  :   To\n")?;
    if d.governors.split_whitespace().any(|g| g == "userspace") {
        // On a kernel this directory appears when the userspace governor starts; a fixture
        // cannot do that, so it is there from the beginning with the kernel's idle text.
        tree.file(format!("{dir}/userspace/set_freq"), "undefined")?;
    }
    let name = Path::new(dir)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("device dir has a name");
    let target = dir
        .strip_prefix("sys/")
        .expect("device dirs are under sys/");
    tree.link(&format!("sys/class/devfreq/{name}"), target)
}

/// (label, mV, mA) per channel; a channel per entry, numbered from 1.
fn ina3221(
    tree: &Tree,
    device: &str,
    hwmon: &str,
    channels: &[(&str, u64, u64)],
) -> io::Result<()> {
    let dir = format!("sys/bus/i2c/drivers/ina3221/{device}/hwmon/{hwmon}");
    tree.file(format!("{dir}/name"), "ina3221")?;
    for (i, (label, mv, ma)) in channels.iter().enumerate() {
        let n = i + 1;
        tree.file(format!("{dir}/in{n}_label"), label)?;
        tree.file(format!("{dir}/in{n}_input"), mv)?;
        tree.file(format!("{dir}/curr{n}_input"), ma)?;
    }
    tree.link(&format!("sys/class/hwmon/{hwmon}"), &dir["sys/".len()..])
}

struct Zone<'a>(&'a str, i64);
struct Cooling<'a>(&'a str, u64, u64);

fn thermal(tree: &Tree, zones: &[Zone], cooling: &[Cooling]) -> io::Result<()> {
    for (i, Zone(kind, temp)) in zones.iter().enumerate() {
        let dir = format!("sys/devices/virtual/thermal/thermal_zone{i}");
        tree.file(format!("{dir}/type"), kind)?;
        tree.file(format!("{dir}/temp"), temp)?;
        tree.link(
            &format!("sys/class/thermal/thermal_zone{i}"),
            &dir["sys/".len()..],
        )?;
    }
    for (i, Cooling(kind, cur, max)) in cooling.iter().enumerate() {
        let dir = format!("sys/devices/virtual/thermal/cooling_device{i}");
        tree.file(format!("{dir}/type"), kind)?;
        tree.file(format!("{dir}/cur_state"), cur)?;
        tree.file(format!("{dir}/max_state"), max)?;
        tree.link(
            &format!("sys/class/thermal/cooling_device{i}"),
            &dir["sys/".len()..],
        )?;
    }
    Ok(())
}

fn xavier_nx_common(tree: &Tree) -> io::Result<()> {
    let table = xavier_nx_cpu_table_khz();
    let online = [0, 1, 2, 3, 4, 5];
    cpus(tree, "0-5", 6, &[])?;
    for (id, related) in [(0, [0, 1]), (2, [2, 3]), (4, [4, 5])] {
        policy(
            tree,
            &Policy {
                id,
                related: &related,
                online: &online,
                driver: "tegra194",
                governors: JETSON_CPU_GOVERNORS,
                governor: "schedutil",
                table: Some(&table),
                cpuinfo: (115_200, 1_907_200),
                // nvpmodel writes the 1190400 kHz floor in every mode.
                scaling: (1_190_400, 1_907_200),
                latency_ns: 500_000,
            },
        )?;
    }
    devfreq(
        tree,
        &Devfreq {
            dir: XAVIER_NX_GPU_DIR,
            name_file: Some("gv11b"),
            governors:
                "wmark_active wmark_simple nvhost_podgov userspace performance simple_ondemand",
            governor: "nvhost_podgov",
            table: &XAVIER_NX_GPU_HZ,
        },
    )?;
    tree.file("sys/devices/gpu.0/load", 125)?;
    let emc = "sys/kernel/debug/bpmp/debug/clk/emc";
    tree.file(format!("{emc}/rate"), 1_866_000_000u64)?;
    tree.file(format!("{emc}/min_rate"), 204_000_000u64)?;
    tree.file(format!("{emc}/max_rate"), 1_866_000_000u64)?;
    tree.file(format!("{emc}/mrq_rate_locked"), 0)?;
    thermal(
        tree,
        &[
            Zone("CPU-therm", 40_500),
            Zone("GPU-therm", 39_000),
            Zone("AO-therm", 38_500),
        ],
        &[
            Cooling("cpufreq-cpu0", 0, 24),
            Cooling("devfreq-17000000.gv11b", 0, 14),
            Cooling("pwm-fan", 0, 255),
        ],
    )
}

/// Jetson Xavier NX (JetPack 5 layout): three two-core Carmel policies at the nvpmodel
/// floor, gv11b devfreq with its 15 frequencies, EMC in bpmp debugfs, INA3221 through
/// hwmon with VDD_IN / VDD_CPU_GPU_CV / VDD_SOC and a sum channel, thermal zones with
/// cpufreq, devfreq and fan cooling devices.
pub fn xavier_nx(root: &Path) -> io::Result<()> {
    let tree = Tree { root };
    xavier_nx_common(&tree)?;
    ina3221(
        &tree,
        "7-0040",
        "hwmon1",
        &[
            ("VDD_IN", 5008, 1240),
            ("VDD_CPU_GPU_CV", 5016, 380),
            ("VDD_SOC", 5000, 560),
            ("Sum of shunt voltages", 20, 2180),
        ],
    )
}

/// The same board with JetPack 4's power monitor: iio `rail_name_N` / `in_power{N}_input`
/// (mW) instead of hwmon.
pub fn xavier_nx_jetpack4(root: &Path) -> io::Result<()> {
    let tree = Tree { root };
    xavier_nx_common(&tree)?;
    let dir = "sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0";
    for (n, (name, mw)) in [
        ("VDD_IN", 6210),
        ("VDD_CPU_GPU_CV", 1906),
        ("VDD_SOC", 2800),
    ]
    .iter()
    .enumerate()
    {
        tree.file(format!("{dir}/rail_name_{n}"), name)?;
        tree.file(format!("{dir}/in_power{n}_input"), mw)?;
    }
    tree.link("sys/bus/iio/devices/iio:device0", &dir["sys/".len()..])
}

/// Jetson Orin NX (JetPack 5 layout): two four-core policies, ga10b devfreq whose governors
/// lack `userspace` (so the GPU is pinned), no EMC debugfs, two INA3221 chips one of which
/// has unconnected ("NC") channels.
pub fn orin(root: &Path) -> io::Result<()> {
    let tree = Tree { root };
    let mut table: Vec<u64> = (0..24).map(|k| 115_200 + 76_800 * k).collect();
    table.push(1_984_000);
    let online = [0, 1, 2, 3, 4, 5, 6, 7];
    cpus(&tree, "0-7", 8, &[])?;
    for (id, related) in [(0, [0, 1, 2, 3]), (4, [4, 5, 6, 7])] {
        policy(
            &tree,
            &Policy {
                id,
                related: &related,
                online: &online,
                driver: "tegra194",
                governors: JETSON_CPU_GOVERNORS,
                governor: "schedutil",
                table: Some(&table),
                cpuinfo: (115_200, 1_984_000),
                scaling: (729_600, 1_984_000),
                latency_ns: 500_000,
            },
        )?;
    }
    devfreq(
        &tree,
        &Devfreq {
            dir: ORIN_GPU_DIR,
            name_file: Some("ga10b"),
            governors: "nvhost_podgov performance simple_ondemand",
            governor: "nvhost_podgov",
            table: &ORIN_GPU_HZ,
        },
    )?;
    tree.file("sys/devices/platform/gpu.0/load", 0)?;
    ina3221(
        &tree,
        "1-0040",
        "hwmon1",
        &[
            ("VDD_IN", 5040, 1500),
            ("VDD_CPU_GPU_CV", 5024, 420),
            ("VDD_SOC", 5016, 700),
        ],
    )?;
    ina3221(
        &tree,
        "1-0041",
        "hwmon2",
        &[("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 1800, 150), ("NC", 0, 0)],
    )?;
    thermal(
        &tree,
        &[Zone("cpu-thermal", 45_000), Zone("gpu-thermal", 44_000)],
        &[Cooling("pwm-fan", 0, 255)],
    )
}

/// A generic big.LITTLE ARM board (cpufreq-dt): schedutil running, userspace available, CPU5
/// offline, a Mali-style devfreq GPU, a cpufreq cooling device on the big cluster, no power
/// sensor.
pub fn generic_arm(root: &Path) -> io::Result<()> {
    let tree = Tree { root };
    let online = [0, 1, 2, 3, 4, 6, 7];
    cpus(&tree, "0-4,6-7", 8, &[5])?;
    for (id, related, table) in [
        (0, [0, 1, 2, 3], &GENERIC_ARM_LITTLE_KHZ[..]),
        (4, [4, 5, 6, 7], &GENERIC_ARM_BIG_KHZ[..]),
    ] {
        policy(
            &tree,
            &Policy {
                id,
                related: &related,
                online: &online,
                driver: "cpufreq-dt",
                governors: GENERIC_CPU_GOVERNORS,
                governor: "schedutil",
                table: Some(table),
                cpuinfo: (table[0], table[table.len() - 1]),
                scaling: (table[0], table[table.len() - 1]),
                latency_ns: 40_000,
            },
        )?;
    }
    devfreq(
        &tree,
        &Devfreq {
            dir: GENERIC_ARM_GPU_DIR,
            name_file: None,
            governors: "simple_ondemand userspace performance powersave",
            governor: "simple_ondemand",
            table: &GENERIC_ARM_GPU_HZ,
        },
    )?;
    thermal(
        &tree,
        &[Zone("cpu-thermal", 52_000), Zone("gpu-thermal", 50_000)],
        &[Cooling("cpufreq-cpu4", 0, 7)],
    )
}

/// An x86 laptop with intel_pstate in active mode: eight single-CPU policies with no
/// frequency table and only performance/powersave, RAPL powercap zones.
pub fn intel_laptop(root: &Path) -> io::Result<()> {
    let tree = Tree { root };
    let online: Vec<u32> = (0..8).collect();
    cpus(&tree, "0-7", 8, &[])?;
    for id in 0..8 {
        policy(
            &tree,
            &Policy {
                id,
                related: &[id],
                online: &online,
                driver: "intel_pstate",
                governors: "performance powersave",
                governor: "powersave",
                table: None,
                cpuinfo: (400_000, 4_700_000),
                scaling: (400_000, 4_700_000),
                latency_ns: 0,
            },
        )?;
    }
    tree.file("sys/devices/system/cpu/intel_pstate/status", "active")?;
    tree.file("sys/devices/system/cpu/intel_pstate/no_turbo", 0)?;
    let base = "sys/devices/virtual/powercap/intel-rapl";
    tree.file(format!("{base}/enabled"), 1)?;
    tree.link(
        "sys/class/powercap/intel-rapl",
        "devices/virtual/powercap/intel-rapl",
    )?;
    for (zone, name, energy) in [
        ("intel-rapl:0", "package-0", 71_234_567_890u64),
        ("intel-rapl:0/intel-rapl:0:0", "core", 30_123_456_789),
        ("intel-rapl:0/intel-rapl:0:1", "uncore", 1_234_567_890),
        ("intel-rapl:1", "psys", 123_456_789_012),
    ] {
        let dir = format!("{base}/{zone}");
        tree.file(format!("{dir}/name"), name)?;
        tree.file(format!("{dir}/energy_uj"), energy)?;
        tree.file(format!("{dir}/max_energy_range_uj"), 262_143_328_850u64)?;
        tree.file(format!("{dir}/enabled"), 1)?;
        let leaf = zone.rsplit('/').next().expect("zone has a name");
        tree.link(&format!("sys/class/powercap/{leaf}"), &dir["sys/".len()..])?;
    }
    thermal(
        &tree,
        &[Zone("x86_pkg_temp", 48_000), Zone("acpitz", 40_000)],
        &[
            Cooling("Processor", 0, 3),
            Cooling("intel_powerclamp", 0, 50),
        ],
    )
}

/// A machine with CPUs and no cpufreq at all (a virtual machine): no policies, no devfreq,
/// no sensors, no thermal zones.
pub fn no_cpufreq(root: &Path) -> io::Result<()> {
    let tree = Tree { root };
    cpus(&tree, "0-1", 2, &[])
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every entry under `root` by relative path, links not followed: comparing two snapshots
/// says whether a tree is byte for byte as it was.
pub fn snapshot(root: &Path) -> io::Result<std::collections::BTreeMap<PathBuf, Entry>> {
    let mut entries = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let rel = path
                .strip_prefix(root)
                .expect("walked under root")
                .to_path_buf();
            let kind = fs::symlink_metadata(&path)?.file_type();
            if kind.is_symlink() {
                entries.insert(rel, Entry::Link(fs::read_link(&path)?));
            } else if kind.is_dir() {
                entries.insert(rel, Entry::Dir);
                stack.push(path);
            } else {
                entries.insert(rel, Entry::File(fs::read(&path)?));
            }
        }
    }
    Ok(entries)
}
