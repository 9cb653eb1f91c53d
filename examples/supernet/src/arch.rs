//! The shape of the super-network and of its sub-networks: which layers exist, how many
//! channels each has at a given width, and what a sub-network costs (MACs, parameters),
//! computed analytically from the shapes alone.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest network: every sub-network is a prefix (in depth) and a slice (in width) of it.
///
/// Layout: a 3x3 stem, then stages of 3x3 convolutions. The first block of a stage halves
/// the map and changes the channel count; every later block is
/// residual, `relu(x + bn(conv(x)))`, so dropping it leaves the identity. A global average
/// pool and one linear layer give the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// Channels of an input image (3: RGB).
    pub in_channels: usize,
    /// Height and width of an input image, in pixels.
    pub image_size: usize,
    /// Number of classes the head predicts.
    pub num_classes: usize,
    /// Output channels of the stem at width 1.0.
    pub stem_channels: usize,
    /// Stride of the stem (1 or 2); every stage's first block has stride 2.
    pub stem_stride: usize,
    /// Output channels of each stage at width 1.0.
    pub stage_channels: Vec<usize>,
    /// The most blocks each stage can run.
    pub stage_max_depths: Vec<usize>,
    /// The width multipliers a sub-network may use, ascending; the last is 1.0.
    pub width_mults: Vec<f64>,
}

impl Default for ArchConfig {
    /// The default super-network for 3x32x32 images: about 4.2 M MACs at its largest.
    fn default() -> Self {
        ArchConfig {
            in_channels: 3,
            image_size: 32,
            num_classes: 10,
            stem_channels: 16,
            stem_stride: 1,
            stage_channels: vec![16, 32, 64],
            stage_max_depths: vec![2, 3, 3],
            width_mults: vec![0.5, 0.75, 1.0],
        }
    }
}

/// One convolution of the super-network, at its largest.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// Position in [`ArchConfig::layers`].
    pub index: usize,
    /// Tensor-name prefix in the weights file: `stem` or `s{stage}.b{block}`.
    pub name: String,
    /// The stage it belongs to; `None` for the stem.
    pub stage: Option<usize>,
    /// Block index within its stage (0 for the stem).
    pub block: usize,
    /// Input channels at width 1.0.
    pub in_channels: usize,
    /// Output channels at width 1.0.
    pub out_channels: usize,
    /// 1 or 2.
    pub stride: usize,
    /// Side of the input feature map, in pixels.
    pub in_size: usize,
    /// Whether the block adds its input to its output (it then has equal in/out channels).
    pub residual: bool,
    /// Whether the input channel count follows the width multiplier (false for the stem,
    /// whose input is the image).
    pub elastic_input: bool,
}

impl LayerSpec {
    /// Side of the output feature map, in pixels.
    pub fn out_size(&self) -> usize {
        self.in_size / self.stride
    }

    /// Input and output channels when run at `width`.
    pub fn channels_at(&self, width: f64) -> (usize, usize) {
        let cin = if self.elastic_input {
            channels_at(self.in_channels, width)
        } else {
            self.in_channels
        };
        (cin, channels_at(self.out_channels, width))
    }
}

/// Channels of a layer with `max` channels at width 1.0 when run at width `width`.
pub fn channels_at(max: usize, width: f64) -> usize {
    ((max as f64 * width).round() as usize).max(1)
}

impl ArchConfig {
    /// A small super-network for 3x16x16 images, for tests and quick trials.
    pub fn tiny() -> Self {
        ArchConfig {
            in_channels: 3,
            image_size: 16,
            num_classes: 10,
            stem_channels: 8,
            stem_stride: 1,
            stage_channels: vec![8, 16, 32],
            stage_max_depths: vec![1, 2, 2],
            width_mults: vec![0.5, 1.0],
        }
    }

