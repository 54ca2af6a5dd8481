/* Evaluation of a model over rows of a data set, shared by the training loop
 * (validation_acc) and `tfdist eval`, so both do the same float32 math and
 * `tfdist eval` reproduces a run's final_acc exactly. */
#ifndef TFDIST_MODEL_EVALUATE_H
#define TFDIST_MODEL_EVALUATE_H

#include <stdint.h>

#include "kernels/backend.h"
#include "model/model.h"

/* Rows per forward pass. Part of the result's definition: a sum of per-chunk
 * losses depends on how rows are grouped. */
#define EVAL_CHUNK 1000

/* Sees each chunk after its forward pass: rows [start, start+n) of the order
 * idx, logits (n, classes) in backend memory. */
typedef int (*eval_chunk_fn)(void *ctx, int64_t start, int64_t n, const float *logits);

typedef struct {
  kern_backend *be;
  model_work *work;         /* max_n >= EVAL_CHUNK */
  const float *params;      /* backend memory */
  const uint8_t *images;    /* backend memory, (count, sample_elems) */
  const uint8_t *labels;    /* backend memory, (count) */
  int64_t sample_elems;
  const int32_t *idx;       /* backend memory: row order (identity for a test set) */
  int64_t *cursor;          /* backend memory, one int64 of scratch */
  kern_stats *stats;        /* backend memory; accumulated into, not reset */
} eval_ctx;

/* Forward passes over rows [lo, hi) in chunks of EVAL_CHUNK starting at lo;
 * cross-entropy and accuracy accumulate into c->stats. */
int eval_rows(const eval_ctx *c, int64_t lo, int64_t hi, eval_chunk_fn fn, void *fn_ctx);

#endif
