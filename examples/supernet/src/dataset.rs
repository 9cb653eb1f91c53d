//! A procedurally generated image-classification data set, so that training and evaluation
//! need nothing downloaded: ten classes of shapes and textures drawn at a random position,
//! size, rotation and colour over a graded background with clutter and pixel noise.
//!
//! Every image is a pure function of (data-set seed, split, index), so the held-out split an
//! evaluation regenerates from the configuration stored with the weights is the same one the
//! training run scored.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::{splitmix64, Rng};

/// Names of the ten classes, by label.
pub const CLASS_NAMES: [&str; 10] = [
    "disc",
    "ring",
    "square",
    "square-outline",
    "triangle",
    "plus",
    "striped-disc",
    "checkered-square",
    "disc-pair",
    "bar",
];

/// Mean and spread used to standardise pixel values (drawn in [0, 1]).
const PIXEL_MEAN: f32 = 0.5;
const PIXEL_STD: f32 = 0.25;

/// How a data set is drawn. Stored with trained weights so the held-out split can be
/// regenerated exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetConfig {
    /// Height and width of every image, in pixels (3 colour channels).
    pub image_size: usize,
    /// Seed of the data set (independent of the training seed).
    pub seed: u64,
    /// Images in the training split.
    pub train: usize,
    /// Images in the calibration split (BatchNorm statistics per sub-network).
    pub calib: usize,
    /// Images in the held-out test split.
    pub test: usize,
    /// Standard deviation of the per-pixel Gaussian noise, in [0, 1] pixel units.
    pub noise: f32,
    /// Most clutter strokes drawn under the shape.
    pub clutter: usize,
    /// Smallest shape radius, as a fraction of the image side.
    pub min_scale: f32,
    /// Largest shape radius, as a fraction of the image side.
    pub max_scale: f32,
    /// Least RGB distance between the shape's colour and the background's.
    pub min_contrast: f32,
}

impl Default for DatasetConfig {
    /// The data set the default super-network trains on: 32x32 images.
    fn default() -> Self {
        DatasetConfig {
            image_size: 32,
            seed: 2024,
            train: 12_000,
            calib: 1_024,
            test: 2_000,
            noise: 0.05,
            clutter: 1,
            min_scale: 0.24,
            max_scale: 0.36,
            min_contrast: 0.30,
        }
    }
}

impl DatasetConfig {
    /// A small, easier data set of 16x16 images for tests.
    pub fn tiny() -> Self {
        DatasetConfig {
            image_size: 16,
            seed: 2024,
            train: 4_000,
            calib: 256,
            test: 500,
            noise: 0.03,
            clutter: 0,
            min_scale: 0.3,
            max_scale: 0.45,
            min_contrast: 0.4,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.image_size < 8
            || !(self.min_scale > 0.0 && self.min_scale <= self.max_scale && self.max_scale < 0.5)
        {
            return Err(Error::InvalidSetting(format!(
                "data set: image_size {} must be >= 8 and 0 < min_scale {} <= max_scale {} < 0.5",
                self.image_size, self.min_scale, self.max_scale
            )));
        }
        Ok(())
    }
}

/// One of the three disjoint splits of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Gradient steps.
    Train,
    /// Per-sub-network BatchNorm statistics.
    Calibration,
    /// Held out: accuracy only.
    Test,
}

impl Split {
    fn id(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Calibration => 2,
            Split::Test => 3,
        }
    }
}

/// Images and labels in memory, channel-major (`[n, 3, size, size]`), standardised.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `len() * 3 * size * size` values.
    pub images: Vec<f32>,
    /// One label per image, in `0..10`.
    pub labels: Vec<u32>,
    /// Side of every image, in pixels.
    pub image_size: usize,
}

