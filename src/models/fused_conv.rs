//! One CPU custom op for a whole conv block: convolution + bias + activation + max-pool.
//!
//! Why: built from tensor operations (see [`super::conv`]), a homework-CNN training step spent
//! about 60% of its time in Candle's bookkeeping around the convolution (the gradients of 25
//! `narrow`s, of the zero padding, of a broadcast matmul summed over the batch) and in its
//! max-pool backward, and well under 20% in the products themselves (bench/notes/cnn-kernels.md).
//! Here the forward writes im2col columns straight into one buffer per chunk of images, runs
//! one gemm, and fuses bias, activation and pooling into the pass that writes the (smaller)
//! output, remembering each pooled maximum's position. The backward scatters the gradient
//! through those positions and the activation, then runs two gemms (weight gradient and, only
//! when the input needs one, the column gradient folded back by col2im).
//!
//! Max-pool gradients follow PyTorch: the whole gradient goes to the first maximum of each
//! window (Candle 0.11's `max_pool2d` backward scales it by ties/(k*k) instead), and ReLU's
//! derivative at 0 is 0.

use super::cpu_kernels::{Mat, contiguous_f32, matmul};
use crate::spec::Activation;
use candle_core::{CpuStorage, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Mutex;

/// Columns (images x output pixels) per gemm: enough for gemm to run at speed, few enough
/// that a chunk's im2col buffer stays in L2 and that a batch of 8 still splits across two
/// threads. It depends on the shape only, never on the thread count, so results are
/// bit-identical whatever the number of threads.
const TARGET_COLUMNS: usize = 2048;

/// Geometry of one conv block, from the input and weight shapes.
#[derive(Debug, Clone, Copy)]
struct Geom {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// Convolution output size (before pooling).
    oh: usize,
    ow: usize,
    /// Pool size; 1 = no pooling.
    pool: usize,
    /// Block output size (after pooling).
    ph: usize,
    pw: usize,
}

impl Geom {
    /// Rows of the im2col matrix: `C_in * k * k`, ordered like the weight's.
    fn rows(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// Convolution output pixels per image and channel.
    fn conv_pixels(&self) -> usize {
        self.oh * self.ow
    }
    /// Block output values per image.
    fn out_per_image(&self) -> usize {
        self.c_out * self.ph * self.pw
    }
    fn in_per_image(&self) -> usize {
        self.c_in * self.h * self.w
    }
    /// Images per chunk (see [`TARGET_COLUMNS`]).
    fn chunk_images(&self) -> usize {
        TARGET_COLUMNS
            .div_ceil(self.conv_pixels())
            .clamp(1, self.batch.max(1))
    }
}

/// The conv-block op; one instance per forward call, holding what its backward needs.
pub struct ConvBlockOp {
    stride: usize,
    pad: usize,
    pool: usize,
    activation: Activation,
    /// Threads to use; 1 runs everything on the calling thread.
    threads: usize,
    /// Whether the forward records the pooled maxima's positions for a backward pass.
    save: bool,
    /// Per pooled output, the index of its maximum within the channel's convolution output
    /// plane (what the backward needs without arithmetic: a division per output there cost
    /// 5% of a step).
    argmax: Mutex<Vec<u32>>,
}

/// `act(conv(xs, weight) + bias)`, max-pooled by `pool` (floor; `pool <= 1`: none).
///
/// `xs` `(B, C_in, H, W)`, `weight` `(C_out, C_in, k, k)`, `bias` `(C_out)`, all f32 on the
/// CPU -> `(B, C_out, H'', W'')`. Tracks gradients like any Candle op when an argument does.
pub fn conv_block(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: usize,
    pool: usize,
    activation: Activation,
) -> candle_core::Result<Tensor> {
    conv_block_with_threads(
        xs,
        weight,
        bias,
        (stride, pad, pool),
        activation,
        candle_core::utils::get_num_threads(),
    )
}

/// [`conv_block`] with an explicit thread count (tests compare 1 and 2 in one process).
fn conv_block_with_threads(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (stride, pad, pool): (usize, usize, usize),
    activation: Activation,
    threads: usize,
) -> candle_core::Result<Tensor> {
    let save = xs.track_op() || weight.track_op() || bias.track_op();
    let op = ConvBlockOp {
        stride: stride.max(1),
        pad,
        pool: pool.max(1),
        activation,
        threads: threads.max(1),
        save,
        argmax: Mutex::new(Vec::new()),
    };
    let (xs, weight, bias) = (xs.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    if save {
        xs.apply_op3(&weight, &bias, op)
    } else {
        xs.apply_op3_no_bwd(&weight, &bias, &op)
    }
}

impl ConvBlockOp {
    fn geom(&self, x: &[usize], w: &[usize], b: &[usize]) -> candle_core::Result<Geom> {
        let (&[batch, c_in, h, wd], &[c_out, wc, k, k2], &[bc]) = (x, w, b) else {
            candle_core::bail!("conv block: shapes {x:?} {w:?} {b:?} are not 4-d, 4-d, 1-d");
        };
        if wc != c_in || k != k2 || bc != c_out || k == 0 {
            candle_core::bail!("conv block: input {x:?}, weight {w:?}, bias {b:?} do not fit");
        }
        let (Some(dh), Some(dw)) = (
            (h + 2 * self.pad).checked_sub(k),
            (wd + 2 * self.pad).checked_sub(k),
        ) else {
            candle_core::bail!("conv block: kernel {k} larger than padded input {h}x{wd}");
        };
        let (oh, ow) = (dh / self.stride + 1, dw / self.stride + 1);
        let (ph, pw) = (oh / self.pool, ow / self.pool);
        if ph == 0 || pw == 0 || u32::try_from(oh * ow).is_err() {
            candle_core::bail!("conv block: pool {} does not fit {oh}x{ow}", self.pool);
        }
        Ok(Geom {
            batch,
            c_in,
            h,
            w: wd,
            c_out,
            k,
            stride: self.stride,
            pad: self.pad,
            oh,
            ow,
            pool: self.pool,
            ph,
            pw,
        })
    }

    fn act(&self, v: f32) -> f32 {
        match self.activation {
            Activation::Relu => v.max(0.0),
            Activation::Tanh => v.tanh(),
        }
    }

    /// The activation's derivative, from its output `y`.
    fn act_grad(&self, y: f32) -> f32 {
        match self.activation {
            Activation::Relu => f32::from(u8::from(y > 0.0)),
            Activation::Tanh => 1.0 - y * y,
        }
    }

    /// Bias, activation and pooling of one chunk's products `z` (`C_out x n` columns) into
    /// `out` (the chunk's images, block layout), recording maxima positions in `argmax`.
    fn epilogue(
        &self,
        g: &Geom,
        z: &[f32],
        bias: &[f32],
        out: &mut [f32],
        mut argmax: Option<&mut [u32]>,
    ) {
        let (pix, n) = (g.conv_pixels(), z.len() / g.c_out);
        let plane_out = g.ph * g.pw;
        for (i, out_plane) in out.chunks_exact_mut(plane_out).enumerate() {
            let (bi, co) = (i / g.c_out, i % g.c_out);
            let zp = &z[co * n + bi * pix..][..pix];
            let b = bias[co];
            if g.pool == 1 {
                for (o, &v) in out_plane.iter_mut().zip(zp) {
                    *o = self.act(v + b);
                }
                continue;
            }
            if g.pool == 2 {
                let mut scratch = [0u32; 0];
                for py in 0..g.ph {
                    let r0 = &zp[2 * py * g.ow..][..2 * g.pw];
                    let r1 = &zp[(2 * py + 1) * g.ow..][..2 * g.pw];
                    let o = &mut out_plane[py * g.pw..][..g.pw];
                    let a = match argmax.as_deref_mut() {
                        Some(a) => &mut a[i * plane_out + py * g.pw..][..g.pw],
                        None => &mut scratch[..],
                    };
                    let at = (2 * py * g.ow, g.ow);
                    // The activation as a monomorphised closure: matched per pixel, it was
                    // reloaded and branched on in the inner loop.
                    match self.activation {
                        Activation::Relu => pool2_row(|v| v.max(0.0), r0, r1, at, b, o, a),
                        Activation::Tanh => pool2_row(f32::tanh, r0, r1, at, b, o, a),
                    }
                }
                continue;
            }
            let p = g.pool;
            for py in 0..g.ph {
                let window_rows = &zp[py * p * g.ow..];
                for px in 0..g.pw {
                    let (mut best, mut arg) = (window_rows[px * p], 0usize);
                    for dy in 0..p {
                        let row = &window_rows[dy * g.ow + px * p..][..p];
                        for (dx, &v) in row.iter().enumerate() {
                            // First maximum wins and NaN propagates, as in PyTorch. Pools
                            // other than 2 are rare enough to keep this plain scan.
                            let take = (v > best) | v.is_nan();
                            best = if take { v } else { best };
                            arg = if take { dy * g.ow + dx } else { arg };
                        }
                    }
                    // Adding the bias after the max saves an add per pixel (rounding is
                    // monotone, so the maximum is the same).
                    let best = best + b;
                    // Both activations are non-decreasing: the max of act is act of the max.
                    out_plane[py * g.pw + px] = self.act(best);
                    if let Some(a) = argmax.as_deref_mut() {
                        // Within u32: `geom` checked the plane size.
                        a[i * plane_out + py * g.pw + px] = (py * p * g.ow + px * p + arg) as u32;
                    }
                }
            }
        }
    }

    /// The gradient of one chunk's products (`C_out x n` columns) from the block output's
    /// gradient `dy` and value `y` (the chunk's images, block layout).
    fn route_grad(&self, g: &Geom, dy: &[f32], y: &[f32], argmax: &[u32], dz: &mut [f32]) {
        let (pix, n) = (g.conv_pixels(), dz.len() / g.c_out);
        let plane_out = g.ph * g.pw;
        dz.fill(0.0);
        for (i, (dyp, yp)) in dy
            .chunks_exact(plane_out)
            .zip(y.chunks_exact(plane_out))
            .enumerate()
        {
            let (bi, co) = (i / g.c_out, i % g.c_out);
            let dzp = &mut dz[co * n + bi * pix..][..pix];
            if g.pool == 1 {
                for ((d, &gv), &yv) in dzp.iter_mut().zip(dyp).zip(yp) {
                    *d = gv * self.act_grad(yv);
                }
                continue;
            }
            let am = &argmax[i * plane_out..][..plane_out];
            for ((&a, &gv), &yv) in am.iter().zip(dyp).zip(yp) {
                dzp[a as usize] = gv * self.act_grad(yv);
            }
        }
    }

    /// Chunks `(first image, images)` of the batch.
    fn chunks(g: &Geom) -> Vec<(usize, usize)> {
        let per = g.chunk_images();
        (0..g.batch)
            .step_by(per)
            .map(|b0| (b0, per.min(g.batch - b0)))
            .collect()
    }

    /// Runs `f` on every task, on the calling thread or on rayon's pool.
    fn for_each<T: Send>(&self, tasks: Vec<T>, f: impl Fn(T) + Sync + Send) {
        if self.threads > 1 && tasks.len() > 1 {
            tasks.into_par_iter().for_each(f);
        } else {
            tasks.into_iter().for_each(f);
        }
    }
}

thread_local! {
    /// Per-thread scratch (im2col columns, products), grown as needed and kept: allocating
    /// these per call cost page faults and memsets on every step.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two scratch buffers of `a` and `b` floats (contents unspecified).
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (x, y) = &mut *s;
        if x.len() < a {
            x.resize(a, 0.0);
        }
        if y.len() < b {
            y.resize(b, 0.0);
        }
        f(&mut x[..a], &mut y[..b])
    })
}

/// Max-pool by 2 of conv-output rows `r0`, `r1` (`2 * out.len()` long) into `out`, with
/// bias and activation; when `arg` is not empty, each maximum's index in the plane, the row
/// pair starting at `start` in rows of `ow`.
///
/// Picks what PyTorch's row-major scan picks: the first maximum, or the last NaN. Written
/// with compares and selects, the scan compiled to data-dependent branches (~15% of a
/// batch-64 step); here the max is `f32::max` (branch-free) and the position the first set
/// bit of four equality tests; NaN, which diverged training anyway, takes a (predictable)
/// branch.
fn pool2_row(
    act: impl Fn(f32) -> f32,
    r0: &[f32],
    r1: &[f32],
    (start, ow): (usize, usize),
    bias: f32,
    out: &mut [f32],
    arg: &mut [u32],
) {
    let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
    let windows = pairs.map(|(p0, p1)| [p0[0], p0[1], p1[0], p1[1]]);
    let max = |w: &[f32; 4]| w[0].max(w[1]).max(w[2].max(w[3]));
    let has_nan = |w: &[f32; 4]| w.iter().fold(false, |n, v| n | v.is_nan());
    if arg.is_empty() {
        for (o, w) in out.iter_mut().zip(windows) {
            let m = if has_nan(&w) { f32::NAN } else { max(&w) };
            *o = act(m + bias);
        }
        return;
    }
    let (start, ow) = (start as u32, ow as u32);
    let offsets = [0, 1, ow, ow + 1];
    for (px, ((o, a), w)) in out.iter_mut().zip(arg.iter_mut()).zip(windows).enumerate() {
        let (m, k) = if has_nan(&w) {
            let nans = w
                .iter()
                .enumerate()
                .fold(0u32, |b, (i, v)| b | u32::from(v.is_nan()) << i);
            (f32::NAN, 31 - nans.leading_zeros())
        } else {
            let m = max(&w);
            let hits = w
                .iter()
                .enumerate()
                .fold(0u32, |b, (i, &v)| b | u32::from(v == m) << i);
            (m, hits.trailing_zeros())
        };
        *o = act(m + bias);
        *a = start + 2 * px as u32 + offsets[k as usize & 3];
    }
}

/// The sum of `xs` in 8 interleaved partial sums: a plain `iter().sum()` is one serial chain
/// of additions (the compiler may not reorder them) and cost more than the bias gradient is
/// worth. The order is fixed, so the result is too.
fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// im2col of images `b0..b0 + nb` of `x` into `cols` (`rows x (nb * pixels)`).
fn im2col(g: &Geom, x: &[f32], b0: usize, nb: usize, cols: &mut [f32]) {
    let (pix, n, k) = (g.conv_pixels(), nb * g.conv_pixels(), g.k);
    for bi in 0..nb {
        let img = &x[(b0 + bi) * g.in_per_image()..][..g.in_per_image()];
        for ci in 0..g.c_in {
            let plane = &img[ci * g.h * g.w..][..g.h * g.w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (ci * k + ky) * k + kx;
                    let dst = &mut cols[row * n + bi * pix..][..pix];
                    for (oy, seg) in dst.chunks_exact_mut(g.ow).enumerate() {
                        let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                        if iy >= g.h {
                            seg.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy * g.w..][..g.w];
                        if g.stride == 1 {
                            // Output columns whose input column ox + kx - pad is inside.
                            let lo = g.pad.saturating_sub(kx).min(g.ow);
                            let hi = (g.w + g.pad).saturating_sub(kx).min(g.ow).max(lo);
                            seg[..lo].fill(0.0);
                            seg[hi..].fill(0.0);
                            seg[lo..hi].copy_from_slice(&src[lo + kx - g.pad..hi + kx - g.pad]);
                        } else {
                            for (ox, v) in seg.iter_mut().enumerate() {
                                let ix = (ox * g.stride + kx).wrapping_sub(g.pad);
                                *v = if ix < g.w { src[ix] } else { 0.0 };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the column gradient `dcols` (`rows x (nb * pixels)`) back onto the chunk's input
/// gradient `dx` (`nb` images, zeroed by the caller): the transpose of [`im2col`].
fn col2im(g: &Geom, dcols: &[f32], nb: usize, dx: &mut [f32]) {
    let (pix, n, k) = (g.conv_pixels(), nb * g.conv_pixels(), g.k);
    for bi in 0..nb {
        let img = &mut dx[bi * g.in_per_image()..][..g.in_per_image()];
        for ci in 0..g.c_in {
            let plane = &mut img[ci * g.h * g.w..][..g.h * g.w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (ci * k + ky) * k + kx;
                    let src = &dcols[row * n + bi * pix..][..pix];
                    for (oy, seg) in src.chunks_exact(g.ow).enumerate() {
                        let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                        if iy >= g.h {
                            continue;
                        }
                        let dst = &mut plane[iy * g.w..][..g.w];
                        if g.stride == 1 {
                            // The same valid range as in `im2col`, as one contiguous add.
                            let lo = g.pad.saturating_sub(kx).min(g.ow);
                            let hi = (g.w + g.pad).saturating_sub(kx).min(g.ow).max(lo);
                            let d = &mut dst[lo + kx - g.pad..hi + kx - g.pad];
                            for (a, &v) in d.iter_mut().zip(&seg[lo..hi]) {
                                *a += v;
                            }
                            continue;
                        }
                        for (ox, &v) in seg.iter().enumerate() {
                            let ix = (ox * g.stride + kx).wrapping_sub(g.pad);
                            if ix < g.w {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl candle_core::CustomOp3 for ConvBlockOp {
    fn name(&self) -> &'static str {
        "conv-block"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.dims(), l2.dims(), l3.dims())?;
        let (x, w, b) = (
            contiguous_f32(s1, l1, self.name())?,
            contiguous_f32(s2, l2, self.name())?,
            contiguous_f32(s3, l3, self.name())?,
        );
        let mut out = vec![0f32; g.batch * g.out_per_image()];
        let pooled_per_image = if self.save && g.pool > 1 {
            g.out_per_image()
        } else {
            0
        };
        let mut argmax = vec![0u32; g.batch * pooled_per_image];
        // Disjoint output (and argmax) slices per chunk, so chunks can run in parallel.
        let mut tasks = Vec::new();
        let (mut out_rest, mut arg_rest) = (&mut out[..], &mut argmax[..]);
        for (b0, nb) in Self::chunks(&g) {
            let (o, orest) = out_rest.split_at_mut(nb * g.out_per_image());
            let (a, arest) = arg_rest.split_at_mut(nb * pooled_per_image);
            (out_rest, arg_rest) = (orest, arest);
            tasks.push((b0, nb, o, a));
        }
        self.for_each(tasks, |(b0, nb, o, a)| {
            let n = nb * g.conv_pixels();
            with_scratch(g.rows() * n, g.c_out * n, |cols, z| {
                im2col(&g, x, b0, nb, cols);
                let lhs = Mat::rows(w, g.rows());
                let rhs = Mat::rows(cols, n);
                matmul(g.c_out, n, g.rows(), z, n, false, lhs, rhs);
                self.epilogue(&g, z, b, o, (!a.is_empty()).then_some(a));
            });
        });
        if self.save {
            *self
                .argmax
                .lock()
                .map_err(|_| candle_core::Error::Msg("conv block: poisoned".into()))? = argmax;
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, g.c_out, g.ph, g.pw)),
        ))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(xs.dims(), weight.dims(), bias.dims())?;
        let need_dx = xs.track_op();
        let grad_res = grad_res.contiguous()?;
        let (sx, lx) = xs.storage_and_layout();
        let (sw, lw) = weight.storage_and_layout();
        let (sy, ly) = res.storage_and_layout();
        let (sg, lg) = grad_res.storage_and_layout();
        let (x, w, y, dy) = match (&*sx, &*sw, &*sy, &*sg) {
            (
                candle_core::Storage::Cpu(x),
                candle_core::Storage::Cpu(w),
                candle_core::Storage::Cpu(y),
                candle_core::Storage::Cpu(dy),
            ) => (
                contiguous_f32(x, lx, self.name())?,
                contiguous_f32(w, lw, self.name())?,
                contiguous_f32(y, ly, self.name())?,
                contiguous_f32(dy, lg, self.name())?,
            ),
            _ => candle_core::bail!("conv block: backward on the CPU only"),
        };
        let argmax = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv block: poisoned".into()))?;
        let pooled_per_image = if g.pool > 1 { g.out_per_image() } else { 0 };
        let mut dx = vec![
            0f32;
            if need_dx {
                g.batch * g.in_per_image()
            } else {
                0
            }
        ];
        let chunks = Self::chunks(&g);
        let mut partial = vec![0f32; chunks.len() * (g.c_out * g.rows() + g.c_out)];
        let mut tasks = Vec::new();
        let (mut dx_rest, mut part_rest) = (&mut dx[..], &mut partial[..]);
        for &(b0, nb) in &chunks {
            let (d, drest) = dx_rest.split_at_mut(if need_dx { nb * g.in_per_image() } else { 0 });
            let (p, prest) = part_rest.split_at_mut(g.c_out * g.rows() + g.c_out);
            (dx_rest, part_rest) = (drest, prest);
            tasks.push((b0, nb, d, p));
        }
        self.for_each(tasks, |(b0, nb, d, p)| {
            let n = nb * g.conv_pixels();
            let (o0, o1) = (b0 * g.out_per_image(), (b0 + nb) * g.out_per_image());
            let am = &argmax[b0 * pooled_per_image..(b0 + nb) * pooled_per_image];
            with_scratch(g.rows() * n, g.c_out * n, |cols, dz| {
                self.route_grad(&g, &dy[o0..o1], &y[o0..o1], am, dz);
                let (dw, db) = p.split_at_mut(g.c_out * g.rows());
                for (co, s) in db.iter_mut().enumerate() {
                    *s = sum(&dz[co * n..][..n]);
                }
                im2col(&g, x, b0, nb, cols);
                // dW = dZ . cols^T
                let lhs = Mat::rows(dz, n);
                let rhs = Mat::t(cols, n);
                matmul(g.c_out, g.rows(), n, dw, g.rows(), false, lhs, rhs);
                if !d.is_empty() {
                    // dcols = W^T . dZ, reusing the columns' buffer.
                    let lhs = Mat::t(w, g.rows());
                    let rhs = Mat::rows(dz, n);
                    matmul(g.rows(), n, g.c_out, cols, n, false, lhs, rhs);
                    col2im(&g, cols, nb, d);
                }
            });
        });
        // Chunk partials summed in chunk order: the same sums whatever the thread count.
        let mut dw = vec![0f32; g.c_out * g.rows() + g.c_out];
        for p in partial.chunks_exact(dw.len()) {
            for (a, &v) in dw.iter_mut().zip(p) {
                *a += v;
            }
        }
        let db = dw.split_off(g.c_out * g.rows());
        let dev = Device::Cpu;
        let dw = Tensor::from_vec(dw, weight.dims(), &dev)?;
        let db = Tensor::from_vec(db, bias.dims(), &dev)?;
        let dx = if need_dx {
            Some(Tensor::from_vec(dx, xs.dims(), &dev)?)
        } else {
            None
        };
        Ok((dx, Some(dw), Some(db)))
    }
}

#[cfg(test)]
mod tests;
