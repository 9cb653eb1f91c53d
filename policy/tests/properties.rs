//! Properties over random machines, apps and telemetry: decisions stay inside tables and
//! caps, every app gets a sub-network of its own library, plans are feasible under the
//! models they came from, and the manager is deterministic.

mod common;

use common::{CPU_KHZ, EMC_MHZ, GPU_HZ};
use dnngov_policy::optimiser::{evaluate, evaluate_plan, optimise, Mode, OptimiserConfig};
use dnngov_policy::{
    AppState, Caps, Config, CpuSample, Decision, Devices, DomainCap, DomainKind, FreqDomain,
    GovernorConfig, GovernorKind, Hz, Inference, Manager, Nanos, Snapshot, SubNetwork, Targets,
    Watts,
};
use proptest::prelude::*;

fn table(all: Vec<Hz>) -> impl Strategy<Value = Vec<Hz>> {
    let n = all.len();
    proptest::sample::subsequence(all, 1..=n)
}

fn domain(
    id: u32,
    kind: DomainKind,
    all: Vec<Hz>,
    cpus: Vec<u32>,
) -> impl Strategy<Value = FreqDomain> {
    (
        table(all),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(table, cur, lim, unlimited)| FreqDomain {
            id,
            kind,
            cur: table[cur.index(table.len())],
            max_limit: if unlimited {
                *table.last().unwrap()
            } else {
                table[lim.index(table.len())]
            },
            table,
            cpus: cpus.clone(),
            busy: (kind != DomainKind::Cpu).then_some(Nanos(0)),
        })
}

fn machine() -> impl Strategy<Value = Vec<FreqDomain>> {
    let cpu: Vec<Hz> = CPU_KHZ.iter().map(|k| Hz::from_khz(*k)).collect();
    let gpu: Vec<Hz> = GPU_HZ.iter().map(|h| Hz(*h)).collect();
    let emc: Vec<Hz> = EMC_MHZ.iter().map(|m| Hz::from_mhz(*m)).collect();
    (
        1usize..=3,
        domain(0, DomainKind::Cpu, cpu.clone(), vec![0, 1]),
        domain(2, DomainKind::Cpu, cpu.clone(), vec![2, 3]),
        domain(4, DomainKind::Cpu, cpu, vec![4]),
        proptest::option::of(domain(10, DomainKind::Gpu, gpu, vec![])),
        proptest::option::of(domain(20, DomainKind::Memory, emc, vec![])),
    )
        .prop_map(|(n, c0, c1, c2, g, e)| {
            let mut v: Vec<FreqDomain> = [c0, c1, c2].into_iter().take(n).collect();
            v.extend(g);
            v.extend(e);
            v
        })
}

fn app(id: u32) -> impl Strategy<Value = AppState> {
    (
        proptest::collection::vec(
            (
                0.5f64..3.0,
                proptest::option::of(5.0f64..150.0),
                proptest::option::of(0.1f64..10.0),
            ),
            1..=7,
        ),
        10.0f64..400.0,
        proptest::option::of(1.0f64..4.0),
        60.0f64..80.0,
        any::<u8>(),
        0u8..3,
        proptest::collection::vec(prop_oneof![Just(0u32), Just(2), Just(4), Just(7)], 0..3),
    )
        .prop_map(
            move |(entries, deadline, period_x, floor, priority, dev, cpu_domains)| {
                let mut acc = 65.0;
                let library = entries
                    .iter()
                    .map(|(step, lat, cost)| {
                        acc += step;
                        SubNetwork {
                            accuracy: acc,
                            latency_full: lat.map(Nanos::from_millis_f64),
                            relative_cost: *cost,
                        }
                    })
                    .collect();
                AppState {
                    id,
                    library,
                    targets: Targets {
                        deadline: Nanos::from_millis_f64(deadline),
                        period: period_x.map(|x| Nanos::from_millis_f64(deadline * x)),
                        accuracy_floor: floor,
                        priority,
                    },
                    devices: Devices {
                        cpu: dev != 1,
                        gpu: dev != 0,
                    },
                    cpu_domains,
                    finished: vec![],
                    running_since: None,
                }
            },
        )
}

/// Random per-tick telemetry: CPU busy increments, device busy, finished inferences with
/// sub-network ids that may be out of range (an app is untrusted), power readings.
#[derive(Clone, Debug)]
struct Tick {
    dt_ms: u64,
    busy_pct: Vec<u8>,
    online: Vec<bool>,
    inferences: Vec<(f64, u32)>,
    power: Option<f64>,
}

