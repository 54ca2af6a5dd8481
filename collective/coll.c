/* The collective front end: typed calls, the back-end table, errors. The
 * allreduce of each back end lives in its own file (mpi.c, ring.c, shm.c, hier.c,
 * nccl.c);
 * host broadcasts, metric sums, barriers and notices go over the world's
 * transport (transport.h) for every back end. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "collective/coll_internal.h"

void coll_set_error(coll_comm *c, const char *fmt, ...) {
  pthread_mutex_lock(&c->err_mu);
  if (!c->err[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
  }
  __atomic_store_n(&c->broken, 1, __ATOMIC_RELEASE); /* after the text */
  pthread_mutex_unlock(&c->err_mu);
}

void coll_comm_peer_failed(coll_comm *c, int peer, const char *msg) {
  if (__atomic_load_n(&c->peer_failed, __ATOMIC_ACQUIRE)) return;
  coll_set_error(c, "rank %d failed: %s", peer, msg);
  __atomic_store_n(&c->peer_failed, 1, __ATOMIC_RELEASE); /* after the error text */
}

const coll_transport_ops *coll_comm_transport(const coll_comm *c) { return c->tp; }
void *coll_comm_transport_state(const coll_comm *c) { return c->tp_state; }
int coll_comm_rank(const coll_comm *c) { return c->rank; }
int coll_comm_size(const coll_comm *c) { return c->size; }
double coll_comm_timeout(const coll_comm *c) { return c->cfg.timeout_s; }
const char *coll_comm_host(const coll_comm *c) { return c->host; }

const char *coll_backend_name(coll_backend b) {
  switch (b) {
  case COLL_BACKEND_MPI: return "mpi";
  case COLL_BACKEND_RING: return "ring";
  case COLL_BACKEND_NCCL: return "nccl";
  case COLL_BACKEND_TCP: return "tcp";
  case COLL_BACKEND_SHM: return "shm";
  case COLL_BACKEND_HIER: return "hier";
  }
  return "?";
}

int coll_backend_parse(const char *name, coll_backend *out) {
  for (int b = COLL_BACKEND_MPI; b <= COLL_BACKEND_HIER; b++) {
    if (strcmp(name, coll_backend_name((coll_backend)b)) == 0) {
      *out = (coll_backend)b;
      return 0;
    }
  }
  return -1;
}

static const coll_backend_ops *coll_backend_table(coll_backend b) {
  switch (b) {
  case COLL_BACKEND_MPI: return &coll_mpi_ops;
  case COLL_BACKEND_RING: return &coll_ring_ops;
  case COLL_BACKEND_NCCL:
    /* nccl.c lives in the CUDA module (loaded RTLD_GLOBAL with the CUDA
     * back end) or in an executable that links it; NULL without either. */
    return (const coll_backend_ops *)dlsym(RTLD_DEFAULT, "coll_nccl_ops");
  case COLL_BACKEND_TCP: return &coll_ring_ops; /* the ring over a cluster's transport */
  case COLL_BACKEND_SHM: return &coll_shm_ops;
  case COLL_BACKEND_HIER: return &coll_hier_ops;
  }
  return NULL;
}

int coll_backend_available(coll_backend b) { return coll_backend_table(b) != NULL; }

const char *coll_compression_name(coll_compression k) {
  switch (k) {
  case COLL_COMP_NONE: return "none";
  case COLL_COMP_BF16: return "bf16";
  case COLL_COMP_FP16: return "fp16";
  }
  return "?";
}

int coll_compression_parse(const char *name, coll_compression *out) {
  for (int k = COLL_COMP_NONE; k <= COLL_COMP_FP16; k++) {
    if (strcmp(name, coll_compression_name((coll_compression)k)) == 0) {
      *out = (coll_compression)k;
      return 0;
    }
  }
  return -1;
}

int coll_compression_applies(coll_backend b, coll_compression k, char *err, size_t err_bytes) {
  if (k == COLL_COMP_NONE || b == COLL_BACKEND_SHM) return 0;
  if (b == COLL_BACKEND_RING || b == COLL_BACKEND_TCP || b == COLL_BACKEND_HIER) return 1;
  snprintf(err, err_bytes, "--compression %s: the %s back end sums inside %s, in fp32; use "
           "--allreduce ring or hier (or tcp, shm)", coll_compression_name(k), coll_backend_name(b),
           b == COLL_BACKEND_NCCL ? "NCCL" : "MPI_Allreduce");
  return -1;
}

void coll_comm_set_fp16_scale(coll_comm *c, float scale) { c->fp16_scale = scale; }

