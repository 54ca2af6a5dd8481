/* The loader's batches are bit for bit what the CPU backend's gather_u8 makes
 * from the same permutation and cursor (the path the GPU keeps), for every
 * rank: so the CPU can train from the prefetch queue without changing a bit
 * of the result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/loader.h"
#include "base/rng.h"
#include "data/synth.h"
#include "kernels/backend.h"

int main(void) {
  const int64_t n = 1000, B = 32, N = 3, steps = n / (N * B), px = DATA_SYNTH_PIXELS;
  const uint64_t seed = 77;
  char err[512];
  data_synth synth;
  data_synth_init(&synth, 9, DATA_SYNTH_CLASSES); /* noisy pixels: every byte value occurs */
  data_set ds = {.count = n, .rows = 28, .cols = 28};
  ds.images = malloc((size_t)(n * px));
  ds.labels = malloc((size_t)n);
  for (int64_t i = 0; i < n; i++) data_synth_sample(&synth, 0, i, ds.images + i * px, ds.labels + i);
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  kern_backend *be = NULL;
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  float *x = malloc((size_t)(B * px) * sizeof *x);
  int32_t *y = malloc((size_t)B * sizeof *y), *perm = malloc((size_t)n * sizeof *perm);
  int64_t compared = 0;
  for (int r = 0; r < N; r++) {
    data_loader_config c = {.mode = DATA_MODE_GLOBAL, .rank = r, .world = (int)N, .batch = B,
                            .steps_per_epoch = steps, .epochs = 2, .seed = seed, .prefetch = 4,
                            .shuffle_buffer = 1, .set = &ds};
    data_loader *l = NULL;
    CHECK(data_loader_init(&l, &c, err, sizeof err) == 0);
    if (!l) break;
    for (int64_t e = 0; e < 2; e++) {
      base_perm_epoch(perm, n, seed, e);
      int64_t cursor = r * B; /* as train.c starts it, advanced by the global batch */
      for (int64_t s = 0; s < steps; s++, cursor += N * B) {
        data_batch b;
        CHECK(data_loader_next(l, &b, NULL, err, sizeof err) == 0);
        CHECK(kern_gather_u8(be, x, y, ds.images, ds.labels, px, perm, &cursor, B) == 0);
        if (memcmp(x, b.x, (size_t)(B * px) * sizeof *x) || memcmp(y, b.y, (size_t)B * sizeof *y)) {
          fprintf(stderr, "rank %d epoch %lld step %lld: loader batch differs from gather_u8\n",
                  r, (long long)e, (long long)s);
          check_failures++;
        }
        compared++;
        data_loader_release(l);
      }
    }
    data_loader_free(l);
  }
  printf("%lld batches compared bit for bit\n", (long long)compared);
  CHECK_EQ_INT(compared, N * 2 * steps);
  free(x);
  free(y);
  free(perm);
  data_set_free(&ds);
  kern_backend_free(be);
  CHECK_DONE();
}
