/* The CPU back end's thread team (kernels/cpu_team.c): dense forward and
 * backward split in column slices over 1..4 threads, against a float64
 * reference written from the math; backward from non-zero starting
 * gradients (it accumulates), din poisoned (it overwrites); a guard float
 * after every output must stay untouched; the same threads twice give the
 * same bits; the split zeroing and update match the plain loops exactly. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "base/rng.h"
#include "kernels/backend.h"

#define GUARD 12345.0f

typedef struct { int64_t n, in, out; } shape;

static float *fill(kern_backend *be, base_rng *r, int64_t elems, float lo, float hi) {
  float *p = NULL;
  if (kern_mem_alloc_f32(be, &p, elems + 1) != 0) return NULL;
  for (int64_t i = 0; i < elems; i++) p[i] = lo + (hi - lo) * base_rng_uniform(r);
  p[elems] = GUARD;
  return p;
}

static void guard(const char *what, const float *p, int64_t elems, int threads) {
  if (p[elems] != GUARD) {
    fprintf(stderr, "%s, %d threads: guard after element %lld overwritten (%g)\n", what, threads,
            (long long)elems, p[elems]);
    check_failures++;
  }
}

/* One shape, one activation, one thread count; fills bits[] with the outputs. */
static void run_case(int threads, shape s, kern_act act, float *bits_out, int64_t *bits_elems) {
  kern_backend *be = NULL;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = threads};
  char err[256];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "backend: %s\n", err);
    check_failures++;
    return;
  }
  CHECK_EQ_INT(kern_config_of(be)->threads, threads);
  base_rng r;
  base_rng_seed(&r, (uint64_t)(s.n * 1000003 + s.in * 1009 + s.out), 3, (uint64_t)act);
  const int64_t n = s.n, in = s.in, out = s.out;
  float *x = fill(be, &r, n * in, -1.0f, 1.0f), *w = fill(be, &r, in * out, -0.5f, 0.5f);
  float *b = fill(be, &r, out, -0.5f, 0.5f), *o = fill(be, &r, n * out, 0.0f, 0.0f);
  float *dout = fill(be, &r, n * out, -1.0f, 1.0f), *dw = fill(be, &r, in * out, 1.0f, 3.0f);
  float *db = fill(be, &r, out, 1.0f, 3.0f), *din = fill(be, &r, n * in, 1e9f, 1e9f);
  double *ref_o = calloc((size_t)(n * out), sizeof(double));
  double *ref_dw = calloc((size_t)(in * out), sizeof(double));
  double *ref_db = calloc((size_t)out, sizeof(double));
  double *ref_din = calloc((size_t)(n * in), sizeof(double));
  double *dz = calloc((size_t)(n * out), sizeof(double));
  char what[160];
  snprintf(what, sizeof what, "n=%lld in=%lld out=%lld act=%d threads=%d", (long long)n,
           (long long)in, (long long)out, (int)act, threads);
  /* forward, float64 */
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < out; j++) {
      double z = b[j];
      for (int64_t p = 0; p < in; p++) z += (double)x[i * in + p] * w[p * out + j];
      ref_o[i * out + j] = act == KERN_ACT_RELU && z < 0 ? 0.0 : z;
    }
  CHECK(kern_dense_forward(be, o, x, w, b, n, in, out, act) == 0);
  char name[200];
  /* float32 sums of up to 784 terms of size <= 0.5: 1e-5 absolute covers their rounding */
  snprintf(name, sizeof name, "forward %s", what);
  check_close_f32(name, o, ref_o, n * out, 1e-5, 1e-5);
  guard(name, o, n * out, threads);
  /* backward from the float32 outputs, as training runs it */
  for (int64_t i = 0; i < n * out; i++) dz[i] = act == KERN_ACT_RELU && !(o[i] > 0.0f) ? 0.0 : dout[i];
  for (int64_t p = 0; p < in; p++)
    for (int64_t j = 0; j < out; j++) {
      double g = dw[p * out + j];
      for (int64_t i = 0; i < n; i++) g += (double)x[i * in + p] * dz[i * out + j];
      ref_dw[p * out + j] = g;
    }
  for (int64_t j = 0; j < out; j++) {
    double g = db[j];
    for (int64_t i = 0; i < n; i++) g += dz[i * out + j];
    ref_db[j] = g;
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t p = 0; p < in; p++) {
      double g = 0.0;
      for (int64_t j = 0; j < out; j++) g += dz[i * out + j] * w[p * out + j];
      ref_din[i * in + p] = g;
    }
  CHECK(kern_dense_backward(be, din, dw, db, dout, x, w, o, n, in, out, act) == 0);
  snprintf(name, sizeof name, "backward dw (accumulated) %s", what);
  check_close_f32(name, dw, ref_dw, in * out, 1e-5, 1e-5);
  guard(name, dw, in * out, threads);
  snprintf(name, sizeof name, "backward db (accumulated) %s", what);
  check_close_f32(name, db, ref_db, out, 1e-5, 1e-5);
  guard(name, db, out, threads);
  snprintf(name, sizeof name, "backward din (overwritten) %s", what);
  check_close_f32(name, din, ref_din, n * in, 1e-5, 1e-5);
  guard(name, din, n * in, threads);
  if (bits_out) {
    int64_t k = 0;
    memcpy(bits_out + k, o, (size_t)(n * out) * sizeof(float)), k += n * out;
    memcpy(bits_out + k, dw, (size_t)(in * out) * sizeof(float)), k += in * out;
    memcpy(bits_out + k, db, (size_t)out * sizeof(float)), k += out;
    memcpy(bits_out + k, din, (size_t)(n * in) * sizeof(float)), k += n * in;
    *bits_elems = k;
  }
  float *bufs[] = {x, w, b, o, dout, dw, db, din};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kern_mem_free(be, bufs[i]);
  free(ref_o), free(ref_dw), free(ref_db), free(ref_din), free(dz);
  kern_backend_free(be);
}

