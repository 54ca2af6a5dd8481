/* Each CUDA backend op against the CPU backend on random data of several
 * shapes, odd ones included, with poisoned outputs and guard words. FP32,
 * TF32 and the unfused (cuDNN activation) path. Exits 77 without a GPU. */
#include "tests/gpu/gpu_check.h"

/* Per-op tolerances, GPU vs the CPU backend (both float32), and why. */
typedef struct {
  const char *op;
  double rtol, atol_rel; /* atol = atol_rel * max|ref| */
  const char *why;
} tol_row;

static const tol_row TOL_GEMM_FP32 = {
  "gemm fp32", 1e-5, 1e-5,
  "cuBLAS and OpenBLAS sum in different orders; fp32 eps 6e-8 * sqrt(K <= 1000) ~ 2e-6 of the "
  "magnitude, so 1e-5 leaves a 5x margin"};
static const tol_row TOL_GEMM_SMALL = {
  "gemm fp32, small kernels", 1e-5, 1e-5,
  "FP32 FMAs as in cuBLAS, summed in another order (8 warps x K/8, split-K partials in split "
  "order); the same ~sqrt(K) eps bound, so the cuBLAS row's 1e-5 holds"};
static const tol_row TOL_GEMM_TF32 = {
  "gemm tf32", 3e-3, 3e-3,
  "TF32 rounds each operand to 10 mantissa bits (2^-11 = 4.9e-4 relative); products carry ~1e-3 "
  "and K-term sums partly average it out"};
static const tol_row TOL_COLSUM = {
  "bias grad colsum", 1e-5, 1e-5, "n-term float sums in another order (block tree vs row loop)"};
static const tol_row TOL_XENT = {
  "xent grad / loss", 1e-5, 1e-6,
  "CUDA expf/logf are within 2 ulp of glibc; one IEEE division; losses summed in double"};
static const tol_row TOL_SOFTMAX = {
  "softmax (cuDNN)", 1e-5, 1e-6, "exp within a few ulp, 10-term sums in another order"};
static const tol_row TOL_EXACT = {
  "mask, gather, sgd, momentum, cursor", 0, 0,
  "the same float operations in the same order (explicit _rn intrinsics, no FMA contraction)"};

static void tol_print(void) {
  const tol_row *rows[] = {&TOL_GEMM_FP32, &TOL_GEMM_SMALL, &TOL_GEMM_TF32, &TOL_COLSUM, &TOL_XENT, &TOL_SOFTMAX,
                           &TOL_EXACT};
  printf("tolerances: |gpu - cpu| <= atol_rel*max|cpu| + rtol*|cpu|\n");
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    printf("  %-36s rtol %-6.0e atol_rel %-6.0e %s\n", rows[i]->op, rows[i]->rtol,
           rows[i]->atol_rel, rows[i]->why);
  }
}

typedef struct {
  int64_t n, in, out;
} shape3;

static const shape3 SHAPES[] = {
  {1, 1, 1}, {2, 3, 1}, {3, 5, 7}, {33, 17, 129}, {50, 784, 300}, {50, 300, 100},
  {50, 100, 10}, {257, 64, 3}, {129, 784, 300}, {1000, 100, 10},
};
#define NSHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* For the small kernels: K long against a small output (many K splits,
 * uneven last split), partial edge tiles in both directions, a ones row of
 * the bias gradient alone in its tile (in_dim % 8 == 0), batch 256. */
static const shape3 SPLIT_SHAPES[] = {
  {5, 1000, 7}, {3, 2051, 33}, {9, 640, 65}, {256, 784, 300}, {50, 8, 300}, {17, 1200, 1},
};
#define NSPLIT (sizeof SPLIT_SHAPES / sizeof SPLIT_SHAPES[0])

static gc_rng rng = {12345};
static kern_backend *cpu;

static int inputs_unchanged(kern_backend *gpu, const char *what, const void *dev, const void *host,
                            size_t bytes) {
  void *back = gc_xmalloc(bytes);
  int ok = gc_fetch(gpu, what, back, dev, bytes, 0);
  if (ok && memcmp(back, host, bytes) != 0) {
    fprintf(stderr, "%s: an input was modified\n", what);
    check_failures++;
    ok = 0;
  }
  free(back);
  return ok;
}

