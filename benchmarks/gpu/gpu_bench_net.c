/* The benchmark's network: the tutorial's 784-300-100-10 DNN with a resident
 * synthetic data set (random bytes: timing never runs on zeros), stepped as
 * train/train.c steps it, split into segments for the time breakdown. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchmarks/gpu/gpu_bench.h"

const char *const bench_seg_names[SEG_COUNT] = {
  "gather u8->f32", "fwd L1 gemm+bias+relu", "fwd L2 gemm+bias+relu", "fwd L3 gemm+bias",
  "softmax+xent+grad+stats", "zero grads", "bwd L3 colsum+dW+din", "bwd L2 mask+colsum+dW+din",
  "bwd L1 mask+colsum+dW", "sgd (flat buffer)", "cursor advance",
};

double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
  if (n <= 0) return 0.0;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int up(kern_backend *be, void **dst, const void *src, size_t bytes) {
  return kern_mem_alloc(be, dst, bytes) || kern_mem_upload(be, *dst, src, bytes);
}

int bench_net_init(bench_net *n, kern_backend *be, int64_t batch, int64_t rows, uint64_t seed) {
  memset(n, 0, sizeof *n);
  n->be = be;
  n->batch = batch;
  n->rows = rows;
  n->opt = (kern_opt){.kind = KERN_OPT_SGD, .lr = 0.01f};
  model_layout_init(&n->L, 784, 300, 100, 10);
  const int64_t P = n->L.total_elems, px = n->L.dims[0];
  float *params = malloc((size_t)P * sizeof(float));
  uint8_t *img = malloc((size_t)(rows * px)), *lab = malloc((size_t)rows);
  int32_t *perm = malloc((size_t)rows * sizeof(int32_t));
  int rc = -1;
  if (!params || !img || !lab || !perm) goto out;
  model_init_params(&n->L, params, seed);
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (int64_t i = 0; i < rows * px; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    img[i] = (uint8_t)(s >> 24);
  }
  for (int64_t i = 0; i < rows; i++) lab[i] = (uint8_t)(i % 10), perm[i] = (int32_t)i;
  for (int64_t i = rows - 1; i > 0; i--) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    int64_t j = (int64_t)(s % (uint64_t)(i + 1));
    int32_t t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  const kern_stats zero = {0};
  const int64_t c0 = 0;
  if (model_work_init(&n->w, be, &n->L, batch) != 0 ||
      up(be, (void **)&n->params, params, (size_t)P * 4) ||
      up(be, (void **)&n->grads, params, (size_t)P * 4) ||
      up(be, (void **)&n->state, params, (size_t)P * 4) ||
      up(be, (void **)&n->images, img, (size_t)(rows * px)) ||
      up(be, (void **)&n->labels, lab, (size_t)rows) ||
      up(be, (void **)&n->perm, perm, (size_t)rows * 4) ||
      up(be, (void **)&n->cursor, &c0, sizeof c0) ||
      up(be, (void **)&n->stats, &zero, sizeof zero)) {
    goto out;
  }
  rc = 0;
out:
  free(params), free(img), free(lab), free(perm);
  return rc;
}

void bench_net_free(bench_net *n) {
  if (!n->be) return;
  model_work_free(&n->w);
  void *bufs[] = {n->params, n->grads, n->state, n->images, n->labels, n->perm, n->cursor, n->stats,
                  n->fs.ws};
  for (int i = 0; i < 9; i++) kern_mem_free(n->be, bufs[i]);
  memset(n, 0, sizeof *n);
}

int bench_net_reset_cursor(bench_net *n) {
  const int64_t c0 = 0;
  return kern_mem_upload(n->be, n->cursor, &c0, sizeof c0);
}

int bench_net_fuse(bench_net *n) {
  kern_backend *be = n->be;
  kern_step *f = &n->fs;
  *f = (kern_step){.n = n->batch, .params = n->params, .grads = n->grads, .opt_state = n->state,
                   .images = n->images, .image_labels = n->labels, .perm = n->perm,
                   .cursor = n->cursor, .cursor_delta = n->batch, .stats = n->stats,
                   .grad_scale = 1.0f / (float)n->batch, .opt = n->opt};
  model_step_shape(f, &n->L, &n->w);
  size_t bytes = 0;
  int rc = kern_fused_step_ws(be, f, &bytes);
  if (rc != 0) return rc;
  return kern_mem_alloc(be, &f->ws, bytes) == 0 ? 0 : -1;
}

#define SEG(s, call)                                                                         \
  do {                                                                                       \
    if (only < 0 && mark) mark(ctx, s);                                                      \
    if ((only < 0 || only == (s)) && (call) != 0) return -1;                                 \
  } while (0)

int bench_step_ops(bench_net *n, bench_mark_fn mark, void *ctx, int only) {
  kern_backend *be = n->be;
  model_work *w = &n->w;
  const model_layout *L = &n->L;
  const int64_t B = n->batch, P = L->total_elems;
  const float *p = n->params;
  float *g = n->grads;
  if (n->fs.ws && !mark && only < 0) return kern_fused_step(be, &n->fs);
  SEG(SEG_GATHER, kern_gather_u8(be, w->act[0], w->labels, n->images, n->labels, L->dims[0],
                                     n->perm, n->cursor, B));
  for (int k = 0; k < MODEL_LAYERS; k++) {
    kern_act act = k + 1 < MODEL_LAYERS ? KERN_ACT_RELU : KERN_ACT_NONE;
    SEG(SEG_FWD1 + k, kern_dense_forward(be, w->act[k + 1], w->act[k], p + L->tensors[2 * k].offset,
                                         p + L->tensors[2 * k + 1].offset, B, L->dims[k],
                                         L->dims[k + 1], act));
  }
  SEG(SEG_XENT, kern_xent(be, w->dact[MODEL_LAYERS], n->stats, w->act[MODEL_LAYERS], w->labels,
                              B, L->dims[MODEL_LAYERS], 1.0f / (float)B));
  SEG(SEG_ZERO, kern_mem_zero_f32(be, g, P));
  for (int k = MODEL_LAYERS - 1; k >= 0; k--) {
    kern_act act = k + 1 < MODEL_LAYERS ? KERN_ACT_RELU : KERN_ACT_NONE;
    const int seg = k == 2 ? SEG_BWD3 : k == 1 ? SEG_BWD2 : SEG_BWD1;
    SEG(seg, kern_dense_backward(be, k > 0 ? w->dact[k] : NULL, g + L->tensors[2 * k].offset,
                            g + L->tensors[2 * k + 1].offset, w->dact[k + 1], w->act[k],
                            p + L->tensors[2 * k].offset, w->act[k + 1], B, L->dims[k],
                            L->dims[k + 1], act));
  }
  SEG(SEG_SGD, kern_opt_update(be, n->params, n->grads, n->state, P, &n->opt));
  SEG(SEG_CURSOR, kern_cursor_advance(be, n->cursor, B));
  if (only < 0 && mark) mark(ctx, SEG_COUNT);
  return 0;
}

double bench_step_bytes(const bench_net *n) {
  const int64_t B = n->batch, P = n->L.total_elems;
  const int64_t *d = n->L.dims;
  double bytes = (double)B * ((double)d[0] * (1 + 4) + 4 + 1 + 4); /* gather: u8 in, f32 out, idx, labels */
  for (int k = 0; k < MODEL_LAYERS; k++) {
    const double w = (double)d[k] * (double)d[k + 1] + (double)d[k + 1];
    bytes += 4.0 * (B * (double)d[k] + w + B * (double)d[k + 1]);         /* forward */
    bytes += 4.0 * (2.0 * B * (double)d[k + 1] + B * (double)d[k] + 2 * w); /* dz, out, in, dW rw */
    if (k > 0) bytes += 4.0 * (w + B * (double)d[k]);                     /* din */
  }
  bytes += 4.0 * (2.0 * B * (double)d[3]) + 4.0 * B;                     /* xent */
  bytes += 4.0 * (double)P * (1 + 3);                                      /* zero, sgd */
  return bytes;
}

double bench_step_flops(const bench_net *n) {
  const int64_t *d = n->L.dims;
  double f = 0.0;
  for (int k = 0; k < MODEL_LAYERS; k++) {
    const double mm = 2.0 * (double)n->batch * (double)d[k] * (double)d[k + 1];
    f += mm * (k > 0 ? 3.0 : 2.0); /* forward, dW, and din except for the first layer */
  }
  return f;
}
