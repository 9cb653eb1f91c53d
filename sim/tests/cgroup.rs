//! The cgroup layouts against fixture trees laid out as the kernel mounts them: cgroup v2
//! (which this machine cannot offer with the cpu controller) and the v1 hierarchies,
//! through the same code that runs against /sys/fs/cgroup.

use std::fs;
use std::path::Path;

use dnngov_sim::cgroup::{ClusterGroups, Layout};

fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .unwrap()
        .trim()
        .to_string()
}

fn v2_tree(root: &Path, controllers: &str, enabled: &str) {
    put(root, "cgroup.controllers", controllers);
    put(root, "cgroup.subtree_control", enabled);
    put(root, "cgroup.procs", "1\n");
}

fn v1_tree(root: &Path) {
    put(root, "cpu/cpu.cfs_quota_us", "-1\n");
    put(root, "cpu/cpu.cfs_period_us", "100000\n");
    put(root, "cpu/cgroup.procs", "1\n");
    put(root, "cpuacct/cpuacct.usage", "0\n");
    put(root, "cpuacct/cgroup.procs", "1\n");
    put(root, "cpuset/cpuset.cpus", "0-3\n");
    put(root, "cpuset/cpuset.mems", "0\n");
    put(root, "cpuset/cgroup.procs", "1\n");
    // What systemd's hybrid mode adds: a v2 hierarchy without controllers.
    v2_tree(&root.join("unified"), "", "");
}

fn parent(groups: &ClusterGroups) -> String {
    groups.cluster_dirs(0)[0]
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string()
}

#[test]
fn v2_enables_its_controllers_pins_weighs_and_throttles() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    v2_tree(root, "cpuset cpu io memory pids", "memory pids");
    let layout = Layout::detect(root).unwrap();
    assert_eq!(
        layout,
        Layout::V2 {
            root: root.to_path_buf(),
            cpuset: true
        }
    );
    let mut groups = ClusterGroups::create(layout, &[vec![0], vec![1, 2]], 10_000).unwrap();
    let p = parent(&groups);
    // Controllers are enabled one at a time; the fixture keeps the last write.
    assert_eq!(read(root, "cgroup.subtree_control"), "+cpuset");
    assert_eq!(
        read(root, &format!("{p}/cgroup.subtree_control")),
        "+cpu +cpuset"
    );
    assert_eq!(read(root, &format!("{p}/cpuset.cpus")), "0,1,2");
    assert_eq!(read(root, &format!("{p}/cluster1/cpuset.cpus")), "1,2");
    assert_eq!(read(root, &format!("{p}/cluster0/cpu.weight")), "10000");
    assert_eq!(read(root, &format!("{p}/cluster0/cpu.max")), "10000 10000");
    // Two CPUs at half speed: one CPU's worth of every period.
    groups.set_speed(1, 0.5).unwrap();
    assert_eq!(read(root, &format!("{p}/cluster1/cpu.max")), "10000 10000");
    groups.set_speed(1, 0.25).unwrap();
    assert_eq!(read(root, &format!("{p}/cluster1/cpu.max")), "5000 10000");
    put(
        root,
        &format!("{p}/cluster0/cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    assert_eq!(groups.usage_ns(0).unwrap(), 1_500_000);
    // A process gets a group of its own, limited to one CPU at the cluster's speed:
    // the cluster's quota alone would let one thread run at full speed on two CPUs' quota.
    groups.place(1, 4242, 1).unwrap();
    assert_eq!(
        read(root, &format!("{p}/cluster1/cgroup.subtree_control")),
        "+cpu +cpuset"
    );
    assert_eq!(
        read(root, &format!("{p}/cluster1/proc4242x1/cgroup.procs")),
        "4242"
    );
    assert_eq!(
        read(root, &format!("{p}/cluster1/proc4242x1/cpu.max")),
        "2500 10000"
    );
    // The clock changes: the cluster and every process group in it follow.
    groups.set_speed(1, 0.5).unwrap();
    assert_eq!(read(root, &format!("{p}/cluster1/cpu.max")), "10000 10000");
    assert_eq!(
        read(root, &format!("{p}/cluster1/proc4242x1/cpu.max")),
        "5000 10000"
    );
    groups.remove().unwrap();
    assert!(!root.join(&p).exists());
}

#[test]
fn v1_uses_the_cpu_cpuacct_and_cpuset_hierarchies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    v1_tree(root);
    let layout = Layout::detect(root).unwrap();
    assert_eq!(
        layout,
        Layout::V1 {
            cpu: root.join("cpu"),
            cpuacct: root.join("cpuacct"),
            cpuset: Some(root.join("cpuset")),
        }
    );
    let mut groups = ClusterGroups::create(layout, &[vec![3]], 5_000).unwrap();
    let p = parent(&groups);
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/cpu.cfs_period_us")),
        "5000"
    );
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/cpu.cfs_quota_us")),
        "5000"
    );
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/cpu.shares")),
        "262144"
    );
    // cpuset: both lists before any task joins, the parent's first.
    assert_eq!(read(root, &format!("cpuset/{p}/cpuset.mems")), "0");
    assert_eq!(read(root, &format!("cpuset/{p}/cluster0/cpuset.cpus")), "3");
    assert_eq!(read(root, &format!("cpuset/{p}/cluster0/cpuset.mems")), "0");
    // The kernel's 1 ms floor: a tenth of a 5 ms period is refused, so 1 ms it is.
    groups.set_speed(0, 0.1).unwrap();
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/cpu.cfs_quota_us")),
        "1000"
    );
    put(
        root,
        &format!("cpuacct/{p}/cluster0/cpuacct.usage"),
        "123456789\n",
    );
    assert_eq!(groups.usage_ns(0).unwrap(), 123_456_789);
    groups.place(0, 77, 2).unwrap();
    for h in ["cpu", "cpuacct", "cpuset"] {
        assert_eq!(
            read(root, &format!("{h}/{p}/cluster0/proc77x2/cgroup.procs")),
            "77"
        );
    }
    assert_eq!(
        read(root, &format!("cpuset/{p}/cluster0/proc77x2/cpuset.cpus")),
        "3"
    );
    assert_eq!(
        read(root, &format!("cpuset/{p}/cluster0/proc77x2/cpuset.mems")),
        "0"
    );
    // Two threads on a one-CPU cluster: never more than the cluster's own share.
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/proc77x2/cpu.cfs_quota_us")),
        "1000"
    );
    groups.set_speed(0, 1.0).unwrap();
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/cpu.cfs_quota_us")),
        "5000"
    );
    assert_eq!(
        read(root, &format!("cpu/{p}/cluster0/proc77x2/cpu.cfs_quota_us")),
        "5000"
    );
    drop(groups);
    for h in ["cpu", "cpuacct", "cpuset"] {
        assert!(!root.join(h).join(&p).exists(), "{h}/{p} left behind");
    }
}

