/* `tfdist serve`'s connections, through libmicrohttpd: its thread pool reads
 * and frames requests (keep-alive, pipelining, Expect: 100-continue, chunked
 * bodies, TLS through GnuTLS) with a fixed memory pool per connection; this
 * layer adds the keys, the global cap on buffered bodies, the head and body
 * deadlines, the access log and a graceful stop, and hands whole requests to
 * serve_handle. --threads bounds requests being answered, not connections. */
#ifndef TFDIST_SERVE_SERVE_LOOP_H
#define TFDIST_SERVE_SERVE_LOOP_H

#include <signal.h>
#include <stddef.h>

#include "serve/serve.h"
#include "serve/serve_auth.h"

#define SERVE_CONN_MEMORY_BYTES (16u << 10) /* a connection's pool: its head, read buffer */
#define SERVE_SMALL_BODY_BYTES (64u << 10)  /* bodies this small have 1/8 of the cap kept for them */

typedef struct {
  serve_models *models;
  int threads;
  size_t max_body;     /* one request body; past it 413 */
  size_t max_buffered; /* all bodies being received, as their Content-Length; past it 503 */
  int per_ip_conns;    /* open connections from one client address */
  int idle_timeout_s;  /* a connection that moves no byte either way this long is closed */
  double head_timeout_ms; /* a request head, from the connection or the previous answer */
  double body_timeout_ms; /* a request body, from the end of its head */
  int access_log;
  const char *tls_cert_pem, *tls_key_pem; /* both: HTTPS */
  const serve_keys *keys;                 /* NULL: no key asked */
  const volatile sig_atomic_t *stop; /* set by a signal handler with __atomic_store_n */
} serve_loop_config;

typedef struct serve_loop serve_loop;

/* Starts serving the listening socket lfd (then owned here); NULL with err
 * (a certificate or key GnuTLS refuses, say). cfg must outlive it. */
serve_loop *serve_loop_start(const serve_loop_config *cfg, int lfd, char *err, size_t err_bytes);
/* Serves until *stop is set; then accepts no more, lets requests already
 * begun finish (for up to 5 s), closes the rest, and frees l. */
void serve_loop_wait(serve_loop *l);

#endif
