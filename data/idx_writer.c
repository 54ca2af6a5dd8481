/* idx writing for the data tools (shard, synth): big-endian header, body
 * through write() or zlib's gz* writer, committed by rename. */
#include "data/idx_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/fsutil.h"

static int writer_full(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int writer_sync_dir(const char *path) {
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", path);
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static int writer_body(data_idx_writer *w, const void *buf, size_t len) {
  if (!w->gz) return writer_full(w->fd, buf, len);
  const uint8_t *p = buf;
  while (len > 0) {
    unsigned chunk = len > (1u << 30) ? (1u << 30) : (unsigned)len;
    if (gzwrite((gzFile)w->gz, p, chunk) != (int)chunk) return -1;
    p += chunk;
    len -= chunk;
  }
  return 0;
}

int data_idx_writer_open(data_idx_writer *w, const char *path, uint32_t magic, int64_t count,
                         uint32_t rows, uint32_t cols, int gzip_level, char *err,
                         size_t err_bytes) {
  memset(w, 0, sizeof *w);
  w->fd = -1;
  int images = rows > 0;
  uint64_t bytes = (uint64_t)count * (images ? (uint64_t)rows * cols : 1u);
  if (count <= 0 || count > UINT32_MAX || (images && (uint64_t)rows * cols > (1u << 24))) {
    snprintf(err, err_bytes, "%s: cannot write %lld samples of %ux%u", path, (long long)count,
             rows, cols);
    return -1;
  }
  snprintf(w->final_path, sizeof w->final_path, "%s", path);
  w->body_bytes = (int64_t)bytes;
  w->crc = (uint32_t)crc32(0L, Z_NULL, 0);
  w->fd = fs_tmp_create(path, w->tmp_path, sizeof w->tmp_path, err, err_bytes);
  if (w->fd < 0) {
    w->tmp_path[0] = '\0';
    return -1;
  }
  if (gzip_level > 0) {
    char mode[8];
    snprintf(mode, sizeof mode, "wb%d", gzip_level > 9 ? 9 : gzip_level);
    int dupfd = dup(w->fd);
    w->gz = dupfd >= 0 ? gzdopen(dupfd, mode) : NULL;
    if (!w->gz) {
      if (dupfd >= 0) close(dupfd);
      snprintf(err, err_bytes, "%s: cannot start a gzip stream", w->tmp_path);
      data_idx_writer_abort(w);
      return -1;
    }
    gzbuffer((gzFile)w->gz, 1 << 18);
  }
  uint32_t fields[4] = {magic, (uint32_t)count, rows, cols};
  uint8_t hdr[16];
  int nfields = images ? 4 : 2;
  for (int i = 0; i < nfields; i++) {
    hdr[4 * i] = (uint8_t)(fields[i] >> 24);
    hdr[4 * i + 1] = (uint8_t)(fields[i] >> 16);
    hdr[4 * i + 2] = (uint8_t)(fields[i] >> 8);
    hdr[4 * i + 3] = (uint8_t)fields[i];
  }
  if (writer_body(w, hdr, 4 * (size_t)nfields) != 0) {
    snprintf(err, err_bytes, "%s: write failed: %s", w->tmp_path, strerror(errno));
    data_idx_writer_abort(w);
    return -1;
  }
  return 0;
}

int data_idx_writer_write(data_idx_writer *w, const void *buf, int64_t bytes, char *err,
                          size_t err_bytes) {
  if (bytes < 0 || bytes > w->body_bytes - w->body_written) {
    snprintf(err, err_bytes, "%s: writing past the %lld-byte body the header promised",
             w->final_path, (long long)w->body_bytes);
    return -1;
  }
  if (writer_body(w, buf, (size_t)bytes) != 0) {
    snprintf(err, err_bytes, "%s: write failed: %s", w->tmp_path, strerror(errno));
    return -1;
  }
  w->crc = (uint32_t)crc32_z(w->crc, buf, (size_t)bytes);
  w->body_written += bytes;
  return 0;
}

int data_idx_writer_commit(data_idx_writer *w, char *err, size_t err_bytes) {
  if (w->body_written != w->body_bytes) {
    snprintf(err, err_bytes, "%s: %lld of %lld body bytes written", w->final_path,
             (long long)w->body_written, (long long)w->body_bytes);
    return -1;
  }
  if (w->gz) {
    int rc = gzclose((gzFile)w->gz);
    w->gz = NULL;
    if (rc != Z_OK) {
      snprintf(err, err_bytes, "%s: finishing the gzip stream failed", w->tmp_path);
      return -1;
    }
  }
  if (fsync(w->fd) != 0 || close(w->fd) != 0) {
    w->fd = -1;
    snprintf(err, err_bytes, "%s: fsync failed: %s", w->tmp_path, strerror(errno));
    return -1;
  }
  w->fd = -1;
  if (rename(w->tmp_path, w->final_path) != 0) {
    snprintf(err, err_bytes, "%s: rename failed: %s", w->final_path, strerror(errno));
    return -1;
  }
  w->tmp_path[0] = '\0';
  writer_sync_dir(w->final_path);
  return 0;
}

void data_idx_writer_abort(data_idx_writer *w) {
  if (w->gz) gzclose((gzFile)w->gz);
  w->gz = NULL;
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  if (w->tmp_path[0]) unlink(w->tmp_path);
  w->tmp_path[0] = '\0';
}
