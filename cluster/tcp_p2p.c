/* The point to point of a TF_CONFIG cluster's mesh, for the ring (see
 * tcp.h): tagged frames, posted without blocking and moved on by testsome.
 * A peer's frames come in the order it sent them; one whose receive is not
 * posted yet is kept aside until it is (MPI's eager messages), so the
 * ring's chunks may run at their own pace, as over MPI. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "cluster/tcp_internal.h"
#include "collective/transport.h"

void cluster_tcp_p2p_clear(cluster_tcp_op *slots, int n) {
  for (int i = 0; i < n; i++) slots[i] = (cluster_tcp_op){.done = 1};
}

void cluster_tcp_p2p_free(cluster_tcp *m) {
  while (m->early) {
    tcp_early *e = m->early;
    m->early = e->next;
    free(e);
  }
  for (int k = 0; m->rx && k < m->tf->ntasks; k++) free(m->rx[k].early);
  free(m->rx);
  m->rx = NULL;
}

static int p2p_post_check(cluster_tcp *m, int peer) {
  if (m->err[0]) return -1;
  if (!m->rx && !(m->rx = calloc((size_t)m->tf->ntasks, sizeof *m->rx))) {
    return cluster_tcp_fail(m, "out of memory");
  }
  if (peer < 0 || peer >= m->tf->ntasks || m->fd[peer] < 0) {
    return cluster_tcp_fail(m, "internal: no link to task %d", peer);
  }
  return 0;
}

int cluster_tcp_isend(cluster_tcp *m, cluster_tcp_op *op, int peer, int tag, const void *buf,
                      uint64_t bytes) {
  if (p2p_post_check(m, peer) != 0) return -1;
  *op = (cluster_tcp_op){.peer = peer, .send = 1, .type = CLUSTER_TCP_P2P + (uint32_t)tag,
                         .sbuf = buf, .bytes = bytes, .posted = 1, .order = ++m->p2p_order};
  tcp_header h = {TCP_MAGIC, op->type, bytes};
  memcpy(op->hdr, &h, sizeof h);
  return 0;
}

static int p2p_size_error(cluster_tcp *m, int peer, uint64_t got, uint64_t want) {
  char name[400];
  cluster_tcp_peer_name(m, peer, name, sizeof name);
  return cluster_tcp_fail(m, "%llu bytes from %s where %llu were due (the tasks disagree on "
                          "flags?)", (unsigned long long)got, name, (unsigned long long)want);
}

/* The first frame kept aside from peer of type, unlinked; NULL when none. */
static tcp_early *p2p_take_early(cluster_tcp *m, int peer, uint32_t type) {
  for (tcp_early **p = &m->early; *p; p = &(*p)->next) {
    if ((*p)->peer == peer && (*p)->type == type) {
      tcp_early *e = *p;
      *p = e->next;
      return e;
    }
  }
  return NULL;
}

int cluster_tcp_irecv(cluster_tcp *m, cluster_tcp_op *op, int peer, int tag, void *buf,
                      uint64_t bytes) {
  if (p2p_post_check(m, peer) != 0) return -1;
  *op = (cluster_tcp_op){.peer = peer, .type = CLUSTER_TCP_P2P + (uint32_t)tag, .rbuf = buf,
                         .bytes = bytes, .posted = 1, .order = ++m->p2p_order};
  tcp_early *e = p2p_take_early(m, peer, op->type);
  if (!e) return 0;
  int rc = e->bytes == bytes ? 0 : p2p_size_error(m, peer, e->bytes, bytes);
  if (rc == 0 && bytes) memcpy(buf, e->body, (size_t)bytes);
  free(e);
  op->done = rc == 0;
  return rc;
}

static int p2p_open(const cluster_tcp_op *op) { return op->posted && !op->done; }

/* The posted receive a frame of type from peer fills: the first posted. */
static cluster_tcp_op *p2p_match(cluster_tcp_op *slots, int n, int peer, uint32_t type) {
  cluster_tcp_op *best = NULL;
  for (int i = 0; i < n; i++) {
    cluster_tcp_op *op = &slots[i];
    if (!p2p_open(op) || op->send || op->peer != peer || op->type != type) continue;
    if (!best || op->order < best->order) best = op;
  }
  return best;
}

/* The send to peer that goes next on its socket: the first posted. */
static cluster_tcp_op *p2p_next_send(cluster_tcp_op *slots, int n, int peer) {
  cluster_tcp_op *best = NULL;
  for (int i = 0; i < n; i++) {
    cluster_tcp_op *op = &slots[i];
    if (!p2p_open(op) || !op->send || op->peer != peer) continue;
    if (!best || op->order < best->order) best = op;
  }
  return best;
}

