/* The TCP mesh of a TF_CONFIG cluster; see tcp.h.
 * Start-up: every task listens first, then connects to each lower task it
 * talks to (the kernel's backlog takes a connection even while its owner
 * is busy connecting elsewhere, so the order cannot deadlock) and sends a
 * hello with the cluster's fingerprint; then it accepts the higher tasks. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "collective/coll_internal.h"
#include "collective/tcp.h"

#define TCP_MAGIC 0x31444654u /* "TFD1" little-endian */
#define TCP_HELLO 0x48u
#define TCP_NOTE_MAX 4096

struct coll_tcp {
  const coll_tf_config *tf;
  double timeout_s;
  int listen_fd;
  int *fd;               /* (ntasks) -1 where there is no link */
  unsigned char *torn;   /* (ntasks) a frame to it was left half sent: no notice may follow */
  int cancel_sig, cancel_from;
  char err[1024];
};

typedef struct {
  uint32_t magic, type;
  uint64_t bytes;
} tcp_header;

typedef struct {
  uint64_t fingerprint;
  uint32_t from, to;
} tcp_hello;

static int tcp_fail(coll_tcp *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tcp_fail(coll_tcp *m, const char *fmt, ...) {
  if (!m->err[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* "worker 1 (host:port, rank 2)" */
static void tcp_peer_name(const coll_tcp *m, int peer, char *out, size_t bytes) {
  const coll_tf_task *t = &m->tf->tasks[peer];
  char rank[24] = "";
  if (peer < m->tf->ntrain) snprintf(rank, sizeof rank, ", rank %d", peer);
  snprintf(out, bytes, "%s %d (%s:%s%s)", coll_tf_type_name(t->type), t->index, t->host, t->port,
           rank);
}

/* Whether tasks a and b exchange frames: ps tasks talk to training tasks only. */
static int tcp_linked(const coll_tf_config *tf, int a, int b) {
  return a != b && (a < tf->ntrain || b < tf->ntrain);
}

static void tcp_socket_tune(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A listening socket on a; -1 with errno. An IPv6 one takes IPv4 too. */
static int tcp_listen_on(const struct addrinfo *a, int backlog) {
  int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
  if (fd < 0) return -1;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (a->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, backlog) == 0) return fd;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

static int tcp_listen(coll_tcp *m, char *err, size_t err_bytes) {
  const coll_tf_task *me = &m->tf->tasks[m->tf->self];
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(NULL, me->port, &hints, &res);
  if (rc != 0) {
    snprintf(err, err_bytes, "TF_CONFIG: port %s: %s", me->port, gai_strerror(rc));
    return -1;
  }
  /* The dual-stack IPv6 socket first: glibc lists 0.0.0.0 before ::, and a
   * socket on 0.0.0.0 alone refused the peers of a "[::1]:port" cluster. */
  int saved = 0;
  for (int pass = 0; pass < 2 && m->listen_fd < 0; pass++) {
    for (struct addrinfo *a = res; a && m->listen_fd < 0; a = a->ai_next) {
      if ((a->ai_family == AF_INET6) != (pass == 0)) continue;
      m->listen_fd = tcp_listen_on(a, m->tf->ntasks + 16);
      if (m->listen_fd < 0) saved = errno;
    }
  }
  freeaddrinfo(res);
  if (m->listen_fd < 0) {
    char me_name[320];
    coll_tf_task_name(m->tf, m->tf->self, me_name, sizeof me_name);
    snprintf(err, err_bytes, "TF_CONFIG: cannot listen on port %s for %s: %s", me->port, me_name,
             strerror(saved));
    return -1;
  }
  fcntl(m->listen_fd, F_SETFL, fcntl(m->listen_fd, F_GETFL) | O_NONBLOCK);
  return 0;
}

/* One connect attempt, bounded by wait_s; the socket or -1 with errno. */
static int tcp_connect_once(const coll_tf_task *t, double wait_s) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(t->host, t->port, &hints, &res);
  if (rc != 0) {
    errno = rc == EAI_SYSTEM ? errno : EHOSTUNREACH;
    return -1;
  }
  int fd = -1, saved = ECONNREFUSED;
  for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    int c = connect(fd, a->ai_addr, a->ai_addrlen);
    if (c == 0) break;
    if (errno == EINPROGRESS) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      int e = 0;
      socklen_t len = sizeof e;
      if (poll(&p, 1, (int)(wait_s * 1000) + 1) == 1 &&
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0) {
        break;
      }
      saved = e ? e : ETIMEDOUT;
    } else {
      saved = errno;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) errno = saved;
  return fd;
}

/* Writes or reads all of buf on a non-blocking socket before deadline. */
static int tcp_io_all(int fd, void *buf, size_t n, int out, double deadline) {
  char *p = buf;
  while (n > 0) {
    ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
      continue;
    }
    if (k == 0) return errno = ECONNRESET, -1;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    double left = deadline - coll_now();
    struct pollfd pf = {.fd = fd, .events = out ? POLLOUT : POLLIN};
    if (left <= 0 || poll(&pf, 1, (int)(left * 1000) + 1) == 0) return errno = ETIMEDOUT, -1;
  }
  return 0;
}

static int tcp_connect_peer(coll_tcp *m, int peer, double deadline, char *err, size_t err_bytes) {
  const coll_tf_task *t = &m->tf->tasks[peer];
  int fd = -1;
  while ((fd = tcp_connect_once(t, deadline - coll_now())) < 0) {
    int e = errno;
    if (coll_now() + 0.1 >= deadline) {
      char name[400];
      tcp_peer_name(m, peer, name, sizeof name);
      snprintf(err, err_bytes, "TF_CONFIG: could not reach %s within %.0f s: %s", name,
               m->timeout_s, strerror(e));
      return -1;
    }
    struct timespec ts = {0, 100000000L};
    nanosleep(&ts, NULL);
  }
  tcp_socket_tune(fd);
  tcp_header h = {TCP_MAGIC, TCP_HELLO, sizeof(tcp_hello)};
  tcp_hello hello = {m->tf->fingerprint, (uint32_t)m->tf->self, (uint32_t)peer};
  if (tcp_io_all(fd, &h, sizeof h, 1, deadline) != 0 ||
      tcp_io_all(fd, &hello, sizeof hello, 1, deadline) != 0) {
    snprintf(err, err_bytes, "TF_CONFIG: hello to task %d failed: %s", peer, strerror(errno));
    close(fd);
    return -1;
  }
  m->fd[peer] = fd;
  return 0;
}

/* A complete hello: the peer's task, or -1 (not one of ours: dropped), or
 * -2 (ours, but with another cluster: a config error). */
static int tcp_check_hello(coll_tcp *m, const unsigned char *buf, char *err, size_t err_bytes) {
  tcp_hello hello;
  memcpy(&hello, buf + sizeof(tcp_header), sizeof hello);
  int from = (int)hello.from;
  if (hello.fingerprint != m->tf->fingerprint) {
    snprintf(err, err_bytes,
             "TF_CONFIG: task %d connected with a different cluster list: every task must get "
             "the same \"cluster\"", from);
    return -2;
  }
  if ((int)hello.to != m->tf->self || from <= m->tf->self || from >= m->tf->ntasks ||
      !tcp_linked(m->tf, from, m->tf->self) || m->fd[from] >= 0) {
    return -1;
  }
  return from;
}

/* An accepted connection whose hello is still coming. Hellos are read side
 * by side: a stranger that connects and sends nothing (a port scan, a probe
 * holding its connection) must not hold up the peers queued behind it. */
#define TCP_PENDING 32
#define TCP_HELLO_S 5.0
typedef struct {
  int fd;
  size_t got;
  double until;
  unsigned char buf[sizeof(tcp_header) + sizeof(tcp_hello)];
} tcp_pending;

static void tcp_pending_drop(tcp_pending *p, int *np, int i) {
  close(p[i].fd);
  p[i] = p[--*np];
}

/* Reads what pending connection i has sent: 1 when it was a peer's whole
 * hello (taken), -1 on a config error (err set), else 0 (incomplete, or
 * not ours and dropped). */
static int tcp_pending_read(coll_tcp *m, tcp_pending *p, int *np, int i, char *err,
                            size_t err_bytes) {
  tcp_pending *c = &p[i];
  ssize_t k = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, 0);
  if (k < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  if (k <= 0) {
    tcp_pending_drop(p, np, i);
    return 0;
  }
  c->got += (size_t)k;
  tcp_header h;
  if (c->got >= sizeof h) {
    memcpy(&h, c->buf, sizeof h);
    if (h.magic != TCP_MAGIC || h.type != TCP_HELLO || h.bytes != sizeof(tcp_hello)) {
      tcp_pending_drop(p, np, i); /* garbage: not one of ours */
      return 0;
    }
  }
  if (c->got < sizeof c->buf) return 0;
  int from = tcp_check_hello(m, c->buf, err, err_bytes);
  if (from < 0) {
    tcp_pending_drop(p, np, i);
    return from == -2 ? -1 : 0;
  }
  tcp_socket_tune(c->fd);
  m->fd[from] = c->fd;
  p[i] = p[--*np];
  return 1;
}

/* Takes every connection waiting on the listening socket; with the table
 * full, the oldest pending one goes. */
static void tcp_pending_accept(coll_tcp *m, tcp_pending *p, int *np) {
  for (;;) {
    int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    if (*np == TCP_PENDING) {
      int old = 0;
      for (int i = 1; i < *np; i++) old = p[i].until < p[old].until ? i : old;
      tcp_pending_drop(p, np, old);
    }
    p[(*np)++] = (tcp_pending){.fd = fd, .until = coll_now() + TCP_HELLO_S};
  }
}

static int tcp_accept_peers(coll_tcp *m, double deadline, char *err, size_t err_bytes) {
  int want = 0, np = 0, rc = 0;
  tcp_pending pend[TCP_PENDING];
  struct pollfd pf[TCP_PENDING + 1];
  for (int k = m->tf->self + 1; k < m->tf->ntasks; k++) want += tcp_linked(m->tf, k, m->tf->self);
  while (want > 0 && rc >= 0) {
    double now = coll_now(), wait = deadline - now;
    if (wait <= 0) break;
    pf[0] = (struct pollfd){.fd = m->listen_fd, .events = POLLIN};
    for (int i = 0; i < np; i++) {
      pf[i + 1] = (struct pollfd){.fd = pend[i].fd, .events = POLLIN};
      if (pend[i].until - now < wait) wait = pend[i].until - now;
    }
    const int n = np;
    if (poll(pf, (nfds_t)n + 1, wait > 0 ? (int)(wait * 1000) + 1 : 0) < 0 && errno != EINTR) break;
    /* From the last: a drop moves the last entry into the hole. */
    for (int i = n - 1; i >= 0 && rc >= 0; i--) {
      int got = 0;
      if (pf[i + 1].revents) got = tcp_pending_read(m, pend, &np, i, err, err_bytes);
      else if (coll_now() >= pend[i].until) tcp_pending_drop(pend, &np, i);
      if (got > 0) want--;
      if (got < 0) rc = -1;
    }
    if (rc >= 0 && (pf[0].revents & POLLIN)) tcp_pending_accept(m, pend, &np);
  }
  while (np > 0) tcp_pending_drop(pend, &np, np - 1);
  if (rc < 0) return -1;
  if (want == 0) return 0;
  char missing[600] = "";
  for (int k = m->tf->self + 1; k < m->tf->ntasks; k++) {
    if (!tcp_linked(m->tf, k, m->tf->self) || m->fd[k] >= 0) continue;
    char name[400];
    tcp_peer_name(m, k, name, sizeof name);
    size_t at = strlen(missing);
    snprintf(missing + at, sizeof missing - at, "%s%s", at ? "; " : "", name);
  }
  snprintf(err, err_bytes, "TF_CONFIG: no connection within %.0f s from %s", m->timeout_s, missing);
  return -1;
}

int coll_tcp_open(coll_tcp **out, const coll_tf_config *tf, double timeout_s, char *err,
                  size_t err_bytes) {
  *out = NULL;
  coll_tcp *m = calloc(1, sizeof *m);
  int *fd = calloc((size_t)tf->ntasks, sizeof *fd);
  unsigned char *torn = calloc((size_t)tf->ntasks, 1);
  if (!m || !fd || !torn) {
    free(m);
    free(fd);
    free(torn);
    snprintf(err, err_bytes, "TF_CONFIG: out of memory");
    return -1;
  }
  m->tf = tf;
  m->timeout_s = timeout_s > 0 ? timeout_s : 60.0;
  m->listen_fd = -1;
  m->fd = fd;
  m->torn = torn;
  for (int k = 0; k < tf->ntasks; k++) fd[k] = -1;
  const double deadline = coll_now() + m->timeout_s;
  int rc = tcp_listen(m, err, err_bytes);
  for (int k = 0; rc == 0 && k < tf->self; k++) {
    if (tcp_linked(tf, k, tf->self)) rc = tcp_connect_peer(m, k, deadline, err, err_bytes);
  }
  if (rc == 0) rc = tcp_accept_peers(m, deadline, err, err_bytes);
  if (rc != 0) {
    coll_tcp_close(m);
    return -1;
  }
  close(m->listen_fd); /* every peer is in: the port is free again */
  m->listen_fd = -1;
  *out = m;
  return 0;
}

void coll_tcp_close(coll_tcp *m) {
  if (!m) return;
  for (int k = 0; k < m->tf->ntasks; k++) {
    if (m->fd[k] >= 0) close(m->fd[k]);
  }
  if (m->listen_fd >= 0) close(m->listen_fd);
  free(m->fd);
  free(m->torn);
  free(m);
}

const coll_tf_config *coll_tcp_cluster(const coll_tcp *m) { return m->tf; }
const char *coll_tcp_error(const coll_tcp *m) { return m->err; }

/* The progress thread may record it while the caller reads it. */
static void tcp_record_cancel(coll_tcp *m, int32_t sig, int peer) {
  if (sig <= 0 || __atomic_load_n(&m->cancel_sig, __ATOMIC_ACQUIRE)) return;
  m->cancel_from = peer;
  __atomic_store_n(&m->cancel_sig, sig, __ATOMIC_RELEASE);
}

/* A CANCEL frame waiting at the head of a peer's stream, taken without
 * blocking. Only between collectives: then every stream is at a frame. */
static void tcp_take_waiting_cancel(coll_tcp *m, int peer) {
  unsigned char buf[sizeof(tcp_header) + sizeof(int32_t)];
  ssize_t k = recv(m->fd[peer], buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  tcp_header h;
  if (k != (ssize_t)sizeof buf) return;
  memcpy(&h, buf, sizeof h);
  if (h.magic != TCP_MAGIC || h.type != COLL_TCP_CANCEL || h.bytes != sizeof(int32_t)) return;
  if (recv(m->fd[peer], buf, sizeof buf, MSG_DONTWAIT) != (ssize_t)sizeof buf) return;
  int32_t sig;
  memcpy(&sig, buf + sizeof h, sizeof sig);
  tcp_record_cancel(m, sig, peer);
}

int coll_tcp_peer_cancel_seen(coll_tcp *m, int *from) {
  int sig = __atomic_load_n(&m->cancel_sig, __ATOMIC_ACQUIRE);
  if (from) *from = m->cancel_from;
  return sig;
}

int coll_tcp_peer_cancel(coll_tcp *m, int *from) {
  for (int k = 0; !m->cancel_sig && !m->err[0] && k < m->tf->ntrain; k++) {
    if (m->fd[k] >= 0) tcp_take_waiting_cancel(m, k);
  }
  return coll_tcp_peer_cancel_seen(m, from);
}

/* A FAIL or CANCEL frame's small body, read whole (its sender wrote it in one go). */
static int tcp_take_note(coll_tcp *m, coll_tcp_op *op, const tcp_header *h) {
  char name[400], body[TCP_NOTE_MAX + 1];
  tcp_peer_name(m, op->peer, name, sizeof name);
  if (h->bytes > TCP_NOTE_MAX ||
      tcp_io_all(m->fd[op->peer], body, (size_t)h->bytes, 0, coll_now() + m->timeout_s) != 0) {
    return tcp_fail(m, "a bad notice frame from %s", name);
  }
  body[h->bytes] = '\0';
  if (h->type == COLL_TCP_FAIL) return tcp_fail(m, "%s failed: %s", name, body);
  int32_t sig = 0;
  if (h->bytes == sizeof sig) memcpy(&sig, body, sizeof sig);
  tcp_record_cancel(m, sig, op->peer);
  op->hdr_done = 0; /* the frame wanted comes next */
  return 0;
}

static int tcp_check_header(coll_tcp *m, coll_tcp_op *op) {
  tcp_header h;
  memcpy(&h, op->hdr, sizeof h);
  char name[400];
  tcp_peer_name(m, op->peer, name, sizeof name);
  if (h.magic != TCP_MAGIC) return tcp_fail(m, "a garbled frame from %s", name);
  if (h.type == COLL_TCP_FAIL || h.type == COLL_TCP_CANCEL) return tcp_take_note(m, op, &h);
  op->got_type = h.type;
  op->got_bytes = h.bytes;
  if (op->type && h.type != op->type) {
    return tcp_fail(m, "frame type %u from %s where %u was due (the tasks disagree on flags?)",
                    h.type, name, op->type);
  }
  if (!op->rbuf) op->done = 1;
  else if (h.bytes != op->bytes) {
    return tcp_fail(m, "%llu bytes from %s where %llu were due (the tasks disagree on flags?)",
                    (unsigned long long)h.bytes, name, (unsigned long long)op->bytes);
  } else if (h.bytes == 0) {
    op->done = 1;
  }
  return 0;
}

static int tcp_io_error(coll_tcp *m, coll_tcp_op *op, ssize_t k) {
  char name[400];
  tcp_peer_name(m, op->peer, name, sizeof name);
  if (k == 0 || errno == ECONNRESET || errno == EPIPE) {
    return tcp_fail(m, "%s closed its connection (it ended or was killed)", name);
  }
  return tcp_fail(m, "%s %s: %s", op->send ? "sending to" : "receiving from", name, strerror(errno));
}

/* Moves op on as far as its socket allows: 1 on progress, 0 none, -1 error. */
static int tcp_step(coll_tcp *m, coll_tcp_op *op) {
  int fd = m->fd[op->peer];
  ssize_t k;
  if (op->send) {
    struct iovec iov[2] = {{op->hdr + op->hdr_done, sizeof(tcp_header) - op->hdr_done},
                           {(char *)op->sbuf + op->body_done, op->bytes - op->body_done}};
    struct msghdr msg = {.msg_iov = op->hdr_done < sizeof(tcp_header) ? iov : iov + 1,
                         .msg_iovlen = op->hdr_done < sizeof(tcp_header) ? 2 : 1};
    k = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (k < 0) return errno == EAGAIN || errno == EINTR ? 0 : tcp_io_error(m, op, k);
    uint64_t h = sizeof(tcp_header) - op->hdr_done, u = (uint64_t)k;
    op->hdr_done += u < h ? u : h;
    op->body_done += u > h ? u - h : 0;
    op->done = op->hdr_done == sizeof(tcp_header) && op->body_done == op->bytes;
    m->torn[op->peer] = !op->done;
    return 1;
  }
  if (op->hdr_done < sizeof(tcp_header)) {
    k = recv(fd, op->hdr + op->hdr_done, sizeof(tcp_header) - op->hdr_done, 0);
    if (k <= 0) return k < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : tcp_io_error(m, op, k);
    op->hdr_done += (uint64_t)k;
    if (op->hdr_done == sizeof(tcp_header) && tcp_check_header(m, op) != 0) return -1;
    return 1;
  }
  k = recv(fd, (char *)op->rbuf + op->body_done, op->bytes - op->body_done, 0);
  if (k <= 0) return k < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : tcp_io_error(m, op, k);
  op->body_done += (uint64_t)k;
  op->done = op->body_done == op->bytes;
  return 1;
}

static int tcp_prepare(coll_tcp *m, coll_tcp_op *ops, int nops) {
  for (int i = 0; i < nops; i++) {
    coll_tcp_op *op = &ops[i];
    if (op->peer < 0 || op->peer >= m->tf->ntasks || m->fd[op->peer] < 0) {
      return tcp_fail(m, "internal: no link to task %d", op->peer);
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
static int tcp_is_active(const coll_tcp_op *ops, int i) {
  for (int j = 0; j < i; j++) {
    if (!ops[j].done && ops[j].peer == ops[i].peer && ops[j].send == ops[i].send) return 0;
  }
  return !ops[i].done;
}

static int tcp_stalled(coll_tcp *m, const coll_tcp_op *ops, int nops) {
  char who[600] = "";
  for (int i = 0; i < nops; i++) {
    if (ops[i].done) continue;
    char name[400];
    tcp_peer_name(m, ops[i].peer, name, sizeof name);
    size_t at = strlen(who);
    if (strstr(who, name)) continue;
    snprintf(who + at, sizeof who - at, "%s%s", at ? "; " : "", name);
  }
  return tcp_fail(m, "no progress for %.0f s: waiting for %s (stalled or hung)", m->timeout_s, who);
}

int coll_tcp_run(coll_tcp *m, coll_tcp_op *ops, int nops) {
  if (m->err[0]) return -1;
  if (tcp_prepare(m, ops, nops) != 0) return -1;
  struct pollfd pf[64];
  int idx[64];
  if (nops > 64) return tcp_fail(m, "internal: %d transfers in one batch", nops);
  double last = coll_now();
  for (;;) {
    int n = 0;
    for (int i = 0; i < nops; i++) {
      if (!tcp_is_active(ops, i)) continue;
      pf[n] = (struct pollfd){.fd = m->fd[ops[i].peer], .events = ops[i].send ? POLLOUT : POLLIN};
      idx[n++] = i;
    }
    if (n == 0) return 0;
    double left = last + m->timeout_s - coll_now();
    int ready = left > 0 ? poll(pf, (nfds_t)n, (int)(left * 1000) + 1) : 0;
    if (ready < 0 && errno != EINTR) return tcp_fail(m, "poll: %s", strerror(errno));
    if (ready == 0 && coll_now() - last >= m->timeout_s) return tcp_stalled(m, ops, nops);
    for (int j = 0; j < n; j++) {
      if (!pf[j].revents) continue;
      int p = tcp_step(m, &ops[idx[j]]);
      if (p < 0) return -1;
      if (p > 0) last = coll_now();
    }
  }
}

int coll_tcp_send(coll_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes) {
  coll_tcp_op op = {.peer = peer, .send = 1, .type = type, .sbuf = buf, .bytes = bytes};
  return coll_tcp_run(m, &op, 1);
}

int coll_tcp_recv(coll_tcp *m, int peer, uint32_t type, void *buf, uint64_t bytes) {
  coll_tcp_op op = {.peer = peer, .type = type, .rbuf = buf ? buf : (void *)"", .bytes = bytes};
  return coll_tcp_run(m, &op, 1);
}

int coll_tcp_notify(coll_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes) {
  if (peer < 0 || peer >= m->tf->ntasks || m->fd[peer] < 0 || m->torn[peer]) return -1;
  tcp_header h = {TCP_MAGIC, type, bytes};
  double deadline = coll_now() + (m->timeout_s < 2 ? m->timeout_s : 2);
  if (tcp_io_all(m->fd[peer], &h, sizeof h, 1, deadline) != 0) return -1;
  return tcp_io_all(m->fd[peer], (void *)buf, (size_t)bytes, 1, deadline);
}
