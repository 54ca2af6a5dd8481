/* The oracle of the --compression tests: bf16 and fp16 from their
 * definitions alone (sign, exponent and mantissa fields; IEEE 754 round to
 * nearest, ties to even, in float64), written without the codec's bit
 * tricks. A format's non-negative codes grow with their value, so the
 * nearest code is found by binary search over them. Test-only. */
#ifndef TFDIST_TESTS_CODEC_REF_H
#define TFDIST_TESTS_CODEC_REF_H

#include <math.h>
#include <stdint.h>

typedef struct {
  const char *name;
  int ebits, mbits; /* bf16: 8, 7; fp16: 5, 10 */
} ref_fmt;

static const ref_fmt ref_bf16 = {"bf16", 8, 7};
static const ref_fmt ref_fp16 = {"fp16", 5, 10};

static inline int ref_bias(const ref_fmt *f) { return (1 << (f->ebits - 1)) - 1; }
/* The largest finite code; the one after it is +inf. */
static inline uint16_t ref_max_code(const ref_fmt *f) {
  return (uint16_t)((((1u << f->ebits) - 1u) << f->mbits) - 1u);
}

static inline double ref_decode(const ref_fmt *f, uint16_t h) {
  const int bias = ref_bias(f);
  const int e = (h >> f->mbits) & ((1 << f->ebits) - 1), m = h & ((1 << f->mbits) - 1);
  double v;
  if (e == (1 << f->ebits) - 1) v = m ? NAN : INFINITY;
  else if (e == 0) v = ldexp(m, 1 - bias - f->mbits);
  else v = ldexp((1 << f->mbits) + m, e - bias - f->mbits);
  return (h & 0x8000u) ? -v : v;
}

/* The value just past the largest finite code, had the exponent room:
 * the tie point with it is where rounding reaches inf. */
static inline double ref_next(const ref_fmt *f, uint16_t p) {
  return p == ref_max_code(f) ? ldexp(1.0, ref_bias(f) + 1) : ref_decode(f, (uint16_t)(p + 1));
}

static inline int ref_is_nan(const ref_fmt *f, uint16_t h) {
  return (h & 0x7fffu) > (uint16_t)(ref_max_code(f) + 1u);
}

/* x (not NaN) rounded to the nearest code, ties to the even code. */
static inline uint16_t ref_encode(const ref_fmt *f, double x) {
  const uint16_t sign = signbit(x) ? 0x8000u : 0;
  const double a = fabs(x);
  const uint16_t top = ref_max_code(f);
  if (a >= ref_next(f, top)) return (uint16_t)(sign | (top + 1u));
  uint16_t lo = 0, hi = top; /* largest p with value(p) <= a */
  while (lo < hi) {
    uint16_t mid = (uint16_t)((lo + hi + 1u) / 2u);
    if (ref_decode(f, mid) <= a) lo = mid;
    else hi = (uint16_t)(mid - 1u);
  }
  const double v0 = ref_decode(f, lo), v1 = ref_next(f, lo), half = (v0 + v1) / 2;
  uint16_t p = lo;
  if (a > half || (a == half && (lo & 1u))) p = (uint16_t)(lo + 1u);
  return (uint16_t)(sign | p);
}

/* The value a term takes through the wire: R(v) = decode(encode(v*S))/S. */
static inline float ref_round(const ref_fmt *f, float v, float scale) {
  if (isnan(v)) return v;
  return (float)(ref_decode(f, ref_encode(f, (double)v * scale)) / scale);
}

#endif
