//! Decision time of the system optimiser on Jetson Xavier NX-like tables (three CPU domains
//! of 20 frequencies, GPU 15, EMC 10) for 1, 2, 4 and 8 apps, in both objective modes, and
//! of a whole manager tick that has to re-plan (an app joined).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use dnngov_policy::optimiser::{optimise, Mode, OptimiserConfig};
use dnngov_policy::{Config, Manager};

#[path = "../tests/common/mod.rs"]
mod common;

fn optimiser(c: &mut Criterion) {
    let mut g = c.benchmark_group("optimise");
    for mode in [Mode::Energy, Mode::Accuracy] {
        for n in [1u32, 2, 4, 8] {
            let snap = common::snapshot(0, common::mixed_apps(n));
            let mut problem = common::problem(&snap);
            if mode == Mode::Accuracy {
                problem.power_cap = Some(dnngov_policy::Watts(12.0));
            }
            let cfg = OptimiserConfig {
                mode,
                ..OptimiserConfig::default()
            };
            let plan = optimise(&problem, &cfg);
            assert_eq!(plan.subnets.len(), n as usize, "fixture must be feasible");
            g.bench_with_input(
                BenchmarkId::new(format!("{mode:?}"), n),
                &problem,
                |b, p| b.iter(|| optimise(black_box(p), &cfg)),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("manager_step_replan");
    for n in [1u32, 2, 4, 8] {
        let mut warm = Manager::new(Config::default());
        let apps = common::mixed_apps(n);
        warm.step(&common::snapshot(0, apps[..n as usize - 1].to_vec()));
        let snap = common::snapshot(10, apps);
        g.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, s| {
            b.iter_batched(
                || warm.clone(),
                |mut m| m.step(black_box(s)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, optimiser);
criterion_main!(benches);
