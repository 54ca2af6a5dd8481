/* The optimizer updates of the CPU back end (kern_opt_update) and the
 * learning-rate schedules (train/lr_schedule.c) against float64 oracles
 * written here from the formulas: every rule, with and without weight
 * decay, 5 updates under every schedule, on random weights and gradients.
 * `--dump adam|adamw` prints one such run as JSON instead, for the
 * torch.optim comparison in test_opt_torch.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "check.h"
#include "kernels/backend.h"
#include "train/lr_schedule.h"

#define N 1003 /* odd: no vector width divides it */
#define STEPS 5
#define KINDS 6
static const char *const kind_names[KINDS] = {"sgd", "momentum", "nesterov", "rmsprop", "adam",
                                              "adamw"};

/* ---- float64 oracles ---- */

static double sched64(lr_schedule_kind kind, double base, double rate, double de, double lr_min,
                      double warm_epochs, int64_t spe, int64_t total, int64_t step) {
  const double W = round(warm_epochs * (double)spe);
  if ((double)step < W) return base * ((double)step + 1.0) / W;
  const double e = ((double)step - W) / (double)spe;
  switch (kind) {
  case LR_SCHEDULE_CONSTANT: return base;
  case LR_SCHEDULE_STEP: return base * pow(rate, floor(e / de));
  case LR_SCHEDULE_EXPONENTIAL: return base * exp(log(rate) * e / de);
  case LR_SCHEDULE_COSINE: { /* over de epochs after the warm-up, or the rest of the run */
    const double span = (de > 0 ? round(de * (double)spe) : (double)total - W) - 1.0;
    const double x = span > 0 ? fmin(((double)step - W) / span, 1.0) : 1.0;
    return lr_min + (base - lr_min) * (1.0 + cos(acos(-1.0) * x)) / 2.0;
  }
  }
  return NAN;
}

typedef struct {
  double mu, b1, b2, eps, rho, wd;
} hyper64;

/* One update of one weight: p, and its state s[0..1]. */
static void opt64(int kind, const hyper64 *h, double lr, int64_t t, double *p, double g,
                  double *s) {
  if (kind == KERN_OPT_ADAMW) *p -= lr * h->wd * *p;
  else g += h->wd * *p;
  switch (kind) {
  case KERN_OPT_SGD: *p -= lr * g; return;
  case KERN_OPT_MOMENTUM: s[0] = h->mu * s[0] + g; *p -= lr * s[0]; return;
  case KERN_OPT_NESTEROV: s[0] = h->mu * s[0] + g; *p -= lr * (g + h->mu * s[0]); return;
  case KERN_OPT_RMSPROP:
    s[0] = h->rho * s[0] + (1 - h->rho) * g * g;
    *p -= lr * g / (sqrt(s[0]) + h->eps);
    return;
  default: {
    s[0] = h->b1 * s[0] + (1 - h->b1) * g;
    s[1] = h->b2 * s[1] + (1 - h->b2) * g * g;
    const double mhat = s[0] / (1 - pow(h->b1, (double)t)), vhat = s[1] / (1 - pow(h->b2, (double)t));
    *p -= lr * mhat / (sqrt(vhat) + h->eps);
  }
  }
}

/* ---- the runs ---- */

typedef struct {
  float p0[N], g[STEPS][N];
  float p[N], state[2 * N];
  double lr[STEPS];
  int64_t t0; /* the first update's 1-based count */
} run_data;

static void make_data(run_data *d, uint64_t seed) {
  base_rng r;
  base_rng_seed(&r, seed, 77, 0);
  for (int64_t i = 0; i < N; i++) { /* |p| in [0.1, 1]: the updates never cross 0 */
    const float m = 0.1f + 0.9f * base_rng_uniform(&r);
    d->p0[i] = base_rng_below(&r, 2) ? m : -m;
  }
  for (int s = 0; s < STEPS; s++) {
    for (int64_t i = 0; i < N; i++) { /* magnitudes 1, 1e-2 and 1e-4: eps matters at the small */
      static const float scale[3] = {1.0f, 1e-2f, 1e-4f};
      d->g[s][i] = (2.0f * base_rng_uniform(&r) - 1.0f) * scale[base_rng_below(&r, 3)];
    }
  }
}

