/* `tfdist serve`'s connections: one thread waits on every open connection
 * (epoll) and hands a connection with bytes to read to a worker; a worker
 * answers what has arrived and gives the connection back. So an idle or slow
 * client holds no worker: --threads bounds requests being answered, not
 * connections. */
#ifndef TFDIST_SERVE_SERVE_LOOP_H
#define TFDIST_SERVE_SERVE_LOOP_H

#include <signal.h>
#include <stddef.h>

#include "serve/serve.h"

typedef struct {
  serve_models *models;
  int threads;
  size_t max_body;
  int access_log;
  double head_timeout_ms; /* a request head must arrive within this of its first byte */
  const volatile sig_atomic_t *stop; /* set by a signal handler with __atomic_store_n */
} serve_loop_config;

/* Serves the listening socket lfd (closed here) until *stop is set; then
 * accepts no more, closes idle connections, lets requests already begun
 * finish, and returns. */
int serve_loop_run(const serve_loop_config *cfg, int lfd, char *err, size_t err_bytes);

#endif
