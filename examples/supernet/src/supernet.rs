//! The super-network: one set of shared weights, the list of candidate sub-networks with
//! their BatchNorm statistics, and the prepared form of each candidate that inference runs.
//!
//! Normalisation. Layers use BatchNorm whose scale and shift are shared (sliced to the
//! active width) while the running mean and variance are kept per candidate: a sub-network's
//! activation statistics differ from its neighbours', and recomputing them at switch time
//! would need data and a calibration pass. They are computed once after training, on the
//! calibration split, and stored in the weights file next to the shared weights.
//!
//! Switching. For every candidate the network prepares an inference plan: the sliced
//! weights with that candidate's BatchNorm folded in (`w * gamma / sqrt(var + eps)`, plus a
//! bias). Plans are built when the weights are loaded, so [`SuperNet::set_subnet`] changes an
//! index and touches no file. The price is memory: the plans together hold about as many
//! values as all candidates' parameters added up ([`SuperNet::plan_values`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::arch::{ArchConfig, LayerSpec, SubnetConfig};
use crate::dataset::DatasetConfig;
use crate::error::{Error, Result};
use crate::layers::{batch_norm_relu, channel_stats, conv3x3, BN_EPS};
use crate::rng::Rng;

/// Key of the JSON manifest in the safetensors header's metadata.
pub const METADATA_KEY: &str = "dnngov.supernet";
/// Format tag written into the manifest; a file with another tag is refused.
pub const FORMAT: &str = "dnngov-supernet/1";

/// One candidate sub-network: what it is, what it costs, and how accurate it was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Stable short name, e.g. `d2-2-3_w0.75`.
    pub name: String,
    /// Depth per stage and width.
    pub config: SubnetConfig,
    /// Multiply-accumulates per image, computed from the shapes.
    pub macs: u64,
    /// `macs` relative to the largest candidate's, in (0, 1].
    #[serde(default)]
    pub relative_macs: f64,
    /// Parameters the sub-network uses.
    pub params: u64,
    /// Top-1 accuracy on the held-out split of [`Provenance::dataset`], in [0, 1], once
    /// measured.
    pub top1: Option<f64>,
}

/// How a set of weights was trained, stored with them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// `sandwich` (super-network) or `fixed` (one plain network).
    pub method: String,
    /// Training seed (initial weights, order of examples, sampled sub-networks).
    pub seed: u64,
    /// Passes over the training split.
    pub epochs: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay).
    pub learning_rate: f64,
    /// Random sub-networks per step besides the largest and the smallest.
    pub random_subnets: usize,
    /// Whether smaller sub-networks learnt from the largest one's outputs.
    pub distill: bool,
    /// Wall time of the gradient steps, in seconds.
    pub train_secs: f64,
    /// Wall time of the whole run (data, steps, calibration, evaluation), in seconds.
    pub total_secs: f64,
}

/// Where a set of weights came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The data set trained on; its test split is the held-out split of `top1`.
    pub dataset: Option<DatasetConfig>,
    /// The training run.
    pub training: Option<TrainingSummary>,
    /// For a fixed (non-elastic) network: the super-network sub-network it has the shape of.
    pub fixed_for: Option<String>,
}

/// Everything a weights file says besides the tensors: the JSON in its metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The super-network's shapes.
    pub arch: ArchConfig,
    /// Candidate sub-networks, ascending in MACs.
    pub candidates: Vec<Candidate>,
    /// Data set and training run.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// Per-channel BatchNorm statistics of one layer for one candidate.
#[derive(Clone, Debug)]
pub struct BnStats {
    /// Layer name, e.g. `s1.b0`.
    pub layer: String,
    /// Running mean, one value per active channel.
    pub mean: Tensor,
    /// Running (biased) variance, one value per active channel.
    pub var: Tensor,
}

/// The trainable tensors of one convolution.
struct ConvParams {
    /// `[3, 3, cin_max, cout_max]`.
    weight: Var,
    /// BatchNorm scale, `[cout_max]`.
    gamma: Var,
    /// BatchNorm shift, `[cout_max]`.
    beta: Var,
}

/// One prepared convolution: BatchNorm folded in.
struct PlanLayer {
    /// `[9 * cin, cout]`.
    weight: Tensor,
    /// `[cout]`.
    bias: Tensor,
    stride: usize,
    residual: bool,
}

