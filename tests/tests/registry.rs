//! The registry with real client processes: a Rust app, a Python app through ctypes and a
//! C app built here against dnngov.h, plus misbehaving clients on raw sockets.

use crossbeam_channel::Receiver;
use dnngov_agent::registry::{LeaveReason, Registry, RegistryConfig, RegistryEvent};
use dnngov_tests::{
    build_c_app, client_library, python3, raw_connect, raw_exchange, register_json, workspace_root,
    TestApp,
};
use governor_proto::shm::Reason;
use governor_proto::{ErrorCode, Reply, MAX_APPS, MAX_PACKET_BYTES};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn start_registry(dir: &Path) -> Registry {
    Registry::start(RegistryConfig {
        socket_path: dir.join("agent.sock"),
        group: None,
        max_apps: MAX_APPS,
    })
    .expect("registry starts")
}

fn next_joined(
    events: &Receiver<RegistryEvent>,
) -> std::sync::Arc<dnngov_agent::registry::AppHandle> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match events.recv_deadline(deadline).expect("an app joins") {
            RegistryEvent::Joined(handle) => return handle,
            _ => continue,
        }
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn rust_python_and_c_apps_register_switch_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let socket = registry.socket_path().to_str().unwrap().to_string();
    let c_app = build_c_app(dir.path());
    let python = python3();
    let lib = client_library();

    let wanted = ["10", "11", "12"];
    let mut commands = [
        Command::new(env!("CARGO_BIN_EXE_dnngov-test-app")),
        Command::new(&python),
        Command::new(&c_app),
    ];
    commands[1]
        .arg(workspace_root().join("tests/python/test_app.py"))
        .env("DNNGOV_LIB", &lib);
    let mut apps = Vec::new();
    for (command, wanted) in commands.iter_mut().zip(wanted) {
        command.args([socket.as_str(), wanted, "5"]);
        apps.push(TestApp::spawn(command));
    }
    // Each app registers and starts on its default: the most accurate sub-network.
    let mut handles = Vec::new();
    for app in &mut apps {
        let line = app.line();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "registered", "{}: {line}", app.name);
        assert_ne!(words[1], "0", "{} is registered with the agent", app.name);
        assert_eq!(words[2], "12", "{} starts on its default", app.name);
        handles.push(next_joined(registry.events()));
    }
    let names: BTreeSet<String> = handles.iter().map(|h| h.name.clone()).collect();
    assert_eq!(
        names,
        ["c-test-app", "python-test-app", "rust-test-app"]
            .map(String::from)
            .into()
    );
    assert_eq!(registry.apps().len(), 3);
    for handle in &handles {
        let wanted = match handle.name.as_str() {
            "rust-test-app" => 10,
            "python-test-app" => 11,
            _ => 12,
        };
        assert!(
            handle.request_subnet(99, Reason::Energy).is_err(),
            "not in its library"
        );
        handle.request_subnet(wanted, Reason::Deadline).unwrap();
    }
    for app in &mut apps {
        let line = app.line();
        assert!(line.starts_with("switched "), "{}: {line}", app.name);
        let done = app.line();
        assert!(done.starts_with("done 5 "), "{}: {done}", app.name);
    }
    // The agent sees each acknowledgement and the counters through the shared page.
    for handle in &handles {
        let report = handle.report();
        assert_eq!(
            report.active_subnet,
            Some(report.requested_subnet),
            "{}",
            handle.name
        );
        assert_eq!(report.inferences_completed, 5, "{}", handle.name);
        assert_eq!(report.deadline_misses, 0, "{}", handle.name);
        assert!(
            report.last_latency_ns >= 1_000_000,
            "{}: slept 1 ms",
            handle.name
        );
        assert!(
            report.latency_sum_ns >= 5 * 1_000_000,
            "{}: five inferences of at least 1 ms each",
            handle.name
        );
        assert!(report.heartbeat_ns > 0);
        assert_eq!(report.inference_begin_ns, None);
    }
    // Each slot is freed when its process exits.
    let ids: BTreeSet<u32> = handles.iter().map(|h| h.app_id).collect();
    for app in apps {
        app.finish();
    }
    let mut left = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while left.len() < 3 {
        if let RegistryEvent::Left { app_id, .. } = registry
            .events()
            .recv_deadline(deadline)
            .expect("apps leave")
        {
            left.insert(app_id);
        }
    }
    assert_eq!(left, ids);
    assert!(registry.apps().is_empty());
}

