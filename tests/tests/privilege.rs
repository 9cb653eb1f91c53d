//! dnngovd as systemd/dnngovd.service runs it: as its own system user, with only the
//! capabilities the unit grants, against a board whose frequency files the udev rules
//! have given to the daemon's group. It governs, loads and attaches its eBPF telemetry,
//! sees the inference markers of another user's app through uprobes, and restores the
//! board on SIGTERM; without CAP_BPF and CAP_PERFMON it falls back to procfs and says so.
//! The unit's `systemd-analyze security` exposure stays at most the documented figure.
//!
//! Users and groups are created for the test and removed after it (root only); the
//! daemon is started through util-linux `setpriv`. Without root, `setpriv` or a kernel
//! that loads BPF programs at all, the tests say why they skip.

use dnngov_agent::platform::fixture;
use dnngov_tests::{
    free_local_address, http_get, is_root, run_as, workspace_root, Account, Daemon, TestAccounts,
    TestApp,
};
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The capabilities systemd/dnngovd.service gives dnngovd (`AmbientCapabilities=`), in
/// setpriv's spelling (`CAP_SYS_ADMIN` is `sys_admin`).
fn unit_caps() -> Vec<String> {
    let unit = std::fs::read_to_string(workspace_root().join("systemd/dnngovd.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities=");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| c.strip_prefix("CAP_").unwrap().to_lowercase())
        .collect();
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    assert_eq!(bounding, line, "the bounding set is the ambient set");
    caps
}

/// `caps` less `drop`.
fn without(caps: &[String], drop: &[&str]) -> Vec<String> {
    caps.iter()
        .filter(|c| !drop.contains(&c.as_str()))
        .cloned()
        .collect()
}

/// The exposure `systemd-analyze security --offline=true` gives the shipped unit at most,
/// as docs/operator-guide.md records it.
const DOCUMENTED_EXPOSURE: f64 = 3.9;

/// The files 60-dnngov.rules gives to the admin group, per cpufreq policy and per devfreq
/// device.
const CPUFREQ_FILES: &[&str] = &[
    "scaling_governor",
    "scaling_setspeed",
    "scaling_min_freq",
    "scaling_max_freq",
];
const DEVFREQ_FILES: &[&str] = &["governor", "min_freq", "max_freq", "userspace/set_freq"];

/// Why this machine cannot run the daemon tests, if it cannot.
fn cannot_run() -> Option<String> {
    if !is_root() {
        return Some("creating users and dropping to one with setpriv needs root".into());
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Some("setpriv (util-linux) is not installed".into());
    }
    if let Err(e) = dnngov_bpf::Telemetry::with_bpf(&dnngov_bpf::Config::default()) {
        return Some(format!("BPF does not load here even as root: {e}"));
    }
    None
}

/// `setpriv` arguments that run the rest as `account`, with its groups, keeping exactly
/// `caps` (inheritable, ambient and bounding: as AmbientCapabilities= and
/// CapabilityBoundingSet= do).
fn setpriv(account: &Account, caps: &[String]) -> Vec<String> {
    let set: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "setpriv".into(),
        "--reuid".into(),
        account.uid.to_string(),
        "--regid".into(),
        account.gid.to_string(),
        "--init-groups".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--".into(),
    ]
}

/// What the udev rules do on a board: the frequency files of every CPU's cpufreq policy
/// and of every devfreq device go to group `gid`, group-writable.
fn grant_as_udev_does(root: &Path, gid: u32) -> Vec<PathBuf> {
    let mut granted = Vec::new();
    let mut grant = |dir: PathBuf, names: &[&str]| {
        for name in names {
            let path = dir.join(name);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            std::os::unix::fs::chown(&path, None, Some(gid)).unwrap();
            let mode = meta.permissions().mode() | 0o020;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            granted.push(path.canonicalize().unwrap());
        }
    };
    for entry in std::fs::read_dir(root.join("sys/devices/system/cpu")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("cpu") && name[3..].parse::<u32>().is_ok() {
            grant(dir.join("cpufreq"), CPUFREQ_FILES);
        }
    }
    for entry in std::fs::read_dir(root.join("sys/class/devfreq")).unwrap() {
        grant(entry.unwrap().path(), DEVFREQ_FILES);
    }
    granted.sort();
    granted.dedup();
    granted
}

