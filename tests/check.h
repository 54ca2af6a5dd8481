/* Test assertions shared by the C tests. Every failure prints file:line and
 * the values; a test's exit code is its verdict (77 = skipped). */
#ifndef TFDIST_TESTS_CHECK_H
#define TFDIST_TESTS_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures;

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);              \
      check_failures++;                                                                      \
    }                                                                                        \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                                   \
  do {                                                                                       \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);                          \
    if (check_a_ != check_b_) {                                                              \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
              check_a_, check_b_);                                                           \
      check_failures++;                                                                      \
    }                                                                                        \
  } while (0)

/* NaN/Inf first, then |got - ref| <= atol + rtol*|ref| elementwise; reports
 * the worst element and its index. Returns 1 when all pass. */
static inline int check_close_f64(const char *what, const double *got, const double *ref,
                                  int64_t n, double atol, double rtol) {
  int64_t worst = -1;
  double worst_excess = 0.0, max_abs = 0.0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(got[i]) || !isfinite(ref[i])) {
      fprintf(stderr, "%s: non-finite at %lld: got %g ref %g\n", what, (long long)i, got[i], ref[i]);
      check_failures++;
      return 0;
    }
    double d = fabs(got[i] - ref[i]), tol = atol + rtol * fabs(ref[i]);
    if (d > max_abs) max_abs = d;
    if (d - tol > worst_excess) {
      worst_excess = d - tol;
      worst = i;
    }
  }
  if (worst >= 0) {
    fprintf(stderr, "%s: max |err| %.3g; worst at %lld: got %.9g ref %.9g (atol %g rtol %g)\n",
            what, max_abs, (long long)worst, got[worst], ref[worst], atol, rtol);
    check_failures++;
    return 0;
  }
  return 1;
}

static inline int check_close_f32(const char *what, const float *got, const double *ref,
                                  int64_t n, double atol, double rtol) {
  double *g = malloc((size_t)(n ? n : 1) * sizeof *g);
  if (!g) return 0;
  for (int64_t i = 0; i < n; i++) g[i] = got[i];
  int ok = check_close_f64(what, g, ref, n, atol, rtol);
  free(g);
  return ok;
}

#define CHECK_DONE()                                                                         \
  do {                                                                                       \
    if (check_failures) {                                                                    \
      fprintf(stderr, "FAILED: %d check(s)\n", check_failures);                              \
      return 1;                                                                              \
    }                                                                                        \
    printf("ok\n");                                                                          \
    return 0;                                                                                \
  } while (0)

#endif
