//! The multi-layer perceptron classifier:
//!
//! ```text
//! (B,1,H,W) -flatten-> (B,H*W) -[linear h_i, activation, dropout]*-> (B,h_last)
//!           -linear classes, log-softmax-> (B,classes)
//! ```
//! Dropout follows every hidden layer.

use super::{ImageClassifier, ModelError, activate, check_dropout, linear};
use crate::models::seeded::dropout;
use crate::spec::{Activation, ModelSpec};
use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;

/// Hidden linear layers with an activation and dropout each, then a log-softmax output.
pub struct Mlp {
    hidden: Vec<Linear>,
    out: Linear,
    activation: Activation,
    dropout: f64,
}

impl Mlp {
    /// Builds the layers of `spec` for inputs of `inputs` features (pixels).
    ///
    /// Variables: `hidden{i}.weight` `(h_i, h_{i-1})`, `hidden{i}.bias`, `out.weight`, `out.bias`.
    pub fn new(
        spec: &ModelSpec,
        inputs: usize,
        classes: usize,
        vb: VarBuilder,
    ) -> Result<Self, ModelError> {
        check_dropout(spec.dropout)?;
        let mut features = inputs;
        let mut hidden = Vec::with_capacity(spec.hidden.len());
        for (i, &size) in spec.hidden.iter().enumerate() {
            if size == 0 {
                return Err(ModelError::Config {
                    key: format!("hidden[{i}]"),
                    message: "a hidden layer needs at least one unit".into(),
                });
            }
            hidden.push(linear(features, size, vb.pp(format!("hidden{i}")))?);
            features = size;
        }
        let out = linear(features, classes, vb.pp("out"))?;
        Ok(Mlp {
            hidden,
            out,
            activation: spec.activation,
            dropout: spec.dropout,
        })
    }
}

impl ImageClassifier for Mlp {
    fn forward(
        &self,
        xs: &Tensor,
        mut dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let mut ys = xs.flatten_from(1)?;
        for layer in &self.hidden {
            ys = activate(&layer.forward(&ys)?, self.activation)?;
            ys = dropout(&ys, self.dropout, dropout_rng.as_deref_mut())?;
        }
        candle_nn::ops::log_softmax(&self.out.forward(&ys)?, 1)
    }

    fn first_conv_activations(&self, _xs: &Tensor) -> Option<candle_core::Result<Tensor>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::init::seeded_var_builder;
    use crate::models::{build_image_classifier, parameter_count};
    use crate::spec::ModelKind;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use rand::SeedableRng;

    #[test]
    fn shapes_and_parameter_count() {
        let spec = ModelSpec {
            kind: ModelKind::Mlp,
            hidden: vec![32, 16],
            activation: Activation::Tanh,
            ..ModelSpec::default()
        };
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, ChaCha8Rng::seed_from_u64(0), DType::F32, &Device::Cpu);
        let model = build_image_classifier(&spec, 28, 28, 10, Default::default(), vb).unwrap();
        assert_eq!(
            parameter_count(&map),
            (784 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
        );
        let xs = Tensor::ones((4, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let ys = model
            .forward(&xs, Some(&mut ChaCha8Rng::seed_from_u64(1)))
            .unwrap();
        assert_eq!(ys.dims(), &[4, 10]);
        assert!(model.first_conv_activations(&xs).is_none());
    }

    #[test]
    fn no_hidden_layer_is_logistic_regression() {
        let spec = ModelSpec {
            kind: ModelKind::Mlp,
            hidden: vec![],
            ..ModelSpec::default()
        };
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, ChaCha8Rng::seed_from_u64(0), DType::F32, &Device::Cpu);
        build_image_classifier(&spec, 28, 28, 10, Default::default(), vb).unwrap();
        assert_eq!(parameter_count(&map), 7850);
    }
}
