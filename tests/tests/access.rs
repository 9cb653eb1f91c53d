//! Who may do what, with real users against a real dnngovd: the app group registers apps
//! and reads the status; changing things (hold, release, another user's target) takes
//! root, dnngovd's own user or the admin group; an app's owner sets its own app's target;
//! a user in neither group cannot connect at all.
//!
//! Users and groups are created for the test and removed after it, which needs root;
//! without root the test says so and checks only what it can.

use dnngov_agent::platform::fixture;
use dnngov_tests::{is_root, run_as, Account, Daemon, TestAccounts, TestApp};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

/// `set-target ID --deadline-ms MS`.
fn set<'a>(id: &'a str, ms: &'a str) -> [&'a str; 4] {
    ["set-target", id, "--deadline-ms", ms]
}

/// `dnngovctl --json ARGS` as `account`.
fn ctl_as(daemon: &Daemon, account: &Account, args: &[&str]) -> Output {
    let mut command = daemon.ctl_command(args);
    run_as(&mut command, account);
    command.output().expect("dnngovctl runs")
}

fn succeeds(output: &Output) -> bool {
    output.status.success()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The test app registered as `account` (root when `None`); its app id (0: refused).
fn app_as(daemon: &Daemon, account: Option<&Account>) -> (TestApp, u32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dnngov-test-app"));
    command.args([daemon.app_socket().to_str().unwrap(), "12", "0"]);
    if let Some(account) = account {
        run_as(&mut command, account);
    }
    let mut app = TestApp::spawn(&mut command);
    let line = app.line();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"registered"), "{line}");
    (app, words[1].parse().unwrap())
}

#[test]
fn the_app_group_registers_and_reads_and_only_admins_change_things() {
    if !is_root() {
        eprintln!("skipped: creating users and groups to run dnngovctl as needs root");
        return;
    }
    let mut accounts = TestAccounts::new("p");
    let (apps, _) = accounts.group("apps");
    let (admins, _) = accounts.group("adm");
    let (others, _) = accounts.group("x");
    let alice = accounts.user("alice", &apps, &[]);
    let bob = accounts.user("bob", &apps, &[]);
    // An admin through a supplementary group, as `usermod -aG` makes one.
    let carol = accounts.user("carol", &apps, &[&admins]);
    let dave = accounts.user("dave", &others, &[]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        &format!("[agent]\ngroup = \"{apps}\"\nadmin_group = \"{admins}\"\n"),
    );
    for socket in [daemon.app_socket(), daemon.admin_socket()] {
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660, "{}", socket.display());
        assert_eq!(meta.uid(), 0, "{}", socket.display());
        assert_eq!(
            Some(meta.gid()),
            nix::unistd::Group::from_name(&apps)
                .unwrap()
                .map(|g| g.gid.as_raw()),
            "{}",
            socket.display()
        );
    }

    // The saved state: root's alone (it names every file dnngovd changed).
    let state = std::fs::metadata(daemon.state_file()).expect("the saved state");
    assert_eq!(state.mode() & 0o777, 0o600);
    assert_eq!(state.uid(), 0);

    // The app group registers apps; a user outside it cannot connect.
    let (_alices, alice_app) = app_as(&daemon, Some(&alice));
    assert_ne!(alice_app, 0, "a member of the app group registers");
    let (_roots, root_app) = app_as(&daemon, None);
    assert_ne!(root_app, 0);
    let (_daves, dave_app) = app_as(&daemon, Some(&dave));
    assert_eq!(dave_app, 0, "a user outside the app group cannot register");
    let output = ctl_as(&daemon, &dave, &["status"]);
    assert!(!succeeds(&output));
    assert!(
        stderr(&output).contains("permission denied"),
        "{}",
        stderr(&output)
    );

    // Members read.
    for user in [&alice, &bob] {
        for command in ["status", "apps"] {
            let output = ctl_as(&daemon, user, &[command]);
            assert!(
                succeeds(&output),
                "{} {command}: {}",
                user.name,
                stderr(&output)
            );
        }
    }

    // A member who is not an admin changes nothing but its own app's target.
    let alice_id = alice_app.to_string();
    let root_id = root_app.to_string();
    let denied = |output: Output, what: &str| {
        assert!(!succeeds(&output), "{what} was allowed");
        let text = stderr(&output);
        assert!(text.contains("permission denied"), "{what}: {text}");
        text
    };
    let text = denied(
        ctl_as(&daemon, &alice, &["hold", "--gpu-mhz", "600"]),
        "hold",
    );
    assert!(
        text.contains(&format!("a member of group {admins}")) && text.contains(&alice.name),
        "{text}"
    );
    denied(ctl_as(&daemon, &alice, &["release"]), "release");
    // restore does not go through dnngovd: the saved state's mode keeps it to its owner.
    let state_file = daemon.state_file();
    let text = denied(
        ctl_as(
            &daemon,
            &alice,
            &["restore", "--state-file", state_file.to_str().unwrap()],
        ),
        "restore",
    );
    assert!(
        text.contains(&format!(
            "restore is for root or user root (the owner of {}, mode 0600), and {} is not",
            state_file.display(),
            alice.name
        )),
        "{text}"
    );
    assert!(state_file.exists(), "the refused restore left the state");
    let output = ctl_as(&daemon, &alice, &set(&alice_id, "40"));
    assert!(
        succeeds(&output),
        "an owner sets its app's target: {}",
        stderr(&output)
    );
    let text = denied(
        ctl_as(&daemon, &alice, &set(&root_id, "40")),
        "set-target of another user's app",
    );
    assert!(text.contains("belongs to root"), "{text}");
    denied(
        ctl_as(&daemon, &bob, &set(&alice_id, "45")),
        "set-target of another user's app",
    );
    let deadline = |id: u32| {
        let apps = daemon.ctl(&["apps"]).unwrap();
        apps.as_array()
            .unwrap()
            .iter()
            .find(|a| a["app_id"] == id)
            .and_then(|a| a["deadline_ms"].as_f64())
    };
    assert_eq!(deadline(alice_app), Some(40.0), "bob's change was refused");
    assert_eq!(deadline(root_app), Some(50.0), "alice's change was refused");

    // An admin holds, releases and sets any app's target; so does root.
    let output = ctl_as(
        &daemon,
        &carol,
        &["hold", "--gpu-mhz", "600", "--lease-s", "5"],
    );
    assert!(succeeds(&output), "{}", stderr(&output));
    let output = ctl_as(&daemon, &carol, &["release"]);
    assert!(succeeds(&output), "{}", stderr(&output));
    let output = ctl_as(&daemon, &carol, &set(&root_id, "35"));
    assert!(succeeds(&output), "{}", stderr(&output));
    assert_eq!(deadline(root_app), Some(35.0));
    let output = daemon.ctl_output(&set(&alice_id, "30"));
    assert!(succeeds(&output), "{}", stderr(&output));
    assert!(daemon
        .ctl(&["hold", "--gpu-mhz", "600", "--lease-s", "5"])
        .is_some());
    assert!(daemon.ctl(&["release"]).is_some());
    daemon.stop();
}

