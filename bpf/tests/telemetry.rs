//! Telemetry against real processes: CPU time of a busy and an idle child,
//! inferences through the markers (linked and dlopen'ed), detaching, errors for
//! binaries without markers, and the procfs fallback against BPF.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    client_cdylib_path, parse_inferences, skip_unless_root, unique_app_id, workload_path, Workload,
};
use dnngov_bpf::{
    loaded_program_ids, AppBinary, Config, Error, InferenceCounters, InferenceRecord, Nanos,
    SchedVariant, SharedMemoryInferences, Source, StatsEnabled, Telemetry, MARKER_BEGIN,
};

const BUSY_MS: u64 = 300;

fn bpf() -> Telemetry {
    Telemetry::with_bpf(&Config::default()).expect("BPF telemetry loads as root")
}

fn within(measured: u64, expected: u64, fraction: f64) -> bool {
    (measured as f64 - expected as f64).abs() <= expected as f64 * fraction
}

/// Runs the busy workload under `telemetry`, returning (telemetry's on-CPU
/// figure, the child's own CPU time), both in ns.
fn measure_busy_child(telemetry: &mut Telemetry) -> (u64, u64) {
    let mut child = Workload::spawn(&["busy", &BUSY_MS.to_string()]);
    telemetry.watch(child.pid).expect("watch");
    let before = telemetry
        .snapshot()
        .process(child.pid)
        .expect("watched")
        .on_cpu;
    child.go();
    let own: u64 = child
        .line()
        .strip_prefix("cpu ")
        .and_then(|v| v.parse().ok())
        .expect("cpu <ns>");
    child.until_done();
    let after = telemetry
        .snapshot()
        .process(child.pid)
        .expect("watched")
        .on_cpu;
    telemetry.unwatch(child.pid);
    child.finish();
    (after.since(before).0, own)
}

#[test]
fn busy_child_measures_300ms_on_cpu_within_10_percent() {
    if skip_unless_root("busy_child_measures_300ms_on_cpu_within_10_percent") {
        return;
    }
    let mut t = bpf();
    let (measured, own) = measure_busy_child(&mut t);
    assert!(
        within(measured, BUSY_MS * 1_000_000, 0.10),
        "BPF measured {measured} ns, expected {BUSY_MS} ms"
    );
    assert!(
        within(measured, own, 0.10),
        "BPF measured {measured} ns, the child measured {own} ns itself"
    );
    let snap = t.snapshot();
    assert!(snap.cpus.iter().all(|c| c.source == Source::Bpf));
    assert!(
        snap.total_busy().0 >= measured,
        "CPUs were busy at least as long as the child"
    );
    // The per-tick read gives the same CPUs, counted on from the full read.
    let quick = t.cpu_snapshot();
    assert_eq!(quick.cpus.len(), snap.cpus.len());
    assert!(quick.cpus.iter().all(|c| c.source == Source::Bpf));
    assert!(quick.total_busy() >= snap.total_busy());
    assert!(quick.processes.is_empty() && quick.apps.is_empty());
}

#[test]
fn idle_child_measures_near_zero() {
    if skip_unless_root("idle_child_measures_near_zero") {
        return;
    }
    let mut t = bpf();
    let mut child = Workload::spawn(&["idle"]);
    t.watch(child.pid).expect("watch");
    child.go();
    child.until_done();
    std::thread::sleep(Duration::from_millis(BUSY_MS));
    let on_cpu = t.snapshot().process(child.pid).expect("watched").on_cpu;
    assert_eq!(t.snapshot().process(child.pid).unwrap().source, Source::Bpf);
    child.finish();
    assert!(on_cpu < Nanos(5_000_000), "idle child measured {on_cpu:?}");
}

#[test]
fn unwatched_processes_are_not_reported() {
    if skip_unless_root("unwatched_processes_are_not_reported") {
        return;
    }
    let mut t = bpf();
    let child = Workload::spawn(&["idle"]);
    assert!(t.snapshot().process(child.pid).is_none());
    t.watch(child.pid).unwrap();
    assert!(t.snapshot().process(child.pid).is_some());
    t.unwatch(child.pid);
    assert!(t.snapshot().process(child.pid).is_none());
    child.finish();
}

#[test]
fn classic_tracepoint_variant_measures_the_busy_child() {
    if skip_unless_root("classic_tracepoint_variant_measures_the_busy_child") {
        return;
    }
    let config = Config {
        sched_variant: SchedVariant::Classic,
        ..Config::default()
    };
    let mut t = match Telemetry::with_bpf(&config) {
        Ok(t) => t,
        Err(Error::Unsupported(why)) => {
            eprintln!("skipping classic_tracepoint_variant_measures_the_busy_child: {why}");
            return;
        }
        Err(e) => panic!("classic sched_switch: {e}"),
    };
    assert!(!t.sched_is_btf());
    let (measured, own) = measure_busy_child(&mut t);
    assert!(
        within(measured, own, 0.10),
        "classic measured {measured}, own {own}"
    );
}