/* One node: every rank is local (the launcher's, or TF_CONFIG's host, view;
 * what hier groups its nodes by), so hier runs no ring across nodes. */
int coll_comm_compresses(const coll_comm *c) {
  if (c->size < 2 || coll_compression_applies(c->cfg.backend, c->cfg.compression, NULL, 0) <= 0) {
    return 0;
  }
  return c->cfg.backend != COLL_BACKEND_HIER || c->local_size < c->size;
}

int coll_comm_init(coll_comm **out, const coll_world *w, const coll_config *cfg, char *err,
                   size_t err_bytes) {
  *out = NULL;
  const coll_backend_ops *ops = coll_backend_table(cfg->backend);
  if (!(w->tp->backends & (1u << cfg->backend))) {
    snprintf(err, err_bytes, "--allreduce %s: %s", coll_backend_name(cfg->backend),
             w->tp->backends_why);
    return COLL_ERR;
  }
  if (!ops) {
    snprintf(err, err_bytes, "--allreduce %s: this build has no CUDA/NCCL",
             coll_backend_name(cfg->backend));
    return COLL_ERR;
  }
  if (coll_compression_applies(cfg->backend, cfg->compression, err, err_bytes) < 0) {
    return COLL_ERR;
  }
  coll_comm *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->cfg = *cfg;
  c->fp16_scale = 1.0f;
  if (!(c->cfg.timeout_s > 0)) c->cfg.timeout_s = 60.0;
  c->ops = ops;
  c->rank = w->rank;
  c->size = w->size;
  c->local_rank = w->local_rank;
  c->local_size = w->local_size;
  c->node_first = w->node_first;
  snprintf(c->host, sizeof c->host, "%.63s", w->host);
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->diag_mu, NULL);
  pthread_mutex_init(&c->serve_mu, NULL);
  pthread_mutex_init(&c->err_mu, NULL);
  pthread_cond_init(&c->work_cv, NULL);
  pthread_cond_init(&c->done_cv, NULL);
  if (w->tp->comm_open(c, w, &c->tp_state, err, err_bytes) != COLL_OK) {
    coll_comm_free(c);
    return COLL_ERR;
  }
  c->tp = w->tp; /* only now may coll_comm_free close it */
  if (ops->init && ops->init(c, err, err_bytes) != COLL_OK) {
    coll_comm_free(c);
    return COLL_ERR;
  }
  /* A transport that may not be driven from a second thread (MPI without
   * MPI_THREAD_MULTIPLE) runs non-blocking calls to completion when started. */
  if (c->size > 1 && w->async &&
      coll_progress_start(c, err, err_bytes) != COLL_OK) {
    coll_comm_free(c);
    return COLL_ERR;
  }
  *out = c;
  return COLL_OK;
}

int coll_comm_buffer(coll_comm *c, int64_t elems, float **out, char *err, size_t err_bytes) {
  *out = NULL;
  if (!c->ops->buffer || elems <= 0) return COLL_OK;
  return c->ops->buffer(c, elems, out, err, err_bytes);
}

void coll_comm_free(coll_comm *c) {
  if (!c) return;
  coll_progress_stop(c);
  if (c->ops && c->ops->free) c->ops->free(c);
  if (c->tp) c->tp->comm_close(c, c->tp_state);
  pthread_cond_destroy(&c->work_cv);
  pthread_cond_destroy(&c->done_cv);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->diag_mu);
  pthread_mutex_destroy(&c->serve_mu);
  pthread_mutex_destroy(&c->err_mu);
  free(c);
}

/* The lock orders this read after the writer's (maybe another thread's);
 * the first error is never rewritten. */
const char *coll_comm_error(coll_comm *c) {
  pthread_mutex_lock(&c->err_mu);
  pthread_mutex_unlock(&c->err_mu);
  return c->err;
}

int coll_comm_failed(coll_comm *c) { return __atomic_load_n(&c->broken, __ATOMIC_ACQUIRE); }
coll_backend coll_comm_backend(const coll_comm *c) { return c->cfg.backend; }

void coll_comm_set_trace(coll_comm *c, coll_trace_fn fn, void *ctx) {
  c->trace_ctx = ctx;
  c->trace = fn;
}

/* A collective entered: numbered, so a stall query can say who never got here. */
static int64_t coll_enter(coll_comm *c) { return ++c->seq_entered; }

static void coll_leave(coll_comm *c, int64_t seq) {
  if (seq > c->seq_done) c->seq_done = seq;
}

static int coll_check_count(coll_comm *c, int64_t elems, const char *call) {
  if (elems < 0) {
    coll_set_error(c, "%s: negative element count %lld", call, (long long)elems);
    return COLL_ERR;
  }
  if (coll_comm_failed(c)) return COLL_ERR; /* the first error stays in c->err */
  return COLL_OK;
}

