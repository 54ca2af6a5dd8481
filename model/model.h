/* The tutorial's DNN, 784 -> h1 ReLU -> h2 ReLU -> 10 logits, over one
 * contiguous parameter buffer described by a layout table. */
#ifndef TFDIST_MODEL_MODEL_H
#define TFDIST_MODEL_MODEL_H

#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/mlp_step.h"

#define MODEL_LAYERS 3
#define MODEL_TENSORS (2 * MODEL_LAYERS)

typedef struct {
  char name[32];      /* Keras weight name: "dense/kernel:0", "dense/bias:0", ... */
  char layer[16];     /* "dense", "dense_1", "dense_2" */
  int64_t offset;     /* elements from the start of the buffer */
  int64_t elems;
  int64_t rows, cols; /* kernel: (in, out) row-major; bias: (out, 0) */
} model_tensor;

/* Grouped by layer (W1 b1 | W2 b2 | W3 b3), so each layer's gradient is one
 * contiguous range that can be reduced as soon as its backward pass ends. */
typedef struct {
  int64_t dims[MODEL_LAYERS + 1]; /* 784, h1, h2, 10 */
  model_tensor tensors[MODEL_TENSORS];
  int64_t layer_offset[MODEL_LAYERS];
  int64_t layer_elems[MODEL_LAYERS];
  int64_t total_elems;
} model_layout;

void model_layout_init(model_layout *l, int64_t in_dim, int64_t h1, int64_t h2, int64_t out_dim);
/* Glorot-uniform kernels, limit sqrt(6/(fan_in+fan_out)), zero biases. Each
 * layer draws from its own stream (seed, DATA_RNG_STREAM_INIT, layer). */
void model_init_params(const model_layout *l, float *params, uint64_t seed);

/* The first tensor (index into l->tensors) holding a NaN or an infinity,
 * and that element's index in *elem; -1 when every weight is finite. */
int model_params_find_nonfinite(const model_layout *l, const float *params, int64_t *elem);

/* Activations and their gradients for batches of up to max_n rows, in backend memory. */
typedef struct {
  kern_backend *be;
  const model_layout *layout;
  int64_t max_n;
  float *act[MODEL_LAYERS + 1];  /* act[0] = x (n, 784) ... act[3] = logits (n, 10) */
  float *dact[MODEL_LAYERS + 1]; /* dact[k]: dL/d act[k], k >= 1 */
  int32_t *labels;               /* (n) */
} model_work;

int model_work_init(model_work *w, kern_backend *be, const model_layout *l, int64_t max_n);
void model_work_free(model_work *w);
int model_forward(model_work *w, const float *params, int64_t n);
/* The layer shapes, parameter offsets and work buffers of a fused step
 * (kernels/mlp_step.h's kern_step); the caller sets the rest. */
void model_step_shape(kern_step *s, const model_layout *l, const model_work *w);
/* Called after layer k's parameter gradients are final (k = 2, 1, 0). */
typedef int (*model_layer_done_fn)(void *ctx, int layer);
/* Accumulates into grads; dact[3] must hold dL/dlogits. */
int model_backward(model_work *w, const float *params, float *grads, int64_t n,
                   model_layer_done_fn done, void *ctx);

#endif