fn tick() -> impl Strategy<Value = Tick> {
    (
        1u64..700,
        proptest::collection::vec(0u8..=100, 6),
        proptest::collection::vec(prop::bool::weighted(0.85), 6),
        proptest::collection::vec((1.0f64..500.0, 0u32..9), 0..6),
        proptest::option::of(0.5f64..20.0),
    )
        .prop_map(|(dt_ms, busy_pct, online, inferences, power)| Tick {
            dt_ms,
            busy_pct,
            online,
            inferences,
            power,
        })
}

#[derive(Clone, Debug)]
struct Scenario {
    domains: Vec<FreqDomain>,
    apps: Vec<AppState>,
    power_cap: Option<f64>,
    thermal: Vec<(u32, u64)>,
    ticks: Vec<Tick>,
    mode: Mode,
    base: GovernorKind,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        machine(),
        (0u32..=4).prop_flat_map(|n| (0..n).map(app).collect::<Vec<_>>()),
        proptest::option::of(1.0f64..15.0),
        proptest::collection::vec(
            (
                prop_oneof![Just(0u32), Just(2), Just(10), Just(20)],
                0u64..2_500_000_000,
            ),
            0..3,
        ),
        proptest::collection::vec(tick(), 1..6),
        prop_oneof![Just(Mode::Energy), Just(Mode::Accuracy)],
        prop_oneof![
            Just(GovernorKind::Schedutil),
            Just(GovernorKind::Ondemand),
            Just(GovernorKind::Conservative),
            Just(GovernorKind::Performance),
            Just(GovernorKind::Powersave)
        ],
    )
        .prop_map(
            |(domains, apps, power_cap, thermal, ticks, mode, base)| Scenario {
                domains,
                apps,
                power_cap,
                thermal,
                ticks,
                mode,
                base,
            },
        )
}

fn snapshots(s: &Scenario) -> Vec<Snapshot> {
    let mut now = 0u64;
    let mut busy = [0u64; 6];
    let mut dev_busy = 0u64;
    let mut out = Vec::new();
    for t in &s.ticks {
        now += t.dt_ms * 1_000_000;
        for (i, b) in busy.iter_mut().enumerate() {
            *b += t.dt_ms * 1_000_000 * t.busy_pct[i] as u64 / 100;
        }
        dev_busy += t.dt_ms * 1_000_000 * t.busy_pct[0] as u64 / 100;
        let mut domains = s.domains.clone();
        for d in &mut domains {
            if d.busy.is_some() {
                d.busy = Some(Nanos(dev_busy));
            }
        }
        let apps = s
            .apps
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a.finished = t
                    .inferences
                    .iter()
                    .map(|(ms, sub)| Inference {
                        end: Nanos(now),
                        latency: Nanos::from_millis_f64(*ms),
                        subnet: *sub,
                    })
                    .collect();
                a
            })
            .collect();
        out.push(Snapshot {
            now: Nanos(now),
            domains,
            cpus: (0..6)
                .map(|cpu| CpuSample {
                    cpu,
                    online: cpu == 0 || t.online[cpu as usize],
                    busy: Nanos(busy[cpu as usize]),
                })
                .collect(),
            apps,
            power: t.power.map(Watts),
            caps: Caps {
                power: s.power_cap.map(Watts),
                thermal: s
                    .thermal
                    .iter()
                    .map(|(d, hz)| DomainCap {
                        domain: *d,
                        max: Hz(*hz),
                    })
                    .collect(),
            },
        });
    }
    out
}

fn config(s: &Scenario) -> Config {
    Config {
        governor: GovernorConfig {
            kind: s.base,
            ..GovernorConfig::default()
        },
        optimiser: OptimiserConfig {
            mode: s.mode,
            ..OptimiserConfig::default()
        },
        ..Config::default()
    }
}