static void test_dense_forward(kern_backend *gpu, const char *tag, shape3 s, kern_act act,
                               const tol_row *tol) {
  const int64_t n = s.n, in = s.in, out = s.out;
  const size_t xb = (size_t)(n * in) * 4, wb = (size_t)(in * out) * 4, ob = (size_t)(n * out) * 4;
  float *x = gc_xmalloc(xb), *w = gc_xmalloc(wb), *b = gc_xmalloc((size_t)out * 4);
  float *ref = gc_xmalloc(ob), *got = gc_xmalloc(ob);
  const float lim = sqrtf(6.0f / (float)(in + out));
  gc_fill(&rng, x, n * in, 0.0f, 1.0f);
  gc_fill(&rng, w, in * out, -lim, lim);
  gc_fill(&rng, b, out, -0.1f, 0.1f);
  if (kern_dense_forward(cpu, ref, x, w, b, n, in, out, act) != 0) gc_die(cpu, "cpu forward");
  float *dx = gc_dev(gpu, x, xb), *dw = gc_dev(gpu, w, wb), *db = gc_dev(gpu, b, (size_t)out * 4);
  float *dy = gc_dev(gpu, NULL, ob);
  if (kern_dense_forward(gpu, dy, dx, dw, db, n, in, out, act) != 0) gc_die(gpu, "gpu forward");
  char what[96];
  snprintf(what, sizeof what, "%s forward%s (%lld,%lld,%lld)", tag, act ? "+relu" : "",
           (long long)n, (long long)in, (long long)out);
  if (gc_fetch(gpu, what, got, dy, ob, 1)) gc_close(what, got, ref, n * out, tol->rtol, tol->atol_rel);
  inputs_unchanged(gpu, what, dx, x, xb);
  inputs_unchanged(gpu, what, dw, w, wb);
  inputs_unchanged(gpu, what, db, b, (size_t)out * 4);
  void *bufs[] = {dx, dw, db, dy};
  for (int i = 0; i < 4; i++) kern_mem_free(gpu, bufs[i]);
  free(x), free(w), free(b), free(ref), free(got);
}