#[test]
fn v1_with_cpuacct_mounted_beside_cpu_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "cpu/cpu.cfs_quota_us", "-1\n");
    put(root, "cpu/cpuacct.usage", "0\n");
    assert_eq!(
        Layout::detect(root).unwrap(),
        Layout::V1 {
            cpu: root.join("cpu"),
            cpuacct: root.join("cpu"),
            cpuset: None,
        }
    );
}

#[test]
fn no_cpu_controller_is_an_error_that_says_what_was_found_and_how_to_enable_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    v2_tree(root, "memory pids", "");
    let e = format!("{:#}", Layout::detect(root).unwrap_err());
    assert!(e.contains("offers [memory pids] without cpu"), "{e}");
    assert!(e.contains("cgroup.controllers"), "{e}");
    assert!(e.contains("mount -t cgroup -o cpu,cpuacct"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "cpu/cpu.shares", "1024\n");
    let e = format!("{:#}", Layout::detect(dir.path()).unwrap_err());
    assert!(e.contains("CONFIG_CFS_BANDWIDTH"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "cpu/cpu.cfs_quota_us", "-1\n");
    let e = format!("{:#}", Layout::detect(dir.path()).unwrap_err());
    assert!(e.contains("no cpuacct hierarchy"), "{e}");
}

#[test]
fn groups_of_a_board_that_is_gone_are_removed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    v1_tree(root);
    // A board with a pid that no board has (pid_max is below 2^22 on Linux).
    for h in ["cpu", "cpuacct", "cpuset"] {
        fs::create_dir_all(root.join(h).join("dnngov-vboard-4999999/cluster0")).unwrap();
    }
    let layout = Layout::detect(root).unwrap();
    let groups = ClusterGroups::create(layout, &[vec![0]], 10_000).unwrap();
    for h in ["cpu", "cpuacct", "cpuset"] {
        assert!(!root.join(h).join("dnngov-vboard-4999999").exists());
    }
    assert!(groups.cluster_dirs(0)[0].exists());
}
