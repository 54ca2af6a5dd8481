/* `tfdist serve`: a scoring server for a saved or registered model. */
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "modelio/h5model.h"
#include "base/options.h"
#include "serve/serve.h"
#include "serve/serve_auth.h"
#include "serve/serve_loop.h"

#define SERVE_PEM_MAX_BYTES (1u << 20)

typedef struct {
  char model[OPT_STR_BYTES], registry[OPT_STR_BYTES], name[OPT_STR_BYTES], host[OPT_STR_BYTES];
  char tls_cert[OPT_STR_BYTES], tls_key[OPT_STR_BYTES], auth_key_file[OPT_STR_BYTES];
  int64_t port, threads, max_body_mb, max_buffered_mb, max_conns_per_ip, idle_timeout;
  double header_timeout, body_timeout, poll_s;
  int access_log;
  int64_t max_params;
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
  {"threads", OPT_INT, F(threads), "4", 1, 256, NULL, "requests answered at once (open connections are not limited by it)"},
  {"max-body-mb", OPT_INT, F(max_body_mb), "16", 1, 4096, NULL,
   "largest request body in MiB (answering one takes at most 4x its size)"},
  {"max-buffered-mb", OPT_INT, F(max_buffered_mb), "256", 1, 65536, NULL,
   "all request bodies being received at once, in MiB; past it 503 at once"},
  {"max-conns-per-ip", OPT_INT, F(max_conns_per_ip), "128", 1, 65536, NULL,
   "open connections from one client address"},
  {"idle-timeout", OPT_INT, F(idle_timeout), "5", 1, 3600, NULL,
   "seconds a connection may move no byte before it is closed"},
  {"header-timeout", OPT_FLOAT, F(header_timeout), "30", 0.1, 3600, NULL,
   "seconds a request's headers may take, from the connection or the previous answer"},
  {"body-timeout", OPT_FLOAT, F(body_timeout), "60", 0.1, 3600, NULL,
   "seconds a request's body may take, from the end of its headers"},
  {"tls-cert", OPT_STRING, F(tls_cert), NULL, 0, 0, NULL,
   "PEM certificate (chain) for HTTPS; with --tls-key"},
  {"tls-key", OPT_STRING, F(tls_key), NULL, 0, 0, NULL, "PEM private key for HTTPS"},
  {"auth-key-file", OPT_STRING, F(auth_key_file), NULL, 0, 0, NULL,
   "keys, one a line (primary, secondary): all but GET / then need "
   "Authorization: Bearer <key>; mode 600"},
  {"access-log", OPT_BOOL, F(access_log), "on", 0, 0, NULL, "one line per request on stderr"},
  {"poll-s", OPT_FLOAT, F(poll_s), "2", 0, 86400, NULL,
   "seconds between looks for new registry versions of NAME, served as they come (0: never)"},
  {"max-params", OPT_INT, F(max_params), "50000000", 1, 1e12, NULL, H5MODEL_MAX_PARAMS_HELP},
};
#undef F
static const opt_table serve_options = {
    serve_specs, (int)(sizeof serve_specs / sizeof serve_specs[0]), "serve"};

static const char serve_usage[] =
    "usage: tfdist serve --model PATH|NAME[:VERSION] [--port N] [--host ADDR] [--threads N]\n"
    "       [--tls-cert PEM --tls-key PEM] [--auth-key-file FILE]\n"
    "  GET /  POST /score {\"data\": [[784 numbers], ...]} -> [classes]\n"
    "  POST /v1/models/NAME[/versions/N]:predict {\"instances\": [...]} -> {\"predictions\": ...}\n"
    "  GET /v1/models/NAME[/versions/N][/metadata]   (TF Serving REST)";

static volatile sig_atomic_t serve_stop;

