/* Crash-safe file writes and small file helpers. */
#include "base/fsutil.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_mkdirs(const char *path, char *err, size_t err_bytes) {
  char buf[4096];
  if (!path[0]) {
    snprintf(err, err_bytes, "cannot create a folder with an empty name");
    return -1;
  }
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
    snprintf(err, err_bytes, "%s: path too long", path);
    return -1;
  }
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        snprintf(err, err_bytes, "%s: cannot create folder: %s", buf, strerror(errno));
        return -1;
      }
      struct stat st;
      if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_bytes, "%s: exists and is not a folder", buf);
        return -1;
      }
      *p = c;
      if (c == '\0') break;
    }
  }
  return 0;
}

int fs_tmp_create(const char *final, char *tmp, size_t tmp_bytes, char *err, size_t err_bytes) {
  if (snprintf(tmp, tmp_bytes, "%s.tmp.%ld.XXXXXX", final, (long)getpid()) >= (int)tmp_bytes) {
    snprintf(err, err_bytes, "%.4000s: path too long", final);
    return -1;
  }
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, err_bytes, "%.4000s: cannot create a temp file next to it: %s", final,
             strerror(errno));
    return -1;
  }
  if (fchmod(fd, 0644) != 0) { /* mkostemp makes 0600; a model is read by serve and others */
    snprintf(err, err_bytes, "%s: chmod: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  return fd;
}

int fs_open_nofollow(const char *path, int flags, char *err, size_t err_bytes) {
  const int trunc = flags & O_TRUNC;
  int fd = open(path, (flags & ~O_TRUNC) | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
  struct stat st;
  if (fd < 0) {
    snprintf(err, err_bytes, "%s: %s", path, errno == ELOOP ? "a symbolic link: tfdist never "
             "writes through one (remove it)" : strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
    snprintf(err, err_bytes, "%s: not a regular file with one name (a hard link or a special "
             "file): tfdist never writes through one (remove it)", path);
    close(fd);
    return -1;
  }
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 ||
      (trunc && ftruncate(fd, 0) != 0)) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* A temp file "<name>.tmp.<pid>[.XXXXXX]" of one of ours whose writer is gone. */
static int fs_is_stale_tmp(const char *file, int (*ours)(const char *name)) {
  const char *t = strstr(file, ".tmp.");
  char name[256];
  if (!t || (size_t)(t - file) >= sizeof name) return 0;
  snprintf(name, sizeof name, "%.*s", (int)(t - file), file);
  char *end = NULL;
  long pid = strtol(t + 5, &end, 10);
  if (end && *end == '.' && strlen(end) == 7) end += 7; /* fs_tmp_create's suffix */
  if (!end || *end || pid <= 0 || pid > INT_MAX || pid == (long)getpid() || !ours(name)) return 0;
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

void fs_remove_stale_tmp(const char *dir, int (*ours)(const char *name)) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!fs_is_stale_tmp(e->d_name, ours)) continue;
    char p[4400];
    if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p) unlink(p);
  }
  closedir(d);
}

static int fs_fsync_path(const char *path, int flags, char *err, size_t err_bytes) {
  int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    snprintf(err, err_bytes, "%s: fsync: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return 0;
}

int fs_commit(const char *tmp, const char *final, char *err, size_t err_bytes) {
  if (fs_fsync_path(tmp, O_RDONLY, err, err_bytes) != 0) goto fail;
  if (rename(tmp, final) != 0) {
    snprintf(err, err_bytes, "%s: rename from %s: %s", final, tmp, strerror(errno));
    goto fail;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", final);
  return fs_fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY, err, err_bytes);
fail:
  unlink(tmp);
  return -1;
}

int fs_write_fd(int fd, const char *name, const void *data, size_t len, char *err,
                size_t err_bytes) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      snprintf(err, err_bytes, "%s: write failed: %s", name,
               n < 0 ? strerror(errno) : "no progress");
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, char *err, size_t err_bytes) {
  char tmp[4200];
  int fd = fs_tmp_create(path, tmp, sizeof tmp, err, err_bytes);
  if (fd < 0) return -1;
  int rc = fs_write_fd(fd, tmp, data, len, err, err_bytes);
  if (close(fd) != 0 && rc == 0) {
    snprintf(err, err_bytes, "%s: close: %s", tmp, strerror(errno));
    rc = -1;
  }
  if (rc != 0) {
    unlink(tmp);
    return -1;
  }
  return fs_commit(tmp, path, err, err_bytes);
}

char *fs_read_stream(FILE *f, const char *name, size_t *len, char *err, size_t err_bytes) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n - 1, f);
    if (n < cap - 1) break;
    char *grown = realloc(buf, cap *= 2);
    if (!grown) {
      free(buf);
      buf = NULL;
    } else {
      buf = grown;
    }
  }
  if (!buf || ferror(f)) {
    snprintf(err, err_bytes, "%s: %s", name, buf ? "read error" : "out of memory");
    free(buf);
    return NULL;
  }
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

char *fs_read_all(const char *path, size_t *len, char *err, size_t err_bytes) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = fs_read_stream(f, path, len, err, err_bytes);
  fclose(f);
  return buf;
}
