/* Synthetic samples from SplitMix64 streams: integer arithmetic only, so the
 * same seed writes byte-identical files on every machine. */
#include "data/synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "base/rng.h"
#include "data/idx_writer.h"
#include "data/shards.h"

#define SYNTH_BLOBS 4
#define SYNTH_SHIFT 3   /* samples move up to this many pixels each way */
#define SYNTH_NOISE 64  /* uniform pixel noise in [-64, 64] */
#define SYNTH_MIX 200   /* the most of a second class blended in, /255 */
#define SYNTH_CHUNK 4096

/* Each class: a few soft round blobs, (1 - d^2/r^2)^2 inside radius r. */
static void synth_proto(uint8_t *out, uint64_t seed, int c) {
  base_rng r;
  int acc[DATA_SYNTH_PIXELS] = {0};
  base_rng_seed(&r, seed, DATA_RNG_STREAM_SYNTH, (1ull << 40) + (uint64_t)c);
  for (int b = 0; b < SYNTH_BLOBS; b++) {
    int cx = 5 + (int)base_rng_below(&r, 18), cy = 5 + (int)base_rng_below(&r, 18);
    int rad = 3 + (int)base_rng_below(&r, 4), r2 = rad * rad;
    int peak = 160 + (int)base_rng_below(&r, 96);
    for (int y = 0; y < DATA_SYNTH_SIDE; y++) {
      for (int x = 0; x < DATA_SYNTH_SIDE; x++) {
        int d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
        if (d2 >= r2) continue;
        int f = r2 - d2; /* peak * (f/r2)^2 */
        acc[y * DATA_SYNTH_SIDE + x] += peak * f / r2 * f / r2;
      }
    }
  }
  for (int i = 0; i < DATA_SYNTH_PIXELS; i++) out[i] = (uint8_t)(acc[i] > 255 ? 255 : acc[i]);
}

void data_synth_init(data_synth *s, uint64_t seed, data_synth_pattern pattern) {
  memset(s, 0, sizeof *s);
  s->seed = seed;
  s->pattern = pattern;
  for (int c = 0; c < DATA_CLASSES; c++) synth_proto(s->proto[c], seed, c);
}

static void synth_index_sample(int64_t i, int split, uint8_t *px, uint8_t *label) {
  uint64_t u = (uint64_t)i;
  for (int j = 0; j < 8; j++) px[j] = (uint8_t)(u >> (8 * j));
  for (int j = 8; j < DATA_SYNTH_PIXELS; j++) px[j] = (uint8_t)(u * 7 + (uint64_t)j * 13 + (uint64_t)split);
  *label = (uint8_t)(u % DATA_CLASSES);
}

