/* The transfer engine of a TF_CONFIG cluster's TCP mesh (see tcp.h): framed,
 * non-blocking transfers driven by poll, notices, and a stalled wait's
 * diagnosis. The mesh's start-up is tcp_open.c. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "collective/transport.h"
#include "cluster/tcp_internal.h"

int cluster_tcp_fail(cluster_tcp *m, const char *fmt, ...) {
  if (!m->err[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
  }
  return -1;
}

const cluster_tf_config *cluster_tcp_cluster(const cluster_tcp *m) { return m->tf; }
const char *cluster_tcp_error(const cluster_tcp *m) { return m->err; }

/* The progress thread may record it while the caller reads it. */
static void tcp_record_cancel(cluster_tcp *m, int32_t sig, int peer) {
  if (sig <= 0 || __atomic_load_n(&m->cancel_sig, __ATOMIC_ACQUIRE)) return;
  m->cancel_from = peer;
  __atomic_store_n(&m->cancel_sig, sig, __ATOMIC_RELEASE);
}

/* A CANCEL frame waiting at the head of a peer's stream, taken without
 * blocking. Only between collectives: then every stream is at a frame. */
static void tcp_take_waiting_cancel(cluster_tcp *m, int peer) {
  unsigned char buf[sizeof(tcp_header) + sizeof(int32_t)];
  ssize_t k = recv(m->fd[peer], buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  tcp_header h;
  if (k != (ssize_t)sizeof buf) return;
  memcpy(&h, buf, sizeof h);
  if (h.magic != TCP_MAGIC || h.type != CLUSTER_TCP_CANCEL || h.bytes != sizeof(int32_t)) return;
  if (recv(m->fd[peer], buf, sizeof buf, MSG_DONTWAIT) != (ssize_t)sizeof buf) return;
  int32_t sig;
  memcpy(&sig, buf + sizeof h, sizeof sig);
  tcp_record_cancel(m, sig, peer);
}

int cluster_tcp_peer_cancel_seen(cluster_tcp *m, int *from) {
  int sig = __atomic_load_n(&m->cancel_sig, __ATOMIC_ACQUIRE);
  if (from) *from = m->cancel_from;
  return sig;
}

int cluster_tcp_peer_cancel(cluster_tcp *m, int *from) {
  for (int k = 0; !m->cancel_sig && !m->err[0] && k < m->tf->ntrain; k++) {
    if (m->fd[k] >= 0) tcp_take_waiting_cancel(m, k);
  }
  return cluster_tcp_peer_cancel_seen(m, from);
}

static int tcp_diag_silent(cluster_tcp *m, int reporter, char *out, size_t bytes);

/* A FAIL, STALL or CANCEL frame's small body, read whole (its sender wrote it
 * in one go). A CANCEL is recorded and the wanted frame read next. */
int cluster_tcp_take_note(cluster_tcp *m, cluster_tcp_op *op, const tcp_header *h) {
  char name[400], body[TCP_NOTE_MAX + 1], silent[600];
  cluster_tcp_peer_name(m, op->peer, name, sizeof name);
  if (h->bytes > TCP_NOTE_MAX ||
      cluster_tcp_io_all(m->fd[op->peer], body, (size_t)h->bytes, 0, clock_mono_s() + m->timeout_s) != 0) {
    return cluster_tcp_fail(m, "a bad notice frame from %s", name);
  }
  body[h->bytes] = '\0';
  /* A peer's stalled wait names its neighbour; task 0 finds who is silent. */
  if (h->type == CLUSTER_TCP_STALL && m->tf->self == 0 &&
      tcp_diag_silent(m, op->peer, silent, sizeof silent) > 0) {
    return cluster_tcp_fail(m, "%s reported: %s; stalled or hung: %s (every other task reported its own "
                    "wait or ended)", name, body, silent);
  }
  if (h->type == CLUSTER_TCP_REJECT) return cluster_tcp_fail(m, "TF_CONFIG: turned away: %s", body);
  if (h->type != CLUSTER_TCP_CANCEL) return cluster_tcp_fail(m, "%s failed: %s", name, body);
  int32_t sig = 0;
  if (h->bytes == sizeof sig) memcpy(&sig, body, sizeof sig);
  tcp_record_cancel(m, sig, op->peer);
  op->hdr_done = 0; /* the frame wanted comes next */
  return 0;
}

static int tcp_check_header(cluster_tcp *m, cluster_tcp_op *op) {
  tcp_header h;
  memcpy(&h, op->hdr, sizeof h);
  char name[400];
  cluster_tcp_peer_name(m, op->peer, name, sizeof name);
  if (h.magic != TCP_MAGIC) return cluster_tcp_fail(m, "a garbled frame from %s", name);
  if (h.type == CLUSTER_TCP_FAIL || h.type == CLUSTER_TCP_CANCEL || h.type == CLUSTER_TCP_STALL ||
      h.type == CLUSTER_TCP_REJECT) {
    return cluster_tcp_take_note(m, op, &h);
  }
  op->got_type = h.type;
  op->got_bytes = h.bytes;
  if (op->type && h.type != op->type) {
    return cluster_tcp_fail(m, "frame type %u from %s where %u was due (the tasks disagree on flags?)",
                    h.type, name, op->type);
  }
  if (!op->rbuf) op->done = 1;
  else if (h.bytes != op->bytes) {
    return cluster_tcp_fail(m, "%llu bytes from %s where %llu were due (the tasks disagree on flags?)",
                    (unsigned long long)h.bytes, name, (unsigned long long)op->bytes);
  } else if (h.bytes == 0) {
    op->done = 1;
  }
  return 0;
}

int cluster_tcp_io_error(cluster_tcp *m, cluster_tcp_op *op, ssize_t k) {
  char name[400];
  cluster_tcp_peer_name(m, op->peer, name, sizeof name);
  if (k == 0 || errno == ECONNRESET || errno == EPIPE) {
    return cluster_tcp_fail(m, "%s closed its connection (it ended or was killed)", name);
  }
  return cluster_tcp_fail(m, "%s %s: %s", op->send ? "sending to" : "receiving from", name, strerror(errno));
}

/* Moves op on as far as its socket allows: 1 on progress, 0 none, -1 error. */
static int tcp_step(cluster_tcp *m, cluster_tcp_op *op) {
  int fd = m->fd[op->peer];
  ssize_t k;
  if (op->send) {
    struct iovec iov[2] = {{op->hdr + op->hdr_done, sizeof(tcp_header) - op->hdr_done},
                           {(char *)op->sbuf + op->body_done, op->bytes - op->body_done}};
    struct msghdr msg = {.msg_iov = op->hdr_done < sizeof(tcp_header) ? iov : iov + 1,
                         .msg_iovlen = op->hdr_done < sizeof(tcp_header) ? 2 : 1};
    k = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (k < 0) return errno == EAGAIN || errno == EINTR ? 0 : cluster_tcp_io_error(m, op, k);
    uint64_t h = sizeof(tcp_header) - op->hdr_done, u = (uint64_t)k;
    op->hdr_done += u < h ? u : h;
    op->body_done += u > h ? u - h : 0;
    op->done = op->hdr_done == sizeof(tcp_header) && op->body_done == op->bytes;
    m->torn[op->peer] = !op->done;
    return 1;
  }
  if (op->hdr_done < sizeof(tcp_header)) {
    k = recv(fd, op->hdr + op->hdr_done, sizeof(tcp_header) - op->hdr_done, 0);
    if (k <= 0) return k < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : cluster_tcp_io_error(m, op, k);
    op->hdr_done += (uint64_t)k;
    if (op->hdr_done == sizeof(tcp_header) && tcp_check_header(m, op) != 0) return -1;
    return 1;
  }
  k = recv(fd, (char *)op->rbuf + op->body_done, op->bytes - op->body_done, 0);
  if (k <= 0) return k < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : cluster_tcp_io_error(m, op, k);
  op->body_done += (uint64_t)k;
  op->done = op->body_done == op->bytes;
  return 1;
}

static int tcp_prepare(cluster_tcp *m, cluster_tcp_op *ops, int nops) {
  for (int i = 0; i < nops; i++) {
    cluster_tcp_op *op = &ops[i];
    if (op->peer < 0 || op->peer >= m->tf->ntasks || m->fd[op->peer] < 0) {
      return cluster_tcp_fail(m, "internal: no link to task %d", op->peer);
    }
    op->hdr_done = !op->send && op->body_only ? sizeof(tcp_header) : 0;
    op->body_done = 0;
    op->done = !op->send && op->body_only && op->bytes == 0;
    op->got_type = 0;
    op->got_bytes = 0;
    if (op->send) {
      tcp_header h = {TCP_MAGIC, op->type, op->bytes};
      memcpy(op->hdr, &h, sizeof h);
    }
  }
  return 0;
}

/* Only the first unfinished op per peer and direction may touch a socket. */
static int tcp_is_active(const cluster_tcp_op *ops, int i) {
  for (int j = 0; j < i; j++) {
    if (!ops[j].done && ops[j].peer == ops[i].peer && ops[j].send == ops[i].send) return 0;
  }
  return !ops[i].done;
}

/* ---- a stalled wait's diagnosis ----
 * Every task waiting on a stalled one times out at about the same moment,
 * each naming the peer it waits on, which is the culprit only for its
 * neighbours. Task 0 (whose error the run records) listens a little longer:
 * the others report their own wait before they end, the culprit says
 * nothing. */
enum { DIAG_SILENT = 0, DIAG_REPORTED, DIAG_CLOSED, DIAG_BUSY, DIAG_SKIP };

/* What waits at the head of peer's stream: a FAIL notice (taken), a closed
 * link, data (the peer is alive), or nothing yet. */
static int tcp_diag_read(cluster_tcp *m, int peer, double deadline) {
  tcp_header h;
  ssize_t k = recv(m->fd[peer], &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
  if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) return DIAG_CLOSED;
  if (k < (ssize_t)sizeof h) return DIAG_SILENT; /* the rest is on its way */
  if (h.magic != TCP_MAGIC || h.bytes > TCP_NOTE_MAX ||
      (h.type != CLUSTER_TCP_FAIL && h.type != CLUSTER_TCP_STALL && h.type != CLUSTER_TCP_CANCEL)) {
    return DIAG_BUSY;
  }
  char body[TCP_NOTE_MAX];
  if (cluster_tcp_io_all(m->fd[peer], &h, sizeof h, 0, deadline) != 0 ||
      cluster_tcp_io_all(m->fd[peer], body, (size_t)h.bytes, 0, deadline) != 0) {
    return DIAG_CLOSED;
  }
  return h.type == CLUSTER_TCP_CANCEL ? DIAG_SILENT : DIAG_REPORTED;
}

/* Listens for the peers' reports for a short while; st[k] says what each did. */
static void tcp_diag_listen(cluster_tcp *m, unsigned char *st) {
  const int n = m->tf->ntasks;
  double w = m->timeout_s / 4;
  const double deadline = clock_mono_s() + (w < 1 ? 1 : w > 5 ? 5 : w);
  struct pollfd pf[64];
  int who[64];
  for (;;) {
    int np = 0;
    for (int k = 0; k < n && np < 64; k++) {
      if (st[k] != DIAG_SILENT) continue;
      pf[np] = (struct pollfd){.fd = m->fd[k], .events = POLLIN};
      who[np++] = k;
    }
    double left = deadline - clock_mono_s();
    if (np == 0 || left <= 0 || poll(pf, (nfds_t)np, (int)(left * 1000) + 1) <= 0) return;
    for (int j = 0; j < np; j++) {
      if (pf[j].revents) st[who[j]] = (unsigned char)tcp_diag_read(m, who[j], deadline);
    }
  }
}

/* Names the tasks that said nothing, into out; how many. reporter (or -1)
 * has spoken already. */
static int tcp_diag_silent(cluster_tcp *m, int reporter, char *out, size_t bytes) {
  const int n = m->tf->ntasks;
  unsigned char *st = malloc((size_t)n);
  if (!st) return 0;
  for (int k = 0; k < n; k++) st[k] = k == m->tf->self || m->fd[k] < 0 ? DIAG_SKIP : DIAG_SILENT;
  if (reporter >= 0) st[reporter] = DIAG_REPORTED;
  for (int k = 0; m->rx && k < n; k++) { /* the same for a point-to-point frame half read */
    if (m->rx[k].hdr_done > 0 && st[k] == DIAG_SILENT) st[k] = DIAG_BUSY;
  }
  for (int i = 0; i < m->batch_n; i++) { /* a frame half read cannot be peeked past: that peer sent */
    const cluster_tcp_op *op = &m->batch[i];
    if (!op->send && !op->done && op->hdr_done > 0 && st[op->peer] == DIAG_SILENT) {
      st[op->peer] = DIAG_BUSY;
    }
  }
  tcp_diag_listen(m, st);
  int silent = 0;
  out[0] = '\0';
  for (int k = 0; k < n; k++) {
    if (st[k] != DIAG_SILENT) continue;
    char name[400];
    cluster_tcp_peer_name(m, k, name, sizeof name);
    size_t at = strlen(out);
    snprintf(out + at, bytes - at, "%s%s", silent++ ? "; " : "", name);
  }
  free(st);
  return silent;
}

int cluster_tcp_stalled(cluster_tcp *m, const cluster_tcp_op *ops, int nops) {
  char who[600] = "";
  for (int i = 0; i < nops; i++) {
    if (ops[i].done) continue;
    char name[400];
    cluster_tcp_peer_name(m, ops[i].peer, name, sizeof name);
    size_t at = strlen(who);
    if (strstr(who, name)) continue;
    snprintf(who + at, sizeof who - at, "%s%s", at ? "; " : "", name);
  }
  char silent[600];
  m->stalled = 1;
  if (m->tf->self == 0 && tcp_diag_silent(m, -1, silent, sizeof silent) > 0) {
    return cluster_tcp_fail(m, "no progress for %.0f s waiting for %s; stalled or hung: %s (every "
                    "other task reported its own wait or ended)", m->timeout_s, who, silent);
  }
  return cluster_tcp_fail(m, "no progress for %.0f s: waiting for %s (stalled or hung)", m->timeout_s, who);
}

static int tcp_run_batch(cluster_tcp *m, cluster_tcp_op *ops, int nops);

int cluster_tcp_run(cluster_tcp *m, cluster_tcp_op *ops, int nops) {
  if (m->err[0]) return -1;
  if (tcp_prepare(m, ops, nops) != 0) return -1;
  m->batch = ops;
  m->batch_n = nops;
  int rc = tcp_run_batch(m, ops, nops);
  m->batch = NULL;
  m->batch_n = 0;
  return rc;
}

static int tcp_run_batch(cluster_tcp *m, cluster_tcp_op *ops, int nops) {
  struct pollfd pf[64];
  int idx[64];
  if (nops > 64) return cluster_tcp_fail(m, "internal: %d transfers in one batch", nops);
  double last = clock_mono_s();
  for (;;) {
    int n = 0;
    for (int i = 0; i < nops; i++) {
      if (!tcp_is_active(ops, i)) continue;
      pf[n] = (struct pollfd){.fd = m->fd[ops[i].peer], .events = ops[i].send ? POLLOUT : POLLIN};
      idx[n++] = i;
    }
    if (n == 0) return 0;
    double left = last + m->timeout_s - clock_mono_s();
    int ready = left > 0 ? poll(pf, (nfds_t)n, (int)(left * 1000) + 1) : 0;
    if (ready < 0 && errno != EINTR) return cluster_tcp_fail(m, "poll: %s", strerror(errno));
    if (ready == 0 && clock_mono_s() - last >= m->timeout_s) return cluster_tcp_stalled(m, ops, nops);
    for (int j = 0; j < n; j++) {
      if (!pf[j].revents) continue;
      int p = tcp_step(m, &ops[idx[j]]);
      if (p < 0) return -1;
      if (p > 0) last = clock_mono_s();
    }
  }
}

int cluster_tcp_send(cluster_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes) {
  cluster_tcp_op op = {.peer = peer, .send = 1, .type = type, .sbuf = buf, .bytes = bytes};
  return cluster_tcp_run(m, &op, 1);
}

int cluster_tcp_recv(cluster_tcp *m, int peer, uint32_t type, void *buf, uint64_t bytes) {
  cluster_tcp_op op = {.peer = peer, .type = type, .rbuf = buf ? buf : (void *)"", .bytes = bytes};
  return cluster_tcp_run(m, &op, 1);
}

int cluster_tcp_notify(cluster_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes) {
  if (peer < 0 || peer >= m->tf->ntasks || m->fd[peer] < 0 || m->torn[peer]) return -1;
  if (type == CLUSTER_TCP_FAIL && m->stalled) type = CLUSTER_TCP_STALL;
  tcp_header h = {TCP_MAGIC, type, bytes};
  double deadline = clock_mono_s() + (m->timeout_s < 2 ? m->timeout_s : 2);
  if (cluster_tcp_io_all(m->fd[peer], &h, sizeof h, 1, deadline) != 0) return -1;
  return cluster_tcp_io_all(m->fd[peer], (void *)buf, (size_t)bytes, 1, deadline);
}
