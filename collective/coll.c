/* The collective front end: typed calls, the back-end table, errors. The
 * allreduce of each back end lives in its own file (mpi.c, ring.c, nccl.c);
 * host broadcasts and metric sums go over MPI for every back end. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collective/coll_internal.h"

double coll_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

int coll_mpi_fail(coll_comm *c, int mpi_rc, const char *call, const char *file, int line) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(mpi_rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", mpi_rc);
  coll_set_error(c, "%s failed on %s at %s:%d: %s", call, c->host, file, line, msg);
  return COLL_ERR;
}

const char *coll_backend_name(coll_backend b) {
  switch (b) {
  case COLL_BACKEND_MPI: return "mpi";
  case COLL_BACKEND_RING: return "ring";
  case COLL_BACKEND_NCCL: return "nccl";
  case COLL_BACKEND_TCP: return "tcp";
  }
  return "?";
}

int coll_backend_parse(const char *name, coll_backend *out) {
  for (int b = COLL_BACKEND_MPI; b <= COLL_BACKEND_TCP; b++) {
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
  case COLL_BACKEND_TCP: return &coll_tcp_ops;
  }
  return NULL;
}

int coll_backend_available(coll_backend b) { return coll_backend_table(b) != NULL; }

static int coll_comm_dup(MPI_Comm *out, char *err, size_t err_bytes) {
  if (MPI_Comm_dup(MPI_COMM_WORLD, out) != MPI_SUCCESS) {
    snprintf(err, err_bytes, "collective: MPI_Comm_dup failed");
    return COLL_ERR;
  }
  MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
  return COLL_OK;
}

int coll_comm_init(coll_comm **out, const coll_world *w, const coll_config *cfg, char *err,
                   size_t err_bytes) {
  *out = NULL;
  const coll_backend_ops *ops = coll_backend_table(cfg->backend);
  if ((cfg->backend == COLL_BACKEND_TCP) != (w->tcp != NULL)) {
    snprintf(err, err_bytes, "--allreduce %s: %s", coll_backend_name(cfg->backend),
             w->tcp ? "a TF_CONFIG cluster reduces over tcp" : "tcp needs a TF_CONFIG cluster");
    return COLL_ERR;
  }
  if (!ops) {
    snprintf(err, err_bytes, "--allreduce %s: this build has no CUDA/NCCL",
             coll_backend_name(cfg->backend));
    return COLL_ERR;
  }
  coll_comm *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->cfg = *cfg;
  if (!(c->cfg.timeout_s > 0)) c->cfg.timeout_s = 60.0;
  c->ops = ops;
  c->rank = w->rank;
  c->size = w->size;
  snprintf(c->host, sizeof c->host, "%.63s", w->host);
  c->comm = c->comm_async = c->comm_diag = MPI_COMM_NULL;
  c->tcp = w->tcp;
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->diag_mu, NULL);
  pthread_mutex_init(&c->serve_mu, NULL);
  pthread_mutex_init(&c->err_mu, NULL);
  pthread_cond_init(&c->work_cv, NULL);
  pthread_cond_init(&c->done_cv, NULL);
  if (coll_comm_dup(&c->comm, err, err_bytes) != COLL_OK ||
      coll_comm_dup(&c->comm_async, err, err_bytes) != COLL_OK ||
      coll_comm_dup(&c->comm_diag, err, err_bytes) != COLL_OK) {
    coll_comm_free(c);
    return COLL_ERR;
  }
  if (ops->init && ops->init(c, err, err_bytes) != COLL_OK) {
    coll_comm_free(c);
    return COLL_ERR;
  }
  /* Only with MPI_THREAD_MULTIPLE may a second thread call MPI; without it
   * non-blocking calls run to completion when started. Over TCP the thread
   * owns the sockets while a request runs (tcp_coll.c waits for it). */
  if (c->size > 1 && (c->tcp || w->thread_level >= MPI_THREAD_MULTIPLE) &&
      coll_progress_start(c, err, err_bytes) != COLL_OK) {
    coll_comm_free(c);
    return COLL_ERR;
  }
  *out = c;
  return COLL_OK;
}

