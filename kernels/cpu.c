/* CPU backend: CBLAS sgemm plus plain loops. It is the reference every other
 * backend is tested against, so it favours plain code over cleverness. */
#include "kernels/backend_impl.h"
#include "kernels/cpu_opt.h"
#include "kernels/cpu_team.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfdist_config.h"
#include TFDIST_CBLAS_H

static int cpu_mem_alloc(kern_backend *be, void **ptr, size_t bytes) {
  /* 64-byte alignment keeps AVX-512 loads in BLAS on one cache line. */
  size_t rounded = (bytes + 63) / 64 * 64;
  *ptr = aligned_alloc(64, rounded ? rounded : 64);
  if (!*ptr) {
    snprintf(be->err, sizeof be->err, "cpu: out of memory allocating %zu bytes", bytes);
    return -1;
  }
  return 0;
}

static void cpu_mem_free(kern_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static int cpu_host_alloc(kern_backend *be, void **ptr, size_t bytes) {
  *ptr = malloc(bytes ? bytes : 1);
  if (!*ptr) {
    snprintf(be->err, sizeof be->err, "cpu: out of memory allocating %zu host bytes", bytes);
    return -1;
  }
  return 0;
}

static int cpu_mem_copy(kern_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
  return 0;
}

static int cpu_sync(kern_backend *be) {
  (void)be;
  return 0;
}

/* One phase-2 piece's loss over its rows in the fused step, read by phase 3. */
typedef struct {
  double loss, correct;
  int failed;
  char err[128];
  char pad[64]; /* members' slots on separate cache lines */
} cpu_step_slot;

/* The back end's own state behind the opaque handle: the team that splits
 * one rank's step over cfg.threads cores (1: no threads, jobs run inline). */
typedef struct {
  kern_backend base; /* first: a kern_backend * is a cpu_backend * */
  cpu_team *team;
  cpu_step_slot *slots; /* cfg.threads of them */
} cpu_backend;

static cpu_team *cpu_team_of(kern_backend *be) { return ((cpu_backend *)be)->team; }

/* Element-wise work (zeroing, the update) is split in 16-float-aligned
 * ranges above this size; below it a job costs more than it saves. Each
 * element's result does not depend on the split. */
#define CPU_SPLIT_MIN_ELEMS 16384

typedef struct {
  float *dst;
  int64_t elems;
} cpu_zero_job;

static void cpu_zero_range(void *ctx, int tid, int nt) {
  const cpu_zero_job *j = ctx;
  int64_t lo, hi;
  cpu_team_range(j->elems, tid, nt, 16, &lo, &hi);
  if (hi > lo) memset(j->dst + lo, 0, (size_t)(hi - lo) * sizeof(float));
}

static int cpu_mem_zero(kern_backend *be, void *dst, size_t bytes) {
  cpu_team *t = cpu_team_of(be);
  if (cpu_team_size(t) > 1 && bytes % sizeof(float) == 0 &&
      bytes / sizeof(float) >= CPU_SPLIT_MIN_ELEMS) {
    cpu_zero_job j = {dst, (int64_t)(bytes / sizeof(float))};
    cpu_team_run(t, cpu_zero_range, &j);
  } else if (bytes) {
    memset(dst, 0, bytes);
  }
  return 0;
}

/* Column slices: each member owns a fixed range of a layer's output columns
 * (of out, W and dW alike) and, for din, of its input columns; M stays the
 * whole batch, so each GEMM keeps its full-batch speed, and no member's
 * partial sum needs adding to another's. Ranges are 16 floats (one cache
 * line) apart where a layer is wide enough, so members never write the same
 * line of W, dW or the activations. */
static int64_t cpu_col_align(int64_t cols, int n) { return cols >= 32 * (int64_t)n ? 16 : 1; }

typedef struct {
  float *out;
  const float *in, *w, *b;
  int64_t n, in_dim, out_dim;
  kern_act act;
} cpu_fwd_job;

/* out[rows, c0:c1) = act(in . w[:, c0:c1) + b[c0:c1)); ld out_dim. */
static void cpu_forward_block(float *out, const float *in, const float *w, const float *b,
                              int64_t rows, int64_t in_dim, int64_t out_dim, int64_t c0,
                              int64_t c1, int relu) {
  const int64_t cw = c1 - c0, ld = out_dim;
  if (rows <= 0 || cw <= 0) return;
  for (int64_t i = 0; i < rows; i++) memcpy(out + i * ld + c0, b + c0, (size_t)cw * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cw, (int)in_dim,
              1.0f, in, (int)in_dim, w + c0, (int)ld, 1.0f, out + c0, (int)ld);
  if (relu) {
    for (int64_t i = 0; i < rows; i++) {
      float *row = out + i * ld;
      for (int64_t c = c0; c < c1; c++) row[c] = row[c] > 0.0f ? row[c] : 0.0f;
    }
  }
}

static void cpu_dense_forward_cols(void *ctx, int tid, int nt) {
  const cpu_fwd_job *j = ctx;
  int64_t c0, c1;
  cpu_team_range(j->out_dim, tid, nt, cpu_col_align(j->out_dim, nt), &c0, &c1);
  cpu_forward_block(j->out, j->in, j->w, j->b, j->n, j->in_dim, j->out_dim, c0, c1,
                    j->act == KERN_ACT_RELU);
}

/* out = act(in . w + b) */
static int cpu_dense_forward(kern_backend *be, float *out, const float *in, const float *w,
                             const float *b, int64_t n, int64_t in_dim, int64_t out_dim,
                             kern_act act) {
  cpu_fwd_job j = {out, in, w, b, n, in_dim, out_dim, act};
  cpu_team_run(cpu_team_of(be), cpu_dense_forward_cols, &j);
  return 0;
}

typedef struct {
  float *din, *dw, *db, *dout;
  const float *in, *w, *out;
  int64_t n, in_dim, out_dim;
  kern_act act;
  cpu_team *team;
} cpu_bwd_job;

/* Member tid's output columns [c0, c1): dz masked, its dW and db columns. */
static void cpu_backward_weights(const cpu_bwd_job *j, int64_t c0, int64_t c1) {
  const int64_t ld = j->out_dim, cw = c1 - c0;
  if (cw <= 0) return;
  if (j->act == KERN_ACT_RELU) {
    for (int64_t i = 0; i < j->n; i++) {
      float *d = j->dout + i * ld;
      const float *o = j->out + i * ld;
      for (int64_t c = c0; c < c1; c++) d[c] = o[c] > 0.0f ? d[c] : 0.0f;
    }
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)j->in_dim, (int)cw, (int)j->n,
              1.0f, j->in, (int)j->in_dim, j->dout + c0, (int)ld, 1.0f,
              j->dw + c0, (int)ld);
  for (int64_t i = 0; i < j->n; i++) {
    const float *row = j->dout + i * ld;
    for (int64_t c = c0; c < c1; c++) j->db[c] += row[c];
  }
}