static void serve_on_signal(int sig) {
  (void)sig;
  __atomic_store_n(&serve_stop, 1, __ATOMIC_RELAXED); /* the loop's threads read it */
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
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  int one = 1;
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

/* Looks for new registry versions every poll_s seconds until serve_stop;
 * each new one is loaded and becomes the default, as TF Serving's "latest"
 * version policy does. */
typedef struct {
  serve_models *models;
  double poll_s;
} serve_poller;

static void *serve_poll_main(void *arg) {
  serve_poller *p = arg;
  char added[512], err[4600];
  while (!__atomic_load_n(&serve_stop, __ATOMIC_ACQUIRE)) {
    for (double t = 0; t < p->poll_s && !__atomic_load_n(&serve_stop, __ATOMIC_ACQUIRE); t += 0.05) {
      struct timespec ts = {0, 50000000L};
      nanosleep(&ts, NULL);
    }
    if (__atomic_load_n(&serve_stop, __ATOMIC_ACQUIRE)) break;
    int rc = serve_models_refresh(p->models, added, sizeof added, err, sizeof err);
    if (rc > 0) {
      fprintf(stderr, "tfdist serve: now serving %s version(s) %s (default %s)\n", p->models->name,
              added, strrchr(added, ',') ? strrchr(added, ',') + 1 : added);
    } else if (rc < 0) {
      fprintf(stderr, "tfdist serve: a new version of %s was not loaded: %s\n", p->models->name,
              err);
    }
  }
  return NULL;
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

/* The TLS files and the key file the options name: 0, or -1 with err. */
static int serve_secrets_load(const serve_opts *o, char **cert, char **key, serve_keys *keys,
                              char *err, size_t eb) {
  char e[4400];
  *cert = *key = NULL;
  if (!o->tls_cert[0] != !o->tls_key[0]) {
    snprintf(err, eb, "--tls-cert and --tls-key: give both or neither");
    return -1;
  }
  if (o->tls_cert[0]) {
    if (!(*cert = serve_file_read(o->tls_cert, SERVE_PEM_MAX_BYTES, e, sizeof e))) {
      snprintf(err, eb, "--tls-cert %s", e);
      return -1;
    }
    if (!(*key = serve_file_read(o->tls_key, SERVE_PEM_MAX_BYTES, e, sizeof e))) {
      snprintf(err, eb, "--tls-key %s", e);
      return -1;
    }
  }
  if (o->auth_key_file[0] && serve_keys_load(keys, o->auth_key_file, e, sizeof e) != 0) {
    snprintf(err, eb, "--auth-key-file %s", e);
    return -1;
  }
  return 0;
}

static void serve_secrets_free(char *cert, char *key, serve_keys *keys) {
  if (key) explicit_bzero(key, strlen(key));
  free(cert);
  free(key);
  explicit_bzero(keys, sizeof *keys);
}

int cli_serve(int argc, char **argv) {
  static serve_opts o;
  static serve_models m;
  static serve_keys keys;
  char err[4600] = "", versions[512], *cert = NULL, *key = NULL;
  if (opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&serve_options, serve_usage, stdout);
    return CLI_OK;
  }
  if (opt_defaults(&serve_options, &o, err, sizeof err) != 0 ||
      opt_apply_argv(&serve_options, &o, argc - 1, argv + 1, NULL, 0, NULL, err, sizeof err)) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  h5model_max_params_set(o.max_params);
  if (!o.model[0]) {
    fprintf(stderr, "tfdist: error: --model: required (a model.h5, a folder, or NAME[:VERSION] "
                    "in the registry)\n");
    return CLI_USAGE;
  }
  if (o.max_buffered_mb < o.max_body_mb) {
    fprintf(stderr, "tfdist: error: --max-buffered-mb %lld: less than --max-body-mb %lld\n",
            (long long)o.max_buffered_mb, (long long)o.max_body_mb);
    return CLI_USAGE;
  }
  if (serve_secrets_load(&o, &cert, &key, &keys, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    serve_secrets_free(cert, key, &keys);
    return CLI_USAGE;
  }
  if (serve_models_open(&m, o.model, o.registry, o.name, (int)o.threads, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    serve_secrets_free(cert, key, &keys);
    return CLI_USAGE;
  }
  int port = 0, code = CLI_FAIL;
  int lfd = serve_listen(&o, &port, &code, err, sizeof err);
  if (lfd < 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    serve_models_close(&m);
    serve_secrets_free(cert, key, &keys);
    return code;
  }
  serve_signals();
  /* Big blocks mapped on their own, always: freed, they go back to the OS
   * (glibc would otherwise raise its threshold and keep them). */
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  serve_loop_config lc = {.models = &m, .threads = (int)o.threads,
                         .max_body = (size_t)o.max_body_mb << 20,
                         .max_buffered = (size_t)o.max_buffered_mb << 20,
                         .per_ip_conns = (int)o.max_conns_per_ip,
                         .idle_timeout_s = (int)o.idle_timeout,
                         .head_timeout_ms = o.header_timeout * 1000.0,
                         .body_timeout_ms = o.body_timeout * 1000.0,
                         .access_log = o.access_log, .tls_cert_pem = cert, .tls_key_pem = key,
                         .keys = o.auth_key_file[0] ? &keys : NULL, .stop = &serve_stop};
  serve_loop *loop = serve_loop_start(&lc, lfd, err, sizeof err);
  if (!loop) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    serve_models_close(&m);
    serve_secrets_free(cert, key, &keys);
    return CLI_USAGE;
  }
  serve_models_describe(&m, versions, sizeof versions);
  printf("serving %s versions %s (default %lld) at %s://%s:%d%s\n", m.name, versions,
         m.default_version, cert ? "https" : "http", o.host, port,
         lc.keys ? " (keys required)" : "");
  fflush(stdout);
  serve_poller poller = {.models = &m, .poll_s = o.poll_s};
  pthread_t poll_thread;
  int polling = m.watch && o.poll_s > 0 &&
                pthread_create(&poll_thread, NULL, serve_poll_main, &poller) == 0;
  serve_loop_wait(loop);
  if (polling) pthread_join(poll_thread, NULL); /* serve_stop is set */
  fprintf(stderr, "tfdist serve: stopped\n");
  serve_models_close(&m);
  serve_secrets_free(cert, key, &keys);
  return CLI_OK;
}
