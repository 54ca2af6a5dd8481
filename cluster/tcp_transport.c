/* A TF_CONFIG cluster's world and its transport (collective/transport.h)
 * over the TCP mesh (tcp.c): training task r is rank r, and no MPI starts.
 * The allreduce is collective/ring.c over the mesh's point to point
 * (tcp_p2p.c); small host collectives go through rank 0, which sums in
 * rank order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/tcp.h"
#include "collective/transport.h"

static int tcpt_fail(coll_comm *c, cluster_tcp *m) {
  coll_set_error(c, "%s", cluster_tcp_error(m));
  return COLL_ERR;
}

/* Every rank's bytes to rank 0 (into all, rank order), or rank 0's to every
 * rank. 0, or -1 with the mesh's error set. */
static int tcpt_gather(cluster_tcp *m, int rank, int size, const void *mine, void *all,
                       int64_t bytes) {
  if (rank != 0) return cluster_tcp_send(m, 0, CLUSTER_TCP_DATA, mine, (uint64_t)bytes);
  cluster_tcp_op ops[64];
  memcpy(all, mine, (size_t)bytes);
  for (int lo = 1; lo < size; lo += 64) {
    int k = 0;
    for (int p = lo; p < size && k < 64; p++, k++) {
      ops[k] = (cluster_tcp_op){.peer = p, .type = CLUSTER_TCP_DATA,
                                .rbuf = (char *)all + (size_t)p * (size_t)bytes,
                                .bytes = (uint64_t)bytes};
      if (bytes == 0) ops[k].rbuf = all;
    }
    if (cluster_tcp_run(m, ops, k) != 0) return -1;
  }
  return 0;
}

static int tcpt_bcast(cluster_tcp *m, int rank, int size, void *buf, int64_t bytes, int root) {
  if (rank != root) return cluster_tcp_recv(m, root, CLUSTER_TCP_DATA, buf, (uint64_t)bytes);
  cluster_tcp_op ops[64];
  for (int lo = 0; lo < size; lo += 64) {
    int k = 0;
    for (int p = lo; p < size && k < 64; p++) {
      if (p == root) continue;
      ops[k++] = (cluster_tcp_op){.peer = p, .send = 1, .type = CLUSTER_TCP_DATA, .sbuf = buf,
                                  .bytes = (uint64_t)bytes};
    }
    if (k && cluster_tcp_run(m, ops, k) != 0) return -1;
  }
  return 0;
}

/* Every rank's bytes, in rank order, on every rank: through rank 0. */
static int tcpt_allgather_rows(cluster_tcp *m, int rank, int size, const void *mine, void *rows,
                               int64_t bytes) {
  return tcpt_gather(m, rank, size, mine, rows, bytes) != 0 ||
         tcpt_bcast(m, rank, size, rows, bytes * size, 0) != 0 ? -1 : 0;
}

/* ---- the world ---- */

static int tcpt_world_gather(const coll_world *w, const void *mine, void *rows, int64_t bytes,
                             char *err, size_t err_bytes) {
  cluster_tcp *m = w->tp_state;
  if (tcpt_allgather_rows(m, w->rank, w->size, mine, rows, bytes) != 0) {
    snprintf(err, err_bytes, "%s", cluster_tcp_error(m));
    return COLL_ERR;
  }
  return COLL_OK;
}

static void tcpt_finalize(coll_world *w) { cluster_tcp_close(w->tp_state); }

/* A task on its own: its peers see its sockets close. */
static void tcpt_abort(const coll_world *w, int code) {
  (void)w;
  _exit(code);
}

/* ---- a comm: its state is the world's mesh ---- */

static int tcpt_comm_open(coll_comm *c, const coll_world *w, void **state, char *err,
                          size_t err_bytes) {
  (void)c, (void)err, (void)err_bytes;
  *state = w->tp_state;
  return COLL_OK;
}

static void tcpt_comm_close(coll_comm *c, void *state) { (void)c, (void)state; }

static int tcpt_broadcast(coll_comm *c, int64_t seq, void *buf, int64_t bytes, int root) {
  (void)seq;
  cluster_tcp *m = coll_comm_transport_state(c);
  if (tcpt_bcast(m, coll_comm_rank(c), coll_comm_size(c), buf, bytes, root) != 0) {
    return tcpt_fail(c, m);
  }
  return COLL_OK;
}

static int tcpt_sum_f64(coll_comm *c, int64_t seq, double *buf, int64_t elems) {
  (void)seq;
  cluster_tcp *m = coll_comm_transport_state(c);
  const int rank = coll_comm_rank(c), size = coll_comm_size(c);
  const int64_t bytes = elems * (int64_t)sizeof(double);
  double *all = rank == 0 ? malloc((size_t)(bytes * size) + 1) : NULL;
  if (rank == 0 && !all) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  int rc = tcpt_gather(m, rank, size, buf, all, bytes);
  if (rc == 0 && rank == 0) {
    for (int64_t i = 0; i < elems; i++) {
      double s = all[i];
      for (int p = 1; p < size; p++) s += all[(int64_t)p * elems + i];
      buf[i] = s;
    }
  }
  free(all);
  if (rc == 0) rc = tcpt_bcast(m, rank, size, buf, bytes, 0);
  return rc == 0 ? COLL_OK : tcpt_fail(c, m);
}

static int tcpt_allgather(coll_comm *c, int64_t seq, const void *mine, void *rows,
                          int64_t bytes) {
  (void)seq;
  cluster_tcp *m = coll_comm_transport_state(c);
  if (tcpt_allgather_rows(m, coll_comm_rank(c), coll_comm_size(c), mine, rows, bytes) != 0) {
    return tcpt_fail(c, m);
  }
  return COLL_OK;
}

