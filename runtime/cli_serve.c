/* `tfdist serve`: a scoring server for a saved or registered model. The main
 * thread accepts; a fixed pool of workers each serves one connection at a
 * time, with an inference session of the request's version. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/cli.h"
#include "runtime/options.h"
#include "runtime/serve.h"
#include "runtime/serve_http.h"

typedef struct {
  char model[OPT_STR_BYTES], registry[OPT_STR_BYTES], name[OPT_STR_BYTES], host[OPT_STR_BYTES];
  int64_t port, threads, max_body_mb;
  int access_log;
} serve_opts;

#define F(field) offsetof(serve_opts, field)
static const opt_spec serve_specs[] = {
  {"model", OPT_STRING, F(model), NULL, 0, 0, NULL,
   "model.h5, a checkpoint or a folder holding model.h5; else a registry NAME (every "
   "version) or NAME:VERSION (required)"},
  {"registry", OPT_STRING, F(registry), NULL, 0, 0, NULL,
   "registry root (else $TFDIST_REGISTRY, else ~/.tfdist/registry)"},
  {"name", OPT_STRING, F(name), "model", 0, 0, NULL, "model name in URLs when --model is a path"},
  {"host", OPT_STRING, F(host), "127.0.0.1", 0, 0, NULL, "address to listen on (0.0.0.0: all)"},
  {"port", OPT_INT, F(port), "8501", 0, 65535, NULL, "TCP port; 0 picks a free one"},
  {"threads", OPT_INT, F(threads), "4", 1, 256, NULL, "requests served at once"},
  {"max-body-mb", OPT_INT, F(max_body_mb), "64", 1, 4096, NULL, "largest request body"},
  {"access-log", OPT_BOOL, F(access_log), "on", 0, 0, NULL, "one line per request on stderr"},
};
#undef F
static const opt_table serve_options = {
    serve_specs, (int)(sizeof serve_specs / sizeof serve_specs[0]), "serve"};

static const char serve_usage[] =
    "usage: tfdist serve --model PATH|NAME[:VERSION] [--port N] [--host ADDR] [--threads N]\n"
    "  GET /  POST /score {\"data\": [[784 numbers], ...]} -> [classes]\n"
    "  POST /v1/models/NAME[/versions/N]:predict {\"instances\": [...]} -> {\"predictions\": ...}\n"
    "  GET /v1/models/NAME[/versions/N][/metadata]   (TF Serving REST)";

#define SERVE_IO_TIMEOUT_S 30

static volatile sig_atomic_t serve_stop;

static void serve_on_signal(int sig) {
  (void)sig;
  serve_stop = 1;
}

/* Accepted connections waiting for a worker. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t ready;
  int *fds;
  int cap, head, count, closing;
  serve_models *models;
  size_t max_body;
  int access_log;
} serve_pool;

static int serve_pool_push(serve_pool *p, int fd) {
  pthread_mutex_lock(&p->lock);
  int ok = p->count < p->cap;
  if (ok) {
    p->fds[(p->head + p->count++) % p->cap] = fd;
    pthread_cond_signal(&p->ready);
  }
  pthread_mutex_unlock(&p->lock);
  return ok;
}

/* The next connection, or -1 once closing and drained. */
static int serve_pool_pop(serve_pool *p) {
  pthread_mutex_lock(&p->lock);
  while (p->count == 0 && !p->closing) pthread_cond_wait(&p->ready, &p->lock);
  int fd = -1;
  if (p->count > 0) {
    fd = p->fds[p->head];
    p->head = (p->head + 1) % p->cap;
    p->count--;
  }
  pthread_mutex_unlock(&p->lock);
  return fd;
}

static int serve_pool_waiting(serve_pool *p) {
  pthread_mutex_lock(&p->lock);
  int n = p->count;
  pthread_mutex_unlock(&p->lock);
  return n;
}

static double serve_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void serve_log(const serve_pool *p, const char *method, const char *path, int status,
                      size_t bytes, double t0) {
  if (!p->access_log) return;
  fprintf(stderr, "tfdist serve: \"%s %.300s\" %d %zu bytes %.2f ms\n", method, path, status,
          bytes, serve_now_ms() - t0);
}

/* A framing error: its status and message, and the connection closes. */
static void serve_conn_bad(serve_pool *p, http_conn *c, int status, const char *msg) {
  serve_reply rep;
  serve_reply_error(&rep, status, msg);
  if (http_response_send(c, status, rep.content_type, NULL, rep.body, rep.len, 0, 0) == 0) {
    http_conn_linger(c);
  }
  serve_log(p, "-", "-", status, rep.len, serve_now_ms());
  serve_reply_free(&rep);
}

/* Requests off one connection until it closes. Once others wait for a
 * worker, or the server stops, the answer closes it, so no client can keep a
 * worker to itself. */
