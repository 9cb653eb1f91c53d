//! Training: the sandwich rule for the super-network, plain training for a fixed network of
//! one sub-network's shape, per-candidate BatchNorm calibration, and held-out evaluation.
//!
//! Sandwich rule: every step runs the largest candidate on the labels, then the smallest and
//! `random_subnets` others drawn from the candidates; with `distill` those learn from the
//! largest one's (detached) predicted distribution, in-place distillation. All gradients
//! add up into one AdamW step on the shared weights.

use std::time::Instant;

use candle_core::{Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use log::info;

use crate::arch::{ArchConfig, SubnetConfig};
use crate::dataset::{Dataset, DatasetConfig, Split};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::supernet::{Provenance, SuperNet, TrainingSummary};

/// Everything a training run depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Shapes of the super-network.
    pub arch: ArchConfig,
    /// Candidate sub-networks; `None` for [`ArchConfig::default_candidates`].
    pub candidates: Option<Vec<SubnetConfig>>,
    /// The data set (its image size must match the architecture's).
    pub dataset: DatasetConfig,
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate; a short warm-up, then cosine decay.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Random candidates per step besides the largest and the smallest.
    pub random_subnets: usize,
    /// In-place distillation from the largest candidate.
    pub distill: bool,
    /// Seed of the initial weights, the example order and the sampled sub-networks.
    pub seed: u64,
    /// Images per batch when collecting BatchNorm statistics and evaluating.
    pub eval_batch_size: usize,
}

impl Default for TrainConfig {
    /// The default run: the default architecture and data set, 1122 steps, about six
    /// minutes on two CPU cores.
    fn default() -> Self {
        TrainConfig {
            arch: ArchConfig::default(),
            candidates: None,
            dataset: DatasetConfig::default(),
            epochs: 6,
            batch_size: 64,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            random_subnets: 1,
            distill: true,
            seed: 1,
            eval_batch_size: 256,
        }
    }
}

impl TrainConfig {
    /// A run of a few seconds on the tiny architecture and data set, for tests.
    pub fn tiny() -> Self {
        TrainConfig {
            arch: ArchConfig::tiny(),
            dataset: DatasetConfig::tiny(),
            epochs: 3,
            batch_size: 32,
            learning_rate: 1e-2,
            ..TrainConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        self.arch.validate()?;
        if self.dataset.image_size != self.arch.image_size || self.arch.in_channels != 3 {
            return Err(Error::InvalidSetting(format!(
                "data set images are 3x{0}x{0}, the architecture takes {1}x{2}x{2}",
                self.dataset.image_size, self.arch.in_channels, self.arch.image_size
            )));
        }
        if self.arch.num_classes != crate::dataset::CLASS_NAMES.len() {
            return Err(Error::InvalidSetting(format!(
                "the data set has {} classes, the architecture {}",
                crate::dataset::CLASS_NAMES.len(),
                self.arch.num_classes
            )));
        }
        if self.epochs == 0 || self.batch_size < 2 || self.eval_batch_size < 2 {
            return Err(Error::InvalidSetting(
                "epochs must be > 0 and batch sizes >= 2 (BatchNorm needs a batch)".into(),
            ));
        }
        if self.dataset.train < self.batch_size || self.dataset.calib < 2 || self.dataset.test == 0
        {
            return Err(Error::InvalidSetting(format!(
                "splits too small: {} train images for batches of {}, {} calibration, {} test",
                self.dataset.train, self.batch_size, self.dataset.calib, self.dataset.test
            )));
        }
        Ok(())
    }
}

/// What a training run measured.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Optimiser steps.
    pub steps: usize,
    /// Mean loss of the largest candidate over the last epoch.
    pub final_loss: f64,
    /// Wall time of the gradient steps, in seconds.
    pub train_secs: f64,
    /// Wall time of BatchNorm calibration, in seconds.
    pub calib_secs: f64,
    /// Wall time of the held-out evaluation, in seconds.
    pub eval_secs: f64,
    /// Wall time of the whole run, in seconds.
    pub total_secs: f64,
    /// Held-out top-1 accuracy per candidate, by name, ascending in MACs.
    pub top1: Vec<(String, f64)>,
}

fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let warmup = (total / 20).max(1);
    if step < warmup {
        return cfg.learning_rate * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    let floor = 0.02;
    cfg.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Cross-entropy of `logits` against the distribution `target` (rows sum to 1).
fn soft_cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok((target * logp)?.sum(D::Minus1)?.mean_all()?.neg()?)
}

