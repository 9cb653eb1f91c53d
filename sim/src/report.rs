//! Comparisons: every governor and the oracle on one scenario and seed, as a table with
//! ratios to schedutil and to the oracle, and as SVG plots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dnngov_plot::{draw_panels, smooth, thin, Line};
use plotters::prelude::*;

use crate::engine::{run, RunResult};
use crate::governors::Which;
use crate::oracle::oracle;
use crate::platform::Platform;
use crate::scenario::Scenario;

pub struct Comparison {
    pub scenario: String,
    pub seed: u64,
    pub has_apps: bool,
    pub has_cap: bool,
    /// Governors in [`Which::ALL`] order, then the oracle when there is one.
    pub runs: Vec<RunResult>,
    /// Wall-clock time of each run (the oracle's includes its search).
    pub wall: Vec<Duration>,
}

impl Comparison {
    pub fn get(&self, name: &str) -> Option<&RunResult> {
        self.runs.iter().find(|r| r.governor == name)
    }
}

/// Runs `which` (and the oracle, with `with_oracle`, when the scenario has apps).
pub fn compare(
    scn: &Scenario,
    plat: &Platform,
    seed: u64,
    which: &[Which],
    with_oracle: bool,
) -> Result<Comparison> {
    let mut runs = Vec::new();
    let mut wall = Vec::new();
    for w in which {
        let start = Instant::now();
        let mut g = w.build(scn, plat)?;
        runs.push(run(scn, plat, g.as_mut(), seed)?);
        wall.push(start.elapsed());
    }
    let start = Instant::now();
    if with_oracle {
        if let Some(mut o) = oracle(scn, plat, seed)? {
            runs.push(run(scn, plat, &mut o, seed)?);
            wall.push(start.elapsed());
        }
    }
    Ok(Comparison {
        scenario: scn.name.clone(),
        seed,
        has_apps: !scn.apps.is_empty(),
        has_cap: scn.events.iter().any(|e| e.power_cap_w.is_some()),
        runs,
        wall,
    })
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.3}", a / b),
        _ => "-".into(),
    }
}

fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".into()
    }
}

/// The comparison as a Markdown table.
pub fn table(c: &Comparison) -> String {
    let su = c.get("schedutil").map(|r| r.metrics.energy_j);
    let or = c.get("oracle").map(|r| r.metrics.energy_j);
    let su_lat = c.get("schedutil").map(|r| {
        if c.has_apps {
            r.metrics.latency_mean_ms
        } else {
            r.metrics.task_latency_mean_ms
        }
    });
    let what = if c.has_apps { "frame" } else { "task" };
    let mut out = format!(
        "| governor | energy J | mean power W | {what} latency mean ms | {what} latency p99 ms | deadline miss % | mean accuracy % | sub-network switches | frequency changes |{} energy / schedutil | energy / oracle | latency / schedutil |\n",
        if c.has_cap { " over cap % |" } else { "" }
    );
    out.push_str(&format!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|{}---:|---:|---:|\n",
        if c.has_cap { "---:|" } else { "" }
    ));
    for r in &c.runs {
        let m = &r.metrics;
        let (lat, p99) = if c.has_apps {
            (m.latency_mean_ms, m.latency_p99_ms)
        } else {
            (m.task_latency_mean_ms, m.task_latency_p99_ms)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |{} {} | {} | {} |\n",
            r.governor,
            num(m.energy_j, 1),
            num(m.mean_power_w, 3),
            num(lat, 2),
            num(p99, 2),
            if c.has_apps {
                num(m.miss_pct, 2)
            } else {
                "-".into()
            },
            num(m.mean_accuracy, 2),
            m.switches,
            m.freq_changes,
            if c.has_cap {
                format!(" {} |", num(m.over_cap_pct, 1))
            } else {
                String::new()
            },
            ratio(m.energy_j, su),
            ratio(m.energy_j, or),
            ratio(lat, su_lat),
        ));
    }
    out
}

/// Frame figures per app, for scenarios with more than one app; empty otherwise.
pub fn app_table(c: &Comparison) -> String {
    let Some(first) = c.runs.first() else {
        return String::new();
    };
    if first.metrics.apps.len() < 2 {
        return String::new();
    }
    let mut out = String::from(
        "| governor | app | deadline miss % | frame latency mean ms | mean accuracy % |\n|---|---|---:|---:|---:|\n",
    );
    for r in &c.runs {
        for a in &r.metrics.apps {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.governor,
                a.name,
                num(a.miss_pct, 2),
                num(a.latency_mean_ms, 2),
                num(a.mean_accuracy, 2)
            ));
        }
    }
    out
}

