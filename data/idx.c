/* Finding the idx files of a data folder, and loading a pair into memory
 * through the validating reader of data/idx_reader.c. */
#include "data/idx.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/idx_reader.h"

#define IDX_NAMES 5
static const char *const idx_names[IDX_NAMES] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte", DATA_SHARDS_INDEX_NAME};

static char *idx_slot(data_files *f, int k) {
  char *slots[IDX_NAMES] = {f->train_images, f->train_labels, f->test_images, f->test_labels,
                            f->train_shards};
  return slots[k];
}

/* Which name this entry carries: the plain name, or (idx files) name.gz. */
static int idx_name_match(const char *name, int k) {
  size_t len = strlen(idx_names[k]);
  return strncmp(name, idx_names[k], len) == 0 &&
         (name[len] == '\0' || (k < 4 && strcmp(name + len, ".gz") == 0));
}

typedef struct {
  data_files *f;
  char dir_named[IDX_NAMES][4096]; /* a folder carrying the name: reported if no file is */
  char skipped[4200];  /* the first entry that could not be looked into, and why */
  char paired[2][2][4096]; /* train, test: the first folder's images and labels side by side */
  char split[2][8400];     /* a pair found only in different folders, said if it is needed */
  struct { dev_t dev; ino_t ino; } *seen; /* folders walked: links back up are not re-walked */
  size_t nseen, cap_seen;
} idx_search;

static void idx_note_skip(idx_search *s, const char *path, const char *why) {
  if (!s->skipped[0]) snprintf(s->skipped, sizeof s->skipped, "%s: %s", path, why);
}

/* Marks a folder walked; 0 when it already was (a symlink loop, which
 * would otherwise multiply the walk by every link at every level). */
static int idx_first_visit(idx_search *s, const struct stat *st) {
  for (size_t i = 0; i < s->nseen; i++) {
    if (s->seen[i].dev == st->st_dev && s->seen[i].ino == st->st_ino) return 0;
  }
  if (s->nseen == s->cap_seen) {
    size_t cap = s->cap_seen ? 2 * s->cap_seen : 64;
    void *grown = realloc(s->seen, cap * sizeof *s->seen);
    if (!grown) return 0; /* out of memory: walk no further */
    s->seen = grown;
    s->cap_seen = cap;
  }
  s->seen[s->nseen].dev = st->st_dev;
  s->seen[s->nseen++].ino = st->st_ino;
  return 1;
}

/* A folder's own files first: the first folder holding both files of a pair
 * gives that pair, so a partial set beside a whole one (say fashion/ with
 * only its train images, mnist/ complete) never makes a mixed pair. */
static void idx_take_pairs(idx_search *s, char here[IDX_NAMES][4096]) {
  for (int k = 0; k < IDX_NAMES; k++) {
    char *slot = idx_slot(s->f, k);
    if (here[k][0] && slot[0] == '\0') snprintf(slot, 4096, "%s", here[k]);
  }
  for (int p = 0; p < 2; p++) {
    if (!s->paired[p][0][0] && here[2 * p][0] && here[2 * p + 1][0]) {
      snprintf(s->paired[p][0], 4096, "%s", here[2 * p]);
      snprintf(s->paired[p][1], 4096, "%s", here[2 * p + 1]);
    }
  }
}

/* Depth-first walk in sorted order, a folder's files before its subfolders;
 * each folder once. */
static int idx_walk(idx_search *s, const char *dir, int depth, char *err, size_t err_bytes) {
  struct dirent **list = NULL;
  int n = scandir(dir, &list, NULL, alphasort);
  if (n < 0) {
    if (depth == 0) {
      snprintf(err, err_bytes, "--data-folder %s: %s", dir, strerror(errno));
      return -1;
    }
    idx_note_skip(s, dir, strerror(errno)); /* skipped, not fatal, but said if nothing is found */
    return 0;
  }
  char (*here)[4096] = calloc(IDX_NAMES, 4096);
  char *is_dir = calloc((size_t)n + 1, 1);
  for (int i = 0; here && is_dir && i < n; i++) {
    const char *name = list[i]->d_name;
    char path[4096];
    struct stat st;
    if (name[0] == '.' || snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
      continue;
    }
    if (stat(path, &st) != 0) {
      idx_note_skip(s, path, errno == ENOENT ? "a broken symbolic link" : strerror(errno));
      continue;
    }
    is_dir[i] = S_ISDIR(st.st_mode) && depth < 16 && idx_first_visit(s, &st);
    for (int k = 0; k < IDX_NAMES; k++) {
      if (!idx_name_match(name, k)) continue;
      char *slot = S_ISDIR(st.st_mode) ? s->dir_named[k] : here[k];
      if (slot[0] == '\0') snprintf(slot, 4096, "%s", path);
    }
  }
  if (here && is_dir) idx_take_pairs(s, here);
  for (int i = 0; here && is_dir && i < n; i++) {
    char path[4096];
    if (is_dir[i] && snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name) < (int)sizeof path) {
      idx_walk(s, path, depth + 1, err, err_bytes);
    }
  }
  free(here);
  free(is_dir);
  for (int i = 0; i < n; i++) free(list[i]);
  free(list);
  return 0;
}