static void serve_conn(serve_pool *p, int fd) {
  http_conn c;
  http_conn_init(&c, fd, &serve_stop);
  for (;;) {
    http_request r;
    int status = 0;
    char err[512];
    http_read_result res = http_request_read(&c, &r, p->max_body, &status, err, sizeof err);
    if (res == HTTP_READ_CLOSED) break;
    if (res == HTTP_READ_BAD) {
      serve_conn_bad(p, &c, status, err);
      break;
    }
    double t0 = serve_now_ms();
    serve_reply rep;
    serve_handle(p->models, r.method, r.path, r.body, r.body_len, &rep);
    int keep = r.keep_alive && !serve_stop && serve_pool_waiting(p) == 0;
    char extra[64] = "";
    if (rep.allow) snprintf(extra, sizeof extra, "Allow: %s\r\n", rep.allow);
    int sent = http_response_send(&c, rep.status, rep.content_type, extra, rep.body, rep.len,
                                  keep, r.head_only);
    serve_log(p, r.method, r.path, rep.status, rep.len, t0);
    serve_reply_free(&rep);
    http_request_done(&c, &r);
    if (sent != 0 || !keep) break;
  }
  http_conn_free(&c);
  close(fd);
}

static void *serve_worker(void *arg) {
  serve_pool *p = arg;
  int fd;
  while ((fd = serve_pool_pop(p)) >= 0) serve_conn(p, fd);
  return NULL;
}

/* A listening socket on host:port; the bound port in *bound. Exit code in
 * *code on failure: 2 for a bad --host, 1 for a port we cannot have. */
static int serve_listen(const serve_opts *o, int *bound, int *code, char *err, size_t eb) {
  char port[16];
  snprintf(port, sizeof port, "%lld", (long long)o->port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  int g = getaddrinfo(o->host, port, &hints, &ai);
  if (g != 0) {
    snprintf(err, eb, "--host '%s': %s", o->host, gai_strerror(g));
    *code = CLI_USAGE;
    return -1;
  }
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol), one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
    snprintf(err, eb, "--port %lld: cannot listen on %s:%lld: %s", (long long)o->port, o->host,
             (long long)o->port, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    *code = CLI_FAIL;
    return -1;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  *bound = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                          : ((struct sockaddr_in *)&sa)->sin_port);
  return fd;
}

/* Too many connections waiting: answered at once, never left hanging. */
static void serve_refuse(int fd) {
  static const char busy[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: 57\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
      "{\"error\":\"server busy: every worker and queue slot taken\"}";
  ssize_t ignored = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)ignored;
  close(fd);
}

static void serve_accept_loop(int lfd, serve_pool *p) {
  struct timeval tv = {SERVE_IO_TIMEOUT_S, 0};
  int one = 1;
  while (!serve_stop) {
    struct pollfd pf = {.fd = lfd, .events = POLLIN};
    if (poll(&pf, 1, 200) <= 0) continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!serve_pool_push(p, fd)) serve_refuse(fd);
  }
}

static void serve_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = serve_on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* Workers up, accept until a signal, then drain: requests in flight finish. */
static int serve_run(serve_models *m, const serve_opts *o, int lfd, char *err, size_t eb) {
  int n = (int)o->threads;
  serve_pool p = {.cap = 4 * n, .models = m, .max_body = (size_t)o->max_body_mb << 20,
                  .access_log = o->access_log};
  pthread_t *tid = calloc((size_t)n, sizeof *tid);
  p.fds = calloc((size_t)p.cap, sizeof *p.fds);
  if (!tid || !p.fds) {
    free(tid);
    free(p.fds);
    snprintf(err, eb, "out of memory");
    return -1;
  }
  pthread_mutex_init(&p.lock, NULL);
  pthread_cond_init(&p.ready, NULL);
  int started = 0;
  while (started < n && pthread_create(&tid[started], NULL, serve_worker, &p) == 0) started++;
  if (started == n) serve_accept_loop(lfd, &p);
  else snprintf(err, eb, "--threads %d: could only start %d threads", n, started);
  close(lfd);
  pthread_mutex_lock(&p.lock);
  p.closing = 1;
  pthread_cond_broadcast(&p.ready);
  pthread_mutex_unlock(&p.lock);
  for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
  pthread_cond_destroy(&p.ready);
  pthread_mutex_destroy(&p.lock);
  free(tid);
  free(p.fds);
  return started == n ? 0 : -1;
}

int cli_serve(int argc, char **argv) {
  static serve_opts o;
  static serve_models m;
  char err[4600] = "", versions[512];
  if (opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&serve_options, serve_usage, stdout);
    return CLI_OK;
  }
  if (opt_defaults(&serve_options, &o, err, sizeof err) != 0 ||
      opt_apply_argv(&serve_options, &o, argc - 1, argv + 1, NULL, 0, NULL, err, sizeof err)) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  if (!o.model[0]) {
    fprintf(stderr, "tfdist: error: --model: required (a model.h5, a folder, or NAME[:VERSION] "
                    "in the registry)\n");
    return CLI_USAGE;
  }
  if (serve_models_open(&m, o.model, o.registry, o.name, (int)o.threads, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  int port = 0, code = CLI_FAIL;
  int lfd = serve_listen(&o, &port, &code, err, sizeof err);
  if (lfd < 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    serve_models_close(&m);
    return code;
  }
  serve_signals();
  serve_models_describe(&m, versions, sizeof versions);
  printf("serving %s versions %s (default %lld) at http://%s:%d\n", m.name, versions,
         m.default_version, o.host, port);
  fflush(stdout);
  int rc = serve_run(&m, &o, lfd, err, sizeof err);
  if (rc != 0) fprintf(stderr, "tfdist: error: %s\n", err);
  else fprintf(stderr, "tfdist serve: stopped\n");
  serve_models_close(&m);
  return rc == 0 ? CLI_OK : CLI_FAIL;
}
