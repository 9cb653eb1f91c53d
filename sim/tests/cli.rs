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
