// The fused optimizer steps on CUDA: one thread per element updates a parameter and its
// moments in place, with the same f32 operations in the same order as the CPU step
// (fused.rs). The _rn intrinsics keep nvcc from contracting a multiply and an add into an
// FMA, which rounds once where the CPU rounds twice; sqrtf and '/' are IEEE-exact by default
// (no --use_fast_math), so a step gives the same bits as on the CPU.
//
// Built to PTX by build.rs with the `cuda` feature; loaded by fused/cuda.rs.

#include <stddef.h>

#define FLUSH(x) (fabsf(x) < 1.17549435e-38f ? 0.0f : (x))

// g + p * l2 (coupled L2 decay) where the rule has it.
__device__ __forceinline__ float decayed(float g, float p, int has_l2, float l2) {
  return has_l2 ? __fadd_rn(g, __fmul_rn(p, l2)) : g;
}

extern "C" __global__ void orchestrate_sgd_f32(const size_t n, float *p, const float *g,
                                               const float lr, const int has_l2, const float l2) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)blockDim.x * gridDim.x) {
    const float gi = decayed(g[i], p[i], has_l2, l2);
    p[i] = __fsub_rn(p[i], __fmul_rn(gi, lr));
  }
}

extern "C" __global__ void orchestrate_momentum_f32(const size_t n, float *p, const float *g,
                                                    float *b, const float momentum,
                                                    const float lr, const int has_l2,
                                                    const float l2) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)blockDim.x * gridDim.x) {
    const float gi = decayed(g[i], p[i], has_l2, l2);
    const float bi = FLUSH(__fadd_rn(__fmul_rn(b[i], momentum), gi));
    b[i] = bi;
    p[i] = __fsub_rn(p[i], __fmul_rn(bi, lr));
  }
}

extern "C" __global__ void orchestrate_adam_f32(
    const size_t n, float *p, const float *g, float *m, float *v, const float b1,
    const float one_minus_b1, const float b2, const float one_minus_b2,
    const float inv_bc2_sqrt, const float eps, const float step_size, const int has_l2,
    const float l2, const int has_keep, const float keep) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)blockDim.x * gridDim.x) {
    const float pi = p[i];
    const float gi = decayed(g[i], pi, has_l2, l2);
    const float p0 = has_keep ? __fmul_rn(pi, keep) : pi;
    const float mi = FLUSH(__fadd_rn(__fmul_rn(m[i], b1), __fmul_rn(gi, one_minus_b1)));
    const float vi =
        FLUSH(__fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(gi, gi), one_minus_b2)));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fmul_rn(sqrtf(vi), inv_bc2_sqrt), eps);
    p[i] = __fsub_rn(p0, __fmul_rn(__fdiv_rn(mi, denom), step_size));
  }
}
