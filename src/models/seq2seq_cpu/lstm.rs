//! One LSTM direction over packed sequences, forward and backward.
//!
//! PyTorch's gate layout (i, f, g, o) and arithmetic: `gates = x W_ih^T + b_ih + b_hh +
//! h W_hh^T`, `c = s(f) c_prev + s(i) tanh(g)`, `h = s(o) tanh(c)`. The input projection of
//! every position is one product before the recurrence and the weights' gradients are one
//! product each after it, so the time loop holds only the recurrent product and one fused
//! pass over the gates.

use super::packing::Packing;
use crate::models::cpu_kernels::{Mat, add_column_sums, matmul, sigmoid, tanh};

/// One direction's weights, as slices of the model's variables.
#[derive(Debug, Clone, Copy)]
pub struct LstmWeights<'a> {
    /// `[4H, input]`.
    pub w_ih: &'a [f32],
    /// `[4H, H]`.
    pub w_hh: &'a [f32],
    /// `[4H]` each.
    pub b_ih: &'a [f32],
    pub b_hh: &'a [f32],
    pub input: usize,
    pub hidden: usize,
}

/// The gradients of one direction's weights, shaped as [`LstmWeights`].
#[derive(Debug, Clone, Default)]
pub struct LstmGrads {
    pub w_ih: Vec<f32>,
    pub w_hh: Vec<f32>,
    pub b_ih: Vec<f32>,
    pub b_hh: Vec<f32>,
}

impl LstmGrads {
    /// Zero gradients for weights of these sizes.
    pub fn zeros(input: usize, hidden: usize) -> Self {
        LstmGrads {
            w_ih: vec![0.0; 4 * hidden * input],
            w_hh: vec![0.0; 4 * hidden * hidden],
            b_ih: vec![0.0; 4 * hidden],
            b_hh: vec![0.0; 4 * hidden],
        }
    }

    /// Every buffer, in the order of [`LstmWeights`]' fields.
    pub fn buffers(&mut self) -> [&mut Vec<f32>; 4] {
        [
            &mut self.w_ih,
            &mut self.w_hh,
            &mut self.b_ih,
            &mut self.b_hh,
        ]
    }
}

/// What the forward pass keeps for the backward pass, and the running state. Buffers are
/// reused from step to step.
#[derive(Debug, Default)]
pub struct Tape {
    /// `[N, 4H]`: the activated gates of each packed position.
    gates: Vec<f32>,
    /// `[N, H]` each: the cell state, its tanh, the output, and the state each step read.
    c: Vec<f32>,
    tc: Vec<f32>,
    /// The outputs, one `[H]` row per packed position.
    pub h: Vec<f32>,
    h_prev: Vec<f32>,
    c_prev: Vec<f32>,
    /// `[B, H]` in sorted order: the running state; after [`forward`] each row's final
    /// state, after [`backward`] (forwards only) the gradient of the initial state.
    pub state_h: Vec<f32>,
    pub state_c: Vec<f32>,
    /// `[N, 4H]`: the gates' gradient.
    dgates: Vec<f32>,
    /// `[4H]`: scratch for the summed biases and the bias gradient.
    bias: Vec<f32>,
}

/// `v` at length `n`, contents unspecified (for buffers that are written before read).
pub fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `v` at length `n`, all zero.
pub fn zeroed(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    let out = sized(v, n);
    out.fill(0.0);
    out
}

/// The time steps in the order a direction reads them.
fn order(steps: usize, reverse: bool) -> impl Iterator<Item = usize> {
    let forwards = (0..steps).filter(move |_| !reverse);
    let backwards = (0..steps).rev().filter(move |_| reverse);
    forwards.chain(backwards)
}

