//! Profiling with the agent's cooperation: `dnngovctl hold` / `release` against a real
//! dnngovd on a fixture board (the held frequency written and kept over the policy's
//! choice, handed back on release and when the lease runs out, bad values refused with the
//! reason), and `dnngov_client::profile::sweep` measuring every setting under a hold,
//! down to a library registered from the saved profile, in Rust and in Python.

use dnngov_agent::platform::fixture;
use dnngov_client::profile::{self, CandidateInfo, Profile, Setting, SweepOptions};
use dnngov_client::{AppSpec, Device, Options, Session, Target};
use dnngov_tests::{client_library, python3, workspace_root, Daemon};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const GPU_SET_FREQ: &str = "sys/devices/17000000.gv11b/devfreq/17000000.gv11b/userspace/set_freq";
const GPU: &str = "devfreq 17000000.gv11b";

/// A frequency file of the fixture. The agent's writes are plain file writes here
/// (truncate, then write), so a read may fall between the two: read again.
fn read_hz(root: &Path, rel: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let text = std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        match text.trim().parse() {
            Ok(hz) => return hz,
            Err(e) if Instant::now() >= deadline => panic!("{rel} holds {text:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The GPU frequency the policy settles on with nothing held: the same value for three
/// times the base governor's down rate limit (it waits that long before lowering).
fn settled_gpu(daemon: &Daemon, root: &Path) -> u64 {
    let settled = Duration::from_nanos(3 * dnngov_policy::manager::BASE_DOWN_RATE_LIMIT.0);
    let mut last = 0;
    let mut since = Instant::now();
    daemon.wait_for("the policy to settle the GPU", || {
        let now = read_hz(root, GPU_SET_FREQ);
        if now != last {
            last = now;
            since = Instant::now();
        }
        since.elapsed() >= settled
    });
    last
}

#[test]
fn a_hold_pins_the_gpu_until_release_or_the_end_of_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let before = fixture::snapshot(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    daemon.wait_for("the takeover", || root.join(GPU_SET_FREQ).exists());
    let policy = settled_gpu(&daemon, &root);

    // A table frequency the policy did not choose, asked for slightly off the table.
    let held = if policy == 803_250_000 {
        599_250_000
    } else {
        803_250_000
    };
    let asked = format!("{}", held as f64 / 1e6 + 0.4);
    let reply = daemon
        .ctl(&["hold", "--gpu-mhz", &asked])
        .expect("the hold is accepted");
    assert_eq!(reply["domains"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["domains"][0]["domain"], GPU, "{reply}");
    assert_eq!(reply["domains"][0]["hz"], held, "{reply}");
    assert_eq!(reply["lease_ms"], 30_000, "{reply}");
    daemon.wait_for("the held GPU frequency in the fixture", || {
        read_hz(&root, GPU_SET_FREQ) == held
    });
    // The policy does not take it back, tick after tick.
    for _ in 0..25 {
        assert_eq!(read_hz(&root, GPU_SET_FREQ), held, "the hold stays");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = daemon.ctl(&["status"]).unwrap();
    assert_eq!(status["hold"]["domains"][0]["hz"], held, "{status}");
    let gpu = status["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == GPU)
        .expect("the GPU domain in the status");
    assert_eq!(gpu["kind"], "gpu");
    assert!(gpu["set_by"].as_str().unwrap().starts_with("hold"), "{gpu}");
    assert!(gpu["reason"].as_str().unwrap().contains("held at"), "{gpu}");
    assert!(
        status["notes"].to_string().contains("frequency hold"),
        "{status}"
    );
    assert!(status["energy"]["joules"].as_f64().is_some(), "{status}");

    // Release hands the GPU back to the policy.
    let done = daemon.ctl(&["release"]).expect("release succeeds");
    assert!(done["done"].as_str().unwrap().contains(GPU), "{done}");
    daemon.wait_for("the policy's GPU frequency again", || {
        read_hz(&root, GPU_SET_FREQ) == policy
    });
    assert!(daemon.ctl(&["status"]).unwrap().get("hold").is_none());

    // A short lease ends by itself.
    let asked = format!("{}", held as f64 / 1e6);
    let start = Instant::now();
    daemon
        .ctl(&["hold", "--gpu-mhz", &asked, "--lease-s", "0.6"])
        .expect("the short hold is accepted");
    daemon.wait_for("the short hold", || read_hz(&root, GPU_SET_FREQ) == held);
    daemon.wait_for("the lease to run out", || {
        read_hz(&root, GPU_SET_FREQ) == policy
    });
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "the hold ended after {:?}, before its lease",
        start.elapsed()
    );
    assert!(daemon.ctl(&["status"]).unwrap().get("hold").is_none());
    assert!(daemon.log().contains("ran out without renewal"));

    // Bad values: refused with the domain, the value and the range; nothing held.
    let output = daemon.ctl_output(&["hold", "--gpu-mhz", "5000"]);
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("gpu_hz 5000000000 (5000 MHz) is outside the range of devfreq 17000000.gv11b: 114.75 MHz to 1109.25 MHz"),
        "{error}"
    );
    let output = daemon.ctl_output(&["hold", "--gpu-mhz", "600", "--lease-s", "9999"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lease_ms is 9999000"));
    let output = daemon.ctl_output(&["hold"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--gpu-mhz"));
    assert!(daemon.ctl(&["status"]).unwrap().get("hold").is_none());
    assert_eq!(read_hz(&root, GPU_SET_FREQ), policy);

    // A hold in force at shutdown: the machine is restored all the same.
    daemon.ctl(&["hold", "--gpu-mhz", &asked]).unwrap();
    daemon.wait_for("the last hold", || read_hz(&root, GPU_SET_FREQ) == held);
    daemon.stop();
    assert_eq!(
        fixture::snapshot(&root).unwrap(),
        before,
        "every file is back as it was"
    );
}

#[test]
fn a_sweep_measures_every_setting_under_a_hold_and_its_library_registers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    daemon.wait_for("the takeover", || root.join(GPU_SET_FREQ).exists());
    daemon.wait_for("an energy counter", || {
        daemon
            .ctl(&["status"])
            .is_some_and(|s| s["energy"]["joules"].as_f64().is_some())
    });
    let policy = settled_gpu(&daemon, &root);

    let candidates: Vec<CandidateInfo> = [
        ("w0.5", 70.5, 0.4),
        ("w0.75", 74.0, 0.7),
        ("w1.0", 77.25, 1.0),
    ]
    .iter()
    .map(|(name, accuracy, cost)| CandidateInfo {
        name: name.to_string(),
        accuracy_pct: *accuracy,
        relative_cost: Some(*cost),
    })
    .collect();
    let settings = [
        Setting {
            gpu_hz: Some(306_000_000),
            ..Setting::default()
        },
        Setting {
            cpu_hz: Some(1_907_200_000),
            gpu_hz: Some(1_109_250_000),
            mem_hz: None,
        },
        Setting {
            cpu_hz: Some(730_000_000),
            gpu_hz: Some(600_000_000),
            mem_hz: Some(1_600_000_000),
        },
    ];
    let options = SweepOptions {
        admin_socket: daemon.admin_socket(),
        warmup: 1,
        inferences: 5,
        energy_window: Duration::from_millis(600),
        max_time_per_candidate: Duration::from_secs(5),
        // Shorter than a setting's measurements: the sweep must renew it.
        lease: Duration::from_secs(1),
        settle_timeout: Duration::from_secs(5),
    };
    // A stand-in model: candidate i takes 1 + 2i ms. Each call notes the GPU frequency
    // the fixture shows at that moment.
    let mut seen_gpu: Vec<u64> = Vec::new();
    let mut run_one = |index: usize| -> anyhow::Result<()> {
        seen_gpu.push(read_hz(&root, GPU_SET_FREQ));
        std::thread::sleep(Duration::from_millis(1 + 2 * index as u64));
        Ok(())
    };
    let measurements =
        profile::sweep(&options, &candidates, &settings, &mut run_one).expect("the sweep runs");

    assert_eq!(measurements.len(), settings.len() * candidates.len());
    let expected_gpu = [306_000_000, 1_109_250_000, 599_250_000];
    for (i, m) in measurements.iter().enumerate() {
        let (setting, candidate) = (i / candidates.len(), i % candidates.len());
        assert_eq!(m.candidate, candidates[candidate].name);
        assert!(!m.modelled, "{m:?}");
        assert!(m.samples >= 5, "{m:?}");
        assert_eq!(m.setting.gpu_hz, Some(expected_gpu[setting]), "{m:?}");
        assert!(m.latency_ms >= 1.0 + 2.0 * candidate as f64, "{m:?}");
        assert!(m.latency_p90_ms >= m.latency_ms, "{m:?}");
        let energy = m.energy_mj.unwrap_or_else(|| panic!("no energy: {m:?}"));
        assert!(energy > 0.0 && !m.energy_estimated, "{m:?}");
    }
    assert_eq!(measurements[0].setting.cpu_hz, None);
    assert_eq!(measurements[3].setting.cpu_hz, Some(1_907_200_000));
    assert_eq!(measurements[6].setting.cpu_hz, Some(729_600_000));
    assert_eq!(measurements[6].setting.mem_hz, Some(1_600_000_000));
    // The fixture's power is constant: a longer inference costs more energy.
    for setting in 0..settings.len() {
        let energy = |c: usize| {
            measurements[setting * candidates.len() + c]
                .energy_mj
                .unwrap()
        };
        assert!(energy(0) < energy(2), "{measurements:#?}");
    }
    // Every inference ran under its setting's hold, in order.
    let mut blocks = seen_gpu.clone();
    blocks.dedup();
    // (The lease is shorter than a setting's measurements: only renewals keep it.)
    assert_eq!(blocks, expected_gpu, "GPU frequencies seen while running");

    // Released at the end: the policy has the GPU again.
    assert!(daemon.ctl(&["status"]).unwrap().get("hold").is_none());
    daemon.wait_for("the policy's GPU frequency again", || {
        read_hz(&root, GPU_SET_FREQ) == policy
    });

    // The library: with constant power the cheapest candidate is the fastest, so each
    // more accurate one costs more and all three stay.
    let mut profile = Profile::new("sweep-test", &profile::this_machine(), measurements, 8);
    // A recorded workload, which Python accepts too.
    profile
        .workload
        .insert("batch".into(), serde_json::json!(4));
    let names: Vec<&str> = profile.library.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["w0.5", "w0.75", "w1.0"]);
    let path = dir.path().join("sweep-test.profile.json");
    profile.save(&path).unwrap();
    let loaded = Profile::load(&path).unwrap();
    assert_eq!(loaded.library, profile.library);

    // Python reads the same library.
    let output = Command::new(python3())
        .arg("-c")
        .arg("import dnngov, json, sys; print(json.dumps(dnngov.load_profile(sys.argv[1])))")
        .arg(&path)
        .env("PYTHONPATH", workspace_root().join("client/python"))
        .env("DNNGOV_LIB", client_library())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_python: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_python.len(), profile.library.len());
    for (entry, subnet) in from_python.iter().zip(&profile.library) {
        assert_eq!(entry[0], subnet.id);
        assert_eq!(entry[1], subnet.name.as_str());
        assert_eq!(entry[2].as_f64(), Some(subnet.accuracy_pct));
        assert_eq!(entry[3].as_f64(), subnet.latency_ms);
        assert_eq!(entry[4].as_f64(), subnet.relative_cost);
    }

    // And the app registers with it.
    let target = Target {
        deadline_ms: 50.0,
        period_ms: None,
        accuracy_floor_pct: None,
        priority: 0,
    };
    let spec = AppSpec::from_profile(&loaded, "sweep-test", target, vec![Device::Gpu]).unwrap();
    let session = Session::register(
        spec,
        Options {
            socket_path: dir.path().join("agent.sock"),
            ..Options::default()
        },
    )
    .expect("registration from the profile");
    assert!(session.is_connected(), "{:?}", session.last_error());
    let apps = daemon.ctl(&["apps"]).unwrap();
    assert_eq!(apps[0]["name"], "sweep-test", "{apps}");
    assert_eq!(apps[0]["subnets"], 3, "{apps}");
    drop(session);
    daemon.stop();
}

#[test]
fn without_a_governed_domain_a_sweep_measures_the_current_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::no_cpufreq(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    let candidates = vec![CandidateInfo {
        name: "only".into(),
        accuracy_pct: 71.0,
        relative_cost: None,
    }];
    let settings = [Setting {
        gpu_hz: Some(600_000_000),
        ..Setting::default()
    }];
    let options = SweepOptions {
        admin_socket: daemon.admin_socket(),
        warmup: 0,
        inferences: 3,
        ..SweepOptions::default()
    };
    let mut run_one = |_: usize| -> anyhow::Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        Ok(())
    };
    let measurements = profile::sweep(&options, &candidates, &settings, &mut run_one).unwrap();
    assert_eq!(measurements.len(), 1);
    assert_eq!(measurements[0].setting, Setting::default());
    assert!(!measurements[0].modelled);
    assert_eq!(measurements[0].samples, 3);
    // Asked directly, the agent says why it cannot hold.
    let output = daemon.ctl_output(&["hold", "--gpu-mhz", "600"]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("gpu_hz 600000000 cannot be held: dnngovd governs no frequency domain"),
        "{error}"
    );
    daemon.stop();
}

#[test]
fn a_bad_profile_is_refused_from_python_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.profile.json");
    std::fs::write(
        &path,
        r#"{"format_version": 1, "app": "a", "machine": "m", "created_unix_s": 0,
            "measurements": [], "notes": [],
            "library": [{"id": 0, "name": "small", "acuracy_pct": 70.0}]}"#,
    )
    .unwrap();
    let output = Command::new(python3())
        .arg("-c")
        .arg("import dnngov, sys; dnngov.load_profile(sys.argv[1])")
        .arg(&path)
        .env("PYTHONPATH", workspace_root().join("client/python"))
        .env("DNNGOV_LIB", client_library())
        .output()
        .expect("python3 runs");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("DnngovError"), "{error}");
    assert!(error.contains("bad.profile.json: library[0]"), "{error}");
    assert!(error.contains("acuracy_pct"), "{error}");
    // The Rust reader says the same.
    let error = Profile::load(&path).unwrap_err().to_string();
    assert!(error.contains("bad.profile.json: library[0]"), "{error}");
    assert!(error.contains("acuracy_pct"), "{error}");
}
