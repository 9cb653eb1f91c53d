//! The numerical building blocks of training and inference, as candle custom operations
//! with hand-written CPU loops where candle's generic operations cost more than the
//! arithmetic: a 3x3 convolution on channels-last feature maps (im2col plus one matrix
//! product, whose backward pass is two more matrix products and a col2im), and BatchNorm
//! with batch statistics fused with the residual addition and the ReLU.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::error::Result;

/// Added to the variance before the square root in BatchNorm.
pub(crate) const BN_EPS: f64 = 1e-5;

/// 3x3 convolution, padding 1, stride 1 or 2, of `x` `[b, h, w, cin]` with `w`
/// `[9 * cin, cout]` (rows ordered kernel row, kernel column, input channel). `h` and `w`
/// must be multiples of `stride`.
pub(crate) fn conv3x3(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let (b, h, wd, _) = x.dims4()?;
    let cout = w.dim(1)?;
    let cols = x.contiguous()?.apply_op1(Im2Col { stride })?;
    Ok(cols
        .matmul(w)?
        .reshape((b, h / stride, wd / stride, cout))?)
}

/// Output pixel (oy, ox), kernel tap (ki, kj) reads input pixel (iy, ix), if inside.
#[inline]
fn source(o: usize, k: usize, stride: usize, n: usize) -> Option<usize> {
    (o * stride + k).checked_sub(1).filter(|&i| i < n)
}

