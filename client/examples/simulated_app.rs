//! A simulated DNN app: the six-level Dynamic-OFA library of the Jetson Xavier NX
//! (accuracy and latency at full clocks), one inference per frame at a fixed rate, each
//! "inference" a sleep of its sub-network's latency. It switches when the agent asks,
//! acknowledges, and prints a line every few seconds.
//!
//! cargo run -p dnngov-client --example simulated_app -- [NAME] [SECONDS] [FPS] [DEADLINE_MS]

use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
use std::time::{Duration, Instant};

/// (top-1 %, latency ms at full clocks) of Dynamic-OFA's six-level library on the
/// Jetson Xavier NX GPU, levels 0..=5.
const LIBRARY: [(f64, f64); 6] = [
    (74.20, 41.16),
    (74.97, 45.42),
    (76.13, 49.44),
    (77.54, 51.08),
    (78.35, 56.75),
    (79.03, 61.73),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "simulated-app".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let fps: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(15.0);
    let deadline_ms: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let subnets = LIBRARY
        .iter()
        .enumerate()
        .map(|(level, &(accuracy_pct, latency_ms))| Subnet {
            id: level as u32,
            name: format!("dofa-{level}"),
            accuracy_pct,
            latency_ms: Some(latency_ms),
            relative_cost: None,
        })
        .collect();
    let spec = AppSpec {
        name: name.clone(),
        devices: vec![Device::Gpu],
        subnets,
        target: Target {
            deadline_ms,
            period_ms: Some(1000.0 / fps),
            accuracy_floor_pct: Some(76.0),
            priority: 0,
        },
        default_subnet: None,
    };
    let session = match Session::register(spec, Options::default()) {
        Ok(session) => session,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "{name}: {} (app id {}), running sub-network {}",
        if session.is_connected() {
            "registered with dnngovd"
        } else {
            "no agent, running standalone"
        },
        session.app_id(),
        session.current_subnet()
    );
    let period = Duration::from_secs_f64(1.0 / fps);
    let deadline = Duration::from_secs_f64(deadline_ms / 1000.0);
    let start = Instant::now();
    let mut next_frame = start;
    let mut next_report = start + Duration::from_secs(2);
    let mut running = u32::MAX;
    while start.elapsed() < Duration::from_secs(seconds) {
        let wanted = session.current_subnet();
        if wanted != running {
            // A weight-shared super-network switches by choosing which weights to use.
            running = wanted;
            session.ack_subnet(running);
        }
        session.begin(deadline);
        std::thread::sleep(Duration::from_secs_f64(
            LIBRARY[running as usize % LIBRARY.len()].1 / 1000.0,
        ));
        session.end();
        if Instant::now() >= next_report {
            let (done, misses) = session.counters();
            println!(
                "{name}: sub-network {running} ({:.2} %), {done} inferences, {misses} missed, {}",
                LIBRARY[running as usize % LIBRARY.len()].0,
                if session.is_connected() {
                    "governed"
                } else {
                    "standalone"
                }
            );
            next_report += Duration::from_secs(2);
        }
        next_frame += period;
        if let Some(wait) = next_frame.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next_frame = Instant::now();
        }
    }
}
