/* Helpers shared by the GPU tests: the CPU backend is the oracle, device
 * outputs are poisoned (a NaN bit pattern) and followed by guard words, and
 * each comparison checks NaN/Inf first, then |got - ref| <= atol + rtol*|ref|,
 * printing the max error and its index whether it passes or not. */
#ifndef TFDIST_TESTS_GPU_CHECK_H
#define TFDIST_TESTS_GPU_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "tests/check.h"

#define GC_GUARD 64                /* guard words after every device buffer */
#define GC_POISON 0x7fbadbadu      /* a NaN no kernel computes: "never written" */
#define GC_SENTINEL 0xa5a5a5a5u    /* guard word: "never touched" */

typedef struct {
  uint64_t s;
} gc_rng;

static inline uint64_t gc_next(gc_rng *r) { /* splitmix64 */
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline float gc_uniform(gc_rng *r, float lo, float hi) {
  return lo + (hi - lo) * (float)((double)(gc_next(r) >> 11) * 0x1.0p-53);
}

static inline void gc_fill(gc_rng *r, float *x, int64_t n, float lo, float hi) {
  for (int64_t i = 0; i < n; i++) x[i] = gc_uniform(r, lo, hi);
}

static inline void *gc_xmalloc(size_t bytes) {
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "out of host memory\n");
    exit(1);
  }
  return p;
}

/* Exit 77 (skipped) without a usable GPU; otherwise the GPU backend with
 * the given GEMM choice (KERN_GEMM_AUTO: by shape, or TFDIST_GEMM). */
static inline kern_backend *gc_gpu_gemm_or_skip(kern_math math, int unfused, kern_gemm gemm) {
  char why[256] = "";
  if (kern_cuda_device_count(why, sizeof why) <= 0) {
    printf("SKIP: no GPU (%s)\n", why);
    exit(77);
  }
  kern_config kc;
  memset(&kc, 0, sizeof kc);
  kc.device = KERN_DEVICE_CUDA;
  kc.math = math;
  kc.unfused = unfused;
  kc.gemm = gemm;
  kern_backend *be = NULL;
  char err[512];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "FAIL: cuda backend: %s\n", err);
    exit(1);
  }
  return be;
}

static inline kern_backend *gc_gpu_or_skip(kern_math math, int unfused) {
  return gc_gpu_gemm_or_skip(math, unfused, KERN_GEMM_AUTO);
}

static inline kern_backend *gc_cpu(void) {
  kern_config kc;
  memset(&kc, 0, sizeof kc);
  kc.device = KERN_DEVICE_CPU;
  kc.threads = 1;
  kern_backend *be = NULL;
  char err[512];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "FAIL: cpu backend: %s\n", err);
    exit(1);
  }
  return be;
}

static inline void gc_die(kern_backend *be, const char *what) {
  fprintf(stderr, "FAIL: %s: %s\n", what, kern_error(be));
  exit(1);
}

/* A device buffer of `bytes` plus GC_GUARD sentinel words. With src it holds
 * a copy of src; without, every word is GC_POISON. */
static inline void *gc_dev(kern_backend *be, const void *src, size_t bytes) {
  size_t words = (bytes + 3) / 4, total = (words + GC_GUARD) * 4;
  uint32_t *host = gc_xmalloc(total);
  for (size_t i = 0; i < words; i++) host[i] = GC_POISON;
  if (src) memcpy(host, src, bytes);
  for (size_t i = words; i < words + GC_GUARD; i++) host[i] = GC_SENTINEL;
  void *dev = NULL;
  if (kern_mem_alloc(be, &dev, total) != 0) gc_die(be, "mem_alloc");
  if (kern_mem_upload(be, dev, host, total) != 0) gc_die(be, "mem_upload");
  free(host);
  return dev;
}

/* Downloads bytes (+ guard) into out; checks the guard words are untouched
 * and, when must_write, that no word still holds the poison. */
static inline int gc_fetch(kern_backend *be, const char *what, void *out, const void *dev,
                           size_t bytes, int must_write) {
  size_t words = (bytes + 3) / 4, total = (words + GC_GUARD) * 4;
  uint32_t *host = gc_xmalloc(total);
  if (kern_sync(be) != 0) gc_die(be, what);
  if (kern_mem_download(be, host, dev, total) != 0) gc_die(be, what);
  int ok = 1;
  for (size_t i = words; i < words + GC_GUARD; i++) {
    if (host[i] != GC_SENTINEL) {
      fprintf(stderr, "%s: guard word %zu after the end overwritten (0x%08x)\n", what, i - words,
              host[i]);
      check_failures++;
      ok = 0;
      break;
    }
  }
  for (size_t i = 0; must_write && i < words; i++) {
    if (host[i] == GC_POISON) {
      fprintf(stderr, "%s: element %zu of %zu never written\n", what, i, words);
      check_failures++;
      ok = 0;
      break;
    }
  }
  memcpy(out, host, bytes);
  free(host);
  return ok;
}

/* NaN/Inf first, then |got - ref| <= atol_rel*max|ref| + rtol*|ref|. The
 * absolute part scales with the output's magnitude: GEMM outputs that cancel
 * to near zero carry the rounding of the large terms they came from. */
static inline int gc_close(const char *what, const float *got, const float *ref, int64_t n,
                           double rtol, double atol_rel) {
  double scale = 0.0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(got[i]) || !isfinite(ref[i])) {
      fprintf(stderr, "%s: non-finite at %lld: got %g ref %g\n", what, (long long)i,
              (double)got[i], (double)ref[i]);
      check_failures++;
      return 0;
    }
    if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
  }
  const double atol = atol_rel * (scale > 0.0 ? scale : 1.0);
  double max_err = 0.0, worst_excess = 0.0;
  int64_t max_at = 0, worst = -1;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)ref[i]), tol = atol + rtol * fabs((double)ref[i]);
    if (d > max_err) {
      max_err = d;
      max_at = i;
    }
    if (d > tol && d - tol > worst_excess) {
      worst_excess = d - tol;
      worst = i;
    }
  }
  printf("  %-44s n=%-8lld max|err| %.3g at %lld (atol %.2g rtol %.2g)%s\n", what, (long long)n,
         max_err, (long long)max_at, atol, rtol, worst >= 0 ? "  FAIL" : "");
  if (worst >= 0) {
    fprintf(stderr, "%s: worst at %lld: got %.9g ref %.9g\n", what, (long long)worst,
            (double)got[worst], (double)ref[worst]);
    check_failures++;
    return 0;
  }
  return 1;
}

/* Bit-for-bit equality, for ops whose arithmetic mirrors the CPU exactly. */
static inline int gc_exact(const char *what, const void *got, const void *ref, size_t bytes) {
  const unsigned char *g = got, *r = ref;
  for (size_t i = 0; i < bytes; i++) {
    if (g[i] != r[i]) {
      fprintf(stderr, "%s: first difference at byte %zu of %zu\n", what, i, bytes);
      printf("  %-44s bytes=%-6zu DIFFERS at byte %zu  FAIL\n", what, bytes, i);
      check_failures++;
      return 0;
    }
  }
  printf("  %-44s bytes=%-6zu bit-exact\n", what, bytes);
  return 1;
}

#endif
