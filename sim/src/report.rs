//! Comparisons: every governor and the oracle on one scenario and seed, as a table with
//! ratios to schedutil and to the oracle, and as SVG plots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
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

type Line = (String, RGBColor, Vec<(f64, f64)>);

fn draw_panels(path: &Path, title: &str, panels: Vec<(String, String, Vec<Line>)>) -> Result<()> {
    let n = panels.len().max(1);
    let root = SVGBackend::new(path, (1100, 320 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((n, 1));
    for (area, (caption, ylabel, lines)) in areas.iter().zip(panels) {
        let xmax = lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.0))
            .fold(1.0f64, f64::max);
        let ymax = lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
            .fold(1e-9f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}: {caption}"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("virtual time (s)")
            .y_desc(ylabel)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (name, colour, points) in lines {
            chart
                .draw_series(LineSeries::new(
                    points.into_iter().filter(|p| p.1.is_finite()),
                    colour,
                ))
                .map_err(|e| anyhow!("{e}"))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Mean over a sliding window of `n` samples, to make power readable.
fn smooth(xs: &[f64], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(xs.len());
    let mut sum = 0.0;
    for i in 0..xs.len() {
        sum += xs[i];
        if i >= n {
            sum -= xs[i - n];
        }
        out.push(sum / (i + 1).min(n) as f64);
    }
    out
}

/// Points drawn per line at most: more adds file size, not detail, at plot width.
const MAX_POINTS: usize = 400;

/// `(t, y)` points, averaged over buckets when there are more than [`MAX_POINTS`] (or the
/// bucket's worst value with `worst`, so a latency spike stays visible). NaN samples
/// (no frame finished) are left out of a bucket.
fn thin(t: &[f64], ys: &[f64], worst: bool) -> Vec<(f64, f64)> {
    let n = t.len().min(ys.len());
    let per = n.div_ceil(MAX_POINTS).max(1);
    (0..n)
        .step_by(per)
        .map(|i| {
            let end = (i + per).min(n);
            let finite: Vec<f64> = ys[i..end]
                .iter()
                .copied()
                .filter(|y| y.is_finite())
                .collect();
            let y = if finite.is_empty() {
                f64::NAN
            } else if worst {
                finite.iter().copied().fold(f64::MIN, f64::max)
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            };
            (t[end - 1], y)
        })
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
    draw_panels(&path, &c.scenario, freq_panels)?;
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
    draw_panels(&path, &c.scenario, power)?;
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
        draw_panels(&path, &c.scenario, latency)?;
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
        draw_panels(&path, &c.scenario, subnet)?;
        files.push(path);
    }
    Ok(files)
}
