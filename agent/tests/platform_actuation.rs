//! Actuation against fixture trees: which files are written, in which order and unit, what
//! is left alone, and how failures are reported.

use std::fs;
use std::path::{Path, PathBuf};

use dnngov_agent::platform::actuate::{ActuationError, Write};
use dnngov_agent::platform::fixture;
use dnngov_agent::platform::{
    Decision, DomainId, Hz, Mechanism, Platform, Sysfs, SysfsError, Takeover, WriteFailure,
};

const POLICY: &str = "sys/devices/system/cpu/cpufreq/policy";
const XAVIER_GPU: &str = "sys/class/devfreq/17000000.gv11b";
const ORIN_GPU: &str = "sys/class/devfreq/17000000.ga10b";
const EMC: &str = "sys/kernel/debug/bpmp/debug/clk/emc";

struct Board {
    dir: tempfile::TempDir,
    takeover: Takeover,
}

impl Board {
    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dir.path().join(rel)).unwrap()
    }
}

fn take_over(make: fn(&Path) -> std::io::Result<()>, edit: impl FnOnce(&Path)) -> Board {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path()).unwrap();
    edit(dir.path());
    let platform = Platform::discover(Sysfs::new(dir.path()));
    let plan = platform.plan().unwrap();
    let state = dir.path().join("run/saved-state.json");
    let takeover = Takeover::begin(Sysfs::new(dir.path()), plan.domains, &state).unwrap();
    assert!(
        takeover.prepare_report().is_ok(),
        "{:?}",
        takeover.prepare_report().errors
    );
    Board { dir, takeover }
}

fn w(path: &str, value: &str) -> Write {
    Write {
        path: PathBuf::from(path),
        value: value.to_string(),
    }
}

fn gv11b() -> DomainId {
    DomainId::Devfreq("17000000.gv11b".into())
}

fn ga10b() -> DomainId {
    DomainId::Devfreq("17000000.ga10b".into())
}

#[test]
fn takeover_switches_to_userspace_lowers_nvpmodel_floor_and_locks_emc() {
    let board = take_over(fixture::xavier_nx, |_| {});
    let writes = &board.takeover.prepare_report().writes;
    assert_eq!(
        writes[0],
        w(&format!("{POLICY}0/scaling_governor"), "userspace")
    );
    assert_eq!(
        writes[1],
        w(&format!("{POLICY}0/scaling_min_freq"), "115200")
    );
    for n in [0, 2, 4] {
        assert_eq!(
            board.read(&format!("{POLICY}{n}/scaling_governor")),
            "userspace\n"
        );
        assert_eq!(
            board.read(&format!("{POLICY}{n}/scaling_min_freq")),
            "115200\n"
        );
        // The cap is never touched under userspace.
        assert_eq!(
            board.read(&format!("{POLICY}{n}/scaling_max_freq")),
            "1907200\n"
        );
    }
    assert_eq!(board.read(&format!("{XAVIER_GPU}/governor")), "userspace\n");
    assert_eq!(board.read(&format!("{EMC}/mrq_rate_locked")), "1\n");
    assert_eq!(writes.len(), 3 * 2 + 1 + 1, "{writes:?}");
}

#[test]
fn userspace_writes_speed_files_in_each_interfaces_unit() {
    let board = take_over(fixture::xavier_nx, |_| {});
    let decision = Decision::new()
        .with(DomainId::Cpu(2), Hz::from_mhz(1400))
        .with(gv11b(), Hz::from_mhz(800))
        .with(DomainId::Emc, Hz(1_600_000_000));
    let report = board.takeover.apply(&decision);
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(
        report.writes,
        vec![
            // 1400 MHz is not in the table: the next one up.
            w(&format!("{POLICY}2/scaling_setspeed"), "1420800"),
            w(&format!("{XAVIER_GPU}/userspace/set_freq"), "803250000"),
            w(&format!("{EMC}/rate"), "1600000000"),
        ]
    );
    assert_eq!(
        board.read(&format!("{POLICY}2/scaling_setspeed")),
        "1420800\n"
    );
    assert_eq!(
        board.read(&format!("{POLICY}0/scaling_setspeed")),
        "<unsupported>\n"
    );
    assert_eq!(report.applied[&DomainId::Cpu(2)], Hz::from_khz(1_420_800));
    assert_eq!(report.applied[&gv11b()], Hz(803_250_000));
}

