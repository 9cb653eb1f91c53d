//! examples/c-app end to end: `dnngov_mlp_app.c` compiled with `cc -Wall -Werror` against
//! dnngov.h and libdnngov_client.so, run standalone and under an in-process registry, with
//! the per-inference trace (`DNNGOV_TRACE_DIR`) checked against the app's own report.

use dnngov_agent::registry::{AppHandle, Registry, RegistryConfig, RegistryEvent};
use dnngov_client::TRACE_HEADER;
use dnngov_tests::build_mlp_app;
use governor_proto::shm::Reason;
use governor_proto::MAX_APPS;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The library's size, as the C source declares it.
const SUBNETS: usize = 6;

/// The app with the trace in `traces` and the agent's socket at `socket`.
fn app(binary: &Path, traces: &Path, socket: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("DNNGOV_TRACE_DIR", traces)
        .env("DNNGOV_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits at most 60 s for `child` to exit and returns what it printed.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for the app").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the app did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the app's output")
}

/// The JSON report: the last line on stdout of an app that exited 0.
fn report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the app exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("the app printed a report");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

#[derive(Debug)]
struct Record {
    end_ns: u64,
    latency_ns: u64,
    deadline_ns: u64,
    subnet: u32,
    accuracy_pct: f64,
}

/// The trace file's records; fails on a header missing or a line not whole.
fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the trace {}: {e}", path.display()));
    parse(&text, path)
}

/// The records written so far, while the app runs: none before its header is in, and
/// not a line that a read may have caught half-copied.
fn records_so_far(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text.len() < TRACE_HEADER.len() {
        return Vec::new();
    }
    let whole = text.rfind('\n').map_or(0, |end| end + 1);
    parse(&text[..whole], path)
}

fn parse(text: &str, path: &Path) -> Vec<Record> {
    let mut lines = text.split_inclusive('\n');
    assert_eq!(lines.next(), Some(TRACE_HEADER), "{}", path.display());
    lines
        .map(|line| {
            let body = line
                .strip_suffix('\n')
                .unwrap_or_else(|| panic!("a line cut short: {line:?}"));
            let f: Vec<&str> = body.split(',').collect();
            assert_eq!(f.len(), 5, "five fields: {line:?}");
            let number = |i: usize| -> u64 {
                f[i].parse()
                    .unwrap_or_else(|e| panic!("field {i} of {line:?}: {e}"))
            };
            Record {
                end_ns: number(0),
                latency_ns: number(1),
                deadline_ns: number(2),
                subnet: number(3) as u32,
                accuracy_pct: f[4].parse().expect("an accuracy"),
            }
        })
        .collect()
}

fn trace_file(dir: &Path, app: &str, child: &Child) -> PathBuf {
    dir.join(format!("{app}-{}.csv", child.id()))
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn standalone_every_frame_is_traced_and_larger_subnets_take_longer() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_mlp_app(dir.path());
    let frames = 4 * SUBNETS;
    let child = app(
        &binary,
        dir.path(),
        &dir.path().join("no-agent.sock"),
        &[
            "--name",
            "mlp-cycle",
            "--cycle",
            "--fps",
            "1000",
            "--deadline-ms",
            "50",
            "--frames",
            &frames.to_string(),
        ],
    )
    .spawn()
    .expect("the app starts");
    let path = trace_file(dir.path(), "mlp-cycle", &child);
    let report = report(&finish(child));

    assert_eq!(report["frames"], frames);
    assert_eq!(
        report["switches"],
        frames - 1,
        "a switch per frame: {report}"
    );
    assert_eq!(report["connected"], false);
    let per_subnet = report["frames_per_subnet"].as_array().unwrap();
    assert_eq!(per_subnet.len(), SUBNETS);
    assert!(per_subnet.iter().all(|e| e[1] == 4), "{report}");

    let written = records(&path);
    assert_eq!(written.len(), frames, "a line per frame");
    for (i, record) in written.iter().enumerate() {
        assert_eq!(record.subnet as usize, i % SUBNETS, "frame {i} ran in turn");
        assert!(record.latency_ns > 0);
        assert_eq!(record.deadline_ns, 50_000_000);
    }
    assert!(written.windows(2).all(|w| w[0].end_ns < w[1].end_ns));
    let accuracy: Vec<f64> = written[..SUBNETS].iter().map(|r| r.accuracy_pct).collect();
    assert!(
        accuracy.windows(2).all(|w| w[0] < w[1]),
        "declared accuracies rise with size: {accuracy:?}"
    );
    let mean_ms = written.iter().map(|r| r.latency_ns as f64).sum::<f64>() / frames as f64 / 1e6;
    let reported = report["latency_mean_ms"].as_f64().unwrap();
    assert!(
        (mean_ms - reported).abs() < 1e-3,
        "the trace and the report measure the same latencies: {mean_ms} against {reported}"
    );
    let declared = accuracy.iter().sum::<f64>() / SUBNETS as f64;
    let reported = report["declared_accuracy_mean_pct"].as_f64().unwrap();
    assert!(
        (declared - reported).abs() < 1e-3,
        "{declared} against {reported}"
    );

    // Ratios within one run: the largest does more than ten times the smallest's work.
    let latency_of = |subnet: u32| {
        median(
            written
                .iter()
                .filter(|r| r.subnet == subnet)
                .map(|r| r.latency_ns)
                .collect(),
        )
    };
    let medians: Vec<u64> = (0..SUBNETS as u32).map(latency_of).collect();
    assert!(
        medians[SUBNETS - 1] > 3 * medians[0],
        "the largest sub-network at least 3 times slower than the smallest: {medians:?} ns"
    );
}

