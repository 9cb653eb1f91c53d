//! The Python package as a user installs it: `pip install ./client/python` into a fresh
//! virtual environment, a wheel built from the same folder, and the package's pytest
//! suite (client/python/tests) run with that environment's interpreter against a real
//! dnngovd on a fixture board.
//!
//! The build is offline when the interpreter's own site packages hold setuptools (61 or
//! newer) and wheel, as Debian's python3-setuptools and python3-wheel do (the venv sees
//! them through `--system-site-packages`): `--no-build-isolation --no-index`. Otherwise
//! pip builds as it does for a user, fetching setuptools and wheel from the package
//! index. pytest comes from the system (python3-pytest) the same way, or is installed
//! into the venv from the index.

use dnngov_agent::platform::fixture;
use dnngov_tests::{built_binary, client_library, python3, workspace_root, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// No check for a newer pip: it would reach the package index even for an offline build.
const PIP_QUIET: &[&str] = &["--disable-pip-version-check", "--no-input"];

/// Runs `command`, failing the test with its output unless it exits 0.
fn run_ok(what: &str, command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} exited with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Whether `python -c code` exits 0.
fn python_succeeds(python: &Path, code: &str) -> bool {
    Command::new(python)
        .args(["-c", code])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Copies the package's folder as the repository holds it, without what a build or a
/// run leaves there (build/, *.egg-info, __pycache__), so that a stale build in the
/// clone cannot stand in for the sources.
fn copy_package(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "build" || name == "__pycache__" || name.ends_with(".egg-info") {
            continue;
        }
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            copy_package(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// A fresh virtual environment in `dir`; its interpreter.
fn make_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    run_ok(
        "python3 -m venv (Debian: apt-get install python3-venv, or ./scripts/install-deps.sh)",
        Command::new(python3())
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv),
    );
    venv.join("bin/python")
}

/// pip's build options: offline when setuptools and wheel are there to build with.
fn build_options(python: &Path) -> Vec<&'static str> {
    let offline = python_succeeds(
        python,
        "import setuptools, wheel, sys; \
         sys.exit(int(setuptools.__version__.split('.')[0]) < 61)",
    );
    if offline {
        vec!["--no-build-isolation", "--no-index"]
    } else {
        println!("no setuptools >= 61 and wheel beside the interpreter: pip fetches them");
        Vec::new()
    }
}

#[test]
fn the_packages_version_is_the_workspaces() {
    let path = workspace_root().join("client/python/dnngov/_version.py");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = format!("__version__ = \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        text.lines().any(|l| l == line),
        "{} lacks the line {line}",
        path.display()
    );
}

#[test]
fn pip_installs_the_package_in_a_fresh_venv_where_its_tests_pass_against_dnngovd() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("python");
    copy_package(&workspace_root().join("client/python"), &source);
    let python = make_venv(dir.path());
    let options = build_options(&python);

    // A wheel, holding the package's modules and its typing marker.
    let wheels = dir.path().join("wheels");
    run_ok(
        "pip wheel",
        Command::new(&python)
            .args(["-m", "pip", "wheel", "--no-deps", "-q", "-w"])
            .arg(&wheels)
            .args(PIP_QUIET)
            .args(&options)
            .arg(&source),
    );
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("pip wheel wrote a wheel");
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!(
            "dnngov-{}-py3-none-any",
            env!("CARGO_PKG_VERSION")
        )),
        "{name}"
    );
    let listed = run_ok(
        "listing the wheel",
        Command::new(&python)
            .args([
                "-c",
                "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
            ])
            .arg(&wheel),
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    for file in [
        "dnngov/__init__.py",
        "dnngov/_library.py",
        "dnngov/_profile.py",
        "dnngov/py.typed",
    ] {
        assert!(
            listed.lines().any(|l| l == file),
            "the wheel lacks {file}:\n{listed}"
        );
    }

    // What the documentation says: pip install ./client/python.
    run_ok(
        "pip install ./client/python",
        Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(PIP_QUIET)
            .args(&options)
            .arg(&source),
    );
    // Imported from the venv, wherever the command runs.
    let imported = run_ok(
        "import dnngov",
        Command::new(&python)
            .args(["-c", "import dnngov; print(dnngov.__file__)"])
            .env_remove("PYTHONPATH")
            .current_dir(dir.path()),
    );
    let imported = String::from_utf8_lossy(&imported.stdout).trim().to_string();
    assert!(
        Path::new(&imported).starts_with(dir.path().join("venv")),
        "dnngov was imported from {imported}, not from the venv"
    );

    if !python_succeeds(&python, "import pytest") {
        println!("pytest is not beside the interpreter: installing it into the venv");
        run_ok(
            "pip install pytest",
            Command::new(&python)
                .args(["-m", "pip", "install", "-q"])
                .args(PIP_QUIET)
                .arg("pytest"),
        );
    }

    let board = dir.path().join("board");
    fixture::xavier_nx(&board).unwrap();
    let daemon_dir = dir.path().join("dnngovd");
    std::fs::create_dir(&daemon_dir).unwrap();
    let daemon = Daemon::start(&daemon_dir, &board);

    // From the temporary folder, so that only the installed package can be imported.
    let output = Command::new(&python)
        .args(["-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider"])
        .arg(workspace_root().join("client/python/tests"))
        .current_dir(dir.path())
        .env_remove("PYTHONPATH")
        .env("DNNGOV_LIB", client_library())
        .env("DNNGOV_TEST_SOCKET", daemon.app_socket())
        .env("DNNGOV_TEST_ADMIN_SOCKET", daemon.admin_socket())
        .env("DNNGOV_TEST_CTL", built_binary("dnngovctl"))
        .output()
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the package's tests failed\n{stdout}\nstderr:\n{}\ndnngovd's log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    // Every test ran: the agent's among them.
    assert!(!stdout.contains("SKIPPED"), "a test was skipped:\n{stdout}");
    assert!(stdout.contains("test_agent.py::"), "{stdout}");
}
