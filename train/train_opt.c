/* The trainer's optimizer (train_opt.h): parsed once into kern_opt and
 * lr_schedule, then one rate per global step. */
#include "train/train_opt.h"

#include <string.h>

int train_opt_kind_parse(const char *name) {
  static const struct { const char *name; kern_opt_kind kind; } kinds[] = {
    {"sgd", KERN_OPT_SGD},         {"momentum", KERN_OPT_MOMENTUM}, {"nesterov", KERN_OPT_NESTEROV},
    {"rmsprop", KERN_OPT_RMSPROP}, {"adam", KERN_OPT_ADAM},         {"adamw", KERN_OPT_ADAMW}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    if (!strcmp(name, kinds[i].name)) return (int)kinds[i].kind;
  }
  return -1;
}

void train_opt_init(kern_opt *opt, lr_schedule *sched, const train_config *c, int ranks,
                    int64_t steps_per_epoch) {
  const int kind = train_opt_kind_parse(c->optimizer);
  const int sk = lr_schedule_kind_parse(c->lr_schedule);
  const double base = c->learning_rate * (c->scale_lr ? ranks : 1);
  *opt = (kern_opt){.kind = kind < 0 ? KERN_OPT_SGD : (kern_opt_kind)kind, .lr = (float)base,
                    .momentum = (float)c->momentum, .beta1 = (float)c->beta1,
                    .beta2 = (float)c->beta2, .epsilon = (float)c->epsilon, .rho = (float)c->rho,
                    .weight_decay = (float)c->weight_decay, .step = 1};
  *sched = (lr_schedule){.kind = sk < 0 ? LR_SCHEDULE_CONSTANT : (lr_schedule_kind)sk,
                         .base_lr = base, .decay_rate = c->lr_decay_rate,
                         .decay_epochs = c->lr_decay_epochs, .lr_min = c->lr_min,
                         .warmup_epochs = c->warmup_epochs, .steps_per_epoch = steps_per_epoch,
                         .total_steps = c->epochs * steps_per_epoch};
}

void train_opt_at(kern_opt *opt, const lr_schedule *sched, int64_t step) {
  opt->lr = (float)lr_schedule_rate(sched, step);
  opt->step = step + 1;
}

int train_opt_varies(const kern_opt *opt, const lr_schedule *sched) {
  return sched->kind != LR_SCHEDULE_CONSTANT || sched->warmup_epochs > 0 ||
         opt->kind == KERN_OPT_ADAM || opt->kind == KERN_OPT_ADAMW;
}

int64_t train_opt_state_elems(kern_opt_kind kind, int64_t elems) {
  const int k = kern_opt_state_per_elem(kind);
  return (k > 1 ? k : 1) * elems;
}
