//! Closed-loop runs that mimic what dnngovd feeds the policy on the fixture Xavier NX board
//! with simulated apps: the GPU load file never changes, each domain's `cur` is what the
//! policy decided at the previous tick, only the host's CPUs report busy time, the power
//! sensor reads a constant, and every "inference" takes its sub-network's declared latency
//! whatever the clocks. Such input gives the latency models no excitation and the power
//! model misleading data, which is where the stability and sanity guards must hold: a
//! stable workload converges to one configuration and stays there, and no app is declared
//! unreachable while it meets its deadline.

mod common;

use common::{xavier_domains, EMC, GPU, NETS_6, NETS_7};
use dnngov_policy::model::{ClockRatios, LatencyCoefs, LatencyModel};
use dnngov_policy::{
    AppState, Caps, Config, CpuSample, Decision, Devices, Hz, Inference, Manager, Nanos, Snapshot,
    SubnetReason, Targets, UnservedCause, Watts,
};

const TICK_MS: u64 = 10;

/// One simulated app: frames every `period_ms`, each inference a fixed latency per
/// sub-network (plus a small deterministic jitter and an occasional slow frame), switching
/// at a frame boundary to whatever the last decision asked.
struct SimApp {
    decl: AppState,
    /// (accuracy, declared full-clock latency) per sub-network.
    nets: &'static [(f64, f64)],
    period_ms: f64,
    running: u32,
    /// Start of the next frame, in ms.
    next_start: f64,
    count: u64,
    /// Whether latency follows the clocks (as the seeded split assumes: 60 % GPU, 15 %
    /// CPU, 20 % memory, 5 % fixed, declared at full clocks) rather than staying at the
    /// declared figure as the daemon's simulated apps do.
    clock_bound: bool,
}

impl SimApp {
    fn new(id: u32, deadline_ms: f64, fps: f64) -> SimApp {
        SimApp {
            decl: AppState {
                id,
                library: common::library(&NETS_6),
                targets: Targets {
                    deadline: Nanos::from_millis_f64(deadline_ms),
                    period: Some(Nanos::from_millis_f64(1000.0 / fps)),
                    accuracy_floor: 76.0,
                    priority: 0,
                },
                // As the simulated app declares itself: GPU only.
                devices: Devices {
                    cpu: false,
                    gpu: true,
                },
                cpu_domains: vec![],
                finished: vec![],
                running_since: None,
            },
            nets: &NETS_6,
            period_ms: 1000.0 / fps,
            running: 0,
            next_start: 0.0,
            count: 0,
            clock_bound: false,
        }
    }

    /// Another library and accuracy floor.
    fn with_library(mut self, nets: &'static [(f64, f64)], floor: f64) -> SimApp {
        self.decl.library = common::library(nets);
        self.decl.targets.accuracy_floor = floor;
        self.nets = nets;
        self
    }

    fn clock_bound(self) -> SimApp {
        SimApp {
            clock_bound: true,
            ..self
        }
    }

    fn latency_ms(&self, subnet: u32, r: ClockRatios) -> f64 {
        let l = self.nets[subnet as usize].1;
        if self.clock_bound {
            l * (0.6 * r.gpu + 0.15 * r.cpu + 0.2 * r.mem + 0.05)
        } else {
            l
        }
    }

    /// The inferences that finish in `(from, to]` ms; `wanted` is the sub-network the
    /// agent asks for now, `r` the clocks it set.
    fn run(&mut self, from: f64, to: f64, wanted: u32, r: ClockRatios) -> Vec<Inference> {
        let mut done = Vec::new();
        loop {
            let start = self.next_start;
            let jitter = match self.count % 37 {
                0 => 3.5,
                k => 0.05 * (k % 5) as f64,
            };
            let end = start + self.latency_ms(self.running, r) + jitter;
            if end > to {
                break;
            }
            if end > from {
                done.push(Inference {
                    end: Nanos::from_millis_f64(end),
                    latency: Nanos::from_millis_f64(end - start),
                    subnet: self.running,
                });
            }
            self.count += 1;
            self.next_start = (start + self.period_ms).max(end);
            // The app reads its slot at the frame boundary.
            self.running = wanted;
        }
        done
    }
}