/// Runs the direction over `x` (`[N, input]`, packed as `pack`), from `init` (`[B, H]` h
/// and c in sorted order; zero when `None`), keeping what [`backward`] needs in `tape`.
/// `reverse` reads each sequence last character first (a row joins with a zero state at
/// its last character, which `init` must then be).
pub fn forward(
    w: &LstmWeights,
    pack: &Packing,
    x: &[f32],
    reverse: bool,
    init: Option<(&[f32], &[f32])>,
    tape: &mut Tape,
) {
    let (h, h4, total, rows) = (w.hidden, 4 * w.hidden, pack.total(), pack.rows());
    let bias = sized(&mut tape.bias, h4);
    for ((b, x), y) in bias.iter_mut().zip(w.b_ih).zip(w.b_hh) {
        *b = x + y;
    }
    let gates = sized(&mut tape.gates, total * h4);
    for row in gates.chunks_exact_mut(h4) {
        row.copy_from_slice(bias);
    }
    matmul(
        total,
        h4,
        w.input,
        gates,
        h4,
        true,
        Mat::rows(x, w.input),
        Mat::t(w.w_ih, w.input),
    );
    let state_h = zeroed(&mut tape.state_h, rows * h);
    let state_c = zeroed(&mut tape.state_c, rows * h);
    if let Some((h0, c0)) = init {
        state_h.copy_from_slice(&h0[..rows * h]);
        state_c.copy_from_slice(&c0[..rows * h]);
    }
    let c = sized(&mut tape.c, total * h);
    let tc = sized(&mut tape.tc, total * h);
    let out = sized(&mut tape.h, total * h);
    let h_prev = sized(&mut tape.h_prev, total * h);
    let c_prev = sized(&mut tape.c_prev, total * h);
    for t in order(pack.steps(), reverse) {
        let (n, at) = (pack.active[t], pack.offset[t]);
        let span = at * h..(at + n) * h;
        h_prev[span.clone()].copy_from_slice(&state_h[..n * h]);
        c_prev[span.clone()].copy_from_slice(&state_c[..n * h]);
        let g = &mut gates[at * h4..(at + n) * h4];
        matmul(
            n,
            h4,
            h,
            g,
            h4,
            true,
            Mat::rows(&state_h[..n * h], h),
            Mat::t(w.w_hh, h),
        );
        cell_forward(
            g,
            &c_prev[span.clone()],
            &mut c[span.clone()],
            &mut tc[span.clone()],
            &mut out[span.clone()],
            h,
        );
        state_h[..n * h].copy_from_slice(&out[span.clone()]);
        state_c[..n * h].copy_from_slice(&c[span]);
    }
}

/// The element-wise part of a step for `n` rows: activates the gates in place and writes
/// the new cell state, its tanh and the output.
fn cell_forward(
    gates: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    out: &mut [f32],
    h: usize,
) {
    for (r, g) in gates.chunks_exact_mut(4 * h).enumerate() {
        let (ifg, o) = g.split_at_mut(3 * h);
        let (if_, gg) = ifg.split_at_mut(2 * h);
        for v in if_.iter_mut() {
            *v = sigmoid(*v);
        }
        for v in gg.iter_mut() {
            *v = tanh(*v);
        }
        for v in o.iter_mut() {
            *v = sigmoid(*v);
        }
        let (i, f) = if_.split_at(h);
        let row = r * h..(r + 1) * h;
        let (cp, c, tc, out) = (
            &c_prev[row.clone()],
            &mut c[row.clone()],
            &mut tc[row.clone()],
            &mut out[row],
        );
        for j in 0..h {
            c[j] = f[j] * cp[j] + i[j] * gg[j];
        }
        for j in 0..h {
            tc[j] = tanh(c[j]);
            out[j] = o[j] * tc[j];
        }
    }
}

