/* The training loop of ../shared/SPEC.md: per-epoch shuffle, floor(N/global
 * batch) steps, gradients averaged over ranks every step, evaluation on the
 * test set every epoch. */
#include "train/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/rng.h"
#include "train/buildinfo.h"
#include "model/evaluate.h"
#include "base/fsutil.h"
#include "modelio/h5model.h"
#include "train/train_ckpt.h"
#include "train/train_input.h"
#include "train/train_ps.h"
#include "train/train_timeline.h"
#include "collective/ps.h"

#define T_TRY(t, call)                                                                       \
  do {                                                                                       \
    if ((call) != 0) {                                                                       \
      if (!(t)->err[0]) snprintf((t)->err, sizeof (t)->err, "%s", kern_error((t)->be));      \
      return -1;                                                                             \
    }                                                                                        \
  } while (0)

static int train_is_cpu(const trainer *t) { return kern_is_host_memory(t->be); }

/* Host data as the backend sees it: the same pointer on the CPU, a device copy otherwise. */
static int train_to_backend(trainer *t, const void *host, size_t bytes, const void **out) {
  if (train_is_cpu(t)) {
    *out = host;
    return 0;
  }
  void *dev = NULL;
  T_TRY(t, kern_mem_alloc(t->be, &dev, bytes ? bytes : 1));
  T_TRY(t, kern_mem_upload(t->be, dev, host, bytes));
  *out = dev;
  return 0;
}

static int train_load_data(trainer *t) {
  data_files files;
  if (train_input_streaming(t)) return train_input_load_stream(t);
  if (data_files_find(&files, t->cfg->data_folder, t->err, sizeof t->err) != 0) return -1;
  if (data_set_load(&t->train, files.train_images, files.train_labels, 1, t->err,
                    sizeof t->err) != 0 ||
      data_set_load(&t->test, files.test_images, files.test_labels, 1, t->err,
                    sizeof t->err) != 0) {
    return -1;
  }
  if (t->train.count < t->global_batch) {
    snprintf(t->err, sizeof t->err,
             "--batch-size: global batch %lld (%d ranks x %lld) exceeds the %lld training samples",
             (long long)t->global_batch, t->world->size, (long long)t->batch,
             (long long)t->train.count);
    return -1;
  }
  rank_log_printf(&t->log, "data: %s (%lld train), %s (%lld test)", files.train_images,
                  (long long)t->train.count, files.test_images, (long long)t->test.count);
  return 0;
}

