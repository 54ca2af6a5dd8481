/* SplitMix64 and the per-epoch permutation built from it. */
#include "base/rng.h"

static uint64_t rng_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void base_rng_seed(base_rng *r, uint64_t seed, uint64_t stream, uint64_t sub) {
  r->state = rng_mix(seed) ^ rng_mix(stream * 0x9e3779b97f4a7c15ULL + sub);
}

uint64_t base_rng_next(base_rng *r) {
  r->state += 0x9e3779b97f4a7c15ULL;
  return rng_mix(r->state);
}

float base_rng_uniform(base_rng *r) {
  return (float)(base_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

uint32_t base_rng_below(base_rng *r, uint32_t n) {
  uint64_t m = (base_rng_next(r) >> 32) * (uint64_t)n;
  uint32_t low = (uint32_t)m;
  if (low < n) {
    uint32_t threshold = (uint32_t)(-n) % n;
    while (low < threshold) {
      m = (base_rng_next(r) >> 32) * (uint64_t)n;
      low = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

void base_perm_epoch(int32_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
  base_rng r;
  base_rng_seed(&r, seed, DATA_RNG_STREAM_EPOCH, (uint64_t)epoch);
  for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = base_rng_below(&r, (uint32_t)(i + 1));
    int32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}
