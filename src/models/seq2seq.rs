//! Character-level encoder-decoder: bidirectional LSTM encoder, LSTM decoder, optional
//! Luong attention, output projection tied to the decoder embedding (homework Q3).
//!
//! Shapes: B batch, S source length, T target length, E embedding, He encoder units per
//! direction, Hd decoder units (= 2 He: the decoder starts from both directions' final
//! states concatenated), V target vocabulary.

use super::attention::{GeneralAttention, Memory};
use super::lstm::{Lstm, State};
use super::seeded::{MaskKind, Params, StepMasks};
use crate::data::pairs::Batch;
use crate::data::vocab::{EOS, SOS};
use crate::spec::Attention;
use candle_core::{D, DType, Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

pub use super::shape::{Seq2SeqConfig, Seq2SeqError};

/// A batch moved to the model's device.
#[derive(Debug, Clone)]
pub struct BatchTensors {
    /// `[B, S]` u32.
    pub src: Tensor,
    /// `[B, S]` f32, 1 on characters.
    pub src_mask: Tensor,
    /// Per source step: `[B, 1]` mask where some row is padding there, else `None`.
    pub step_masks: Vec<Option<Tensor>>,
    /// `[B, T]` u32 decoder inputs.
    pub tgt_in: Tensor,
    /// `[B*T]` u32 gold outputs.
    pub tgt_out: Tensor,
    /// `[B*T]` f32, 1 where the gold output is not padding.
    pub tgt_mask: Tensor,
    /// Column `j` of `src` per source step: `[B]` u32 each.
    pub src_steps: Vec<Tensor>,
    /// Column `j` of `tgt_in` per target step: `[B]` u32 each.
    pub tgt_steps: Vec<Tensor>,
    /// `[B]` u32: each row's last source character as `row * S + len - 1`.
    pub src_last: Tensor,
}

impl BatchTensors {
    /// Copies `b` to `device`.
    pub fn new(b: &Batch, device: &Device) -> Result<Self> {
        let (n, s, t) = (b.size, b.src_len, b.tgt_len);
        let step_masks = (0..s)
            .map(|j| {
                let col: Vec<f32> = (0..n).map(|i| b.src_mask[i * s + j]).collect();
                if col.iter().all(|&m| m == 1.0) {
                    Ok(None)
                } else {
                    Tensor::from_vec(col, (n, 1), device).map(Some)
                }
            })
            .collect::<Result<_>>()?;
        let columns = |ids: &[u32], len: usize| {
            (0..len)
                .map(|j| {
                    let col: Vec<u32> = (0..n).map(|i| ids[i * len + j]).collect();
                    Tensor::from_vec(col, n, device)
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok(BatchTensors {
            src_steps: columns(&b.src, s)?,
            tgt_steps: columns(&b.tgt_in, t)?,
            src_last: Tensor::from_vec(
                (0..n)
                    .map(|i| (i * s + b.src_lens[i].max(1) - 1) as u32)
                    .collect(),
                n,
                device,
            )?,
            src: Tensor::from_vec(b.src.clone(), (n, s), device)?,
            src_mask: Tensor::from_vec(b.src_mask.clone(), (n, s), device)?,
            step_masks,
            tgt_in: Tensor::from_vec(b.tgt_in.clone(), (n, t), device)?,
            tgt_out: Tensor::from_vec(b.tgt_out.clone(), n * t, device)?,
            tgt_mask: Tensor::from_vec(b.tgt_mask.clone(), n * t, device)?,
        })
    }
}

/// What the decoder needs from the encoder: its initial state and, with attention, the
/// prepared memory.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub state: State,
    pub memory: Option<Memory>,
}

impl Encoded {
    /// Keeps rows `idx` (`[n]` u32), e.g. each example repeated `beam_width` times.
    pub fn select(&self, idx: &Tensor) -> Result<Encoded> {
        Ok(Encoded {
            state: self.state.select(idx)?,
            memory: self.memory.as_ref().map(|m| m.select(idx)).transpose()?,
        })
    }
}

/// The translator.
#[derive(Debug)]
pub struct Seq2Seq {
    cfg: Seq2SeqConfig,
    params: Params,
    src_emb: Tensor,
    tgt_emb: Tensor,
    enc_fwd: Lstm,
    enc_bwd: Lstm,
    dec: Lstm,
    attn: Option<GeneralAttention>,
    out_w: Tensor,
    out_b: Tensor,
    device: Device,
}

/// PyTorch's `nn.Embedding` draws N(0, 1) and zeroes the padding row.
fn embedding(
    params: &mut Params,
    name: &str,
    vocab: usize,
    dim: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor> {
    let mut values: Vec<f32> = (0..vocab * dim)
        .map(|_| super::seeded::standard_normal(rng))
        .collect();
    values[..dim].fill(0.0);
    params.add(name, values, (vocab, dim), device)
}

impl Seq2Seq {
    /// Creates the model with weights drawn from `rng` (PyTorch's default initialisation).
    pub fn new(cfg: Seq2SeqConfig, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        let mut p = Params::new();
        let (e, he, hd) = (cfg.embedding_dim, cfg.encoder_hidden, cfg.decoder_hidden);
        let src_emb = embedding(&mut p, "encoder.embedding", cfg.src_vocab, e, rng, device)?;
        let enc_fwd = Lstm::new(&mut p, "encoder.lstm", e, he, rng, device)?;
        let enc_bwd = Lstm::new(&mut p, "encoder.lstm_reverse", e, he, rng, device)?;
        let tgt_emb = embedding(&mut p, "decoder.embedding", cfg.tgt_vocab, e, rng, device)?;
        let dec = Lstm::new(&mut p, "decoder.lstm", e, hd, rng, device)?;
        let attn = match cfg.attention {
            Attention::None => None,
            Attention::General => Some(GeneralAttention::new(
                &mut p,
                "decoder.attn",
                2 * he,
                hd,
                rng,
                device,
            )?),
        };
        let k = 1.0 / (hd as f64).sqrt();
        let out_w = if cfg.tie_embeddings {
            tgt_emb.clone()
        } else {
            p.uniform("generator.weight", (cfg.tgt_vocab, hd), k, rng, device)?
        };
        let out_b = p.uniform("generator.bias", cfg.tgt_vocab, k, rng, device)?;
        Ok(Seq2Seq {
            cfg,
            params: p,
            src_emb,
            tgt_emb,
            enc_fwd,
            enc_bwd,
            dec,
            attn,
            out_w,
            out_b,
            device: device.clone(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Seq2SeqConfig {
        &self.cfg
    }

    /// The trainable variables.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Each time step's input projection `[B, 4H]` for `lstm` of the tokens `cols` (one
    /// `[B]` column per step) embedded by `table`. Without dropout one product projects the
    /// whole (small) table and each step looks its rows up; with dropout each step's
    /// embeddings get their slice of the `[B, T, E]` mask and are projected on their own.
    /// No step slices a tracked `[B, T, ...]` tensor, whose backward pass Candle pads to the
    /// full size every step.
    fn step_inputs(
        &self,
        lstms: &[&Lstm],
        table: &Tensor,
        cols: &[Tensor],
        mask: Option<Tensor>,
    ) -> Result<Vec<Vec<Tensor>>> {
        match mask {
            None => lstms
                .iter()
                .map(|l| {
                    let projected = l.input_table(table)?;
                    cols.iter()
                        .map(|ids| projected.index_select(ids, 0))
                        .collect()
                })
                .collect(),
            Some(mask) => {
                let embedded = cols
                    .iter()
                    .enumerate()
                    .map(|(j, ids)| {
                        let m = mask.narrow(1, j, 1)?.squeeze(1)?;
                        table.index_select(ids, 0)?.mul(&m)
                    })
                    .collect::<Result<Vec<_>>>()?;
                lstms
                    .iter()
                    .map(|l| embedded.iter().map(|x| l.project_step(x)).collect())
                    .collect()
            }
        }
    }

    /// Mask `kind` of this batch's rows as a `[B, len, dim]` tensor, when training.
    fn mask(
        &self,
        masks: Option<&StepMasks>,
        kind: MaskKind,
        rows: usize,
        len: usize,
        dim: usize,
    ) -> Result<Option<Tensor>> {
        masks
            .map(|m| m.tensor(kind, 0..rows, len, dim, &self.device))
            .transpose()
    }

    /// Encodes `[B, S]` sources (evaluation: no dropout).
    pub fn encode(&self, b: &BatchTensors) -> Result<Encoded> {
        self.encode_masked(b, None)
    }

    fn encode_masked(&self, b: &BatchTensors, masks: Option<&StepMasks>) -> Result<Encoded> {
        let (n, s) = b.src.dims2()?;
        let (e, he) = (self.cfg.embedding_dim, self.cfg.encoder_hidden);
        let mask = self.mask(masks, MaskKind::SourceEmbedding, n, s, e)?;
        let mut xp = self.step_inputs(
            &[&self.enc_fwd, &self.enc_bwd],
            &self.src_emb,
            &b.src_steps,
            mask,
        )?;
        let (xb, xf) = (xp.pop(), xp.pop());
        let (Some(xf), Some(xb)) = (xf, xb) else {
            candle_core::bail!("encoder: missing step inputs")
        };
        let (of, sf) = self
            .enc_fwd
            .run_suffix_padded(&xf, &b.step_masks, &b.src_last, false)?;
        let (ob, sb) = self
            .enc_bwd
            .run_suffix_padded(&xb, &b.step_masks, &b.src_last, true)?;
        let state = State {
            h: Tensor::cat(&[&sf.h, &sb.h], 1)?,
            c: Tensor::cat(&[&sf.c, &sb.c], 1)?,
        };
        let memory = match &self.attn {
            None => None,
            Some(attn) => {
                let values = Tensor::cat(&[Tensor::stack(&of, 1)?, Tensor::stack(&ob, 1)?], 2)?;
                let values = match self.mask(masks, MaskKind::EncoderOutput, n, s, 2 * he)? {
                    Some(m) => values.mul(&m)?,
                    None => values,
                };
                Some(attn.memory(&values, &b.src_mask)?)
            }
        };
        Ok(Encoded { state, memory })
    }

    /// One decoder step from projected inputs `xp [N, 4Hd]`: the output `[N, Hd]` (after
    /// attention when there is one), the new state and the attention weights `[N, S]`.
    fn step(
        &self,
        xp: &Tensor,
        state: &State,
        memory: Option<&Memory>,
    ) -> Result<(Tensor, State, Option<Tensor>)> {
        let next = self.dec.step(xp, state)?;
        match (&self.attn, memory) {
            (Some(attn), Some(mem)) => {
                let (out, w) = attn.attend(&next.h, mem)?;
                Ok((out, next, Some(w)))
            }
            _ => Ok((next.h.clone(), next, None)),
        }
    }

    fn logits(&self, out: &Tensor) -> Result<Tensor> {
        out.matmul(&self.out_w.t()?)?.broadcast_add(&self.out_b)
    }

    /// Teacher-forced cross-entropy, mean over the non-padding target tokens; also returns
    /// that token count so evaluation can average over batches exactly. With `masks`
    /// (training) dropout applies as in PyTorch's homework model: to both embeddings, to
    /// the encoder outputs attention reads and to the decoder outputs; the CPU's training
    /// step ([`crate::models::seq2seq_cpu`]) computes the same loss by hand.
    pub fn loss(&self, b: &BatchTensors, masks: Option<&StepMasks>) -> Result<(Tensor, f64)> {
        let enc = self.encode_masked(b, masks)?;
        let (n, t) = b.tgt_in.dims2()?;
        let (e, hd) = (self.cfg.embedding_dim, self.cfg.decoder_hidden);
        let mask = self.mask(masks, MaskKind::TargetEmbedding, n, t, e)?;
        let xp = self
            .step_inputs(&[&self.dec], &self.tgt_emb, &b.tgt_steps, mask)?
            .pop();
        let Some(xp) = xp else {
            candle_core::bail!("decoder: missing step inputs")
        };
        let mut state = enc.state.clone();
        let mut hs = Vec::with_capacity(t);
        for x in &xp {
            state = self.dec.step(x, &state)?;
            hs.push(state.h.clone());
        }
        let hs = Tensor::stack(&hs, 1)?;
        let outs = match (&self.attn, enc.memory.as_ref()) {
            (Some(attn), Some(mem)) => attn.attend_all(&hs, mem)?.0,
            _ => hs,
        };
        let outs = match self.mask(masks, MaskKind::DecoderOutput, n, t, hd)? {
            Some(m) => outs.mul(&m)?,
            None => outs,
        };
        let logits = self.logits(&outs.reshape((n * t, ()))?)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let nll = logp
            .gather(&b.tgt_out.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()?;
        let count = b.tgt_mask.sum_all()?.to_scalar::<f32>()? as f64;
        let loss = ((nll * &b.tgt_mask)?.sum_all()? / count.max(1.0))?;
        Ok((loss, count))
    }

    /// Log-probabilities `[N, V]` of the next token after `tokens` (one per row), the new
    /// state and the attention weights. Evaluation only: no dropout.
    pub fn next_logp(
        &self,
        tokens: &[u32],
        state: &State,
        memory: Option<&Memory>,
    ) -> Result<(Tensor, State, Option<Tensor>)> {
        let ids = Tensor::from_vec(tokens.to_vec(), tokens.len(), &self.device)?;
        let emb = self.tgt_emb.index_select(&ids, 0)?.unsqueeze(1)?;
        let xp = self.dec.project(&emb)?.squeeze(1)?;
        let (out, next, w) = self.step(&xp, state, memory)?;
        let logp = candle_nn::ops::log_softmax(&self.logits(&out)?, D::Minus1)?;
        Ok((logp, next, w))
    }

    /// Log-probability of producing `out` (then EOS when `with_eos`) for one source, scored
    /// step by step with teacher forcing; the reference against which decoders are checked.
    pub fn sequence_logprob(&self, src: &[u32], out: &[u32], with_eos: bool) -> Result<f64> {
        let example = crate::data::pairs::Example {
            src: src.to_vec(),
            tgt: out.to_vec(),
        };
        let bt = BatchTensors::new(&Batch::new(&[&example]), &self.device)?;
        let enc = self.encode(&bt)?;
        let mut state = enc.state;
        let mut prev = SOS;
        let mut total = 0.0f64;
        let targets: Vec<u32> = out.iter().copied().chain(with_eos.then_some(EOS)).collect();
        for &next in &targets {
            let (logp, st, _) = self.next_logp(&[prev], &state, enc.memory.as_ref())?;
            let row = logp.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            total += row[next as usize] as f64;
            state = st;
            prev = next;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pairs::Example;
    use rand::SeedableRng;

    pub(crate) fn tiny(attention: Attention) -> Seq2Seq {
        let cfg = Seq2SeqConfig {
            src_vocab: 9,
            tgt_vocab: 8,
            embedding_dim: 8,
            encoder_hidden: 4,
            decoder_hidden: 8,
            attention,
            dropout: 0.3,
            tie_embeddings: true,
        };
        Seq2Seq::new(cfg, &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu).unwrap()
    }

    /// `inspect` counts [`Seq2SeqConfig::param_shapes`]; the model must build exactly those.
    #[test]
    fn built_variables_are_the_param_shapes() {
        for (attention, tie) in [
            (Attention::None, true),
            (Attention::General, true),
            (Attention::General, false),
        ] {
            let cfg = Seq2SeqConfig {
                src_vocab: 9,
                tgt_vocab: 7,
                embedding_dim: 8,
                encoder_hidden: 4,
                decoder_hidden: 8,
                attention,
                dropout: 0.0,
                tie_embeddings: tie,
            };
            let m =
                Seq2Seq::new(cfg.clone(), &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu).unwrap();
            let built: Vec<(String, Vec<usize>)> = m
                .params()
                .named()
                .iter()
                .map(|(k, v)| (k.clone(), v.dims().to_vec()))
                .collect();
            assert_eq!(built, cfg.param_shapes(), "{attention:?} tie {tie}");
            assert_eq!(m.params().count(), cfg.param_count(""));
        }
    }

    #[test]
    fn spec_sizes_are_checked() {
        let mut m = crate::spec::ModelSpec::default();
        assert!(Seq2SeqConfig::from_spec(&m, 10, 10).is_ok());
        m.decoder_hidden = 100;
        let e = Seq2SeqConfig::from_spec(&m, 10, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.decoder_hidden = 100"), "{e}");
    }

    /// Padding a batch must not change any example's loss: the masks make it invisible.
    #[test]
    fn loss_of_padded_batch_equals_losses_alone() {
        for att in [Attention::None, Attention::General] {
            let m = tiny(att);
            let a = Example {
                src: vec![4, 5, 6, 7, 8],
                tgt: vec![4, 5, 6],
            };
            let b = Example {
                src: vec![5, 6],
                tgt: vec![7],
            };
            let loss_of = |ex: &[&Example]| {
                let bt = BatchTensors::new(&Batch::new(ex), &Device::Cpu).unwrap();
                let (l, n) = m.loss(&bt, None).unwrap();
                (l.to_scalar::<f32>().unwrap() as f64, n)
            };
            let (la, na) = loss_of(&[&a]);
            let (lb, nb) = loss_of(&[&b]);
            let (lab, nab) = loss_of(&[&a, &b]);
            assert_eq!(nab, na + nb);
            let want = (la * na + lb * nb) / (na + nb);
            assert!((lab - want).abs() < 1e-5, "{att:?}: {lab} vs {want}");
            // The same loss is the negated mean of the step-by-step sequence scores.
            let sa = m.sequence_logprob(&a.src, &a.tgt, true).unwrap();
            assert!((la + sa / na).abs() < 1e-5, "{la} vs {}", -sa / na);
        }
    }

    #[test]
    fn tied_projection_shares_the_embedding() {
        let m = tiny(Attention::General);
        let names: Vec<&str> = m.params().named().iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"generator.weight"));
        assert!(names.contains(&"decoder.attn.linear_in.weight"));
    }
}
