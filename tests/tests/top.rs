//! `dnngovctl top` in a real terminal: tmux runs it at 80x24 against dnngovd on the
//! fixture Xavier NX with two simulated apps; keys are typed with send-keys and the
//! screen is read with capture-pane.

use dnngov_agent::platform::fixture;
use dnngov_tests::{built_binary, Daemon, TestApp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tmux server of its own (its socket in the test's folder, a new one for each server),
/// killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// `None` (with the reason printed) where tmux is not installed.
    fn start(dir: &Path, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            println!("SKIPPED: tmux is not installed (scripts/install-deps.sh installs it)");
            return None;
        }
        // A server that was just killed may still be exiting on its socket: a client that
        // reached it there was told "server exited unexpectedly".
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let tmux = Tmux {
            socket: dir.join(format!("tmux-{n}.sock")),
        };
        // remain-on-exit keeps the pane after the program ends, so the screen it left
        // can be read back.
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            "top",
            command,
            ";",
            "set-option",
            "-t",
            "top",
            "remain-on-exit",
            "on",
        ]);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux runs");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// The screen with its attributes and colours as escape sequences.
    fn screen_with_escapes(&self) -> String {
        self.run(&["capture-pane", "-e", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", "-t", "top", key]);
        }
    }

    /// Waits up to 20 s for the screen to satisfy `condition`; returns that screen.
    fn wait_for(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `top` to end; returns its exit status, which the shell around it
    /// writes to `status_file` (tmux itself may be slow to reap the process).
    fn wait_for_exit(&self, status_file: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(status_file).unwrap_or_default();
            if text.ends_with('\n') {
                return text.trim().parse().expect("an exit status");
            }
            assert!(
                Instant::now() < deadline,
                "dnngovctl top is still running; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// `dnngovctl top` in a shell that writes its exit status to `status_file`.
fn top_command(admin_socket: &Path, status_file: &Path) -> String {
    top_command_with(admin_socket, status_file, "")
}

/// [`top_command`] with environment assignments (`"NO_COLOR=1 "`) before it.
fn top_command_with(admin_socket: &Path, status_file: &Path, env: &str) -> String {
    format!(
        "sh -c '{env}{} --admin-socket {} top; echo $? > {}'",
        built_binary("dnngovctl").display(),
        admin_socket.display(),
        status_file.display()
    )
}

fn spawn_app(socket: &Path, name: &str, deadline_ms: &str) -> TestApp {
    let mut command = Command::new(built_binary("examples/simulated_app"));
    command
        .args([name, "120", "15", deadline_ms])
        .env("DNNGOV_SOCKET", socket);
    let mut app = TestApp::spawn(&mut command);
    assert!(app.line().contains("registered with dnngovd"));
    app
}

fn app_of<'a>(apps: &'a Value, name: &str) -> &'a Value {
    apps.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not registered: {apps}"))
}

#[test]
fn top_shows_domains_and_apps_sets_and_clears_a_deadline_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    let _detector = spawn_app(&daemon.app_socket(), "detector", "60");
    let _segmenter = spawn_app(&daemon.app_socket(), "segmenter", "100");
    let exit_file = dir.path().join("top.status");
    let Some(tmux) = Tmux::start(dir.path(), &top_command(&daemon.admin_socket(), &exit_file))
    else {
        return;
    };

    let domains: Vec<String> = daemon.ctl(&["status"]).unwrap()["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(domains.len(), 5);
    // Frames per second need two polls with inferences in between; the fixture's GPU
    // domain has a sparkline by then.
    let screen = tmux.wait_for("both apps with a frame rate", |screen| {
        ["detector", "segmenter"].iter().all(|name| {
            screen.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.first() == Some(name)
                    && fields.get(8).and_then(|fps| fps.parse::<f64>().ok()) > Some(0.0)
            })
        })
    });
    println!("the screen at 80x24:\n{screen}");
    for name in &domains {
        assert!(screen.contains(name.as_str()), "{name} missing:\n{screen}");
    }
    assert!(screen.contains("q quit"), "{screen}");
    assert!(screen.lines().count() <= 24);

    // The first row (sorted by name) is the detector: t, a deadline, y.
    tmux.keys(&["t", "5", "0", "Enter"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains("set detector's deadline to 50 ms? y/n")
    });
    tmux.keys(&["y"]);
    tmux.wait_for("the agent's answer", |s| s.contains("deadline 50 ms"));
    let apps = daemon.ctl(&["apps"]).unwrap();
    assert_eq!(app_of(&apps, "detector")["operator_override"], true);
    assert_eq!(app_of(&apps, "detector")["deadline_ms"], 50.0);
    assert_eq!(app_of(&apps, "segmenter")["operator_override"], false);
    tmux.wait_for("the override mark", |s| s.contains("50.0*"));

    // A refusal is shown as the agent words it.
    tmux.keys(&["t", "0", ".", "0", "1", "Enter", "y"]);
    tmux.wait_for("the refusal", |s| {
        s.contains("dnngovd refused: deadline_ms")
    });

    // Down to the segmenter and back, then clear the detector's override.
    tmux.keys(&["Down", "Up", "c"]);
    tmux.wait_for("the clear prompt", |s| {
        s.contains("clear the operator's target for detector? y/n")
    });
    tmux.keys(&["y"]);
    tmux.wait_for("the agent's answer", |s| {
        s.contains("back on its own target")
    });
    let apps = daemon.ctl(&["apps"]).unwrap();
    assert_eq!(app_of(&apps, "detector")["operator_override"], false);

    tmux.keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(&exit_file), 0, "q ends top cleanly");
    let after = tmux.screen();
    assert!(
        !after.contains("q quit"),
        "the alternate screen is left on exit:\n{after}"
    );
}