#[test]
fn nothing_is_written_when_the_value_is_unchanged() {
    let board = take_over(fixture::xavier_nx, |_| {});
    let decision = Decision::new()
        .with(DomainId::Cpu(0), Hz::from_khz(1_497_600))
        .with(gv11b(), Hz(510_000_000));
    assert_eq!(board.takeover.apply(&decision).writes.len(), 2);
    let again = board.takeover.apply(&decision);
    assert!(again.is_ok());
    assert!(again.writes.is_empty(), "{:?}", again.writes);
}

#[test]
fn pinning_raises_max_before_min_and_lowers_min_before_max() {
    let board = take_over(fixture::orin, |_| {});
    let gpu = board
        .takeover
        .actuator()
        .domains()
        .iter()
        .find(|d| d.id == ga10b())
        .unwrap()
        .clone();
    assert_eq!(gpu.mechanism, Mechanism::Pin);
    let min = format!("{ORIN_GPU}/min_freq");
    let max = format!("{ORIN_GPU}/max_freq");

    // From [306, 918] MHz down to 408: the new value is above the current min.
    let r = board
        .takeover
        .apply(&Decision::new().with(ga10b(), Hz(408_000_000)));
    assert_eq!(r.writes, vec![w(&max, "408000000"), w(&min, "408000000")]);
    // Lower, below the current min: min first.
    let r = board
        .takeover
        .apply(&Decision::new().with(ga10b(), Hz(306_000_000)));
    assert_eq!(r.writes, vec![w(&min, "306000000"), w(&max, "306000000")]);
    // Raise above the current max: max first.
    let r = board
        .takeover
        .apply(&Decision::new().with(ga10b(), Hz(816_000_000)));
    assert_eq!(r.writes, vec![w(&max, "816000000"), w(&min, "816000000")]);
    assert_eq!(board.read(&min), "816000000\n");
    assert_eq!(board.read(&max), "816000000\n");
    // The governor of a pinned domain is left as it was.
    assert_eq!(
        board.read(&format!("{ORIN_GPU}/governor")),
        "nvhost_podgov\n"
    );
}

#[test]
fn cpu_without_userspace_governor_is_pinned_in_khz() {
    let board = take_over(fixture::generic_arm, |root| {
        fs::write(
            root.join(format!("{POLICY}4/scaling_available_governors")),
            "conservative ondemand powersave performance schedutil\n",
        )
        .unwrap();
    });
    let mechanisms: Vec<Mechanism> = board
        .takeover
        .actuator()
        .domains()
        .iter()
        .map(|d| d.mechanism)
        .collect();
    assert_eq!(
        mechanisms,
        vec![Mechanism::Userspace, Mechanism::Pin, Mechanism::Userspace]
    );
    assert_eq!(
        board.read(&format!("{POLICY}4/scaling_governor")),
        "schedutil\n"
    );
    let r = board
        .takeover
        .apply(&Decision::new().with(DomainId::Cpu(4), Hz::from_khz(1_000_000)));
    assert!(r.is_ok(), "{:?}", r.errors);
    // [408000, 1800000] down to 1008000: above the current min, so max first.
    assert_eq!(
        r.writes,
        vec![
            w(&format!("{POLICY}4/scaling_max_freq"), "1008000"),
            w(&format!("{POLICY}4/scaling_min_freq"), "1008000"),
        ]
    );
}

