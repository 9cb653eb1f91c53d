//! Board descriptions (`platforms/*.toml`, `Platform::parse`), which the agent loads
//! with `--platform` and the simulator builds its board from.
//!
//! Checks: no panic, neither in parsing nor in the power model over an accepted board
//! (every table frequency, idle and busy); an accepted board's figures are finite and
//! its tables ascending, so every power it yields is a finite non-negative number.
//! (`Platform` has no serialiser, so no round trip.)
#![no_main]

use dnngov_policy::platform::Platform;
use libfuzzer_sys::fuzz_target;

fn finite_non_negative(what: &str, value: f64) {
    assert!(value.is_finite() && value >= 0.0, "{what} is {value}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(platform) = Platform::parse(text) else {
        return;
    };
    assert!(!platform.domains.is_empty());
    finite_non_negative("base_power_w", platform.base_power_w);
    finite_non_negative("sensor_noise", platform.sensor_noise);
    for d in &platform.domains {
        let table = d.table();
        assert!(table.windows(2).all(|w| w[0] < w[1]));
        assert!(d.min_hz() <= d.max_hz());
        let cores = vec![0.5; d.cpus.len().max(1)];
        for f in table {
            finite_non_negative("volts", d.volts(f));
            finite_non_negative("idle power", d.power_w(f, &[0.0]));
            finite_non_negative("busy power", d.power_w(f, &cores));
        }
    }
    let declared = platform.declared_power();
    finite_non_negative("static power", declared.static_power.0);
    for d in &declared.domains {
        finite_non_negative("busy power at max", d.busy_at_max.0);
        finite_non_negative("idle power at max", d.idle_at_max.0);
    }
    let _ = platform.cpu_count();
});