/* accumulate: dw and db start non-zero, so += is tested, not just =. */
static void test_dense_backward(kern_backend *gpu, const char *tag, shape3 s, kern_act act,
                                int with_din, int accumulate, const tol_row *tol) {
  const int64_t n = s.n, in = s.in, out = s.out;
  const size_t xb = (size_t)(n * in) * 4, wb = (size_t)(in * out) * 4, ob = (size_t)(n * out) * 4;
  float *x = gc_xmalloc(xb), *w = gc_xmalloc(wb), *b = gc_xmalloc((size_t)out * 4);
  float *y = gc_xmalloc(ob), *dout = gc_xmalloc(ob), *dout_ref = gc_xmalloc(ob);
  float *dw0 = gc_xmalloc(wb), *db0 = gc_xmalloc((size_t)out * 4);
  float *dw_ref = gc_xmalloc(wb), *db_ref = gc_xmalloc((size_t)out * 4), *din_ref = gc_xmalloc(xb);
  float *got = gc_xmalloc(xb > wb ? (xb > ob ? xb : ob) : (wb > ob ? wb : ob));
  const float lim = sqrtf(6.0f / (float)(in + out));
  gc_fill(&rng, x, n * in, 0.0f, 1.0f);
  gc_fill(&rng, w, in * out, -lim, lim);
  gc_fill(&rng, b, out, -0.1f, 0.1f);
  /* y is a real forward output, so the ReLU mask has zeros where it should. */
  if (kern_dense_forward(cpu, y, x, w, b, n, in, out, act) != 0) gc_die(cpu, "cpu forward");
  gc_fill(&rng, dout, n * out, -0.05f, 0.05f);
  if (accumulate) {
    gc_fill(&rng, dw0, in * out, -0.5f, 0.5f);
    gc_fill(&rng, db0, out, -0.5f, 0.5f);
  }
  memcpy(dout_ref, dout, ob);
  memcpy(dw_ref, dw0, wb);
  memcpy(db_ref, db0, (size_t)out * 4);
  if (kern_dense_backward(cpu, with_din ? din_ref : NULL, dw_ref, db_ref, dout_ref, x, w, y, n, in,
                          out, act) != 0) {
    gc_die(cpu, "cpu backward");
  }
  float *d_x = gc_dev(gpu, x, xb), *d_w = gc_dev(gpu, w, wb), *d_y = gc_dev(gpu, y, ob);
  float *d_dout = gc_dev(gpu, dout, ob), *d_dw = gc_dev(gpu, dw0, wb);
  float *d_db = gc_dev(gpu, db0, (size_t)out * 4);
  float *d_din = with_din ? gc_dev(gpu, NULL, xb) : NULL;
  if (kern_dense_backward(gpu, d_din, d_dw, d_db, d_dout, d_x, d_w, d_y, n, in, out, act) != 0) {
    gc_die(gpu, "gpu backward");
  }
  char what[96];
  const char *kind = accumulate ? "+=" : "=";
  snprintf(what, sizeof what, "%s bwd%s dw%s (%lld,%lld,%lld)", tag, act ? "+relu" : "", kind,
           (long long)n, (long long)in, (long long)out);
  if (gc_fetch(gpu, what, got, d_dw, wb, 1)) gc_close(what, got, dw_ref, in * out, tol->rtol, tol->atol_rel);
  snprintf(what, sizeof what, "%s bwd%s db%s (%lld,%lld,%lld)", tag, act ? "+relu" : "", kind,
           (long long)n, (long long)in, (long long)out);
  if (gc_fetch(gpu, what, got, d_db, (size_t)out * 4, 1)) {
    gc_close(what, got, db_ref, out, TOL_COLSUM.rtol, TOL_COLSUM.atol_rel);
  }
  snprintf(what, sizeof what, "%s bwd%s dz (masked dout) (%lld,%lld,%lld)", tag, act ? "+relu" : "",
           (long long)n, (long long)in, (long long)out);
  if (gc_fetch(gpu, what, got, d_dout, ob, 1)) gc_close(what, got, dout_ref, n * out, 0.0, 0.0);
  if (with_din) {
    snprintf(what, sizeof what, "%s bwd%s din (%lld,%lld,%lld)", tag, act ? "+relu" : "",
             (long long)n, (long long)in, (long long)out);
    if (gc_fetch(gpu, what, got, d_din, xb, 1)) gc_close(what, got, din_ref, n * in, tol->rtol, tol->atol_rel);
  }
  inputs_unchanged(gpu, "backward x", d_x, x, xb);
  inputs_unchanged(gpu, "backward w", d_w, w, wb);
  inputs_unchanged(gpu, "backward y", d_y, y, ob);
  void *bufs[] = {d_x, d_w, d_y, d_dout, d_dw, d_db, d_din};
  for (int i = 0; i < 7; i++) kern_mem_free(gpu, bufs[i]);
  void *hb[] = {x, w, b, y, dout, dout_ref, dw0, db0, dw_ref, db_ref, din_ref, got};
  for (int i = 0; i < 12; i++) free(hb[i]);
}

/* The same inputs twice give the same bits: split-K partials are summed in
 * a fixed order, never by float atomics. Forward with ReLU, then backward
 * (dw +=, db +=, din) from the same starting gradients. */
