/* The idx reader: a byte source (raw read() or streamed inflate) under a
 * header parser that trusts nothing it has not checked in 64-bit arithmetic. */
#include "data/idx_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/idx.h"

#define IDX_IN_BYTES (256 * 1024)
#define IDX_CHUNK_MAX (1 << 30) /* largest single read()/inflate() request */

struct data_idx_reader {
  int fd, own_fd;
  char path[4096];
  int gzip;
  data_idx_kind want;
  data_idx_header h;
  int64_t offset;     /* content bytes delivered (header included) */
  int64_t file_bytes; /* file size from the start position */
  int64_t file_pos;   /* file bytes pulled into `in` or read directly */
  int crc_on;
  uint32_t crc;
  uint8_t *in; /* IDX_IN_BYTES of file bytes; [in_next, in_next + in_avail) unread */
  uint8_t *in_next;
  size_t in_avail;
  int eof;        /* read() returned 0 */
  z_stream z;
  int z_ready;
  int member_end; /* inflate reached the end of a gzip member */
};

static const char *idx_kind_name(const data_idx_reader *r) {
  uint32_t m = r->h.magic ? r->h.magic : r->want == DATA_IDX_IMAGES ? DATA_IDX_MAGIC_IMAGES
                          : r->want == DATA_IDX_LABELS ? DATA_IDX_MAGIC_LABELS : 0;
  return m == DATA_IDX_MAGIC_IMAGES ? "images" : m == DATA_IDX_MAGIC_LABELS ? "labels" : "idx";
}

static int64_t idx_gz_pos(const data_idx_reader *r) {
  return r->file_pos - (int64_t)r->in_avail;
}

/* Keeps unread bytes, appends what read() gives; sets eof at the end. */
static int idx_in_fill(data_idx_reader *r, char *err, size_t err_bytes) {
  if (r->in_avail && r->in_next != r->in) memmove(r->in, r->in_next, r->in_avail);
  r->in_next = r->in;
  for (;;) {
    ssize_t n = read(r->fd, r->in + r->in_avail, IDX_IN_BYTES - r->in_avail);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      snprintf(err, err_bytes, "%s: file byte %lld: read error: %s", r->path,
               (long long)r->file_pos, strerror(errno));
      return -1;
    }
    if (n == 0) r->eof = 1;
    r->in_avail += (size_t)n;
    r->file_pos += n;
    return 0;
  }
}

static int idx_raw_read(data_idx_reader *r, uint8_t *dst, size_t len, size_t *got, char *err,
                        size_t err_bytes) {
  size_t done = r->in_avail < len ? r->in_avail : len;
  memcpy(dst, r->in_next, done);
  r->in_next += done;
  r->in_avail -= done;
  while (done < len) {
    size_t want = len - done > IDX_CHUNK_MAX ? IDX_CHUNK_MAX : len - done;
    ssize_t n = read(r->fd, dst + done, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      snprintf(err, err_bytes, "%s: byte %lld: read error: %s", r->path,
               (long long)(r->offset + (int64_t)done), strerror(errno));
      return -1;
    }
    if (n == 0) break;
    done += (size_t)n;
    r->file_pos += n;
  }
  *got = done;
  return 0;
}

/* After a member: more input must be another member (1f 8b) or nothing. */
static int idx_gz_next_member(data_idx_reader *r, int *more, char *err, size_t err_bytes) {
  while (r->in_avail < 2 && !r->eof) {
    if (idx_in_fill(r, err, err_bytes) != 0) return -1;
  }
  *more = 0;
  if (r->in_avail == 0) return 0;
  if (r->in_avail >= 2 && r->in_next[0] == 0x1f && r->in_next[1] == 0x8b) {
    inflateReset(&r->z);
    r->member_end = 0;
    *more = 1;
    return 0;
  }
  snprintf(err, err_bytes,
           "%s: gzip byte %lld: trailing garbage after the gzip stream (%lld byte(s) that are "
           "not a gzip member)", r->path, (long long)idx_gz_pos(r),
           (long long)(r->file_bytes - idx_gz_pos(r)));
  return -1;
}

