//! The parts of `dnngov-eval` that are not process management: what the apps measured
//! (the client shim's per-inference traces, `DNNGOV_TRACE_DIR`), summaries and the
//! side-by-side report, the board's clocks and power as a time series, what must be put
//! back, and the tools that would fight over the clocks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::platform::{Domain, Plan, Platform, Sysfs};

/// One finished inference, as the app's shim recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Inference {
    /// `CLOCK_MONOTONIC` at its end, ns.
    pub end_ns: u64,
    pub latency_ns: u64,
    /// 0: none.
    pub deadline_ns: u64,
    pub subnet: u32,
    pub accuracy_pct: f64,
}

/// Parses a trace file (`end_ns,latency_ns,deadline_ns,subnet,accuracy_pct`, a header
/// line first). A line cut short by a kill at the wrong moment is skipped, nothing else.
pub fn parse_trace(text: &str) -> Vec<Inference> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(',');
            Some(Inference {
                end_ns: f.next()?.parse().ok()?,
                latency_ns: f.next()?.parse().ok()?,
                deadline_ns: f.next()?.parse().ok()?,
                subnet: f.next()?.parse().ok()?,
                accuracy_pct: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// The traces of one run: app name -> inferences, from `<dir>/<app>-<pid>.csv` (an app
/// that restarted has several files; they are merged in time order).
pub fn read_traces(dir: &Path) -> Result<BTreeMap<String, Vec<Inference>>> {
    let mut out: BTreeMap<String, Vec<Inference>> = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".csv"))
        else {
            continue;
        };
        let app = stem.rsplit_once('-').map_or(stem, |(app, _pid)| app);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        out.entry(app.to_string())
            .or_default()
            .extend(parse_trace(&text));
    }
    for v in out.values_mut() {
        v.sort_by_key(|i| i.end_ns);
    }
    Ok(out)
}

/// What one app did in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppSummary {
    pub frames: u64,
    pub latency_mean_ms: f64,
    pub latency_p99_ms: f64,
    pub misses: u64,
    pub miss_pct: f64,
    /// Mean declared accuracy of the sub-networks that ran, per frame.
    pub accuracy_pct: f64,
    /// Sub-network changes between consecutive frames.
    pub switches: u64,
}

impl AppSummary {
    pub fn of(inferences: &[Inference]) -> AppSummary {
        let n = inferences.len();
        if n == 0 {
            return AppSummary::default();
        }
        let mut ms: Vec<f64> = inferences
            .iter()
            .map(|i| i.latency_ns as f64 / 1e6)
            .collect();
        let mean = ms.iter().sum::<f64>() / n as f64;
        ms.sort_by(f64::total_cmp);
        let p99 = ms[((n - 1) as f64 * 0.99).round() as usize];
        let misses = inferences
            .iter()
            .filter(|i| i.deadline_ns != 0 && i.latency_ns > i.deadline_ns)
            .count() as u64;
        AppSummary {
            frames: n as u64,
            latency_mean_ms: mean,
            latency_p99_ms: p99,
            misses,
            miss_pct: 100.0 * misses as f64 / n as f64,
            accuracy_pct: inferences.iter().map(|i| i.accuracy_pct).sum::<f64>() / n as f64,
            switches: inferences
                .windows(2)
                .filter(|w| w[0].subnet != w[1].subnet)
                .count() as u64,
        }
    }
}

/// The board's energy over one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnergySummary {
    pub energy_j: f64,
    pub mean_power_w: f64,
    pub seconds: f64,
    /// Where the figure comes from, in words.
    pub source: String,
}

/// One run: the governor's name, its apps, its energy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub governor: String,
    pub apps: BTreeMap<String, AppSummary>,
    pub energy: EnergySummary,
    /// With a settling time left out of `apps`: every app's misses and frames over the
    /// whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_run: Option<(u64, u64)>,
}