static void test_repeatable(kern_backend *gpu, const char *tag, shape3 s) {
  const int64_t n = s.n, in = s.in, out = s.out;
  const size_t xb = (size_t)(n * in) * 4, wb = (size_t)(in * out) * 4, ob = (size_t)(n * out) * 4;
  const size_t bb = (size_t)out * 4;
  float *x = gc_xmalloc(xb), *w = gc_xmalloc(wb), *b = gc_xmalloc(bb), *dout = gc_xmalloc(ob);
  float *g1 = gc_xmalloc(wb), *db0 = gc_xmalloc(bb);
  gc_fill(&rng, x, n * in, 0.0f, 1.0f);
  gc_fill(&rng, w, in * out, -0.2f, 0.2f);
  gc_fill(&rng, b, out, -0.1f, 0.1f);
  gc_fill(&rng, dout, n * out, -0.05f, 0.05f);
  gc_fill(&rng, g1, in * out, -0.5f, 0.5f);
  gc_fill(&rng, db0, out, -0.5f, 0.5f);
  float *d_x = gc_dev(gpu, x, xb), *d_w = gc_dev(gpu, w, wb), *d_b = gc_dev(gpu, b, bb);
  float *d_y[2], *d_dout[2], *d_dw[2], *d_db[2], *d_din[2];
  for (int r = 0; r < 2; r++) {
    d_y[r] = gc_dev(gpu, NULL, ob);
    d_dout[r] = gc_dev(gpu, dout, ob);
    d_dw[r] = gc_dev(gpu, g1, wb);
    d_db[r] = gc_dev(gpu, db0, bb);
    d_din[r] = gc_dev(gpu, NULL, xb);
    if (kern_dense_forward(gpu, d_y[r], d_x, d_w, d_b, n, in, out, KERN_ACT_RELU) != 0 ||
        kern_dense_backward(gpu, d_din[r], d_dw[r], d_db[r], d_dout[r], d_x, d_w, d_y[r], n, in,
                            out, KERN_ACT_RELU) != 0) {
      gc_die(gpu, "repeatable");
    }
  }
  char what[96];
  const struct { const char *name; float **dev; size_t bytes; } outs[] = {
    {"y", d_y, ob}, {"dz", d_dout, ob}, {"dw", d_dw, wb}, {"db", d_db, bb}, {"din", d_din, xb}};
  for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
    snprintf(what, sizeof what, "%s twice, same %s (%lld,%lld,%lld)", tag, outs[k].name,
             (long long)n, (long long)in, (long long)out);
    float *h1 = gc_xmalloc(outs[k].bytes), *h2 = gc_xmalloc(outs[k].bytes);
    if (gc_fetch(gpu, what, h1, outs[k].dev[0], outs[k].bytes, 1) &&
        gc_fetch(gpu, what, h2, outs[k].dev[1], outs[k].bytes, 1)) {
      gc_exact(what, h2, h1, outs[k].bytes);
    }
    free(h1), free(h2);
  }
  for (int r = 0; r < 2; r++) {
    void *bufs[] = {d_y[r], d_dout[r], d_dw[r], d_db[r], d_din[r]};
    for (int i = 0; i < 5; i++) kern_mem_free(gpu, bufs[i]);
  }
  kern_mem_free(gpu, d_x), kern_mem_free(gpu, d_w), kern_mem_free(gpu, d_b);
  free(x), free(w), free(b), free(dout), free(g1), free(db0);
}

static void rand_labels(int32_t *y, int64_t n, int64_t classes) {
  for (int64_t i = 0; i < n; i++) y[i] = (int32_t)(gc_next(&rng) % (uint64_t)classes);
}

