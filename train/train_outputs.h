/* Opening what a run leaves behind (train_outputs.c). */
#ifndef TFDIST_TRAIN_TRAIN_OUTPUTS_H
#define TFDIST_TRAIN_TRAIN_OUTPUTS_H

#include <cjson/cJSON.h>

#include "train/train_state.h"

/* Every rank: the run id into its log; rank 0 also run.json (with ranks,
 * which it owns from here on, on every path) and metrics.jsonl. -1 with err set. */
int train_outputs_open(train_outputs *out, const train_ctx *ctx, cJSON *ranks, base_err *err);
/* --tensorboard: rank 0's event file, a new one each run (a resumed run's
 * too); opened once the resume has set step's counters. */
int train_outputs_tboard_open(train_outputs *out, const train_ctx *ctx,
                              const train_step_state *step, base_err *err);

#endif