    /// Checks that the shapes are consistent; every constructor of a network calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArch(why));
        if self.in_channels == 0 || self.num_classes < 2 || self.stem_channels == 0 {
            return bad("in_channels, stem_channels must be > 0 and num_classes >= 2".into());
        }
        if self.stage_channels.is_empty()
            || self.stage_channels.len() != self.stage_max_depths.len()
        {
            return bad(format!(
                "stage_channels ({}) and stage_max_depths ({}) must be non-empty and of equal length",
                self.stage_channels.len(),
                self.stage_max_depths.len()
            ));
        }
        if self.stage_channels.contains(&0) || self.stage_max_depths.contains(&0) {
            return bad("every stage needs at least one channel and one block".into());
        }
        if !(1..=2).contains(&self.stem_stride) {
            return bad(format!("stem_stride {} must be 1 or 2", self.stem_stride));
        }
        let downsamplings = self.stage_channels.len() as u32 + self.stem_stride as u32 - 1;
        if self.image_size == 0 || !self.image_size.is_multiple_of(1 << downsamplings) {
            return bad(format!(
                "image_size {} must be a positive multiple of {}",
                self.image_size,
                1 << downsamplings
            ));
        }
        if self.width_mults.is_empty()
            || self.width_mults.iter().any(|w| !(*w > 0.0 && *w <= 1.0))
            || self.width_mults.windows(2).any(|p| p[0] >= p[1])
            || *self.width_mults.last().unwrap_or(&0.0) != 1.0
        {
            return bad(format!(
                "width_mults {:?} must be ascending, in (0, 1], and end with 1.0",
                self.width_mults
            ));
        }
        Ok(())
    }

    /// Every convolution of the largest network, in execution order.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let mut out = Vec::new();
        let mut size = self.image_size;
        out.push(LayerSpec {
            index: 0,
            name: "stem".into(),
            stage: None,
            block: 0,
            in_channels: self.in_channels,
            out_channels: self.stem_channels,
            stride: self.stem_stride,
            in_size: size,
            residual: false,
            elastic_input: false,
        });
        size /= self.stem_stride;
        let mut prev = self.stem_channels;
        for (s, (&ch, &depth)) in self
            .stage_channels
            .iter()
            .zip(&self.stage_max_depths)
            .enumerate()
        {
            for b in 0..depth {
                let stride = if b == 0 { 2 } else { 1 };
                out.push(LayerSpec {
                    index: out.len(),
                    name: format!("s{s}.b{b}"),
                    stage: Some(s),
                    block: b,
                    in_channels: if b == 0 { prev } else { ch },
                    out_channels: ch,
                    stride,
                    in_size: size,
                    residual: b > 0,
                    elastic_input: true,
                });
                size /= stride;
            }
            prev = ch;
        }
        out
    }

    /// The convolutions a sub-network runs, in execution order. The caller validates `subnet`.
    pub fn active_layers(&self, subnet: &SubnetConfig) -> Vec<LayerSpec> {
        self.layers()
            .into_iter()
            .filter(|l| match l.stage {
                None => true,
                Some(s) => l.block < subnet.depths[s],
            })
            .collect()
    }

    /// Channels of the feature map the head reads, at `width`.
    pub fn head_channels(&self, width: f64) -> usize {
        channels_at(*self.stage_channels.last().unwrap_or(&1), width)
    }

    /// Multiply-accumulates for one image through `subnet` (convolutions and the head;
    /// BatchNorm folds into the convolutions, ReLU and pooling are not counted).
    pub fn macs(&self, subnet: &SubnetConfig) -> u64 {
        let mut macs = 0u64;
        for l in self.active_layers(subnet) {
            let (cin, cout) = l.channels_at(subnet.width);
            let out = l.out_size() as u64;
            macs += out * out * 9 * cin as u64 * cout as u64;
        }
        macs + (self.head_channels(subnet.width) * self.num_classes) as u64
    }

    /// Parameters `subnet` uses (convolution weights, BatchNorm scale and shift, head).
    pub fn params(&self, subnet: &SubnetConfig) -> u64 {
        let mut n = 0u64;
        for l in self.active_layers(subnet) {
            let (cin, cout) = l.channels_at(subnet.width);
            n += (9 * cin * cout + 2 * cout) as u64;
        }
        n + ((self.head_channels(subnet.width) + 1) * self.num_classes) as u64
    }

    /// The largest sub-network: every block, width 1.0.
    pub fn largest(&self) -> SubnetConfig {
        SubnetConfig {
            depths: self.stage_max_depths.clone(),
            width: 1.0,
        }
    }

    /// A spread of sub-networks from smallest to largest: four depth patterns (all stages at
    /// one block, then a third, two thirds and all of the way to their maximum) times every
    /// width multiplier, deduplicated and sorted by MACs.
    pub fn default_candidates(&self) -> Vec<SubnetConfig> {
        const STEPS: usize = 4;
        let mut patterns: Vec<Vec<usize>> = Vec::new();
        for k in 0..STEPS {
            let depths: Vec<usize> = self
                .stage_max_depths
                .iter()
                .map(|&max| 1 + ((max - 1) as f64 * k as f64 / (STEPS - 1) as f64).round() as usize)
                .collect();
            if !patterns.contains(&depths) {
                patterns.push(depths);
            }
        }
        let mut out: Vec<SubnetConfig> = patterns
            .iter()
            .flat_map(|d| {
                self.width_mults.iter().map(move |&w| SubnetConfig {
                    depths: d.clone(),
                    width: w,
                })
            })
            .collect();
        out.sort_by_key(|s| (self.macs(s), s.name()));
        out
    }

    /// The architecture of a plain network with exactly `subnet`'s layers and channels: one
    /// width, no unused blocks. Training it gives the fixed baseline for that sub-network.
    pub fn fixed_for(&self, subnet: &SubnetConfig) -> ArchConfig {
        ArchConfig {
            stem_channels: channels_at(self.stem_channels, subnet.width),
            stage_channels: self
                .stage_channels
                .iter()
                .map(|&c| channels_at(c, subnet.width))
                .collect(),
            stage_max_depths: subnet.depths.clone(),
            width_mults: vec![1.0],
            ..self.clone()
        }
    }
}