/* Member tid's input columns of din = dz w^T; needs every column of dz. */
static void cpu_backward_input(const cpu_bwd_job *j, int tid, int nt) {
  const int64_t ld = j->out_dim;
  int64_t i0, i1;
  cpu_team_range(j->in_dim, tid, nt, cpu_col_align(j->in_dim, nt), &i0, &i1);
  if (i1 > i0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)(i1 - i0), (int)ld,
                1.0f, j->dout, (int)ld, j->w + i0 * ld, (int)ld, 0.0f, j->din + i0,
                (int)j->in_dim);
  }
}

/* Member tid: its output columns of dz (masked), dW and db; then, after a
 * barrier (din needs every column of dz), its input columns of din. */
static void cpu_dense_backward_cols(void *ctx, int tid, int nt) {
  const cpu_bwd_job *j = ctx;
  int64_t c0, c1;
  cpu_team_range(j->out_dim, tid, nt, cpu_col_align(j->out_dim, nt), &c0, &c1);
  cpu_backward_weights(j, c0, c1);
  if (!j->din) return;
  cpu_team_barrier(j->team);
  cpu_backward_input(j, tid, nt);
}

/* dout is the gradient w.r.t. the layer's (post-activation) output; with ReLU
 * it is masked in place by out > 0, which makes it dL/dz. Then
 * dw += in^T dz, db += colsum(dz), din = dz w^T (skipped when din is NULL). */
static int cpu_dense_backward(kern_backend *be, float *din, float *dw, float *db, float *dout,
                              const float *in, const float *w, const float *out, int64_t n,
                              int64_t in_dim, int64_t out_dim, kern_act act) {
  cpu_bwd_job j = {din, dw, db, dout, in, w, out, n, in_dim, out_dim, act, cpu_team_of(be)};
  cpu_team_run(j.team, cpu_dense_backward_cols, &j);
  return 0;
}

