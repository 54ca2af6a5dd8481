/* --compression fp16's scale: a power of two in one range, which the ring
 * that applies it (collective/), the scaler that moves it (train/) and the
 * checkpoint reader (modelio/) all hold to. */
#ifndef TFDIST_BASE_FP16_SCALE_H
#define TFDIST_BASE_FP16_SCALE_H

/* At 2^-24 a term of 1 is fp16's smallest subnormal (lower, the gradient
 * underflows); at 2^24 every term above 2^-8 is beyond fp16's 65504. */
#define FP16_SCALE_MIN_LOG2 (-24)
#define FP16_SCALE_MAX_LOG2 24

/* Whether scale is 2^k with FP16_SCALE_MIN_LOG2 <= k <= FP16_SCALE_MAX_LOG2. */
int fp16_scale_valid(double scale);

#endif
