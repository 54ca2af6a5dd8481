/* The MLP-specific fused training step: the whole step of the 3-layer ReLU
 * MLP in one launch, where a back end can (CUDA). Not part of the generic
 * op interface (backend.h). */
#ifndef TFDIST_KERNELS_MLP_STEP_H
#define TFDIST_KERNELS_MLP_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* One training step of the 3-layer ReLU MLP, as kern_fused_step takes it:
 * gather at *cursor, forward, softmax cross-entropy (stats), backward
 * into grads (overwritten: the same values as zeroing then accumulating),
 * the optimizer update and the cursor advance. The buffers are those the
 * op-by-op step uses (model/model.h's work buffers), so either path leaves
 * the same state behind. One launch may run `steps` such steps in a row,
 * each at the cursor the one before advanced: the same as `steps` launches. */
typedef struct {
  int64_t n;                  /* batch rows */
  int64_t steps;              /* steps per launch; 0 means 1 */
  int64_t dims[4];            /* in, h1, h2, classes */
  int64_t w_off[3], b_off[3]; /* offsets of each layer's W and b in params */
  float *params, *grads, *opt_state;
  float *act[4];              /* x, h1, h2, logits */
  float *dact[4];             /* dact[1..3]: dL/dz of each layer */
  int32_t *labels;            /* the batch's labels, written */
  const uint8_t *images, *image_labels; /* images NULL: act[0] and labels already hold
                                         * the batch (a loader filled them; CPU only), so
                                         * no gather; steps must then be 1 */
  const int32_t *perm;
  int64_t *cursor, cursor_delta;
  kern_stats *stats;
  float grad_scale;
  kern_opt opt;
  void *ws;                   /* kern_fused_step_ws bytes of backend memory */
  /* Optional, for benchmarks: backend memory for KERN_STEP_TIMES timestamps
   * (ns) of the launch's last step: the start of each phase, the end of the
   * last, then block 0's first tile of phases 1, 3, 6 and 7 (start, staged,
   * multiplied, stored). */
  uint64_t *phase_ns;
} kern_step;
#define KERN_STEP_PHASES 7
#define KERN_STEP_TIMES (KERN_STEP_PHASES + 1 + 16)

/* 1 when this back end cannot fuse the shape (no fused step at all, as on
 * the CPU, or not this one: the caller runs the ops one by one); else 0
 * with the workspace size, or -1 with kern_error(be) set. */
int kern_fused_step_ws(kern_backend *be, const kern_step *s, size_t *bytes);
int kern_fused_step(kern_backend *be, const kern_step *s);

#endif
