/* The connection loop of `tfdist serve` over libmicrohttpd (serve_loop.h). */
#include "serve/serve_loop.h"

#include <errno.h>
#include <malloc.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

#define LOOP_TICK_MS 50
/* After SIGTERM, requests already begun get this long to finish: a client
 * sending a byte now and then would otherwise keep the server up for ever. */
#define LOOP_STOP_GRACE_MS 5000.0
#define LOOP_TRIM_BYTES (1u << 20) /* after a body this big, freed memory goes back to the OS */

/* One connection, for the deadlines MHD does not keep (its timeout is for
 * silence only: a byte every few seconds would renew it for ever). */
typedef struct loop_conn {
  int fd;
  double deadline; /* ms, clock_mono: shut down then */
  int in_request;  /* its head has come and it is not answered yet */
  struct loop_conn *prev, *next;
} loop_conn;

struct serve_loop {
  const serve_loop_config *cfg;
  struct MHD_Daemon *daemon;
  pthread_mutex_t lock; /* everything below */
  loop_conn conns;      /* list of open connections */
  size_t buffered;      /* bytes reserved by bodies being received */
  int active;           /* requests between head and answer */
  int stopping;
  int started;          /* MHD's messages are kept only before (atomic) */
  char mhd_err[512];    /* MHD's last message, for a failed start */
};

/* One request, MHD's *con_cls. */
typedef struct {
  loop_conn *conn;
  char *body;        /* malloc'd up to SERVE_SMALL_BODY_BYTES, else mmap'd */
  size_t len, cap;
  size_t reserved;   /* of serve_loop.buffered */
  int mapped, counted;
  int fail_status;   /* found while the body came: answered at its end */
  const char *fail_msg;
  double t0;
} loop_req;

static double loop_now_ms(void) { return 1e3 * clock_mono_s(); }

static int loop_stopping(const serve_loop *l) {
  return __atomic_load_n(l->cfg->stop, __ATOMIC_RELAXED) != 0;
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
          loop_now_ms() - t0);
}

static void loop_mhd_log(void *cls, const char *fmt, va_list ap) {
  serve_loop *l = cls;
  if (__atomic_load_n(&l->started, __ATOMIC_ACQUIRE)) return;
  vsnprintf(l->mhd_err, sizeof l->mhd_err, fmt, ap);
  l->mhd_err[strcspn(l->mhd_err, "\r\n")] = '\0';
}

/* Against the global cap: a body over SERVE_SMALL_BODY_BYTES may not take
 * the last 1/8, so one client's big bodies cannot shut out everyone's small
 * ones. 0 when reserved. */
static int loop_reserve(serve_loop *l, loop_req *r, size_t bytes) {
  size_t cap = l->cfg->max_buffered;
  size_t limit = r->reserved + bytes > SERVE_SMALL_BODY_BYTES ? cap - cap / 8 : cap;
  pthread_mutex_lock(&l->lock);
  int ok = l->buffered <= limit && bytes <= limit - l->buffered;
  if (ok) l->buffered += bytes;
  pthread_mutex_unlock(&l->lock);
  if (ok) r->reserved += bytes;
  return ok ? 0 : -1;
}

static void loop_body_free(serve_loop *l, loop_req *r) {
  if (r->mapped) munmap(r->body, r->cap);
  else free(r->body);
  if (r->len >= LOOP_TRIM_BYTES) malloc_trim(0);
  r->body = NULL;
  r->len = r->cap = 0;
  r->mapped = 0;
  pthread_mutex_lock(&l->lock);
  l->buffered -= r->reserved;
  pthread_mutex_unlock(&l->lock);
  r->reserved = 0;
}

/* Room for need bytes. Big bodies are mapped on their own, so their memory
 * goes back to the OS when they are freed (malloc would keep it). */
static int loop_body_room(loop_req *r, size_t need) {
  if (need <= r->cap) return 0;
  size_t cap = r->cap * 2 > need ? r->cap * 2 : need;
  if (r->reserved + 1 > cap) cap = r->reserved + 1; /* a Content-Length: all of it at once */
  if (cap <= SERVE_SMALL_BODY_BYTES) {
    char *grown = realloc(r->body, cap);
    if (!grown) return -1;
    r->body = grown;
  } else if (r->mapped) {
    void *grown = mremap(r->body, r->cap, cap, MREMAP_MAYMOVE);
    if (grown == MAP_FAILED) return -1;
    r->body = grown;
  } else {
    void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    if (r->len) memcpy(p, r->body, r->len);
    free(r->body);
    r->body = p;
    r->mapped = 1;
  }
  r->cap = cap;
  return 0;
}