/// Checks every inference of app `app_id` against the child's own figures.
fn check_inferences(t: &mut Telemetry, app_id: u32, pid: u32, lines: &[String]) {
    let own = parse_inferences(lines);
    assert_eq!(own.len(), 100);
    let own_misses = own
        .iter()
        .filter(|m| m.deadline_ns != 0 && m.latency_ns > m.deadline_ns)
        .count() as u64;
    // By the workload's plan: every fourth inference sleeps past a 1 ms deadline.
    assert_eq!(own_misses, 25);

    let app = *t.snapshot().app(app_id).expect("attached app in snapshot");
    assert_eq!(app.source, Source::Bpf);
    assert_eq!(app.counters.count, 100);
    assert_eq!(app.counters.misses, own_misses);
    let own_sum: u64 = own.iter().map(|m| m.latency_ns).sum();
    assert!(
        app.counters.latency_sum <= Nanos(own_sum)
            && own_sum - app.counters.latency_sum.0 <= 100 * 1_000_000,
        "latency sum {:?} vs own {own_sum}",
        app.counters.latency_sum
    );

    assert!(t.inference_wait_fd().is_some());
    assert!(
        t.wait_inferences(Duration::from_secs(1)),
        "records are waiting"
    );
    let mut records: Vec<InferenceRecord> = Vec::new();
    t.drain_inferences(&mut records);
    records.retain(|r| r.app_id == app_id);
    assert_eq!(records.len(), 100, "one ring record per inference");
    assert_eq!(app.dropped_records, 0);
    for (r, m) in records.iter().zip(&own) {
        assert_eq!(r.seq, m.seq, "records arrive in order");
        assert_eq!(r.pid, pid);
        assert_eq!(r.subnet, (m.seq % 3) as u32);
        assert_eq!(r.deadline.map_or(0, |d| d.0), m.deadline_ns);
        let lat = r.latency().0;
        assert!(
            lat <= m.latency_ns && m.latency_ns - lat <= 1_000_000,
            "inference {}: BPF {lat} ns, own {} ns",
            m.seq,
            m.latency_ns
        );
        assert_eq!(
            r.missed(),
            m.deadline_ns != 0 && m.latency_ns > m.deadline_ns
        );
    }
}

#[test]
fn markers_in_the_executable_count_latency_and_misses_exactly() {
    if skip_unless_root("markers_in_the_executable_count_latency_and_misses_exactly") {
        return;
    }
    let mut t = bpf();
    let app_id = unique_app_id(1);
    let mut child = Workload::spawn(&["markers", &app_id.to_string(), "100"]);
    t.attach_app(&AppBinary {
        app_id,
        binary: workload_path(),
        pid: Some(child.pid),
    })
    .expect("attach to the workload executable");
    child.go();
    let lines = child.until_done();
    check_inferences(&mut t, app_id, child.pid, &lines);
    child.finish();
}

#[test]
fn markers_in_a_cdylib_opened_after_attaching_also_fire() {
    if skip_unless_root("markers_in_a_cdylib_opened_after_attaching_also_fire") {
        return;
    }
    let mut t = bpf();
    let lib = client_cdylib_path();
    let app_id = unique_app_id(2);
    let mut child = Workload::spawn(&[
        "dlopen",
        lib.to_str().expect("utf-8 path"),
        &app_id.to_string(),
        "100",
    ]);
    t.attach_app(&AppBinary {
        app_id,
        binary: lib.clone(),
        pid: None,
    })
    .expect("attach to the client cdylib");
    child.go();
    let lines = child.until_done();
    check_inferences(&mut t, app_id, child.pid, &lines);
    child.finish();
}

