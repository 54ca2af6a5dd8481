/* Model layout, initialisation, and forward/backward through the backend. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/rng.h"

void model_layout_init(model_layout *l, int64_t in_dim, int64_t h1, int64_t h2, int64_t out_dim) {
  memset(l, 0, sizeof *l);
  l->dims[0] = in_dim;
  l->dims[1] = h1;
  l->dims[2] = h2;
  l->dims[3] = out_dim;
  int64_t off = 0;
  for (int k = 0; k < MODEL_LAYERS; k++) {
    model_tensor *w = &l->tensors[2 * k], *b = &l->tensors[2 * k + 1];
    char layer[16];
    if (k == 0) snprintf(layer, sizeof layer, "dense");
    else snprintf(layer, sizeof layer, "dense_%d", k);
    l->layer_offset[k] = off;
    snprintf(w->layer, sizeof w->layer, "%s", layer);
    snprintf(w->name, sizeof w->name, "%s/kernel:0", layer);
    w->rows = l->dims[k];
    w->cols = l->dims[k + 1];
    w->elems = w->rows * w->cols;
    w->offset = off;
    off += w->elems;
    snprintf(b->layer, sizeof b->layer, "%s", layer);
    snprintf(b->name, sizeof b->name, "%s/bias:0", layer);
    b->rows = l->dims[k + 1];
    b->cols = 0;
    b->elems = b->rows;
    b->offset = off;
    off += b->elems;
    l->layer_elems[k] = off - l->layer_offset[k];
  }
  l->total_elems = off;
}

void model_init_params(const model_layout *l, float *params, uint64_t seed) {
  for (int k = 0; k < MODEL_LAYERS; k++) {
    const model_tensor *w = &l->tensors[2 * k], *b = &l->tensors[2 * k + 1];
    base_rng r;
    base_rng_seed(&r, seed, DATA_RNG_STREAM_INIT, (uint64_t)k);
    const float limit = sqrtf(6.0f / (float)(w->rows + w->cols));
    for (int64_t i = 0; i < w->elems; i++) {
      params[w->offset + i] = (2.0f * base_rng_uniform(&r) - 1.0f) * limit;
    }
    memset(params + b->offset, 0, (size_t)b->elems * sizeof(float));
  }
}

int model_params_find_nonfinite(const model_layout *l, const float *params, int64_t *elem) {
  for (int t = 0; t < MODEL_TENSORS; t++) {
    const float *p = params + l->tensors[t].offset;
    for (int64_t i = 0; i < l->tensors[t].elems; i++) {
      if (!isfinite(p[i])) {
        *elem = i;
        return t;
      }
    }
  }
  *elem = -1;
  return -1;
}

int model_work_init(model_work *w, kern_backend *be, const model_layout *l, int64_t max_n) {
  memset(w, 0, sizeof *w);
  w->be = be;
  w->layout = l;
  w->max_n = max_n;
  for (int k = 0; k <= MODEL_LAYERS; k++) {
    if (kern_mem_alloc_f32(be, &w->act[k], max_n * l->dims[k]) != 0) goto fail;
    if (k > 0 && kern_mem_alloc_f32(be, &w->dact[k], max_n * l->dims[k]) != 0) goto fail;
  }
  if (kern_mem_alloc(be, (void **)&w->labels, (size_t)max_n * sizeof(int32_t)) != 0) goto fail;
  return 0;
fail:
  model_work_free(w);
  return -1;
}

void model_work_free(model_work *w) {
  if (!w || !w->be) return;
  for (int k = 0; k <= MODEL_LAYERS; k++) {
    kern_mem_free(w->be, w->act[k]);
    kern_mem_free(w->be, w->dact[k]);
  }
  kern_mem_free(w->be, w->labels);
  memset(w, 0, sizeof *w);
}

void model_step_shape(kern_step *s, const model_layout *l, const model_work *w) {
  for (int k = 0; k <= MODEL_LAYERS; k++) {
    s->dims[k] = l->dims[k];
    s->act[k] = w->act[k];
    s->dact[k] = w->dact[k];
  }
  for (int k = 0; k < MODEL_LAYERS; k++) {
    s->w_off[k] = l->tensors[2 * k].offset;
    s->b_off[k] = l->tensors[2 * k + 1].offset;
  }
  s->labels = w->labels;
}

static const float *model_w(const model_layout *l, const float *params, int k) {
  return params + l->tensors[2 * k].offset;
}

static const float *model_b(const model_layout *l, const float *params, int k) {
  return params + l->tensors[2 * k + 1].offset;
}

int model_forward(model_work *w, const float *params, int64_t n) {
  const model_layout *l = w->layout;
  for (int k = 0; k < MODEL_LAYERS; k++) {
    kern_act act = k + 1 < MODEL_LAYERS ? KERN_ACT_RELU : KERN_ACT_NONE;
    if (kern_dense_forward(w->be, w->act[k + 1], w->act[k], model_w(l, params, k),
                           model_b(l, params, k), n, l->dims[k], l->dims[k + 1], act) != 0) {
      return -1;
    }
  }
  return 0;
}

int model_backward(model_work *w, const float *params, float *grads, int64_t n,
                   model_layer_done_fn done, void *ctx) {
  const model_layout *l = w->layout;
  for (int k = MODEL_LAYERS - 1; k >= 0; k--) {
    kern_act act = k + 1 < MODEL_LAYERS ? KERN_ACT_RELU : KERN_ACT_NONE;
    float *din = k > 0 ? w->dact[k] : NULL;
    float *dw = grads + l->tensors[2 * k].offset, *db = grads + l->tensors[2 * k + 1].offset;
    if (kern_dense_backward(w->be, din, dw, db, w->dact[k + 1], w->act[k], model_w(l, params, k),
                            w->act[k + 1], n, l->dims[k], l->dims[k + 1], act) != 0) {
      return -1;
    }
    if (done && done(ctx, k) != 0) return -1;
  }
  return 0;
}
