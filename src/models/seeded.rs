//! Named parameters drawn from a seeded generator, and the one seeded dropout of every model.
//!
//! Candle's CPU device cannot be seeded (and `candle_nn::Dropout` draws from the device's
//! unseeded generator), so every random number is drawn on the host from a `ChaCha8Rng` and
//! then moved to the device: the same seed gives the same weights and the same dropout masks
//! on every device and thread count.

use candle_core::{Device, Result, Shape, Tensor, Var};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

/// The trainable variables of a model, in creation order, by name.
#[derive(Debug, Default)]
pub struct Params {
    vars: Vec<(String, Var)>,
}

impl Params {
    /// An empty store.
    pub fn new() -> Self {
        Params::default()
    }

    /// Registers `values` as variable `name`; returns the tensor the model computes with
    /// (it shares storage with the variable, so optimizer updates are seen).
    pub fn add(
        &mut self,
        name: &str,
        values: Vec<f32>,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let t = Tensor::from_vec(values, shape, device)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(out)
    }

    /// A variable drawn uniformly from `[-bound, bound)`.
    pub fn uniform(
        &mut self,
        name: &str,
        shape: impl Into<Shape>,
        bound: f64,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let values = (0..shape.elem_count())
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        self.add(name, values, shape, device)
    }

    /// A variable drawn from the standard normal distribution (Box-Muller, so no extra crate).
    pub fn normal(
        &mut self,
        name: &str,
        shape: impl Into<Shape>,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let values = (0..shape.elem_count())
            .map(|_| standard_normal(rng))
            .collect();
        self.add(name, values, shape, device)
    }

    /// The variables with their names.
    pub fn named(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// One draw from N(0, 1).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Inverted dropout whose masks come from a seeded generator.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: ChaCha8Rng,
    /// Masks drawn beforehand, handed out in order instead of fresh draws (one shard of a
    /// batch whose masks were drawn for the whole batch).
    replay: Option<VecDeque<Vec<f32>>>,
    /// A replayed mask was missing or of the wrong size.
    replay_broken: bool,
}

impl Dropout {
    /// Drops each element with probability `p`, scaling the rest by 1/(1-p).
    pub fn new(p: f64, rng: ChaCha8Rng) -> Self {
        Dropout {
            p,
            rng,
            replay: None,
            replay_broken: false,
        }
    }

    /// A dropout with this one's rate that hands out `masks` in order (each must be
    /// requested at its exact size) and draws nothing itself; see
    /// [`Dropout::replay_complete`].
    pub fn replaying(&self, masks: Vec<Vec<f32>>) -> Self {
        Dropout {
            replay: Some(masks.into()),
            ..Dropout::new(self.p, self.rng.clone())
        }
    }

    /// For a replaying dropout: every mask was used, in order, at its size.
    pub fn replay_complete(&self) -> bool {
        !self.replay_broken && self.replay.as_ref().is_none_or(VecDeque::is_empty)
    }

    /// Applies a fresh mask to `x`.
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        let Some(mask) = self.mask(x.elem_count()) else {
            return Ok(x.clone());
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }

    /// The next `n` mask values (0 or 1/(1-p)), exactly those [`Dropout::apply`] would use
    /// on an `n`-element tensor; `None` when nothing is dropped. For callers that apply one
    /// mask piece by piece (the LSTM's time steps).
    pub fn mask(&mut self, n: usize) -> Option<Vec<f32>> {
        if self.p <= 0.0 {
            return None;
        }
        if let Some(queue) = &mut self.replay {
            return match queue.pop_front() {
                Some(m) if m.len() == n => Some(m),
                _ => {
                    // No silent fallback to fresh draws: the caller checks and fails.
                    self.replay_broken = true;
                    Some(vec![0.0; n])
                }
            };
        }
        Some(draw_mask(&mut self.rng, self.p, n))
    }
}

/// Mask elements drawn per bulk fill of the generator (8 bytes each).
const MASK_CHUNK: usize = 1024;

/// `n` inverted-dropout mask values for `0 < p`: 0 with probability `p`, else `1 / (1 - p)`
/// (all 0, drawing nothing, for `p >= 1`).
///
/// Each element is exactly `rng.random::<f64>() < p`, the masks this function always drew,
/// at a fraction of the cost: rand's f64 is the top 53 bits of `next_u64` times 2^-53, so
/// the test is `bits < ceil(p * 2^53)` on integers, and the generator's words come from one
/// bulk fill per chunk, in the order `next_u64` would take them (test
/// `bulk_masks_equal_one_draw_per_element`).
fn draw_mask(rng: &mut ChaCha8Rng, p: f64, n: usize) -> Vec<f32> {
    if p >= 1.0 {
        return vec![0.0; n];
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let threshold = (p * (1u64 << 53) as f64).ceil() as u64;
    let mut out = Vec::with_capacity(n);
    let mut bytes = [0u8; 8 * MASK_CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(MASK_CHUNK);
        let chunk = &mut bytes[..8 * k];
        rng.fill_bytes(chunk);
        out.extend(chunk.chunks_exact(8).map(|b| {
            let word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            if word >> 11 < threshold { 0.0 } else { scale }
        }));
        left -= k;
    }
    out
}

/// Zeroes each element of `xs` with probability `p` and scales the rest by `1 / (1 - p)`,
/// drawing from `rng` as [`Dropout`] does; for models that hold no [`Dropout`] (the image
/// classifiers). With `rng` `None` (evaluation) or `p <= 0` the input is returned unchanged.
pub fn dropout(xs: &Tensor, p: f64, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
    let Some(rng) = rng else {
        return Ok(xs.clone());
    };
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    let mask = draw_mask(rng, p, xs.elem_count());
    let mask = Tensor::from_vec(mask, xs.shape(), &Device::Cpu)?
        .to_dtype(xs.dtype())?
        .to_device(xs.device())?;
    xs.mul(&mask)
}

/// Applies dropout when training (`Some`), nothing when evaluating (`None`).
pub fn maybe_dropout(dropout: &mut Option<&mut Dropout>, x: &Tensor) -> Result<Tensor> {
    match dropout {
        Some(d) => d.apply(x),
        None => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_weights_and_masks() {
        let draw = || {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let mut p = Params::new();
            let w = p.uniform("w", (4, 5), 0.5, &mut rng, &Device::Cpu).unwrap();
            let mut d = Dropout::new(0.5, rng);
            let x = d
                .apply(&Tensor::ones((4, 5), candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
            (w.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap())
        };
        let (a, b) = (draw(), draw());
        assert_eq!(a, b);
        assert!(a.0.iter().flatten().all(|v| v.abs() <= 0.5));
        assert!(a.1.iter().flatten().all(|&v| v == 0.0 || v == 2.0));
    }

    /// The image classifiers' function and the translator's struct are one dropout.
    #[test]
    fn the_function_and_the_struct_draw_the_same_masks() {
        let xs = Tensor::ones((7, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
        let f = dropout(&xs, 0.3, Some(&mut ChaCha8Rng::seed_from_u64(5))).unwrap();
        let s = Dropout::new(0.3, ChaCha8Rng::seed_from_u64(5))
            .apply(&xs)
            .unwrap();
        assert_eq!(f.to_vec2::<f32>().unwrap(), s.to_vec2::<f32>().unwrap());
    }

    /// The bulk draw is the per-element draw it replaced, bit for bit, whatever the
    /// generator's position (odd word offsets included) and however many elements.
    #[test]
    fn bulk_masks_equal_one_draw_per_element() {
        let one_by_one = |rng: &mut ChaCha8Rng, p: f64, n: usize| -> Vec<f32> {
            let scale = (1.0 / (1.0 - p)) as f32;
            (0..n)
                .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
                .collect()
        };
        for (seed, p, offset, n) in [
            (1u64, 0.3, 0u32, 0usize),
            (2, 0.3, 1, 7),
            (3, 0.1, 3, 1023),
            (4, 0.5, 0, 1024),
            (5, 0.3, 5, 2500),
            (6, 0.9, 2, 40_000),
            (7, 1e-9, 1, 300),
            (8, 0.75, 0, 8191),
        ] {
            let mut a = ChaCha8Rng::seed_from_u64(seed);
            let mut b = a.clone();
            for _ in 0..offset {
                a.next_u32();
                b.next_u32();
            }
            assert_eq!(
                draw_mask(&mut a, p, n),
                one_by_one(&mut b, p, n),
                "seed {seed}"
            );
            // And the generator is left where the per-element draws leave it.
            assert_eq!(a.next_u64(), b.next_u64(), "seed {seed}: stream position");
        }
    }

    #[test]
    fn drops_about_p_and_rescales_the_rest() {
        let xs = Tensor::ones((100, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let ys: Vec<f32> = dropout(&xs, 0.3, Some(&mut rng))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let zeros = ys.iter().filter(|&&v| v == 0.0).count();
        assert!((2700..3300).contains(&zeros), "{zeros}");
        assert!(ys.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        let again: Vec<f32> = dropout(&xs, 0.3, Some(&mut ChaCha8Rng::seed_from_u64(0)))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ys, again);
    }

    #[test]
    fn evaluation_is_the_identity() {
        let xs = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let ys = dropout(&xs, 0.5, None).unwrap();
        assert_eq!(ys.to_vec1::<f32>().unwrap(), vec![1., 2., 3.]);
    }
}