/// A daemon run as `daemon_user` with `caps` on a fresh Xavier NX tree (frequency files
/// granted to `admin_gid`, the EMC's debugfs directory root's and 0700 as on a board),
/// its sockets given to group `apps`; the folder is the daemon user's, as
/// RuntimeDirectory= makes /run/dnngov. Returns the daemon, its folder and the tree.
struct Setup {
    daemon: Daemon,
    root: PathBuf,
    before: std::collections::BTreeMap<PathBuf, fixture::Entry>,
    metrics: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// Stops the daemon (SIGTERM) and checks the board is as it was before it started.
fn stop_and_compare(setup: Setup, what: &str) {
    let Setup {
        daemon,
        root,
        before,
        ..
    } = setup;
    daemon.stop();
    assert_eq!(fixture::snapshot(&root).unwrap(), before, "{what}");
}

fn start(daemon_user: &Account, admin_gid: u32, apps: &str, caps: &[String]) -> Setup {
    start_on(daemon_user, Some(admin_gid), apps, caps)
}

/// `admin_gid`: `None` leaves the files as the kernel makes them, root's (no udev rules,
/// or no group for them).
fn start_on(daemon_user: &Account, admin_gid: Option<u32>, apps: &str, caps: &[String]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    if let Some(admin_gid) = admin_gid {
        let granted = grant_as_udev_does(&root, admin_gid);
        assert!(
            granted.len() >= 8,
            "the fixture has cpufreq and devfreq files: {granted:?}"
        );
    }
    std::fs::set_permissions(
        root.join("sys/kernel/debug"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let before = fixture::snapshot(&root).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(daemon_user.uid), Some(daemon_user.gid)).unwrap();
    let metrics = free_local_address();
    let daemon = Daemon::start_under(
        dir.path(),
        &root,
        &format!(
            "[agent]\ngroup = \"{apps}\"\nadmin_group = \"\"\n[metrics]\nlisten = \"{metrics}\"\n"
        ),
        &(if std::env::var_os("DBGROOT").is_some() {
            Vec::new()
        } else {
            setpriv(daemon_user, caps)
        }),
    );
    Setup {
        daemon,
        root,
        before,
        metrics,
        _dir: dir,
    }
}

fn status(daemon: &Daemon) -> Value {
    daemon.ctl(&["status"]).expect("dnngovctl status")
}

/// The source status gives for `what` ("CPU busy time", "inferences of app 3").
fn source_of(status: &Value, what: &str) -> Option<String> {
    status["telemetry"]
        .as_array()?
        .iter()
        .find(|t| t["what"] == what)
        .and_then(|t| t["source"].as_str())
        .map(str::to_string)
}

fn notes(status: &Value) -> Vec<String> {
    status["notes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel))
        .unwrap()
        .trim()
        .to_string()
}

/// The test app run as `account`; its app id once registered.
/// With `go`, the app runs its inferences only after `send_line`.
fn app_as(daemon: &Daemon, account: &Account, inferences: u32, go: bool) -> (TestApp, u32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dnngov-test-app"));
    command.args([
        daemon.app_socket().to_str().unwrap(),
        "12",
        &inferences.to_string(),
    ]);
    if go {
        command.arg("go");
    }
    run_as(&mut command, account);
    let mut app = TestApp::spawn(&mut command);
    let line = app.line();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"registered"), "{line}");
    let id = words[1].parse().unwrap();
    assert_ne!(id, 0, "refused: {line}");
    (app, id)
}

const CPU_GOVERNOR: &str = "sys/devices/system/cpu/cpufreq/policy0/scaling_governor";
const EMC_LOCK: &str = "sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked";

#[test]
fn an_unprivileged_daemon_with_the_units_capabilities_governs_and_traces_other_users_apps() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
    let mut accounts = TestAccounts::new("v");
    let (apps, _) = accounts.group("apps");
    let (admins, admin_gid) = accounts.group("adm");
    let (own, _) = accounts.group("own");
    // As install.sh makes them: dnngovd in the app group (so it may give its sockets to
    // it) and in the group the udev rules give the frequency files to.
    let daemon_user = accounts.user("d", &own, &[&apps, &admins]);
    let alice = accounts.user("alice", &apps, &[]);

