//! Power and energy: the board's sensors (INA3221 through hwmon, the JetPack 4 iio power
//! monitor, x86 RAPL powercap counters), an estimate from a platform model where no sensor
//! exists, and an energy meter that integrates readings over time. Time is always passed in
//! by the caller, so the arithmetic is testable without a clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::sysfs::{Sysfs, SysfsError};
use super::units::{Joules, Nanos, Watts};

pub const HWMON_CLASS: &str = "sys/class/hwmon";
pub const IIO_DEVICES: &str = "sys/bus/iio/devices";
pub const POWERCAP_CLASS: &str = "sys/class/powercap";

/// Where a reading comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    Ina3221Hwmon,
    JetsonIio,
    Rapl,
    /// No sensor: estimated from a board description (the agent's control loop does it).
    Estimated,
}

/// One rail's power over the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct RailPower {
    pub name: String,
    pub power: Watts,
    /// Energy since the previous reading, where the sensor counts energy itself (RAPL); the
    /// meter then adds it as is instead of integrating.
    pub energy: Option<Joules>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PowerReading {
    pub source: SensorKind,
    pub rails: Vec<RailPower>,
    /// The whole board or package: the input rail where one measures everything, else the
    /// sum of rails that do not overlap.
    pub total: Watts,
    pub total_energy: Option<Joules>,
}

impl PowerReading {
    /// Estimates must never be shown or logged as measurements.
    pub fn is_estimated(&self) -> bool {
        self.source == SensorKind::Estimated
    }

    pub fn rail(&self, name: &str) -> Option<Watts> {
        self.rails.iter().find(|r| r.name == name).map(|r| r.power)
    }
}

/// Rail names that measure the whole board input, so the other rails are parts of it.
fn is_board_input(name: &str) -> bool {
    name == "VDD_IN" || name.starts_with("VIN")
}

/// Jetson device trees label unconnected INA3221 channels "NC"; matched as a word so that a
/// rail whose name merely contains the letters is kept.
fn is_unconnected(label: &str) -> bool {
    label.split(['_', ' ', '-']).any(|word| word == "NC")
}