/* Two batches into the same stats: sums accumulate, last_* is batch two. */
static void test_xent(kern_backend *gpu, int64_t n, int64_t classes) {
  const size_t zb = (size_t)(n * classes) * 4;
  float *z1 = gc_xmalloc(zb), *z2 = gc_xmalloc(zb), *ref = gc_xmalloc(zb), *got = gc_xmalloc(zb);
  int32_t *y1 = gc_xmalloc((size_t)n * 4), *y2 = gc_xmalloc((size_t)n * 4);
  gc_fill(&rng, z1, n * classes, -4.0f, 4.0f);
  gc_fill(&rng, z2, n * classes, -4.0f, 4.0f);
  rand_labels(y1, n, classes);
  rand_labels(y2, n, classes);
  kern_stats st_ref, st_got, zero;
  memset(&st_ref, 0, sizeof st_ref);
  memset(&zero, 0, sizeof zero);
  const float scale = 1.0f / (float)n;
  if (kern_xent(cpu, NULL, &st_ref, z1, y1, n, classes, scale) != 0 ||
      kern_xent(cpu, ref, &st_ref, z2, y2, n, classes, scale) != 0) {
    gc_die(cpu, "cpu xent");
  }
  float *d_z1 = gc_dev(gpu, z1, zb), *d_z2 = gc_dev(gpu, z2, zb), *d_dz = gc_dev(gpu, NULL, zb);
  int32_t *d_y1 = gc_dev(gpu, y1, (size_t)n * 4), *d_y2 = gc_dev(gpu, y2, (size_t)n * 4);
  kern_stats *d_st = gc_dev(gpu, &zero, sizeof zero);
  if (kern_xent(gpu, NULL, d_st, d_z1, d_y1, n, classes, scale) != 0 ||
      kern_xent(gpu, d_dz, d_st, d_z2, d_y2, n, classes, scale) != 0) {
    gc_die(gpu, "gpu xent");
  }
  char what[96];
  snprintf(what, sizeof what, "xent dlogits (%lld,%lld)", (long long)n, (long long)classes);
  if (gc_fetch(gpu, what, got, d_dz, zb, 1)) gc_close(what, got, ref, n * classes, TOL_XENT.rtol, TOL_XENT.atol_rel);
  snprintf(what, sizeof what, "xent stats (%lld,%lld)", (long long)n, (long long)classes);
  if (gc_fetch(gpu, what, &st_got, d_st, sizeof st_got, 1)) {
    const double g[2] = {st_got.loss_sum, st_got.last_loss_sum};
    const double r[2] = {st_ref.loss_sum, st_ref.last_loss_sum};
    if (check_close_f64(what, g, r, 2, 0.0, TOL_XENT.rtol)) {
      printf("  %-44s loss_sum %.9g vs %.9g\n", what, g[0], r[0]);
    }
    CHECK_EQ_INT(st_got.correct, st_ref.correct);
    CHECK_EQ_INT(st_got.samples, st_ref.samples);
    CHECK_EQ_INT(st_got.last_correct, st_ref.last_correct);
    CHECK_EQ_INT(st_got.last_samples, st_ref.last_samples);
  }
  /* A label out of range cannot return an error from inside a graph: the
   * batch's loss becomes NaN instead, and the epoch's loss shows it. */
  if (n > 0) {
    y1[n / 2] = (int32_t)classes;
    int32_t *d_bad = gc_dev(gpu, y1, (size_t)n * 4);
    kern_stats *d_st2 = gc_dev(gpu, &zero, sizeof zero);
    if (kern_xent(gpu, NULL, d_st2, d_z1, d_bad, n, classes, scale) != 0) gc_die(gpu, "xent");
    gc_fetch(gpu, "xent bad label", &st_got, d_st2, sizeof st_got, 1);
    CHECK(isnan(st_got.loss_sum));
    kern_mem_free(gpu, d_bad);
    kern_mem_free(gpu, d_st2);
  }
  void *bufs[] = {d_z1, d_z2, d_dz, d_y1, d_y2, d_st};
  for (int i = 0; i < 6; i++) kern_mem_free(gpu, bufs[i]);
  free(z1), free(z2), free(ref), free(got), free(y1), free(y2);
}

static void test_softmax(kern_backend *gpu, int64_t n, int64_t classes) {
  const size_t zb = (size_t)(n * classes) * 4;
  float *z = gc_xmalloc(zb), *ref = gc_xmalloc(zb), *got = gc_xmalloc(zb);
  gc_fill(&rng, z, n * classes, -6.0f, 6.0f);
  if (kern_softmax(cpu, ref, z, n, classes) != 0) gc_die(cpu, "cpu softmax");
  float *d_z = gc_dev(gpu, z, zb), *d_p = gc_dev(gpu, NULL, zb);
  if (kern_softmax(gpu, d_p, d_z, n, classes) != 0) gc_die(gpu, "gpu softmax");
  char what[96];
  snprintf(what, sizeof what, "softmax (%lld,%lld)", (long long)n, (long long)classes);
  if (gc_fetch(gpu, what, got, d_p, zb, 1)) gc_close(what, got, ref, n * classes, TOL_SOFTMAX.rtol, TOL_SOFTMAX.atol_rel);
  inputs_unchanged(gpu, what, d_z, z, zb);
  kern_mem_free(gpu, d_z);
  kern_mem_free(gpu, d_p);
  free(z), free(ref), free(got);
}

