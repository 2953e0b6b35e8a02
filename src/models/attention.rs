//! Luong "general" (bilinear) attention over the encoder outputs, padding masked.
//!
//! score(q, h_s) = (W q) . h_s; weights = softmax over the source positions with padding
//! set to a large negative number first; output = tanh(W_out [q; context] + b).

use super::seeded::Params;
use candle_core::{D, Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

/// Added to the scores of padding positions: exp of it underflows to exactly 0 in f32,
/// without the NaN that -inf gives on a row with no real position.
const MASKED: f32 = -1e9;

/// The attention layer: `w_in [enc, dec]` (no bias), `w_out [dec, dec + enc]`, `b_out [dec]`.
#[derive(Debug, Clone)]
pub struct GeneralAttention {
    w_in: Tensor,
    w_out: Tensor,
    b_out: Tensor,
}

/// The encoder side, prepared once per batch and reused at every decoder step.
#[derive(Debug, Clone)]
pub struct Memory {
    /// `[B, S, enc]` encoder outputs.
    pub values: Tensor,
    /// `[B, dec, S]`: values projected by `w_in` and transposed once, so each step's
    /// scores are one product with no copy.
    pub keys: Tensor,
    /// `[B, 1, S]`: 0 on characters, a large negative number on padding.
    pub bias: Tensor,
}

impl Memory {
    /// Keeps the rows `idx` (`[n]` u32) of every tensor: beam search's expansion.
    pub fn select(&self, idx: &Tensor) -> Result<Memory> {
        Ok(Memory {
            values: self.values.index_select(idx, 0)?,
            keys: self.keys.index_select(idx, 0)?,
            bias: self.bias.index_select(idx, 0)?,
        })
    }
}

impl GeneralAttention {
    /// Creates the variables under `name`, initialised like PyTorch's `nn.Linear`.
    pub fn new(
        params: &mut Params,
        name: &str,
        enc: usize,
        dec: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let k_in = 1.0 / (dec as f64).sqrt();
        let k_out = 1.0 / ((dec + enc) as f64).sqrt();
        Ok(GeneralAttention {
            w_in: params.uniform(
                &format!("{name}.linear_in.weight"),
                (enc, dec),
                k_in,
                rng,
                device,
            )?,
            w_out: params.uniform(
                &format!("{name}.linear_out.weight"),
                (dec, dec + enc),
                k_out,
                rng,
                device,
            )?,
            b_out: params.uniform(&format!("{name}.linear_out.bias"), dec, k_out, rng, device)?,
        })
    }

    /// Prepares `values [B, S, enc]` with the source mask `[B, S]` (1 = character).
    pub fn memory(&self, values: &Tensor, src_mask: &Tensor) -> Result<Memory> {
        let (b, s, e) = values.dims3()?;
        let keys = values
            .reshape((b * s, e))?
            .matmul(&self.w_in)?
            .reshape((b, s, ()))?
            .transpose(1, 2)?
            .contiguous()?;
        let bias = ((src_mask - 1.0)? * (-(MASKED as f64)))?.reshape((b, 1, s))?;
        Ok(Memory {
            values: values.clone(),
            keys,
            bias,
        })
    }

    /// Attends from the decoder output `q [B, dec]`; returns the attentional output
    /// `[B, dec]` and the weights `[B, S]`.
    pub fn attend(&self, q: &Tensor, mem: &Memory) -> Result<(Tensor, Tensor)> {
        let q3 = q.unsqueeze(1)?;
        let scores = q3.matmul(&mem.keys)?.broadcast_add(&mem.bias)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = weights.matmul(&mem.values)?.squeeze(1)?;
        let out = Tensor::cat(&[q, &context], 1)?
            .matmul(&self.w_out.t()?)?
            .broadcast_add(&self.b_out)?
            .tanh()?;
        Ok((out, weights.squeeze(1)?))
    }
}

impl GeneralAttention {
    /// [`GeneralAttention::attend`] for all decoder steps at once: `q [B, T, dec]` ->
    /// output `[B, T, dec]` and weights `[B, T, S]`. Luong attention reads the decoder's
    /// output and is not fed back into it, so teacher forcing can attend after the loop in
    /// a few batched products instead of a handful of small operations per step.
    pub fn attend_all(&self, q: &Tensor, mem: &Memory) -> Result<(Tensor, Tensor)> {
        let (b, t, d) = q.dims3()?;
        let scores = q.matmul(&mem.keys)?.broadcast_add(&mem.bias)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = weights.matmul(&mem.values)?;
        let out = Tensor::cat(&[q, &context], 2)?
            .reshape((b * t, ()))?
            .matmul(&self.w_out.t()?)?
            .broadcast_add(&self.b_out)?
            .tanh()?
            .reshape((b, t, d))?;
        Ok((out, weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn weights_sum_to_one_and_are_zero_on_padding() {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut p = Params::new();
        let att = GeneralAttention::new(&mut p, "a", 6, 4, &mut rng, &dev).unwrap();
        let values = p.normal("v", (3, 5, 6), &mut rng, &dev).unwrap();
        let q = p.normal("q", (3, 4), &mut rng, &dev).unwrap();
        let lens = [5usize, 2, 1];
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&l| (0..5).map(move |s| if s < l { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (3, 5), &dev).unwrap();
        let mem = att.memory(&values, &mask).unwrap();
        let (out, w) = att.attend(&q, &mem).unwrap();
        assert_eq!(out.dims(), &[3, 4]);
        let w = w.to_vec2::<f32>().unwrap();
        for (row, &len) in w.iter().zip(&lens) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{row:?}");
            assert!(row[len..].iter().all(|&x| x == 0.0), "{row:?}");
            assert!(row[..len].iter().all(|&x| x > 0.0), "{row:?}");
        }
        // A one-character source attends to it fully.
        assert!((w[2][0] - 1.0).abs() < 1e-6);
    }
}