impl Dataset {
    /// Draws `split` of the data set `cfg` describes; labels are balanced across classes.
    pub fn generate(cfg: &DatasetConfig, split: Split) -> Result<Dataset> {
        cfg.validate()?;
        let n = match split {
            Split::Train => cfg.train,
            Split::Calibration => cfg.calib,
            Split::Test => cfg.test,
        };
        let per = 3 * cfg.image_size * cfg.image_size;
        let mut images = vec![0f32; n * per];
        let mut labels = vec![0u32; n];
        let base = splitmix64(cfg.seed ^ splitmix64(split.id()));
        for (i, (img, label)) in images.chunks_mut(per).zip(labels.iter_mut()).enumerate() {
            let class = i % CLASS_NAMES.len();
            let mut rng = Rng::new(splitmix64(base ^ i as u64));
            draw(cfg, class, &mut rng, img);
            *label = class as u32;
        }
        Ok(Dataset {
            images,
            labels,
            image_size: cfg.image_size,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values of one image, `3 * size * size` of them, channel-major.
    pub fn image(&self, i: usize) -> &[f32] {
        let per = 3 * self.image_size * self.image_size;
        &self.images[i * per..(i + 1) * per]
    }

    /// Images `indices` as a `[b, 3, size, size]` tensor and their labels as `[b]` u32.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let per = 3 * self.image_size * self.image_size;
        let mut x = Vec::with_capacity(indices.len() * per);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.image(i));
            y.push(self.labels[i]);
        }
        let s = self.image_size;
        let x = Tensor::from_vec(x, (indices.len(), 3, s, s), device)?;
        let y = Tensor::from_vec(y, indices.len(), device)?;
        Ok((x, y))
    }
}

/// Whether the point (u, v), in the shape's own frame (unit radius), is inside class `class`.
/// `p` holds per-image shape parameters (inner radius, stripe frequency).
fn inside(class: usize, u: f32, v: f32, p: &[f32; 2]) -> bool {
    let r2 = u * u + v * v;
    let box_ = u.abs().max(v.abs());
    match class {
        0 => r2 <= 1.0,
        1 => r2 <= 1.0 && r2 >= p[0] * p[0],
        2 => box_ <= 0.8,
        3 => box_ <= 0.8 && box_ >= 0.8 * p[0],
        4 => {
            let s3 = 3f32.sqrt();
            v >= -0.5 && s3 * u + v <= 1.0 && -s3 * u + v <= 1.0
        }
        5 => (u.abs() <= 0.25 && v.abs() <= 0.9) || (v.abs() <= 0.25 && u.abs() <= 0.9),
        6 => r2 <= 1.0 && (u * p[1]).rem_euclid(1.0) < 0.5,
        7 => {
            box_ <= 0.8 && {
                let (a, b) = ((u * p[1]).floor() as i32, (v * p[1]).floor() as i32);
                (a + b).rem_euclid(2) == 0
            }
        }
        8 => {
            let d = |cx: f32| (u - cx) * (u - cx) + v * v <= 0.42 * 0.42;
            d(0.5) || d(-0.5)
        }
        _ => u * u + (v / 0.38) * (v / 0.38) <= 1.0,
    }
}

fn colour(rng: &mut Rng) -> [f32; 3] {
    [rng.unit(), rng.unit(), rng.unit()]
}

