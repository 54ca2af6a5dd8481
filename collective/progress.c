/* The progress thread: runs queued allreduces in order while the caller
 * computes (the overlap of backward and reduction), answers peers' stall
 * queries, and turns a request without progress for timeout_s into
 * COLL_ETIMEOUT. Blocking calls with nothing queued run in the caller. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/env.h"
#include "collective/coll_internal.h"

/* How long the idle thread sleeps between stall-query checks. */
#define PROGRESS_IDLE_NS 20000000L
/* How long a waiter spins and yields before it sleeps in short naps. MPI
 * progresses only inside MPI calls, so napping early slows transfers (and a
 * napping rank on a busy host may wait long to run again); but a rank that
 * yields in a loop still takes half of a core it shares with a computing
 * rank (CFS), which halved training throughput on 2 cores. The environment
 * variable TFDIST_COLL_SPIN_US overrides the default. */
#define PROGRESS_SPIN_US_DEFAULT 200.0

static double progress_spin_s(void) {
  static double spin_s = -1.0; /* set once; racing threads compute the same value */
  if (spin_s < 0) {
    const char *e = base_env_str("TFDIST_COLL_SPIN_US");
    char *end = NULL;
    double us = e ? strtod(e, &end) : PROGRESS_SPIN_US_DEFAULT;
    /* Not a number (atof read "abc" as 0: no spinning at all), negative or
     * NaN: the default, not a silently different wait policy. */
    if (end && *end != '\0') us = PROGRESS_SPIN_US_DEFAULT;
    spin_s = (us >= 0 ? us : PROGRESS_SPIN_US_DEFAULT) * 1e-6;
  }
  return spin_s;
}

void coll_backoff(int *idle_polls, double idle_s) {
  int n = ++*idle_polls;
  if (n < 64) return;
  if (idle_s < progress_spin_s()) {
    sched_yield();
    return;
  }
  struct timespec ts = {0, idle_s < 1.0 ? 20000L : 500000L};
  nanosleep(&ts, NULL);
}

/* now + ns on done_cv's and work_cv's clock (CLOCK_REALTIME), for a timed wait. */
static void progress_deadline(struct timespec *until, long ns) {
  clock_gettime(CLOCK_REALTIME, until);
  until->tv_sec += ns / 1000000000L;
  until->tv_nsec += ns % 1000000000L;
  if (until->tv_nsec >= 1000000000L) {
    until->tv_sec++;
    until->tv_nsec -= 1000000000L;
  }
}

static void progress_describe(const coll_comm *c, const coll_request *r, char *out, size_t n) {
  snprintf(out, n, "allreduce(%s, %lld floats)", coll_backend_name(c->cfg.backend),
           (long long)r->elems);
}

static int progress_drive_run(coll_comm *c, coll_request *r);

int coll_progress_drive(coll_comm *c, coll_request *r) {
  double began = clock_mono_s();
  int rc = progress_drive_run(c, r);
  if (c->trace) c->trace(c->trace_ctx, r->recv, r->elems, r->t_start, began, clock_mono_s(), rc);
  return rc;
}

static int progress_drive_run(coll_comm *c, coll_request *r) {
  if (coll_comm_failed(c)) {
    r->status = COLL_ERR;
    return r->status;
  }
  coll_req_touch(r);
  if (c->ops->start(c, r) != COLL_OK) {
    c->ops->abandon(c, r);
    r->status = COLL_ERR;
    return r->status;
  }
  int idle = 0;
  for (;;) {
    int done = 0;
    double before = r->t_progress;
    if (c->ops->test(c, r, &done) != COLL_OK) {
      coll_diag_after_error(c, r->seq);
      c->ops->abandon(c, r);
      r->status = COLL_ERR;
      break;
    }
    if (done) {
      r->status = COLL_OK;
      break;
    }
    double now = clock_mono_s();
    if (now - r->t_progress > c->cfg.timeout_s) {
      char what[128];
      progress_describe(c, r, what, sizeof what);
      coll_diag_stall(c, r->seq, what, now - r->t_progress);
      c->ops->abandon(c, r);
      r->status = COLL_ETIMEOUT;
      break;
    }
    if (r->t_progress != before) {
      idle = 0;
    } else {
      if ((idle & 255) == 255) coll_diag_serve(c);
      if (coll_peer_has_failed(c)) {
        c->ops->abandon(c, r);
        r->status = COLL_ERR;
        break;
      }
      coll_backoff(&idle, now - r->t_progress);
    }
  }
  return r->status;
}

static void progress_enqueue(coll_comm *c, coll_request *r) {
  r->state = COLL_REQ_QUEUED;
  r->next = NULL;
  if (c->queue_tail) c->queue_tail->next = r;
  else c->queue_head = r;
  c->queue_tail = r;
  pthread_cond_signal(&c->work_cv);
}

static void progress_finish(coll_comm *c, coll_request *r) {
  pthread_mutex_lock(&c->mu);
  __atomic_store_n(&r->state, COLL_REQ_DONE, __ATOMIC_RELEASE); /* after r->status */
  c->active = NULL;
  pthread_cond_broadcast(&c->done_cv);
  pthread_mutex_unlock(&c->mu);
}

