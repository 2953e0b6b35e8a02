//! Optimizers with state that checkpoints can save and restore.
// TEMP: replaced by the images branch at merge.

use crate::spec::{OptimizerKind, OptimizerSpec, Schedule};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

/// SGD (with momentum), Adam or AdamW over a fixed list of variables.
#[derive(Debug)]
pub struct Optimizer {
    spec: OptimizerSpec,
    vars: Vec<Var>,
    /// First moments (Adam) or momentum buffers (SGD).
    m: Vec<Tensor>,
    /// Second moments (Adam).
    v: Vec<Tensor>,
    t: u64,
    lr: f64,
}

impl Optimizer {
    /// A fresh optimizer for `vars`.
    pub fn new(spec: &OptimizerSpec, vars: Vec<Var>) -> Result<Self> {
        let zeros = |vars: &[Var]| {
            vars.iter()
                .map(|v| v.zeros_like())
                .collect::<Result<Vec<_>>>()
        };
        Ok(Optimizer {
            m: zeros(&vars)?,
            v: zeros(&vars)?,
            spec: spec.clone(),
            vars,
            t: 0,
            lr: spec.lr,
        })
    }

    /// Current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (schedules call this each epoch).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let s = &self.spec;
        let (b1, b2) = (s.betas[0], s.betas[1]);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            // Gradients of products with variables carry an op graph; detached, the moment
            // buffers do not chain every past step's graph together (which exhausts memory).
            let w = &var.as_tensor().detach();
            let mut g = g.detach();
            if s.l2_decay > 0.0 && s.kind != OptimizerKind::Adamw {
                g = (g + (w * s.l2_decay)?)?;
            }
            match s.kind {
                OptimizerKind::Sgd => {
                    let step = if s.momentum > 0.0 {
                        self.m[i] = ((&self.m[i] * s.momentum)? + &g)?.detach();
                        self.m[i].clone()
                    } else {
                        g
                    };
                    var.set(&(w - (step * self.lr)?)?)?;
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?.detach();
                    self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
                    let m_hat = (&self.m[i] / (1.0 - b1.powi(self.t as i32)))?;
                    let v_hat = (&self.v[i] / (1.0 - b2.powi(self.t as i32)))?;
                    let mut next = (w - ((m_hat / (v_hat.sqrt()? + s.eps)?)? * self.lr)?)?;
                    if s.kind == OptimizerKind::Adamw && s.l2_decay > 0.0 {
                        next = (next - (w * (self.lr * s.l2_decay))?)?;
                    }
                    var.set(&next)?;
                }
            }
        }
        Ok(())
    }

    /// State tensors by name, for a checkpoint.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            map.insert(format!("m.{i}"), m.clone());
            map.insert(format!("v.{i}"), v.clone());
        }
        map.insert(
            "t".into(),
            Tensor::new(
                &[self.t as f64],
                self.m
                    .first()
                    .map_or(&candle_core::Device::Cpu, |t| t.device()),
            )?,
        );
        Ok(map)
    }

    /// Restores what [`Optimizer::state`] saved.
    pub fn load_state(&mut self, map: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| {
            map.get(k)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks `{k}`")))
        };
        for i in 0..self.m.len() {
            self.m[i] = get(&format!("m.{i}"))?;
            self.v[i] = get(&format!("v.{i}"))?;
        }
        self.t = get("t")?.to_vec1::<f64>()?.first().copied().unwrap_or(0.0) as u64;
        Ok(())
    }
}

/// The learning rate of 1-based `epoch` out of `epochs` under the spec's schedule.
pub fn lr_at(spec: &OptimizerSpec, epoch: usize, epochs: usize) -> f64 {
    match spec.schedule {
        Schedule::Constant => spec.lr,
        Schedule::Step => {
            spec.lr
                * spec
                    .gamma
                    .powi(((epoch - 1) / spec.step_size.max(1)) as i32)
        }
        Schedule::Cosine => {
            let frac = (epoch - 1) as f64 / epochs.max(1) as f64;
            spec.lr * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Moment buffers that kept the gradient's op graph would chain every step's graph
    /// together: a real run then grew to tens of gigabytes.
    #[test]
    fn adam_state_holds_no_graph_and_descends() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let spec = OptimizerSpec {
            lr: 0.1,
            ..OptimizerSpec::default()
        };
        let mut opt = Optimizer::new(&spec, vec![w.clone()]).unwrap();
        let loss = |w: &Var| w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let before = loss(&w).to_scalar::<f32>().unwrap();
        for _ in 0..5 {
            let l = (loss(&w) * 3.0).unwrap();
            opt.step(&l.backward().unwrap()).unwrap();
        }
        assert!(opt.m.iter().chain(&opt.v).all(|t| !t.track_op()));
        assert!(loss(&w).to_scalar::<f32>().unwrap() < before);
    }
}
