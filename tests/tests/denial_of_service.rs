//! What an unprivileged neighbour can do to a real dnngovd with the sockets alone: hold
//! idle connections to keep apps out or to stall dnngovctl, or flood it with garbage to
//! fill the journal. None of it may keep a real app from registering, delay dnngovctl, or
//! write more than a few log lines.
//!
//! Where the tests run as root, the neighbour is a process of a user created for the
//! test; otherwise those parts are skipped, saying so, and the rest runs as one user.

use dnngov_agent::log_limit::LogLimiter;
use dnngov_agent::platform::fixture;
use dnngov_tests::{
    is_root, raw_connect, raw_exchange, register_json, Daemon, IdleConnections, TestAccounts,
    TestApp,
};
use governor_proto::{ErrorCode, Reply, MAX_PENDING_PER_UID, REGISTRATION_TIMEOUT_MS};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const REGISTRATION_TIMEOUT: Duration = Duration::from_millis(REGISTRATION_TIMEOUT_MS);

/// A daemon on a fixture board whose sockets belong to `group` (when given), in a folder
/// other users may traverse.
fn daemon(dir: &Path, group: Option<&str>) -> Daemon {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.join("board");
    fixture::xavier_nx(&root).unwrap();
    let extra = group.map_or(String::new(), |g| format!("[agent]\ngroup = \"{g}\"\n"));
    Daemon::start_with(dir, &root, &extra)
}

/// Starts a real app (the Rust test app) and gives its app id, once it registered, and
/// how long that took.
fn register_app(daemon: &Daemon) -> (TestApp, u32, Duration) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dnngov-test-app"));
    command.args([daemon.app_socket().to_str().unwrap(), "12", "0"]);
    let started = Instant::now();
    let mut app = TestApp::spawn(&mut command);
    let line = app.line();
    let took = started.elapsed();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"registered"), "{line}");
    let app_id: u32 = words[1].parse().unwrap();
    (app, app_id, took)
}

fn app_ids(daemon: &Daemon) -> Vec<u64> {
    let apps = daemon.ctl(&["apps"]).expect("dnngovctl apps answers");
    apps.as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["app_id"].as_u64())
        .collect()
}

#[test]
fn idle_connections_cannot_keep_a_real_app_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut accounts = is_root().then(|| TestAccounts::new("j"));
    let group = accounts.as_mut().map(|a| a.group("apps").0);
    let daemon = daemon(dir.path(), group.as_deref());
    let socket = daemon.app_socket();

    // An app registered before the jam keeps its slot throughout.
    let (_first, first_id, _) = register_app(&daemon);
    assert_ne!(first_id, 0, "the first app registers");

    match accounts.as_mut() {
        Some(accounts) => {
            // Another user's 300 idle connections, and a real app of this user registers
            // at once: before any of them could have been freed by the registration
            // deadline.
            let neighbour = accounts.user("n", group.as_deref().unwrap(), &[]);
            let mut jam = IdleConnections::hold(&socket, 300, Some(&neighbour));
            let jammed = Instant::now();
            let counts = jam.wait_for("the agent to refuse what it does not hold", |c| {
                c.total() == 300 && c.held <= MAX_PENDING_PER_UID
            });
            assert_eq!(counts.held, MAX_PENDING_PER_UID, "{counts:?}");
            let (_app, app_id, took) = register_app(&daemon);
            let since_jam = jammed.elapsed();
            eprintln!(
                "with {} idle connections of uid {} held, a real app registered in {:.0} ms",
                counts.held,
                neighbour.uid,
                took.as_secs_f64() * 1e3
            );
            assert_ne!(
                app_id, 0,
                "the real app registers while the neighbour holds its connections"
            );
            assert!(
                since_jam < REGISTRATION_TIMEOUT,
                "the app registered {since_jam:?} after the jam began: not before the idle \
                 connections' deadline"
            );
            assert_eq!(jam.counts().held, MAX_PENDING_PER_UID, "still held");
            let ids = app_ids(&daemon);
            assert!(
                ids.contains(&u64::from(first_id)) && ids.contains(&u64::from(app_id)),
                "{ids:?}"
            );
        }
        None => eprintln!(
            "skipped: idle connections from another user's process (not root: cannot create \
             a user to hold them)"
        ),
    }

    // This user's own 300 idle connections: the agent holds as many as one user may have
    // unregistered, refuses the others with a code that says so, and the apps registered
    // keep their slots.
    let mut own = IdleConnections::hold(&socket, 300, None);
    assert_eq!(own.connected, 300);
    let counts = own.wait_for("the agent to refuse what it does not hold", |c| {
        c.total() == 300 && c.held <= MAX_PENDING_PER_UID
    });
    assert_eq!(counts.held, MAX_PENDING_PER_UID, "{counts:?}");
    assert_eq!(
        counts.refused("too_many_connections"),
        300 - MAX_PENDING_PER_UID,
        "{counts:?}"
    );
    assert!(app_ids(&daemon).contains(&u64::from(first_id)));
}