#[test]
fn apps_sharing_one_binary_share_probes_and_count_only_their_own() {
    if skip_unless_root("apps_sharing_one_binary_share_probes_and_count_only_their_own") {
        return;
    }
    // A private copy (its own inode), so no other test's processes hit these probes.
    let binary =
        std::env::temp_dir().join(format!("dnngov-workload-shared-{}", std::process::id()));
    std::fs::copy(workload_path(), &binary).unwrap();
    let mut t = bpf();
    let ids = [unique_app_id(7), unique_app_id(8)];
    let mut children: Vec<Workload> = ids
        .iter()
        .map(|id| Workload::spawn_binary(&binary, &["markers", &id.to_string(), "100"]))
        .collect();
    for id in ids {
        t.attach_app(&AppBinary {
            app_id: id,
            binary: binary.clone(),
            pid: None,
        })
        .unwrap();
    }
    let _stats = StatsEnabled::new().expect("BPF run-time stats");
    let begin_runs = |t: &Telemetry| {
        t.program_run_stats()
            .into_iter()
            .find(|(name, _)| *name == "marker_begin")
            .expect("marker_begin loaded")
            .1
            .run_cnt
    };
    let runs_before = begin_runs(&t);
    for c in &mut children {
        c.go();
    }
    for c in &mut children {
        c.until_done();
    }
    // One probe per call: a second pair of links on the file would double this.
    assert_eq!(begin_runs(&t).wrapping_sub(runs_before), 200);
    for id in ids {
        assert_eq!(t.snapshot().app(id).unwrap().counters.count, 100);
    }
    let mut records = Vec::new();
    t.drain_inferences(&mut records);
    for (id, child) in ids.iter().zip(&children) {
        let mine: Vec<_> = records.iter().filter(|r| r.app_id == *id).collect();
        assert_eq!(mine.len(), 100);
        assert!(mine.iter().all(|r| r.pid == child.pid));
    }
    // Detaching one leaves the other counted through the shared probes.
    assert!(t.detach_app(ids[0]));
    assert!(t.snapshot().app(ids[0]).is_none());
    assert_eq!(t.snapshot().app(ids[1]).unwrap().counters.count, 100);
    for c in children {
        c.finish();
    }
    let _ = std::fs::remove_file(&binary);
}

#[test]
fn markers_of_unregistered_apps_are_ignored() {
    if skip_unless_root("markers_of_unregistered_apps_are_ignored") {
        return;
    }
    let mut t = bpf();
    let app_id = unique_app_id(3);
    let mut child = Workload::spawn(&["markers", &(app_id + 1).to_string(), "100"]);
    t.attach_app(&AppBinary {
        app_id,
        binary: workload_path(),
        pid: Some(child.pid),
    })
    .unwrap();
    child.go();
    child.until_done();
    assert_eq!(t.snapshot().app(app_id).unwrap().counters.count, 0);
    assert!(t.snapshot().app(app_id + 1).is_none());
    child.finish();
}

#[test]
fn detach_leaves_no_program_behind() {
    if skip_unless_root("detach_leaves_no_program_behind") {
        return;
    }
    let mut t = bpf();
    let app_id = unique_app_id(4);
    t.attach_app(&AppBinary {
        app_id,
        binary: workload_path(),
        pid: None,
    })
    .unwrap();
    let ours = t.program_ids();
    assert!(ours.len() >= 3, "sched_switch and both markers: {ours:?}");
    let loaded = loaded_program_ids();
    assert!(ours.iter().all(|id| loaded.contains(id)));
    assert!(t.detach_app(app_id));
    assert!(!t.detach_app(app_id), "second detach finds nothing");
    drop(t);
    // The kernel frees programs a little after their last link and fd close.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let loaded = loaded_program_ids();
        let left: Vec<_> = ours.iter().filter(|id| loaded.contains(id)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "programs still loaded: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_without_markers_is_an_error_naming_binary_and_symbol() {
    if skip_unless_root("binary_without_markers_is_an_error_naming_binary_and_symbol") {
        return;
    }
    let mut t = bpf();
    let stripped =
        std::env::temp_dir().join(format!("dnngov-workload-stripped-{}", std::process::id()));
    std::fs::copy(workload_path(), &stripped).unwrap();
    let strip_ok = std::process::Command::new("strip")
        .arg(&stripped)
        .status()
        .is_ok_and(|s| s.success());
    // This test executable does not link the client; a stripped copy of the
    // workload has the markers only in the symbol table strip removed.
    let mut candidates = vec![std::env::current_exe().unwrap()];
    if strip_ok {
        candidates.push(stripped.clone());
    } else {
        eprintln!("`strip` unavailable: checking only a binary that never had the markers");
    }
    for binary in candidates {
        let err = t
            .attach_app(&AppBinary {
                app_id: unique_app_id(5),
                binary: binary.clone(),
                pid: None,
            })
            .expect_err("no markers to attach to");
        match &err {
            Error::MarkerNotFound { binary: b, symbol } => {
                assert_eq!(b, &binary);
                assert_eq!(*symbol, MARKER_BEGIN);
            }
            other => panic!("{}: unexpected error {other}", binary.display()),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&binary.display().to_string()) && msg.contains(MARKER_BEGIN),
            "{msg}"
        );
    }
    let _ = std::fs::remove_file(&stripped);

    let missing = PathBuf::from("/nonexistent/dnngov-app");
    match t.attach_app(&AppBinary {
        app_id: unique_app_id(6),
        binary: missing.clone(),
        pid: None,
    }) {
        Err(Error::Binary { binary, .. }) => assert_eq!(binary, missing),
        other => panic!("expected a Binary error, got {other:?}"),
    }
}

