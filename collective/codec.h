/* The 16-bit wire formats of --compression (codec.c): fp32 <-> bf16 and
 * fp32 <-> fp16, and the fp32 sum of a decoded buffer into an fp32 one.
 * Internal to collective/ (the ring and the hierarchical allreduce); the
 * trainer sees only coll_compression in coll.h.
 *
 * Rounding is to nearest, ties to even, in both formats (IEEE 754's
 * default). bf16 keeps fp32's range; a NaN stays a NaN (made quiet). fp16
 * multiplies each value by a power-of-two scale first, and its decode
 * divides by it again: both are exact, so decode(encode(x)) is x*S rounded
 * to fp16, over S. Beyond fp16's range (|x*S| >= 65520) the code is an
 * infinity, which every later sum carries into every rank's result: the
 * trainer sees the overflow and skips the step. The loops have no branches
 * and no calls, so the compiler vectorises them. */
#ifndef TFDIST_COLLECTIVE_CODEC_H
#define TFDIST_COLLECTIVE_CODEC_H

#include <stdint.h>

#include "collective/coll.h"

/* out[i] = the 16-bit code of in[i] (fp16: of in[i] * scale). NONE: not a
 * 16-bit format; the callers never pass it. */
void coll_codec_encode(coll_compression k, uint16_t *restrict out, const float *restrict in,
                       int64_t n, float scale);
/* out[i] = the value of in[i] (fp16: divided by scale). */
void coll_codec_decode(coll_compression k, float *restrict out, const uint16_t *restrict in,
                       int64_t n, float scale);
/* out[i] = a[i] + decode(h[i]), one fp32 add per element (out may be a). */
void coll_codec_add(coll_compression k, float *out, const float *a, const uint16_t *restrict h,
                    int64_t n, float scale);
/* encode then decode in place: buf[i] becomes the value its code stands for
 * (what a rank that sends the code must keep, to agree with its receivers). */
void coll_codec_round(coll_compression k, uint16_t *restrict code, float *restrict buf, int64_t n,
                      float scale);

#endif
