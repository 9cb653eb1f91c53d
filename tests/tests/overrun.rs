//! An inference in flight that overruns, through the real daemon: dnngovd on the Xavier NX
//! fixture board and a real app registered through the Rust client shim
//! (`dnngov-overrun-app`). The app runs short inferences until it has a plan at low
//! clocks, then keeps one inference open: past its deadline bound, before it ends, the
//! daemon raises the GPU and the memory clock to their highest frequency with the overrun
//! as the reason (`dnngovctl status`) and writes it to the board; once the app finishes
//! that inference and runs normal ones again, the overrun reason is gone.

use dnngov_agent::platform::fixture;
use dnngov_tests::Daemon;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The app's deadline, and its period. The overrun bound is `min(deadline, period)` less
/// the policy's 5 % keep margin. `dnngovd` publishes its status every 250 ms: at 200 ms, the
/// boost lasts long enough (from the bound to four times it, where the inference is taken
/// as stalled) for at least two publications.
const DEADLINE_MS: f64 = 200.0;
const BOUND_MS: f64 = DEADLINE_MS * 0.95;
/// `OVERRUN_GIVE_UP` in policy/src/manager.rs.
const GIVE_UP: f64 = 4.0;
/// The Display text of `FreqReason::Plan` and the start of `FreqReason::Overrun`'s.
const PLAN: &str = "the optimiser's plan for the apps";
const OVERRAN: &str = "inference in flight overran";

/// The app, driven line by line on its stdin; killed when dropped.
struct OverrunApp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl OverrunApp {
    fn spawn(socket: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dnngov-overrun-app"))
            .arg(socket)
            .arg(DEADLINE_MS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnngov-overrun-app starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take().expect("stdin is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin: Some(stdin),
            lines,
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open until finish");
        writeln!(stdin, "{command}").expect("write to the app");
        stdin.flush().expect("flush the app's stdin");
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("dnngov-overrun-app printed nothing: {e}"))
    }

    /// Closes stdin: the app unregisters and exits normally.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the app");
        assert!(status.success(), "dnngov-overrun-app exited with {status}");
    }
}

