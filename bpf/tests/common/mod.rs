//! Shared by the telemetry tests: locating build artefacts next to the test
//! executable, and driving the `workload` example as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Tests that load BPF need root (CI runs them as root); elsewhere they skip,
/// saying so.
pub fn skip_unless_root(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {test}: loading BPF programs needs root");
        return true;
    }
    false
}

/// target/<profile>, found from this test executable (target/<profile>/deps/..).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn cargo_build(args: &[&str]) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(args);
    if profile_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// The first existing candidate, building it with `build_args` if none exists
/// (e.g. when only one test target was built).
fn artefact(candidates: &[PathBuf], build_args: &[&str]) -> PathBuf {
    if let Some(p) = candidates.iter().find(|p| p.exists()) {
        return p.clone();
    }
    cargo_build(build_args);
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("none of {candidates:?} after cargo build {build_args:?}"))
}

pub fn workload_path() -> PathBuf {
    artefact(
        &[profile_dir().join("examples/workload")],
        &["-p", "dnngov-bpf", "--example", "workload"],
    )
}

pub fn client_cdylib_path() -> PathBuf {
    let dir = profile_dir();
    artefact(
        &[
            dir.join("libdnngov_client.so"),
            dir.join("deps/libdnngov_client.so"),
        ],
        &["-p", "dnngov-client", "--lib"],
    )
}

pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Workload {
    pub fn spawn(args: &[&str]) -> Workload {
        Workload::spawn_binary(&workload_path(), args)
    }

    pub fn spawn_binary(binary: &Path, args: &[&str]) -> Workload {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut w = Workload {
            child,
            stdin,
            out,
            pid: 0,
        };
        let ready = w.line();
        w.pid = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));
        w
    }

    /// Starts the work.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").expect("child alive");
        stdin.flush().expect("child alive");
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("reading child stdout");
        assert!(!line.is_empty(), "child exited early");
        line.trim_end().to_string()
    }

    /// Lines up to and excluding `done`.
    pub fn until_done(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l == "done" {
                return lines;
            }
            lines.push(l);
        }
    }

    /// Lets the child exit and reaps it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("waiting for child");
        assert!(status.success(), "workload failed: {status}");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// One line `inference <seq> <latency_ns> <deadline_ns>` of the workload.
#[derive(Debug, Clone, Copy)]
pub struct OwnMeasurement {
    pub seq: u64,
    pub latency_ns: u64,
    pub deadline_ns: u64,
}

pub fn parse_inferences(lines: &[String]) -> Vec<OwnMeasurement> {
    lines
        .iter()
        .map(|l| {
            let f: Vec<u64> = l
                .strip_prefix("inference ")
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
                .split(' ')
                .map(|x| x.parse().expect("number"))
                .collect();
            OwnMeasurement {
                seq: f[0],
                latency_ns: f[1],
                deadline_ns: f[2],
            }
        })
        .collect()
}

/// A distinct app id per test and process, so concurrent tests (or other
/// processes using the client library) never share counters.
pub fn unique_app_id(salt: u32) -> u32 {
    0x4000_0000 | ((std::process::id() & 0xffff) << 8) | salt
}