/* Stable softmax cross-entropy per row: loss = logsumexp(z) - z[y],
 * dz = (softmax(z) - onehot(y)) * grad_scale. Argmax ties go to the lower
 * class. Rows [0, n) of the pointers; row0 only names a bad row. */
static int cpu_xent_rows(char *err, size_t err_bytes, float *dlogits, double *loss_out,
                         double *correct_out, const float *logits, const int32_t *labels,
                         int64_t n, int64_t classes, float grad_scale, int64_t row0) {
  double loss = 0.0, correct = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const float *z = logits + i * classes;
    int32_t y = labels[i];
    if (y < 0 || y >= classes) {
      snprintf(err, err_bytes, "cpu xent: label %d out of range at row %lld", (int)y,
               (long long)(row0 + i));
      return -1;
    }
    int64_t arg = 0;
    for (int64_t j = 1; j < classes; j++) if (z[j] > z[arg]) arg = j;
    float zmax = z[arg];
    float sum = 0.0f;
    for (int64_t j = 0; j < classes; j++) sum += expf(z[j] - zmax);
    loss += (double)(logf(sum) + zmax - z[y]);
    correct += (arg == y);
    if (dlogits) {
      float *d = dlogits + i * classes;
      for (int64_t j = 0; j < classes; j++) {
        float p = expf(z[j] - zmax) / sum;
        d[j] = (p - (j == y ? 1.0f : 0.0f)) * grad_scale;
      }
    }
  }
  *loss_out = loss;
  *correct_out = correct;
  return 0;
}

static void cpu_stats_add(kern_stats *stats, double loss, double correct, double n) {
  if (!stats) return;
  stats->loss_sum += loss;
  stats->correct += correct;
  stats->samples += n;
  stats->last_loss_sum = loss;
  stats->last_correct = correct;
  stats->last_samples = n;
}

static int cpu_xent(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
                    const int32_t *labels, int64_t n, int64_t classes, float grad_scale) {
  double loss, correct;
  if (cpu_xent_rows(be->err, sizeof be->err, dlogits, &loss, &correct, logits, labels, n,
                    classes, grad_scale, 0) != 0) {
    return -1;
  }
  cpu_stats_add(stats, loss, correct, (double)n);
  return 0;
}

static int cpu_softmax(kern_backend *be, float *probs, const float *logits, int64_t n,
                       int64_t classes) {
  (void)be;
  for (int64_t i = 0; i < n; i++) {
    const float *z = logits + i * classes;
    float *p = probs + i * classes;
    float zmax = z[0], sum = 0.0f;
    for (int64_t j = 1; j < classes; j++) zmax = z[j] > zmax ? z[j] : zmax;
    for (int64_t j = 0; j < classes; j++) sum += (p[j] = expf(z[j] - zmax));
    for (int64_t j = 0; j < classes; j++) p[j] /= sum;
  }
  return 0;
}

/* x[i,:] = images[rows[i],:] / 255, y[i] = labels[rows[i]], i in [lo, hi). */
static void cpu_gather_rows(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                            int64_t sample_elems, const int32_t *rows, int64_t lo, int64_t hi) {
  for (int64_t i = lo; i < hi; i++) {
    const uint8_t *src = images + (int64_t)rows[i] * sample_elems;
    float *dst = x + i * sample_elems;
    for (int64_t j = 0; j < sample_elems; j++) dst[j] = (float)src[j] * (1.0f / 255.0f);
    y[i] = labels[rows[i]];
  }
}

static int cpu_gather_u8(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                         const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                         const int64_t *cursor, int64_t n) {
  (void)be;
  cpu_gather_rows(x, y, images, labels, sample_elems, idx + (cursor ? *cursor : 0), 0, n);
  return 0;
}

static int cpu_cursor_advance(kern_backend *be, int64_t *cursor, int64_t delta) {
  (void)be;
  *cursor += delta;
  return 0;
}

static int cpu_opt_update(kern_backend *be, float *params, const float *grads, float *state,
                          int64_t elems, const kern_opt *opt) {
  return cpu_opt_apply(params, grads, state, elems, opt, be->err, sizeof be->err);
}

const char *kern_blas_info(void) {
#if TFDIST_BLAS_IS_OPENBLAS
  return openblas_get_config();
#else
  return TFDIST_BLAS_VENDOR;
#endif
}

