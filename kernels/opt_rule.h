/* The per-update scalars of every optimizer, derived once per update from a
 * kern_opt in double and rounded to float, so the CPU kernel, the CUDA
 * kernel and the fused step multiply by the very same numbers. For back ends
 * only (C and CUDA); the formulas themselves are in kernels/cpu_opt.c. */
#ifndef TFDIST_KERNELS_OPT_RULE_H
#define TFDIST_KERNELS_OPT_RULE_H

#include <math.h>

#include "kernels/backend.h"

/* kern_opt_state_per_elem, for the CUDA module too; -1: no such kind. */
static inline int kern_opt_state_per_elem_inline(kern_opt_kind kind) {
  switch (kind) {
  case KERN_OPT_SGD: return 0;
  case KERN_OPT_MOMENTUM:
  case KERN_OPT_NESTEROV:
  case KERN_OPT_RMSPROP: return 1;
  case KERN_OPT_ADAM:
  case KERN_OPT_ADAMW: return 2;
  }
  return -1;
}

typedef struct {
  float lr, momentum, epsilon, weight_decay;
  float b1, one_minus_b1, b2, one_minus_b2; /* rmsprop: b2 = rho */
  float step_size;  /* adam: lr / (1 - beta1^t) */
  float bc2_sqrt;   /* adam: sqrt(1 - beta2^t) */
  float decay;      /* adamw: 1 - lr*wd */
  float l2;         /* the others: wd, added as wd*p to the gradient (0: none) */
} kern_opt_scalars;

static inline kern_opt_scalars kern_opt_scalars_of(const kern_opt *o) {
  kern_opt_scalars s;
  const double lr = o->lr, wd = o->weight_decay;
  const double t = o->step > 0 ? (double)o->step : 1.0;
  const int rms = o->kind == KERN_OPT_RMSPROP;
  const double b1 = o->beta1, b2 = rms ? o->rho : o->beta2;
  s.lr = o->lr;
  s.momentum = o->momentum;
  s.epsilon = o->epsilon;
  s.weight_decay = o->weight_decay;
  s.b1 = (float)b1;
  s.one_minus_b1 = (float)(1.0 - b1);
  s.b2 = (float)b2;
  s.one_minus_b2 = (float)(1.0 - b2);
  s.step_size = (float)(lr / (1.0 - pow(b1, t)));
  s.bc2_sqrt = (float)sqrt(1.0 - pow(b2, t));
  s.decay = (float)(1.0 - lr * wd);
  s.l2 = o->kind == KERN_OPT_ADAMW ? 0.0f : o->weight_decay;
  return s;
}

#endif
