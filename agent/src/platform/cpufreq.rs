//! cpufreq policies (`sys/devices/system/cpu/cpufreq/policyN`): what each one offers, read
//! once at discovery, and the names of the files actuation writes. Values are kHz on disk
//! and [`Hz`] here.

use std::path::{Path, PathBuf};

use super::cpulist::CpuList;
use super::sysfs::{Sysfs, SysfsError};
use super::units::{FreqUnit, Hz, Nanos};

pub const CPUFREQ_DIR: &str = "sys/devices/system/cpu/cpufreq";
pub const CPU_DIR: &str = "sys/devices/system/cpu";

pub const GOVERNOR: &str = "scaling_governor";
pub const MIN: &str = "scaling_min_freq";
pub const MAX: &str = "scaling_max_freq";
pub const SETSPEED: &str = "scaling_setspeed";
pub const CURRENT: &str = "scaling_cur_freq";
pub const UNIT: FreqUnit = FreqUnit::KHz;

/// The frequencies a domain can run at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frequencies {
    /// A driver table, ascending.
    Table(Vec<Hz>),
    /// Only bounds are known (no table: intel_pstate, intel_cpufreq, some cpufreq-dt).
    Range { min: Hz, max: Hz },
}

impl Frequencies {
    pub fn lowest(&self) -> Hz {
        match self {
            Frequencies::Table(t) => t[0],
            Frequencies::Range { min, .. } => *min,
        }
    }

    pub fn highest(&self) -> Hz {
        match self {
            Frequencies::Table(t) => t[t.len() - 1],
            Frequencies::Range { max, .. } => *max,
        }
    }

    /// The frequency actually requested for a wish: the lowest supported one at or above
    /// it (what schedutil does), but never above `ceiling` nor below the lowest.
    pub fn resolve(&self, wish: Hz, ceiling: Hz) -> Hz {
        match self {
            Frequencies::Table(t) => {
                let up = t
                    .iter()
                    .copied()
                    .find(|&f| f >= wish)
                    .unwrap_or(t[t.len() - 1]);
                if up <= ceiling {
                    up
                } else {
                    t.iter()
                        .copied()
                        .rev()
                        .find(|&f| f <= ceiling)
                        .unwrap_or(t[0])
                }
            }
            Frequencies::Range { min, max } => wish.min(ceiling).min(*max).max(*min),
        }
    }
}

/// One cpufreq policy as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpufreqPolicy {
    /// N of `policyN`.
    pub id: u32,
    /// Root-relative directory.
    pub dir: PathBuf,
    /// CPUs the policy covers, online or not.
    pub related_cpus: CpuList,
    /// Its online CPUs.
    pub affected_cpus: CpuList,
    pub driver: String,
    pub governor: String,
    pub available_governors: Vec<String>,
    pub frequencies: Frequencies,
    /// Whether the driver exported `scaling_available_frequencies`.
    pub has_table: bool,
    pub cpuinfo_min: Hz,
    pub cpuinfo_max: Hz,
    pub scaling_min: Hz,
    pub scaling_max: Hz,
    /// `None` when the driver reports it as unknown (the kernel prints 4294967295).
    pub transition_latency: Option<Nanos>,
}

impl CpufreqPolicy {
    pub fn has_governor(&self, name: &str) -> bool {
        self.available_governors.iter().any(|g| g == name)
    }