/// A candidate ready to run: sliced, folded, contiguous tensors.
struct Plan {
    layers: Vec<PlanLayer>,
    /// `[c, classes]`.
    head_w: Tensor,
    /// `[classes]`.
    head_b: Tensor,
}

impl Plan {
    fn values(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.elem_count() + l.bias.elem_count())
            .sum::<usize>()
            + self.head_w.elem_count()
            + self.head_b.elem_count()
    }
}

/// A weight-shared elastic CNN whose candidate sub-networks switch without a reload.
pub struct SuperNet {
    arch: ArchConfig,
    device: Device,
    convs: Vec<ConvParams>,
    /// `[c_max, classes]`.
    head_w: Var,
    head_b: Var,
    candidates: Vec<Candidate>,
    /// Per candidate, per active layer.
    bn: Vec<Vec<BnStats>>,
    plans: Vec<Option<Plan>>,
    active: usize,
    provenance: Provenance,
}

impl std::fmt::Debug for SuperNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperNet")
            .field("arch", &self.arch)
            .field("candidates", &self.candidates)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

fn candidate(arch: &ArchConfig, config: SubnetConfig) -> Candidate {
    Candidate {
        name: config.name(),
        macs: arch.macs(&config),
        relative_macs: 1.0,
        params: arch.params(&config),
        config,
        top1: None,
    }
}

fn set_relative_macs(candidates: &mut [Candidate]) {
    let max = candidates.iter().map(|c| c.macs).max().unwrap_or(1).max(1) as f64;
    for c in candidates {
        c.relative_macs = c.macs as f64 / max;
    }
}