fn run(s: &Scenario) -> Vec<Decision> {
    let mut m = Manager::new(config(s));
    snapshots(s).iter().map(|snap| m.step(snap)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn decisions_stay_within_tables_caps_and_libraries(s in scenario()) {
        let mut m = Manager::new(config(&s));
        for snap in snapshots(&s) {
            let d = m.step(&snap);
            prop_assert_eq!(d.domains.len(), snap.domains.len());
            for (dd, dom) in d.domains.iter().zip(&snap.domains) {
                prop_assert_eq!(dd.domain, dom.id);
                prop_assert!(dom.table.contains(&dd.freq), "{:?} not in table of {}", dd, dom.id);
                prop_assert!(dd.freq <= snap.allowed_max(dom), "{:?} above cap", dd);
            }
            prop_assert_eq!(d.apps.len(), snap.apps.len());
            for (ad, app) in d.apps.iter().zip(&snap.apps) {
                prop_assert_eq!(ad.app, app.id);
                prop_assert!((ad.subnet as usize) < app.library.len());
            }
            if let (Some(plan), Some(cap)) = (m.plan(), snap.caps.power) {
                if !plan.subnets.is_empty() {
                    prop_assert!(plan.power.0 <= cap.0 + 1e-9);
                }
            }
        }
    }

    #[test]
    fn manager_is_deterministic(s in scenario()) {
        prop_assert_eq!(run(&s), run(&s));
    }

    #[test]
    fn plans_are_feasible_and_account_for_every_app(s in scenario()) {
        let snaps = snapshots(&s);
        let snap = &snaps[0];
        let p = common::problem(snap);
        let cfg = OptimiserConfig { mode: s.mode, ..OptimiserConfig::default() };
        let plan = optimise(&p, &cfg);
        let mut ids: Vec<u32> = plan.subnets.iter().map(|x| x.0).chain(plan.unserved.iter().map(|x| x.0)).collect();
        ids.sort_unstable();
        // An app planned below its floor is in both lists.
        ids.dedup();
        for (a, _) in &plan.best_effort {
            prop_assert!(plan.unserved.iter().any(|u| u.0 == *a));
        }
        let mut want: Vec<u32> = snap.apps.iter().map(|a| a.id).collect();
        want.sort_unstable();
        prop_assert_eq!(ids, want);
        if !plan.subnets.is_empty() {
            let (power, _) = evaluate_plan(&p, &cfg, &plan, 0.0)
                .expect("a served plan meets every constraint");
            prop_assert!((power.0 - plan.power.0).abs() < 1e-6);
            for (d, f) in &plan.freqs {
                let dom = p.domains.iter().find(|x| x.id == *d).unwrap();
                prop_assert!(dom.freqs.contains(f));
            }
            for (a, sub) in &plan.subnets {
                let app = snap.apps.iter().find(|x| x.id == *a).unwrap();
                let degraded = plan.unserved.iter().any(|u| u.0 == *a);
                prop_assert!(degraded || app.library[*sub as usize].accuracy >= app.targets.accuracy_floor);
                prop_assert!(plan.margin_of(*a).is_some_and(|m| (0.0..=cfg.margin).contains(&m)));
            }
        }
    }
}

/// A one-app problem on one CPU domain, small enough to solve by brute force with
/// `evaluate` over every frequency combination and sub-network.
fn small_problem() -> impl Strategy<Value = (dnngov_policy::optimiser::Problem, Option<f64>)> {
    use dnngov_policy::model::{LatencyCoefs, PowerModel};
    use dnngov_policy::optimiser::{AppProblem, DomainOption, Problem, SubnetOption};
    let cpu: Vec<Hz> = CPU_KHZ.iter().map(|k| Hz::from_khz(*k)).collect();
    let gpu: Vec<Hz> = GPU_HZ.iter().map(|h| Hz(*h)).collect();
    let emc: Vec<Hz> = EMC_MHZ.iter().map(|m| Hz::from_mhz(*m)).collect();
    (
        proptest::sample::subsequence(cpu, 1..=6),
        proptest::option::of(proptest::sample::subsequence(gpu, 1..=5)),
        proptest::option::of(proptest::sample::subsequence(emc, 1..=4)),
        proptest::collection::vec(
            (
                0.2f64..2.0,
                0.0f64..40.0,
                0.0f64..20.0,
                0.0f64..15.0,
                0.0f64..5.0,
            ),
            1..=5,
        ),
        20.0f64..200.0,
        1.0f64..3.0,
        any::<bool>(),
        proptest::option::of(2.5f64..8.0),
        // A voltage curve for every domain (see `VoltageCurve`): relative voltage at a
        // tenth of the top clock, and how far up it is at half.
        proptest::option::of((0.3f64..1.0, 0.0f64..1.0)),
    )
        .prop_map(
            |(cpu, gpu, emc, subs, deadline, period_x, uses_gpu, cap, curve)| {
                let dom = |id: u32, kind: DomainKind, freqs: Vec<Hz>, max: Hz, cpus: usize| {
                    DomainOption {
                        id,
                        kind,
                        freqs,
                        max_freq: max,
                        cpu_count: cpus,
                        online_cpus: cpus,
                        util: 0.0,
                        speed: 1.0,
                    }
                };
                let mut domains = vec![dom(0, DomainKind::Cpu, cpu, Hz::from_khz(CPU_KHZ[19]), 2)];
                if let Some(g) = gpu {
                    domains.push(dom(10, DomainKind::Gpu, g, Hz(GPU_HZ[14]), 0));
                }
                if let Some(e) = emc {
                    domains.push(dom(20, DomainKind::Memory, e, Hz::from_mhz(EMC_MHZ[9]), 0));
                }
                let ids: Vec<(u32, DomainKind)> = domains.iter().map(|d| (d.id, d.kind)).collect();
                let mut power =
                    PowerModel::seeded(&dnngov_policy::PlatformPower::default(), &ids, 0.99)
                        .coefs();
                if let Some((low, mid)) = curve {
                    let c = dnngov_policy::VoltageCurve(vec![
                        (0.1, low),
                        (0.5, low + (1.0 - low) * mid),
                        (1.0, 1.0),
                    ]);
                    power.voltage = ids.iter().map(|(id, _)| (*id, c.clone())).collect();
                }
                let mut acc = 60.0;
                let subnets = subs
                    .iter()
                    .map(|(step, g, c, m, f)| {
                        acc += step;
                        SubnetOption {
                            accuracy: acc,
                            coefs: LatencyCoefs {
                                gpu_ms: if uses_gpu { *g } else { 0.0 },
                                cpu_ms: *c,
                                mem_ms: *m,
                                fixed_ms: *f,
                            },
                            cautious: None,
                            declared_ms: if uses_gpu { *g } else { 0.0 } + c + m + f,
                        }
                    })
                    .collect();
                let app = AppProblem {
                    id: 7,
                    priority: 2,
                    deadline_ms: deadline,
                    period_ms: deadline * period_x,
                    accuracy_floor: 0.0,
                    devices: Devices {
                        cpu: true,
                        gpu: uses_gpu,
                    },
                    cpu_domains: vec![],
                    subnets,
                    spread_margin: 0.0,
                    missing: false,
                    cautious_device: false,
                };
                (
                    Problem {
                        domains,
                        apps: vec![app],
                        power,
                        power_cap: cap.map(Watts),
                    },
                    cap,
                )
            },
        )
}

/// Every (frequencies, sub-network) of a one-app problem with its power and score.
fn brute_force(
    p: &dnngov_policy::optimiser::Problem,
    cfg: &OptimiserConfig,
) -> Vec<(f64, f64, u32)> {
    let mut combos: Vec<Vec<(u32, Hz)>> = vec![vec![]];
    for d in &p.domains {
        if d.kind == DomainKind::Gpu && !p.apps[0].devices.gpu {
            continue;
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                d.freqs.iter().map(move |f| {
                    let mut c = c.clone();
                    c.push((d.id, *f));
                    c
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for c in &combos {
        for s in 0..p.apps[0].subnets.len() as u32 {
            if let Some((w, score)) = evaluate(p, cfg, c, &[(7, s)]) {
                out.push((w.0, score, s));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// With one app and one CPU domain the search is exact: it finds a plan exactly when
    /// brute force does, within the tie tolerance of the least power in energy mode, and
    /// the best score in accuracy mode.
    #[test]
    fn single_app_search_matches_brute_force((p, _cap) in small_problem()) {
        for mode in [Mode::Energy, Mode::Accuracy] {
            let cfg = OptimiserConfig { mode, ..OptimiserConfig::default() };
            let all = brute_force(&p, &cfg);
            let plan = optimise(&p, &cfg);
            if all.is_empty() {
                // Not served as asked: degraded (thinner margin, floor given up, or best
                // effort), and said so unless only the margin was thinned.
                let thinned = plan.margin_of(7).is_some_and(|m| m < cfg.margin);
                prop_assert!(thinned || plan.unserved.iter().any(|u| u.0 == 7), "{:?}", plan);
                continue;
            }
            prop_assert_eq!(plan.subnets.len(), 1, "{:?}", plan);
            let least = all.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
            let best = all.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
            match mode {
                Mode::Energy => {
                    prop_assert!(plan.power.0 <= least * (1.0 + cfg.tie_tolerance) + 1e-9);
                    // Ties go to accuracy: nothing within the tolerance scores higher.
                    let tied_best = all
                        .iter()
                        .filter(|x| x.0 <= least * (1.0 + cfg.tie_tolerance) + 1e-12)
                        .map(|x| x.1)
                        .fold(f64::NEG_INFINITY, f64::max);
                    prop_assert!(plan.score >= tied_best - 1e-9);
                }
                Mode::Accuracy => {
                    prop_assert!((plan.score - best).abs() < 1e-9, "{} vs {}", plan.score, best);
                    let least_at_best = all
                        .iter()
                        .filter(|x| (x.1 - best).abs() < 1e-9)
                        .map(|x| x.0)
                        .fold(f64::INFINITY, f64::min);
                    prop_assert!(plan.power.0 <= least_at_best + 1e-9);
                }
            }
        }
    }
}
