/* `tfdist data`: look at, check, make and split idx data sets
 * (inspect, verify, synth, shard). The work itself lives in data/. */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "data/idx_reader.h"
#include "data/render.h"
#include "data/shards.h"
#include "data/synth.h"
#include "data/verify.h"
#include "base/clock.h"
#include "cli/cli.h"
#include "base/options.h"

#define F(type, field) offsetof(type, field)
#define CLI_DATA_CHUNK (4 << 20)

static int cli_data_error(const char *msg) {
  fprintf(stderr, "tfdist: error: %s\n", msg);
  return CLI_USAGE;
}

/* Parses flags and up to max_pos positionals; 1 = handled (help or error). */
static int cli_data_parse(const opt_table *t, const char *usage, void *obj, int argc, char **argv,
                          const char **pos, int max_pos, int *npos, int *rc) {
  char err[1024];
  if (opt_wants_help(argc, argv)) {
    opt_print_help(t, usage, stdout);
    *rc = CLI_OK;
    return 1;
  }
  if (opt_defaults(t, obj, err, sizeof err) != 0 ||
      opt_apply_argv(t, obj, argc, argv, pos, max_pos, npos, err, sizeof err) != 0) {
    *rc = cli_data_error(err);
    return 1;
  }
  return 0;
}

/* ---- inspect ---- */

typedef struct {
  int64_t sample, scale;
  char out[OPT_STR_BYTES];
} inspect_opts;

static const opt_spec inspect_specs[] = {
  {"sample", OPT_INT, F(inspect_opts, sample), "0", 0, 4294967295.0, NULL,
   "which sample to render (images files)"},
  {"out", OPT_STRING, F(inspect_opts, out), NULL, 0, 0, NULL,
   "write the sample as a picture: FILE.pgm or FILE.png"},
  {"scale", OPT_INT, F(inspect_opts, scale), "1", 1, 64, NULL,
   "--out: each pixel as an NxN block (28x28 at 10: 280x280)"},
};
static const opt_table inspect_table = {inspect_specs, 3, "data inspect"};

/* Reads `bytes` of body, keeping the part at [keep_at, keep_at + keep_len). */
static int cli_data_pass(data_idx_reader *r, uint8_t *buf, int64_t bytes, uint8_t *keep,
                         int64_t keep_at, int64_t keep_len, int64_t *hist, char *err,
                         size_t err_bytes) {
  int64_t at = 0;
  while (at < bytes) {
    int64_t n = bytes - at < CLI_DATA_CHUNK ? bytes - at : CLI_DATA_CHUNK;
    if (data_idx_read(r, buf, n, err, err_bytes) != 0) return -1;
    if (hist) {
      if (data_idx_check_labels(r, buf, n, at, err, err_bytes) != 0) return -1;
      for (int64_t i = 0; i < n; i++) hist[buf[i]]++;
    }
    int64_t lo = keep_at > at ? keep_at : at;
    int64_t hi = keep_at + keep_len < at + n ? keep_at + keep_len : at + n;
    if (keep && lo < hi) memcpy(keep + (lo - keep_at), buf + (lo - at), (size_t)(hi - lo));
    at += n;
  }
  return data_idx_finish(r, err, err_bytes);
}

static void cli_data_print_hist(const int64_t *hist, int64_t count) {
  printf("labels:\n");
  for (int c = 0; c < DATA_CLASSES; c++) {
    printf("  %d  %10lld  %6.2f%%\n", c, (long long)hist[c],
           count ? 100.0 * (double)hist[c] / (double)count : 0.0);
  }
}

/* train-images-idx3-ubyte[.gz|-NNNNN-of-NNNNN] -> the labels file beside it. */
static int cli_data_sibling_labels(const char *images, char *out, size_t out_bytes) {
  const char *tag = strstr(images, "-images-idx3-ubyte");
  const char *slash = strrchr(images, '/');
  if (!tag || (slash && tag < slash)) return -1;
  snprintf(out, out_bytes, "%.*s-labels-idx1-ubyte%s", (int)(tag - images), images,
           tag + strlen("-images-idx3-ubyte"));
  FILE *f = fopen(out, "rb");
  if (f) fclose(f);
  return f ? 0 : -1;
}

