//! The per-inference trace through the Rust API: one line per finished inference, in the
//! file at once, with the sub-network that ran and its declared accuracy; a folder that
//! cannot be written leaves the app running without one.

use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target, TRACE_HEADER};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn spec(name: &str) -> AppSpec {
    let subnet = |id, accuracy_pct| Subnet {
        id,
        name: format!("level-{id}"),
        accuracy_pct,
        latency_ms: None,
        relative_cost: None,
    };
    AppSpec {
        name: name.into(),
        devices: vec![Device::Cpu],
        subnets: vec![subnet(3, 61.25), subnet(7, 74.5)],
        target: Target {
            deadline_ms: 20.0,
            period_ms: None,
            accuracy_floor_pct: None,
            priority: 0,
        },
        default_subnet: None,
    }
}

/// No agent: the trace must not depend on one.
fn options(dir: &Path, trace_dir: PathBuf) -> Options {
    Options {
        socket_path: dir.join("no-agent.sock"),
        trace_dir: Some(trace_dir),
        ..Options::default()
    }
}

struct Record {
    end_ns: u64,
    latency_ns: u64,
    deadline_ns: u64,
    subnet: u32,
    accuracy_pct: f64,
}

fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.split_inclusive('\n');
    assert_eq!(lines.next(), Some(TRACE_HEADER), "the header first");
    lines
        .map(|line| {
            let fields: Vec<&str> = line
                .strip_suffix('\n')
                .unwrap_or_else(|| panic!("a whole line: {line:?}"))
                .split(',')
                .collect();
            assert_eq!(fields.len(), 5, "five fields: {line:?}");
            Record {
                end_ns: fields[0].parse().unwrap(),
                latency_ns: fields[1].parse().unwrap(),
                deadline_ns: fields[2].parse().unwrap(),
                subnet: fields[3].parse().unwrap(),
                accuracy_pct: fields[4].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn every_finished_inference_is_one_line_in_the_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::register(
        spec("tracer"),
        options(dir.path(), dir.path().to_path_buf()),
    )
    .unwrap();
    let path = session.trace_path().expect("a trace").to_path_buf();
    assert_eq!(
        path,
        dir.path()
            .join(format!("tracer-{}.csv", std::process::id()))
    );
    assert!(
        records(&path).is_empty(),
        "only the header before any inference"
    );

    // The default (most accurate) entry twice, then the app runs the other one.
    let mut latencies = Vec::new();
    for (i, subnet) in [7, 7, 3, 3, 3].into_iter().enumerate() {
        session.ack_subnet(subnet);
        let before = dnngov_client::monotonic_ns();
        session.begin(Duration::from_millis(5 + i as u64));
        std::thread::sleep(Duration::from_micros(200));
        latencies.push(session.end());
        let written = records(&path);
        assert_eq!(
            written.len(),
            i + 1,
            "the line is in the file when end returns"
        );
        let last = written.last().unwrap();
        assert!(last.end_ns > before);
        assert_eq!(last.subnet, subnet);
        assert_eq!(last.deadline_ns, (5 + i as u64) * 1_000_000);
    }
    let written = records(&path);
    for (record, latency) in written.iter().zip(&latencies) {
        assert_eq!(u128::from(record.latency_ns), latency.as_nanos());
        assert!(record.latency_ns >= 200_000, "the sleep is inside");
        let declared = if record.subnet == 7 { 74.5 } else { 61.25 };
        assert_eq!(record.accuracy_pct, declared);
    }
    assert!(written.windows(2).all(|w| w[0].end_ns < w[1].end_ns));
}

#[test]
fn a_second_session_of_the_same_app_appends_without_a_second_header() {
    let dir = tempfile::tempdir().unwrap();
    let trace_dir = dir.path().join("traces");
    std::fs::create_dir(&trace_dir).unwrap();
    for _ in 0..2 {
        let session =
            Session::register(spec("camera/front"), options(dir.path(), trace_dir.clone()))
                .unwrap();
        session.begin(Duration::ZERO);
        session.end();
    }
    let path = trace_dir.join(format!("camera_front-{}.csv", std::process::id()));
    let written = records(&path);
    assert_eq!(written.len(), 2, "one header, then both sessions' lines");
    assert_eq!(written[0].deadline_ns, 0, "no deadline is written as 0");
}

#[test]
fn a_trace_dir_that_cannot_be_written_leaves_the_app_running_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, "").unwrap();
    let session = Session::register(spec("untraced"), options(dir.path(), not_a_folder.clone()))
        .expect("a trace problem never fails the registration");
    assert_eq!(session.trace_path(), None);
    session.begin(Duration::from_millis(1));
    session.end();
    assert_eq!(session.counters().0, 1);
    assert_eq!(
        std::fs::read(&not_a_folder).unwrap(),
        b"",
        "nothing written"
    );
}