impl Drop for OverrunApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dnngovctl status` (JSON).
fn status(daemon: &Daemon) -> Value {
    daemon.ctl(&["status"]).expect("dnngovctl status succeeds")
}

/// The status's domain of `kind` ("gpu", "memory").
fn domain<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["domains"]
        .as_array()
        .and_then(|domains| domains.iter().find(|d| d["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} domain in {status}"))
}

/// The names of the domains whose reason is an overrun.
fn overrun_domains(status: &Value) -> Vec<String> {
    status["domains"]
        .as_array()
        .expect("the status lists domains")
        .iter()
        .filter(|d| d["reason"].as_str().is_some_and(|r| r.contains(OVERRAN)))
        .map(|d| d["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn at_max(domain: &Value) -> bool {
    domain["current_hz"].as_u64().is_some() && domain["current_hz"] == domain["max_hz"]
}

/// The app's completed inferences, as the daemon counts them.
fn inferences(daemon: &Daemon) -> u64 {
    daemon
        .ctl(&["apps"])
        .and_then(|apps| apps.get(0)?.get("inferences")?.as_u64())
        .unwrap_or(0)
}

/// Waits for the app to finish two inferences on the sub-network the daemon asks for: the
/// first inference after a switch pays for it, and the policy does not boost it.
fn wait_until_settled(daemon: &Daemon) {
    let mut since: Option<(Value, u64)> = None;
    daemon.wait_for(
        "the app to run two inferences on the sub-network asked for",
        || {
            let Some(app) = daemon.ctl(&["apps"]).and_then(|apps| apps.get(0).cloned()) else {
                return false;
            };
            let requested = app["requested_subnet"].clone();
            let count = app["inferences"].as_u64().unwrap_or(0);
            if app["active_subnet"] != requested {
                since = None;
                return false;
            }
            match &since {
                Some((subnet, first)) if *subnet == requested => count >= first + 2,
                _ => {
                    since = Some((requested, count));
                    false
                }
            }
        },
    );
}

/// The GPU frequency the daemon last wrote to the fixture board.
fn gpu_set_freq(root: &Path) -> Option<u64> {
    let path = root
        .join(fixture::XAVIER_NX_GPU_DIR)
        .join("userspace/set_freq");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn an_inference_in_flight_that_overruns_raises_the_clocks_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let gpu_max = *fixture::XAVIER_NX_GPU_HZ.last().unwrap();
    let daemon = Daemon::start(dir.path(), &root);

    let mut app = OverrunApp::spawn(&daemon.app_socket());
    let registered = app.line();
    let app_id: u32 = registered
        .strip_prefix("registered ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {registered:?}"));
    assert_ne!(app_id, 0, "registered without an agent: {registered}");
    let boosted_reason =
        format!("raised: app {app_id}'s inference in flight overran its prediction");

    // Short inferences (5 ms of a 200 ms deadline): the plan runs the GPU and the memory
    // clock low, and nothing is raised.
    daemon.wait_for("a plan for the app and its first inferences", || {
        let s = status(&daemon);
        domain(&s, "gpu")["reason"] == PLAN
            && domain(&s, "memory")["reason"] == PLAN
            && inferences(&daemon) >= 5
    });
    wait_until_settled(&daemon);
    let before = status(&daemon);
    assert_eq!(
        overrun_domains(&before),
        Vec::<String>::new(),
        "raised before any overrun: {before}"
    );
    for kind in ["gpu", "memory"] {
        assert!(
            !at_max(domain(&before, kind)),
            "the plan already runs the {kind} domain flat out, a boost would not show: {before}"
        );
    }
    assert!(
        gpu_set_freq(&root).is_some_and(|hz| hz < gpu_max),
        "the board's GPU is at {:?} before the overrun",
        gpu_set_freq(&root)
    );

    // One inference held open. Past its bound, the GPU and the memory clock are raised
    // (the CPU clusters too where the fixture's CPUs have utilisation telemetry, which
    // depends on the machine's CPUs). After four times its bound the inference counts as
    // stalled and the boost is dropped: an attempt whose boost went unseen (a stalled test
    // machine, or a switch the daemon asked for just before the hold) ends there and is
    // tried again.
    let mut seen = None;
    for attempt in 1..=3 {
        if attempt > 1 {
            daemon.wait_for("the previous attempt's boost to end", || {
                overrun_domains(&status(&daemon)).is_empty()
            });
            wait_until_settled(&daemon);
        }
        app.send("hold");
        assert_eq!(app.line(), "holding");
        let held_since = Instant::now();
        let mut reported = None;
        let mut written = false;
        while held_since.elapsed() < Duration::from_secs_f64(GIVE_UP * BOUND_MS / 1e3) {
            let s = status(&daemon);
            let (gpu, memory) = (domain(&s, "gpu"), domain(&s, "memory"));
            if reported.is_none()
                && gpu["reason"] == boosted_reason.as_str()
                && memory["reason"] == boosted_reason.as_str()
            {
                reported = Some(s.clone());
            }
            written |= gpu_set_freq(&root) == Some(gpu_max);
            if reported.is_some() && written {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        app.send("release");
        let released = app.line();
        assert!(released.starts_with("released "), "{released}");
        match reported {
            Some(s) if written => {
                seen = Some(s);
                break;
            }
            _ => eprintln!(
                "attempt {attempt}: within {GIVE_UP} times its bound, the overrun was {} in \
                 the status and {} on the board",
                if reported.is_some() {
                    "seen"
                } else {
                    "not seen"
                },
                if written { "written" } else { "not written" },
            ),
        }
    }
    let boosted = seen.unwrap_or_else(|| {
        panic!(
            "no boost seen for an inference held past its bound in 3 attempts; dnngovd's \
             log:\n{}",
            daemon.log()
        )
    });
    for kind in ["gpu", "memory"] {
        assert!(
            at_max(domain(&boosted, kind)),
            "the {kind} domain is raised for the overrun but not to its highest \
             frequency: {boosted}"
        );
    }

    // The inference has ended and normal ones follow: the boost ends with them.
    let at_release = inferences(&daemon);
    daemon.wait_for(
        "the overrun reason to go once inferences run normally",
        || overrun_domains(&status(&daemon)).is_empty() && inferences(&daemon) >= at_release + 3,
    );

    app.finish();
    daemon.stop();
}
