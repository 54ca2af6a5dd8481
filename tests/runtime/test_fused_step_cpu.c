/* The CPU back end's fused step (kernels/mlp_step.h) against the op-by-op
 * step of train/ (gather, forward, loss, zero, backward, update, advance),
 * on random images, labels and row order: the same weights, gradient,
 * momentum state, stats and cursor after up to 30 steps, run as launches
 * of up to 30 steps; bit-identical with 1 thread (writing the gradient is
 * adding it to zero), within 1e-6 with 2-4 threads, and the same bits on a
 * repeat with the same threads. Shapes: batches of 1 to 64 rows (fewer than
 * the team's members, odd, ones cut on 8-row boundaries), hidden widths
 * from 2 x 1 to the default 300 x 100. A bad label fails the step with the
 * loss's error, naming the row, whichever member owns it; one in a chain's
 * second step leaves what the first step left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "base/rng.h"
#include "model/model.h"

#define NTRAIN 300
#define PERM 2048 /* rows of the epoch: 5 + 30 steps x 64 rows fit */

/* One comparison: batch, hidden widths, steps and steps per launch. */
typedef struct {
  int64_t batch, h1, h2, steps, chain;
  kern_opt_kind kind;
} shape;

typedef struct {
  float *params, *grads, *state, *init;
  kern_stats stats;
  int64_t cursor;
} run_out;

/* Random images and labels, and an epoch's order that draws rows at random. */
static void make_data(uint8_t *images, uint8_t *labels, int32_t *perm) {
  base_rng r;
  base_rng_seed(&r, 21, 22, 23);
  for (int64_t i = 0; i < NTRAIN * 784; i++) images[i] = (uint8_t)(base_rng_uniform(&r) * 256.0f);
  for (int64_t i = 0; i < NTRAIN; i++) labels[i] = (uint8_t)base_rng_below(&r, 10);
  for (int64_t i = 0; i < PERM; i++) perm[i] = (int32_t)base_rng_below(&r, NTRAIN);
}

/* A CPU back end of this many threads; NULL (a failed check) when none starts. */
static kern_backend *backend_open(int threads) {
  kern_backend *be = NULL;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = threads};
  char err[256];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "backend: %s\n", err);
    check_failures++;
    return NULL;
  }
  return be;
}

/* sh.steps steps from the same start: op by op, or fused in launches of
 * sh.chain steps (the last one shorter). */
static void run(int threads, int fused, shape sh, run_out *o) {
  memset(o, 0, sizeof *o);
  kern_backend *be = backend_open(threads);
  if (!be) return;
  model_layout l;
  model_layout_init(&l, 784, sh.h1, sh.h2, 10);
  const int64_t P = l.total_elems, B = sh.batch;
  model_work w;
  CHECK(model_work_init(&w, be, &l, B) == 0);
  static uint8_t images[NTRAIN * 784], labels[NTRAIN];
  static int32_t perm[PERM];
  make_data(images, labels, perm);
  o->params = malloc((size_t)P * sizeof(float));
  o->grads = malloc((size_t)P * sizeof(float));
  o->state = calloc((size_t)P, sizeof(float));
  o->init = malloc((size_t)P * sizeof(float));
  model_init_params(&l, o->params, 5);
  memcpy(o->init, o->params, (size_t)P * sizeof(float));
  for (int64_t i = 0; i < P; i++) o->grads[i] = 1e9f; /* overwritten by either path */
  o->cursor = 5;
  const kern_opt opt = {.kind = sh.kind, .lr = 0.05f, .momentum = 0.9f, .step = 1};
  const float scale = 1.0f / (float)B;
  for (int64_t done = 0; fused && done < sh.steps; done += sh.chain) {
    kern_step s = {.n = B, .steps = sh.steps - done < sh.chain ? sh.steps - done : sh.chain,
                   .params = o->params, .grads = o->grads, .opt_state = o->state,
                   .images = images, .image_labels = labels, .perm = perm,
                   .cursor = &o->cursor, .cursor_delta = B, .stats = &o->stats,
                   .grad_scale = scale, .opt = opt};
    model_step_shape(&s, &l, &w);
    size_t bytes = 1;
    CHECK(kern_fused_step_ws(be, &s, &bytes) == 0);
    CHECK(kern_fused_step(be, &s) == 0);
  }
  for (int64_t st = 0; !fused && st < sh.steps; st++) {
    CHECK(kern_gather_u8(be, w.act[0], w.labels, images, labels, 784, perm, &o->cursor, B) == 0);
    CHECK(model_forward(&w, o->params, B) == 0);
    CHECK(kern_xent(be, w.dact[3], &o->stats, w.act[3], w.labels, B, 10, scale) == 0);
    CHECK(kern_mem_zero_f32(be, o->grads, P) == 0);
    CHECK(model_backward(&w, o->params, o->grads, B, NULL, NULL) == 0);
    CHECK(kern_opt_update(be, o->params, o->grads, o->state, P, &opt) == 0);
    CHECK(kern_cursor_advance(be, &o->cursor, B) == 0);
  }
  model_work_free(&w);
  kern_backend_free(be);
}

