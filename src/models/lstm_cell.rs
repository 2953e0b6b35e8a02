//! The LSTM cell's element-wise part as two fused CPU operations with hand-written
//! backward passes.
//!
//! Written with Candle's own operations, one step is a sigmoid over the gates, four narrows,
//! two tanh, three products and a sum, each allocating its result, and their backward passes
//! about as many again (each narrow's gradient padded with zeros to the gates' full width).
//! At the homework's sizes (`[64, 512]` gates) those small operations, not the matrix
//! products, dominated a training step (see `bench/notes/seq2seq.md`). Here the cell state
//! and the hidden state are one pass over the gates each, with the activation functions of
//! the CPU training step ([`super::cpu_kernels`]), so decoding computes the cell it trained;
//! they are within 3e-7 of Candle's, and so are the gradients. Training on the CPU no
//! longer comes through here ([`super::seq2seq_cpu`]); evaluation and decoding do, and the
//! tensor path's backward pass, the reference the training step is tested against.
//!
//! CPU only: [`cell`] falls back to Candle's operations on other devices.

use super::cpu_kernels::{contiguous_f32, sigmoid, tanh};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, bail};
use std::sync::{Arc, Mutex, OnceLock};

/// `(gates [B, 4H], x [B, H])` dimensions after checking they fit together.
fn dims(g: &Layout, x: &Layout, op: &str) -> Result<(usize, usize)> {
    let (b, h4) = g.shape().dims2()?;
    let (b2, h) = x.shape().dims2()?;
    if b != b2 || h4 != 4 * h {
        bail!(
            "{op}: gates {:?} do not fit state {:?}",
            g.shape(),
            x.shape()
        )
    }
    Ok((b, h))
}

/// Host copy of a tensor's values in row-major order (the backward passes run on the host:
/// these ops only exist on the CPU).
fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// What one step's two ops share.
#[derive(Default)]
struct Shared {
    /// Activated gates `[B, 4H]` (sigmoid i, sigmoid f, tanh g, sigmoid o), computed once
    /// by [`NextCell`]'s forward pass and read by [`NextHidden`] and both backward passes,
    /// so no transcendental function runs twice.
    acts: OnceLock<Vec<f32>>,
    /// The o gate's gradient `[B, H]`, left by [`NextHidden`]'s backward pass, which runs
    /// before [`NextCell`]'s (h reads c, so c's gradient is complete only after h's node).
    d_o: Mutex<Vec<f32>>,
}

