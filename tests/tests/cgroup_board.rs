//! The cgroup board (`dnngov-vboard --cgroup`) against this machine's real cgroups: a
//! clock written for a cluster becomes its CPU quota and really slows a process in it;
//! the board's groups go when it stops, and after a SIGKILL at the next start.
//!
//! Needs root and a cgroup cpu controller; otherwise each test says why it skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dnngov_sim::cgroup::{board_groups, quota_us, Layout, DEFAULT_PERIOD_US, GROUP_PREFIX};
use dnngov_tests::{sim_binary, workspace_root};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const POLICY0: &str = "sys/devices/system/cpu/cpufreq/policy0";

/// The layout to test with, or why these tests cannot run here.
fn usable() -> Result<Layout, String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: creating cgroups needs root".into());
    }
    Layout::detect(Path::new(CGROUP_ROOT)).map_err(|e| format!("{e:#}"))
}

macro_rules! layout_or_skip {
    () => {
        match usable() {
            Ok(layout) => layout,
            Err(why) => {
                eprintln!("skipping: {why}");
                return;
            }
        }
    };
}

/// One test at a time: each runs boards whose emulated governors follow the CPU time their
/// processes get, and the other test's boards on this machine's few CPUs would take it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

struct Board {
    child: Child,
    root: PathBuf,
}

