/* The start-up of a TF_CONFIG cluster's TCP mesh; see tcp.h.
 * Every task listens first, then connects to each lower task it talks to
 * (the kernel's backlog takes a connection even while its owner is busy
 * connecting elsewhere, so the order cannot deadlock) and sends a hello
 * with the cluster's fingerprint; then it accepts the higher tasks. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "collective/transport.h"
#include "cluster/tcp_internal.h"

void cluster_tcp_peer_name(const cluster_tcp *m, int peer, char *out, size_t bytes) {
  const cluster_tf_task *t = &m->tf->tasks[peer];
  char rank[24] = "";
  if (peer < m->tf->ntrain) snprintf(rank, sizeof rank, ", rank %d", peer);
  snprintf(out, bytes, "%s %d (%s:%s%s)", cluster_tf_type_name(t->type), t->index, t->host, t->port,
           rank);
}

int cluster_tcp_io_all(int fd, void *buf, size_t n, int out, double deadline) {
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
    double left = deadline - clock_mono_s();
    struct pollfd pf = {.fd = fd, .events = out ? POLLOUT : POLLIN};
    if (left <= 0 || poll(&pf, 1, (int)(left * 1000) + 1) == 0) return errno = ETIMEDOUT, -1;
  }
  return 0;
}

/* Whether tasks a and b exchange frames: ps tasks talk to training tasks only. */
static int tcp_linked(const cluster_tf_config *tf, int a, int b) {
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

/* Whether every address of res is loopback. */
static int tcp_all_loopback(const struct addrinfo *res) {
  for (const struct addrinfo *a = res; a; a = a->ai_next) {
    char host[64];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST) != 0 ||
        !cluster_tf_host_is_loopback(host)) {
      return 0;
    }
  }
  return 1;
}

