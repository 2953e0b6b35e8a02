//! Named parameters drawn from a seeded generator, and the one seeded dropout of every model.
//!
//! Candle's CPU device cannot be seeded (and `candle_nn::Dropout` draws from the device's
//! unseeded generator), so every random number is drawn on the host from a `ChaCha8Rng` and
//! then moved to the device: the same seed gives the same weights and the same dropout masks
//! on every device and thread count.

use candle_core::{Device, Result, Shape, Tensor, Var};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

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

/// The translator's inverted dropout: one key per training step from the epoch's seeded
/// generator, and every mask element a hash of that key and the element's place.
///
/// A place is (which mask, the sentence's row in the batch, its position, the feature), so
/// a step's masks do not depend on the order they are made in: the hand-written CPU step
/// makes them only for characters (not padding) while it gathers the embeddings, each shard
/// of a batch makes its own rows', and Candle's tensor path makes whole padded tensors, all
/// with the same values. Bits are compared with an integer threshold, 2 features per 64-bit
/// hash (SplitMix64's output function over a counter, a generator that passes BigCrush),
/// which costs a few instructions per element where a ChaCha draw per element cost 5% of a
/// training step.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: ChaCha8Rng,
}

impl Dropout {
    /// Drops each element with probability `p`, scaling the rest by 1/(1-p).
    pub fn new(p: f64, rng: ChaCha8Rng) -> Self {
        Dropout { p, rng }
    }

    /// The masks of the next training step; `None` (drawing nothing) when nothing is dropped.
    pub fn next_step(&mut self) -> Option<StepMasks> {
        (self.p > 0.0).then(|| StepMasks::new(self.p, self.rng.next_u64()))
    }
}

/// Which of a translator step's dropout masks an element belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// The source characters' embeddings, `[rows, S, E]`.
    SourceEmbedding = 0,
    /// The encoder outputs attention reads, `[rows, S, 2 He]`.
    EncoderOutput = 1,
    /// The decoder inputs' embeddings, `[rows, T, E]`.
    TargetEmbedding = 2,
    /// The decoder outputs before the output layer, `[rows, T, Hd]`.
    DecoderOutput = 3,
}

