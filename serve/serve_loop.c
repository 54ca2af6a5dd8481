/* The connection loop of `tfdist serve`: epoll, a ready queue, workers. */
#include "serve/serve_loop.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "serve/serve_http.h"

#define LOOP_TICK_MS 100
#define LOOP_NEXT_WAIT_MS 1
#define LOOP_TRIM_BYTES (1u << 20) /* after a body this big, memory goes back to the OS */
/* After SIGTERM, a request still arriving (or answers a client is slow to
 * read) gets this long: a client sending a byte now and then would otherwise
 * keep the server up for ever. */
#define LOOP_STOP_GRACE_MS 5000.0
/* After a framing error the request's rest may still be coming: read and
 * dropped for up to this long (and this much), so the client reads our answer
 * instead of a reset. By the epoll thread: a worker would be held. */
#define LOOP_LINGER_MS 2000.0
#define LOOP_LINGER_BYTES (160u << 10)

typedef struct loop_conn {
  http_conn http;
  double deadline;   /* while parked: closed then */
  double head_since; /* when the head now arriving began; 0 when none is */
  int parked;
  int lingering;   /* answered a framing error; its bytes are dropped until it closes */
  size_t drained;  /* bytes dropped while lingering */
  struct loop_conn *prev, *next;
} loop_conn;

typedef struct {
  const serve_loop_config *cfg;
  int ep, max_conns;
  pthread_mutex_t lock; /* everything below */
  pthread_cond_t ready_cv;
  loop_conn parked;     /* list of connections waiting for bytes */
  loop_conn **ready;    /* ring of connections with bytes, for workers */
  int ready_head, ready_count, conns, closing;
  double stop_ms; /* when the epoll thread saw the stop flag; 0 before */
} serve_loop;

/* The flag a signal handler sets, read by every thread: atomically. */
static int loop_stopping(const serve_loop *l) {
  return __atomic_load_n(l->cfg->stop, __ATOMIC_RELAXED) != 0;
}

static void loop_unlist(loop_conn *c) {
  c->prev->next = c->next;
  c->next->prev = c->prev;
  c->parked = 0;
}

/* Waits for c's next bytes (EPOLLIN) or for room to answer (EPOLLOUT):
 * listed with its deadline, then armed (in that order, under the lock, so the
 * event cannot find it unlisted). Not listed when it fails: the caller closes
 * c. */
static int loop_park(serve_loop *l, loop_conn *c, int add, uint32_t events) {
  struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.ptr = c};
  if (events & EPOLLIN) ev.events |= EPOLLRDHUP; /* not with EPOLLOUT: a half-close would spin */
  http_conn_trim(&c->http);
  pthread_mutex_lock(&l->lock);
  double now = 1e3 * clock_mono_s();
  c->deadline = now + (c->lingering ? LOOP_LINGER_MS
                       : events & EPOLLOUT ? HTTP_IO_TIMEOUT_S * 1000.0
                       : c->http.len ? HTTP_STALL_MS : HTTP_IDLE_MS);
  /* A head trickling in a byte at a time renews the stall deadline for
   * ever: the whole head gets a fixed time from its first byte. */
  int in_head = !c->lingering && (events & EPOLLIN) && http_conn_in_head(&c->http);
  if (!in_head) c->head_since = 0;
  else if (c->head_since == 0) c->head_since = now;
  if (in_head && c->head_since + l->cfg->head_timeout_ms < c->deadline) {
    c->deadline = c->head_since + l->cfg->head_timeout_ms;
  }
  c->parked = 1;
  c->next = l->parked.next;
  c->prev = &l->parked;
  l->parked.next->prev = c;
  l->parked.next = c;
  int rc = epoll_ctl(l->ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->http.fd, &ev);
  if (rc != 0) loop_unlist(c);
  pthread_mutex_unlock(&l->lock);
  return rc;
}

static void loop_close(serve_loop *l, loop_conn *c) {
  epoll_ctl(l->ep, EPOLL_CTL_DEL, c->http.fd, NULL);
  close(c->http.fd);
  http_conn_free(&c->http);
  free(c);
  pthread_mutex_lock(&l->lock);
  l->conns--;
  pthread_mutex_unlock(&l->lock);
}