/* The fused step (kernels/mlp_step.h) on the CPU: the op-by-op step's math
 * in one team job. dW and db are written (beta 0) instead of zeroed and
 * then accumulated into (the same values, and no 1 MB memset). Each step
 * is four phases, each cut in P pieces (P: the team's size):
 *   0, rows: piece c gathers its rows of the batch.
 *   1, columns: piece c takes its columns of layer 1's forward over the
 *     whole batch. By rows, each piece would run that GEMM (784 x 300, the
 *     step's largest) at M = 25, 1.23x slower a row than M = 24 or 50, and
 *     pack all of W1 (README, "Threads within a rank").
 *   2, rows: layers 2 and 3 forward, the loss and the input gradients
 *     (dz3 -> dz2 -> dz1), each row by row, so no piece needs another's rows.
 *     Row pieces start on multiples of 8 rows (24 + 26 beat 25 + 25).
 *   3, weights (dW needs every row of dz): piece c takes its rows of every
 *     W (input units) and its columns of every b: dW = act^T dz with M its
 *     rows and N the full width, then the update of those rows while they
 *     are in cache. Only phases 1 and 2 read W, so the update waits for
 *     nothing more; the next step's phase 0 waits for all of phase 3.
 * Pieces are tickets from one counter, taken by whichever member comes
 * (cpu_team_run_open): with a member held off its core by another process
 * (2 cores at load 8-17 here), the caller takes its pieces instead of
 * waiting at a barrier (measured: README, "Threads within a rank"). Each
 * output element is the same sum over the same K as with one
 * thread, and a piece is the same work whoever runs it. */
#define CPU_STEP_PHASES 4

typedef struct {
  kern_backend *be;
  cpu_team *team;
  const kern_step *s;
  cpu_step_slot *slot;   /* one per piece of phase 2 */
  int pieces;            /* per phase: the team's size */
  uint32_t total;        /* tickets: steps x CPU_STEP_PHASES x pieces */
  _Atomic uint32_t next; /* the next ticket to hand out */
  cpu_team_count done;   /* tickets finished */
  _Atomic int stop;      /* a loss failed: the tickets left do nothing */
  int failed;
} cpu_step_job;

static void cpu_relu_mask(float *d, const float *o, int64_t elems) {
  for (int64_t i = 0; i < elems; i++) d[i] = o[i] > 0.0f ? d[i] : 0.0f;
}

/* Row pieces start on multiples of 8 rows where each gets 16 or more. */
static int64_t cpu_row_align(int64_t rows, int pieces) { return rows >= 16 * (int64_t)pieces ? 8 : 1; }

/* Phase 0, rows [r0, r1): the gather (the loader filled act[0] when there
 * are no images). */
static void cpu_step_gather(const kern_step *s, int64_t r0, int64_t r1) {
  if (s->images && r1 > r0) {
    cpu_gather_rows(s->act[0], s->labels, s->images, s->image_labels, s->dims[0],
                    s->perm + *s->cursor, r0, r1);
  }
}

/* Forward of layer k for rows [r0, r1) and output columns [c0, c1). */
static void cpu_step_forward(const kern_step *s, int k, int64_t r0, int64_t r1, int64_t c0,
                             int64_t c1) {
  const int64_t in = s->dims[k], out = s->dims[k + 1];
  cpu_forward_block(s->act[k + 1] + r0 * out, s->act[k] + r0 * in, s->params + s->w_off[k],
                    s->params + s->b_off[k], r1 - r0, in, out, c0, c1, k < 2);
}

/* Piece tid of phase 2, rows [r0, r1): layers 2 and 3 forward, the loss
 * and the input gradients. */
static void cpu_step_rows(cpu_step_job *j, int tid, int64_t r0, int64_t r1) {
  const kern_step *s = j->s;
  const int64_t rows = r1 - r0;
  cpu_step_slot *me = &j->slot[tid];
  me->failed = 0;
  me->loss = me->correct = 0.0;
  if (rows <= 0) return;
  for (int k = 1; k < 3; k++) cpu_step_forward(s, k, r0, r1, 0, s->dims[k + 1]);
  const int64_t C = s->dims[3];
  if (cpu_xent_rows(me->err, sizeof me->err, s->dact[3] + r0 * C, &me->loss, &me->correct,
                    s->act[3] + r0 * C, s->labels + r0, rows, C, s->grad_scale, r0) != 0) {
    me->failed = 1;
    return;
  }
  for (int k = 2; k >= 1; k--) { /* dz_k = (dz_{k+1} W_k^T) masked by act_k > 0 */
    const int64_t in = s->dims[k], out = s->dims[k + 1];
    float *d = s->dact[k] + r0 * in;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)in, (int)out, 1.0f,
                s->dact[k + 1] + r0 * out, (int)out, s->params + s->w_off[k], (int)out, 0.0f, d,
                (int)in);
    cpu_relu_mask(d, s->act[k] + r0 * in, rows * in);
  }
}