/* Rows picked through idx at a device-side cursor, as the captured step does. */
static void test_gather(kern_backend *gpu, int64_t n, int64_t elems, int64_t rows, int use_cursor) {
  uint8_t *img = gc_xmalloc((size_t)(rows * elems)), *lab = gc_xmalloc((size_t)rows);
  int32_t *idx = gc_xmalloc((size_t)rows * 4);
  for (int64_t i = 0; i < rows * elems; i++) img[i] = (uint8_t)gc_next(&rng);
  for (int64_t i = 0; i < rows; i++) lab[i] = (uint8_t)(gc_next(&rng) % 10), idx[i] = (int32_t)i;
  for (int64_t i = rows - 1; i > 0; i--) {
    int64_t j = (int64_t)(gc_next(&rng) % (uint64_t)(i + 1));
    int32_t t = idx[i];
    idx[i] = idx[j], idx[j] = t;
  }
  int64_t cursor = use_cursor ? rows - n : 0;
  const size_t xb = (size_t)(n * elems) * 4;
  float *ref = gc_xmalloc(xb), *got = gc_xmalloc(xb);
  int32_t *yref = gc_xmalloc((size_t)n * 4), *ygot = gc_xmalloc((size_t)n * 4);
  if (kern_gather_u8(cpu, ref, yref, img, lab, elems, idx, use_cursor ? &cursor : NULL, n) != 0) {
    gc_die(cpu, "cpu gather");
  }
  uint8_t *d_img = gc_dev(gpu, img, (size_t)(rows * elems)), *d_lab = gc_dev(gpu, lab, (size_t)rows);
  int32_t *d_idx = gc_dev(gpu, idx, (size_t)rows * 4);
  int64_t *d_cur = use_cursor ? gc_dev(gpu, &cursor, sizeof cursor) : NULL;
  float *d_x = gc_dev(gpu, NULL, xb);
  int32_t *d_y = gc_dev(gpu, NULL, (size_t)n * 4);
  if (kern_gather_u8(gpu, d_x, d_y, d_img, d_lab, elems, d_idx, d_cur, n) != 0) {
    gc_die(gpu, "gpu gather");
  }
  char what[96];
  snprintf(what, sizeof what, "gather_u8 x (%lld rows of %lld, cursor %lld)", (long long)n,
           (long long)elems, (long long)cursor);
  if (gc_fetch(gpu, what, got, d_x, xb, 1)) gc_exact(what, got, ref, xb);
  snprintf(what, sizeof what, "gather_u8 y (%lld rows)", (long long)n);
  if (gc_fetch(gpu, what, ygot, d_y, (size_t)n * 4, 1)) gc_exact(what, ygot, yref, (size_t)n * 4);
  if (use_cursor) {
    int64_t c2 = cursor;
    if (kern_cursor_advance(gpu, d_cur, 7) != 0 || kern_cursor_advance(gpu, d_cur, -3) != 0) {
      gc_die(gpu, "cursor_advance");
    }
    kern_cursor_advance(cpu, &c2, 7);
    kern_cursor_advance(cpu, &c2, -3);
    int64_t g2 = 0;
    if (gc_fetch(gpu, "cursor_advance", &g2, d_cur, sizeof g2, 1)) gc_exact("cursor_advance", &g2, &c2, sizeof g2);
  }
  void *bufs[] = {d_img, d_lab, d_idx, d_cur, d_x, d_y};
  for (int i = 0; i < 6; i++) kern_mem_free(gpu, bufs[i]);
  free(img), free(lab), free(idx), free(ref), free(got), free(yref), free(ygot);
}

/* offset shifts the buffers by a few floats, off 16-byte alignment, so the
 * scalar path of the update runs too. Every rule, 3 updates with a moving
 * rate and update count: bit-exact against the CPU (the same expressions,
 * _rn intrinsics, correctly rounded sqrt and division). */
