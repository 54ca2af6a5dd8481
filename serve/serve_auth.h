/* `tfdist serve`'s keys (SPEC "Deployment (scoring)": Azure ML's primary and
 * secondary key, sent as Authorization: Bearer <key>) and the PEM files of
 * its TLS certificate. */
#ifndef TFDIST_SERVE_SERVE_AUTH_H
#define TFDIST_SERVE_SERVE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define SERVE_KEYS_MAX 16
#define SERVE_KEY_MIN_BYTES 16
#define SERVE_KEY_MAX_BYTES 512

typedef struct {
  uint8_t digest[SERVE_KEYS_MAX][32]; /* sha256 of each key: compared, never the key */
  int count;
} serve_keys;

/* One key a line (blank lines and lines starting with # skipped), each 16
 * to 512 visible ASCII characters, at most 16. Like ssh with a private key,
 * a file that others than its owner may read or write is refused, and so is
 * anything but a regular file. 0, or -1 with a one-line err. */
int serve_keys_load(serve_keys *k, const char *path, char *err, size_t err_bytes);
/* 1 when authorization (a header value, or NULL) is "Bearer <one of the
 * keys>". The time taken does not depend on the keys or on which matched. */
int serve_keys_check(const serve_keys *k, const char *authorization);

/* A whole file of at most max_bytes, NUL-terminated, malloc'd; NULL with err. */
char *serve_file_read(const char *path, size_t max_bytes, char *err, size_t err_bytes);

#endif
