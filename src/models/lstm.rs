//! A single-layer LSTM with PyTorch's gate layout (i, f, g, o) and initialisation, run step
//! by step, with masking that makes a padded batch behave like a packed one.
//!
//! Our own cell rather than `candle_nn::LSTM` because its weights come from a `VarBuilder`
//! initialiser that cannot be seeded, and because the input projection of a whole sequence
//! is one matrix product here instead of one per time step.

use super::seeded::Params;
use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

/// Hidden and cell state, each `[batch, hidden]`.
#[derive(Debug, Clone)]
pub struct State {
    pub h: Tensor,
    pub c: Tensor,
}

impl State {
    /// Keeps the rows `idx` (a `[n]` u32 tensor) of both tensors: beam search's reordering.
    pub fn select(&self, idx: &Tensor) -> Result<State> {
        Ok(State {
            h: self.h.index_select(idx, 0)?,
            c: self.c.index_select(idx, 0)?,
        })
    }
}

/// One LSTM layer: `w_ih [4H, in]`, `w_hh [4H, H]`, two biases `[4H]` as in PyTorch.
#[derive(Debug, Clone)]
pub struct Lstm {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    hidden: usize,
}

impl Lstm {
    /// Creates the layer's variables under `name`, uniform in ±1/sqrt(hidden) like PyTorch.
    pub fn new(
        params: &mut Params,
        name: &str,
        input: usize,
        hidden: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let k = 1.0 / (hidden as f64).sqrt();
        Ok(Lstm {
            w_ih: params.uniform(
                &format!("{name}.weight_ih"),
                (4 * hidden, input),
                k,
                rng,
                device,
            )?,
            w_hh: params.uniform(
                &format!("{name}.weight_hh"),
                (4 * hidden, hidden),
                k,
                rng,
                device,
            )?,
            b_ih: params.uniform(&format!("{name}.bias_ih"), 4 * hidden, k, rng, device)?,
            b_hh: params.uniform(&format!("{name}.bias_hh"), 4 * hidden, k, rng, device)?,
            hidden,
        })
    }