/* Each pair from one folder; a pair whose files were only found apart is
 * not used, and named if it is needed. */
static void idx_settle_pairs(idx_search *s) {
  for (int p = 0; p < 2; p++) {
    char *images = idx_slot(s->f, 2 * p), *labels = idx_slot(s->f, 2 * p + 1);
    if (s->paired[p][0][0]) {
      snprintf(images, 4096, "%s", s->paired[p][0]);
      snprintf(labels, 4096, "%s", s->paired[p][1]);
    } else if (images[0] && labels[0]) {
      snprintf(s->split[p], sizeof s->split[p], "%s and %s are in different folders; an images "
               "file and its labels must be side by side", images, labels);
      images[0] = labels[0] = '\0';
    }
  }
}

static int idx_missing(const idx_search *s, const char *dir, int k, char *err, size_t err_bytes) {
  if (k < 4 && s->split[k / 2][0]) {
    snprintf(err, err_bytes, "--data-folder %s: %s", dir, s->split[k / 2]);
    return -1;
  }
  if (s->dir_named[k][0]) {
    snprintf(err, err_bytes, "%s: is a directory, not an idx file (no file %s found under "
             "--data-folder %s)", s->dir_named[k], idx_names[k], dir);
  } else if (k == 4) {
    snprintf(err, err_bytes, "--data-folder %s: no %s found under it", dir, idx_names[k]);
  } else {
    snprintf(err, err_bytes, "--data-folder %s: no %s or %s.gz found under it", dir,
             idx_names[k], idx_names[k]);
  }
  size_t len = strlen(err);
  if (s->skipped[0] && len < err_bytes) {
    snprintf(err + len, err_bytes - len, " (skipped %s)", s->skipped);
  }
  return -1;
}