/* Piece tid of phase 3: its rows of every dW and columns of every db, then
 * their update. The state holds sk interleaved floats a weight (cpu_opt.c); no error is
 * possible: the kind was checked when the step was set up. */
static void cpu_step_weights(const kern_step *s, int tid, int nt) {
  const int k_state = kern_opt_state_per_elem(s->opt.kind);
  const int64_t sk = k_state > 1 ? k_state : 1, n = s->n;
  char ignored[64];
  for (int k = 2; k >= 0; k--) {
    const int64_t in = s->dims[k], out = s->dims[k + 1];
    const float *dz = s->dact[k + 1];
    int64_t p0, p1, c0, c1;
    /* row boundaries on 64-byte multiples of the row length, so members'
     * rows of dW and W share no cache line (given an aligned W) */
    int64_t align = 16;
    while (align > 1 && (out * (align / 2)) % 16 == 0) align /= 2;
    cpu_team_range(in, tid, nt, align, &p0, &p1);
    if (p1 > p0) {
      const int64_t off = s->w_off[k] + p0 * out, elems = (p1 - p0) * out;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(p1 - p0), (int)out, (int)n,
                  1.0f, s->act[k] + p0, (int)in, dz, (int)out, 0.0f, s->grads + off, (int)out);
      cpu_opt_apply(s->params + off, s->grads + off, s->opt_state + sk * off, elems, &s->opt,
                    ignored, sizeof ignored);
    }
    cpu_team_range(out, tid, nt, cpu_col_align(out, nt), &c0, &c1);
    if (c1 > c0) {
      const int64_t off = s->b_off[k] + c0;
      float *db = s->grads + off;
      /* written, the sum starts at row 0: 0 + x is x, so these are the accumulated values */
      memcpy(db, dz + c0, (size_t)(c1 - c0) * sizeof(float));
      for (int64_t i = 1; i < n; i++) {
        const float *row = dz + i * out;
        for (int64_t c = c0; c < c1; c++) db[c - c0] += row[c];
      }
      cpu_opt_apply(s->params + off, s->grads + off, s->opt_state + sk * off, c1 - c0, &s->opt,
                    ignored, sizeof ignored);
    }
  }
}

/* After phase 2 of a step (every piece done): the loss in piece order
 * (fixed for a given team size), or the first failed piece's error. */
static void cpu_step_combine(cpu_step_job *j) {
  const kern_step *s = j->s;
  double loss = 0.0, correct = 0.0;
  for (int c = 0; c < j->pieces; c++) {
    if (j->slot[c].failed) {
      snprintf(j->be->err, sizeof j->be->err, "%s", j->slot[c].err);
      j->failed = 1;
      atomic_store(&j->stop, 1);
      return;
    }
    loss += j->slot[c].loss;
    correct += j->slot[c].correct;
  }
  cpu_stats_add(s->stats, loss, correct, (double)s->n);
  *s->cursor += s->cursor_delta; /* every piece of phase 0 has read it */
}

/* Ticket k: step k / (4P), phase (k / P) % 4, piece k % P. It waits for
 * every ticket of the phases before its own, so whichever member runs it
 * sees their results; piece c of a phase is the same work whoever runs it,
 * so the result is the same bits however tickets fall to members. */