#[test]
fn gpu_source_is_unavailable_exactly_when_no_tracepoint_attached() {
    if skip_unless_root("gpu_source_is_unavailable_exactly_when_no_tracepoint_attached") {
        return;
    }
    let gpu = bpf().snapshot().gpu;
    assert_eq!(
        gpu.source == Source::Unavailable,
        gpu.tracepoints.is_empty()
    );
    assert_eq!(
        gpu.source == Source::Unavailable,
        gpu.busy.is_none() && gpu.processes.is_empty()
    );
}

/// Runs the busy child under `t` and the procfs fallback together and checks
/// the fallback's figures against BPF's.
fn check_fallback_agrees(t: &mut Telemetry) {
    let mut procfs = Telemetry::with_procfs(&Config::default());
    assert_eq!(procfs.source(), Source::Procfs);
    let mut child = Workload::spawn(&["busy", &BUSY_MS.to_string()]);
    t.watch(child.pid).unwrap();
    procfs.watch(child.pid).unwrap();
    let (b0, p0) = (t.snapshot(), procfs.snapshot());
    child.go();
    child.until_done();
    let (b1, p1) = (t.snapshot(), procfs.snapshot());
    let pid = child.pid;
    child.finish();

    let on_cpu = |s: &dnngov_bpf::Snapshot| s.process(pid).expect("watched").on_cpu;
    let bpf_proc = on_cpu(&b1).since(on_cpu(&b0));
    let procfs_proc = on_cpu(&p1).since(on_cpu(&p0));
    assert_eq!(p1.process(pid).unwrap().source, Source::Procfs);
    assert!(
        within(procfs_proc.0, bpf_proc.0, 0.15),
        "process: procfs {procfs_proc:?} vs BPF {bpf_proc:?}"
    );
    // The child alone kept one CPU busy for 300 ms, so this is never a
    // comparison of two near-zero figures.
    let bpf_busy = b1.total_busy().since(b0.total_busy());
    let procfs_busy = p1.total_busy().since(p0.total_busy());
    assert!(p1.cpus.iter().all(|c| c.source == Source::Procfs));
    assert!(
        within(procfs_busy.0, bpf_busy.0, 0.15),
        "all CPUs: procfs {procfs_busy:?} vs BPF {bpf_busy:?}"
    );
}

#[test]
fn fallback_agrees_with_bpf_within_15_percent() {
    if skip_unless_root("fallback_agrees_with_bpf_within_15_percent") {
        return;
    }
    check_fallback_agrees(&mut bpf());
}

struct FixedCounters(Vec<(u32, InferenceCounters)>);

impl SharedMemoryInferences for FixedCounters {
    fn inference_counters(&self) -> Vec<(u32, InferenceCounters)> {
        self.0.clone()
    }
}

#[test]
fn fallback_takes_inferences_from_shared_memory_and_measures_cpu() {
    let mut t = Telemetry::with_procfs(&Config::default());
    let counters = InferenceCounters {
        count: 100,
        misses: 25,
        latency_sum: Nanos(150_000_000),
    };
    t.set_shared_memory(Box::new(FixedCounters(vec![(7, counters)])));
    let app = *t.snapshot().app(7).expect("shm app reported");
    assert_eq!(app.source, Source::SharedMemory);
    assert_eq!(app.counters, counters);
    assert!(matches!(
        t.attach_app(&AppBinary {
            app_id: 7,
            binary: workload_path(),
            pid: None
        }),
        Err(Error::NeedsBpf(_))
    ));

    // Tick resolution (10 ms at most) is well inside 15 % of 300 ms.
    let (measured, own) = measure_busy_child(&mut t);
    assert!(
        within(measured, own, 0.15),
        "procfs {measured} vs own {own}"
    );
}

#[test]
fn open_uses_bpf_as_root_and_falls_back_with_a_reason_otherwise() {
    let t = Telemetry::open(&Config::default());
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(t.source(), Source::Bpf);
        assert_eq!(t.fallback_reason(), None);
    } else {
        assert_eq!(t.source(), Source::Procfs);
        let why = t.fallback_reason().expect("a reason for the fallback");
        eprintln!("fell back: {why}");
        assert!(!why.is_empty());
        assert!(t.snapshot().cpus.iter().all(|c| c.source == Source::Procfs));
    }
}