fn distance(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Draws one image of `class` into `out` (channel-major, standardised).
fn draw(cfg: &DatasetConfig, class: usize, rng: &mut Rng, out: &mut [f32]) {
    let n = cfg.image_size;
    let nf = n as f32;
    let plane = n * n;

    // Background: a colour with a linear gradient in a random direction.
    let bg = colour(rng);
    let grad_angle = rng.range(0.0, std::f32::consts::TAU);
    let grad = rng.range(0.0, 0.35);
    let (gx, gy) = (grad_angle.cos() * grad, grad_angle.sin() * grad);
    let mut rgb = vec![[0f32; 3]; plane];
    for y in 0..n {
        for x in 0..n {
            let t = (x as f32 / nf - 0.5) * gx + (y as f32 / nf - 0.5) * gy;
            rgb[y * n + x] = [bg[0] + t, bg[1] + t, bg[2] + t];
        }
    }

    // Clutter: thin strokes of random colour under the shape.
    let strokes = rng.below(cfg.clutter + 1);
    for _ in 0..strokes {
        let c = colour(rng);
        let (x0, y0) = (rng.range(0.0, nf), rng.range(0.0, nf));
        let a = rng.range(0.0, std::f32::consts::TAU);
        let len = rng.range(0.2, 0.5) * nf;
        let steps = (len * 2.0) as usize;
        for k in 0..steps {
            let t = k as f32 / 2.0;
            let (x, y) = (x0 + a.cos() * t, y0 + a.sin() * t);
            if x >= 0.0 && y >= 0.0 && (x as usize) < n && (y as usize) < n {
                rgb[y as usize * n + x as usize] = c;
            }
        }
    }

    // The shape: random colour far enough from the background, size, place, rotation.
    let mut fg = colour(rng);
    for _ in 0..32 {
        if distance(&fg, &bg) >= cfg.min_contrast {
            break;
        }
        fg = colour(rng);
    }
    let radius = rng.range(cfg.min_scale, cfg.max_scale) * nf;
    let margin = radius * 0.8;
    let cx = rng.range(margin, nf - margin);
    let cy = rng.range(margin, nf - margin);
    let theta = rng.range(0.0, std::f32::consts::TAU);
    let (sin, cos) = theta.sin_cos();
    let params = [rng.range(0.45, 0.65), rng.range(1.6, 2.2)];
    // 2x2 supersampling gives soft edges, so small shapes are not just aliasing patterns.
    const SUB: [f32; 2] = [0.25, 0.75];
    for y in 0..n {
        for x in 0..n {
            let mut hits = 0;
            for sy in SUB {
                for sx in SUB {
                    let dx = (x as f32 + sx - cx) / radius;
                    let dy = (y as f32 + sy - cy) / radius;
                    let u = cos * dx + sin * dy;
                    let v = -sin * dx + cos * dy;
                    if inside(class, u, v, &params) {
                        hits += 1;
                    }
                }
            }
            if hits > 0 {
                let a = hits as f32 / 4.0;
                let p = &mut rgb[y * n + x];
                for ch in 0..3 {
                    p[ch] = p[ch] * (1.0 - a) + fg[ch] * a;
                }
            }
        }
    }

    // Per-image contrast and brightness jitter, then pixel noise.
    let contrast = rng.range(0.75, 1.25);
    let brightness = rng.range(-0.1, 0.1);
    for (i, p) in rgb.iter().enumerate() {
        for ch in 0..3 {
            let v = (p[ch] - 0.5) * contrast + 0.5 + brightness + cfg.noise * rng.normal();
            out[ch * plane + i] = (v.clamp(0.0, 1.0) - PIXEL_MEAN) / PIXEL_STD;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_config_gives_same_images_and_splits_differ() {
        let cfg = DatasetConfig {
            train: 20,
            calib: 20,
            test: 20,
            ..DatasetConfig::tiny()
        };
        let a = Dataset::generate(&cfg, Split::Train).unwrap();
        let b = Dataset::generate(&cfg, Split::Train).unwrap();
        let t = Dataset::generate(&cfg, Split::Test).unwrap();
        assert_eq!(a.images, b.images);
        assert_ne!(a.images, t.images);
        assert_eq!(a.labels[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(a.images.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn every_class_draws_some_foreground() {
        for class in 0..CLASS_NAMES.len() {
            let inside_count = (0..400)
                .filter(|k| {
                    let u = (k % 20) as f32 / 10.0 - 1.0;
                    let v = (k / 20) as f32 / 10.0 - 1.0;
                    inside(class, u, v, &[0.55, 1.9])
                })
                .count();
            assert!(inside_count > 20, "class {class} covers {inside_count}/400");
        }
    }
}