static void run_free(run_out *o) {
  free(o->init);
  free(o->params);
  free(o->grads);
  free(o->state);
}

static double max_diff(const float *a, const float *b, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    if (d < 0) d = -d;
    if (!(d <= m)) m = d; /* NaN sticks */
  }
  return m;
}

/* A bad label in the batch: the fused step fails with the op-by-op loss's
 * one-line error naming the same row, leaves the cursor where it was, and
 * the team is still usable (a second call fails the same way). The bad row
 * is in the last member's rows. */
static void bad_label(int threads) {
  kern_backend *be = backend_open(threads);
  if (!be) return;
  model_layout l;
  model_layout_init(&l, 784, 45, 23, 10);
  enum { B = 40, BAD_ROW = 37 }; /* two batches of rows, the bad one in the first */
  const int64_t P = l.total_elems;
  model_work w;
  CHECK(model_work_init(&w, be, &l, B) == 0);
  static uint8_t images[2 * B * 784], labels[2 * B];
  static int32_t perm[2 * B];
  for (int64_t i = 0; i < 2 * B * 784; i++) images[i] = (uint8_t)(i * 31 % 251);
  for (int64_t i = 0; i < 2 * B; i++) {
    labels[i] = (uint8_t)(i % 10);
    perm[i] = (int32_t)i;
  }
  labels[BAD_ROW] = 11;
  float *params = malloc((size_t)P * sizeof(float)), *grads = malloc((size_t)P * sizeof(float));
  float *state = calloc((size_t)P, sizeof(float));
  model_init_params(&l, params, 5);
  kern_stats stats = {0};
  int64_t cursor = 0;
  kern_step s = {.n = B, .steps = 2, .params = params, .grads = grads, .opt_state = state,
                 .images = images, .image_labels = labels, .perm = perm, .cursor = &cursor,
                 .cursor_delta = B, .stats = &stats, .grad_scale = 1.0f / (float)B,
                 .opt = {.kind = KERN_OPT_SGD, .lr = 0.05f}};
  model_step_shape(&s, &l, &w);
  for (int again = 0; again < 2; again++) {
    CHECK(kern_fused_step(be, &s) == -1);
    if (!strstr(kern_error(be), "label 11 out of range at row 37")) {
      fprintf(stderr, "%d threads: bad label: error \"%s\"\n", threads, kern_error(be));
      check_failures++;
    }
    CHECK_EQ_INT(cursor, 0);
    CHECK(stats.samples == 0.0);
  }
  free(params);
  free(grads);
  free(state);
  model_work_free(&w);
  kern_backend_free(be);
}

/* A bad label in the second step of a 3-step launch: the launch fails with
 * that row's error, and leaves what one good step leaves (the same bits:
 * weights, cursor, stats); the third step does not run. */
static void bad_label_late(int threads, int64_t B) {
  kern_backend *be = backend_open(threads);
  if (!be) return;
  char want[64];
  model_layout l;
  model_layout_init(&l, 784, 45, 23, 10);
  const int64_t P = l.total_elems, bad = B + B / 2; /* step 2, row B / 2 */
  model_work w;
  CHECK(model_work_init(&w, be, &l, B) == 0);
  static uint8_t images[NTRAIN * 784], labels[NTRAIN];
  static int32_t perm[PERM];
  make_data(images, labels, perm);
  float *params[2], *grads = malloc((size_t)P * sizeof(float));
  float *state[2];
  kern_stats stats[2];
  memset(stats, 0, sizeof stats);
  int64_t cursor[2] = {0, 0};
  for (int v = 0; v < 2; v++) { /* 0: one good step; 1: the launch that fails */
    params[v] = malloc((size_t)P * sizeof(float));
    state[v] = calloc((size_t)P, sizeof(float));
    model_init_params(&l, params[v], 5);
    const uint8_t keep = labels[perm[bad]];
    if (v == 1) labels[perm[bad]] = 12;
    kern_step s = {.n = B, .steps = v == 0 ? 1 : 3, .params = params[v], .grads = grads,
                   .opt_state = state[v], .images = images, .image_labels = labels,
                   .perm = perm, .cursor = &cursor[v], .cursor_delta = B, .stats = &stats[v],
                   .grad_scale = 1.0f / (float)B, .opt = {.kind = KERN_OPT_MOMENTUM,
                   .lr = 0.05f, .momentum = 0.9f, .step = 1}};
    model_step_shape(&s, &l, &w);
    CHECK(kern_fused_step(be, &s) == (v == 0 ? 0 : -1));
    labels[perm[bad]] = keep;
  }
  snprintf(want, sizeof want, "label 12 out of range at row %lld", (long long)(B / 2));
  if (!strstr(kern_error(be), want)) {
    fprintf(stderr, "%d threads, batch %lld: late bad label: error \"%s\"\n", threads,
            (long long)B, kern_error(be));
    check_failures++;
  }
  CHECK_EQ_INT(cursor[1], B);
  CHECK(stats[1].samples == (double)B && stats[1].loss_sum == stats[0].loss_sum);
  if (memcmp(params[0], params[1], (size_t)P * sizeof(float)) != 0 ||
      memcmp(state[0], state[1], (size_t)P * sizeof(float)) != 0) {
    fprintf(stderr, "%d threads, batch %lld: a launch failing in step 2 left other weights "
            "than one good step\n", threads, (long long)B);
    check_failures++;
  }
  for (int v = 0; v < 2; v++) {
    free(params[v]);
    free(state[v]);
  }
  free(grads);
  model_work_free(&w);
  kern_backend_free(be);
}

