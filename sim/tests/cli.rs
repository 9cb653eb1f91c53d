//! The `dnngov-sim` binary as a user runs it.

use std::path::Path;
use std::process::Command;

fn short_s1(dir: &Path, extra: &str) -> std::path::PathBuf {
    let platform = Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml");
    let text = format!(
        "name = \"short\"\nplatform = {:?}\nduration_s = 3\n{extra}\n[[app]]\nname = \"ofa6\"\nlibrary = \"dynamic-ofa-6\"\nfps = 15\ndeadline_ms = 60\naccuracy_floor = 76\n",
        platform.display().to_string()
    );
    let p = dir.join("short.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn compare_prints_the_table_and_writes_svg_plots() {
    let dir = tempfile::tempdir().unwrap();
    let scn = short_s1(dir.path(), "");
    let out = dir.path().join("plots");
    let o = Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
        .args([
            "compare",
            scn.to_str().unwrap(),
            "--seed",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.contains("| governor | energy J | mean power W |"),
        "{stdout}"
    );
    assert!(stdout.contains("| dnngov |") && stdout.contains("| oracle |"));
    for f in ["frequencies", "power", "latency", "subnet"] {
        let p = out.join(format!("short-{f}.svg"));
        assert!(p.is_file(), "{} missing", p.display());
    }
}

#[test]
fn compare_runs_the_governors_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let scn = short_s1(dir.path(), "");
    let out = dir.path().join("plots");
    let o = Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
        .args([
            "compare",
            scn.to_str().unwrap(),
            "--governors",
            "schedutil,dnngov",
            "--no-oracle",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(stdout.contains("| schedutil |") && stdout.contains("| dnngov |"));
    assert!(!stdout.contains("| oracle |") && !stdout.contains("| ondemand |"));
    let o = Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
        .args(["compare", scn.to_str().unwrap(), "--governors", "schedutl"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("schedutl"));
}

#[test]
fn seeds_with_the_oracle_adds_its_energy_and_missed_frames() {
    let dir = tempfile::tempdir().unwrap();
    let scn = short_s1(dir.path(), "");
    let seeds = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
            .args(["seeds", scn.to_str().unwrap(), "--count", "2"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = seeds(&["--oracle"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.contains("| oracle energy J | dnngov / schedutil | dnngov / oracle |"),
        "{stdout}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows.iter().all(|r| r.matches('|').count() == 12),
        "{stdout}"
    );
    // Without the flag, the schedutil-dnngov table alone.
    let stdout = String::from_utf8(seeds(&[]).stdout).unwrap();
    assert!(stdout.contains("| seed | schedutil energy J | dnngov energy J | energy / schedutil |"));
    assert!(!stdout.contains("oracle"), "{stdout}");
    // A scenario without an app has no oracle: said, not an empty table.
    let platform = Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml");
    let empty = dir.path().join("empty.toml");
    std::fs::write(
        &empty,
        format!(
            "name = \"empty\"\nplatform = {:?}\nduration_s = 1\n",
            platform.display().to_string()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
        .args(["seeds", empty.to_str().unwrap(), "--oracle"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no app, so no oracle"));
}

#[test]
fn unknown_scenario_key_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let scn = short_s1(dir.path(), "tick_sm = 10");
    let o = Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
        .args(["run", scn.to_str().unwrap(), "--governor", "schedutil"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("tick_sm"), "{stderr}");
}

#[test]
fn run_lists_the_plans_dnngov_adopted_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let scn = short_s1(dir.path(), "");
    let o = Command::new(env!("CARGO_BIN_EXE_dnngov-sim"))
        .args(["run", scn.to_str().unwrap(), "--plans"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let listed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("plans adopted: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no count of plans: {stdout}"));
    assert!(listed >= 1, "{stdout}");
    assert!(stdout.contains("    0.000 s  first plan"), "{stdout}");
}