/// Backpropagates through the direction `forward` ran (same `w`, `pack`, `x`, `reverse`,
/// and `tape` as it left it). `d_out` (`[N, H]`) is the gradient of the outputs, `d_final`
/// that of the final state (`[B, H]` h and c in sorted order); either may be absent
/// (zero). Adds the weights' gradients to `g` and writes (or, with `accumulate`, adds) the
/// inputs' gradient to `dx` (`[N, input]`). Forwards, the initial state's gradient is left
/// in `tape.state_h` and `tape.state_c`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    w: &LstmWeights,
    pack: &Packing,
    x: &[f32],
    reverse: bool,
    d_out: Option<&[f32]>,
    d_final: Option<(&[f32], &[f32])>,
    tape: &mut Tape,
    g: &mut LstmGrads,
    dx: &mut [f32],
    accumulate: bool,
) {
    let (h, h4, total, rows) = (w.hidden, 4 * w.hidden, pack.total(), pack.rows());
    let Tape {
        gates,
        tc,
        h_prev,
        c_prev,
        state_h: carry_h,
        state_c: carry_c,
        dgates,
        bias,
        ..
    } = tape;
    let carry_h = zeroed(carry_h, rows * h);
    let carry_c = zeroed(carry_c, rows * h);
    // A row's final state is the state after its last step: backwards that is step 0 for
    // every row; forwards each row joins the reversed loop at its last character.
    let join = |carry_h: &mut [f32], carry_c: &mut [f32], a: usize, z: usize| {
        if let Some((dh, dc)) = d_final {
            carry_h[a * h..z * h].copy_from_slice(&dh[a * h..z * h]);
            carry_c[a * h..z * h].copy_from_slice(&dc[a * h..z * h]);
        }
    };
    if reverse {
        join(carry_h, carry_c, 0, rows);
    }
    let dgates = sized(dgates, total * h4);
    for t in order(pack.steps(), !reverse) {
        let (n, at) = (pack.active[t], pack.offset[t]);
        if !reverse {
            join(carry_h, carry_c, pack.active_at(t + 1), n);
        }
        let span = at * h..(at + n) * h;
        let dg = &mut dgates[at * h4..(at + n) * h4];
        if let Some(d) = d_out {
            for (c, d) in carry_h[..n * h].iter_mut().zip(&d[span.clone()]) {
                *c += d;
            }
        }
        cell_backward(
            &gates[at * h4..(at + n) * h4],
            &c_prev[span.clone()],
            &tc[span],
            &carry_h[..n * h],
            &mut carry_c[..n * h],
            dg,
            h,
        );
        matmul(
            n,
            h,
            h4,
            &mut carry_h[..n * h],
            h,
            false,
            Mat::rows(dg, h4),
            Mat::rows(w.w_hh, h),
        );
    }
    if !reverse {
        // Rows that never ran (empty sequences) end in their initial state.
        join(carry_h, carry_c, pack.active_at(0), rows);
    }
    let dgates = &dgates[..];
    matmul(
        h4,
        h,
        total,
        &mut g.w_hh,
        h,
        true,
        Mat::t(dgates, h4),
        Mat::rows(h_prev, h),
    );
    matmul(
        h4,
        w.input,
        total,
        &mut g.w_ih,
        w.input,
        true,
        Mat::t(dgates, h4),
        Mat::rows(x, w.input),
    );
    let db = zeroed(bias, h4);
    add_column_sums(dgates, h4, db);
    for ((gi, gh), d) in g.b_ih.iter_mut().zip(g.b_hh.iter_mut()).zip(db.iter()) {
        *gi += d;
        *gh += d;
    }
    matmul(
        total,
        w.input,
        h4,
        dx,
        w.input,
        accumulate,
        Mat::rows(dgates, h4),
        Mat::rows(w.w_ih, w.input),
    );
}

/// The element-wise backward pass of a step for `n` rows: from the outputs' gradient `dh`
/// and the cell state's carried gradient `dc` (replaced by the previous cell state's),
/// the gates' gradient.
fn cell_backward(
    gates: &[f32],
    c_prev: &[f32],
    tc: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dgates: &mut [f32],
    h: usize,
) {
    for (r, (g, d)) in gates
        .chunks_exact(4 * h)
        .zip(dgates.chunks_exact_mut(4 * h))
        .enumerate()
    {
        let row = r * h..(r + 1) * h;
        let (cp, tc, dh, dc) = (
            &c_prev[row.clone()],
            &tc[row.clone()],
            &dh[row.clone()],
            &mut dc[row],
        );
        let (i, rest) = g.split_at(h);
        let (f, rest) = rest.split_at(h);
        let (gg, o) = rest.split_at(h);
        let (di, rest) = d.split_at_mut(h);
        let (df, rest) = rest.split_at_mut(h);
        let (dg, d_o) = rest.split_at_mut(h);
        for j in 0..h {
            let dcj = dc[j] + dh[j] * o[j] * (1.0 - tc[j] * tc[j]);
            d_o[j] = dh[j] * tc[j] * o[j] * (1.0 - o[j]);
            di[j] = dcj * gg[j] * i[j] * (1.0 - i[j]);
            df[j] = dcj * cp[j] * f[j] * (1.0 - f[j]);
            dg[j] = dcj * i[j] * (1.0 - gg[j] * gg[j]);
            dc[j] = dcj * f[j];
        }
    }
}
