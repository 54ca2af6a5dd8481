/* libFuzzer harness for `tfdist serve`'s request path: the input is the
 * bytes a client sends on one connection (then it half-closes). Every whole
 * request the HTTP framing yields goes through the routes, the JSON checks
 * and inference on a small model made at start-up. Build and run:
 * tests/fuzz.sh serve (clang, ASan + UBSan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "modelio/h5model.h"
#include "serve/serve.h"
#include "serve/serve_http.h"

static serve_models fuzz_models;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  model_layout l;
  model_layout_init(&l, 784, 8, 6, 10);
  float *p = malloc((size_t)l.total_elems * sizeof *p);
  for (int64_t i = 0; i < l.total_elems; i++) p[i] = (float)((i * 7919) % 201 - 100) / 400.0f;
  char path[64], err[4600];
  snprintf(path, sizeof path, "/tmp/tfdist-fuzz-serve-%d.h5", (int)getpid());
  if (h5model_save_run(path, &l, p, "fuzz", NULL, err, sizeof err) != 0 ||
      serve_models_open(&fuzz_models, path, NULL, "m", 1, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_serve: %s\n", err);
    abort();
  }
  unlink(path);
  free(p);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  if (size > 60000 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
  if (size && write(sv[0], data, size) != (ssize_t)size) abort();
  shutdown(sv[0], SHUT_WR);
  http_conn c;
  http_conn_init(&c, sv[1]);
  for (int n = 0; n < 64; n++) {
    http_request r;
    int status = 0;
    char err[512];
    if (http_request_read(&c, &r, 1 << 20, &status, err, sizeof err) != HTTP_READ_OK) break;
    serve_reply rep;
    serve_handle(&fuzz_models, r.method, r.path, r.body, r.body_len, &rep);
    if (rep.status < 200 || rep.status > 599 || (rep.len && !rep.body)) abort();
    serve_reply_free(&rep);
    http_request_done(&c, &r);
  }
  http_conn_free(&c);
  close(sv[0]);
  close(sv[1]);
  return 0;
}
