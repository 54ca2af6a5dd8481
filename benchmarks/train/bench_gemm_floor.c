/* The BLAS-only floor of one CPU training step: the eight sgemm calls the
 * step makes (3 forward, 3 weight gradients, 2 input gradients; layer 1
 * needs no input gradient), timed alone at the same shapes and layouts.
 * Prints the median step-GEMM time and the samples/s it would allow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/rng.h"
#include "tfdist_config.h"
#include TFDIST_CBLAS_H

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static float *rnd(base_rng *r, long n) {
  float *p = aligned_alloc(64, ((size_t)n * 4 + 63) / 64 * 64);
  for (long i = 0; i < n; i++) p[i] = base_rng_uniform(r) - 0.5f;
  return p;
}

int main(int argc, char **argv) {
  int B = 50, reps = 2000;
  int d[4] = {784, 300, 100, 10};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-b") && i + 1 < argc) B = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc) reps = atoi(argv[++i]);
    else {
      fprintf(stderr, "bench_gemm_floor: unknown flag %s (use -b BATCH -n REPS)\n", argv[i]);
      return 2;
    }
  }
#if TFDIST_BLAS_IS_OPENBLAS
  openblas_set_num_threads(1);
#endif
  base_rng r;
  base_rng_seed(&r, 1, 9, 0);
  float *act[4], *dact[4], *w[3], *dw[3];
  for (int k = 0; k < 4; k++) {
    act[k] = rnd(&r, (long)B * d[k]);
    dact[k] = rnd(&r, (long)B * d[k]);
  }
  for (int k = 0; k < 3; k++) {
    w[k] = rnd(&r, (long)d[k] * d[k + 1]);
    dw[k] = rnd(&r, (long)d[k] * d[k + 1]);
  }
  double *t = malloc(sizeof(double) * (size_t)reps);
  for (int it = -200; it < reps; it++) {
    double t0 = now();
    for (int k = 0; k < 3; k++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, d[k + 1], d[k], 1.0f, act[k], d[k],
                  w[k], d[k + 1], 1.0f, act[k + 1], d[k + 1]);
    for (int k = 2; k >= 0; k--) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d[k], d[k + 1], B, 1.0f, act[k], d[k],
                  dact[k + 1], d[k + 1], 1.0f, dw[k], d[k + 1]);
      if (k > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, d[k], d[k + 1], 1.0f, dact[k + 1],
                    d[k + 1], w[k], d[k + 1], 0.0f, dact[k], d[k]);
    }
    if (it >= 0) t[it] = now() - t0;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp);
  double med = t[reps / 2];
  double flop = 0;
  for (int k = 0; k < 3; k++) flop += 2.0 * B * d[k] * d[k + 1] * (k > 0 ? 3 : 2);
  printf("gemm_step_us %.2f\ngemm_gflops %.1f\nfloor_samples_per_s %.0f\n", med * 1e6,
         flop / med * 1e-9, B / med);
  return 0;
}
