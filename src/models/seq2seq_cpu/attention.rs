//! Luong "general" attention over packed decoder outputs, forward and backward.
//!
//! For each sentence, its decoder outputs `q` (one row per target position) attend over its
//! own encoder outputs `v` (one row per source character): `scores = (q W_in^T) v^T`,
//! softmax over the characters, `context = weights v`, output `tanh([q; context] W_out^T +
//! b_out)`. Padding is never scored, which is what the tensor path's -1e9 bias gives (its
//! weight underflows to exactly 0). Queries are laid out sentence by sentence (row-major
//! packing), so each sentence's products read contiguous rows.

use super::lstm::{sized, zeroed};
use crate::models::cpu_kernels::{Mat, add_column_sums, matmul, tanh};

/// The attention layer's weights, as slices of the model's variables.
#[derive(Debug, Clone, Copy)]
pub struct AttnWeights<'a> {
    /// `[enc, dec]` (PyTorch's `linear_in`, from the decoder's size to the encoder's).
    pub w_in: &'a [f32],
    /// `[dec, dec + enc]`.
    pub w_out: &'a [f32],
    /// `[dec]`.
    pub b_out: &'a [f32],
    pub enc: usize,
    pub dec: usize,
}

/// The gradients of [`AttnWeights`].
#[derive(Debug, Clone, Default)]
pub struct AttnGrads {
    pub w_in: Vec<f32>,
    pub w_out: Vec<f32>,
    pub b_out: Vec<f32>,
}

impl AttnGrads {
    /// Zero gradients for a layer of these sizes.
    pub fn zeros(enc: usize, dec: usize) -> Self {
        AttnGrads {
            w_in: vec![0.0; enc * dec],
            w_out: vec![0.0; dec * (dec + enc)],
            b_out: vec![0.0; dec],
        }
    }

    /// Every buffer, in the order of [`AttnWeights`]' fields.
    pub fn buffers(&mut self) -> [&mut Vec<f32>; 3] {
        [&mut self.w_in, &mut self.w_out, &mut self.b_out]
    }
}

/// One sentence's place in the packed queries and the encoder outputs.
#[derive(Debug, Clone, Copy)]
pub struct Sentence {
    /// First query row (row-major packing) and number of queries.
    pub first: usize,
    pub queries: usize,
    /// Source characters (the scored rows of its encoder outputs).
    pub chars: usize,
}

/// What the forward pass keeps. `hc` is `[N, dec + enc]`: the caller writes the queries
/// into its first `dec` columns, the forward pass the contexts into the rest.
#[derive(Debug, Default)]
pub struct AttnTape {
    pub hc: Vec<f32>,
    /// `[N, dec]`: the attentional outputs.
    pub y: Vec<f32>,
    /// `[N, enc]`: the projected queries.
    qp: Vec<f32>,
    /// Each sentence's `[queries, chars]` weights, one after the other.
    weights: Vec<f32>,
    /// Scratch for the backward pass.
    dhc: Vec<f32>,
    dqp: Vec<f32>,
    dw: Vec<f32>,
}

/// Where each sentence's weights start in [`AttnTape::weights`].
fn weight_offsets(sentences: &[Sentence]) -> Vec<usize> {
    let mut at = 0;
    sentences
        .iter()
        .map(|s| {
            let here = at;
            at += s.queries * s.chars;
            here
        })
        .collect()
}

/// Attends from the queries in `tape.hc` over `values` (`[B, stride, enc]`, sentence `i`'s
/// rows at `i * stride * enc`); leaves the outputs in `tape.y`.
pub fn forward(
    w: &AttnWeights,
    sentences: &[Sentence],
    values: &[f32],
    stride: usize,
    tape: &mut AttnTape,
) {
    let (enc, dec) = (w.enc, w.dec);
    let wide = dec + enc;
    let n: usize = sentences.iter().map(|s| s.queries).sum();
    let hc = sized(&mut tape.hc, n * wide);
    let qp = sized(&mut tape.qp, n * enc);
    matmul(
        n,
        enc,
        dec,
        qp,
        enc,
        false,
        Mat::rows(hc, wide),
        Mat::t(w.w_in, dec),
    );
    let offsets = weight_offsets(sentences);
    let total: usize = sentences.iter().map(|s| s.queries * s.chars).sum();
    let weights = sized(&mut tape.weights, total);
    for (i, (s, &at)) in sentences.iter().zip(&offsets).enumerate() {
        let (k, chars) = (s.queries, s.chars);
        let v = &values[i * stride * enc..(i * stride + chars) * enc];
        let wb = &mut weights[at..at + k * chars];
        matmul(
            k,
            chars,
            enc,
            wb,
            chars,
            false,
            Mat::rows(&qp[s.first * enc..(s.first + k) * enc], enc),
            Mat::t(v, enc),
        );
        for row in wb.chunks_exact_mut(chars) {
            softmax(row);
        }
        matmul(
            k,
            enc,
            chars,
            &mut hc[s.first * wide + dec..(s.first + k) * wide],
            wide,
            false,
            Mat::rows(wb, chars),
            Mat::rows(v, enc),
        );
    }
    let y = sized(&mut tape.y, n * dec);
    for row in y.chunks_exact_mut(dec) {
        row.copy_from_slice(w.b_out);
    }
    matmul(
        n,
        dec,
        wide,
        y,
        dec,
        true,
        Mat::rows(hc, wide),
        Mat::t(w.w_out, wide),
    );
    for v in y.iter_mut() {
        *v = tanh(*v);
    }
}