void coll_comm_free(coll_comm *c) {
  if (!c) return;
  coll_progress_stop(c);
  if (c->ops && c->ops->free) c->ops->free(c);
  MPI_Comm *comms[] = {&c->comm, &c->comm_async, &c->comm_diag};
  for (size_t i = 0; i < 3; i++) {
    if (*comms[i] != MPI_COMM_NULL) MPI_Comm_free(comms[i]);
  }
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

static void coll_req_fill(coll_request *r, int64_t seq, const float *send, float *recv,
                          int64_t elems, int avg) {
  memset(r, 0, sizeof *r);
  r->seq = seq;
  r->send = send;
  r->recv = recv;
  r->elems = elems;
  r->avg = avg;
  r->t_start = r->t_progress = coll_now();
}

static int coll_allreduce_f32(coll_comm *c, const float *send, float *recv, int64_t elems,
                              int avg) {
  if (coll_check_count(c, elems, "allreduce") != COLL_OK) return COLL_ERR;
  coll_request r;
  coll_req_fill(&r, coll_enter(c), send, recv, elems, avg);
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
  coll_req_fill(r, coll_enter(c), send, recv, elems, avg);
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

/* Host collectives over MPI, non-blocking and polled so none waits forever.
 * They run on a copy: a request given up on (a timeout, a peer's failure)
 * cannot be cancelled and may still write, so its copy is left to it. */
static void *coll_stage(coll_comm *c, const void *buf, int64_t bytes) {
  void *s = malloc(bytes > 0 ? (size_t)bytes : 1);
  if (!s) coll_set_error(c, "collective: out of memory");
  else if (bytes > 0) memcpy(s, buf, (size_t)bytes);
  return s;
}

static int coll_unstage(void *s, void *buf, int64_t bytes, int rc) {
  if (rc != COLL_OK) return rc; /* s stays MPI's */
  if (bytes > 0) memcpy(buf, s, (size_t)bytes);
  free(s);
  return rc;
}

int coll_allreduce_sum_f64(coll_comm *c, double *buf, int64_t elems) {
  if (coll_check_count(c, elems, "allreduce(f64)") != COLL_OK) return COLL_ERR;
  if (elems > INT32_MAX) {
    coll_set_error(c, "allreduce(f64): %lld elements is too many", (long long)elems);
    return COLL_ERR;
  }
  if (c->tcp) return coll_tcpc_sum_f64(c, buf, elems);
  const int64_t bytes = elems * (int64_t)sizeof(double);
  double *s = coll_stage(c, buf, bytes);
  if (!s) return COLL_ERR;
  int64_t seq = coll_enter(c);
  MPI_Request req;
  int rc = MPI_Iallreduce(MPI_IN_PLACE, s, (int)elems, MPI_DOUBLE, MPI_SUM, c->comm, &req);
  if (rc != MPI_SUCCESS) {
    free(s);
    return coll_mpi_fail(c, rc, "MPI_Iallreduce", __FILE__, __LINE__);
  }
  rc = coll_poll_request(c, &req, seq, "allreduce(f64 metrics)");
  coll_leave(c, seq);
  return coll_unstage(s, buf, bytes, rc);
}

int coll_broadcast_bytes(coll_comm *c, void *buf, int64_t bytes, int root) {
  if (coll_check_count(c, bytes, "broadcast") != COLL_OK) return COLL_ERR;
  if (root < 0 || root >= c->size) {
    coll_set_error(c, "broadcast: root %d is not a rank (size %d)", root,
                   c->size);
    return COLL_ERR;
  }
  if (c->tcp) return coll_tcpc_broadcast(c, buf, bytes, root);
  char *s = coll_stage(c, buf, bytes);
  if (!s) return COLL_ERR;
  int64_t seq = coll_enter(c);
  const int64_t piece = (int64_t)1 << 30;
  char what[64];
  snprintf(what, sizeof what, "broadcast(%lld bytes from rank %d)", (long long)bytes, root);
  int rc = COLL_OK;
  for (int64_t off = 0; rc == COLL_OK && (off < bytes || (off == 0 && bytes == 0)); off += piece) {
    int n = (int)(bytes - off < piece ? bytes - off : piece);
    MPI_Request req;
    int mrc = MPI_Ibcast(s + off, n, MPI_BYTE, root, c->comm, &req);
    if (mrc != MPI_SUCCESS) {
      free(s); /* nothing of this piece is in flight; earlier ones completed */
      return coll_mpi_fail(c, mrc, "MPI_Ibcast", __FILE__, __LINE__);
    }
    rc = coll_poll_request(c, &req, seq, what);
    if (bytes == 0) break;
  }
  if (rc == COLL_OK) coll_leave(c, seq);
  return coll_unstage(s, buf, bytes, rc);
}

int coll_broadcast_f32(coll_comm *c, float *buf, int64_t elems, int root) {
  if (coll_check_count(c, elems, "broadcast") != COLL_OK) return COLL_ERR;
  return coll_broadcast_bytes(c, buf, elems * (int64_t)sizeof(float), root);
}

int coll_barrier(coll_comm *c) {
  if (coll_comm_failed(c)) return COLL_ERR;
  if (c->tcp) return coll_tcpc_barrier(c);
  int64_t seq = coll_enter(c);
  MPI_Request req;
  COLL_MPI_TRY(c, MPI_Ibarrier(c->comm, &req));
  int rc = coll_poll_request(c, &req, seq, "barrier");
  coll_leave(c, seq);
  return rc;
}
