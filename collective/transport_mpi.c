/* The MPI transport (see transport.h): host collectives as non-blocking MPI
 * calls, polled so none waits forever; point to point for the ring; the
 * world's gather, end and abort. Notices and stall diagnosis: watchdog.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/transport_mpi.h"

int coll_mpi_fail(coll_comm *c, int mpi_rc, const char *call, const char *file, int line) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(mpi_rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", mpi_rc);
  coll_set_error(c, "%s failed on %s at %s:%d: %s", call, c->host, file, line, msg);
  return COLL_ERR;
}

static int mpi_comm_dup(MPI_Comm *out, char *err, size_t err_bytes) {
  if (MPI_Comm_dup(MPI_COMM_WORLD, out) != MPI_SUCCESS) {
    snprintf(err, err_bytes, "collective: MPI_Comm_dup failed");
    return COLL_ERR;
  }
  MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
  return COLL_OK;
}

static void mpi_comm_close(coll_comm *c, void *state) {
  (void)c;
  coll_mpi_comm *m = state;
  if (!m) return;
  MPI_Comm *comms[] = {&m->comm, &m->comm_async, &m->comm_diag};
  for (size_t i = 0; i < 3; i++) {
    if (*comms[i] != MPI_COMM_NULL) MPI_Comm_free(comms[i]);
  }
  free(m);
}

static int mpi_comm_open(coll_comm *c, const coll_world *w, void **state, char *err,
                         size_t err_bytes) {
  (void)w;
  coll_mpi_comm *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  m->comm = m->comm_async = m->comm_diag = MPI_COMM_NULL;
  *state = m;
  if (mpi_comm_dup(&m->comm, err, err_bytes) != COLL_OK ||
      mpi_comm_dup(&m->comm_async, err, err_bytes) != COLL_OK ||
      mpi_comm_dup(&m->comm_diag, err, err_bytes) != COLL_OK) {
    mpi_comm_close(c, m);
    *state = NULL;
    return COLL_ERR;
  }
  return COLL_OK;
}

/* Host collectives run on a copy: a request given up on (a timeout, a
 * peer's failure) cannot be cancelled and may still write, so its copy is
 * left to it. */
static void *mpi_stage(coll_comm *c, const void *buf, int64_t bytes) {
  void *s = malloc(bytes > 0 ? (size_t)bytes : 1);
  if (!s) coll_set_error(c, "collective: out of memory");
  else if (bytes > 0) memcpy(s, buf, (size_t)bytes);
  return s;
}

static int mpi_unstage(void *s, void *buf, int64_t bytes, int rc) {
  if (rc != COLL_OK) return rc; /* s stays MPI's */
  if (bytes > 0) memcpy(buf, s, (size_t)bytes);
  free(s);
  return rc;
}

static int mpi_sum_f64(coll_comm *c, int64_t seq, double *buf, int64_t elems) {
  const int64_t bytes = elems * (int64_t)sizeof(double);
  double *s = mpi_stage(c, buf, bytes);
  if (!s) return COLL_ERR;
  MPI_Request req;
  int rc = MPI_Iallreduce(MPI_IN_PLACE, s, (int)elems, MPI_DOUBLE, MPI_SUM, coll_mpi_state(c)->comm,
                          &req);
  if (rc != MPI_SUCCESS) {
    free(s);
    return coll_mpi_fail(c, rc, "MPI_Iallreduce", __FILE__, __LINE__);
  }
  rc = coll_poll_request(c, &req, seq, "allreduce(f64 metrics)");
  return mpi_unstage(s, buf, bytes, rc);
}

static int mpi_allgather(coll_comm *c, int64_t seq, const void *mine, void *rows, int64_t bytes) {
  const int64_t all = bytes * c->size;
  char *s = malloc(all > 0 ? (size_t)all : 1); /* MPI's on a timeout, as mpi_stage's */
  if (!s) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  if (bytes > 0) memcpy(s + (size_t)bytes * (size_t)c->rank, mine, (size_t)bytes);
  MPI_Request req;
  int rc = MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, s, (int)bytes, MPI_BYTE,
                          coll_mpi_state(c)->comm, &req);
  if (rc != MPI_SUCCESS) {
    free(s);
    return coll_mpi_fail(c, rc, "MPI_Iallgather", __FILE__, __LINE__);
  }
  rc = coll_poll_request(c, &req, seq, "allgather(host)");
  return mpi_unstage(s, rows, all, rc);
}

