//! Board descriptions (`platforms/*.toml`): frequency tables, voltage-frequency curves and
//! a power model. The simulator uses them as its ground truth; the agent reads the same
//! file on a board to seed the policy's power model ([`Platform::declared_power`]) and to
//! estimate power where the board has no sensor. The decisions never read files: loading
//! a description is the one piece of I/O in this crate, for its callers.

use std::path::Path;

use crate::{DomainKind, Hz, Watts};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Highest frequency a table may list, in kHz (100 GHz): beyond any board, and far from
/// where a frequency in Hz overflows.
pub const MAX_FREQ_KHZ: u64 = 100_000_000;
/// Highest supply voltage a curve may give, in volts.
pub const MAX_VOLTS: f64 = 5.0;
/// Largest effective capacitance of one core or device, in nF.
pub const MAX_CEFF_NF: f64 = 1_000.0;
/// Largest power figure (base power, leakage), in watts.
pub const MAX_WATTS: f64 = 1_000.0;

/// `value` must be a finite number from 0 to `max`; `what` names it in the error.
fn in_range(what: &str, value: f64, max: f64) -> Result<()> {
    if !(value.is_finite() && (0.0..=max).contains(&value)) {
        bail!("{what} is {value:?}; it must be a number from 0 to {max}");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cpu,
    Gpu,
    Memory,
}

impl Kind {
    pub fn policy(self) -> DomainKind {
        match self {
            Kind::Cpu => DomainKind::Cpu,
            Kind::Gpu => DomainKind::Gpu,
            Kind::Memory => DomainKind::Memory,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    pub name: String,
    pub kind: Kind,
    pub id: u32,
    /// Where the domain's controls live on the board (cpufreq policy, devfreq device, clock).
    #[serde(default)]
    pub sysfs: Option<String>,
    #[serde(default)]
    pub cpus: Vec<u32>,
    pub freqs_khz: Vec<u64>,
    /// Table points not read from a board but interpolated between known ones.
    #[serde(default)]
    pub interpolated_khz: Vec<u64>,
    /// Table points outside the known range, extrapolated.
    #[serde(default)]
    pub extrapolated_khz: Vec<u64>,
    /// `[kHz, volts]`, ascending.
    pub voltage: Vec<(u64, f64)>,
    pub ceff_nf: f64,
    pub idle_activity: f64,
    pub leakage_w: f64,
    pub transition_us: u64,
    /// Whether a governor can read the device's busy time (GPU load, memory activity).
    /// CPU domains always report it, per CPU.
    #[serde(default = "yes")]
    pub busy_telemetry: bool,
}

fn yes() -> bool {
    true
}

/// The board's power reading on a real board.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSensor {
    pub sysfs: String,
    pub rail: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub name: String,
    pub base_power_w: f64,
    pub sensor_noise: f64,
    #[serde(default)]
    pub power_sensor: Option<PowerSensor>,
    #[serde(rename = "domain")]
    pub domains: Vec<DomainSpec>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Platform> {
        let p: Platform = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        p.validate()?;
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<Platform> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading platform {}", path.display()))?;
        Platform::parse(&text).with_context(|| format!("parsing platform {}", path.display()))
    }

    fn validate(&self) -> Result<()> {
        in_range("base_power_w", self.base_power_w, MAX_WATTS)?;
        in_range("sensor_noise", self.sensor_noise, 1.0)?;
        if self.domains.is_empty() {
            bail!("platform {} has no [[domain]]", self.name);
        }
        let mut cpus = Vec::new();
        for d in &self.domains {
            if d.freqs_khz.is_empty() || d.freqs_khz.windows(2).any(|w| w[0] >= w[1]) {
                bail!(
                    "domain {}: freqs_khz must be strictly ascending and not empty",
                    d.name
                );
            }
            if d.voltage.is_empty() || d.voltage.windows(2).any(|w| w[0].0 >= w[1].0) {
                bail!("domain {}: voltage points must be ascending in kHz", d.name);
            }
            for f in d.interpolated_khz.iter().chain(&d.extrapolated_khz) {
                if !d.freqs_khz.contains(f) {
                    bail!(
                        "domain {}: marked point {f} kHz is not in freqs_khz",
                        d.name
                    );
                }
            }
            if (d.kind == Kind::Cpu) == d.cpus.is_empty() {
                bail!("domain {}: cpus is required for cpu domains only", d.name);
            }
            if let Some(f) = d
                .freqs_khz
                .iter()
                .find(|f| !(1..=MAX_FREQ_KHZ).contains(*f))
            {
                bail!(
                    "domain {}: frequency {f} kHz is outside 1..={MAX_FREQ_KHZ} kHz",
                    d.name
                );
            }
            for (khz, volts) in &d.voltage {
                if !(volts.is_finite() && *volts > 0.0 && *volts <= MAX_VOLTS) {
                    bail!(
                        "domain {}: voltage at {khz} kHz is {volts:?}; it must be above 0 and at most {MAX_VOLTS} V",
                        d.name
                    );
                }
            }
            for (what, value, max) in [
                ("ceff_nf", d.ceff_nf, MAX_CEFF_NF),
                ("leakage_w", d.leakage_w, MAX_WATTS),
                ("idle_activity", d.idle_activity, 1.0),
            ] {
                in_range(&format!("domain {}: {what}", d.name), value, max)?;
            }
            if self.domains.iter().filter(|o| o.id == d.id).count() > 1 {
                bail!("domain id {} is used twice", d.id);
            }
            cpus.extend(d.cpus.iter().copied());
        }
        let n = cpus.len();
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.len() != n {
            bail!("a CPU belongs to two domains");
        }
        for kind in [Kind::Gpu, Kind::Memory] {
            if self.domains.iter().filter(|d| d.kind == kind).count() > 1 {
                bail!("at most one {kind:?} domain is modelled");
            }
        }
        Ok(())
    }

    pub fn cpu_count(&self) -> usize {
        self.domains.iter().map(|d| d.cpus.len()).sum()
    }

    /// The policy's seed of its power model: what a platform file would declare to the
    /// agent. Derived from the same constants as the ground truth, rounded, because the
    /// agent reads the same platform file on a board.
    pub fn declared_power(&self) -> crate::PlatformPower {
        let static_w = self.base_power_w + self.domains.iter().map(|d| d.leakage_w).sum::<f64>();
        crate::PlatformPower {
            static_power: Watts(static_w),
            domains: self
                .domains
                .iter()
                .map(|d| {
                    let fmax = d.max_hz();
                    let cores = d.cpus.len().max(1) as f64;
                    let dynamic = d.dynamic_w(fmax, 1.0) * cores;
                    crate::DomainPower {
                        domain: d.id,
                        busy_at_max: Watts(dynamic),
                        idle_at_max: Watts(d.dynamic_w(fmax, d.idle_activity) * cores),
                        voltage: crate::model::VoltageCurve::relative(&d.voltage, fmax.khz()),
                    }
                })
                .collect(),
        }
    }
}

impl DomainSpec {
    pub fn table(&self) -> Vec<Hz> {
        self.freqs_khz.iter().map(|k| Hz::from_khz(*k)).collect()
    }

    pub fn max_hz(&self) -> Hz {
        Hz::from_khz(*self.freqs_khz.last().expect("validated not empty"))
    }

    pub fn min_hz(&self) -> Hz {
        Hz::from_khz(self.freqs_khz[0])
    }

    /// Supply voltage at `f`, linear between the curve's points, flat outside them.
    pub fn volts(&self, f: Hz) -> f64 {
        let k = f.khz();
        let pts = &self.voltage;
        if k <= pts[0].0 {
            return pts[0].1;
        }
        for w in pts.windows(2) {
            let ((k0, v0), (k1, v1)) = (w[0], w[1]);
            if k <= k1 {
                return v0 + (v1 - v0) * (k - k0) as f64 / (k1 - k0) as f64;
            }
        }
        pts[pts.len() - 1].1
    }

    /// Dynamic power of one core (or the whole device) at `f` with `activity` in 0..=1.
    pub fn dynamic_w(&self, f: Hz, activity: f64) -> f64 {
        let v = self.volts(f);
        self.ceff_nf * 1e-9 * v * v * f.as_f64() * activity
    }

    /// Leakage of the domain at `f`'s voltage; zero when every CPU of it is offline.
    pub fn leakage(&self, f: Hz) -> f64 {
        let vmax = self.volts(self.max_hz());
        self.leakage_w * self.volts(f) / vmax
    }

    /// Domain power with per-core activities (devices: one entry), including the clock
    /// tree of idle cores and leakage. Offline cores are power-gated and absent here.
    pub fn power_w(&self, f: Hz, activities: &[f64]) -> f64 {
        let dynamic: f64 = activities
            .iter()
            .map(|a| {
                let a = a.clamp(0.0, 1.0);
                self.dynamic_w(f, a + (1.0 - a) * self.idle_activity)
            })
            .sum();
        if activities.is_empty() {
            0.0
        } else {
            dynamic + self.leakage(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xavier() -> Platform {
        Platform::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml"),
        )
        .unwrap()
    }

    #[test]
    fn xavier_tables_hold_the_known_points() {
        let p = xavier();
        let cpu = &p.domains[0];
        for k in [
            1190400, 1420800, 1497600, 1651200, 1728000, 1804800, 1881600, 1907200,
        ] {
            assert!(cpu.freqs_khz.contains(&k), "{k}");
            assert!(!cpu.interpolated_khz.contains(&k));
        }
        let gpu = p.domains.iter().find(|d| d.kind == Kind::Gpu).unwrap();
        assert_eq!(gpu.freqs_khz.len(), 15);
        assert_eq!(gpu.max_hz(), Hz(1_109_250_000));
        assert_eq!(p.cpu_count(), 6);
    }

    #[test]
    fn voltage_is_interpolated_between_points() {
        let p = xavier();
        let cpu = &p.domains[0];
        assert_eq!(cpu.volts(Hz::from_khz(115200)), 0.60);
        assert_eq!(cpu.volts(Hz::from_khz(1907200)), 1.00);
        let mid = cpu.volts(Hz::from_khz((1190400 + 1907200) / 2));
        assert!((mid - 0.86).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn generic_board_parses() {
        Platform::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/generic-arm.toml"),
        )
        .unwrap();
    }

    fn xavier_text() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml"),
        )
        .unwrap()
    }

    /// Found by the `platform` fuzz target: a voltage of 0 at the top of a curve was
    /// accepted, and leakage (divided by the top voltage) came out infinite or NaN; NaN,
    /// infinite and absurd figures were accepted too.
    #[test]
    fn figures_that_break_the_power_model_are_refused_by_name() {
        let text = xavier_text();
        for (from, to, named) in [
            (
                "[1109250, 1.00]]",
                "[1109250, 0.00]]",
                "voltage at 1109250 kHz is 0.0",
            ),
            ("ceff_nf = 0.95", "ceff_nf = nan", "ceff_nf is NaN"),
            ("ceff_nf = 0.95", "ceff_nf = 1e308", "ceff_nf is 1e308"),
            ("leakage_w = 0.2\n", "leakage_w = inf\n", "leakage_w is inf"),
            (
                "idle_activity = 0.10",
                "idle_activity = 1.5",
                "idle_activity is 1.5",
            ),
            (
                "base_power_w = 2.2",
                "base_power_w = -inf",
                "base_power_w is -inf",
            ),
            (
                "sensor_noise = 0.02",
                "sensor_noise = nan",
                "sensor_noise is NaN",
            ),
            (
                "1058250, 1109250]",
                "1058250, 9223372036854775807]",
                "frequency 9223372036854775807 kHz is outside",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let err = format!("{:#}", Platform::parse(&bad).unwrap_err());
            assert!(err.contains(named), "{to}: {err}");
        }
        // What is left is a model of finite, non-negative power.
        for d in xavier().domains {
            for f in d.table() {
                let w = d.power_w(f, &[0.5]);
                assert!(w.is_finite() && w >= 0.0, "{}: {w}", d.name);
            }
        }
    }

    #[test]
    fn unknown_platform_key_is_rejected_by_name() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml"),
        )
        .unwrap()
        .replace(
            "sensor_noise = 0.02",
            "sensor_noise = 0.02\nsensor_nosie = 1",
        );
        let err = format!("{:#}", Platform::parse(&text).unwrap_err());
        assert!(err.contains("sensor_nosie"), "{err}");
    }
}
