//! An inference in flight that runs past its deadline bound, and well past its prediction,
//! raises its app's clocks before it ends (`FreqReason::Overrun`). The boost holds until a
//! plan made with the slow sample replaces it, or until a later inference meets its
//! prediction (a one-off); a stalled inference is given up on; a power budget is kept; apps
//! sharing the GPU are left to the plan's interference budget.

mod common;

use common::*;
use dnngov_policy::{
    AppState, Config, Decision, FreqReason, Hz, Manager, Nanos, PlanTrigger, Snapshot, Watts,
};

/// 15 frames/s with a 60 ms deadline (S1 of the evaluation), at a 66 ms period.
const PERIOD_MS: u64 = 66;
const DEADLINE_MS: f64 = 60.0;

fn s1_app() -> AppState {
    app(1, &NETS_6, DEADLINE_MS, PERIOD_MS as f64, 74.0, 1, true)
}

/// A snapshot at `ms` with every domain at the frequency `d` decided.
fn at(ms: u64, apps: Vec<AppState>, d: &Decision) -> Snapshot {
    let mut snap = snapshot(ms, apps);
    for dom in &mut snap.domains {
        if let Some(x) = d.domains.iter().find(|x| x.domain == dom.id) {
            dom.cur = x.freq;
        }
    }
    snap
}

fn freq(d: &Decision, domain: u32) -> (Hz, FreqReason) {
    let x = d.domains.iter().find(|x| x.domain == domain).unwrap();
    (x.freq, x.reason)
}

fn max_of(domain: u32) -> Hz {
    *xavier_domains()
        .iter()
        .find(|d| d.id == domain)
        .unwrap()
        .table
        .last()
        .unwrap()
}

/// Three seconds of inferences that take what the manager predicts at the clocks it set,
/// outside any dwell time; returns the manager, the last decision and its time.
fn settled(cfg: Config, cap: Option<Watts>) -> (Manager, Decision, u64) {
    let mut m = Manager::new(cfg);
    let mut snap = snapshot(0, vec![s1_app()]);
    snap.caps.power = cap;
    let mut d = m.step(&snap);
    let mut t = 0;
    for k in 1..46 {
        t = k * PERIOD_MS;
        let mut a = s1_app();
        let mut snap = at(t, vec![a.clone()], &d);
        snap.caps.power = cap;
        let s = d.subnet_of(1).unwrap();
        let ms = m.predict_latency_ms(&snap, 1, s).unwrap();
        a.finished = vec![inference(t, ms, s)];
        snap.apps = vec![a];
        d = m.step(&snap);
    }
    (m, d, t)
}

/// The tick at `t` with an inference in flight since `t - elapsed_ms`.
fn running(m: &mut Manager, d: &Decision, t: u64, elapsed_ms: f64) -> Decision {
    let mut a = s1_app();
    a.running_since =
        Some(Nanos::from_millis(t).saturating_sub(Nanos::from_millis_f64(elapsed_ms)));
    m.step(&at(t, vec![a], d))
}

/// What the plan in force predicts for the app's sub-network at the clocks of `d`.
fn predicted(m: &Manager, d: &Decision, t: u64) -> f64 {
    let s = d.subnet_of(1).unwrap();
    m.predict_latency_ms(&at(t, vec![s1_app()], d), 1, s)
        .unwrap()
}

#[test]
fn an_overrunning_inference_raises_its_clocks_before_it_ends() {
    let (mut m, plan, t) = settled(Config::default(), None);
    let (plan_gpu, reason) = freq(&plan, GPU);
    assert_eq!(reason, FreqReason::Plan);
    assert!(
        plan_gpu < max_of(GPU),
        "the plan already runs the GPU flat out"
    );
    let p = predicted(&m, &plan, t);
    // Within its prediction: nothing happens.
    let d = running(&mut m, &plan, t + 10, p * 0.9);
    assert_eq!(freq(&d, GPU), (plan_gpu, FreqReason::Plan));
    // Past the deadline bound and 30 % past the prediction, still running.
    let late = (p * 1.3).max(DEADLINE_MS * 0.96);
    let d = running(&mut m, &plan, t + 20, late);
    assert_eq!(freq(&d, GPU), (max_of(GPU), FreqReason::Overrun { app: 1 }));
    // The memory clock as well, unless the plan already has it at its maximum.
    assert_eq!(freq(&d, EMC).0, max_of(EMC));
    // Its CPU cluster too (the app is not pinned: every cluster), and the sub-network is
    // left alone.
    assert_eq!(freq(&d, 0), (max_of(0), FreqReason::Overrun { app: 1 }));
    assert_eq!(d.subnet_of(1), plan.subnet_of(1));
    assert!(!d.adopted_plan);
}

