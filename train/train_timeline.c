/* --timeline: see train_timeline.h. */
#include "train/train_timeline.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/fsutil.h"
#include "timeline/timeline.h"
#include "timeline/timeline_read.h"

static pthread_t tl_main_thread;

/* Which gradient a reduction carried: a layer (overlap on) or all of them. */
static const char *train_tl_reduced(const train_tl *tl, const float *buf, int64_t elems) {
  static const char *names[MODEL_LAYERS] = {"allreduce dense", "allreduce dense_1",
                                            "allreduce dense_2"};
  const model_layout *l = tl->layout;
  if (buf == tl->grads_host && elems == l->total_elems) return "allreduce all layers";
  for (int k = 0; k < MODEL_LAYERS; k++) {
    if (buf == tl->grads_host + l->layer_offset[k] && elems == l->layer_elems[k]) return names[k];
  }
  return "allreduce";
}

/* The collective's trace hook: runs on whichever thread ran the reduction. */
static void train_tl_collective(void *ctx, const float *buf, int64_t elems, double submitted,
                                double began, double ended, int status) {
  train_tl *tl = ctx;
  if (!__atomic_load_n(&tl->rec, __ATOMIC_RELAXED)) return;
  const int tid = pthread_equal(pthread_self(), tl_main_thread) ? 0 : 1;
  char args[160];
  snprintf(args, sizeof args, "{\"bytes\":%lld,\"queued_us\":%.3f,\"ok\":%s}",
           (long long)elems * 4, (began - submitted) * 1e6, status == 0 ? "true" : "false");
  timeline_span(tl->tl, tid ? TIMELINE_COLLECTIVE : TIMELINE_MAIN,
                train_tl_reduced(tl, buf, elems), began, ended, args);
}

int train_timeline_start(train_tl *tl, const train_ctx *x, const float *grads_host,
                         const model_layout *layout, base_err *err) {
  const train_config *c = x->cfg;
  const coll_world *w = x->world;
  if (!c->timeline) return 0;
  char path[4300], proc[384];
  snprintf(path, sizeof path, "%s/timeline-%d.json", c->logs, w->rank);
  snprintf(proc, sizeof proc, "rank %d (%.64s, %s)", w->rank, w->host,
           kern_name(x->be));
  if (fs_mkdirs(c->logs, err->msg, sizeof err->msg) != 0) return -1;
  /* --logs is ./logs by default, reused by run after run: one rank a node
   * clears what a larger run left there (this run's own files it replaces) */
  if (w->local_rank == 0) timeline_remove_ranks_from(c->logs, w->size);
  /* ranks leave a barrier within microseconds: their ts 0 is one moment */
  if (w->size > 1 && coll_barrier(x->comm) != COLL_OK) return train_err_coll(err, x->comm);
  if (timeline_open(&tl->tl, path, w->rank, proc, clock_mono_s(), err->msg, sizeof err->msg) != 0) {
    return -1;
  }
  tl->steps = c->timeline_steps;
  tl->rank = w->rank;
  tl->logs = c->logs;
  tl->comm = x->comm;
  tl->grads_host = grads_host;
  tl->layout = layout;
  timeline_thread_name(tl->tl, TIMELINE_MAIN, "steps and epochs");
  timeline_thread_name(tl->tl, TIMELINE_COLLECTIVE, "collective progress");
  tl_main_thread = pthread_self();
  coll_comm_set_trace(x->comm, train_tl_collective, tl);
  return 0;
}

void train_timeline_steps(train_tl *tl, int64_t step_in_epoch) {
  const int on = tl->tl && (tl->steps == 0 || step_in_epoch < tl->steps);
  if (on != tl->rec) __atomic_store_n(&tl->rec, on, __ATOMIC_RELAXED);
}

void train_tl_end(train_tl *tl, const char *name, double begin) {
  if (tl->rec) timeline_span(tl->tl, TIMELINE_MAIN, name, begin, clock_mono_s(), NULL);
}

void train_tl_epoch_end(train_tl *tl, const char *name, double begin, int64_t epoch) {
  if (!tl->tl) return;
  char args[64];
  snprintf(args, sizeof args, "{\"epoch\":%lld}", (long long)epoch + 1);
  timeline_span(tl->tl, TIMELINE_MAIN, name, begin, clock_mono_s(), args);
}

void train_timeline_flush(train_tl *tl) { timeline_flush(tl->tl); }

void train_timeline_abandon(train_tl *tl) {
  if (!tl->tl) return;
  if (tl->comm) coll_comm_set_trace(tl->comm, NULL, NULL);
  __atomic_store_n(&tl->rec, 0, __ATOMIC_RELAXED);
  timeline_free(tl->tl);
  tl->tl = NULL;
}

void train_timeline_finish(train_tl *tl, rank_log *log) {
  if (!tl->tl) return;
  coll_comm_set_trace(tl->comm, NULL, NULL);
  __atomic_store_n(&tl->rec, 0, __ATOMIC_RELAXED);
  timeline *t = tl->tl;
  tl->tl = NULL;
  char err[1024];
  if (timeline_close(t, err, sizeof err) != 0) {
    /* A full logs disk costs the trace, not the trained model after it. */
    fprintf(stderr, "tfdist: warning: rank %d: --timeline: %s (the run goes on without it)\n",
            tl->rank, err);
    rank_log_printf(log, "warning: timeline not written: %s", err);
    return;
  }
  rank_log_printf(log, "timeline: %s/timeline-%d.json", tl->logs, tl->rank);
}
