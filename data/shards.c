/* The shard index (read and write) and the shard writer. Index format, one
 * record per line, '#' lines ignored:
 *   tfdist-shards 1
 *   samples N
 *   dims ROWS COLS
 *   shards K
 *   shard I FIRST COUNT IMAGES_CRC LABELS_CRC IMAGES_FILE LABELS_FILE   (K lines) */
#include "data/shards.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "data/idx.h"
#include "data/idx_reader.h"
#include "data/idx_writer.h"

#define SHARDS_INDEX_MAX_BYTES (64 << 20)

void data_shards_free(data_shards *s) {
  if (!s) return;
  free(s->shards);
  memset(s, 0, sizeof *s);
}

int64_t data_shards_rank_samples(const data_shards *s, int rank, int world) {
  int64_t n = 0;
  for (int64_t k = rank; k < s->count; k += world) n += s->shards[k].count;
  return n;
}

static char *shards_read_text(const char *path, char *err, size_t err_bytes) {
  /* O_NONBLOCK: opening a FIFO would wait forever for a writer; it is
   * refused below as not a regular file. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  struct stat st;
  if (!f) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return NULL;
  }
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SHARDS_INDEX_MAX_BYTES) {
    snprintf(err, err_bytes, "%s: not a regular file of at most %d bytes", path,
             SHARDS_INDEX_MAX_BYTES);
    fclose(f);
    return NULL;
  }
  char *text = malloc((size_t)st.st_size + 1);
  size_t got = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
  fclose(f);
  if (!text || got != (size_t)st.st_size) {
    free(text);
    snprintf(err, err_bytes, "%s: cannot read", path);
    return NULL;
  }
  text[got] = '\0';
  if (strlen(text) != got) {
    snprintf(err, err_bytes, "%s: byte %zu: NUL byte in a text index", path, strlen(text));
    free(text);
    return NULL;
  }
  return text;
}

/* A file name inside the index's folder: no '/', no leading '.'. */
static int shards_name_ok(const char *name) {
  return name[0] != '\0' && name[0] != '.' && strchr(name, '/') == NULL && strlen(name) < 512;
}

typedef struct {
  data_shards *s;
  const char *path;
  char dir[4096];
  int line;
  int64_t next_first;
  int64_t seen;
  int have[4]; /* magic, samples, dims, shards */
} shards_parse;

static int shards_fail(shards_parse *p, char *err, size_t err_bytes, const char *what) {
  snprintf(err, err_bytes, "%s: line %d: %s", p->path, p->line, what);
  return -1;
}

static int shards_parse_shard(shards_parse *p, const char *line, char *err, size_t err_bytes) {
  data_shards *s = p->s;
  long long idx, first, count;
  unsigned icrc, lcrc;
  char iname[512], lname[512], extra[2];
  if (!p->have[1] || !p->have[2] || !p->have[3]) {
    return shards_fail(p, err, err_bytes, "a shard line before samples, dims and shards");
  }
  if (sscanf(line, "shard %lld %lld %lld %x %x %511s %511s %1s", &idx, &first, &count, &icrc,
             &lcrc, iname, lname, extra) != 7) {
    return shards_fail(p, err, err_bytes,
                       "expected: shard I FIRST COUNT IMAGES_CRC LABELS_CRC IMAGES LABELS");
  }
  if (idx != p->seen || idx >= s->count) {
    return shards_fail(p, err, err_bytes, "shard numbers must run 0, 1, ... below 'shards'");
  }
  if (first != p->next_first || count < 1 || count > s->samples - first) {
    return shards_fail(p, err, err_bytes,
                       "shard ranges must tile 0..samples-1 in order, each non-empty");
  }
  if (!shards_name_ok(iname) || !shards_name_ok(lname)) {
    return shards_fail(p, err, err_bytes, "shard file names must be plain names in this folder");
  }
  data_shard *d = &s->shards[idx];
  if (snprintf(d->images, sizeof d->images, "%s/%s", p->dir, iname) >= (int)sizeof d->images ||
      snprintf(d->labels, sizeof d->labels, "%s/%s", p->dir, lname) >= (int)sizeof d->labels) {
    return shards_fail(p, err, err_bytes, "path too long");
  }
  d->first = first;
  d->count = count;
  d->images_crc = icrc;
  d->labels_crc = lcrc;
  d->has_crc = 1;
  p->next_first += count;
  p->seen++;
  return 0;
}

static int shards_parse_line(shards_parse *p, const char *line, char *err, size_t err_bytes) {
  data_shards *s = p->s;
  long long a, b;
  char extra[2];
  if (line[0] == '#' || line[strspn(line, " \t\r")] == '\0') return 0;
  if (!p->have[0]) {
    if (sscanf(line, "tfdist-shards %lld %1s", &a, extra) != 1 || a != 1) {
      return shards_fail(p, err, err_bytes, "not a tfdist shard index (want 'tfdist-shards 1')");
    }
    p->have[0] = 1;
  } else if (!strncmp(line, "samples ", 8)) {
    if (p->have[1] || sscanf(line, "samples %lld %1s", &a, extra) != 1 || a < 1 ||
        a > INT64_MAX / 2) {
      return shards_fail(p, err, err_bytes, "bad 'samples N'");
    }
    s->samples = a;
    p->have[1] = 1;
  } else if (!strncmp(line, "dims ", 5)) {
    if (p->have[2] || sscanf(line, "dims %lld %lld %1s", &a, &b, extra) != 2 || a < 1 ||
        b < 1 || a > 65535 || b > 65535) {
      return shards_fail(p, err, err_bytes, "bad 'dims ROWS COLS' (each 1..65535)");
    }
    s->rows = (int32_t)a;
    s->cols = (int32_t)b;
    p->have[2] = 1;
  } else if (!strncmp(line, "shards ", 7)) {
    if (p->have[3] || !p->have[1] || sscanf(line, "shards %lld %1s", &a, extra) != 1 || a < 1 ||
        a > DATA_SHARDS_MAX || a > s->samples) {
      return shards_fail(p, err, err_bytes, "bad 'shards K' (1..samples, after 'samples')");
    }
    s->count = a;
    s->shards = calloc((size_t)a, sizeof *s->shards);
    if (!s->shards) return shards_fail(p, err, err_bytes, "out of memory");
    p->have[3] = 1;
  } else if (!strncmp(line, "shard ", 6)) {
    return shards_parse_shard(p, line, err, err_bytes);
  } else {
    return shards_fail(p, err, err_bytes, "unknown record");
  }
  return 0;
}

int data_shards_load(data_shards *s, const char *index_path, char *err, size_t err_bytes) {
  memset(s, 0, sizeof *s);
  shards_parse p = {.s = s, .path = index_path};
  snprintf(s->path, sizeof s->path, "%s", index_path);
  snprintf(p.dir, sizeof p.dir, "%s", index_path);
  char *slash = strrchr(p.dir, '/');
  if (slash) *slash = '\0';
  else snprintf(p.dir, sizeof p.dir, ".");
  char *text = shards_read_text(index_path, err, err_bytes);
  if (!text) return -1;
  int rc = -1;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    p.line++;
    if (strlen(line) > 2048) {
      shards_fail(&p, err, err_bytes, "line too long");
      goto out;
    }
    if (shards_parse_line(&p, line, err, err_bytes) != 0) goto out;
  }
  p.line++;
  if (!p.have[0] || !p.have[1] || !p.have[2] || !p.have[3]) {
    shards_fail(&p, err, err_bytes, "incomplete index (needs tfdist-shards, samples, dims, shards)");
  } else if (p.seen != s->count || p.next_first != s->samples) {
    shards_fail(&p, err, err_bytes, "the shard lines do not cover all shards and samples");
  } else {
    rc = 0;
  }
out:
  free(text);
  if (rc != 0) data_shards_free(s);
  return rc;
}

