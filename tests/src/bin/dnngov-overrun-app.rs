//! An app for the overrun end-to-end test: registers through the Rust client (CPU and
//! GPU, a deadline of DEADLINE_MS at a period of the same length), then runs one short
//! inference (a 5 ms sleep) per period, acknowledging each sub-network the agent asks for,
//! until its stdin closes. On the stdin line `hold` it begins an inference at once and
//! keeps it open until the line `release`: an inference in flight that overruns its
//! prediction for as long as the test wants.
//!
//! Usage: dnngov-overrun-app SOCKET DEADLINE_MS
//! Prints `registered APP_ID SUBNET`, then `holding` once the held inference has begun and
//! `released LATENCY_MS` once it has ended.

use dnngov_client::{AppSpec, Device, Options, Subnet, Target};
use std::io::{BufRead, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What a normal inference takes: well within its deadline at any clocks.
const WORK: Duration = Duration::from_millis(5);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: dnngov-overrun-app SOCKET DEADLINE_MS");
        std::process::exit(2);
    }
    let deadline_ms: f64 = args[2].parse().expect("DEADLINE_MS is a number");
    let deadline = Duration::from_secs_f64(deadline_ms / 1e3);
    let period = deadline;
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
    let spec = AppSpec {
        name: "overrun-app".into(),
        devices: vec![Device::Cpu, Device::Gpu],
        subnets: vec![subnet(0, "small", 70.0, 4.0), subnet(1, "large", 75.0, 6.0)],
        target: Target {
            deadline_ms,
            period_ms: Some(deadline_ms),
            accuracy_floor_pct: None,
            priority: 0,
        },
        default_subnet: None,
    };
    let session = dnngov_tests::register_and_announce(spec, options);
    let mut out = std::io::stdout();

    // The test's commands, one a line; the channel closes with stdin.
    let (tx, commands) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line.trim().to_string()).is_err() {
                return;
            }
        }
    });

    let mut next_frame = Instant::now();
    loop {
        // Wait for the next frame, or a command.
        let hold = match commands.recv_timeout(next_frame.saturating_duration_since(Instant::now()))
        {
            Ok(command) if command == "hold" => true,
            Ok(command) => {
                eprintln!("dnngov-overrun-app: unknown command {command:?}");
                std::process::exit(2);
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        session.ack_subnet(session.current_subnet());
        session.begin(deadline);
        if hold {
            writeln!(out, "holding").unwrap();
            out.flush().unwrap();
            match commands.recv() {
                Ok(command) if command == "release" => {}
                Ok(command) => {
                    eprintln!("dnngov-overrun-app: expected release, got {command:?}");
                    std::process::exit(2);
                }
                Err(_) => return,
            }
        } else {
            std::thread::sleep(WORK);
        }
        let latency = session.end();
        if hold {
            writeln!(out, "released {:.1}", latency.as_secs_f64() * 1e3).unwrap();
            out.flush().unwrap();
        }
        next_frame = (next_frame + period).max(Instant::now());
    }
}
