/* --compression fp16's scale: a power of two in one range, which the ring
 * that applies it (collective/), the scaler that moves it (train/) and the
 * checkpoint reader (modelio/) all hold to. */
#ifndef TFDIST_BASE_FP16_SCALE_H
#define TFDIST_BASE_FP16_SCALE_H

/* 2^-24 is fp16's smallest subnormal: a lower scale only loses terms; 2^24
 * times a gradient element is already far beyond fp16's 65504. */
#define FP16_SCALE_MIN_LOG2 (-24)
#define FP16_SCALE_MAX_LOG2 24

/* Whether scale is 2^k with FP16_SCALE_MIN_LOG2 <= k <= FP16_SCALE_MAX_LOG2. */
int fp16_scale_valid(double scale);

#endif
