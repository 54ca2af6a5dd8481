/* libFuzzer harness for `tfdist serve`'s request path: routes, the request
 * JSON (serve_json.c, the one-pass parser), inference on a small model made
 * at start-up, and the Bearer key check. HTTP framing is libmicrohttpd's
 * and fuzzed upstream; the input here is what it hands on: the first line is
 * "METHOD PATH", the rest the body. Build and run: tests/fuzz.sh serve
 * (clang, ASan + UBSan). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "modelio/h5model.h"
#include "serve/serve.h"
#include "serve/serve_auth.h"

static serve_models fuzz_models;
static serve_keys fuzz_keys;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  model_layout l;
  model_layout_init(&l, 784, 8, 6, 10);
  float *p = malloc((size_t)l.total_elems * sizeof *p);
  for (int64_t i = 0; i < l.total_elems; i++) p[i] = (float)((i * 7919) % 201 - 100) / 400.0f;
  char path[64], keys[64], err[4600];
  snprintf(path, sizeof path, "/tmp/tfdist-fuzz-serve-%d.h5", (int)getpid());
  snprintf(keys, sizeof keys, "/tmp/tfdist-fuzz-serve-%d.keys", (int)getpid());
  int fd = open(keys, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f || fputs("fuzz-primary-key-0123456789\n\nfuzz-secondary-key-abcdef\n", f) < 0 ||
      fclose(f) != 0) {
    abort();
  }
  if (h5model_save_run(path, &l, p, "fuzz", NULL, err, sizeof err) != 0 ||
      serve_models_open(&fuzz_models, path, NULL, "m", 1, err, sizeof err) != 0 ||
      serve_keys_load(&fuzz_keys, keys, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_serve: %s\n", err);
    abort();
  }
  unlink(path);
  unlink(keys);
  free(p);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 60000) return 0;
  const char *s = (const char *)data;
  const char *nl = memchr(s, '\n', size);
  size_t head = nl ? (size_t)(nl - s) : size;
  char line[2100], method[16] = "POST", path[2048] = "/score";
  if (head < sizeof line) {
    memcpy(line, s, head);
    line[head] = '\0';
    /* MHD hands on no NUL inside a method or path, and so does this */
    if (sscanf(line, "%15s %2047s", method, path) < 1) snprintf(method, sizeof method, "POST");
    if (serve_keys_check(&fuzz_keys, line)) { /* then the token must be one of the two keys */
      const char *t = line + 7; /* "Bearer ", any case (RFC 7235) */
      size_t n;
      while (*t == ' ') t++;
      for (n = strlen(t); n && (t[n - 1] == ' ' || t[n - 1] == '\t'); n--) {
      }
      if (strncasecmp(line, "Bearer ", 7) ||
          !((n == 27 && !memcmp(t, "fuzz-primary-key-0123456789", n)) ||
            (n == 25 && !memcmp(t, "fuzz-secondary-key-abcdef", n)))) {
        abort();
      }
    }
  }
  size_t at = nl ? head + 1 : size;
  /* The body in a buffer of its own size, so ASan sees any read past it. */
  char *body = malloc(size - at ? size - at : 1);
  if (!body) return 0;
  memcpy(body, s + at, size - at);
  serve_reply rep;
  serve_handle(&fuzz_models, method, path, body, size - at, &rep);
  if (rep.status < 200 || rep.status > 599 || (rep.len && !rep.body)) abort();
  serve_reply_free(&rep);
  free(body);
  return 0;
}