/// What the board reports, besides the apps.
#[derive(Clone, Copy)]
struct Board {
    /// CPUs the host's scheduler telemetry covers: the daemon's host has two, so the
    /// fixture's other clusters have no online CPU in the snapshot.
    host_cpus: u32,
    /// Whether the memory controller reports busy time (the daemon's EMC does not).
    emc_busy: bool,
    /// Whether a (constant) power reading comes with every other tick.
    power: bool,
}

const DAEMON: Board = Board {
    host_cpus: 2,
    emc_busy: false,
    power: true,
};

/// Every domain with telemetry: the power model then learns, from readings that do not
/// move with the clocks.
const FULL_TELEMETRY: Board = Board {
    host_cpus: 6,
    emc_busy: true,
    power: true,
};

struct Run {
    decisions: Vec<Decision>,
    /// Per tick, per app: (sub-network that ran, worst latency) of the inferences reported.
    measured: Vec<Vec<Option<(u32, f64)>>>,
}

fn run(board: Board, mut apps: Vec<SimApp>, seconds: u64) -> Run {
    let mut m = Manager::new(Config::default());
    let mut domains = xavier_domains();
    // The fixture's CPU clusters start at the nvpmodel floor.
    for d in domains.iter_mut().filter(|d| d.cpus.len() == 2) {
        d.cur = Hz::from_khz(1_190_400);
    }
    let mut gpu_busy = Nanos(0);
    let mut emc_busy = Nanos(0);
    let mut decisions: Vec<Decision> = Vec::new();
    let mut measured = Vec::new();
    let ticks = seconds * 1000 / TICK_MS;
    for t in 0..=ticks {
        let now = t * TICK_MS;
        let from = now.saturating_sub(TICK_MS) as f64;
        // Static GPU load file: 12.5 % busy whatever runs.
        gpu_busy = Nanos(gpu_busy.0 + Nanos::from_millis(TICK_MS).0 / 8);
        emc_busy = Nanos(emc_busy.0 + Nanos::from_millis(TICK_MS).0 / 5);
        let last = decisions.last();
        let ratio = |id: u32| {
            let d = domains.iter().find(|d| d.id == id).unwrap();
            d.max_freq().as_f64() / d.cur.as_f64()
        };
        let r = ClockRatios {
            gpu: ratio(GPU),
            // The slowest CPU cluster the host's telemetry covers.
            cpu: (0..board.host_cpus.div_ceil(2))
                .map(|c| ratio(2 * c))
                .fold(1.0, f64::max),
            mem: ratio(EMC),
        };
        let mut states = Vec::new();
        let mut seen = Vec::new();
        for a in &mut apps {
            let wanted = last.and_then(|d| d.subnet_of(a.decl.id)).unwrap_or(0);
            let finished = if t == 0 {
                Vec::new()
            } else {
                a.run(from, now as f64, wanted, r)
            };
            seen.push(
                finished
                    .iter()
                    .map(|i| (i.subnet, i.latency.as_millis_f64()))
                    .reduce(|x, y| if y.1 > x.1 { y } else { x }),
            );
            states.push(AppState {
                finished,
                ..a.decl.clone()
            });
        }
        let snap = Snapshot {
            now: Nanos::from_millis(now),
            domains: domains
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    if d.id == GPU {
                        d.busy = Some(gpu_busy);
                    } else if d.id == EMC {
                        d.busy = board.emc_busy.then_some(emc_busy);
                    }
                    d
                })
                .collect(),
            cpus: (0..board.host_cpus)
                .map(|cpu| CpuSample {
                    cpu,
                    online: true,
                    busy: Nanos::from_millis(now * 3 / 10),
                })
                .collect(),
            apps: states,
            power: (board.power && t % 2 == 0).then_some(Watts(6.20992)),
            caps: Caps::default(),
        };
        let d = m.step(&snap);
        // The agent writes what was decided; the next snapshot reports it as `cur`.
        for dd in &d.domains {
            if let Some(dom) = domains.iter_mut().find(|x| x.id == dd.domain) {
                dom.cur = dd.freq;
            }
        }
        decisions.push(d);
        measured.push(seen);
    }
    Run {
        decisions,
        measured,
    }
}

