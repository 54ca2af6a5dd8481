/* Opening what a run leaves behind (train_outputs.c). */
#ifndef TFDIST_TRAIN_TRAIN_OUTPUTS_H
#define TFDIST_TRAIN_TRAIN_OUTPUTS_H

#include <cjson/cJSON.h>

#include "train/train_state.h"

/* How the CPU team splits the step, op by op and fused (run.json, rank log;
 * kernels/cpu.c has the why). */
#define TRAIN_THREADS_OPS "column slices of every GEMM, one team job an op"
#define TRAIN_THREADS_FUSED                                                              \
  "fused step: rows of the batch gathered, layer 1 by columns, rows through layers 2-3, " \
  "loss and input gradients, then rows of every dW and their update, in pieces any "    \
  "member takes"

/* run.json's threads (rank 0; a later call replaces it). */
void train_outputs_record_threads(train_outputs *out, const train_ctx *ctx, const char *how);
/* Every rank: the run id into its log; rank 0 also run.json (with ranks,
 * which it owns from here on, on every path) and metrics.jsonl. -1 with err set. */
int train_outputs_open(train_outputs *out, const train_ctx *ctx, cJSON *ranks, base_err *err);
/* --tensorboard: rank 0's event file, a new one each run (a resumed run's
 * too); opened once the resume has set step's counters. */
int train_outputs_tboard_open(train_outputs *out, const train_ctx *ctx,
                              const train_step_state *step, base_err *err);

#endif