#[test]
fn killed_app_is_noticed_and_its_slot_freed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let socket = registry.socket_path().to_str().unwrap().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dnngov-test-app"));
    command.args([socket.as_str(), "99", "0"]);
    let mut app = TestApp::spawn(&mut command);
    assert!(app.line().starts_with("registered"));
    let handle = next_joined(registry.events());
    app.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match registry
            .events()
            .recv_deadline(deadline)
            .expect("the app leaves")
        {
            RegistryEvent::Left { app_id, why, .. } => {
                assert_eq!(app_id, handle.app_id);
                assert!(matches!(why, LeaveReason::Exited | LeaveReason::HungUp));
                break;
            }
            _ => continue,
        }
    }
    assert!(registry.app(handle.app_id).is_none());
}

fn expect_error(reply: Option<Reply>, code: ErrorCode) -> String {
    match reply {
        Some(Reply::Error { code: got, message }) => {
            assert_eq!(got, code, "{message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[test]
fn bad_clients_get_errors_and_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let socket = registry.socket_path().to_path_buf();
    let pid = std::process::id() as i32;

    // A well-behaved app registered first must keep working throughout.
    let good = raw_connect(&socket);
    let (reply, memfd) = raw_exchange(&good, register_json("good", pid).as_bytes());
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    assert!(memfd.is_some(), "the accepted reply carries the memfd");
    let good_handle = next_joined(registry.events());

    let garbage = raw_connect(&socket);
    let (reply, _) = raw_exchange(&garbage, b"\x00\xffnot json at all");
    expect_error(reply, ErrorCode::Malformed);

    let big = raw_connect(&socket);
    let (reply, _) = raw_exchange(&big, &vec![b'{'; MAX_PACKET_BYTES + 100]);
    expect_error(reply, ErrorCode::PacketTooLarge);

    let liar = raw_connect(&socket);
    let (reply, _) = raw_exchange(&liar, register_json("liar", 1).as_bytes());
    let message = expect_error(reply, ErrorCode::PidMismatch);
    assert!(message.contains(&pid.to_string()), "{message}");

    let twice = raw_connect(&socket);
    let (reply, _) = raw_exchange(&twice, register_json("twice", pid).as_bytes());
    assert!(matches!(reply, Some(Reply::Accepted { .. })));
    let (reply, _) = raw_exchange(&twice, register_json("twice-again", pid).as_bytes());
    expect_error(reply, ErrorCode::AlreadyRegistered);

    let early = raw_connect(&socket);
    let (reply, _) = raw_exchange(
        &early,
        br#"{"type":"set_target","target":{"deadline_ms":10}}"#,
    );
    expect_error(reply, ErrorCode::NotRegistered);
    // After an error the connection is still usable.
    let (reply, _) = raw_exchange(&early, register_json("early", pid).as_bytes());
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");

    // Fill the registry to its limit; the next app gets a clear error.
    let registered = registry.apps().len();
    let mut extra = Vec::new();
    for i in registered..MAX_APPS {
        let connection = raw_connect(&socket);
        let (reply, _) = raw_exchange(
            &connection,
            register_json(&format!("filler-{i}"), pid).as_bytes(),
        );
        assert!(
            matches!(reply, Some(Reply::Accepted { .. })),
            "app {i}: {reply:?}"
        );
        extra.push(connection);
    }
    assert_eq!(registry.apps().len(), MAX_APPS);
    let one_too_many = raw_connect(&socket);
    let (reply, _) = raw_exchange(&one_too_many, register_json("sixty-fifth", pid).as_bytes());
    let message = expect_error(reply, ErrorCode::TooManyApps);
    assert!(message.contains(&MAX_APPS.to_string()), "{message}");

    // The first app is unaffected: the agent still reaches it, and it can set a target.
    good_handle.request_subnet(1, Reason::Energy).unwrap();
    assert_eq!(good_handle.page().agent.requested_subnet(), 1);
    let (reply, _) = raw_exchange(
        &good,
        br#"{"type":"set_target","target":{"deadline_ms":45}}"#,
    );
    assert_eq!(
        reply,
        Some(Reply::TargetUpdated {
            app_id: good_handle.app_id
        })
    );
    assert_eq!(good_handle.target().deadline_ms, 45.0);

    // Freeing one slot lets the next app in.
    drop(extra.pop());
    wait_until("a slot to free", || registry.apps().len() < MAX_APPS);
    let (reply, _) = raw_exchange(&one_too_many, register_json("sixty-fifth", pid).as_bytes());
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
}

#[test]
fn a_live_socket_is_not_replaced_and_a_stale_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let second = Registry::start(RegistryConfig {
        socket_path: registry.socket_path().to_path_buf(),
        group: None,
        max_apps: MAX_APPS,
    });
    let mode = std::fs::metadata(registry.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o660,
        "the socket's group may connect, others not"
    );
    let error = second
        .err()
        .expect("a second registry on a live socket fails");
    assert!(
        error.to_string().contains("another agent is listening"),
        "{error:#}"
    );

    // A socket file nobody listens on (left by a crashed agent) is replaced.
    let stale = dir.path().join("stale.sock");
    let listener = std::os::unix::net::UnixListener::bind(&stale).unwrap();
    drop(listener);
    assert!(stale.exists());
    let replaced = Registry::start(RegistryConfig {
        socket_path: stale.clone(),
        group: None,
        max_apps: MAX_APPS,
    })
    .expect("a stale socket is replaced");
    let connection = raw_connect(&stale);
    let (reply, _) = raw_exchange(
        &connection,
        register_json("after-stale", std::process::id() as i32).as_bytes(),
    );
    assert!(matches!(reply, Some(Reply::Accepted { .. })));
    drop(replaced);
    assert!(!stale.exists(), "the registry removes its socket on exit");

    // A regular file is never deleted.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let error = Registry::start(RegistryConfig {
        socket_path: file.clone(),
        group: None,
        max_apps: MAX_APPS,
    })
    .err()
    .expect("refuses a non-socket path");
    assert!(error.to_string().contains("not a socket"), "{error:#}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn an_empty_packet_is_refused_and_the_connection_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let pid = std::process::id() as i32;
    let connection = raw_connect(registry.socket_path());
    let (reply, _) = raw_exchange(&connection, b"");
    let message = expect_error(reply, ErrorCode::Malformed);
    assert!(message.contains("empty packet"), "{message}");
    let (reply, _) = raw_exchange(&connection, register_json("after-empty", pid).as_bytes());
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    let handle = next_joined(registry.events());
    // A registered app's empty packet changes nothing either: it stays registered.
    let (reply, _) = raw_exchange(&connection, b"");
    expect_error(reply, ErrorCode::Malformed);
    assert!(registry.app(handle.app_id).is_some());
    let (reply, _) = raw_exchange(
        &connection,
        br#"{"type":"set_target","target":{"deadline_ms":20}}"#,
    );
    assert_eq!(
        reply,
        Some(Reply::TargetUpdated {
            app_id: handle.app_id
        })
    );
}

#[test]
fn set_target_replaces_the_whole_target() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let connection = raw_connect(registry.socket_path());
    let mut register: serde_json::Value =
        serde_json::from_str(&register_json("replaced", std::process::id() as i32)).unwrap();
    register["target"] = serde_json::json!({
        "deadline_ms": 30.0, "period_ms": 33.3, "accuracy_floor_pct": 72.0, "priority": 7
    });
    let (reply, _) = raw_exchange(&connection, register.to_string().as_bytes());
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    let handle = next_joined(registry.events());
    let (reply, _) = raw_exchange(
        &connection,
        br#"{"type":"set_target","target":{"deadline_ms":45}}"#,
    );
    assert!(
        matches!(reply, Some(Reply::TargetUpdated { .. })),
        "{reply:?}"
    );
    let target = handle.target();
    assert_eq!(target.deadline_ms, 45.0);
    assert_eq!(target.period_ms, None, "left out: no period");
    assert_eq!(target.accuracy_floor_pct, None, "left out: no floor");
    assert_eq!(target.priority, 0, "left out: priority 0");
}