/// The ticks (indices) at which the apps' sub-networks or reasons, or any domain's
/// frequency, differ from the previous tick.
fn changes(r: &Run, from_tick: usize) -> Vec<usize> {
    (from_tick.max(1)..r.decisions.len())
        .filter(|t| {
            let (a, b) = (&r.decisions[t - 1], &r.decisions[*t]);
            a.apps != b.apps
                || a.domains
                    .iter()
                    .zip(&b.domains)
                    .any(|(x, y)| x.freq != y.freq)
        })
        .collect()
}

fn adoptions(r: &Run) -> usize {
    r.decisions.iter().filter(|d| d.adopted_plan).count()
}

/// No app is declared unable to meet its deadline while it runs, on a sub-network that
/// meets its accuracy floor, inferences within the deadline less the optimiser's margin.
fn assert_never_wrongly_unreachable(r: &Run, apps: &[(u32, f64)]) {
    let margin = Config::default().optimiser.margin;
    for (t, d) in r.decisions.iter().enumerate() {
        for (i, (id, deadline)) in apps.iter().enumerate() {
            let a = d.apps.iter().find(|a| a.app == *id).unwrap();
            if a.reason != SubnetReason::Unserved(UnservedCause::DeadlineUnreachable) {
                continue;
            }
            // Look back a second for evidence that it was meeting its deadline.
            let recent: Vec<(u32, f64)> = r.measured[t.saturating_sub(100)..=t]
                .iter()
                .filter_map(|m| m[i])
                .collect();
            let meeting = recent
                .iter()
                .any(|(s, ms)| NETS_6[*s as usize].0 >= 76.0 && *ms <= deadline * (1.0 - margin));
            assert!(
                !meeting,
                "tick {t}: app {id} declared DeadlineUnreachable while measured {recent:?}"
            );
        }
    }
}

fn summary(r: &Run, t: usize) -> String {
    format!("{:?}", r.decisions[t])
}

fn detector() -> SimApp {
    SimApp::new(1, 60.0, 15.0)
}

fn classifier(fps: f64) -> SimApp {
    SimApp::new(2, 100.0, fps)
}

const SECONDS: u64 = 60;
/// Changes are allowed while the models learn and the upgrades are tried, one plan at a
/// time past the dwell, each held to a wider margin and backed off when it fails (the
/// manager's hysteresis on sub-networks); none in the last 30 s.
const SETTLED_TICK: usize = (30 * 1000 / TICK_MS) as usize;

#[test]
fn two_apps_sharing_the_gpu_converge_and_stay() {
    for board in [DAEMON, FULL_TELEMETRY] {
        let r = run(board, vec![detector(), classifier(10.0)], SECONDS);
        let late = changes(&r, SETTLED_TICK);
        assert!(
            late.is_empty(),
            "changes after 20 s at ticks {late:?}; first: {}",
            summary(&r, late[0])
        );
        assert!(adoptions(&r) <= 10, "{} plans adopted", adoptions(&r));
        assert_never_wrongly_unreachable(&r, &[(1, 60.0), (2, 100.0)]);
        // Both declare the GPU. Their declared full-clock latencies together (49.44 ms
        // every 66.7 ms and every 100 ms) are more than the device, but the GPU time is
        // the device part of the latency model, and on this board, where latency does not
        // follow the clocks, the fit learns less of it than the seed: whether both fit
        // with the expected interference depends on what the board reports. Each is
        // served at its floor or, where the two do not fit there, below it (floors are
        // given up before deadlines); the classifier, registered last, may be degraded to
        // its cheapest sub-network, never the detector alone.
        let last = r.decisions.last().unwrap();
        let given_up = SubnetReason::Unserved(UnservedCause::FloorGivenUpToShare);
        for a in &last.apps {
            match a.reason {
                SubnetReason::Plan => assert!(NETS_6[a.subnet as usize].0 >= 76.0, "{last:?}"),
                r if r == given_up => {}
                SubnetReason::Unserved(UnservedCause::DegradedForPriority) if a.app == 2 => {
                    assert_eq!(a.subnet, 0)
                }
                other => panic!("app {}: {other:?}", a.app),
            }
        }
    }
}

