//! The fused optimizer step: one pass over each parameter that updates it and its moments
//! in place, where the tensor-op path allocates ~10 tensors per parameter (on CUDA: one
//! kernel, [`cuda`], where the tensor ops launch ~13).
//!
//! Candle gives mutable access to a tensor's storage only through its in-place custom ops,
//! so the moments are lent out by nested [`InplaceOp1`]s and the parameter (with its
//! gradient as read-only input) by an [`InplaceOp2`], whose aliasing check keeps a gradient
//! that shared the parameter's storage from being read while written.
//!
//! Each element goes through the same f32 operations, in the same order, as the tensor ops
//! of `super::tensor_step` (Candle's `affine(x, mul, add)` is `x * mul + add` in the tensor's
//! dtype with both scalars cast from f64), so the two paths agree bit for bit; the one
//! difference is that moment entries below `f32::MIN_POSITIVE` are flushed to zero (see
//! the parent module's doc).

#[cfg(feature = "cuda")]
mod cuda;

use super::Hyper;
use crate::spec::OptimizerKind;
use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Tensor, bail};
use std::cell::RefCell;

/// The f32 constants of one step, derived exactly as the tensor-op path derives them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    adam: bool,
    lr: f32,
    /// Coupled L2 (SGD, Adam): `g += l2 * p`.
    add_l2: Option<f32>,
    /// AdamW's decoupled decay: `p *= keep`, `keep = 1 - lr * l2`.
    keep: Option<f32>,
    momentum: f32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    /// `1 / sqrt(1 - b2^t)`.
    inv_bc2_sqrt: f32,
    eps: f32,
    /// `lr / (1 - b1^t)`.
    step_size: f32,
}

impl Rule {
    /// The constants of step `t` (1-based) of `kind` with settings `h`.
    pub(super) fn new(kind: OptimizerKind, h: Hyper, t: i32) -> Rule {
        let decoupled = kind == OptimizerKind::Adamw;
        let [b1, b2] = h.betas;
        Rule {
            adam: kind != OptimizerKind::Sgd,
            lr: h.lr as f32,
            add_l2: (h.l2 != 0.0 && !decoupled).then_some(h.l2 as f32),
            keep: (h.l2 != 0.0 && decoupled).then_some((1.0 - h.lr * h.l2) as f32),
            momentum: h.momentum as f32,
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_bc2_sqrt: (1.0 / (1.0 - b2.powi(t)).sqrt()) as f32,
            eps: h.eps as f32,
            step_size: (h.lr / (1.0 - b1.powi(t))) as f32,
        }
    }
}

/// Updates `p` (and `m`, `v` where the rule has them) in place from gradient `g`. All are
/// f32 CPU tensors; `p`, `m` and `v` contiguous and of one shape (the caller checks).
pub(super) fn step(
    rule: &Rule,
    p: &Tensor,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
) -> Result<()> {
    let g = if g.is_contiguous() {
        g.clone()
    } else {
        g.contiguous()?
    };
    #[cfg(feature = "cuda")]
    if p.device().is_cuda() {
        return cuda::step(rule, p, &g, m, v);
    }
    let update = |m: Option<&mut [f32]>, v: Option<&mut [f32]>| {
        p.inplace_op2(
            &g,
            &Update {
                rule,
                moments: RefCell::new((m, v)),
            },
        )
    };
    match (m, v) {
        (None, None) => update(None, None),
        (Some(m), None) => lend(m, |m| update(Some(m), None)),
        (Some(m), Some(v)) => lend(m, |m| lend(v, |v| update(Some(m), Some(v)))),
        (None, Some(_)) => bail!("optimizer state has a second moment without a first"),
    }
}

/// Runs `f` on the f32 data of `t`, mutably.
fn lend(t: &Tensor, f: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<()> {
    t.inplace_op1(&Lend(RefCell::new(Some(f))))
}

/// An in-place op that only lends its tensor's data to a closure.
struct Lend<F>(RefCell<Option<F>>);

impl<F: FnOnce(&mut [f32]) -> Result<()>> InplaceOp1 for Lend<F> {
    fn name(&self) -> &'static str {
        "optimizer-state"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let data = f32_mut(storage, layout)?;
        let Some(f) = self.0.borrow_mut().take() else {
            bail!("optimizer state lent twice");
        };
        f(data)
    }
}

/// The contiguous f32 elements of a storage under `layout`.
fn f32_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        bail!("the fused optimizer step needs contiguous f32 tensors");
    };
    Ok(&mut data[start..end])
}

/// The first and second moments a step writes (SGD without momentum has neither).
type Moments<'m> = (Option<&'m mut [f32]>, Option<&'m mut [f32]>);

/// The parameter update proper, with the moments it writes.
struct Update<'r, 'm> {
    rule: &'r Rule,
    moments: RefCell<Moments<'m>>,
}

