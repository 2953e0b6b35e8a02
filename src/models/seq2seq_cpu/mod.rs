//! The translator's training step on the CPU, forward and backward written out by hand.
//!
//! Why: through Candle's autograd a step was hundreds of small tensor operations, each
//! allocating its result, and a backward pass that sums every gradient into a fresh
//! zero-filled buffer; after ten rounds of fusing pieces of it (`bench/notes/seq2seq.md`)
//! we were only level with PyTorch on the homework's workload. Here a step is the products
//! themselves (through the gemm crate, as in Candle) and one pass over the values for each
//! element-wise piece, in buffers reused from step to step, on packed sequences: no work on
//! padding, as PyTorch's packed encoder, and the decoder's padding is skipped too, since
//! nothing after a sentence's end reaches its loss.
//!
//! It computes what [`Seq2Seq::loss`] computes with the same dropout masks ([`StepMasks`]
//! depend on an element's place, not on the order they are made in) and the gradient of
//! every variable that autograd gives; the tests check both against Candle's. Candle's
//! tensor path stays for other devices and is the reference.

mod attention;
mod lstm;
mod packing;
#[cfg(test)]
mod tests;

use self::attention::{AttnGrads, AttnTape, AttnWeights, Sentence};
use self::lstm::{LstmGrads, LstmWeights, Tape, sized, zeroed};
use self::packing::Packing;
use super::cpu_kernels::{Mat, add_column_sums, contiguous_f32, matmul};
use super::seeded::{MaskKind, StepMasks};
use super::seq2seq::{Seq2Seq, Seq2SeqConfig};
use crate::data::pairs::Batch;
use crate::spec::Attention;
use candle_core::{Layout, Result, Storage, Tensor, bail};

/// The model's weights as slices of its variables.
struct Weights<'a> {
    src_emb: &'a [f32],
    enc: [LstmWeights<'a>; 2],
    tgt_emb: &'a [f32],
    dec: LstmWeights<'a>,
    attn: Option<AttnWeights<'a>>,
    /// `[V, Hd]` (the target embedding when tied) and `[V]`.
    gen_w: &'a [f32],
    gen_b: &'a [f32],
    emb: usize,
    enc_hidden: usize,
    dec_hidden: usize,
    tgt_vocab: usize,
}

impl<'a> Weights<'a> {
    /// Names the variables' slices, given in `Seq2Seq::params` order (which is
    /// [`Seq2SeqConfig::param_shapes`]' order, checked here).
    fn new(cfg: &Seq2SeqConfig, slices: &[&'a [f32]]) -> Result<Self> {
        let shapes = cfg.param_shapes();
        if slices.len() != shapes.len()
            || slices
                .iter()
                .zip(&shapes)
                .any(|(s, (_, shape))| s.len() != shape.iter().product::<usize>())
        {
            bail!("seq2seq cpu step: the variables do not have the configuration's shapes")
        }
        let (e, he, hd) = (cfg.embedding_dim, cfg.encoder_hidden, cfg.decoder_hidden);
        let lstm = |at: usize, input: usize, hidden: usize| LstmWeights {
            w_ih: slices[at],
            w_hh: slices[at + 1],
            b_ih: slices[at + 2],
            b_hh: slices[at + 3],
            input,
            hidden,
        };
        let mut at = 14;
        let attn = (cfg.attention == Attention::General).then(|| {
            at += 3;
            AttnWeights {
                w_in: slices[at - 3],
                w_out: slices[at - 2],
                b_out: slices[at - 1],
                enc: 2 * he,
                dec: hd,
            }
        });
        let gen_w = if cfg.tie_embeddings {
            slices[9]
        } else {
            at += 1;
            slices[at - 1]
        };
        Ok(Weights {
            src_emb: slices[0],
            enc: [lstm(1, e, he), lstm(5, e, he)],
            tgt_emb: slices[9],
            dec: lstm(10, e, hd),
            attn,
            gen_w,
            gen_b: slices[at],
            emb: e,
            enc_hidden: he,
            dec_hidden: hd,
            tgt_vocab: cfg.tgt_vocab,
        })
    }
}

/// The gradient of every variable of a translator, shaped as the variables.
#[derive(Debug, Clone)]
pub struct Grads {
    src_emb: Vec<f32>,
    enc: [LstmGrads; 2],
    tgt_emb: Vec<f32>,
    dec: LstmGrads,
    attn: Option<AttnGrads>,
    /// `None` when the output layer is the target embedding.
    gen_w: Option<Vec<f32>>,
    gen_b: Vec<f32>,
}

impl Grads {
    /// Zero gradients for a model of configuration `cfg`.
    pub fn zeros(cfg: &Seq2SeqConfig) -> Self {
        let (e, he, hd) = (cfg.embedding_dim, cfg.encoder_hidden, cfg.decoder_hidden);
        Grads {
            src_emb: vec![0.0; cfg.src_vocab * e],
            enc: [LstmGrads::zeros(e, he), LstmGrads::zeros(e, he)],
            tgt_emb: vec![0.0; cfg.tgt_vocab * e],
            dec: LstmGrads::zeros(e, hd),
            attn: (cfg.attention == Attention::General).then(|| AttnGrads::zeros(2 * he, hd)),
            gen_w: (!cfg.tie_embeddings).then(|| vec![0.0; cfg.tgt_vocab * hd]),
            gen_b: vec![0.0; cfg.tgt_vocab],
        }
    }