const PLOTTED: [&str; 5] = ["schedutil", "subnet-only", "dvfs-only", "dnngov", "oracle"];
const COLOURS: [RGBColor; 5] = [RED, GREEN, CYAN, BLUE, BLACK];

fn plotted(c: &Comparison) -> Vec<(&RunResult, RGBColor)> {
    PLOTTED
        .iter()
        .zip(COLOURS)
        .filter_map(|(n, col)| c.get(n).map(|r| (r, col)))
        .collect()
}

/// Writes `<prefix>-frequencies.svg`, `-power.svg` and, with apps, `-latency.svg` and
/// `-subnet.svg` under `dir`; returns their paths.
pub fn write_plots(c: &Comparison, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let runs = plotted(c);
    let Some((first, _)) = runs.first() else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    let series_xy = |t: &[f64], ys: &[f64]| thin(t, ys, false);

    let freq_panels = first
        .series
        .domain_names
        .iter()
        .enumerate()
        // Clusters run alike; the first CPU cluster stands for them.
        .filter(|(i, n)| *i == 0 || !n.starts_with("cpu"))
        .map(|(i, name)| {
            let lines = runs
                .iter()
                .map(|(r, col)| {
                    (
                        r.governor.clone(),
                        *col,
                        series_xy(&r.series.t_s, &r.series.freq_mhz[i]),
                    )
                })
                .collect();
            (name.clone(), "MHz".to_string(), lines)
        })
        .collect();
    let path = dir.join(format!("{prefix}-frequencies.svg"));
    draw_panels(&path, &c.scenario, "virtual time (s)", freq_panels)?;
    files.push(path);

    let power = vec![(
        "board power (1 s mean)".to_string(),
        "W".to_string(),
        runs.iter()
            .map(|(r, col)| {
                (
                    r.governor.clone(),
                    *col,
                    series_xy(&r.series.t_s, &smooth(&r.series.power_w, 10)),
                )
            })
            .collect(),
    )];
    let path = dir.join(format!("{prefix}-power.svg"));
    draw_panels(&path, &c.scenario, "virtual time (s)", power)?;
    files.push(path);

    if c.has_apps {
        let latency = first
            .series
            .app_names
            .iter()
            .enumerate()
            .map(|(a, name)| {
                // Runaway queues would flatten the interesting part near the deadline:
                // latencies above three times the largest deadline are drawn at that level.
                let cap = 3.0
                    * first.series.deadline_ms[a]
                        .iter()
                        .fold(0.0f64, |m, d| m.max(*d));
                let clamp = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.min(cap)).collect() };
                let mut lines: Vec<Line> = vec![(
                    "deadline".into(),
                    MAGENTA,
                    series_xy(&first.series.t_s, &first.series.deadline_ms[a]),
                )];
                lines.extend(runs.iter().map(|(r, col)| {
                    (
                        r.governor.clone(),
                        *col,
                        thin(&r.series.t_s, &clamp(&r.series.latency_ms[a]), true),
                    )
                }));
                (
                    format!("{name}: worst frame latency (clipped at {cap:.0} ms)"),
                    "ms".to_string(),
                    lines,
                )
            })
            .collect();
        let path = dir.join(format!("{prefix}-latency.svg"));
        draw_panels(&path, &c.scenario, "virtual time (s)", latency)?;
        files.push(path);

        let subnet = first
            .series
            .app_names
            .iter()
            .enumerate()
            .map(|(a, name)| {
                let lines = runs
                    .iter()
                    .map(|(r, col)| {
                        (
                            r.governor.clone(),
                            *col,
                            series_xy(&r.series.t_s, &r.series.subnet[a]),
                        )
                    })
                    .collect();
                (
                    format!("{name}: sub-network level"),
                    "level".to_string(),
                    lines,
                )
            })
            .collect();
        let path = dir.join(format!("{prefix}-subnet.svg"));
        draw_panels(&path, &c.scenario, "virtual time (s)", subnet)?;
        files.push(path);
    }
    Ok(files)
}
