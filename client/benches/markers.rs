//! Cost of the calls an inference loop makes: `current_subnet()` and a `begin`/`end`
//! pair (with the marker calls the eBPF uprobes attach to; no probe attached here).
//!
//! cargo bench -p dnngov-client --bench markers
//!
//! The session runs standalone (no agent): the page is a private mapping at a fixed
//! address, and the agent's page is mapped over the same address when it connects, so
//! the code measured is the same in both states.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
use std::time::Duration;

fn session() -> Session {
    let spec = AppSpec {
        name: "bench".into(),
        devices: vec![Device::Gpu],
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
    };
    let options = Options {
        socket_path: std::env::temp_dir().join("dnngov-bench-no-agent.sock"),
        ..Options::default()
    };
    Session::register(spec, options).expect("a valid spec")
}

fn bench(c: &mut Criterion) {
    let session = session();
    c.bench_function("current_subnet", |b| {
        b.iter(|| black_box(black_box(&session).current_subnet()))
    });
    let deadline = Duration::from_millis(30);
    c.bench_function("begin_end_pair", |b| {
        b.iter(|| {
            black_box(&session).begin(deadline);
            black_box(black_box(&session).end())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
