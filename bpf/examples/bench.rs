//! Cost of the telemetry programs, from the kernel's own run-time accounting
//! (`kernel.bpf_stats_enabled`, switched on only while this runs).
//!
//! ```text
//! cargo build --release -p dnngov-bpf --examples
//! sudo target/release/examples/bench [switch-round-trips] [marker-pairs]
//! ```
//!
//! 1. sched_switch: a two-thread ping-pong (watched, so the per-process path
//!    is taken) drives context switches; prints ns per program run.
//! 2. Markers: a tight loop of begin/end pairs, first unprobed then probed;
//!    prints the BPF run time per pair and the whole cost seen by the app
//!    (uprobe trap + BPF), the difference of the two loops.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use dnngov_bpf::{AppBinary, Config, ProgramRunStats, StatsEnabled, Telemetry};

struct Child {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    pid: u32,
}

fn workload() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name("workload")
}

fn spawn(args: &[&str]) -> Child {
    let mut child = Command::new(workload())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the workload example (build it with --examples)");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let pid = line
        .trim()
        .trim_start_matches("ready ")
        .parse()
        .expect("pid");
    Child { child, out, pid }
}

impl Child {
    fn run(mut self) -> Vec<String> {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
        stdin.flush().expect("go");
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 || line.trim() == "done" {
                break;
            }
            lines.push(line.trim().to_string());
        }
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        lines
    }
}

fn stats(t: &Telemetry, name: &str) -> ProgramRunStats {
    t.program_run_stats()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

fn pair_ns(lines: &[String]) -> f64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("pair_ns ")?.parse().ok())
        .expect("pair_ns line")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let round_trips: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let pairs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);

    let mut t = match Telemetry::with_bpf(&Config::default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench needs BPF (run as root): {e}");
            std::process::exit(1);
        }
    };
    let _stats = match StatsEnabled::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot enable BPF run-time stats: {e}");
            std::process::exit(1);
        }
    };

    let child = spawn(&["switch", &round_trips.to_string()]);
    t.watch(child.pid).expect("watch");
    let before = stats(&t, "sched_switch");
    let start = Instant::now();
    child.run();
    let wall = start.elapsed();
    let after = stats(&t, "sched_switch");
    let runs = after.run_cnt.wrapping_sub(before.run_cnt);
    println!(
        "sched_switch: {runs} events in {:.2} s ({:.0}/s), {:.1} ns per event",
        wall.as_secs_f64(),
        runs as f64 / wall.as_secs_f64(),
        after.ns_per_run_since(&before).unwrap_or(f64::NAN)
    );

    let app_id = 0x7e57_0001;
    let unprobed = pair_ns(&spawn(&["tight", &app_id.to_string(), &pairs.to_string()]).run());
    let child = spawn(&["tight", &app_id.to_string(), &pairs.to_string()]);
    t.attach_app(&AppBinary {
        app_id,
        binary: workload(),
        pid: Some(child.pid),
    })
    .expect("attach markers");
    let (b0, e0) = (stats(&t, "marker_begin"), stats(&t, "marker_end"));
    let probed = pair_ns(&child.run());
    let (b1, e1) = (stats(&t, "marker_begin"), stats(&t, "marker_end"));
    let count = t.snapshot().app(app_id).map_or(0, |a| a.counters.count);
    println!(
        "marker_begin {:.1} ns, marker_end {:.1} ns per run",
        b1.ns_per_run_since(&b0).unwrap_or(f64::NAN),
        e1.ns_per_run_since(&e0).unwrap_or(f64::NAN)
    );
    let bpf_pair =
        b1.ns_per_run_since(&b0).unwrap_or(f64::NAN) + e1.ns_per_run_since(&e0).unwrap_or(f64::NAN);
    println!(
        "markers: {count} inferences counted; BPF {bpf_pair:.1} ns per begin/end pair; \
         app sees {probed:.1} ns per pair probed vs {unprobed:.1} ns unprobed \
         (uprobe pair overhead {:.1} ns)",
        probed - unprobed
    );
}