fn stored<'a>(cell: &'a OnceLock<Vec<f32>>, op: &str) -> Result<&'a [f32]> {
    match cell.get() {
        Some(v) => Ok(v),
        None => bail!("{op}: backward pass before forward pass"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `c = sigmoid(f) c_prev + sigmoid(i) tanh(g)` with `gates = xp + hw`, from
/// `(xp, hw, c_prev)`: the input projection and the recurrent product are summed here
/// rather than by a Candle op, whose backward pass would allocate two more gradients.
struct NextCell {
    shared: Arc<Shared>,
}

impl CustomOp3 for NextCell {
    fn name(&self) -> &'static str {
        "lstm-next-cell"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h) = dims(l1, l3, self.name())?;
        if l2.shape() != l1.shape() {
            bail!("{}: {:?} + {:?}", self.name(), l1.shape(), l2.shape())
        }
        let xp = contiguous_f32(s1, l1, self.name())?;
        let hw = contiguous_f32(s2, l2, self.name())?;
        let c_prev = contiguous_f32(s3, l3, self.name())?;
        let mut acts = vec![0f32; b * 4 * h];
        let mut c = vec![0f32; b * h];
        for r in 0..b {
            let (x, y) = (
                &xp[r * 4 * h..(r + 1) * 4 * h],
                &hw[r * 4 * h..(r + 1) * 4 * h],
            );
            let a = &mut acts[r * 4 * h..(r + 1) * 4 * h];
            let (cp, out) = (&c_prev[r * h..(r + 1) * h], &mut c[r * h..(r + 1) * h]);
            for j in 0..h {
                a[j] = sigmoid(x[j] + y[j]);
                a[h + j] = sigmoid(x[h + j] + y[h + j]);
                a[2 * h + j] = tanh(x[2 * h + j] + y[2 * h + j]);
                a[3 * h + j] = sigmoid(x[3 * h + j] + y[3 * h + j]);
                out[j] = a[h + j] * cp[j] + a[j] * a[2 * h + j];
            }
        }
        let _ = self.shared.acts.set(acts);
        Ok((CpuStorage::F32(c), Shape::from((b, h))))
    }

    fn bwd(
        &self,
        _xp: &Tensor,
        _hw: &Tensor,
        c_prev: &Tensor,
        _c: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, h) = c_prev.dims2()?;
        let a = stored(&self.shared.acts, self.name())?;
        let d_o = lock(&self.shared.d_o);
        let (cp, dc) = (host(c_prev)?, host(grad)?);
        let mut dg = vec![0f32; b * 4 * h];
        let mut dcp = vec![0f32; b * h];
        for r in 0..b {
            let a = &a[r * 4 * h..(r + 1) * 4 * h];
            let d = &mut dg[r * 4 * h..(r + 1) * 4 * h];
            for j in 0..h {
                let k = r * h + j;
                let (i, f, gg) = (a[j], a[h + j], a[2 * h + j]);
                d[j] = dc[k] * gg * i * (1.0 - i);
                d[h + j] = dc[k] * cp[k] * f * (1.0 - f);
                d[2 * h + j] = dc[k] * i * (1.0 - gg * gg);
                d[3 * h + j] = d_o.get(k).copied().unwrap_or(0.0);
                dcp[k] = dc[k] * f;
            }
        }
        let dev = c_prev.device();
        let dg = Tensor::from_vec(dg, (b, 4 * h), dev)?;
        Ok((
            Some(dg.clone()),
            Some(dg),
            Some(Tensor::from_vec(dcp, (b, h), dev)?),
        ))
    }
}

/// `h = sigmoid(o) tanh(c)` from `c`; sigmoid(o) comes from [`NextCell`], and the o gate's
/// gradient goes back through it.
struct NextHidden {
    shared: Arc<Shared>,
    tanh_c: OnceLock<Vec<f32>>,
}

impl CustomOp1 for NextHidden {
    fn name(&self) -> &'static str {
        "lstm-next-hidden"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h) = l.shape().dims2()?;
        let a = stored(&self.shared.acts, self.name())?;
        if a.len() != b * 4 * h {
            bail!(
                "{}: state {:?} does not fit the gates",
                self.name(),
                l.shape()
            )
        }
        let c = contiguous_f32(s, l, self.name())?;
        let t: Vec<f32> = c.iter().map(|&v| tanh(v)).collect();
        let mut out = vec![0f32; b * h];
        for r in 0..b {
            let o = &a[r * 4 * h + 3 * h..(r + 1) * 4 * h];
            for j in 0..h {
                out[r * h + j] = o[j] * t[r * h + j];
            }
        }
        let _ = self.tanh_c.set(t);
        Ok((CpuStorage::F32(out), Shape::from((b, h))))
    }

    fn bwd(&self, c: &Tensor, _h: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, h) = c.dims2()?;
        let a = stored(&self.shared.acts, self.name())?;
        let t = stored(&self.tanh_c, self.name())?;
        let dh = host(grad)?;
        let mut d_o = vec![0f32; b * h];
        let mut dcv = vec![0f32; b * h];
        for r in 0..b {
            for j in 0..h {
                let k = r * h + j;
                let o = a[r * 4 * h + 3 * h + j];
                d_o[k] = dh[k] * t[k] * o * (1.0 - o);
                dcv[k] = dh[k] * o * (1.0 - t[k] * t[k]);
            }
        }
        *lock(&self.shared.d_o) = d_o;
        Ok(Some(Tensor::from_vec(dcv, (b, h), c.device())?))
    }
}