fn is_sum_channel(label: &str) -> bool {
    label.to_ascii_lowercase().contains("sum")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwmonRail {
    pub label: String,
    /// mV.
    pub voltage: PathBuf,
    /// mA.
    pub current: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IioRail {
    pub name: String,
    /// mW.
    pub power: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaplZone {
    /// The zone's `name` (`package-0`, `core`, `psys`).
    pub name: String,
    pub energy: PathBuf,
    pub max_energy_range_uj: u64,
    /// `intel-rapl:N` rather than a subzone `intel-rapl:N:M`.
    pub top_level: bool,
}

/// A discovered sensor.
#[derive(Debug, Clone, PartialEq)]
pub enum PowerSensor {
    Ina3221Hwmon(Vec<HwmonRail>),
    JetsonIio(Vec<IioRail>),
    Rapl {
        zones: Vec<RaplZone>,
        /// Previous counter value and time per zone.
        last: Vec<Option<(u64, Nanos)>>,
    },
}

/// The first sensor found, in order of preference; `None` means estimate.
pub fn discover(sysfs: &Sysfs) -> Option<PowerSensor> {
    let hwmon = discover_ina3221(sysfs);
    if !hwmon.is_empty() {
        return Some(PowerSensor::Ina3221Hwmon(hwmon));
    }
    let iio = discover_iio(sysfs);
    if !iio.is_empty() {
        return Some(PowerSensor::JetsonIio(iio));
    }
    let zones = discover_rapl(sysfs);
    if !zones.is_empty() {
        let last = vec![None; zones.len()];
        return Some(PowerSensor::Rapl { zones, last });
    }
    log::info!("no power sensor found (INA3221 hwmon, Jetson iio, RAPL); power is not measured");
    None
}

fn discover_ina3221(sysfs: &Sysfs) -> Vec<HwmonRail> {
    let mut rails = Vec::new();
    for hwmon in sysfs.list_dir(HWMON_CLASS) {
        let dir = Path::new(HWMON_CLASS).join(&hwmon);
        if sysfs.read(dir.join("name")).ok().as_deref() != Some("ina3221") {
            continue;
        }
        for n in 1..=8 {
            let Ok(label) = sysfs.read(dir.join(format!("in{n}_label"))) else {
                continue;
            };
            let voltage = dir.join(format!("in{n}_input"));
            let current = dir.join(format!("curr{n}_input"));
            if is_unconnected(&label)
                || is_sum_channel(&label)
                || !sysfs.path(&voltage).is_file()
                || !sysfs.path(&current).is_file()
            {
                continue;
            }
            rails.push(HwmonRail {
                label,
                voltage,
                current,
            });
        }
    }
    rails
}

fn discover_iio(sysfs: &Sysfs) -> Vec<IioRail> {
    let mut rails = Vec::new();
    for device in sysfs.list_dir(IIO_DEVICES) {
        let dir = Path::new(IIO_DEVICES).join(&device);
        for n in 0..8 {
            let Ok(name) = sysfs.read(dir.join(format!("rail_name_{n}"))) else {
                continue;
            };
            let power = dir.join(format!("in_power{n}_input"));
            if is_unconnected(&name) || !sysfs.path(&power).is_file() {
                continue;
            }
            rails.push(IioRail { name, power });
        }
    }
    rails
}

fn discover_rapl(sysfs: &Sysfs) -> Vec<RaplZone> {
    let mut zones = Vec::new();
    for entry in sysfs.list_dir(POWERCAP_CLASS) {
        if !entry.starts_with("intel-rapl:") {
            continue;
        }
        let dir = Path::new(POWERCAP_CLASS).join(&entry);
        let energy = dir.join("energy_uj");
        // Readable by root only since Linux 5.10: a zone that cannot be read is no sensor.
        if let Err(e) = sysfs.read_u64(&energy) {
            log::warn!("RAPL zone {entry} is not usable: {e}");
            continue;
        }
        let (Ok(name), Ok(max_energy_range_uj)) = (
            sysfs.read(dir.join("name")),
            sysfs.read_u64(dir.join("max_energy_range_uj")),
        ) else {
            continue;
        };
        zones.push(RaplZone {
            name,
            energy,
            max_energy_range_uj,
            top_level: entry.matches(':').count() == 1,
        });
    }
    zones
}

/// Energy between two readings of a counter that wraps to 0 after `max_range`.
pub fn energy_delta_uj(previous: u64, current: u64, max_range: u64) -> u64 {
    let delta = current.wrapping_sub(previous);
    if current < previous {
        // Wrapped: the subtraction went round u64, adding the range brings it back.
        delta.wrapping_add(max_range)
    } else {
        delta
    }
}

fn total_of(
    rails: &[RailPower],
    overlapping: impl Fn(&str) -> bool,
    whole: impl Fn(&str) -> bool,
) -> (Watts, Option<Joules>) {
    if let Some(r) = rails.iter().find(|r| whole(&r.name)) {
        return (r.power, r.energy);
    }
    let parts = rails.iter().filter(|r| !overlapping(&r.name));
    let mut power = Watts(0.0);
    let mut energy: Option<Joules> = None;
    for r in parts {
        power += r.power;
        if let Some(e) = r.energy {
            *energy.get_or_insert(Joules(0.0)) += e;
        }
    }
    (power, energy)
}

impl PowerSensor {
    pub fn kind(&self) -> SensorKind {
        match self {
            PowerSensor::Ina3221Hwmon(_) => SensorKind::Ina3221Hwmon,
            PowerSensor::JetsonIio(_) => SensorKind::JetsonIio,
            PowerSensor::Rapl { .. } => SensorKind::Rapl,
        }
    }

    /// Reads every rail at time `now`. Counter sensors (RAPL) need two readings for a power:
    /// the first returns `None` and primes them.
    pub fn read(&mut self, sysfs: &Sysfs, now: Nanos) -> Result<Option<PowerReading>, SysfsError> {
        match self {
            PowerSensor::Ina3221Hwmon(rails) => {
                let mut out = Vec::new();
                for rail in rails.iter() {
                    let mv = sysfs.read_u64(&rail.voltage)?;
                    let ma = sysfs.read_u64(&rail.current)?;
                    out.push(RailPower {
                        name: rail.label.clone(),
                        power: Watts::from_millivolts_milliamps(mv as f64, ma as f64),
                        energy: None,
                    });
                }
                Ok(Some(measured(SensorKind::Ina3221Hwmon, out)))
            }
            PowerSensor::JetsonIio(rails) => {
                let mut out = Vec::new();
                for rail in rails.iter() {
                    let mw = sysfs.read_u64(&rail.power)?;
                    out.push(RailPower {
                        name: rail.name.clone(),
                        power: Watts::from_milliwatts(mw as f64),
                        energy: None,
                    });
                }
                Ok(Some(measured(SensorKind::JetsonIio, out)))
            }
            PowerSensor::Rapl { zones, last } => {
                let mut out = Vec::new();
                let mut primed = true;
                for (zone, last) in zones.iter().zip(last.iter_mut()) {
                    let counter = sysfs.read_u64(&zone.energy)?;
                    match last.replace((counter, now)) {
                        Some((previous, then)) if now > then => {
                            let uj = energy_delta_uj(previous, counter, zone.max_energy_range_uj);
                            let energy = Joules::from_microjoules(uj);
                            let seconds = Nanos(now.0 - then.0).as_secs_f64();
                            out.push(RailPower {
                                name: zone.name.clone(),
                                power: Watts(energy.0 / seconds),
                                energy: Some(energy),
                            });
                        }
                        _ => primed = false,
                    }
                }
                if !primed {
                    return Ok(None);
                }
                // psys covers the platform, packages are inside it; subzones are inside
                // their package.
                let top_level: Vec<&str> = zones
                    .iter()
                    .filter(|z| z.top_level)
                    .map(|z| z.name.as_str())
                    .collect();
                let (total, total_energy) = total_of(
                    &out,
                    |name| !top_level.contains(&name),
                    |name| name == "psys",
                );
                Ok(Some(PowerReading {
                    source: SensorKind::Rapl,
                    rails: out,
                    total,
                    total_energy,
                }))
            }
        }
    }
}

fn measured(source: SensorKind, rails: Vec<RailPower>) -> PowerReading {
    let has_input = rails.iter().any(|r| is_board_input(&r.name));
    let (total, total_energy) =
        total_of(&rails, |_| false, |name| has_input && is_board_input(name));
    PowerReading {
        source,
        rails,
        total,
        total_energy,
    }
}

/// Board power from a board description where no sensor exists: the board's base
/// power plus each described domain at its clock with its measured activity (CPUs: each
/// online CPU's busy fraction since the previous estimate; GPU: its load; memory: the
/// GPU's load, as the EMC mostly serves it). The same arithmetic serves dnngovd's
/// control loop and `dnngov-eval`. Every reading it gives is flagged as estimated.
#[derive(Debug, Default)]
pub struct Estimator {
    /// Each CPU's cumulative busy time at the previous estimate, and when it was (ns).
    last_busy: BTreeMap<u32, u64>,
    last_at: Option<u64>,
}

/// One domain as the estimator sees it: its description (none: not counted), what it
/// clocks, and its clock now.
pub struct EstimatedDomain<'a> {
    pub spec: Option<&'a dnngov_policy::platform::DomainSpec>,
    pub kind: dnngov_policy::DomainKind,
    pub freq: Option<u64>,
}

impl Estimator {
    pub fn new() -> Estimator {
        Estimator::default()
    }

    /// The estimate at `at` (ns on any monotonic clock) from each CPU's cumulative busy
    /// time (`busy`, ns), the CPUs online (`None`: all), and the GPU load (0..=1).
    pub fn estimate(
        &mut self,
        board: &dnngov_policy::platform::Platform,
        domains: &[EstimatedDomain<'_>],
        at: u64,
        busy: &[(u32, u64)],
        online: Option<&[u32]>,
        gpu_load: Option<f64>,
    ) -> PowerReading {
        let wall = self.last_at.map_or(0, |t| at.saturating_sub(t));
        let fraction = |cpu: u32, now: u64| {
            let before = *self.last_busy.get(&cpu)?;
            (wall > 0).then(|| now.wrapping_sub(before) as f64 / wall as f64)
        };
        let fractions: BTreeMap<u32, f64> = busy
            .iter()
            .filter_map(|&(cpu, now)| Some((cpu, fraction(cpu, now)?)))
            .collect();
        self.last_busy = busy.iter().copied().collect();
        self.last_at = Some(at);
        let mut total = board.base_power_w;
        for d in domains {
            let (Some(spec), Some(freq)) = (d.spec, d.freq) else {
                continue;
            };
            let activities: Vec<f64> = match d.kind {
                dnngov_policy::DomainKind::Cpu => spec
                    .cpus
                    .iter()
                    .filter(|cpu| online.is_none_or(|o| o.contains(cpu)))
                    .map(|cpu| fractions.get(cpu).copied().unwrap_or(0.0))
                    .collect(),
                _ => vec![gpu_load.unwrap_or(0.0)],
            };
            total += spec.power_w(dnngov_policy::Hz(freq), &activities);
        }
        let total = Watts(total);
        PowerReading {
            source: SensorKind::Estimated,
            rails: vec![RailPower {
                name: "board".into(),
                power: total,
                energy: None,
            }],
            total,
            total_energy: None,
        }
    }
}

/// Energy per rail and in total since the meter started. Between two readings power is
/// taken as linear (trapezoid); counter sensors' own energy is used as is.
#[derive(Debug, Clone, Default)]
pub struct EnergyMeter {
    last: Option<(Nanos, PowerReading)>,
    rails: BTreeMap<String, Joules>,
    total: Joules,
    elapsed: Nanos,
    includes_estimates: bool,
}

impl EnergyMeter {
    pub fn new() -> EnergyMeter {
        EnergyMeter::default()
    }

    /// Adds a reading taken at `at`. The first reading only starts the meter; a reading
    /// not later than the previous one is taken as the new start without adding energy.
    pub fn record(&mut self, at: Nanos, reading: &PowerReading) {
        if let Some((then, previous)) = &self.last {
            if at > *then {
                let seconds = Nanos(at.0 - then.0).as_secs_f64();
                for rail in &reading.rails {
                    let energy = match (rail.energy, previous.rail(&rail.name)) {
                        (Some(e), _) => Some(e),
                        (None, Some(before)) => {
                            Some(Joules((before.0 + rail.power.0) / 2.0 * seconds))
                        }
                        (None, None) => None,
                    };
                    if let Some(e) = energy {
                        *self.rails.entry(rail.name.clone()).or_default() += e;
                    }
                }
                self.total += reading
                    .total_energy
                    .unwrap_or(Joules((previous.total.0 + reading.total.0) / 2.0 * seconds));
                self.elapsed = Nanos(self.elapsed.0 + (at.0 - then.0));
                self.includes_estimates |= reading.is_estimated() || previous.is_estimated();
            }
        }
        self.last = Some((at, reading.clone()));
    }

    pub fn total(&self) -> Joules {
        self.total
    }

    pub fn rail(&self, name: &str) -> Option<Joules> {
        self.rails.get(name).copied()
    }

    pub fn rails(&self) -> &BTreeMap<String, Joules> {
        &self.rails
    }

    /// Time covered by the energy counted so far.
    pub fn elapsed(&self) -> Nanos {
        self.elapsed
    }

    pub fn average_power(&self) -> Option<Watts> {
        (self.elapsed.0 > 0).then(|| Watts(self.total.0 / (self.elapsed.0 as f64 / 1e9)))
    }

    /// Whether any estimated reading went into the totals.
    pub fn includes_estimates(&self) -> bool {
        self.includes_estimates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rapl_delta_wraps_at_max_energy_range() {
        assert_eq!(energy_delta_uj(100, 250, 1000), 150);
        // 900 -> wrap at 1000 -> 50: 100 to the top, 50 after.
        assert_eq!(energy_delta_uj(900, 50, 1000), 150);
        assert_eq!(energy_delta_uj(u64::MAX - 5, 4, u64::MAX), 9);
    }

    #[test]
    fn unconnected_and_sum_channels_are_recognised() {
        assert!(is_unconnected("NC"));
        assert!(!is_unconnected("VDD_SYNC"));
        assert!(is_sum_channel("Sum of shunt voltages"));
        assert!(!is_sum_channel("VDD_SOC"));
    }
}