static void *progress_main(void *arg) {
  coll_comm *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->stop) {
    coll_request *r = c->queue_head;
    if (r) {
      c->queue_head = r->next;
      if (!c->queue_head) c->queue_tail = NULL;
      c->active = r;
      r->state = COLL_REQ_RUNNING;
      pthread_mutex_unlock(&c->mu);
      coll_progress_drive(c, r);
      progress_finish(c, r);
      pthread_mutex_lock(&c->mu);
      continue;
    }
    struct timespec until;
    progress_deadline(&until, PROGRESS_IDLE_NS);
    pthread_cond_timedwait(&c->work_cv, &c->mu, &until);
    if (c->stop || c->queue_head) continue;
    pthread_mutex_unlock(&c->mu);
    coll_diag_serve(c);
    if (c->ops && c->ops->tick) c->ops->tick(c);
    pthread_mutex_lock(&c->mu);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

int coll_progress_start(coll_comm *c, char *err, size_t err_bytes) {
  int rc = pthread_create(&c->thread, NULL, progress_main, c);
  if (rc != 0) {
    snprintf(err, err_bytes, "collective: starting the progress thread: %s", strerror(rc));
    return COLL_ERR;
  }
  c->thread_on = 1;
  return COLL_OK;
}

void coll_progress_stop(coll_comm *c) {
  if (!c->thread_on) return;
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  pthread_cond_signal(&c->work_cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->thread, NULL);
  c->thread_on = 0;
}

int coll_progress_submit(coll_comm *c, coll_request *r) {
  if (!c->thread_on) {
    coll_progress_drive(c, r);
    r->state = COLL_REQ_DONE;
    return r->status;
  }
  pthread_mutex_lock(&c->mu);
  progress_enqueue(c, r);
  pthread_mutex_unlock(&c->mu);
  return COLL_OK;
}

/* A blocking back end's request, waited for: the thread cannot look up
 * while it is inside the call, so the waiter answers peers' queries, gives
 * up on a peer's failure notice, and names the stalled ranks at timeout_s.
 * It sleeps on done_cv, waking every PROGRESS_IDLE_NS for those: with more
 * ranks than cores, a waiter that polled (yields, short naps) took the
 * cores from the MPI threads and woke tens of us late. */
static int progress_wait_blocked(coll_comm *c, coll_request *r) {
  pthread_mutex_lock(&c->mu);
  while (r->state != COLL_REQ_DONE) {
    struct timespec until;
    progress_deadline(&until, PROGRESS_IDLE_NS);
    pthread_cond_timedwait(&c->done_cv, &c->mu, &until);
    if (r->state == COLL_REQ_DONE) break;
    pthread_mutex_unlock(&c->mu);
    coll_diag_serve(c);
    if (coll_peer_has_failed(c)) return COLL_ERR;
    const double quiet = clock_mono_s() - coll_req_last(r);
    if (quiet > c->cfg.timeout_s) {
      char what[128];
      progress_describe(c, r, what, sizeof what);
      coll_diag_stall(c, r->seq, what, quiet);
      return COLL_ETIMEOUT; /* r stays the thread's */
    }
    pthread_mutex_lock(&c->mu);
  }
  pthread_mutex_unlock(&c->mu);
  return r->status;
}

/* The thread ends every request within timeout_s of its last progress (plus
 * a diagnosis); this guard only catches a thread that itself got stuck. */
int coll_progress_wait(coll_comm *c, coll_request *r) {
  if (c->ops->blocking && c->thread_on) return progress_wait_blocked(c, r);
  pthread_mutex_lock(&c->mu);
  while (r->state != COLL_REQ_DONE) {
    struct timespec until;
    progress_deadline(&until, 1000000000L);
    pthread_cond_timedwait(&c->done_cv, &c->mu, &until);
    const double idle = clock_mono_s() - coll_req_last(r);
    if (r->state != COLL_REQ_DONE && idle > 2.0 * c->cfg.timeout_s + 30.0) {
      pthread_mutex_unlock(&c->mu);
      coll_set_error(c, "allreduce #%lld: the progress thread made no progress for %.0f s",
                     (long long)r->seq, idle);
      return COLL_ETIMEOUT;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return r->status;
}

int coll_progress_run(coll_comm *c, coll_request *r) {
  if (c->thread_on) {
    pthread_mutex_lock(&c->mu);
    if (c->queue_head || c->active || c->ops->blocking) {
      /* Behind earlier requests: every rank must run them in the same order.
       * A blocking back end's always goes to the thread (the wait is bounded). */
      progress_enqueue(c, r);
      pthread_mutex_unlock(&c->mu);
      return coll_progress_wait(c, r);
    }
    pthread_mutex_unlock(&c->mu);
  }
  int rc = coll_progress_drive(c, r);
  r->state = COLL_REQ_DONE;
  return rc;
}

/* Only the caller gives the thread requests, so once it has finished them
 * it stays idle until the caller gives it more. */
void coll_progress_quiesce(coll_comm *c) {
  pthread_mutex_lock(&c->mu);
  while (c->thread_on && (c->queue_head || c->active)) pthread_cond_wait(&c->done_cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

int coll_progress_busy(coll_comm *c) {
  pthread_mutex_lock(&c->mu);
  int busy = c->thread_on && (c->queue_head || c->active);
  pthread_mutex_unlock(&c->mu);
  return busy;
}
