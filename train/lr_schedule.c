/* Learning-rate schedules (lr_schedule.h). With e the epochs since the
 * warm-up ended, as a fraction (update step counts (step - W)/S epochs, S
 * steps per epoch, W warm-up steps), and lr the base rate (--learning-rate,
 * times N ranks under --scale-lr):
 *   constant:     lr
 *   step:         lr * rate^floor(e / decay_epochs)
 *   exponential:  lr * rate^(e / decay_epochs)
 *   cosine:       lr_min + (lr - lr_min) * (1 + cos(pi * min((step-W)/(D-1), 1))) / 2,
 *                 D the decay's updates: decay_epochs * S when given, else the
 *                 run's updates after the warm-up (T - W, T the run's total):
 *                 lr at the first update after the warm-up, lr_min at the
 *                 last and after (PyTorch's CosineAnnealingLR with T_max =
 *                 D - 1, eta_min = lr_min, stepped per update; Keras 3
 *                 CosineDecay with decay_steps = D - 1). A run to be resumed
 *                 from a shorter run's checkpoint gives decay_epochs, so that
 *                 both runs share D.
 *   warm-up:      update step < W gets lr * (step + 1) / W: a linear ramp
 *                 from 0 to lr (the rate the schedule then starts from),
 *                 whatever --scale-lr made lr. */
#include "train/lr_schedule.h"

#include <math.h>
#include <string.h>

int lr_schedule_kind_parse(const char *name) {
  static const char *const names[] = {"constant", "step", "exponential", "cosine"};
  for (int i = 0; i < 4; i++) {
    if (!strcmp(name, names[i])) return i;
  }
  return -1;
}

double lr_schedule_rate(const lr_schedule *s, int64_t step) {
  const double spe = s->steps_per_epoch > 0 ? (double)s->steps_per_epoch : 1.0;
  int64_t warm = (int64_t)llround(s->warmup_epochs * spe);
  if (warm < 0) warm = 0;
  if (step < warm) return s->base_lr * (double)(step + 1) / (double)warm;
  const double e = (double)(step - warm) / spe;
  switch (s->kind) {
  case LR_SCHEDULE_CONSTANT:
    return s->base_lr;
  case LR_SCHEDULE_STEP:
    return s->base_lr * pow(s->decay_rate, floor(e / s->decay_epochs));
  case LR_SCHEDULE_EXPONENTIAL:
    return s->base_lr * pow(s->decay_rate, e / s->decay_epochs);
  case LR_SCHEDULE_COSINE: {
    const int64_t d = s->decay_epochs > 0 ? (int64_t)llround(s->decay_epochs * spe)
                                          : s->total_steps - warm;
    const int64_t span = d - 1;
    double x = span > 0 ? (double)(step - warm) / (double)span : 1.0;
    if (x > 1.0) x = 1.0;
    return s->lr_min + (s->base_lr - s->lr_min) * 0.5 * (1.0 + cos(M_PI * x));
  }
  }
  return s->base_lr;
}
