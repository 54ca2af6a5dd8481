/* idx reading and validation. zlib's gz* calls read raw files too, so one
 * code path serves both; every size is checked in 64-bit arithmetic. */
#include "data/idx.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static const char *const idx_names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

static char *idx_slot(data_files *f, int k) {
  char *slots[4] = {f->train_images, f->train_labels, f->test_images, f->test_labels};
  return slots[k];
}

/* Depth-first walk; the first match in sorted order wins so the choice is stable. */
static int idx_walk(data_files *f, const char *dir, int depth, char *err, size_t err_bytes) {
  struct dirent **list = NULL;
  int n = scandir(dir, &list, NULL, alphasort);
  if (n < 0) {
    if (depth == 0) {
      snprintf(err, err_bytes, "--data-folder %s: %s", dir, strerror(errno));
      return -1;
    }
    return 0; /* unreadable subfolders are skipped, not fatal */
  }
  for (int i = 0; i < n; i++) {
    const char *name = list[i]->d_name;
    char path[4096];
    struct stat st;
    if (name[0] == '.' || snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path ||
        stat(path, &st) != 0) {
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (depth < 16 && idx_walk(f, path, depth + 1, err, err_bytes) != 0) goto fail;
      continue;
    }
    for (int k = 0; k < 4; k++) {
      size_t len = strlen(idx_names[k]);
      int match = strncmp(name, idx_names[k], len) == 0 &&
                  (name[len] == '\0' || strcmp(name + len, ".gz") == 0);
      if (match && idx_slot(f, k)[0] == '\0') snprintf(idx_slot(f, k), 4096, "%s", path);
    }
  }
  for (int i = 0; i < n; i++) free(list[i]);
  free(list);
  return 0;
fail:
  for (int i = 0; i < n; i++) free(list[i]);
  free(list);
  return -1;
}