static int tcpt_barrier(coll_comm *c, int64_t seq) { return tcpt_sum_f64(c, seq, NULL, 0); }

static int tcpt_notify_rank0(coll_comm *c, coll_note kind, const void *buf, size_t bytes) {
  const uint32_t type = kind == COLL_NOTE_CANCEL ? CLUSTER_TCP_CANCEL : CLUSTER_TCP_FAIL;
  return cluster_tcp_notify(coll_comm_transport_state(c), 0, type, buf, bytes);
}

static int tcpt_peer_cancel(coll_comm *c, int busy, int *from) {
  cluster_tcp *m = coll_comm_transport_state(c);
  return busy ? cluster_tcp_peer_cancel_seen(m, from) : cluster_tcp_peer_cancel(m, from);
}

/* ---- point to point, for the ring ---- */

static void tcpt_p2p_clear(void *reqs, int n) { cluster_tcp_p2p_clear(reqs, n); }

static int tcpt_isend(coll_comm *c, void *reqs, int slot, const void *buf, int64_t elems,
                      coll_wire type, int peer, int tag) {
  cluster_tcp *m = coll_comm_transport_state(c);
  if (cluster_tcp_isend(m, (cluster_tcp_op *)reqs + slot, peer, tag, buf,
                        (uint64_t)elems * coll_wire_bytes(type)) != 0) {
    return tcpt_fail(c, m);
  }
  return COLL_OK;
}

static int tcpt_irecv(coll_comm *c, void *reqs, int slot, void *buf, int64_t elems, coll_wire type,
                      int peer, int tag) {
  cluster_tcp *m = coll_comm_transport_state(c);
  if (cluster_tcp_irecv(m, (cluster_tcp_op *)reqs + slot, peer, tag, buf,
                        (uint64_t)elems * coll_wire_bytes(type)) != 0) {
    return tcpt_fail(c, m);
  }
  return COLL_OK;
}

static int tcpt_p2p_testsome(coll_comm *c, void *reqs, int n, int *done_n, int *idx) {
  cluster_tcp *m = coll_comm_transport_state(c);
  return cluster_tcp_testsome(m, reqs, n, done_n, idx) == 0 ? COLL_OK : tcpt_fail(c, m);
}

static void tcpt_p2p_abandon(coll_comm *c, void *reqs, int slot, int recv) {
  (void)recv;
  cluster_tcp_p2p_abandon(coll_comm_transport_state(c), (cluster_tcp_op *)reqs + slot);
}

/* The ring stalled: the mesh's own line names the peers waited for (and,
 * on task 0, the silent ones), in place of the generic one. */
static void tcpt_diagnose_stall(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes) {
  (void)seq;
  cluster_tcp *m = coll_comm_transport_state(c);
  cluster_tcp_p2p_stalled(m);
  if (cluster_tcp_error(m)[0]) snprintf(msg, msg_bytes, "%s", cluster_tcp_error(m));
}

const coll_transport_ops cluster_tcp_transport = {
  .name = "tcp",
  .caps = COLL_TP_ASYNC | COLL_TP_SHARED_LINKS | COLL_TP_PARTIAL_VIEW,
  .backends = 1u << COLL_BACKEND_TCP | 1u << COLL_BACKEND_HIER,
  .backends_why = "a TF_CONFIG cluster reduces over tcp or hier",
  .p2p_req_bytes = sizeof(cluster_tcp_op),
  .gather = tcpt_world_gather,
  .finalize = tcpt_finalize,
  .abort = tcpt_abort,
  .comm_open = tcpt_comm_open,
  .comm_close = tcpt_comm_close,
  .broadcast = tcpt_broadcast,
  .sum_f64 = tcpt_sum_f64,
  .allgather = tcpt_allgather,
  .barrier = tcpt_barrier,
  .notify_rank0 = tcpt_notify_rank0,
  .peer_cancel = tcpt_peer_cancel,
  .diagnose_stall = tcpt_diagnose_stall,
  .p2p_clear = tcpt_p2p_clear,
  .isend = tcpt_isend,
  .irecv = tcpt_irecv,
  .p2p_testsome = tcpt_p2p_testsome,
  .p2p_abandon = tcpt_p2p_abandon,
};

int cluster_world_join(coll_world *w, const cluster_tf_config *tf, double timeout_s, char *err,
                       size_t err_bytes) {
  cluster_tcp *m = NULL;
  memset(w, 0, sizeof *w);
  if (cluster_tcp_open(&m, tf, timeout_s, err, err_bytes) != 0) return COLL_ERR;
  int local_size = 0;
  const int local_rank = cluster_tf_local_rank(tf, &local_size);
  coll_world_init_transport(w, &cluster_tcp_transport, m, tf->self < tf->ntrain ? tf->self : -1,
                            tf->ntrain, local_rank, local_size);
  w->node_first = cluster_tf_node_first(tf);
  return COLL_OK;
}

const cluster_tf_config *cluster_world_tf(const coll_world *w) {
  return w->tp == &cluster_tcp_transport ? cluster_tcp_cluster(w->tp_state) : NULL;
}

cluster_tcp *cluster_world_mesh(const coll_world *w) {
  return w->tp == &cluster_tcp_transport ? w->tp_state : NULL;
}

cluster_tcp *cluster_comm_mesh(const coll_comm *c) {
  return coll_comm_transport(c) == &cluster_tcp_transport ? coll_comm_transport_state(c) : NULL;
}