    /// intel_pstate registers as driver `intel_pstate` only in active mode (passive mode
    /// registers `intel_cpufreq`), where it picks P-states itself.
    pub fn is_intel_pstate_active(&self) -> bool {
        self.driver == "intel_pstate"
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Every cpufreq policy under the root, in policy order, each read on its own so that one
/// unreadable policy does not hide the others. An absent cpufreq directory is an empty
/// list: the machine has no CPU frequency scaling.
pub fn discover(sysfs: &Sysfs) -> Vec<Result<CpufreqPolicy, SysfsError>> {
    sysfs
        .list_dir(CPUFREQ_DIR)
        .into_iter()
        .filter_map(|name| {
            let id = name.strip_prefix("policy")?.parse().ok()?;
            Some(read_policy(
                sysfs,
                id,
                PathBuf::from(CPUFREQ_DIR).join(&name),
            ))
        })
        .collect()
}

fn read_cpus(sysfs: &Sysfs, rel: PathBuf) -> Result<CpuList, SysfsError> {
    let text = sysfs.read(&rel)?;
    parse_cpus(sysfs, &rel, text)
}

fn parse_cpus(sysfs: &Sysfs, rel: &Path, text: String) -> Result<CpuList, SysfsError> {
    CpuList::parse(&text).map_err(|_| SysfsError::Parse {
        path: sysfs.path(rel),
        content: text,
        expected: "a CPU list",
    })
}

fn read_policy(sysfs: &Sysfs, id: u32, dir: PathBuf) -> Result<CpufreqPolicy, SysfsError> {
    let related_cpus = read_cpus(sysfs, dir.join("related_cpus"))?;
    let affected_cpus = read_cpus(sysfs, dir.join("affected_cpus"))?;
    let cpuinfo_min = sysfs.read_freq(dir.join("cpuinfo_min_freq"), UNIT)?;
    let cpuinfo_max = sysfs.read_freq(dir.join("cpuinfo_max_freq"), UNIT)?;
    let table_file = dir.join("scaling_available_frequencies");
    let table = match sysfs.read_optional(&table_file)? {
        Some(text) => Some(UNIT.parse_table(&text).ok_or_else(|| SysfsError::Parse {
            path: sysfs.path(&table_file),
            content: text,
            expected: "a list of kHz frequencies",
        })?),
        None => None,
    };
    let has_table = table.as_ref().is_some_and(|t| !t.is_empty());
    let frequencies = match table {
        Some(t) if !t.is_empty() => Frequencies::Table(t),
        _ => Frequencies::Range {
            min: cpuinfo_min,
            max: cpuinfo_max,
        },
    };
    let transition_latency = match sysfs.read_optional(dir.join("cpuinfo_transition_latency"))? {
        Some(text) => match text.parse::<u64>() {
            Ok(ns) if ns != u64::from(u32::MAX) => Some(Nanos(ns)),
            _ => None,
        },
        None => None,
    };
    Ok(CpufreqPolicy {
        id,
        related_cpus,
        affected_cpus,
        driver: sysfs.read(dir.join("scaling_driver"))?,
        governor: sysfs.read(dir.join(GOVERNOR))?,
        available_governors: sysfs
            .read(dir.join("scaling_available_governors"))?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        frequencies,
        has_table,
        cpuinfo_min,
        cpuinfo_max,
        scaling_min: sysfs.read_freq(dir.join(MIN), UNIT)?,
        scaling_max: sysfs.read_freq(dir.join(MAX), UNIT)?,
        transition_latency,
        dir,
    })
}

/// Online CPUs (`sys/devices/system/cpu/online`); `None` when the file is absent.
pub fn online_cpus(sysfs: &Sysfs) -> Result<Option<CpuList>, SysfsError> {
    let rel = PathBuf::from(CPU_DIR).join("online");
    match sysfs.read_optional(&rel)? {
        Some(text) => parse_cpus(sysfs, &rel, text).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_picks_lowest_table_entry_at_or_above_the_wish() {
        let f = Frequencies::Table(vec![Hz(100), Hz(200), Hz(300)]);
        assert_eq!(f.resolve(Hz(150), Hz(300)), Hz(200));
        assert_eq!(f.resolve(Hz(200), Hz(300)), Hz(200));
        assert_eq!(f.resolve(Hz(10), Hz(300)), Hz(100));
        assert_eq!(f.resolve(Hz(999), Hz(300)), Hz(300));
    }

    #[test]
    fn resolve_never_exceeds_the_ceiling() {
        let f = Frequencies::Table(vec![Hz(100), Hz(200), Hz(300)]);
        assert_eq!(f.resolve(Hz(250), Hz(250)), Hz(200));
        assert_eq!(f.resolve(Hz(999), Hz(150)), Hz(100));
        let r = Frequencies::Range {
            min: Hz(100),
            max: Hz(300),
        };
        assert_eq!(r.resolve(Hz(280), Hz(250)), Hz(250));
        assert_eq!(r.resolve(Hz(50), Hz(250)), Hz(100));
    }
}
