//! A 2-D convolution computed as im2col + matrix product from ordinary tensor operations.
//!
//! Why not `candle_nn::Conv2d`: on the CPU, Candle's backward pass of `conv2d` always computes
//! the gradient of the input with its naive `conv_transpose2d` kernel (one short dot product
//! per output pixel and kernel offset), even for the first layer whose input (the image)
//! needs no gradient; that took ~80% of a homework-CNN training step. Built from `narrow`,
//! `stack` and `matmul`, the gradient goes through gemm, and nothing is computed for
//! untracked inputs. Same maths, same weight layout `(C_out, C_in, k, k)` as `Conv2d`,
//! and it runs on any device.

use candle_core::{Module, Result, Tensor};

/// A square-kernel convolution with symmetric zero padding.
#[derive(Debug, Clone)]
pub struct Im2colConv2d {
    /// `(C_out, C_in, k, k)`.
    weight: Tensor,
    /// `(C_out)`.
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Im2colConv2d {
    /// A convolution with `weight` `(C_out, C_in, k, k)` and optional `bias` `(C_out)`.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (_, _, kh, kw) = weight.dims4()?;
        if kh != kw {
            candle_core::bail!("only square kernels are supported, got {kh}x{kw}");
        }
        Ok(Im2colConv2d {
            weight,
            bias,
            stride: stride.max(1),
            padding,
        })
    }

    /// Every `stride`-th of `len` positions of dim `dim` starting at `start`.
    fn strided(&self, xs: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        if self.stride == 1 {
            return xs.narrow(dim, start, len);
        }
        // Take stride*len positions (padding the end if they run past it), fold them into
        // (len, stride) and keep the first of each group.
        let need = start + self.stride * len;
        let size = xs.dim(dim)?;
        let xs = if need > size {
            xs.pad_with_zeros(dim, 0, need - size)?
        } else {
            xs.clone()
        };
        let mut shape = xs.narrow(dim, start, self.stride * len)?.dims().to_vec();
        shape[dim] = len;
        shape.insert(dim + 1, self.stride);
        xs.narrow(dim, start, self.stride * len)?
            .reshape(shape)?
            .narrow(dim + 1, 0, 1)?
            .squeeze(dim + 1)
    }
}

impl Module for Im2colConv2d {
    /// `(B, C_in, H, W)` -> `(B, C_out, H', W')`, `H' = (H + 2p - k) / s + 1`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c_in, h, w) = xs.dims4()?;
        let (c_out, _, k, _) = self.weight.dims4()?;
        let p = self.padding;
        let xs = if p > 0 {
            xs.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
        } else {
            xs.clone()
        };
        let (Some(dh), Some(dw)) = ((h + 2 * p).checked_sub(k), (w + 2 * p).checked_sub(k)) else {
            candle_core::bail!("kernel {k} larger than padded input {h}x{w} + 2*{p}");
        };
        let (oh, ow) = (dh / self.stride + 1, dw / self.stride + 1);
        let mut patches = Vec::with_capacity(k * k);
        for ky in 0..k {
            let rows = self.strided(&xs, 2, ky, oh)?;
            for kx in 0..k {
                patches.push(self.strided(&rows, 3, kx, ow)?);
            }
        }
        // (B, C_in, k*k, H', W') -> (B, C_in*k*k, H'*W'), rows ordered like the weight's.
        let cols = Tensor::stack(&patches, 2)?.reshape((b, c_in * k * k, oh * ow))?;
        let w2 = self.weight.reshape((c_out, c_in * k * k))?;
        let ys = w2.broadcast_matmul(&cols)?.reshape((b, c_out, oh, ow))?;
        match &self.bias {
            Some(bias) => ys.broadcast_add(&bias.reshape((1, c_out, 1, 1))?),
            None => Ok(ys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::{Conv2d, Conv2dConfig};

    fn ramp(shape: (usize, usize, usize, usize), scale: f32) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Output and weight/bias gradients agree with Candle's own conv2d.
    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        for (k, stride, padding, hw) in [(5, 1, 2, 28), (3, 1, 0, 14), (3, 2, 1, 9), (2, 3, 0, 10)]
        {
            let x = ramp((2, 3, hw, hw), 0.01);
            let w = Var::from_tensor(&ramp((4, 3, k, k), 0.003)).unwrap();
            let bias = Var::new(&[0.1f32, -0.2, 0.3, 0.0], &Device::Cpu).unwrap();
            let ours = Im2colConv2d::new(
                w.as_tensor().clone(),
                Some(bias.as_tensor().clone()),
                stride,
                padding,
            )
            .unwrap();
            let cfg = Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            };
            let theirs = Conv2d::new(w.as_tensor().clone(), Some(bias.as_tensor().clone()), cfg);
            let (a, b) = (ours.forward(&x).unwrap(), theirs.forward(&x).unwrap());
            assert_eq!(a.dims(), b.dims(), "k{k} s{stride} p{padding}");
            assert!(
                max_diff(&a, &b) < 1e-5,
                "k{k} s{stride} p{padding}: {}",
                max_diff(&a, &b)
            );
            // A loss that weighs every output differently.
            let weights = ramp(a.dims4().unwrap(), 0.1);
            let ga = (a * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gb = (b * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&w, &bias] {
                let (x, y) = (
                    ga.get(v.as_tensor()).unwrap(),
                    gb.get(v.as_tensor()).unwrap(),
                );
                assert!(
                    max_diff(x, y) < 1e-3,
                    "k{k} s{stride} p{padding}: {}",
                    max_diff(x, y)
                );
            }
        }
    }
}