static int idx_gz_read(data_idx_reader *r, uint8_t *dst, size_t len, size_t *got, char *err,
                       size_t err_bytes) {
  size_t done = 0;
  while (done < len) {
    if (r->member_end) {
      int more = 0;
      if (idx_gz_next_member(r, &more, err, err_bytes) != 0) return -1;
      if (!more) break; /* the content ends here, cleanly */
      continue;
    }
    if (r->in_avail == 0) {
      if (r->eof) {
        snprintf(err, err_bytes,
                 "%s: gzip byte %lld: truncated gzip stream (the file ends inside it, at "
                 "content byte %lld)", r->path, (long long)r->file_pos,
                 (long long)(r->offset + (int64_t)done));
        return -1;
      }
      if (idx_in_fill(r, err, err_bytes) != 0) return -1;
      continue;
    }
    size_t want = len - done > IDX_CHUNK_MAX ? IDX_CHUNK_MAX : len - done;
    r->z.next_in = r->in_next;
    r->z.avail_in = (uInt)r->in_avail;
    r->z.next_out = dst + done;
    r->z.avail_out = (uInt)want;
    int rc = inflate(&r->z, Z_NO_FLUSH);
    done += want - r->z.avail_out;
    r->in_next = r->z.next_in;
    r->in_avail = r->z.avail_in;
    if (rc == Z_STREAM_END) {
      r->member_end = 1;
    } else if (rc == Z_BUF_ERROR && r->in_avail == 0) {
      continue; /* needs more input: the loop refills or reports truncation */
    } else if (rc != Z_OK) {
      snprintf(err, err_bytes, "%s: gzip byte %lld: corrupt gzip data: %s (content byte %lld)",
               r->path, (long long)idx_gz_pos(r), r->z.msg ? r->z.msg : zError(rc),
               (long long)(r->offset + (int64_t)done));
      return -1;
    }
  }
  *got = done;
  return 0;
}

/* Up to len content bytes; *got < len only where the content ends cleanly. */
static int idx_src_read(data_idx_reader *r, void *dst, size_t len, size_t *got, char *err,
                        size_t err_bytes) {
  int rc = r->gzip ? idx_gz_read(r, dst, len, got, err, err_bytes)
                   : idx_raw_read(r, dst, len, got, err, err_bytes);
  if (rc == 0) r->offset += (int64_t)*got;
  return rc;
}

