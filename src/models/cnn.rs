//! The convolutional classifier; its defaults are the homework CNN (420,906 parameters):
//!
//! ```text
//! (B,1,28,28) -conv 8x5x5 pad 2, relu, maxpool 2-> (B,8,14,14)
//!             -conv 16x3x3 pad 0, relu, maxpool 2-> (B,16,6,6) -flatten-> (B,576)
//!             -linear 600, relu, dropout 0.3-> (B,600) -linear 120, relu-> (B,120)
//!             -linear 10, log-softmax-> (B,10)
//! ```
//! As in the homework, dropout follows the first hidden linear layer only.

use super::{ImageClassifier, ModelError, activate, check_dropout, linear};
use crate::models::conv::Im2colConv2d;
use crate::models::fused_conv::conv_block;
use crate::models::seeded::dropout;
use crate::models::shape::{ImageInput, conv_shapes};
use crate::spec::{Activation, ModelSpec};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;

/// One convolution block: conv -> activation -> optional max-pool.
///
/// On the CPU (f32) the whole block is one fused op ([`conv_block`]); elsewhere (CUDA) it is
/// Candle's `conv2d`, the activation and [`max_pool`] (or, for comparison, [`Im2colConv2d`]).
struct Block {
    conv: Im2colConv2d,
    /// `(C_out, C_in, k, k)` and `(C_out)`, the same tensors `conv` holds.
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    pool: usize,
}

/// Conv blocks, then hidden linear layers, then a log-softmax output layer.
pub struct Cnn {
    blocks: Vec<Block>,
    hidden: Vec<Linear>,
    out: Linear,
    activation: Activation,
    dropout: f64,
    gpu_conv: GpuConv,
}

impl Cnn {
    /// Builds the blocks and layers of `spec` for `rows x cols` single-channel images.
    ///
    /// Variables are named `conv{i}.weight`, `conv{i}.bias` (`(C_out, C_in, k, k)`, `(C_out)`),
    /// `hidden{i}.weight`, `hidden{i}.bias`, `out.weight`, `out.bias`.
    pub fn new(
        spec: &ModelSpec,
        rows: usize,
        cols: usize,
        classes: usize,
        gpu_conv: GpuConv,
        vb: VarBuilder,
    ) -> Result<Self, ModelError> {
        check_dropout(spec.dropout)?;
        let shapes = conv_shapes(&spec.conv, ImageInput::grey(rows, cols)).map_err(|e| {
            ModelError::Config {
                key: e.key.trim_start_matches("model.").to_string(),
                message: e.message,
            }
        })?;
        let mut c = 1usize;
        let mut blocks = Vec::with_capacity(spec.conv.len());
        for (i, (block, shape)) in spec.conv.iter().zip(&shapes).enumerate() {
            let padding = shape.padding;
            // PyTorch's nn.Conv2d default initialisation: uniform in ±1/sqrt(fan_in).
            let fan_in = c * block.kernel * block.kernel;
            let bound = 1.0 / (fan_in as f64).sqrt();
            let init = candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let vbi = vb.pp(format!("conv{i}"));
            let weight = vbi.get_with_hints(
                (block.channels, c, block.kernel, block.kernel),
                "weight",
                init,
            )?;
            let bias = vbi.get_with_hints(block.channels, "bias", init)?;
            blocks.push(Block {
                conv: Im2colConv2d::new(weight.clone(), Some(bias.clone()), block.stride, padding)?,
                weight,
                bias,
                stride: block.stride,
                padding,
                pool: block.pool,
            });
            c = block.channels;
        }
        let mut features = shapes.last().map_or(rows * cols, |s| s.output().features());
        let mut hidden = Vec::with_capacity(spec.hidden.len());
        for (i, &size) in spec.hidden.iter().enumerate() {
            hidden.push(linear(features, size, vb.pp(format!("hidden{i}")))?);
            features = size;
        }
        let out = linear(features, classes, vb.pp("out"))?;
        Ok(Cnn {
            blocks,
            hidden,
            out,
            activation: spec.activation,
            dropout: spec.dropout,
            gpu_conv,
        })
    }

    /// `(B, C, H, W)` -> `(B, C', H', W')` through one block, pooling by `pool`.
    ///
    /// `detach`: evaluation, where no gradient is wanted: the fused op then records nothing
    /// for a backward pass.
    fn block_forward(
        &self,
        block: &Block,
        xs: &Tensor,
        pool: usize,
        detach: bool,
    ) -> candle_core::Result<Tensor> {
        if xs.device().is_cpu() && xs.dtype() == DType::F32 && block.weight.dtype() == DType::F32 {
            let (w, b) = if detach {
                (block.weight.detach(), block.bias.detach())
            } else {
                (block.weight.clone(), block.bias.clone())
            };
            return conv_block(
                xs,
                &w,
                &b,
                block.stride,
                block.padding,
                pool,
                self.activation,
            );
        }
        let conv = if self.gpu_conv == GpuConv::Im2col {
            block.conv.forward(xs)?
        } else {
            let (w, b) = if detach {
                (block.weight.detach(), block.bias.detach())
            } else {
                (block.weight.clone(), block.bias.clone())
            };
            xs.conv2d(&w, block.padding, block.stride, 1, 1)?
                .broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?
        };
        let ys = activate(&conv, self.activation)?;
        if pool > 1 {
            max_pool(&ys, pool)
        } else {
            Ok(ys)
        }
    }
}