    let caps = unit_caps();
    for needed in [
        "bpf",
        "perfmon",
        "sys_admin",
        "dac_read_search",
        "sys_ptrace",
    ] {
        assert!(caps.iter().any(|c| c == needed), "{needed} in {caps:?}");
    }
    let setup = start(&daemon_user, admin_gid, &apps, &caps);
    let daemon = &setup.daemon;
    let pid = daemon.child.id();
    let caps = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = caps.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == daemon_user.uid.to_string()),
        "dnngovd runs as {}: {uid_line}",
        daemon_user.name
    );

    // The sockets: the daemon's user's, group apps (no CAP_CHOWN: it is a member), 0660.
    for socket in [daemon.app_socket(), daemon.admin_socket()] {
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660, "{}", socket.display());
        assert_eq!(meta.uid(), daemon_user.uid, "{}", socket.display());
        let group = nix::unistd::Group::from_name(&apps).unwrap().unwrap();
        assert_eq!(meta.gid(), group.gid.as_raw(), "{}", socket.display());
    }
    let state = std::fs::metadata(daemon.state_file()).expect("the saved state");
    assert_eq!(state.mode() & 0o777, 0o600);
    assert_eq!(state.uid(), daemon_user.uid);

    // It governs through the group-writable files.
    daemon.wait_for("the CPU governor taken over", || {
        read(&setup.root, CPU_GOVERNOR) == "userspace"
    });

    // eBPF loaded and attached, not the procfs fallback.
    let now = status(daemon);
    assert_eq!(
        source_of(&now, "CPU busy time").as_deref(),
        Some("bpf"),
        "{now:#}\n{}",
        daemon.log()
    );
    // The EMC clock in debugfs (root's, 0700) is seen but left alone, and said once.
    let emc_note = notes(&now)
        .into_iter()
        .find(|n| n.starts_with("the EMC (memory) clock is not governed"))
        .unwrap_or_else(|| panic!("no EMC note in {now:#}"));
    assert!(
        emc_note.contains(&format!("user {} cannot write", daemon_user.name)),
        "{emc_note}"
    );
    assert_eq!(daemon.log().matches(emc_note.as_str()).count(), 1);
    assert_eq!(read(&setup.root, EMC_LOCK), "0");

    // Another user's app: registered, its binary's markers probed through /proc/PID/maps
    // and exe (CAP_SYS_PTRACE) and uprobes (CAP_BPF, CAP_PERFMON).
    let (mut app, app_id) = app_as(daemon, &alice, 20, true);
    assert_eq!(app.line(), "switched 12");
    let what = format!("inferences of app {app_id}");
    daemon.wait_for("the app's inferences from eBPF", || {
        source_of(&status(daemon), &what).as_deref() == Some("bpf")
    });
    app.send_line("go");
    assert!(app.line().starts_with("done 20 "));
    // Latencies come from the uprobes' records alone when the app is probed.
    let seen = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("dnngov_inference_latency_seconds_count{"))
            .filter(|l| l.contains(&format!("app_id=\"{app_id}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .next()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = http_get(setup.metrics, "/metrics");
        if seen(&text) == Some(20.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "20 inferences of app {app_id} seen by the uprobes:\n{text}\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    app.finish();

    // SIGTERM: the board as it was.
    stop_and_compare(setup, "the tree is restored");
}

/// Accounts as install.sh makes them (tag: this test's), the daemon started with `caps`.
fn accounts_and_daemon(tag: &str, caps: &[String]) -> (TestAccounts, Account, Account, Setup) {
    let mut accounts = TestAccounts::new(tag);
    let (apps, _) = accounts.group("apps");
    let (admins, admin_gid) = accounts.group("adm");
    let (own, _) = accounts.group("own");
    let daemon_user = accounts.user("d", &own, &[&apps, &admins]);
    let alice = accounts.user("alice", &apps, &[]);
    let setup = start(&daemon_user, admin_gid, &apps, caps);
    setup.daemon.wait_for("the CPU governor taken over", || {
        read(&setup.root, CPU_GOVERNOR) == "userspace"
    });
    (accounts, daemon_user, alice, setup)
}

#[test]
fn without_cap_bpf_cap_perfmon_and_cap_sys_admin_the_daemon_falls_back_to_procfs_and_says_so() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
    let caps = without(&unit_caps(), &["bpf", "perfmon", "sys_admin"]);
    let (_accounts, _, alice, setup) = accounts_and_daemon("w", &caps);
    let daemon = &setup.daemon;
    let now = status(daemon);
    assert_eq!(
        source_of(&now, "CPU busy time").as_deref(),
        Some("procfs"),
        "{now:#}"
    );
    let fallback = notes(&now)
        .into_iter()
        .find(|n| n.ends_with("; using procfs and shared-memory counters"))
        .unwrap_or_else(|| panic!("no note of the fallback in {now:#}"));
    println!("the fallback, as status says it: {fallback}");
    assert!(daemon.log().contains("falling back to procfs"));

    // Apps are still counted, from their shared pages.
    let (mut app, app_id) = app_as(daemon, &alice, 5, false);
    assert_eq!(app.line(), "switched 12");
    let what = format!("inferences of app {app_id}");
    daemon.wait_for("the app counted from its page", || {
        source_of(&status(daemon), &what).as_deref() == Some("shared-memory")
    });
    app.finish();
    stop_and_compare(setup, "the tree is restored");
}

#[test]
fn without_cap_sys_admin_bpf_loads_but_apps_are_counted_from_their_pages() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
    let caps = without(&unit_caps(), &["sys_admin"]);
    let (_accounts, _, alice, setup) = accounts_and_daemon("x", &caps);
    let daemon = &setup.daemon;
    let now = status(daemon);
    assert_eq!(
        source_of(&now, "CPU busy time").as_deref(),
        Some("bpf"),
        "{now:#}\n{}",
        daemon.log()
    );
    let (mut app, app_id) = app_as(daemon, &alice, 5, false);
    assert_eq!(app.line(), "switched 12");
    let what = format!("inferences of app {app_id}");
    daemon.wait_for("the app counted from its page", || {
        source_of(&status(daemon), &what).as_deref() == Some("shared-memory")
    });
    let log = daemon.log();
    let said = format!("app {app_id}: using its shared-memory counters");
    let line = log
        .lines()
        .find(|l| l.contains(&said))
        .unwrap_or_else(|| panic!("{said:?} in:\n{log}"));
    println!("without CAP_SYS_ADMIN: {line}");
    app.finish();
    stop_and_compare(setup, "the tree is restored");
}

#[test]
fn without_the_udev_rules_nothing_is_written_and_each_domain_says_why() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
    let mut accounts = TestAccounts::new("y");
    let (apps, _) = accounts.group("apps");
    let (own, _) = accounts.group("own");
    let daemon_user = accounts.user("d", &own, &[&apps]);
    let setup = start_on(&daemon_user, None, &apps, &unit_caps());
    let now = status(&setup.daemon);
    let ungoverned: Vec<String> = notes(&now)
        .into_iter()
        .filter(|n| n.ends_with("that domain is left ungoverned"))
        .collect();
    // Three CPU clusters and the GPU; the EMC is said apart.
    assert_eq!(ungoverned.len(), 4, "{now:#}");
    for note in &ungoverned {
        assert!(note.contains("Permission denied"), "{note}");
    }
    println!("without the udev rules: {}", ungoverned[0]);
    stop_and_compare(setup, "nothing was written");
}

