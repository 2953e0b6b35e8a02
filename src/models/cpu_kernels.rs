//! The CPU kernels the hand-written training steps share: strided matrix products through
//! the gemm crate (the one Candle uses on the CPU) and the LSTM's activation functions.
//!
//! Products run on the calling thread: the callers parallelise over larger pieces (chunks
//! of images, shards of a batch), which at these sizes is faster than splitting each
//! product, and keeps results independent of the thread count.

use candle_core::{CpuStorage, Layout, Result, bail};
use gemm::Parallelism;

/// The f32 elements of a contiguous CPU tensor; `what` names the caller in the error.
pub fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{what}: f32 tensors only")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: contiguous tensors only"),
    }
}

/// A strided view of a matrix for [`matmul`]: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    /// Stride between rows and between columns.
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix whose rows are `stride` apart.
    pub fn rows(data: &'a [f32], stride: usize) -> Self {
        Mat {
            data,
            rs: stride,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `stride` apart.
    pub fn t(data: &'a [f32], stride: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: stride,
        }
    }
}

/// `dst (m x n, rows dst_rs apart) [+]= lhs (m x k) * rhs (k x n)` through the gemm crate,
/// on the calling thread. `accumulate` adds to `dst`, otherwise it is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // The bounds gemm reads and writes: checked here so the unsafe call below cannot go out
    // of the slices.
    assert!(n <= dst_rs || m == 1);
    assert!(last(m, n, dst_rs, 1) < dst.len());
    assert!(last(m, k, lhs.rs, lhs.cs) < lhs.data.len());
    assert!(last(k, n, rhs.rs, rhs.cs) < rhs.data.len());
    // SAFETY: every index gemm touches is within the slices (asserted above); dst does not
    // alias the inputs (it is a `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// `out[j] += sum_i x[i * cols + j]`: the column sums of a row-major `[rows, cols]` matrix
/// added to `out` (a bias gradient), in row order.
pub fn add_column_sums(x: &[f32], cols: usize, out: &mut [f32]) {
    for row in x.chunks_exact(cols) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// tanh in f32 without libm's `tanhf` (which goes through `expm1f`): Eigen's rational
/// approximation (odd degree-13 over even degree-6 polynomial, inputs clamped to ±9 where
/// tanh rounds to ±1, identity below 4e-4), within a few units in the last place of the
/// exact value (tested below). Branch-free and without calls (no `mul_add`, which is a
/// libm call unless the build targets FMA), so loops over it vectorise.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let c = x.clamp(-9.0, 9.0);
    let x2 = c * c;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p + -8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    let y = (c * p / q).clamp(-1.0, 1.0);
    if x.abs() < 0.0004 { x } else { y }
}

/// The logistic function as `(1 + tanh(x / 2)) / 2` with [`tanh`]: vectorises, and is
/// within 3e-7 of the exact value.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    0.5 * tanh(0.5 * x) + 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).tanh();
            let err = ((tanh(x) as f64) - exact).abs() / exact.abs().max(1e-30);
            worst = worst.max(if x == 0.0 { 0.0 } else { err });
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(tanh(30.0), 1.0);
        assert_eq!(tanh(-30.0), -1.0);
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(1e-5), 1e-5);
    }

    #[test]
    fn fast_sigmoid_is_close_to_the_exact_one() {
        let mut worst = 0f64;
        for i in -300_000..=300_000 {
            let x = i as f32 * 1e-4;
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            worst = worst.max(((sigmoid(x) as f64) - exact).abs());
        }
        assert!(worst < 3e-7, "worst absolute error {worst}");
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(40.0), 1.0);
        assert_eq!(sigmoid(-40.0), 0.0);
    }

    /// Transposed views and a destination wider than the product: the naive triple loop.
    #[test]
    fn strided_products_match_the_naive_loop() {
        let (m, n, k) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let wide = n + 2;
        let mut dst = vec![1.0f32; m * wide];
        // a (m x k, row-major) times bt^T (bt is n x k row-major), added to dst.
        matmul(
            m,
            n,
            k,
            &mut dst,
            wide,
            true,
            Mat::rows(&a, k),
            Mat::t(&bt, k),
        );
        for i in 0..m {
            for j in 0..wide {
                let want = if j < n {
                    1.0 + (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f32>()
                } else {
                    1.0
                };
                assert!((dst[i * wide + j] - want).abs() < 1e-5, "({i}, {j})");
            }
        }
    }
}
