//! Models: image classifiers (`cnn`, `mlp`) and the character-level translator (`seq2seq`
//! with `attention`, `lstm` and `decode`), built from the `[model]` spec section.
//!
//! Every model takes a `VarBuilder` (see [`init::seeded_var_builder`] for seeded weights) and
//! draws dropout masks from a generator the caller passes, so nothing random escapes the
//! run's seed. Shapes are given in doc comments; `B` is the batch size.

pub mod attention;
pub mod cnn;
pub mod conv;
pub mod cpu_kernels;
pub mod decode;
pub mod fused_conv;
pub mod init;
pub mod lstm;
pub mod lstm_cell;
pub mod mlp;
pub mod seeded;
pub mod seq2seq;
pub mod seq2seq_cpu;
pub mod shape;

use crate::spec::{Activation, ModelKind, ModelSpec};
use candle_core::Tensor;
use candle_nn::{VarBuilder, VarMap};
use rand_chacha::ChaCha8Rng;

/// A model spec that cannot be built, or a tensor error while building.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A `[model]` key has a value the model cannot use.
    #[error("model.{key}: {message}")]
    Config { key: String, message: String },
    /// Candle refused an operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A classifier of single-channel images into `classes` classes.
pub trait ImageClassifier {
    /// `xs`: `(B, 1, H, W)` pixels -> `(B, classes)` log-probabilities.
    ///
    /// Dropout is active when `dropout_rng` is given (training) and off when it is `None`
    /// (evaluation: the result may carry no backward graph, so take no gradients of it).
    fn forward(
        &self,
        xs: &Tensor,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<Tensor>;

    /// Feature maps of the first convolution after its activation, before pooling:
    /// `(B, 1, H, W)` -> `(B, C, H', W')`; `None` for models without convolutions.
    fn first_conv_activations(&self, xs: &Tensor) -> Option<candle_core::Result<Tensor>>;
}

/// Builds the image classifier `spec.kind` names for `rows x cols` inputs; `gpu_conv` is how
/// a CNN's convolutions run off the CPU.
pub fn build_image_classifier(
    spec: &ModelSpec,
    rows: usize,
    cols: usize,
    classes: usize,
    gpu_conv: cnn::GpuConv,
    vb: VarBuilder,
) -> Result<Box<dyn ImageClassifier>, ModelError> {
    match spec.kind {
        ModelKind::Cnn => Ok(Box::new(cnn::Cnn::new(
            spec, rows, cols, classes, gpu_conv, vb,
        )?)),
        ModelKind::Mlp => Ok(Box::new(mlp::Mlp::new(spec, rows * cols, classes, vb)?)),
        ModelKind::Seq2seq => Err(ModelError::Config {
            key: "kind".into(),
            message: "seq2seq is not an image classifier; use cnn or mlp with image data".into(),
        }),
    }
}

/// Total number of scalar parameters held in `map`.
pub fn parameter_count(map: &VarMap) -> usize {
    map.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Applies the configured activation function.
pub(crate) fn activate(xs: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Relu => xs.relu(),
        Activation::Tanh => xs.tanh(),
    }
}

/// A linear layer with PyTorch's default initialisation (`nn.Linear`): weight and bias
/// uniform in `±1/sqrt(in_dim)`, drawn through `vb`.
pub(crate) fn linear(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<candle_nn::Linear> {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let init = candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(candle_nn::Linear::new(w, Some(b)))
}

/// Checks a dropout probability.
pub(crate) fn check_dropout(p: f64) -> Result<(), ModelError> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(ModelError::Config {
            key: "dropout".into(),
            message: format!("{p} is not a probability in [0, 1)"),
        })
    }
}
