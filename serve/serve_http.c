/* HTTP/1.1 request framing and responses for `tfdist serve`. */
#include "serve/serve_http.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

void http_conn_init(http_conn *c, int fd) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
}

void http_conn_free(http_conn *c) {
  free(c->buf);
  memset(c, 0, sizeof *c);
}

void http_conn_trim(http_conn *c) {
  if (c->len) return;
  free(c->buf);
  c->buf = NULL;
  c->cap = 0;
}

const char *http_status_text(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 417: return "Expectation Failed";
  case 431: return "Request Header Fields Too Large";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return "Internal Server Error";
  }
}

/* What the socket holds now, up to limit bytes buffered in all: 0, or -1
 * on a failed read. The peer's end of data sets c->eof: what came before it
 * is still a request to answer (a client may half-close after sending). */
static int http_fill(http_conn *c, size_t limit) {
  while (c->len < limit && !c->eof) {
    if (c->cap - c->len < 4096 && c->cap < limit) {
      size_t cap = c->cap ? 2 * c->cap : 8192;
      char *grown = realloc(c->buf, cap < limit ? cap : limit);
      if (!grown) return -1;
      c->buf = grown;
      c->cap = cap < limit ? cap : limit;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n < 0) return -1;
    if (n == 0) c->eof = 1;
    c->len += (size_t)n;
  }
  return 0;
}

/* The end of the head ("\r\n\r\n" or "\n\n"), or 0 while incomplete. */
static size_t http_head_end(const char *b, size_t len) {
  for (size_t i = 0; i + 1 < len; i++) {
    if (b[i] != '\n') continue;
    if (b[i + 1] == '\n') return i + 2;
    if (b[i + 1] == '\r' && i + 2 < len && b[i + 2] == '\n') return i + 3;
  }
  return 0;
}

typedef struct {
  long long length; /* -1: none given */
  int keep_alive, expect_continue, http11, hosts;
} http_head;

static int http_bad(int *status, int code, char *err, size_t eb, const char *msg) {
  *status = code;
  snprintf(err, eb, "%s", msg);
  return -1;
}

static int http_parse_length(const char *v, http_head *h, int *status, char *err, size_t eb) {
  long long n = 0;
  if (!*v || strlen(v) > 18) return http_bad(status, 400, err, eb, "Content-Length: not a length");
  for (const char *p = v; *p; p++) {
    if (!isdigit((unsigned char)*p)) {
      return http_bad(status, 400, err, eb, "Content-Length: not a length");
    }
    n = n * 10 + (*p - '0');
  }
  if (h->length >= 0 && h->length != n) {
    return http_bad(status, 400, err, eb, "Content-Length: given twice with different values");
  }
  h->length = n;
  return 0;
}

/* Comma-separated tokens of a Connection header. */
static void http_parse_connection(const char *v, http_head *h) {
  char tok[64];
  while (*v) {
    size_t n = strcspn(v, ",");
    size_t a = 0, b = n;
    while (a < b && (v[a] == ' ' || v[a] == '\t')) a++;
    while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t')) b--;
    snprintf(tok, sizeof tok, "%.*s", (int)(b - a), v + a);
    if (!strcasecmp(tok, "close")) h->keep_alive = 0;
    else if (!strcasecmp(tok, "keep-alive")) h->keep_alive = 1;
    v += n + (v[n] == ',');
  }
}

static int http_parse_header(char *line, http_head *h, int *status, char *err, size_t eb) {
  if (*line == ' ' || *line == '\t') {
    return http_bad(status, 400, err, eb, "obsolete header line folding");
  }
  char *colon = strchr(line, ':');
  if (!colon || colon == line || strcspn(line, " \t") < (size_t)(colon - line)) {
    return http_bad(status, 400, err, eb, "malformed header line");
  }
  *colon = '\0';
  char *v = colon + 1, *end = v + strlen(v);
  while (*v == ' ' || *v == '\t') v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
  if (!strcasecmp(line, "Content-Length")) return http_parse_length(v, h, status, err, eb);
  if (!strcasecmp(line, "Transfer-Encoding")) {
    return http_bad(status, 501, err, eb,
                    "Transfer-Encoding is not supported: send the body with Content-Length");
  }
  if (!strcasecmp(line, "Connection")) http_parse_connection(v, h);
  if (!strcasecmp(line, "Host") && ++h->hosts > 1) {
    return http_bad(status, 400, err, eb, "Host given twice");
  }
  if (!strcasecmp(line, "Expect")) {
    if (strcasecmp(v, "100-continue") != 0) {
      return http_bad(status, 417, err, eb, "Expect: only 100-continue is supported");
    }
    h->expect_continue = 1;
  }
  return 0;
}

