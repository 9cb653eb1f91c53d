//! An app for the soak test: registers, runs inferences (a millisecond of work each),
//! changes its target halfway, and exits; with INFERENCES 0 it runs until killed.
//!
//! Usage: dnngov-churn-app SOCKET NAME INFERENCES
//! Prints `registered APP_ID SUBNET` once registered and, when it ends by itself,
//! `done INFERENCES MISSES`.

use std::io::Write;
use std::time::{Duration, Instant};

use dnngov_client::{AppSpec, Device, Options, Subnet, Target};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: dnngov-churn-app SOCKET NAME INFERENCES");
        std::process::exit(2);
    }
    let inferences: u64 = args[3].parse().expect("INFERENCES is a number");
    let options = Options {
        socket_path: args[1].clone().into(),
        ..Options::default()
    };
    let subnet = |id, name: &str, accuracy_pct, latency_ms| Subnet {
        id,
        name: name.into(),
        accuracy_pct,
        latency_ms: Some(latency_ms),
        relative_cost: None,
    };
    let target = |deadline_ms| Target {
        deadline_ms,
        period_ms: Some(10.0),
        accuracy_floor_pct: None,
        priority: 0,
    };
    let spec = AppSpec {
        name: args[2].clone(),
        devices: vec![Device::Cpu],
        subnets: vec![subnet(0, "small", 70.0, 1.0), subnet(1, "large", 75.0, 2.0)],
        target: target(20.0),
        default_subnet: None,
    };
    let session = dnngov_tests::register_and_announce(spec, options);
    let mut done = 0u64;
    while inferences == 0 || done < inferences {
        if done == inferences / 2 && inferences > 0 {
            // A target change mid-run, as an app whose requirements move does.
            let _ = session.set_target(target(15.0));
        }
        let subnet = session.current_subnet();
        session.ack_subnet(subnet);
        session.begin(Duration::from_millis(20));
        let until = Instant::now() + Duration::from_millis(1);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        session.end();
        done += 1;
        std::thread::sleep(Duration::from_millis(4));
    }
    let (finished, misses) = session.counters();
    let mut out = std::io::stdout();
    writeln!(out, "done {finished} {misses}").unwrap();
    out.flush().unwrap();
}