/// One sub-network: how many blocks each stage runs and the width multiplier of every layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetConfig {
    /// Blocks run per stage, each in `1..=stage_max_depths[stage]`.
    pub depths: Vec<usize>,
    /// Width multiplier, one of the architecture's `width_mults`.
    pub width: f64,
}

impl SubnetConfig {
    /// Stable short name, e.g. `d2-2-3_w0.75`; [`SubnetConfig::parse`] reads it back.
    pub fn name(&self) -> String {
        let depths: Vec<String> = self.depths.iter().map(|d| d.to_string()).collect();
        let width = if self.width.fract() == 0.0 {
            format!("{:.1}", self.width)
        } else {
            format!("{}", self.width)
        };
        format!("d{}_w{}", depths.join("-"), width)
    }

    /// Reads a name written by [`SubnetConfig::name`].
    pub fn parse(name: &str) -> Result<SubnetConfig> {
        let bad = || Error::BadSubnetName(name.to_string());
        let rest = name.strip_prefix('d').ok_or_else(bad)?;
        let (depths, width) = rest.split_once("_w").ok_or_else(bad)?;
        let depths = depths
            .split('-')
            .map(|d| d.parse::<usize>().map_err(|_| bad()))
            .collect::<Result<Vec<_>>>()?;
        let width: f64 = width.parse().map_err(|_| bad())?;
        if depths.is_empty() || !width.is_finite() {
            return Err(bad());
        }
        Ok(SubnetConfig { depths, width })
    }

    /// Whether `arch` can run this sub-network.
    pub fn validate(&self, arch: &ArchConfig) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidSubnet(self.name(), why));
        if self.depths.len() != arch.stage_max_depths.len() {
            return bad(format!(
                "{} stage depths given, the architecture has {} stages",
                self.depths.len(),
                arch.stage_max_depths.len()
            ));
        }
        for (s, (&d, &max)) in self.depths.iter().zip(&arch.stage_max_depths).enumerate() {
            if d == 0 || d > max {
                return bad(format!("stage {s} depth {d} is outside 1..={max}"));
            }
        }
        if !arch
            .width_mults
            .iter()
            .any(|w| (w - self.width).abs() < 1e-9)
        {
            return bad(format!(
                "width {} is not one of {:?}",
                self.width, arch.width_mults
            ));
        }
        Ok(())
    }

    /// Whether two configurations name the same sub-network.
    pub fn same_as(&self, other: &SubnetConfig) -> bool {
        self.depths == other.depths && (self.width - other.width).abs() < 1e-9
    }
}

impl std::fmt::Display for SubnetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ArchConfig::default().default_candidates() {
            let back = SubnetConfig::parse(&s.name()).unwrap();
            assert!(back.same_as(&s), "{s} -> {back}");
        }
        assert_eq!(
            SubnetConfig {
                depths: vec![2, 2, 3],
                width: 0.75
            }
            .name(),
            "d2-2-3_w0.75"
        );
    }

    #[test]
    fn default_candidates_span_small_to_large() {
        let arch = ArchConfig::default();
        let c = arch.default_candidates();
        assert_eq!(c.len(), 12);
        assert!(c.first().unwrap().same_as(&SubnetConfig {
            depths: vec![1, 1, 1],
            width: 0.5
        }));
        assert!(c.last().unwrap().same_as(&arch.largest()));
        assert!(c.windows(2).all(|p| arch.macs(&p[0]) <= arch.macs(&p[1])));
        assert!(arch.macs(&c[11]) > 8 * arch.macs(&c[0]));
    }

    #[test]
    fn fixed_architecture_has_the_same_cost_as_its_subnet() {
        let arch = ArchConfig::default();
        for s in arch.default_candidates() {
            let fixed = arch.fixed_for(&s);
            fixed.validate().unwrap();
            assert_eq!(fixed.macs(&fixed.largest()), arch.macs(&s), "{s}");
            assert_eq!(fixed.params(&fixed.largest()), arch.params(&s), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_names_and_configs() {
        assert!(SubnetConfig::parse("d2-2_x0.5").is_err());
        assert!(SubnetConfig::parse("2-2_w0.5").is_err());
        assert!(SubnetConfig::parse("d2-a_w0.5").is_err());
        let arch = ArchConfig::default();
        let too_deep = SubnetConfig {
            depths: vec![3, 3, 3],
            width: 1.0,
        };
        assert!(too_deep.validate(&arch).is_err());
        let odd_width = SubnetConfig {
            depths: vec![1, 1, 1],
            width: 0.6,
        };
        assert!(odd_width.validate(&arch).is_err());
    }
}
