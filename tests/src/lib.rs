//! Shared pieces of the end-to-end tests: child processes with line-by-line output,
//! raw protocol clients, and the paths of what the workspace built.

use governor_proto::Reply;
use nix::sys::socket::{
    connect, recvmsg, send, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use std::io::{BufRead, BufReader, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The folder of the test binaries' profile (`target/debug`), where
/// `libdnngov_client.so` is built alongside.
pub fn client_library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// The Python interpreter the tests run the `dnngov` package with.
pub fn python3() -> PathBuf {
    std::env::var_os("PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// The client's shared library, built first.
pub fn client_library() -> PathBuf {
    built_binary("libdnngov_client.so")
}

/// Compiles tests/c/test_app.c against dnngov.h and the cdylib into `dir`.
pub fn build_c_app(dir: &Path) -> PathBuf {
    let out = dir.join("c_test_app");
    compile_c(&workspace_root().join("tests/c/test_app.c"), &out, &[]);
    out
}

/// A loopback address nothing listens on now, for a daemon's metrics endpoint.
pub fn free_local_address() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    probe.local_addr().expect("the probe's address")
}

/// The whole reply to `GET path` from `addr` (headers included); empty when nothing
/// answers.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

/// Compiles examples/c-app's MLP app (`-O2`, as its Makefile does) into `dir`.
pub fn build_mlp_app(dir: &Path) -> PathBuf {
    let out = dir.join("dnngov_mlp_app");
    compile_c(
        &workspace_root().join("examples/c-app/dnngov_mlp_app.c"),
        &out,
        &["-O2"],
    );
    out
}

/// Compiles the C program `source` into `out` with `cc -Wall -Werror` (and `extra`
/// flags) against client/include/dnngov.h and libdnngov_client.so, with an rpath to the
/// library; fails the test with the compiler's messages.
pub fn compile_c(source: &Path, out: &Path, extra: &[&str]) {
    let library = client_library();
    let libdir = library.parent().expect("the library lies in a folder");
    let output = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-Wall", "-Werror"])
        .args(extra)
        .arg("-I")
        .arg(workspace_root().join("client/include"))
        .arg(source)
        .arg("-o")
        .arg(out)
        .arg("-L")
        .arg(libdir)
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-ldnngov_client")
        .output()
        .expect("cc runs");
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A child process read line by line, its stdin held open until `finish`.
pub struct TestApp {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl TestApp {
    pub fn spawn(command: &mut Command) -> Self {
        let name = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            name,
            child,
            stdin,
            lines,
        }
    }

    /// The next line the app prints (fails the test after 20 s of silence).
    pub fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{} printed nothing: {e}", self.name))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` to the app's stdin.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin is open until finish");
        writeln!(stdin, "{line}").expect("write to the app's stdin");
        stdin.flush().expect("flush the app's stdin");
    }

    /// Closes stdin and waits: the app exits normally.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the app");
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        self.child.kill().expect("kill the app");
        let _ = self.child.wait();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw SOCK_SEQPACKET connection to the agent, for clients that misbehave.
pub fn raw_connect(path: &Path) -> OwnedFd {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    connect(fd.as_raw_fd(), &UnixAddr::new(path).expect("path")).expect("connect");
    fd
}

/// Sends one packet and reads one reply and the fd it may carry (`None`: hang-up).
pub fn raw_exchange(fd: &OwnedFd, packet: &[u8]) -> (Option<Reply>, Option<OwnedFd>) {
    send(fd.as_raw_fd(), packet, MsgFlags::MSG_NOSIGNAL).expect("send");
    let mut buf = vec![0u8; 70_000];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    let mut received = None;
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel installed this descriptor for us alone.
                received = Some(unsafe { OwnedFd::from_raw_fd(f) });
            }
        }
    }
    let len = msg.bytes;
    if len == 0 {
        return (None, received);
    }
    let reply = serde_json::from_slice(&buf[..len]).expect("the agent's reply is JSON");
    (Some(reply), received)
}

/// A valid registration for `name` claiming `pid`.
pub fn register_json(name: &str, pid: i32) -> String {
    serde_json::json!({
        "type": "register",
        "protocol_version": governor_proto::PROTOCOL_VERSION,
        "app": name,
        "pid": pid,
        "devices": ["gpu"],
        "subnets": [
            {"id": 0, "name": "small", "accuracy_pct": 70.0},
            {"id": 1, "name": "large", "accuracy_pct": 75.0}
        ],
        "target": {"deadline_ms": 30.0}
    })
    .to_string()
}

/// The path of something another package builds (`dnngovd`, `dnngovctl`,
/// `examples/simulated_app`, `libdnngov_client.so`), built first: the tests package
/// cannot name another package's binaries, `cargo test -p dnngov-tests` alone would not
/// build them, and a dependency's cdylib stays in `deps/` unless built on its own.
pub fn built_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    built_once(
        &BUILT,
        &[
            "-p",
            "dnngov-agent",
            "--bins",
            "-p",
            "dnngov-client",
            "--lib",
            "--example",
            "simulated_app",
        ],
        name,
    )
}

