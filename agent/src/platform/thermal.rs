//! Thermal zones (temperatures) and cooling devices (throttling state), and the frequency
//! ceiling a cooling device imposes on a domain at this moment. cpufreq and devfreq cooling
//! devices map state `k` to the `k`-th frequency counted down from the top of the domain's
//! table, which is how the kernel's cpufreq_cooling and devfreq_cooling drivers step.

use std::path::{Path, PathBuf};

use super::sysfs::{Sysfs, SysfsError};
use super::units::{Hz, MilliCelsius};

pub const THERMAL_CLASS: &str = "sys/class/thermal";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThermalZone {
    pub dir: PathBuf,
    /// The zone's `type` (`CPU-therm`, `x86_pkg_temp`).
    pub kind: String,
    pub temperature: Option<MilliCelsius>,
}

/// What a cooling device throttles, as far as its type tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoolingTarget {
    /// `cpufreq-cpuN`: the policy holding CPU N.
    Cpu(u32),
    /// `thermal-cpufreq-K` (older kernels): the K-th cpufreq policy.
    CpufreqIndex(u32),
    /// `devfreq-<name>`: that devfreq device.
    Devfreq(String),
    /// Fans, power clamps and vendor devices: no frequency ceiling can be derived.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoolingDevice {
    pub dir: PathBuf,
    pub kind: String,
    pub target: CoolingTarget,
    pub cur_state: u64,
    pub max_state: u64,
}

impl CoolingDevice {
    pub fn cur_state_file(&self) -> PathBuf {
        self.dir.join("cur_state")
    }
}

pub fn cooling_target(kind: &str) -> CoolingTarget {
    if let Some(cpu) = kind
        .strip_prefix("cpufreq-cpu")
        .and_then(|n| n.parse().ok())
    {
        CoolingTarget::Cpu(cpu)
    } else if let Some(k) = kind
        .strip_prefix("thermal-cpufreq-")
        .and_then(|n| n.parse().ok())
    {
        CoolingTarget::CpufreqIndex(k)
    } else if let Some(dev) = kind.strip_prefix("devfreq-") {
        CoolingTarget::Devfreq(dev.to_string())
    } else {
        CoolingTarget::Other
    }
}

/// Zones and cooling devices under the thermal class.
pub fn discover(sysfs: &Sysfs) -> Result<(Vec<ThermalZone>, Vec<CoolingDevice>), SysfsError> {
    let mut zones = Vec::new();
    let mut cooling = Vec::new();
    for name in sysfs.list_dir(THERMAL_CLASS) {
        let dir = Path::new(THERMAL_CLASS).join(&name);
        if name.starts_with("thermal_zone") {
            // A zone whose sensor is asleep returns an error on read; it is still a zone.
            let temperature = sysfs.read_i64(dir.join("temp")).ok().map(MilliCelsius);
            zones.push(ThermalZone {
                kind: sysfs.read(dir.join("type"))?,
                temperature,
                dir,
            });
        } else if name.starts_with("cooling_device") {
            let kind = sysfs.read(dir.join("type"))?;
            cooling.push(CoolingDevice {
                target: cooling_target(&kind),
                cur_state: sysfs.read_u64(dir.join("cur_state"))?,
                max_state: sysfs.read_u64(dir.join("max_state"))?,
                kind,
                dir,
            });
        }
    }
    Ok((zones, cooling))
}

/// The ceiling that throttling state `state` imposes on an ascending `table`.
pub fn ceiling_for_state(table: &[Hz], state: u64) -> Option<Hz> {
    if table.is_empty() {
        return None;
    }
    let from_top = (state as usize).min(table.len() - 1);
    Some(table[table.len() - 1 - from_top])
}

/// Current temperature of a zone.
pub fn read_temperature(sysfs: &Sysfs, zone: &ThermalZone) -> Result<MilliCelsius, SysfsError> {
    sysfs.read_i64(zone.dir.join("temp")).map(MilliCelsius)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooling_types_map_to_domains() {
        assert_eq!(cooling_target("cpufreq-cpu4"), CoolingTarget::Cpu(4));
        assert_eq!(
            cooling_target("thermal-cpufreq-1"),
            CoolingTarget::CpufreqIndex(1)
        );
        assert_eq!(
            cooling_target("devfreq-17000000.gv11b"),
            CoolingTarget::Devfreq("17000000.gv11b".into())
        );
        assert_eq!(cooling_target("pwm-fan"), CoolingTarget::Other);
    }

    #[test]
    fn state_counts_down_from_the_top_of_the_table() {
        let t = [Hz(1), Hz(2), Hz(3)];
        assert_eq!(ceiling_for_state(&t, 0), Some(Hz(3)));
        assert_eq!(ceiling_for_state(&t, 2), Some(Hz(1)));
        assert_eq!(ceiling_for_state(&t, 9), Some(Hz(1)));
        assert_eq!(ceiling_for_state(&[], 0), None);
    }
}
