//! dnngovd as a real process against fixture boards, with a real app process and
//! dnngovctl: registration, a sub-network chosen by the policy, an operator override,
//! frequencies written, and the machine restored on SIGTERM, and after SIGKILL by
//! `dnngovctl restore`.

use dnngov_agent::platform::fixture;
use dnngov_tests::{built_binary, free_local_address, http_get, Daemon, TestApp};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .trim()
        .to_string()
}

fn app_field(daemon: &Daemon, field: &str) -> Option<Value> {
    let apps = daemon.ctl(&["apps"])?;
    apps.as_array()?.first()?.get(field).cloned()
}

const POLICY0: &str = "sys/devices/system/cpu/cpufreq/policy0";

#[test]
fn governs_an_app_obeys_the_operator_and_restores_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let before = fixture::snapshot(&root).unwrap();
    let metrics_addr = free_local_address();
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        &format!("[metrics]\nlisten = \"{metrics_addr}\"\n"),
    );

    // Taking over: the state is saved first, then the userspace governor is set.
    daemon.wait_for("the takeover", || {
        read(&root, &format!("{POLICY0}/scaling_governor")) == "userspace"
    });
    assert!(
        daemon.state_file().exists(),
        "settings are saved before any write"
    );

    // A Dynamic-OFA app with a 60 ms deadline and a 76 % floor: with the 10 % safety
    // margin, only levels 2 (49.4 ms, 76.1 %) and 3 (51.1 ms, 77.5 %) fit; level 2 is
    // the cheaper.
    let mut command = Command::new(built_binary("examples/simulated_app"));
    command
        .args(["detector", "60", "15", "60"])
        .env("DNNGOV_SOCKET", dir.path().join("agent.sock"));
    let mut app = TestApp::spawn(&mut command);
    assert!(app.line().contains("registered with dnngovd"));
    daemon.wait_for("the policy to choose level 2", || {
        app_field(&daemon, "requested_subnet") == Some(Value::from(2))
    });
    daemon.wait_for("the app to acknowledge level 2", || {
        app_field(&daemon, "active_subnet") == Some(Value::from(2))
    });

    // Frequencies are written through the userspace governor.
    daemon.wait_for("a CPU frequency to be set", || {
        read(&root, &format!("{POLICY0}/scaling_setspeed"))
            .parse::<u64>()
            .is_ok()
    });

    // The operator raises the floor to 77 %: only level 3 serves it.
    let done = daemon
        .ctl(&["set-target", "detector", "--accuracy-floor", "77"])
        .expect("set-target succeeds");
    assert!(done["done"].as_str().unwrap().contains("77"), "{done}");
    daemon.wait_for("the policy to move to level 3", || {
        app_field(&daemon, "requested_subnet") == Some(Value::from(3))
    });
    assert_eq!(
        app_field(&daemon, "operator_override"),
        Some(Value::Bool(true))
    );

    // The metrics endpoint shows the same picture.
    daemon.wait_for("the app's inferences in the metrics", || {
        let text = http_get(metrics_addr, "/metrics");
        text.contains("dnngov_inferences_total{app=\"detector\"")
            && text.contains("dnngov_domain_frequency_hertz{domain=\"cpufreq policy0\"}")
            && text.contains("dnngov_subnet{app=\"detector\",app_id=\"1\"} 3")
            && text.contains("dnngov_plans_total{cause=\"first\"} 1")
    });

    let status = daemon.ctl(&["status"]).unwrap();
    assert_eq!(status["domains"].as_array().unwrap().len(), 5, "{status}");
    // The plan in force says what made it.
    let why = status["plan"]["why"].as_str().unwrap_or_default();
    assert!(!why.is_empty(), "{status}");
    assert!(
        status["plan"]["age_s"].as_f64().is_some_and(|s| s >= 0.0),
        "{status}"
    );
    assert!(status["power"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rail"] == "VDD_IN"));

    // Bad operator input is refused with a reason, and changes nothing.
    assert!(daemon
        .ctl(&["set-target", "no-such-app", "--deadline-ms", "10"])
        .is_none());
    assert!(daemon
        .ctl(&["set-target", "detector", "--deadline-ms", "0"])
        .is_none());

    app.kill();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = daemon.wait();
    assert!(exit.success(), "dnngovd exits cleanly on SIGTERM: {exit}");
    assert_eq!(
        fixture::snapshot(&root).unwrap(),
        before,
        "every file is back as it was"
    );
    assert!(!dir.path().join("state/saved-state.json").exists());
}

#[test]
fn after_sigkill_dnngovctl_restore_puts_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let before = fixture::snapshot(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    daemon.wait_for("the takeover", || {
        read(&root, &format!("{POLICY0}/scaling_governor")) == "userspace"
    });
    let state_file = daemon.state_file();
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait();
    assert_ne!(
        fixture::snapshot(&root).unwrap(),
        before,
        "a crash restores nothing"
    );

    let output = Command::new(built_binary("dnngovctl"))
        .arg("restore")
        .arg("--state-file")
        .arg(&state_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(fixture::snapshot(&root).unwrap(), before);
    assert!(!state_file.exists());

    // A second restore (the unit runs one after every stop) finds nothing to do.
    let output = Command::new(built_binary("dnngovctl"))
        .arg("restore")
        .arg("--state-file")
        .arg(&state_file)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing to restore"));
}

#[test]
fn a_machine_without_cpufreq_is_not_governed_but_apps_are() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::no_cpufreq(&root).unwrap();
    let before = fixture::snapshot(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    let status = daemon.ctl(&["status"]).unwrap();
    let notes = status["notes"].to_string();
    assert!(notes.contains("cannot govern"), "{status}");
    assert!(status["domains"].as_array().unwrap().is_empty());

    let mut command = Command::new(built_binary("examples/simulated_app"));
    command
        .args(["classifier", "30", "10", "100"])
        .env("DNNGOV_SOCKET", dir.path().join("agent.sock"));
    let mut app = TestApp::spawn(&mut command);
    assert!(app.line().contains("registered with dnngovd"));
    // 100 ms leaves room for the most accurate level (61.7 ms): the app keeps it.
    daemon.wait_for("the app to be governed", || {
        app_field(&daemon, "inferences").and_then(|v| v.as_u64()) > Some(3)
    });
    assert_eq!(app_field(&daemon, "requested_subnet"), Some(Value::from(5)));
    app.kill();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait().success());
    assert_eq!(fixture::snapshot(&root).unwrap(), before);
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn misbehaving_clients_leave_the_other_app_served_and_memory_flat() {
    use dnngov_tests::{raw_connect, raw_exchange};
    use governor_proto::{ErrorCode, Reply};
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    let socket = dir.path().join("agent.sock");
    let mut command = Command::new(built_binary("examples/simulated_app"));
    command
        .args(["detector", "60", "15", "60"])
        .env("DNNGOV_SOCKET", &socket);
    let mut good = TestApp::spawn(&mut command);
    assert!(good.line().contains("registered with dnngovd"));
    let inferences = || {
        app_field(&daemon, "inferences")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    daemon.wait_for("the good app's first inferences", || inferences() > 5);
    let rss_before = resident_kib(daemon.child.id());

    // An app killed in the middle of an inference.
    let mut command = Command::new(env!("CARGO_BIN_EXE_dnngov-test-app"));
    command.args([socket.to_str().unwrap(), "99", "0", "hang"]);
    let mut dying = TestApp::spawn(&mut command);
    assert!(dying.line().starts_with("registered"));
    assert_eq!(dying.line(), "in-flight");
    dying.kill();

    // 10,000 garbage packets a second for 5 s from a client that reads its answers, and
    // the same from one that never reads them (the agent must drop it, not stall). The
    // reader registers first: an unregistered connection is closed after
    // REGISTRATION_TIMEOUT_MS whatever it sends, and this one must outlast the flood.
    let reader = raw_connect(&socket);
    let (reply, _) = raw_exchange(
        &reader,
        dnngov_tests::register_json("flooder", std::process::id() as i32).as_bytes(),
    );
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    let deaf = raw_connect(&socket);
    let mut deaf_dropped = false;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        for _ in 0..100 {
            let (reply, _) = raw_exchange(&reader, b"\x01garbage\xff");
            assert!(
                matches!(
                    reply,
                    Some(Reply::Error {
                        code: ErrorCode::Malformed,
                        ..
                    })
                ),
                "{reply:?}"
            );
            if !deaf_dropped
                && send(
                    deaf.as_raw_fd(),
                    b"{not json",
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                )
                .is_err_and(|e| e != nix::errno::Errno::EAGAIN)
            {
                deaf_dropped = true;
            }
            sent += 1;
        }
        // Pace to about 10,000 a second.
        let due = Duration::from_micros(100 * sent);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    assert!(sent >= 10_000, "the flood sent {sent} packets");
    assert!(
        deaf_dropped,
        "a client that never reads its answers is disconnected"
    );

    // The good app is still served, and the dead one is gone.
    let before = inferences();
    daemon.wait_for("the good app to keep running", || inferences() > before + 5);
    let apps = daemon.ctl(&["apps"]).unwrap();
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["detector", "flooder"], "{apps}");
    let rss_after = resident_kib(daemon.child.id());
    assert!(
        rss_after < rss_before + 8 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    good.kill();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait().success());
}

#[test]
fn without_a_power_sensor_the_board_description_gives_an_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::generic_arm(&root).unwrap();
    let description = dnngov_tests::workspace_root().join("platforms/generic-arm.toml");
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        &format!("[agent]\nplatform = \"{}\"\n", description.display()),
    );
    daemon.wait_for("an estimated power reading", || {
        let status = daemon.ctl(&["status"]).unwrap();
        status["power"].as_array().is_some_and(|rails| {
            rails.iter().any(|r| {
                r["estimated"] == Value::Bool(true)
                    && r["watts"].as_f64().is_some_and(|w| w > 0.5 && w < 20.0)
            })
        })
    });
    let status = daemon.ctl(&["status"]).unwrap();
    assert!(
        status["notes"]
            .to_string()
            .contains("estimated from the generic-arm description"),
        "{status}"
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait().success());
}

