/* One SGD step (gather, forward, loss, backward, update) through the CPU
 * backend, from fixed random weights, against a float64 backprop written
 * here from the math. */
#include <stdio.h>

#include "check.h"
#include "cpu_net.h"
#include "base/rng.h"

/* dL/dparams of the mean cross-entropy, float64, by hand. */
static void ref64_grads(const ref64_net *net, const double *x, const int32_t *y, int64_t n,
                        double **gw, double **gb) {
  double *acts[4];
  for (int k = 0; k < 4; k++) acts[k] = malloc((size_t)(n * net->dims[k]) * sizeof(double));
  ref64_loss(net, x, y, n, acts);
  int64_t c = net->dims[3];
  double *d = malloc((size_t)(n * c) * sizeof(double));
  for (int64_t i = 0; i < n; i++) {
    double m = acts[3][i * c], s = 0.0;
    for (int64_t j = 1; j < c; j++) m = fmax(m, acts[3][i * c + j]);
    for (int64_t j = 0; j < c; j++) s += exp(acts[3][i * c + j] - m);
    for (int64_t j = 0; j < c; j++) {
      d[i * c + j] = (exp(acts[3][i * c + j] - m) / s - (j == y[i])) / (double)n;
    }
  }
  for (int k = 2; k >= 0; k--) {
    int64_t in = net->dims[k], out = net->dims[k + 1];
    for (int64_t p = 0; p < in; p++)
      for (int64_t j = 0; j < out; j++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += acts[k][i * in + p] * d[i * out + j];
        gw[k][p * out + j] = s;
      }
    for (int64_t j = 0; j < out; j++) {
      double s = 0.0;
      for (int64_t i = 0; i < n; i++) s += d[i * out + j];
      gb[k][j] = s;
    }
    if (k == 0) break;
    double *dn = malloc((size_t)(n * in) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
      for (int64_t p = 0; p < in; p++) {
        double s = 0.0;
        for (int64_t j = 0; j < out; j++) s += d[i * out + j] * net->w[k][p * out + j];
        dn[i * in + p] = acts[k][i * in + p] > 0 ? s : 0.0; /* ReLU of layer k's output */
      }
    free(d);
    d = dn;
  }
  free(d);
  for (int k = 0; k < 4; k++) free(acts[k]);
}

int main(void) {
  const int64_t n = 50, pool = 200, dims[4] = {784, 300, 100, 10};
  const float lr = 0.05f;
  cpu_net c;
  cpu_net_init(&c, dims, n);
  const model_layout *l = &c.l;
  model_work *w = &c.w;
  kern_backend *be = c.be;
  float *params = c.params, *grads = c.grads;
  uint8_t *images = malloc((size_t)(pool * dims[0])), labels[200];
  int32_t perm[200];
  base_rng r;
  base_rng_seed(&r, 77, 5, 0);
  for (int64_t i = 0; i < pool * dims[0]; i++) images[i] = (uint8_t)base_rng_below(&r, 256);
  for (int64_t i = 0; i < pool; i++) labels[i] = (uint8_t)base_rng_below(&r, 10);
  base_perm_epoch(perm, pool, 77, 0);
  model_init_params(l, params, 11);
  for (int64_t i = 0; i < l->total_elems; i++) grads[i] = 1e3f; /* must be zeroed by the step */

  /* The runtime's step, op by op. Rows 50..99 of the permutation. */
  int64_t cursor = n;
  kern_opt opt = {.kind = KERN_OPT_SGD, .lr = lr};
  CHECK(kern_gather_u8(be, w->act[0], w->labels, images, labels, dims[0], perm, &cursor, n) == 0);
  CHECK(model_forward(w, params, n) == 0);
  kern_stats st = {0};
  CHECK(kern_xent(be, w->dact[3], &st, w->act[3], w->labels, n, 10, 1.0f / (float)n) == 0);
  CHECK(kern_mem_zero_f32(be, grads, l->total_elems) == 0);
  CHECK(model_backward(w, params, grads, n, NULL, NULL) == 0);

  ref64_net net;
  double *p64 = cpu_net_ref64(&c, &net);
  double *g64 = malloc((size_t)l->total_elems * sizeof(double));
  double *x64 = malloc((size_t)(n * dims[0]) * sizeof(double));
  int32_t y[50];
  double *gw[3], *gb[3];
  for (int k = 0; k < 3; k++) {
    gw[k] = g64 + l->tensors[2 * k].offset;
    gb[k] = g64 + l->tensors[2 * k + 1].offset;
  }
  for (int64_t i = 0; i < n; i++) {
    int32_t row = perm[n + i];
    y[i] = labels[row];
    for (int64_t j = 0; j < dims[0]; j++) x64[i * dims[0] + j] = images[row * dims[0] + j] / 255.0;
  }
  double loss64 = ref64_loss(&net, x64, y, n, NULL);
  ref64_grads(&net, x64, y, n, gw, gb);
  CHECK(fabs(st.loss_sum / n - loss64) <= 1e-5 * fabs(loss64));
  check_close_f32("gradient", grads, g64, l->total_elems, 1e-7, 1e-3);

  CHECK(kern_opt_update(be, params, grads, NULL, l->total_elems, &opt) == 0);
  for (int64_t i = 0; i < l->total_elems; i++) p64[i] -= lr * g64[i];
  /* Weights are O(0.1) and the update O(lr*grad): the step moves them by far
   * more than 1e-6, so this tolerance distinguishes a wrong update. */
  check_close_f32("params after one step", params, p64, l->total_elems, 1e-6, 1e-5);
  cpu_net_free(&c);
  free(images), free(p64), free(g64), free(x64);
  CHECK_DONE();
}
