//! SGD (with momentum), Adam and AdamW over named `Var`s, and the learning-rate schedules.
//!
//! We implement the optimizers ourselves rather than use `candle_nn::AdamW` so that their
//! state (moments, step count) can be saved in a checkpoint and restored bit for bit. They
//! know nothing of models: any set of named variables (a `VarMap`) can be optimised, which
//! is how the seq2seq models use them too. Update rules follow PyTorch:
//!
//! - `l2_decay` (PyTorch `weight_decay`) is added to the gradient, `g += l2 * p`, for SGD and
//!   Adam; AdamW decays the weights directly, `p *= 1 - lr * l2`, before its Adam step.
//! - SGD momentum: `b = momentum * b + g; p -= lr * b` (the first step gives `b = g`).
//! - Adam: `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
//!   p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)`.
//!
//! On the CPU and on CUDA (f32, contiguous) a step updates each parameter and its moments in
//! place in one pass ([`fused`]; one kernel launch on a GPU) instead of ~10 allocating tensor
//! ops per parameter; it performs the same f32 operations in the same order as the tensor-op
//! path (kept for other dtypes), so both give bit-identical results on the CPU (on CUDA the
//! tensor ops' kernels may fuse a multiply and an add), except that the fused path flushes moment
//! entries below `f32::MIN_POSITIVE` to zero. Without that, a run whose gradients die out
//! (Adam at lr 0.01 on the homework CNN) fills `m` with subnormal floats, on which x86 CPUs
//! compute many times slower; PyTorch's own lr 0.01 run slowed 2.4x that way. A moment
//! below 1.2e-38 moves a weight by at most `lr * 1.2e-30` (its denominator is at least
//! `eps`), under half an ulp of any weight above ~1e-23, so the flush changes nothing
//! measurable (that run's weights came out bit-identical). SGD's momentum buffer, which
//! decays the same way, is flushed too. Measurements: `bench/notes/optimizer.md`.

mod fused;

use crate::spec::{OptimizerKind, OptimizerSpec, Schedule};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

/// The variables of `map`, sorted by name so every run walks them in the same order.
pub fn named_vars(map: &VarMap) -> Vec<(String, Var)> {
    let mut vars: Vec<(String, Var)> = match map.data().lock() {
        Ok(data) => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(poisoned) => poisoned
            .into_inner()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Where an optimizer step finds each variable's gradient: Candle's autograd store, or
/// gradients computed by hand (the translator's CPU training step).
pub trait Gradients {
    /// The gradient of `var`, if it has one.
    fn of(&self, var: &Tensor) -> Option<&Tensor>;
}

impl Gradients for GradStore {
    fn of(&self, var: &Tensor) -> Option<&Tensor> {
        self.get(var)
    }
}

/// Per-variable optimizer state.
struct Slot {
    name: String,
    var: Var,
    /// SGD momentum buffer or Adam first moment.
    m: Option<Tensor>,
    /// Adam second moment.
    v: Option<Tensor>,
}

/// One optimizer over a fixed set of named variables.
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    l2_decay: f64,
    momentum: f64,
    betas: [f64; 2],
    eps: f64,
    slots: Vec<Slot>,
    steps: u64,
    /// Whether CPU f32 variables take the fused in-place step (tests turn it off to
    /// compare with the tensor-op path).
    fused: bool,
    /// How steps run off the CPU.
    gpu: GpuOptim,
}

/// How optimizer steps run off the CPU (the CPU always takes the fused step).
///
/// The fused CUDA step is the default where the build has it; the tensor-op path is a
/// benchmark switch for comparing the two on a GPU (`scripts/device-check.sh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GpuOptim {
    /// The fused step, one kernel launch per variable (in a CUDA build).
    #[default]
    Fused,
    /// Candle tensor ops, about ten allocating kernels per variable.
    TensorOps,
}