/// The virtual board and its emulated app (`dnngov-vboard`, `dnngov-vapp`), built first.
pub fn sim_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    built_once(
        &BUILT,
        &[
            "-p",
            "dnngov-sim",
            "--bin",
            "dnngov-vboard",
            "--bin",
            "dnngov-vapp",
        ],
        name,
    )
}

/// `cargo build ARGS` in the tests' profile, once per test process; then the path of
/// `name` in the profile's folder.
fn built_once(built: &std::sync::OnceLock<()>, args: &[&str], name: &str) -> PathBuf {
    built.get_or_init(|| {
        let mut command = Command::new(env!("CARGO"));
        command.args(["build", "--quiet"]).args(args);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let status = command
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build {} failed", args.join(" "));
    });
    let path = client_library_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The super-network's binaries (`dnngov-supernet`, which trains, and
/// `dnngov-supernet-app`, which profiles and runs under the agent), built first.
pub fn supernet_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    built_once(
        &BUILT,
        &[
            "-p",
            "dnngov-supernet",
            "-p",
            "dnngov-supernet-app",
            "--bin",
            "dnngov-supernet",
            "--bin",
            "dnngov-supernet-app",
        ],
        name,
    )
}

/// A real `dnngovd` on a fixture tree, with its sockets, state and log in one folder
/// (`agent.sock`, `admin.sock`, `state/`, `dnngovd.log`) and a 20 ms tick. Killed when
/// dropped.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, sysfs_root: &Path) -> Daemon {
        Self::start_with(dir, sysfs_root, "")
    }

    /// `extra`: more configuration lines.
    pub fn start_with(dir: &Path, sysfs_root: &Path, extra: &str) -> Daemon {
        Self::start_under(dir, sysfs_root, extra, &[])
    }

    /// As [`Daemon::start_with`], with dnngovd run by `wrapper` (a program and its
    /// arguments, e.g. `setpriv ... --`), which then runs `dnngovd ARGS`.
    pub fn start_under(dir: &Path, sysfs_root: &Path, extra: &str, wrapper: &[String]) -> Daemon {
        let config = dir.join("config.toml");
        std::fs::write(&config, format!("[control]\ntick_ms = 20\n{extra}")).unwrap();
        let log = std::fs::File::create(dir.join("dnngovd.log")).unwrap();
        let dnngovd = built_binary("dnngovd");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&dnngovd);
                command
            }
            None => Command::new(&dnngovd),
        };
        // A heap profiler's preload library for the daemon alone (not the test, not the
        // apps), e.g. heaptrack's: see docs/reliability.md.
        if let Some(preload) = std::env::var_os("DNNGOV_TEST_DAEMON_PRELOAD") {
            command.env("LD_PRELOAD", preload);
        }
        let child = command
            .arg("--config")
            .arg(&config)
            .arg("--sysfs-root")
            .arg(sysfs_root)
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .arg("--admin-socket")
            .arg(dir.join("admin.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--report-every")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnngovd starts");
        let daemon = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        daemon.wait_for("dnngovd to answer on its admin socket", || {
            daemon.ctl(&["status"]).is_some()
        });
        daemon
    }

    pub fn app_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state/saved-state.json")
    }

    /// `dnngovctl --json ARGS`, as it ran.
    pub fn ctl_output(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().expect("dnngovctl runs")
    }

    /// `dnngovctl --json ARGS`, to run.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(built_binary("dnngovctl"));
        command
            .arg("--admin-socket")
            .arg(self.admin_socket())
            .arg("--json")
            .args(args);
        command
    }

    /// `dnngovctl --json ARGS`; `None` when it fails.
    pub fn ctl(&self, args: &[&str]) -> Option<serde_json::Value> {
        let output = self.ctl_output(args);
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).expect("dnngovctl --json prints JSON"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnngovd.log")).unwrap_or_default()
    }

    /// Polls `condition` for up to 20 s; fails with the daemon's log.
    pub fn wait_for(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; dnngovd's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal dnngovd");
    }

    /// Waits for the daemon to exit (after a signal).
    pub fn wait(mut self) -> ExitStatus {
        let status = self.child.wait().expect("wait for dnngovd");
        std::mem::forget(self);
        status
    }

    /// SIGTERM, and the daemon exits cleanly.
    pub fn stop(self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait();
        assert!(status.success(), "dnngovd exits cleanly: {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// For the test app binaries: registers through the Rust client (exiting with the error
/// on stderr if that fails) and announces `registered APP_ID SUBNET` on stdout, the line
/// the tests wait for.
pub fn register_and_announce(
    spec: dnngov_client::AppSpec,
    options: dnngov_client::Options,
) -> dnngov_client::Session {
    use std::io::Write;
    let session = dnngov_client::Session::register(spec, options).unwrap_or_else(|e| {
        eprintln!("registration failed: {e}");
        std::process::exit(1);
    });
    let mut out = std::io::stdout();
    writeln!(
        out,
        "registered {} {}",
        session.app_id(),
        session.current_subnet()
    )
    .unwrap();
    out.flush().unwrap();
    session
}

/// Whether the tests run as root, and so may create users and groups and run processes
/// as them.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A user created for a test.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Every group it is in, the primary one included.
    pub groups: Vec<u32>,
}

/// Users and groups created for one test with `groupadd` and `useradd` (root only),
/// removed when dropped. Names start with `dg` and the test process's pid, so that tests
/// running at once do not meet.
pub struct TestAccounts {
    prefix: String,
    users: Vec<String>,
    groups: Vec<String>,
}

impl TestAccounts {
    /// `tag`: a letter or two that tells this test's accounts from another's.
    pub fn new(tag: &str) -> TestAccounts {
        assert!(is_root(), "creating users and groups needs root");
        TestAccounts {
            prefix: format!("dg{}{tag}", std::process::id()),
            users: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Creates group PREFIX-`name` and gives its name and gid.
    pub fn group(&mut self, name: &str) -> (String, u32) {
        let full = format!("{}{name}", self.prefix);
        run_tool("groupadd", &[full.as_str()]);
        self.groups.push(full.clone());
        let gid = nix::unistd::Group::from_name(&full)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("group {full} was just created"))
            .gid
            .as_raw();
        (full, gid)
    }

    /// Creates user PREFIX-`name` with primary group `primary` and also in `groups`
    /// (full names, as [`TestAccounts::group`] gives them), without a home directory.
    pub fn user(&mut self, name: &str, primary: &str, groups: &[&str]) -> Account {
        let full = format!("{}{name}", self.prefix);
        let mut args = vec!["-M", "-N", "-s", "/bin/false", "-g", primary];
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.extend(["-G", joined.as_str()]);
        }
        args.push(full.as_str());
        run_tool("useradd", &args);
        self.users.push(full.clone());
        let user = nix::unistd::User::from_name(&full)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {full} was just created"));
        let cname = std::ffi::CString::new(full.clone()).unwrap();
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .expect("the new user's groups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        Account {
            name: full,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        }
    }
}

impl Drop for TestAccounts {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).status();
        }
        for group in &self.groups {
            let _ = Command::new("groupdel").arg(group).status();
        }
    }
}