#[test]
fn without_an_admin_group_only_root_and_the_daemons_user_change_things() {
    if !is_root() {
        eprintln!("skipped: creating a user to run dnngovctl as needs root");
        return;
    }
    let mut accounts = TestAccounts::new("q");
    let (apps, _) = accounts.group("apps");
    let (admins, _) = accounts.group("adm");
    let carol = accounts.user("carol", &apps, &[&admins]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        &format!("[agent]\ngroup = \"{apps}\"\nadmin_group = \"\"\n"),
    );
    let output = ctl_as(&daemon, &carol, &["hold", "--gpu-mhz", "600"]);
    assert!(!succeeds(&output));
    assert!(
        stderr(&output).contains("hold is for root or user root"),
        "{}",
        stderr(&output)
    );
    assert!(ctl_as(&daemon, &carol, &["status"]).status.success());
    daemon.stop();
}

/// The socket's owner and group, and whom that lets in, as the log should say it.
fn who_can_connect(socket: &Path) -> String {
    let meta = std::fs::metadata(socket).unwrap();
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .unwrap()
        .unwrap()
        .name;
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .unwrap()
        .unwrap()
        .name;
    let users = if meta.uid() == 0 {
        "root".to_string()
    } else {
        format!("root, user {user}")
    };
    format!(
        "{} is {user}:{group} with mode 0660, so only {users} and members of group {group} \
         can connect to it",
        socket.display()
    )
}

#[test]
fn a_missing_group_is_logged_with_who_can_connect() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        "[agent]\ngroup = \"dnngov-no-such-group\"\nadmin_group = \"dnngov-no-such-admins\"\n",
    );
    let log = daemon.log();
    for socket in [daemon.app_socket(), daemon.admin_socket()] {
        let line = format!(
            "group dnngov-no-such-group does not exist: {}",
            who_can_connect(&socket)
        );
        assert!(log.contains(&line), "{line:?} in:\n{log}");
    }
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    let line =
        format!("admin group dnngov-no-such-admins does not exist: only root and user {user} may");
    assert!(log.contains(&line), "{line:?} in:\n{log}");
    daemon.stop();
}