int data_shards_from_pair(data_shards *s, const char *images, const char *labels, char *err,
                          size_t err_bytes) {
  memset(s, 0, sizeof *s);
  data_idx_reader *ri = NULL, *rl = NULL;
  int rc = -1;
  if (data_idx_open_pair(&ri, &rl, images, labels, err, err_bytes) != 0) goto out;
  const data_idx_header *hi = data_idx_header_of(ri);
  s->shards = calloc(1, sizeof *s->shards);
  if (!s->shards) {
    snprintf(err, err_bytes, "out of memory");
    goto out;
  }
  snprintf(s->path, sizeof s->path, "%s", images);
  s->samples = hi->count;
  s->rows = (int32_t)hi->dims[1];
  s->cols = (int32_t)hi->dims[2];
  s->count = 1;
  snprintf(s->shards[0].images, sizeof s->shards[0].images, "%s", images);
  snprintf(s->shards[0].labels, sizeof s->shards[0].labels, "%s", labels);
  s->shards[0].count = hi->count;
  rc = 0;
out:
  data_idx_close(ri);
  data_idx_close(rl);
  return rc;
}

/* ---- writing ---- */

struct data_shards_out {
  char dir[4096];
  int64_t samples, k, written;
  uint32_t rows, cols;
  int gzip_level;
  int64_t cur;               /* shard being written, or -1 */
  data_idx_writer wi, wl;
  char (*names)[2][512];     /* (k) images and labels file names */
  uint32_t (*crcs)[2];
};

