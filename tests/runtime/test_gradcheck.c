/* Analytic gradients of every parameter tensor (the float32 CPU backend via
 * model_backward) against central finite differences of an independent
 * float64 reference, on random inputs and weights. */
#include <stdio.h>

#include "check.h"
#include "cpu_net.h"
#include "base/rng.h"

int main(void) {
  const int64_t n = 7, dims[4] = {784, 13, 9, 10};
  cpu_net c;
  cpu_net_init(&c, dims, n);
  const model_layout *l = &c.l;
  model_work *w = &c.w;
  kern_backend *be = c.be;
  float *params = c.params, *grads = c.grads;
  base_rng r;
  base_rng_seed(&r, 2024, 99, 0);
  model_init_params(l, params, 7);
  /* Random non-zero biases too, so their gradients are exercised off zero. */
  for (int k = 0; k < 3; k++) {
    const model_tensor *b = &l->tensors[2 * k + 1];
    for (int64_t i = 0; i < b->elems; i++) params[b->offset + i] = base_rng_uniform(&r) - 0.5f;
  }
  double *x64 = malloc((size_t)(n * dims[0]) * sizeof(double));
  int32_t y[7];
  for (int64_t i = 0; i < n * dims[0]; i++) {
    w->act[0][i] = base_rng_uniform(&r);
    x64[i] = w->act[0][i];
  }
  for (int64_t i = 0; i < n; i++) y[i] = w->labels[i] = (int32_t)base_rng_below(&r, 10);

  CHECK(model_forward(w, params, n) == 0);
  CHECK(kern_xent(be, w->dact[3], NULL, w->act[3], w->labels, n, 10, 1.0f / (float)n) == 0);
  CHECK(model_backward(w, params, grads, n, NULL, NULL) == 0);

  ref64_net net;
  double *p64 = cpu_net_ref64(&c, &net);
  /* Every bias and a random sample of 60 entries per kernel. */
  const double eps = 1e-6;
  for (int t = 0; t < MODEL_TENSORS; t++) {
    const model_tensor *ts = &l->tensors[t];
    int64_t count = ts->cols ? 60 : ts->elems;
    double *fd = malloc((size_t)count * sizeof(double));
    float *an = malloc((size_t)count * sizeof(float));
    for (int64_t s = 0; s < count; s++) {
      int64_t i = ts->offset + (ts->cols ? (int64_t)base_rng_below(&r, (uint32_t)ts->elems) : s);
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
  cpu_net_free(&c);
  free(p64);
  free(x64);
  CHECK_DONE();
}