#[test]
fn a_one_off_overrun_ends_at_the_next_inference_within_its_prediction_and_is_not_learned() {
    let (mut m, plan, t) = settled(Config::default(), None);
    let p = predicted(&m, &plan, t);
    let late = (p * 1.3).max(DEADLINE_MS * 0.96);
    let boosted = running(&mut m, &plan, t + 20, late);
    assert_eq!(freq(&boosted, GPU).1, FreqReason::Overrun { app: 1 });
    // It ends slow. The boost holds: one slow inference does not say whether the next
    // one will be.
    let s = plan.subnet_of(1).unwrap();
    let mut a = s1_app();
    a.finished = vec![inference(t + 30, late + 10.0, s)];
    let d = m.step(&at(t + 30, vec![a], &boosted));
    assert_eq!(freq(&d, GPU).1, FreqReason::Overrun { app: 1 });
    // The next one, run at the boosted clocks, takes what they predict: back to the plan.
    let fast = predicted(&m, &boosted, t + 90);
    let mut a = s1_app();
    a.finished = vec![inference(t + 90, fast, s)];
    let d = m.step(&at(t + 90, vec![a], &boosted));
    assert_eq!(freq(&d, GPU), freq(&plan, GPU));
    // The slow inference ran at two sets of clocks: it was not learned.
    let after = predicted(&m, &plan, t + 100);
    assert!(
        (after - p).abs() <= 0.01 * p,
        "prediction at the plan's clocks moved from {p} to {after} ms"
    );
}

/// A settled plan, an inference that overruns it (boosted) and ends slow, and the next one
/// `ratio` times slower than predicted at the boosted clocks; the plan before, and the
/// decision at the second one.
fn overrun_then_slow(ratio: f64) -> (Decision, Decision) {
    let (mut m, plan, t) = settled(Config::default(), None);
    let p = predicted(&m, &plan, t);
    let late = (p * 1.4).max(DEADLINE_MS * 0.96);
    let boosted = running(&mut m, &plan, t + 20, late);
    let s = plan.subnet_of(1).unwrap();
    let mut a = s1_app();
    a.finished = vec![inference(t + 30, late + 10.0, s)];
    let d = m.step(&at(t + 30, vec![a], &boosted));
    assert_eq!(freq(&d, GPU).1, FreqReason::Overrun { app: 1 });
    let slow = ratio * predicted(&m, &boosted, t + 90);
    let mut a = s1_app();
    a.finished = vec![inference(t + 90, slow, s)];
    let d = m.step(&at(t + 90, vec![a], &boosted));
    (plan, d)
}

#[test]
fn a_lasting_slow_down_keeps_the_boost_until_a_plan_made_for_it() {
    // The next one is 40 % slower than predicted at the boosted clocks too: a lasting
    // slow-down. A plan for it is adopted at once and replaces the boost.
    let (plan, d) = overrun_then_slow(1.4);
    assert!(d.adopted_plan, "no re-plan after two slow inferences");
    assert!(
        d.domains
            .iter()
            .all(|x| !matches!(x.reason, FreqReason::Overrun { .. })),
        "{d:?}"
    );
    assert!(freq(&d, GPU).0 > freq(&plan, GPU).0);
}

