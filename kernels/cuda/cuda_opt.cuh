/* One weight's optimizer update on the device: the formulas of
 * kernels/cpu_opt.c, in the same order, with explicit _rn intrinsics so that
 * nothing is fused into an FMA: the op-by-op kernel (cuda_kernels.cu) and
 * the fused step (cuda_fused.cu) then round as the CPU does. */
#ifndef TFDIST_KERNELS_CUDA_CUDA_OPT_CUH
#define TFDIST_KERNELS_CUDA_CUDA_OPT_CUH

#include "kernels/opt_rule.h"

/* p and g: the weight and its averaged gradient; st: its state floats
 * (kern_opt_state_per_elem(kind) of them, interleaved). Returns the new p. */
__device__ __forceinline__ float kc_opt_elem(int kind, const kern_opt_scalars &s, float p, float g,
                                             float *st) {
  switch (kind) {
  case KERN_OPT_SGD:
    return __fsub_rn(p, __fmul_rn(s.lr, __fadd_rn(g, __fmul_rn(s.l2, p))));
  case KERN_OPT_MOMENTUM: {
    const float v = __fadd_rn(__fmul_rn(s.momentum, st[0]), __fadd_rn(g, __fmul_rn(s.l2, p)));
    st[0] = v;
    return __fsub_rn(p, __fmul_rn(s.lr, v));
  }
  case KERN_OPT_NESTEROV: {
    const float gl = __fadd_rn(g, __fmul_rn(s.l2, p));
    const float v = __fadd_rn(__fmul_rn(s.momentum, st[0]), gl);
    st[0] = v;
    return __fsub_rn(p, __fmul_rn(s.lr, __fadd_rn(gl, __fmul_rn(s.momentum, v))));
  }
  case KERN_OPT_RMSPROP: {
    const float gl = __fadd_rn(g, __fmul_rn(s.l2, p));
    const float v = __fadd_rn(__fmul_rn(s.b2, st[0]), __fmul_rn(s.one_minus_b2, __fmul_rn(gl, gl)));
    st[0] = v;
    return __fsub_rn(p, __fmul_rn(s.lr, __fdiv_rn(gl, __fadd_rn(__fsqrt_rn(v), s.epsilon))));
  }
  case KERN_OPT_ADAM:
  case KERN_OPT_ADAMW: {
    const float pi = __fmul_rn(p, kind == KERN_OPT_ADAMW ? s.decay : 1.0f);
    const float gl = __fadd_rn(g, __fmul_rn(s.l2, pi));
    float m = st[0], v = st[1];
    m = __fadd_rn(m, __fmul_rn(s.one_minus_b1, __fsub_rn(gl, m)));
    v = __fadd_rn(__fmul_rn(s.b2, v), __fmul_rn(s.one_minus_b2, __fmul_rn(gl, gl)));
    st[0] = m;
    st[1] = v;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bc2_sqrt), s.epsilon);
    return __fsub_rn(pi, __fmul_rn(s.step_size, __fdiv_rn(m, denom)));
  }
  }
  return p;
}

#endif
