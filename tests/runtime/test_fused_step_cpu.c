/* The CPU back end's fused step (kernels/mlp_step.h) against the op-by-op
 * step of train/ (gather, forward, loss, zero, backward, update, advance):
 * the same weights, momentum state, stats and cursor after 3 steps, as one
 * launch of 3 steps; bit-identical with 1 thread (writing the gradient is
 * adding it to zero), within float rounding with 2-4 threads, and the same
 * bits on a repeat with the same threads. A bad label fails the step with
 * the loss's error, naming the row, whichever member owns it. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "base/rng.h"
#include "model/model.h"

#define NTRAIN 300
#define STEPS 3

typedef struct {
  float *params, *grads, *state;
  kern_stats stats;
  int64_t cursor;
} run_out;

static void run(int threads, int fused, kern_opt_kind kind, run_out *o) {
  kern_backend *be = NULL;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = threads};
  char err[256];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "backend: %s\n", err);
    check_failures++;
    return;
  }
  model_layout l;
  model_layout_init(&l, 784, 45, 23, 10); /* odd widths: members own uneven column ranges */
  const int64_t P = l.total_elems, B = 40;
  model_work w;
  CHECK(model_work_init(&w, be, &l, B) == 0);
  static uint8_t images[NTRAIN * 784], labels[NTRAIN];
  static int32_t perm[NTRAIN];
  base_rng r;
  base_rng_seed(&r, 21, 22, 23);
  for (int64_t i = 0; i < NTRAIN * 784; i++) images[i] = (uint8_t)(base_rng_uniform(&r) * 256.0f);
  for (int64_t i = 0; i < NTRAIN; i++) {
    labels[i] = (uint8_t)(base_rng_uniform(&r) * 10.0f) % 10;
    perm[i] = (int32_t)((i * 7 + 3) % NTRAIN);
  }
  o->params = malloc((size_t)P * sizeof(float));
  o->grads = malloc((size_t)P * sizeof(float));
  o->state = calloc((size_t)P, sizeof(float));
  model_init_params(&l, o->params, 5);
  for (int64_t i = 0; i < P; i++) o->grads[i] = 1e9f; /* overwritten by either path */
  memset(&o->stats, 0, sizeof o->stats);
  o->cursor = 5;
  const kern_opt opt = {.kind = kind, .lr = 0.05f, .momentum = 0.9f, .step = 1};
  const float scale = 1.0f / (float)B;
  if (fused) {
    kern_step s = {.n = B, .steps = STEPS, .params = o->params, .grads = o->grads,
                   .opt_state = o->state, .images = images, .image_labels = labels, .perm = perm,
                   .cursor = &o->cursor, .cursor_delta = B, .stats = &o->stats,
                   .grad_scale = scale, .opt = opt};
    model_step_shape(&s, &l, &w);
    size_t bytes = 1;
    CHECK(kern_fused_step_ws(be, &s, &bytes) == 0);
    CHECK(kern_fused_step(be, &s) == 0);
  } else {
    for (int st = 0; st < STEPS; st++) {
      CHECK(kern_gather_u8(be, w.act[0], w.labels, images, labels, 784, perm, &o->cursor, B) == 0);
      CHECK(model_forward(&w, o->params, B) == 0);
      CHECK(kern_xent(be, w.dact[3], &o->stats, w.act[3], w.labels, B, 10, scale) == 0);
      CHECK(kern_mem_zero_f32(be, o->grads, P) == 0);
      CHECK(model_backward(&w, o->params, o->grads, B, NULL, NULL) == 0);
      CHECK(kern_opt_update(be, o->params, o->grads, o->state, P, &opt) == 0);
      CHECK(kern_cursor_advance(be, &o->cursor, B) == 0);
    }
  }
  model_work_free(&w);
  kern_backend_free(be);
}

static void run_free(run_out *o) {
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
  kern_backend *be = NULL;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = threads};
  char err[256];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "backend: %s\n", err);
    check_failures++;
    return;
  }
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

int main(void) {
  for (int t = 1; t <= 4; t++) bad_label(t);
  model_layout l;
  model_layout_init(&l, 784, 45, 23, 10);
  const int64_t P = l.total_elems;
  for (int kind = 0; kind < 2; kind++) {
    run_out ref;
    run(1, 0, (kern_opt_kind)kind, &ref);
    for (int t = 1; t <= 4; t++) {
      run_out f, again;
      run(t, 1, (kern_opt_kind)kind, &f);
      run(t, 1, (kern_opt_kind)kind, &again);
      /* 1 thread: the same calls on the same columns, so the same bits;
       * more: each GEMM's column blocks differ, float rounding only */
      const double tol = t == 1 ? 0.0 : 1e-6;
      const struct { const char *what; const float *a, *b; } cmp[] = {
        {"params", f.params, ref.params}, {"grads", f.grads, ref.grads},
        {"state", f.state, ref.state}};
      for (int c = 0; c < 3; c++) {
        double d = max_diff(cmp[c].a, cmp[c].b, P);
        if (!(d <= tol)) {
          fprintf(stderr, "opt %d, %d threads: fused %s differ from op by op by %g > %g\n", kind,
                  t, cmp[c].what, d, tol);
          check_failures++;
        }
      }
      if (memcmp(f.params, again.params, (size_t)P * sizeof(float)) != 0) {
        fprintf(stderr, "opt %d, %d threads: a repeat gave other bits\n", kind, t);
        check_failures++;
      }
      CHECK_EQ_INT(f.cursor, ref.cursor);
      CHECK(f.stats.samples == ref.stats.samples && f.stats.last_samples == ref.stats.last_samples);
      if (!(fabs(f.stats.loss_sum - ref.stats.loss_sum) <= 1e-4 * STEPS)) {
        fprintf(stderr, "opt %d, %d threads: loss sum %.9g vs %.9g\n", kind, t, f.stats.loss_sum,
                ref.stats.loss_sum);
        check_failures++;
      }
      run_free(&f);
      run_free(&again);
    }
    run_free(&ref);
  }
  CHECK_DONE();
}
