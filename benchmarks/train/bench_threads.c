/* The ways of splitting one rank's batch-50 step over N threads, timed
 * side by side in alternating rounds (issue 16, part 2):
 *   cols  the op-by-op back end (kernels/cpu.c): every GEMM in column slices
 *         over a persistent team, M the whole batch, no gradient reduction;
 *   batch each thread runs the whole forward and backward on its slice of the
 *         batch into its own gradient copy, then the copies are summed in a
 *         fixed order (each thread sums its range of all copies).
 * Both run on the same team (kernels/cpu_team.h) so only the split differs;
 * the loss, the update and the gather are left out of these two.
 * Then the whole step as train/ runs it: op by op (1 thread: what
 * --threads 1 runs; N: column slices) and fused (kern_fused_step; with N
 * threads what --threads N runs for 1 rank: rows of the batch through the
 * forward and the input gradients, then rows of every dW, in pieces any
 * member takes). Prints median us per step and samples/s; exit 2 on a bad
 * flag. Usage: bench_threads [-t THREADS] [-b BATCH] [-n STEPS] [-r ROUNDS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/rng.h"
#include "kernels/backend.h"
#include "kernels/cpu_team.h"
#include "kernels/mlp_step.h"
#include "tfdist_config.h"
#include TFDIST_CBLAS_H

static const int64_t D[4] = {784, 300, 100, 10};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static float *rnd(base_rng *r, int64_t n) {
  float *p = aligned_alloc(64, ((size_t)n * 4 + 63) / 64 * 64);
  for (int64_t i = 0; i < n; i++) p[i] = base_rng_uniform(r) - 0.5f;
  return p;
}

typedef struct {
  int64_t B;
  float *params, *act[4], *dact[4];
  int64_t w_off[3], b_off[3], P;
} net;

static void net_init(net *m, base_rng *r, int64_t B) {
  m->B = B;
  int64_t off = 0;
  for (int k = 0; k < 3; k++) {
    m->w_off[k] = off;
    off += D[k] * D[k + 1];
    m->b_off[k] = off;
    off += D[k + 1];
  }
  m->P = off;
  m->params = rnd(r, off);
  for (int k = 0; k < 4; k++) {
    m->act[k] = rnd(r, B * D[k]);
    m->dact[k] = rnd(r, B * D[k]);
  }
}

/* One step's forward and backward through the back end (column slices). */
static void step_cols(kern_backend *be, net *m, float *grads) {
  for (int k = 0; k < 3; k++) {
    kern_dense_forward(be, m->act[k + 1], m->act[k], m->params + m->w_off[k],
                       m->params + m->b_off[k], m->B, D[k], D[k + 1],
                       k < 2 ? KERN_ACT_RELU : KERN_ACT_NONE);
  }
  kern_mem_zero_f32(be, grads, m->P);
  for (int k = 2; k >= 0; k--) {
    kern_dense_backward(be, k ? m->dact[k] : NULL, grads + m->w_off[k], grads + m->b_off[k],
                        m->dact[k + 1], m->act[k], m->params + m->w_off[k], m->act[k + 1],
                        m->B, D[k], D[k + 1], k < 2 ? KERN_ACT_RELU : KERN_ACT_NONE);
  }
}

/* The whole training step as train/ runs it on the CPU, op by op (gather,
 * forward, loss, zero, backward, update) or fused (one team job). */
typedef struct {
  kern_step s;
  const uint8_t *images, *labels;
  const int32_t *perm;
  int64_t cursor;
  float *state;
  kern_stats stats;
  int32_t *y;
} full_step;