    /// Every buffer, in `Seq2Seq::params` order.
    pub fn buffers(&mut self) -> Vec<&mut Vec<f32>> {
        let [enc_f, enc_b] = &mut self.enc;
        let mut out = vec![&mut self.src_emb];
        out.extend(enc_f.buffers());
        out.extend(enc_b.buffers());
        out.push(&mut self.tgt_emb);
        out.extend(self.dec.buffers());
        if let Some(a) = &mut self.attn {
            out.extend(a.buffers());
        }
        if let Some(g) = &mut self.gen_w {
            out.push(g);
        }
        out.push(&mut self.gen_b);
        out
    }

    /// Adds `other` (another shard's gradients) to these.
    pub fn add(&mut self, other: &mut Grads) {
        for (a, b) in self.buffers().into_iter().zip(other.buffers()) {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += y;
            }
        }
    }

    /// The gradients as tensors, paired with their variables (`Seq2Seq::params` order).
    pub fn into_tensors(mut self, model: &Seq2Seq) -> Result<Vec<(Tensor, Tensor)>> {
        let vars = model.params().named();
        let bufs = self.buffers();
        if vars.len() != bufs.len() {
            bail!(
                "seq2seq cpu step: {} gradients for {} variables",
                bufs.len(),
                vars.len()
            )
        }
        vars.iter()
            .zip(bufs)
            .map(|((_, var), g)| {
                let g = Tensor::from_vec(std::mem::take(g), var.shape(), var.device())?;
                Ok((var.as_tensor().clone(), g))
            })
            .collect()
    }
}

/// Buffers one thread's steps reuse; contents between steps are meaningless.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Dropped source and target embeddings (time-major packed) and their masks.
    src_x: Vec<f32>,
    src_mask: Vec<f32>,
    tgt_x: Vec<f32>,
    tgt_mask: Vec<f32>,
    enc: [Tape; 2],
    dec: Tape,
    /// The decoder's initial state.
    h0: Vec<f32>,
    c0: Vec<f32>,
    /// `[B, S, 2He]`: dropped encoder outputs, sentence by sentence, and their mask.
    values: Vec<f32>,
    values_mask: Vec<f32>,
    attn: AttnTape,
    /// Dropped decoder outputs, their mask, the logits (then their gradient).
    yd: Vec<f32>,
    out_mask: Vec<f32>,
    logits: Vec<f32>,
    /// Gradients of the decoder outputs (row-major, then time-major packed).
    dy: Vec<f32>,
    dq: Vec<f32>,
    dh: Vec<f32>,
    dvalues: Vec<f32>,
    /// The encoder outputs' gradients (time-major packed), per direction.
    d_enc_out: [Vec<f32>; 2],
    /// The encoder final states' gradients: forwards h, c, backwards h, c.
    d_final: [Vec<f32>; 4],
    dx_src: Vec<f32>,
    dx_tgt: Vec<f32>,
}

