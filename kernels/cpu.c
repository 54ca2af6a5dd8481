/* CPU backend: CBLAS sgemm plus plain loops. It is the reference every other
 * backend is tested against, so it favours plain code over cleverness. */
#include "kernels/backend_impl.h"
#include "kernels/cpu_opt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfdist_config.h"
#include TFDIST_CBLAS_H

static int cpu_mem_alloc(kern_backend *be, void **ptr, size_t bytes) {
  /* 64-byte alignment keeps AVX-512 loads in BLAS on one cache line. */
  size_t rounded = (bytes + 63) / 64 * 64;
  *ptr = aligned_alloc(64, rounded ? rounded : 64);
  if (!*ptr) {
    snprintf(be->err, sizeof be->err, "cpu: out of memory allocating %zu bytes", bytes);
    return -1;
  }
  return 0;
}

static void cpu_mem_free(kern_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static int cpu_host_alloc(kern_backend *be, void **ptr, size_t bytes) {
  *ptr = malloc(bytes ? bytes : 1);
  if (!*ptr) {
    snprintf(be->err, sizeof be->err, "cpu: out of memory allocating %zu host bytes", bytes);
    return -1;
  }
  return 0;
}

static int cpu_mem_copy(kern_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
  return 0;
}

static int cpu_mem_zero(kern_backend *be, void *dst, size_t bytes) {
  (void)be;
  if (bytes) memset(dst, 0, bytes);
  return 0;
}

static int cpu_sync(kern_backend *be) {
  (void)be;
  return 0;
}

/* out = act(in . w + b) */
static int cpu_dense_forward(kern_backend *be, float *out, const float *in, const float *w,
                             const float *b, int64_t n, int64_t in_dim, int64_t out_dim,
                             kern_act act) {
  (void)be;
  for (int64_t i = 0; i < n; i++) memcpy(out + i * out_dim, b, (size_t)out_dim * sizeof *b);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)out_dim, (int)in_dim,
              1.0f, in, (int)in_dim, w, (int)out_dim, 1.0f, out, (int)out_dim);
  if (act == KERN_ACT_RELU) {
    for (int64_t i = 0; i < n * out_dim; i++) out[i] = out[i] > 0.0f ? out[i] : 0.0f;
  }
  return 0;
}

/* dout is the gradient w.r.t. the layer's (post-activation) output; with ReLU
 * it is masked in place by out > 0, which makes it dL/dz. Then
 * dw += in^T dz, db += colsum(dz), din = dz w^T (skipped when din is NULL). */
static int cpu_dense_backward(kern_backend *be, float *din, float *dw, float *db, float *dout,
                              const float *in, const float *w, const float *out, int64_t n,
                              int64_t in_dim, int64_t out_dim, kern_act act) {
  (void)be;
  if (act == KERN_ACT_RELU) {
    for (int64_t i = 0; i < n * out_dim; i++) dout[i] = out[i] > 0.0f ? dout[i] : 0.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)in_dim, (int)out_dim, (int)n,
              1.0f, in, (int)in_dim, dout, (int)out_dim, 1.0f, dw, (int)out_dim);
  for (int64_t i = 0; i < n; i++) {
    const float *row = dout + i * out_dim;
    for (int64_t j = 0; j < out_dim; j++) db[j] += row[j];
  }
  if (din) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)in_dim, (int)out_dim,
                1.0f, dout, (int)out_dim, w, (int)out_dim, 0.0f, din, (int)in_dim);
  }
  return 0;
}

/* Stable softmax cross-entropy per row: loss = logsumexp(z) - z[y],
 * dz = (softmax(z) - onehot(y)) * grad_scale. Argmax ties go to the lower class. */
