//! Cost of the calls an inference loop makes: `current_subnet()` and a `begin`/`end`
//! pair (with the marker calls the eBPF uprobes attach to; no probe attached here), and
//! `end` alone without and with the per-inference trace (`DNNGOV_TRACE_DIR`).
//!
//! cargo bench -p dnngov-client --bench markers
//!
//! The traced benchmarks append to a file in a temporary folder, removed at the end
//! (about 50 bytes per iteration: some hundreds of MB for a default run).
//!
//! The session runs standalone (no agent): the page is a private mapping at a fixed
//! address, and the agent's page is mapped over the same address when it connects, so
//! the code measured is the same in both states.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};
use std::path::PathBuf;
use std::time::Duration;

fn standalone_session(trace_dir: Option<PathBuf>) -> Session {
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
        trace_dir,
        ..Options::default()
    };
    Session::register(spec, options).expect("a valid spec")
}

fn bench(c: &mut Criterion) {
    let session = standalone_session(None);
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
    // `end` again after the same `begin`: each call is a whole `end`, record included.
    session.begin(deadline);
    c.bench_function("end", |b| b.iter(|| black_box(black_box(&session).end())));

    let dir = tempfile::tempdir().expect("a temporary folder");
    let traced = standalone_session(Some(dir.path().to_path_buf()));
    assert!(traced.trace_path().is_some(), "the trace file opens");
    traced.begin(deadline);
    c.bench_function("end_traced", |b| {
        b.iter(|| black_box(black_box(&traced).end()))
    });
    c.bench_function("begin_end_pair_traced", |b| {
        b.iter(|| {
            black_box(&traced).begin(deadline);
            black_box(black_box(&traced).end())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
