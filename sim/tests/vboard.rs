//! The virtual board's files, driven in virtual time (not paced to the wall clock).

use std::fs;
use std::path::Path;

use dnngov_sim::vboard::VirtualBoard;
use dnngov_sim::{run, Platform, Scenario};

fn xavier() -> Platform {
    Platform::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml"),
    )
    .unwrap()
}

fn idle(seconds: f64) -> Scenario {
    Scenario::parse(
        &format!("name = \"idle\"\nplatform = \"-\"\nduration_s = {seconds}\n"),
        Path::new("."),
    )
    .unwrap()
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .unwrap()
        .trim()
        .to_string()
}

fn set(root: &Path, rel: &str, value: &str) {
    fs::write(root.join(rel), value).unwrap();
}

const POLICY0: &str = "sys/devices/system/cpu/cpufreq/policy0";
const POLICY2: &str = "sys/devices/system/cpu/cpufreq/policy2";
const POLICY4: &str = "sys/devices/system/cpu/cpufreq/policy4";
const GPU: &str = "sys/devices/17000000.gv11b/devfreq/17000000.gv11b";
const EMC: &str = "sys/kernel/debug/bpmp/debug/clk/emc";
const HWMON: &str = "sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon1";

#[test]
fn lays_down_the_board_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    VirtualBoard::create(root, &xavier(), false).unwrap();
    assert_eq!(
        read(root, &format!("{POLICY0}/scaling_governor")),
        "schedutil"
    );
    assert_eq!(read(root, &format!("{POLICY2}/related_cpus")), "2 3");
    assert_eq!(
        read(root, &format!("{POLICY4}/cpuinfo_max_freq")),
        "1907200"
    );
    assert!(
        read(root, &format!("{POLICY0}/scaling_available_frequencies"))
            .starts_with("115200 192000")
    );
    assert_eq!(read(root, &format!("{GPU}/max_freq")), "1109250000");
    assert_eq!(read(root, &format!("{EMC}/mrq_rate_locked")), "0");
    assert_eq!(read(root, &format!("{HWMON}/in1_label")), "VDD_IN");
    // Found through its class, as the agent looks for power monitors.
    assert_eq!(read(root, "sys/class/hwmon/hwmon1/name"), "ina3221");
    assert_eq!(read(root, "sys/devices/system/cpu/cpu5/online"), "1");
}

#[test]
fn follows_governor_writes_and_publishes_clocks_and_power() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let plat = xavier();
    let mut board = VirtualBoard::create(root, &plat, false).unwrap();
    set(root, &format!("{POLICY0}/scaling_governor"), "userspace");
    set(root, &format!("{POLICY0}/scaling_setspeed"), "1190400");
    set(root, &format!("{POLICY2}/scaling_governor"), "powersave");
    // schedutil on an idle cluster, but held up by a raised minimum.
    set(root, &format!("{POLICY4}/scaling_min_freq"), "1497600");
    set(root, &format!("{GPU}/governor"), "userspace");
    set(root, &format!("{GPU}/userspace/set_freq"), "599250000");
    set(root, &format!("{EMC}/mrq_rate_locked"), "1");
    set(root, &format!("{EMC}/rate"), "800000000");
    run(&idle(0.2), &plat, &mut board, 1).unwrap();
    assert_eq!(
        read(root, &format!("{POLICY0}/scaling_cur_freq")),
        "1190400"
    );
    assert_eq!(read(root, &format!("{POLICY2}/scaling_cur_freq")), "115200");
    assert_eq!(
        read(root, &format!("{POLICY4}/scaling_cur_freq")),
        "1497600"
    );
    assert_eq!(read(root, &format!("{GPU}/cur_freq")), "599250000");
    assert_eq!(read(root, &format!("{EMC}/rate")), "800000000");
    let ma: f64 = read(root, &format!("{HWMON}/curr1_input")).parse().unwrap();
    let mv: f64 = read(root, &format!("{HWMON}/in1_input")).parse().unwrap();
    // An idle board at these clocks draws a few watts.
    let watts = mv * ma / 1e6;
    assert!((2.0..6.0).contains(&watts), "{watts}");
}

#[test]
fn unlocked_emc_follows_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let plat = xavier();
    let mut board = VirtualBoard::create(root, &plat, false).unwrap();
    set(root, &format!("{GPU}/governor"), "powersave");
    run(&idle(0.1), &plat, &mut board, 1).unwrap();
    assert_eq!(read(root, &format!("{GPU}/cur_freq")), "114750000");
    assert_eq!(read(root, &format!("{EMC}/rate")), "204000000");
}