/// A step's contribution to the batch's loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLoss {
    /// Summed token losses of these rows divided by the batch's token count.
    pub loss: f64,
    /// Target tokens (EOS included) in these rows.
    pub tokens: f64,
}

/// The f32 values of a contiguous CPU tensor's storage.
fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        bail!("seq2seq cpu step: CPU tensors only")
    };
    contiguous_f32(cpu, layout, "seq2seq cpu step")
}

/// The teacher-forced loss of `batch` (its summed token losses divided by `denom`, the
/// token count of the whole batch it is a shard of) and its gradients, added to `grads`.
/// `first_row` is the batch row of `batch`'s first row, for the dropout masks.
pub fn train_step(
    model: &Seq2Seq,
    ws: &mut Workspace,
    batch: &Batch,
    first_row: usize,
    masks: Option<&StepMasks>,
    denom: f64,
    grads: &mut Grads,
) -> Result<StepLoss> {
    let vars = model.params().named();
    let guards: Vec<_> = vars
        .iter()
        .map(|(_, v)| v.as_tensor().storage_and_layout())
        .collect();
    let slices = guards
        .iter()
        .map(|(s, l)| cpu_f32(s, l))
        .collect::<Result<Vec<_>>>()?;
    let w = Weights::new(model.config(), &slices)?;
    if batch.src_lens.contains(&0) {
        bail!("seq2seq cpu step: an empty source sentence")
    }
    Ok(step(&w, ws, batch, first_row, masks, denom, grads))
}

/// Gathers the embeddings of the packed positions of `ids` (`[B, stride]`) from `table`
/// into `x`, times their dropout mask (kept in `mask`) when there are masks.
#[allow(clippy::too_many_arguments)]
fn embed(
    pack: &Packing,
    ids: &[u32],
    stride: usize,
    table: &[f32],
    dim: usize,
    masks: Option<(&StepMasks, MaskKind, usize)>,
    x: &mut Vec<f32>,
    mask: &mut Vec<f32>,
) {
    let x = sized(x, pack.total() * dim);
    let mask = sized(mask, if masks.is_some() { x.len() } else { 0 });
    for t in 0..pack.steps() {
        for r in 0..pack.active[t] {
            let (row, at) = (pack.order[r], (pack.offset[t] + r) * dim);
            let id = ids[row * stride + t] as usize;
            let dst = &mut x[at..at + dim];
            dst.copy_from_slice(&table[id * dim..(id + 1) * dim]);
            if let Some((m, kind, first_row)) = masks {
                let mv = &mut mask[at..at + dim];
                m.fill(kind, first_row + row, t, mv);
                for (d, k) in dst.iter_mut().zip(mv.iter()) {
                    *d *= k;
                }
            }
        }
    }
}

/// Adds `dx` (gradients of the packed embeddings, times their mask when there is one) to
/// the rows of `table_grad` the positions looked up.
fn add_embedding_grad(
    pack: &Packing,
    ids: &[u32],
    stride: usize,
    dx: &[f32],
    mask: Option<&[f32]>,
    dim: usize,
    table_grad: &mut [f32],
) {
    for t in 0..pack.steps() {
        for r in 0..pack.active[t] {
            let (row, at) = (pack.order[r], (pack.offset[t] + r) * dim);
            let id = ids[row * stride + t] as usize;
            let g = &mut table_grad[id * dim..(id + 1) * dim];
            let d = &dx[at..at + dim];
            match mask {
                Some(m) => {
                    for ((g, d), k) in g.iter_mut().zip(d).zip(&m[at..at + dim]) {
                        *g += d * k;
                    }
                }
                None => {
                    for (g, d) in g.iter_mut().zip(d) {
                        *g += d;
                    }
                }
            }
        }
    }
}

