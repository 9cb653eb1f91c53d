//! The `dnngov-supernet` binary end to end on the tiny configuration: train, inspect,
//! evaluate, train a fixed baseline, compare; and a clear failure on a missing file.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dnngov-supernet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run dnngov-supernet");
    out
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_eval_train_fixed_and_compare_on_the_tiny_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let fixed = dir.path().join("fixed");
    let short = ["--tiny", "--epochs", "1", "--train-images", "320"];

    let mut args = vec!["train", "--out", s(&weights)];
    args.extend(short);
    let text = ok(&args);
    assert!(text.contains("trained"), "{text}");

    let info = json(&["info", "--weights", s(&weights), "--json"]);
    let candidates = info["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 2);
    assert!(candidates.iter().all(|c| c["top1"].is_number()));
    let smallest = candidates[0]["name"].as_str().unwrap().to_string();

    let eval = json(&[
        "eval",
        "--weights",
        s(&weights),
        "--json",
        "--runs",
        "3",
        "--switches",
        "50",
    ]);
    let rows = eval["candidates"].as_array().unwrap();
    assert_eq!(rows.len(), candidates.len());
    for r in rows {
        assert!(r["latency"]["median_us"].as_f64().unwrap() > 0.0);
        assert_eq!(
            r["top1"], r["stored_top1"],
            "evaluation disagrees with training"
        );
    }
    assert!(eval["switch"]["median_us"].as_f64().unwrap() < 1_000.0);

    let mut args = vec!["train-fixed", "--out", s(&fixed), "--subnets", &smallest];
    args.extend(short);
    ok(&args);
    assert!(fixed.join(format!("fixed-{smallest}.safetensors")).exists());

    let cmp = json(&[
        "compare",
        "--weights",
        s(&weights),
        "--fixed",
        s(&fixed),
        "--json",
    ]);
    let rows = cmp.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], smallest.as_str());
    assert_eq!(rows[0]["macs"], candidates[0]["macs"]);
}

#[test]
fn eval_of_a_missing_file_fails_naming_it() {
    let out = run(&["eval", "--weights", "/nonexistent/none.safetensors"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/none.safetensors"), "{err}");
}