static int idx_search_run(idx_search *s, data_files *out, const char *dir, char *err,
                          size_t err_bytes) {
  memset(out, 0, sizeof *out);
  memset(s, 0, sizeof *s);
  s->f = out;
  struct stat st;
  if (stat(dir, &st) != 0) {
    snprintf(err, err_bytes, "--data-folder %s: %s", dir, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(err, err_bytes, "--data-folder %s: not a directory", dir);
    return -1;
  }
  idx_first_visit(s, &st);
  if (idx_walk(s, dir, 0, err, err_bytes) != 0) return -1;
  idx_settle_pairs(s);
  return 0;
}

/* Which files must be there: all four, or (stream) the test pair plus the
 * train pair or a shard index. */
static int idx_check_found(const idx_search *s, const data_files *out, const char *dir, int stream,
                           char *err, size_t err_bytes) {
  for (int k = stream ? 2 : 0; k < 4; k++) {
    if (idx_slot(s->f, k)[0] != '\0') continue;
    idx_missing(s, dir, k, err, err_bytes);
    if (k < 2 && out->train_shards[0]) { /* a folder made by `tfdist data shard` */
      size_t len = strlen(err);
      snprintf(err + len, err_bytes - len, "; it holds the shard index %s: add --data-mode stream "
               "to train on the shards", out->train_shards);
    }
    return -1;
  }
  if (!stream || out->train_shards[0]) return 0;
  for (int k = 0; k < 2; k++) {
    if (idx_slot(s->f, k)[0] == '\0') {
      idx_missing(s, dir, k, err, err_bytes);
      size_t len = strlen(err);
      snprintf(err + len, err_bytes - len, ", nor a %s (make one with tfdist data shard)",
               DATA_SHARDS_INDEX_NAME);
      return -1;
    }
  }
  return 0;
}

static int idx_find(data_files *out, const char *dir, int stream, char *err, size_t err_bytes) {
  idx_search *s = malloc(sizeof *s); /* 57 KiB of paths: off the stack, and no shared static */
  if (!s) {
    snprintf(err, err_bytes, "--data-folder %s: out of memory", dir);
    return -1;
  }
  int rc = idx_search_run(s, out, dir, err, err_bytes);
  if (rc == 0) rc = idx_check_found(s, out, dir, stream, err, err_bytes);
  free(s->seen);
  free(s);
  return rc;
}

int data_files_find(data_files *out, const char *dir, char *err, size_t err_bytes) {
  return idx_find(out, dir, 0, err, err_bytes);
}

int data_files_find_stream(data_files *out, const char *dir, char *err, size_t err_bytes) {
  return idx_find(out, dir, 1, err, err_bytes);
}

/* The body into memory. A raw file's size was checked against the header, so
 * it is allocated at once; a gzip stream grows its buffer as bytes arrive. */
static int idx_read_body(data_idx_reader *r, uint8_t **out, char *err, size_t err_bytes) {
  const data_idx_header *h = data_idx_header_of(r);
  const int64_t body = h->body_bytes, step = (int64_t)16 << 20;
  int64_t cap = data_idx_is_gzip(r) && body > (1 << 20) ? (1 << 20) : body, have = 0;
  uint8_t *buf = malloc((size_t)cap);
  while (buf && have < body) {
    if (have == cap) {
      cap = cap > body / 2 ? body : cap * 2;
      uint8_t *grown = realloc(buf, (size_t)cap);
      if (!grown) break;
      buf = grown;
    }
    int64_t n = cap - have < step ? cap - have : step;
    if (data_idx_read(r, buf + have, n, err, err_bytes) != 0) {
      free(buf);
      return -1;
    }
    have += n;
  }
  if (!buf || have < body) {
    free(buf);
    snprintf(err, err_bytes, "%s: out of memory for %lld bytes", data_idx_path(r),
             (long long)body);
    return -1;
  }
  *out = buf;
  return 0;
}

static int idx_load_images(data_set *ds, const char *path, int expect_784, char *err,
                           size_t err_bytes) {
  data_idx_reader *r = NULL;
  int rc = -1;
  if (data_idx_open(&r, path, DATA_IDX_IMAGES, err, err_bytes) != 0) return -1;
  const data_idx_header *h = data_idx_header_of(r);
  if (expect_784 && h->sample_bytes != 784) {
    snprintf(err, err_bytes, "%s: byte 8: rows*cols = %u*%u = %lld, the model needs 784", path,
             h->dims[1], h->dims[2], (long long)h->sample_bytes);
    goto out;
  }
  if (h->count > INT32_MAX || h->sample_bytes > INT32_MAX) {
    snprintf(err, err_bytes, "%s: byte 4: %lld samples of %lld bytes: too large to load into "
             "memory (use --data-mode stream)", path, (long long)h->count,
             (long long)h->sample_bytes);
    goto out;
  }
  if (idx_read_body(r, &ds->images, err, err_bytes) != 0) goto out;
  if (data_idx_finish(r, err, err_bytes) != 0) goto out;
  ds->count = h->count;
  ds->rows = (int32_t)h->dims[1];
  ds->cols = (int32_t)h->dims[2];
  rc = 0;
out:
  data_idx_close(r);
  return rc;
}

static int idx_load_labels(data_set *ds, const char *path, char *err, size_t err_bytes) {
  data_idx_reader *r = NULL;
  int rc = -1;
  if (data_idx_open(&r, path, DATA_IDX_LABELS, err, err_bytes) != 0) return -1;
  const data_idx_header *h = data_idx_header_of(r);
  if (h->count != ds->count) {
    snprintf(err, err_bytes, "%s: byte 4: %lld labels but the images file has %lld images", path,
             (long long)h->count, (long long)ds->count);
    goto out;
  }
  if (idx_read_body(r, &ds->labels, err, err_bytes) != 0) goto out;
  if (data_idx_check_labels(r, ds->labels, h->count, 0, err, err_bytes) != 0) goto out;
  if (data_idx_finish(r, err, err_bytes) != 0) goto out;
  rc = 0;
out:
  data_idx_close(r);
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

int data_set_load_images(data_set *ds, const char *images_path, int expect_784, char *err,
                         size_t err_bytes) {
  memset(ds, 0, sizeof *ds);
  if (idx_load_images(ds, images_path, expect_784, err, err_bytes) != 0) {
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
