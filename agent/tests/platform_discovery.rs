//! Discovery and planning against every fixture tree.

use std::path::{Path, PathBuf};

use dnngov_agent::platform::cpufreq::Frequencies;
use dnngov_agent::platform::domain::{INTEL_PSTATE_ACTIVE, NO_CPUFREQ};
use dnngov_agent::platform::fixture;
use dnngov_agent::platform::{DomainId, Hz, Mechanism, Platform, Sysfs};

fn build(make: fn(&Path) -> std::io::Result<()>) -> (tempfile::TempDir, Platform) {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path()).unwrap();
    let platform = Platform::discover(Sysfs::new(dir.path()));
    (dir, platform)
}

fn khz(values: &[u64]) -> Vec<Hz> {
    values.iter().map(|&v| Hz::from_khz(v)).collect()
}

#[test]
fn xavier_nx_has_three_cpu_policies_gpu_emc_and_thermal() {
    let (_dir, p) = build(fixture::xavier_nx);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.online_cpus.as_ref().unwrap().to_string(), "0-5");
    let ids: Vec<u32> = p.cpufreq.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![0, 2, 4]);
    let table = khz(&fixture::xavier_nx_cpu_table_khz());
    for (policy, cpus) in p.cpufreq.iter().zip(["0-1", "2-3", "4-5"]) {
        assert_eq!(policy.related_cpus.to_string(), cpus);
        assert_eq!(policy.driver, "tegra194");
        assert_eq!(policy.governor, "schedutil");
        assert!(policy.has_governor("userspace"));
        assert_eq!(policy.frequencies, Frequencies::Table(table.clone()));
        assert_eq!(policy.scaling_min, Hz(1_190_400_000));
        assert_eq!(policy.cpuinfo_max, Hz(1_907_200_000));
        assert_eq!(policy.transition_latency.map(|n| n.0), Some(500_000));
    }
    assert_eq!(p.devfreq.len(), 1);
    let gpu = &p.devfreq[0];
    assert_eq!(gpu.name, "17000000.gv11b");
    assert_eq!(gpu.display_name.as_deref(), Some("gv11b"));
    assert_eq!(gpu.governor, "nvhost_podgov");
    let gpu_table: Vec<Hz> = fixture::XAVIER_NX_GPU_HZ.iter().map(|&f| Hz(f)).collect();
    assert_eq!(gpu.frequencies, Some(Frequencies::Table(gpu_table)));
    assert_eq!(p.gpu_load, Some(PathBuf::from("sys/devices/gpu.0/load")));
    let emc = p.emc.as_ref().expect("EMC found in bpmp debugfs");
    assert_eq!(
        (emc.rate, emc.min_rate, emc.locked),
        (Hz(1_866_000_000), Hz(204_000_000), false)
    );
    assert_eq!(p.thermal_zones.len(), 3);
    assert_eq!(p.thermal_zones[0].kind, "CPU-therm");
    assert_eq!(p.cooling.len(), 3);

    let plan = p.plan().unwrap();
    let domains: Vec<(DomainId, Mechanism)> = plan
        .domains
        .iter()
        .map(|d| (d.id.clone(), d.mechanism))
        .collect();
    assert_eq!(
        domains,
        vec![
            (DomainId::Cpu(0), Mechanism::Userspace),
            (DomainId::Cpu(2), Mechanism::Userspace),
            (DomainId::Cpu(4), Mechanism::Userspace),
            (
                DomainId::Devfreq("17000000.gv11b".into()),
                Mechanism::Userspace
            ),
            (DomainId::Emc, Mechanism::EmcLock),
        ]
    );
    // cpufreq-cpu0 throttles policy0 only; the devfreq cooling device throttles the GPU.
    assert_eq!(plan.domains[0].cooling_states.len(), 1);
    assert!(plan.domains[1].cooling_states.is_empty());
    assert_eq!(plan.domains[3].cooling_states.len(), 1);
    assert!(plan.unavailable.is_empty());
}

#[test]
fn orin_gpu_without_userspace_is_planned_as_pinned() {
    let (_dir, p) = build(fixture::orin);
    assert_eq!(
        p.cpufreq.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![0, 4]
    );
    assert_eq!(p.cpufreq[1].related_cpus.to_string(), "4-7");
    assert_eq!(p.devfreq[0].name, "17000000.ga10b");
    assert_eq!(
        p.gpu_load,
        Some(PathBuf::from("sys/devices/platform/gpu.0/load"))
    );
    assert!(p.emc.is_none());
    let plan = p.plan().unwrap();
    let gpu = plan
        .domains
        .iter()
        .find(|d| d.id == DomainId::Devfreq("17000000.ga10b".into()))
        .unwrap();
    assert_eq!(gpu.mechanism, Mechanism::Pin);
    assert_eq!(gpu.frequencies.highest(), Hz(918_000_000));
    assert_eq!(plan.domains.len(), 3);
}

