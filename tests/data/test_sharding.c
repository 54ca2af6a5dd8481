/* N ranks simulated in one process, N = 1..8, on synthetic data whose pixels
 * encode the sample index, with batch sizes that do not divide the set. In
 * both modes: each rank gets exactly its slice, the union over ranks is the
 * epoch (less the dropped remainder), nothing is duplicated, and every run
 * gives the same order. Every float and label is checked against the bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/loader.h"
#include "base/rng.h"
#include "data/shards.h"
#include "data/synth.h"

#define EPOCHS 2
#define SEED 1234

static data_synth synth;

/* x must be exactly the bytes of sample id, /255 as the gather does it. */
static void check_batch(const data_batch *b, int64_t n_total) {
  uint8_t px[DATA_SYNTH_PIXELS], label;
  float want[DATA_SYNTH_PIXELS];
  for (int64_t i = 0; i < b->n; i++) {
    int64_t id = b->ids[i];
    if (id < 0 || id >= n_total) {
      CHECK(id >= 0 && id < n_total);
      return;
    }
    data_synth_sample(&synth, 0, id, px, &label);
    data_pixels_to_f32(want, px, DATA_SYNTH_PIXELS);
    if (memcmp(want, b->x + i * DATA_SYNTH_PIXELS, sizeof want) != 0 || b->y[i] != label ||
        data_synth_index_of_f32(b->x + i * DATA_SYNTH_PIXELS) != id) {
      fprintf(stderr, "epoch %lld step %lld row %lld: pixels/label do not match sample %lld\n",
              (long long)b->epoch, (long long)b->step, (long long)i, (long long)id);
      check_failures++;
      return;
    }
  }
}

/* One rank's ids: [epoch - first_epoch][step][row]; NULL on a loader error. */
static int64_t *run_rank(data_loader_config c, int64_t n_total) {
  char err[1024];
  data_loader *l = NULL;
  if (data_loader_init(&l, &c, err, sizeof err) != 0) {
    fprintf(stderr, "loader init: %s\n", err);
    check_failures++;
    return NULL;
  }
  const int64_t per_epoch = c.steps_per_epoch * c.batch;
  int64_t *ids = malloc((size_t)((c.epochs - c.first_epoch) * per_epoch) * sizeof *ids);
  for (int64_t e = c.first_epoch; e < c.epochs; e++) {
    for (int64_t s = e == c.first_epoch ? c.first_step : 0; s < c.steps_per_epoch; s++) {
      data_batch b;
      if (data_loader_next(l, &b, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "loader next: %s\n", err);
        check_failures++;
        free(ids);
        data_loader_free(l);
        return NULL;
      }
      CHECK(b.epoch == e && b.step == s && b.n == c.batch);
      check_batch(&b, n_total);
      memcpy(ids + (e - c.first_epoch) * per_epoch + s * c.batch, b.ids,
             (size_t)c.batch * sizeof *ids);
      data_loader_release(l);
    }
  }
  data_batch extra;
  CHECK(data_loader_next(l, &extra, NULL, err, sizeof err) != 0); /* nothing past the last epoch */
  data_loader_free(l);
  return ids;
}