static uint32_t idx_be32(const uint8_t *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Exactly len header bytes, or "truncated ... inside the header". */
static int idx_header_bytes(data_idx_reader *r, uint8_t *dst, size_t len, int64_t hdr_len,
                            char *err, size_t err_bytes) {
  size_t got = 0;
  if (idx_src_read(r, dst, len, &got, err, err_bytes) != 0) return -1;
  if (got < len) {
    snprintf(err, err_bytes, "%s: byte %lld: truncated inside the %s header (%lld bytes)",
             r->path, (long long)r->offset, idx_kind_name(r), (long long)hdr_len);
    return -1;
  }
  return 0;
}

static int idx_check_magic(data_idx_reader *r, const uint8_t *b, data_idx_kind kind, char *err,
                           size_t err_bytes) {
  uint32_t magic = idx_be32(b);
  uint32_t want = kind == DATA_IDX_IMAGES ? DATA_IDX_MAGIC_IMAGES
                : kind == DATA_IDX_LABELS ? DATA_IDX_MAGIC_LABELS : 0;
  int known = magic == DATA_IDX_MAGIC_IMAGES || magic == DATA_IDX_MAGIC_LABELS;
  if ((want && magic != want) || (!want && !known)) {
    size_t n = strlen(r->path);
    const char *hint = !r->gzip && n > 3 && strcmp(r->path + n - 3, ".gz") == 0
                           ? "; the name ends in .gz but the content is not gzip" : "";
    if (want) {
      snprintf(err, err_bytes, "%s: byte 0: wrong magic 0x%08x (%s need 0x%08x)%s", r->path,
               magic, kind == DATA_IDX_IMAGES ? "images" : "labels", want, hint);
    } else {
      snprintf(err, err_bytes, "%s: byte 0: wrong magic 0x%08x (idx needs 0x%08x images or "
               "0x%08x labels)%s", r->path, magic, DATA_IDX_MAGIC_IMAGES, DATA_IDX_MAGIC_LABELS,
               hint);
    }
    return -1;
  }
  r->h.magic = magic;
  r->h.ndims = magic == DATA_IDX_MAGIC_IMAGES ? 3 : 1;
  r->h.header_bytes = 4 + 4 * (int64_t)r->h.ndims;
  return 0;
}

/* count*rows*cols in 64 bits: three 32-bit factors can overflow it. */
static int idx_check_dims(data_idx_reader *r, const uint8_t *b, char *err, size_t err_bytes) {
  static const char *const names[3] = {"count", "rows", "cols"};
  uint64_t bytes = 1, sample = 1;
  for (int i = 0; i < r->h.ndims; i++) {
    r->h.dims[i] = idx_be32(b + 4 * i);
    if (r->h.dims[i] == 0) {
      snprintf(err, err_bytes, "%s: byte %d: zero dimension (%s = 0)", r->path, 4 + 4 * i,
               names[i]);
      return -1;
    }
    if (__builtin_mul_overflow(bytes, (uint64_t)r->h.dims[i], &bytes)) {
      snprintf(err, err_bytes, "%s: byte 4: count*rows*cols = %u*%u*%u overflows 64 bits",
               r->path, r->h.dims[0], r->h.dims[1], idx_be32(b + 8));
      return -1;
    }
    if (i > 0) sample *= r->h.dims[i];
  }
  if (bytes > (uint64_t)INT64_MAX - (uint64_t)r->h.header_bytes) {
    snprintf(err, err_bytes, "%s: byte 4: the header promises %llu bytes, more than any file "
             "can hold", r->path, (unsigned long long)bytes);
    return -1;
  }
  r->h.count = r->h.dims[0];
  r->h.sample_bytes = (int64_t)sample;
  r->h.body_bytes = (int64_t)bytes;
  return 0;
}

/* A raw file's size is known: check it against the header before reading. */
static int idx_check_raw_size(data_idx_reader *r, char *err, size_t err_bytes) {
  const int64_t total = r->h.header_bytes + r->h.body_bytes;
  if (r->file_bytes < total) {
    snprintf(err, err_bytes, "%s: byte %lld: truncated inside the %s body (the header promises "
             "%lld samples of %lld bytes, %lld bytes in all)", r->path, (long long)r->file_bytes,
             idx_kind_name(r), (long long)r->h.count, (long long)r->h.sample_bytes,
             (long long)total);
    return -1;
  }
  if (r->file_bytes > total) {
    snprintf(err, err_bytes, "%s: byte %lld: trailing data: %lld bytes after the %s body "
             "(the header promised no more)", r->path, (long long)total,
             (long long)(r->file_bytes - total), idx_kind_name(r));
    return -1;
  }
  return 0;
}

static int idx_read_header(data_idx_reader *r, data_idx_kind kind, char *err, size_t err_bytes) {
  uint8_t b[16];
  int64_t hdr_guess = kind == DATA_IDX_LABELS ? 8 : 16;
  if (idx_header_bytes(r, b, 4, hdr_guess, err, err_bytes) != 0) return -1;
  if (idx_check_magic(r, b, kind, err, err_bytes) != 0) return -1;
  if (idx_header_bytes(r, b + 4, 4 * (size_t)r->h.ndims, r->h.header_bytes, err,
                       err_bytes) != 0) {
    return -1;
  }
  if (idx_check_dims(r, b + 4, err, err_bytes) != 0) return -1;
  return r->gzip ? 0 : idx_check_raw_size(r, err, err_bytes);
}

static int idx_setup(data_idx_reader *r, data_idx_kind kind, char *err, size_t err_bytes) {
  struct stat st;
  if (fstat(r->fd, &st) != 0) {
    snprintf(err, err_bytes, "%s: %s", r->path, strerror(errno));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) {
    snprintf(err, err_bytes, "%s: is a directory, not an idx file", r->path);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, err_bytes, "%s: not a regular file", r->path);
    return -1;
  }
  off_t pos = lseek(r->fd, 0, SEEK_CUR);
  r->file_bytes = (int64_t)st.st_size - (pos > 0 ? (int64_t)pos : 0);
  if (r->file_bytes <= 0) {
    snprintf(err, err_bytes, "%s: byte 0: empty file (an idx file starts with a %d-byte header)",
             r->path, kind == DATA_IDX_LABELS ? 8 : 16);
    return -1;
  }
  r->in = malloc(IDX_IN_BYTES);
  if (!r->in) {
    snprintf(err, err_bytes, "%s: out of memory", r->path);
    return -1;
  }
  r->in_next = r->in;
  while (r->in_avail < 2 && !r->eof) {
    if (idx_in_fill(r, err, err_bytes) != 0) return -1;
  }
  r->gzip = r->in_avail >= 2 && r->in_next[0] == 0x1f && r->in_next[1] == 0x8b;
  if (r->gzip) {
    if (inflateInit2(&r->z, 15 + 16) != Z_OK) {
      snprintf(err, err_bytes, "%s: zlib inflateInit2 failed", r->path);
      return -1;
    }
    r->z_ready = 1;
  }
  r->crc = (uint32_t)crc32(0L, Z_NULL, 0);
  return idx_read_header(r, kind, err, err_bytes);
}

int data_idx_open_fd(data_idx_reader **out, int fd, const char *name, data_idx_kind kind,
                     char *err, size_t err_bytes) {
  *out = NULL;
  data_idx_reader *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, err_bytes, "%s: out of memory", name);
    return -1;
  }
  r->fd = fd;
  r->want = kind;
  snprintf(r->path, sizeof r->path, "%s", name);
  if (idx_setup(r, kind, err, err_bytes) != 0) {
    data_idx_close(r);
    return -1;
  }
  *out = r;
  return 0;
}

