/* collective/codec.c against codec_ref.h's oracle (the formats from their
 * definitions, rounded in float64), bit for bit:
 * - decode: all 65536 codes of each format, fp16 under several scales;
 * - encode: every tie point between neighbouring codes, and the fp32 values
 *   on either side of it, both signs (ties to even, subnormals, the
 *   overflow edge: fp16 65520 goes to inf, 65519.99 to 65504); random fp32
 *   bit patterns (subnormals, inf and NaN among them); the specials;
 * - NaN stays NaN with its sign; inf stays inf;
 * - add: a + decode(h), in place and not; round: the code and its value;
 * - arrays at odd offsets and lengths (the vector loops' heads and tails). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/codec.h"
#include "tests/check.h"
#include "tests/collective/codec_ref.h"

typedef struct {
  coll_compression k;
  const ref_fmt *f;
  float scale;
} fmt_case;

static uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint64_t rng_state = 0x243f6a8885a308d3ULL;
static uint32_t rng32(void) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(rng_state >> 32);
}

/* One value through the codec, checked against the oracle; returns 1 if right. */
static int check_one(const fmt_case *c, float x) {
  uint16_t got;
  coll_codec_encode(c->k, &got, &x, 1, c->scale);
  if (isnan(x)) {
    if (ref_is_nan(c->f, got) && (got >> 15) == (f2u(x) >> 31)) return 1;
    fprintf(stderr, "%s scale %g: NaN %08x encoded as %04x (not a NaN of its sign)\n", c->f->name,
            (double)c->scale, f2u(x), got);
    return 0;
  }
  const uint16_t want = ref_encode(c->f, (double)x * c->scale);
  if (got == want) return 1;
  fprintf(stderr, "%s scale %g: %.9g (%08x) encoded as %04x, want %04x (%.9g)\n", c->f->name,
          (double)c->scale, (double)x, f2u(x), got, want, ref_decode(c->f, want));
  return 0;
}

static void check_decode_all(const fmt_case *c) {
  static uint16_t codes[65536];
  static float out[65536];
  for (uint32_t h = 0; h < 65536; h++) codes[h] = (uint16_t)h;
  coll_codec_decode(c->k, out, codes, 65536, c->scale);
  int bad = 0;
  for (uint32_t h = 0; h < 65536 && bad < 5; h++) {
    const double ref = ref_decode(c->f, (uint16_t)h) / c->scale;
    const float want = (float)ref;
    int ok = isnan(ref) ? isnan(out[h]) && !!signbit(out[h]) == (int)(h >> 15)
                        : f2u(out[h]) == f2u(want) && (double)want == ref;
    if (!ok) {
      fprintf(stderr, "%s scale %g: code %04x decoded as %.9g, want %.9g\n", c->f->name,
              (double)c->scale, h, (double)out[h], ref);
      bad++;
    }
  }
  check_failures += bad;
}

/* Every tie point between neighbouring codes that fp32 holds, and its
 * fp32 neighbours, at both signs. */
static void check_ties(const fmt_case *c) {
  int bad = 0;
  long checked = 0;
  for (uint32_t p = 0; p <= ref_max_code(c->f) && bad < 5; p++) {
    const double mid = (ref_decode(c->f, (uint16_t)p) + ref_next(c->f, (uint16_t)p)) / 2;
    const float m = (float)(mid / c->scale);
    if ((double)m * c->scale != mid) continue; /* beyond fp32 (fp16 scale 2^-8: none) */
    const float xs[3] = {nextafterf(m, 0.0f), m, nextafterf(m, INFINITY)};
    for (int i = 0; i < 3; i++) {
      bad += !check_one(c, xs[i]);
      bad += !check_one(c, -xs[i]);
      checked += 2;
    }
  }
  check_failures += bad;
  if (checked < 3 * 2 * 30000) {
    fprintf(stderr, "%s scale %g: only %ld tie cases\n", c->f->name, (double)c->scale, checked);
    check_failures++;
  }
}

static void check_random_and_specials(const fmt_case *c) {
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, u2f(0x7f800001u),
                            u2f(0xffc12345u), u2f(0x7fbfffffu), 3.4028235e38f, -3.4028235e38f,
                            1.17549435e-38f, 1e-45f, 65504.0f, 65519.99f, 65520.0f, 65536.0f,
                            -65520.0f, 5.96046448e-8f, 2.98023224e-8f, 2.98023259e-8f,
                            6.10351562e-5f, 1.0f, 1.00390625f, 1.01171875f, -2.5f, 0.1f};
  int bad = 0;
  for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
    bad += !check_one(c, specials[i]);
  }
  for (int i = 0; i < 1000000 && bad < 5; i++) bad += !check_one(c, u2f(rng32()));
  /* values near fp16's range and subnormals, where the scale matters */
  for (int i = 0; i < 200000 && bad < 5; i++) {
    const float x = ldexpf((float)(rng32() & 0xffffffu) / 16777216.0f, (int)(rng32() % 60) - 40);
    bad += !check_one(c, (rng32() & 1) ? -x : x);
  }
  check_failures += bad;
}

