//! Power sensors on the fixture trees, the estimate, and the energy meter.

use std::fs;
use std::path::Path;

use dnngov_agent::platform::fixture;
use dnngov_agent::platform::power::RailPower;
use dnngov_agent::platform::{
    EnergyMeter, Joules, Nanos, Platform, PowerReading, PowerSensor, SensorKind, Sysfs, Watts,
};

fn sensor(
    make: fn(&Path) -> std::io::Result<()>,
) -> (tempfile::TempDir, Sysfs, Option<PowerSensor>) {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path()).unwrap();
    let sysfs = Sysfs::new(dir.path());
    let power = Platform::discover(sysfs.clone()).power;
    (dir, sysfs, power)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn ina3221_rails_by_label_skip_the_sum_channel_and_total_is_vdd_in() {
    let (_dir, sysfs, sensor) = sensor(fixture::xavier_nx);
    let mut sensor = sensor.expect("INA3221 found");
    assert_eq!(sensor.kind(), SensorKind::Ina3221Hwmon);
    let r = sensor.read(&sysfs, Nanos(0)).unwrap().unwrap();
    let names: Vec<&str> = r.rails.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]);
    // 5008 mV x 1240 mA.
    assert!(close(r.rail("VDD_IN").unwrap().0, 6.20992));
    assert!(close(r.rail("VDD_SOC").unwrap().0, 2.8));
    // VDD_IN is the board input; the other rails are inside it.
    assert!(close(r.total.0, 6.20992));
    assert!(!r.is_estimated());
}

#[test]
fn unconnected_channels_are_skipped_and_chips_are_combined() {
    let (_dir, sysfs, sensor) = sensor(fixture::orin);
    let r = sensor.unwrap().read(&sysfs, Nanos(0)).unwrap().unwrap();
    let names: Vec<&str> = r.rails.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC", "VDDQ_VDD2_1V8AO"]
    );
}

#[test]
fn jetpack4_iio_rails_are_read_in_milliwatts() {
    let (_dir, sysfs, sensor) = sensor(fixture::xavier_nx_jetpack4);
    let mut sensor = sensor.unwrap();
    assert_eq!(sensor.kind(), SensorKind::JetsonIio);
    let r = sensor.read(&sysfs, Nanos(0)).unwrap().unwrap();
    assert!(close(r.rail("VDD_IN").unwrap().0, 6.21));
    assert!(close(r.rail("VDD_CPU_GPU_CV").unwrap().0, 1.906));
    assert!(close(r.total.0, 6.21));
}

#[test]
fn rapl_power_comes_from_counter_deltas_across_a_wrap() {
    let (dir, sysfs, sensor) = sensor(fixture::intel_laptop);
    let mut sensor = sensor.unwrap();
    assert_eq!(sensor.kind(), SensorKind::Rapl);
    let zones = dir.path().join("sys/class/powercap");
    let max = 262_143_328_850u64;
    let set = |zone: &str, uj: u64| {
        fs::write(zones.join(zone).join("energy_uj"), format!("{uj}\n")).unwrap()
    };
    set("intel-rapl:0", max - 1_000_000);
    set("intel-rapl:0:0", 0);
    set("intel-rapl:0:1", 0);
    set("intel-rapl:1", 5_000_000);
    assert!(
        sensor.read(&sysfs, Nanos(0)).unwrap().is_none(),
        "first read only primes"
    );
    // Package wraps: 1 J to the top, 2 J after. psys 12 J.
    set("intel-rapl:0", 2_000_000);
    set("intel-rapl:0:0", 1_500_000);
    set("intel-rapl:0:1", 500_000);
    set("intel-rapl:1", 17_000_000);
    let r = sensor
        .read(&sysfs, Nanos::from_millis(2000))
        .unwrap()
        .unwrap();
    assert!(close(r.rail("package-0").unwrap().0, 1.5), "{r:?}");
    assert!(close(r.rail("core").unwrap().0, 0.75));
    // psys covers the whole platform.
    assert!(close(r.total.0, 6.0));
    assert_eq!(r.total_energy, Some(Joules(12.0)));
}

#[test]
fn machines_without_sensors_have_none_and_the_meter_flags_estimates() {
    let (_dir, _sysfs, sensor) = sensor(fixture::generic_arm);
    assert!(sensor.is_none());
    let estimate = PowerReading {
        source: SensorKind::Estimated,
        rails: vec![RailPower {
            name: "board".into(),
            power: Watts(1.25),
            energy: None,
        }],
        total: Watts(1.25),
        total_energy: None,
    };
    assert!(estimate.is_estimated());
    let mut meter = EnergyMeter::new();
    meter.record(Nanos(0), &estimate);
    meter.record(Nanos::from_millis(1000), &estimate);
    assert!(meter.includes_estimates());
    assert!(close(meter.total().0, 1.25));
}

fn reading(rails: &[(&str, f64)], total: f64) -> PowerReading {
    PowerReading {
        source: SensorKind::Ina3221Hwmon,
        rails: rails
            .iter()
            .map(|(n, w)| RailPower {
                name: n.to_string(),
                power: Watts(*w),
                energy: None,
            })
            .collect(),
        total: Watts(total),
        total_energy: None,
    }
}

#[test]
fn energy_meter_integrates_per_rail_and_total_over_caller_time() {
    let mut meter = EnergyMeter::new();
    meter.record(
        Nanos(0),
        &reading(&[("VDD_IN", 4.0), ("VDD_SOC", 1.0)], 4.0),
    );
    assert_eq!(meter.total(), Joules(0.0));
    meter.record(
        Nanos::from_millis(500),
        &reading(&[("VDD_IN", 6.0), ("VDD_SOC", 1.0)], 6.0),
    );
    meter.record(
        Nanos::from_millis(1500),
        &reading(&[("VDD_IN", 6.0), ("VDD_SOC", 3.0)], 6.0),
    );
    // VDD_IN: (4+6)/2 x 0.5 + 6 x 1 = 8.5 J; VDD_SOC: 0.5 + 2 = 2.5 J.
    assert!(close(meter.rail("VDD_IN").unwrap().0, 8.5));
    assert!(close(meter.rail("VDD_SOC").unwrap().0, 2.5));
    assert!(close(meter.total().0, 8.5));
    assert_eq!(meter.elapsed(), Nanos::from_millis(1500));
    assert!(close(meter.average_power().unwrap().0, 8.5 / 1.5));
    assert!(!meter.includes_estimates());
    // Time that does not advance adds nothing.
    meter.record(
        Nanos::from_millis(1500),
        &reading(&[("VDD_IN", 100.0)], 100.0),
    );
    assert!(close(meter.total().0, 8.5));
}

#[test]
fn energy_meter_uses_counter_energy_as_is() {
    let counted = |e: f64| PowerReading {
        source: SensorKind::Rapl,
        rails: vec![RailPower {
            name: "package-0".into(),
            power: Watts(0.0),
            energy: Some(Joules(e)),
        }],
        total: Watts(0.0),
        total_energy: Some(Joules(e)),
    };
    let mut meter = EnergyMeter::new();
    meter.record(Nanos(0), &counted(0.0));
    meter.record(Nanos::from_millis(10), &counted(3.0));
    meter.record(Nanos::from_millis(20), &counted(4.0));
    assert!(close(meter.rail("package-0").unwrap().0, 7.0));
    assert!(close(meter.total().0, 7.0));
}

#[test]
fn no_cpufreq_machine_has_no_sensor() {
    let (_dir, _sysfs, sensor) = sensor(fixture::no_cpufreq);
    assert!(sensor.is_none());
}