#[test]
fn two_apps_that_just_fit_together_converge_and_stay() {
    // At 4 fps the classifier's cheapest acceptable level needs 20 % of the GPU: with the
    // detector's 74 % both fit, with little room, so plans sit at the edge of the
    // shared-device constraint where small model updates would tip them over. While the
    // fits say they do not fit, the classifier gives its floor up rather than miss, and
    // its way back to the floor is an upgrade held to the upgrade margin: the run is
    // 10 s longer than the others, and the last 30 s must be as calm.
    for board in [DAEMON, FULL_TELEMETRY] {
        let r = run(board, vec![detector(), classifier(4.0)], SECONDS + 10);
        let late = changes(&r, SETTLED_TICK + (10 * 1000 / TICK_MS) as usize);
        assert!(
            late.is_empty(),
            "changes after 20 s at ticks {late:?}; first: {}",
            summary(&r, late[0])
        );
        assert!(adoptions(&r) <= 8, "{} plans adopted", adoptions(&r));
        assert_never_wrongly_unreachable(&r, &[(1, 60.0), (2, 100.0)]);
        let last = r.decisions.last().unwrap();
        for a in &last.apps {
            assert_eq!(a.reason, SubnetReason::Plan, "{last:?}");
            assert!(NETS_6[a.subnet as usize].0 >= 76.0);
        }
    }
}

#[test]
fn a_single_app_converges_and_stays() {
    for board in [DAEMON, FULL_TELEMETRY] {
        for app in [detector(), classifier(10.0)] {
            let id = app.decl.id;
            let deadline = app.decl.targets.deadline.as_millis_f64();
            let r = run(board, vec![app], SECONDS);
            let late = changes(&r, SETTLED_TICK);
            assert!(
                late.is_empty(),
                "app {id}: changes after 20 s at ticks {late:?}; first: {}",
                summary(&r, late[0])
            );
            assert!(adoptions(&r) <= 8, "{} plans adopted", adoptions(&r));
            assert_never_wrongly_unreachable(&r, &[(id, deadline)]);
            // Served from its first plan to the end.
            for d in &r.decisions[1..] {
                assert!(
                    !matches!(d.apps[0].reason, SubnetReason::Unserved(_)),
                    "{d:?}"
                );
            }
        }
    }
}

/// The same runs on a board whose latency does follow the clocks: the models' seeded split
/// is right, and measurements at lowered clocks are slower than declared. Guards against
/// a cure for the flat board that would make a real board look unable to meet deadlines.
/// The pair, which only just fits, settles last. The classifier gives its floor up at
/// first, and its way back there is held to the upgrade margin
/// (`Manager::raise_with_margin`): the first raise, at 17 s, is predicted to break a
/// second later (its floor's fit, borrowed from a sibling, was short by more than the
/// margin), the next, at 20 s, holds. On the daemon's board a last saving takes the GPU a
/// table entry down at 54 s (the sub-networks as they were), once the power model has
/// learned from the board's readings that the plan in force costs less than seeded and
/// the cheaper point clears the gain threshold. Its run is 30 s longer than the others
/// (10 s, with its saving at 35 s, while the floor came back with the plain margin at
/// 9.5 s), and the last 30 s must be as calm.
#[test]
fn apps_whose_latency_follows_the_clocks_converge_and_stay() {
    for board in [DAEMON, FULL_TELEMETRY] {
        let cases = [
            vec![detector().clock_bound()],
            vec![classifier(10.0).clock_bound()],
            vec![detector().clock_bound(), classifier(4.0).clock_bound()],
        ];
        for apps in cases {
            let ids: Vec<(u32, f64)> = apps
                .iter()
                .map(|a| (a.decl.id, a.decl.targets.deadline.as_millis_f64()))
                .collect();
            let extra = if ids.len() == 2 { 30 } else { 0 };
            let settled = SETTLED_TICK + (extra * 1000 / TICK_MS) as usize;
            let r = run(board, apps, SECONDS + extra);
            let late = changes(&r, settled);
            assert!(
                late.is_empty(),
                "{ids:?}: changes in the last 30 s at ticks {late:?}; first: {}",
                summary(&r, late[0])
            );
            assert!(adoptions(&r) <= 8, "{} plans adopted", adoptions(&r));
            assert_never_wrongly_unreachable(&r, &ids);
            // Each fits on the board, the pair only just (the GPU shared at 74 % + 20 %):
            // all served, the pair at its floors or, where the fits leave no margin there
            // even at the highest clocks, the classifier (registered last) below its floor
            // to keep both deadlines. Never degraded, never declared unable.
            let last = r.decisions.last().unwrap();
            for a in &last.apps {
                let given_up = ids.len() == 2
                    && a.app == 2
                    && a.reason == SubnetReason::Unserved(UnservedCause::FloorGivenUpToShare);
                assert!(
                    given_up || !matches!(a.reason, SubnetReason::Unserved(_)),
                    "{last:?}"
                );
            }
            // Served apps meet their deadlines once settled.
            for (t, m) in r.measured.iter().enumerate().skip(settled) {
                for (i, (id, deadline)) in ids.iter().enumerate() {
                    if let Some((_, ms)) = m[i] {
                        assert!(ms <= *deadline, "tick {t}: app {id} took {ms} ms");
                    }
                }
            }
        }
    }
}