/// The unit's `ExecStopPost=dnngovctl restore` runs as the service's user with its
/// capabilities: after a SIGKILL it puts the board back through the udev grant alone.
#[test]
fn after_sigkill_dnngovctl_restore_as_the_services_user_puts_the_board_back() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
    let caps = unit_caps();
    let (_accounts, daemon_user, _, setup) = accounts_and_daemon("k", &caps);
    let Setup {
        daemon,
        root,
        before,
        ..
    } = setup;
    let state_file = daemon.state_file();
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.wait();
    assert_ne!(
        fixture::snapshot(&root).unwrap(),
        before,
        "the killed daemon left its settings"
    );
    let mut restore = Command::new(dnngov_tests::built_binary("dnngovctl"));
    restore.args(["restore", "--state-file", state_file.to_str().unwrap()]);
    let wrapper = setpriv(&daemon_user, &caps);
    let mut command = Command::new(&wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg(restore.get_program())
        .args(restore.get_args());
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    println!("dnngovctl restore as {}: {text}", daemon_user.name);
    assert!(text.starts_with("restored "), "{text}");
    assert!(
        !state_file.exists(),
        "the state file is removed once restored"
    );
    assert_eq!(
        fixture::snapshot(&root).unwrap(),
        before,
        "the tree is restored"
    );
}

