/* tfdist serve's HTTP framing on real loopback TCP sockets: pipelined
 * requests with bodies arriving in pieces, and a NUL byte in the head. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/serve_http.h"
#include "tests/check.h"

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

int main(void) {
  test_pipelined();
  test_nul_in_head();
  CHECK_DONE();
}