fn snapshot(plat: &Platform, now_ms: u64, power_w: f64) -> dnngov_policy::Snapshot {
    use dnngov_policy::{Caps, CpuSample, FreqDomain, Nanos, Snapshot, Watts};
    Snapshot {
        now: Nanos::from_millis(now_ms),
        domains: plat
            .domains
            .iter()
            .map(|d| FreqDomain {
                id: d.id,
                kind: d.kind.policy(),
                table: d.table(),
                cur: d.max_hz(),
                max_limit: d.max_hz(),
                cpus: d.cpus.clone(),
                busy: (d.kind == dnngov_sim::platform::Kind::Gpu).then_some(Nanos(0)),
            })
            .collect(),
        cpus: (0..6)
            .map(|cpu| CpuSample {
                cpu,
                online: true,
                busy: Nanos(0),
            })
            .collect(),
        apps: Vec::new(),
        power: Some(Watts(power_w)),
        caps: Caps::default(),
    }
}

#[test]
fn external_apps_gpu_time_shows_in_load_and_power() {
    use dnngov_sim::Strategy;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let plat = xavier();
    let mut board = VirtualBoard::create(root, &plat, false).unwrap();
    let busy = dnngov_sim::vboard::external_busy_dir(root);
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("4242"), "1000000 0").unwrap();
    board.decide(&snapshot(&plat, 0, 3.0));
    let idle_ma: f64 = read(root, &format!("{HWMON}/curr1_input")).parse().unwrap();
    // 5 ms of external GPU work in a 10 ms tick, the model's own GPU idle.
    fs::write(busy.join("4242"), "6000000 2000000").unwrap();
    board.decide(&snapshot(&plat, 10, 3.0));
    assert_eq!(read(root, "sys/devices/gpu.0/load"), "500");
    let busy_ma: f64 = read(root, &format!("{HWMON}/curr1_input")).parse().unwrap();
    assert!(busy_ma > idle_ma, "{busy_ma} <= {idle_ma}");
}

/// `dnngov-vapp` on the Xavier NX board at `root` for `frames` frames, with no agent.
fn vapp(root: &Path, frames: u32) -> std::process::Command {
    let platform = Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/jetson-xavier-nx.toml");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dnngov-vapp"));
    command
        .args(["--root".as_ref(), root.as_os_str()])
        .args(["--platform".as_ref(), platform.as_os_str()])
        .args(["--frames", &frames.to_string()])
        .args(["--socket".as_ref(), root.join("no-agent.sock").as_os_str()]);
    command
}

#[test]
fn emulated_app_registers_without_an_agent_and_reports_gpu_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    VirtualBoard::create(root, &xavier(), false).unwrap();
    // A slow GPU clock makes inference slower, as the model says.
    set(root, &format!("{GPU}/cur_freq"), "554625000");
    let o = vapp(root, 3).args(["--fps", "100"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("3 frames"), "{stdout}");
    let files: Vec<_> = fs::read_dir(dnngov_sim::vboard::external_busy_dir(root))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let text = fs::read_to_string(files[0].path()).unwrap();
    let ns: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    // Without an agent the app runs its static deployment: the most accurate sub-network
    // meeting the 60 ms deadline at full clocks (level 4, 56.75 ms). 3 frames of GPU work
    // at half the GPU clock is about 3 * (0.7 * 2 + 0.15) * 56.75 ms.
    let expected = 3.0 * (0.7 * 2.0 + 0.15) * 56.75e6;
    assert!((ns as f64 - expected).abs() / expected < 0.01, "{ns}");
}

/// The board has one GPU: while something else holds it, an emulated app's inference
/// waits for it (spinning, as a CUDA app's host thread does) and cannot finish.
#[test]
fn emulated_apps_wait_for_the_one_virtual_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    VirtualBoard::create(root, &xavier(), false).unwrap();
    let lock = dnngov_sim::vboard::virtual_gpu_lock(root);
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let gpu = fs::File::create(&lock).unwrap();
    gpu.lock().unwrap();
    let mut app = vapp(root, 1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One frame takes about 57 ms on the free GPU; held, it is still waiting after 1 s.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        app.try_wait().unwrap().is_none(),
        "the app finished a frame while the GPU was held"
    );
    gpu.unlock().unwrap();
    let o = app.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("1 frames"), "{stdout}");
}

#[test]
fn external_cpu_time_raises_the_emulated_cpu_clock() {
    use dnngov_sim::Strategy;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let plat = xavier();
    let mut board = VirtualBoard::create(root, &plat, false).unwrap();
    let busy = dnngov_sim::vboard::external_busy_dir(root);
    fs::create_dir_all(&busy).unwrap();
    let mut requested = Vec::new();
    for tick in 0..100u64 {
        // CPU 0 busy all the time, reported each tick.
        fs::write(busy.join("7"), format!("0 {}", tick * 10_000_000)).unwrap();
        let c = board.decide(&snapshot(&plat, tick * 10, 3.0));
        requested.push(c.freqs[0].1);
    }
    assert!(requested.last().unwrap().0 > 1_000_000_000, "{requested:?}");
}