fn joined(registry: &Registry, name: &str) -> Arc<AppHandle> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match registry.events().recv_deadline(deadline) {
            Ok(RegistryEvent::Joined(handle)) if handle.name == name => return handle,
            Ok(_) => continue,
            Err(_) => panic!("no app joined as {name:?}"),
        }
    }
}

#[test]
fn under_an_agent_it_runs_what_the_agent_asks_and_sigterm_ends_it_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_mlp_app(dir.path());
    let registry = Registry::start(RegistryConfig {
        socket_path: dir.path().join("agent.sock"),
        group: None,
        max_apps: MAX_APPS,
    })
    .expect("the registry starts");
    let child = app(
        &binary,
        dir.path(),
        registry.socket_path(),
        &["--name", "mlp-governed", "--fps", "200"],
    )
    .spawn()
    .expect("the app starts");
    let path = trace_file(dir.path(), "mlp-governed", &child);
    let handle = joined(&registry, "mlp-governed");
    assert_eq!(handle.subnets.len(), SUBNETS);
    wait_until("a frame on the default, the largest", || {
        records_so_far(&path)
            .iter()
            .any(|r| r.subnet as usize == SUBNETS - 1)
    });
    handle.request_subnet(0, Reason::Deadline).unwrap();
    wait_until("frames on the smallest", || {
        records_so_far(&path)
            .iter()
            .filter(|r| r.subnet == 0)
            .count()
            >= 3
    });
    assert_eq!(handle.report().active_subnet, Some(0), "acknowledged");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let report = report(&finish(child));
    let written = records(&path);
    assert_eq!(
        report["frames"],
        written.len(),
        "the frame under way finished and was traced: {report}"
    );
    assert_eq!(report["connected"], true);
    assert!(report["switches"].as_u64().unwrap() >= 1, "{report}");
    let per_subnet = report["frames_per_subnet"].as_array().unwrap();
    assert!(per_subnet[0][1].as_u64().unwrap() >= 3, "{report}");
    assert!(
        per_subnet[SUBNETS - 1][1].as_u64().unwrap() >= 1,
        "{report}"
    );
    // The subnets in the trace switch once, from the default to what the agent asked.
    let first_small = written.iter().position(|r| r.subnet == 0).unwrap();
    assert!(written[..first_small]
        .iter()
        .all(|r| r.subnet as usize == SUBNETS - 1));
    assert!(written[first_small..].iter().all(|r| r.subnet == 0));
    assert_eq!(
        handle.report().inferences_completed,
        written.len() as u64,
        "the agent counted what the trace holds"
    );
}

#[test]
fn a_killed_app_leaves_only_whole_trace_lines() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_mlp_app(dir.path());
    let mut child = app(
        &binary,
        dir.path(),
        &dir.path().join("no-agent.sock"),
        &["--name", "mlp-killed", "--cycle", "--fps", "1000"],
    )
    .spawn()
    .expect("the app starts");
    let path = trace_file(dir.path(), "mlp-killed", &child);
    wait_until("some frames in the trace", || {
        records_so_far(&path).len() >= 20
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // `records` fails on a line cut short.
    assert!(records(&path).len() >= 20);
}

#[test]
fn an_unwritable_trace_dir_is_named_once_and_the_app_runs_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_mlp_app(dir.path());
    let missing = dir.path().join("no-such-folder");
    let output = finish(
        app(
            &binary,
            &missing,
            &dir.path().join("no-agent.sock"),
            &["--fps", "1000", "--frames", "3"],
        )
        .spawn()
        .expect("the app starts"),
    );
    let report = report(&output);
    assert_eq!(report["frames"], 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings = stderr
        .lines()
        .filter(|l| l.contains(&*missing.to_string_lossy()))
        .count();
    assert_eq!(warnings, 1, "one warning naming the folder:\n{stderr}");
    assert!(!missing.exists());
}

#[test]
fn a_bad_option_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_mlp_app(dir.path());
    for (args, named) in [
        (&["--fps", "fast"][..], "--fps"),
        (&["--frames", "-3"][..], "--frames"),
        (&["--accuracy-floor", "120"][..], "--accuracy-floor"),
        (&["--deadline-ms"][..], "--deadline-ms"),
        (&["--colour", "blue"][..], "--colour"),
    ] {
        let output = Command::new(&binary).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().next().unwrap_or_default().contains(named),
            "{args:?}: {stderr}"
        );
    }
}
