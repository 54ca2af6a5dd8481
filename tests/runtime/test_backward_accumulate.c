/* The gradient convention of kernels/backend.h: dense_backward ADDS to dw and
 * db (tested from non-zero starting gradients) and OVERWRITES din. */
#include <stdio.h>

#include "check.h"
#include "base/rng.h"
#include "kernels/backend.h"

int main(void) {
  const int64_t n = 9, in = 17, out = 11;
  kern_backend *be;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  char err[256];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) return 1;
  base_rng r;
  base_rng_seed(&r, 5, 6, 7);
  float x[9 * 17], wt[17 * 11], o[9 * 11], dout[9 * 11], dw[17 * 11], db[11], din[9 * 17];
  double ref_dw[17 * 11], ref_db[11], ref_din[9 * 17], dz[9 * 11];
  for (int64_t i = 0; i < n * in; i++) x[i] = base_rng_uniform(&r) - 0.5f;
  for (int64_t i = 0; i < in * out; i++) wt[i] = base_rng_uniform(&r) - 0.5f;
  for (int64_t i = 0; i < n * out; i++) {
    o[i] = base_rng_uniform(&r) < 0.4f ? 0.0f : base_rng_uniform(&r); /* post-ReLU outputs */
    dout[i] = base_rng_uniform(&r) - 0.5f;
    dz[i] = o[i] > 0 ? dout[i] : 0.0;
  }
  for (int64_t i = 0; i < in * out; i++) dw[i] = base_rng_uniform(&r) * 3.0f + 1.0f;
  for (int64_t j = 0; j < out; j++) db[j] = base_rng_uniform(&r) * 3.0f + 1.0f;
  for (int64_t i = 0; i < n * in; i++) din[i] = 1e9f; /* overwritten, never added to */
  for (int64_t p = 0; p < in; p++)
    for (int64_t j = 0; j < out; j++) {
      double s = dw[p * out + j];
      for (int64_t i = 0; i < n; i++) s += (double)x[i * in + p] * dz[i * out + j];
      ref_dw[p * out + j] = s;
    }
  for (int64_t j = 0; j < out; j++) {
    double s = db[j];
    for (int64_t i = 0; i < n; i++) s += dz[i * out + j];
    ref_db[j] = s;
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t p = 0; p < in; p++) {
      double s = 0.0;
      for (int64_t j = 0; j < out; j++) s += dz[i * out + j] * wt[p * out + j];
      ref_din[i * in + p] = s;
    }
  CHECK(kern_dense_backward(be, din, dw, db, dout, x, wt, o, n, in, out, KERN_ACT_RELU) == 0);
  check_close_f32("dw (accumulated)", dw, ref_dw, in * out, 1e-6, 1e-5);
  check_close_f32("db (accumulated)", db, ref_db, out, 1e-6, 1e-5);
  check_close_f32("din (overwritten)", din, ref_din, n * in, 1e-6, 1e-5);
  kern_backend_free(be);
  CHECK_DONE();
}
