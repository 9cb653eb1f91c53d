//! install.sh into a temporary DESTDIR and back out: every file in its place with its
//! mode, the manifest listing them, a second run changing nothing, a modified config
//! kept, and `--uninstall` leaving nothing behind that the install created.
//!
//! The installer is run with `--no-build` against a target directory of stand-in files:
//! what is checked is the placement, not the binaries, so no release build is needed.
//! Commands that would change the live system (systemctl, udevadm, groupadd, ldconfig,
//! ...) are shadowed on PATH by stubs that log their use and fail: a DESTDIR run must
//! never reach them.
//!
//! One test runs a live install (as root) in a private mount namespace over a copy of
//! /etc: the service user and groups are really created, upgraded and removed there.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dnngov_tests::workspace_root;

/// Commands a DESTDIR install or uninstall must not run.
const LIVE_SYSTEM_COMMANDS: &[&str] = &[
    "systemctl",
    "udevadm",
    "groupadd",
    "groupdel",
    "useradd",
    "usermod",
    "userdel",
    "ldconfig",
    "python3",
    "cargo",
    "apt-get",
    "sudo",
];

/// One temporary installation: stand-in build outputs, stubbed system commands and the
/// DESTDIR, all inside one temporary directory.
struct Staging {
    _tmp: tempfile::TempDir,
    target: PathBuf,
    destdir: PathBuf,
    stubs: PathBuf,
    stub_log: PathBuf,
}

impl Staging {
    fn new() -> Staging {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let target = tmp.path().join("target-release");
        let destdir = tmp.path().join("dest");
        let stubs = tmp.path().join("stubs");
        let stub_log = tmp.path().join("stub-calls.log");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&destdir).unwrap();
        fs::create_dir(&stubs).unwrap();

        // Distinct contents, so a file installed in the wrong place shows.
        write_mode(&target.join("dnngovd"), b"#!/bin/sh\necho dnngovd\n", 0o755);
        write_mode(
            &target.join("dnngovctl"),
            b"#!/bin/sh\necho dnngovctl\n",
            0o755,
        );
        write_mode(
            &target.join("dnngov-eval"),
            b"#!/bin/sh\necho dnngov-eval\n",
            0o755,
        );
        write_mode(
            &target.join("libdnngov_client.so"),
            b"stand-in shared library\n",
            0o755,
        );
        write_mode(
            &target.join("libdnngov_client.a"),
            b"stand-in static library\n",
            0o644,
        );

        for name in LIVE_SYSTEM_COMMANDS {
            let script = format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 1\n",
                stub_log.display()
            );
            write_mode(&stubs.join(name), script.as_bytes(), 0o755);
        }
        Staging {
            _tmp: tmp,
            target,
            destdir,
            stubs,
            stub_log,
        }
    }

    /// Runs install.sh in DESTDIR mode with `extra` arguments (prefix /usr/local unless
    /// `extra` names another).
    fn run(&self, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "--no-build".into(),
            "--target-dir".into(),
            self.target.display().to_string(),
            "--destdir".into(),
            self.destdir.display().to_string(),
        ];
        if !extra.contains(&"--prefix") {
            args.extend(["--prefix".into(), "/usr/local".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let path = format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        let output = Command::new("bash")
            .arg(workspace_root().join("install.sh"))
            .args(&args)
            .env("PATH", path)
            // A sudo session's user would otherwise change how a build runs.
            .env_remove("SUDO_USER")
            .output()
            .expect("bash runs install.sh");
        let log = fs::read_to_string(&self.stub_log).unwrap_or_default();
        assert!(
            log.is_empty(),
            "a DESTDIR run called commands that change the live system:\n{log}"
        );
        output
    }

    fn run_ok(&self, extra: &[&str]) -> String {
        let output = self.run(extra);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "install.sh {extra:?} failed:\n{text}"
        );
        text
    }

    /// A path of the target system, inside DESTDIR.
    fn staged(&self, path: &str) -> PathBuf {
        self.destdir.join(path.trim_start_matches('/'))
    }

    fn tree(&self) -> BTreeMap<String, Entry> {
        let mut tree = BTreeMap::new();
        walk(&self.destdir, &self.destdir, &mut tree);
        tree
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
}

fn write_mode(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry under `dir`, keyed by its path on the target system ("/usr/local/bin").
fn walk(root: &Path, dir: &Path, tree: &mut BTreeMap<String, Entry>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let key = format!("/{}", path.strip_prefix(root).unwrap().display());
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            tree.insert(key, Entry::Dir { mode });
            walk(root, &path, tree);
        } else {
            assert!(
                meta.is_file(),
                "{key}: only files and directories are installed"
            );
            tree.insert(
                key,
                Entry::File {
                    mode,
                    content: fs::read(&path).unwrap(),
                },
            );
        }
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The board descriptions the installer copies, as (target path, source).
fn platform_files() -> Vec<(String, PathBuf)> {
    let dir = workspace_root().join("platforms");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (format!("/usr/local/share/dnngov/platforms/{name}"), p)
        })
        .collect();
    files.sort();
    files
}