/* "METHOD /path HTTP/1.x" */
static int http_parse_request_line(char *line, http_request *r, http_head *h, int *status,
                                   char *err, size_t eb) {
  char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (!sp1 || !sp2 || strchr(sp2 + 1, ' ')) {
    return http_bad(status, 400, err, eb, "malformed request line");
  }
  size_t mlen = (size_t)(sp1 - line), tlen = (size_t)(sp2 - sp1 - 1);
  if (mlen == 0 || mlen >= sizeof r->method) return http_bad(status, 400, err, eb, "bad method");
  for (size_t i = 0; i < mlen; i++) {
    if (!isupper((unsigned char)line[i])) return http_bad(status, 400, err, eb, "bad method");
  }
  const char *target = sp1 + 1;
  if (!strncasecmp(target, "http://", 7) || !strncasecmp(target, "https://", 8)) {
    target += strcspn(target, ":") + 3; /* absolute-form: the path after the authority */
    target += strcspn(target, "/? ");
    if (*target != '/') target = "/";
  }
  if (tlen == 0 || *target != '/') {
    return http_bad(status, 400, err, eb, "the request target must be a path starting with /");
  }
  size_t plen = strcspn(target, "?# ");
  if (plen >= sizeof r->path) return http_bad(status, 414, err, eb, "request path too long");
  const char *ver = sp2 + 1;
  h->http11 = !strcmp(ver, "HTTP/1.1");
  if (h->http11) h->keep_alive = 1;
  else if (!strcmp(ver, "HTTP/1.0")) h->keep_alive = 0;
  else if (!strncmp(ver, "HTTP/", 5)) return http_bad(status, 505, err, eb, "only HTTP/1.x");
  else return http_bad(status, 400, err, eb, "malformed request line");
  snprintf(r->method, sizeof r->method, "%.*s", (int)mlen, line);
  snprintf(r->path, sizeof r->path, "%.*s", (int)plen, target);
  r->head_only = !strcmp(r->method, "HEAD");
  return 0;
}

/* The head in place (lines end in \n, maybe after \r). */
static int http_parse_head(char *head, size_t head_len, http_request *r, http_head *h,
                           int *status, char *err, size_t eb) {
  head[head_len - 1] = '\0';
  int first = 1;
  for (char *line = head; *line;) {
    char *nl = strchr(line, '\n'), *end = nl ? nl : line + strlen(line);
    char *next = nl ? nl + 1 : end;
    *end = '\0';
    if (end > line && end[-1] == '\r') end[-1] = '\0';
    if (!*line) break;
    if (strchr(line, '\r')) return http_bad(status, 400, err, eb, "stray CR in the head");
    int rc = first ? http_parse_request_line(line, r, h, status, err, eb)
                   : http_parse_header(line, h, status, err, eb);
    if (rc != 0) return -1;
    first = 0;
    line = next;
  }
  if (first) return http_bad(status, 400, err, eb, "empty request");
  if (h->http11 && !h->hosts) return http_bad(status, 400, err, eb, "HTTP/1.1 request without Host");
  return 0;
}

static void http_skip_blank_lines(http_conn *c) {
  size_t skip = 0;
  while (skip < c->len && (c->buf[skip] == '\r' || c->buf[skip] == '\n')) skip++;
  if (skip) {
    memmove(c->buf, c->buf + skip, c->len - skip);
    c->len -= skip;
  }
}

/* The head: parsed in a copy, so the buffer keeps the raw bytes. */
static http_read_result http_read_head(http_conn *c, http_request *r, http_head *h,
                                       size_t *head_len, int *status, char *err, size_t eb) {
  for (;;) {
    http_skip_blank_lines(c);
    if ((*head_len = http_head_end(c->buf, c->len)) > 0) break;
    size_t had = c->len;
    if (c->len >= HTTP_HEAD_MAX) {
      http_bad(status, 431, err, eb, "request head over 16 KiB");
      return HTTP_READ_BAD;
    }
    if (http_fill(c, HTTP_HEAD_MAX + 1) != 0) return HTTP_READ_CLOSED;
    if (c->len == had) return c->eof ? HTTP_READ_CLOSED : HTTP_READ_MORE;
  }
  if (*head_len > HTTP_HEAD_MAX) {
    http_bad(status, 431, err, eb, "request head over 16 KiB");
    return HTTP_READ_BAD;
  }
  if (memchr(c->buf, '\0', *head_len)) { /* would end the parse early, hiding what follows */
    http_bad(status, 400, err, eb, "NUL byte in the request head");
    return HTTP_READ_BAD;
  }
  char head[HTTP_HEAD_MAX + 1];
  memcpy(head, c->buf, *head_len);
  if (http_parse_head(head, *head_len, r, h, status, err, eb) != 0) return HTTP_READ_BAD;
  return HTTP_READ_OK;
}