static int64_t shards_first(int64_t k, int64_t samples, int64_t i) {
  /* floor(samples*i/k) without forming the product: the remainder term stays < k*k */
  return samples / k * i + samples % k * i / k;
}

int data_shards_out_init(data_shards_out **out, const char *out_dir, int64_t samples,
                         int64_t k, uint32_t rows, uint32_t cols, int gzip_level, char *err,
                         size_t err_bytes) {
  *out = NULL;
  if (k < 1 || k > DATA_SHARDS_MAX || k > samples) {
    snprintf(err, err_bytes, "--shards: %lld is out of range [1, min(%d, %lld samples)]",
             (long long)k, DATA_SHARDS_MAX, (long long)samples);
    return -1;
  }
  if ((samples + k - 1) / k > UINT32_MAX) {
    snprintf(err, err_bytes, "--shards: %lld shards of %lld samples exceed the idx limit of "
             "2^32-1 per file", (long long)k, (long long)samples);
    return -1;
  }
  if (fs_mkdirs(out_dir, err, err_bytes) != 0) return -1;
  data_shards_out *o = calloc(1, sizeof *o);
  if (!o || !(o->names = calloc((size_t)k, sizeof *o->names)) ||
      !(o->crcs = calloc((size_t)k, sizeof *o->crcs))) {
    data_shards_out_free(o);
    snprintf(err, err_bytes, "out of memory");
    return -1;
  }
  snprintf(o->dir, sizeof o->dir, "%s", out_dir);
  o->samples = samples;
  o->k = k;
  o->rows = rows;
  o->cols = cols;
  o->gzip_level = gzip_level;
  o->cur = -1;
  o->wi.fd = o->wl.fd = -1;
  const char *gz = gzip_level > 0 ? ".gz" : "";
  for (int64_t i = 0; i < k; i++) {
    snprintf(o->names[i][0], 512, "train-images-idx3-ubyte-%05lld-of-%05lld%s", (long long)i,
             (long long)k, gz);
    snprintf(o->names[i][1], 512, "train-labels-idx1-ubyte-%05lld-of-%05lld%s", (long long)i,
             (long long)k, gz);
  }
  *out = o;
  return 0;
}

static int shards_out_open(data_shards_out *o, int64_t i, char *err, size_t err_bytes) {
  char pi[4700], pl[4700];
  int64_t count = shards_first(o->k, o->samples, i + 1) - shards_first(o->k, o->samples, i);
  snprintf(pi, sizeof pi, "%s/%s", o->dir, o->names[i][0]);
  snprintf(pl, sizeof pl, "%s/%s", o->dir, o->names[i][1]);
  if (data_idx_writer_open(&o->wi, pi, DATA_IDX_MAGIC_IMAGES, count, o->rows, o->cols,
                           o->gzip_level, err, err_bytes) != 0) {
    return -1;
  }
  if (data_idx_writer_open(&o->wl, pl, DATA_IDX_MAGIC_LABELS, count, 0, 0, o->gzip_level, err,
                           err_bytes) != 0) {
    data_idx_writer_abort(&o->wi);
    return -1;
  }
  o->cur = i;
  return 0;
}

static int shards_out_close(data_shards_out *o, char *err, size_t err_bytes) {
  if (data_idx_writer_commit(&o->wi, err, err_bytes) != 0 ||
      data_idx_writer_commit(&o->wl, err, err_bytes) != 0) {
    return -1;
  }
  o->crcs[o->cur][0] = o->wi.crc;
  o->crcs[o->cur][1] = o->wl.crc;
  o->cur = -1;
  return 0;
}