/// (target path, mode, expected content) of every file an install into /usr/local puts
/// in place, the manifest aside.
fn expected_files(staging: &Staging) -> Vec<(String, u32, Vec<u8>)> {
    let root = workspace_root();
    let read = |p: PathBuf| fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let unit = String::from_utf8(read(root.join("systemd/dnngovd.service")))
        .unwrap()
        .replace("@PREFIX@", "/usr/local");
    let mut files = vec![
        (
            "/usr/local/bin/dnngovd".to_string(),
            0o755,
            read(staging.target.join("dnngovd")),
        ),
        (
            "/usr/local/bin/dnngovctl".to_string(),
            0o755,
            read(staging.target.join("dnngovctl")),
        ),
        (
            "/usr/local/bin/dnngov-eval".to_string(),
            0o755,
            read(staging.target.join("dnngov-eval")),
        ),
        (
            "/usr/local/lib/libdnngov_client.so".to_string(),
            0o644,
            read(staging.target.join("libdnngov_client.so")),
        ),
        (
            "/usr/local/lib/libdnngov_client.a".to_string(),
            0o644,
            read(staging.target.join("libdnngov_client.a")),
        ),
        (
            "/usr/local/include/dnngov.h".to_string(),
            0o644,
            read(root.join("client/include/dnngov.h")),
        ),
        (
            "/etc/systemd/system/dnngovd.service".to_string(),
            0o644,
            unit.into_bytes(),
        ),
        (
            "/etc/udev/rules.d/60-dnngov.rules".to_string(),
            0o644,
            read(root.join("udev/60-dnngov.rules")),
        ),
        (
            "/etc/dnngov/config.toml".to_string(),
            0o644,
            read(root.join("dist/config.toml")),
        ),
    ];
    for (target, source) in platform_files().into_iter().chain(python_package_files()) {
        files.push((target, 0o644, read(source)));
    }
    files
}

/// (target path, source) of the Python package's files, installed where the .pth file
/// points: its modules and the `py.typed` marker.
fn python_package_files() -> Vec<(String, PathBuf)> {
    let dir = workspace_root().join("client/python/dnngov");
    let mut files: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py") || p.ends_with("py.typed"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (format!("/usr/local/share/dnngov/python/dnngov/{name}"), p)
        })
        .collect();
    files.sort();
    assert!(
        files.iter().any(|(t, _)| t.ends_with("/__init__.py")),
        "the package has its __init__.py"
    );
    files
}

const MANIFEST: &str = "/usr/local/share/dnngov/install-manifest";