/* Queues status with body (malloc'd, taken) and the extra headers. */
static enum MHD_Result loop_queue(serve_loop *l, struct MHD_Connection *mc, loop_req *r,
                                  const char *method, const char *path, serve_reply *rep,
                                  const char *const *extra) {
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(rep->len, rep->body ? rep->body : (char *)"",
                                      rep->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!resp) {
    serve_reply_free(rep);
    return MHD_NO;
  }
  rep->body = NULL; /* the response owns it now */
  if (rep->content_type) MHD_add_response_header(resp, "Content-Type", rep->content_type);
  if (rep->allow) MHD_add_response_header(resp, "Allow", rep->allow);
  for (int i = 0; extra && extra[i]; i += 2) MHD_add_response_header(resp, extra[i], extra[i + 1]);
  if (loop_stopping(l)) MHD_add_response_header(resp, "Connection", "close");
  enum MHD_Result ok = MHD_queue_response(mc, (unsigned)rep->status, resp);
  MHD_destroy_response(resp);
  loop_log(l, method, path, rep->status, rep->len, r->t0);
  serve_reply_free(rep);
  return ok;
}

static enum MHD_Result loop_error(serve_loop *l, struct MHD_Connection *mc, loop_req *r,
                                  const char *method, const char *path, int status,
                                  const char *msg, const char *const *extra) {
  serve_reply rep;
  serve_reply_error(&rep, status, msg);
  return loop_queue(l, mc, r, method, path, &rep, extra);
}

typedef struct {
  int hosts, chunked, other_coding;
} loop_head;

static enum MHD_Result loop_head_scan(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value) {
  loop_head *h = cls;
  (void)kind;
  if (!strcasecmp(key, "Host")) h->hosts++;
  if (!strcasecmp(key, "Transfer-Encoding")) {
    if (value && !strcasecmp(value, "chunked")) h->chunked = 1;
    else h->other_coding = 1;
  }
  return MHD_YES;
}

/* The path an absolute-form target (http://host/path) names; else url. */
static const char *loop_path(const char *url) {
  const char *s = strstr(url, "://");
  if (url[0] == '/' || !s || (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))) {
    return url;
  }
  const char *p = strchr(s + 3, '/');
  return p ? p : "/";
}

/* The checks a request's head must pass before its body is read. 0, or the
 * status to answer with *msg (and *extra headers). */
static int loop_head_check(serve_loop *l, struct MHD_Connection *mc, loop_req *r,
                           const char *method, const char *path, const char *version,
                           const char **msg, const char *const **extra) {
  static const char *const auth_hdr[] = {"WWW-Authenticate", "Bearer realm=\"tfdist serve\"",
                                         NULL};
  static const char *const busy_hdr[] = {"Retry-After", "1", NULL};
  loop_head h = {0};
  MHD_get_connection_values(mc, MHD_HEADER_KIND, loop_head_scan, &h);
  if (h.hosts > 1 || (h.hosts == 0 && !strcmp(version, MHD_HTTP_VERSION_1_1))) {
    *msg = "HTTP/1.1 needs exactly one Host header";
    return 400;
  }
  if (h.other_coding) {
    *msg = "Transfer-Encoding: only chunked is understood";
    return 501;
  }
  int liveness = !strcmp(path, "/") && (!strcmp(method, "GET") || !strcmp(method, "HEAD"));
  if (l->cfg->keys && !liveness &&
      !serve_keys_check(l->cfg->keys, MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                                  "Authorization"))) {
    *msg = "a valid key is needed: Authorization: Bearer <key>";
    *extra = auth_hdr;
    return 401;
  }
  const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
  if (cl && !h.chunked) {
    unsigned long long n = strtoull(cl, NULL, 10); /* MHD has checked its digits */
    if (n > l->cfg->max_body) {
      *msg = "body larger than --max-body-mb";
      return 413;
    }
    if (n > 0 && loop_reserve(l, r, (size_t)n) != 0) {
      *msg = "server busy: too many request bodies being received (--max-buffered-mb)";
      *extra = busy_hdr;
      return 503;
    }
  }
  return 0;
}