fn run_tool(tool: &str, args: &[&str]) {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    assert!(
        output.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes `command` run as `account`, with all its groups, as a login would give them.
pub fn run_as<'a>(command: &'a mut Command, account: &Account) -> &'a mut Command {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = account.groups.clone();
    let (uid, gid) = (account.uid, account.gid);
    // SAFETY: the closure only makes system calls (no allocation, no locks) between fork
    // and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Where a [`IdleConnections`] process's connections stand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdleCounts {
    /// Open, and the agent said nothing.
    pub held: usize,
    /// Closed without a word.
    pub closed: usize,
    /// Answered with an error, by its code (`admin` for the admin socket's).
    pub refused: std::collections::BTreeMap<String, usize>,
}

impl IdleCounts {
    pub fn refused(&self, code: &str) -> usize {
        self.refused.get(code).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.held + self.closed + self.refused.values().sum::<usize>()
    }
}

/// A process that holds idle connections to a socket (`dnngov-idle-connections`).
pub struct IdleConnections {
    app: TestApp,
    pub connected: usize,
}

impl IdleConnections {
    /// Opens `count` connections to `socket` from a new process, run as `account` when
    /// given; returns once they are connected.
    pub fn hold(socket: &Path, count: usize, account: Option<&Account>) -> IdleConnections {
        let mut command = Command::new(built_test_binary("dnngov-idle-connections"));
        command.arg(socket).arg(count.to_string());
        if let Some(account) = account {
            run_as(&mut command, account);
        }
        let mut app = TestApp::spawn(&mut command);
        let line = app.line();
        let connected = line
            .strip_prefix("connected ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("dnngov-idle-connections said {line:?}"));
        IdleConnections { app, connected }
    }

    /// Where the connections stand now.
    pub fn counts(&mut self) -> IdleCounts {
        self.app.send_line("report");
        let line = self.app.line();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() >= 5 && words[0] == "held" && words[2] == "closed",
            "dnngov-idle-connections said {line:?}"
        );
        IdleCounts {
            held: words[1].parse().expect("a count"),
            closed: words[3].parse().expect("a count"),
            refused: words[5..]
                .iter()
                .filter_map(|w| w.split_once('='))
                .map(|(code, n)| (code.to_string(), n.parse().expect("a count")))
                .collect(),
        }
    }

    /// Asks until `done` holds of the counts (20 s at most) and gives them.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&IdleCounts) -> bool) -> IdleCounts {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.counts();
            if done(&counts) {
                return counts;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {counts:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A binary of this test package (`dnngov-test-app`, `dnngov-idle-connections`): the
/// integration tests' own binaries sit one folder above them, built with them.
pub fn built_test_binary(name: &str) -> PathBuf {
    let path = client_library_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
