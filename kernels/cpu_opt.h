/* The CPU back end's optimizer update (kernels/cpu_opt.c), called by
 * cpu.c's opt_update op. */
#ifndef TFDIST_KERNELS_CPU_OPT_H
#define TFDIST_KERNELS_CPU_OPT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* kern_opt_update's contract (backend.h). 0, or -1 with err set. */
int cpu_opt_apply(float *params, const float *grads, float *state, int64_t elems,
                  const kern_opt *opt, char *err, size_t err_bytes);

#endif