static int p2p_wants_read(const cluster_tcp *m, const cluster_tcp_op *slots, int n, int peer) {
  if (m->rx[peer].hdr_done > 0) return 1;
  for (int i = 0; i < n; i++) {
    if (p2p_open(&slots[i]) && !slots[i].send && slots[i].peer == peer) return 1;
  }
  return 0;
}

/* The frame being read from peer is complete: its receive is done, or it
 * joins the frames kept aside. */
static void p2p_rx_finish(cluster_tcp *m, int peer) {
  tcp_rx *x = &m->rx[peer];
  if (x->op) {
    x->op->done = 1;
  } else {
    tcp_early **tail = &m->early;
    while (*tail) tail = &(*tail)->next;
    *tail = x->early;
  }
  memset(x, 0, sizeof *x);
}

/* A whole header from peer: a notice, or the frame of a receive posted
 * (or to be posted). 0, or -1 with the mesh's error set. */
static int p2p_header(cluster_tcp *m, cluster_tcp_op *slots, int n, int peer) {
  tcp_rx *x = &m->rx[peer];
  tcp_header h;
  memcpy(&h, x->hdr, sizeof h);
  char name[400];
  cluster_tcp_peer_name(m, peer, name, sizeof name);
  if (h.magic != TCP_MAGIC) return cluster_tcp_fail(m, "a garbled frame from %s", name);
  if (h.type == CLUSTER_TCP_FAIL || h.type == CLUSTER_TCP_CANCEL || h.type == CLUSTER_TCP_STALL ||
      h.type == CLUSTER_TCP_REJECT) {
    cluster_tcp_op note = {.peer = peer};
    x->hdr_done = 0; /* after a CANCEL, the frame wanted comes next */
    return cluster_tcp_take_note(m, &note, &h);
  }
  if (h.type < CLUSTER_TCP_P2P) {
    return cluster_tcp_fail(m, "frame type %u from %s where %u was due (the tasks disagree on "
                            "flags?)", h.type, name, (unsigned)CLUSTER_TCP_P2P);
  }
  x->op = p2p_match(slots, n, peer, h.type);
  if (x->op && h.bytes != x->op->bytes) return p2p_size_error(m, peer, h.bytes, x->op->bytes);
  if (!x->op && h.bytes > TCP_EARLY_MAX) { /* nothing posted bounds it: ours does */
    return cluster_tcp_fail(m, "a point-to-point frame of %llu bytes from %s (at most %llu before "
                            "its receive is posted)", (unsigned long long)h.bytes, name,
                            (unsigned long long)TCP_EARLY_MAX);
  }
  if (!x->op) {
    x->early = malloc(sizeof *x->early + (size_t)h.bytes);
    if (!x->early) return cluster_tcp_fail(m, "out of memory for a frame of %s", name);
    *x->early = (tcp_early){.peer = peer, .type = h.type, .bytes = h.bytes};
  }
  x->body_done = 0;
  if (h.bytes == 0) p2p_rx_finish(m, peer);
  return 0;
}

static int p2p_io_fail(cluster_tcp *m, int peer, int send, ssize_t k) {
  cluster_tcp_op op = {.peer = peer, .send = send};
  return cluster_tcp_io_error(m, &op, k);
}

/* A receive that moved nothing: 0 when the socket would block, else the error. */
static int p2p_read_error(cluster_tcp *m, int peer, ssize_t k) {
  return k < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : p2p_io_fail(m, peer, 0, k);
}

/* Reads what peer has sent, as far as its socket allows: 1 on progress,
 * 0 none, -1 error. */
static int p2p_read(cluster_tcp *m, cluster_tcp_op *slots, int n, int peer) {
  tcp_rx *x = &m->rx[peer];
  const int fd = m->fd[peer];
  ssize_t k;
  if (x->hdr_done < sizeof(tcp_header)) {
    k = recv(fd, x->hdr + x->hdr_done, sizeof(tcp_header) - x->hdr_done, 0);
    if (k <= 0) return p2p_read_error(m, peer, k);
    x->hdr_done += (uint64_t)k;
    if (x->hdr_done == sizeof(tcp_header) && p2p_header(m, slots, n, peer) != 0) return -1;
    return 1;
  }
  char *dst = x->op ? (char *)x->op->rbuf : (char *)x->early->body;
  const uint64_t want = x->op ? x->op->bytes : x->early->bytes;
  k = recv(fd, dst + x->body_done, (size_t)(want - x->body_done), 0);
  if (k <= 0) return p2p_read_error(m, peer, k);
  x->body_done += (uint64_t)k;
  if (x->body_done == want) p2p_rx_finish(m, peer);
  return 1;
}