/* Zeroing and the update, split above 16k elements: the same bits as one thread. */
static void elementwise(int threads) {
  const int64_t elems = 266610 + 3;
  kern_backend *be1 = NULL, *ben = NULL;
  kern_config k1 = {.device = KERN_DEVICE_CPU, .threads = 1};
  kern_config kn = {.device = KERN_DEVICE_CPU, .threads = threads};
  char err[256];
  if (kern_backend_init(&be1, &k1, err, sizeof err) != 0 ||
      kern_backend_init(&ben, &kn, err, sizeof err) != 0) {
    fprintf(stderr, "backend: %s\n", err);
    check_failures++;
    return;
  }
  base_rng r;
  base_rng_seed(&r, 11, 12, 13);
  float *p[2], *g, *st[2];
  g = fill(be1, &r, elems, -1.0f, 1.0f);
  p[0] = fill(be1, &r, elems, -1.0f, 1.0f);
  st[0] = fill(be1, &r, elems, -1.0f, 1.0f);
  p[1] = fill(be1, &r, elems, 0.0f, 0.0f);
  st[1] = fill(be1, &r, elems, 0.0f, 0.0f);
  memcpy(p[1], p[0], (size_t)elems * sizeof(float));
  memcpy(st[1], st[0], (size_t)elems * sizeof(float));
  const kern_opt opts[2] = {{.kind = KERN_OPT_SGD, .lr = 0.01f, .step = 1},
                            {.kind = KERN_OPT_MOMENTUM, .lr = 0.01f, .momentum = 0.9f, .step = 1}};
  for (int k = 0; k < 2; k++) {
    CHECK(kern_opt_update(be1, p[0], g, st[0], elems, &opts[k]) == 0);
    CHECK(kern_opt_update(ben, p[1], g, st[1], elems, &opts[k]) == 0);
  }
  if (memcmp(p[0], p[1], (size_t)elems * sizeof(float)) != 0 ||
      memcmp(st[0], st[1], (size_t)elems * sizeof(float)) != 0) {
    fprintf(stderr, "opt_update with %d threads: not the bits of 1 thread\n", threads);
    check_failures++;
  }
  guard("opt_update params", p[1], elems, threads);
  CHECK(kern_mem_zero_f32(ben, p[1], elems) == 0);
  for (int64_t i = 0; i < elems; i++) {
    if (p[1][i] != 0.0f) {
      fprintf(stderr, "mem_zero with %d threads: element %lld is %g\n", threads, (long long)i,
              p[1][i]);
      check_failures++;
      break;
    }
  }
  guard("mem_zero", p[1], elems, threads);
  float *bufs[] = {g, p[0], p[1], st[0], st[1]};
  for (size_t i = 0; i < 5; i++) kern_mem_free(be1, bufs[i]);
  kern_backend_free(be1);
  kern_backend_free(ben);
}

int main(void) {
  /* odd sizes, layers narrower than the team, and the model's own layers */
  const shape shapes[] = {{13, 37, 29}, {1, 5, 3}, {7, 3, 1}, {50, 784, 300},
                          {50, 300, 100}, {50, 100, 10}, {33, 65, 129}};
  const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
  for (int t = 1; t <= 4; t++) {
    for (int si = 0; si < nshapes; si++) {
      for (int a = 0; a < 2; a++) {
        const shape s = shapes[si];
        const int64_t cap = s.n * s.out + s.in * s.out + s.out + s.n * s.in;
        float *first = malloc((size_t)cap * sizeof(float)), *again = malloc((size_t)cap * sizeof(float));
        int64_t e1 = 0, e2 = 0;
        const kern_act act = a ? KERN_ACT_RELU : KERN_ACT_NONE;
        run_case(t, s, act, first, &e1);
        run_case(t, s, act, again, &e2);
        if (e1 != e2 || memcmp(first, again, (size_t)e1 * sizeof(float)) != 0) {
          fprintf(stderr, "n=%lld in=%lld out=%lld act=%d: %d threads gave other bits on a repeat\n",
                  (long long)s.n, (long long)s.in, (long long)s.out, a, t);
          check_failures++;
        }
        free(first);
        free(again);
      }
    }
    elementwise(t);
  }
  CHECK_DONE();
}
