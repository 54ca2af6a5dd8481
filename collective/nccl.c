/* The nccl back end (built with CUDA only): ncclAllReduce with ncclAvg on a
 * stream of its own, ordered against the caller's stream by events, so a
 * layer's reduction overlaps the backward kernels still queued behind it.
 * The communicator is non-blocking; every wait polls ncclCommGetAsyncError
 * with the comm's timeout and aborts the communicator on error or timeout,
 * so a dead peer never hangs the host. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collective/coll_internal.h"

#define NCCL_EVENTS 32

typedef struct {
  ncclComm_t comm;
  int comm_ok;             /* initialised and not aborted */
  cudaStream_t user;       /* the caller's stream (coll_config.stream) */
  cudaStream_t stream;     /* ours: the reductions run here */
  cudaEvent_t ready;       /* user -> stream: the gradients are written */
  cudaEvent_t last;        /* end of the newest reduction issued outside a capture */
  double last_issue;       /* monotonic time of that issue; 0 when none pending */
  int64_t last_seq;
  int tick_device_set;     /* the progress thread has made the device current */
  /* Request end events, reused in turn: a wait already enqueued keeps the
   * record it saw, so reuse is safe, and nothing is created or destroyed
   * while the caller may be capturing a graph. */
  cudaEvent_t done[NCCL_EVENTS];
  int next_done;
} nccl_comm;