#[test]
fn generic_arm_reads_offline_cpu_and_both_clusters() {
    let (_dir, p) = build(fixture::generic_arm);
    assert_eq!(
        p.online_cpus.as_ref().unwrap().cpus(),
        &[0, 1, 2, 3, 4, 6, 7]
    );
    let big = &p.cpufreq[1];
    assert_eq!(big.related_cpus.cpus(), &[4, 5, 6, 7]);
    assert_eq!(big.affected_cpus.cpus(), &[4, 6, 7]);
    assert_eq!(
        big.frequencies,
        Frequencies::Table(khz(&fixture::GENERIC_ARM_BIG_KHZ))
    );
    assert_eq!(
        p.cpufreq[0].frequencies,
        Frequencies::Table(khz(&fixture::GENERIC_ARM_LITTLE_KHZ))
    );
    assert_eq!(p.devfreq[0].display_name, None);
    assert!(p.gpu_load.is_none());
    let plan = p.plan().unwrap();
    assert!(plan
        .domains
        .iter()
        .all(|d| d.mechanism == Mechanism::Userspace));
    // cpufreq-cpu4 names a CPU of the big cluster.
    assert!(plan.domains[0].cooling_states.is_empty());
    assert_eq!(plan.domains[1].cooling_states.len(), 1);
}

#[test]
fn intel_pstate_active_gives_one_cannot_govern_message() {
    let (_dir, p) = build(fixture::intel_laptop);
    assert_eq!(p.cpufreq.len(), 8);
    for policy in &p.cpufreq {
        assert!(!policy.has_table);
        assert_eq!(
            policy.frequencies,
            Frequencies::Range {
                min: Hz::from_khz(400_000),
                max: Hz::from_khz(4_700_000)
            }
        );
        assert!(policy.is_intel_pstate_active());
    }
    let err = p.plan().unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot govern this machine, because "),
        "{text}"
    );
    assert_eq!(text.matches(INTEL_PSTATE_ACTIVE).count(), 1, "{text}");
    assert!(text.contains("cpufreq policy0, cpufreq policy1"), "{text}");
    assert_eq!(err.reasons.len(), 8);
}

#[test]
fn no_cpufreq_machine_gives_cannot_govern_message() {
    let (_dir, p) = build(fixture::no_cpufreq);
    assert!(p.cpufreq.is_empty() && p.devfreq.is_empty() && p.emc.is_none());
    assert_eq!(p.online_cpus.as_ref().unwrap().cpus(), &[0, 1]);
    let text = p.plan().unwrap_err().to_string();
    assert_eq!(
        text,
        format!("cannot govern this machine, because CPUs: {NO_CPUFREQ}")
    );
}

#[test]
fn unreadable_policy_is_a_problem_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    fixture::generic_arm(dir.path()).unwrap();
    std::fs::remove_file(
        dir.path()
            .join("sys/devices/system/cpu/cpufreq/policy0/scaling_driver"),
    )
    .unwrap();
    let p = Platform::discover(Sysfs::new(dir.path()));
    assert_eq!(p.cpufreq.iter().map(|c| c.id).collect::<Vec<_>>(), vec![4]);
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0].why.contains("policy0/scaling_driver"),
        "{:?}",
        p.problems
    );
    assert_eq!(p.plan().unwrap().domains.len(), 2);
}

#[test]
fn fixtures_are_deterministic_and_can_be_written_out() {
    // DNNGOV_WRITE_FIXTURES=<dir> also lays every fixture down under <dir>/<name>.
    let out = std::env::var_os("DNNGOV_WRITE_FIXTURES").map(PathBuf::from);
    for (name, make) in fixture::ALL {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        make(a.path()).unwrap();
        make(b.path()).unwrap();
        let snap = fixture::snapshot(a.path()).unwrap();
        assert!(snap.len() > 5, "{name} is nearly empty");
        assert_eq!(
            snap,
            fixture::snapshot(b.path()).unwrap(),
            "{name} differs between builds"
        );
        if let Some(out) = &out {
            let target = out.join(name);
            std::fs::create_dir_all(&target).unwrap();
            make(&target).unwrap();
            println!("wrote {}", target.display());
        }
    }
}

#[test]
fn jetson_gpu_load_and_zone_temperatures_are_read_in_their_units() {
    let (_dir, p) = build(fixture::xavier_nx);
    let load =
        dnngov_agent::platform::devfreq::read_gpu_load(&p.sysfs, p.gpu_load.as_ref().unwrap())
            .unwrap();
    assert!((load - 0.125).abs() < 1e-9);
    let t =
        dnngov_agent::platform::thermal::read_temperature(&p.sysfs, &p.thermal_zones[0]).unwrap();
    assert_eq!(t.0, 40_500);
}