/* Body bytes as they come. -1: close the connection (a chunked body past the
 * global cap, or no memory). */
static int loop_body_add(serve_loop *l, loop_req *r, const char *data, size_t n) {
  if (r->fail_status) return 0; /* dropped: the error is answered at the end */
  if (r->len + n > l->cfg->max_body) {
    r->fail_status = 413;
    r->fail_msg = "body larger than --max-body-mb";
    return 0;
  }
  if (r->len + n > r->reserved && loop_reserve(l, r, r->len + n - r->reserved) != 0) return -1;
  if (loop_body_room(r, r->len + n + 1) != 0) return -1;
  memcpy(r->body + r->len, data, n);
  r->len += n;
  return 0;
}

static enum MHD_Result loop_access(void *cls, struct MHD_Connection *mc, const char *url,
                                   const char *method, const char *version,
                                   const char *upload, size_t *upload_bytes, void **con_cls) {
  serve_loop *l = cls;
  loop_req *r = *con_cls;
  const char *path = loop_path(url);
  if (!r) { /* the head is here */
    if (!(r = calloc(1, sizeof *r))) return MHD_NO;
    *con_cls = r;
    r->t0 = loop_now_ms();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->conn = ci ? ci->socket_context : NULL;
    pthread_mutex_lock(&l->lock);
    l->active++;
    r->counted = 1;
    if (r->conn) {
      r->conn->in_request = 1;
      r->conn->deadline = r->t0 + l->cfg->body_timeout_ms;
    }
    pthread_mutex_unlock(&l->lock);
    const char *msg = NULL;
    const char *const *extra = NULL;
    int st = loop_head_check(l, mc, r, method, path, version, &msg, &extra);
    if (st) return loop_error(l, mc, r, method, path, st, msg, extra);
    return MHD_YES; /* MHD sends 100 Continue when asked */
  }
  if (*upload_bytes) {
    int rc = loop_body_add(l, r, upload, *upload_bytes);
    *upload_bytes = 0;
    return rc == 0 ? MHD_YES : MHD_NO;
  }
  if (r->fail_status) return loop_error(l, mc, r, method, path, r->fail_status, r->fail_msg, NULL);
  serve_reply rep;
  serve_handle(l->cfg->models, method, path, r->body ? r->body : "", r->len, &rep);
  loop_body_free(l, r);
  return loop_queue(l, mc, r, method, path, &rep, NULL);
}

static void loop_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                           enum MHD_RequestTerminationCode toe) {
  serve_loop *l = cls;
  loop_req *r = *con_cls;
  (void)mc, (void)toe;
  if (!r) return;
  loop_body_free(l, r);
  pthread_mutex_lock(&l->lock);
  l->active -= r->counted;
  if (r->conn) {
    r->conn->in_request = 0;
    r->conn->deadline = loop_now_ms() + l->cfg->head_timeout_ms;
  }
  pthread_mutex_unlock(&l->lock);
  free(r);
  *con_cls = NULL;
}

static void loop_notify(void *cls, struct MHD_Connection *mc, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe) {
  serve_loop *l = cls;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    loop_conn *c = calloc(1, sizeof *c);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    *socket_context = c;
    if (!c) return;
    c->fd = ci ? ci->connect_fd : -1;
    pthread_mutex_lock(&l->lock);
    c->deadline = loop_now_ms() + l->cfg->head_timeout_ms;
    c->next = l->conns.next;
    c->prev = &l->conns;
    l->conns.next->prev = c;
    l->conns.next = c;
    pthread_mutex_unlock(&l->lock);
  } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
    loop_conn *c = *socket_context;
    pthread_mutex_lock(&l->lock); /* before MHD closes the fd: the sweep cannot reach a reused one */
    c->prev->next = c->next;
    c->next->prev = c->prev;
    pthread_mutex_unlock(&l->lock);
    free(c);
    *socket_context = NULL;
  }
}