/* Arrays at odd offsets and lengths; add and round against the oracle. */
static void check_arrays(const fmt_case *c) {
  enum { N = 1031 };
  float in[N], out[N], a[N], sum[N];
  uint16_t codes[N], round_codes[N];
  for (int i = 0; i < N; i++) {
    in[i] = (float)(((int)(rng32() % 2000001u) - 1000000)) * 1e-4f;
    a[i] = (float)(((int)(rng32() % 2001u) - 1000)) * 0.37f;
  }
  for (int off = 0; off < 9; off++) {
    const int n = N - off - (off * 7) % 5;
    coll_codec_encode(c->k, codes + off, in + off, n, c->scale);
    coll_codec_decode(c->k, out + off, codes + off, n, c->scale);
    coll_codec_add(c->k, sum + off, a + off, codes + off, n, c->scale);
    memcpy(round_codes, codes, sizeof codes);
    float r[N];
    memcpy(r, in, sizeof r);
    coll_codec_round(c->k, round_codes + off, r + off, n, c->scale);
    int bad = 0;
    for (int i = off; i < off + n && bad < 3; i++) {
      const float v = ref_round(c->f, in[i], c->scale);
      const float s = a[i] + v; /* one fp32 add */
      if (codes[i] != ref_encode(c->f, (double)in[i] * c->scale) || f2u(out[i]) != f2u(v) ||
          f2u(sum[i]) != f2u(s) || f2u(r[i]) != f2u(v) || round_codes[i] != codes[i]) {
        fprintf(stderr, "%s scale %g: array offset %d element %d: %.9g -> %04x %.9g, sum %.9g "
                "(want %.9g, %.9g)\n", c->f->name, (double)c->scale, off, i, (double)in[i],
                codes[i], (double)out[i], (double)sum[i], (double)v, (double)s);
        bad++;
      }
    }
    /* in place: a is the output */
    float b[N];
    memcpy(b, a, sizeof b);
    coll_codec_add(c->k, b + off, b + off, codes + off, n, c->scale);
    if (memcmp(b + off, sum + off, (size_t)n * sizeof(float)) != 0) {
      fprintf(stderr, "%s: in-place add differs at offset %d\n", c->f->name, off);
      bad++;
    }
    check_failures += bad;
  }
}

int main(void) {
  const fmt_case cases[] = {
    {COLL_COMP_BF16, &ref_bf16, 1.0f},
    {COLL_COMP_FP16, &ref_fp16, 1.0f},
    {COLL_COMP_FP16, &ref_fp16, 0x1p-8f},
    {COLL_COMP_FP16, &ref_fp16, 0x1p10f},
    {COLL_COMP_FP16, &ref_fp16, 0x1p16f},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const int before = check_failures;
    check_decode_all(&cases[i]);
    check_ties(&cases[i]);
    check_random_and_specials(&cases[i]);
    check_arrays(&cases[i]);
    printf("%s scale %g: %s\n", cases[i].f->name, (double)cases[i].scale,
           check_failures == before ? "bit-exact" : "WRONG");
  }
  /* the oracle itself, on values known by heart */
  CHECK_EQ_INT(ref_encode(&ref_fp16, 65519.0), 0x7bff);
  CHECK_EQ_INT(ref_encode(&ref_fp16, 65520.0), 0x7c00);
  CHECK_EQ_INT(ref_encode(&ref_fp16, 1.0 + 1.0 / 2048), 0x3c00);  /* tie to even: down */
  CHECK_EQ_INT(ref_encode(&ref_fp16, 1.0 + 3.0 / 2048), 0x3c02);  /* tie to even: up */
  CHECK_EQ_INT(ref_encode(&ref_fp16, ldexp(1, -25)), 0x0000);     /* half the least: to 0 */
  CHECK_EQ_INT(ref_encode(&ref_fp16, ldexp(3, -26)), 0x0001);
  CHECK_EQ_INT(ref_encode(&ref_bf16, 1.0 + 1.0 / 256), 0x3f80);
  CHECK_EQ_INT(ref_encode(&ref_bf16, 1.0 + 3.0 / 256), 0x3f82);
  CHECK_EQ_INT(ref_encode(&ref_bf16, -2.0), 0xc000);
  CHECK_EQ_INT(ref_encode(&ref_bf16, 3.3895313892515355e38), 0x7f7f); /* bf16's max */
  CHECK_DONE();
}
