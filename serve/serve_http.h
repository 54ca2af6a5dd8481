/* The HTTP/1.1 framing `tfdist serve` needs: requests off a non-blocking
 * connection as their bytes arrive (keep-alive, pipelining, Expect:
 * 100-continue), bodies by Content-Length only, and whole responses. No
 * library in our dependency set speaks HTTP; this is the small subset a JSON
 * scoring endpoint uses. */
#ifndef TFDIST_SERVE_SERVE_HTTP_H
#define TFDIST_SERVE_SERVE_HTTP_H

#include <stddef.h>

#define HTTP_HEAD_MAX 16384
#define HTTP_IDLE_MS 5000   /* a keep-alive connection with no new request */
#define HTTP_STALL_MS 30000 /* a request whose bytes stop coming */
#define HTTP_IO_TIMEOUT_S 30 /* a response the client stops reading */

typedef struct {
  int fd;
  char *buf; /* bytes read and not yet consumed (the next request may start here) */
  size_t len, cap;
  int continued; /* 100 Continue sent for the request being read */
  int eof;       /* the peer sent all it will */
} http_conn;

typedef struct {
  char method[16];
  char path[2048]; /* without the query string */
  int keep_alive;
  int head_only;    /* HEAD: the response carries no body */
  const char *body; /* inside conn->buf, body_len bytes, not NUL-terminated */
  size_t body_len;
  size_t consumed;  /* request bytes to drop once answered */
} http_request;

typedef enum {
  HTTP_READ_OK,     /* *r is a whole request */
  HTTP_READ_MORE,   /* the socket has no more bytes yet: wait for it to be readable */
  HTTP_READ_CLOSED, /* the peer closed or failed: close quietly */
  HTTP_READ_BAD     /* malformed framing: answer *status with err, then close */
} http_read_result;

void http_conn_init(http_conn *c, int fd);
void http_conn_free(http_conn *c);
/* Frees the buffer when it holds no bytes: a connection waiting for its next
 * request keeps no memory (thousands may wait). */
void http_conn_trim(http_conn *c);
/* 1 when the buffer begins a request whose head has not all arrived. */
int http_conn_in_head(const http_conn *c);
http_read_result http_request_read(http_conn *c, http_request *r, size_t max_body, int *status,
                                   char *err, size_t err_bytes);
/* Drops r's bytes; what follows (a pipelined request) stays buffered. */
void http_request_done(http_conn *c, const http_request *r);
/* extra: more header lines, each ending in \r\n, or NULL. 0, or -1 when the
 * peer is gone or the socket's send timeout (SO_SNDTIMEO) passes before the
 * whole response is out. */
int http_response_send(http_conn *c, int status, const char *content_type, const char *extra,
                       const char *body, size_t len, int keep_alive, int head_only);
const char *http_status_text(int status);

#endif
