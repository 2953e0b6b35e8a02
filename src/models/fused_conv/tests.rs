//! The fused conv-block op against the tensor-level path it replaces on the CPU.

use super::*;
use crate::models::activate;
use crate::models::cnn::max_pool;
use crate::models::conv::Im2colConv2d;
use candle_core::{DType, Module, Var};

/// Pseudo-random values in [-scale, scale): no ties, so max-pool gradients are unique.
fn noise(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The tensor-level path the CNN takes off the CPU: `Im2colConv2d`, the activation, and
/// `cnn::max_pool`, whose gradient goes to the maximum alone (PyTorch's semantics; Candle's
/// `max_pool2d` backward scales it). ReLU as `z * (z > 0)` so its derivative at 0 is 0
/// (the inputs have no ties, so the two paths must agree).
fn reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    s: usize,
    p: usize,
    pool: usize,
    act: Activation,
) -> Tensor {
    let z = Im2colConv2d::new(w.clone(), Some(b.clone()), s, p)
        .unwrap()
        .forward(x)
        .unwrap();
    let y = match act {
        Activation::Relu => (&z * z.gt(0f32).unwrap().to_dtype(DType::F32).unwrap()).unwrap(),
        Activation::Tanh => activate(&z, act).unwrap(),
    };
    if pool <= 1 {
        return y;
    }
    max_pool(&y, pool).unwrap()
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}");
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max difference {worst} at scale {scale}"
    );
}

/// (batch, c_in, size, c_out, k, stride, pad, pool)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: [Case; 6] = [
    (7, 1, 28, 8, 5, 1, 2, 2),  // the homework's first block
    (1, 8, 14, 16, 3, 1, 0, 2), // the second: 12x12 -> 6x6
    (7, 3, 13, 4, 3, 1, 0, 2),  // 11x11 pools to 5x5 (floor)
    (1, 2, 9, 5, 3, 2, 1, 0),   // stride 2, no pool
    (7, 2, 10, 3, 3, 1, 1, 3),  // pool 3 floors 10 -> 3
    (3, 2, 11, 4, 2, 3, 0, 1),  // stride 3, even kernel, no pool
];