/* The failing call, file:line and the library's own words. */
#define NCCL_TRY(c, st, call)                                                                \
  do {                                                                                       \
    ncclResult_t nccl_rc_ = (call);                                                          \
    if (nccl_rc_ != ncclSuccess && nccl_rc_ != ncclInProgress) {                             \
      nccl_fail((c), (st), nccl_rc_, #call, __FILE__, __LINE__);                             \
      return COLL_ERR;                                                                       \
    }                                                                                        \
    if (nccl_rc_ == ncclInProgress && nccl_settle((c), #call) != COLL_OK) return COLL_ERR;   \
  } while (0)

#define CUDA_TRY(c, call)                                                                    \
  do {                                                                                       \
    cudaError_t cuda_rc_ = (call);                                                           \
    if (cuda_rc_ != cudaSuccess) {                                                           \
      coll_set_error((c), "%s failed on %s at %s:%d: %s", #call, (c)->host, \
                     __FILE__, __LINE__, cudaGetErrorString(cuda_rc_));                      \
      return COLL_ERR;                                                                       \
    }                                                                                        \
  } while (0)

static void nccl_abort(nccl_comm *st) {
  if (st && st->comm_ok) {
    st->comm_ok = 0;
    ncclCommAbort(st->comm);
  }
}

static void nccl_fail(coll_comm *c, nccl_comm *st, ncclResult_t rc, const char *call,
                      const char *file, int line) {
  const char *last = st && st->comm ? ncclGetLastError(st->comm) : ncclGetLastError(NULL);
  coll_set_error(c, "%s failed on %s at %s:%d: %s (%s)", call, c->host, file,
                 line, ncclGetErrorString(rc), last && last[0] ? last : "no detail");
  nccl_abort(st);
}

/* Polls the communicator until pending work settles, bounded by the timeout. */
static int nccl_settle(coll_comm *c, const char *what) {
  nccl_comm *st = c->impl;
  const double t0 = clock_mono_s();
  int idle = 0;
  for (;;) {
    ncclResult_t async = ncclSuccess;
    ncclResult_t rc = ncclCommGetAsyncError(st->comm, &async);
    if (rc != ncclSuccess) async = rc;
    if (async == ncclSuccess) return COLL_OK;
    if (async != ncclInProgress) {
      nccl_fail(c, st, async, what, __FILE__, __LINE__);
      return COLL_ERR;
    }
    if (clock_mono_s() - t0 > c->cfg.timeout_s) {
      coll_diag_stall(c, c->seq_entered, what, clock_mono_s() - t0);
      nccl_abort(st);
      return COLL_ETIMEOUT;
    }
    if (coll_peer_has_failed(c)) { /* the progress thread took the notice in */
      nccl_abort(st);
      return COLL_ERR;
    }
    coll_backoff(&idle, clock_mono_s() - t0);
  }
}

/* Whether the caller's stream is being captured into a graph: then events
 * recorded now are graph nodes, not something the host can wait on. */
static int nccl_capturing(const nccl_comm *st) {
  enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(st->user, &cs) != cudaSuccess) return 0;
  return cs != cudaStreamCaptureStatusNone;
}

static int nccl_init(coll_comm *c, char *err, size_t err_bytes) {
  nccl_comm *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->impl = st;
  st->user = (cudaStream_t)c->cfg.stream;
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  int rc = COLL_ERR;
  char why[256] = "";
  cudaError_t ce = cudaSetDevice(c->cfg.device);
  if (ce != cudaSuccess) {
    snprintf(why, sizeof why, "cudaSetDevice(%d) failed: %s", c->cfg.device, cudaGetErrorString(ce));
  } else if (c->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
    snprintf(why, sizeof why, "ncclGetUniqueId failed: %s", ncclGetLastError(NULL));
  }
  /* Every rank takes part in this broadcast, even one that already failed,
   * so that the others fail fast (a zero id) rather than time out here. */
  if (coll_broadcast_bytes(c, &id, (int64_t)sizeof id, 0) != COLL_OK) goto out;
  if (why[0]) {
    coll_set_error(c, "%s", why);
    goto out;
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t nr = ncclCommInitRankConfig(&st->comm, c->size, id, c->rank, &config);
  if (nr != ncclSuccess && nr != ncclInProgress) {
    nccl_fail(c, st, nr, "ncclCommInitRankConfig", __FILE__, __LINE__);
    goto out;
  }
  st->comm_ok = 1;
  if (nccl_settle(c, "ncclCommInitRankConfig") != COLL_OK) goto out;
  if (cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking) != cudaSuccess ||
      cudaEventCreateWithFlags(&st->ready, cudaEventDisableTiming) != cudaSuccess ||
      cudaEventCreateWithFlags(&st->last, cudaEventDisableTiming) != cudaSuccess) {
    coll_set_error(c, "creating the NCCL stream and events failed");
    goto out;
  }
  for (int i = 0; i < NCCL_EVENTS; i++) {
    if (cudaEventCreateWithFlags(&st->done[i], cudaEventDisableTiming) != cudaSuccess) {
      coll_set_error(c, "creating the NCCL stream and events failed");
      goto out;
    }
  }
  rc = COLL_OK;
out:
  if (rc != COLL_OK) snprintf(err, err_bytes, "%s", c->err);
  return rc;
}

static void nccl_free(coll_comm *c) {
  nccl_comm *st = c->impl;
  if (!st) return;
  if (st->comm_ok) {
    if (coll_comm_failed(c)) ncclCommAbort(st->comm);
    else ncclCommDestroy(st->comm);
  }
  for (int i = 0; i < NCCL_EVENTS; i++) {
    if (st->done[i]) cudaEventDestroy(st->done[i]);
  }
  if (st->ready) cudaEventDestroy(st->ready);
  if (st->last) cudaEventDestroy(st->last);
  if (st->stream) cudaStreamDestroy(st->stream);
  free(st);
  c->impl = NULL;
}

/* The reduction on our stream, after what the caller's stream has queued;
 * r->impl is its end event. */
static int nccl_start(coll_comm *c, coll_request *r) {
  nccl_comm *st = c->impl;
  r->impl = NULL;
  if (r->elems == 0) return COLL_OK;
  if (!st->comm_ok) {
    coll_set_error(c, "the NCCL communicator was aborted");
    return COLL_ERR;
  }
  cudaEvent_t done = st->done[st->next_done];
  st->next_done = (st->next_done + 1) % NCCL_EVENTS;
  r->impl = (void *)done;
  CUDA_TRY(c, cudaEventRecord(st->ready, st->user));
  CUDA_TRY(c, cudaStreamWaitEvent(st->stream, st->ready, 0));
  NCCL_TRY(c, st, ncclAllReduce(r->send, r->recv, (size_t)r->elems, ncclFloat32,
                                r->avg ? ncclAvg : ncclSum, st->comm, st->stream));
  CUDA_TRY(c, cudaEventRecord(done, st->stream));
  if (!nccl_capturing(st)) {
    CUDA_TRY(c, cudaEventRecord(st->last, st->stream));
    st->last_issue = clock_mono_s();
    st->last_seq = r->seq;
  }
  return COLL_OK;
}

/* The caller's stream waits for the reduction; the host does not. */
static int nccl_wait(coll_comm *c, coll_request *r) {
  nccl_comm *st = c->impl;
  cudaEvent_t done = (cudaEvent_t)r->impl;
  r->state = COLL_REQ_DONE;
  if (!done) return coll_comm_failed(c) ? COLL_ERR : COLL_OK;
  r->impl = NULL;
  CUDA_TRY(c, cudaStreamWaitEvent(st->user, done, 0));
  return coll_comm_failed(c) ? COLL_ERR : COLL_OK;
}

/* Host-side bounded wait for everything issued on the caller's stream. */
static int nccl_sync(coll_comm *c) {
  nccl_comm *st = c->impl;
  if (!st->comm_ok) return COLL_ERR;
  if (nccl_capturing(st)) return COLL_OK;
  CUDA_TRY(c, cudaEventRecord(st->ready, st->user));
  const double t0 = clock_mono_s();
  int idle = 0;
  for (;;) {
    cudaError_t q = cudaEventQuery(st->ready);
    if (q == cudaSuccess) {
      st->last_issue = 0;
      return COLL_OK;
    }
    if (q != cudaErrorNotReady) CUDA_TRY(c, q);
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(st->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      nccl_fail(c, st, async, "ncclAllReduce (async)", __FILE__, __LINE__);
      return COLL_ERR;
    }
    if (clock_mono_s() - t0 > c->cfg.timeout_s) {
      coll_diag_stall(c, c->seq_entered, "allreduce(nccl)", clock_mono_s() - t0);
      nccl_abort(st);
      return COLL_ETIMEOUT;
    }
    if (coll_peer_has_failed(c)) {
      nccl_abort(st);
      return COLL_ERR;
    }
    coll_backoff(&idle, clock_mono_s() - t0);
  }
}

/* The progress thread's watchdog: an asynchronous NCCL error, or a reduction
 * issued outside a graph that is still not done after the timeout, aborts
 * the communicator so that the kernels waiting on it return. */
static void nccl_tick(coll_comm *c) {
  nccl_comm *st = c->impl;
  if (!st || !st->comm_ok) return;
  if (!st->tick_device_set) {
    cudaError_t e = cudaSetDevice(c->cfg.device); /* the current device is per thread */
    if (e != cudaSuccess) { /* the step's own timeouts still bound every wait */
      coll_set_error(c, "nccl watchdog: cudaSetDevice(%d) at %s:%d: %s", c->cfg.device, __FILE__,
                     __LINE__, cudaGetErrorString(e));
      return;
    }
    st->tick_device_set = 1;
  }
  ncclResult_t async = ncclSuccess;
  if (ncclCommGetAsyncError(st->comm, &async) == ncclSuccess && async != ncclSuccess &&
      async != ncclInProgress) {
    nccl_fail(c, st, async, "ncclAllReduce (async)", __FILE__, __LINE__);
    return;
  }
  if (st->last_issue <= 0) return;
  cudaError_t q = cudaEventQuery(st->last);
  if (q == cudaSuccess) {
    st->last_issue = 0;
  } else if (q == cudaErrorNotReady && clock_mono_s() - st->last_issue > c->cfg.timeout_s) {
    coll_diag_stall(c, st->last_seq, "allreduce(nccl)", clock_mono_s() - st->last_issue);
    nccl_abort(st);
  }
}

static int nccl_query(coll_comm *c, coll_request *r, int *done) {
  cudaEvent_t ev = (cudaEvent_t)r->impl;
  *done = 1;
  if (!ev) return COLL_OK;
  cudaError_t q = cudaEventQuery(ev);
  if (q == cudaErrorNotReady) {
    *done = 0;
    return COLL_OK;
  }
  CUDA_TRY(c, q);
  return COLL_OK;
}

static int nccl_test(coll_comm *c, coll_request *r, int *done) {
  (void)c;
  (void)r;
  *done = 1;
  return COLL_OK;
}

static void nccl_abandon(coll_comm *c, coll_request *r) {
  (void)c;
  r->impl = NULL; /* the event belongs to the pool */
}

const coll_backend_ops coll_nccl_ops = {
  .name = "nccl",
  .threaded = 0,
  .init = nccl_init,
  .free = nccl_free,
  .start = nccl_start,
  .test = nccl_test,
  .abandon = nccl_abandon,
  .wait = nccl_wait,
  .query = nccl_query,
  .sync = nccl_sync,
  .tick = nccl_tick,
};