/* A client's bytes as the log shows them: printable ASCII as is, the rest
 * (control bytes, quotes, backslashes, non-ASCII) as \xNN, so a request
 * cannot forge log lines or drive the terminal. At most max input bytes. */
static void loop_log_escape(const char *in, size_t max, char *out, size_t out_bytes) {
  size_t o = 0;
  for (size_t i = 0; in[i] && i < max && o + 5 < out_bytes; i++) {
    unsigned char ch = (unsigned char)in[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') out[o++] = (char)ch;
    else o += (size_t)snprintf(out + o, out_bytes - o, "\\x%02x", ch);
  }
  out[o] = '\0';
}

static void loop_log(const serve_loop *l, const char *method, const char *path, int status,
                     size_t bytes, double t0) {
  if (!l->cfg->access_log) return;
  char m[80], p[1300];
  loop_log_escape(method, 16, m, sizeof m);
  loop_log_escape(path, 300, p, sizeof p);
  fprintf(stderr, "tfdist serve: \"%s %s\" %d %zu bytes %.2f ms\n", m, p, status, bytes,
          1e3 * clock_mono_s() - t0);
}

/* A framing error: its status and message, then the connection closes
 * after lingering. 0 when c is to linger. */
static int loop_reply_bad(serve_loop *l, loop_conn *c, int status, const char *msg) {
  serve_reply rep;
  serve_reply_error(&rep, status, msg);
  int rc = http_response_send(&c->http, status, rep.content_type, NULL, rep.body, rep.len, 0, 0);
  loop_log(l, "-", "-", status, rep.len, 1e3 * clock_mono_s());
  serve_reply_free(&rep);
  if (rc != 0 || shutdown(c->http.fd, SHUT_WR) != 0) return -1;
  int fd = c->http.fd;
  http_conn_free(&c->http); /* nothing more is parsed */
  http_conn_init(&c->http, fd);
  c->lingering = 1;
  return 0;
}

/* Answers one whole request; 1 when the connection stays open. */
static int loop_answer(serve_loop *l, loop_conn *c, const http_request *r) {
  double t0 = 1e3 * clock_mono_s();
  serve_reply rep;
  serve_handle(l->cfg->models, r->method, r->path, r->body, r->body_len, &rep);
  int keep = r->keep_alive && !loop_stopping(l);
  char extra[64] = "";
  if (rep.allow) snprintf(extra, sizeof extra, "Allow: %s\r\n", rep.allow);
  int sent = http_response_send(&c->http, rep.status, rep.content_type, extra, rep.body, rep.len,
                                keep, r->head_only);
  loop_log(l, r->method, r->path, rep.status, rep.len, t0);
  serve_reply_free(&rep);
  if (r->body_len >= LOOP_TRIM_BYTES) malloc_trim(0);
  return sent == 0 && keep;
}

/* A client in a request loop sends its next request a fraction of a
 * millisecond after our answer: a worker that has nothing queued waits that
 * long on the connection itself, saving two thread hand-offs. 1 when bytes
 * came. */
static int loop_wait_next(serve_loop *l, loop_conn *c) {
  pthread_mutex_lock(&l->lock);
  int idle = l->ready_count == 0 && !loop_stopping(l);
  pthread_mutex_unlock(&l->lock);
  struct pollfd p = {.fd = c->http.fd, .events = POLLIN};
  return idle && !c->http.eof && poll(&p, 1, LOOP_NEXT_WAIT_MS) > 0;
}

/* After an answer, when other connections wait: c goes to the back of the
 * queue, so a client sending requests back to back (pipelining) cannot keep
 * the worker from them. 1 when c was handed on. */
static int loop_requeue(serve_loop *l, loop_conn *c) {
  pthread_mutex_lock(&l->lock);
  int others = l->ready_count > 0;
  if (others) {
    l->ready[(l->ready_head + l->ready_count++) % l->max_conns] = c;
    pthread_cond_signal(&l->ready_cv);
  }
  pthread_mutex_unlock(&l->lock);
  return others;
}

/* 1 when a write to c would not block (or would fail at once). */
static int loop_writable(const loop_conn *c) {
  struct pollfd p = {.fd = c->http.fd, .events = POLLOUT};
  return poll(&p, 1, 0) != 0;
}

/* Every request that has fully arrived on c, then c goes back to wait. A
 * client that has not read our earlier answers (pipelining) waits for room
 * without a worker: answering would block the worker on its reads. */
static void loop_work(serve_loop *l, loop_conn *c) {
  for (;;) {
    http_request r;
    int status = 0;
    char err[512];
    http_read_result res = http_request_read(&c->http, &r, l->cfg->max_body, &status, err,
                                             sizeof err);
    if (res == HTTP_READ_MORE && loop_wait_next(l, c)) continue;
    if (res == HTTP_READ_MORE || (res == HTTP_READ_OK && !loop_writable(c))) {
      if (loop_park(l, c, 0, res == HTTP_READ_MORE ? EPOLLIN : EPOLLOUT) == 0) return;
      res = HTTP_READ_CLOSED;
    }
    if (res == HTTP_READ_BAD && loop_reply_bad(l, c, status, err) == 0 &&
        loop_park(l, c, 0, EPOLLIN) == 0) {
      return;
    }
    if (res != HTTP_READ_OK) break;
    int keep = loop_answer(l, c, &r);
    http_request_done(&c->http, &r);
    if (!keep) break;
    if (loop_requeue(l, c)) return;
  }
  loop_close(l, c);
}

static void *loop_worker(void *arg) {
  serve_loop *l = arg;
  for (;;) {
    pthread_mutex_lock(&l->lock);
    while (l->ready_count == 0 && !l->closing) pthread_cond_wait(&l->ready_cv, &l->lock);
    loop_conn *c = NULL;
    if (l->ready_count > 0) {
      c = l->ready[l->ready_head];
      l->ready_head = (l->ready_head + 1) % l->max_conns;
      l->ready_count--;
    }
    pthread_mutex_unlock(&l->lock);
    if (!c) return NULL;
    loop_work(l, c);
  }
}

/* Too many connections open: answered at once, never left hanging. */
static void loop_refuse(serve_loop *l, int fd) {
  static const char busy[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: 48\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
      "{\"error\":\"server busy: too many open connections\"}";
  ssize_t ignored = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)ignored;
  close(fd);
  loop_log(l, "-", "-", 503, 48, 1e3 * clock_mono_s());
}

static void loop_accept(serve_loop *l, int lfd) {
  struct timeval tv = {HTTP_IO_TIMEOUT_S, 0};
  int one = 1, fd;
  while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
    pthread_mutex_lock(&l->lock);
    int room = l->conns < l->max_conns;
    l->conns += room;
    pthread_mutex_unlock(&l->lock);
    loop_conn *c = room ? calloc(1, sizeof *c) : NULL;
    if (!c) {
      pthread_mutex_lock(&l->lock);
      l->conns -= room;
      pthread_mutex_unlock(&l->lock);
      loop_refuse(l, fd);
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    http_conn_init(&c->http, fd);
    if (loop_park(l, c, 1, EPOLLIN) != 0) loop_close(l, c);
  }
}

/* A lingering connection's bytes, dropped here: closed at the peer's end,
 * past LOOP_LINGER_BYTES, or by the sweep at its deadline. */
static void loop_drain(serve_loop *l, loop_conn *c) {
  char sink[16384];
  ssize_t n;
  while ((n = recv(c->http.fd, sink, sizeof sink, MSG_DONTWAIT)) > 0 &&
         (c->drained += (size_t)n) < LOOP_LINGER_BYTES) {
  }
  int again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
  pthread_mutex_lock(&l->lock);
  if (again && epoll_ctl(l->ep, EPOLL_CTL_MOD, c->http.fd, &ev) == 0) {
    pthread_mutex_unlock(&l->lock); /* still listed, its deadline unchanged */
    return;
  }
  loop_unlist(c);
  pthread_mutex_unlock(&l->lock);
  loop_close(l, c);
}

/* A parked connection has bytes (or was closed by the peer): to a worker.
 * The lock first: it orders what the worker that parked c wrote. */
static void loop_dispatch(serve_loop *l, loop_conn *c) {
  pthread_mutex_lock(&l->lock);
  if (c->lingering) {
    pthread_mutex_unlock(&l->lock);
    loop_drain(l, c);
    return;
  }
  if (c->parked) loop_unlist(c);
  l->ready[(l->ready_head + l->ready_count++) % l->max_conns] = c;
  pthread_cond_signal(&l->ready_cv);
  pthread_mutex_unlock(&l->lock);
}

/* Closes parked connections past their deadline, and, once stopping, every
 * idle one (a request begun may still finish, within the grace). 1 when none
 * is left open. */
static int loop_sweep(serve_loop *l, int stopping) {
  double now = 1e3 * clock_mono_s();
  int graced = stopping && now >= l->stop_ms + LOOP_STOP_GRACE_MS;
  loop_conn *done = NULL;
  pthread_mutex_lock(&l->lock);
  for (loop_conn *c = l->parked.next, *next; c != &l->parked; c = next) {
    next = c->next;
    if (now < c->deadline && !graced && !(stopping && c->http.len == 0)) continue;
    loop_unlist(c);
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->http.fd, NULL);
    c->next = done;
    done = c;
  }
  pthread_mutex_unlock(&l->lock);
  while (done) {
    loop_conn *next = done->next;
    loop_close(l, done);
    done = next;
  }
  pthread_mutex_lock(&l->lock);
  int empty = l->conns == 0;
  pthread_mutex_unlock(&l->lock);
  return empty;
}