impl Board {
    fn start(root: &Path) -> Board {
        let platform = workspace_root().join("platforms/jetson-xavier-nx.toml");
        let child = Command::new(sim_binary("dnngov-vboard"))
            .args(["--platform".as_ref(), platform.as_os_str()])
            .args(["--root".as_ref(), root.as_os_str()])
            // The default mapping: cluster 0 on this machine's CPUs 0 and 1 (where it has
            // them), so a single-threaded process has a CPU to spare in its cluster.
            .args(["--duration", "300", "--cgroup"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnngov-vboard starts");
        let board = Board {
            child,
            root: root.to_path_buf(),
        };
        let map = root.join("run/dnngov-vboard/cgroups");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !map.is_file() {
            assert!(Instant::now() < deadline, "the board wrote no {map:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        board
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn set(&self, rel: &str, value: &str) {
        std::fs::write(self.root.join(rel), value).unwrap();
    }

    /// The group directories of cluster 0, as the board recorded them.
    fn cluster0(&self) -> Vec<PathBuf> {
        std::fs::read_to_string(self.root.join("run/dnngov-vboard/cgroups"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("0 "))
            .map(|l| PathBuf::from(l.splitn(4, ' ').nth(3).unwrap()))
            .collect()
    }

    /// How many of this machine's CPUs cluster 0 has.
    fn cpus0(&self) -> usize {
        std::fs::read_to_string(self.root.join("run/dnngov-vboard/cgroups"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("0 "))
            .and_then(|l| l.split(' ').nth(2))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The quota cluster 0 should have at `khz` of 1907200.
    fn quota_at(&self, khz: u64) -> u64 {
        quota_us(khz as f64 / 1_907_200.0, DEFAULT_PERIOD_US, self.cpus0())
    }

    /// The quota now in force for cluster 0 (µs per period).
    fn quota0(&self) -> u64 {
        let cpu = &self.cluster0()[0];
        let text = std::fs::read_to_string(cpu.join("cpu.max"))
            .or_else(|_| std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")))
            .unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Waits until cluster 0's quota is `want`.
    fn await_quota(&self, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.quota0() != want {
            assert!(
                Instant::now() < deadline,
                "cluster 0's quota stayed {} instead of {want}",
                self.quota0()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The share of one CPU that a fixed amount of CPU work in cluster 0 got (shell
    /// arithmetic, one process): its CPU time over its wall time, the best of three runs.
    /// Another process on the machine can only lower a run's share; the cluster's quota
    /// caps it whatever else runs.
    fn share_of_work_in_cluster0(&self) -> Work {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let child = Command::new(sim_binary("dnngov-vboard"))
                    .args(["run", "--root"])
                    .arg(&self.root)
                    .args(["--cluster", "0", "--", "sh", "-c"])
                    .arg("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
                    .spawn()
                    .unwrap();
                let (status, cpu) = wait_with_cpu_time(child);
                assert_eq!(status, 0, "the work in cluster 0 failed");
                Work {
                    wall: t.elapsed(),
                    cpu,
                }
            })
            .max_by(|a, b| a.share().total_cmp(&b.share()))
            .unwrap()
    }
}

/// One run of the work: how long it took and the CPU time it used.
#[derive(Debug, Clone, Copy)]
struct Work {
    wall: Duration,
    cpu: Duration,
}

impl Work {
    fn share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// Waits for `child` (which `dnngov-vboard run` became by exec) and returns its exit
/// code and the CPU time (user and system) it used.
fn wait_with_cpu_time(child: Child) -> (i32, Duration) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and both pointers are to locals that outlive
    // the call; `child` is ours and not waited for elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, tv(usage.ru_utime) + tv(usage.ru_stime))
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(sim_binary("dnngov-vboard"))
            .args(["clean"])
            .status();
    }
}

fn groups_of(layout: &Layout, pid: u32) -> Vec<PathBuf> {
    let name = format!("{GROUP_PREFIX}{pid}");
    board_groups(layout)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name.as_str()))
        .collect()
}

#[test]
fn a_lower_written_clock_slows_a_real_process_in_proportion() {
    let _layout = layout_or_skip!();
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let board = Board::start(dir.path());
    // As dnngovd does: the userspace governor, then the speed.
    board.set(&format!("{POLICY0}/scaling_governor"), "userspace");
    board.set(&format!("{POLICY0}/scaling_setspeed"), "1907200");
    board.await_quota(board.quota_at(1_907_200));
    let full = board.share_of_work_in_cluster0();

    // 960 MHz of 1907.2: 5034 µs of every 10 ms per CPU. The process has a CPU to spare
    // in the cluster, but its own group holds it to one CPU's share.
    board.set(&format!("{POLICY0}/scaling_setspeed"), "960000");
    board.await_quota(board.quota_at(960_000));
    let half = board.share_of_work_in_cluster0();
    let allowed = 960_000.0 / 1_907_200.0;
    eprintln!(
        "full clock: {:?} of CPU in {:?} ({:.2} of a CPU); half clock: {:?} in {:?} \
         ({:.2}, the quota allows {allowed:.2})",
        full.cpu,
        full.wall,
        full.share(),
        half.cpu,
        half.wall,
        half.share()
    );
    // The quota is the kernel's: at half the clock the process gets no more than half a
    // CPU (a tenth over for the periods cut at the run's ends), however idle the machine.
    assert!(
        half.share() <= allowed * 1.1,
        "at half the clock the process still got {:.2} of a CPU, over the {allowed:.2} \
         its quota allows",
        half.share()
    );
    // At the full clock it was not held there: another process on this shared machine
    // can take a share of its CPU, but not most of it in the best of three runs.
    assert!(
        full.share() >= half.share() * 1.25,
        "the full clock gave the process {:.2} of a CPU, hardly more than the half \
         clock's {:.2}",
        full.share(),
        half.share()
    );

    // The quota follows every write, down to the kernel's 1 ms floor.
    board.set(&format!("{POLICY0}/scaling_setspeed"), "499200");
    board.await_quota(board.quota_at(499_200));
    board.set(&format!("{POLICY0}/scaling_setspeed"), "115200");
    board.await_quota(board.quota_at(115_200));
    // The board's own schedutil again: an idle cluster goes down to the floor, a busy one
    // up to full speed.
    board.set(&format!("{POLICY0}/scaling_governor"), "schedutil");
    board.await_quota(board.quota_at(115_200));
    let mut spin = Command::new(sim_binary("dnngov-vboard"))
        .args(["run", "--root"])
        .arg(dir.path())
        .args(["--cluster", "0", "--", "sh", "-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    // At least half the highest clock: on a loaded machine the spinning process gets
    // less than a whole CPU, and schedutil settles below the top of the table.
    let half = board.quota_at(1_907_200) / 2;
    let mut highest = 0;
    for _ in 0..250 {
        std::thread::sleep(Duration::from_millis(20));
        highest = highest.max(board.quota0());
        if highest >= half {
            break;
        }
    }
    let _ = spin.kill();
    let _ = spin.wait();
    assert!(
        highest >= half,
        "schedutil never raised a busy cluster to half speed or more: its quota reached \
         {highest} us, half speed is {half} us"
    );
}

#[test]
fn the_boards_groups_go_on_sigterm_and_after_sigkill_at_the_next_start() {
    let layout = layout_or_skip!();
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();

    let board = Board::start(&dir.path().join("a"));
    let pid = board.pid();
    assert!(
        !groups_of(&layout, pid).is_empty(),
        "no groups for board {pid}"
    );
    // A process in a cluster does not stop the clean-up: it goes back to the root group.
    let mut sleeper = Command::new(sim_binary("dnngov-vboard"))
        .args(["run", "--root"])
        .arg(dir.path().join("a"))
        .args(["--", "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut board = board;
    let status = board.child.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status:?}");
    assert_eq!(groups_of(&layout, pid), Vec::<PathBuf>::new());
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let killed = Board::start(&dir.path().join("b"));
    let pid = killed.pid();
    let mut killed = killed;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert!(
        !groups_of(&layout, pid).is_empty(),
        "SIGKILL left no groups to clean up, so this test checks nothing"
    );
    // The next board removes them as it starts.
    let next = Board::start(&dir.path().join("c"));
    assert_eq!(groups_of(&layout, pid), Vec::<PathBuf>::new());
    drop(next);
    drop(killed);
    // Nothing of either board is left in any hierarchy.
    let leftover: Vec<PathBuf> = board_groups(&layout)
        .into_iter()
        .filter(|p| {
            // Boards of other tests may be running: only a dead board's groups count.
            !p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(GROUP_PREFIX))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        })
        .collect();
    assert_eq!(leftover, Vec::<PathBuf>::new());
}