static void test_global(void) {
  const int64_t n = 997; /* prime: no batch size divides it */
  data_set ds = {.count = n, .rows = 28, .cols = 28};
  ds.images = malloc((size_t)n * DATA_SYNTH_PIXELS);
  ds.labels = malloc((size_t)n);
  for (int64_t i = 0; i < n; i++) {
    data_synth_sample(&synth, 0, i, ds.images + i * DATA_SYNTH_PIXELS, ds.labels + i);
  }
  int32_t *perm = malloc((size_t)n * sizeof *perm);
  uint8_t *seen = malloc((size_t)n);
  const int64_t batches[] = {7, 16, 33};
  int configs = 0;
  for (int N = 1; N <= 8; N++) {
    for (int bi = 0; bi < 3; bi++) {
      const int64_t B = batches[bi], steps = n / (N * B);
      if (steps < 1) continue;
      configs++;
      int64_t *ids[8];
      for (int r = 0; r < N; r++) {
        data_loader_config c = {.mode = DATA_MODE_GLOBAL, .rank = r, .world = N, .batch = B,
                                .steps_per_epoch = steps, .epochs = EPOCHS, .seed = SEED,
                                .prefetch = 1 + (r + bi) % 3, .shuffle_buffer = 1, .set = &ds};
        ids[r] = run_rank(c, n);
        if (!ids[r]) return;
      }
      for (int e = 0; e < EPOCHS; e++) {
        base_perm_epoch(perm, n, SEED, e);
        memset(seen, 0, (size_t)n);
        for (int r = 0; r < N; r++) {
          for (int64_t s = 0; s < steps; s++) {
            for (int64_t i = 0; i < B; i++) {
              int64_t got = ids[r][e * steps * B + s * B + i];
              int64_t want = perm[s * N * B + r * B + i]; /* rows [rB, (r+1)B) of global batch s */
              if (got != want) {
                fprintf(stderr, "global N=%d B=%lld rank %d epoch %d step %lld row %lld: got %lld "
                        "want %lld\n", N, (long long)B, r, e, (long long)s, (long long)i,
                        (long long)got, (long long)want);
                check_failures++;
                goto next;
              }
              CHECK(seen[got] == 0); /* no duplicates across ranks */
              seen[got] = 1;
            }
          }
        }
        int64_t covered = 0;
        for (int64_t i = 0; i < steps * N * B; i++) covered += seen[perm[i]];
        CHECK_EQ_INT(covered, steps * N * B); /* the union is the epoch less the remainder */
      }
      { /* the same order on every run; a fresh order every epoch */
        data_loader_config c = {.mode = DATA_MODE_GLOBAL, .rank = N - 1, .world = N, .batch = B,
                                .steps_per_epoch = steps, .epochs = EPOCHS, .seed = SEED,
                                .prefetch = 2, .shuffle_buffer = 1, .set = &ds};
        int64_t *again = run_rank(c, n);
        CHECK(again && !memcmp(again, ids[N - 1], (size_t)(EPOCHS * steps * B) * sizeof *again));
        CHECK(memcmp(ids[N - 1], ids[N - 1] + steps * B, (size_t)(steps * B) * sizeof *again) != 0);
        /* a resumed loader (epoch 1, after step 1) continues exactly where the run was */
        c.first_epoch = 1;
        c.first_step = steps > 1 ? 1 : 0;
        int64_t *resumed = run_rank(c, n);
        int64_t skip = c.first_step * B;
        CHECK(resumed && !memcmp(resumed + skip, ids[N - 1] + steps * B + skip,
                                 (size_t)(steps * B - skip) * sizeof *resumed));
        free(again);
        free(resumed);
      }
    next:
      for (int r = 0; r < N; r++) free(ids[r]);
    }
  }
  printf("global: %d (ranks, batch) configurations, %d epochs each\n", configs, EPOCHS);
  free(perm);
  free(seen);
  data_set_free(&ds);
}

/* Rank r owns shards r, r+N, ...; which rank owns sample id? */
static int owner_of(const data_shards *s, int64_t id, int N) {
  for (int64_t k = 0; k < s->count; k++) {
    if (id >= s->shards[k].first && id < s->shards[k].first + s->shards[k].count) return (int)(k % N);
  }
  return -1;
}