impl InplaceOp2 for Update<'_, '_> {
    fn name(&self) -> &'static str {
        "fused-optimizer-step"
    }

    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let p = f32_mut(p, pl)?;
        let (CpuStorage::F32(g), Some((start, end))) = (g, gl.contiguous_offsets()) else {
            bail!("the fused optimizer step needs a contiguous f32 gradient");
        };
        let g = &g[start..end];
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        let n = p.len();
        let same = |x: &Option<&mut [f32]>| x.as_ref().is_none_or(|x| x.len() == n);
        if g.len() != n || !same(m) || !same(v) {
            bail!("fused optimizer step: parameter, gradient and state differ in size");
        }
        let r = self.rule;
        match (r.adam, m, v) {
            (true, Some(m), Some(v)) => adam(r, p, g, m, v),
            (false, Some(b), None) => momentum(r, p, g, b),
            (false, None, None) => sgd(r, p, g),
            _ => bail!("fused optimizer step: state does not match the optimizer"),
        }
        Ok(())
    }
}

/// Candle's CPU `affine` on one element.
#[inline(always)]
fn affine(x: f32, mul: f32, add: f32) -> f32 {
    x * mul + add
}

/// `x`, or zero where `x` is subnormal.
#[inline(always)]
fn flush(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x }
}

/// The gradient with coupled L2 decay added, as `g + p.affine(l2, 0)`.
#[inline(always)]
fn decayed(r: &Rule, g: f32, p: f32) -> f32 {
    match r.add_l2 {
        Some(l2) => g + affine(p, l2, 0.0),
        None => g,
    }
}

fn sgd(r: &Rule, p: &mut [f32], g: &[f32]) {
    for (p, &g) in p.iter_mut().zip(g) {
        let g = decayed(r, g, *p);
        *p -= affine(g, r.lr, 0.0);
    }
}

fn momentum(r: &Rule, p: &mut [f32], g: &[f32], b: &mut [f32]) {
    for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
        let g = decayed(r, g, *p);
        // The flushed buffer is the one used: state and update stay consistent.
        *b = flush(affine(*b, r.momentum, 0.0) + g);
        *p -= affine(*b, r.lr, 0.0);
    }
}

fn adam(r: &Rule, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    // The loop is compute-bound (a square root and a division per element): 8 lanes
    // where the CPU has them. Same IEEE operations, so the same bits; no FMA contraction.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, checked just above.
        unsafe { adam_avx(r, p, g, m, v) };
        return;
    }
    adam_lanes(r, p, g, m, v);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn adam_avx(r: &Rule, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    adam_lanes(r, p, g, m, v);
}

