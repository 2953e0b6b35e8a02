//! Character-level encoder-decoder: bidirectional LSTM encoder, LSTM decoder, optional
//! Luong attention, output projection tied to the decoder embedding (homework Q3).
//!
//! Shapes: B batch, S source length, T target length, E embedding, He encoder units per
//! direction, Hd decoder units (= 2 He: the decoder starts from both directions' final
//! states concatenated), V target vocabulary.

use super::attention::{GeneralAttention, Memory};
use super::lstm::{Lstm, Recording, State};
use super::seeded::{Dropout, Params, maybe_dropout};
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

/// The recorded steps of one training forward pass, one per LSTM (see
/// [`Seq2Seq::train_loss`]), and the dropped-out embeddings whose projection ran outside
/// autograd (see [`Seq2Seq::step_inputs`]).
#[derive(Debug, Default)]
pub struct Recordings {
    enc_fwd: Recording,
    enc_bwd: Recording,
    dec: Recording,
    src: Option<DroppedInputs>,
    tgt: Option<DroppedInputs>,
}

/// A sequence's embeddings after dropout, time-major (`[T * B, E]`, row `t * B + b`), as a
/// recorded training step feeds them to its LSTMs.
#[derive(Debug)]
struct DroppedInputs {
    /// `[T * B]` u32: the embedded tokens.
    ids: Tensor,
    /// `[T * B, E]`: the mask values (0 or 1 / (1 - p)).
    mask: Tensor,
    /// `[T * B, E]`: the embeddings times the mask, detached.
    x: Tensor,
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

/// Adds to `table`'s gradient the gradient `dx` (`[T * B, E]`) of the dropped embeddings
/// `inputs`: through the mask, then summed into the rows of the embedded tokens.
fn add_table_grad(
    table: &Tensor,
    inputs: &DroppedInputs,
    dx: Tensor,
    grads: &mut candle_core::backprop::GradStore,
) -> Result<()> {
    let rows = dx.mul(&inputs.mask)?;
    let g = table.zeros_like()?.index_add(&inputs.ids, &rows, 0)?;
    super::lstm::accumulate(grads, table, g)
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
    /// `[B]` column per step) embedded by `table`. Without dropout, one product projects the
    /// whole (small) table and each step looks its rows up. With dropout the embeddings get
    /// one `[B, T, E]` mask (drawn in the order a whole-batch mask is). A recorded training
    /// step on the fused CPU path (`record` given) then projects all steps' dropped
    /// embeddings in one product per LSTM *outside* autograd and keeps them in `record`:
    /// [`Seq2Seq::backward`] takes their gradient from the gates' gradients the LSTM steps
    /// recorded, again in one product per LSTM, instead of a product, a mask, a lookup and
    /// a full-size weight-gradient sum per step and LSTM in Candle's backward pass. Otherwise
    /// each step's embeddings get their slice of the mask and are projected on their own.
    /// No step slices a tracked `[B, T, ...]` tensor, whose backward pass Candle pads to the
    /// full size every step.
    fn step_inputs(
        &self,
        lstms: &[&Lstm],
        table: &Tensor,
        cols: &[Tensor],
        dropout: &mut Option<&mut Dropout>,
        record: Option<&mut Option<DroppedInputs>>,
    ) -> Result<Vec<Vec<Tensor>>> {
        let t = cols.len();
        let n = match cols.first() {
            Some(c) => c.dim(0)?,
            None => 0,
        };
        let e = table.dim(1)?;
        let mask = dropout.as_deref_mut().and_then(|d| d.mask(n * t * e));
        let record = record.filter(|_| super::lstm_cell::fused(table) && t > 0);
        match (mask, record) {
            (Some(mask), Some(record)) => {
                // Time-major, so that step j's rows are one contiguous block.
                let mut tm = Vec::with_capacity(mask.len());
                for j in 0..t {
                    for i in 0..n {
                        tm.extend_from_slice(&mask[(i * t + j) * e..(i * t + j + 1) * e]);
                    }
                }
                let mask = Tensor::from_vec(tm, (t * n, e), &self.device)?;
                let ids = Tensor::cat(cols, 0)?;
                let x = table.detach().index_select(&ids, 0)?.mul(&mask)?;
                let steps = lstms
                    .iter()
                    .map(|l| {
                        let xp = l.project_detached(&x)?;
                        (0..t).map(|j| xp.narrow(0, j * n, n)).collect()
                    })
                    .collect();
                *record = Some(DroppedInputs { ids, mask, x });
                steps
            }
            (None, _) => lstms
                .iter()
                .map(|l| {
                    let projected = l.input_table(table)?;
                    cols.iter()
                        .map(|ids| projected.index_select(ids, 0))
                        .collect()
                })
                .collect(),
            (Some(mask), None) => {
                let embedded = cols
                    .iter()
                    .enumerate()
                    .map(|(j, ids)| {
                        let m: Vec<f32> = (0..n)
                            .flat_map(|i| mask[(i * t + j) * e..(i * t + j + 1) * e].iter())
                            .copied()
                            .collect();
                        let m = Tensor::from_vec(m, (n, e), &self.device)?;
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

    /// Encodes `[B, S]` sources.
    pub fn encode(&self, b: &BatchTensors, dropout: Option<&mut Dropout>) -> Result<Encoded> {
        self.encode_rec(b, dropout, None)
    }

    fn encode_rec(
        &self,
        b: &BatchTensors,
        mut dropout: Option<&mut Dropout>,
        rec: Option<&mut Recordings>,
    ) -> Result<Encoded> {
        let (rf, rb, rs) = match rec {
            Some(r) => (Some(&mut r.enc_fwd), Some(&mut r.enc_bwd), Some(&mut r.src)),
            None => (None, None, None),
        };
        let mut xp = self.step_inputs(
            &[&self.enc_fwd, &self.enc_bwd],
            &self.src_emb,
            &b.src_steps,
            &mut dropout,
            rs,
        )?;
        let (xb, xf) = (xp.pop(), xp.pop());
        let (Some(xf), Some(xb)) = (xf, xb) else {
            candle_core::bail!("encoder: missing step inputs")
        };
        let (of, sf) =
            self.enc_fwd
                .run_suffix_padded(&xf, &b.step_masks, &b.src_last, false, rf)?;
        let (ob, sb) = self
            .enc_bwd
            .run_suffix_padded(&xb, &b.step_masks, &b.src_last, true, rb)?;
        let state = State {
            h: Tensor::cat(&[&sf.h, &sb.h], 1)?,
            c: Tensor::cat(&[&sf.c, &sb.c], 1)?,
        };
        let memory = match &self.attn {
            None => None,
            Some(attn) => {
                let values = Tensor::cat(&[Tensor::stack(&of, 1)?, Tensor::stack(&ob, 1)?], 2)?;
                let values = maybe_dropout(&mut dropout, &values)?;
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
    /// that token count so evaluation can average over batches exactly.
    pub fn loss(&self, b: &BatchTensors, dropout: Option<&mut Dropout>) -> Result<(Tensor, f64)> {
        self.loss_rec(b, dropout, None, None)
    }

    /// [`Seq2Seq::loss`] for a training step: the LSTMs' recurrent weights get their
    /// gradient from [`Seq2Seq::backward`] with the returned recordings, in one product per
    /// LSTM rather than one per time step (see [`Lstm::step_rec`]). Same loss value.
    pub fn train_loss(
        &self,
        b: &BatchTensors,
        dropout: Option<&mut Dropout>,
    ) -> Result<(Tensor, f64, Recordings)> {
        let mut rec = Recordings::default();
        let (loss, count) = self.loss_rec(b, dropout, Some(&mut rec), None)?;
        Ok((loss, count, rec))
    }

    /// [`Seq2Seq::train_loss`] of one shard of a batch: the shard's summed token losses
    /// divided by `denom`, the whole batch's token count, so that the shards' losses and
    /// gradients add up to the whole batch's mean-per-token loss and its gradient.
    pub fn train_loss_shard(
        &self,
        b: &BatchTensors,
        dropout: Option<&mut Dropout>,
        denom: f64,
    ) -> Result<(Tensor, f64, Recordings)> {
        let mut rec = Recordings::default();
        let (loss, count) = self.loss_rec(b, dropout, Some(&mut rec), Some(denom))?;
        Ok((loss, count, rec))
    }

    /// Per-row sizes of the dropout masks one training forward pass draws, in draw order,
    /// for a batch padded to `src_len` and `tgt_len`: each mask is `[B, ...]` row-major, so
    /// rows `a..z` of the batch use elements `a * size..z * size` of it.
    pub fn dropout_row_sizes(&self, src_len: usize, tgt_len: usize) -> Vec<usize> {
        let (e, he, hd) = (
            self.cfg.embedding_dim,
            self.cfg.encoder_hidden,
            self.cfg.decoder_hidden,
        );
        let mut sizes = vec![src_len * e];
        if self.attn.is_some() {
            sizes.push(src_len * 2 * he);
        }
        sizes.extend([tgt_len * e, tgt_len * hd]);
        sizes
    }

    /// The gradients of `loss` from [`Seq2Seq::train_loss`], recurrent weights included.
    pub fn backward(
        &self,
        loss: &Tensor,
        rec: Recordings,
    ) -> Result<candle_core::backprop::GradStore> {
        let mut grads = loss.backward()?;
        if let Some(src) = &rec.src {
            let df = self
                .enc_fwd
                .add_input_grad(&rec.enc_fwd, false, &src.x, &mut grads)?;
            let db = self
                .enc_bwd
                .add_input_grad(&rec.enc_bwd, true, &src.x, &mut grads)?;
            add_table_grad(&self.src_emb, src, (df + db)?, &mut grads)?;
        }
        if let Some(tgt) = &rec.tgt {
            let d = self
                .dec
                .add_input_grad(&rec.dec, false, &tgt.x, &mut grads)?;
            add_table_grad(&self.tgt_emb, tgt, d, &mut grads)?;
        }
        self.enc_fwd.add_recurrent_grad(rec.enc_fwd, &mut grads)?;
        self.enc_bwd.add_recurrent_grad(rec.enc_bwd, &mut grads)?;
        self.dec.add_recurrent_grad(rec.dec, &mut grads)?;
        Ok(grads)
    }

    fn loss_rec(
        &self,
        b: &BatchTensors,
        mut dropout: Option<&mut Dropout>,
        mut rec: Option<&mut Recordings>,
        denom: Option<f64>,
    ) -> Result<(Tensor, f64)> {
        let enc = self.encode_rec(b, dropout.as_deref_mut(), rec.as_deref_mut())?;
        let (n, t) = b.tgt_in.dims2()?;
        let xp = self
            .step_inputs(
                &[&self.dec],
                &self.tgt_emb,
                &b.tgt_steps,
                &mut dropout,
                rec.as_deref_mut().map(|r| &mut r.tgt),
            )?
            .pop();
        let Some(xp) = xp else {
            candle_core::bail!("decoder: missing step inputs")
        };
        let mut state = enc.state.clone();
        let mut hs = Vec::with_capacity(t);
        for x in &xp {
            state = self
                .dec
                .step_rec(x, &state, rec.as_deref_mut().map(|r| &mut r.dec))?;
            hs.push(state.h.clone());
        }
        let hs = Tensor::stack(&hs, 1)?;
        let outs = match (&self.attn, enc.memory.as_ref()) {
            (Some(attn), Some(mem)) => attn.attend_all(&hs, mem)?.0,
            _ => hs,
        };
        let outs = maybe_dropout(&mut dropout, &outs)?;
        let logits = self.logits(&outs.reshape((n * t, ()))?)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let nll = logp
            .gather(&b.tgt_out.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()?;
        let count = b.tgt_mask.sum_all()?.to_scalar::<f32>()? as f64;
        let loss = ((nll * &b.tgt_mask)?.sum_all()? / denom.unwrap_or(count).max(1.0))?;
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
        let enc = self.encode(&bt, None)?;
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

    /// The training path (recurrent weights' gradient as one product per LSTM) gives the
    /// same loss and the same gradient for every variable as plain autograd.
    #[test]
    fn recorded_backward_matches_autograd() {
        // With dropout the recorded step projects the embeddings outside autograd; the same
        // masks (same seed) must give plain autograd's loss and gradients.
        for (att, p) in [
            (Attention::None, 0.0),
            (Attention::General, 0.0),
            (Attention::None, 0.3),
            (Attention::General, 0.3),
        ] {
            let m = tiny(att);
            let drop = || Dropout::new(p, ChaCha8Rng::seed_from_u64(9));
            let (mut d1, mut d2) = (drop(), drop());
            let ex = [
                Example {
                    src: vec![4, 5, 6, 7, 8],
                    tgt: vec![4, 5, 6],
                },
                Example {
                    src: vec![5, 6],
                    tgt: vec![7, 4, 4, 5, 6],
                },
            ];
            let refs: Vec<&Example> = ex.iter().collect();
            let bt = BatchTensors::new(&Batch::new(&refs), &Device::Cpu).unwrap();
            let (plain, _) = m.loss(&bt, Some(&mut d1)).unwrap();
            let want = plain.backward().unwrap();
            let (loss, _, rec) = m.train_loss(&bt, Some(&mut d2)).unwrap();
            let (a, b) = (
                loss.to_scalar::<f32>().unwrap(),
                plain.to_scalar::<f32>().unwrap(),
            );
            // Without dropout both paths run the same ops: the same bits.
            let tol = if p == 0.0 { 0.0 } else { 1e-6 * b.abs() };
            assert!((a - b).abs() <= tol, "{att:?} p={p}: {a} vs {b}");
            let got = m.backward(&loss, rec).unwrap();
            for (name, var) in m.params().named() {
                let v = |g: &candle_core::backprop::GradStore| {
                    g.get(var.as_tensor())
                        .unwrap_or_else(|| panic!("{att:?}: no gradient for {name}"))
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                };
                let (a, b) = (v(&got), v(&want));
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{att:?} p={p} {name}: {x} vs {y}"
                    );
                }
            }
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
