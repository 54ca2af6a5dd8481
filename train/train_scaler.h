/* --compression fp16's dynamic scale, owned by the trainer (PyTorch's
 * GradScaler, applied to the ring's fp16 terms instead of the loss): the
 * ring multiplies each term by the scale before rounding it to fp16 and
 * divides the result by it (collective/codec.h). A term beyond fp16's range
 * becomes inf, and inf reaches every rank's averaged gradient alike, so every
 * rank skips that step together: the weights never see inf or NaN.
 *
 *   start at 2^10; on an overflow (any non-finite element of the averaged
 *   gradient) skip the update, halve the scale (not below 2^-24); after 2000
 *   clean steps in a row double it, up to 2^24 (base/fp16_scale.h's range,
 *   which the ring and the checkpoint reader also hold to); after 24 overflows in a row (the scale is then
 *   2^-14, so a term beyond 65504 * 2^14 ~ 1e9: the gradient is not finite at
 *   any scale) the run stops as Failed, exit 1.
 *
 * A skipped step still consumes its batch and counts as a step (the
 * learning-rate schedule goes on), but the optimizer does not see it: its
 * state and Adam's step count t stay as they were (train_opt_at). Inactive
 * (every step applied, scale unused) unless fp16 is on and the comm
 * compresses (coll_comm_compresses: not shm, not hier on one node). */
#ifndef TFDIST_TRAIN_TRAIN_SCALER_H
#define TFDIST_TRAIN_TRAIN_SCALER_H

#include <stdint.h>

#include "base/err.h"
#include "base/fp16_scale.h"
#include "collective/coll.h"
#include "train/records.h"

#define TRAIN_SCALER_INIT_LOG2 10
#define TRAIN_SCALER_GROWTH_STEPS 2000
#define TRAIN_SCALER_MAX_OVERFLOWS 24 /* in a row */

typedef struct {
  int on;                  /* fp16 over a ring that compresses: the scale is used */
  float scale;             /* a power of two in fp16_scale_valid's range */
  int64_t clean_steps;     /* applied steps since the last overflow or growth */
  int64_t overflows;       /* skipped steps over the run (checkpointed) */
  int64_t consecutive;     /* overflows in a row */
} train_scaler;

void train_scaler_init(train_scaler *s, int on);
/* Before a step's reductions: the scale they are started with. */
void train_scaler_begin(const train_scaler *s, coll_comm *comm);
/* TFDIST_FAULT_INFLATE_* (base/fault.h): this rank's gradient before its
 * allreduce, at the chosen steps. */
void train_scaler_fault(int rank, int64_t global_step, float *grads, int64_t elems);
/* After the reductions: *apply is 0 when the averaged gradient overflowed
 * (then logged and counted, scale halved). -1, with err set, when overflows
 * in a row reach TRAIN_SCALER_MAX_OVERFLOWS. */
int train_scaler_after(train_scaler *s, const float *grads, int64_t elems, int64_t global_step,
                       rank_log *log, metrics_log *metrics, int64_t epoch, int *apply,
                       base_err *err);
/* Epoch end: fp16_overflow_steps and fp16_scale into metrics.jsonl (when on). */
void train_scaler_metrics(const train_scaler *s, metrics_log *metrics, int64_t epoch,
                          int64_t global_step);

#endif
