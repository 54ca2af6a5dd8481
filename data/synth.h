/* Deterministic synthetic idx data sets: learnable class patterns with noise
 * (for training runs and large-scale streaming benchmarks), or samples whose
 * pixels encode their own index (for exact sharding tests). */
#ifndef TFDIST_DATA_SYNTH_H
#define TFDIST_DATA_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "data/idx.h"

#define DATA_SYNTH_SIDE 28
#define DATA_SYNTH_PIXELS (DATA_SYNTH_SIDE * DATA_SYNTH_SIDE)

typedef enum {
  DATA_SYNTH_CLASSES = 0, /* a blob prototype per class, shifted, scaled, noisy */
  DATA_SYNTH_INDEX = 1    /* pixels 0..7 hold the sample index (little-endian) */
} data_synth_pattern;

typedef struct {
  uint64_t seed;
  data_synth_pattern pattern;
  uint8_t proto[DATA_CLASSES][DATA_SYNTH_PIXELS];
  /* optional: called after each chunk of the train split with the samples
   * written so far, so a long write can show progress */
  void (*progress)(void *ctx, int64_t done, int64_t total);
  void *progress_ctx;
} data_synth;

void data_synth_init(data_synth *s, uint64_t seed, data_synth_pattern pattern);
/* Sample i of split 0 (train) or 1 (test): a function of (seed, split, i)
 * alone, so any range can be generated anywhere, in any order. */
void data_synth_sample(const data_synth *s, int split, int64_t i, uint8_t *pixels,
                       uint8_t *label);
/* DATA_SYNTH_INDEX: the index stored in a sample's pixels, from bytes or
 * from the loader's floats (x*255 rounds back to the byte exactly). */
int64_t data_synth_index_of(const uint8_t *pixels);
int64_t data_synth_index_of_f32(const float *x);

/* Writes the four files under dir (train-*, t10k-*), raw or gzip; with
 * shards > 0 the train split is written as that many shards plus an index. */
int data_synth_write(const char *dir, const data_synth *s, int64_t train_count,
                     int64_t test_count, int64_t shards, int gzip_level, char *err,
                     size_t err_bytes);

#endif
