/* --compression fp16's dynamic scale: see train_scaler.h. */
#include "train/train_scaler.h"

#include <math.h>
#include <string.h>

#include "base/fault.h"

void train_scaler_init(train_scaler *s, int on) {
  *s = (train_scaler){.on = on, .scale = ldexpf(1.0f, TRAIN_SCALER_INIT_LOG2)};
}

void train_scaler_begin(const train_scaler *s, coll_comm *comm) {
  if (s->on) coll_comm_set_fp16_scale(comm, s->scale);
}

void train_scaler_fault(int rank, int64_t global_step, float *grads, int64_t elems) {
  const base_fault_inflate_spec f = base_fault_inflate();
  if (f.at.rank != rank || global_step < f.at.step || global_step >= f.at.step + f.steps) return;
  for (int64_t i = 0; i < elems; i++) grads[i] *= f.factor;
}

static int train_scaler_log2(float scale) {
  int e = 0;
  frexpf(scale, &e);
  return e - 1;
}

/* No inf or NaN (exponent all ones): an integer OR, so the loop vectorises. */
static int train_scaler_finite(const float *g, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &g[i], sizeof u);
    bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

int train_scaler_after(train_scaler *s, const float *grads, int64_t elems, int64_t global_step,
                       rank_log *log, metrics_log *metrics, int64_t epoch, int *apply,
                       base_err *err) {
  *apply = 1;
  if (!s->on) return 0;
  if (train_scaler_finite(grads, elems)) {
    s->consecutive = 0;
    if (++s->clean_steps >= TRAIN_SCALER_GROWTH_STEPS &&
        train_scaler_log2(s->scale) < FP16_SCALE_MAX_LOG2) {
      s->scale *= 2.0f;
      s->clean_steps = 0;
      rank_log_printf(log, "step %lld: fp16 scale up to 2^%d after %d clean steps",
                      (long long)global_step, train_scaler_log2(s->scale),
                      TRAIN_SCALER_GROWTH_STEPS);
    }
    return 0;
  }
  *apply = 0;
  s->overflows++;
  s->consecutive++;
  s->clean_steps = 0;
  const int was = train_scaler_log2(s->scale);
  if (was > FP16_SCALE_MIN_LOG2) s->scale *= 0.5f;
  rank_log_printf(log, "step %lld: fp16 overflow in the averaged gradient at scale 2^%d: update "
                  "skipped on every rank (%lld so far), scale now 2^%d", (long long)global_step,
                  was, (long long)s->overflows, train_scaler_log2(s->scale));
  metrics_write(metrics, "fp16_overflow_steps", (double)s->overflows, epoch, global_step);
  if (s->consecutive < TRAIN_SCALER_MAX_OVERFLOWS) return 0;
  return base_err_set(err, "--compression fp16: %lld steps in a row overflowed (last at global "
                      "step %lld, scale down to 2^%d): the gradient is not finite at any scale; "
                      "the run is Failed and no update was applied from them (lower "
                      "--learning-rate, or use --compression bf16)",
                      (long long)s->consecutive, (long long)global_step,
                      train_scaler_log2(s->scale));
}

void train_scaler_metrics(const train_scaler *s, metrics_log *metrics, int64_t epoch,
                          int64_t global_step) {
  if (!s->on) return;
  metrics_write(metrics, "fp16_overflow_steps", (double)s->overflows, epoch, global_step);
  metrics_write(metrics, "fp16_scale", (double)s->scale, epoch, global_step);
}