/// As the simulator's S2: two apps at 10 frames/s with 100 ms deadlines share the GPU, one
/// with Dynamic-OFA's six-level library (74 % floor), the other with the seven-level one
/// (73 % floor). Their cheapest acceptable sub-networks take 41.16 and 37.53 ms at full
/// clocks, so together they need well under the whole device: both must be served from
/// the first plan on, settle, and meet their deadlines. The plans budget a collision of
/// their frames on the GPU (the optimiser's `COLLISION_SHARE`), which, with the device
/// time of the seeded split, keeps the first plans a sub-network or two lower than the
/// fits end up allowing on this board, where latency does not follow the clocks: the way
/// up is an upgrade at a time past the dwell, so the run is 10 s longer than the others,
/// and the last 30 s must be as calm.
#[test]
fn two_apps_at_ten_frames_a_second_share_the_gpu_and_are_both_served() {
    for board in [DAEMON, FULL_TELEMETRY] {
        let apps = vec![
            SimApp::new(1, 100.0, 10.0).with_library(&NETS_6, 74.0),
            SimApp::new(2, 100.0, 10.0).with_library(&NETS_7, 73.0),
        ];
        let ids = [(1, 100.0), (2, 100.0)];
        let r = run(board, apps, SECONDS + 10);
        let late = changes(&r, SETTLED_TICK + (10 * 1000 / TICK_MS) as usize);
        assert!(
            late.is_empty(),
            "changes after 30 s at ticks {late:?}; first: {}",
            summary(&r, late[0])
        );
        // Two more than the others allow: the two upgrades.
        assert!(adoptions(&r) <= 10, "{} plans adopted", adoptions(&r));
        assert_never_wrongly_unreachable(&r, &ids);
        // Served from the first plan on, on sub-networks that keep their floors.
        for d in &r.decisions[1..] {
            for (a, (nets, floor)) in d
                .apps
                .iter()
                .zip([(&NETS_6[..], 74.0), (&NETS_7[..], 73.0)])
            {
                assert_eq!(a.reason, SubnetReason::Plan, "{d:?}");
                assert!(nets[a.subnet as usize].0 >= floor, "{d:?}");
            }
        }
        // Few misses over the whole run, none once settled.
        let (mut frames, mut missed) = (0, 0);
        for (t, m) in r.measured.iter().enumerate() {
            for (i, (id, deadline)) in ids.iter().enumerate() {
                if let Some((_, ms)) = m[i] {
                    frames += 1;
                    if ms > *deadline {
                        missed += 1;
                        assert!(t < SETTLED_TICK, "tick {t}: app {id} took {ms} ms");
                    }
                }
            }
        }
        assert!(missed * 100 <= frames, "{missed} of {frames} missed");
    }
}

#[test]
fn closed_loop_decisions_are_deterministic() {
    let a = run(DAEMON, vec![detector(), classifier(10.0)], 20);
    let b = run(DAEMON, vec![detector(), classifier(10.0)], 20);
    assert_eq!(a.decisions, b.decisions);
}