#[inline(always)]
fn adam_lanes(r: &Rule, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = decayed(r, g, *p);
        let p0 = match r.keep {
            Some(keep) => affine(*p, keep, 0.0),
            None => *p,
        };
        *m = flush(affine(*m, r.b1, 0.0) + affine(g, r.one_minus_b1, 0.0));
        *v = flush(affine(*v, r.b2, 0.0) + affine(g * g, r.one_minus_b2, 0.0));
        let denom = affine(v.sqrt(), r.inv_bc2_sqrt, r.eps);
        *p = p0 - affine(*m / denom, r.step_size, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GpuOptim, Optimizer};
    use crate::spec::{OptimizerKind, OptimizerSpec};
    use candle_core::{Device, Tensor, Var};
    use std::collections::HashMap;

    /// Two variables, one reached through a transposed matmul so that its gradient is a
    /// non-contiguous view, like a linear layer's weight.
    fn vars() -> Vec<(String, Var)> {
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..12)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.13)
            .collect();
        let b: Vec<f32> = vec![0.3, -0.7, 0.05];
        vec![
            ("b".into(), Var::from_vec(b, 3, &dev).unwrap()),
            ("w".into(), Var::from_vec(w, (3, 4), &dev).unwrap()),
        ]
    }

    /// A loss with uneven gradients: `sum(tanh(x w^T + b)^2 * c)`.
    fn loss(vars: &[(String, Var)], step: usize) -> Tensor {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..8)
            .map(|i| ((i + step) % 5) as f32 * 0.4 - 0.9)
            .collect();
        let x = Tensor::from_vec(x, (2, 4), &dev).unwrap();
        let c = Tensor::new(&[1.0f32, -2.0, 0.5], &dev).unwrap();
        let (b, w) = (vars[0].1.as_tensor(), vars[1].1.as_tensor());
        let y = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap();
        let y = y.tanh().unwrap().sqr().unwrap().broadcast_mul(&c).unwrap();
        y.sum_all().unwrap()
    }

    fn values(vars: &[(String, Var)]) -> Vec<Vec<u32>> {
        vars.iter()
            .map(|(_, v)| bits(v.as_tensor()))
            .collect::<Vec<_>>()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        t.into_iter().map(f32::to_bits).collect()
    }

    fn state_bits(opt: &Optimizer) -> Vec<(String, Vec<u32>)> {
        let mut s: Vec<_> = opt
            .state_tensors()
            .into_iter()
            .map(|(k, t)| (k, bits(&t)))
            .collect();
        s.sort();
        s
    }

    /// Trains `steps` steps fused and with tensor ops; weights and state must be identical.
    fn agree(spec: &OptimizerSpec, steps: usize) {
        let (va, vb) = (vars(), vars());
        let mut fused = Optimizer::new(spec, va.clone(), GpuOptim::default()).unwrap();
        let mut ops = Optimizer::new(spec, vb.clone(), GpuOptim::default()).unwrap();
        ops.fused = false;
        for s in 0..steps {
            fused.backward_step(&loss(&va, s)).unwrap();
            ops.backward_step(&loss(&vb, s)).unwrap();
            assert_eq!(values(&va), values(&vb), "{spec:?}: weights after step {s}");
            assert_eq!(state_bits(&fused), state_bits(&ops), "{spec:?}: state");
        }
        assert_ne!(values(&va), values(&vars()), "{spec:?}: the weights moved");
    }

    fn spec(kind: OptimizerKind, lr: f64, momentum: f64, l2_decay: f64) -> OptimizerSpec {
        OptimizerSpec {
            kind,
            lr,
            momentum,
            l2_decay,
            ..OptimizerSpec::default()
        }
    }

    #[test]
    fn fused_step_is_bit_identical_to_tensor_ops() {
        use OptimizerKind::*;
        for s in [
            spec(Sgd, 0.1, 0.0, 0.0),
            spec(Sgd, 0.1, 0.0, 0.01),
            spec(Sgd, 0.05, 0.9, 0.0),
            spec(Sgd, 0.05, 0.9, 0.01),
            spec(Adam, 1e-2, 0.0, 0.0),
            spec(Adam, 1e-2, 0.0, 0.05),
            spec(Adamw, 1e-2, 0.0, 0.0),
            spec(Adamw, 1e-2, 0.0, 0.05),
        ] {
            agree(&s, 6);
        }
    }

    #[test]
    fn fused_state_resumes_on_either_path() {
        for s in [
            spec(OptimizerKind::Sgd, 0.05, 0.9, 0.0),
            spec(OptimizerKind::Adamw, 1e-2, 0.0, 0.05),
        ] {
            let va = vars();
            let mut a = Optimizer::new(&s, va.clone(), GpuOptim::default()).unwrap();
            for step in 0..3 {
                a.backward_step(&loss(&va, step)).unwrap();
            }
            let saved: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
            let before = state_bits(&a);
            // A fresh optimizer of each kind, on copies of the weights, loads the state.
            let copy = |vars: &[(String, Var)]| -> Vec<(String, Var)> {
                vars.iter()
                    .map(|(k, v)| (k.clone(), Var::from_tensor(v.as_tensor()).unwrap()))
                    .collect()
            };
            let (vb, vc) = (copy(&va), copy(&va));
            let mut b = Optimizer::new(&s, vb.clone(), GpuOptim::default()).unwrap();
            let mut c = Optimizer::new(&s, vc.clone(), GpuOptim::default()).unwrap();
            c.fused = false;
            b.load_state(&saved, a.steps()).unwrap();
            c.load_state(&saved, a.steps()).unwrap();
            for (opt, vars) in [(&mut a, &va), (&mut b, &vb), (&mut c, &vc)] {
                opt.backward_step(&loss(vars, 3)).unwrap();
            }
            assert_eq!(values(&va), values(&vb));
            assert_eq!(values(&va), values(&vc));
            // The saved tensors are snapshots: stepping did not write through them.
            let mut now: Vec<_> = saved.iter().map(|(k, t)| (k.clone(), bits(t))).collect();
            now.sort();
            assert_eq!(now, before);
        }
    }

    #[test]
    fn subnormal_moments_are_flushed_without_moving_the_weights() {
        let s = spec(OptimizerKind::Adam, 1e-3, 0.0, 0.0);
        let dev = Device::Cpu;
        // A first moment just above the smallest normal decays below it on a zero-gradient
        // step (0.9 * 1.2e-38); the tensor-op path keeps the subnormal, the fused one zero.
        let tiny = 1.2e-38f32;
        let state: HashMap<String, Tensor> = [
            ("m/w".to_string(), Tensor::new(&[tiny, 0.5], &dev).unwrap()),
            (
                "v/w".to_string(),
                Tensor::new(&[0.0f32, 0.25], &dev).unwrap(),
            ),
        ]
        .into();
        let run = |fused: bool| {
            let w = Var::new(&[1.0f32, -2.0], &dev).unwrap();
            let mut opt =
                Optimizer::new(&s, vec![("w".into(), w.clone())], GpuOptim::default()).unwrap();
            opt.fused = fused;
            opt.load_state(&state, 10).unwrap();
            // Gradient [0, 1]: the first entry's moment only decays.
            let c = Tensor::new(&[0.0f32, 1.0], &dev).unwrap();
            opt.backward_step(&(w.as_tensor() * &c).unwrap().sum_all().unwrap())
                .unwrap();
            let m = opt.state_tensors()[0].1.to_vec1::<f32>().unwrap();
            (bits(w.as_tensor()), m)
        };
        let (w_fused, m_fused) = run(true);
        let (w_ops, m_ops) = run(false);
        assert!(m_ops[0] != 0.0 && m_ops[0].is_subnormal(), "{m_ops:?}");
        assert_eq!(m_fused[0], 0.0);
        assert_eq!(m_fused[1], m_ops[1]);
        assert_eq!(w_fused, w_ops);
    }
}
