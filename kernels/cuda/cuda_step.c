/* Host side of the fused training step (cuda_fused.cu): when it applies, how
 * the K dimension of layers 1 and 2 is split over the blocks, its workspace,
 * and the cooperative launch. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"

static int64_t kc_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* A K chunk for a forward layer over k inputs: `splits` even chunks, or
 * more where a chunk of one tile's rows would not fit the kernel's slabs. */
static int64_t kc_fused_chunk(int64_t k, int64_t n, int64_t splits) {
  const int64_t rows = n < KF_FUSED_TILE_ROWS ? n : KF_FUSED_TILE_ROWS;
  int64_t cap = (KF_FUSED_A_FLOATS / rows) & ~(int64_t)3; /* a multiple of 4 */
  if (cap > KF_FUSED_MAX_KC) cap = KF_FUSED_MAX_KC;
  if (splits < kc_cdiv(k, cap)) splits = kc_cdiv(k, cap);
  const int64_t kc = (kc_cdiv(k, splits) + 3) & ~(int64_t)3; /* 4-pixel loads of the gather */
  return kc < cap ? kc : cap;
}

/* The blocks of the launch: one per SM, all resident (a grid barrier needs it). */
static int kc_fused_grid(kern_cuda *kc, int *grid) {
  if (kc->fused_grid == 0) {
    int coop = 0, per_sm = 0;
    KC_CUDA_CHECK(&kc->where,
                  cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, kc->device),
                  return -1);
    KC_CUDA_CHECK(&kc->where, kc_fused_blocks_per_sm(&per_sm), return -1);
    kc->fused_grid = coop && per_sm >= 1 ? kc->gemm_ws.sm_count : -1;
  }
  *grid = kc->fused_grid;
  return 0;
}

/* TFDIST_FUSED_STEP=0 keeps the op-by-op step (benchmarks compare the two);
 * read when the caller sets up (ask_env), not again on every step. */
static int kc_fused_wanted(const kern_cuda *kc, const kern_step *s, int ask_env) {
  const char *env = ask_env ? getenv("TFDIST_FUSED_STEP") : NULL;
  if (env && !strcmp(env, "0")) return 0;
  if (kc->base.cfg.math != KERN_MATH_FP32 || kc->base.cfg.unfused) return 0;
  if (kc->gemm != KERN_GEMM_AUTO) return 0; /* a GEMM path was asked for by name */
  if (s->n < 1 || s->n > KF_FUSED_MAX_ROWS || s->dims[3] < 1 ||
      s->dims[3] > KF_FUSED_MAX_CLASSES || s->dims[2] > KF_FUSED_MAX_H2) {
    return 0;
  }
  for (int i = 0; i < 3; i++) {
    if (s->dims[i] < 1 || s->dims[i] > INT32_MAX) return 0;
  }
  return kern_opt_state_per_elem_inline(s->opt.kind) >= 0;
}

typedef struct {
  int grid;
  int64_t ks1, kc1, ks2, kc2;
  size_t part1, part2, rows; /* byte offsets in the workspace */
  size_t bytes;
} kc_fused_plan;

static size_t kc_align256(size_t b) { return (b + 255) & ~(size_t)255; }

static int kc_fused_make_plan(kern_cuda *kc, const kern_step *s, kc_fused_plan *p, int ask_env) {
  memset(p, 0, sizeof *p);
  if (!kc_fused_wanted(kc, s, ask_env)) return 1;
  if (kc_fused_grid(kc, &p->grid) != 0) return -1;
  if (p->grid < 1) return 1;
  const int64_t n = s->n, *d = s->dims;
  /* Layer 1: about one task (32 columns x a K split) per block; its
   * partials are summed in phase 2 by every thread. Layer 2: K chunks of
   * ~48 (a short multiply), at most 8 splits, which each row's warp sums
   * again in phase 4. */
  const int64_t groups1 = kc_cdiv(d[1], 32);
  int64_t splits1 = p->grid / groups1 > 1 ? p->grid / groups1 : 1;
  if (splits1 > KF_FUSED_MAX_SPLITS) splits1 = KF_FUSED_MAX_SPLITS;
  p->kc1 = kc_fused_chunk(d[0], n, splits1);
  p->ks1 = kc_cdiv(d[0], p->kc1);
  /* ~48 k per layer-2 task: a shorter multiply for a few more loads per row */
  p->kc2 = kc_fused_chunk(d[1], n, kc_cdiv(d[1], 48) < KF_FUSED_MAX_SPLITS2 ? kc_cdiv(d[1], 48) : KF_FUSED_MAX_SPLITS2);
  p->ks2 = kc_cdiv(d[1], p->kc2);
  if (p->ks1 > KF_FUSED_MAX_SPLITS || p->ks2 > KF_FUSED_MAX_SPLITS2) return 1; /* layers too wide */
  p->part1 = 0;
  p->part2 = kc_align256((size_t)(p->ks1 * n * d[1]) * sizeof(float));
  p->rows = p->part2 + kc_align256((size_t)(p->ks2 * n * d[2]) * sizeof(float));
  p->bytes = p->rows + 2 * (size_t)n * sizeof(double);
  return 0;
}