/// im2col for a 3x3, padding-1 convolution on channels-last maps: `[b, h, w, c]` to
/// `[b * ho * wo, 9 * c]`, each row the nine neighbours' channels of one output pixel
/// (zeros outside the map). A plain loop of `c`-value copies: several times faster than
/// concatenating nine shifted views, and its backward pass (`Col2Im`) adds each row back
/// in one pass instead of padding nine gradients to full size.
struct Im2Col {
    stride: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("im2col3x3 needs a contiguous input")
        };
        let x = &storage.as_slice::<f32>()?[start..end];
        let s = self.stride;
        let (ho, wo) = (h / s, w / s);
        let row = 9 * c;
        let mut out = vec![0f32; b * ho * wo * row];
        for bi in 0..b {
            for oy in 0..ho {
                for ox in 0..wo {
                    let r = &mut out[((bi * ho + oy) * wo + ox) * row..][..row];
                    for ki in 0..3 {
                        let Some(iy) = source(oy, ki, s, h) else {
                            continue;
                        };
                        for kj in 0..3 {
                            let Some(ix) = source(ox, kj, s, w) else {
                                continue;
                            };
                            let src = &x[((bi * h + iy) * w + ix) * c..][..c];
                            r[(ki * 3 + kj) * c..][..c].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b * ho * wo, row))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        let op = Col2Im {
            dims: (b, h, w, c),
            stride: self.stride,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// The adjoint of [`Im2Col`]: adds every row's nine channel groups back onto the pixels
/// they were copied from.
struct Col2Im {
    dims: (usize, usize, usize, usize),
    stride: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = self.dims;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("col2im3x3 needs a contiguous input")
        };
        let cols = &storage.as_slice::<f32>()?[start..end];
        let s = self.stride;
        let (ho, wo) = (h / s, w / s);
        let row = 9 * c;
        if cols.len() != b * ho * wo * row {
            candle_core::bail!(
                "col2im3x3: {} values for {b}x{ho}x{wo} rows of {row}",
                cols.len()
            )
        }
        let mut out = vec![0f32; b * h * w * c];
        for bi in 0..b {
            for oy in 0..ho {
                for ox in 0..wo {
                    let r = &cols[((bi * ho + oy) * wo + ox) * row..][..row];
                    for ki in 0..3 {
                        let Some(iy) = source(oy, ki, s, h) else {
                            continue;
                        };
                        for kj in 0..3 {
                            let Some(ix) = source(ox, kj, s, w) else {
                                continue;
                            };
                            let dst = &mut out[((bi * h + iy) * w + ix) * c..][..c];
                            for (d, v) in dst.iter_mut().zip(&r[(ki * 3 + kj) * c..][..c]) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }
}

/// Per-channel BatchNorm of `x` `[b, h, w, c]` over its batch and pixels with the batch's
/// own statistics, scaled by `gamma`, shifted by `beta`, plus `skip` when given (a residual
/// connection), then ReLU: `relu(bn(x) + skip)`, one fused operation with a hand-written
/// backward pass. Candle's generic reductions over the batch axis and the chain of
/// broadcast operations they would take cost more than the convolutions they follow.
pub(crate) fn batch_norm_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    skip: Option<&Tensor>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let c = dims[dims.len() - 1];
    let flat = x.contiguous()?.reshape(((), c))?;
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let op = BnRelu {
        residual: skip.is_some(),
    };
    let out = match skip {
        Some(s) => flat.apply_op3(&gb, &s.contiguous()?.reshape(((), c))?, op)?,
        None => flat.apply_op3(&gb, &flat, op)?,
    };
    Ok(out.reshape(dims)?)
}

/// Per-channel mean and (biased) variance of `x` `[.., c]` over every other axis, outside
/// any gradient graph.
pub(crate) fn channel_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = x.dim(x.rank() - 1)?;
    let s = x
        .contiguous()?
        .reshape(((), c))?
        .apply_op1_no_bwd(&ChannelStats)?;
    Ok((s.get(0)?, s.get(1)?))
}

fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs contiguous inputs")
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// Per-channel mean and 1 / sqrt(var + eps) of `x` laid out as `n` rows of `c`.
fn mean_invstd(x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = (x.len() / c).max(1);
    let mut sum = vec![0f64; c];
    for row in x.chunks_exact(c) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += *v as f64;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n as f64) as f32).collect();
    let mut sq = vec![0f64; c];
    for row in x.chunks_exact(c) {
        for ((s, v), m) in sq.iter_mut().zip(row).zip(&mean) {
            let d = (v - m) as f64;
            *s += d * d;
        }
    }
    let var: Vec<f32> = sq.iter().map(|s| (s / n as f64) as f32).collect();
    let invstd = var
        .iter()
        .map(|v| 1.0 / (v + BN_EPS as f32).sqrt())
        .collect();
    (mean, var, invstd)
}

/// `relu(bn(x) + skip)`; arguments `x` `[n, c]`, `gamma; beta` `[2, c]`, `skip` `[n, c]`
/// (ignored unless `residual`).
struct BnRelu {
    residual: bool,
}

impl CustomOp3 for BnRelu {
    fn name(&self) -> &'static str {
        "batch-norm-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let gb = contiguous_f32(s2, l2, self.name())?;
        let skip = contiguous_f32(s3, l3, self.name())?;
        let (gamma, beta) = gb.split_at(c);
        let (mean, _, invstd) = mean_invstd(x, c);
        let scale: Vec<f32> = gamma.iter().zip(&invstd).map(|(g, i)| g * i).collect();
        let shift: Vec<f32> = beta
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        let mut out = Vec::with_capacity(n * c);
        for (r, row) in x.chunks_exact(c).enumerate() {
            let skip_row = if self.residual {
                &skip[r * c..(r + 1) * c]
            } else {
                &[][..]
            };
            for ch in 0..c {
                let mut v = row[ch] * scale[ch] + shift[ch];
                if self.residual {
                    v += skip_row[ch];
                }
                out.push(v.max(0.0));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _skip: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(0)?;
        // Through the ReLU: the gradient where the output is positive.
        let g = grad.contiguous()?.apply_op2_no_bwd(out, &ReluGrad)?;
        let packed = x.apply_op3_no_bwd(gb, &g, &BnBackward)?;
        let dx = packed.narrow(0, 0, n)?;
        let dgb = packed.narrow(0, n, 2)?;
        Ok((Some(dx), Some(dgb), self.residual.then_some(g)))
    }
}

/// `grad * (out > 0)`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, self.name())?;
        let out = contiguous_f32(s2, l2, self.name())?;
        let v = g
            .iter()
            .zip(out)
            .map(|(g, o)| if *o > 0.0 { *g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(v), l1.shape().clone()))
    }
}

/// Gradients of BatchNorm with batch statistics; arguments `x` `[n, c]`, `gamma; beta`
/// `[2, c]`, output gradient `g` `[n, c]`; result `[n + 2, c]`: `dx`, then `dgamma`, `dbeta`.
struct BnBackward;

impl CustomOp3 for BnBackward {
    fn name(&self) -> &'static str {
        "batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let gamma = &contiguous_f32(s2, l2, self.name())?[..c];
        let g = contiguous_f32(s3, l3, self.name())?;
        let (mean, _, invstd) = mean_invstd(x, c);
        let mut sum_g = vec![0f64; c];
        let mut sum_gx = vec![0f64; c];
        for (xr, gr) in x.chunks_exact(c).zip(g.chunks_exact(c)) {
            for ch in 0..c {
                let xhat = (xr[ch] - mean[ch]) * invstd[ch];
                sum_g[ch] += gr[ch] as f64;
                sum_gx[ch] += (gr[ch] * xhat) as f64;
            }
        }
        let nf = n as f32;
        let mean_g: Vec<f32> = sum_g.iter().map(|s| (*s / n as f64) as f32).collect();
        let mean_gx: Vec<f32> = sum_gx.iter().map(|s| (*s / n as f64) as f32).collect();
        let k: Vec<f32> = gamma.iter().zip(&invstd).map(|(g, i)| g * i).collect();
        let mut out = Vec::with_capacity((n + 2) * c);
        for (xr, gr) in x.chunks_exact(c).zip(g.chunks_exact(c)) {
            for ch in 0..c {
                let xhat = (xr[ch] - mean[ch]) * invstd[ch];
                out.push(k[ch] * (gr[ch] - mean_g[ch] - xhat * mean_gx[ch]));
            }
        }
        out.extend(mean_gx.iter().map(|m| m * nf));
        out.extend(mean_g.iter().map(|m| m * nf));
        Ok((CpuStorage::F32(out), Shape::from((n + 2, c))))
    }
}

/// Per-channel mean and variance of `[n, c]`: result `[2, c]`.
struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "channel-stats"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c) = layout.shape().dims2()?;
        let x = contiguous_f32(storage, layout, self.name())?;
        let (mut mean, var, _) = mean_invstd(x, c);
        mean.extend(var);
        Ok((CpuStorage::F32(mean), Shape::from((2, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The im2col convolution must agree with candle's own conv2d (NCHW) for both strides.
    #[test]
    fn conv3x3_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let (b, h, cin, cout) = (2, 8, 3, 5);
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev).unwrap();
        // [cout, cin, kh, kw] -> [kh, kw, cin, cout] -> [9 cin, cout]
        let w = k
            .permute((2, 3, 1, 0))
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((9 * cin, cout))
            .unwrap();
        let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        for stride in [1, 2] {
            let want = x.conv2d(&k, 1, stride, 1, 1).unwrap();
            let got = conv3x3(&x_nhwc, &w, stride)
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap();
            assert_eq!(want.dims(), got.dims());
            let diff = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "stride {stride}: max difference {diff}");
        }
    }

    /// The input gradient through im2col must equal candle's conv2d input gradient.
    #[test]
    fn conv3x3_input_gradient_matches_candle() {
        let dev = Device::Cpu;
        let (b, h, cin, cout) = (2, 6, 4, 3);
        let x = candle_core::Var::randn(0f32, 1.0, (b, cin, h, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev).unwrap();
        let w = k
            .permute((2, 3, 1, 0))
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((9 * cin, cout))
            .unwrap();
        for stride in [1, 2] {
            let want = x
                .conv2d(&k, 1, stride, 1, 1)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let want = want.backward().unwrap().get(&x).unwrap().clone();
            let x_nhwc = x.permute((0, 2, 3, 1)).unwrap();
            let got = conv3x3(&x_nhwc, &w, stride)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let got = got.backward().unwrap().get(&x).unwrap().clone();
            let diff = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff < 1e-3,
                "stride {stride}: max gradient difference {diff}"
            );
        }
    }

    /// The fused BatchNorm-ReLU and its gradients must agree with the same computation
    /// written with candle's generic operations.
    #[test]
    fn batch_norm_relu_matches_reference_and_gradients() {
        let dev = Device::Cpu;
        let (n, c) = (37, 5);
        let x = candle_core::Var::randn(0f32, 2.0, (n, c), &dev).unwrap();
        let skip = candle_core::Var::randn(0f32, 1.0, (n, c), &dev).unwrap();
        let gamma = candle_core::Var::randn(1f32, 0.3, c, &dev).unwrap();
        let beta = candle_core::Var::randn(0f32, 0.3, c, &dev).unwrap();
        let weights = Tensor::randn(0f32, 1.0, (n, c), &dev).unwrap();
        let reference = |residual: bool| -> Tensor {
            let mean = x.mean_keepdim(0).unwrap();
            let centred = x.broadcast_sub(&mean).unwrap();
            let var = centred.sqr().unwrap().mean_keepdim(0).unwrap();
            let y = centred
                .broadcast_div(&(var + BN_EPS).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&gamma.unsqueeze(0).unwrap())
                .unwrap()
                .broadcast_add(&beta.unsqueeze(0).unwrap())
                .unwrap();
            let y = if residual {
                (y + skip.as_tensor()).unwrap()
            } else {
                y
            };
            y.relu().unwrap()
        };
        for residual in [false, true] {
            let want = reference(residual);
            let got =
                batch_norm_relu(&x, &gamma, &beta, residual.then_some(skip.as_tensor())).unwrap();
            let max_diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert!(max_diff(&want, &got) < 1e-4, "forward, residual {residual}");
            let gw = (want * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gg = (got * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in [("x", &x), ("gamma", &gamma), ("beta", &beta)] {
                let d = max_diff(gw.get(v).unwrap(), gg.get(v).unwrap());
                assert!(d < 1e-3, "d{name}, residual {residual}: max difference {d}");
            }
            if residual {
                let d = max_diff(gw.get(&skip).unwrap(), gg.get(&skip).unwrap());
                assert!(d < 1e-4, "dskip: max difference {d}");
            }
        }
    }
}