#[test]
fn out_of_range_integers_are_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let connection = raw_connect(registry.socket_path());
    let pid = std::process::id() as i32;
    for (path, value, named) in [
        (
            "/target/priority",
            serde_json::json!(256),
            "target.priority is 256",
        ),
        (
            "/target/priority",
            serde_json::json!(-1),
            "target.priority is -1",
        ),
        (
            "/pid",
            serde_json::json!(i64::from(i32::MAX) + 1),
            "pid is 2147483648",
        ),
        (
            "/subnets/1/id",
            serde_json::json!(u64::from(u32::MAX) + 1),
            "subnets[1].id is 4294967296",
        ),
        (
            "/subnets/0/id",
            serde_json::json!(1.5),
            "subnets[0].id is 1.5",
        ),
        (
            "/target/priority",
            serde_json::json!("high"),
            "target.priority is \"high\"",
        ),
    ] {
        let mut register: serde_json::Value =
            serde_json::from_str(&register_json("ranges", pid)).unwrap();
        register["target"]["priority"] = serde_json::json!(0);
        *register.pointer_mut(path).unwrap() = value.clone();
        let (reply, _) = raw_exchange(&connection, register.to_string().as_bytes());
        let message = expect_error(reply, ErrorCode::Malformed);
        assert!(message.contains(named), "{path} = {value}: {message}");
        assert!(message.contains("it must be an integer from"), "{message}");
    }
}
