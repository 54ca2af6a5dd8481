/* Bounded memory: streaming a synthetic set of more than 2 GiB (raw shards)
 * through the prefetching loader keeps this process's peak RSS under 256 MB,
 * while every sample still arrives exactly once with the right pixels.
 * TFDIST_RSS_TEST_BYTES overrides the size (for a quick look by hand). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "check.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/synth.h"

#define RSS_LIMIT_MB 256.0

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

int main(void) {
  char dir[] = "/tmp/tfdist-rss-XXXXXX", err[1024], path[256];
  if (!mkdtemp(dir)) return 1;
  const char *env = getenv("TFDIST_RSS_TEST_BYTES");
  const double bytes = env ? atof(env) : 2.0 * 1024 * 1024 * 1024 + 16e6;
  const int64_t n = (int64_t)(bytes / (DATA_SYNTH_PIXELS + 1)) + 1, B = 256;
  data_synth synth;
  data_synth_init(&synth, 1, DATA_SYNTH_INDEX);
  double t0 = now_s();
  if (data_synth_write(dir, &synth, n, 10, 8, 0, err, sizeof err) != 0) {
    fprintf(stderr, "synth: %s\n", err);
    return 1;
  }
  double t_write = now_s() - t0;
  printf("wrote %lld samples (%.2f GB) in 8 raw shards in %.1f s; peak RSS so far %.1f MB\n",
         (long long)n, (double)n * (DATA_SYNTH_PIXELS + 1) / 1e9, t_write, peak_rss_mb());
  data_shards sh;
  snprintf(path, sizeof path, "%s/%s", dir, DATA_SHARDS_INDEX_NAME);
  CHECK(data_shards_load(&sh, path, err, sizeof err) == 0);
  data_loader_config c = {.mode = DATA_MODE_STREAM, .rank = 0, .world = 1, .batch = B,
                          .epochs = 1, .seed = 9, .prefetch = 4, .shuffle_buffer = 10000,
                          .check_crc = 1, .shards = &sh};
  c.steps_per_epoch = data_loader_max_steps(&c);
  uint8_t *seen = calloc((size_t)(n + 7) / 8, 1); /* one bit per sample: 1/6280 of the data */
  data_loader *l = NULL;
  int64_t got = 0;
  double waited = 0;
  t0 = now_s();
  CHECK(data_loader_init(&l, &c, err, sizeof err) == 0);
  for (int64_t s = 0; l && s < c.steps_per_epoch; s++) {
    data_batch b;
    if (data_loader_next(l, &b, &waited, err, sizeof err) != 0) {
      fprintf(stderr, "step %lld: %s\n", (long long)s, err);
      check_failures++;
      break;
    }
    for (int64_t i = 0; i < b.n; i++) {
      int64_t id = b.ids[i];
      const float *x = b.x + i * DATA_SYNTH_PIXELS;
      if (id < 0 || id >= n || (seen[id >> 3] >> (id & 7) & 1) ||
          data_synth_index_of_f32(x) != id || b.y[i] != id % DATA_CLASSES ||
          x[100] != (float)(uint8_t)(id * 7 + 100 * 13) * (1.0f / 255.0f)) {
        fprintf(stderr, "step %lld row %lld: sample %lld repeated or wrong\n", (long long)s,
                (long long)i, (long long)id);
        check_failures++;
        s = c.steps_per_epoch;
        break;
      }
      seen[id >> 3] |= (uint8_t)(1u << (id & 7));
      got++;
    }
    data_loader_release(l);
  }
  data_loader_free(l);
  double t_read = now_s() - t0, rss = peak_rss_mb();
  printf("streamed %lld samples (%.2f GB of float batches) in %.1f s (%.0f MB/s of idx), "
         "waited %.1f s; peak RSS %.1f MB (limit %.0f)\n", (long long)got,
         (double)got * DATA_SYNTH_PIXELS * 4 / 1e9, t_read,
         (double)got * (DATA_SYNTH_PIXELS + 1) / 1e6 / t_read, waited, rss, RSS_LIMIT_MB);
  CHECK_EQ_INT(got, c.steps_per_epoch * B);
  CHECK(n - got < B); /* only the remainder is dropped */
  CHECK(rss < RSS_LIMIT_MB);
  data_shards_free(&sh);
  free(seen);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  CHECK_DONE();
}
