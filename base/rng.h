/* The documented seeded generator: SplitMix64 (Steele, Lea & Flood 2014).
 * Same seed, same stream -> same numbers on every machine and compiler,
 * because it is pure 64-bit integer arithmetic. */
#ifndef TFDIST_BASE_RNG_H
#define TFDIST_BASE_RNG_H

#include <stdint.h>

typedef struct {
  uint64_t state;
} base_rng;

/* Streams keep uses independent: init weights, epoch permutations, ... */
enum {
  DATA_RNG_STREAM_INIT = 1,
  DATA_RNG_STREAM_EPOCH = 2,
  DATA_RNG_STREAM_SYNTH = 3,
  DATA_RNG_STREAM_SHUFFLE = 4, /* streaming mode: shard order and shuffle buffer, per (epoch, rank) */
  DATA_RNG_STREAM_TUNE = 5     /* tfdist tune: one sub-stream per trial */
};

/* state = mix(seed) ^ mix(stream * golden + sub): distinct (seed, stream, sub)
 * triples start far apart in the SplitMix64 sequence. */
void base_rng_seed(base_rng *r, uint64_t seed, uint64_t stream, uint64_t sub);
uint64_t base_rng_next(base_rng *r);
/* Uniform in [0, 1) with 24 random bits: every value is an exact float. */
float base_rng_uniform(base_rng *r);
/* Uniform in [0, n), unbiased (Lemire's multiply-shift with rejection). */
uint32_t base_rng_below(base_rng *r, uint32_t n);
/* The training order of epoch `epoch`: a Fisher-Yates shuffle of 0..n-1 drawn
 * from stream (seed, DATA_RNG_STREAM_EPOCH, epoch). Every rank derives it alone. */
void base_perm_epoch(int32_t *perm, int64_t n, uint64_t seed, int64_t epoch);

#endif