#[test]
fn pinned_max_never_exceeds_the_max_found_at_discovery() {
    // A power mode had capped the GPU at 714 MHz before the agent started.
    let board = take_over(fixture::orin, |root| {
        fs::write(root.join(format!("{ORIN_GPU}/max_freq")), "714000000\n").unwrap();
    });
    let r = board
        .takeover
        .apply(&Decision::new().with(ga10b(), Hz(918_000_000)));
    assert_eq!(r.applied[&ga10b()], Hz(714_000_000));
    assert_eq!(board.read(&format!("{ORIN_GPU}/max_freq")), "714000000\n");
}

#[test]
fn userspace_speed_respects_a_max_lowered_after_takeover() {
    let board = take_over(fixture::xavier_nx, |_| {});
    // nvpmodel switches to a lower power mode while the agent runs.
    fs::write(
        board.dir.path().join(format!("{POLICY}2/scaling_max_freq")),
        "1497600\n",
    )
    .unwrap();
    let r = board
        .takeover
        .apply(&Decision::new().with(DomainId::Cpu(2), Hz::from_khz(1_907_200)));
    assert_eq!(
        r.writes,
        vec![w(&format!("{POLICY}2/scaling_setspeed"), "1497600")]
    );
}

#[test]
fn thermal_throttling_state_caps_the_frequency() {
    let board = take_over(fixture::xavier_nx, |_| {});
    // cpufreq-cpu0 at state 3: three steps down from 1907200 kHz.
    fs::write(
        board
            .dir
            .path()
            .join("sys/class/thermal/cooling_device0/cur_state"),
        "3\n",
    )
    .unwrap();
    fs::write(
        board
            .dir
            .path()
            .join("sys/class/thermal/cooling_device1/cur_state"),
        "14\n",
    )
    .unwrap();
    let r = board.takeover.apply(
        &Decision::new()
            .with(DomainId::Cpu(0), Hz::from_khz(1_907_200))
            .with(DomainId::Cpu(2), Hz::from_khz(1_907_200))
            .with(gv11b(), Hz(1_109_250_000)),
    );
    assert_eq!(r.applied[&DomainId::Cpu(0)], Hz::from_khz(1_728_000));
    // policy2 has no cooling device of its own.
    assert_eq!(r.applied[&DomainId::Cpu(2)], Hz::from_khz(1_907_200));
    // State 14 is the GPU's lowest frequency.
    assert_eq!(r.applied[&gv11b()], Hz(114_750_000));
}

#[test]
fn unwritable_file_is_reported_with_path_and_value_and_other_domains_still_apply() {
    let board = take_over(fixture::xavier_nx, |_| {});
    // Root ignores file modes, so the failure is provoked with a directory in the file's
    // place (EISDIR), which fails for every user.
    let setspeed = board.dir.path().join(format!("{POLICY}2/scaling_setspeed"));
    fs::remove_file(&setspeed).unwrap();
    fs::create_dir(&setspeed).unwrap();
    let decision = Decision::new()
        .with(DomainId::Cpu(0), Hz::from_khz(1_420_800))
        .with(DomainId::Cpu(2), Hz::from_khz(1_420_800))
        .with(DomainId::Cpu(4), Hz::from_khz(1_420_800))
        .with(gv11b(), Hz(306_000_000));
    let r = board.takeover.apply(&decision);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let err = &r.errors[0];
    assert_eq!(err.domain, DomainId::Cpu(2));
    let ActuationError::Sysfs(sysfs_err) = &err.error else {
        panic!("expected a sysfs error, got {err}");
    };
    assert_eq!(sysfs_err.write_failure(), Some(WriteFailure::NotAFile));
    let text = err.to_string();
    assert!(
        text.contains("policy2/scaling_setspeed") && text.contains("\"1420800\""),
        "{text}"
    );
    assert_eq!(
        board.read(&format!("{POLICY}0/scaling_setspeed")),
        "1420800\n"
    );
    assert_eq!(
        board.read(&format!("{POLICY}4/scaling_setspeed")),
        "1420800\n"
    );
    assert_eq!(
        board.read(&format!("{XAVIER_GPU}/userspace/set_freq")),
        "306000000\n"
    );
}