static void test_opt(kern_backend *gpu, int64_t elems, kern_opt_kind kind, int64_t offset) {
  const int k = kern_opt_state_per_elem(kind) > 0 ? kern_opt_state_per_elem(kind) : 1;
  const size_t pb = (size_t)(elems + offset) * 4, sb = (size_t)(k * (elems + offset)) * 4;
  float *p = gc_xmalloc(pb), *g = gc_xmalloc(pb), *v = gc_xmalloc(sb), *got = gc_xmalloc(sb);
  gc_fill(&rng, p, elems + offset, -0.1f, 0.1f);
  gc_fill(&rng, g, elems + offset, -1.0f, 1.0f);
  /* second moments are never negative */
  gc_fill(&rng, v, k * (elems + offset), kind >= KERN_OPT_RMSPROP ? 0.0f : -1.0f, 1.0f);
  float *d_p = gc_dev(gpu, p, pb), *d_g = gc_dev(gpu, g, pb), *d_v = gc_dev(gpu, v, sb);
  kern_opt opt = {.kind = kind, .momentum = 0.9f, .beta1 = 0.9f, .beta2 = 0.999f,
                  .epsilon = 1e-8f, .rho = 0.9f, .weight_decay = offset ? 0.01f : 0.0f};
  for (int step = 0; step < 3; step++) {
    opt.lr = 0.01f * (float)(step + 1);
    opt.step = step + 1;
    if (kern_opt_update(cpu, p + offset, g + offset, v + k * offset, elems, &opt) != 0 ||
        kern_opt_update(gpu, d_p + offset, d_g + offset, d_v + k * offset, elems, &opt) != 0) {
      gc_die(gpu, "opt_update");
    }
  }
  static const char *const names[] = {"sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"};
  char what[96];
  snprintf(what, sizeof what, "%s x3 params (%lld elems, offset %lld)", names[kind],
           (long long)elems, (long long)offset);
  if (gc_fetch(gpu, what, got, d_p, pb, 1)) gc_exact(what, got, p, pb);
  if (kern_opt_state_per_elem(kind) > 0) {
    snprintf(what, sizeof what, "%s x3 state (%lld elems)", names[kind], (long long)elems);
    if (gc_fetch(gpu, what, got, d_v, sb, 1)) gc_exact(what, got, v, sb);
  }
  inputs_unchanged(gpu, "opt grads", d_g, g, pb);
  kern_mem_free(gpu, d_p), kern_mem_free(gpu, d_g), kern_mem_free(gpu, d_v);
  free(p), free(g), free(v), free(got);
}

/* n = 0 must write nothing at all. */
static void test_empty(kern_backend *gpu) {
  float *d_y = gc_dev(gpu, NULL, 16), *d_x = gc_dev(gpu, NULL, 16), *d_w = gc_dev(gpu, NULL, 16);
  float got[4];
  if (kern_dense_forward(gpu, d_y, d_x, d_w, d_w, 0, 2, 2, KERN_ACT_RELU) != 0) gc_die(gpu, "n=0");
  gc_fetch(gpu, "dense_forward n=0 writes nothing", got, d_y, sizeof got, 0);
  for (int i = 0; i < 4; i++) {
    uint32_t bits;
    memcpy(&bits, &got[i], 4);
    CHECK(bits == GC_POISON);
  }
  kern_mem_free(gpu, d_y), kern_mem_free(gpu, d_x), kern_mem_free(gpu, d_w);
}

static void test_host_alloc(kern_backend *gpu) {
  void *h = NULL;
  if (kern_host_alloc(gpu, &h, 1 << 20) != 0) gc_die(gpu, "host_alloc");
  memset(h, 0x5a, 1 << 20);
  kern_host_free(gpu, h);
}