int data_shards_out_write(data_shards_out *o, const uint8_t *images, const uint8_t *labels,
                          int64_t n, char *err, size_t err_bytes) {
  const int64_t px = (int64_t)o->rows * o->cols;
  if (n < 0 || n > o->samples - o->written) {
    snprintf(err, err_bytes, "%s: more samples than the %lld promised", o->dir,
             (long long)o->samples);
    return -1;
  }
  while (n > 0) {
    if (o->cur < 0 && shards_out_open(o, 0, err, err_bytes) != 0) return -1;
    const int64_t shard = o->cur;
    int64_t end = shards_first(o->k, o->samples, shard + 1);
    int64_t m = end - o->written < n ? end - o->written : n;
    if (data_idx_writer_write(&o->wi, images, m * px, err, err_bytes) != 0 ||
        data_idx_writer_write(&o->wl, labels, m, err, err_bytes) != 0) {
      return -1;
    }
    images += m * px;
    labels += m;
    n -= m;
    o->written += m;
    if (o->written == end) {
      if (shards_out_close(o, err, err_bytes) != 0) return -1;
      if (shard + 1 < o->k && shards_out_open(o, shard + 1, err, err_bytes) != 0) return -1;
    }
  }
  return 0;
}

int data_shards_out_finish(data_shards_out *o, char *err, size_t err_bytes) {
  if (o->written != o->samples) {
    snprintf(err, err_bytes, "%s: %lld of %lld samples written", o->dir, (long long)o->written,
             (long long)o->samples);
    return -1;
  }
  size_t cap = 256 + (size_t)o->k * 1200, len = 0;
  char *text = malloc(cap);
  if (!text) {
    snprintf(err, err_bytes, "out of memory");
    return -1;
  }
  len += (size_t)snprintf(text + len, cap - len,
                          "tfdist-shards 1\n# written by tfdist data shard/synth\n"
                          "samples %lld\ndims %u %u\nshards %lld\n",
                          (long long)o->samples, o->rows, o->cols, (long long)o->k);
  for (int64_t i = 0; i < o->k; i++) {
    int64_t first = shards_first(o->k, o->samples, i);
    len += (size_t)snprintf(text + len, cap - len, "shard %lld %lld %lld %08x %08x %s %s\n",
                            (long long)i, (long long)first,
                            (long long)(shards_first(o->k, o->samples, i + 1) - first),
                            o->crcs[i][0], o->crcs[i][1], o->names[i][0], o->names[i][1]);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", o->dir, DATA_SHARDS_INDEX_NAME);
  int rc = fs_write_atomic(path, text, len, err, err_bytes);
  free(text);
  return rc;
}

void data_shards_out_free(data_shards_out *o) {
  if (!o) return;
  if (o->cur >= 0) {
    data_idx_writer_abort(&o->wi);
    data_idx_writer_abort(&o->wl);
  }
  free(o->names);
  free(o->crcs);
  free(o);
}

int data_shards_split(const char *images, const char *labels, const char *out_dir, int64_t k,
                      int gzip_level, char *err, size_t err_bytes) {
  data_idx_reader *ri = NULL, *rl = NULL;
  data_shards_out *o = NULL;
  uint8_t *ibuf = NULL, *lbuf = NULL;
  int rc = -1;
  if (data_idx_open_pair(&ri, &rl, images, labels, err, err_bytes) != 0) goto out;
  const data_idx_header *hi = data_idx_header_of(ri);
  if (hi->sample_bytes > (1 << 24)) {
    snprintf(err, err_bytes, "%s: byte 8: samples of %lld bytes are too large to shard", images,
             (long long)hi->sample_bytes);
    goto out;
  }
  if (data_shards_out_init(&o, out_dir, hi->count, k, hi->dims[1], hi->dims[2], gzip_level,
                           err, err_bytes) != 0) {
    goto out;
  }
  const int64_t chunk = (8 << 20) / hi->sample_bytes + 1;
  ibuf = malloc((size_t)(chunk * hi->sample_bytes));
  lbuf = malloc((size_t)chunk);
  if (!ibuf || !lbuf) {
    snprintf(err, err_bytes, "out of memory");
    goto out;
  }
  for (int64_t at = 0; at < hi->count; at += chunk) {
    int64_t n = hi->count - at < chunk ? hi->count - at : chunk;
    if (data_idx_read(ri, ibuf, n * hi->sample_bytes, err, err_bytes) != 0 ||
        data_idx_read(rl, lbuf, n, err, err_bytes) != 0 ||
        data_idx_check_labels(rl, lbuf, n, at, err, err_bytes) != 0 ||
        data_shards_out_write(o, ibuf, lbuf, n, err, err_bytes) != 0) {
      goto out;
    }
  }
  if (data_idx_finish(ri, err, err_bytes) != 0 || data_idx_finish(rl, err, err_bytes) != 0) {
    goto out;
  }
  rc = data_shards_out_finish(o, err, err_bytes);
out:
  free(ibuf);
  free(lbuf);
  data_shards_out_free(o);
  data_idx_close(ri);
  data_idx_close(rl);
  return rc;
}
