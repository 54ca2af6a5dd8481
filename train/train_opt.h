/* The trainer's optimizer: the update rule from the config, and its rate
 * and update count at each global step (train/lr_schedule.h). */
#ifndef TFDIST_TRAIN_TRAIN_OPT_H
#define TFDIST_TRAIN_TRAIN_OPT_H

#include <stdint.h>

#include "kernels/backend.h"
#include "train/lr_schedule.h"
#include "train/train_config.h"

/* The rule and schedule of c for ranks ranks and steps_per_epoch steps. */
void train_opt_init(kern_opt *opt, lr_schedule *sched, const train_config *c, int ranks,
                    int64_t steps_per_epoch);
/* Sets the rate and update count of the update at global step (0-based),
 * skipped steps (fp16 overflows) before it: the schedule counts every step,
 * Adam's t only the updates applied (PyTorch's GradScaler skips step()). */
void train_opt_at(kern_opt *opt, const lr_schedule *sched, int64_t step, int64_t skipped);
/* 1 when updates differ from step to step (a schedule, a warm-up or a bias
 * correction): a recorded step (a CUDA graph, a fused chain) cannot then
 * replay one step's scalars for another. */
int train_opt_varies(const kern_opt *opt, const lr_schedule *sched);
/* Floats of optimizer state for elems weights (at least elems: sgd keeps a
 * zero buffer, as checkpoints always had). */
int64_t train_opt_state_elems(kern_opt_kind kind, int64_t elems);

#endif
