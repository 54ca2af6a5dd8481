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
static const char *train_tl_reduced(const trainer *t, const float *buf, int64_t elems) {
  static const char *names[MODEL_LAYERS] = {"allreduce dense", "allreduce dense_1",
                                            "allreduce dense_2"};
  if (buf == t->grads_host && elems == t->layout.total_elems) return "allreduce all layers";
  for (int k = 0; k < MODEL_LAYERS; k++) {
    if (buf == t->grads_host + t->layout.layer_offset[k] && elems == t->layout.layer_elems[k]) {
      return names[k];
    }
  }
  return "allreduce";
}

/* The collective's trace hook: runs on whichever thread ran the reduction. */
static void train_tl_collective(void *ctx, const float *buf, int64_t elems, double submitted,
                                double began, double ended, int status) {
  trainer *t = ctx;
  if (!__atomic_load_n(&t->tl_rec, __ATOMIC_RELAXED)) return;
  const int tid = pthread_equal(pthread_self(), tl_main_thread) ? 0 : 1;
  char args[160];
  snprintf(args, sizeof args, "{\"bytes\":%lld,\"queued_us\":%.3f,\"ok\":%s}",
           (long long)elems * 4, (began - submitted) * 1e6, status == 0 ? "true" : "false");
  timeline_span(t->tl, tid ? TIMELINE_COLLECTIVE : TIMELINE_MAIN,
                train_tl_reduced(t, buf, elems), began, ended, args);
}

int train_timeline_start(trainer *t) {
  if (!t->cfg->timeline) return 0;
  char path[4300], proc[384];
  snprintf(path, sizeof path, "%s/timeline-%d.json", t->cfg->logs, t->world->rank);
  snprintf(proc, sizeof proc, "rank %d (%.64s, %s)", t->world->rank, t->world->host,
           kern_name(t->be));
  if (fs_mkdirs(t->cfg->logs, t->err, sizeof t->err) != 0) return -1;
  /* --logs is ./logs by default, reused by run after run: one rank a node
   * clears what a larger run left there (this run's own files it replaces) */
  if (t->world->local_rank == 0) timeline_remove_ranks_from(t->cfg->logs, t->world->size);
  /* ranks leave a barrier within microseconds: their ts 0 is one moment */
  if (t->world->size > 1 && coll_barrier(t->comm) != COLL_OK) {
    snprintf(t->err, sizeof t->err, "%s", coll_comm_error(t->comm));
    return -1;
  }
  if (timeline_open(&t->tl, path, t->world->rank, proc, clock_mono_s(), t->err, sizeof t->err) != 0) {
    return -1;
  }
  timeline_thread_name(t->tl, TIMELINE_MAIN, "steps and epochs");
  timeline_thread_name(t->tl, TIMELINE_COLLECTIVE, "collective progress");
  tl_main_thread = pthread_self();
  coll_comm_set_trace(t->comm, train_tl_collective, t);
  return 0;
}

void train_timeline_steps(trainer *t, int64_t step_in_epoch) {
  const int64_t n = t->cfg->timeline_steps;
  const int on = t->tl && (n == 0 || step_in_epoch < n);
  if (on != t->tl_rec) __atomic_store_n(&t->tl_rec, on, __ATOMIC_RELAXED);
}

void train_tl_end(trainer *t, const char *name, double begin) {
  if (t->tl_rec) timeline_span(t->tl, TIMELINE_MAIN, name, begin, clock_mono_s(), NULL);
}

void train_tl_epoch_end(trainer *t, const char *name, double begin, int64_t epoch) {
  if (!t->tl) return;
  char args[64];
  snprintf(args, sizeof args, "{\"epoch\":%lld}", (long long)epoch + 1);
  timeline_span(t->tl, TIMELINE_MAIN, name, begin, clock_mono_s(), args);
}

void train_timeline_flush(trainer *t) { timeline_flush(t->tl); }

void train_timeline_abandon(trainer *t) {
  if (!t->tl) return;
  if (t->comm) coll_comm_set_trace(t->comm, NULL, NULL);
  __atomic_store_n(&t->tl_rec, 0, __ATOMIC_RELAXED);
  timeline_free(t->tl);
  t->tl = NULL;
}

void train_timeline_finish(trainer *t) {
  if (!t->tl) return;
  coll_comm_set_trace(t->comm, NULL, NULL);
  __atomic_store_n(&t->tl_rec, 0, __ATOMIC_RELAXED);
  timeline *tl = t->tl;
  t->tl = NULL;
  char err[1024];
  if (timeline_close(tl, err, sizeof err) != 0) {
    /* A full logs disk costs the trace, not the trained model after it. */
    fprintf(stderr, "tfdist: warning: rank %d: --timeline: %s (the run goes on without it)\n",
            t->world->rank, err);
    rank_log_printf(&t->log, "warning: timeline not written: %s", err);
    return;
  }
  rank_log_printf(&t->log, "timeline: %s/timeline-%d.json", t->cfg->logs, t->world->rank);
}