/// The plan made for a lasting slow-down keeps the app's domains at the boosted clocks: its
/// ratio comes from the first slow inferences, and a plan that lowered the clocks on it
/// missed on until the next plan (generated seed 448: a GPU job at 92.1 s, a plan for a
/// slow-down of 1.52 that took the boosted GPU back from 1109 to 1007 MHz, predicted to
/// break 0.5 s later, 17 frames missed in a row).
#[test]
fn the_plan_for_a_lasting_slow_down_keeps_the_boosted_clocks() {
    // 25 % slower than predicted at the boosted clocks too: a plan for it at once, which
    // without the hold put the CPU clusters at 1728 MHz and the GPU at 1058.
    let (_, d) = overrun_then_slow(1.25);
    assert!(
        matches!(d.trigger, Some(PlanTrigger::SlowDown { app: 1, .. })),
        "{:?}",
        d.trigger
    );
    for dom in xavier_domains() {
        assert_eq!(
            freq(&d, dom.id).0,
            max_of(dom.id),
            "domain {} in the plan made for the slow-down",
            dom.id
        );
    }
}

#[test]
fn a_stalled_inference_is_not_boosted_for_ever() {
    let (mut m, plan, t) = settled(Config::default(), None);
    let p = predicted(&m, &plan, t);
    let late = (p * 1.3).max(DEADLINE_MS * 0.96);
    let mut a = s1_app();
    let begin = Nanos::from_millis(t + 20).saturating_sub(Nanos::from_millis_f64(late));
    a.running_since = Some(begin);
    let boosted = m.step(&at(t + 20, vec![a.clone()], &plan));
    assert_eq!(freq(&boosted, GPU).1, FreqReason::Overrun { app: 1 });
    // The same inference, still running after four times its bound: an app blocked
    // between its marks, or dead and not yet unregistered. Back to the plan, and not
    // boosted again for it.
    let stalled = t + 20 + (4.0 * DEADLINE_MS) as u64;
    for k in 0..5 {
        let d = m.step(&at(stalled + 10 * k, vec![a.clone()], &boosted));
        assert_eq!(freq(&d, GPU), freq(&plan, GPU), "tick {k}");
    }
}

#[test]
fn a_boost_under_a_power_budget_is_lowered_to_keep_it() {
    // A budget 15 % over the plan's predicted power: room for part of a boost, not for
    // the highest clocks everywhere. (The plan counts the app's CPU busy for its whole
    // inference, the boost's check the CPU load measured, a little here: 30 % over the
    // plan's power leaves room for every clock at its highest.)
    let (m, _, _) = settled(Config::default(), None);
    let budget = Watts(m.plan().unwrap().power.0 * 1.15);
    let (mut m, plan, t) = settled(Config::default(), Some(budget));
    let p = predicted(&m, &plan, t);
    let late = (p * 1.3).max(DEADLINE_MS * 0.96);
    let mut a = s1_app();
    a.running_since = Some(Nanos::from_millis(t + 20).saturating_sub(Nanos::from_millis_f64(late)));
    let mut snap = at(t + 20, vec![a], &plan);
    snap.caps.power = Some(budget);
    let d = m.step(&snap);
    let mut lowered = false;
    for x in &d.domains {
        let (planned, _) = freq(&plan, x.domain);
        assert!(
            x.freq >= planned,
            "domain {} below the plan: {d:?}",
            x.domain
        );
        if matches!(x.reason, FreqReason::Overrun { .. }) {
            lowered |= x.freq < max_of(x.domain);
        } else {
            assert_eq!(x.freq, planned, "domain {}", x.domain);
        }
    }
    let boosted = d
        .domains
        .iter()
        .filter(|x| matches!(x.reason, FreqReason::Overrun { .. }))
        .count();
    assert!(boosted > 0, "nothing boosted within the budget: {d:?}");
    assert!(lowered, "every boosted domain at its maximum: {d:?}");
}

