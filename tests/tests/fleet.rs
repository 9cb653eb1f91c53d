//! What a fleet deploys: the Grafana dashboard queries only metrics and labels that a
//! real dnngovd exports, and the Kubernetes manifests pass the API schema (strict) and
//! agree with the agent's configuration and the Prometheus scrape job.
//!
//! Schema validation uses `kubernetes-validate` (PyPI, pinned below) in a virtual
//! environment under target/, made on first use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dnngov_agent::platform::fixture;
use dnngov_tests::{
    built_binary, free_local_address, http_get, python3, workspace_root, Daemon, TestApp,
};

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Names made of `[a-z0-9_]` that start with `prefix`, wherever they occur in `text`.
fn words_starting(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Label names a PromQL expression or legend uses: `by (a, b)`, `{a=~"..."}` matchers,
/// `{{a}}` in legends and `label_values(..., a)`.
fn labels_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| s.to_string())
    };
    for part in text.split("by (").skip(1) {
        let inside = part.split(')').next().unwrap_or("");
        out.extend(inside.split(',').filter_map(ident));
    }
    for part in text.split('{').skip(1) {
        let inside = part.split('}').next().unwrap_or("");
        for matcher in inside.split(',') {
            if let Some((name, _)) = matcher.split_once(['=', '!']) {
                out.extend(ident(name));
            } else {
                out.extend(ident(matcher));
            }
        }
    }
    if let Some(part) = text.split("label_values(").nth(1) {
        if let Some(last) = part.rsplit(',').next() {
            out.extend(ident(last.trim_end_matches(')')));
        }
    }
    out
}