/* TFDIST_FUSED_CHAIN=N: at most N steps per cooperative launch; a longer
 * kern_step.steps is issued as several launches, the same steps in order
 * (each launch reads the cursor the one before left). A fallback for a GPU
 * run whose chained launches misbehave; read at setup, as TFDIST_FUSED_STEP. */
static int kc_fused_chain_env(kern_cuda *kc) {
  const char *env = getenv("TFDIST_FUSED_CHAIN");
  kc->fused_chain = 0;
  if (!env || !env[0]) return 0;
  char *end = NULL;
  long long v = strtoll(env, &end, 10);
  if (*end || v < 1) {
    snprintf(kc->base.err, sizeof kc->base.err,
             "rank %d cuda:%d: TFDIST_FUSED_CHAIN=%s: expected a whole number >= 1",
             kc->base.cfg.rank, kc->device, env);
    return -1;
  }
  kc->fused_chain = (int64_t)v;
  return 0;
}

int kc_fused_step_ws(kern_backend *be, const kern_step *s, size_t *bytes) {
  kc_fused_plan p;
  *bytes = 0;
  if (kc_fused_chain_env(kc_of(be)) != 0) return -1;
  int rc = kc_fused_make_plan(kc_of(be), s, &p, 1);
  *bytes = rc == 0 ? p.bytes : 0;
  return rc;
}

int kc_fused_step(kern_backend *be, const kern_step *s) {
  kern_cuda *kc = kc_of(be);
  kc_fused_plan p;
  int rc = kc_fused_make_plan(kc, s, &p, 0);
  if (rc != 0) {
    if (rc > 0) snprintf(be->err, sizeof be->err, "cuda: fused step: shape or config not supported");
    return -1;
  }
  if (s->steps < 0) {
    snprintf(be->err, sizeof be->err, "cuda: fused step: steps %lld < 0", (long long)s->steps);
    return -1;
  }
  char *ws = s->ws;
  kc_fused_args a = {
    .n = s->n, .steps = s->steps > 1 ? s->steps : 1,
    .ks1 = p.ks1, .kc1 = p.kc1, .ks2 = p.ks2, .kc2 = p.kc2,
    .params = s->params, .grads = s->grads, .state = s->opt_state,
    .x = s->act[0], .h1 = s->act[1], .h2 = s->act[2], .logits = s->act[3],
    .dlogits = s->dact[3], .dz2 = s->dact[2], .dz1 = s->dact[1], .y = s->labels,
    .images = s->images, .image_labels = s->image_labels, .perm = s->perm,
    .cursor = s->cursor, .cursor_delta = s->cursor_delta, .stats = s->stats,
    .part1 = (float *)(ws + p.part1), .part2 = (float *)(ws + p.part2),
    .row_loss = (double *)(ws + p.rows), .row_correct = (double *)(ws + p.rows) + s->n,
    .grad_scale = s->grad_scale, .opt = kern_opt_scalars_of(&s->opt),
    .opt_kind = (int)s->opt.kind, .opt_k = kern_opt_state_per_elem_inline(s->opt.kind),
    .phase_ns = (unsigned long long *)s->phase_ns,
  };
  memcpy(a.dims, s->dims, sizeof a.dims);
  memcpy(a.w_off, s->w_off, sizeof a.w_off);
  memcpy(a.b_off, s->b_off, sizeof a.b_off);
  const int64_t steps = a.steps, per = kc->fused_chain > 0 ? kc->fused_chain : steps;
  for (int64_t done = 0; done < steps; done += a.steps) {
    a.steps = steps - done < per ? steps - done : per;
    KC_CUDA_CHECK(&kc->where, kc_launch_fused_step(kc->stream, &a, p.grid), return -1);
  }
  return 0;
}
