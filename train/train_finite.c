/* The divergence check of train_finite.h: plain values in, one line out, so
 * it stays apart from the trainer's struct. */
#include "train/train_finite.h"

#include <math.h>
#include <stdio.h>

int train_finite_check(const model_layout *l, const float *params, double loss, int64_t epoch,
                       int64_t step, int64_t global_step, char *err, size_t eb) {
  char what[96];
  int64_t elem = -1;
  int t = params ? model_params_find_nonfinite(l, params, &elem) : -1;
  if (!isfinite(loss)) {
    snprintf(what, sizeof what, "the loss is %s", isnan(loss) ? "nan" : "inf");
  } else if (t >= 0) {
    const float v = params[l->tensors[t].offset + elem];
    snprintf(what, sizeof what, "weight %s[%lld] is %s", l->tensors[t].name, (long long)elem,
             isnan(v) ? "nan" : "inf");
  } else {
    return 0;
  }
  snprintf(err, eb, "training diverged at epoch %lld, step %lld (global step %lld): %s; the run "
           "is Failed and nothing is saved from these weights (earlier checkpoints are kept; "
           "lower --learning-rate)", (long long)epoch, (long long)step, (long long)global_step, what);
  return -1;
}
