/* Bearer keys from a key file, checked in constant time; PEM files read whole. */
#include "serve/serve_auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/sha256.h"

#define SERVE_KEY_FILE_MAX (64u << 10)

/* Opens path for reading, refusing what is not a regular file; 0 or -1 with err. */
static int serve_file_open(const char *path, struct stat *st, char *err, size_t eb) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    snprintf(err, eb, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
    snprintf(err, eb, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  return fd;
}

static char *serve_fd_read(int fd, const char *path, size_t size, size_t max, char *err,
                           size_t eb) {
  if (size > max) {
    snprintf(err, eb, "%s: %zu bytes, more than the %zu a key or certificate file may have", path,
             size, max);
    return NULL;
  }
  char *buf = malloc(size + 1);
  size_t got = 0;
  while (buf && got < size) {
    ssize_t n = read(fd, buf + got, size - got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  if (!buf || got != size) {
    snprintf(err, eb, "%s: %s", path, buf ? "could not read it whole" : "out of memory");
    free(buf);
    return NULL;
  }
  buf[size] = '\0';
  return buf;
}

char *serve_file_read(const char *path, size_t max_bytes, char *err, size_t eb) {
  struct stat st;
  int fd = serve_file_open(path, &st, err, eb);
  if (fd < 0) return NULL;
  char *buf = serve_fd_read(fd, path, (size_t)st.st_size, max_bytes, err, eb);
  close(fd);
  return buf;
}

/* One line of the key file: 0 when added or skipped, -1 with err. */
static int serve_key_add(serve_keys *k, const char *path, int line_no, const char *line,
                         size_t len, char *err, size_t eb) {
  while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
  if (len == 0 || line[0] == '#') return 0;
  for (size_t i = 0; i < len; i++) {
    if (line[i] < 0x21 || line[i] > 0x7e) {
      snprintf(err, eb, "%s:%d: a key is visible ASCII without spaces", path, line_no);
      return -1;
    }
  }
  if (len < SERVE_KEY_MIN_BYTES || len > SERVE_KEY_MAX_BYTES) {
    snprintf(err, eb, "%s:%d: a key of %zu characters (use %d to %d)", path, line_no, len,
             SERVE_KEY_MIN_BYTES, SERVE_KEY_MAX_BYTES);
    return -1;
  }
  if (k->count == SERVE_KEYS_MAX) {
    snprintf(err, eb, "%s: more than %d keys", path, SERVE_KEYS_MAX);
    return -1;
  }
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, line, len);
  sha256_final(&c, k->digest[k->count++]);
  return 0;
}

int serve_keys_load(serve_keys *k, const char *path, char *err, size_t eb) {
  memset(k, 0, sizeof *k);
  struct stat st;
  int fd = serve_file_open(path, &st, err, eb);
  if (fd < 0) return -1;
  if (st.st_mode & 077) {
    snprintf(err, eb, "%s: mode %03o lets others than its owner read or write it: chmod 600 it",
             path, (unsigned)(st.st_mode & 0777));
    close(fd);
    return -1;
  }
  char *text = serve_fd_read(fd, path, (size_t)st.st_size, SERVE_KEY_FILE_MAX, err, eb);
  close(fd);
  if (!text) return -1;
  int rc = 0, line_no = 1;
  for (const char *at = text; rc == 0 && *at; line_no++) {
    size_t len = strcspn(at, "\n");
    rc = serve_key_add(k, path, line_no, at, len, err, eb);
    at += len + (at[len] == '\n');
  }
  if (rc == 0 && k->count == 0) {
    snprintf(err, eb, "%s: no keys (one a line)", path);
    rc = -1;
  }
  explicit_bzero(text, (size_t)st.st_size);
  free(text);
  if (rc != 0) memset(k, 0, sizeof *k);
  return rc;
}

int serve_keys_check(const serve_keys *k, const char *authorization) {
  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return 0;
  const char *key = authorization + 7;
  while (*key == ' ') key++;
  size_t len = strlen(key);
  while (len && (key[len - 1] == ' ' || key[len - 1] == '\t')) len--;
  if (len == 0 || len > SERVE_KEY_MAX_BYTES) return 0;
  uint8_t d[32];
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, key, len);
  sha256_final(&c, d);
  /* Every key is compared in full, whichever matches: no early exit. */
  unsigned match = 0;
  for (int i = 0; i < k->count; i++) {
    unsigned diff = 0;
    for (int b = 0; b < 32; b++) diff |= (unsigned)(d[b] ^ k->digest[i][b]);
    match |= (unsigned)(diff == 0);
  }
  return (int)match;
}