/// Multiplies `x` by `mask` element-wise.
fn apply_mask(x: &mut [f32], mask: &[f32]) {
    for (v, k) in x.iter_mut().zip(mask) {
        *v *= k;
    }
}

/// [`train_step`] on the weights' slices.
fn step(
    w: &Weights,
    ws: &mut Workspace,
    batch: &Batch,
    first_row: usize,
    masks: Option<&StepMasks>,
    denom: f64,
    grads: &mut Grads,
) -> StepLoss {
    let Workspace {
        src_x,
        src_mask,
        tgt_x,
        tgt_mask,
        enc: [enc_f, enc_b],
        dec,
        h0,
        c0,
        values,
        values_mask,
        attn,
        yd,
        out_mask,
        logits,
        dy,
        dq,
        dh,
        dvalues,
        d_enc_out: [d_out_f, d_out_b],
        d_final: [dfh, dfc, dbh, dbc],
        dx_src,
        dx_tgt,
    } = ws;
    let (b, s_len, t_len) = (batch.size, batch.src_len, batch.tgt_len);
    let (e, he, hd, v) = (w.emb, w.enc_hidden, w.dec_hidden, w.tgt_vocab);
    let enc_w = 2 * he;
    let with_masks = |kind| masks.map(|m| (m, kind, first_row));
    let sp = Packing::new(&batch.src_lens);
    let tp = Packing::new(&batch.tgt_lens);
    let mut src_rank = vec![0; b];
    for (r, &row) in sp.order.iter().enumerate() {
        src_rank[row] = r;
    }
    let (ns, nt) = (sp.total(), tp.total());

    // Encoder: both directions over the dropped source embeddings.
    embed(
        &sp,
        &batch.src,
        s_len,
        w.src_emb,
        e,
        with_masks(MaskKind::SourceEmbedding),
        src_x,
        src_mask,
    );
    lstm::forward(&w.enc[0], &sp, src_x, false, None, enc_f);
    lstm::forward(&w.enc[1], &sp, src_x, true, None, enc_b);

    // Decoder: from both directions' final states, over the dropped target inputs.
    let h0 = sized(h0, b * hd);
    let c0 = sized(c0, b * hd);
    for (q, &row) in tp.order.iter().enumerate() {
        let r = src_rank[row];
        for (dst, (f, bw)) in [
            (&mut *h0, (&enc_f.state_h, &enc_b.state_h)),
            (&mut *c0, (&enc_f.state_c, &enc_b.state_c)),
        ] {
            dst[q * hd..q * hd + he].copy_from_slice(&f[r * he..(r + 1) * he]);
            dst[q * hd + he..(q + 1) * hd].copy_from_slice(&bw[r * he..(r + 1) * he]);
        }
    }
    embed(
        &tp,
        &batch.tgt_in,
        t_len,
        w.tgt_emb,
        e,
        with_masks(MaskKind::TargetEmbedding),
        tgt_x,
        tgt_mask,
    );
    lstm::forward(&w.dec, &tp, tgt_x, false, Some((&*h0, &*c0)), dec);

    // Attention and the output layer read the decoder outputs sentence by sentence.
    let mut first = 0;
    let sentences: Vec<Sentence> = tp
        .order
        .iter()
        .zip(&tp.lens)
        .map(|(&row, &k)| {
            let s = Sentence {
                first,
                queries: k,
                chars: batch.src_lens[row],
            };
            first += k;
            s
        })
        .collect();
    // Decoder output of sentence position q at step t, row-major from time-major.
    let gather_rows = |from: &[f32], to: &mut [f32], to_stride: usize| {
        for (q, s) in sentences.iter().enumerate() {
            for t in 0..s.queries {
                let src = (tp.offset[t] + q) * hd;
                let dst = (s.first + t) * to_stride;
                to[dst..dst + hd].copy_from_slice(&from[src..src + hd]);
            }
        }
    };
    let yd = sized(yd, nt * hd);
    match &w.attn {
        Some(aw) => {
            let vals = sized(values, b * s_len * enc_w);
            let vmask = sized(values_mask, if masks.is_some() { vals.len() } else { 0 });
            for (q, (&row, s)) in tp.order.iter().zip(&sentences).enumerate() {
                let r = src_rank[row];
                for c in 0..s.chars {
                    let (idx, at) = (sp.offset[c] + r, (q * s_len + c) * enc_w);
                    let dst = &mut vals[at..at + enc_w];
                    dst[..he].copy_from_slice(&enc_f.h[idx * he..(idx + 1) * he]);
                    dst[he..].copy_from_slice(&enc_b.h[idx * he..(idx + 1) * he]);
                    if let Some(m) = masks {
                        let mv = &mut vmask[at..at + enc_w];
                        m.fill(MaskKind::EncoderOutput, first_row + row, c, mv);
                        apply_mask(dst, mv);
                    }
                }
            }
            let hc = sized(&mut attn.hc, nt * (hd + enc_w));
            gather_rows(&dec.h, hc, hd + enc_w);
            attention::forward(aw, &sentences, vals, s_len, attn);
            yd.copy_from_slice(&attn.y[..nt * hd]);
        }
        None => gather_rows(&dec.h, yd, hd),
    }
    let out_mask = sized(out_mask, if masks.is_some() { nt * hd } else { 0 });
    if let Some(m) = masks {
        for (s, &row) in sentences.iter().zip(&tp.order) {
            for t in 0..s.queries {
                let at = (s.first + t) * hd;
                let mv = &mut out_mask[at..at + hd];
                m.fill(MaskKind::DecoderOutput, first_row + row, t, mv);
                apply_mask(&mut yd[at..at + hd], mv);
            }
        }
    }

    // Output layer, log-softmax and the loss; the logits become their gradient.
    let logits = sized(logits, nt * v);
    for row in logits.chunks_exact_mut(v) {
        row.copy_from_slice(w.gen_b);
    }
    matmul(
        nt,
        v,
        hd,
        logits,
        v,
        true,
        Mat::rows(yd, hd),
        Mat::t(w.gen_w, hd),
    );
    let mut loss = 0f64;
    let scale = (1.0 / denom.max(1.0)) as f32;
    for (s, &row) in sentences.iter().zip(&tp.order) {
        for t in 0..s.queries {
            let z = &mut logits[(s.first + t) * v..(s.first + t + 1) * v];
            let gold = batch.tgt_out[row * t_len + t] as usize;
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let gold_logit = z[gold] - max;
            let mut sum = 0f32;
            for x in z.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            loss += (sum.ln() - gold_logit) as f64;
            let k = scale / sum;
            for x in z.iter_mut() {
                *x *= k;
            }
            z[gold] -= scale;
        }
    }
    let dlogits = &logits[..];

    // Backward: output layer.
    let dy = sized(dy, nt * hd);
    matmul(
        nt,
        hd,
        v,
        dy,
        hd,
        false,
        Mat::rows(dlogits, v),
        Mat::rows(w.gen_w, hd),
    );
    let gen_w_grad = match &mut grads.gen_w {
        Some(g) => g,
        None => &mut grads.tgt_emb,
    };
    matmul(
        v,
        hd,
        nt,
        gen_w_grad,
        hd,
        true,
        Mat::t(dlogits, v),
        Mat::rows(yd, hd),
    );
    add_column_sums(dlogits, v, &mut grads.gen_b);
    if masks.is_some() {
        apply_mask(dy, out_mask);
    }

    // Attention (its queries' and values' gradients) or straight to the decoder.
    let (dq, d_out_enc) = match (&w.attn, &mut grads.attn) {
        (Some(aw), Some(ag)) => {
            let dq = sized(dq, nt * hd);
            let dvals = zeroed(dvalues, b * s_len * enc_w);
            attention::backward(aw, &sentences, values, s_len, attn, dy, dq, dvals, ag);
            if masks.is_some() {
                apply_mask(dvals, values_mask);
            }
            let df = zeroed(d_out_f, ns * he);
            let db = zeroed(d_out_b, ns * he);
            for (q, (&row, s)) in tp.order.iter().zip(&sentences).enumerate() {
                let r = src_rank[row];
                for c in 0..s.chars {
                    let (idx, at) = (sp.offset[c] + r, (q * s_len + c) * enc_w);
                    df[idx * he..(idx + 1) * he].copy_from_slice(&dvals[at..at + he]);
                    db[idx * he..(idx + 1) * he].copy_from_slice(&dvals[at + he..at + enc_w]);
                }
            }
            (&dq[..], Some((&df[..], &db[..])))
        }
        _ => (&dy[..], None),
    };
    let dh = sized(dh, nt * hd);
    for (q, s) in sentences.iter().enumerate() {
        for t in 0..s.queries {
            let (src, dst) = ((s.first + t) * hd, (tp.offset[t] + q) * hd);
            dh[dst..dst + hd].copy_from_slice(&dq[src..src + hd]);
        }
    }

    // Decoder, then its initial state's gradient to the encoder's final states.
    let dx_tgt = sized(dx_tgt, nt * e);
    lstm::backward(
        &w.dec,
        &tp,
        tgt_x,
        false,
        Some(dh),
        None,
        dec,
        &mut grads.dec,
        dx_tgt,
        false,
    );
    let [dfh, dfc, dbh, dbc] = [dfh, dfc, dbh, dbc].map(|v| sized(v, b * he));
    for (q, &row) in tp.order.iter().enumerate() {
        let r = src_rank[row];
        let (h, c) = (
            &dec.state_h[q * hd..(q + 1) * hd],
            &dec.state_c[q * hd..(q + 1) * hd],
        );
        dfh[r * he..(r + 1) * he].copy_from_slice(&h[..he]);
        dbh[r * he..(r + 1) * he].copy_from_slice(&h[he..]);
        dfc[r * he..(r + 1) * he].copy_from_slice(&c[..he]);
        dbc[r * he..(r + 1) * he].copy_from_slice(&c[he..]);
    }
    let dx_src = sized(dx_src, ns * e);
    let (dof, dob) = match d_out_enc {
        Some((f, b)) => (Some(f), Some(b)),
        None => (None, None),
    };
    lstm::backward(
        &w.enc[0],
        &sp,
        src_x,
        false,
        dof,
        Some((dfh, dfc)),
        enc_f,
        &mut grads.enc[0],
        dx_src,
        false,
    );
    lstm::backward(
        &w.enc[1],
        &sp,
        src_x,
        true,
        dob,
        Some((dbh, dbc)),
        enc_b,
        &mut grads.enc[1],
        dx_src,
        true,
    );
    add_embedding_grad(
        &sp,
        &batch.src,
        s_len,
        dx_src,
        masks.is_some().then_some(&src_mask[..]),
        e,
        &mut grads.src_emb,
    );
    add_embedding_grad(
        &tp,
        &batch.tgt_in,
        t_len,
        dx_tgt,
        masks.is_some().then_some(&tgt_mask[..]),
        e,
        &mut grads.tgt_emb,
    );
    StepLoss {
        loss: loss / denom.max(1.0),
        tokens: nt as f64,
    }
}
