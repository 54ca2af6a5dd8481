/* A TF_CONFIG cluster's world and collectives over its TCP mesh (tcp.c).
 * Training task r is rank r. The allreduce is the ring of ring.c with one
 * chunk per segment and the same fixed reduction order; small host
 * collectives go through rank 0, which sums in rank order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/coll_internal.h"
#include "collective/tcp.h"

int coll_world_join_tf(coll_world *w, const coll_tf_config *tf, double timeout_s, char *err,
                       size_t err_bytes) {
  if (coll_tcp_open(&w->tcp, tf, timeout_s, err, err_bytes) != 0) return COLL_ERR;
  const int train = tf->self < tf->ntrain;
  w->rank = train ? tf->self : -1;
  w->size = tf->ntrain;
  w->local_rank = coll_tf_local_rank(tf, &w->local_size);
  return COLL_OK;
}

const coll_tf_config *coll_world_cluster(const coll_world *w) {
  return w->tcp ? coll_tcp_cluster(w->tcp) : NULL;
}

static int tcpc_fail(coll_comm *c) {
  coll_set_error(c, "%s", coll_tcp_error(c->tcp));
  return COLL_ERR;
}

static void tcpc_add(float *restrict out, const float *restrict a, const float *restrict b,
                     int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* Segment j (mod n) of elems: [*lo, *lo + *len), as ring.c cuts it. */
static void tcpc_segment(int64_t elems, int n, int j, int64_t *lo, int64_t *len) {
  j = ((j % n) + n) % n;
  *lo = elems * j / n;
  *len = elems * (j + 1) / n - *lo;
}

/* Step s of the reduce-scatter (s < n-1) or allgather: send one segment
 * right, receive one from the left, both at once. */
static int tcpc_ring_step(coll_comm *c, coll_request *r, float *tmp, int s) {
  const int n = c->size, me = c->rank, rs = s < n - 1, t = s - (n - 1);
  const int send_seg = rs ? me - s : me + 1 - t, recv_seg = rs ? me - s - 1 : me - t;
  int64_t slo, slen, rlo, rlen;
  tcpc_segment(r->elems, n, send_seg, &slo, &slen);
  tcpc_segment(r->elems, n, recv_seg, &rlo, &rlen);
  coll_tcp_op ops[2] = {
      {.peer = (me + 1) % n, .send = 1, .type = COLL_TCP_DATA,
       .sbuf = (s == 0 ? r->send : r->recv) + slo, .bytes = (uint64_t)slen * sizeof(float)},
      {.peer = (me + n - 1) % n, .type = COLL_TCP_DATA, .rbuf = rs ? tmp : r->recv + rlo,
       .bytes = (uint64_t)rlen * sizeof(float)}};
  if (rlen == 0) ops[1].rbuf = tmp; /* an empty segment still sends its frame */
  if (coll_tcp_run(c->tcp, ops, 2) != 0) return tcpc_fail(c);
  coll_req_touch(r); /* the waiter's guard: the whole ring runs inside start */
  if (rs) {
    float *out = r->recv + rlo;
    tcpc_add(out, r->send == r->recv ? out : r->send + rlo, tmp, rlen);
    if (s == n - 2 && r->avg) {
      for (int64_t i = 0; i < rlen; i++) out[i] /= (float)n;
    }
  }
  return COLL_OK;
}

/* Runs the whole ring when started, on the progress thread (or inline
 * when there is none): the trainer's backward goes on meanwhile. */
static int tcpc_start(coll_comm *c, coll_request *r) {
  const int n = c->size;
  r->status = COLL_OK;
  if (n == 1 || r->elems == 0) {
    if (r->send != r->recv && r->elems) memcpy(r->recv, r->send, (size_t)r->elems * sizeof(float));
    return COLL_OK;
  }
  float *tmp = malloc(((size_t)(r->elems / n) + 2) * sizeof(float));
  if (!tmp) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  int rc = COLL_OK;
  for (int s = 0; rc == COLL_OK && s < 2 * (n - 1); s++) rc = tcpc_ring_step(c, r, tmp, s);
  free(tmp);
  r->status = rc;
  return rc;
}

static int tcpc_test(coll_comm *c, coll_request *r, int *done) {
  (void)c;
  *done = 1;
  return r->status;
}

static void tcpc_abandon(coll_comm *c, coll_request *r) { (void)c, (void)r; }

const coll_backend_ops coll_tcp_ops = {
    .name = "tcp", .threaded = 1, .start = tcpc_start, .test = tcpc_test, .abandon = tcpc_abandon};

/* The caller's own use of the sockets waits until the progress thread has
 * finished every request it was given (only the caller gives it any). */