static int mpi_broadcast(coll_comm *c, int64_t seq, void *buf, int64_t bytes, int root) {
  char *s = mpi_stage(c, buf, bytes);
  if (!s) return COLL_ERR;
  const int64_t piece = (int64_t)1 << 30;
  char what[64];
  snprintf(what, sizeof what, "broadcast(%lld bytes from rank %d)", (long long)bytes, root);
  int rc = COLL_OK;
  for (int64_t off = 0; rc == COLL_OK && (off < bytes || (off == 0 && bytes == 0)); off += piece) {
    int n = (int)(bytes - off < piece ? bytes - off : piece);
    MPI_Request req;
    int mrc = MPI_Ibcast(s + off, n, MPI_BYTE, root, coll_mpi_state(c)->comm, &req);
    if (mrc != MPI_SUCCESS) {
      free(s); /* nothing of this piece is in flight; earlier ones completed */
      return coll_mpi_fail(c, mrc, "MPI_Ibcast", __FILE__, __LINE__);
    }
    rc = coll_poll_request(c, &req, seq, what);
    if (bytes == 0) break;
  }
  return mpi_unstage(s, buf, bytes, rc);
}

static int mpi_barrier(coll_comm *c, int64_t seq) {
  MPI_Request req;
  COLL_MPI_TRY(c, MPI_Ibarrier(coll_mpi_state(c)->comm, &req));
  return coll_poll_request(c, &req, seq, "barrier");
}

/* ---- point to point: a slot is an MPI_Request on the async comm ---- */

static void mpi_p2p_clear(void *reqs, int n) {
  MPI_Request *r = reqs;
  for (int i = 0; i < n; i++) r[i] = MPI_REQUEST_NULL;
}

static MPI_Datatype mpi_wire_type(coll_wire type) {
  return type == COLL_WIRE_U16 ? MPI_UINT16_T : MPI_FLOAT;
}

static int mpi_isend(coll_comm *c, void *reqs, int slot, const void *buf, int64_t elems,
                     coll_wire type, int peer, int tag) {
  MPI_Request *r = reqs;
  COLL_MPI_TRY(c, MPI_Isend(buf, (int)elems, mpi_wire_type(type), peer, tag,
                            coll_mpi_state(c)->comm_async, &r[slot]));
  return COLL_OK;
}

static int mpi_irecv(coll_comm *c, void *reqs, int slot, void *buf, int64_t elems, coll_wire type,
                     int peer, int tag) {
  MPI_Request *r = reqs;
  COLL_MPI_TRY(c, MPI_Irecv(buf, (int)elems, mpi_wire_type(type), peer, tag,
                            coll_mpi_state(c)->comm_async, &r[slot]));
  return COLL_OK;
}

static int mpi_p2p_testsome(coll_comm *c, void *reqs, int n, int *done_n, int *idx) {
  COLL_MPI_TRY(c, MPI_Testsome(n, reqs, done_n, idx, MPI_STATUSES_IGNORE));
  if (*done_n == MPI_UNDEFINED) *done_n = 0;
  return COLL_OK;
}

/* Receives are cancelled; sends cannot be, and keep reading their buffers
 * until the job ends. */
static void mpi_p2p_abandon(coll_comm *c, void *reqs, int slot, int recv) {
  (void)c;
  MPI_Request *r = (MPI_Request *)reqs + slot;
  if (*r == MPI_REQUEST_NULL) return;
  if (recv) MPI_Cancel(r);
  MPI_Request_free(r);
}

/* ---- the world ---- */

static int mpi_gather(const coll_world *w, const void *mine, void *rows, int64_t bytes, char *err,
                      size_t err_bytes) {
  (void)w;
  int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, rows, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    snprintf(err, err_bytes, "MPI_Allgather(rank info): %s", msg);
    return COLL_ERR;
  }
  return COLL_OK;
}

static void mpi_abort(const coll_world *w, int code) {
  (void)w;
  MPI_Abort(MPI_COMM_WORLD, code);
}

const coll_transport_ops coll_mpi_transport = {
  .name = "mpi",
  .caps = 0, /* COLL_TP_ASYNC comes with MPI_THREAD_MULTIPLE: coll_world.async */
  .backends = 1u << COLL_BACKEND_MPI | 1u << COLL_BACKEND_RING | 1u << COLL_BACKEND_NCCL |
              1u << COLL_BACKEND_SHM | 1u << COLL_BACKEND_HIER,
  .backends_why = "tcp needs a TF_CONFIG cluster",
  .p2p_req_bytes = sizeof(MPI_Request),
  .gather = mpi_gather,
  .finalize = coll_mpi_world_finalize,
  .abort = mpi_abort,
  .comm_open = mpi_comm_open,
  .comm_close = mpi_comm_close,
  .broadcast = mpi_broadcast,
  .sum_f64 = mpi_sum_f64,
  .allgather = mpi_allgather,
  .barrier = mpi_barrier,
  .notify_rank0 = coll_mpi_notify_rank0,
  .peer_cancel = coll_mpi_peer_cancel,
  .serve = coll_mpi_serve,
  .diagnose_stall = coll_mpi_diagnose_stall,
  .diagnose_error = coll_mpi_diagnose_error,
  .p2p_clear = mpi_p2p_clear,
  .isend = mpi_isend,
  .irecv = mpi_irecv,
  .p2p_testsome = mpi_p2p_testsome,
  .p2p_abandon = mpi_p2p_abandon,
};