static int cpu_xent(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
                    const int32_t *labels, int64_t n, int64_t classes, float grad_scale) {
  double loss = 0.0, correct = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const float *z = logits + i * classes;
    int32_t y = labels[i];
    if (y < 0 || y >= classes) {
      snprintf(be->err, sizeof be->err, "cpu xent: label %d out of range at row %lld", (int)y,
               (long long)i);
      return -1;
    }
    int64_t arg = 0;
    for (int64_t j = 1; j < classes; j++) if (z[j] > z[arg]) arg = j;
    float zmax = z[arg];
    float sum = 0.0f;
    for (int64_t j = 0; j < classes; j++) sum += expf(z[j] - zmax);
    loss += (double)(logf(sum) + zmax - z[y]);
    correct += (arg == y);
    if (dlogits) {
      float *d = dlogits + i * classes;
      for (int64_t j = 0; j < classes; j++) {
        float p = expf(z[j] - zmax) / sum;
        d[j] = (p - (j == y ? 1.0f : 0.0f)) * grad_scale;
      }
    }
  }
  if (stats) {
    stats->loss_sum += loss;
    stats->correct += correct;
    stats->samples += (double)n;
    stats->last_loss_sum = loss;
    stats->last_correct = correct;
    stats->last_samples = (double)n;
  }
  return 0;
}

static int cpu_softmax(kern_backend *be, float *probs, const float *logits, int64_t n,
                       int64_t classes) {
  (void)be;
  for (int64_t i = 0; i < n; i++) {
    const float *z = logits + i * classes;
    float *p = probs + i * classes;
    float zmax = z[0], sum = 0.0f;
    for (int64_t j = 1; j < classes; j++) zmax = z[j] > zmax ? z[j] : zmax;
    for (int64_t j = 0; j < classes; j++) sum += (p[j] = expf(z[j] - zmax));
    for (int64_t j = 0; j < classes; j++) p[j] /= sum;
  }
  return 0;
}

/* x[i,:] = images[idx[c+i],:] / 255, y[i] = labels[idx[c+i]], c = *cursor. */
static int cpu_gather_u8(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                         const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                         const int64_t *cursor, int64_t n) {
  (void)be;
  const int32_t *rows = idx + (cursor ? *cursor : 0);
  for (int64_t i = 0; i < n; i++) {
    const uint8_t *src = images + (int64_t)rows[i] * sample_elems;
    float *dst = x + i * sample_elems;
    for (int64_t j = 0; j < sample_elems; j++) dst[j] = (float)src[j] * (1.0f / 255.0f);
    y[i] = labels[rows[i]];
  }
  return 0;
}

static int cpu_cursor_advance(kern_backend *be, int64_t *cursor, int64_t delta) {
  (void)be;
  *cursor += delta;
  return 0;
}

static int cpu_opt_update(kern_backend *be, float *params, const float *grads, float *state,
                          int64_t elems, const kern_opt *opt) {
  return cpu_opt_apply(params, grads, state, elems, opt, be->err, sizeof be->err);
}

const char *kern_blas_info(void) {
#if TFDIST_BLAS_IS_OPENBLAS
  return openblas_get_config();
#else
  return TFDIST_BLAS_VENDOR;
#endif
}

static void cpu_destroy(kern_backend *be) { free(be); }

static const kern_ops cpu_ops = {
  .name = "cpu",
  .host_memory = 1,
  .destroy = cpu_destroy,
  .mem_alloc = cpu_mem_alloc,
  .mem_free = cpu_mem_free,
  .mem_upload = cpu_mem_copy,
  .mem_download = cpu_mem_copy,
  .mem_zero = cpu_mem_zero,
  .mem_copy = cpu_mem_copy,
  .host_alloc = cpu_host_alloc,
  .host_free = cpu_mem_free,
  .sync = cpu_sync,
  .dense_forward = cpu_dense_forward,
  .dense_backward = cpu_dense_backward,
  .xent = cpu_xent,
  .softmax = cpu_softmax,
  .gather_u8 = cpu_gather_u8,
  .cursor_advance = cpu_cursor_advance,
  .opt_update = cpu_opt_update,
};

int kern_cpu_create(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes) {
  kern_backend *be = calloc(1, sizeof *be);
  if (!be) {
    snprintf(err, err_bytes, "cpu: out of memory");
    return -1;
  }
  be->ops = &cpu_ops;
  be->cfg = *cfg;
#if TFDIST_BLAS_IS_OPENBLAS
  if (cfg->threads > 0) openblas_set_num_threads(cfg->threads);
#endif
  *out = be;
  return 0;
}