static int cli_data_inspect_index(const char *path) {
  data_shards s;
  char err[1024];
  if (data_shards_load(&s, path, err, sizeof err) != 0) return cli_data_error(err);
  printf("file:    %s\nkind:    shard index\nsamples: %lld of %dx%d\nshards:  %lld\n", path,
         (long long)s.samples, s.rows, s.cols, (long long)s.count);
  for (int64_t i = 0; i < s.count && i < 50; i++) {
    const data_shard *d = &s.shards[i];
    printf("  %5lld  first %12lld  count %10lld  crc %08x %08x  %s\n", (long long)i,
           (long long)d->first, (long long)d->count, d->images_crc, d->labels_crc, d->images);
  }
  if (s.count > 50) printf("  ... %lld more\n", (long long)(s.count - 50));
  data_shards_free(&s);
  return CLI_OK;
}

static int cli_data_inspect_labels_of(const char *images, int64_t k, int64_t count) {
  char path[4200], err[1024];
  int64_t hist[DATA_CLASSES] = {0};
  data_idx_reader *r = NULL;
  if (cli_data_sibling_labels(images, path, sizeof path) != 0) return -1;
  uint8_t *buf = malloc(CLI_DATA_CHUNK), label = 0;
  int rc = -1;
  if (!buf || data_idx_open(&r, path, DATA_IDX_LABELS, err, sizeof err) != 0) goto out;
  if (data_idx_header_of(r)->count != count) {
    snprintf(err, sizeof err, "%.900s: byte 4: %lld labels but the images file has %lld images",
             path, (long long)data_idx_header_of(r)->count, (long long)count);
    goto out;
  }
  if (cli_data_pass(r, buf, count, &label, k, 1, hist, err, sizeof err) != 0) goto out;
  printf("labels file: %s\n", path);
  cli_data_print_hist(hist, count);
  printf("sample %lld: label %u\n", (long long)k, label);
  rc = 0;
out:
  if (rc != 0 && buf) fprintf(stderr, "tfdist: warning: %s\n", err);
  free(buf);
  data_idx_close(r);
  return rc;
}

static int cli_data_inspect_file(const inspect_opts *o, const char *path) {
  char err[1024];
  data_idx_reader *r = NULL;
  uint8_t *buf = NULL, *px = NULL;
  int rc = CLI_USAGE;
  if (data_idx_open(&r, path, DATA_IDX_ANY, err, sizeof err) != 0) return cli_data_error(err);
  const data_idx_header *h = data_idx_header_of(r);
  int images = h->magic == DATA_IDX_MAGIC_IMAGES;
  printf("file:    %s\nformat:  %s, %lld bytes on disk\nmagic:   0x%08x (%s)\n", path,
         data_idx_is_gzip(r) ? "gzip" : "raw", (long long)data_idx_file_bytes(r), h->magic,
         images ? "images" : "labels");
  if (images) printf("dims:    %u x %u x %u\n", h->dims[0], h->dims[1], h->dims[2]);
  else printf("dims:    %u\n", h->dims[0]);
  if (images && (o->sample >= h->count || h->sample_bytes > (1 << 26))) {
    snprintf(err, sizeof err, "--sample %lld: %s has samples 0..%lld of %lld bytes",
             (long long)o->sample, path, (long long)h->count - 1, (long long)h->sample_bytes);
    rc = cli_data_error(err);
    goto out;
  }
  int64_t hist[DATA_CLASSES] = {0};
  buf = malloc(CLI_DATA_CHUNK);
  px = images ? malloc((size_t)h->sample_bytes) : NULL;
  data_idx_track_crc(r, 1);
  if (!buf || (images && !px)) {
    rc = cli_data_error("out of memory");
    goto out;
  }
  if (cli_data_pass(r, buf, h->body_bytes, px, o->sample * h->sample_bytes, h->sample_bytes,
                    images ? NULL : hist, err, sizeof err) != 0) {
    rc = cli_data_error(err);
    goto out;
  }
  printf("body:    %lld bytes, CRC-32 %08x; header, sizes%s all valid\n",
         (long long)h->body_bytes, data_idx_body_crc(r), images ? "" : " and labels");
  if (!images) {
    cli_data_print_hist(hist, h->count);
    rc = CLI_OK;
    goto out;
  }
  cli_data_inspect_labels_of(path, o->sample, h->count);
  printf("sample %lld (%ux%u):\n", (long long)o->sample, h->dims[1], h->dims[2]);
  data_render_ascii(stdout, px, h->dims[1], h->dims[2]);
  if (o->out[0]) {
    const uint32_t k = (uint32_t)o->scale, rows = h->dims[1] * k, cols = h->dims[2] * k;
    uint8_t *big = data_render_scale(px, h->dims[1], h->dims[2], k);
    if (!big) {
      rc = cli_data_error("--scale: out of memory");
      goto out;
    }
    int bad = data_render_file(o->out, big, rows, cols, err, sizeof err);
    free(big);
    if (bad) {
      rc = cli_data_error(err);
      goto out;
    }
    printf("wrote %s (%ux%u)\n", o->out, cols, rows);
  }
  rc = CLI_OK;
out:
  free(buf);
  free(px);
  data_idx_close(r);
  return rc;
}