/* Fused with 1 to 4 threads against op by op with 1: the same bits with 1
 * (the same calls on the same columns), within 1e-6 with more (each GEMM's
 * blocks differ: float rounding only), and the same bits on a repeat with
 * the same threads however the tickets fell to members. */
static void compare(shape sh) {
  model_layout l;
  model_layout_init(&l, 784, sh.h1, sh.h2, 10);
  const int64_t P = l.total_elems;
  run_out ref;
  run(1, 0, sh, &ref);
  if (!(max_diff(ref.params, ref.init, P) > 1e-3)) {
    fprintf(stderr, "batch %lld, %lldx%lld: nothing was trained\n", (long long)sh.batch,
            (long long)sh.h1, (long long)sh.h2);
    check_failures++;
  }
  for (int t = 1; t <= 4; t++) {
    run_out f, again;
    run(t, 1, sh, &f);
    run(t, 1, sh, &again);
    const double tol = t == 1 ? 0.0 : 1e-6;
    const struct { const char *what; const float *a, *b, *c; } cmp[] = {
      {"params", f.params, ref.params, again.params}, {"grads", f.grads, ref.grads, again.grads},
      {"state", f.state, ref.state, again.state}};
    for (int c = 0; c < 3; c++) {
      double d = max_diff(cmp[c].a, cmp[c].b, P);
      if (!(d <= tol)) {
        fprintf(stderr, "batch %lld, %lldx%lld, opt %d, %d threads, %lld steps by %lld: fused "
                "%s differ from op by op by %g > %g\n", (long long)sh.batch, (long long)sh.h1,
                (long long)sh.h2, (int)sh.kind, t, (long long)sh.steps, (long long)sh.chain,
                cmp[c].what, d, tol);
        check_failures++;
      }
      if (memcmp(cmp[c].a, cmp[c].c, (size_t)P * sizeof(float)) != 0) {
        fprintf(stderr, "batch %lld, %lldx%lld, %d threads: a repeat gave other %s bits\n",
                (long long)sh.batch, (long long)sh.h1, (long long)sh.h2, t, cmp[c].what);
        check_failures++;
      }
    }
    CHECK_EQ_INT(f.cursor, ref.cursor);
    CHECK(f.stats.samples == ref.stats.samples && f.stats.last_samples == ref.stats.last_samples);
    CHECK(f.stats.loss_sum == again.stats.loss_sum);
    if (!(fabs(f.stats.loss_sum - ref.stats.loss_sum) <= 1e-4 * (double)sh.steps)) {
      fprintf(stderr, "batch %lld, %d threads: loss sum %.9g vs %.9g\n", (long long)sh.batch, t,
              f.stats.loss_sum, ref.stats.loss_sum);
      check_failures++;
    }
    run_free(&f);
    run_free(&again);
  }
  run_free(&ref);
}

int main(void) {
  for (int t = 1; t <= 4; t++) bad_label(t);
  for (int t = 1; t <= 4; t++) {
    bad_label_late(t, 1); /* one row: only the last piece has rows */
    bad_label_late(t, 33);
  }
  /* Batches below, at and above the team's size, odd ones, ones where row
   * pieces start on multiples of 8 (64 for 4 pieces, 50 for 2 and 3);
   * widths narrower than the team, odd ones, the default model's; one
   * launch of a whole 30-step chain, and chains cut at odd points. */
  const shape shapes[] = {
    {40, 45, 23, 3, 3, KERN_OPT_SGD},        {40, 45, 23, 3, 3, KERN_OPT_MOMENTUM},
    {1, 45, 23, 30, 30, KERN_OPT_MOMENTUM},  {7, 45, 23, 30, 7, KERN_OPT_SGD},
    {33, 45, 23, 30, 32, KERN_OPT_MOMENTUM}, {50, 45, 23, 30, 13, KERN_OPT_SGD},
    {64, 5, 3, 30, 30, KERN_OPT_MOMENTUM},   {3, 2, 1, 30, 1, KERN_OPT_MOMENTUM},
    {50, 300, 100, 12, 12, KERN_OPT_MOMENTUM}, {33, 300, 100, 12, 5, KERN_OPT_SGD},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) compare(shapes[i]);
  /* Every wait sleeping on the futex at once: the same results. */
  setenv("TFDIST_TEAM_SPIN_US", "0", 1);
  compare(shapes[3]);
  unsetenv("TFDIST_TEAM_SPIN_US");
  CHECK_DONE();
}
