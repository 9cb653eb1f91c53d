//! docs/app-integration.md's examples, kept honest.
//!
//! The fenced ```c and ```python blocks whose first line is a `// doc-test` or `# doc-test`
//! marker are complete programs. Each is written to a temporary folder (the C one compiled
//! with `cc -Wall -Werror` against client/include/dnngov.h and libdnngov_client.so), run
//! against an in-process registry through `DNNGOV_SOCKET`, and must exit 0 after
//! registering under the name its marker gives (`app=NAME`) and completing the number of
//! inferences it gives (`inferences=N`), as the agent reads them from the app's shared
//! page. The Rust blocks must be, in order, the crate-level example of client/src/lib.rs
//! and the module-level example of client/src/profile.rs, which
//! `cargo test -p dnngov-client --doc` compiles.

use dnngov_agent::registry::{AppHandle, Registry, RegistryConfig, RegistryEvent};
use dnngov_tests::{client_library, compile_c, python3, workspace_root};
use governor_proto::MAX_APPS;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOC: &str = "docs/app-integration.md";

/// One marked example: its code and what its marker says it does.
struct Example {
    code: String,
    app: String,
    inferences: u64,
}

/// Every fenced block of `language` in `text`, in order, without its fences.
fn fenced_blocks(text: &str, language: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.trim_end() == format!("```{language}") => current = Some(Vec::new()),
            None => {}
            Some(lines) if line.trim_end() == "```" => {
                blocks.push(lines.join("\n") + "\n");
                current = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    assert!(
        current.is_none(),
        "{DOC}: a ```{language} block is not closed"
    );
    blocks
}

/// The blocks of `language` marked `<comment> doc-test app=NAME inferences=N`.
fn marked_examples(language: &str, comment: &str) -> Vec<Example> {
    let text = std::fs::read_to_string(workspace_root().join(DOC)).expect("the doc is readable");
    let marker = format!("{comment} doc-test");
    let mut examples = Vec::new();
    for code in fenced_blocks(&text, language) {
        let first = code.lines().next().unwrap_or_default();
        let Some(settings) = first.strip_prefix(&marker) else {
            continue;
        };
        let value = |key: &str| {
            settings
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("{DOC}: the marker `{first}` lacks {key}="))
                .to_string()
        };
        examples.push(Example {
            app: value("app"),
            inferences: value("inferences")
                .parse()
                .unwrap_or_else(|e| panic!("{DOC}: `{first}`: inferences: {e}")),
            code,
        });
    }
    assert!(
        !examples.is_empty(),
        "{DOC} has no ```{language} block marked `{marker}`"
    );
    examples
}

fn start_registry(dir: &Path) -> Registry {
    Registry::start(RegistryConfig {
        socket_path: dir.join("agent.sock"),
        group: None,
        max_apps: MAX_APPS,
    })
    .expect("the registry starts")
}

/// Runs `command` to its end (at most 60 s) with the agent's socket in `DNNGOV_SOCKET`,
/// and fails the test, showing its output, unless it exits 0.
fn run_to_completion(what: &str, command: &mut Command, socket: &Path) {
    let mut child = command
        .env("DNNGOV_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for the example").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("the example's output");
    assert!(
        output.status.success(),
        "{what} exited with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The app that joined under `name`, from the registry's events.
fn joined(registry: &Registry, name: &str) -> Arc<AppHandle> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match registry.events().recv_deadline(deadline) {
            Ok(RegistryEvent::Joined(handle)) if handle.name == name => return handle,
            Ok(RegistryEvent::Joined(handle)) => {
                panic!("an app joined as {:?}, not {name:?}", handle.name)
            }
            Ok(_) => continue,
            Err(_) => panic!("no app joined as {name:?}"),
        }
    }
}

/// What the agent saw of a finished example: it registered, ran every inference and
/// acknowledged a sub-network of its library, and left when it exited.
fn check_served(registry: &Registry, example: &Example) {
    let handle = joined(registry, &example.app);
    let report = handle.report();
    assert_eq!(
        report.inferences_completed, example.inferences,
        "{}: inferences the agent counted",
        example.app
    );
    let active = report
        .active_subnet
        .unwrap_or_else(|| panic!("{} never acknowledged a sub-network", example.app));
    assert!(
        handle.subnets.iter().any(|s| s.id == active),
        "{} acknowledged {active}, which is not in its library",
        example.app
    );
    assert!(report.last_latency_ns > 0, "{}: a latency", example.app);
    assert_eq!(
        report.inference_begin_ns, None,
        "{}: none in flight",
        example.app
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match registry.events().recv_deadline(deadline) {
            Ok(RegistryEvent::Left { app_id, .. }) if app_id == handle.app_id => break,
            Ok(_) => continue,
            Err(_) => panic!("{} did not leave the registry", example.app),
        }
    }
}

#[test]
fn c_examples_compile_register_and_run_their_inferences() {
    for (index, example) in marked_examples("c", "//").iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let registry = start_registry(dir.path());
        let source = dir.path().join(format!("example_{index}.c"));
        std::fs::write(&source, &example.code).unwrap();
        let binary: PathBuf = dir.path().join(format!("example_{index}"));
        compile_c(&source, &binary, &[]);
        run_to_completion(
            &format!("the C example {}", example.app),
            &mut Command::new(&binary),
            registry.socket_path(),
        );
        check_served(&registry, example);
    }
}

#[test]
fn python_examples_register_and_run_their_inferences() {
    for (index, example) in marked_examples("python", "#").iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let registry = start_registry(dir.path());
        let script = dir.path().join(format!("example_{index}.py"));
        std::fs::write(&script, &example.code).unwrap();
        let mut command = Command::new(python3());
        command
            .arg(&script)
            .env("PYTHONPATH", workspace_root().join("client/python"))
            .env("DNNGOV_LIB", client_library());
        run_to_completion(
            &format!("the Python example {}", example.app),
            &mut command,
            registry.socket_path(),
        );
        check_served(&registry, example);
    }
}

/// The first example in the `//!` documentation of `file` (crate- or module-level), as
/// rustdoc shows it (hidden `# ` lines left out).
fn module_example(file: &str) -> String {
    let source = std::fs::read_to_string(workspace_root().join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let docs: Vec<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    let start = docs
        .iter()
        .position(|line| line.starts_with("```"))
        .unwrap_or_else(|| panic!("{file} has no example in its `//!` documentation"));
    let end = start
        + 1
        + docs[start + 1..]
            .iter()
            .position(|line| line.starts_with("```"))
            .unwrap_or_else(|| panic!("{file}: the example is not closed"));
    docs[start + 1..end]
        .iter()
        .filter(|line| !line.starts_with("# "))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn rust_examples_are_the_client_crates_compiled_examples() {
    let text = std::fs::read_to_string(workspace_root().join(DOC)).unwrap();
    let blocks = fenced_blocks(&text, "rust");
    let sources = ["client/src/lib.rs", "client/src/profile.rs"];
    assert_eq!(
        blocks.len(),
        sources.len(),
        "{DOC} has one ```rust block per example of {sources:?}"
    );
    for (block, file) in blocks.iter().zip(sources) {
        assert_eq!(
            *block,
            module_example(file),
            "a Rust example of {DOC} and the example of {file} differ"
        );
    }
}
