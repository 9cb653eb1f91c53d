//! Physical units of the platform layer and the one place where raw sysfs numbers become
//! typed values: cpufreq speaks kHz, devfreq and the bpmp clocks speak Hz, hwmon speaks mV
//! and mA, iio speaks mW, powercap speaks uJ. Nothing outside this module multiplies by 1000.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign};

/// A clock frequency. Hz is the common denominator of every interface, so it is the one
/// stored; kHz exists only at the cpufreq boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hz(pub u64);

impl Hz {
    pub const fn from_khz(khz: u64) -> Hz {
        Hz(khz * 1000)
    }

    pub const fn from_mhz(mhz: u64) -> Hz {
        Hz(mhz * 1_000_000)
    }

    /// Truncates: cpufreq tables are whole kHz, so nothing is lost for their values.
    pub const fn as_khz(self) -> u64 {
        self.0 / 1000
    }

    pub fn as_mhz_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl fmt::Display for Hz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} MHz", self.as_mhz_f64())
    }
}

/// The unit a frequency file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreqUnit {
    /// cpufreq (`scaling_*_freq`, `scaling_setspeed`, tables).
    KHz,
    /// devfreq and the bpmp debugfs clocks.
    Hz,
}

impl FreqUnit {
    /// Parses one number as it appears in a file of this unit.
    pub fn parse(self, text: &str) -> Option<Hz> {
        let value: u64 = text.trim().parse().ok()?;
        Some(match self {
            FreqUnit::KHz => Hz::from_khz(value),
            FreqUnit::Hz => Hz(value),
        })
    }

    /// Parses a whitespace-separated frequency table, sorted ascending and deduplicated
    /// (drivers list it in either order).
    pub fn parse_table(self, text: &str) -> Option<Vec<Hz>> {
        let mut table = text
            .split_whitespace()
            .map(|word| self.parse(word))
            .collect::<Option<Vec<Hz>>>()?;
        table.sort_unstable();
        table.dedup();
        Some(table)
    }

    /// The text written to a file of this unit.
    pub fn format(self, freq: Hz) -> String {
        match self {
            FreqUnit::KHz => freq.as_khz().to_string(),
            FreqUnit::Hz => freq.0.to_string(),
        }
    }
}

/// A duration or a point on the caller's monotonic clock, in nanoseconds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms * 1_000_000)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

/// Electrical power.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Watts(pub f64);

impl Watts {
    pub fn from_milliwatts(mw: f64) -> Watts {
        Watts(mw / 1e3)
    }

    /// hwmon gives bus voltage in mV and current in mA.
    pub fn from_millivolts_milliamps(mv: f64, ma: f64) -> Watts {
        Watts(mv * ma / 1e6)
    }

    pub fn as_milliwatts(self) -> f64 {
        self.0 * 1e3
    }
}

impl Add for Watts {
    type Output = Watts;
    fn add(self, rhs: Watts) -> Watts {
        Watts(self.0 + rhs.0)
    }
}

impl AddAssign for Watts {
    fn add_assign(&mut self, rhs: Watts) {
        self.0 += rhs.0;
    }
}

impl fmt::Display for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} W", self.0)
    }
}

/// Energy.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Joules(pub f64);

impl Joules {
    /// powercap counters are in uJ.
    pub fn from_microjoules(uj: u64) -> Joules {
        Joules(uj as f64 / 1e6)
    }
}

impl Add for Joules {
    type Output = Joules;
    fn add(self, rhs: Joules) -> Joules {
        Joules(self.0 + rhs.0)
    }
}

impl AddAssign for Joules {
    fn add_assign(&mut self, rhs: Joules) {
        self.0 += rhs.0;
    }
}

impl fmt::Display for Joules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} J", self.0)
    }
}

/// A busy fraction 0.0..=1.0 from a per-mille reading (the Jetson GPU load file), clamped
/// because the file is not guaranteed to stay within 1000.
pub fn fraction_from_per_mille(per_mille: u64) -> f64 {
    per_mille.min(1000) as f64 / 1000.0
}

/// Temperature as thermal zones report it (millidegrees Celsius).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MilliCelsius(pub i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpufreq_khz_round_trips_through_hz() {
        let f = FreqUnit::KHz.parse("1190400\n").unwrap();
        assert_eq!(f, Hz(1_190_400_000));
        assert_eq!(FreqUnit::KHz.format(f), "1190400");
        assert_eq!(FreqUnit::Hz.format(f), "1190400000");
    }

    #[test]
    fn tables_are_sorted_and_reject_garbage() {
        let t = FreqUnit::Hz.parse_table("300 100 200 100\n").unwrap();
        assert_eq!(t, vec![Hz(100), Hz(200), Hz(300)]);
        assert!(FreqUnit::Hz.parse_table("100 fast").is_none());
        assert_eq!(FreqUnit::Hz.parse_table(""), Some(vec![]));
    }

    #[test]
    fn hwmon_power_is_millivolts_times_milliamps() {
        let p = Watts::from_millivolts_milliamps(5000.0, 1200.0);
        assert!((p.0 - 6.0).abs() < 1e-9);
        assert!((Watts::from_milliwatts(2500.0).0 - 2.5).abs() < 1e-9);
        assert!((Joules::from_microjoules(3_000_000).0 - 3.0).abs() < 1e-9);
    }
}