/// The side-by-side table of two or more runs.
pub fn report(board: &str, runs: &[RunSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "board: {board}");
    let _ = writeln!(
        out,
        "latencies: measured by each app's own process (client shim trace), not computed by the board"
    );
    let _ = writeln!(
        out,
        "\n{:<10} {:<14} {:>7} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8}",
        "governor",
        "app",
        "frames",
        "mean ms",
        "p99 ms",
        "misses",
        "miss %",
        "accuracy",
        "switches"
    );
    let apps: Vec<&String> = {
        let mut names: Vec<&String> = runs.iter().flat_map(|r| r.apps.keys()).collect();
        names.sort();
        names.dedup();
        names
    };
    for app in &apps {
        for r in runs {
            let Some(s) = r.apps.get(*app).filter(|s| s.frames > 0) else {
                let _ = writeln!(
                    out,
                    "{:<10} {:<14} (no inference recorded)",
                    r.governor, app
                );
                continue;
            };
            let _ = writeln!(
                out,
                "{:<10} {:<14} {:>7} {:>10.2} {:>10.2} {:>8} {:>8.1} {:>8.2}% {:>8}",
                r.governor,
                app,
                s.frames,
                s.latency_mean_ms,
                s.latency_p99_ms,
                s.misses,
                s.miss_pct,
                s.accuracy_pct,
                s.switches
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:>10} {:>8} {:>8}  source",
        "governor", "energy J", "mean W", "seconds"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<10} {:>10.1} {:>8.2} {:>8.1}  {}",
            r.governor, r.energy.energy_j, r.energy.mean_power_w, r.energy.seconds, r.energy.source
        );
    }
    if let [a, b, ..] = runs {
        if a.energy.energy_j > 0.0 && b.energy.energy_j > 0.0 {
            let ratio = a.energy.energy_j / b.energy.energy_j;
            let _ = writeln!(
                out,
                "\n{} used {:.1} % {} energy than {}.",
                a.governor,
                (ratio - 1.0).abs() * 100.0,
                if ratio > 1.0 { "more" } else { "less" },
                b.governor
            );
        }
        let misses = |r: &RunSummary| {
            let frames: u64 = r.apps.values().map(|s| s.frames).sum();
            let missed: u64 = r.apps.values().map(|s| s.misses).sum();
            (missed, frames)
        };
        let (ma, fa) = misses(a);
        let (mb, fb) = misses(b);
        let _ = writeln!(
            out,
            "{} missed {ma} of {fa} deadlines, {} {mb} of {fb}.",
            a.governor, b.governor
        );
        if let (Some((wa, fa)), Some((wb, fb))) = (a.whole_run, b.whole_run) {
            let _ = writeln!(
                out,
                "Over the whole runs, settling included: {} missed {wa} of {fa}, {} {wb} of {fb}.",
                a.governor, b.governor
            );
        }
    }
    out
}

/// A governable domain's files that a run may change and must put back.
pub fn knob_files(domain: &Domain) -> Vec<PathBuf> {
    let k = &domain.knobs;
    [k.governor, k.min, k.max, k.lock]
        .into_iter()
        .flatten()
        .map(|f| domain.file(f))
        .collect()
}

/// The contents of every domain's governor, limit and lock files, root-relative.
pub fn snapshot_knobs(sysfs: &Sysfs, plan: &Plan) -> BTreeMap<PathBuf, String> {
    plan.domains
        .iter()
        .flat_map(knob_files)
        .filter_map(|rel| {
            let text = sysfs.read(&rel).ok()?;
            Some((rel, text))
        })
        .collect()
}

/// The files whose contents differ between two snapshots, with both values.
pub fn knob_changes(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
) -> Vec<String> {
    before
        .iter()
        .filter_map(|(path, was)| match after.get(path) {
            Some(now) if now == was => None,
            Some(now) => Some(format!("{}: {was:?} -> {now:?}", path.display())),
            None => Some(format!("{}: {was:?} -> unreadable", path.display())),
        })
        .collect()
}

/// Programs that set CPU or GPU clocks themselves: a governor comparison with one of them
/// running measures the fight, not the governors.
const CLOCK_HOLDERS: [(&str, &str); 6] = [
    (
        "power-profiles-daemon",
        "systemctl stop power-profiles-daemon",
    ),
    ("tuned", "systemctl stop tuned"),
    ("auto-cpufreq", "systemctl stop auto-cpufreq"),
    ("dnngovd", "systemctl stop dnngovd"),
    (
        "jetson_clocks",
        "wait for it to finish, or stop the unit that runs it",
    ),
    ("nvpmodel", "wait for it to finish"),
];

/// Why the clocks are not free to compare governors on: tools running (from
/// `proc_root`), domains pinned with min = max (what `jetson_clocks` leaves). Empty when
/// they are free.
pub fn clock_conflicts(proc_root: &Path, platform: &Platform, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(proc_root) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
                continue;
            };
            let comm = comm.trim();
            // `comm` holds 15 bytes at most: compare on that prefix.
            if let Some((tool, how)) = CLOCK_HOLDERS
                .iter()
                .find(|(tool, _)| comm == &tool[..tool.len().min(15)])
            {
                out.push(format!("{tool} is running (pid {pid}): {how}"));
            }
        }
    }
    for d in &plan.domains {
        let (Some(min), Some(max)) = (d.knobs.min, d.knobs.max) else {
            continue;
        };
        let read = |f: &str| {
            platform
                .sysfs
                .read_freq(d.file(f), d.knobs.unit)
                .ok()
                .map(|hz| hz.0)
        };
        if let (Some(lo), Some(hi)) = (read(min), read(max)) {
            if lo == hi && d.frequencies.lowest() < d.frequencies.highest() {
                out.push(format!(
                    "{} is pinned at {} MHz (min = max, as jetson_clocks leaves it): run `jetson_clocks --restore` or put its limits back",
                    d.id,
                    lo / 1_000_000
                ));
            }
        }
    }
    out
}

