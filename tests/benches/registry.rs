//! Registry costs seen by an app and by the agent:
//! - `register_and_leave`: an in-process client registers (socket, JSON, memfd, mmap)
//!   and drops its session, until the registry has freed the slot;
//! - `exit_to_slot_freed`: a registered child process is killed with SIGKILL; time from
//!   the kill to the registry's `Left` event (the goal: under 100 ms).
//!
//! cargo bench -p dnngov-tests --bench registry

use criterion::{criterion_group, criterion_main, Criterion};
use dnngov_agent::registry::{Registry, RegistryConfig, RegistryEvent};
use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
use dnngov_tests::TestApp;
use std::process::Command;
use std::time::{Duration, Instant};

fn spec() -> AppSpec {
    AppSpec {
        name: "bench".into(),
        devices: vec![Device::Cpu],
        subnets: vec![Subnet {
            id: 0,
            name: "only".into(),
            accuracy_pct: 75.0,
            latency_ms: None,
            relative_cost: None,
        }],
        target: Target {
            deadline_ms: 30.0,
            period_ms: None,
            accuracy_floor_pct: None,
            priority: 0,
        },
        default_subnet: None,
    }
}

fn wait_left(registry: &Registry) {
    loop {
        match registry.events().recv_timeout(Duration::from_secs(10)) {
            Ok(RegistryEvent::Left { .. }) => return,
            Ok(_) => continue,
            Err(e) => panic!("no Left event: {e}"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let registry = Registry::start(RegistryConfig {
        socket_path: socket.clone(),
        group: None,
        max_apps: governor_proto::MAX_APPS,
    })
    .unwrap();
    let options = Options {
        socket_path: socket.clone(),
        ..Options::default()
    };
    c.bench_function("register_and_leave", |b| {
        b.iter(|| {
            let session = Session::register(spec(), options.clone()).unwrap();
            assert!(session.is_connected());
            drop(session);
            wait_left(&registry);
        })
    });
    let mut group = c.benchmark_group("exit");
    group.sample_size(20);
    group.bench_function("exit_to_slot_freed", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut command = Command::new(env!("CARGO_BIN_EXE_dnngov-test-app"));
                command.args([socket.to_str().unwrap(), "99", "0"]);
                let mut app = TestApp::spawn(&mut command);
                assert!(app.line().starts_with("registered"));
                while !matches!(registry.events().recv().unwrap(), RegistryEvent::Joined(_)) {}
                let start = Instant::now();
                app.kill();
                wait_left(&registry);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