/// The documented root fallback (docs/operator-guide.md, "Running as root"): root, with
/// the unit's bounding set and CAP_CHOWN, governs the EMC clock in root's debugfs too and
/// gives its sockets to the app group.
#[test]
fn as_root_with_the_documented_drop_in_the_emc_is_governed_too() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
    let mut accounts = TestAccounts::new("z");
    let (apps, apps_gid) = accounts.group("apps");
    let mut caps = unit_caps();
    caps.push("chown".into());
    let set: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    std::fs::set_permissions(
        root.join("sys/kernel/debug"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let before = fixture::snapshot(&root).unwrap();
    let daemon = Daemon::start_under(
        dir.path(),
        &root,
        &format!("[agent]\ngroup = \"{apps}\"\n"),
        &[
            "setpriv".into(),
            format!("--bounding-set={set}"),
            "--".into(),
        ],
    );
    for socket in [daemon.app_socket(), daemon.admin_socket()] {
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, apps_gid),
            "{}",
            socket.display()
        );
    }
    daemon.wait_for("the EMC clock locked", || read(&root, EMC_LOCK) == "1");
    let now = status(&daemon);
    assert_eq!(source_of(&now, "CPU busy time").as_deref(), Some("bpf"));
    assert!(!notes(&now).iter().any(|n| n.contains("EMC")), "{now:#}");
    daemon.stop();
    assert_eq!(
        fixture::snapshot(&root).unwrap(),
        before,
        "the tree is restored"
    );
}

/// The "Overall exposure level" figure of `systemd-analyze security` output.
fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.split(':')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_shipped_unit_is_no_more_exposed_than_documented() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipping: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // As install.sh installs it.
    let unit = dir.path().join("dnngovd.service");
    let text = std::fs::read_to_string(workspace_root().join("systemd/dnngovd.service")).unwrap();
    std::fs::write(&unit, text.replace("@PREFIX@", "/usr/local")).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    let Some(score) = exposure(&text) else {
        if errors.contains("offline") || errors.contains("unrecognized option") {
            eprintln!(
                "skipping: this systemd-analyze ({}) has no --offline: {errors}",
                String::from_utf8_lossy(&version.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            return;
        }
        panic!("no exposure level in systemd-analyze's output:\n{text}\n{errors}");
    };
    println!(
        "systemd-analyze security --offline=true dnngovd.service: {score} \
         (documented: at most {DOCUMENTED_EXPOSURE})"
    );
    assert!(
        score <= DOCUMENTED_EXPOSURE,
        "exposure {score} is above the documented {DOCUMENTED_EXPOSURE}:\n{text}"
    );
    let guide = std::fs::read_to_string(workspace_root().join("docs/operator-guide.md")).unwrap();
    assert!(
        guide.contains(&format!("exposure level {DOCUMENTED_EXPOSURE}")),
        "docs/operator-guide.md records the figure {DOCUMENTED_EXPOSURE}"
    );
}