/// The gradient of `sum(y)` with respect to `x`, flattened.
fn input_grad(x: &Var, y: &Tensor) -> Vec<f32> {
    let g = y.sum_all().unwrap().backward().unwrap();
    g.get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The fused block and the tensor path agree on `x`, forward and in every gradient.
fn assert_paths_agree(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    case: (usize, usize, usize),
    act: Activation,
    what: &str,
) {
    let (s, p, pool) = case;
    let (x, w, b) = (
        Var::from_tensor(x).unwrap(),
        Var::from_tensor(w).unwrap(),
        Var::from_tensor(b).unwrap(),
    );
    let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
    let ours = conv_block(xt, wt, bt, s, p, pool, act).unwrap();
    let theirs = reference(xt, wt, bt, s, p, pool, act);
    assert_close(&ours, &theirs, what);
    let weights = noise(ours.dims(), 4, 1.0);
    let ga = (&ours * &weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gb = (&theirs * &weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in [("dx", xt), ("dw", wt), ("db", bt)] {
        assert_close(
            ga.get(v).unwrap(),
            gb.get(v).unwrap(),
            &format!("{what} {name}"),
        );
    }
}

#[test]
fn forward_and_gradients_match_the_tensor_path() {
    for (i, &(bn, ci, hw, co, k, s, p, pool)) in CASES.iter().enumerate() {
        for act in [Activation::Relu, Activation::Tanh] {
            assert_paths_agree(
                &noise(&[bn, ci, hw, hw], 1 + i as u64, 1.0),
                &noise(&[co, ci, k, k], 2, 0.4),
                &noise(&[co], 3, 0.2),
                (s, p, pool),
                act,
                &format!("case {i} {act:?}"),
            );
        }
    }
}

/// Images with a blank background, as in Fashion-MNIST: a positive bias makes every
/// background window a four-way tie after ReLU, and both paths must hand its gradient to
/// the same (first) position. (Before the tensor path gathered the first maximum, it gave
/// the gradient to all four, and CUDA runs trained differently from CPU runs.)
#[test]
fn tied_background_windows_match_the_tensor_path() {
    let mask: Vec<f32> = (0..28 * 28)
        .map(|i| {
            f32::from(u8::from(
                (8..20).contains(&(i / 28)) && (8..20).contains(&(i % 28)),
            ))
        })
        .collect();
    let mask = Tensor::from_vec(mask, (1, 1, 28, 28), &Device::Cpu).unwrap();
    let x = noise(&[4, 1, 28, 28], 9, 1.0).broadcast_mul(&mask).unwrap();
    let bias = noise(&[8], 3, 0.2).abs().unwrap();
    assert_paths_agree(
        &x,
        &noise(&[8, 1, 5, 5], 2, 0.4),
        &bias,
        (1, 2, 2),
        Activation::Relu,
        "blank background",
    );
}

/// The tensor path's pooling alone: ties go to the first maximum in row-major order.
#[test]
fn tensor_path_pool_ties_go_to_the_first_maximum() {
    let grad_of = |values: &[f32], k: usize| -> Vec<f32> {
        let x = Var::from_tensor(&Tensor::from_slice(values, (1, 1, k, k), &Device::Cpu).unwrap())
            .unwrap();
        input_grad(&x, &max_pool(x.as_tensor(), k).unwrap())
    };
    assert_eq!(grad_of(&[0.1, 0.3, 0.3, 0.2], 2), [0., 1., 0., 0.]);
    assert_eq!(grad_of(&[0.1, 0.2, 0.3, 0.3], 2), [0., 0., 1., 0.]);
    assert_eq!(grad_of(&[0.3, 0.2, 0.1, 0.3], 2), [1., 0., 0., 0.]);
    assert_eq!(grad_of(&[0.5; 4], 2), [1., 0., 0., 0.]);
    let mut nine = [0.1f32; 9];
    (nine[4], nine[7]) = (0.5, 0.5);
    assert_eq!(grad_of(&nine, 3), [0., 0., 0., 0., 1., 0., 0., 0., 0.]);
}

#[test]
fn untracked_input_gets_no_gradient_and_nothing_tracked_builds_no_graph() {
    let x = noise(&[2, 1, 12, 12], 5, 1.0);
    let w = Var::from_tensor(&noise(&[3, 1, 3, 3], 6, 0.5)).unwrap();
    let b = Var::from_tensor(&noise(&[3], 7, 0.1)).unwrap();
    let ys = conv_block(&x, w.as_tensor(), b.as_tensor(), 1, 1, 2, Activation::Relu).unwrap();
    let grads = ys.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(w.as_tensor()).is_some() && grads.get(b.as_tensor()).is_some());
    let detached = conv_block(
        &x,
        &w.as_tensor().detach(),
        &b.as_tensor().detach(),
        1,
        1,
        2,
        Activation::Relu,
    )
    .unwrap();
    assert!(!detached.track_op());
    assert_eq!(
        detached.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        ys.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// Output and gradients are bit-identical run to run and on 1 or 2 threads.
#[test]
fn bit_identical_across_runs_and_thread_counts() {
    let run = |threads: usize| -> Vec<Vec<f32>> {
        let x = Var::from_tensor(&noise(&[9, 2, 20, 20], 8, 1.0)).unwrap();
        let w = Var::from_tensor(&noise(&[6, 2, 5, 5], 9, 0.3)).unwrap();
        let b = Var::from_tensor(&noise(&[6], 10, 0.1)).unwrap();
        let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let ys = conv_block_with_threads(xt, wt, bt, (1, 2, 2), Activation::Tanh, threads).unwrap();
        let g = (&ys * noise(ys.dims(), 11, 1.0))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        [
            &ys,
            g.get(xt).unwrap(),
            g.get(wt).unwrap(),
            g.get(bt).unwrap(),
        ]
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect()
    };
    let one = run(1);
    assert_eq!(one, run(1));
    assert_eq!(one, run(2));
}

/// The whole gradient of a window goes to its maximum, as in PyTorch.
#[test]
fn pool_gradient_goes_whole_to_the_maximum() {
    let x = Var::new(&[[[[1f32, 2.], [4., 3.]]]], &Device::Cpu).unwrap();
    let one = |v: f32, shape: &[usize]| Tensor::full(v, shape, &Device::Cpu).unwrap();
    let ys = conv_block(
        x.as_tensor(),
        &one(1.0, &[1, 1, 1, 1]),
        &one(0.0, &[1]),
        1,
        0,
        2,
        Activation::Relu,
    )
    .unwrap();
    assert_eq!(input_grad(&x, &ys), [0., 0., 1., 0.]);
    // Candle's max_pool2d for comparison (it is why the tensor path does not use it).
    let candle = input_grad(&x, &x.as_tensor().max_pool2d(2).unwrap());
    eprintln!("candle max_pool2d gradient: {candle:?}");
}

/// Tied maxima: the first in row-major order takes the gradient (PyTorch's choice), in the
/// 2x2 fast path and in the general loop alike; a NaN is the maximum and propagates.
#[test]
fn ties_go_to_the_first_maximum() {
    let grad_of = |values: &[f32], pool: usize| -> Vec<f32> {
        let x = Var::from_tensor(
            &Tensor::from_slice(values, (1, 1, pool, pool), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let one = Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let zero = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        let ys = conv_block(x.as_tensor(), &one, &zero, 1, 0, pool, Activation::Tanh).unwrap();
        input_grad(&x, &ys)
            .iter()
            .map(|v| f32::from(u8::from(*v != 0.0)))
            .collect()
    };
    assert_eq!(grad_of(&[0.1, 0.3, 0.3, 0.2], 2), [0., 1., 0., 0.]);
    assert_eq!(grad_of(&[0.1, 0.2, 0.3, 0.3], 2), [0., 0., 1., 0.]);
    assert_eq!(grad_of(&[0.3, 0.2, 0.1, 0.3], 2), [1., 0., 0., 0.]);
    // NaN wins, the last one if several (PyTorch's `val > max || isnan(val)` scan).
    assert_eq!(
        grad_of(&[0.1, f32::NAN, 0.3, f32::NAN], 2),
        [0., 0., 0., 1.]
    );
    assert_eq!(grad_of(&[0.1, f32::NAN, 0.3, 0.2], 2), [0., 1., 0., 0.]);
    let mut nine = [0.1f32; 9];
    (nine[4], nine[7]) = (0.5, 0.5);
    assert_eq!(grad_of(&nine, 3), [0., 0., 0., 0., 1., 0., 0., 0., 0.]);
    nine[2] = f32::NAN;
    assert_eq!(grad_of(&nine, 3), [0., 0., 1., 0., 0., 0., 0., 0., 0.]);
}