int data_files_find(data_files *out, const char *dir, char *err, size_t err_bytes) {
  memset(out, 0, sizeof *out);
  struct stat st;
  if (stat(dir, &st) != 0) {
    snprintf(err, err_bytes, "--data-folder %s: %s", dir, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(err, err_bytes, "--data-folder %s: not a directory", dir);
    return -1;
  }
  if (idx_walk(out, dir, 0, err, err_bytes) != 0) return -1;
  for (int k = 0; k < 4; k++) {
    if (idx_slot(out, k)[0] == '\0') {
      snprintf(err, err_bytes, "--data-folder %s: no %s or %s.gz found under it", dir,
               idx_names[k], idx_names[k]);
      return -1;
    }
  }
  return 0;
}

typedef struct {
  gzFile gz;
  const char *path;
  int64_t offset; /* uncompressed bytes consumed so far */
} idx_stream;

/* Reads exactly len bytes or fails naming the offset: truncated or corrupt. */
static int idx_read(idx_stream *s, void *buf, int64_t len, const char *what, char *err,
                    size_t err_bytes) {
  uint8_t *p = buf;
  while (len > 0) {
    unsigned chunk = len > (1 << 30) ? (1u << 30) : (unsigned)len;
    int got = gzread(s->gz, p, chunk);
    if (got < 0) {
      int zerr = 0;
      const char *msg = gzerror(s->gz, &zerr);
      snprintf(err, err_bytes, "%s: corrupt at byte %lld while reading %s: %s", s->path,
               (long long)s->offset, what, msg);
      return -1;
    }
    if (got == 0) {
      snprintf(err, err_bytes, "%s: truncated at byte %lld while reading %s", s->path,
               (long long)s->offset, what);
      return -1;
    }
    p += got;
    len -= got;
    s->offset += got;
  }
  return 0;
}

static uint32_t idx_be32(const uint8_t *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int idx_open(idx_stream *s, const char *path, char *err, size_t err_bytes) {
  struct stat st;
  s->path = path;
  s->offset = 0;
  s->gz = NULL;
  if (stat(path, &st) != 0) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, err_bytes, "%s: not a regular file", path);
    return -1;
  }
  s->gz = gzopen(path, "rb");
  if (!s->gz) {
    snprintf(err, err_bytes, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib");
    return -1;
  }
  gzbuffer(s->gz, 1 << 17);
  return 0;
}

/* After the body, nothing may follow: a longer file is not the file we think. */
static int idx_expect_end(idx_stream *s, char *err, size_t err_bytes) {
  uint8_t extra;
  int got = gzread(s->gz, &extra, 1);
  if (got > 0) {
    snprintf(err, err_bytes, "%s: trailing data after byte %lld (header promised no more)",
             s->path, (long long)s->offset);
    return -1;
  }
  if (got < 0) {
    int zerr = 0;
    snprintf(err, err_bytes, "%s: corrupt at byte %lld: %s", s->path, (long long)s->offset,
             gzerror(s->gz, &zerr));
    return -1;
  }
  return 0;
}

static int idx_load_images(data_set *ds, const char *path, int expect_784, char *err,
                           size_t err_bytes) {
  idx_stream s;
  uint8_t hdr[16];
  int rc = -1;
  if (idx_open(&s, path, err, err_bytes) != 0) return -1;
  if (idx_read(&s, hdr, 16, "the images header", err, err_bytes) != 0) goto out;
  uint32_t magic = idx_be32(hdr);
  if (magic != DATA_IDX_MAGIC_IMAGES) {
    snprintf(err, err_bytes, "%s: wrong magic 0x%08x at byte 0 (images need 0x%08x)", path,
             magic, DATA_IDX_MAGIC_IMAGES);
    goto out;
  }
  uint32_t count = idx_be32(hdr + 4), rows = idx_be32(hdr + 8), cols = idx_be32(hdr + 12);
  if (count == 0 || rows == 0 || cols == 0 || count > INT32_MAX) {
    snprintf(err, err_bytes, "%s: bad dimensions count=%u rows=%u cols=%u in header", path,
             count, rows, cols);
    goto out;
  }
  if ((uint64_t)rows * cols > (1u << 24) || (expect_784 && (uint64_t)rows * cols != 784)) {
    snprintf(err, err_bytes, "%s: rows*cols = %u*%u = %llu, the model needs 784", path, rows,
             cols, (unsigned long long)rows * cols);
    goto out;
  }
  int64_t bytes = (int64_t)count * rows * cols;
  ds->images = malloc((size_t)bytes);
  if (!ds->images) {
    snprintf(err, err_bytes, "%s: out of memory for %lld bytes of images", path, (long long)bytes);
    goto out;
  }
  if (idx_read(&s, ds->images, bytes, "the images body", err, err_bytes) != 0) goto out;
  if (idx_expect_end(&s, err, err_bytes) != 0) goto out;
  ds->count = count;
  ds->rows = (int32_t)rows;
  ds->cols = (int32_t)cols;
  rc = 0;
out:
  gzclose(s.gz);
  return rc;
}

static int idx_load_labels(data_set *ds, const char *path, char *err, size_t err_bytes) {
  idx_stream s;
  uint8_t hdr[8];
  int rc = -1;
  if (idx_open(&s, path, err, err_bytes) != 0) return -1;
  if (idx_read(&s, hdr, 8, "the labels header", err, err_bytes) != 0) goto out;
  uint32_t magic = idx_be32(hdr), count = idx_be32(hdr + 4);
  if (magic != DATA_IDX_MAGIC_LABELS) {
    snprintf(err, err_bytes, "%s: wrong magic 0x%08x at byte 0 (labels need 0x%08x)", path,
             magic, DATA_IDX_MAGIC_LABELS);
    goto out;
  }
  if ((int64_t)count != ds->count) {
    snprintf(err, err_bytes, "%s: %u labels but the images file has %lld images", path, count,
             (long long)ds->count);
    goto out;
  }
  ds->labels = malloc(count);
  if (!ds->labels) {
    snprintf(err, err_bytes, "%s: out of memory", path);
    goto out;
  }
  if (idx_read(&s, ds->labels, count, "the labels body", err, err_bytes) != 0) goto out;
  for (uint32_t i = 0; i < count; i++) {
    if (ds->labels[i] >= DATA_CLASSES) {
      snprintf(err, err_bytes, "%s: label %u out of range 0..9 at byte %lld (sample %u)", path,
               ds->labels[i], 8LL + i, i);
      goto out;
    }
  }
  if (idx_expect_end(&s, err, err_bytes) != 0) goto out;
  rc = 0;
out:
  gzclose(s.gz);
  return rc;
}

int data_set_load(data_set *ds, const char *images_path, const char *labels_path,
                  int expect_784, char *err, size_t err_bytes) {
  memset(ds, 0, sizeof *ds);
  if (idx_load_images(ds, images_path, expect_784, err, err_bytes) != 0 ||
      idx_load_labels(ds, labels_path, err, err_bytes) != 0) {
    data_set_free(ds);
    return -1;
  }
  return 0;
}

void data_set_free(data_set *ds) {
  if (!ds) return;
  free(ds->images);
  free(ds->labels);
  memset(ds, 0, sizeof *ds);
}