static void full_init(full_step *f, net *m, float *grads, base_rng *r) {
  const int64_t ntrain = 6000;
  uint8_t *img = malloc((size_t)(ntrain * D[0])), *lab = malloc((size_t)ntrain);
  int32_t *perm = malloc((size_t)ntrain * sizeof(int32_t));
  for (int64_t i = 0; i < ntrain * D[0]; i++) img[i] = (uint8_t)(base_rng_uniform(r) * 256.0f);
  for (int64_t i = 0; i < ntrain; i++) {
    lab[i] = (uint8_t)((int)(base_rng_uniform(r) * 10.0f) % 10);
    perm[i] = (int32_t)((i * 7919) % ntrain);
  }
  memset(f, 0, sizeof *f);
  f->images = img, f->labels = lab, f->perm = perm;
  f->state = calloc((size_t)m->P, sizeof(float));
  f->y = calloc((size_t)m->B, sizeof(int32_t));
  kern_step *s = &f->s;
  *s = (kern_step){.n = m->B, .steps = 1, .params = m->params, .grads = grads,
                   .opt_state = f->state, .labels = f->y, .images = img, .image_labels = lab,
                   .perm = perm, .cursor = &f->cursor, .cursor_delta = 0, .stats = &f->stats,
                   .grad_scale = 1.0f / (float)m->B, .opt = {KERN_OPT_SGD, 1e-6f, 0.0f}};
  for (int k = 0; k < 4; k++) {
    s->dims[k] = D[k];
    s->act[k] = m->act[k];
    s->dact[k] = m->dact[k];
  }
  for (int k = 0; k < 3; k++) {
    s->w_off[k] = m->w_off[k];
    s->b_off[k] = m->b_off[k];
  }
}

static void step_full_ops(kern_backend *be, net *m, full_step *f) {
  const kern_step *s = &f->s;
  kern_gather_u8(be, m->act[0], f->y, f->images, f->labels, D[0], f->perm, &f->cursor, m->B);
  for (int k = 0; k < 3; k++) {
    kern_dense_forward(be, m->act[k + 1], m->act[k], m->params + m->w_off[k],
                       m->params + m->b_off[k], m->B, D[k], D[k + 1],
                       k < 2 ? KERN_ACT_RELU : KERN_ACT_NONE);
  }
  kern_xent(be, m->dact[3], &f->stats, m->act[3], f->y, m->B, D[3], s->grad_scale);
  kern_mem_zero_f32(be, s->grads, m->P);
  for (int k = 2; k >= 0; k--) {
    kern_dense_backward(be, k ? m->dact[k] : NULL, s->grads + m->w_off[k], s->grads + m->b_off[k],
                        m->dact[k + 1], m->act[k], m->params + m->w_off[k], m->act[k + 1],
                        m->B, D[k], D[k + 1], k < 2 ? KERN_ACT_RELU : KERN_ACT_NONE);
  }
  kern_opt_update(be, m->params, s->grads, f->state, m->P, &s->opt);
}

typedef struct {
  net *m;
  cpu_team *team;
  kern_backend **be1; /* one 1-thread back end per member */
  float **gcopy;      /* per member: its slice's gradient */
  float *grads;       /* the sum */
} batch_job;

static void batch_member(void *ctx, int tid, int n) {
  batch_job *j = ctx;
  net *m = j->m;
  int64_t r0 = m->B * tid / n, r1 = m->B * (tid + 1) / n, rows = r1 - r0;
  kern_backend *be = j->be1[tid];
  float *g = j->gcopy[tid];
  float *a[4], *da[4];
  for (int k = 0; k < 4; k++) {
    a[k] = m->act[k] + r0 * D[k];
    da[k] = m->dact[k] + r0 * D[k];
  }
  for (int k = 0; k < 3; k++) {
    kern_dense_forward(be, a[k + 1], a[k], m->params + m->w_off[k], m->params + m->b_off[k],
                       rows, D[k], D[k + 1], k < 2 ? KERN_ACT_RELU : KERN_ACT_NONE);
  }
  memset(g, 0, (size_t)m->P * sizeof(float));
  for (int k = 2; k >= 0; k--) {
    kern_dense_backward(be, k ? da[k] : NULL, g + m->w_off[k], g + m->b_off[k], da[k + 1], a[k],
                        m->params + m->w_off[k], a[k + 1], rows, D[k], D[k + 1],
                        k < 2 ? KERN_ACT_RELU : KERN_ACT_NONE);
  }
  cpu_team_barrier(j->team);
  int64_t lo, hi;
  cpu_team_range(m->P, tid, n, 16, &lo, &hi);
  for (int64_t i = lo; i < hi; i++) {
    float s = j->gcopy[0][i];
    for (int t = 1; t < n; t++) s += j->gcopy[t][i]; /* fixed order: member 0, 1, ... */
    j->grads[i] = s;
  }
}

