/* The 16-bit wire formats of --compression: see codec.h. Bit manipulation
 * after "Half to float done quick" (F. Giesen) and FP16 (M. Dukhan): integer
 * and fp32 operations only, so each loop vectorises. Needs the default
 * rounding mode and no -ffast-math (the build uses neither). */
#include "collective/codec.h"

#include <string.h>

static inline uint32_t codec_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float codec_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* cond ? x : y as masks: GCC if-converts these, not a nested ?: */
static inline uint32_t codec_pick(int cond, uint32_t x, uint32_t y) {
  const uint32_t m = 0u - (uint32_t)cond;
  return (x & m) | (y & ~m);
}

/* Round to nearest even on the top 16 bits; a NaN keeps its sign and top
 * payload bits and is made quiet (rounding could carry it into an inf). */
static inline uint16_t codec_bf16_from(float f) {
  const uint32_t u = codec_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return (uint16_t)codec_pick((u & 0x7fffffffu) > 0x7f800000u, nan, rounded);
}

static inline float codec_bf16_to(uint16_t h) { return codec_float((uint32_t)h << 16); }

/* fp32 -> fp16, round to nearest even. Below 2^-14 (fp16's subnormals)
 * adding 0.5 puts the value's fp16 ulp (2^-24) in fp32's last place, so
 * the fp32 add rounds it; above, the exponent is rebased and the 13 bits
 * dropped are rounded by hand (a carry may reach the exponent, and from
 * 65520 on it reaches the inf pattern). From 2^16 on: inf, or a quiet NaN. */
static inline uint16_t codec_fp16_from(float f) {
  const uint32_t u = codec_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t sub = codec_bits(codec_float(a) + 0.5f) - 0x3f000000u;
  const uint32_t norm = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  const uint32_t big = codec_pick(a > 0x7f800000u, 0x7e00u, 0x7c00u);
  const uint32_t fin = codec_pick(a < 0x38800000u, sub, norm);
  return (uint16_t)(sign | codec_pick(a >= 0x47800000u, big, fin));
}

/* fp16 -> fp32, exact: normals rebased by an exponent offset and a
 * multiply (which also maps 31 to fp32's inf/NaN exponent), subnormals as
 * m * 2^-24 made by a subtraction. */
static inline float codec_fp16_to(uint16_t h) {
  const uint32_t w = (uint32_t)h << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float norm = codec_float((two_w >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
  const float sub = codec_float((two_w >> 17) | (126u << 23)) - 0.5f;
  return codec_float(sign | codec_pick(two_w < (1u << 27), codec_bits(sub), codec_bits(norm)));
}

/* AVX2 where the CPU has it (8 lanes and a true blend), SSE2 otherwise:
 * the build sets no -march, so the loader picks the clone at start-up.
 * GCC only, as in kernels/cpu_opt.c: clang before 18 names the ifunc
 * "f.ifunc", so callers in other files (ring.c) fail to link (the clang
 * fuzz build, tests/fuzz.sh hello). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CODEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CODEC_CLONES
#endif

CODEC_CLONES void coll_codec_encode(coll_compression k, uint16_t *restrict out, const float *restrict in,
                       int64_t n, float scale) {
  if (k == COLL_COMP_BF16) {
    for (int64_t i = 0; i < n; i++) out[i] = codec_bf16_from(in[i]);
  } else if (k == COLL_COMP_FP16) {
    for (int64_t i = 0; i < n; i++) out[i] = codec_fp16_from(in[i] * scale);
  }
}

CODEC_CLONES void coll_codec_decode(coll_compression k, float *restrict out, const uint16_t *restrict in,
                       int64_t n, float scale) {
  const float inv = 1.0f / scale; /* exact: scale is a power of two */
  if (k == COLL_COMP_BF16) {
    for (int64_t i = 0; i < n; i++) out[i] = codec_bf16_to(in[i]);
  } else if (k == COLL_COMP_FP16) {
    for (int64_t i = 0; i < n; i++) out[i] = codec_fp16_to(in[i]) * inv;
  }
}

CODEC_CLONES void coll_codec_add(coll_compression k, float *out, const float *a, const uint16_t *restrict h,
                    int64_t n, float scale) {
  const float inv = 1.0f / scale;
  if (k == COLL_COMP_BF16) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + codec_bf16_to(h[i]);
  } else if (k == COLL_COMP_FP16) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + codec_fp16_to(h[i]) * inv;
  }
}

void coll_codec_round(coll_compression k, uint16_t *restrict code, float *restrict buf, int64_t n,
                      float scale) {
  coll_codec_encode(k, code, buf, n, scale);
  coll_codec_decode(k, buf, code, n, scale);
}
