//! The fused optimizer step on CUDA: one kernel launch per parameter (`step.cu`) where the
//! tensor-op path launches ~13, each with an allocation. The same element operations as the
//! CPU step, so the same bits for the same inputs.
//!
//! Candle lends a tensor's device memory only inside an in-place op, so the moments' device
//! pointers are lent by nested [`InplaceOp1`]s (as on the CPU) and the kernel is launched
//! inside the parameter's [`InplaceOp2`], with the gradient as its read-only input.

use super::Rule;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{
    DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, sys::CUdeviceptr,
};
use candle_core::{CpuStorage, CudaStorage, InplaceOp1, InplaceOp2, Layout, Result, Tensor, bail};
use std::cell::RefCell;

/// The kernels, compiled to PTX by build.rs.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/optim_step.ptx"));
const MODULE: &str = "orchestrate_optim_step";

/// Updates `p` (and `m`, `v` where the rule has them) in place from gradient `g` on the GPU;
/// all f32 CUDA tensors, `p`, `m`, `v` contiguous and of one shape, `g` contiguous.
pub(super) fn step(
    rule: &Rule,
    p: &Tensor,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
) -> Result<()> {
    let n = p.elem_count();
    if g.elem_count() != n || [m, v].iter().flatten().any(|t| t.elem_count() != n) {
        bail!("fused optimizer step: parameter, gradient and state differ in size");
    }
    let update = |m: Option<CUdeviceptr>, v: Option<CUdeviceptr>| {
        p.inplace_op2(g, &Update { rule, n, m, v })
    };
    match (m, v) {
        (None, None) => update(None, None),
        (Some(m), None) => lend(m, |m| update(Some(m), None)),
        (Some(m), Some(v)) => lend(m, |m| lend(v, |v| update(Some(m), Some(v)))),
        (None, Some(_)) => bail!("optimizer state has a second moment without a first"),
    }
}

/// Runs `f` with the device address of `t`'s first element, writable.
fn lend(t: &Tensor, f: impl FnOnce(CUdeviceptr) -> Result<()>) -> Result<()> {
    t.inplace_op1(&Lend(RefCell::new(Some(f))))
}

struct Lend<F>(RefCell<Option<F>>);

impl<F: FnOnce(CUdeviceptr) -> Result<()>> InplaceOp1 for Lend<F> {
    fn name(&self) -> &'static str {
        "optimizer-state"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> Result<()> {
        bail!("the CUDA optimizer step got a CPU tensor")
    }

    fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &Layout) -> Result<()> {
        let Some((start, _)) = layout.contiguous_offsets() else {
            bail!("the fused optimizer step needs contiguous optimizer state");
        };
        let stream = storage.device.cuda_stream();
        let slice = storage.as_cuda_slice_mut::<f32>()?;
        // The guard orders later work on the stream after this use; it lives until the
        // kernel launched inside `f` is queued.
        let (base, _guard) = slice.device_ptr_mut(&stream);
        let Some(f) = self.0.borrow_mut().take() else {
            bail!("optimizer state lent twice");
        };
        f(base + (start * size_of::<f32>()) as CUdeviceptr)
    }
}

/// The parameter update proper: one kernel over the parameter's elements.
struct Update<'r> {
    rule: &'r Rule,
    n: usize,
    m: Option<CUdeviceptr>,
    v: Option<CUdeviceptr>,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "fused-optimizer-step"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        bail!("the CUDA optimizer step got a CPU tensor")
    }

    fn cuda_fwd(
        &self,
        ps: &mut CudaStorage,
        pl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<()> {
        let (Some((p_start, p_end)), Some((g_start, g_end))) =
            (pl.contiguous_offsets(), gl.contiguous_offsets())
        else {
            bail!("the fused optimizer step needs a contiguous parameter and gradient");
        };
        if p_end - p_start != self.n || g_end - g_start != self.n {
            bail!("fused optimizer step: parameter and gradient differ in size");
        }
        let r = self.rule;
        let kernel = match (r.adam, self.m, self.v) {
            (true, Some(_), Some(_)) => "orchestrate_adam_f32",
            (false, Some(_), None) => "orchestrate_momentum_f32",
            (false, None, None) => "orchestrate_sgd_f32",
            _ => bail!("fused optimizer step: state does not match the optimizer"),
        };
        let dev = ps.device.clone();
        let stream = dev.cuda_stream();
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        let f32s = |start: usize| (start * size_of::<f32>()) as CUdeviceptr;
        let (g_base, _g_guard) = gs.as_cuda_slice::<f32>()?.device_ptr(&stream);
        let g = g_base + f32s(g_start);
        let (p_base, _p_guard) = ps.as_cuda_slice_mut::<f32>()?.device_ptr_mut(&stream);
        let p = p_base + f32s(p_start);
        let (has_l2, l2) = r.add_l2.map_or((0i32, 0f32), |l2| (1, l2));
        let (has_keep, keep) = r.keep.map_or((0i32, 1f32), |k| (1, k));
        let n = self.n;
        let mut b = func.builder();
        b.arg(&n);
        b.arg(&p);
        b.arg(&g);
        match kernel {
            "orchestrate_adam_f32" => {
                let (m, v) = (self.m.unwrap_or(0), self.v.unwrap_or(0));
                b.arg(&m);
                b.arg(&v);
                b.arg(&r.b1);
                b.arg(&r.one_minus_b1);
                b.arg(&r.b2);
                b.arg(&r.one_minus_b2);
                b.arg(&r.inv_bc2_sqrt);
                b.arg(&r.eps);
                b.arg(&r.step_size);
                b.arg(&has_l2);
                b.arg(&l2);
                b.arg(&has_keep);
                b.arg(&keep);
                // SAFETY: the argument list matches orchestrate_adam_f32 in step.cu; every
                // pointer addresses n f32s of a live tensor on this device's stream.
                unsafe { b.launch(launch_config(n)) }.w()?;
            }
            "orchestrate_momentum_f32" => {
                let m = self.m.unwrap_or(0);
                b.arg(&m);
                b.arg(&r.momentum);
                b.arg(&r.lr);
                b.arg(&has_l2);
                b.arg(&l2);
                // SAFETY: as above, for orchestrate_momentum_f32.
                unsafe { b.launch(launch_config(n)) }.w()?;
            }
            _ => {
                b.arg(&r.lr);
                b.arg(&has_l2);
                b.arg(&l2);
                // SAFETY: as above, for orchestrate_sgd_f32.
                unsafe { b.launch(launch_config(n)) }.w()?;
            }
        }
        Ok(())
    }
}

/// Enough 256-thread blocks to cover `n` elements (the kernels loop over the rest).
fn launch_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}