/// The sequence the daemon's log showed: a GPU app's latency model observed at a flat
/// 49.6 ms at one operating point, then at slightly lower clocks. A fit whose
/// non-negativity was enforced by clipping diverged here (each 49.6 ms sample raised the
/// prediction, to 15 s within 30 samples). The prediction must stay at what was measured.
#[test]
fn latency_model_stays_at_flat_measurements_when_the_clocks_move() {
    let mut m = LatencyModel::seeded(
        LatencyCoefs::seed(
            49.44,
            Devices {
                cpu: false,
                gpu: true,
            },
        ),
        Config::default().latency_forgetting,
    );
    let a = ClockRatios {
        gpu: 1.2985,
        cpu: 1.0,
        mem: 1.0,
    };
    let b = ClockRatios {
        gpu: 1.4746,
        cpu: 1.1550,
        mem: 1.0,
    };
    let mut samples = Vec::new();
    samples.extend(std::iter::repeat_n((a, 49.55), 58));
    samples.push((a, 55.29));
    samples.extend(std::iter::repeat_n((b, 49.55), 3));
    samples.push((b, 53.02));
    samples.extend(std::iter::repeat_n((b, 49.55), 200));
    for (i, (r, ms)) in samples.into_iter().enumerate() {
        m.observe(r, ms);
        let p = m.predict_ms(r);
        assert!((45.0..=56.0).contains(&p), "sample {i}: predicts {p} ms");
        // Full clocks can be no slower than what was measured at lower ones.
        assert!(m.predict_ms(ClockRatios::FULL) <= 56.0);
        let c = m.coefs();
        for v in [c.gpu_ms, c.cpu_ms, c.mem_ms, c.fixed_ms] {
            assert!(v.is_finite() && v >= 0.0, "sample {i}: {c:?}");
        }
    }
    assert!((m.predict_ms(b) - 49.6).abs() < 0.5);
}

/// The daemon's first plan: both apps declare the GPU; at their cheapest sub-networks that
/// meet the 76 % floor the detector needs 49.44 / 66.7 = 74 % of it and the classifier
/// 49.44 / 100 = 49 %. Declared latencies are at full clocks with the device to itself,
/// so the two cannot share it at their floors. Deadlines come before accuracy: of equal
/// priority, both give their floors up (the classifier, registered last, first; then the
/// detector) and both are served on their cheapest sub-networks, and the reason says
/// why. When one is less important, its floor goes first, and when that is not enough it
/// is degraded, told to run its cheapest sub-network, whose load the other is planned
/// beside: degrading makes no room, a degraded app still runs.
#[test]
fn over_committed_gpu_gives_floors_up_then_degrades_by_priority_and_says_why() {
    let det = detector().decl;
    let cls = classifier(10.0).decl;
    let mut m = Manager::new(Config::default());
    let d = m.step(&common::snapshot(0, vec![det.clone(), cls.clone()]));
    let given_up = SubnetReason::Unserved(UnservedCause::FloorGivenUpToShare);
    for a in &d.apps {
        assert_eq!((a.subnet, a.reason), (0, given_up), "{d:?}");
    }
    let text = d.apps[1].reason.to_string();
    assert!(
        text.contains("below its accuracy floor") && text.contains("every deadline is kept"),
        "{text}"
    );
    // Priority decides before registration order.
    let mut m = Manager::new(Config::default());
    let mut cls_first = cls;
    cls_first.targets.priority = 1;
    let d = m.step(&common::snapshot(0, vec![det, cls_first]));
    let degraded = SubnetReason::Unserved(UnservedCause::DegradedForPriority);
    assert_eq!((d.apps[0].subnet, d.apps[0].reason), (0, degraded), "{d:?}");
    let text = d.apps[0].reason.to_string();
    assert!(
        text.contains("cheapest sub-network") && text.contains("cannot be served together"),
        "{text}"
    );
    assert_eq!(d.apps[1].reason, SubnetReason::Plan);
    assert!(NETS_6[d.apps[1].subnet as usize].0 >= 76.0);
}
