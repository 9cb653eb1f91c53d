//! tests/python/protocol_client.py, a client written in plain Python from docs/protocol.md
//! alone, against a real dnngovd: it registers, reads its sub-network from the page,
//! reports inferences through it, meets the documented errors, replaces its target and
//! leaves. If the code and the document part, this fails.

use dnngov_agent::platform::fixture;
use dnngov_tests::{python3, workspace_root, Daemon, TestApp};
use serde_json::Value;
use std::process::Command;

#[test]
fn a_client_written_from_the_protocol_document_works() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let daemon = Daemon::start(dir.path(), &root);
    let mut command = Command::new(python3());
    command
        .arg(workspace_root().join("tests/python/protocol_client.py"))
        .arg(daemon.app_socket())
        .arg("10");
    let mut client = TestApp::spawn(&mut command);
    let line = client.line();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"registered"), "{line}");
    let app_id: u64 = words[1].parse().unwrap();
    let initial: u64 = words[2].parse().unwrap();
    assert_eq!(initial, 21, "the default: the most accurate sub-network");
    for expected in ["page ok", "errors ok"] {
        assert_eq!(client.line(), expected);
    }
    // The sub-network it ran its last inference on, the one it last acknowledged.
    let done = client.line();
    let ran: u64 = match done.split_whitespace().collect::<Vec<_>>()[..] {
        ["done", "10", "1", subnet] => subnet.parse().unwrap(),
        _ => panic!("{done}"),
    };
    assert!(ran == 20 || ran == 21, "{done}");
    assert_eq!(client.line(), format!("target {app_id}"));

    let app = |daemon: &Daemon| -> Value {
        let apps = daemon.ctl(&["apps"]).unwrap();
        apps.as_array()
            .unwrap()
            .iter()
            .find(|a| a["app_id"] == app_id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    daemon.wait_for("the inferences in the agent", || {
        app(&daemon)["inferences"] == 10
    });
    let shown = app(&daemon);
    assert_eq!(shown["deadline_misses"], 1, "{shown}");
    // What the app acknowledged on its page. The agent may ask for another sub-network
    // since (the new target is a new plan); the app switches at its next inference.
    assert_eq!(shown["active_subnet"], ran, "{shown}");
    assert!(
        shown["requested_subnet"] == 20 || shown["requested_subnet"] == 21,
        "{shown}"
    );
    assert_eq!(shown["page_problem"], Value::Null, "{shown}");
    assert!(shown["last_latency_ms"].as_f64().unwrap() >= 2.0, "{shown}");
    // set_target replaced the whole target.
    assert_eq!(shown["deadline_ms"], 45.0, "{shown}");
    assert_eq!(shown["priority"], 0, "{shown}");
    assert_eq!(shown["accuracy_floor_pct"], Value::Null, "{shown}");
    daemon.wait_for("the app counted from its page", || {
        let status = daemon.ctl(&["status"]).unwrap();
        status["telemetry"].as_array().unwrap().iter().any(|t| {
            t["what"] == format!("inferences of app {app_id}") && t["source"] == "shared-memory"
        })
    });

    // Leaving is closing the socket.
    client.send_line("bye");
    client.finish();
    daemon.wait_for("the client to leave", || app(&daemon) == Value::Null);
    let log = daemon.log();
    assert!(
        log.contains(&format!("app {app_id} \"python-protocol-client\""))
            && log.contains("left: HungUp"),
        "{log}"
    );
    // A client without the shim has no markers to probe: nothing in the log about them.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && !l.contains("refused a message"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    daemon.stop();
}