#[test]
fn apps_sharing_the_gpu_are_not_boosted() {
    let two = || {
        vec![
            app(1, &NETS_6, 100.0, 100.0, 74.0, 1, true),
            app(2, &NETS_7, 100.0, 100.0, 73.0, 1, true),
        ]
    };
    let mut m = Manager::new(Config::default());
    let mut d = m.step(&snapshot(0, two()));
    for k in 1..30u64 {
        let t = k * 100;
        let mut apps = two();
        let snap = at(t, apps.clone(), &d);
        for a in &mut apps {
            let s = d.subnet_of(a.id).unwrap();
            let ms = m.predict_latency_ms(&snap, a.id, s).unwrap();
            a.finished = vec![inference(t, ms, s)];
        }
        d = m.step(&at(t, apps, &d));
    }
    let mut apps = two();
    apps[0].running_since = Some(Nanos::from_millis(3000).saturating_sub(Nanos::from_millis(99)));
    let boosted = m.step(&at(3000, apps, &d));
    assert!(
        boosted
            .domains
            .iter()
            .all(|x| !matches!(x.reason, FreqReason::Overrun { .. })),
        "{boosted:?}"
    );
}

#[test]
fn an_inference_that_pays_for_a_switch_is_not_boosted() {
    let (mut m, plan, t) = settled(Config::default(), None);
    let s = plan.subnet_of(1).unwrap();
    // The app last ran another sub-network: the inference in flight is the first of the
    // one asked for, and pays for the switch (244 ms on a TX2), which clocks do not
    // shorten.
    let other = if s == 0 { 1 } else { 0 };
    let mut a = s1_app();
    a.finished = vec![inference(t + 10, 40.0, other)];
    let d = m.step(&at(t + 10, vec![a], &plan));
    assert_eq!(d.subnet_of(1), Some(s));
    let p = predicted(&m, &plan, t + 10);
    let d = running(&mut m, &plan, t + 200, (p * 3.0).max(DEADLINE_MS * 2.0));
    assert!(
        d.domains
            .iter()
            .all(|x| !matches!(x.reason, FreqReason::Overrun { .. })),
        "{d:?}"
    );
}

/// A plan too slow for the app, where every other inference overruns: each overrun boosts
/// the clocks, the inference after it runs at the boosted clocks within its prediction,
/// and the boost ends as for a one-off. The fast inference ran at the boost's clocks, not
/// the plan's: it does not end the run of slow ones, and after three the fits are scaled
/// and a faster plan replaces the one in force.
#[test]
fn overruns_every_other_inference_are_a_slow_down_of_the_plan() {
    let (mut m, plan, mut t) = settled(Config::default(), None);
    let s = plan.subnet_of(1).unwrap();
    let p = predicted(&m, &plan, t);
    let late = (p * 1.3).max(DEADLINE_MS * 0.96);
    let mut d = plan.clone();
    let mut replanned = None;
    for cycle in 0..5 {
        // At the plan's clocks: it overruns, is boosted and ends slow.
        let boosted = running(&mut m, &d, t + 20, late);
        assert_eq!(
            freq(&boosted, GPU).1,
            FreqReason::Overrun { app: 1 },
            "{cycle}"
        );
        let mut a = s1_app();
        a.finished = vec![inference(t + 30, late + 10.0, s)];
        d = m.step(&at(t + 30, vec![a], &boosted));
        if d.adopted_plan {
            replanned = Some((cycle, d.clone()));
            break;
        }
        // The next one starts under the boost and takes what the boosted clocks predict.
        let fast = predicted(&m, &d, t + 90);
        let mut a = s1_app();
        a.running_since = Some(Nanos::from_millis(t + 35));
        let d1 = m.step(&at(t + 40, vec![a], &d));
        let mut a = s1_app();
        a.finished = vec![inference(t + 35 + fast.ceil() as u64, fast, s)];
        d = m.step(&at(t + 35 + fast.ceil() as u64, vec![a], &d1));
        assert_eq!(
            freq(&d, GPU),
            freq(&plan, GPU),
            "the boost did not end: {d:?}"
        );
        t += 2 * PERIOD_MS;
    }
    let (cycle, d) = replanned.expect("the plan in force was kept through five overruns");
    assert!(cycle <= 3, "re-planned only at overrun {cycle}");
    assert!(freq(&d, GPU).0 > freq(&plan, GPU).0, "{d:?}");
}