/// The paths a manifest lists (its "file" and "config" entries).
fn manifest_paths(staging: &Staging) -> Vec<String> {
    let text = fs::read_to_string(staging.staged(MANIFEST)).expect("the manifest is installed");
    text.lines()
        .filter(|l| l.starts_with("file ") || l.starts_with("config "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn installs_every_file_in_place_with_its_mode() {
    let staging = Staging::new();
    staging.run_ok(&[]);

    let expected = expected_files(&staging);
    for (path, mode, content) in &expected {
        let staged = staging.staged(path);
        assert_eq!(mode_of(&staged), *mode, "mode of {path}");
        assert!(fs::read(&staged).unwrap() == *content, "content of {path}");
    }
    assert_eq!(mode_of(&staging.staged(MANIFEST)), 0o644);

    // Nothing else: the expected files and the manifest are all the files there are.
    let mut wanted: Vec<String> = expected.iter().map(|(p, _, _)| p.clone()).collect();
    wanted.push(MANIFEST.to_string());
    wanted.sort();
    let found: Vec<String> = staging
        .tree()
        .into_iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(found, wanted);

    // Directories created are plain 0755.
    for (path, entry) in staging.tree() {
        if let Entry::Dir { mode } = entry {
            assert_eq!(mode, 0o755, "mode of {path}");
        }
    }
}

#[test]
fn unit_names_the_installed_binaries() {
    let staging = Staging::new();
    staging.run_ok(&[]);
    let unit = fs::read_to_string(staging.staged("/etc/systemd/system/dnngovd.service")).unwrap();
    assert!(
        !unit.contains("@PREFIX@"),
        "placeholder left in the unit:\n{unit}"
    );
    assert!(unit.contains("\nExecStart=/usr/local/bin/dnngovd --config /etc/dnngov/config.toml\n"));
    assert!(unit.contains("\nExecStopPost=/usr/local/bin/dnngovctl restore\n"));
}

#[test]
fn manifest_lists_exactly_what_was_installed() {
    let staging = Staging::new();
    staging.run_ok(&[]);
    let mut listed = manifest_paths(&staging);
    listed.sort();
    let mut installed: Vec<String> = expected_files(&staging)
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    installed.sort();
    assert_eq!(listed, installed);

    // Target-system paths, not staging paths: the manifest is shipped as it is.
    let text = fs::read_to_string(staging.staged(MANIFEST)).unwrap();
    assert!(
        !text.contains(&staging.destdir.display().to_string()),
        "{text}"
    );
    // The directories it created are listed for uninstall, DESTDIR itself never.
    for dir in [
        "/usr",
        "/usr/local/share/dnngov",
        "/etc/dnngov",
        "/etc/udev/rules.d",
    ] {
        assert!(
            text.lines().any(|l| l == format!("dir {dir}")),
            "no `dir {dir}` in:\n{text}"
        );
    }
    assert!(!text.lines().any(|l| l == "dir /" || l == "dir "), "{text}");
}

#[test]
fn installing_twice_changes_nothing() {
    let staging = Staging::new();
    staging.run_ok(&[]);
    let first = staging.tree();
    let output = staging.run_ok(&[]);
    assert_eq!(
        staging.tree(),
        first,
        "second run changed the tree; its output:\n{output}"
    );
}

#[test]
fn uninstall_removes_everything_it_installed_but_not_destdir() {
    let staging = Staging::new();
    staging.run_ok(&[]);
    staging.run_ok(&["--uninstall"]);
    assert!(staging.destdir.is_dir(), "DESTDIR itself was removed");
    assert_eq!(
        staging.tree(),
        BTreeMap::new(),
        "left behind after --uninstall"
    );
}

#[test]
fn uninstall_after_two_installs_removes_everything() {
    // The second run finds its directories already there: the manifest must still
    // remember that the first one created them.
    let staging = Staging::new();
    staging.run_ok(&[]);
    staging.run_ok(&[]);
    staging.run_ok(&["--uninstall"]);
    assert_eq!(
        staging.tree(),
        BTreeMap::new(),
        "left behind after --uninstall"
    );
}

#[test]
fn uninstall_leaves_files_of_others_and_their_directories() {
    let staging = Staging::new();
    let others = staging.staged("/usr/local/bin/someone-elses-tool");
    fs::create_dir_all(others.parent().unwrap()).unwrap();
    write_mode(&others, b"keep me\n", 0o755);

    staging.run_ok(&[]);
    staging.run_ok(&["--uninstall"]);

    assert_eq!(fs::read(&others).unwrap(), b"keep me\n");
    let left: Vec<String> = staging.tree().into_keys().collect();
    assert_eq!(
        left,
        [
            "/usr",
            "/usr/local",
            "/usr/local/bin",
            "/usr/local/bin/someone-elses-tool"
        ]
    );
}

#[test]
fn modified_config_is_kept_on_reinstall_and_uninstall() {
    let staging = Staging::new();
    staging.run_ok(&[]);
    let config = staging.staged("/etc/dnngov/config.toml");
    let admin = b"[control]\ntick_ms = 20\n";
    fs::write(&config, admin).unwrap();

    let output = staging.run_ok(&[]);
    assert_eq!(
        fs::read(&config).unwrap(),
        admin,
        "install overwrote a modified config"
    );
    let default = fs::read(workspace_root().join("dist/config.toml")).unwrap();
    let new = staging.staged("/etc/dnngov/config.toml.new");
    assert_eq!(fs::read(&new).unwrap(), default);
    assert_eq!(mode_of(&new), 0o644);
    assert!(output.contains("config.toml.new"), "not said:\n{output}");

    let output = staging.run_ok(&["--uninstall"]);
    assert_eq!(
        fs::read(&config).unwrap(),
        admin,
        "uninstall removed a modified config"
    );
    assert!(
        output.contains("kept /etc/dnngov/config.toml"),
        "not said:\n{output}"
    );
    let left: Vec<String> = staging.tree().into_keys().collect();
    assert_eq!(left, ["/etc", "/etc/dnngov", "/etc/dnngov/config.toml"]);
}

#[test]
fn config_that_was_there_before_is_not_taken_over() {
    let staging = Staging::new();
    let config = staging.staged("/etc/dnngov/config.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    let before = b"[agent]\nsysfs_root = \"/\"\n";
    fs::write(&config, before).unwrap();

    staging.run_ok(&[]);
    assert_eq!(fs::read(&config).unwrap(), before);
    assert!(staging.staged("/etc/dnngov/config.toml.new").is_file());
    assert!(!manifest_paths(&staging).contains(&"/etc/dnngov/config.toml".to_string()));

    staging.run_ok(&["--uninstall"]);
    assert_eq!(fs::read(&config).unwrap(), before);
    let left: Vec<String> = staging.tree().into_keys().collect();
    assert_eq!(left, ["/etc", "/etc/dnngov", "/etc/dnngov/config.toml"]);
}

#[test]
fn prefix_usr_puts_unit_and_rules_where_packages_do() {
    let staging = Staging::new();
    staging.run_ok(&["--prefix", "/usr"]);
    assert!(staging.staged("/usr/bin/dnngovd").is_file());
    assert!(staging
        .staged("/usr/lib/systemd/system/dnngovd.service")
        .is_file());
    assert!(staging
        .staged("/usr/lib/udev/rules.d/60-dnngov.rules")
        .is_file());
    let unit =
        fs::read_to_string(staging.staged("/usr/lib/systemd/system/dnngovd.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/dnngovd "), "{unit}");
    staging.run_ok(&["--prefix", "/usr", "--uninstall"]);
    assert_eq!(staging.tree(), BTreeMap::new());
}

#[test]
fn uninstall_without_an_install_fails_and_says_why() {
    let staging = Staging::new();
    let output = staging.run(&["--uninstall"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no manifest"), "{stderr}");
    assert!(staging.destdir.is_dir());
    assert_eq!(staging.tree(), BTreeMap::new());
}

#[test]
fn missing_build_outputs_fail_before_anything_is_installed() {
    let staging = Staging::new();
    fs::remove_file(staging.target.join("dnngovctl")).unwrap();
    let output = staging.run(&[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dnngovctl is missing"), "{stderr}");
    assert_eq!(staging.tree(), BTreeMap::new());
}

#[test]
fn script_parses_and_passes_shellcheck_where_installed() {
    let script = workspace_root().join("install.sh");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "bash -n install.sh");
    assert!(
        mode_of(&script) & 0o111 != 0,
        "install.sh is not executable"
    );

    // shellcheck is optional here: checked where it is installed, skipped with a word
    // where it is not.
    match Command::new("shellcheck").arg(&script).output() {
        Ok(output) => assert!(
            output.status.success(),
            "shellcheck install.sh:\n{}",
            String::from_utf8_lossy(&output.stdout)
        ),
        Err(_) => eprintln!("shellcheck not installed: skipped"),
    }
}

#[test]
fn unit_passes_systemd_analyze_verify_where_installed() {
    // systemd is optional here: checked where systemd-analyze exists, skipped with a
    // word where it does not. verify wants the Exec paths to be executables, so the
    // unit is pointed at stand-ins.
    let staging = Staging::new();
    let prefix = staging.destdir.join("prefix");
    let bin = prefix.join("bin");
    fs::create_dir_all(&bin).unwrap();
    write_mode(&bin.join("dnngovd"), b"#!/bin/sh\n", 0o755);
    write_mode(&bin.join("dnngovctl"), b"#!/bin/sh\n", 0o755);
    let unit = fs::read_to_string(workspace_root().join("systemd/dnngovd.service"))
        .unwrap()
        .replace("@PREFIX@", &prefix.display().to_string());
    let unit_path = staging.destdir.join("dnngovd.service");
    fs::write(&unit_path, unit).unwrap();

    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        Ok(output) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(output.status.success(), "systemd-analyze verify:\n{text}");
            // Unknown or misspelt settings are only warnings for verify.
            assert!(
                !text.contains("dnngovd.service:"),
                "systemd-analyze verify:\n{text}"
            );
        }
        Err(_) => eprintln!("systemd-analyze not installed: skipped"),
    }
}

/// A live install (not --destdir) in a private mount namespace over a copy of /etc, so
/// that its users and groups are real for useradd, getent and id, and vanish with the
/// namespace. systemctl and udevadm are stubs that log and succeed. Root and `unshare`
/// (util-linux) are needed; without them the test says so.
#[test]
fn live_install_creates_the_service_user_and_groups_upgrades_and_uninstall_removes_them() {
    if !dnngov_tests::is_root() {
        eprintln!("skipping: a live install creates users and groups, which needs root");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("skipping: unshare (util-linux) is not installed");
        return;
    }
    let staging = Staging::new();
    let root = staging.destdir.clone();
    let live_stubs = root.join("live-stubs");
    fs::create_dir(&live_stubs).unwrap();
    for name in ["systemctl", "udevadm", "cargo", "apt-get", "sudo"] {
        let script = format!(
            "#!/bin/sh\necho \"{name} $*\" >> '{}'\n",
            root.join("calls").display()
        );
        write_mode(&live_stubs.join(name), script.as_bytes(), 0o755);
    }
    // The checks run inside the namespace; each failure says what was wrong.
    let script = r#"
set -eu
fail() { echo "FAILED: $*"; exit 1; }
mount --make-rprivate /
cp -a /etc "$ROOT/etc"
mount --bind "$ROOT/etc" /etc
install_sh() {
    bash "$INSTALL" --no-build --target-dir "$TARGET" --prefix "$ROOT/prefix" \
        --unitdir "$ROOT/unit" --udevdir "$ROOT/udev" "$@"
}
manifest=$ROOT/prefix/share/dnngov/install-manifest
# What existed before (on a machine where dnngov was installed already, say) is not ours.
had() { getent "$1" "$2" >/dev/null && echo yes || echo no; }
had_group=$(had group dnngov)
had_admin=$(had group dnngov-admin)
had_user=$(had passwd dnngovd)

install_sh
getent passwd dnngovd >/dev/null || fail "no user dnngovd"
shell=$(getent passwd dnngovd | cut -d: -f7)
case "$shell" in */nologin | /bin/false) ;; *) fail "dnngovd has the shell $shell" ;; esac
[ "$(getent passwd dnngovd | cut -d: -f6)" = /nonexistent ] || [ "$had_user" = yes ] ||
    fail "dnngovd has a home: $(getent passwd dnngovd)"
[ ! -e /nonexistent ] || fail "/nonexistent was created"
groups=" $(id -nG dnngovd) "
for g in dnngov dnngov-admin; do
    case "$groups" in *" $g "*) ;; *) fail "dnngovd is not in $g: $groups" ;; esac
done
[ "$had_user" = yes ] || grep -qx "user dnngovd" "$manifest" || fail "user not in the manifest"
[ "$had_admin" = yes ] || grep -qx "group dnngov-admin" "$manifest" || fail "dnngov-admin not in the manifest"
[ "$had_group" = yes ] || grep -qx "group dnngov" "$manifest" || fail "dnngov not in the manifest"
grep -qx "User=dnngovd" "$ROOT/unit/dnngovd.service" || fail "the unit does not run as dnngovd"
echo "installed: $(getent passwd dnngovd); groups:$groups"

# Again: nothing new, nothing lost.
cp "$manifest" "$ROOT/manifest.first"
out=$(install_sh)
echo "$out" | grep -q "user dnngovd exists" || fail "second run: $out"
cmp -s "$manifest" "$ROOT/manifest.first" || fail "the manifest changed: $(diff "$ROOT/manifest.first" "$manifest")"

# An installation of the version whose service ran as root: group dnngov only.
if [ "$had_user" = no ] && [ "$had_admin" = no ]; then
    userdel dnngovd
    groupdel dnngov-admin
    grep -v -e "^user " -e "^group dnngov-admin" "$ROOT/manifest.first" >"$manifest"
    out=$(install_sh)
    echo "$out" | grep -q "created the system user dnngovd" || fail "upgrade: $out"
    echo "$out" | grep -q "created the system group dnngov-admin" || fail "upgrade: $out"
    cmp -s "$manifest" "$ROOT/manifest.first" || fail "upgrade manifest: $(diff "$ROOT/manifest.first" "$manifest")"
    echo "upgraded from a root installation"
fi
# A dnngovd user an administrator made, in neither group: added to both.
if [ "$had_user" = no ]; then
    gpasswd -d dnngovd dnngov-admin >/dev/null
    out=$(install_sh)
    echo "$out" | grep -q "added user dnngovd to group dnngov-admin" || fail "membership: $out"
fi

install_sh --uninstall
[ "$had_user" = yes ] || ! getent passwd dnngovd >/dev/null || fail "user dnngovd left"
[ "$had_admin" = yes ] || ! getent group dnngov-admin >/dev/null || fail "group dnngov-admin left"
[ "$had_group" = yes ] || ! getent group dnngov >/dev/null || fail "group dnngov left"
[ "$had_user" = yes ] || ! getent group dnngovd >/dev/null || fail "group dnngovd left"
echo "uninstalled: no dnngovd, dnngov-admin or dnngov left that the install made"
"#;
    let path = format!(
        "{}:{}",
        live_stubs.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin:/usr/sbin:/sbin".into())
    );
    let output = Command::new("unshare")
        .args(["--mount", "--", "bash", "-c", script])
        .env("PATH", path)
        .env("ROOT", &root)
        .env("INSTALL", workspace_root().join("install.sh"))
        .env("TARGET", &staging.target)
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(output.status.success(), "{text}");
    assert!(text.contains("uninstalled: no dnngovd"), "{text}");
    // Nothing of it outside the namespace.
    let etc = fs::read_to_string("/etc/passwd").unwrap();
    let copied = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(
        etc.contains("\ndnngovd:") || etc.starts_with("dnngovd:"),
        copied.contains("\ndnngovd:") || copied.starts_with("dnngovd:"),
        "the accounts stayed inside the namespace"
    );
}