static void loop_poll(serve_loop *l, int lfd) {
  struct epoll_event evs[64];
  for (;;) {
    int stopping = loop_stopping(l);
    if (stopping && lfd >= 0) {
      epoll_ctl(l->ep, EPOLL_CTL_DEL, lfd, NULL);
      close(lfd);
      lfd = -1;
      l->stop_ms = 1e3 * clock_mono_s();
    }
    if (loop_sweep(l, stopping) && stopping) return;
    int n = epoll_wait(l->ep, evs, 64, LOOP_TICK_MS);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr) loop_dispatch(l, evs[i].data.ptr);
      else loop_accept(l, lfd);
    }
  }
}

/* File descriptors bound the connections: leave some for the process. */
static int loop_max_conns(void) {
  struct rlimit r;
  long n = getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY ? (long)r.rlim_cur : 1024;
  n -= 64;
  return n < 16 ? 16 : n > 16384 ? 16384 : (int)n;
}

static int loop_init(serve_loop *l, const serve_loop_config *cfg, int lfd, char *err, size_t eb) {
  memset(l, 0, sizeof *l);
  l->cfg = cfg;
  l->max_conns = loop_max_conns();
  l->parked.next = l->parked.prev = &l->parked;
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->ready = calloc((size_t)l->max_conns, sizeof *l->ready);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (l->ep < 0 || !l->ready || epoll_ctl(l->ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
    snprintf(err, eb, "serve: epoll: %s", l->ready ? strerror(errno) : "out of memory");
    if (l->ep >= 0) close(l->ep);
    free(l->ready);
    return -1;
  }
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->ready_cv, NULL);
  return 0;
}

int serve_loop_run(const serve_loop_config *cfg, int lfd, char *err, size_t eb) {
  serve_loop l;
  pthread_t *tid = calloc((size_t)cfg->threads, sizeof *tid);
  if (!tid || loop_init(&l, cfg, lfd, err, eb) != 0) {
    if (!tid) snprintf(err, eb, "out of memory");
    free(tid);
    close(lfd);
    return -1;
  }
  int started = 0;
  while (started < cfg->threads && pthread_create(&tid[started], NULL, loop_worker, &l) == 0) {
    started++;
  }
  if (started == cfg->threads) {
    loop_poll(&l, lfd);
  } else {
    snprintf(err, eb, "--threads %d: could only start %d threads", cfg->threads, started);
    close(lfd);
  }
  pthread_mutex_lock(&l.lock);
  l.closing = 1;
  pthread_cond_broadcast(&l.ready_cv);
  pthread_mutex_unlock(&l.lock);
  for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
  if (started != cfg->threads) loop_sweep(&l, 1); /* nothing was accepted */
  pthread_cond_destroy(&l.ready_cv);
  pthread_mutex_destroy(&l.lock);
  close(l.ep);
  free(l.ready);
  free(tid);
  return started == cfg->threads ? 0 : -1;
}
