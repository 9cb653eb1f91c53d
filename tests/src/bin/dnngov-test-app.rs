//! A small app for end-to-end tests: registers through the Rust client, waits for the
//! agent to ask for a given sub-network, acknowledges it, runs a few inferences, and
//! waits for its stdin to close before exiting.
//!
//! Usage: dnngov-test-app SOCKET WANTED_SUBNET INFERENCES [hang|go]
//! Prints one line per step: `registered APP_ID SUBNET`, `switched SUBNET`,
//! `done INFERENCES MISSES` (or `timeout SUBNET`). With `hang`, it begins an inference
//! right after registering, prints `in-flight`, and never ends it (for tests that kill
//! an app mid-inference). With `go`, it runs its inferences only once a line arrives on
//! stdin (for tests that wait for the agent to probe it first).

use dnngov_client::{AppSpec, Device, Options, Subnet, Target};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && args.len() != 5 {
        eprintln!("usage: dnngov-test-app SOCKET WANTED_SUBNET INFERENCES [hang|go]");
        std::process::exit(2);
    }
    let wanted: u32 = args[2].parse().expect("WANTED_SUBNET is a number");
    let inferences: u32 = args[3].parse().expect("INFERENCES is a number");
    let options = Options {
        socket_path: args[1].clone().into(),
        ..Options::default()
    };
    let subnet = |id, name: &str, accuracy_pct| Subnet {
        id,
        name: name.into(),
        accuracy_pct,
        latency_ms: Some(5.0),
        relative_cost: None,
    };
    let spec = AppSpec {
        name: "rust-test-app".into(),
        devices: vec![Device::Cpu],
        subnets: vec![
            subnet(10, "small", 70.0),
            subnet(11, "medium", 72.0),
            subnet(12, "large", 75.0),
        ],
        target: Target {
            deadline_ms: 50.0,
            period_ms: None,
            accuracy_floor_pct: None,
            priority: 1,
        },
        default_subnet: None,
    };
    let session = dnngov_tests::register_and_announce(spec, options);
    let mut out = std::io::stdout();
    if args.get(4).map(String::as_str) == Some("hang") {
        session.begin(Duration::from_millis(50));
        writeln!(out, "in-flight").unwrap();
        out.flush().unwrap();
        loop {
            std::thread::park();
        }
    }
    let start = Instant::now();
    while session.current_subnet() != wanted {
        if start.elapsed() > Duration::from_secs(10) {
            writeln!(out, "timeout {}", session.current_subnet()).unwrap();
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    session.ack_subnet(wanted);
    writeln!(out, "switched {wanted}").unwrap();
    out.flush().unwrap();
    if args.get(4).map(String::as_str) == Some("go") {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).unwrap();
    }
    for _ in 0..inferences {
        session.begin(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(1));
        session.end();
    }
    let (done, misses) = session.counters();
    writeln!(out, "done {done} {misses}").unwrap();
    out.flush().unwrap();
    // Stay registered until the test closes our stdin.
    for _ in std::io::stdin().lock().lines() {}
}