int main(int argc, char **argv) {
  int threads = 2, steps = 300, rounds = 7;
  int64_t B = 50;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-b") && i + 1 < argc) B = atoll(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-r") && i + 1 < argc) rounds = atoi(argv[++i]);
    else {
      fprintf(stderr, "bench_threads: unknown flag %s (use -t THREADS -b BATCH -n STEPS -r ROUNDS)\n",
              argv[i]);
      return 2;
    }
  }
  if (threads < 1 || B < threads || steps < 1 || rounds < 1) {
    fprintf(stderr, "bench_threads: need -t >= 1, -b >= -t, -n >= 1, -r >= 1\n");
    return 2;
  }
  char err[256];
  kern_backend *one = NULL, *cols = NULL, **be1 = calloc((size_t)threads, sizeof *be1);
  kern_config k1 = {.device = KERN_DEVICE_CPU, .threads = 1};
  kern_config kn = {.device = KERN_DEVICE_CPU, .threads = threads};
  cpu_team *team = NULL;
  if (kern_backend_init(&one, &k1, err, sizeof err) != 0 ||
      kern_backend_init(&cols, &kn, err, sizeof err) != 0 ||
      cpu_team_init(&team, threads, 0, err, sizeof err) != 0) {
    fprintf(stderr, "bench_threads: %s\n", err);
    return 1;
  }
  for (int t = 0; t < threads; t++) {
    if (kern_backend_init(&be1[t], &k1, err, sizeof err) != 0) {
      fprintf(stderr, "bench_threads: %s\n", err);
      return 1;
    }
  }
  base_rng r;
  base_rng_seed(&r, 1, 9, 0);
  net m;
  net_init(&m, &r, B);
  float *grads = rnd(&r, m.P), **gcopy = calloc((size_t)threads, sizeof *gcopy);
  for (int t = 0; t < threads; t++) gcopy[t] = rnd(&r, m.P);
  batch_job bj = {&m, team, be1, gcopy, grads};
  full_step full;
  full_init(&full, &m, grads, &r);
  enum { WAYS = 7 };
  const char *names[WAYS] = {"1 thread", "cols", "batch", "step ops 1", "step fused 1",
                             "step ops N", "step fused N"};
  double *med[WAYS];
  for (int w = 0; w < WAYS; w++) med[w] = calloc((size_t)rounds, sizeof(double));
  double *t_step = malloc(sizeof(double) * (size_t)steps);
  for (int round = -1; round < rounds; round++) { /* round -1 warms up */
    for (int w = 0; w < WAYS; w++) {
      for (int s = 0; s < steps; s++) {
        double t0 = now();
        if (w == 0) step_cols(one, &m, grads);
        else if (w == 1) step_cols(cols, &m, grads);
        else if (w == 2) cpu_team_run(team, batch_member, &bj);
        else if (w == 3) step_full_ops(one, &m, &full);
        else if (w == 4) kern_fused_step(one, &full.s);
        else if (w == 5) step_full_ops(cols, &m, &full);
        else kern_fused_step(cols, &full.s);
        t_step[s] = now() - t0;
      }
      qsort(t_step, (size_t)steps, sizeof *t_step, cmp);
      if (round >= 0) med[w][round] = t_step[steps / 2];
    }
  }
  printf("# forward + backward of one batch-%lld step (784-300-100-10), %d threads; median of "
         "%d steps per round, median of %d alternating rounds\n", (long long)B, threads, steps,
         rounds);
  printf("# the first three: forward + backward only; \"step\": the whole step as train/ runs "
         "it (gather, loss, zeroing, update too), op by op or fused, 1 or N threads\n");
  printf("# %-12s %10s %12s %8s\n", "way", "us/step", "samples/s", "vs 1");
  double base = 0.0;
  for (int w = 0; w < WAYS; w++) {
    qsort(med[w], (size_t)rounds, sizeof(double), cmp);
    double us = med[w][rounds / 2] * 1e6;
    if (w == 0) base = us;
    printf("  %-12s %10.1f %12.0f %8.2f\n", names[w], us, (double)B / (us * 1e-6), base / us);
  }
  for (int t = 0; t < threads; t++) kern_backend_free(be1[t]);
  kern_backend_free(one);
  kern_backend_free(cols);
  cpu_team_free(team);
  return 0;
}