#[test]
fn top_without_an_agent_says_so_keeps_running_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("top.status");
    let command = top_command(&dir.path().join("admin.sock"), &exit_file);
    let Some(tmux) = Tmux::start(dir.path(), &command) else {
        return;
    };
    let screen = tmux.wait_for("the unreachable agent", |s| {
        s.contains("UNREACHABLE (retrying)")
    });
    assert!(screen.contains("dnngovd is not running"), "{screen}");
    // Still alive after a few more polls.
    std::thread::sleep(Duration::from_millis(600));
    assert!(tmux.screen().contains("UNREACHABLE"));
    tmux.keys(&["q"]);
    assert_eq!(tmux.wait_for_exit(&exit_file), 0);
}

/// Whether `screen` (from capture-pane -e) sets a foreground or background colour.
fn has_colour(screen: &str) -> bool {
    ["\x1b[38;", "\x1b[48;"].iter().any(|c| screen.contains(c))
        || (0..8).any(|n| {
            screen.contains(&format!("\x1b[3{n}m")) || screen.contains(&format!("\x1b[4{n}m"))
        })
}

#[test]
fn no_color_draws_attributes_but_no_colour_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    for (env, colour) in [("", true), ("NO_COLOR=1 ", false)] {
        let exit_file = dir.path().join("top.status");
        let _ = std::fs::remove_file(&exit_file);
        let command = top_command_with(&socket, &exit_file, env);
        let Some(tmux) = Tmux::start(dir.path(), &command) else {
            return;
        };
        tmux.wait_for("the view", |s| s.contains("UNREACHABLE"));
        let screen = tmux.screen_with_escapes();
        assert_eq!(has_colour(&screen), colour, "{env:?}: {screen:?}");
        assert!(screen.contains("\x1b[1m"), "bold stays: {screen:?}");
        tmux.keys(&["q"]);
        assert_eq!(tmux.wait_for_exit(&exit_file), 0);
    }
}

/// The pid of the process the pane's shell runs (`dnngovctl top`).
fn top_pid(tmux: &Tmux) -> i32 {
    let shell = tmux.run(&["display-message", "-p", "-t", "top", "#{pane_pid}"]);
    let shell = shell.trim();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("the pane's shell lists its children");
    children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the pane's shell {shell} runs nothing"))
}

#[test]
fn sigterm_gives_the_terminal_back() {
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("top.status");
    let command = top_command(&dir.path().join("admin.sock"), &exit_file);
    let Some(tmux) = Tmux::start(dir.path(), &command) else {
        return;
    };
    tmux.wait_for("the view", |s| s.contains("q quit"));
    let pid = nix::unistd::Pid::from_raw(top_pid(&tmux));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(tmux.wait_for_exit(&exit_file), 128 + 15);
    let after = tmux.screen();
    assert!(
        !after.contains("q quit"),
        "the alternate screen is left on SIGTERM:\n{after}"
    );
}

#[test]
fn top_refuses_a_dumb_terminal_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(built_binary("dnngovctl"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .arg("top")
        .env("TERM", "dumb")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TERM=dumb"), "{stderr}");
    assert!(stderr.contains("dnngovctl status"), "{stderr}");
}
