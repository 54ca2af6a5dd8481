/* The trainer's optimizer (train_opt.h): parsed once into kern_opt and
 * lr_schedule, then one rate per global step. */
#include "train/train_opt.h"

#include <string.h>

void train_opt_init(kern_opt *opt, lr_schedule *sched, const train_config *c, int ranks,
                    int64_t steps_per_epoch) {
  /* the enums are in kern_opt_kind's and lr_schedule_kind's order */
  const kern_opt_kind kind = (kern_opt_kind)c->optimizer;
  const lr_schedule_kind sk = (lr_schedule_kind)c->lr_schedule;
  const double base = c->learning_rate * (c->scale_lr ? ranks : 1);
  *opt = (kern_opt){.kind = kind, .lr = (float)base,
                    .momentum = (float)c->momentum, .beta1 = (float)c->beta1,
                    .beta2 = (float)c->beta2, .epsilon = (float)c->epsilon, .rho = (float)c->rho,
                    .weight_decay = (float)c->weight_decay, .step = 1};
  *sched = (lr_schedule){.kind = sk,
                         .base_lr = base, .decay_rate = c->lr_decay_rate,
                         .decay_epochs = c->lr_decay_epochs, .lr_min = c->lr_min,
                         .warmup_epochs = c->warmup_epochs, .steps_per_epoch = steps_per_epoch,
                         .total_steps = c->epochs * steps_per_epoch};
}

void train_opt_at(kern_opt *opt, const lr_schedule *sched, int64_t step, int64_t skipped) {
  opt->lr = (float)lr_schedule_rate(sched, step);
  opt->step = step - skipped + 1;
}

int train_opt_varies(const kern_opt *opt, const lr_schedule *sched) {
  return sched->kind != LR_SCHEDULE_CONSTANT || sched->warmup_epochs > 0 ||
         opt->kind == KERN_OPT_ADAM || opt->kind == KERN_OPT_ADAMW;
}

int64_t train_opt_state_elems(kern_opt_kind kind, int64_t elems) {
  const int k = kern_opt_state_per_elem(kind);
  return (k > 1 ? k : 1) * elems;
}