int main(void) {
  kern_backend *gpu = gc_gpu_or_skip(KERN_MATH_FP32, 0);
  kern_backend *tf32 = gc_gpu_or_skip(KERN_MATH_TF32, 0);
  kern_backend *unfused = gc_gpu_or_skip(KERN_MATH_FP32, 1);
  kern_backend *small = gc_gpu_gemm_or_skip(KERN_MATH_FP32, 0, KERN_GEMM_SMALL);
  kern_backend *cublas = gc_gpu_gemm_or_skip(KERN_MATH_FP32, 0, KERN_GEMM_CUBLAS);
  char info[512];
  kern_cuda_info(info, sizeof info);
  printf("cuda: %s\n", info);
  cpu = gc_cpu();
  tol_print();
  for (size_t i = 0; i < NSHAPES; i++) {
    for (int act = 0; act <= 1; act++) {
      test_dense_forward(gpu, "fp32", SHAPES[i], (kern_act)act, &TOL_GEMM_FP32);
      test_dense_backward(gpu, "fp32", SHAPES[i], (kern_act)act, 1, i % 2, &TOL_GEMM_FP32);
    }
  }
  /* Both GEMM paths forced, on every shape (auto above picks by batch). */
  for (size_t i = 0; i < NSHAPES; i++) {
    for (int act = 0; act <= 1; act++) {
      test_dense_forward(small, "small", SHAPES[i], (kern_act)act, &TOL_GEMM_SMALL);
      test_dense_backward(small, "small", SHAPES[i], (kern_act)act, 1, (i + 1) % 2, &TOL_GEMM_SMALL);
      test_dense_forward(cublas, "cublas", SHAPES[i], (kern_act)act, &TOL_GEMM_FP32);
      test_dense_backward(cublas, "cublas", SHAPES[i], (kern_act)act, 1, i % 2, &TOL_GEMM_FP32);
    }
  }
  for (size_t i = 0; i < NSPLIT; i++) {
    test_dense_forward(small, "small", SPLIT_SHAPES[i], KERN_ACT_RELU, &TOL_GEMM_SMALL);
    test_dense_forward(small, "small", SPLIT_SHAPES[i], KERN_ACT_NONE, &TOL_GEMM_SMALL);
    test_dense_backward(small, "small", SPLIT_SHAPES[i], KERN_ACT_RELU, 1, 1, &TOL_GEMM_SMALL);
    test_dense_backward(small, "small", SPLIT_SHAPES[i], KERN_ACT_NONE, i % 2, 1, &TOL_GEMM_SMALL);
    test_repeatable(small, "small", SPLIT_SHAPES[i]);
  }
  test_dense_backward(small, "small", SHAPES[4], KERN_ACT_RELU, 0, 1, &TOL_GEMM_SMALL);
  test_repeatable(small, "small", SHAPES[4]);
  test_repeatable(small, "small", SHAPES[3]);
  /* the accumulate case and din == NULL (the first layer) on the real shapes */
  test_dense_backward(gpu, "fp32", SHAPES[4], KERN_ACT_RELU, 0, 1, &TOL_GEMM_FP32);
  test_dense_backward(gpu, "fp32", SHAPES[6], KERN_ACT_NONE, 1, 1, &TOL_GEMM_FP32);
  const size_t some[] = {2, 3, 4, 8};
  for (size_t k = 0; k < sizeof some / sizeof some[0]; k++) {
    test_dense_forward(tf32, "tf32", SHAPES[some[k]], KERN_ACT_RELU, &TOL_GEMM_TF32);
    test_dense_backward(tf32, "tf32", SHAPES[some[k]], KERN_ACT_RELU, 1, 1, &TOL_GEMM_TF32);
    test_dense_forward(unfused, "cudnn-act", SHAPES[some[k]], KERN_ACT_RELU, &TOL_GEMM_FP32);
    test_dense_backward(unfused, "cudnn-act", SHAPES[some[k]], KERN_ACT_RELU, 1, 1, &TOL_GEMM_FP32);
  }
  const int64_t xs[][2] = {{1, 10}, {50, 10}, {1000, 10}, {7, 3}, {129, 37}, {4096, 10}};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
    test_xent(gpu, xs[i][0], xs[i][1]);
    test_softmax(gpu, xs[i][0], xs[i][1]);
  }
  test_gather(gpu, 50, 784, 600, 1);
  test_gather(gpu, 1000, 784, 1000, 0);
  test_gather(gpu, 13, 27, 40, 1); /* odd row length: the scalar path */
  test_gather(gpu, 1, 5, 3, 1);
  const int64_t es[] = {1, 3, 5, 1001, 266610};
  for (size_t i = 0; i < sizeof es / sizeof es[0]; i++) {
    test_opt(gpu, es[i], KERN_OPT_SGD, 0);
    test_opt(gpu, es[i], KERN_OPT_SGD, 1);
    for (int kind = KERN_OPT_MOMENTUM; kind <= KERN_OPT_ADAMW; kind++) {
      test_opt(gpu, es[i], (kern_opt_kind)kind, (i + (size_t)kind) % 2);
    }
  }
  test_empty(gpu);
  test_host_alloc(gpu);
  kern_backend_free(cublas);
  kern_backend_free(small);
  kern_backend_free(unfused);
  kern_backend_free(tf32);
  kern_backend_free(gpu);
  kern_backend_free(cpu);
  CHECK_DONE();
}