http_read_result http_request_read(http_conn *c, http_request *r, size_t max_body, int *status,
                                   char *err, size_t eb) {
  http_head h = {.length = -1};
  size_t head_len = 0;
  memset(r, 0, sizeof *r);
  http_read_result res = http_read_head(c, r, &h, &head_len, status, err, eb);
  if (res != HTTP_READ_OK) return res;
  r->keep_alive = h.keep_alive;
  if (h.length < 0 && (!strcmp(r->method, "POST") || !strcmp(r->method, "PUT"))) {
    http_bad(status, 411, err, eb, "a request body needs Content-Length");
    return HTTP_READ_BAD;
  }
  size_t body = h.length > 0 ? (size_t)h.length : 0;
  if (body > max_body) {
    snprintf(err, eb, "request body of %zu bytes is over the limit of %zu (--max-body-mb)", body,
             max_body);
    *status = 413;
    return HTTP_READ_BAD;
  }
  if (c->len < head_len + body && http_fill(c, head_len + body) != 0) return HTTP_READ_CLOSED;
  if (c->len < head_len + body) {
    if (c->eof) return HTTP_READ_CLOSED;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (h.expect_continue && !c->continued &&
        send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof cont - 1)) {
      return HTTP_READ_CLOSED;
    }
    c->continued = 1;
    return HTTP_READ_MORE;
  }
  r->body = c->buf + head_len;
  r->body_len = body;
  r->consumed = head_len + body;
  return HTTP_READ_OK;
}

void http_request_done(http_conn *c, const http_request *r) {
  memmove(c->buf, c->buf + r->consumed, c->len - r->consumed);
  c->len -= r->consumed;
  c->continued = 0;
  if (c->len == 0 && c->cap > (1u << 20)) { /* a big body's buffer is not kept for the next */
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
  }
}

/* The socket's send timeout (SO_SNDTIMEO) in ms, or -1 for none. */
static double http_send_budget_ms(int fd) {
  struct timeval tv;
  socklen_t len = sizeof tv;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) != 0 || (!tv.tv_sec && !tv.tv_usec)) {
    return -1;
  }
  return (double)tv.tv_sec * 1e3 + (double)tv.tv_usec / 1e3;
}

int http_response_send(http_conn *c, int status, const char *content_type, const char *extra,
                       const char *body, size_t len, int keep_alive, int head_only) {
  char head[1024];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: %s\r\n%s\r\n",
                   status, http_status_text(status), content_type, len,
                   keep_alive ? "keep-alive" : "close", extra ? extra : "");
  if (n < 0 || n >= (int)sizeof head) return -1;
  struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, head_only ? 0 : len}};
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
  /* The send timeout bounds the whole response, not each write: a client
   * that reads a little at a time would otherwise hold the worker forever. */
  double budget = http_send_budget_ms(c->fd), deadline = 1e3 * clock_mono_s() + budget;
  while (iov[0].iov_len + iov[1].iov_len > 0) {
    ssize_t sent = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      double left = deadline - 1e3 * clock_mono_s();
      struct pollfd p = {.fd = c->fd, .events = POLLOUT};
      if ((budget >= 0 && left <= 0) || poll(&p, 1, budget < 0 ? -1 : (int)left + 1) == 0) {
        return -1;
      }
      continue;
    }
    if (sent <= 0) return -1;
    for (int i = 0; i < 2; i++) {
      size_t take = (size_t)sent < iov[i].iov_len ? (size_t)sent : iov[i].iov_len;
      iov[i].iov_base = (char *)iov[i].iov_base + take;
      iov[i].iov_len -= take;
      sent -= (ssize_t)take;
    }
  }
  return 0;
}

int http_conn_in_head(const http_conn *c) {
  size_t skip = 0;
  while (skip < c->len && (c->buf[skip] == '\r' || c->buf[skip] == '\n')) skip++;
  return skip < c->len && http_head_end(c->buf + skip, c->len - skip) == 0;
}
