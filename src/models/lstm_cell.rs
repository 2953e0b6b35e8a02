//! The LSTM cell's element-wise part as two fused CPU operations with hand-written
//! backward passes.
//!
//! Written with Candle's own operations, one step is a sigmoid over the gates, four narrows,
//! two tanh, three products and a sum, each allocating its result, and their backward passes
//! about as many again (each narrow's gradient padded with zeros to the gates' full width).
//! At the homework's sizes (`[64, 512]` gates) those small operations, not the matrix
//! products, dominated a training step (see `bench/notes/seq2seq.md`). Here the cell state
//! and the hidden state are one pass over the gates each. The forward arithmetic is the
//! same as Candle's (`1 / (exp(-x) + 1)`, `tanh`, then `f c + i g` and `o tanh(c)`), so
//! forward values are bit-identical; gradients agree within rounding.
//!
//! CPU only: [`cell`] falls back to Candle's operations on other devices.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use std::sync::{Arc, Mutex, OnceLock};

/// The logistic function exactly as `candle_nn::ops::sigmoid` computes it for f32.
fn sigmoid(v: f32) -> f32 {
    ((-v).exp() + 1.0).recip()
}

/// tanh in f32 without libm's `tanhf` (which goes through `expm1f` and was a sixth of a
/// training step): Eigen's rational approximation (odd degree-13 over even degree-6
/// polynomial, Horner without `mul_add`, which is a libm call unless the build targets FMA; inputs clamped to ±9 where tanh rounds to ±1, identity below 4e-4), within
/// a few units in the last place of the exact value (tested below).
fn tanh(x: f32) -> f32 {
    if x.abs() < 0.0004 {
        return x;
    }
    let x = x.clamp(-9.0, 9.0);
    let x2 = x * x;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p + -8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    (x * p / q).clamp(-1.0, 1.0)
}

/// The f32 slice of a contiguous CPU tensor.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{op}: f32 tensors only")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: contiguous tensors only"),
    }
}

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

/// Activated gates `[B, 4H]` (sigmoid i, sigmoid f, tanh g, sigmoid o), computed once by
/// [`NextCell`]'s forward pass and read by both backward passes and [`NextHidden`], so no
/// transcendental function runs twice.
type Activations = Arc<OnceLock<Vec<f32>>>;

/// Where both backward passes of one step add their part of the gates' gradient `[B, 4H]`
/// (see [`cell_recorded`]).
pub type GateGrad = Arc<Mutex<Vec<f32>>>;

/// Adds `part` into `sink` (sized on first use).
fn add_into(sink: &Option<GateGrad>, part: &[f32]) {
    if let Some(sink) = sink {
        let mut g = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() != part.len() {
            *g = vec![0.0; part.len()];
        }
        for (a, b) in g.iter_mut().zip(part) {
            *a += b;
        }
    }
}

fn stored<'a>(cell: &'a OnceLock<Vec<f32>>, op: &str) -> Result<&'a [f32]> {
    match cell.get() {
        Some(v) => Ok(v),
        None => bail!("{op}: backward pass before forward pass"),
    }
}

/// `c = sigmoid(f) c_prev + sigmoid(i) tanh(g)` from `(gates, c_prev)`.
struct NextCell {
    acts: Activations,
    gate_grad: Option<GateGrad>,
}

impl CustomOp2 for NextCell {
    fn name(&self) -> &'static str {
        "lstm-next-cell"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h) = dims(l1, l2, self.name())?;
        let (gates, c_prev) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let mut acts = vec![0f32; b * 4 * h];
        let mut c = vec![0f32; b * h];
        for r in 0..b {
            let g = &gates[r * 4 * h..(r + 1) * 4 * h];
            let a = &mut acts[r * 4 * h..(r + 1) * 4 * h];
            let (cp, out) = (&c_prev[r * h..(r + 1) * h], &mut c[r * h..(r + 1) * h]);
            for j in 0..h {
                a[j] = sigmoid(g[j]);
                a[h + j] = sigmoid(g[h + j]);
                a[2 * h + j] = tanh(g[2 * h + j]);
                a[3 * h + j] = sigmoid(g[3 * h + j]);
                out[j] = a[h + j] * cp[j] + a[j] * a[2 * h + j];
            }
        }
        let _ = self.acts.set(acts);
        Ok((CpuStorage::F32(c), Shape::from((b, h))))
    }

    fn bwd(
        &self,
        _gates: &Tensor,
        c_prev: &Tensor,
        _c: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, h) = c_prev.dims2()?;
        let a = stored(&self.acts, self.name())?;
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
                dcp[k] = dc[k] * f;
            }
        }
        add_into(&self.gate_grad, &dg);
        let dev = c_prev.device();
        Ok((
            Some(Tensor::from_vec(dg, (b, 4 * h), dev)?),
            Some(Tensor::from_vec(dcp, (b, h), dev)?),
        ))
    }
}

