/* Analytic gradients of every parameter tensor (the float32 CPU backend via
 * model_backward) against central finite differences of an independent
 * float64 reference, on random inputs and weights. */
#include <stdio.h>

#include "check.h"
#include "data/rng.h"
#include "kernels/backend.h"
#include "runtime/model.h"
#include "runtime/ref64.h"

int main(void) {
  const int64_t n = 7, dims[4] = {784, 13, 9, 10};
  model_layout l;
  model_layout_init(&l, dims[0], dims[1], dims[2], dims[3]);
  kern_backend *be;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  char err[256];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) return 1;
  model_work w;
  CHECK(model_work_init(&w, be, &l, n) == 0);
  float *params = malloc((size_t)l.total_elems * sizeof(float));
  float *grads = calloc((size_t)l.total_elems, sizeof(float));
  data_rng r;
  data_rng_seed(&r, 2024, 99, 0);
  model_init_params(&l, params, 7);
  /* Random non-zero biases too, so their gradients are exercised off zero. */
  for (int k = 0; k < 3; k++) {
    const model_tensor *b = &l.tensors[2 * k + 1];
    for (int64_t i = 0; i < b->elems; i++) params[b->offset + i] = data_rng_uniform(&r) - 0.5f;
  }
  double *x64 = malloc((size_t)(n * dims[0]) * sizeof(double));
  int32_t y[7];
  for (int64_t i = 0; i < n * dims[0]; i++) {
    w.act[0][i] = data_rng_uniform(&r);
    x64[i] = w.act[0][i];
  }
  for (int64_t i = 0; i < n; i++) y[i] = w.labels[i] = (int32_t)data_rng_below(&r, 10);

  CHECK(model_forward(&w, params, n) == 0);
  CHECK(be->ops->xent(be, w.dact[3], NULL, w.act[3], w.labels, n, 10, 1.0f / (float)n) == 0);
  CHECK(model_backward(&w, params, grads, n, NULL, NULL) == 0);

  ref64_net net;
  for (int k = 0; k < 4; k++) net.dims[k] = dims[k];
  double *p64 = malloc((size_t)l.total_elems * sizeof(double));
  for (int64_t i = 0; i < l.total_elems; i++) p64[i] = params[i];
  for (int k = 0; k < 3; k++) {
    net.w[k] = p64 + l.tensors[2 * k].offset;
    net.b[k] = p64 + l.tensors[2 * k + 1].offset;
  }
  /* Every bias and a random sample of 60 entries per kernel. */
  const double eps = 1e-6;
  for (int t = 0; t < MODEL_TENSORS; t++) {
    const model_tensor *ts = &l.tensors[t];
    int64_t count = ts->cols ? 60 : ts->elems;
    double *fd = malloc((size_t)count * sizeof(double));
    float *an = malloc((size_t)count * sizeof(float));
    for (int64_t s = 0; s < count; s++) {
      int64_t i = ts->offset + (ts->cols ? (int64_t)data_rng_below(&r, (uint32_t)ts->elems) : s);
      double keep = p64[i];
      p64[i] = keep + eps;
      double lp = ref64_loss(&net, x64, y, n, NULL);
      p64[i] = keep - eps;
      double lm = ref64_loss(&net, x64, y, n, NULL);
      p64[i] = keep;
      fd[s] = (lp - lm) / (2 * eps);
      an[s] = grads[i];
    }
    /* float32 forward/backward vs float64 FD: ~1e-6 relative rounding in the
     * analytic path plus ~1e-9 FD truncation; 1e-4 leaves room, still catches
     * any wrong term (those are O(1) relative). */
    check_close_f32(ts->name, an, fd, count, 1e-6, 1e-4);
    free(fd);
    free(an);
  }
  model_work_free(&w);
  kern_backend_free(be);
  free(params);
  free(grads);
  free(p64);
  free(x64);
  CHECK_DONE();
}