/// Runs the optimisation on `net` (its candidates define the sandwich).
fn optimise(
    net: &mut SuperNet,
    cfg: &TrainConfig,
    train: &Dataset,
    device: &Device,
) -> Result<(usize, f64)> {
    let vars = net.vars();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let configs: Vec<SubnetConfig> = net.candidates().iter().map(|c| c.config.clone()).collect();
    let n = configs.len();
    let largest = configs[n - 1].clone();
    let smallest = configs[0].clone();
    let mut rng = Rng::new(cfg.seed ^ 0x5eed_7a1e);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps_per_epoch = train.len() / cfg.batch_size;
    let total = steps_per_epoch * cfg.epochs;
    let mut step = 0;
    let mut last_epoch_loss = f64::NAN;
    let start = Instant::now();
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        for batch in order.chunks_exact(cfg.batch_size) {
            opt.set_learning_rate(learning_rate(cfg, step, total));
            let (x, y) = train.batch(batch, device)?;
            let logits = net.forward_train(&x, &largest, None)?;
            let top_loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let teacher = candle_nn::ops::softmax_last_dim(&logits.detach())?;
            let mut loss = top_loss.clone();
            let mut others: Vec<&SubnetConfig> = Vec::new();
            if n > 1 {
                others.push(&smallest);
            }
            if n > 2 {
                for _ in 0..cfg.random_subnets {
                    others.push(&configs[1 + rng.below(n - 2)]);
                }
            }
            for sub in others {
                let logits = net.forward_train(&x, sub, None)?;
                let l = if cfg.distill {
                    soft_cross_entropy(&logits, &teacher)?
                } else {
                    candle_nn::loss::cross_entropy(&logits, &y)?
                };
                loss = (loss + l)?;
            }
            opt.backward_step(&loss)?;
            loss_sum += top_loss.to_scalar::<f32>()? as f64;
            step += 1;
            if step % 50 == 0 || step == total {
                info!(
                    "epoch {}/{} step {step}/{total} loss(largest) {:.3} lr {:.2e} {:.0}s",
                    epoch + 1,
                    cfg.epochs,
                    loss_sum / (step - epoch * steps_per_epoch) as f64,
                    opt.learning_rate(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        last_epoch_loss = loss_sum / steps_per_epoch as f64;
    }
    net.invalidate_plans()?;
    Ok((step, last_epoch_loss))
}

/// Computes every candidate's BatchNorm statistics over `data` (the calibration split) and
/// stores them in `net`: each candidate runs in training mode over the data in batches of
/// `batch_size`, and the per-layer mean and variance are averaged over the whole split.
pub fn calibrate(net: &mut SuperNet, data: &Dataset, batch_size: usize) -> Result<()> {
    let device = net.device().clone();
    let idx: Vec<usize> = (0..data.len()).collect();
    let batches: Vec<&[usize]> = idx.chunks(batch_size).filter(|b| b.len() >= 2).collect();
    if batches.is_empty() {
        return Err(Error::InvalidSetting(
            "calibration needs at least two images".into(),
        ));
    }
    for c in 0..net.candidates().len() {
        let config = net.candidates()[c].config.clone();
        // Sum over batches of (batch mean, batch variance + batch mean²), weighted by size.
        let mut sums: Vec<(Tensor, Tensor)> = Vec::new();
        let mut count = 0usize;
        for b in &batches {
            let (x, _) = data.batch(b, &device)?;
            let mut stats = Vec::new();
            net.forward_train(&x, &config, Some(&mut stats))?;
            let w = b.len() as f64;
            for (i, (m, v)) in stats.into_iter().enumerate() {
                let second = (v + m.sqr()?)?;
                let (m, second) = ((m * w)?, (second * w)?);
                if i < sums.len() {
                    sums[i] = ((&sums[i].0 + m)?, (&sums[i].1 + second)?);
                } else {
                    sums.push((m, second));
                }
            }
            count += b.len();
        }
        let n = count as f64;
        let mut out = Vec::with_capacity(sums.len());
        for (m, second) in sums {
            let mean = (m / n)?;
            let var = ((second / n)? - mean.sqr()?)?.relu()?;
            out.push((mean, var));
        }
        net.set_bn_stats(c, out)?;
    }
    net.invalidate_plans()
}

/// Top-1 accuracy of the active candidate on `data`.
pub fn top1(net: &SuperNet, data: &Dataset, batch_size: usize) -> Result<f64> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for b in idx.chunks(batch_size.max(1)) {
        let (x, _) = data.batch(b, net.device())?;
        let pred = net.classify(&x)?;
        correct += pred
            .iter()
            .zip(b)
            .filter(|(p, &i)| **p == data.labels[i] as usize)
            .count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// Top-1 accuracy of every candidate on `data`, ascending in MACs; also recorded in `net`.
/// The active candidate is restored afterwards.
pub fn evaluate(net: &mut SuperNet, data: &Dataset, batch_size: usize) -> Result<Vec<f64>> {
    let active = net.active_index();
    let mut out = Vec::new();
    for c in 0..net.candidates().len() {
        net.set_subnet_index(c)?;
        let acc = top1(net, data, batch_size)?;
        net.set_top1(c, acc)?;
        out.push(acc);
    }
    net.set_subnet_index(active)?;
    Ok(out)
}

fn run(
    cfg: &TrainConfig,
    mut net: SuperNet,
    method: &str,
    fixed_for: Option<String>,
    device: &Device,
) -> Result<(SuperNet, TrainReport)> {
    let start = Instant::now();
    let train = Dataset::generate(&cfg.dataset, Split::Train)?;
    let calib = Dataset::generate(&cfg.dataset, Split::Calibration)?;
    let test = Dataset::generate(&cfg.dataset, Split::Test)?;
    info!(
        "{method}: {} candidates, data {} train / {} calibration / {} test images ({:.1}s to draw)",
        net.candidates().len(),
        train.len(),
        calib.len(),
        test.len(),
        start.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (steps, final_loss) = optimise(&mut net, cfg, &train, device)?;
    let train_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    calibrate(&mut net, &calib, cfg.eval_batch_size)?;
    let calib_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let acc = evaluate(&mut net, &test, cfg.eval_batch_size)?;
    let eval_secs = t.elapsed().as_secs_f64();
    let total_secs = start.elapsed().as_secs_f64();
    net.set_provenance(Provenance {
        dataset: Some(cfg.dataset.clone()),
        training: Some(TrainingSummary {
            method: method.into(),
            seed: cfg.seed,
            epochs: cfg.epochs,
            steps,
            batch_size: cfg.batch_size,
            learning_rate: cfg.learning_rate,
            random_subnets: if method == "sandwich" {
                cfg.random_subnets
            } else {
                0
            },
            distill: cfg.distill && method == "sandwich",
            train_secs,
            total_secs,
        }),
        fixed_for,
    });
    let top1 = net
        .candidates()
        .iter()
        .zip(acc)
        .map(|(c, a)| (c.name.clone(), a))
        .collect();
    Ok((
        net,
        TrainReport {
            steps,
            final_loss,
            train_secs,
            calib_secs,
            eval_secs,
            total_secs,
            top1,
        },
    ))
}

/// Trains a super-network with the sandwich rule, calibrates every candidate's BatchNorm
/// statistics and records every candidate's held-out accuracy in it.
pub fn train_supernet(cfg: &TrainConfig, device: &Device) -> Result<(SuperNet, TrainReport)> {
    cfg.validate()?;
    let candidates = cfg
        .candidates
        .clone()
        .unwrap_or_else(|| cfg.arch.default_candidates());
    let net = SuperNet::with_candidates(cfg.arch.clone(), candidates, cfg.seed, device)?;
    run(cfg, net, "sandwich", None, device)
}

/// Trains a plain network with exactly `subnet`'s layers and channels, on the same data,
/// steps, batch size and schedule as [`train_supernet`] uses, one forward and backward pass
/// per step. The result is a one-candidate [`SuperNet`] whose provenance names `subnet`.
pub fn train_fixed(
    cfg: &TrainConfig,
    subnet: &SubnetConfig,
    device: &Device,
) -> Result<(SuperNet, TrainReport)> {
    cfg.validate()?;
    subnet.validate(&cfg.arch)?;
    let arch = cfg.arch.fixed_for(subnet);
    let fixed_cfg = TrainConfig {
        arch: arch.clone(),
        candidates: None,
        ..cfg.clone()
    };
    let net = SuperNet::with_candidates(arch.clone(), vec![arch.largest()], cfg.seed, device)?;
    run(&fixed_cfg, net, "fixed", Some(subnet.name()), device)
}