fn normal_tensor(rng: &mut Rng, shape: &[usize], std: f32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

impl SuperNet {
    /// A freshly initialised super-network with the architecture's default candidates
    /// (seed 0). Its BatchNorm statistics are the identity (mean 0, variance 1) until
    /// training replaces them.
    pub fn new(arch: ArchConfig, device: &Device) -> Result<SuperNet> {
        let candidates = arch.default_candidates();
        SuperNet::with_candidates(arch, candidates, 0, device)
    }

    /// A freshly initialised super-network with the given candidates (sorted by MACs),
    /// initial weights drawn from `seed`.
    pub fn with_candidates(
        arch: ArchConfig,
        candidates: Vec<SubnetConfig>,
        seed: u64,
        device: &Device,
    ) -> Result<SuperNet> {
        arch.validate()?;
        if candidates.is_empty() {
            return Err(Error::InvalidSetting("no candidate sub-networks".into()));
        }
        let mut cands: Vec<Candidate> = Vec::with_capacity(candidates.len());
        for c in candidates {
            c.validate(&arch)?;
            if cands.iter().any(|k| k.config.same_as(&c)) {
                return Err(Error::InvalidSetting(format!("candidate {c} listed twice")));
            }
            cands.push(candidate(&arch, c));
        }
        cands.sort_by_key(|c| (c.macs, c.name.clone()));
        set_relative_macs(&mut cands);

        let mut rng = Rng::new(seed);
        let mut convs = Vec::new();
        for l in arch.layers() {
            // He initialisation for the full fan-in; BatchNorm absorbs the scale of slices.
            let std = (2.0 / (9 * l.in_channels) as f32).sqrt();
            convs.push(ConvParams {
                weight: Var::from_tensor(&normal_tensor(
                    &mut rng,
                    &[3, 3, l.in_channels, l.out_channels],
                    std,
                    device,
                )?)?,
                gamma: Var::ones(l.out_channels, DType::F32, device)?,
                beta: Var::zeros(l.out_channels, DType::F32, device)?,
            });
        }
        let c = arch.head_channels(1.0);
        let head_w = Var::from_tensor(&normal_tensor(
            &mut rng,
            &[c, arch.num_classes],
            (1.0 / c as f32).sqrt(),
            device,
        )?)?;
        let head_b = Var::zeros(arch.num_classes, DType::F32, device)?;
        let mut bn = Vec::with_capacity(cands.len());
        for cand in &cands {
            let mut stats = Vec::new();
            for l in arch.active_layers(&cand.config) {
                let (_, cout) = l.channels_at(cand.config.width);
                stats.push(BnStats {
                    layer: l.name.clone(),
                    mean: Tensor::zeros(cout, DType::F32, device)?,
                    var: Tensor::ones(cout, DType::F32, device)?,
                });
            }
            bn.push(stats);
        }
        let n = cands.len();
        let mut net = SuperNet {
            arch,
            device: device.clone(),
            convs,
            head_w,
            head_b,
            candidates: cands,
            bn,
            plans: (0..n).map(|_| None).collect(),
            active: n - 1,
            provenance: Provenance::default(),
        };
        net.prepare_all()?;
        Ok(net)
    }

    /// The architecture.
    pub fn arch(&self) -> &ArchConfig {
        &self.arch
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Candidate sub-networks, ascending in MACs; the last is the largest.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The data set and training run these weights came from.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Replaces the provenance (recorded by training).
    pub fn set_provenance(&mut self, provenance: Provenance) {
        self.provenance = provenance;
    }

    /// The manifest [`SuperNet::save`] writes.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            arch: self.arch.clone(),
            candidates: self.candidates.clone(),
            provenance: self.provenance.clone(),
        }
    }

    /// The candidate that [`SuperNet::forward`] runs.
    pub fn active(&self) -> &Candidate {
        &self.candidates[self.active]
    }

    /// Index of the active candidate in [`SuperNet::candidates`].
    pub fn active_index(&self) -> usize {
        self.active
    }

    /// `[channels, height, width]` of one input image.
    pub fn image_shape(&self) -> [usize; 3] {
        [
            self.arch.in_channels,
            self.arch.image_size,
            self.arch.image_size,
        ]
    }

    /// Index of the candidate called `name`.
    pub fn find(&self, name: &str) -> Result<usize> {
        self.candidates
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Error::UnknownSubnet {
                name: name.to_string(),
                known: self.candidates.iter().map(|c| c.name.clone()).collect(),
            })
    }

    /// Makes candidate `index` the one that runs. Builds its plan if it has none yet (only
    /// after training changed the weights); otherwise an index change.
    pub fn set_subnet_index(&mut self, index: usize) -> Result<()> {
        if index >= self.candidates.len() {
            return Err(Error::SubnetIndex {
                index,
                count: self.candidates.len(),
            });
        }
        if self.plans[index].is_none() {
            self.plans[index] = Some(self.build_plan(index)?);
        }
        self.active = index;
        Ok(())
    }

    /// Makes the candidate with configuration `subnet` the one that runs.
    pub fn set_subnet(&mut self, subnet: &SubnetConfig) -> Result<()> {
        let index = self
            .candidates
            .iter()
            .position(|c| c.config.same_as(subnet))
            .ok_or_else(|| Error::UnknownSubnet {
                name: subnet.name(),
                known: self.candidates.iter().map(|c| c.name.clone()).collect(),
            })?;
        self.set_subnet_index(index)
    }

    /// Makes the candidate called `name` (e.g. `d1-2-2_w0.5`) the one that runs.
    pub fn set_subnet_by_name(&mut self, name: &str) -> Result<()> {
        let index = self.find(name)?;
        self.set_subnet_index(index)
    }

    /// Builds every candidate's plan, so that every later switch is an index change.
    pub fn prepare_all(&mut self) -> Result<()> {
        for i in 0..self.candidates.len() {
            if self.plans[i].is_none() {
                self.plans[i] = Some(self.build_plan(i)?);
            }
        }
        Ok(())
    }

    /// Builds candidate `index`'s plan from the shared weights and its BatchNorm statistics
    /// and throws it away: what a switch would cost without prepared plans.
    pub fn rebuild_plan_cost(&self, index: usize) -> Result<()> {
        if index >= self.candidates.len() {
            return Err(Error::SubnetIndex {
                index,
                count: self.candidates.len(),
            });
        }
        self.build_plan(index).map(|_| ())
    }

    /// Values held by the prepared plans (f32 each), the memory price of instant switching.
    pub fn plan_values(&self) -> usize {
        self.plans.iter().flatten().map(Plan::values).sum()
    }

    /// Values in the shared weights and all BatchNorm statistics: what the file stores.
    pub fn stored_values(&self) -> usize {
        self.convs
            .iter()
            .map(|c| c.weight.elem_count() + c.gamma.elem_count() + c.beta.elem_count())
            .sum::<usize>()
            + self.head_w.elem_count()
            + self.head_b.elem_count()
            + self
                .bn
                .iter()
                .flatten()
                .map(|s| s.mean.elem_count() + s.var.elem_count())
                .sum::<usize>()
    }

    /// BatchNorm statistics of candidate `index`, one entry per layer it runs.
    pub fn bn_stats(&self, index: usize) -> Result<&[BnStats]> {
        self.bn
            .get(index)
            .map(Vec::as_slice)
            .ok_or(Error::SubnetIndex {
                index,
                count: self.candidates.len(),
            })
    }

    /// Records the measured held-out top-1 accuracy of candidate `index`.
    pub fn set_top1(&mut self, index: usize, top1: f64) -> Result<()> {
        let count = self.candidates.len();
        let c = self
            .candidates
            .get_mut(index)
            .ok_or(Error::SubnetIndex { index, count })?;
        c.top1 = Some(top1);
        Ok(())
    }

    fn check_input(&self, x: &Tensor) -> Result<Tensor> {
        let expected = self.image_shape();
        let dims = x.dims();
        if dims.len() != 4 || dims[0] == 0 || dims[1..] != expected {
            return Err(Error::InputShape {
                got: dims.to_vec(),
                expected,
            });
        }
        let x = if x.dtype() == DType::F32 {
            x.clone()
        } else {
            x.to_dtype(DType::F32)?
        };
        Ok(x.to_device(&self.device)?)
    }

    /// Logits `[batch, classes]` of the active candidate for images `[batch, 3, size, size]`
    /// (standardised as [`crate::dataset::Dataset`] makes them).
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.check_input(images)?;
        let plan = self.plans[self.active]
            .as_ref()
            .ok_or_else(|| Error::InvalidSetting("active sub-network has no plan".into()))?;
        let mut x = x.permute((0, 2, 3, 1))?;
        for l in &plan.layers {
            let y = conv3x3(&x, &l.weight, l.stride)?.broadcast_add(&l.bias)?;
            x = if l.residual {
                (x + y)?.relu()?
            } else {
                y.relu()?
            };
        }
        let pooled = x.mean((1, 2))?;
        Ok(pooled.matmul(&plan.head_w)?.broadcast_add(&plan.head_b)?)
    }

    /// Predicted class of every image in `images` `[batch, 3, size, size]`.
    pub fn classify(&self, images: &Tensor) -> Result<Vec<usize>> {
        let pred = self.forward(images)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        Ok(pred.into_iter().map(|p| p as usize).collect())
    }

    /// Predicted class of one image given as `3 * size * size` channel-major values.
    pub fn classify_image(&self, image: &[f32]) -> Result<usize> {
        let [c, h, w] = self.image_shape();
        if image.len() != c * h * w {
            return Err(Error::InputShape {
                got: vec![image.len()],
                expected: [c, h, w],
            });
        }
        let x = Tensor::from_slice(image, (1, c, h, w), &self.device)?;
        Ok(self.classify(&x)?[0])
    }

    fn conv_slice(&self, l: &LayerSpec, width: f64) -> Result<(Tensor, Tensor, Tensor)> {
        let p = &self.convs[l.index];
        let (cin, cout) = l.channels_at(width);
        let w = p
            .weight
            .narrow(2, 0, cin)?
            .narrow(3, 0, cout)?
            .reshape((9 * cin, cout))?;
        Ok((w, p.gamma.narrow(0, 0, cout)?, p.beta.narrow(0, 0, cout)?))
    }

    fn head_slice(&self, width: f64) -> Result<Tensor> {
        Ok(self.head_w.narrow(0, 0, self.arch.head_channels(width))?)
    }

    fn build_plan(&self, index: usize) -> Result<Plan> {
        let cfg = &self.candidates[index].config;
        let mut layers = Vec::new();
        for (l, st) in self.arch.active_layers(cfg).iter().zip(&self.bn[index]) {
            let (w, gamma, beta) = self.conv_slice(l, cfg.width)?;
            let scale = (gamma.detach() / (st.var.clone() + BN_EPS)?.sqrt()?)?;
            let weight = w.detach().broadcast_mul(&scale.unsqueeze(0)?)?;
            let bias = (beta.detach() - (&st.mean * &scale)?)?;
            layers.push(PlanLayer {
                weight,
                bias,
                stride: l.stride,
                residual: l.residual,
            });
        }
        Ok(Plan {
            layers,
            head_w: self.head_slice(cfg.width)?.detach().contiguous()?,
            head_b: self.head_b.as_tensor().detach().copy()?,
        })
    }

    /// Drops every plan after the weights or statistics changed, and rebuilds the active one.
    pub(crate) fn invalidate_plans(&mut self) -> Result<()> {
        for p in &mut self.plans {
            *p = None;
        }
        self.set_subnet_index(self.active)
    }

    /// Every trainable tensor.
    pub(crate) fn vars(&self) -> Vec<Var> {
        let mut v = Vec::new();
        for c in &self.convs {
            v.extend([c.weight.clone(), c.gamma.clone(), c.beta.clone()]);
        }
        v.extend([self.head_w.clone(), self.head_b.clone()]);
        v
    }

    /// Logits of sub-network `subnet` in training mode: BatchNorm normalises with the batch's
    /// statistics, and gradients flow to the shared weights. When `stats` is given, each
    /// layer's batch mean and variance are appended to it.
    pub(crate) fn forward_train(
        &self,
        images: &Tensor,
        subnet: &SubnetConfig,
        mut stats: Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let mut x = self.check_input(images)?.permute((0, 2, 3, 1))?;
        for l in self.arch.active_layers(subnet) {
            let (w, gamma, beta) = self.conv_slice(&l, subnet.width)?;
            let y = conv3x3(&x, &w, l.stride)?;
            if let Some(s) = stats.as_deref_mut() {
                s.push(channel_stats(&y)?);
            }
            x = batch_norm_relu(&y, &gamma, &beta, l.residual.then_some(&x))?;
        }
        let pooled = x.mean((1, 2))?;
        Ok(pooled
            .matmul(&self.head_slice(subnet.width)?)?
            .broadcast_add(&self.head_b)?)
    }

    /// Replaces candidate `index`'s BatchNorm statistics (means and variances per active
    /// layer, in order).
    pub(crate) fn set_bn_stats(
        &mut self,
        index: usize,
        stats: Vec<(Tensor, Tensor)>,
    ) -> Result<()> {
        let layers = self.arch.active_layers(&self.candidates[index].config);
        if layers.len() != stats.len() {
            return Err(Error::InvalidSetting(format!(
                "{} BatchNorm statistics for {} layers",
                stats.len(),
                layers.len()
            )));
        }
        self.bn[index] = layers
            .iter()
            .zip(stats)
            .map(|(l, (mean, var))| BnStats {
                layer: l.name.clone(),
                mean,
                var,
            })
            .collect();
        self.plans[index] = None;
        Ok(())
    }

    fn bn_tensor_name(candidate: &str, layer: &str, what: &str) -> String {
        format!("bn.{candidate}.{layer}.{what}")
    }

    /// Writes the shared weights, every candidate's BatchNorm statistics and the manifest
    /// (architecture, candidates with MACs and accuracy, data set, training run) to one
    /// safetensors file; the file is replaced atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (l, p) in self.arch.layers().iter().zip(&self.convs) {
            tensors.push((format!("{}.weight", l.name), p.weight.as_tensor().clone()));
            tensors.push((format!("{}.bn.gamma", l.name), p.gamma.as_tensor().clone()));
            tensors.push((format!("{}.bn.beta", l.name), p.beta.as_tensor().clone()));
        }
        tensors.push(("head.weight".into(), self.head_w.as_tensor().clone()));
        tensors.push(("head.bias".into(), self.head_b.as_tensor().clone()));
        for (c, stats) in self.candidates.iter().zip(&self.bn) {
            for s in stats {
                tensors.push((
                    Self::bn_tensor_name(&c.name, &s.layer, "mean"),
                    s.mean.clone(),
                ));
                tensors.push((
                    Self::bn_tensor_name(&c.name, &s.layer, "var"),
                    s.var.clone(),
                ));
            }
        }
        let manifest = serde_json::to_string(&self.manifest()).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("cannot encode the manifest: {e}"),
        })?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), manifest)]);
        safetensors::serialize_to_file(
            tensors.iter().map(|(k, t)| (k.as_str(), t)),
            Some(metadata),
            path,
        )
        .map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("cannot write: {e}"),
        })
    }

    /// Reads only the manifest of a weights file: candidates, MACs and stored accuracy,
    /// without building the network.
    pub fn read_manifest(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        manifest_of(path, &bytes)
    }

    /// Loads a weights file written by [`SuperNet::save`] onto `device` and prepares every
    /// candidate's plan. The active candidate is the largest.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<SuperNet> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let manifest = manifest_of(path, &bytes)?;
        let bad = |reason: String| Error::Weights {
            path: path.to_path_buf(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let arch = manifest.arch.clone();
        arch.validate()
            .map_err(|e| bad(format!("manifest describes an unusable architecture: {e}")))?;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let view = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != shape {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    shape
                )));
            }
            Ok(view.load(device)?)
        };
        let mut convs = Vec::new();
        for l in arch.layers() {
            let (cin, cout) = (l.in_channels, l.out_channels);
            convs.push(ConvParams {
                weight: Var::from_tensor(&get(&format!("{}.weight", l.name), &[3, 3, cin, cout])?)?,
                gamma: Var::from_tensor(&get(&format!("{}.bn.gamma", l.name), &[cout])?)?,
                beta: Var::from_tensor(&get(&format!("{}.bn.beta", l.name), &[cout])?)?,
            });
        }
        let c = arch.head_channels(1.0);
        let head_w = Var::from_tensor(&get("head.weight", &[c, arch.num_classes])?)?;
        let head_b = Var::from_tensor(&get("head.bias", &[arch.num_classes])?)?;
        let mut candidates = Vec::new();
        let mut bn = Vec::new();
        for stored in &manifest.candidates {
            stored
                .config
                .validate(&arch)
                .map_err(|e| bad(e.to_string()))?;
            if stored.name != stored.config.name() {
                return Err(bad(format!(
                    "candidate named {} has the configuration of {}",
                    stored.name,
                    stored.config.name()
                )));
            }
            let mut stats = Vec::new();
            for l in arch.active_layers(&stored.config) {
                let (_, cout) = l.channels_at(stored.config.width);
                let mean = get(
                    &Self::bn_tensor_name(&stored.name, &l.name, "mean"),
                    &[cout],
                )
                .map_err(|e| {
                    bad(format!(
                        "no BatchNorm statistics for sub-network {}: {e}",
                        stored.name
                    ))
                })?;
                let var = get(&Self::bn_tensor_name(&stored.name, &l.name, "var"), &[cout])
                    .map_err(|e| {
                        bad(format!(
                            "no BatchNorm statistics for sub-network {}: {e}",
                            stored.name
                        ))
                    })?;
                stats.push(BnStats {
                    layer: l.name.clone(),
                    mean,
                    var,
                });
            }
            bn.push(stats);
            // MACs and parameters are recomputed, never trusted from the file.
            let mut cand = candidate(&arch, stored.config.clone());
            cand.top1 = stored.top1;
            candidates.push(cand);
        }
        if candidates.is_empty() {
            return Err(bad("the manifest lists no candidate sub-networks".into()));
        }
        if candidates.windows(2).any(|p| p[0].macs > p[1].macs) {
            return Err(bad("candidates are not in ascending order of MACs".into()));
        }
        set_relative_macs(&mut candidates);
        let n = candidates.len();
        let mut net = SuperNet {
            arch,
            device: device.clone(),
            convs,
            head_w,
            head_b,
            candidates,
            bn,
            plans: (0..n).map(|_| None).collect(),
            active: n - 1,
            provenance: manifest.provenance,
        };
        net.prepare_all()?;
        Ok(net)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })
}

fn manifest_of(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    let bad = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            bad(format!(
                "no {METADATA_KEY} manifest in the metadata: not a super-network weights file"
            ))
        })?;
    let manifest: Manifest = serde_json::from_str(json)
        .map_err(|e| bad(format!("malformed {METADATA_KEY} manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "format {:?}, this build reads {FORMAT:?}",
            manifest.format
        )));
    }
    Ok(manifest)
}