/// One row of the time series: seconds since the run started, each domain's clock in
/// MHz (in plan order; NaN when unreadable), the board's power in W (NaN without a
/// reading).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub t_s: f64,
    pub mhz: Vec<f64>,
    pub power_w: f64,
}

/// The CSV of one or more runs' samples.
pub fn series_csv(domains: &[String], runs: &[(String, Vec<Sample>)]) -> String {
    let mut out = String::from("governor,t_s");
    for d in domains {
        let _ = write!(out, ",{}_mhz", d.replace([' ', ','], "_"));
    }
    out.push_str(",power_w\n");
    for (governor, samples) in runs {
        for s in samples {
            let _ = write!(out, "{governor},{:.3}", s.t_s);
            for m in &s.mhz {
                let _ = write!(out, ",{m:.1}");
            }
            let _ = writeln!(out, ",{:.3}", s.power_w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inference(latency_ms: f64, deadline_ms: f64, subnet: u32) -> Inference {
        Inference {
            end_ns: 0,
            latency_ns: (latency_ms * 1e6) as u64,
            deadline_ns: (deadline_ms * 1e6) as u64,
            subnet,
            accuracy_pct: 70.0 + subnet as f64,
        }
    }

    #[test]
    fn trace_lines_cut_short_are_skipped_and_the_rest_kept() {
        let text = "end_ns,latency_ns,deadline_ns,subnet,accuracy_pct\n\
                    100,5000000,10000000,2,75.5\n\
                    200,12000000,10000000,1,74\n\
                    300,40";
        let t = parse_trace(text);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].latency_ns, 12_000_000);
        assert_eq!(t[0].accuracy_pct, 75.5);
    }

    #[test]
    fn summary_counts_misses_switches_and_the_p99() {
        let mut v: Vec<Inference> = (0..98).map(|_| inference(10.0, 20.0, 1)).collect();
        v.push(inference(30.0, 20.0, 2));
        v.push(inference(30.0, 20.0, 2));
        let s = AppSummary::of(&v);
        assert_eq!(s.frames, 100);
        assert_eq!(s.misses, 2);
        assert!((s.miss_pct - 2.0).abs() < 1e-9);
        assert!((s.latency_mean_ms - 10.4).abs() < 1e-9);
        // The 99th percentile of 100 is the 99th value: one slow frame of 100 is not it,
        // two are.
        assert_eq!(s.latency_p99_ms, 30.0);
        assert_eq!(AppSummary::of(&v[1..]).latency_p99_ms, 30.0);
        assert_eq!(AppSummary::of(&v[..99]).latency_p99_ms, 10.0);
        assert_eq!(s.switches, 1);
        assert!((s.accuracy_pct - 71.02).abs() < 1e-9);
        // No deadline: never a miss.
        assert_eq!(AppSummary::of(&[inference(30.0, 0.0, 0)]).misses, 0);
    }

    #[test]
    fn report_puts_runs_side_by_side_and_compares_energy() {
        let run = |g: &str, j: f64, misses: u64| RunSummary {
            governor: g.into(),
            apps: [(
                "mlp".to_string(),
                AppSummary {
                    frames: 100,
                    misses,
                    ..AppSummary::default()
                },
            )]
            .into(),
            energy: EnergySummary {
                energy_j: j,
                mean_power_w: j / 10.0,
                seconds: 10.0,
                source: "INA3221 VDD_IN".into(),
            },
            whole_run: None,
        };
        let text = report(
            "test",
            &[run("dnngovd", 80.0, 1), run("schedutil", 100.0, 5)],
        );
        assert!(
            text.contains("dnngovd used 20.0 % less energy than schedutil"),
            "{text}"
        );
        assert!(
            text.contains("dnngovd missed 1 of 100 deadlines, schedutil 5 of 100"),
            "{text}"
        );
    }

    #[test]
    fn knob_changes_name_the_file_and_both_values() {
        let before: BTreeMap<PathBuf, String> =
            [(PathBuf::from("a/scaling_governor"), "schedutil".to_string())].into();
        let after: BTreeMap<PathBuf, String> =
            [(PathBuf::from("a/scaling_governor"), "userspace".to_string())].into();
        assert_eq!(knob_changes(&before, &before), Vec::<String>::new());
        assert_eq!(
            knob_changes(&before, &after),
            vec!["a/scaling_governor: \"schedutil\" -> \"userspace\"".to_string()]
        );
    }
}
