//! devfreq devices (`sys/class/devfreq/<dev>`: GPUs, memory controllers, NPUs) and the
//! Jetson GPU load file. Values are Hz on disk.

use std::path::{Path, PathBuf};

use super::cpufreq::Frequencies;
use super::sysfs::{Sysfs, SysfsError};
use super::units::{fraction_from_per_mille, FreqUnit, Hz};

pub const DEVFREQ_CLASS: &str = "sys/class/devfreq";

pub const GOVERNOR: &str = "governor";
pub const MIN: &str = "min_freq";
pub const MAX: &str = "max_freq";
pub const SET_FREQ: &str = "userspace/set_freq";
pub const CURRENT: &str = "cur_freq";
pub const UNIT: FreqUnit = FreqUnit::Hz;

/// Where Jetson kernels put the GPU load (0..1000 per mille), newest layout last.
pub const GPU_LOAD_CANDIDATES: [&str; 3] = [
    "sys/devices/gpu.0/load",
    "sys/devices/platform/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
];

/// One devfreq device as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevfreqDevice {
    /// The directory name under `sys/class/devfreq` (the parent device's name).
    pub name: String,
    /// Content of the `name` file where the kernel has one.
    pub display_name: Option<String>,
    /// Root-relative directory, through the class link.
    pub dir: PathBuf,
    pub governor: String,
    pub available_governors: Vec<String>,
    /// `None` when the device lists no frequencies.
    pub frequencies: Option<Frequencies>,
    pub min: Hz,
    pub max: Hz,
}

impl DevfreqDevice {
    pub fn has_governor(&self, name: &str) -> bool {
        self.available_governors.iter().any(|g| g == name)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Every devfreq device, in name order, each read on its own.
pub fn discover(sysfs: &Sysfs) -> Vec<Result<DevfreqDevice, SysfsError>> {
    sysfs
        .list_dir(DEVFREQ_CLASS)
        .into_iter()
        .map(|name| read_device(sysfs, &name))
        .collect()
}

fn read_device(sysfs: &Sysfs, name: &str) -> Result<DevfreqDevice, SysfsError> {
    let dir = Path::new(DEVFREQ_CLASS).join(name);
    let table_file = dir.join("available_frequencies");
    let frequencies = match sysfs.read_optional(&table_file)? {
        Some(text) => {
            let table = UNIT.parse_table(&text).ok_or_else(|| SysfsError::Parse {
                path: sysfs.path(&table_file),
                content: text,
                expected: "a list of Hz frequencies",
            })?;
            (!table.is_empty()).then_some(Frequencies::Table(table))
        }
        None => None,
    };
    Ok(DevfreqDevice {
        name: name.to_string(),
        display_name: sysfs.read_optional(dir.join("name"))?,
        governor: sysfs.read(dir.join(GOVERNOR))?,
        available_governors: sysfs
            .read(dir.join("available_governors"))?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        frequencies,
        min: sysfs.read_freq(dir.join(MIN), UNIT)?,
        max: sysfs.read_freq(dir.join(MAX), UNIT)?,
        dir,
    })
}

/// The Jetson GPU load file, if this is a Jetson.
pub fn gpu_load_file(sysfs: &Sysfs) -> Option<PathBuf> {
    GPU_LOAD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|rel| sysfs.path(rel).is_file())
}

/// GPU busy fraction 0.0..=1.0 from a Jetson load file.
pub fn read_gpu_load(sysfs: &Sysfs, file: &Path) -> Result<f64, SysfsError> {
    Ok(fraction_from_per_mille(sysfs.read_u64(file)?))
}
