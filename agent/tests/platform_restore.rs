//! Takeover and restore: the state file, restoring on drop, after a leftover state file, and
//! after the process was killed with SIGKILL, always back to the tree byte for byte.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dnngov_agent::platform::fixture;
use dnngov_agent::platform::state::FileRole;
use dnngov_agent::platform::{
    restore, Decision, DomainId, Hz, Platform, SavedState, Sysfs, Takeover,
};

const POLICY: &str = "sys/devices/system/cpu/cpufreq/policy";
const CHILD_ROOT: &str = "DNNGOV_TEST_TAKEOVER_ROOT";
const CHILD_READY: &str = "DNNGOV-TEST-CHILD-READY";

fn begin(root: &Path, state: &Path) -> Takeover {
    let plan = Platform::discover(Sysfs::new(root)).plan().unwrap();
    Takeover::begin(Sysfs::new(root), plan.domains, state).unwrap()
}

fn busy_decision(root: &Path) -> Decision {
    let plan = Platform::discover(Sysfs::new(root)).plan().unwrap();
    let mut decision = Decision::new();
    for d in &plan.domains {
        // Somewhere in the middle, so min, max and speed files all move.
        let mid = Hz((d.frequencies.lowest().0 + d.frequencies.highest().0) / 2);
        decision = decision.with(d.id.clone(), mid);
    }
    decision
}

/// Files under `root` except the agent's own state directory.
fn sysfs_snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, fixture::Entry> {
    let mut snap = fixture::snapshot(root).unwrap();
    snap.retain(|path, _| !path.starts_with("run"));
    snap
}

#[test]
fn state_is_saved_before_the_first_write_and_drop_restores_every_byte() {
    for (name, make) in [
        (
            "xavier_nx",
            fixture::xavier_nx as fn(&Path) -> std::io::Result<()>,
        ),
        ("orin", fixture::orin),
        ("generic_arm", fixture::generic_arm),
    ] {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path()).unwrap();
        let before = sysfs_snapshot(dir.path());
        let state_file = dir.path().join("run/dnngov/saved-state.json");
        let takeover = begin(dir.path(), &state_file);
        let saved = SavedState::load(&state_file).unwrap();
        assert_eq!(&saved, takeover.saved_state(), "{name}");
        // The saved governor is the one found, not the one switched to.
        let gov = saved.domains[0]
            .files
            .iter()
            .find(|f| f.role == FileRole::Governor)
            .unwrap();
        assert_eq!(gov.content.as_deref(), Some("schedutil\n"), "{name}");
        // Atomic write leaves no temporary file behind.
        let entries: Vec<_> = fs::read_dir(state_file.parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(entries.len(), 1, "{name}");

        let report = takeover.apply(&busy_decision(dir.path()));
        assert!(report.is_ok(), "{name}: {:?}", report.errors);
        assert_ne!(
            sysfs_snapshot(dir.path()),
            before,
            "{name}: nothing was changed"
        );
        drop(takeover);
        assert_eq!(sysfs_snapshot(dir.path()), before, "{name}");
        assert!(
            !state_file.exists(),
            "{name}: state file left after a full restore"
        );
    }
}

#[test]
fn explicit_restore_reports_restored_files() {
    let dir = tempfile::tempdir().unwrap();
    fixture::xavier_nx(dir.path()).unwrap();
    let before = sysfs_snapshot(dir.path());
    let takeover = begin(dir.path(), &dir.path().join("run/state.json"));
    takeover.apply(&Decision::new().with(DomainId::Cpu(4), Hz::from_khz(729_600)));
    let report = takeover.restore().unwrap();
    assert!(report.is_ok() && !report.nothing_to_restore);
    assert!(report
        .restored
        .contains(&PathBuf::from(format!("{POLICY}4/scaling_setspeed"))));
    assert!(report
        .restored
        .contains(&PathBuf::from(format!("{POLICY}4/scaling_min_freq"))));
    assert_eq!(sysfs_snapshot(dir.path()), before);
}

#[test]
fn restore_without_a_state_file_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fixture::generic_arm(dir.path()).unwrap();
    let before = sysfs_snapshot(dir.path());
    let report = restore(&dir.path().join("run/none.json"), dir.path()).unwrap();
    assert!(report.nothing_to_restore && report.restored.is_empty());
    assert_eq!(sysfs_snapshot(dir.path()), before);
}