static kern_opt make_opt(int kind, double wd) {
  return (kern_opt){.kind = (kern_opt_kind)kind, .momentum = 0.9f, .beta1 = 0.8f, .beta2 = 0.99f,
                    .epsilon = 1e-6f, .rho = 0.85f, .weight_decay = (float)wd};
}

static int run_cpu(kern_backend *be, run_data *d, const kern_opt *base) {
  memcpy(d->p, d->p0, sizeof d->p);
  memset(d->state, 0, sizeof d->state);
  for (int s = 0; s < STEPS; s++) {
    kern_opt o = *base;
    o.lr = (float)d->lr[s];
    o.step = d->t0 + s;
    if (kern_opt_update(be, d->p, d->g[s], d->state, N, &o) != 0) {
      fprintf(stderr, "kern_opt_update: %s\n", kern_error(be));
      return -1;
    }
  }
  return 0;
}

/* One rule under one schedule: 5 updates against opt64. */
static void check_rule(kern_backend *be, run_data *d, int kind, double wd, lr_schedule_kind sk,
                       int64_t start, uint64_t seed) {
  const lr_schedule sched = {.kind = sk, .base_lr = 0.01, .decay_rate = 0.5, .decay_epochs = 1,
                             .lr_min = sk == LR_SCHEDULE_COSINE ? 0.001 : 0,
                             .warmup_epochs = 1, .steps_per_epoch = 2, .total_steps = 8};
  make_data(d, seed);
  d->t0 = start + 1;
  for (int s = 0; s < STEPS; s++) d->lr[s] = (float)lr_schedule_rate(&sched, start + s);
  const kern_opt o = make_opt(kind, wd);
  if (run_cpu(be, d, &o) != 0) {
    check_failures++;
    return;
  }
  const hyper64 h = {o.momentum, o.beta1, o.beta2, o.epsilon, o.rho, o.weight_decay};
  static double p[N], st[2 * N], sref[2 * N];
  for (int64_t i = 0; i < N; i++) {
    double s2[2] = {0, 0};
    p[i] = d->p0[i];
    for (int s = 0; s < STEPS; s++) {
      const double lr = sched64(sk, 0.01, 0.5, 1, sched.lr_min, 1, 2, 8, start + s);
      opt64(kind, &h, lr, d->t0 + s, &p[i], d->g[s][i], s2);
    }
    sref[2 * i] = s2[0];
    sref[2 * i + 1] = s2[1];
  }
  char what[96];
  snprintf(what, sizeof what, "%s wd=%g schedule %d from step %lld: weights", kind_names[kind], wd,
           (int)sk, (long long)start);
  /* float32 weights and state, 5 roundings per update: 1e-6 relative holds */
  check_close_f32(what, d->p, p, N, 0.0, 1e-6);
  const int k = kern_opt_state_per_elem((kern_opt_kind)kind);
  if (k < 1) return;
  double smax = 0;
  for (int64_t i = 0; i < N * 2; i++) smax = fmax(smax, fabs(sref[i]));
  for (int64_t i = 0; i < N; i++) {
    for (int j = 0; j < k; j++) st[k * i + j] = sref[2 * i + j];
  }
  snprintf(what, sizeof what, "%s wd=%g schedule %d: state", kind_names[kind], wd, (int)sk);
  /* a moment near 0 is a difference of gradients: absolute slack at 1e-6 of the largest */
  check_close_f32(what, d->state, st, k * N, 1e-6 * smax, 1e-6);
}

