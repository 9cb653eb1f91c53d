//! Decision time of the system optimiser on Jetson Xavier NX-like tables (three CPU domains
//! of 20 frequencies, GPU 15, EMC 10) for 1, 2, 4 and 8 apps, in both objective modes, of a
//! whole manager tick that has to re-plan (an app joined; also under a power cap), and of a
//! steady-state tick (two apps with a plan in force, no optimiser run), the cost paid every
//! 10 ms.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use dnngov_policy::optimiser::{optimise, Mode, OptimiserConfig};
use dnngov_policy::{Config, Manager, Nanos, Snapshot, Watts};

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

    replans(c, "manager_step_replan", &[1, 2, 4, 8], None);
    // The same under a power cap with room to spare: a re-plan also searches without the
    // GPU floor, to see whether the cap needs it lifted (`Manager::problem_under_cap`).
    replans(c, "manager_step_replan_capped", &[1, 4], Some(Watts(20.0)));

    let mut g = c.benchmark_group("manager_step_tick");
    let (mut m, mut tick) = steady_state(2);
    g.bench_function(BenchmarkId::from_parameter(2), |b| {
        b.iter(|| {
            // The next tick: 10 ms later, each CPU busy for half of it, nothing finished.
            tick.now = Nanos(tick.now.0 + 10_000_000);
            for c in &mut tick.cpus {
                c.busy = Nanos(c.busy.0 + 5_000_000);
            }
            let d = m.step(black_box(&tick));
            assert!(!d.optimised, "re-planned at {:?}", tick.now);
            d
        })
    });
    g.finish();
}

/// One `Manager::step` that must re-plan because the last of `n` apps has just joined,
/// under `cap` if given.
fn replans(c: &mut Criterion, name: &str, sizes: &[u32], cap: Option<Watts>) {
    let mut g = c.benchmark_group(name);
    let snapshot = |ms: u64, apps: Vec<dnngov_policy::AppState>| {
        let mut s = common::snapshot(ms, apps);
        s.caps.power = cap;
        s
    };
    for &n in sizes {
        let mut warm = Manager::new(Config::default());
        let apps = common::mixed_apps(n);
        warm.step(&snapshot(0, apps[..n as usize - 1].to_vec()));
        let snap = snapshot(10, apps);
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

/// A manager that has run `n` apps for 2 s of 10 ms ticks (each app finishing an inference
/// every 100 ms, 1.05 times its declared latency, on the cheapest sub-network meeting the
/// 74 % floor), and its last snapshot with no inference finished. Periodic re-plans are
/// off (`reoptimise_every` at its maximum), so that every benched tick is one without an
/// optimiser run; everything else is the default configuration.
fn steady_state(n: u32) -> (Manager, Snapshot) {
    let cfg = Config {
        reoptimise_every: Nanos(u64::MAX),
        ..Config::default()
    };
    let mut m = Manager::new(cfg);
    let apps = common::mixed_apps(n);
    let tick = |ms: u64| {
        let mut s = common::snapshot(ms, apps.clone());
        s.power = Some(Watts(6.0));
        for (i, a) in s.apps.iter_mut().enumerate() {
            if ms > 0 && (ms + 30 * i as u64).is_multiple_of(100) {
                let subnet = m_subnet(&a.library);
                let lat = a.library[subnet as usize]
                    .latency_full
                    .unwrap()
                    .as_millis_f64();
                a.finished = vec![common::inference(ms, lat * 1.05, subnet)];
            }
        }
        s
    };
    for ms in (0..=2000).step_by(10) {
        m.step(&tick(ms));
    }
    let mut last = tick(2000);
    for a in &mut last.apps {
        a.finished.clear();
    }
    (m, last)
}

/// The sub-network the apps report: the cheapest one meeting the fixture's 74 % floor.
fn m_subnet(lib: &[dnngov_policy::SubNetwork]) -> u32 {
    lib.iter().position(|s| s.accuracy >= 74.0).unwrap_or(0) as u32
}

criterion_group!(benches, optimiser);
criterion_main!(benches);