#[test]
fn leftover_state_file_is_restored_before_a_new_takeover_saves() {
    let dir = tempfile::tempdir().unwrap();
    fixture::xavier_nx(dir.path()).unwrap();
    let before = sysfs_snapshot(dir.path());
    let state_file = dir.path().join("run/state.json");
    let crashed = begin(dir.path(), &state_file);
    crashed.apply(&busy_decision(dir.path()));
    // A crash: no destructor runs.
    std::mem::forget(crashed);
    let second = begin(dir.path(), &state_file);
    let gov = &second.saved_state().domains[0].files[0];
    assert_eq!(gov.content.as_deref(), Some("schedutil\n"));
    drop(second);
    assert_eq!(sysfs_snapshot(dir.path()), before);
}

#[test]
fn failed_restore_keeps_the_state_file_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fixture::generic_arm(dir.path()).unwrap();
    let state_file = dir.path().join("run/state.json");
    let takeover = begin(dir.path(), &state_file);
    std::mem::forget(takeover);
    let governor = dir.path().join(format!("{POLICY}0/scaling_governor"));
    fs::remove_file(&governor).unwrap();
    fs::create_dir(&governor).unwrap();
    let report = restore(&state_file, dir.path()).unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let text = report.errors[0].to_string();
    assert!(
        text.contains("policy0/scaling_governor") && text.contains("schedutil"),
        "{text}"
    );
    // Everything else came back.
    assert_eq!(
        fs::read_to_string(dir.path().join(format!("{POLICY}4/scaling_governor"))).unwrap(),
        "schedutil\n"
    );
    assert!(state_file.exists());
}

#[test]
fn corrupt_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    fs::write(&state_file, "{ not json").unwrap();
    let err = restore(&state_file, dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("state.json"), "{err:#}");
}

/// Runs as the parent: spawns this same test binary as a child that takes over the tree,
/// applies a decision, says it is ready and waits; kills it with SIGKILL; restores from the
/// state file it left. As the child (environment variable set) it does the child's part.
#[test]
fn sigkill_after_takeover_then_restore_leaves_every_file_as_before() {
    if let Some(root) = std::env::var_os(CHILD_ROOT) {
        let root = PathBuf::from(root);
        let takeover = begin(&root, &root.join("run/dnngov/saved-state.json"));
        let report = takeover.apply(&busy_decision(&root));
        assert!(report.is_ok(), "{:?}", report.errors);
        println!("{CHILD_READY}");
        loop {
            std::thread::park();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    fixture::xavier_nx(dir.path()).unwrap();
    let before = sysfs_snapshot(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "sigkill_after_takeover_then_restore_leaves_every_file_as_before",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROOT, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(CHILD_READY));
    assert!(ready, "the child exited before taking over");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let during = sysfs_snapshot(dir.path());
    assert_ne!(during, before, "the child changed nothing");
    let governor = dir.path().join(format!("{POLICY}0/scaling_governor"));
    assert_eq!(fs::read_to_string(&governor).unwrap(), "userspace\n");

    let state_file = dir.path().join("run/dnngov/saved-state.json");
    let report = restore(&state_file, dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(sysfs_snapshot(dir.path()), before);
    assert!(!state_file.exists());
}

/// Found by the `saved_state` fuzz target: a state file naming `../` (or anything outside
/// `sys/`) made restore write outside the frequency files.
#[test]
fn a_state_file_naming_a_path_outside_sys_is_refused_and_restores_nothing() {
    let state = |path: &str| {
        format!(
            r#"{{"format": 1, "pid": 1, "sysfs_root": "/", "domains": [{{"id": "Emc",
              "unit": "Hz", "files": [{{"path": {path:?}, "role": "Lock", "content": "1\n"}}]}}]}}"#
        )
    };
    let origin = Path::new("/run/dnngov/saved-state.json");
    for path in [
        "sys/devices/system/cpu/cpufreq/policy0/scali/../etspeed",
        "sys/../etc/passwd",
        "../etc/passwd",
        "etc/passwd",
        "/etc/passwd",
        "./sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked",
        "",
    ] {
        let error = format!("{:#}", SavedState::parse(&state(path), origin).unwrap_err());
        assert!(
            error.contains("saved-state.json") && error.contains("not a path under sys/"),
            "{path}: {error}"
        );
    }
    for path in [
        "sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked",
        "/sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked",
    ] {
        SavedState::parse(&state(path), origin).unwrap();
    }

    // Through `restore` too: the file outside is left alone.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("sys")).unwrap();
    fs::write(dir.path().join("victim"), "kept\n").unwrap();
    let state_file = dir.path().join("saved-state.json");
    fs::write(&state_file, state("sys/../victim")).unwrap();
    let error = restore(&state_file, dir.path()).unwrap_err();
    assert!(format!("{error:#}").contains("sys/../victim"), "{error:#}");
    assert_eq!(
        fs::read_to_string(dir.path().join("victim")).unwrap(),
        "kept\n"
    );
}