static void cpu_step_ticket(cpu_step_job *j, uint32_t k) {
  const uint32_t P = (uint32_t)j->pieces, phase = (k / P) % CPU_STEP_PHASES, c = k % P;
  const kern_step *s = j->s;
  cpu_team_count_wait(j->team, &j->done, k - c);
  if (atomic_load_explicit(&j->stop, memory_order_relaxed)) return;
  int64_t r0, r1;
  cpu_team_range(s->n, (int)c, (int)P, cpu_row_align(s->n, (int)P), &r0, &r1);
  if (phase == 0) {
    cpu_step_gather(s, r0, r1);
  } else if (phase == 1) {
    int64_t c0, c1;
    cpu_team_range(s->dims[1], (int)c, (int)P, cpu_col_align(s->dims[1], (int)P), &c0, &c1);
    cpu_step_forward(s, 0, 0, s->n, c0, c1);
  } else if (phase == 2) {
    cpu_step_rows(j, (int)c, r0, r1);
  } else {
    for (uint32_t i = 0; i < P; i++) { /* each piece sees the failure: none updates */
      if (j->slot[i].failed) {
        if (c == 0) cpu_step_combine(j);
        return;
      }
    }
    if (c == 0) cpu_step_combine(j);
    cpu_step_weights(j->s, (int)c, (int)P);
  }
}

static void cpu_step_member(void *ctx, int tid, int nt) {
  cpu_step_job *j = ctx;
  (void)nt;
  for (;;) {
    uint32_t k = atomic_fetch_add(&j->next, 1);
    if (k >= j->total) break;
    cpu_step_ticket(j, k);
    cpu_team_count_add(&j->done);
  }
  if (tid == 0) cpu_team_count_wait(j->team, &j->done, j->total);
}

static int cpu_fused_step_ws(kern_backend *be, const kern_step *s, size_t *bytes) {
  (void)be;
  if (s->opt.kind != KERN_OPT_SGD && s->opt.kind != KERN_OPT_MOMENTUM) return 1;
  if (!s->images && s->steps > 1) return 1;
  *bytes = 0;
  return 0;
}

static int cpu_fused_step(kern_backend *be, const kern_step *s) {
  cpu_team *team = cpu_team_of(be);
  const int pieces = cpu_team_size(team);
  const int64_t steps = s->steps > 0 ? s->steps : 1;
  cpu_step_job j = {.be = be, .team = team, .s = s, .slot = ((cpu_backend *)be)->slots, .pieces = pieces,
                    .total = (uint32_t)(steps * CPU_STEP_PHASES * pieces)};
  cpu_team_run_open(team, cpu_step_member, &j);
  return j.failed ? -1 : 0;
}

static void cpu_destroy(kern_backend *be) {
  if (!be) return;
  cpu_team_free(cpu_team_of(be));
  free(((cpu_backend *)be)->slots);
  free(be);
}

static const kern_ops cpu_ops = {
  .name = "cpu",
  .host_memory = 1,
  .destroy = cpu_destroy,
  .mem_alloc = cpu_mem_alloc,
  .mem_free = cpu_mem_free,
  .mem_upload = cpu_mem_copy,
  .mem_download = cpu_mem_copy,
  .mem_zero = cpu_mem_zero,
  .mem_copy = cpu_mem_copy,
  .host_alloc = cpu_host_alloc,
  .host_free = cpu_mem_free,
  .sync = cpu_sync,
  .dense_forward = cpu_dense_forward,
  .dense_backward = cpu_dense_backward,
  .xent = cpu_xent,
  .softmax = cpu_softmax,
  .gather_u8 = cpu_gather_u8,
  .cursor_advance = cpu_cursor_advance,
  .opt_update = cpu_opt_update,
  .fused_step_ws = cpu_fused_step_ws,
  .fused_step = cpu_fused_step,
};

int kern_cpu_create(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes) {
  cpu_backend *cb = calloc(1, sizeof *cb);
  if (!cb) {
    snprintf(err, err_bytes, "cpu: out of memory");
    return -1;
  }
  kern_backend *be = &cb->base;
  be->ops = &cpu_ops;
  be->cfg = *cfg;
  if (be->cfg.threads < 1) be->cfg.threads = 1;
#if TFDIST_BLAS_IS_OPENBLAS
  /* The team is the only parallelism: OpenBLAS's own threads inside one
   * batch-50 GEMM made a step 2.4x slower (README, "Threads"). */
  openblas_set_num_threads(1);
#endif
  cb->slots = calloc((size_t)be->cfg.threads, sizeof *cb->slots);
  if (!cb->slots) {
    snprintf(err, err_bytes, "cpu: out of memory for %d threads", be->cfg.threads);
    free(cb);
    return -1;
  }
  if (cpu_team_init(&cb->team, be->cfg.threads, be->cfg.oversubscribed, err, err_bytes) != 0) {
    free(cb->slots);
    free(cb);
    return -1;
  }
  *out = be;
  return 0;
}