/// Softmax of one row in place (max subtracted first, as Candle and PyTorch do).
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Backpropagates through [`forward`] (same arguments, `tape` as it left it). `dy` holds
/// the outputs' gradient (`[N, dec]`; overwritten). Writes the queries' gradient to `dq`
/// (`[N, dec]`), adds the values' to `dvalues` (shaped as `values`) and the weights' to `g`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    w: &AttnWeights,
    sentences: &[Sentence],
    values: &[f32],
    stride: usize,
    tape: &mut AttnTape,
    dy: &mut [f32],
    dq: &mut [f32],
    dvalues: &mut [f32],
    g: &mut AttnGrads,
) {
    let (enc, dec) = (w.enc, w.dec);
    let wide = dec + enc;
    let n: usize = sentences.iter().map(|s| s.queries).sum();
    let AttnTape {
        hc,
        y,
        qp,
        weights,
        dhc,
        dqp,
        dw,
    } = tape;
    let dz = &mut dy[..n * dec];
    for (d, y) in dz.iter_mut().zip(&y[..n * dec]) {
        *d *= 1.0 - y * y;
    }
    add_column_sums(dz, dec, &mut g.b_out);
    let hc = &hc[..n * wide];
    matmul(
        dec,
        wide,
        n,
        &mut g.w_out,
        wide,
        true,
        Mat::t(dz, dec),
        Mat::rows(hc, wide),
    );
    let dhc = sized(dhc, n * wide);
    matmul(
        n,
        wide,
        dec,
        dhc,
        wide,
        false,
        Mat::rows(dz, dec),
        Mat::rows(w.w_out, wide),
    );
    let dqp = zeroed(dqp, n * enc);
    let qp = &qp[..n * enc];
    for (i, (s, at)) in sentences.iter().zip(weight_offsets(sentences)).enumerate() {
        let (k, chars) = (s.queries, s.chars);
        let vs = i * stride * enc..(i * stride + chars) * enc;
        let v = &values[vs.clone()];
        let dv = &mut dvalues[vs];
        let wb = &weights[at..at + k * chars];
        let dctx = &dhc[s.first * wide + dec..(s.first + k) * wide];
        let dws = sized(dw, k * chars);
        matmul(
            k,
            chars,
            enc,
            dws,
            chars,
            false,
            Mat::rows(dctx, wide),
            Mat::t(v, enc),
        );
        matmul(
            chars,
            enc,
            k,
            dv,
            enc,
            true,
            Mat::t(wb, chars),
            Mat::rows(dctx, wide),
        );
        // Softmax backward: ds = w * (dw - sum(w * dw)).
        for (wr, dr) in wb.chunks_exact(chars).zip(dws.chunks_exact_mut(chars)) {
            let dot: f32 = wr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
            for (d, wv) in dr.iter_mut().zip(wr) {
                *d = wv * (*d - dot);
            }
        }
        let dws = &dws[..];
        matmul(
            k,
            enc,
            chars,
            &mut dqp[s.first * enc..(s.first + k) * enc],
            enc,
            false,
            Mat::rows(dws, chars),
            Mat::rows(v, enc),
        );
        matmul(
            chars,
            enc,
            k,
            dv,
            enc,
            true,
            Mat::t(dws, chars),
            Mat::rows(&qp[s.first * enc..(s.first + k) * enc], enc),
        );
    }
    let dqp = &dqp[..];
    matmul(
        enc,
        dec,
        n,
        &mut g.w_in,
        dec,
        true,
        Mat::t(dqp, enc),
        Mat::rows(hc, wide),
    );
    for (d, row) in dq[..n * dec]
        .chunks_exact_mut(dec)
        .zip(dhc.chunks_exact(wide))
    {
        d.copy_from_slice(&row[..dec]);
    }
    matmul(
        n,
        dec,
        enc,
        dq,
        dec,
        true,
        Mat::rows(dqp, enc),
        Mat::rows(w.w_in, dec),
    );
}