/* Writes op's frame as far as its socket allows: 1 on progress, 0 none, -1 error. */
static int p2p_write(cluster_tcp *m, cluster_tcp_op *op) {
  const uint64_t hl = sizeof(tcp_header);
  struct iovec iov[2] = {{op->hdr + op->hdr_done, hl - op->hdr_done},
                         {(char *)op->sbuf + op->body_done, op->bytes - op->body_done}};
  struct msghdr msg = {.msg_iov = op->hdr_done < hl ? iov : iov + 1,
                       .msg_iovlen = op->hdr_done < hl ? 2 : 1};
  ssize_t k = sendmsg(m->fd[op->peer], &msg, MSG_NOSIGNAL);
  if (k < 0) return errno == EAGAIN || errno == EINTR ? 0 : p2p_io_fail(m, op->peer, 1, k);
  uint64_t h = hl - op->hdr_done, u = (uint64_t)k;
  op->hdr_done += u < h ? u : h;
  op->body_done += u > h ? u - h : 0;
  op->done = op->hdr_done == hl && op->body_done == op->bytes;
  m->torn[op->peer] = !op->done;
  return 1;
}

/* Moves peer's sends and receives on until its socket would block: how
 * many steps moved bytes, or -1 on error. */
static int p2p_progress_peer(cluster_tcp *m, cluster_tcp_op *slots, int n, int peer) {
  cluster_tcp_op *op;
  int p = 1, moved = 0;
  while (p > 0 && (op = p2p_next_send(slots, n, peer)) != NULL) moved += p = p2p_write(m, op);
  if (p < 0) return -1;
  p = 1;
  while (p > 0 && p2p_wants_read(m, slots, n, peer)) moved += p = p2p_read(m, slots, n, peer);
  return p < 0 ? -1 : moved;
}

/* Nothing could move: waits (at most P2P_WAIT_MS) until a socket the open
 * transfers use is ready, as the blocking engine waits in poll, rather
 * than leave the caller to spin on cores that training needs. */
#define P2P_WAIT_MS 1
static void p2p_wait(cluster_tcp *m, cluster_tcp_op *slots, int n) {
  struct pollfd pf[64];
  int np = 0;
  for (int peer = 0; peer < m->tf->ntasks && np < 64; peer++) {
    short ev = 0;
    if (m->fd[peer] < 0) continue;
    if (p2p_next_send(slots, n, peer)) ev |= POLLOUT;
    if (p2p_wants_read(m, slots, n, peer)) ev |= POLLIN;
    if (ev) pf[np++] = (struct pollfd){.fd = m->fd[peer], .events = ev};
  }
  if (np > 0) poll(pf, (nfds_t)np, P2P_WAIT_MS);
}

int cluster_tcp_testsome(cluster_tcp *m, cluster_tcp_op *slots, int n, int *done_n, int *idx) {
  *done_n = 0;
  m->p2p_slots = slots; /* for a stall's diagnosis */
  m->p2p_n = n;
  if (m->err[0] || !m->rx) return m->err[0] ? -1 : 0;
  int moved = 0;
  for (int peer = 0; peer < m->tf->ntasks; peer++) {
    int k = m->fd[peer] >= 0 ? p2p_progress_peer(m, slots, n, peer) : 0;
    if (k < 0) return -1;
    moved += k;
  }
  for (int i = 0; i < n; i++) {
    if (!slots[i].posted || !slots[i].done) continue;
    slots[i].posted = 0;
    idx[(*done_n)++] = i;
  }
  if (!moved && *done_n == 0) p2p_wait(m, slots, n);
  return 0;
}

/* A frame half moved, or a receive whose frame may be under way, cannot be
 * taken back: the mesh is done for (it is after a failure anyway). */
void cluster_tcp_p2p_abandon(cluster_tcp *m, cluster_tcp_op *op) {
  if (p2p_open(op) && (op->hdr_done > 0 || !op->send)) {
    cluster_tcp_fail(m, "a transfer was given up on mid-way");
  }
  for (int k = 0; m->rx && k < m->tf->ntasks; k++) {
    if (m->rx[k].op == op) m->rx[k].op = NULL, m->rx[k].hdr_done = 0;
  }
  op->posted = 0;
}

int cluster_tcp_p2p_stalled(cluster_tcp *m) {
  if (m->err[0]) return -1;
  return cluster_tcp_stalled(m, m->p2p_slots, m->p2p_n);
}
