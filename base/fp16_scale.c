/* --compression fp16's scale range: see fp16_scale.h. */
#include "base/fp16_scale.h"

#include <math.h>

int fp16_scale_valid(double scale) {
  int e = 0;
  if (!(scale > 0) || !isfinite(scale) || frexp(scale, &e) != 0.5) return 0;
  return e - 1 >= FP16_SCALE_MIN_LOG2 && e - 1 <= FP16_SCALE_MAX_LOG2;
}
