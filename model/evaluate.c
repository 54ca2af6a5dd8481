/* The evaluation loop: gather, forward, cross-entropy, per chunk. */
#include "model/evaluate.h"

int eval_rows(const eval_ctx *c, int64_t lo, int64_t hi, eval_chunk_fn fn, void *fn_ctx) {
  kern_backend *be = c->be;
  const int64_t classes = c->work->layout->dims[MODEL_LAYERS];
  for (int64_t start = lo; start < hi; start += EVAL_CHUNK) {
    int64_t m = hi - start < EVAL_CHUNK ? hi - start : EVAL_CHUNK;
    if (kern_mem_upload(be, c->cursor, &start, sizeof start) != 0 ||
        kern_gather_u8(be, c->work->act[0], c->work->labels, c->images, c->labels,
                           c->sample_elems, c->idx, c->cursor, m) != 0 ||
        model_forward(c->work, c->params, m) != 0 ||
        kern_xent(be, NULL, c->stats, c->work->act[MODEL_LAYERS], c->work->labels, m, classes,
                      1.0f) != 0) {
      return -1;
    }
    if (fn && fn(fn_ctx, start, m, c->work->act[MODEL_LAYERS]) != 0) return -1;
  }
  return 0;
}