#[test]
fn a_connection_that_does_not_register_is_told_and_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path(), None);
    let mut idle = IdleConnections::hold(&daemon.app_socket(), 3, None);
    let opened = Instant::now();
    let counts = idle.wait_for("the registration deadline", |c| c.held == 0);
    let waited = opened.elapsed();
    eprintln!(
        "idle connections closed after {:.1} s",
        waited.as_secs_f64()
    );
    assert_eq!(counts.refused("registration_timeout"), 3, "{counts:?}");
    assert!(
        waited >= REGISTRATION_TIMEOUT,
        "closed after {waited:?}, before the deadline"
    );
    // A connection that registers in time is not touched.
    let connection = raw_connect(&daemon.app_socket());
    let (reply, _) = raw_exchange(
        &connection,
        register_json("in-time", std::process::id() as i32).as_bytes(),
    );
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    std::thread::sleep(REGISTRATION_TIMEOUT + Duration::from_millis(500));
    let (reply, _) = raw_exchange(
        &connection,
        br#"{"type":"set_target","target":{"deadline_ms":40}}"#,
    );
    assert!(
        matches!(reply, Some(Reply::TargetUpdated { .. })),
        "{reply:?}"
    );
    assert!(
        daemon.log().contains("did not register within 5 s"),
        "{}",
        daemon.log()
    );
}

#[test]
fn silent_admin_connections_do_not_delay_dnngovctl() {
    let dir = tempfile::tempdir().unwrap();
    let mut accounts = is_root().then(|| TestAccounts::new("a"));
    let group = accounts.as_mut().map(|a| a.group("apps").0);
    let daemon = daemon(dir.path(), group.as_deref());
    // Five connections that say nothing, opened before dnngovctl's.
    let silent: Vec<_> = (0..5)
        .map(|_| raw_connect(&daemon.admin_socket()))
        .collect();
    let started = Instant::now();
    let output = daemon.ctl_output(&["status"]);
    eprintln!(
        "dnngovctl status answered in {:.0} ms behind 5 silent connections",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(silent);

    let Some(accounts) = accounts.as_mut() else {
        eprintln!(
            "skipped: silent admin connections from another user's process (not root: \
             cannot create a user to hold them)"
        );
        return;
    };
    let neighbour = accounts.user("n", group.as_deref().unwrap(), &[]);
    let mut jam = IdleConnections::hold(&daemon.admin_socket(), 200, Some(&neighbour));
    // Held connections time out after ADMIN_REQUEST_TIMEOUT and make room for more of
    // the queued ones, so how many are refused depends on timing; that no more than the
    // limit are ever held does not.
    let per_uid = dnngov_agent::admin::MAX_ADMIN_CONNECTIONS_PER_UID;
    let counts = jam.wait_for("the agent to refuse what it does not hold", |c| {
        c.total() == 200 && c.held <= per_uid
    });
    eprintln!(
        "200 silent admin connections of uid {}: {counts:?}",
        neighbour.uid
    );
    assert!(counts.refused("admin") >= 200 - 4 * per_uid, "{counts:?}");
    let output = daemon.ctl_output(&["status"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The refusals are in the log, within limits.
    let refusals = daemon
        .log()
        .lines()
        .filter(|l| l.contains("refused an admin connection"))
        .count();
    assert!(
        refusals <= LogLimiter::FIRST as usize,
        "{refusals} lines:\n{}",
        daemon.log()
    );
}

#[test]
fn a_garbage_flood_writes_a_few_lines_and_one_count() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path(), None);
    let connection = raw_connect(&daemon.app_socket());
    let (reply, _) = raw_exchange(
        &connection,
        register_json("flooder", std::process::id() as i32).as_bytes(),
    );
    assert!(matches!(reply, Some(Reply::Accepted { .. })), "{reply:?}");
    const FLOOD: usize = 5_000;
    for _ in 0..FLOOD {
        let (reply, _) = raw_exchange(&connection, b"\x01garbage\xff");
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
    }
    let logged = |log: &str| {
        log.lines()
            .filter(|l| l.contains("refused a message") && !l.contains(" were not logged"))
            .count()
    };
    assert_eq!(
        logged(&daemon.log()),
        LogLimiter::FIRST as usize,
        "{}",
        daemon.log()
    );
    // When the window ends, one line gives the count of the rest.
    let count_line = format!(
        "{} more refused messages from uid {}",
        FLOOD - LogLimiter::FIRST as usize,
        nix::unistd::geteuid()
    );
    daemon.wait_for("the count of the lines not logged", || {
        daemon.log().contains(&count_line)
    });
    let log = daemon.log();
    assert_eq!(logged(&log), LogLimiter::FIRST as usize, "{log}");
    assert!(log.lines().count() < 40, "{log}");
}