/// The dropout masks of one training step (see [`Dropout`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMasks {
    key: u64,
    /// An element is dropped when its 32 bits are below this (`p * 2^32`, rounded).
    threshold: u64,
    /// The kept elements' value, `1 / (1 - p)` (0 when `p >= 1`).
    scale: f32,
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Stafford's mix 13): a bijection that spreads every input
/// bit over the whole output.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl StepMasks {
    /// The masks drawn from `key` at rate `p` (`0 < p`).
    pub fn new(p: f64, key: u64) -> Self {
        let p = p.clamp(0.0, 1.0);
        StepMasks {
            key,
            threshold: (p * 4_294_967_296.0).round() as u64,
            scale: if p < 1.0 {
                (1.0 / (1.0 - p)) as f32
            } else {
                0.0
            },
        }
    }

    /// Writes the mask values (0 or `1 / (1 - p)`) of the `out.len()` features of position
    /// `pos` of batch row `row` in mask `kind`.
    pub fn fill(&self, kind: MaskKind, row: usize, pos: usize, out: &mut [f32]) {
        // Rows and positions below 2^28 give distinct places (batches and sentences are
        // far smaller); the place's hash starts a counter stream of its own.
        let place = ((kind as u64) << 56) ^ ((row as u64) << 28) ^ pos as u64;
        let seed = mix64(self.key ^ mix64(place));
        let value = |bits: u64| {
            if bits < self.threshold {
                0.0
            } else {
                self.scale
            }
        };
        let mut pairs = out.chunks_exact_mut(2);
        let mut counter = seed;
        for pair in &mut pairs {
            counter = counter.wrapping_add(GOLDEN);
            let z = mix64(counter);
            pair[0] = value(z & 0xffff_ffff);
            pair[1] = value(z >> 32);
        }
        if let [last] = pairs.into_remainder() {
            *last = value(mix64(counter.wrapping_add(GOLDEN)) & 0xffff_ffff);
        }
    }

    /// Mask `kind` of batch rows `rows` as a `[rows, len, dim]` tensor on `device`, padding
    /// positions included: what [`StepMasks::fill`] gives for each position.
    pub fn tensor(
        &self,
        kind: MaskKind,
        rows: std::ops::Range<usize>,
        len: usize,
        dim: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let n = rows.len();
        let mut values = vec![0f32; n * len * dim];
        for (i, row) in rows.enumerate() {
            for pos in 0..len {
                let at = (i * len + pos) * dim;
                self.fill(kind, row, pos, &mut values[at..at + dim]);
            }
        }
        Tensor::from_vec(values, (n, len, dim), device)
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
/// drawing the mask element by element from `rng`; for models that hold no [`Dropout`]
/// (the image classifiers, whose masks must stay as they were). With `rng` `None` (evaluation) or `p <= 0` the input is returned unchanged.
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
            let masks = d.next_step().unwrap();
            let m = masks
                .tensor(MaskKind::EncoderOutput, 0..4, 3, 5, &Device::Cpu)
                .unwrap();
            (
                w.to_vec2::<f32>().unwrap(),
                m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let (a, b) = (draw(), draw());
        assert_eq!(a, b);
        assert!(a.0.iter().flatten().all(|v| v.abs() <= 0.5));
        assert!(a.1.iter().all(|&v| v == 0.0 || v == 2.0));
        assert!(
            Dropout::new(0.0, ChaCha8Rng::seed_from_u64(3))
                .next_step()
                .is_none()
        );
    }

    /// A mask element depends on its place only: a tensor of several rows holds each
    /// row's own masks, made in any order, and each step, kind, row, position and feature
    /// gets fresh bits.
    #[test]
    fn a_mask_element_is_a_function_of_its_place() {
        let mut d = Dropout::new(0.3, ChaCha8Rng::seed_from_u64(7));
        let (s1, s2) = (d.next_step().unwrap(), d.next_step().unwrap());
        let dev = Device::Cpu;
        let whole = s1
            .tensor(MaskKind::SourceEmbedding, 0..6, 4, 9, &dev)
            .unwrap();
        let part = s1
            .tensor(MaskKind::SourceEmbedding, 3..6, 4, 9, &dev)
            .unwrap();
        assert_eq!(
            whole
                .narrow(0, 3, 3)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            part.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let mut one = vec![0f32; 9];
        s1.fill(MaskKind::SourceEmbedding, 4, 2, &mut one);
        let row: Vec<f32> = whole.get(4).unwrap().get(2).unwrap().to_vec1().unwrap();
        assert_eq!(one, row);
        let bits = |m: &StepMasks, kind, row, pos| {
            let mut v = vec![0f32; 256];
            m.fill(kind, row, pos, &mut v);
            v
        };
        let base = bits(&s1, MaskKind::TargetEmbedding, 1, 1);
        for other in [
            bits(&s2, MaskKind::TargetEmbedding, 1, 1),
            bits(&s1, MaskKind::DecoderOutput, 1, 1),
            bits(&s1, MaskKind::TargetEmbedding, 2, 1),
            bits(&s1, MaskKind::TargetEmbedding, 1, 2),
        ] {
            let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
            // Independent masks at p = 0.3 agree on 0.58 of the places (0.49 + 0.09).
            assert!((120..180).contains(&same), "{same} of 256 places agree");
        }
    }

    /// The rate is p, and neighbouring features (the two halves of one hash, and
    /// consecutive hashes) are independent: each pair is dropped together p^2 of the time.
    #[test]
    fn masks_drop_p_of_the_elements_independently() {
        let p = 0.3;
        let m = StepMasks::new(p, 0x1234_5678_9abc_def0);
        let (mut n, mut dropped, mut both_lanes, mut both_next) = (0usize, 0usize, 0usize, 0usize);
        let mut v = vec![0f32; 128];
        for row in 0..64 {
            for pos in 0..50 {
                m.fill(MaskKind::EncoderOutput, row, pos, &mut v);
                n += v.len();
                dropped += v.iter().filter(|&&x| x == 0.0).count();
                both_lanes += v
                    .chunks_exact(2)
                    .filter(|c| c[0] == 0.0 && c[1] == 0.0)
                    .count();
                both_next += v[1..]
                    .chunks_exact(2)
                    .filter(|c| c[0] == 0.0 && c[1] == 0.0)
                    .count();
                assert!(v.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.7).abs() < 1e-6));
            }
        }
        let rate = dropped as f64 / n as f64;
        // 409,600 elements: the standard error of the rate is 0.0007.
        assert!((rate - p).abs() < 0.004, "rate {rate}");
        for pairs in [both_lanes, both_next] {
            let r = pairs as f64 / (n / 2) as f64;
            assert!((r - p * p).abs() < 0.004, "pairs dropped together: {r}");
        }
        // An odd width uses the low half of one more hash.
        let mut odd = vec![0f32; 7];
        m.fill(MaskKind::EncoderOutput, 0, 0, &mut odd);
        m.fill(MaskKind::EncoderOutput, 0, 0, &mut v[..8]);
        assert_eq!(odd[..], v[..7]);
        assert!(
            StepMasks::new(1.0, 1)
                .tensor(MaskKind::DecoderOutput, 0..2, 2, 3, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|&x| x == 0.0)
        );
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
