//! The Jetson external memory clock (EMC). On Xavier it is not a devfreq device but a bpmp
//! clock in debugfs (`sys/kernel/debug/bpmp/debug/clk/emc/`): setting `mrq_rate_locked`
//! to 1 stops the firmware from scaling it, then `rate` is the frequency. Hz on disk; needs
//! root and a mounted debugfs.

use std::path::PathBuf;

use super::sysfs::{Sysfs, SysfsError};
use super::units::{FreqUnit, Hz};

pub const EMC_DIR: &str = "sys/kernel/debug/bpmp/debug/clk/emc";
pub const RATE: &str = "rate";
pub const MIN_RATE: &str = "min_rate";
pub const MAX_RATE: &str = "max_rate";
pub const LOCK: &str = "mrq_rate_locked";
pub const UNIT: FreqUnit = FreqUnit::Hz;

/// The EMC clock as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emc {
    pub dir: PathBuf,
    pub rate: Hz,
    pub min_rate: Hz,
    pub max_rate: Hz,
    pub locked: bool,
}

impl Emc {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The EMC clock, or `None` where there is no bpmp debugfs (not a Jetson, debugfs not
/// mounted, or not root).
pub fn discover(sysfs: &Sysfs) -> Result<Option<Emc>, SysfsError> {
    let dir = PathBuf::from(EMC_DIR);
    if !sysfs.path(dir.join(RATE)).is_file() {
        return Ok(None);
    }
    Ok(Some(Emc {
        rate: sysfs.read_freq(dir.join(RATE), UNIT)?,
        min_rate: sysfs.read_freq(dir.join(MIN_RATE), UNIT)?,
        max_rate: sysfs.read_freq(dir.join(MAX_RATE), UNIT)?,
        locked: sysfs.read_u64(dir.join(LOCK))? != 0,
        dir,
    }))
}