impl Optimizer {
    /// An optimizer for `vars` with the settings of `spec` (learning rate `spec.lr` until
    /// [`Optimizer::set_lr`] changes it), stepping off the CPU as `gpu` says.
    pub fn new(spec: &OptimizerSpec, vars: Vec<(String, Var)>, gpu: GpuOptim) -> Result<Self> {
        let with_m = match spec.kind {
            OptimizerKind::Sgd => spec.momentum != 0.0,
            OptimizerKind::Adam | OptimizerKind::Adamw => true,
        };
        let with_v = spec.kind != OptimizerKind::Sgd;
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = || var.as_tensor().zeros_like();
                Ok(Slot {
                    m: if with_m { Some(zeros()?) } else { None },
                    v: if with_v { Some(zeros()?) } else { None },
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimizer {
            kind: spec.kind,
            lr: spec.lr,
            l2_decay: spec.l2_decay,
            momentum: spec.momentum,
            betas: spec.betas,
            eps: spec.eps,
            slots,
            steps: 0,
            fused: true,
            gpu,
        })
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (the schedule calls this at each epoch start).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Optimizer steps taken so far (Adam's `t`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Computes the gradients of `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Takes one step with `grads`; variables without a gradient are left alone.
    pub fn step<G: Gradients + ?Sized>(&mut self, grads: &G) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let hyper = self.hyper();
        let rule = fused::Rule::new(self.kind, hyper, t);
        for slot in &mut self.slots {
            let Some(g) = grads.of(slot.var.as_tensor()) else {
                continue;
            };
            if self.fused && fused_eligible(slot, self.gpu) {
                fused::step(
                    &rule,
                    slot.var.as_tensor(),
                    g,
                    slot.m.as_ref(),
                    slot.v.as_ref(),
                )?;
            } else {
                tensor_step(self.kind, hyper, t, slot, g)?;
            }
        }
        Ok(())
    }

    fn hyper(&self) -> Hyper {
        Hyper {
            lr: self.lr,
            l2: self.l2_decay,
            momentum: self.momentum,
            betas: self.betas,
            eps: self.eps,
        }
    }

    /// The state tensors to checkpoint, named `m/<var>` and `v/<var>`: copies, since the
    /// fused step overwrites the live ones in place (should a copy fail, the live tensor,
    /// which is still right until the next step).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            for (prefix, buf) in [("m", &slot.m), ("v", &slot.v)] {
                if let Some(t) = buf {
                    let snapshot = fresh(t).unwrap_or_else(|_| t.clone());
                    out.push((format!("{prefix}/{}", slot.name), snapshot));
                }
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for slot in &mut self.slots {
            for (prefix, buf) in [("m", &mut slot.m), ("v", &mut slot.v)] {
                let Some(current) = buf else { continue };
                let key = format!("{prefix}/{}", slot.name);
                let Some(saved) = tensors.get(&key) else {
                    candle_core::bail!("optimizer state has no tensor {key}");
                };
                if saved.shape() != current.shape() {
                    candle_core::bail!(
                        "optimizer state {key} has shape {:?}, the model needs {:?}",
                        saved.shape(),
                        current.shape()
                    );
                }
                // A storage of our own: the fused step writes it in place.
                *buf = Some(fresh(
                    &saved
                        .to_device(current.device())?
                        .to_dtype(current.dtype())?,
                )?);
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The scalar settings of one step.
#[derive(Debug, Clone, Copy)]
struct Hyper {
    lr: f64,
    l2: f64,
    momentum: f64,
    betas: [f64; 2],
    eps: f64,
}

/// Whether `slot` can take the fused step: f32, contiguous, with contiguous moments (always,
/// unless a caller handed us an odd tensor), on the CPU or (in a CUDA build, unless `gpu`
/// asks for tensor ops) a GPU.
fn fused_eligible(slot: &Slot, gpu: GpuOptim) -> bool {
    let p = slot.var.as_tensor();
    let on_gpu = cfg!(feature = "cuda") && gpu == GpuOptim::Fused;
    let device_ok = p.device().is_cpu() || (p.device().is_cuda() && on_gpu);
    let ok = |t: &Tensor| t.dtype() == DType::F32 && t.is_contiguous();
    device_ok && ok(p) && slot.m.as_ref().is_none_or(ok) && slot.v.as_ref().is_none_or(ok)
}

/// One step of `slot` with Candle tensor ops (any device and dtype); the reference the fused
/// CPU step reproduces.
fn tensor_step(kind: OptimizerKind, h: Hyper, t: i32, slot: &mut Slot, g: &Tensor) -> Result<()> {
    let p = slot.var.as_tensor();
    let (lr, l2) = (h.lr, h.l2);
    let decoupled = kind == OptimizerKind::Adamw;
    let g = if l2 != 0.0 && !decoupled {
        (g + p.affine(l2, 0.0)?)?
    } else {
        g.clone()
    };
    let new_p = match kind {
        OptimizerKind::Sgd => match &slot.m {
            Some(b) => {
                let b = (b.affine(h.momentum, 0.0)? + &g)?;
                let p = (p - b.affine(lr, 0.0)?)?;
                slot.m = Some(b);
                p
            }
            None => (p - g.affine(lr, 0.0)?)?,
        },
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let p = if decoupled && l2 != 0.0 {
                p.affine(1.0 - lr * l2, 0.0)?
            } else {
                p.clone()
            };
            let [b1, b2] = h.betas;
            let (Some(m), Some(v)) = (&slot.m, &slot.v) else {
                candle_core::bail!("adam state missing for {}", slot.name);
            };
            let m = (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
            let v = (v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let step_size = lr / (1.0 - b1.powi(t));
            let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
            let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, h.eps)?;
            let p = (p - m.div(&denom)?.affine(step_size, 0.0)?)?;
            slot.m = Some(m);
            slot.v = Some(v);
            p
        }
    };
    slot.var.set(&new_p)
}

/// A tensor with the data of `t` in storage of its own (the fused step writes moments in
/// place, so they must not share storage with anything a caller holds).
fn fresh(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() {
        t.copy()
    } else {
        t.contiguous()
    }
}

/// The learning rate of 1-based `epoch` out of `epochs` under `spec.schedule`.
///
/// - constant: `lr`
/// - step: `lr * gamma^floor((epoch - 1) / step_size)`
/// - cosine: `lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2`, from `lr` towards 0
pub fn scheduled_lr(spec: &OptimizerSpec, epoch: usize, epochs: usize) -> f64 {
    let done = epoch.saturating_sub(1);
    match spec.schedule {
        Schedule::Constant => spec.lr,
        Schedule::Step => spec.lr * spec.gamma.powi((done / spec.step_size.max(1)) as i32),
        Schedule::Cosine => {
            let frac = done as f64 / epochs.max(1) as f64;
            spec.lr * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Minimises `0.5 * sum(w²) + sum(c * w)`, whose gradient is `w + c`, for `steps` steps.
    fn run(spec: OptimizerSpec, steps: usize) -> Vec<f64> {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let c = Tensor::new(&[0.5f32, 3.0], &Device::Cpu).unwrap();
        let mut opt =
            Optimizer::new(&spec, vec![("w".into(), w.clone())], GpuOptim::default()).unwrap();
        for _ in 0..steps {
            let loss = ((w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
                + (w.as_tensor() * &c).unwrap().sum_all().unwrap())
            .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        w.as_tensor()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 2e-6, "got {got:?}, want {want:?}");
        }
    }

    fn spec(kind: OptimizerKind, lr: f64) -> OptimizerSpec {
        OptimizerSpec {
            kind,
            lr,
            ..OptimizerSpec::default()
        }
    }

    #[test]
    fn sgd_plain_and_with_momentum_and_l2() {
        // g = w + c = [1.5, 1.0]; w - 0.1 g = [0.85, -2.1].
        close(&run(spec(OptimizerKind::Sgd, 0.1), 1), &[0.85, -2.1]);
        // Momentum 0.9: b1 = g1 = [1.5, 1.0] -> w1 = [0.85, -2.1];
        // g2 = [1.35, 0.9], b2 = 0.9 b1 + g2 = [2.7, 1.8] -> w2 = [0.58, -2.28].
        let s = OptimizerSpec {
            momentum: 0.9,
            ..spec(OptimizerKind::Sgd, 0.1)
        };
        close(&run(s, 2), &[0.58, -2.28]);
        // l2 0.5 adds 0.5 w: g = [2.0, 0.0] -> w = [0.8, -2.0].
        let s = OptimizerSpec {
            l2_decay: 0.5,
            ..spec(OptimizerKind::Sgd, 0.1)
        };
        close(&run(s, 1), &[0.8, -2.0]);
    }

    #[test]
    fn adam_matches_hand_computed_steps() {
        // Step 1 of Adam moves each weight by lr * g / (|g| + eps'): w = [0.9, -2.1].
        close(&run(spec(OptimizerKind::Adam, 0.1), 1), &[0.9, -2.1]);
        // Step 2: g2 = w1 + c = [1.4, 0.9]; m = 0.9 m1 + 0.1 g2 = [0.275, 0.18], over
        // 1 - 0.9² = 0.19: [1.447368, 0.947368]; v = 0.999 v1 + 0.001 g2² =
        // [0.00420775, 0.001809], over 1 - 0.999² = 0.001999, sqrt: [1.450837, 0.951290];
        // w2 = w1 - 0.1 * m/sqrt(v) = [0.9 - 0.099761, -2.1 - 0.099588].
        close(
            &run(spec(OptimizerKind::Adam, 0.1), 2),
            &[0.800_239_06, -2.199_587_77],
        );
    }

    #[test]
    fn adam_l2_is_added_to_the_gradient_adamw_decays_weights() {
        // Adam with l2 1.0: g = 2w + c = [2.5, -1.0]; step 1 moves by lr * sign(g).
        let s = OptimizerSpec {
            l2_decay: 1.0,
            ..spec(OptimizerKind::Adam, 0.1)
        };
        close(&run(s, 1), &[0.9, -1.9]);
        // AdamW with l2 1.0: w *= 1 - 0.1; then the Adam step on g = w + c (undecayed):
        // [0.9 - 0.1, -1.8 - 0.1] = [0.8, -1.9].
        let s = OptimizerSpec {
            l2_decay: 1.0,
            ..spec(OptimizerKind::Adamw, 0.1)
        };
        close(&run(s, 1), &[0.8, -1.9]);
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let s = OptimizerSpec {
            momentum: 0.9,
            ..spec(OptimizerKind::Adam, 0.05)
        };
        let w = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let mut a = Optimizer::new(&s, vec![("w".into(), w.clone())], GpuOptim::default()).unwrap();
        a.backward_step(&w.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
        let saved: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
        assert_eq!(saved.len(), 2);
        let w2 = Var::from_tensor(w.as_tensor()).unwrap();
        let mut b =
            Optimizer::new(&s, vec![("w".into(), w2.clone())], GpuOptim::default()).unwrap();
        b.load_state(&saved, a.steps()).unwrap();
        for (opt, var) in [(&mut a, &w), (&mut b, &w2)] {
            opt.backward_step(&var.as_tensor().sqr().unwrap().sum_all().unwrap())
                .unwrap();
        }
        assert_eq!(
            w.as_tensor().to_vec1::<f32>().unwrap(),
            w2.as_tensor().to_vec1::<f32>().unwrap()
        );
        let mut missing = saved.clone();
        missing.remove("v/w");
        assert!(b.load_state(&missing, 1).is_err());
    }

    #[test]
    fn schedules() {
        let mut s = spec(OptimizerKind::Adam, 0.1);
        assert_eq!(scheduled_lr(&s, 7, 10), 0.1);
        s.schedule = Schedule::Step;
        s.step_size = 3;
        s.gamma = 0.5;
        let lrs: Vec<f64> = (1..=7).map(|e| scheduled_lr(&s, e, 10)).collect();
        assert_eq!(lrs, vec![0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]);
        s.schedule = Schedule::Cosine;
        assert_eq!(scheduled_lr(&s, 1, 4), 0.1);
        assert!((scheduled_lr(&s, 3, 4) - 0.05).abs() < 1e-12);
        assert!(
            (scheduled_lr(&s, 4, 4) - 0.1 * 0.5 * (1.0 + (0.75 * std::f64::consts::PI).cos()))
                .abs()
                < 1e-12
        );
    }
}