static int cli_data_inspect(int argc, char **argv) {
  static inspect_opts o;
  const char *pos[1];
  int npos = 0, rc;
  if (cli_data_parse(&inspect_table,
                     "usage: tfdist data inspect FILE [--sample K] [--out F.png [--scale N]]\n"
                     "  Header, counts, label histogram and a picture of sample K of an idx\n"
                     "  file (raw or .gz), or the table of a shard index.",
                     &o, argc, argv, pos, 1, &npos, &rc)) {
    return rc;
  }
  if (npos != 1) return cli_data_error("tfdist data inspect: needs one FILE");
  /* O_NONBLOCK: a FIFO must not block the sniff; the reader refuses it. */
  int fd = open(pos[0], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  char head[16] = {0};
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    ssize_t got = read(fd, head, sizeof head - 1);
    head[got > 0 ? got : 0] = '\0';
  }
  if (fd >= 0) close(fd);
  if (!strncmp(head, "tfdist-shards", 13)) return cli_data_inspect_index(pos[0]);
  return cli_data_inspect_file(&o, pos[0]);
}

/* ---- verify ---- */

typedef struct {
  int need_784;
} verify_opts;

static const opt_spec verify_specs[] = {
  {"need-784", OPT_BOOL, F(verify_opts, need_784), "on", 0, 0, NULL,
   "samples must be 28x28 = 784 pixels, as the model needs"},
};
static const opt_table verify_table = {verify_specs, 1, "data verify"};

static void cli_data_report(const char *what, const char *images, const data_pair_report *r) {
  printf("ok    %-6s %s  %lld samples of %ux%u, CRC-32 %08x %08x\n", what, images,
         (long long)r->count, r->rows, r->cols, r->images_crc, r->labels_crc);
}

