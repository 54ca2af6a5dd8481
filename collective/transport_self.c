/* The self transport: a world of one process with no launcher, and no MPI
 * (a plain `tfdist train`). Every host collective of one rank is a no-op,
 * the ring of one rank a copy; there are no peers to notify or diagnose. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "collective/coll_internal.h"

static int self_gather(const coll_world *w, const void *mine, void *rows, int64_t bytes,
                       char *err, size_t err_bytes) {
  (void)w, (void)err, (void)err_bytes;
  if (bytes > 0 && rows != mine) memcpy(rows, mine, (size_t)bytes);
  return COLL_OK;
}

static void self_finalize(coll_world *w) { (void)w; }

static void self_abort(const coll_world *w, int code) {
  (void)w;
  _exit(code);
}

static int self_comm_open(coll_comm *c, const coll_world *w, void **state, char *err,
                          size_t err_bytes) {
  (void)c, (void)w, (void)err, (void)err_bytes;
  *state = NULL;
  return COLL_OK;
}

static void self_comm_close(coll_comm *c, void *state) { (void)c, (void)state; }

static int self_broadcast(coll_comm *c, int64_t seq, void *buf, int64_t bytes, int root) {
  (void)c, (void)seq, (void)buf, (void)bytes, (void)root;
  return COLL_OK;
}

static int self_sum_f64(coll_comm *c, int64_t seq, double *buf, int64_t elems) {
  (void)c, (void)seq, (void)buf, (void)elems;
  return COLL_OK;
}

static int self_allgather(coll_comm *c, int64_t seq, const void *mine, void *rows,
                          int64_t bytes) {
  (void)c, (void)seq;
  if (bytes > 0 && rows != mine) memcpy(rows, mine, (size_t)bytes);
  return COLL_OK;
}

static int self_barrier(coll_comm *c, int64_t seq) {
  (void)c, (void)seq;
  return COLL_OK;
}

static int self_notify_rank0(coll_comm *c, coll_note kind, const void *buf, size_t bytes) {
  (void)c, (void)kind, (void)buf, (void)bytes;
  return -1; /* no rank 0 but us */
}

static int self_peer_cancel(coll_comm *c, int busy, int *from) {
  (void)c, (void)busy, (void)from;
  return 0;
}

/* A ring of one rank never posts a transfer: one that does is a bug. */
static void self_p2p_clear(void *reqs, int n) { (void)reqs, (void)n; }

static int self_isend(coll_comm *c, void *reqs, int slot, const void *buf, int64_t elems,
                      coll_wire type, int peer, int tag) {
  (void)reqs, (void)slot, (void)buf, (void)elems, (void)type, (void)tag;
  coll_set_error(c, "internal: a send to rank %d in a world of one", peer);
  return COLL_ERR;
}

static int self_irecv(coll_comm *c, void *reqs, int slot, void *buf, int64_t elems, coll_wire type,
                      int peer, int tag) {
  (void)reqs, (void)slot, (void)buf, (void)elems, (void)type, (void)tag;
  coll_set_error(c, "internal: a receive from rank %d in a world of one", peer);
  return COLL_ERR;
}

static int self_p2p_testsome(coll_comm *c, void *reqs, int n, int *done_n, int *idx) {
  (void)c, (void)reqs, (void)n, (void)idx;
  *done_n = 0;
  return COLL_OK;
}

static void self_p2p_abandon(coll_comm *c, void *reqs, int slot, int recv) {
  (void)c, (void)reqs, (void)slot, (void)recv;
}

const coll_transport_ops coll_self_transport = {
  .name = "self",
  .caps = 0,
  .backends = 1u << COLL_BACKEND_MPI | 1u << COLL_BACKEND_RING | 1u << COLL_BACKEND_NCCL |
              1u << COLL_BACKEND_SHM | 1u << COLL_BACKEND_HIER,
  .backends_why = "tcp needs a TF_CONFIG cluster",
  .p2p_req_bytes = 1,
  .gather = self_gather,
  .finalize = self_finalize,
  .abort = self_abort,
  .comm_open = self_comm_open,
  .comm_close = self_comm_close,
  .broadcast = self_broadcast,
  .sum_f64 = self_sum_f64,
  .allgather = self_allgather,
  .barrier = self_barrier,
  .notify_rank0 = self_notify_rank0,
  .peer_cancel = self_peer_cancel,
  .p2p_clear = self_p2p_clear,
  .isend = self_isend,
  .irecv = self_irecv,
  .p2p_testsome = self_p2p_testsome,
  .p2p_abandon = self_p2p_abandon,
};

void coll_world_init_self(coll_world *w) {
  coll_world_init_transport(w, &coll_self_transport, NULL, 0, 1, 0, 1);
}