#[test]
fn missing_file_is_an_error_naming_it_and_is_not_created() {
    let board = take_over(fixture::xavier_nx, |_| {});
    let set_freq = board
        .dir
        .path()
        .join(format!("{XAVIER_GPU}/userspace/set_freq"));
    fs::remove_file(&set_freq).unwrap();
    let r = board.takeover.apply(
        &Decision::new()
            .with(gv11b(), Hz(306_000_000))
            .with(DomainId::Emc, Hz(800_000_000)),
    );
    assert_eq!(r.errors.len(), 1);
    match &r.errors[0].error {
        ActuationError::Sysfs(e @ SysfsError::Write { .. }) => {
            assert_eq!(e.write_failure(), Some(WriteFailure::Missing));
            assert!(e.path().ends_with("userspace/set_freq"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(!set_freq.exists());
    assert_eq!(board.read(&format!("{EMC}/rate")), "800000000\n");
}

#[test]
fn read_only_file_gives_permission_error_for_non_root() {
    if nix::unistd::geteuid().is_root() {
        println!(
            "skipped: running as root, which ignores file modes (the directory case covers root)"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let board = take_over(fixture::generic_arm, |_| {});
    let setspeed = board.dir.path().join(format!("{POLICY}0/scaling_setspeed"));
    fs::set_permissions(&setspeed, fs::Permissions::from_mode(0o444)).unwrap();
    let r = board.takeover.apply(
        &Decision::new()
            .with(DomainId::Cpu(0), Hz::from_khz(600_000))
            .with(DomainId::Cpu(4), Hz::from_khz(600_000)),
    );
    assert_eq!(r.errors.len(), 1);
    let ActuationError::Sysfs(e) = &r.errors[0].error else {
        panic!()
    };
    assert_eq!(e.write_failure(), Some(WriteFailure::PermissionDenied));
    assert!(e.to_string().contains("\"600000\""));
    assert_eq!(
        board.read(&format!("{POLICY}4/scaling_setspeed")),
        "600000\n"
    );
    fs::set_permissions(&setspeed, fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn decision_for_an_ungoverned_domain_is_an_error_and_the_rest_applies() {
    let board = take_over(fixture::generic_arm, |_| {});
    let r = board.takeover.apply(
        &Decision::new()
            .with(DomainId::Emc, Hz(1))
            .with(DomainId::Cpu(0), Hz::from_khz(816_000)),
    );
    assert_eq!(r.errors.len(), 1);
    assert!(matches!(r.errors[0].error, ActuationError::UnknownDomain));
    assert_eq!(
        board.read(&format!("{POLICY}0/scaling_setspeed")),
        "816000\n"
    );
}

#[test]
fn userspace_floor_raised_externally_is_lowered_only_when_in_the_way() {
    let board = take_over(fixture::xavier_nx, |_| {});
    // nvpmodel rewrites its floor on a mode change.
    let min = format!("{POLICY}0/scaling_min_freq");
    fs::write(board.dir.path().join(&min), "1190400\n").unwrap();
    let above = board
        .takeover
        .apply(&Decision::new().with(DomainId::Cpu(0), Hz::from_khz(1_497_600)));
    assert_eq!(
        above.writes,
        vec![w(&format!("{POLICY}0/scaling_setspeed"), "1497600")]
    );
    let below = board
        .takeover
        .apply(&Decision::new().with(DomainId::Cpu(0), Hz::from_khz(729_600)));
    assert_eq!(
        below.writes,
        vec![
            w(&min, "115200"),
            w(&format!("{POLICY}0/scaling_setspeed"), "729600")
        ]
    );
}

#[test]
fn domain_that_cannot_be_taken_over_is_left_out_and_the_rest_is_governed() {
    let dir = tempfile::tempdir().unwrap();
    fixture::xavier_nx(dir.path()).unwrap();
    let governor = dir.path().join(format!("{XAVIER_GPU}/governor"));
    let plan = Platform::discover(Sysfs::new(dir.path())).plan().unwrap();
    fs::remove_file(&governor).unwrap();
    fs::create_dir(&governor).unwrap();
    let state = dir.path().join("run/state.json");
    let takeover = Takeover::begin(Sysfs::new(dir.path()), plan.domains, &state).unwrap();
    let prepare = takeover.prepare_report();
    assert_eq!(prepare.errors.len(), 1, "{:?}", prepare.errors);
    assert_eq!(prepare.errors[0].domain, gv11b());
    // Its governor could not be read, so it could not be saved, so it is not changed.
    let text = prepare.errors[0].to_string();
    assert!(text.contains("17000000.gv11b/governor"), "{text}");
    assert!(!takeover
        .saved_state()
        .domains
        .iter()
        .any(|d| d.id == gv11b()));
    assert!(takeover
        .actuator()
        .domains()
        .iter()
        .all(|d| d.id != gv11b()));
    let r = takeover.apply(
        &Decision::new()
            .with(gv11b(), Hz(306_000_000))
            .with(DomainId::Cpu(0), Hz::from_khz(729_600)),
    );
    assert!(matches!(r.errors[0].error, ActuationError::UnknownDomain));
    assert_eq!(r.applied[&DomainId::Cpu(0)], Hz::from_khz(729_600));
    // The GPU's set_freq was never touched.
    assert_eq!(
        fs::read_to_string(dir.path().join(format!("{XAVIER_GPU}/userspace/set_freq"))).unwrap(),
        "undefined\n"
    );
}

#[test]
fn governor_that_cannot_be_written_leaves_the_domain_out_for_non_root() {
    if nix::unistd::geteuid().is_root() {
        println!("skipped: running as root, which ignores file modes (capture failures are covered with a directory)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fixture::generic_arm(dir.path()).unwrap();
    let governor = dir.path().join(format!("{POLICY}4/scaling_governor"));
    fs::set_permissions(&governor, fs::Permissions::from_mode(0o444)).unwrap();
    let plan = Platform::discover(Sysfs::new(dir.path())).plan().unwrap();
    let takeover = Takeover::begin(
        Sysfs::new(dir.path()),
        plan.domains,
        &dir.path().join("run/s.json"),
    )
    .unwrap();
    let errors = &takeover.prepare_report().errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].domain, DomainId::Cpu(4));
    let ActuationError::Sysfs(e) = &errors[0].error else {
        panic!()
    };
    assert_eq!(e.write_failure(), Some(WriteFailure::PermissionDenied));
    let ids: Vec<DomainId> = takeover
        .actuator()
        .domains()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(
        ids,
        vec![DomainId::Cpu(0), DomainId::Devfreq("ff9a0000.gpu".into())]
    );
    fs::set_permissions(&governor, fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn value_the_kernel_settles_differently_is_reported_but_not_rewritten_every_apply() {
    let board = take_over(fixture::xavier_nx, |_| {});
    // /dev/null accepts every write and reads back empty, as a clamped limit reads back
    // something other than what was written.
    let setspeed = board.dir.path().join(format!("{POLICY}0/scaling_setspeed"));
    fs::remove_file(&setspeed).unwrap();
    std::os::unix::fs::symlink("/dev/null", &setspeed).unwrap();
    let decision = Decision::new().with(DomainId::Cpu(0), Hz::from_khz(1_420_800));
    let first = board.takeover.apply(&decision);
    assert_eq!(
        first.writes,
        vec![w(&format!("{POLICY}0/scaling_setspeed"), "1420800")]
    );
    assert!(matches!(
        &first.errors[0].error,
        ActuationError::Sysfs(SysfsError::ReadBack { read, .. }) if read.is_empty()
    ));
    let second = board.takeover.apply(&decision);
    assert!(second.writes.is_empty(), "{:?}", second.writes);
    assert_eq!(second.errors.len(), 1, "still not where it was asked to be");
    let other = board
        .takeover
        .apply(&Decision::new().with(DomainId::Cpu(0), Hz::from_khz(1_497_600)));
    assert_eq!(other.writes.len(), 1);
}