int data_idx_open(data_idx_reader **out, const char *path, data_idx_kind kind, char *err,
                  size_t err_bytes) {
  *out = NULL;
  /* O_NONBLOCK: a FIFO (or device) named like an idx file would block open()
   * forever; idx_setup then rejects anything but a regular file. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  if (data_idx_open_fd(out, fd, path, kind, err, err_bytes) != 0) {
    close(fd);
    return -1;
  }
  (*out)->own_fd = 1;
  return 0;
}

int data_idx_open_pair(data_idx_reader **images, data_idx_reader **labels, const char *images_path,
                       const char *labels_path, char *err, size_t err_bytes) {
  *labels = NULL;
  if (data_idx_open(images, images_path, DATA_IDX_IMAGES, err, err_bytes) != 0) return -1;
  if (data_idx_open(labels, labels_path, DATA_IDX_LABELS, err, err_bytes) != 0) goto fail;
  const int64_t ni = (*images)->h.count, nl = (*labels)->h.count;
  if (nl == ni) return 0;
  snprintf(err, err_bytes, "%s: byte 4: %lld labels but the images file has %lld images",
           labels_path, (long long)nl, (long long)ni);
fail:
  data_idx_close(*images);
  data_idx_close(*labels);
  *images = *labels = NULL;
  return -1;
}

void data_idx_close(data_idx_reader *r) {
  if (!r) return;
  if (r->z_ready) inflateEnd(&r->z);
  if (r->own_fd) close(r->fd);
  free(r->in);
  free(r);
}

const data_idx_header *data_idx_header_of(const data_idx_reader *r) { return &r->h; }
const char *data_idx_path(const data_idx_reader *r) { return r->path; }
int data_idx_is_gzip(const data_idx_reader *r) { return r->gzip; }
int64_t data_idx_offset(const data_idx_reader *r) { return r->offset; }
int64_t data_idx_file_bytes(const data_idx_reader *r) { return r->file_bytes; }
uint32_t data_idx_body_crc(const data_idx_reader *r) { return r->crc; }
void data_idx_track_crc(data_idx_reader *r, int on) { r->crc_on = on; }

int data_idx_read(data_idx_reader *r, void *buf, int64_t bytes, char *err, size_t err_bytes) {
  const int64_t end = r->h.header_bytes + r->h.body_bytes;
  if (bytes < 0 || bytes > end - r->offset) {
    snprintf(err, err_bytes, "%s: byte %lld: a read of %lld bytes goes past the body's end at "
             "byte %lld", r->path, (long long)r->offset, (long long)bytes, (long long)end);
    return -1;
  }
  size_t got = 0;
  if (idx_src_read(r, buf, (size_t)bytes, &got, err, err_bytes) != 0) return -1;
  if (r->crc_on) r->crc = (uint32_t)crc32_z(r->crc, buf, got);
  if ((int64_t)got < bytes) {
    snprintf(err, err_bytes, "%s: byte %lld: truncated inside the %s body (the header promises "
             "%lld bytes in all)", r->path, (long long)r->offset, idx_kind_name(r),
             (long long)end);
    return -1;
  }
  return 0;
}

int data_idx_finish(data_idx_reader *r, char *err, size_t err_bytes) {
  const int64_t end = r->h.header_bytes + r->h.body_bytes;
  if (r->offset != end) {
    snprintf(err, err_bytes, "%s: byte %lld: finished before the body's end at byte %lld",
             r->path, (long long)r->offset, (long long)end);
    return -1;
  }
  uint8_t extra;
  size_t got = 0;
  if (idx_src_read(r, &extra, 1, &got, err, err_bytes) != 0) return -1;
  if (got) {
    snprintf(err, err_bytes, "%s: byte %lld: trailing data after the %s body (the header "
             "promised no more)", r->path, (long long)end, idx_kind_name(r));
    return -1;
  }
  return 0;
}

int data_idx_check_labels(const data_idx_reader *r, const uint8_t *labels, int64_t n,
                          int64_t first, char *err, size_t err_bytes) {
  for (int64_t i = 0; i < n; i++) {
    if (labels[i] >= DATA_CLASSES) {
      snprintf(err, err_bytes, "%s: byte %lld: label %u out of range 0..%d (sample %lld)",
               r->path, (long long)(r->h.header_bytes + first + i), labels[i], DATA_CLASSES - 1,
               (long long)(first + i));
      return -1;
    }
  }
  return 0;
}