/// The new `(h, c)` of an LSTM cell from the input projection `xp [B, 4H]` and the
/// recurrent product `hw [B, 4H]` (gates `xp + hw` in PyTorch's i, f, g, o order) and the
/// previous cell state `c_prev [B, H]`.
pub fn cell(xp: &Tensor, hw: &Tensor, c_prev: &Tensor) -> Result<(Tensor, Tensor)> {
    if fused(xp) {
        return fused_cell(xp, hw, c_prev);
    }
    cell_ops(&(xp + hw)?, c_prev)
}

/// Whether `xp` can take the fused CPU path.
fn fused(xp: &Tensor) -> bool {
    xp.device().is_cpu() && xp.dtype() == candle_core::DType::F32
}

fn fused_cell(xp: &Tensor, hw: &Tensor, c_prev: &Tensor) -> Result<(Tensor, Tensor)> {
    let shared = Arc::new(Shared::default());
    let c = xp.contiguous()?.apply_op3(
        &hw.contiguous()?,
        &c_prev.contiguous()?,
        NextCell {
            shared: shared.clone(),
        },
    )?;
    let h = c.apply_op1(NextHidden {
        shared,
        tanh_c: OnceLock::new(),
    })?;
    Ok((h, c))
}

/// [`cell`] in Candle's own operations: any device, and the reference the fused ops are
/// tested against.
fn cell_ops(gates: &Tensor, c_prev: &Tensor) -> Result<(Tensor, Tensor)> {
    let h = c_prev.dim(1)?;
    let sig = candle_nn::ops::sigmoid(gates)?;
    let i = sig.narrow(1, 0, h)?;
    let f = sig.narrow(1, h, h)?;
    let g = gates.narrow(1, 2 * h, h)?.tanh()?;
    let o = sig.narrow(1, 3 * h, h)?;
    let c = ((f * c_prev)? + (i * g)?)?;
    let h = (o * c.tanh()?)?;
    Ok((h, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward values equal Candle's within rounding (the fast tanh), and so do the
    /// gradients of a loss that weighs h and c differently.
    #[test]
    fn fused_cell_matches_candle_ops_and_their_gradients() {
        let dev = Device::Cpu;
        let (b, h) = (3, 5);
        let g = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (b, 4 * h), &dev).unwrap())).unwrap();
        let c = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h), &dev).unwrap()).unwrap();
        let wh = Tensor::randn(0f32, 1.0, (b, h), &dev).unwrap();
        let wc = Tensor::randn(0f32, 1.0, (b, h), &dev).unwrap();
        let hw = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, 4 * h), &dev).unwrap()).unwrap();
        let run = |fused_path: bool| {
            let (hn, cn) = if fused_path {
                cell(g.as_tensor(), hw.as_tensor(), c.as_tensor()).unwrap()
            } else {
                cell_ops(&(g.as_tensor() + hw.as_tensor()).unwrap(), c.as_tensor()).unwrap()
            };
            let loss = ((&hn * &wh).unwrap().sum_all().unwrap()
                + (&cn * &wc).unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (
                v(&hn),
                v(&cn),
                v(grads.get(g.as_tensor()).unwrap()),
                v(grads.get(c.as_tensor()).unwrap()),
                v(grads.get(hw.as_tensor()).unwrap()),
            )
        };
        let fused = run(true);
        let ops = run(false);
        for (name, a, b) in [
            ("h", &fused.0, &ops.0),
            ("c", &fused.1, &ops.1),
            ("d gates", &fused.2, &ops.2),
            ("d c_prev", &fused.3, &ops.3),
            ("d hw", &fused.4, &ops.4),
        ] {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                    "{name}: {a:?} vs {b:?}"
                );
            }
        }
    }
}