static void test_stream_config(const data_shards *sh, int N, int64_t B, int64_t buffer) {
  const int64_t n = sh->samples;
  data_loader_config base = {.mode = DATA_MODE_STREAM, .world = N, .batch = B, .epochs = EPOCHS,
                             .seed = SEED, .prefetch = 3, .shuffle_buffer = buffer,
                             .check_crc = 1, .shards = sh};
  const int64_t steps = data_loader_max_steps(&base);
  if (steps < 1) return;
  base.steps_per_epoch = steps;
  int64_t *ids[8];
  uint8_t *seen = malloc((size_t)n);
  for (int r = 0; r < N; r++) {
    base.rank = r;
    ids[r] = run_rank(base, n);
    if (!ids[r]) return;
  }
  for (int e = 0; e < EPOCHS; e++) {
    memset(seen, 0, (size_t)n);
    int64_t total = 0;
    for (int r = 0; r < N; r++) {
      for (int64_t i = 0; i < steps * B; i++) {
        int64_t id = ids[r][e * steps * B + i];
        if (owner_of(sh, id, N) != r || seen[id]) {
          fprintf(stderr, "stream K=%lld N=%d B=%lld buffer %lld rank %d epoch %d: sample %lld "
                  "%s\n", (long long)sh->count, N, (long long)B, (long long)buffer, r, e,
                  (long long)id, seen[id] ? "seen twice" : "is not from this rank's shards");
          check_failures++;
          goto out;
        }
        seen[id] = 1;
        total++;
      }
    }
    CHECK_EQ_INT(total, N * steps * B); /* the rest is the dropped remainder */
  }
  if (buffer == 1) { /* no shuffling: each shard is read in order */
    for (int64_t i = 1; i < steps * B; i++) {
      int64_t a = ids[0][i - 1], b = ids[0][i];
      int starts_shard = 0;
      for (int64_t k = 0; k < sh->count; k++) starts_shard |= sh->shards[k].first == b;
      CHECK(b == a + 1 || starts_shard);
    }
  } else if (steps * B > 20) { /* shuffled, and differently in the next epoch */
    int inversions = 0;
    for (int64_t i = 1; i < steps * B; i++) inversions += ids[0][i] < ids[0][i - 1];
    CHECK(inversions > 0);
    CHECK(memcmp(ids[0], ids[0] + steps * B, (size_t)(steps * B) * sizeof *ids[0]) != 0);
  }
  base.rank = N - 1;
  int64_t *again = run_rank(base, n);
  CHECK(again && !memcmp(again, ids[N - 1], (size_t)(EPOCHS * steps * B) * sizeof *again));
  free(again);
out:
  for (int r = 0; r < N; r++) free(ids[r]);
  free(seen);
}

static void test_stream(const char *dir) {
  char err[1024], path[512];
  struct { int64_t k; int gzip; } sets[] = {{8, 0}, {13, 0}, {9, 1}};
  int configs = 0;
  for (int si = 0; si < 3; si++) {
    char sub[300];
    snprintf(sub, sizeof sub, "%s/k%lld", dir, (long long)sets[si].k);
    if (data_synth_write(sub, &synth, 1003, 10, sets[si].k, sets[si].gzip, err, sizeof err) != 0) {
      fprintf(stderr, "synth: %s\n", err);
      check_failures++;
      return;
    }
    data_shards sh;
    snprintf(path, sizeof path, "%s/%s", sub, DATA_SHARDS_INDEX_NAME);
    if (data_shards_load(&sh, path, err, sizeof err) != 0) {
      fprintf(stderr, "index: %s\n", err);
      check_failures++;
      return;
    }
    const int64_t batches[] = {5, 16}, buffers[] = {1, 64, 100000};
    for (int N = 1; N <= 8 && N <= sh.count; N++) {
      for (int bi = 0; bi < 2; bi++) {
        for (int fi = 0; fi < 3; fi++) {
          if (sets[si].gzip && (fi != 1 || N % 3 != 1)) continue; /* gzip: a few suffice */
          test_stream_config(&sh, N, batches[bi], buffers[fi]);
          configs++;
        }
      }
    }
    data_shards_free(&sh);
  }
  printf("stream: %d (shards, ranks, batch, buffer) configurations, %d epochs each\n", configs,
         EPOCHS);
}

int main(void) {
  char dir[] = "/tmp/tfdist-sharding-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  data_synth_init(&synth, 5, DATA_SYNTH_INDEX);
  test_global();
  test_stream(dir);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  CHECK_DONE();
}