/* The schedules alone, at every step of a short run. */
static void check_schedules(void) {
  for (int sk = 0; sk < 4; sk++) {
    for (int w = 0; w < 4; w++) {
      if (w >= 2 && sk != 3) continue; /* decay_epochs 0: cosine over the rest of the run */
      const double de = w >= 2 ? 0 : 2.5;
      const lr_schedule s = {.kind = (lr_schedule_kind)sk, .base_lr = 0.16, .decay_rate = 0.3,
                             .decay_epochs = de, .lr_min = sk == 3 ? 0.01 : 0,
                             .warmup_epochs = w % 2 ? 2 : 0, .steps_per_epoch = 7,
                             .total_steps = 70};
      for (int64_t step = 0; step < 70; step++) {
        const double got = lr_schedule_rate(&s, step);
        const double ref = sched64((lr_schedule_kind)sk, 0.16, 0.3, de, s.lr_min, s.warmup_epochs,
                                   7, 70, step);
        if (!(fabs(got - ref) <= 1e-12 * fabs(ref))) {
          fprintf(stderr, "schedule %d warm-up %d step %lld: %.17g, expected %.17g\n", sk, w,
                  (long long)step, got, ref);
          check_failures++;
        }
      }
      /* the ends: warm-up reaches the base rate; cosine ends at lr_min */
      if (w % 2) CHECK(fabs(lr_schedule_rate(&s, 13) - 0.16) < 1e-15);
      if (sk == 3) CHECK(fabs(lr_schedule_rate(&s, 69) - 0.01) < 1e-15);
    }
  }
}

static void print_floats(const char *name, const float *v, int64_t n, const char *end) {
  if (name) printf("\"%s\":", name);
  printf("[");
  for (int64_t i = 0; i < n; i++) printf("%s%.9g", i ? "," : "", (double)v[i]);
  printf("]%s", end);
}

static int dump(kern_backend *be, const char *kind_name) {
  const int kind = !strcmp(kind_name, "adamw") ? KERN_OPT_ADAMW : KERN_OPT_ADAM;
  static run_data d;
  make_data(&d, 42);
  d.t0 = 1;
  for (int s = 0; s < STEPS; s++) d.lr[s] = (double)(float)(0.001 * (1.0 + 0.25 * s));
  kern_opt o = make_opt(kind, 0.01);
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.epsilon = 1e-8f;
  if (run_cpu(be, &d, &o) != 0) return 1;
  printf("{\"beta1\":%.9g,\"beta2\":%.9g,\"eps\":%.9g,\"wd\":%.9g,\"lr\":[", (double)o.beta1,
         (double)o.beta2, (double)o.epsilon, (double)o.weight_decay);
  for (int s = 0; s < STEPS; s++) printf("%s%.9g", s ? "," : "", d.lr[s]);
  printf("],");
  print_floats("p0", d.p0, N, ",");
  printf("\"g\":[");
  for (int s = 0; s < STEPS; s++) {
    printf("%s", s ? "," : "");
    print_floats(NULL, d.g[s], N, "");
  }
  printf("],");
  print_floats("p", d.p, N, "}\n");
  return 0;
}

int main(int argc, char **argv) {
  kern_config cfg = {.device = KERN_DEVICE_CPU, .threads = 1};
  kern_backend *be = NULL;
  char err[256];
  if (kern_backend_init(&be, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    int rc = dump(be, argv[2]);
    kern_backend_free(be);
    return rc;
  }
  static run_data d;
  uint64_t seed = 1;
  for (int kind = 0; kind < KINDS; kind++) {
    for (int w = 0; w < 2; w++) {
      for (int sk = 0; sk < 4; sk++) {
        /* from step 0 (in the warm-up) and from step 3 (the decay) */
        check_rule(be, &d, kind, w ? 0.01 : 0.0, (lr_schedule_kind)sk, 0, seed++);
        check_rule(be, &d, kind, w ? 0.01 : 0.0, (lr_schedule_kind)sk, 3, seed++);
      }
    }
  }
  check_schedules();
  /* an unknown rule is an error, not a silent no-op */
  kern_opt bad = make_opt(KINDS, 0);
  CHECK(kern_opt_update(be, d.p, d.g[0], d.state, N, &bad) != 0);
  CHECK(kern_opt_state_per_elem((kern_opt_kind)KINDS) < 0);
  kern_backend_free(be);
  CHECK_DONE();
}
