/* The training loop of ../shared/SPEC.md: per-epoch shuffle, floor(N/global
 * batch) steps, gradients averaged over ranks every step (a step: K micro-
 * batches under --backward-passes-per-step K), evaluation every epoch. */
#include "train/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fault.h"
#include "base/rng.h"
#include "train/buildinfo.h"
#include "model/evaluate.h"
#include "base/fsutil.h"
#include "modelio/h5model.h"
#include "train/train_ckpt.h"
#include "train/train_finite.h"
#include "train/train_input.h"
#include "train/train_opt.h"
#include "train/train_outputs.h"
#include "train/train_ps.h"
#include "train/train_timeline.h"
#include "cluster/ps.h"
#include "tboard/tboard.h"

/* A backend call: on failure its message, unless an earlier one is set. */
#define T_TRY(t, call)                                                                       \
  do {                                                                                       \
    if ((call) != 0) return train_err_backend(&(t)->err, (t)->ctx.be);                      \
  } while (0)

static int train_is_cpu(const trainer *t) { return kern_is_host_memory(t->ctx.be); }

/* Host data as the backend sees it: the same pointer on the CPU, a device copy otherwise. */
static int train_to_backend(trainer *t, const void *host, size_t bytes, const void **out) {
  if (train_is_cpu(t)) {
    *out = host;
    return 0;
  }
  void *dev = NULL;
  T_TRY(t, kern_mem_alloc(t->ctx.be, &dev, bytes ? bytes : 1));
  T_TRY(t, kern_mem_upload(t->ctx.be, dev, host, bytes));
  *out = dev;
  return 0;
}

static int train_load_data(trainer *t) {
  data_files files;
  if (train_input_streaming(t->ctx.cfg)) {
    return train_input_load_stream(&t->data, &t->ctx, t->step.layout.dims[0], &t->out.log, &t->err);
  }
  if (data_files_find(&files, t->ctx.cfg->data_folder, t->err.msg, sizeof t->err.msg) != 0) {
    return -1;
  }
  if (data_set_load(&t->data.train, files.train_images, files.train_labels, 1, t->err.msg,
                    sizeof t->err.msg) != 0 ||
      data_set_load(&t->data.test, files.test_images, files.test_labels, 1, t->err.msg,
                    sizeof t->err.msg) != 0) {
    return -1;
  }
  if (t->data.train.count / t->data.global_batch < t->data.micro) {
    return base_err_set(&t->err, "--batch-size: global batch %lld (%d ranks x %lld) x "
                        "--backward-passes-per-step %lld exceeds the %lld training samples",
                        (long long)t->data.global_batch, t->ctx.world->size,
                        (long long)t->data.batch, (long long)t->data.micro,
                        (long long)t->data.train.count);
  }
  rank_log_printf(&t->out.log, "data: %s (%lld train), %s (%lld test)", files.train_images,
                  (long long)t->data.train.count, files.test_images, (long long)t->data.test.count);
  return 0;
}

/* On the CPU, where the comm has memory of its own for the gradients (shm,
 * hier: this rank's part of its node's shared segment), backward writes
 * straight into it and the allreduce copies nothing in or out;
 * --shared-gradients off keeps them private (the copying path). */
static int train_alloc_grads(trainer *t, int64_t P) {
  if (train_is_cpu(t) && t->ctx.world->size > 1 && cluster_ps_count(t->ctx.comm) == 0) {
    char err[512] = "";
    if (!t->ctx.cfg->shared_gradients) {
      snprintf(err, sizeof err, "--shared-gradients off");
    } else if (coll_comm_buffer(t->ctx.comm, P, &t->step.grads, err, sizeof err) != COLL_OK) {
      return base_err_set(&t->err, "%s", err);
    }
    t->step.grads_shared = t->step.grads != NULL;
    rank_log_printf(&t->out.log, "gradients: %s%s%s", t->step.grads_shared ?
                    "in the comm's shared segment (no copy in or out of the allreduce)" :
                    "private (the allreduce copies them)", err[0] ? ": " : "", err);
    if (t->step.grads_shared) return 0;
  }
  T_TRY(t, kern_mem_alloc_f32(t->ctx.be, &t->step.grads, P));
  return 0;
}