void data_synth_sample(const data_synth *s, int split, int64_t i, uint8_t *px, uint8_t *label) {
  if (s->pattern == DATA_SYNTH_INDEX) {
    synth_index_sample(i, split, px, label);
    return;
  }
  base_rng r;
  base_rng_seed(&r, s->seed, DATA_RNG_STREAM_SYNTH, (uint64_t)i * 2 + (uint64_t)(split & 1));
  int c = (int)base_rng_below(&r, DATA_CLASSES);
  int other = (c + 1 + (int)base_rng_below(&r, DATA_CLASSES - 1)) % DATA_CLASSES;
  int dx = (int)base_rng_below(&r, 2 * SYNTH_SHIFT + 1) - SYNTH_SHIFT;
  int dy = (int)base_rng_below(&r, 2 * SYNTH_SHIFT + 1) - SYNTH_SHIFT;
  int gain = 120 + (int)base_rng_below(&r, 136); /* 120..255, /255 */
  int mix = (int)base_rng_below(&r, SYNTH_MIX + 1); /* a distractor class at 0..MIX/255 */
  const uint8_t *p = s->proto[c], *q = s->proto[other];
  uint64_t bits = 0;
  for (int y = 0; y < DATA_SYNTH_SIDE; y++) {
    for (int x = 0; x < DATA_SYNTH_SIDE; x++) {
      int j = y * DATA_SYNTH_SIDE + x, sx = x - dx, sy = y - dy;
      int v = q[j] * mix / 255;
      if (sx >= 0 && sx < DATA_SYNTH_SIDE && sy >= 0 && sy < DATA_SYNTH_SIDE) {
        v += p[sy * DATA_SYNTH_SIDE + sx] * gain / 255;
      }
      if ((j & 7) == 0) bits = base_rng_next(&r);
      v += (int)((bits & 0xff) * (2 * SYNTH_NOISE + 1) >> 8) - SYNTH_NOISE;
      bits >>= 8;
      px[j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
  *label = (uint8_t)c;
}

int64_t data_synth_index_of(const uint8_t *px) {
  uint64_t u = 0;
  for (int j = 0; j < 8; j++) u |= (uint64_t)px[j] << (8 * j);
  return (int64_t)u;
}

int64_t data_synth_index_of_f32(const float *x) {
  uint8_t b[8];
  for (int j = 0; j < 8; j++) b[j] = (uint8_t)(x[j] * 255.0f + 0.5f);
  return data_synth_index_of(b);
}

/* Samples [0, n) of a split, generated a chunk at a time into a sink. */
typedef int (*synth_sink)(void *ctx, const uint8_t *images, const uint8_t *labels, int64_t n,
                          char *err, size_t err_bytes);

static int synth_generate(const data_synth *s, int split, int64_t n, synth_sink sink, void *ctx,
                          char *err, size_t err_bytes) {
  uint8_t *images = malloc((size_t)SYNTH_CHUNK * DATA_SYNTH_PIXELS), *labels = malloc(SYNTH_CHUNK);
  int rc = -1;
  if (!images || !labels) {
    snprintf(err, err_bytes, "out of memory");
    goto out;
  }
  for (int64_t at = 0; at < n; at += SYNTH_CHUNK) {
    int64_t m = n - at < SYNTH_CHUNK ? n - at : SYNTH_CHUNK;
    for (int64_t i = 0; i < m; i++) {
      data_synth_sample(s, split, at + i, images + i * DATA_SYNTH_PIXELS, labels + i);
    }
    if (sink(ctx, images, labels, m, err, err_bytes) != 0) goto out;
    if (split == 0 && s->progress) s->progress(s->progress_ctx, at + m, n);
  }
  rc = 0;
out:
  free(images);
  free(labels);
  return rc;
}

typedef struct {
  data_idx_writer wi, wl;
} synth_pair;

static int synth_pair_sink(void *ctx, const uint8_t *images, const uint8_t *labels, int64_t n,
                           char *err, size_t err_bytes) {
  synth_pair *p = ctx;
  if (data_idx_writer_write(&p->wi, images, n * DATA_SYNTH_PIXELS, err, err_bytes) != 0) return -1;
  return data_idx_writer_write(&p->wl, labels, n, err, err_bytes);
}

static int synth_shards_sink(void *ctx, const uint8_t *images, const uint8_t *labels, int64_t n,
                             char *err, size_t err_bytes) {
  return data_shards_out_write(ctx, images, labels, n, err, err_bytes);
}

static int synth_write_pair(const char *dir, const char *split_name, const data_synth *s,
                            int split, int64_t n, int gzip_level, char *err, size_t err_bytes) {
  char pi[4300], pl[4300];
  const char *gz = gzip_level > 0 ? ".gz" : "";
  synth_pair p;
  snprintf(pi, sizeof pi, "%s/%s-images-idx3-ubyte%s", dir, split_name, gz);
  snprintf(pl, sizeof pl, "%s/%s-labels-idx1-ubyte%s", dir, split_name, gz);
  if (data_idx_writer_open(&p.wi, pi, DATA_IDX_MAGIC_IMAGES, n, DATA_SYNTH_SIDE, DATA_SYNTH_SIDE,
                           gzip_level, err, err_bytes) != 0) {
    return -1;
  }
  if (data_idx_writer_open(&p.wl, pl, DATA_IDX_MAGIC_LABELS, n, 0, 0, gzip_level, err,
                           err_bytes) != 0) {
    data_idx_writer_abort(&p.wi);
    return -1;
  }
  if (synth_generate(s, split, n, synth_pair_sink, &p, err, err_bytes) != 0 ||
      data_idx_writer_commit(&p.wi, err, err_bytes) != 0 ||
      data_idx_writer_commit(&p.wl, err, err_bytes) != 0) {
    data_idx_writer_abort(&p.wi);
    data_idx_writer_abort(&p.wl);
    return -1;
  }
  return 0;
}

int data_synth_write(const char *dir, const data_synth *s, int64_t train_count,
                     int64_t test_count, int64_t shards, int gzip_level, char *err,
                     size_t err_bytes) {
  if (train_count < 1 || test_count < 1 ||
      train_count > (int64_t)UINT32_MAX * (shards > 0 && shards <= DATA_SHARDS_MAX ? shards : 1) ||
      test_count > UINT32_MAX) {
    snprintf(err, err_bytes, "--count: %lld train and %lld test samples: each must be 1..2^32-1 "
             "per file", (long long)train_count, (long long)test_count);
    return -1;
  }
  if (fs_mkdirs(dir, err, err_bytes) != 0) return -1;
  if (synth_write_pair(dir, "t10k", s, 1, test_count, gzip_level, err, err_bytes) != 0) return -1;
  if (shards <= 0) return synth_write_pair(dir, "train", s, 0, train_count, gzip_level, err, err_bytes);
  data_shards_out *o = NULL;
  if (data_shards_out_init(&o, dir, train_count, shards, DATA_SYNTH_SIDE, DATA_SYNTH_SIDE,
                           gzip_level, err, err_bytes) != 0) {
    return -1;
  }
  int rc = synth_generate(s, 0, train_count, synth_shards_sink, o, err, err_bytes) != 0
               ? -1 : data_shards_out_finish(o, err, err_bytes);
  data_shards_out_free(o);
  return rc;
}
