//! The client without an agent, and across the agent's restarts: the app keeps running
//! its default sub-network and reconnects in the background.

use dnngov_agent::registry::{Registry, RegistryConfig, RegistryEvent};
use dnngov_client::{AppSpec, ClientError, Device, Options, Session, Subnet, Target};
use governor_proto::shm::Reason;
use governor_proto::{ErrorCode, MAX_APPS};
use std::path::Path;
use std::time::{Duration, Instant};

fn spec() -> AppSpec {
    let subnet = |id, accuracy_pct| Subnet {
        id,
        name: format!("level-{id}"),
        accuracy_pct,
        latency_ms: None,
        relative_cost: None,
    };
    AppSpec {
        name: "standalone-test".into(),
        devices: vec![Device::Cpu, Device::Gpu],
        subnets: vec![subnet(0, 70.0), subnet(1, 72.0), subnet(2, 74.0)],
        target: Target {
            deadline_ms: 20.0,
            period_ms: Some(33.0),
            accuracy_floor_pct: Some(71.0),
            priority: 0,
        },
        default_subnet: Some(1),
    }
}

fn options(socket: &Path) -> Options {
    Options {
        socket_path: socket.to_path_buf(),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..Options::default()
    }
}

fn start_registry(socket: &Path) -> Registry {
    Registry::start(RegistryConfig {
        socket_path: socket.to_path_buf(),
        group: None,
        max_apps: MAX_APPS,
    })
    .expect("registry starts")
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn without_an_agent_the_app_runs_its_default_and_counts_inferences() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::register(spec(), options(&dir.path().join("none.sock"))).unwrap();
    assert!(!session.is_connected());
    assert_eq!(session.current_subnet(), 1, "the declared default");
    assert_eq!(session.command().reason, Reason::Standalone as u32);
    assert!(session.last_error().unwrap().contains("none.sock"));
    session.ack_subnet(1);
    let seq = session.begin(Duration::from_nanos(1));
    std::thread::sleep(Duration::from_millis(1));
    let latency = session.end();
    assert_eq!(seq, 1);
    assert!(latency >= Duration::from_millis(1));
    assert_eq!(session.counters(), (1, 1), "1 ns deadline: a miss");
}

#[test]
fn the_app_connects_when_the_agent_starts_and_falls_back_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let session = Session::register(spec(), options(&socket)).unwrap();
    assert!(!session.is_connected());
    session.ack_subnet(1);

    let registry = start_registry(&socket);
    wait_until("the client to connect", || session.is_connected());
    let handle = loop {
        if let RegistryEvent::Joined(handle) = registry.events().recv().unwrap() {
            break handle;
        }
    };
    assert_eq!(handle.app_id, session.app_id());
    assert_eq!(handle.pid, std::process::id() as i32);
    // What the app ran standalone is what the agent sees first.
    assert_eq!(handle.report().active_subnet, Some(1));
    handle.request_subnet(0, Reason::Deadline).unwrap();
    wait_until("the request to arrive", || session.current_subnet() == 0);
    assert_eq!(session.command().reason, Reason::Deadline as u32);

    // The agent goes away: the app falls back to its default without any call failing.
    drop(registry);
    wait_until("the client to notice", || !session.is_connected());
    assert_eq!(session.current_subnet(), 1);
    let (before, _) = session.counters();
    session.begin(Duration::from_millis(20));
    session.end();
    assert_eq!(
        session.counters().0,
        before + 1,
        "counters survive the fallback"
    );

    // And it comes back: the app registers again on its own.
    let registry = start_registry(&socket);
    wait_until("the client to reconnect", || session.is_connected());
    assert_eq!(registry.apps().len(), 1);
    assert_eq!(
        registry.apps()[0].report().inferences_completed,
        before + 1,
        "the new agent sees the app's counters"
    );
    drop(session);
    wait_until("the slot to be freed", || registry.apps().is_empty());
}

#[test]
fn a_target_change_reaches_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let registry = start_registry(&socket);
    let session = Session::register(spec(), options(&socket)).unwrap();
    assert!(session.is_connected(), "the first attempt is synchronous");
    let mut target = spec().target;
    target.deadline_ms = 45.0;
    session.set_target(target).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match registry.events().recv_deadline(deadline).unwrap() {
            RegistryEvent::TargetChanged { app_id, target } => {
                assert_eq!(app_id, session.app_id());
                assert_eq!(target.deadline_ms, 45.0);
                break;
            }
            _ => continue,
        }
    }
    let mut bad = spec().target;
    bad.deadline_ms = 0.0;
    assert!(
        matches!(session.set_target(bad), Err(ClientError::InvalidSpec(e)) if e.code == ErrorCode::InvalidDeadline)
    );
}

#[test]
fn an_invalid_spec_is_refused_before_anything_is_sent() {
    let mut bad = spec();
    bad.subnets.clear();
    let dir = tempfile::tempdir().unwrap();
    match Session::register(bad, options(&dir.path().join("agent.sock"))) {
        Err(ClientError::InvalidSpec(e)) => assert_eq!(e.code, ErrorCode::InvalidSubnets),
        other => panic!(
            "expected an invalid spec, got {:?}",
            other.map(|s| s.app_id())
        ),
    }
}
