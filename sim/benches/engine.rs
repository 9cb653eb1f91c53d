//! Simulation speed: 10 virtual seconds of S1 per iteration, and the whole 120 s scenario
//! with dnngov (whose first seconds, while its models learn, cost the policy the most). The
//! real-time factor is the virtual time divided by the time per iteration (the goal is at
//! least 1000x).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use dnngov_policy::GovernorKind;
use dnngov_sim::governors::Which;
use dnngov_sim::{run, Platform, Scenario};

fn engine(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/s1-one-model.toml");
    let mut scn = Scenario::load(&path).expect("shipped scenario");
    scn.duration_s = 10.0;
    let plat = Platform::load(&scn.platform_path()).expect("shipped platform");
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    for which in [Which::Kernel(GovernorKind::Schedutil), Which::Dnngov] {
        group.bench_function(format!("s1_10s_{}", which.name()), |b| {
            b.iter(|| {
                let mut g = which.build(&scn, &plat).expect("builds");
                run(&scn, &plat, g.as_mut(), 1).expect("runs")
            })
        });
    }
    let mut full = Scenario::load(&path).expect("shipped scenario");
    full.duration_s = 120.0;
    group.bench_function("s1_120s_dnngov", |b| {
        b.iter(|| {
            let mut g = Which::Dnngov.build(&full, &plat).expect("builds");
            run(&full, &plat, g.as_mut(), 1).expect("runs")
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