/// `h = sigmoid(o) tanh(c)` from `(gates, c)`; sigmoid(o) comes from [`NextCell`].
struct NextHidden {
    acts: Activations,
    tanh_c: OnceLock<Vec<f32>>,
    gate_grad: Option<GateGrad>,
}

impl CustomOp2 for NextHidden {
    fn name(&self) -> &'static str {
        "lstm-next-hidden"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h) = dims(l1, l2, self.name())?;
        let a = stored(&self.acts, self.name())?;
        let c = slice(s2, l2, self.name())?;
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

    fn bwd(
        &self,
        _gates: &Tensor,
        c: &Tensor,
        _h: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, h) = c.dims2()?;
        let a = stored(&self.acts, self.name())?;
        let t = stored(&self.tanh_c, self.name())?;
        let dh = host(grad)?;
        let mut dg = vec![0f32; b * 4 * h];
        let mut dcv = vec![0f32; b * h];
        for r in 0..b {
            for j in 0..h {
                let k = r * h + j;
                let o = a[r * 4 * h + 3 * h + j];
                dg[r * 4 * h + 3 * h + j] = dh[k] * t[k] * o * (1.0 - o);
                dcv[k] = dh[k] * o * (1.0 - t[k] * t[k]);
            }
        }
        add_into(&self.gate_grad, &dg);
        let dev = c.device();
        Ok((
            Some(Tensor::from_vec(dg, (b, 4 * h), dev)?),
            Some(Tensor::from_vec(dcv, (b, h), dev)?),
        ))
    }
}

/// The new `(h, c)` of an LSTM cell from its pre-activation `gates [B, 4H]` (PyTorch's
/// i, f, g, o order) and the previous cell state `c_prev [B, H]`.
pub fn cell(gates: &Tensor, c_prev: &Tensor) -> Result<(Tensor, Tensor)> {
    if fused(gates) {
        return fused_cell(gates, c_prev, None);
    }
    cell_ops(gates, c_prev)
}

/// Whether `gates` can take the fused CPU path.
pub fn fused(gates: &Tensor) -> bool {
    gates.device().is_cpu() && gates.dtype() == candle_core::DType::F32
}

/// [`cell`] on the fused CPU path that also hands out the gates' gradient: after the
/// backward pass the returned [`GateGrad`] holds it (`[B, 4H]` row-major; empty when no
/// gradient reached this step). `None` off the CPU.
pub fn cell_recorded(
    gates: &Tensor,
    c_prev: &Tensor,
) -> Result<Option<(Tensor, Tensor, GateGrad)>> {
    if !fused(gates) {
        return Ok(None);
    }
    let sink = GateGrad::default();
    let (h, c) = fused_cell(gates, c_prev, Some(sink.clone()))?;
    Ok(Some((h, c, sink)))
}

fn fused_cell(
    gates: &Tensor,
    c_prev: &Tensor,
    gate_grad: Option<GateGrad>,
) -> Result<(Tensor, Tensor)> {
    let gates = gates.contiguous()?;
    let acts = Activations::default();
    let c = gates.apply_op2(
        &c_prev.contiguous()?,
        NextCell {
            acts: acts.clone(),
            gate_grad: gate_grad.clone(),
        },
    )?;
    let h = gates.apply_op2(
        &c,
        NextHidden {
            acts,
            tanh_c: OnceLock::new(),
            gate_grad,
        },
    )?;
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
    }

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
        let run = |f: fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>| {
            let (hn, cn) = f(g.as_tensor(), c.as_tensor()).unwrap();
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
            )
        };
        let fused = run(cell);
        let ops = run(cell_ops);
        for (name, a, b) in [
            ("h", &fused.0, &ops.0),
            ("c", &fused.1, &ops.1),
            ("d gates", &fused.2, &ops.2),
            ("d c_prev", &fused.3, &ops.3),
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
