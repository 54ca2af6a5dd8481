/* tfdist serve's HTTP framing on real loopback TCP sockets: pipelined
 * requests with bodies arriving in pieces, a NUL byte in the head, and a
 * response to a client that reads slowly (bounded in all by the socket's send
 * timeout). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "serve/serve_http.h"
#include "tests/check.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connected loopback pair: fd[0] the client, fd[1] the server's side. */
static int tcp_pair(int fd[2]) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
      getsockname(l, (struct sockaddr *)&a, &len) != 0) {
    return -1;
  }
  fd[0] = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd[0], (struct sockaddr *)&a, sizeof a) != 0) return -1;
  fd[1] = accept(l, NULL, NULL);
  close(l);
  return fd[1] < 0 ? -1 : 0;
}

static void send_str(int fd, const char *s, size_t n) {
  CHECK_EQ_INT(send(fd, s, n, 0), (long long)n);
  usleep(20000); /* arrived on the other side */
}

static http_read_result read_one(http_conn *c, http_request *r, int *status) {
  char err[256] = "";
  return http_request_read(c, r, 1 << 20, status, err, sizeof err);
}

/* Three pipelined requests (bodies of 5 and 0 bytes, then a HEAD) and a
 * fourth cut inside its body: each read returns the right one, and
 * http_request_done keeps exactly the bytes that follow. */
static void test_pipelined(void) {
  int fd[2];
  CHECK(tcp_pair(fd) == 0);
  http_conn c;
  http_conn_init(&c, fd[1]);
  const char *batch =
      "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
      "\r\nGET /b?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"
      "HEAD / HTTP/1.0\r\n\r\n"
      "POST /d HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nabc";
  send_str(fd[0], batch, strlen(batch));
  http_request r;
  int status = 0;
  CHECK_EQ_INT(read_one(&c, &r, &status), HTTP_READ_OK);
  CHECK(!strcmp(r.method, "POST") && !strcmp(r.path, "/a") && r.body_len == 5 &&
        !memcmp(r.body, "hello", 5) && r.keep_alive);
  http_request_done(&c, &r);
  CHECK_EQ_INT(read_one(&c, &r, &status), HTTP_READ_OK);
  CHECK(!strcmp(r.method, "GET") && !strcmp(r.path, "/b") && r.body_len == 0);
  http_request_done(&c, &r);
  CHECK_EQ_INT(read_one(&c, &r, &status), HTTP_READ_OK);
  CHECK(!strcmp(r.method, "HEAD") && r.head_only && !r.keep_alive);
  http_request_done(&c, &r);
  CHECK_EQ_INT(read_one(&c, &r, &status), HTTP_READ_MORE);
  send_str(fd[0], "defGET", 6); /* the body's end, then the next request's start */
  CHECK_EQ_INT(read_one(&c, &r, &status), HTTP_READ_OK);
  CHECK(!strcmp(r.path, "/d") && r.body_len == 7 && !memcmp(r.body, "abcdefG", 7));
  http_request_done(&c, &r);
  CHECK(c.len == 2 && !memcmp(c.buf, "ET", 2));
  http_conn_free(&c);
  close(fd[0]);
  close(fd[1]);
}

/* A NUL inside the head would end its parse there: the Content-Length after
 * it unseen, and the body read as a second request. */
static void test_nul_in_head(void) {
  int fd[2];
  CHECK(tcp_pair(fd) == 0);
  http_conn c;
  http_conn_init(&c, fd[1]);
  static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\nContent-Length: 27\r\n\r\n"
                            "GET /hidden HTTP/1.0\r\n\r\n";
  send_str(fd[0], req, sizeof req - 1);
  http_request r;
  int status = 0;
  http_read_result res = read_one(&c, &r, &status);
  CHECK_EQ_INT(res, HTTP_READ_BAD);
  CHECK_EQ_INT(status, 400);
  http_conn_free(&c);
  close(fd[0]);
  close(fd[1]);
}

typedef struct {
  int fd, pause_us; /* between reads of 16 KiB; 0: read as fast as it comes */
  double stop_at;
  size_t got;
} slow_reader;

static void *slow_read(void *arg) {
  slow_reader *s = arg;
  char buf[16384];
  while (now_s() < s->stop_at) {
    ssize_t n = recv(s->fd, buf, sizeof buf, s->pause_us ? MSG_DONTWAIT : 0);
    if (n > 0) s->got += (size_t)n;
    if (n == 0) break;
    if (s->pause_us) usleep((useconds_t)s->pause_us);
  }
  return NULL;
}

/* body (len bytes) sent with SO_SNDTIMEO timeout_ms to a reader pausing
 * pause_us between reads, for at most read_s. The result, *took s, *got bytes
 * read. */
static int send_to_reader(const char *body, size_t len, int timeout_ms, int pause_us,
                          double read_s, double *took, size_t *got) {
  int fd[2];
  CHECK(tcp_pair(fd) == 0);
  int small = 65536;
  setsockopt(fd[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  setsockopt(fd[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  http_conn c;
  http_conn_init(&c, fd[1]);
  double t0 = now_s();
  slow_reader s = {.fd = fd[0], .pause_us = pause_us, .stop_at = t0 + read_s};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, slow_read, &s) == 0);
  int rc = http_response_send(&c, 200, "application/json", NULL, body, len, 0, 0);
  *took = now_s() - t0;
  shutdown(fd[1], SHUT_WR); /* the reader sees the end */
  pthread_join(t, NULL);
  *got = s.got;
  http_conn_free(&c);
  close(fd[0]);
  close(fd[1]);
  return rc;
}

/* SO_SNDTIMEO 300 ms on the server's side, as serve sets 30 s: a response
 * of 16 MiB to a client reading 16 KiB every 10 ms (steady progress, never a
 * 300 ms gap) must give up after about 300 ms in all, not 300 ms without
 * progress (which holds a worker for as long as the client likes). A client
 * that keeps up gets all of it (under a 10 s timeout: a loaded machine may
 * stall the reader). */
static void test_send_deadline(void) {
  size_t len = (size_t)16 << 20, got = 0;
  char *body = malloc(len);
  CHECK(body != NULL);
  if (!body) return;
  memset(body, 'x', len);
  double took = 0;
  int rc = send_to_reader(body, len, 300, 10000, 2.5, &took, &got);
  CHECK_EQ_INT(rc, -1);
  CHECK(got > 0 && got < len);
  if (!(took > 0.25 && took < 1.2)) {
    fprintf(stderr, "response to a slow reader gave up after %.2f s (want ~0.3 s); it read %zu "
            "bytes\n", took, got);
    check_failures++;
  }
  rc = send_to_reader(body, len, 10000, 0, 20, &took, &got);
  CHECK_EQ_INT(rc, 0);
  CHECK(got > len && took < 10);
  free(body);
}

int main(void) {
  test_pipelined();
  test_nul_in_head();
  test_send_deadline();
  CHECK_DONE();
}
