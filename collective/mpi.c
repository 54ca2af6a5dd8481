/* The mpi back end, in pieces of at most 2^30 elements (MPI counts are
 * int); the average divides after the sum. With a progress thread it calls
 * MPI_Allreduce there, and the waiter, asleep on a condition variable, keeps
 * the timeout (progress.c); MPI_Iallreduce polled took 4.1-8.8x
 * MPI_Allreduce's time at 1 MiB. Measured numbers: collective/README.md.
 * Without a thread (no MPI_THREAD_MULTIPLE) it polls MPI_Iallreduce. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/transport_mpi.h"

#define MPI_PIECE_ELEMS ((int64_t)1 << 30)

typedef struct {
  MPI_Request req;
  int64_t off, piece; /* the piece in flight: [off, off + piece) */
} mpi_req;

static int mpi_post(coll_comm *c, coll_request *r, mpi_req *m) {
  m->piece = r->elems - m->off < MPI_PIECE_ELEMS ? r->elems - m->off : MPI_PIECE_ELEMS;
  const void *send = r->send == r->recv ? MPI_IN_PLACE : (const void *)(r->send + m->off);
  COLL_MPI_TRY(c, MPI_Iallreduce(send, r->recv + m->off, (int)m->piece, MPI_FLOAT, MPI_SUM,
                                 coll_mpi_state(c)->comm_async, &m->req));
  return COLL_OK;
}

/* On the progress thread only (ops.blocking): the caller's wait bounds it. */
static int mpi_blocking(coll_comm *c, coll_request *r) {
  for (int64_t off = 0; off < r->elems; off += MPI_PIECE_ELEMS) {
    const int64_t piece = r->elems - off < MPI_PIECE_ELEMS ? r->elems - off : MPI_PIECE_ELEMS;
    const void *send = r->send == r->recv ? MPI_IN_PLACE : (const void *)(r->send + off);
    COLL_MPI_TRY(c, MPI_Allreduce(send, r->recv + off, (int)piece, MPI_FLOAT, MPI_SUM,
                                  coll_mpi_state(c)->comm_async));
    coll_req_touch(r);
  }
  return COLL_OK;
}

static int mpi_start(coll_comm *c, coll_request *r) {
  mpi_req *m = calloc(1, sizeof *m);
  if (!m) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  m->req = MPI_REQUEST_NULL;
  r->impl = m;
  if (r->elems == 0) return COLL_OK;
  if (c->size == 1) { /* the sum of one rank, with or without MPI (the self transport) */
    if (r->send != r->recv) memcpy(r->recv, r->send, (size_t)r->elems * sizeof(float));
    return COLL_OK;
  }
  if (c->thread_on) {
    m->off = r->elems; /* done here: mpi_test only averages */
    return mpi_blocking(c, r);
  }
  return mpi_post(c, r, m);
}

static void mpi_average(const coll_comm *c, float *buf, int64_t elems) {
  const float n = (float)c->size;
  for (int64_t i = 0; i < elems; i++) buf[i] /= n;
}

static int mpi_test(coll_comm *c, coll_request *r, int *done) {
  mpi_req *m = r->impl;
  *done = 0;
  if (m->req != MPI_REQUEST_NULL) {
    int flag = 0;
    COLL_MPI_TRY(c, MPI_Test(&m->req, &flag, MPI_STATUS_IGNORE));
    if (!flag) return COLL_OK;
    coll_req_touch(r);
    m->off += m->piece;
    if (m->off < r->elems) return mpi_post(c, r, m);
  }
  if (r->avg) mpi_average(c, r->recv, r->elems);
  free(m);
  r->impl = NULL;
  *done = 1;
  return COLL_OK;
}

/* MPI forbids freeing or cancelling a collective request: after a timeout it
 * is left behind (the job is about to end). */
static void mpi_abandon(coll_comm *c, coll_request *r) {
  (void)c;
  mpi_req *m = r->impl;
  if (m && m->req == MPI_REQUEST_NULL) free(m);
  r->impl = NULL;
}

const coll_backend_ops coll_mpi_ops = {
  .name = "mpi",
  .threaded = 1,
  .blocking = 1,
  .start = mpi_start,
  .test = mpi_test,
  .abandon = mpi_abandon,
};