#[test]
fn the_dashboard_queries_only_what_a_running_dnngovd_exports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("board");
    fixture::xavier_nx(&root).unwrap();
    let metrics_addr = free_local_address();
    let daemon = Daemon::start_with(
        dir.path(),
        &root,
        &format!("[metrics]\nlisten = \"{metrics_addr}\"\n"),
    );
    let mut command = Command::new(built_binary("examples/simulated_app"));
    command
        .args(["detector", "30", "15", "60"])
        .env("DNNGOV_SOCKET", dir.path().join("agent.sock"));
    let mut app = TestApp::spawn(&mut command);
    assert!(app.line().contains("registered with dnngovd"));
    // Every family has samples once the app has finished inferences under a plan.
    daemon.wait_for("the app's inferences and plan in the metrics", || {
        let text = http_get(metrics_addr, "/metrics");
        text.contains("dnngov_inferences_total{app=\"detector\"")
            && text.contains("dnngov_subnet{app=\"detector\"")
            && text.contains("dnngov_power_watts{")
            && text.contains("dnngov_energy_joules_total{")
    });
    let exported = http_get(metrics_addr, "/metrics");
    app.kill();
    daemon.stop();

    let samples: Vec<&str> = exported
        .lines()
        .filter(|l| l.starts_with("dnngov_"))
        .collect();
    let names: BTreeSet<String> = samples
        .iter()
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let exported_labels: BTreeSet<String> = samples
        .iter()
        .filter_map(|l| l.split_once('{').map(|(_, rest)| rest))
        .flat_map(|rest| {
            rest.split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();

    let path = workspace_root().join("dist/grafana/dnngov.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids repeat"
        );
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{} is wider than the dashboard",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_string());
            queries.push(target["legendFormat"].as_str().unwrap().to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["query"]["query"].as_str() {
            queries.push(q.to_string());
        }
    }
    assert!(queries.len() > 10, "{queries:?}");
    // What Prometheus adds to every series, and Grafana's own variables.
    let from_prometheus: BTreeSet<&str> = ["instance", "job"].into();
    for q in &queries {
        for metric in words_starting(q, "dnngov_") {
            assert!(
                names.contains(&metric),
                "the dashboard queries {metric}, which dnngovd does not export:\n{q}\nexported: {names:?}"
            );
        }
        for label in labels_used(q) {
            if label.starts_with("__") || from_prometheus.contains(label.as_str()) {
                continue;
            }
            assert!(
                exported_labels.contains(&label),
                "the dashboard uses the label {label}, which no dnngovd metric has:\n{q}\nexported: {exported_labels:?}"
            );
        }
    }
    // And it covers what the fleet needs: latency against deadline, misses, sub-network,
    // frequency, power and energy.
    let all = queries.join("\n");
    for needed in [
        "dnngov_inference_latency_seconds_bucket",
        "dnngov_deadline_seconds",
        "dnngov_deadline_misses_total",
        "dnngov_subnet",
        "dnngov_domain_frequency_hertz",
        "dnngov_power_watts",
        "dnngov_energy_joules_total",
    ] {
        assert!(all.contains(needed), "no panel shows {needed}");
    }
}

/// A virtual environment with the pinned validator, made once under target/.
fn validator() -> PathBuf {
    let venv = workspace_root().join("target/kubernetes-validate-venv");
    let bin = venv.join("bin/kubernetes-validate");
    if !bin.exists() {
        let made = Command::new(python3())
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .expect("python3 runs");
        assert!(made.status.success(), "python3 -m venv: {made:?}");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", KUBERNETES_VALIDATE])
            .output()
            .expect("pip runs");
        assert!(
            installed.status.success(),
            "pip install {KUBERNETES_VALIDATE}: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
    }
    bin
}

fn validate(file: &Path) -> Output {
    Command::new(validator())
        .arg("--strict")
        .arg(file)
        .output()
        .expect("kubernetes-validate runs")
}

/// The manifest as JSON, through the validator's own YAML reader.
fn documents(file: &Path) -> Vec<serde_json::Value> {
    let python = validator().with_file_name("python");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1]))]))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_kubernetes_manifests_pass_the_schema_and_agree_with_the_agent() {
    let manifest = workspace_root().join("dist/kubernetes/dnngovd.yaml");
    let out = validate(&manifest);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for resource in [
        "namespace/dnngov",
        "configmap/dnngovd-config",
        "daemonset/dnngovd",
    ] {
        assert!(
            text.contains(&format!("passed for resource {resource}")),
            "{text}"
        );
    }
    // The validator is strict enough to catch a misspelt field.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("hostPID: true", "hostPid: true"),
    )
    .unwrap();
    assert!(!validate(&broken).status.success());

    let docs = documents(&manifest);
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let daemon_set = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    // The configuration the pod runs with is one dnngovd accepts.
    let config_text = config_map["data"]["config.toml"].as_str().unwrap();
    let config = dnngov_agent::config::Config::parse(config_text, "the ConfigMap")
        .unwrap_or_else(|e| panic!("the ConfigMap's config.toml: {e:#}"));
    let port = config.metrics.listen.expect("metrics are exported").port();
    let pod = &daemon_set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(container["ports"][0]["name"], "metrics");
    // Only the capabilities it needs, never privileged.
    let security = &container["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON", "SYS_PTRACE"])
    );
    assert!(security["privileged"].is_null());
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(pod["hostPID"], true);
    // The host's /sys where the configuration says the tree is, and the sockets where
    // the node's apps look for them.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mounted = |path: &str| mounts.iter().any(|m| m["mountPath"] == path);
    assert!(mounted(&format!(
        "{}/sys",
        config.agent.sysfs_root.display()
    )));
    assert!(mounted(
        config.agent.socket.parent().unwrap().to_str().unwrap()
    ));
    // The clocks a crashed agent left are put back before it starts again.
    let init = &pod["initContainers"][0];
    assert_eq!(init["command"][0], "dnngovctl");
    assert_eq!(init["command"][1], "restore");

    // The scrape job keeps the DaemonSet's pods and their metrics port.
    let scrape = documents(&workspace_root().join("dist/kubernetes/prometheus-scrape.yml"));
    let job = &scrape[0]["scrape_configs"][0];
    let keeps: Vec<(String, String)> = job["relabel_configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "keep")
        .map(|r| {
            (
                r["source_labels"][0].as_str().unwrap().to_string(),
                r["regex"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let app_label = daemon_set["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(keeps.contains(&(
        "__meta_kubernetes_pod_label_app_kubernetes_io_name".into(),
        app_label
    )));
    assert!(keeps.contains(&(
        "__meta_kubernetes_pod_container_port_name".into(),
        "metrics".into()
    )));
    assert_eq!(
        job["kubernetes_sd_configs"][0]["namespaces"]["names"][0],
        daemon_set["metadata"]["namespace"]
    );
}
