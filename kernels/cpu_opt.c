/* The optimizer updates on the CPU, one pass over the parameters each. Every
 * rule is written here once, as a formula, with PyTorch's semantics (and
 * Keras 3's where they agree); g is the averaged gradient, t the 1-based
 * update count (kern_opt.step), lr this update's scheduled rate, wd
 * --weight-decay. The CUDA kernels (kernels/cuda) compute the same
 * expressions in the same order, from the same kern_opt_scalars.
 *
 * L2 (every rule but adamw): g <- g + wd*p first (torch's weight_decay).
 *
 * sgd:      p <- p - lr*g
 * momentum: v <- mu*v + g;  p <- p - lr*v
 *           (torch.optim.SGD, dampening 0. Keras 3 keeps v' = mu*v' - lr*g,
 *            p <- p + v': the same under a constant rate; under a schedule
 *            torch scales the whole velocity by this step's rate.)
 * nesterov: v <- mu*v + g;  p <- p - lr*(g + mu*v)      (torch; Keras 3 as above)
 * rmsprop:  s <- rho*s + (1-rho)*g^2;  p <- p - lr*g/(sqrt(s) + eps)
 *           (torch, alpha = rho; no momentum, not centered. Keras 3 puts eps
 *            inside the root: its default and ours is rho 0.9, torch's 0.99.)
 * adam:     m <- m + (1-b1)*(g - m)           (= b1*m + (1-b1)*g, torch's lerp)
 *           v <- b2*v + (1-b2)*g^2
 *           p <- p - (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *           (torch.optim.Adam: bias-corrected, eps outside the root and after
 *            the correction. Keras 3 adds eps to sqrt(v) before the
 *            correction, i.e. its eps is ours times sqrt(1-b2^t).)
 * adamw:    p <- p*(1 - lr*wd), then adam with g (decoupled; torch.optim.AdamW,
 *           and Keras 3 AdamW, which also scales the decay by lr).
 *
 * The per-update scalars (lr/(1-b1^t), sqrt(1-b2^t), 1 - lr*wd) are computed
 * in double and rounded once (kernels/opt_rule.h), as torch does with its
 * Python floats. State: 1 float per parameter (v or s) for momentum,
 * nesterov and rmsprop; 2 interleaved (m, v) for adam and adamw. */
#include "kernels/cpu_opt.h"

#include <math.h>
#include <stdio.h>

#include "kernels/opt_rule.h"

int kern_opt_state_per_elem(kern_opt_kind kind) { return kern_opt_state_per_elem_inline(kind); }

/* Wider vectors where the CPU has them (chosen once, at load, by the
 * loader's ifunc): every operation is elementwise IEEE with no contraction
 * (-ffp-contract=off), so each width gives the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_OPT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_OPT_CLONES
#endif

/* Adam and AdamW in one loop: decay is 1 for adam, l2 0 for adamw. */
static inline __attribute__((always_inline)) void cpu_opt_adam(float *restrict p, const float *restrict grads, float *restrict state,
                         int64_t elems, const kern_opt_scalars *s, float decay) {
  const float l2 = s->l2, a = s->one_minus_b1, b2 = s->b2, c2 = s->one_minus_b2;
  const float step = s->step_size, bc2 = s->bc2_sqrt, eps = s->epsilon;
  for (int64_t i = 0; i < elems; i++) {
    const float pi = p[i] * decay;
    const float g = grads[i] + l2 * pi;
    float m = state[2 * i], v = state[2 * i + 1];
    m = m + a * (g - m);
    v = b2 * v + c2 * (g * g);
    state[2 * i] = m;
    state[2 * i + 1] = v;
    p[i] = pi - step * (m / (sqrtf(v) / bc2 + eps));
  }
}

CPU_OPT_CLONES int cpu_opt_apply(float *restrict params, const float *restrict grads, float *restrict state,
                  int64_t elems, const kern_opt *opt, char *err, size_t err_bytes) {
  const kern_opt_scalars s = kern_opt_scalars_of(opt);
  const float lr = s.lr, mu = s.momentum, l2 = s.l2;
  switch (opt->kind) {
  case KERN_OPT_SGD:
    for (int64_t i = 0; i < elems; i++) params[i] -= lr * (grads[i] + l2 * params[i]);
    return 0;
  case KERN_OPT_MOMENTUM:
    for (int64_t i = 0; i < elems; i++) {
      state[i] = mu * state[i] + (grads[i] + l2 * params[i]);
      params[i] -= lr * state[i];
    }
    return 0;
  case KERN_OPT_NESTEROV:
    for (int64_t i = 0; i < elems; i++) {
      const float g = grads[i] + l2 * params[i];
      state[i] = mu * state[i] + g;
      params[i] -= lr * (g + mu * state[i]);
    }
    return 0;
  case KERN_OPT_RMSPROP:
    for (int64_t i = 0; i < elems; i++) {
      const float g = grads[i] + l2 * params[i];
      state[i] = s.b2 * state[i] + s.one_minus_b2 * (g * g);
      params[i] -= lr * (g / (sqrtf(state[i]) + s.epsilon));
    }
    return 0;
  case KERN_OPT_ADAM:
    cpu_opt_adam(params, grads, state, elems, &s, 1.0f);
    return 0;
  case KERN_OPT_ADAMW:
    cpu_opt_adam(params, grads, state, elems, &s, s.decay);
    return 0;
  }
  snprintf(err, err_bytes, "cpu: unknown optimizer kind %d", (int)opt->kind);
  return -1;
}
