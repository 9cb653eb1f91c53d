//! Timing of what a governor cares about: one inference at batch 1 per candidate, and the
//! cost of switching candidates.

use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::supernet::SuperNet;

/// Summary of repeated timings, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// Median.
    pub median_us: f64,
    /// 10th percentile.
    pub p10_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// Number of timed runs.
    pub runs: usize,
}

impl Timing {
    /// Summarises durations given in microseconds.
    pub fn from_micros(mut samples: Vec<f64>) -> Result<Timing> {
        if samples.is_empty() {
            return Err(Error::InvalidSetting("no timed runs".into()));
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Ok(Timing {
            median_us: at(0.5),
            p10_us: at(0.1),
            p90_us: at(0.9),
            runs: samples.len(),
        })
    }
}

/// Latency of one classification of `image` (`[1, 3, size, size]`) by the active candidate,
/// after `warmup` untimed runs.
pub fn inference_latency(
    net: &SuperNet,
    image: &Tensor,
    warmup: usize,
    runs: usize,
) -> Result<Timing> {
    for _ in 0..warmup {
        net.classify(image)?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(net.classify(image)?);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Timing::from_micros(samples)
}

/// Time of [`SuperNet::set_subnet_index`] between prepared candidates, each switch timed on
/// its own (so the figure includes one clock read), cycling through the candidates in an
/// order that alternates small and large. The active candidate is restored afterwards.
pub fn switch_time(net: &mut SuperNet, switches: usize) -> Result<Timing> {
    net.prepare_all()?;
    let active = net.active_index();
    let n = net.candidates().len();
    let order: Vec<usize> = (0..n)
        .map(|i| if i % 2 == 0 { i / 2 } else { n - 1 - i / 2 })
        .collect();
    let mut samples = Vec::with_capacity(switches);
    for k in 0..switches {
        let target = order[k % n];
        let t = Instant::now();
        net.set_subnet_index(std::hint::black_box(target))?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    net.set_subnet_index(active)?;
    Timing::from_micros(samples)
}

/// Time to build candidate `index`'s plan from the shared weights and its BatchNorm
/// statistics: what a switch would cost if plans were not kept.
pub fn plan_build_time(net: &SuperNet, index: usize, runs: usize) -> Result<Timing> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        net.rebuild_plan_cost(index)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Timing::from_micros(samples)
}