    /// Hidden size H.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Input projection of a whole sequence: `[B, T, in] -> [B, T, 4H]`, biases included.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let bias = (&self.b_ih + &self.b_hh)?;
        x.reshape((b * t, d))?
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(&bias)?
            .reshape((b, t, 4 * self.hidden))
    }

    /// Input projection of every entry of an embedding table: `[V, in] -> [V, 4H]`, biases
    /// included. Looking up a token's row here equals projecting its embedding, and the
    /// backward pass then touches a `[V, 4H]` table instead of padding each time step's
    /// gradient out to the whole `[B, T, 4H]` projection (Candle's `narrow` backward).
    pub fn input_table(&self, emb: &Tensor) -> Result<Tensor> {
        let bias = (&self.b_ih + &self.b_hh)?;
        emb.matmul(&self.w_ih.t()?)?.broadcast_add(&bias)
    }

    /// Input projection of one time step: `[B, in] -> [B, 4H]`, biases included.
    pub fn project_step(&self, x: &Tensor) -> Result<Tensor> {
        let bias = (&self.b_ih + &self.b_hh)?;
        x.matmul(&self.w_ih.t()?)?.broadcast_add(&bias)
    }

    /// One step from a projected input `xp [B, 4H]`.
    pub fn step(&self, xp: &Tensor, state: &State) -> Result<State> {
        let hw = state.h.matmul(&self.w_hh.t()?)?;
        let (h, c) = super::lstm_cell::cell(xp, &hw, &state.c)?;
        Ok(State { h, c })
    }

    /// [`Lstm::run_masked_steps`] for batches whose padding is a suffix of each row (as
    /// `Batch` pads), in fewer operations per step. `last` (`[B]` u32) holds each row's
    /// last real position as `row * T + len - 1`; `mask[t]` is as for `run_masked`.
    ///
    /// Forwards, the recurrence runs over the padding unmasked (nothing after a row's end
    /// reads its state) and the final state is gathered at `last` once at the end;
    /// backwards, the padding comes first, where multiplying the state by the mask keeps it
    /// exactly zero until the row's last character. Outputs at padding are zero, as with
    /// `run_masked`. Two products per masked step instead of seven, and the same values.
    pub fn run_suffix_padded(
        &self,
        xp: &[Tensor],
        mask: &[Option<Tensor>],
        last: &Tensor,
        reverse: bool,
    ) -> Result<(Vec<Tensor>, State)> {
        let t_len = xp.len();
        let (mut state, mut outputs) = self.start(xp, "run_suffix_padded")?;
        if reverse {
            for t in (0..t_len).rev() {
                let next = self.step(&xp[t], &state)?;
                state = match mask.get(t).and_then(Option::as_ref) {
                    None => next,
                    Some(m) => State {
                        h: next.h.broadcast_mul(m)?,
                        c: next.c.broadcast_mul(m)?,
                    },
                };
                outputs[t] = Some(state.h.clone());
            }
            return Ok((outputs.into_iter().flatten().collect(), state));
        }
        let padded = mask.iter().any(Option::is_some);
        let mut hs = Vec::with_capacity(t_len);
        let mut cs = Vec::with_capacity(t_len);
        for t in 0..t_len {
            state = self.step(&xp[t], &state)?;
            outputs[t] = Some(match mask.get(t).and_then(Option::as_ref) {
                None => state.h.clone(),
                Some(m) => state.h.broadcast_mul(m)?,
            });
            if padded {
                hs.push(state.h.clone());
                cs.push(state.c.clone());
            }
        }
        if padded {
            let gather = |v: &[Tensor]| -> Result<Tensor> {
                let all = Tensor::stack(v, 1)?;
                let (b, t, h) = all.dims3()?;
                all.reshape((b * t, h))?.index_select(last, 0)
            };
            state = State {
                h: gather(&hs)?,
                c: gather(&cs)?,
            };
        }
        Ok((outputs.into_iter().flatten().collect(), state))
    }

    /// The zero state for the rows of `xp`'s steps and an empty output slot per step.
    fn start(&self, xp: &[Tensor], caller: &str) -> Result<(State, Vec<Option<Tensor>>)> {
        let Some(first) = xp.first() else {
            candle_core::bail!("{caller}: no time steps")
        };
        let state = self.zero_state(first.dim(0)?, first.device())?;
        Ok((state, vec![None; xp.len()]))
    }

    /// A zero state for `batch` rows.
    pub fn zero_state(&self, batch: usize, device: &Device) -> Result<State> {
        let z = Tensor::zeros((batch, self.hidden), candle_core::DType::F32, device)?;
        Ok(State { h: z.clone(), c: z })
    }

    /// Runs over `xp [B, T, 4H]` forwards or backwards. `mask[t]` is `Some([B, 1])` at time
    /// steps where some row is padding: there the state of padded rows is kept and their
    /// output is zero, so each row's final state is the one after its last real character
    /// (backwards: after its first), exactly what a packed sequence gives.
    /// Returns the outputs in time order (`[B, H]` each) and the final state.
    pub fn run_masked(
        &self,
        xp: &Tensor,
        mask: &[Option<Tensor>],
        reverse: bool,
    ) -> Result<(Vec<Tensor>, State)> {
        let t_len = xp.dim(1)?;
        let steps = (0..t_len)
            .map(|t| xp.narrow(1, t, 1)?.squeeze(1))
            .collect::<Result<Vec<_>>>()?;
        self.run_masked_steps(&steps, mask, reverse)
    }

    /// As [`Lstm::run_masked`], from one `[B, 4H]` projected input per time step (see
    /// [`Lstm::input_table`]).
    pub fn run_masked_steps(
        &self,
        xp: &[Tensor],
        mask: &[Option<Tensor>],
        reverse: bool,
    ) -> Result<(Vec<Tensor>, State)> {
        let t_len = xp.len();
        let (mut state, mut outputs) = self.start(xp, "run_masked_steps")?;
        let order: Vec<usize> = if reverse {
            (0..t_len).rev().collect()
        } else {
            (0..t_len).collect()
        };
        for t in order {
            let next = self.step(&xp[t], &state)?;
            match mask.get(t).and_then(Option::as_ref) {
                None => {
                    outputs[t] = Some(next.h.clone());
                    state = next;
                }
                Some(m) => {
                    outputs[t] = Some(next.h.broadcast_mul(m)?);
                    state = State {
                        h: (&state.h + (next.h - &state.h)?.broadcast_mul(m)?)?,
                        c: (&state.c + (next.c - &state.c)?.broadcast_mul(m)?)?,
                    };
                }
            }
        }
        let outputs = outputs.into_iter().flatten().collect();
        Ok((outputs, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A padded row must end in the same state as the same row run alone, unpadded.
    #[test]
    fn masking_makes_padding_invisible_to_final_state() {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut p = Params::new();
        let lstm = Lstm::new(&mut p, "l", 3, 4, &mut rng, &dev).unwrap();
        let x = p.normal("x", (2, 5, 3), &mut rng, &dev).unwrap();
        // Row 1 has 2 real steps, row 0 all 5.
        let masks: Vec<Option<Tensor>> = (0..5)
            .map(|t| {
                let m = vec![1.0f32, if t < 2 { 1.0 } else { 0.0 }];
                Some(Tensor::from_vec(m, (2, 1), &dev).unwrap())
            })
            .collect();
        let xp = lstm.project(&x).unwrap();
        let alone = lstm
            .project(&x.narrow(0, 1, 1).unwrap().narrow(1, 0, 2).unwrap())
            .unwrap();
        for reverse in [false, true] {
            let (outs, st) = lstm.run_masked(&xp, &masks, reverse).unwrap();
            let (outs1, st1) = lstm.run_masked(&alone, &[None, None], reverse).unwrap();
            let h =
                st.h.narrow(0, 1, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
            let h1 = st1.h.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in h.iter().zip(&h1) {
                assert!((a - b).abs() < 1e-6, "reverse={reverse}: {h:?} vs {h1:?}");
            }
            let o = outs[1]
                .narrow(0, 1, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let o1 = outs1[1].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in o.iter().zip(&o1) {
                assert!((a - b).abs() < 1e-6);
            }
            let last = Tensor::from_vec(vec![4u32, 5 + 1], 2, &dev).unwrap();
            let steps: Vec<Tensor> = (0..5)
                .map(|t| xp.narrow(1, t, 1).unwrap().squeeze(1).unwrap())
                .collect();
            let (outs2, st2) = lstm
                .run_suffix_padded(&steps, &masks, &last, reverse)
                .unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in [(&st.h, &st2.h), (&st.c, &st2.c)]
                .into_iter()
                .chain(outs.iter().zip(&outs2))
            {
                for (x, y) in flat(a).iter().zip(&flat(b)) {
                    assert!(
                        (x - y).abs() < 1e-6,
                        "suffix-padded run differs: {x} vs {y}"
                    );
                }
            }
            let pad = outs[4]
                .narrow(0, 1, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(pad.iter().all(|&v| v == 0.0), "padding output must be zero");
        }
    }
}