static void tcpc_quiesce(coll_comm *c) {
  pthread_mutex_lock(&c->mu);
  while (c->thread_on && (c->queue_head || c->active)) pthread_cond_wait(&c->done_cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

/* Whether the progress thread holds the sockets now (a notice must not cut in). */
static int tcpc_busy(coll_comm *c) {
  pthread_mutex_lock(&c->mu);
  int busy = c->thread_on && (c->queue_head || c->active);
  pthread_mutex_unlock(&c->mu);
  return busy;
}

/* Every rank's bytes to rank 0 (into all, rank order), or rank 0's to every rank. */
static int tcpc_gather(coll_comm *c, const void *mine, void *all, int64_t bytes) {
  if (c->rank != 0) {
    return coll_tcp_send(c->tcp, 0, COLL_TCP_DATA, mine, (uint64_t)bytes) == 0 ? COLL_OK
                                                                             : tcpc_fail(c);
  }
  coll_tcp_op ops[64];
  memcpy(all, mine, (size_t)bytes);
  for (int lo = 1; lo < c->size; lo += 64) {
    int k = 0;
    for (int p = lo; p < c->size && k < 64; p++, k++) {
      ops[k] = (coll_tcp_op){.peer = p, .type = COLL_TCP_DATA,
                             .rbuf = (char *)all + (size_t)p * (size_t)bytes, .bytes = (uint64_t)bytes};
      if (bytes == 0) ops[k].rbuf = all;
    }
    if (coll_tcp_run(c->tcp, ops, k) != 0) return tcpc_fail(c);
  }
  return COLL_OK;
}

static int tcpc_bcast(coll_comm *c, void *buf, int64_t bytes, int root) {
  if (c->rank != root) {
    return coll_tcp_recv(c->tcp, root, COLL_TCP_DATA, buf, (uint64_t)bytes) == 0 ? COLL_OK
                                                                              : tcpc_fail(c);
  }
  coll_tcp_op ops[64];
  for (int lo = 0; lo < c->size; lo += 64) {
    int k = 0;
    for (int p = lo; p < c->size && k < 64; p++) {
      if (p == root) continue;
      ops[k++] = (coll_tcp_op){.peer = p, .send = 1, .type = COLL_TCP_DATA, .sbuf = buf,
                               .bytes = (uint64_t)bytes};
    }
    if (k && coll_tcp_run(c->tcp, ops, k) != 0) return tcpc_fail(c);
  }
  return COLL_OK;
}

int coll_tcpc_broadcast(coll_comm *c, void *buf, int64_t bytes, int root) {
  tcpc_quiesce(c);
  int64_t seq = ++c->seq_entered;
  int rc = tcpc_bcast(c, buf, bytes, root);
  if (rc == COLL_OK) c->seq_done = seq;
  return rc;
}

int coll_tcpc_sum_f64(coll_comm *c, double *buf, int64_t elems) {
  tcpc_quiesce(c);
  const int64_t bytes = elems * (int64_t)sizeof(double);
  double *all = c->rank == 0 ? malloc((size_t)(bytes * c->size) + 1) : NULL;
  if (c->rank == 0 && !all) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  int rc = tcpc_gather(c, buf, all, bytes);
  if (rc == COLL_OK && c->rank == 0) {
    for (int64_t i = 0; i < elems; i++) {
      double s = all[i];
      for (int p = 1; p < c->size; p++) s += all[(int64_t)p * elems + i];
      buf[i] = s;
    }
  }
  free(all);
  if (rc == COLL_OK) rc = tcpc_bcast(c, buf, bytes, 0);
  return rc;
}

int coll_tcpc_barrier(coll_comm *c) { return coll_tcpc_sum_f64(c, NULL, 0); }

int coll_world_tcp_gather(const coll_world *w, const void *mine, void *rows, int64_t bytes,
                          char *err, size_t err_bytes) {
  coll_comm c;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.err_mu, NULL);
  c.tcp = w->tcp;
  c.rank = w->rank;
  c.size = w->size;
  int rc = tcpc_gather(&c, mine, rows, bytes);
  if (rc == COLL_OK) rc = tcpc_bcast(&c, rows, bytes * w->size, 0);
  if (rc != COLL_OK) snprintf(err, err_bytes, "%s", c.err);
  pthread_mutex_destroy(&c.err_mu);
  return rc;
}

int coll_tcpc_notify_rank0(coll_comm *c, uint32_t type, const void *buf, uint64_t bytes) {
  return tcpc_busy(c) ? -1 : coll_tcp_notify(c->tcp, 0, type, buf, bytes);
}

int coll_tcpc_peer_cancel(coll_comm *c, int *from) {
  if (tcpc_busy(c)) return coll_tcp_peer_cancel_seen(c->tcp, from);
  return coll_tcp_peer_cancel(c->tcp, from);
}
