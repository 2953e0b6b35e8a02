//! Seeded weight initialisation through a `VarBuilder` backend we control.
//!
//! Candle's CPU device cannot be seeded (`set_seed` errors there) and its initialisers draw
//! from an unseeded generator, so every variable a model asks for is drawn here, on the host,
//! from a `ChaCha8Rng`, then moved to the model's device and kept in a [`VarMap`] (which the
//! optimizers and checkpoints work on). Draws happen in the order the model creates its
//! variables, which is fixed by its code, so the same seed gives the same weights.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

/// A `VarBuilder` backend that creates missing variables from a seeded generator.
pub struct SeededInit {
    map: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

/// A `VarBuilder` whose new variables are drawn from `rng` and stored in `map`.
///
/// Variables already in `map` are returned as they are (so loading a checkpoint into the map
/// before building gives the saved weights).
pub fn seeded_var_builder(
    map: &VarMap,
    rng: ChaCha8Rng,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededInit {
        map: map.clone(),
        rng: Mutex::new(rng),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// Draws `n` values of `init` for a tensor of `shape` from `rng`, as `f64`.
pub fn draw(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f64> {
        (0..n)
            .map(|_| lo + (up - lo) * rng.random::<f64>())
            .collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f64> {
        (0..n).map(|_| mean + std * standard_normal(rng)).collect()
    };
    match init {
        Init::Const(v) => vec![v; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

/// One standard normal draw (Box-Muller; the second value is dropped to keep it simple).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SimpleBackend for SeededInit {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self
            .map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "shape mismatch on {name}: {shape:?} asked, {:?} stored",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = {
            let mut rng = self
                .rng
                .lock()
                .map_err(|_| candle_core::Error::Msg("init generator lock poisoned".into()))?;
            draw(init, &shape, &mut rng)
        };
        let host = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&host.to_device(dev)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let vars = self
            .map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        match vars.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("no variable named {name} and no shape to create it"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .map(|v| v.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn weights(seed: u64) -> Vec<f32> {
        let map = VarMap::new();
        let vb = seeded_var_builder(
            &map,
            ChaCha8Rng::seed_from_u64(seed),
            DType::F32,
            &Device::Cpu,
        );
        let w = vb
            .get_with_hints((3, 4), "w", Init::Uniform { lo: -0.5, up: 0.5 })
            .unwrap();
        w.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn same_seed_same_weights_and_bounds_respected() {
        let a = weights(7);
        assert_eq!(a, weights(7));
        assert_ne!(a, weights(8));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)), "{a:?}");
    }

    #[test]
    fn existing_variables_are_reused_not_redrawn() {
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, ChaCha8Rng::seed_from_u64(1), DType::F32, &Device::Cpu);
        let randn = Init::Randn {
            mean: 0.,
            stdev: 1.,
        };
        let a = vb.get_with_hints(5, "b", randn).unwrap();
        let b = vb.get_with_hints(5, "b", randn).unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        assert!(vb.get_with_hints(6, "b", Init::Const(0.)).is_err());
        assert_eq!(map.all_vars().len(), 1);
    }

    #[test]
    fn normal_draws_have_the_asked_spread() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let v = draw(
            Init::Randn {
                mean: 1.0,
                stdev: 2.0,
            },
            &Shape::from(20_000),
            &mut rng,
        );
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            (mean - 1.0).abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