static int train_alloc(trainer *t) {
  kern_backend *be = t->ctx.be;
  const int64_t P = t->step.layout.total_elems;
  const int64_t ntrain = t->data.train.count, ntest = t->data.test.count,
                px = t->step.layout.dims[0];
  T_TRY(t, model_work_init(&t->step.work, be, &t->step.layout,
                           t->data.batch > EVAL_CHUNK ? t->data.batch : EVAL_CHUNK));
  T_TRY(t, kern_mem_alloc_f32(be, &t->step.params, P));
  if (train_alloc_grads(t, P) != 0) return -1;
  const int64_t S = train_opt_state_elems(t->step.opt.kind, P);
  T_TRY(t, kern_mem_alloc_f32(be, &t->step.opt_state, S));
  T_TRY(t, kern_mem_zero_f32(be, t->step.opt_state, S));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->data.perm_dev, (size_t)ntrain * sizeof(int32_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->data.test_idx_dev, (size_t)ntest * sizeof(int32_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->data.cursor_dev, sizeof(int64_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->data.eval_cursor_dev, sizeof(int64_t)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->step.stats_dev, sizeof(kern_stats)));
  T_TRY(t, kern_mem_alloc(be, (void **)&t->step.eval_stats_dev, sizeof(kern_stats)));
  t->data.perm_host = malloc((size_t)ntrain * sizeof(int32_t));
  t->step.params_host = malloc((size_t)P * sizeof(float));
  int32_t *ident = malloc((size_t)ntest * sizeof(int32_t));
  if (!t->data.perm_host || !t->step.params_host || !ident) {
    free(ident);
    return base_err_set(&t->err, "out of host memory");
  }
  for (int64_t i = 0; i < ntest; i++) ident[i] = (int32_t)i;
  int rc = kern_mem_upload(be, t->data.test_idx_dev, ident, (size_t)ntest * sizeof(int32_t));
  free(ident);
  T_TRY(t, rc);
  t->step.host_staged = !train_is_cpu(t) && coll_comm_backend(t->ctx.comm) != COLL_BACKEND_NCCL;
  t->step.grads_host = t->step.grads;
  if (t->step.host_staged) { /* pinned on CUDA: the per-step copies run at full PCIe speed */
    t->step.grads_host = NULL;
    T_TRY(t, kern_host_alloc(be, (void **)&t->step.grads_host, (size_t)P * sizeof(float)));
  }
  T_TRY(t, train_to_backend(t, t->data.train.images, (size_t)(ntrain * px),
                            (const void **)&t->data.train_images_dev));
  T_TRY(t, train_to_backend(t, t->data.train.labels, (size_t)ntrain,
                            (const void **)&t->data.train_labels_dev));
  T_TRY(t, train_to_backend(t, t->data.test.images, (size_t)(ntest * px),
                            (const void **)&t->data.test_images_dev));
  T_TRY(t, train_to_backend(t, t->data.test.labels, (size_t)ntest,
                            (const void **)&t->data.test_labels_dev));
  return 0;
}

/* Rank 0's initial weights reach every rank, so all start identical. */
static int train_init_params(trainer *t) {
  const int64_t P = t->step.layout.total_elems;
  if (t->ctx.world->rank == 0) {
    model_init_params(&t->step.layout, t->step.params_host, (uint64_t)t->ctx.cfg->seed);
  }
  if (t->ctx.world->size > 1 &&
      coll_broadcast_f32(t->ctx.comm, t->step.params_host, P, 0) != COLL_OK) {
    return train_err_coll(&t->err, t->ctx.comm);
  }
  T_TRY(t, kern_mem_upload(t->ctx.be, t->step.params, t->step.params_host,
                                      (size_t)P * sizeof(float)));
  /* FNV-1a of the bytes every rank now holds: equal in every rank's log. */
  uint64_t h = 1469598103934665603ULL;
  const unsigned char *b = (const unsigned char *)t->step.params_host;
  for (size_t i = 0; i < (size_t)P * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ULL;
  rank_log_printf(&t->out.log, "initial params: %lld floats, fnv1a %016llx", (long long)P,
                  (unsigned long long)h);
  return 0;
}

static int train_coll_fail(trainer *t) { return train_err_coll(&t->err, t->ctx.comm); }

/* Starts layer k's gradient average while backward goes on below it. */
static int train_reduce_layer(void *ctx, int k) {
  trainer *t = ctx;
  const int64_t off = t->step.layout.layer_offset[k], n = t->step.layout.layer_elems[k];
  if (t->step.host_staged) {
    T_TRY(t, kern_mem_download(t->ctx.be, t->step.grads_host + off, t->step.grads + off,
                                      (size_t)n * sizeof(float)));
  }
  train_scaler_fault(t->ctx.world->rank, t->step.global_step, t->step.grads_host + off, n);
  if (coll_iallreduce_avg_f32(t->ctx.comm, t->step.grads_host + off, n, &t->step.pending[k]) !=
      COLL_OK) {
    return train_coll_fail(t);
  }
  return 0;
}

/* model_backward's hook: each layer's span, then its reduction (overlap on). */
static int train_layer_done(void *ctx, int k) {
  static const char *names[MODEL_LAYERS] = {"backward dense", "backward dense_1",
                                            "backward dense_2"};
  trainer *t = ctx;
  train_tl_end(&t->out.tl, names[k], t->out.tl.mark);
  const int reduce = t->ctx.world->size > 1 && !t->step.ps && t->ctx.cfg->overlap &&
                     t->step.reduce_now;
  if (reduce && train_reduce_layer(t, k) != 0) return -1;
  t->out.tl.mark = train_tl_begin(&t->out.tl); /* the next layer's span starts after the submit */
  return 0;
}

static int train_reduce_finish(trainer *t) {
  const int64_t P = t->step.layout.total_elems;
  if (t->ctx.cfg->overlap) {
    for (int k = MODEL_LAYERS - 1; k >= 0; k--) {
      coll_request *r = t->step.pending[k];
      t->step.pending[k] = NULL;
      if (r && coll_wait(t->ctx.comm, r) != COLL_OK) return train_coll_fail(t);
    }
  } else {
    if (t->step.host_staged) {
      T_TRY(t, kern_mem_download(t->ctx.be, t->step.grads_host, t->step.grads,
                                            (size_t)P * sizeof(float)));
    }
    train_scaler_fault(t->ctx.world->rank, t->step.global_step, t->step.grads_host, P);
    if (coll_allreduce_avg_f32(t->ctx.comm, t->step.grads_host, P) != COLL_OK) {
      return train_coll_fail(t);
    }
  }
  if (t->step.host_staged) {
    T_TRY(t, kern_mem_upload(t->ctx.be, t->step.grads, t->step.grads_host,
                                        (size_t)P * sizeof(float)));
  }
  return 0;
}

/* One micro-batch of an update as backend ops: forward, and backward adding
 * into grads (zeroed before the first), each sample's gradient scaled by
 * 1/(B*K) so that the sum over K micro-batches is the mean over K*B samples;
 * the last (the only one when K is 1) then averages over ranks and updates.
 * The rows come from *cursor_dev, which each micro-batch advances. */
static int train_micro_ops(trainer *t, int first, int last) {
  kern_backend *be = t->ctx.be;
  model_work *w = &t->step.work;
  const int64_t B = t->data.batch, P = t->step.layout.total_elems;
  const int reduce = t->ctx.world->size > 1 && !t->step.ps;
  double s = train_tl_begin(&t->out.tl);
  if (!t->data.input) { /* else train_input_next has filled act[0] and labels */
    T_TRY(t, kern_gather_u8(be, w->act[0], w->labels, t->data.train_images_dev,
                                t->data.train_labels_dev, t->step.layout.dims[0], t->data.perm_dev,
                                t->data.cursor_dev, B));
    train_tl_end(&t->out.tl, "gather", s);
  }
  train_scaler_begin(&t->step.scaler, t->ctx.comm);
  s = train_tl_begin(&t->out.tl);
  T_TRY(t, model_forward(w, t->step.params, B));
  train_tl_end(&t->out.tl, "forward", s);
  s = train_tl_begin(&t->out.tl);
  T_TRY(t, kern_xent(be, w->dact[MODEL_LAYERS], t->step.stats_dev, w->act[MODEL_LAYERS],
                         w->labels, B, t->step.layout.dims[MODEL_LAYERS],
                         1.0f / (float)(B * t->data.micro)));
  train_tl_end(&t->out.tl, "loss", s);
  if (first) {
    s = train_tl_begin(&t->out.tl);
    T_TRY(t, kern_mem_zero(be, t->step.grads, (size_t)P * sizeof(float)));
    train_tl_end(&t->out.tl, "zero gradients", s);
  }
  t->out.tl.mark = train_tl_begin(&t->out.tl);
  t->step.reduce_now = last;
  model_layer_done_fn done =
      (reduce && t->ctx.cfg->overlap && last) || t->out.tl.rec ? train_layer_done : NULL;
  T_TRY(t, model_backward(w, t->step.params, t->step.grads, B, done, t));
  s = train_tl_begin(&t->out.tl);
  if (last && t->step.ps) {
    if (train_ps_step(&t->step, &t->ctx, &t->out.log, &t->err) != 0) return -1;
    train_tl_end(&t->out.tl, "ps push and pull", s);
  } else if (last) {
    if (reduce && train_reduce_finish(t) != 0) return -1;
    if (reduce) train_tl_end(&t->out.tl, "allreduce wait", s);
    int apply = 1; /* fp16: not after an overflow */
    if (reduce && train_scaler_after(&t->step.scaler, t->step.grads_host, P, t->step.global_step,
                                     &t->out.log, &t->out.metrics,
                                     t->step.global_step / t->data.steps_per_epoch + 1, &apply,
                                     &t->err) != 0) {
      return -1;
    }
    s = train_tl_begin(&t->out.tl);
    if (apply) T_TRY(t, kern_opt_update(be, t->step.params, t->step.grads, t->step.opt_state, P,
                                        &t->step.opt));
    train_tl_end(&t->out.tl, "update", s);
  }
  T_TRY(t, kern_cursor_advance(be, t->data.cursor_dev, t->data.global_batch));
  return 0;
}

/* One update as backend ops only, so a GPU backend can record it as a graph
 * (K > 1 with a loader is never recorded: its batches arrive between the
 * micro-batches). The first micro-batch's loader batch is train_step's. */
static int train_step_ops(trainer *t) {
  if (t->step.fused_ws) {
    T_TRY(t, kern_fused_step(t->ctx.be, &t->step.fused));
    return 0;
  }
  for (int64_t j = 0; j < t->data.micro; j++) {
    double s = train_tl_begin(&t->out.tl);
    if (j > 0 && t->data.input) {
      if (train_input_next(&t->data, t->ctx.be, &t->step.work, &t->err) != 0) return -1;
      train_tl_end(&t->out.tl, "data", s);
    }
    if (train_micro_ops(t, j == 0, j == t->data.micro - 1) != 0) return -1;
  }
  return 0;
}

/* k steps: one launch runs them all when the step is fused, else k is 1
 * (a loader, which never goes with the fused step, gives the first
 * micro-batch here, train_step_ops the others). */
static int train_step(trainer *t, int64_t k) {
  double s = train_tl_begin(&t->out.tl);
  if (t->data.input && train_input_next(&t->data, t->ctx.be, &t->step.work, &t->err) != 0) {
    return -1;
  }
  if (t->data.input) train_tl_end(&t->out.tl, "data", s);
  t->step.fused.steps = k;
  /* an epoch's shorter last chain: one launch, graph or not */
  if (!t->step.use_graph || (t->step.graph && k != t->step.graph_steps)) return train_step_ops(t);
  if (!t->step.graph) {
    /* the ops only record into the graph here: their spans would mean nothing */
    const int rec = t->out.tl.rec;
    s = train_tl_begin(&t->out.tl);
    __atomic_store_n(&t->out.tl.rec, 0, __ATOMIC_RELAXED);
    T_TRY(t, kern_graph_begin(t->ctx.be));
    int rc = train_step_ops(t);
    void *g = NULL;
    int end_rc = kern_graph_end(t->ctx.be, &g);
    __atomic_store_n(&t->out.tl.rec, rec, __ATOMIC_RELAXED);
    train_tl_end(&t->out.tl, "capture step graph", s);
    if (rc != 0) return -1;
    T_TRY(t, end_rc);
    t->step.graph = g;
    t->step.graph_steps = k;
  }
  s = train_tl_begin(&t->out.tl);
  T_TRY(t, kern_graph_launch(t->ctx.be, t->step.graph));
  train_tl_end(&t->out.tl, k > 1 ? "launch step chain" : "launch step", s);
  return 0;
}

/* base/fault.h's step switches: whether f fires in this rank's next k steps. */
static int train_fault_at(const trainer *t, int64_t k, base_fault_at f) {
  return f.rank == t->ctx.world->rank && f.step >= t->step.global_step &&
         f.step < t->step.global_step + k;
}

static int train_fault_maybe(trainer *t, int64_t k) {
  if (train_fault_at(t, k, base_fault_stall())) {
    fprintf(stderr, "tfdist: rank %d: test fault: stalling at step %ld\n", t->ctx.world->rank,
            base_fault_stall().step);
    for (;;) pause();
  }
  if (train_fault_at(t, k, base_fault_fail())) {
    return base_err_set(&t->err, "test fault: failing at step %ld", base_fault_fail().step);
  }
  return 0;
}

/* One rank, data on the device, the backend can fuse the shape: the step is
 * one launch instead of ~20, and a launch runs a chain of up to
 * TRAIN_STEP_CHAIN steps (same math, same buffers; see kernels/mlp_step.h).
 * On the CPU only with a team: its fused step waits 4 times a step, and for
 * pieces only, where op by op has ~12 team jobs with a barrier each, and
 * its members gather their own rows where op by op has a loader thread
 * beside the team. With 1 thread, op by op and its loader on a spare core
 * measured as fast. The timeline needs the ops' own spans: op by op. */
static int train_setup_fused(trainer *t) {
  kern_backend *be = t->ctx.be;
  const int cpu_op_by_op =
      kern_is_host_memory(be) && (kern_config_of(be)->threads <= 1 || t->ctx.cfg->timeline);
  if (!t->ctx.cfg->fused_step || t->ctx.world->size > 1 || t->step.ps || cpu_op_by_op ||
      train_input_streaming(t->ctx.cfg)) {
    rank_log_printf(&t->out.log, "step: op by op");
    return 0;
  }
  if (t->data.micro > 1) { /* the fused step overwrites the gradient: no accumulation */
    rank_log_printf(&t->out.log, "step: op by op (--backward-passes-per-step %lld)",
                    (long long)t->data.micro);
    return 0;
  }
  kern_step *s = &t->step.fused;
  *s = (kern_step){ .n = t->data.batch,
                    .params = t->step.params,
                    .grads = t->step.grads,
                    .opt_state = t->step.opt_state,
                    .images = t->data.train_images_dev,
                    .image_labels = t->data.train_labels_dev,
                    .perm = t->data.perm_dev,
                    .cursor = t->data.cursor_dev,
                    .cursor_delta = t->data.global_batch,
                    .stats = t->step.stats_dev,
                    .grad_scale = 1.0f / (float)t->data.batch,
                    .opt = t->step.opt };
  model_step_shape(s, &t->step.layout, &t->step.work);
  size_t bytes = 0;
  int rc = kern_fused_step_ws(be, s, &bytes);
  if (rc > 0) {
    rank_log_printf(&t->out.log,
                    "step: op by op (the backend does not fuse this shape or configuration)");
    return 0;
  }
  T_TRY(t, rc);
  T_TRY(t, kern_mem_alloc(be, &t->step.fused_ws, bytes));
  s->ws = t->step.fused_ws;
  rank_log_printf(&t->out.log, "step: fused, up to %d steps per launch (%zu bytes of workspace)",
                  TRAIN_STEP_CHAIN, bytes);
  if (kern_is_host_memory(be)) {
    rank_log_printf(&t->out.log, "threads: %s", TRAIN_THREADS_FUSED);
    train_outputs_record_threads(&t->out, &t->ctx, TRAIN_THREADS_FUSED);
  }
  return 0;
}

int trainer_evaluate(trainer *t, double *acc, double *loss) {
  kern_backend *be = t->ctx.be;
  const int64_t n = t->data.test.count, N = t->ctx.world->size, r = t->ctx.world->rank;
  const int64_t lo = n * r / N, hi = n * (r + 1) / N;
  kern_stats st;
  T_TRY(t, kern_mem_zero(be, t->step.eval_stats_dev, sizeof(kern_stats)));
  const eval_ctx ec = { be,
                        &t->step.work,
                        t->step.params,
                        t->data.test_images_dev,
                        t->data.test_labels_dev,
                        t->step.layout.dims[0],
                        t->data.test_idx_dev,
                        t->data.eval_cursor_dev,
                        t->step.eval_stats_dev };
  T_TRY(t, eval_rows(&ec, lo, hi, NULL, NULL));
  T_TRY(t, kern_mem_download(be, &st, t->step.eval_stats_dev, sizeof st));
  double sums[3] = {st.correct, st.loss_sum, st.samples};
  if (N > 1 && coll_allreduce_sum_f64(t->ctx.comm, sums, 3) != COLL_OK) return train_coll_fail(t);
  *acc = sums[0] / sums[2];
  *loss = sums[1] / sums[2];
  return 0;
}

static void train_progress(const trainer *t, int64_t epoch, int64_t step, double t0) {
  static double last;
  double now = clock_mono_s();
  if (step + 1 < t->data.steps_per_epoch && now - last < 0.25) return;
  last = now;
  double frac = (double)(step + 1) / (double)t->data.steps_per_epoch;
  double eta = (now - t0) / frac * (1.0 - frac);
  fprintf(stderr, "\r  epoch %lld/%lld  step %lld/%lld  %3.0f%%  ETA %.1fs   ",
          (long long)epoch + 1, (long long)t->ctx.cfg->epochs, (long long)step + 1,
          (long long)t->data.steps_per_epoch, frac * 100.0, eta);
  if (step + 1 == t->data.steps_per_epoch) fprintf(stderr, "\r%72s\r", "");
}

/* The order the step's own gather reads; with a loader (t->data.input) the
 * loader thread derives the same permutation itself, so none is made here. */
static int train_epoch_order(trainer *t, int64_t epoch) {
  kern_backend *be = t->ctx.be;
  const int64_t ntrain = t->data.train.count;
  base_perm_epoch(t->data.perm_host, ntrain, (uint64_t)t->ctx.cfg->seed, epoch);
  T_TRY(t, kern_mem_upload(be, t->data.perm_dev, t->data.perm_host,
                               (size_t)ntrain * sizeof(int32_t)));
  int64_t cursor = (int64_t)t->ctx.world->rank * t->data.batch;
  T_TRY(t, kern_mem_upload(be, t->data.cursor_dev, &cursor, sizeof cursor));
  return 0;
}

/* Rank 0 alone acts on SIGINT/SIGTERM: it must live to record Canceled
 * before the job is ended. A launcher signals every rank; a signal that
 * reaches another rank alone is passed on to rank 0, and that rank trains on
 * until rank 0's abort ends it. */
static int train_cancel_requested(trainer *t, int64_t epoch) {
  int sig = run_cancel_signal(), from = 0;
  if (sig && t->ctx.world->rank != 0) {
    if (!t->out.cancel_relayed) {
      t->out.cancel_relayed = coll_comm_report_cancel(t->ctx.comm, sig) == 0 ? 1 : -1;
    }
    return 0;
  }
  if (!sig && t->ctx.world->size > 1) sig = coll_comm_peer_cancel(t->ctx.comm, &from);
  if (!sig) return 0;
  t->out.canceled = sig;
  char who[48] = "";
  if (from) snprintf(who, sizeof who, " (sent to rank %d)", from);
  base_err_set(&t->err, "canceled by %s%s at epoch %lld, step %lld",
           sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal", who,
           (long long)epoch + 1, (long long)t->step.global_step);
  return 1;
}

static int train_epoch_steps(trainer *t, int64_t epoch, int show_progress) {
  kern_backend *be = t->ctx.be;
  if (!t->data.input && train_epoch_order(t, epoch) != 0) return -1;
  T_TRY(t, kern_mem_zero(be, t->step.stats_dev, sizeof(kern_stats)));
  t->data.wait_s = 0;
  double t0 = clock_mono_s();
  const int64_t chain =
      t->step.fused_ws && !train_opt_varies(&t->step.opt, &t->step.sched) ? TRAIN_STEP_CHAIN : 1;
  for (int64_t step = 0, k; step < t->data.steps_per_epoch; step += k) {
    k = t->data.steps_per_epoch - step < chain ? t->data.steps_per_epoch - step : chain;
    train_timeline_steps(&t->out.tl, step);
    /* k > 1 only where the rule does not vary */
    train_opt_at(&t->step.opt, &t->step.sched, t->step.global_step, t->step.scaler.overflows);
    t->step.fused.opt = t->step.opt;
    double s = train_tl_begin(&t->out.tl);
    if (train_fault_maybe(t, k) != 0 || train_step(t, k) != 0) return -1;
    train_tl_end(&t->out.tl, "step", s);
    t->step.global_step += k;
    /* On the CPU the running loss is host memory: a diverged step is caught
     * at once. Elsewhere the epoch's end checks (train_epoch_finish). */
    if (train_is_cpu(t) &&
        train_finite_check(&t->step.layout, NULL, t->step.stats_dev->loss_sum, epoch + 1, step + k,
                           t->step.global_step, t->err.msg, sizeof t->err.msg)) {
      return -1;
    }
    if (show_progress) train_progress(t, epoch, step + k - 1, t0);
    if (train_cancel_requested(t, epoch)) return -1;
  }
  train_timeline_steps(&t->out.tl, t->data.steps_per_epoch);
  double s = train_tl_epoch_begin(&t->out.tl);
  /* Bounded: a hung NCCL reduction is aborted here, not waited on forever. */
  if (t->ctx.world->size > 1 && coll_sync(t->ctx.comm) != COLL_OK) return train_coll_fail(t);
  if (kern_sync(be) != 0) return train_err_backend(&t->err, be);
  train_tl_epoch_end(&t->out.tl, "device sync", s, epoch);
  return 0;
}

static int train_epoch_finish(trainer *t, int64_t epoch, double seconds) {
  kern_stats st;
  train_epoch_result *res = &t->out.last;
  T_TRY(t, kern_mem_download(t->ctx.be, &st, t->step.stats_dev, sizeof st));
  double sums[5] = {st.loss_sum, st.correct, st.samples, st.last_correct, st.last_samples};
  double s = train_tl_epoch_begin(&t->out.tl);
  if (t->ctx.world->size > 1 && coll_allreduce_sum_f64(t->ctx.comm, sums, 5) != COLL_OK) {
    return train_coll_fail(t);
  }
  train_tl_epoch_end(&t->out.tl, "epoch metrics", s, epoch);
  res->loss = sums[0] / sums[2];
  res->train_acc_mean = sums[1] / sums[2];
  res->training_acc = sums[3] / sums[4];
  res->epoch_time_s = seconds;
  res->data_wait_s = t->data.wait_s;
  res->samples_per_s =
      (double)(t->data.steps_per_epoch * t->data.micro * t->data.global_batch) / seconds;
  res->step_time_ms = seconds * 1e3 / (double)t->data.steps_per_epoch;
  s = train_tl_epoch_begin(&t->out.tl);
  if (trainer_evaluate(t, &res->validation_acc, &res->validation_loss) != 0) return -1;
  train_tl_epoch_end(&t->out.tl, "evaluate", s, epoch);
  const int64_t step = t->step.global_step, P = t->step.layout.total_elems;
  /* Before the metrics, the checkpoint and the model: none gets NaN. The
   * reduced loss and the weights are the same on every rank (and task). */
  T_TRY(t, kern_mem_download_f32(t->ctx.be, t->step.params_host, t->step.params, P));
  if (train_finite_check(&t->step.layout, t->step.params_host, res->loss, epoch + 1,
                         t->data.steps_per_epoch, step, t->err.msg, sizeof t->err.msg) != 0) {
    return -1;
  }
  struct { const char *name; double v; } rows[] = {
    {"training_acc", res->training_acc}, {"validation_acc", res->validation_acc},
    {"loss", res->loss}, {"train_acc_mean", res->train_acc_mean},
    {"validation_loss", res->validation_loss}, {"samples_per_s", res->samples_per_s},
    {"step_time_ms", res->step_time_ms}, {"epoch_time_s", res->epoch_time_s},
    {"data_wait_s", res->data_wait_s}, {"learning_rate", t->step.opt.lr},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    metrics_write(&t->out.metrics, rows[i].name, rows[i].v, epoch + 1, step);
    tboard_writer_scalar(t->out.tb, rows[i].name, rows[i].v, step);
  }
  train_scaler_metrics(&t->step.scaler, &t->out.metrics, epoch + 1, step);
  if (metrics_sync(&t->out.metrics, t->err.msg, sizeof t->err.msg) != 0 ||
      tboard_writer_flush(t->out.tb, t->err.msg, sizeof t->err.msg) != 0) {
    return -1;
  }
  char line[512];
  snprintf(line, sizeof line,
           "epoch %3lld/%lld  loss %.4f  training_acc %.4f  validation_acc %.4f  "
           "samples/s %.0f  time %.2fs",
           (long long)epoch + 1, (long long)t->ctx.cfg->epochs, res->loss, res->training_acc,
           res->validation_acc, res->samples_per_s, seconds);
  if (t->ctx.world->rank == 0) {
    printf("%s\n", line);
    fflush(stdout);
  }
  rank_log_printf(&t->out.log, "%s", line);
  return 0;
}

/* The run's final metrics: in run.json, and in the model file itself. */
static cJSON *train_final_metrics(const trainer *t) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddNumberToObject(m, "final_acc", t->out.last.validation_acc);
  cJSON_AddNumberToObject(m, "training_acc", t->out.last.training_acc);
  cJSON_AddNumberToObject(m, "loss", t->out.last.loss);
  cJSON_AddNumberToObject(m, "samples_per_s", t->out.last.samples_per_s);
  return m;
}

static int train_save_model(trainer *t) {
  const int64_t P = t->step.layout.total_elems;
  T_TRY(t, kern_mem_download(t->ctx.be, t->step.params_host, t->step.params,
                                        (size_t)P * sizeof(float)));
  if (t->ctx.world->rank != 0) return 0;
  char dir[4200], path[4300];
  snprintf(dir, sizeof dir, "%s/model", t->ctx.cfg->outputs);
  snprintf(path, sizeof path, "%s/model.h5", dir);
  if (fs_mkdirs(dir, t->err.msg, sizeof t->err.msg) != 0) return -1;
  cJSON *m = train_final_metrics(t);
  char *metrics = cJSON_PrintUnformatted(m);
  cJSON_Delete(m);
  int rc = h5model_save_run(path, &t->step.layout, t->step.params_host, t->out.run.id, metrics,
                            t->err.msg, sizeof t->err.msg);
  free(metrics);
  if (rc != 0) return -1;
  rank_log_printf(&t->out.log, "model: %s", path);
  return 0;
}

/* One epoch: its steps, its metrics, and a checkpoint when one is due. */
static int train_epoch(trainer *t, int64_t epoch, int show_progress) {
  double t0 = clock_mono_s();
  if (train_epoch_steps(t, epoch, show_progress) != 0) return -1;
  train_tl_epoch_end(&t->out.tl, "epoch steps", t0, epoch);
  if (train_epoch_finish(t, epoch, clock_mono_s() - t0) != 0) return -1;
  double s = train_tl_epoch_begin(&t->out.tl);
  const int due = train_ckpt_due(t->ctx.cfg, epoch + 1);
  if (t->step.ps && due && train_ps_pull_state(&t->step, &t->ctx, &t->err) != 0) return -1;
  if (train_ckpt_epoch_end(t->ckpt, &t->ctx, &t->data, &t->step, &t->out, epoch + 1,
                           &t->err) != 0) {
    return -1;
  }
  if (due && (t->ctx.world->rank == 0 || t->step.ps)) {
    train_tl_epoch_end(&t->out.tl, "checkpoint", s, epoch);
  }
  return 0;
}

/* After the last epoch: final_acc, the model file, and run.json's end. */
static int train_finish(trainer *t) {
  const int root = t->ctx.world->rank == 0;
  if (t->step.ps && train_ps_finish(&t->step, &t->ctx, &t->out.log, &t->err) != 0) return -1;
  train_timeline_finish(&t->out.tl, &t->out.log);
  if (root) {
    metrics_write(&t->out.metrics, "final_acc", t->out.last.validation_acc, t->ctx.cfg->epochs,
                  t->step.global_step);
    tboard_writer_scalar(t->out.tb, "final_acc", t->out.last.validation_acc, t->step.global_step);
    if (metrics_sync(&t->out.metrics, t->err.msg, sizeof t->err.msg) != 0 ||
        tboard_writer_flush(t->out.tb, t->err.msg, sizeof t->err.msg) != 0) {
      return -1;
    }
    printf("final_acc %.4f\n", t->out.last.validation_acc);
    if (run_record_stage(&t->out.run, RUN_FINALIZING, t->err.msg, sizeof t->err.msg) != 0) {
      return -1;
    }
  }
  if (train_save_model(t) != 0) return -1;
  if (root) {
    run_record_set(&t->out.run, "metrics", train_final_metrics(t));
    if (run_record_stage(&t->out.run, RUN_COMPLETED, t->err.msg, sizeof t->err.msg) != 0) {
      return -1;
    }
  }
  return 0;
}

int trainer_run(trainer *t) {
  const train_progress_mode p = t->ctx.cfg->progress;
  const int show = t->ctx.world->rank == 0 &&
                   (p == TRAIN_PROGRESS_ON || (p == TRAIN_PROGRESS_AUTO && isatty(2)));
  /* first, so its start-up overlaps the record write; none for the CPU's
   * fused step: its team gathers the rows itself (a loader thread there
   * would take a core from the team) */
  if (!(t->step.fused_ws && train_is_cpu(t)) &&
      train_input_start(&t->data, &t->ctx, t->step.layout.dims[0], t->step.start_epoch,
                        &t->err) != 0) {
    return -1;
  }
  if (t->ctx.world->rank == 0 &&
      run_record_stage(&t->out.run, RUN_RUNNING, t->err.msg, sizeof t->err.msg) != 0) {
    return -1;
  }
  if (train_timeline_start(&t->out.tl, &t->ctx, t->step.grads_host, &t->step.layout,
                           &t->err) != 0) {
    return -1;
  }
  for (int64_t epoch = t->step.start_epoch; epoch < t->ctx.cfg->epochs; epoch++) {
    if (train_epoch(t, epoch, show) != 0) return -1;
  }
  return train_finish(t);
}

int trainer_init(trainer *t, const train_config *cfg, const coll_world *world, coll_comm *comm,
                 kern_backend *be, cJSON *ranks) {
  memset(t, 0, sizeof *t);
  t->ctx.cfg = cfg;
  t->ctx.world = world;
  t->ctx.comm = comm;
  t->ctx.be = be;
  t->data.batch = cfg->batch_size;
  t->data.global_batch = cfg->batch_size * world->size;
  t->data.micro = cfg->backward_passes_per_step;
  if (rank_log_open(&t->out.log, cfg->logs, world->rank, t->err.msg, sizeof t->err.msg) != 0) {
    cJSON_Delete(ranks); /* owned from here on, on every path */
    return -1;
  }
  model_layout_init(&t->step.layout, 784, cfg->first_layer_neurons, cfg->second_layer_neurons,
                    DATA_CLASSES);
  if (train_ckpt_init(&t->ckpt, &t->err) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  if (train_load_data(t) != 0) {
    t->err.bad_input = 1; /* a missing or malformed data set: the user's input */
    cJSON_Delete(ranks);
    return -1;
  }
  if (train_ckpt_check_data(t->ckpt, &t->ctx, &t->data, t->step.layout.dims[0], &t->err) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  if (!t->data.shards) {
    t->data.steps_per_epoch = t->data.train.count / (t->data.global_batch * t->data.micro);
  }
  if (cfg->max_steps > 0 && cfg->max_steps < t->data.steps_per_epoch) {
    t->data.steps_per_epoch = cfg->max_steps;
  }
  rank_log_printf(&t->out.log, "steps: %lld per epoch, each an update after %lld micro-batch(es) "
                  "of %d ranks x %lld", (long long)t->data.steps_per_epoch,
                  (long long)t->data.micro, world->size, (long long)t->data.batch);
  /* a rejected resume leaves <outputs> as it was */
  if (train_ckpt_precheck(t->ckpt, &t->ctx, &t->data, &t->step.layout, &t->err) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  if (train_outputs_open(&t->out, &t->ctx, ranks, &t->err) != 0) return -1;
  train_opt_init(&t->step.opt, &t->step.sched, cfg, world->size, t->data.steps_per_epoch);
  train_scaler_init(&t->step.scaler,
                    cfg->compression == TRAIN_COMPRESSION_FP16 && coll_comm_compresses(comm));
  if (train_alloc(t) != 0 || train_init_params(t) != 0 ||
      train_ckpt_resume(t->ckpt, &t->ctx, &t->step, &t->out, &t->err) != 0 ||
      train_outputs_tboard_open(&t->out, &t->ctx, &t->step, &t->err) != 0) {
    return -1;
  }
  t->step.ps = cluster_ps_count(comm) > 0;
  /* a graph replays the scalars it recorded: not for a rate that moves */
  t->step.use_graph = cfg->graph && kern_has_graphs(be) && !t->step.ps &&
                      !train_opt_varies(&t->step.opt, &t->step.sched) &&
                      (t->data.micro == 1 || !train_input_streaming(cfg)) &&
                      (world->size == 1 || coll_comm_backend(comm) == COLL_BACKEND_NCCL);
  return train_setup_fused(t);
}

void trainer_free(trainer *t) {
  kern_backend *be = t->ctx.be;
  if (be) {
    if (t->step.graph) kern_graph_free(be, t->step.graph);
    model_work_free(&t->step.work);
    void *bufs[] = { t->step.params, t->step.grads_shared ? NULL : t->step.grads, t->step.opt_state,
                     t->data.perm_dev,        t->data.test_idx_dev, t->data.cursor_dev,
                     t->data.eval_cursor_dev, t->step.stats_dev,    t->step.eval_stats_dev,
                     t->step.fused_ws };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kern_mem_free(be, bufs[i]);
    if (!train_is_cpu(t)) {
      const void *data[] = { t->data.train_images_dev, t->data.train_labels_dev,
                             t->data.test_images_dev, t->data.test_labels_dev };
      for (size_t i = 0; i < 4; i++) kern_mem_free(be, (void *)data[i]);
    }
  }
  train_timeline_abandon(&t->out.tl);
  tboard_writer_free(t->out.tb);
  train_input_free(&t->data);
  if (t->step.grads_host != t->step.grads && be) kern_host_free(be, t->step.grads_host);
  free(t->data.perm_host);
  free(t->step.params_host);
  data_set_free(&t->data.train);
  data_set_free(&t->data.test);
  metrics_close(&t->out.metrics);
  rank_log_close(&t->out.log);
  run_record_free(&t->out.run);
  train_ckpt_free(t->ckpt);
  t->ckpt = NULL;
}