static void coll_req_fill(const coll_comm *c, coll_request *r, int64_t seq, const float *send,
                          float *recv, int64_t elems, int avg) {
  memset(r, 0, sizeof *r);
  r->fp16_scale = c->fp16_scale;
  r->seq = seq;
  r->send = send;
  r->recv = recv;
  r->elems = elems;
  r->avg = avg;
  r->t_start = r->t_progress = clock_mono_s();
}

static int coll_iallreduce_f32(coll_comm *c, const float *send, float *recv, int64_t elems,
                               int avg, coll_request **req);

static int coll_allreduce_f32(coll_comm *c, const float *send, float *recv, int64_t elems,
                              int avg) {
  if (c->ops->blocking) {
    /* On the heap: a wait that times out leaves the request to the thread
     * still inside the blocking call. */
    coll_request *req = NULL;
    int rc = coll_iallreduce_f32(c, send, recv, elems, avg, &req);
    return rc == COLL_OK ? coll_wait(c, req) : rc;
  }
  if (coll_check_count(c, elems, "allreduce") != COLL_OK) return COLL_ERR;
  coll_request r;
  coll_req_fill(c, &r, coll_enter(c), send, recv, elems, avg);
  int rc;
  if (c->ops->threaded) {
    rc = coll_progress_run(c, &r);
  } else {
    rc = c->ops->start(c, &r);
    if (rc == COLL_OK) rc = c->ops->wait(c, &r);
    else c->ops->abandon(c, &r);
  }
  coll_leave(c, r.seq);
  return rc;
}

int coll_allreduce_sum_f32(coll_comm *c, const float *send, float *recv, int64_t elems) {
  return coll_allreduce_f32(c, send, recv, elems, 0);
}

int coll_allreduce_avg_f32(coll_comm *c, float *buf, int64_t elems) {
  return coll_allreduce_f32(c, buf, buf, elems, 1);
}

static int coll_iallreduce_f32(coll_comm *c, const float *send, float *recv, int64_t elems,
                               int avg, coll_request **req) {
  *req = NULL;
  if (coll_check_count(c, elems, "iallreduce") != COLL_OK) return COLL_ERR;
  coll_request *r = malloc(sizeof *r);
  if (!r) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  coll_req_fill(c, r, coll_enter(c), send, recv, elems, avg);
  r->heap = 1;
  int rc = c->ops->threaded ? coll_progress_submit(c, r) : c->ops->start(c, r);
  if (rc != COLL_OK && !c->ops->threaded) c->ops->abandon(c, r);
  if (rc != COLL_OK) {
    free(r); /* it ran inline and failed, or never started: nobody else holds it */
    return rc;
  }
  *req = r;
  return COLL_OK;
}

int coll_iallreduce_avg_f32(coll_comm *c, float *buf, int64_t elems, coll_request **req) {
  return coll_iallreduce_f32(c, buf, buf, elems, 1, req);
}

int coll_iallreduce_sum_f32(coll_comm *c, const float *send, float *recv, int64_t elems,
                            coll_request **req) {
  return coll_iallreduce_f32(c, send, recv, elems, 0, req);
}

int coll_wait(coll_comm *c, coll_request *req) {
  if (!req) return coll_comm_failed(c) ? COLL_ERR : COLL_OK;
  int rc = c->ops->threaded ? coll_progress_wait(c, req) : c->ops->wait(c, req);
  coll_leave(c, req->seq);
  /* A request the progress thread still holds (it never came back) leaks
   * rather than being freed under it. */
  if (req->heap && req->state == COLL_REQ_DONE) free(req);
  return rc;
}

int coll_test(coll_comm *c, coll_request *req, int *done) {
  *done = 1;
  if (!req) return coll_comm_failed(c) ? COLL_ERR : COLL_OK;
  if (c->ops->threaded) {
    pthread_mutex_lock(&c->mu);
    *done = req->state == COLL_REQ_DONE;
    pthread_mutex_unlock(&c->mu);
    return COLL_OK;
  }
  return c->ops->query ? c->ops->query(c, req, done) : COLL_OK;
}

int coll_sync(coll_comm *c) {
  if (coll_comm_failed(c)) return COLL_ERR;
  return c->ops->sync ? c->ops->sync(c) : COLL_OK;
}

/* Host collectives go over the transport. Where they share its links with
 * the progress thread, they wait until it is idle. */
static void coll_host_enter(coll_comm *c) {
  if (c->tp->caps & COLL_TP_SHARED_LINKS) coll_progress_quiesce(c);
}