#[test]
fn figures_that_cannot_be_in_an_apps_page_are_clamped_and_flagged() {
    use dnngov_tests::{raw_connect, raw_exchange, register_json};
    use governor_proto::shm::{ShmPage, SHM_SIZE};
    use governor_proto::Reply;
    use nix::sys::mman::{mmap, MapFlags, ProtFlags};
    use std::num::NonZeroUsize;
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let metrics_addr = free_local_address();
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        &format!("[metrics]\nlisten = \"{metrics_addr}\"\n"),
    );
    // A client that writes garbage into its own block of the page.
    let connection = raw_connect(&daemon.app_socket());
    let (reply, memfd) = raw_exchange(
        &connection,
        register_json("garbage", std::process::id() as i32).as_bytes(),
    );
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    let memfd = memfd.expect("the page comes with the reply");
    // SAFETY: a new shared mapping of the page the agent sent, never unmapped while the
    // test runs.
    let addr = unsafe {
        mmap(
            None,
            NonZeroUsize::new(SHM_SIZE).unwrap(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &memfd,
            0,
        )
    }
    .unwrap();
    // SAFETY: page aligned, SHM_SIZE bytes, mapped for the rest of the test.
    let page = unsafe { ShmPage::from_ptr(addr.as_ptr().cast()) };
    let app = &page.app;
    app.active_subnet.store(1_000_000_000, Ordering::Relaxed);
    app.deadline_misses.store(180, Ordering::Relaxed);
    app.last_latency_ns
        .store(18_000_000_000_000_000, Ordering::Relaxed);
    app.heartbeat_ns.store(u64::MAX / 2, Ordering::Relaxed);
    app.inference_begin_ns.store(u64::MAX, Ordering::Relaxed);
    app.inferences_completed.store(100, Ordering::Release);

    daemon.wait_for("the app's figures", || {
        app_field(&daemon, "inferences") == Some(Value::from(100))
    });
    let apps = daemon.ctl(&["apps"]).unwrap();
    let shown = &apps[0];
    assert_eq!(shown["miss_pct"], 100.0, "{shown}");
    assert_eq!(shown["deadline_misses"], 100, "{shown}");
    assert_eq!(shown["active_subnet"], Value::Null, "{shown}");
    assert_eq!(shown["last_latency_ms"], 0.0, "{shown}");
    let problem = shown["page_problem"].as_str().unwrap_or_default();
    for part in [
        "active_subnet 1000000000 is not in its library",
        "deadline_misses 180 is above inferences_completed 100",
        "last_latency_ns 18000000000000000",
        "heartbeat_ns",
        "inference_begin_ns",
    ] {
        assert!(problem.contains(part), "{part:?} in {shown}");
    }
    let output = Command::new(built_binary("dnngovctl"))
        .arg("--admin-socket")
        .arg(daemon.admin_socket())
        .arg("apps")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("!garbage")
            && table.contains("its shared page holds figures that cannot be"),
        "{table}"
    );
    let status = daemon.ctl(&["status"]).unwrap();
    assert!(
        status["notes"]
            .to_string()
            .contains("wrote figures in its shared page that cannot be"),
        "{status}"
    );
    // The metrics count no more misses than inferences.
    daemon.wait_for("the app in the metrics", || {
        http_get(metrics_addr, "/metrics").contains("dnngov_inferences_total{app=\"garbage\"")
    });
    let metrics = http_get(metrics_addr, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{app=\"garbage\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
    };
    assert!(
        value("dnngov_deadline_misses_total") <= value("dnngov_inferences_total"),
        "{metrics}"
    );
    // Said once in the log, not at every reading.
    let warnings = daemon
        .log()
        .matches("wrote figures in its shared page that cannot be")
        .count();
    assert_eq!(warnings, 1, "{}", daemon.log());
    daemon.stop();
}

#[test]
fn admin_requests_with_unknown_fields_or_nothing_in_them_are_refused() {
    use dnngov_tests::raw_connect;
    use nix::sys::socket::{recv, send, MsgFlags};
    use std::os::fd::AsRawFd;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::no_cpufreq(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    let ask = |request: &[u8]| -> Value {
        let connection = raw_connect(&daemon.admin_socket());
        send(connection.as_raw_fd(), request, MsgFlags::MSG_NOSIGNAL).unwrap();
        let mut buffer = vec![0u8; 1 << 20];
        let len = recv(connection.as_raw_fd(), &mut buffer, MsgFlags::empty()).unwrap();
        serde_json::from_slice(&buffer[..len]).expect("a JSON reply")
    };
    for command in ["status", "apps", "release"] {
        let reply = ask(format!(r#"{{"command":"{command}","bogus":1}}"#).as_bytes());
        assert_eq!(reply["reply"], "error", "{command}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("unknown field `bogus`"),
            "{command}: {reply}"
        );
    }
    let reply = ask(b"");
    assert_eq!(reply["reply"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("empty request"),
        "{reply}"
    );
    assert_eq!(ask(br#"{"command":"apps"}"#)["reply"], "apps");
    daemon.stop();
}