impl ImageClassifier for Cnn {
    fn forward(
        &self,
        xs: &Tensor,
        mut dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        // No dropout generator means evaluation (see the trait): no backward graph needed.
        let detach = dropout_rng.is_none();
        let mut ys = xs.clone();
        for block in &self.blocks {
            ys = self.block_forward(block, &ys, block.pool, detach)?;
        }
        let mut ys = ys.flatten_from(1)?;
        for (i, layer) in self.hidden.iter().enumerate() {
            ys = activate(&layer.forward(&ys)?, self.activation)?;
            if i == 0 {
                ys = dropout(&ys, self.dropout, dropout_rng.as_deref_mut())?;
            }
        }
        candle_nn::ops::log_softmax(&self.out.forward(&ys)?, 1)
    }

    fn first_conv_activations(&self, xs: &Tensor) -> Option<candle_core::Result<Tensor>> {
        let first = self.blocks.first()?;
        Some(self.block_forward(first, xs, 1, true))
    }
}

/// How convolutions run off the CPU (the CPU always takes the fused [`conv_block`]).
///
/// Candle's `conv2d` is the default because it needs a few kernel launches where the
/// tensor-op im2col needs one per kernel tap, forward and backward; the other is a benchmark
/// switch for comparing the two on a GPU (`scripts/device-check.sh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GpuConv {
    /// Candle's own `conv2d` (its CUDA im2col kernel and cuBLAS).
    #[default]
    Candle,
    /// [`Im2colConv2d`], built from tensor ops.
    Im2col,
}

/// Max-pool by `k` (floor) whose gradient goes whole to each window's first maximum in
/// row-major order, as in PyTorch and the fused CPU op. Candle 0.11's `max_pool2d` backward
/// scales it by ties/(k*k), a quarter for an untied 2x2 window, and a `max` reduction's
/// backward hands it to every tied maximum; ties are common (a background window after a
/// positive bias and ReLU is four equal values), so the index of the first maximum is
/// gathered instead (`argmax` keeps the first on the CPU and in Candle's CUDA kernel).
pub(crate) fn max_pool(ys: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = ys.dims4()?;
    let (ph, pw) = (h / k, w / k);
    let windows = ys
        .narrow(2, 0, ph * k)?
        .narrow(3, 0, pw * k)?
        .contiguous()?
        .reshape((b, c, ph, k, pw, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((b, c, ph, pw, k * k))?;
    let first_max = windows.argmax_keepdim(4)?;
    windows.gather(&first_max, 4)?.squeeze(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::init::seeded_var_builder;
    use crate::models::{build_image_classifier, parameter_count};
    use crate::spec::{ConvBlock, Padding, PaddingName};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use rand::SeedableRng;

    fn build(spec: &ModelSpec) -> (VarMap, Result<Box<dyn ImageClassifier>, ModelError>) {
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, ChaCha8Rng::seed_from_u64(0), DType::F32, &Device::Cpu);
        let model = build_image_classifier(spec, 28, 28, 10, GpuConv::default(), vb);
        (map, model)
    }

    #[test]
    fn default_is_the_homework_cnn_with_420906_parameters() {
        let (map, model) = build(&ModelSpec::default());
        let model = model.unwrap();
        assert_eq!(parameter_count(&map), 420_906);
        let xs = Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let ys = model.forward(&xs, None).unwrap();
        assert_eq!(ys.dims(), &[3, 10]);
        // Log-probabilities: each row exponentiates to a distribution.
        let sums: Vec<f32> = ys.exp().unwrap().sum(1).unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        let maps = model.first_conv_activations(&xs).unwrap().unwrap();
        assert_eq!(maps.dims(), &[3, 8, 28, 28]);
    }

    #[test]
    fn same_padding_stride_and_no_pool_shapes() {
        let spec = ModelSpec {
            conv: vec![
                ConvBlock {
                    channels: 4,
                    kernel: 3,
                    stride: 1,
                    padding: Padding::Named(PaddingName::Same),
                    pool: 0,
                },
                ConvBlock {
                    channels: 6,
                    kernel: 3,
                    stride: 2,
                    padding: Padding::Pixels(1),
                    pool: 2,
                },
            ],
            hidden: vec![],
            ..ModelSpec::default()
        };
        let (map, model) = build(&spec);
        let model = model.unwrap();
        // 28 -same-> 28 -stride 2, pad 1-> 14 -pool-> 7: 6*7*7 = 294 features -> 10.
        let expected = (4 * 9 + 4) + (6 * 4 * 9 + 6) + (294 * 10 + 10);
        assert_eq!(parameter_count(&map), expected);
        let xs = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&xs, None).unwrap().dims(), &[2, 10]);
        let maps = model.first_conv_activations(&xs).unwrap().unwrap();
        assert_eq!(maps.dims(), &[2, 4, 28, 28]);
    }

    #[test]
    fn impossible_configs_name_the_key() {
        let mut spec = ModelSpec::default();
        spec.conv[0].padding = Padding::Named(PaddingName::Same);
        spec.conv[0].kernel = 4;
        let e = build(&spec).1.err().unwrap();
        assert!(e.to_string().starts_with("model.conv.0.padding"), "{e}");
        let mut spec = ModelSpec::default();
        spec.conv[1].kernel = 40;
        let e = build(&spec).1.err().unwrap();
        assert!(e.to_string().starts_with("model.conv.1.kernel"), "{e}");
        let spec = ModelSpec {
            dropout: 1.0,
            ..ModelSpec::default()
        };
        assert!(build(&spec).1.is_err());
    }

    #[test]
    fn dropout_only_in_training_and_seeded() {
        let (_, model) = build(&ModelSpec::default());
        let model = model.unwrap();
        let xs = Tensor::ones((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let run = |rng: Option<&mut ChaCha8Rng>| -> Vec<f32> {
            model
                .forward(&xs, rng)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(run(None), run(None));
        let a = run(Some(&mut ChaCha8Rng::seed_from_u64(5)));
        assert_eq!(a, run(Some(&mut ChaCha8Rng::seed_from_u64(5))));
        assert_ne!(a, run(None));
    }
}