int coll_allreduce_sum_f64(coll_comm *c, double *buf, int64_t elems) {
  if (coll_check_count(c, elems, "allreduce(f64)") != COLL_OK) return COLL_ERR;
  if (elems > INT32_MAX) {
    coll_set_error(c, "allreduce(f64): %lld elements is too many", (long long)elems);
    return COLL_ERR;
  }
  coll_host_enter(c);
  int64_t seq = coll_enter(c);
  int rc = c->tp->sum_f64(c, seq, buf, elems);
  coll_leave(c, seq);
  return rc;
}

int coll_broadcast_bytes(coll_comm *c, void *buf, int64_t bytes, int root) {
  if (coll_check_count(c, bytes, "broadcast") != COLL_OK) return COLL_ERR;
  if (root < 0 || root >= c->size) {
    coll_set_error(c, "broadcast: root %d is not a rank (size %d)", root,
                   c->size);
    return COLL_ERR;
  }
  coll_host_enter(c);
  int64_t seq = coll_enter(c);
  int rc = c->tp->broadcast(c, seq, buf, bytes, root);
  if (rc == COLL_OK) coll_leave(c, seq);
  return rc;
}

int coll_broadcast_f32(coll_comm *c, float *buf, int64_t elems, int root) {
  if (coll_check_count(c, elems, "broadcast") != COLL_OK) return COLL_ERR;
  return coll_broadcast_bytes(c, buf, elems * (int64_t)sizeof(float), root);
}

int coll_barrier(coll_comm *c) {
  if (coll_comm_failed(c)) return COLL_ERR;
  coll_host_enter(c);
  int64_t seq = coll_enter(c);
  int rc = c->tp->barrier(c, seq);
  coll_leave(c, seq);
  return rc;
}

/* ---- notices to rank 0, and the stall diagnosis ---- */

/* Whether a notice must wait: the progress thread holds the shared links. */
static int coll_links_busy(coll_comm *c) {
  return (c->tp->caps & COLL_TP_SHARED_LINKS) && coll_progress_busy(c);
}

int coll_comm_report_cancel(coll_comm *c, int sig) {
  if (!c || c->size < 2 || c->rank == 0 || coll_comm_failed(c)) return -1;
  static int buf; /* must outlive a send still in flight */
  buf = sig;
  if (coll_links_busy(c)) return -1;
  return c->tp->notify_rank0(c, COLL_NOTE_CANCEL, &buf, sizeof buf);
}

int coll_comm_report_failure(coll_comm *c, const char *msg) {
  /* A failed collective is no local failure where rank 0 sees it, and says
   * better who stalled or died than a peer's report of its own wait would;
   * a transport where rank 0 sees only some peers gets the report anyway. */
  if (!c || c->size < 2 || c->rank == 0) return -1;
  if (!(c->tp->caps & COLL_TP_PARTIAL_VIEW) && coll_comm_failed(c)) return -1;
  static char buf[1024]; /* must outlive a send still in flight */
  snprintf(buf, sizeof buf, "%s", msg);
  if (coll_links_busy(c)) return -1;
  return c->tp->notify_rank0(c, COLL_NOTE_FAIL, buf, strlen(buf));
}

int coll_comm_peer_cancel(coll_comm *c, int *from) {
  if (!c) return 0;
  return c->tp->peer_cancel(c, coll_links_busy(c), from);
}

void coll_diag_serve(coll_comm *c) {
  if (c->tp->serve) c->tp->serve(c);
}

void coll_diag_stall(coll_comm *c, int64_t seq, const char *what, double waited_s) {
  char msg[1024];
  snprintf(msg, sizeof msg, "collective #%lld, %s, timed out on %s after %.1f s without progress",
           (long long)seq, what, c->host, waited_s);
  if (c->tp->diagnose_stall) c->tp->diagnose_stall(c, seq, msg, sizeof msg);
  coll_set_error(c, "%s", msg);
}

void coll_diag_after_error(coll_comm *c, int64_t seq) {
  char msg[sizeof c->err];
  pthread_mutex_lock(&c->err_mu);
  snprintf(msg, sizeof msg, "%s", c->err);
  pthread_mutex_unlock(&c->err_mu);
  if (c->size < 2 || !c->tp->diagnose_error || strstr(msg, "rank(s)")) return;
  c->tp->diagnose_error(c, seq, msg, sizeof msg);
  pthread_mutex_lock(&c->err_mu);
  snprintf(c->err, sizeof c->err, "%s", msg);
  pthread_mutex_unlock(&c->err_mu);
}
