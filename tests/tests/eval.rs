//! `dnngov-eval` end to end: real apps (the C MLP app through the client shim) run under
//! a dnngovd of its own and under the board's own governor, on a virtual board; the
//! report is built from what the apps' own processes measured; the board is checked and
//! put back; a board whose clocks someone else holds is refused.
//!
//! As root with a cgroup cpu controller the board is the cgroup board, where the clocks
//! really slow the apps; otherwise the emulated board (the test says which it ran).

use std::path::Path;
use std::process::{Command, Output};

use dnngov_tests::{build_mlp_app, built_binary, sim_binary, workspace_root};

fn cgroup_board_usable() -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    dnngov_sim::cgroup::Layout::detect(Path::new("/sys/fs/cgroup"))
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

fn eval(args: &[&str]) -> Output {
    // Built beside dnngovd and dnngov-vboard, where dnngov-eval looks for them.
    sim_binary("dnngov-vboard");
    Command::new(built_binary("dnngov-eval"))
        .args(args)
        .output()
        .expect("dnngov-eval runs")
}

#[test]
fn compares_dnngovd_with_the_boards_governor_from_what_the_apps_measured() {
    let dir = tempfile::tempdir().unwrap();
    let app = build_mlp_app(dir.path());
    let out = dir.path().join("out");
    let platform = workspace_root().join("platforms/jetson-xavier-nx.toml");
    let mut args: Vec<String> = vec![
        "--vboard".into(),
        platform.display().to_string(),
        "--duration".into(),
        "6".into(),
        "--pause".into(),
        "0".into(),
        "--out".into(),
        out.display().to_string(),
        "--app".into(),
        format!("mlp={} --name mlp --fps 10 --deadline-ms 80", app.display()),
        "--app".into(),
        format!(
            "fast={} --name fast --fps 20 --deadline-ms 40",
            app.display()
        ),
    ];
    match cgroup_board_usable() {
        Ok(()) => {
            eprintln!("on the cgroup board");
            args.push("--cgroup".into());
        }
        Err(why) => eprintln!("on the emulated board (no cgroup board: {why})"),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = eval(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");

    // Both sides, both apps, from the apps' own traces.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["governor"], "dnngovd");
    assert_eq!(runs[1]["governor"], "schedutil");
    for run in runs {
        for app in ["mlp", "fast"] {
            let s = &run["apps"][app];
            let frames = s["frames"].as_u64().unwrap();
            assert!(
                frames >= 20,
                "{app} under {}: {frames} frames",
                run["governor"]
            );
            assert!(s["latency_mean_ms"].as_f64().unwrap() > 0.0);
        }
        let energy = &run["energy"];
        assert!(energy["energy_j"].as_f64().unwrap() > 0.0, "{energy}");
        assert!(
            energy["source"]
                .as_str()
                .unwrap()
                .contains("modelled, not measured"),
            "a virtual board's energy is labelled as modelled: {energy}"
        );
    }
    // Per side: the report's frames are the traces' lines, and its latency figures lie
    // where the traces put them. (The mean may be above the p99: one slow frame in a
    // hundred, such as the first, pulls the mean up alone.)
    for (side, governor) in [("dnngovd", 0), ("board", 1)] {
        let traces = dnngov_agent::eval::read_traces(&out.join(side).join("trace")).unwrap();
        for app in ["mlp", "fast"] {
            let mut ms: Vec<f64> = traces[app]
                .iter()
                .map(|i| i.latency_ns as f64 / 1e6)
                .collect();
            ms.sort_by(f64::total_cmp);
            let (min, median, max) = (ms[0], ms[ms.len() / 2], ms[ms.len() - 1]);
            let s = &runs[governor]["apps"][app];
            let mean = s["latency_mean_ms"].as_f64().unwrap();
            let p99 = s["latency_p99_ms"].as_f64().unwrap();
            assert!(
                (min - 1e-9..=max + 1e-9).contains(&mean) && (median..=max).contains(&p99),
                "{app} under {side}: mean {mean} ms, p99 {p99} ms; traced {min}-{max} ms, median {median} ms"
            );
        }
        let traced: usize = std::fs::read_dir(out.join(side).join("trace"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("mlp-"))
            .map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .lines()
                    .skip(1)
                    .count()
            })
            .sum();
        assert_eq!(
            runs[governor]["apps"]["mlp"]["frames"].as_u64().unwrap() as usize,
            traced
        );
    }
    // Under dnngovd the agent chose the sub-networks: something below the most accurate
    // ran at some point (the apps run the most accurate one on their own).
    let dnngovd_accuracy = runs[0]["apps"]["fast"]["accuracy_pct"].as_f64().unwrap();
    let alone_accuracy = runs[1]["apps"]["fast"]["accuracy_pct"].as_f64().unwrap();
    assert!(
        dnngovd_accuracy < alone_accuracy,
        "dnngovd never changed the sub-network ({dnngovd_accuracy} vs {alone_accuracy})"
    );
    assert!(stdout.contains("board restored after each run"), "{stdout}");
    for file in ["report.txt", "series.csv", "inferences.csv", "eval.svg"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let csv = std::fs::read_to_string(out.join("series.csv")).unwrap();
    assert!(
        csv.starts_with("governor,t_s,cpufreq_policy0_mhz"),
        "{csv:.200}"
    );
    assert!(csv.lines().any(|l| l.starts_with("schedutil,")));
}

/// A real board (a fixture tree here) whose CPU someone pinned, and a process that sets
/// clocks itself: each is named and the evaluation does not start.
#[test]
fn refuses_while_another_tool_holds_the_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("sys-root");
    dnngov_agent::platform::fixture::xavier_nx(&sysfs).unwrap();
    let policy0 = sysfs.join("sys/devices/system/cpu/cpufreq/policy0");
    let max = std::fs::read_to_string(policy0.join("scaling_max_freq")).unwrap();
    std::fs::write(policy0.join("scaling_min_freq"), &max).unwrap();
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(proc_root.join("4321")).unwrap();
    std::fs::write(proc_root.join("4321/comm"), "tuned\n").unwrap();
    let output = eval(&[
        "--sysfs-root",
        sysfs.to_str().unwrap(),
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--duration",
        "1",
        "--out",
        dir.path().join("out").to_str().unwrap(),
        "--app",
        "x=true",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not free to compare governors"), "{stderr}");
    assert!(stderr.contains("tuned is running (pid 4321)"), "{stderr}");
    assert!(stderr.contains("cpufreq policy0 is pinned"), "{stderr}");
    // Refused before anything ran: nothing to put back.
    assert_eq!(
        std::fs::read_to_string(policy0.join("scaling_min_freq")).unwrap(),
        max
    );
}

#[test]
fn a_malformed_app_or_settling_time_is_refused_naming_it() {
    let output = eval(&["--app", "no-command-here", "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("\"no-command-here\""), "{stderr}");
    assert!(stderr.contains("NAME=COMMAND"), "{stderr}");

    let output = eval(&["--app", "x=true", "--duration", "5", "--settle", "5"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--settle must be"), "{stderr}");
}

/// An app that fails is named in the report with the last lines it wrote, under both
/// governors, and the evaluation still completes and checks the board.
#[test]
fn an_app_that_ends_early_is_named_with_its_last_words() {
    let dir = tempfile::tempdir().unwrap();
    let platform = workspace_root().join("platforms/jetson-xavier-nx.toml");
    let out = dir.path().join("out");
    let output = eval(&[
        "--vboard",
        platform.to_str().unwrap(),
        "--duration",
        "3",
        "--pause",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--app",
        "broken=echo 'cannot open the camera' >&2; exit 3",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("broken         (no inference recorded)"),
        "{stdout}"
    );
    for governor in ["dnngovd", "schedutil"] {
        assert!(
            stdout.contains(&format!(
                "{governor}: app broken ended before the run did (exit status: 3)"
            )),
            "{stdout}"
        );
    }
    assert!(stdout.contains("    cannot open the camera"), "{stdout}");
    assert!(stdout.contains("board restored after each run"), "{stdout}");
}

/// A board without a power sensor (the generic ARM fixture): with its description, the
/// energy is estimated the way dnngovd estimates it, and labelled so; without one, the
/// report says there is no energy figure and how to get one.
#[test]
fn without_a_sensor_the_description_gives_a_labelled_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("board");
    dnngov_agent::platform::fixture::generic_arm(&sysfs).unwrap();
    // This machine's CPU counters, and no process that holds the clocks.
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(&proc_root).unwrap();
    std::fs::copy("/proc/stat", proc_root.join("stat")).unwrap();
    let run = |extra: &[&str]| {
        let out = dir.path().join(format!("out{}", extra.len()));
        let mut args = vec![
            "--sysfs-root",
            sysfs.to_str().unwrap(),
            "--proc-root",
            proc_root.to_str().unwrap(),
            "--duration",
            "2",
            "--pause",
            "0",
            "--app",
            "idle=sleep 30",
        ];
        args.extend_from_slice(extra);
        let out_arg = out.to_str().unwrap().to_string();
        args.extend_from_slice(&["--out", &out_arg]);
        let output = eval(&args);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        report
    };
    let description = workspace_root().join("platforms/generic-arm.toml");
    let report = run(&["--platform", description.to_str().unwrap()]);
    for r in report["runs"].as_array().unwrap() {
        let energy = &r["energy"];
        assert!(
            energy["source"]
                .as_str()
                .unwrap()
                .starts_with("estimated from"),
            "{energy}"
        );
        let watts = energy["mean_power_w"].as_f64().unwrap();
        assert!(watts > 0.1 && watts < 50.0, "{energy}");
    }
    let report = run(&[]);
    let energy = &report["runs"][0]["energy"];
    assert!(
        energy["source"]
            .as_str()
            .unwrap()
            .contains("give --platform"),
        "{energy}"
    );
    assert_eq!(energy["energy_j"], 0.0);
}
