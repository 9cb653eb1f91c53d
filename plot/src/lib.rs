//! SVG time-series panels shared by the simulator's reports and the board evaluation:
//! one panel per quantity, one line per governor, thinned to what a plot can show.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// A named line: its colour and its `(x, y)` points.
pub type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Writes `panels` (caption, y label, lines) one above the other into an SVG at `path`.
pub fn draw_panels(
    path: &Path,
    title: &str,
    x_desc: &str,
    panels: Vec<(String, String, Vec<Line>)>,
) -> Result<()> {
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
            .x_desc(x_desc)
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
pub fn smooth(xs: &[f64], n: usize) -> Vec<f64> {
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
pub const MAX_POINTS: usize = 400;

/// `(t, y)` points, averaged over buckets when there are more than [`MAX_POINTS`] (or the
/// bucket's worst value with `worst`, so a latency spike stays visible). NaN samples
/// (no frame finished) are left out of a bucket.
pub fn thin(t: &[f64], ys: &[f64], worst: bool) -> Vec<(f64, f64)> {
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