static int train_alloc(trainer *t) {
  kern_backend *be = t->be;
  const int64_t P = t->layout.total_elems;
  const int64_t ntrain = t->train.count, ntest = t->test.count, px = t->layout.dims[0];
  T_TRY(t, model_work_init(&t->work, be, &t->layout,
                           t->batch > EVAL_CHUNK ? t->batch : EVAL_CHUNK));
  T_TRY(t, kern_mem_alloc_f32(be, &t->params, P));
  T_TRY(t, kern_mem_alloc_f32(be, &t->grads, P));
  T_TRY(t, kern_mem_alloc_f32(be, &t->opt_state, P));
  T_TRY(t, kern_mem_zero_f32(be, t->opt_state, P));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->perm_dev, (size_t)ntrain * sizeof(int32_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->test_idx_dev, (size_t)ntest * sizeof(int32_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->cursor_dev, sizeof(int64_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->eval_cursor_dev, sizeof(int64_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->stats_dev, sizeof(kern_stats)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->eval_stats_dev, sizeof(kern_stats)));
  t->perm_host = malloc((size_t)ntrain * sizeof(int32_t));
  t->params_host = malloc((size_t)P * sizeof(float));
  int32_t *ident = malloc((size_t)ntest * sizeof(int32_t));
  if (!t->perm_host || !t->params_host || !ident) {
    free(ident);
    snprintf(t->err, sizeof t->err, "out of host memory");
    return -1;
  }
  for (int64_t i = 0; i < ntest; i++) ident[i] = (int32_t)i;
  int rc = kern_mem_upload(be, t->test_idx_dev, ident, (size_t)ntest * sizeof(int32_t));
  free(ident);
  T_TRY(t, rc);
  t->host_staged = !train_is_cpu(t) && coll_comm_backend(t->comm) != COLL_BACKEND_NCCL;
  t->grads_host = t->grads;
  if (t->host_staged) { /* pinned on CUDA: the per-step copies run at full PCIe speed */
    t->grads_host = NULL;
    T_TRY(t, kern_host_alloc(be, (void **)&t->grads_host, (size_t)P * sizeof(float)));
  }
  T_TRY(t, train_to_backend(t, t->train.images, (size_t)(ntrain * px), (const void **)&t->train_images_dev));
  T_TRY(t, train_to_backend(t, t->train.labels, (size_t)ntrain, (const void **)&t->train_labels_dev));
  T_TRY(t, train_to_backend(t, t->test.images, (size_t)(ntest * px), (const void **)&t->test_images_dev));
  T_TRY(t, train_to_backend(t, t->test.labels, (size_t)ntest, (const void **)&t->test_labels_dev));
  return 0;
}

/* Rank 0's initial weights reach every rank, so all start identical. */
static int train_init_params(trainer *t) {
  const int64_t P = t->layout.total_elems;
  if (t->world->rank == 0) model_init_params(&t->layout, t->params_host, (uint64_t)t->cfg->seed);
  if (t->world->size > 1 && coll_broadcast_f32(t->comm, t->params_host, P, 0) != COLL_OK) {
    snprintf(t->err, sizeof t->err, "%s", coll_comm_error(t->comm));
    return -1;
  }
  T_TRY(t, kern_mem_upload_f32(t->be, t->params, t->params_host, P));
  /* FNV-1a of the bytes every rank now holds: equal in every rank's log. */
  uint64_t h = 1469598103934665603ULL;
  const unsigned char *b = (const unsigned char *)t->params_host;
  for (size_t i = 0; i < (size_t)P * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ULL;
  rank_log_printf(&t->log, "initial params: %lld floats, fnv1a %016llx", (long long)P,
                  (unsigned long long)h);
  return 0;
}

static int train_coll_fail(trainer *t) {
  snprintf(t->err, sizeof t->err, "%s", coll_comm_error(t->comm));
  return -1;
}

/* Starts layer k's gradient average while backward goes on below it. */
static int train_reduce_layer(void *ctx, int k) {
  trainer *t = ctx;
  const int64_t off = t->layout.layer_offset[k], n = t->layout.layer_elems[k];
  if (t->host_staged) {
    T_TRY(t, kern_mem_download(t->be, t->grads_host + off, t->grads + off,
                                      (size_t)n * sizeof(float)));
  }
  if (coll_iallreduce_avg_f32(t->comm, t->grads_host + off, n, &t->pending[k]) != COLL_OK) {
    return train_coll_fail(t);
  }
  return 0;
}

/* model_backward's hook: each layer's span, then its reduction (overlap on). */
static int train_layer_done(void *ctx, int k) {
  static const char *names[MODEL_LAYERS] = {"backward dense", "backward dense_1",
                                            "backward dense_2"};
  trainer *t = ctx;
  train_tl_end(t, names[k], t->tl_mark);
  const int reduce = t->world->size > 1 && !t->ps && t->cfg->overlap;
  if (reduce && train_reduce_layer(t, k) != 0) return -1;
  t->tl_mark = train_tl_begin(t); /* the next layer's span starts after the submit */
  return 0;
}

static int train_reduce_finish(trainer *t) {
  const int64_t P = t->layout.total_elems;
  if (t->cfg->overlap) {
    for (int k = MODEL_LAYERS - 1; k >= 0; k--) {
      coll_request *r = t->pending[k];
      t->pending[k] = NULL;
      if (r && coll_wait(t->comm, r) != COLL_OK) return train_coll_fail(t);
    }
  } else {
    if (t->host_staged) {
      T_TRY(t, kern_mem_download_f32(t->be, t->grads_host, t->grads, P));
    }
    if (coll_allreduce_avg_f32(t->comm, t->grads_host, P) != COLL_OK) return train_coll_fail(t);
  }
  if (t->host_staged) {
    T_TRY(t, kern_mem_upload_f32(t->be, t->grads, t->grads_host, P));
  }
  return 0;
}

/* One step as backend ops only, so a GPU backend can record it as a graph:
 * the batch's rows come from *cursor_dev, which the step itself advances. */
static int train_step_ops(trainer *t) {
  kern_backend *be = t->be;
  if (t->fused_ws) {
    T_TRY(t, kern_fused_step(be, &t->fused));
    return 0;
  }
  model_work *w = &t->work;
  const int64_t B = t->batch, P = t->layout.total_elems;
  const int reduce = t->world->size > 1 && !t->ps;
  double s = train_tl_begin(t);
  if (!t->input) { /* else train_input_next has filled act[0] and labels */
    T_TRY(t, kern_gather_u8(be, w->act[0], w->labels, t->train_images_dev,
                                t->train_labels_dev, t->layout.dims[0], t->perm_dev,
                                t->cursor_dev, B));
    train_tl_end(t, "gather", s);
  }
  s = train_tl_begin(t);
  T_TRY(t, model_forward(w, t->params, B));
  train_tl_end(t, "forward", s);
  s = train_tl_begin(t);
  T_TRY(t, kern_xent(be, w->dact[MODEL_LAYERS], t->stats_dev, w->act[MODEL_LAYERS], w->labels,
                         B, t->layout.dims[MODEL_LAYERS], 1.0f / (float)B));
  train_tl_end(t, "loss", s);
  s = train_tl_begin(t);
  T_TRY(t, kern_mem_zero_f32(be, t->grads, P));
  train_tl_end(t, "zero gradients", s);
  t->tl_mark = train_tl_begin(t);
  model_layer_done_fn done = (reduce && t->cfg->overlap) || t->tl_rec ? train_layer_done : NULL;
  if (model_backward(w, t->params, t->grads, B, done, t) != 0) {
    if (!t->err[0]) snprintf(t->err, sizeof t->err, "%s", kern_error(be));
    return -1;
  }
  s = train_tl_begin(t);
  if (t->ps) {
    if (train_ps_step(t) != 0) return -1;
    train_tl_end(t, "ps push and pull", s);
  } else {
    if (reduce && train_reduce_finish(t) != 0) return -1;
    if (reduce) train_tl_end(t, "allreduce wait", s);
    s = train_tl_begin(t);
    T_TRY(t, kern_opt_update(be, t->params, t->grads, t->opt_state, P, &t->opt));
    train_tl_end(t, "update", s);
  }
  T_TRY(t, kern_cursor_advance(be, t->cursor_dev, t->global_batch));
  return 0;
}

/* k steps: one launch runs them all when the step is fused, else k is 1
 * (so a loader, which never goes with the fused step, gives one batch). */
static int train_step(trainer *t, int64_t k) {
  double s = train_tl_begin(t);
  if (t->input && train_input_next(t) != 0) return -1;
  if (t->input) train_tl_end(t, "data", s);
  t->fused.steps = k;
  /* an epoch's shorter last chain: one launch, graph or not */
  if (!t->use_graph || (t->graph && k != t->graph_steps)) return train_step_ops(t);
  if (!t->graph) {
    /* the ops only record into the graph here: their spans would mean nothing */
    const int rec = t->tl_rec;
    s = train_tl_begin(t);
    __atomic_store_n(&t->tl_rec, 0, __ATOMIC_RELAXED);
    T_TRY(t, kern_graph_begin(t->be));
    int rc = train_step_ops(t);
    void *g = NULL;
    int end_rc = kern_graph_end(t->be, &g);
    __atomic_store_n(&t->tl_rec, rec, __ATOMIC_RELAXED);
    train_tl_end(t, "capture step graph", s);
    if (rc != 0) return -1;
    T_TRY(t, end_rc);
    t->graph = g;
    t->graph_steps = k;
  }
  s = train_tl_begin(t);
  T_TRY(t, kern_graph_launch(t->be, t->graph));
  train_tl_end(t, k > 1 ? "launch step chain" : "launch step", s);
  return 0;
}

/* Test-only fault switches, at global step s (in the next k):
 * TFDIST_FAULT_STALL_RANK=r TFDIST_FAULT_STALL_STEP=s makes rank r stop
 * answering, as a hung GPU or host would; TFDIST_FAULT_FAIL_RANK and
 * TFDIST_FAULT_FAIL_STEP make it fail with an error, as a bad shard would. */
typedef struct {
  int rank; /* -1: off */
  long step;
} train_fault;

/* Read once: the step loop is hot. */
static train_fault train_fault_get(int which) {
  static train_fault f[2];
  static int read;
  if (!read) {
    static const char *const vars[2][2] = {{"TFDIST_FAULT_STALL_RANK", "TFDIST_FAULT_STALL_STEP"},
                                           {"TFDIST_FAULT_FAIL_RANK", "TFDIST_FAULT_FAIL_STEP"}};
    for (int i = 0; i < 2; i++) {
      const char *r = getenv(vars[i][0]), *s = getenv(vars[i][1]);
      f[i] = (train_fault){r ? atoi(r) : -1, s ? atol(s) : 0};
    }
    read = 1;
  }
  return f[which];
}

static int train_fault_at(const trainer *t, int64_t k, int which) {
  const train_fault f = train_fault_get(which);
  return f.rank == t->world->rank && f.step >= t->global_step && f.step < t->global_step + k;
}

static int train_fault_maybe(trainer *t, int64_t k) {
  if (train_fault_at(t, k, 0)) {
    fprintf(stderr, "tfdist: rank %d: test fault: stalling at step %ld\n", t->world->rank,
            train_fault_get(0).step);
    for (;;) pause();
  }
  if (train_fault_at(t, k, 1)) {
    snprintf(t->err, sizeof t->err, "test fault: failing at step %ld", train_fault_get(1).step);
    return -1;
  }
  return 0;
}

/* Steps per launch: a chain where the fused step gathers its own batches;
 * one where a loader fills each (the CPU). */
static int64_t train_step_chain(const trainer *t) {
  return t->fused_ws && !kern_is_host_memory(t->be) ? KERN_STEP_CHAIN : 1;
}

/* One rank, data in backend memory, the backend can fuse the shape: the step
 * is one launch instead of ~20, and a launch runs a chain of up to
 * KERN_STEP_CHAIN steps (same math, same buffers; see kernels/mlp_step.h).
 * The CPU back end has a fused step too (one team job), but it was no clear
 * gain over op by op (benchmarks/train/bench_threads on the busy 2-core
 * machine: 675 vs 647 us a step on 1 thread in one run, 610 vs 606 in
 * another), so the CPU runs op by op and keeps the timeline's op spans. */
static int train_setup_fused(trainer *t) {
  kern_backend *be = t->be;
  if (!t->cfg->fused_step || t->world->size > 1 || t->ps || train_input_streaming(t) ||
      kern_is_host_memory(be)) {
    rank_log_printf(&t->log, "step: op by op");
    return 0;
  }
  kern_step *s = &t->fused;
  *s = (kern_step){.n = t->batch, .params = t->params, .grads = t->grads,
                   .opt_state = t->opt_state, .images = t->train_images_dev,
                   .image_labels = t->train_labels_dev, .perm = t->perm_dev,
                   .cursor = t->cursor_dev, .cursor_delta = t->global_batch,
                   .stats = t->stats_dev, .grad_scale = 1.0f / (float)t->batch, .opt = t->opt};
  if (kern_is_host_memory(be)) { /* the loader fills act[0] and labels: one step a launch */
    s->images = NULL;
    s->image_labels = NULL;
    s->perm = NULL;
  }
  model_step_shape(s, &t->layout, &t->work);
  size_t bytes = 0;
  int rc = kern_fused_step_ws(be, s, &bytes);
  if (rc > 0) {
    rank_log_printf(&t->log, "step: op by op (the backend does not fuse this shape or configuration)");
    return 0;
  }
  T_TRY(t, rc);
  T_TRY(t, kern_mem_alloc(be, &t->fused_ws, bytes));
  s->ws = t->fused_ws;
  rank_log_printf(&t->log, "step: fused, up to %d steps per launch (%zu bytes of workspace)",
                  (int)train_step_chain(t), bytes);
  return 0;
}

int trainer_evaluate(trainer *t, double *acc, double *loss) {
  kern_backend *be = t->be;
  const int64_t n = t->test.count, N = t->world->size, r = t->world->rank;
  const int64_t lo = n * r / N, hi = n * (r + 1) / N;
  kern_stats st;
  T_TRY(t, kern_mem_zero(be, t->eval_stats_dev, sizeof(kern_stats)));
  const eval_ctx ec = {be, &t->work, t->params, t->test_images_dev, t->test_labels_dev,
                       t->layout.dims[0], t->test_idx_dev, t->eval_cursor_dev, t->eval_stats_dev};
  T_TRY(t, eval_rows(&ec, lo, hi, NULL, NULL));
  T_TRY(t, kern_mem_download(be, &st, t->eval_stats_dev, sizeof st));
  double sums[3] = {st.correct, st.loss_sum, st.samples};
  if (N > 1 && coll_allreduce_sum_f64(t->comm, sums, 3) != COLL_OK) return train_coll_fail(t);
  *acc = sums[0] / sums[2];
  *loss = sums[1] / sums[2];
  return 0;
}

static void train_progress(const trainer *t, int64_t epoch, int64_t step, double t0) {
  static double last;
  double now = clock_mono_s();
  if (step + 1 < t->steps_per_epoch && now - last < 0.25) return;
  last = now;
  double frac = (double)(step + 1) / (double)t->steps_per_epoch;
  double eta = (now - t0) / frac * (1.0 - frac);
  fprintf(stderr, "\r  epoch %lld/%lld  step %lld/%lld  %3.0f%%  ETA %.1fs   ",
          (long long)epoch + 1, (long long)t->cfg->epochs, (long long)step + 1,
          (long long)t->steps_per_epoch, frac * 100.0, eta);
  if (step + 1 == t->steps_per_epoch) fprintf(stderr, "\r%72s\r", "");
}

/* The order the step's own gather reads; with a loader (t->input) the
 * loader thread derives the same permutation itself, so none is made here. */
static int train_epoch_order(trainer *t, int64_t epoch) {
  kern_backend *be = t->be;
  const int64_t ntrain = t->train.count;
  base_perm_epoch(t->perm_host, ntrain, (uint64_t)t->cfg->seed, epoch);
  T_TRY(t, kern_mem_upload(be, t->perm_dev, t->perm_host, (size_t)ntrain * sizeof(int32_t)));
  int64_t cursor = (int64_t)t->world->rank * t->batch;
  T_TRY(t, kern_mem_upload(be, t->cursor_dev, &cursor, sizeof cursor));
  return 0;
}

/* Rank 0 alone acts on SIGINT/SIGTERM: it must live to record Canceled
 * before the job is ended. A launcher signals every rank; a signal that
 * reaches another rank alone is passed on to rank 0, and that rank trains on
 * until rank 0's abort ends it. */
static int train_cancel_requested(trainer *t, int64_t epoch) {
  int sig = run_cancel_signal(), from = 0;
  if (sig && t->world->rank != 0) {
    if (!t->cancel_relayed) t->cancel_relayed = coll_comm_report_cancel(t->comm, sig) == 0 ? 1 : -1;
    return 0;
  }
  if (!sig && t->world->size > 1) sig = coll_comm_peer_cancel(t->comm, &from);
  if (!sig) return 0;
  t->canceled = sig;
  char who[48] = "";
  if (from) snprintf(who, sizeof who, " (sent to rank %d)", from);
  snprintf(t->err, sizeof t->err, "canceled by %s%s at epoch %lld, step %lld",
           sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal", who,
           (long long)epoch + 1, (long long)t->global_step);
  return 1;
}

static int train_epoch_steps(trainer *t, int64_t epoch, int show_progress) {
  kern_backend *be = t->be;
  if (!t->input && train_epoch_order(t, epoch) != 0) return -1;
  T_TRY(t, kern_mem_zero(be, t->stats_dev, sizeof(kern_stats)));
  t->data_wait_s = 0;
  double t0 = clock_mono_s();
  const int64_t chain = train_step_chain(t);
  for (int64_t step = 0, k; step < t->steps_per_epoch; step += k) {
    k = t->steps_per_epoch - step < chain ? t->steps_per_epoch - step : chain;
    train_timeline_steps(t, step);
    double s = train_tl_begin(t);
    if (train_fault_maybe(t, k) != 0 || train_step(t, k) != 0) return -1;
    train_tl_end(t, "step", s);
    t->global_step += k;
    if (show_progress) train_progress(t, epoch, step + k - 1, t0);
    if (train_cancel_requested(t, epoch)) return -1;
  }
  train_timeline_steps(t, t->steps_per_epoch);
  double s = train_tl_epoch_begin(t);
  /* Bounded: a hung NCCL reduction is aborted here, not waited on forever. */
  if (t->world->size > 1 && coll_sync(t->comm) != COLL_OK) return train_coll_fail(t);
  if (kern_sync(be) != 0) {
    snprintf(t->err, sizeof t->err, "%s", kern_error(be));
    return -1;
  }
  train_tl_epoch_end(t, "device sync", s, epoch);
  return 0;
}

static int train_epoch_finish(trainer *t, int64_t epoch, double seconds) {
  kern_stats st;
  train_epoch_result *res = &t->last;
  T_TRY(t, kern_mem_download(t->be, &st, t->stats_dev, sizeof st));
  double sums[5] = {st.loss_sum, st.correct, st.samples, st.last_correct, st.last_samples};
  double s = train_tl_epoch_begin(t);
  if (t->world->size > 1 && coll_allreduce_sum_f64(t->comm, sums, 5) != COLL_OK) {
    return train_coll_fail(t);
  }
  train_tl_epoch_end(t, "epoch metrics", s, epoch);
  res->loss = sums[0] / sums[2];
  res->train_acc_mean = sums[1] / sums[2];
  res->training_acc = sums[3] / sums[4];
  res->epoch_time_s = seconds;
  res->samples_per_s = (double)(t->steps_per_epoch * t->global_batch) / seconds;
  res->step_time_ms = seconds * 1e3 / (double)t->steps_per_epoch;
  s = train_tl_epoch_begin(t);
  if (trainer_evaluate(t, &res->validation_acc, &res->validation_loss) != 0) return -1;
  train_tl_epoch_end(t, "evaluate", s, epoch);
  const int64_t step = t->global_step;
  struct { const char *name; double v; } rows[] = {
    {"training_acc", res->training_acc}, {"validation_acc", res->validation_acc},
    {"loss", res->loss}, {"train_acc_mean", res->train_acc_mean},
    {"validation_loss", res->validation_loss}, {"samples_per_s", res->samples_per_s},
    {"step_time_ms", res->step_time_ms}, {"epoch_time_s", res->epoch_time_s},
    {"data_wait_s", t->data_wait_s},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    metrics_write(&t->metrics, rows[i].name, rows[i].v, epoch + 1, step);
  }
  if (metrics_sync(&t->metrics, t->err, sizeof t->err) != 0) return -1;
  char line[512];
  snprintf(line, sizeof line,
           "epoch %3lld/%lld  loss %.4f  training_acc %.4f  validation_acc %.4f  "
           "samples/s %.0f  time %.2fs",
           (long long)epoch + 1, (long long)t->cfg->epochs, res->loss, res->training_acc,
           res->validation_acc, res->samples_per_s, seconds);
  if (t->world->rank == 0) {
    printf("%s\n", line);
    fflush(stdout);
  }
  rank_log_printf(&t->log, "%s", line);
  return 0;
}

/* The run's final metrics: in run.json, and in the model file itself. */
static cJSON *train_final_metrics(const trainer *t) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddNumberToObject(m, "final_acc", t->last.validation_acc);
  cJSON_AddNumberToObject(m, "training_acc", t->last.training_acc);
  cJSON_AddNumberToObject(m, "loss", t->last.loss);
  cJSON_AddNumberToObject(m, "samples_per_s", t->last.samples_per_s);
  return m;
}

static int train_save_model(trainer *t) {
  const int64_t P = t->layout.total_elems;
  T_TRY(t, kern_mem_download_f32(t->be, t->params_host, t->params, P));
  if (t->world->rank != 0) return 0;
  char dir[4200], path[4300];
  snprintf(dir, sizeof dir, "%s/model", t->cfg->outputs);
  snprintf(path, sizeof path, "%s/model.h5", dir);
  if (fs_mkdirs(dir, t->err, sizeof t->err) != 0) return -1;
  cJSON *m = train_final_metrics(t);
  char *metrics = cJSON_PrintUnformatted(m);
  cJSON_Delete(m);
  int rc = h5model_save_run(path, &t->layout, t->params_host, t->run.id, metrics, t->err,
                            sizeof t->err);
  free(metrics);
  if (rc != 0) return -1;
  rank_log_printf(&t->log, "model: %s", path);
  return 0;
}

int trainer_run(trainer *t) {
  int tty = isatty(2);
  int show = t->world->rank == 0 && (!strcmp(t->cfg->progress, "on") ||
                                     (!strcmp(t->cfg->progress, "auto") && tty));
  if (train_input_start(t) != 0) return -1; /* first, so its start-up overlaps the record write */
  if (t->world->rank == 0 && run_record_stage(&t->run, RUN_RUNNING, t->err, sizeof t->err) != 0) {
    return -1;
  }
  if (train_timeline_start(t) != 0) return -1;
  for (int64_t epoch = t->start_epoch; epoch < t->cfg->epochs; epoch++) {
    double t0 = clock_mono_s();
    if (train_epoch_steps(t, epoch, show) != 0) return -1;
    train_tl_epoch_end(t, "epoch steps", t0, epoch);
    if (train_epoch_finish(t, epoch, clock_mono_s() - t0) != 0) return -1;
    double s = train_tl_epoch_begin(t);
    if (t->ps && train_ckpt_due(t, epoch + 1) && train_ps_pull_state(t) != 0) return -1;
    if (train_ckpt_epoch_end(t, epoch + 1) != 0) return -1;
    if (train_ckpt_due(t, epoch + 1) && (t->world->rank == 0 || t->ps)) {
      train_tl_epoch_end(t, "checkpoint", s, epoch);
    }
  }
  if (t->ps && train_ps_finish(t) != 0) return -1;
  train_timeline_finish(t);
  if (t->world->rank == 0) {
    metrics_write(&t->metrics, "final_acc", t->last.validation_acc, t->cfg->epochs, t->global_step);
    if (metrics_sync(&t->metrics, t->err, sizeof t->err) != 0) return -1;
    printf("final_acc %.4f\n", t->last.validation_acc);
    if (run_record_stage(&t->run, RUN_FINALIZING, t->err, sizeof t->err) != 0) return -1;
  }
  if (train_save_model(t) != 0) return -1;
  if (t->world->rank == 0) {
    run_record_set(&t->run, "metrics", train_final_metrics(t));
    if (run_record_stage(&t->run, RUN_COMPLETED, t->err, sizeof t->err) != 0) return -1;
  }
  return 0;
}

static void train_setup_opt(trainer *t) {
  const train_config *c = t->cfg;
  t->opt.kind = !strcmp(c->optimizer, "momentum") ? KERN_OPT_MOMENTUM : KERN_OPT_SGD;
  t->opt.lr = (float)(c->learning_rate * (c->scale_lr ? t->world->size : 1));
  t->opt.momentum = (float)c->momentum;
}

/* The files a run writes into <outputs> and <outputs>/model. */
static int train_outputs_file(const char *name) {
  return !strcmp(name, "run.json") || !strcmp(name, "metrics.jsonl") || !strcmp(name, "model.h5");
}

static int train_open_records(trainer *t, cJSON *ranks) {
  const train_config *c = t->cfg;
  char id[64] = {0};
  if (t->world->rank == 0) run_id_make(id, sizeof id);
  if (t->world->size > 1 && coll_broadcast_bytes(t->comm, id, sizeof id, 0) != COLL_OK) {
    cJSON_Delete(ranks);
    return train_coll_fail(t);
  }
  rank_log_printf(&t->log, "run %s", id);
  if (kern_is_host_memory(t->be)) {
    rank_log_printf(&t->log, "threads: %d (%s); column slices of every GEMM, BLAS single-threaded",
                    kern_config_of(t->be)->threads, c->threads_why);
  }
  if (t->world->rank != 0) {
    cJSON_Delete(ranks);
    return 0;
  }
  if (fs_mkdirs(c->outputs, t->err, sizeof t->err) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  cJSON *config = opt_to_json(&train_options, c);
  if (config && c->resume_auto) { /* the job's own flag: its config reruns as the job */
    cJSON_ReplaceItemInObjectCaseSensitive(config, "resume_from", cJSON_CreateString("auto"));
  }
  if (run_record_init(&t->run, id, c->outputs, config, t->err, sizeof t->err) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  /* Under the lock: temp files of a run killed mid-save are nobody's now. */
  char model_dir[4200];
  snprintf(model_dir, sizeof model_dir, "%s/model", c->outputs);
  fs_remove_stale_tmp(c->outputs, train_outputs_file);
  fs_remove_stale_tmp(model_dir, train_outputs_file);
  run_record_set(&t->run, "world_size", cJSON_CreateNumber(t->world->size));
  run_record_set(&t->run, "ranks", ranks);
  run_record_set(&t->run, "device", cJSON_CreateString(kern_name(t->be)));
  if (kern_is_host_memory(t->be)) {
    cJSON *th = cJSON_CreateObject();
    cJSON_AddNumberToObject(th, "count", kern_config_of(t->be)->threads);
    cJSON_AddStringToObject(th, "why", c->threads_why);
    cJSON_AddStringToObject(th, "how", "column slices of every GEMM, one team per rank");
    run_record_set(&t->run, "threads", th);
  }
  run_record_set(&t->run, "allreduce", cJSON_CreateString(coll_backend_name(coll_comm_backend(t->comm))));
  cJSON *cluster = train_cluster_json(t->world);
  if (cluster) run_record_set(&t->run, "cluster", cluster);
  run_record_set(&t->run, "versions", buildinfo_json());
  return metrics_open(&t->metrics, c->outputs, c->resume_from[0] != '\0', t->err, sizeof t->err);
}

int trainer_init(trainer *t, const train_config *cfg, const coll_world *world, coll_comm *comm,
                 kern_backend *be, cJSON *ranks) {
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->world = world;
  t->comm = comm;
  t->be = be;
  t->batch = cfg->batch_size;
  t->global_batch = cfg->batch_size * world->size;
  if (rank_log_open(&t->log, cfg->logs, world->rank, t->err, sizeof t->err) != 0) {
    cJSON_Delete(ranks); /* owned from here on, on every path */
    return -1;
  }
  model_layout_init(&t->layout, 784, cfg->first_layer_neurons, cfg->second_layer_neurons,
                    DATA_CLASSES);
  if (train_load_data(t) != 0 || train_ckpt_check_data(t) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  if (!t->shards) t->steps_per_epoch = t->train.count / t->global_batch;
  if (cfg->max_steps > 0 && cfg->max_steps < t->steps_per_epoch) t->steps_per_epoch = cfg->max_steps;
  if (train_ckpt_precheck(t) != 0) { /* a rejected resume leaves <outputs> as it was */
    cJSON_Delete(ranks);
    return -1;
  }
  if (train_open_records(t, ranks) != 0) return -1;
  train_setup_opt(t);
  if (train_alloc(t) != 0 || train_init_params(t) != 0 || train_ckpt_resume(t) != 0) return -1;
  t->ps = coll_ps_count(comm) > 0;
  t->use_graph = cfg->graph && kern_has_graphs(be) && !t->ps &&
                 (world->size == 1 || coll_comm_backend(comm) == COLL_BACKEND_NCCL);
  return train_setup_fused(t);
}

void trainer_free(trainer *t) {
  kern_backend *be = t->be;
  if (be) {
    if (t->graph) kern_graph_free(be, t->graph);
    model_work_free(&t->work);
    void *bufs[] = {t->params, t->grads, t->opt_state, t->perm_dev, t->test_idx_dev,
                    t->cursor_dev, t->eval_cursor_dev, t->stats_dev, t->eval_stats_dev,
                    t->fused_ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kern_mem_free(be, bufs[i]);
    if (!train_is_cpu(t)) {
      const void *data[] = {t->train_images_dev, t->train_labels_dev, t->test_images_dev,
                            t->test_labels_dev};
      for (size_t i = 0; i < 4; i++) kern_mem_free(be, (void *)data[i]);
    }
  }
  train_timeline_abandon(t);
  train_input_free(t);
  if (t->grads_host != t->grads && be) kern_host_free(be, t->grads_host);
  free(t->perm_host);
  free(t->params_host);
  data_set_free(&t->train);
  data_set_free(&t->test);
  metrics_close(&t->metrics);
  rank_log_close(&t->log);
  run_record_free(&t->run);
  train_ckpt_free(t);
}
