/* The learning-rate schedule: the rate of each update as a pure function of
 * the global step and the config, so every rank, and a resumed run, derive
 * the same rate for the same step. */
#ifndef TFDIST_TRAIN_LR_SCHEDULE_H
#define TFDIST_TRAIN_LR_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  LR_SCHEDULE_CONSTANT = 0,
  LR_SCHEDULE_STEP = 1,
  LR_SCHEDULE_EXPONENTIAL = 2,
  LR_SCHEDULE_COSINE = 3
} lr_schedule_kind;

typedef struct {
  lr_schedule_kind kind;
  double base_lr;         /* --learning-rate, times the ranks under --scale-lr */
  double decay_rate;      /* step, exponential */
  double decay_epochs;    /* step, exponential; cosine: its span (0: the rest of the run) */
  double lr_min;          /* cosine: the rate at the last update */
  double warmup_epochs;   /* linear ramp from 0 over these epochs (0: none) */
  int64_t steps_per_epoch;
  int64_t total_steps;    /* epochs * steps_per_epoch */
} lr_schedule;

/* "constant" ... "cosine" -> kind; -1 if none. */
int lr_schedule_kind_parse(const char *name);
/* The rate of update number step (0-based: the first update is step 0). */
double lr_schedule_rate(const lr_schedule *s, int64_t step);

#endif