static int tcp_listen(cluster_tcp *m, char *err, size_t err_bytes) {
  const cluster_tf_task *me = &m->tf->tasks[m->tf->self];
  /* Only this task's own address: a task listed as 127.0.0.1 is not
   * reachable from other hosts, whatever else it would accept. */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(me->host, me->port, &hints, &res);
  /* A host name that its own host maps to loopback (Debian's 127.0.1.1 for
   * the host's name) is how the other hosts reach it through their own
   * resolver: that one listens on every interface, as before. Such a name
   * is not loopback to the rule, so the cluster has a secret (or says
   * --insecure-cluster). */
  if (rc == 0 && !cluster_tf_host_is_loopback(me->host) && tcp_all_loopback(res)) {
    freeaddrinfo(res);
    res = NULL;
    hints.ai_flags |= AI_PASSIVE;
    rc = getaddrinfo(NULL, me->port, &hints, &res);
  }
  if (rc != 0) {
    snprintf(err, err_bytes, "TF_CONFIG: %s:%s: %s", me->host, me->port, gai_strerror(rc));
    return -1;
  }
  /* IPv6 first: a name may resolve to both families and peers try IPv6
   * first; and with every interface, glibc lists 0.0.0.0 before ::, and a
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
    cluster_tf_task_name(m->tf, m->tf->self, me_name, sizeof me_name);
    snprintf(err, err_bytes, "TF_CONFIG: cannot listen on %s:%s for %s: %s", me->host, me->port,
             me_name, strerror(saved));
    return -1;
  }
  fcntl(m->listen_fd, F_SETFL, fcntl(m->listen_fd, F_GETFL) | O_NONBLOCK);
  return 0;
}

/* One connect attempt, bounded by wait_s; the socket or -1 with errno. */
static int tcp_connect_once(const cluster_tf_task *t, double wait_s) {
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

/* Once per peer: a process on its port that failed the hello. */
static void tcp_log_drop(const cluster_tcp *m, int peer, const char *why) {
  char name[400];
  cluster_tcp_peer_name(m, peer, name, sizeof name);
  fprintf(stderr, "tfdist: TF_CONFIG: the process at %s's address %s: dropped, still waiting for "
          "the real task\n", name, why);
}

/* The connector's side of the hello on a fresh link fd (tcp_auth.c): 0 when
 * the peer proved it holds the secret, 1 when it did not (the link is to be
 * dropped; why says how), -1 on a local error (err set). */
static int tcp_connect_hello(cluster_tcp *m, int fd, int peer, double deadline, const char **why,
                             char *err, size_t err_bytes) {
  struct {
    tcp_header h;
    tcp_hello hello;
  } out = {{TCP_MAGIC, TCP_HELLO, sizeof(tcp_hello)},
           {m->tf->fingerprint, (uint32_t)m->tf->self, (uint32_t)peer, {0}}};
  if (cluster_tcp_nonce(out.hello.nonce, sizeof out.hello.nonce) != 0) {
    snprintf(err, err_bytes, "TF_CONFIG: getrandom: %s", strerror(errno));
    return -1;
  }
  unsigned char in[sizeof(tcp_header) + sizeof(tcp_challenge)];
  tcp_challenge c;
  if (cluster_tcp_io_all(fd, &out, sizeof out, 1, deadline) != 0 ||
      cluster_tcp_io_all(fd, in, sizeof in, 0, deadline) != 0) {
    *why = errno == ETIMEDOUT ? "did not answer the hello" : "closed the link during the hello";
    return 1;
  }
  if (cluster_tcp_frame_parse(in, sizeof in, TCP_CHALLENGE, &c, sizeof c) != 1) {
    *why = "answered the hello with something else than a challenge";
    return 1;
  }
  if (!cluster_tcp_auth_check(m->tf, TCP_AUTH_ACCEPTOR, &out.hello, &c, c.mac)) {
    *why = "failed authentication (not this job's secret)";
    return 1;
  }
  struct {
    tcp_header h;
    tcp_response r;
  } resp = {{TCP_MAGIC, TCP_RESPONSE, sizeof(tcp_response)}, {{0}}};
  cluster_tcp_auth_mac(m->tf, TCP_AUTH_CONNECTOR, &out.hello, &c, resp.r.mac);
  if (cluster_tcp_io_all(fd, &resp, sizeof resp, 1, deadline) != 0) {
    *why = "closed the link during the hello";
    return 1;
  }
  return 0;
}

static int tcp_connect_peer(cluster_tcp *m, int peer, double deadline, char *err, size_t err_bytes) {
  const cluster_tf_task *t = &m->tf->tasks[peer];
  const char *why = NULL, *logged = NULL;
  for (;;) {
    int fd = tcp_connect_once(t, deadline - clock_mono_s());
    int e = errno, rc = 1;
    if (fd >= 0) {
      tcp_socket_tune(fd);
      rc = tcp_connect_hello(m, fd, peer, deadline, &why, err, err_bytes);
      if (rc == 0) {
        m->fd[peer] = fd;
        return 0;
      }
      close(fd);
      if (rc < 0) return -1;
      if (why != logged) tcp_log_drop(m, peer, why);
      logged = why;
    }
    if (clock_mono_s() + 0.1 >= deadline) {
      char name[400];
      cluster_tcp_peer_name(m, peer, name, sizeof name);
      if (fd >= 0 || why) {
        snprintf(err, err_bytes, "TF_CONFIG: no authenticated link to %s within %.0f s: the process "
                 "at its address %s", name, m->timeout_s, why ? why : "did not answer");
      } else {
        snprintf(err, err_bytes, "TF_CONFIG: could not reach %s within %.0f s: %s", name,
                 m->timeout_s, strerror(e));
      }
      return -1;
    }
    struct timespec ts = {0, fd >= 0 ? 300000000L : 100000000L};
    nanosleep(&ts, NULL);
  }
}

/* Whether hello names a task that may connect to us and has not yet:
 * its task, or -1 (not one of ours). */
static int tcp_hello_task(const cluster_tcp *m, const tcp_hello *hello) {
  const int from = hello->from < (uint32_t)m->tf->ntasks ? (int)hello->from : -1;
  if ((int)hello->to != m->tf->self || from <= m->tf->self || !tcp_linked(m->tf, from, m->tf->self) ||
      m->fd[from] >= 0) {
    return -1;
  }
  return from;
}

/* Tells a task whose cluster list differs why it is turned away, so it
 * fails at once with the reason instead of timing out. */
static void tcp_reject(cluster_tcp *m, int fd) {
  char me[400], why[600];
  cluster_tcp_peer_name(m, m->tf->self, me, sizeof me);
  int n = snprintf(why, sizeof why, "%s has another cluster list: every task must get the same "
                   "TF_CONFIG \"cluster\"", me);
  tcp_header h = {TCP_MAGIC, CLUSTER_TCP_REJECT, (uint64_t)n};
  const double until = clock_mono_s() + 1.0;
  if (cluster_tcp_io_all(fd, &h, sizeof h, 1, until) == 0) cluster_tcp_io_all(fd, why, (size_t)n, 1, until);
}

/* A lower task's answer on a link we opened, while we still accept: a
 * REJECT (-1, err set) or a closed link (-1); anything else is its first
 * collective, left unread (0; *quiet stops our looking at it). */
static int tcp_check_answer(cluster_tcp *m, int peer, int *quiet, char *err, size_t err_bytes) {
  tcp_header h;
  char name[400], why[TCP_NOTE_MAX + 1];
  cluster_tcp_peer_name(m, peer, name, sizeof name);
  ssize_t k = recv(m->fd[peer], &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
  if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
    snprintf(err, err_bytes, "TF_CONFIG: %s closed its connection during start-up", name);
    return -1;
  }
  if (k < (ssize_t)sizeof h) return 0;
  if (h.magic != TCP_MAGIC || h.type != CLUSTER_TCP_REJECT || h.bytes > TCP_NOTE_MAX) {
    *quiet = 1;
    return 0;
  }
  const double until = clock_mono_s() + 1.0;
  if (cluster_tcp_io_all(m->fd[peer], &h, sizeof h, 0, until) != 0 ||
      cluster_tcp_io_all(m->fd[peer], why, (size_t)h.bytes, 0, until) != 0) {
    snprintf(err, err_bytes, "TF_CONFIG: %s turned this task away", name);
    return -1;
  }
  why[h.bytes] = '\0';
  snprintf(err, err_bytes, "TF_CONFIG: turned away: %s", why);
  return -1;
}

/* An accepted connection whose hello is still coming. Hellos are read side
 * by side: a stranger that connects and sends nothing (a port scan, a probe
 * holding its connection) must not hold up the peers queued behind it. */
#define TCP_PENDING 32
#define TCP_HELLO_S 5.0
#define TCP_DROPS_LOGGED 16
typedef struct {
  int fd;
  int challenged;       /* the hello came and our challenge went: the response is due */
  size_t got;
  double until;
  tcp_hello hello;
  tcp_challenge chal;
  unsigned char buf[sizeof(tcp_header) + sizeof(tcp_hello)]; /* a response is as long */
} tcp_pending;
_Static_assert(sizeof(tcp_hello) == sizeof(tcp_response), "hello and response frames alike");

static void tcp_pending_drop(tcp_pending *p, int *np, int i) {
  close(p[i].fd);
  p[i] = p[--*np];
}

/* Drops pending connection i, saying why on stderr (the first few drops:
 * a flood of strangers must not flood the log). */
static void tcp_pending_reject(cluster_tcp *m, tcp_pending *p, int *np, int i, const char *why) {
  if (m->drops_logged < TCP_DROPS_LOGGED) {
    char me[400];
    cluster_tcp_peer_name(m, m->tf->self, me, sizeof me);
    fprintf(stderr, "tfdist: TF_CONFIG: %s dropped a connection: %s%s\n", me, why,
            ++m->drops_logged == TCP_DROPS_LOGGED ? " (further drops are not logged)" : "");
  }
  tcp_pending_drop(p, np, i);
}

/* A whole hello in c: our challenge goes back. 0, or -1: dropped (why set). */
static int tcp_pending_challenge(cluster_tcp *m, tcp_pending *c, const char **why) {
  if (tcp_hello_task(m, &c->hello) < 0) {
    *why = "its hello names no task that may connect here now";
    return -1;
  }
  struct {
    tcp_header h;
    tcp_challenge c;
  } out = {{TCP_MAGIC, TCP_CHALLENGE, sizeof(tcp_challenge)}, {m->tf->fingerprint, {0}, {0}}};
  if (cluster_tcp_nonce(out.c.nonce, sizeof out.c.nonce) != 0) {
    *why = "getrandom failed";
    return -1;
  }
  cluster_tcp_auth_mac(m->tf, TCP_AUTH_ACCEPTOR, &c->hello, &out.c, out.c.mac);
  c->chal = out.c;
  if (cluster_tcp_io_all(c->fd, &out, sizeof out, 1, clock_mono_s() + 1.0) != 0) {
    *why = "closed during the hello";
    return -1;
  }
  c->challenged = 1;
  c->got = 0;
  return 0;
}

/* Reads what pending connection i has sent: 1 when it was a peer that
 * proved itself (taken), -1 on a config error (err set), else 0
 * (incomplete, or not ours and dropped). */
static int tcp_pending_read(cluster_tcp *m, tcp_pending *p, int *np, int i, char *err,
                            size_t err_bytes) {
  tcp_pending *c = &p[i];
  ssize_t k = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, 0);
  if (k < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  if (k <= 0) {
    tcp_pending_drop(p, np, i); /* gone: a port scan, or a peer that retried */
    return 0;
  }
  c->got += (size_t)k;
  const char *why = NULL;
  tcp_response r;
  int f = c->challenged ? cluster_tcp_frame_parse(c->buf, c->got, TCP_RESPONSE, &r, sizeof r)
                        : cluster_tcp_frame_parse(c->buf, c->got, TCP_HELLO, &c->hello, sizeof c->hello);
  if (f < 0) why = c->challenged ? "no response to the challenge" : "not a tfdist hello";
  if (f == 0) return 0;
  if (f > 0 && !c->challenged) {
    if (tcp_pending_challenge(m, c, &why) == 0) return 0;
  } else if (f > 0 && !cluster_tcp_auth_check(m->tf, TCP_AUTH_CONNECTOR, &c->hello, &c->chal, r.mac)) {
    why = "it failed authentication (not this job's secret, or a replayed hello)";
  }
  if (why) {
    tcp_pending_reject(m, p, np, i, why);
    return 0;
  }
  const int from = tcp_hello_task(m, &c->hello);
  if (from < 0) {
    tcp_pending_reject(m, p, np, i, "a second link from one task");
    return 0;
  }
  if (c->hello.fingerprint != m->tf->fingerprint) { /* a task of this job, with another list */
    snprintf(err, err_bytes,
             "TF_CONFIG: task %d connected with a different cluster list: every task must get "
             "the same \"cluster\"", from);
    tcp_reject(m, c->fd);
    tcp_pending_drop(p, np, i);
    return -1;
  }
  m->fd[from] = c->fd;
  p[i] = p[--*np];
  return 1;
}

/* Takes every connection waiting on the listening socket; with the table
 * full, the oldest pending one goes. */
static void tcp_pending_accept(cluster_tcp *m, tcp_pending *p, int *np) {
  for (;;) {
    int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    if (*np == TCP_PENDING) {
      int old = 0;
      for (int i = 1; i < *np; i++) old = p[i].until < p[old].until ? i : old;
      tcp_pending_drop(p, np, old);
    }
    p[(*np)++] = (tcp_pending){.fd = fd, .until = clock_mono_s() + TCP_HELLO_S};
  }
}

/* The links this task opened to lower tasks, into pf (watched for a
 * REJECT while we accept); their tasks in who. How many. */
static int tcp_watch_links(const cluster_tcp *m, const int *quiet, struct pollfd *pf, int *who) {
  int n = 0;
  for (int k = 0; k < m->tf->self; k++) {
    if (m->fd[k] < 0 || quiet[k]) continue;
    pf[n] = (struct pollfd){.fd = m->fd[k], .events = POLLIN};
    who[n++] = k;
  }
  return n;
}

static int tcp_accept_peers(cluster_tcp *m, double deadline, char *err, size_t err_bytes) {
  int want = 0, np = 0, rc = 0;
  tcp_pending pend[TCP_PENDING];
  const int nt = m->tf->ntasks;
  struct pollfd *pf = malloc((size_t)(TCP_PENDING + 1 + nt) * sizeof *pf);
  int *who = malloc((size_t)nt * sizeof *who), *quiet = calloc((size_t)nt, sizeof *quiet);
  if (!pf || !who || !quiet) {
    free(pf), free(who), free(quiet);
    snprintf(err, err_bytes, "TF_CONFIG: out of memory");
    return -1;
  }
  for (int k = m->tf->self + 1; k < nt; k++) want += tcp_linked(m->tf, k, m->tf->self);
  while (want > 0 && rc >= 0) {
    double now = clock_mono_s(), wait = deadline - now;
    if (wait <= 0) break;
    pf[0] = (struct pollfd){.fd = m->listen_fd, .events = POLLIN};
    for (int i = 0; i < np; i++) {
      pf[i + 1] = (struct pollfd){.fd = pend[i].fd, .events = POLLIN};
      if (pend[i].until - now < wait) wait = pend[i].until - now;
    }
    const int n = np, nl = tcp_watch_links(m, quiet, pf + 1 + n, who);
    if (poll(pf, (nfds_t)(n + 1 + nl), wait > 0 ? (int)(wait * 1000) + 1 : 0) < 0 &&
        errno != EINTR) {
      break;
    }
    for (int j = 0; j < nl && rc >= 0; j++) {
      if (pf[1 + n + j].revents) rc = tcp_check_answer(m, who[j], &quiet[who[j]], err, err_bytes);
    }
    /* From the last: a drop moves the last entry into the hole. */
    for (int i = n - 1; i >= 0 && rc >= 0; i--) {
      int got = 0;
      if (pf[i + 1].revents) got = tcp_pending_read(m, pend, &np, i, err, err_bytes);
      else if (clock_mono_s() >= pend[i].until) tcp_pending_drop(pend, &np, i);
      if (got > 0) want--;
      if (got < 0) rc = -1;
    }
    if (rc >= 0 && (pf[0].revents & POLLIN)) tcp_pending_accept(m, pend, &np);
  }
  while (np > 0) tcp_pending_drop(pend, &np, np - 1);
  free(pf), free(who), free(quiet);
  if (rc < 0) return -1;
  if (want == 0) return 0;
  char missing[600] = "";
  for (int k = m->tf->self + 1; k < m->tf->ntasks; k++) {
    if (!tcp_linked(m->tf, k, m->tf->self) || m->fd[k] >= 0) continue;
    char name[400];
    cluster_tcp_peer_name(m, k, name, sizeof name);
    size_t at = strlen(missing);
    snprintf(missing + at, sizeof missing - at, "%s%s", at ? "; " : "", name);
  }
  snprintf(err, err_bytes, "TF_CONFIG: no connection within %.0f s from %s", m->timeout_s, missing);
  return -1;
}

int cluster_tcp_open(cluster_tcp **out, const cluster_tf_config *tf, double timeout_s, char *err,
                  size_t err_bytes) {
  *out = NULL;
  cluster_tcp *m = calloc(1, sizeof *m);
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
  const double deadline = clock_mono_s() + m->timeout_s;
  /* A task no one connects to (a ps, the last worker) listens on nothing:
   * its port stays free, and a stranger who took it gains nothing. */
  int accepts = 0;
  for (int k = tf->self + 1; k < tf->ntasks; k++) accepts += tcp_linked(tf, k, tf->self);
  int rc = accepts ? tcp_listen(m, err, err_bytes) : 0;
  for (int k = 0; rc == 0 && k < tf->self; k++) {
    if (tcp_linked(tf, k, tf->self)) rc = tcp_connect_peer(m, k, deadline, err, err_bytes);
  }
  if (rc == 0) rc = tcp_accept_peers(m, deadline, err, err_bytes);
  if (rc != 0) {
    cluster_tcp_close(m);
    return -1;
  }
  if (m->listen_fd >= 0) close(m->listen_fd); /* every peer is in: the port is free again */
  m->listen_fd = -1;
  *out = m;
  return 0;
}

void cluster_tcp_close(cluster_tcp *m) {
  if (!m) return;
  for (int k = 0; k < m->tf->ntasks; k++) {
    if (m->fd[k] >= 0) close(m->fd[k]);
  }
  if (m->listen_fd >= 0) close(m->listen_fd);
  cluster_tcp_p2p_free(m);
  free(m->fd);
  free(m->torn);
  free(m);
}
