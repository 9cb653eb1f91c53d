//! The policy judged on scenarios nobody picked: a sweep of generated scenarios (seeds
//! drawn from this run's own seed, printed, so a failure can be replayed with
//! `DNNGOV_SWEEP_SEED`), and the generator's files run like any scenario.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dnngov_sim::rng::Rng;
use dnngov_sim::sweep::{sweep, table, Criteria, Summary};
use dnngov_sim::Platform;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xavier() -> (Platform, PathBuf) {
    let path = root().join("platforms/jetson-xavier-nx.toml");
    (Platform::load(&path).unwrap(), path)
}

#[test]
fn a_sweep_of_generated_scenarios_is_judged_against_the_oracle() {
    let run_seed = std::env::var("DNNGOV_SWEEP_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Rng::new(run_seed);
    let seeds: Vec<u64> = (0..30).map(|_| rng.next_u64() % 1_000_000).collect();
    println!(
        "sweep seed {run_seed} (DNNGOV_SWEEP_SEED={run_seed} replays it); scenario seeds {seeds:?}"
    );
    let (plat, path) = xavier();
    let c = Criteria::default();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = sweep(&seeds, 60.0, &plat, &path, jobs, &c).unwrap();
    print!("{}", table(&rows, &c));
    let summary = Summary::of(&rows, &c);
    for (text, ok) in summary.verdicts(&c) {
        println!("{} {text}", if ok { "ok  " } else { "not yet" });
    }
    assert_eq!(rows.len(), seeds.len());
    for r in &rows {
        for f in [r.schedutil, r.subnet_only, r.dnngov, r.oracle] {
            assert!(
                f.energy_j > 0.0 && f.energy_j.is_finite(),
                "seed {}: {f:?}",
                r.seed
            );
            assert!(
                (0.0..=100.0).contains(&f.miss_pct),
                "seed {}: {f:?}",
                r.seed
            );
        }
    }
    // What holds in every group of 30 tried, as a guard against regressions; the criteria
    // are printed above and do not all hold yet (docs/evaluation.md, "Generated
    // scenarios"). Seen: `dnngov-sim sweep --duration 60 --count 150` from seeds 1001 and
    // 1151, taken as ten groups of 30 (each bound below is passed by every group, and a
    // group that a binomial draw at the rates seen would fail is rarer than 1 in 200):
    // - the median energy within 12 % of the oracle's (1.015 to 1.074 seen; the full
    //   sweep's criterion is 5 %);
    // - dnngov missing no more frames than schedutil in at least 28 of 30 (30 seen);
    // - within the oracle's misses + 1 point in at least 24 (27 to 30 seen; 25 to 30 at
    //   run seeds 1-12; 95 % asked);
    // - over 5 % where the oracle misses under 1 % in at most 1 (none seen; none asked);
    // - not back within 5 s of some change in at most 2 (0 or 1 seen; none asked);
    // - restless steady phases (too many frequency changes, or a sub-network A->B->A) in
    //   at most 2 (0 or 1 seen; none asked).
    assert!(
        summary.median_energy_vs_oracle <= 1.12,
        "median energy / oracle {:.3}",
        summary.median_energy_vs_oracle
    );
    let fewer = rows
        .iter()
        .filter(|r| r.dnngov.miss_pct <= r.schedutil.miss_pct)
        .count();
    println!(
        "dnngov missed no more than schedutil in {fewer} of {}",
        rows.len()
    );
    assert!(
        fewer * 15 >= rows.len() * 14,
        "dnngov missed no more than schedutil in only {fewer} of {} scenarios",
        rows.len()
    );
    assert!(
        summary.misses_ok * 5 >= rows.len() * 4,
        "within the oracle's misses + 1 point in only {} of {} scenarios",
        summary.misses_ok,
        rows.len()
    );
    assert!(
        summary.over_cap.len() * 30 <= rows.len(),
        "over 5 % where the oracle misses under 1 %: {:?}",
        summary.over_cap
    );
    assert!(
        summary.slow_recovery.len() * 15 <= rows.len(),
        "not back within 5 s of some change: {:?}",
        summary.slow_recovery
    );
    assert!(
        summary.restless.len() * 15 <= rows.len(),
        "restless steady phases: {:?}",
        summary.restless
    );
}

/// The rate of frequency changes a restless row reports for schedutil is schedutil's own,
/// on the domain dnngov changed most: generated seed 493, whose cluster no app runs on
/// follows a steady stream of other programs' tasks (about 0.9 CPUs' worth).
#[test]
fn a_restless_domain_is_set_beside_schedutils_changes_on_it() {
    use dnngov_policy::GovernorKind;
    use dnngov_sim::generate::{generate, Board};
    use dnngov_sim::governors::Which;
    use dnngov_sim::sweep::{judge, rate_on};
    let (plat, path) = xavier();
    let c = Criteria::default();
    let scn = generate(493, 120.0, &Board::of(&plat, &path.to_string_lossy()));
    let row = judge(493, &scn, &plat, &c).unwrap();
    let (rate, domain) = row.changes_per_min.clone().expect("steady time");
    let su = row.schedutil_changes_per_min.expect("schedutil's rate");
    println!("dnngov {rate:.1} a minute on {domain}, schedutil {su:.1}");
    // schedutil's run, measured apart; and a governor that never changes a clock.
    let run_of = |kind| {
        let mut gov = Which::Kernel(kind).build(&scn, &plat).unwrap();
        dnngov_sim::engine::run(&scn, &plat, gov.as_mut(), 493).unwrap()
    };
    let schedutil = run_of(GovernorKind::Schedutil);
    assert_eq!(rate_on(&scn, &plat, &schedutil, &domain), Some(su));
    let performance = run_of(GovernorKind::Performance);
    assert_eq!(rate_on(&scn, &plat, &performance, &domain), Some(0.0));
    assert!(su > rate, "schedutil {su:.1} against dnngov's {rate:.1}");
    let text = table(std::slice::from_ref(&row), &c);
    assert!(
        text.contains(&format!("{rate:.1} ({domain}; schedutil {su:.0})")),
        "{text}"
    );
}

#[test]
fn generated_scenario_files_run_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.toml");
    let bin = env!("CARGO_BIN_EXE_dnngov-sim");
    let platform = root().join("platforms/jetson-xavier-nx.toml");
    let st = std::process::Command::new(bin)
        .args(["generate", "--seed", "17", "--duration", "45", "--platform"])
        .arg(&platform)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("# Generated by `dnngov-sim generate --seed 17"),
        "{text}"
    );
    let o = std::process::Command::new(bin)
        .args(["run", "--governor", "dnngov"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A bad duration is refused with the reason.
    let o = std::process::Command::new(bin)
        .args(["generate", "--seed", "1", "--duration", "5"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--duration"));
}