/* Past its deadline, a connection is shut down; MHD then sees the end and
 * closes it. Returns the requests in flight. */
static int loop_sweep(serve_loop *l) {
  double now = loop_now_ms();
  pthread_mutex_lock(&l->lock);
  for (loop_conn *c = l->conns.next; c != &l->conns; c = c->next) {
    if (c->fd >= 0 && now >= c->deadline) {
      shutdown(c->fd, SHUT_RDWR);
      c->deadline = now + 1e9; /* once */
    }
  }
  int active = l->active;
  pthread_mutex_unlock(&l->lock);
  return active;
}

/* The raw path: a %2F or %3A in it is not a separator. */
static size_t loop_unescape(void *cls, struct MHD_Connection *mc, char *s) {
  (void)cls, (void)mc;
  return strlen(s);
}

/* File descriptors bound the connections: leave some for the process. */
static unsigned loop_max_conns(int threads) {
  struct rlimit r;
  long n = getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY ? (long)r.rlim_cur : 1024;
  n -= 32 + 2L * threads;
  return n < 16 ? 16 : n > 16384 ? 16384 : (unsigned)n;
}

static struct MHD_Daemon *loop_start(serve_loop *l, int lfd) {
  const serve_loop_config *cfg = l->cfg;
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
  if (cfg->tls_cert_pem) flags |= MHD_USE_TLS;
  struct MHD_OptionItem tls[] = {
      {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert_pem},
      {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key_pem},
      {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
      {MHD_OPTION_END, 0, NULL}};
  struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
  return MHD_start_daemon(
      flags, 0, NULL, NULL, loop_access, l,
      MHD_OPTION_LISTEN_SOCKET, lfd,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->threads > 1 ? cfg->threads : 0),
      MHD_OPTION_CONNECTION_LIMIT, loop_max_conns(cfg->threads),
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->per_ip_conns,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_timeout_s,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SERVE_CONN_MEMORY_BYTES,
      MHD_OPTION_STRICT_FOR_CLIENT, 1,
      MHD_OPTION_NOTIFY_COMPLETED, loop_completed, l,
      MHD_OPTION_NOTIFY_CONNECTION, loop_notify, l,
      MHD_OPTION_UNESCAPE_CALLBACK, loop_unescape, l,
      MHD_OPTION_EXTERNAL_LOGGER, loop_mhd_log, l,
      MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1,
      MHD_OPTION_ARRAY, cfg->tls_cert_pem ? tls : none,
      MHD_OPTION_END);
}

static void loop_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

serve_loop *serve_loop_start(const serve_loop_config *cfg, int lfd, char *err, size_t eb) {
  serve_loop *l = calloc(1, sizeof *l);
  if (!l) {
    snprintf(err, eb, "out of memory");
    close(lfd);
    return NULL;
  }
  l->cfg = cfg;
  l->conns.next = l->conns.prev = &l->conns;
  pthread_mutex_init(&l->lock, NULL);
  if (!(l->daemon = loop_start(l, lfd))) {
    snprintf(err, eb, "serve: could not start the HTTP%s server: %s", cfg->tls_cert_pem ? "S" : "",
             l->mhd_err[0] ? l->mhd_err : "libmicrohttpd gave no reason");
    close(lfd);
    pthread_mutex_destroy(&l->lock);
    free(l);
    return NULL;
  }
  __atomic_store_n(&l->started, 1, __ATOMIC_RELEASE);
  return l;
}

void serve_loop_wait(serve_loop *l) {
  while (!loop_stopping(l)) {
    loop_sweep(l);
    loop_sleep_ms(LOOP_TICK_MS);
  }
  pthread_mutex_lock(&l->lock);
  l->stopping = 1;
  pthread_mutex_unlock(&l->lock);
  int listen_fd = MHD_quiesce_daemon(l->daemon); /* accepts no more */
  if (listen_fd >= 0) close(listen_fd);
  double until = loop_now_ms() + LOOP_STOP_GRACE_MS;
  while (loop_sweep(l) > 0 && loop_now_ms() < until) loop_sleep_ms(LOOP_TICK_MS);
  MHD_stop_daemon(l->daemon); /* closes the idle and the late */
  pthread_mutex_destroy(&l->lock);
  free(l);
}