static int cli_data_verify_shards(const char *index, int *failed) {
  data_shards s;
  data_pair_report rep;
  char err[1024];
  if (data_shards_load(&s, index, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    (*failed)++;
    return 0;
  }
  int bad = 0;
  for (int64_t i = 0; i < s.count; i++) {
    if (data_shard_verify(&s, i, &rep, err, sizeof err) != 0) {
      fprintf(stderr, "tfdist: error: %s\n", err);
      bad++;
    }
  }
  if (!bad && s.rows * s.cols != 784) {
    fprintf(stderr, "tfdist: error: %s: dims %dx%d, the model needs 784 pixels\n", index, s.rows,
            s.cols);
    bad++;
  }
  if (!bad) {
    printf("ok    shards %s  %lld shards, %lld samples of %dx%d, CRCs match\n", index,
           (long long)s.count, (long long)s.samples, s.rows, s.cols);
  }
  *failed += bad;
  data_shards_free(&s);
  return 0;
}

static int cli_data_verify(int argc, char **argv) {
  static verify_opts o;
  static data_files files;
  const char *pos[1];
  int npos = 0, rc, failed = 0, checked = 0;
  char err[1024];
  if (cli_data_parse(&verify_table, "usage: tfdist data verify DIR\n"
                     "  Every check on the idx files found under DIR (train and t10k pairs,\n"
                     "  and the shards of a train-shards.index): headers, sizes, gzip CRCs,\n"
                     "  labels, counts. Exit 0 only when all pass.",
                     &o, argc, argv, pos, 1, &npos, &rc)) {
    return rc;
  }
  if (npos != 1) return cli_data_error("tfdist data verify: needs one DIR");
  if (data_files_find_stream(&files, pos[0], err, sizeof err) != 0) {
    /* DIR came as an argument here, not as --data-folder */
    const char *flag = "--data-folder ";
    return cli_data_error(strncmp(err, flag, strlen(flag)) == 0 ? err + strlen(flag) : err);
  }
  const char *pairs[2][3] = {{"train", files.train_images, files.train_labels},
                             {"t10k", files.test_images, files.test_labels}};
  for (int i = 0; i < 2; i++) {
    data_pair_report rep;
    if (!pairs[i][1][0]) continue;
    checked++;
    if (data_pair_verify(pairs[i][1], pairs[i][2], o.need_784, &rep, err, sizeof err) != 0) {
      fprintf(stderr, "tfdist: error: %s\n", err);
      failed++;
    } else {
      cli_data_report(pairs[i][0], pairs[i][1], &rep);
    }
  }
  if (files.train_shards[0]) {
    checked++;
    cli_data_verify_shards(files.train_shards, &failed);
  }
  printf("%s: %d checked, %d failed\n", failed ? "FAILED" : "ok", checked, failed);
  return failed ? CLI_USAGE : CLI_OK;
}

/* ---- synth ---- */

/* --pattern, in synth_pattern_names' order */
typedef enum { SYNTH_PATTERN_CLASSES, SYNTH_PATTERN_INDEX } synth_pattern;
static const char *const synth_pattern_names[] = {"classes", "index", NULL};

typedef struct {
  int64_t count, test_count, seed, shards;
  int gzip;
  char out[OPT_STR_BYTES];
  synth_pattern pattern;
} synth_opts;

static const opt_spec synth_specs[] = {
  {"count", OPT_INT, F(synth_opts, count), "0", 0, 9.0e15, NULL, "training samples (required)"},
  {"test-count", OPT_INT, F(synth_opts, test_count), "0", 0, 4294967295.0, NULL,
   "test samples (0: count/6, at least 1, at most 10000)"},
  {"out", OPT_STRING, F(synth_opts, out), NULL, 0, 0, NULL, "output folder (required)"},
  {"seed", OPT_INT, F(synth_opts, seed), "1", 0, 9.0e15, NULL, "the set is a function of it"},
  {"shards", OPT_INT, F(synth_opts, shards), "0", 0, DATA_SHARDS_MAX, NULL,
   "write the train split as this many shards plus train-shards.index (0: one pair)"},
  {"gzip", OPT_BOOL, F(synth_opts, gzip), "off", 0, 0, NULL, "write .gz files"},
  {"pattern", OPT_CHOICE, F(synth_opts, pattern), "classes", 0, 0, synth_pattern_names,
   "classes: learnable noisy class blobs; index: pixels 0..7 hold the sample index"},
};
static const opt_table synth_table = {synth_specs, 7, "data synth"};

/* A line on stderr every 2 s once a write has run 2 s: a million samples take
 * several seconds, and silence reads as a hang. */
typedef struct {
  double t0, next;
} synth_progress;

static void cli_data_synth_progress(void *ctx, int64_t done, int64_t total) {
  synth_progress *p = ctx;
  const double now = clock_mono_s();
  if (now < p->next || done >= total) return;
  p->next = now + 2.0;
  fprintf(stderr, "data synth: %lld of %lld train samples (%.0f%%), %.1f s\n", (long long)done,
          (long long)total, 100.0 * (double)done / (double)total, now - p->t0);
}

static int cli_data_synth(int argc, char **argv) {
  static synth_opts o;
  static data_synth s;
  int rc;
  char err[1024];
  if (cli_data_parse(&synth_table, "usage: tfdist data synth --count N --out DIR [flags]\n"
                     "  Writes a deterministic synthetic idx data set (the four files, or\n"
                     "  train shards plus an index) for tests and streaming benchmarks.",
                     &o, argc, argv, NULL, 0, NULL, &rc)) {
    return rc;
  }
  if (o.count < 1) return cli_data_error("--count: required, at least 1");
  if (!o.out[0]) return cli_data_error("--out: required");
  int64_t test = o.test_count ? o.test_count : o.count / 6 < 1 ? 1
               : o.count / 6 > 10000 ? 10000 : o.count / 6;
  data_synth_init(&s, (uint64_t)o.seed, o.pattern == SYNTH_PATTERN_INDEX ? DATA_SYNTH_INDEX
                                                                          : DATA_SYNTH_CLASSES);
  double t0 = clock_mono_s();
  synth_progress prog = {t0, t0 + 2.0};
  s.progress = cli_data_synth_progress;
  s.progress_ctx = &prog;
  if (data_synth_write(o.out, &s, o.count, test, o.shards, o.gzip ? 6 : 0, err, sizeof err) != 0) {
    return cli_data_error(err);
  }
  double dt = clock_mono_s() - t0;
  char split[64] = "";
  if (o.shards) snprintf(split, sizeof split, " in %lld shards", (long long)o.shards);
  printf("wrote %s: %lld train samples%s, %lld test samples, pattern %s, seed %lld "
         "(%.1f s, %.0f MB/s)\n", o.out, (long long)o.count, split, (long long)test,
         synth_pattern_names[o.pattern],
         (long long)o.seed, dt, (double)(o.count + test) * 785.0 / 1e6 / (dt > 0 ? dt : 1e-9));
  return CLI_OK;
}

/* ---- shard ---- */

typedef struct {
  int64_t shards;
  int gzip;
  char out[OPT_STR_BYTES];
  char images[OPT_STR_BYTES];
  char labels[OPT_STR_BYTES];
} shard_opts;

static const opt_spec shard_specs[] = {
  {"shards", OPT_INT, F(shard_opts, shards), "0", 0, DATA_SHARDS_MAX, NULL,
   "how many shard pairs (required)"},
  {"out", OPT_STRING, F(shard_opts, out), NULL, 0, 0, NULL, "output folder (required)"},
  {"gzip", OPT_BOOL, F(shard_opts, gzip), "off", 0, 0, NULL, "write .gz shards"},
  {"images", OPT_STRING, F(shard_opts, images), NULL, 0, 0, NULL,
   "images file to split (instead of a DIR)"},
  {"labels", OPT_STRING, F(shard_opts, labels), NULL, 0, 0, NULL, "its labels file"},
};
static const opt_table shard_table = {shard_specs, 5, "data shard"};

/* The test pair goes along, so the output folder is a whole --data-folder. */
static int cli_data_copy_test(const data_files *f, const char *out, char *err, size_t err_bytes) {
  const char *src[2] = {f->test_images, f->test_labels};
  data_set check;
  if (data_set_load(&check, f->test_images, f->test_labels, 0, err, err_bytes) != 0) return -1;
  data_set_free(&check);
  for (int i = 0; i < 2; i++) {
    const char *base = strrchr(src[i], '/') ? strrchr(src[i], '/') + 1 : src[i];
    char dst[8300];
    snprintf(dst, sizeof dst, "%s/%s", out, base);
    FILE *in = fopen(src[i], "rb");
    if (!in) {
      snprintf(err, err_bytes, "%s: cannot open", src[i]);
      return -1;
    }
    char *data = NULL;
    size_t len = 0, cap = 0, got;
    do {
      if (len == cap) {
        char *grown = realloc(data, cap = cap ? cap * 2 : 1 << 20);
        if (!grown) break;
        data = grown;
      }
      got = fread(data + len, 1, cap - len, in);
      len += got;
    } while (got > 0);
    fclose(in);
    int rc = data ? fs_write_atomic(dst, data, len, err, err_bytes) : -1;
    if (!data) snprintf(err, err_bytes, "%s: out of memory", src[i]);
    free(data);
    if (rc != 0) return -1;
  }
  return 0;
}

static int cli_data_shard(int argc, char **argv) {
  static shard_opts o;
  static data_files files;
  const char *pos[1];
  int npos = 0, rc;
  char err[1024];
  if (cli_data_parse(&shard_table, "usage: tfdist data shard --shards K --out DIR (SRC_DIR | "
                     "--images F --labels F)\n"
                     "  Splits the train pair into K shard pairs plus train-shards.index, for\n"
                     "  tfdist train --data-mode stream. From SRC_DIR the t10k pair is copied\n"
                     "  too, so --out is a complete --data-folder.",
                     &o, argc, argv, pos, 1, &npos, &rc)) {
    return rc;
  }
  if (o.shards < 1) return cli_data_error("--shards: required, at least 1");
  if (!o.out[0]) return cli_data_error("--out: required");
  if ((npos == 1) == (o.images[0] != '\0') || (o.images[0] != '\0') != (o.labels[0] != '\0')) {
    return cli_data_error("tfdist data shard: give a SRC_DIR, or both --images and --labels");
  }
  if (npos == 1) {
    if (data_files_find(&files, pos[0], err, sizeof err) != 0) return cli_data_error(err);
    snprintf(o.images, sizeof o.images, "%s", files.train_images);
    snprintf(o.labels, sizeof o.labels, "%s", files.train_labels);
  }
  double t0 = clock_mono_s();
  if (data_shards_split(o.images, o.labels, o.out, o.shards, o.gzip ? 6 : 0, err,
                        sizeof err) != 0 ||
      (npos == 1 && cli_data_copy_test(&files, o.out, err, sizeof err) != 0)) {
    return cli_data_error(err);
  }
  printf("wrote %lld shard pair(s) of %s and %s/%s%s (%.1f s)\n", (long long)o.shards, o.images,
         o.out, DATA_SHARDS_INDEX_NAME, npos == 1 ? ", with the t10k pair" : "",
         clock_mono_s() - t0);
  return CLI_OK;
}

/* ---- dispatch ---- */

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} cli_data_command;

static const cli_data_command data_commands[] = {
  {"inspect", cli_data_inspect, "header, counts, label histogram, picture of a sample"},
  {"verify", cli_data_verify, "every check on the idx files of a folder"},
  {"synth", cli_data_synth, "write a deterministic synthetic data set"},
  {"shard", cli_data_shard, "split a train pair into shards for --data-mode stream"},
};

int cli_data(int argc, char **argv) {
  const size_t n = sizeof data_commands / sizeof data_commands[0];
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    FILE *out = argc < 2 ? stderr : stdout;
    fprintf(out, "usage: tfdist data <inspect|verify|synth|shard> [flags]\n\n");
    for (size_t i = 0; i < n; i++) {
      fprintf(out, "  %-8s %s\n", data_commands[i].name, data_commands[i].summary);
    }
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  for (size_t i = 0; i < n; i++) {
    if (!strcmp(argv[1], data_commands[i].name)) return data_commands[i].run(argc - 2, argv + 2);
  }
  fprintf(stderr, "tfdist: error: tfdist data: unknown command '%s' (inspect, verify, synth, "
          "shard)\n", argv[1]);
  return CLI_USAGE;
}
