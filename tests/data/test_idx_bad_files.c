/* A table of hand-made bad idx files, raw and gzip: each must give one clear
 * line naming the file, the byte and the problem, through the in-memory
 * loader and the streaming verifier alike; never a crash or a hang. Good
 * files (including multi-member gzip) must still load. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "data/idx.h"
#include "data/shards.h"
#include "data/verify.h"

#define N_GOOD 50
#define PX 784

static char dir[64];
static int case_no;

typedef struct {
  uint8_t *p;
  size_t n;
} buf;

static buf buf_make(const void *data, size_t n) {
  buf b = {malloc(n ? n : 1), n};
  if (n) memcpy(b.p, data, n);
  return b;
}

static buf buf_cat(buf a, const void *data, size_t n) {
  a.p = realloc(a.p, a.n + n + 1);
  memcpy(a.p + a.n, data, n);
  a.n += n;
  return a;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static buf images_file(uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols,
                       size_t body) {
  buf b = {calloc(16 + body + 1, 1), 16 + body};
  put_be32(b.p, magic);
  put_be32(b.p + 4, count);
  put_be32(b.p + 8, rows);
  put_be32(b.p + 12, cols);
  for (size_t i = 0; i < body; i++) b.p[16 + i] = (uint8_t)(i * 31 + 7);
  return b;
}

static buf labels_file(uint32_t magic, uint32_t count, size_t body) {
  buf b = {calloc(8 + body + 1, 1), 8 + body};
  put_be32(b.p, magic);
  put_be32(b.p + 4, count);
  for (size_t i = 0; i < body; i++) b.p[8 + i] = (uint8_t)(i % 10);
  return b;
}

/* One gzip member of the bytes (windowBits 31 writes the gzip wrapper). */
static buf gz(const uint8_t *p, size_t n) {
  z_stream z;
  memset(&z, 0, sizeof z);
  deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
  size_t cap = deflateBound(&z, (uLong)n) + 64;
  buf out = {malloc(cap), 0};
  z.next_in = (Bytef *)p;
  z.avail_in = (uInt)n;
  z.next_out = out.p;
  z.avail_out = (uInt)cap;
  deflate(&z, Z_FINISH);
  out.n = cap - z.avail_out;
  deflateEnd(&z);
  return out;
}

static const char *put(const char *name, buf b) {
  static char paths[512][128];
  char *path = paths[case_no++ % 512];
  snprintf(path, 128, "%s/%03d-%s", dir, case_no, name);
  FILE *f = fopen(path, "wb");
  if (b.n) fwrite(b.p, 1, b.n, f);
  fclose(f);
  free(b.p);
  return path;
}

static const char *good_images, *good_labels;

/* bad is the file that must be named; needles must all appear. */
static void expect_fail(const char *label, const char *images, const char *labels,
                        const char *bad, const char *n1, const char *n2) {
  char err[2048] = "", verr[2048] = "";
  data_set ds;
  data_pair_report rep;
  int rc = data_set_load(&ds, images, labels, 1, err, sizeof err);
  int vrc = data_pair_verify(images, labels, 1, &rep, verr, sizeof verr);
  const char *errs[2] = {err, verr};
  printf("%-34s %s\n", label, err);
  if (rc == 0) data_set_free(&ds);
  if (rc == 0 || vrc == 0) {
    fprintf(stderr, "%s: accepted a bad file (load rc %d, verify rc %d)\n", label, rc, vrc);
    check_failures++;
    return;
  }
  for (int i = 0; i < 2; i++) {
    int ok = strchr(errs[i], '\n') == NULL && strstr(errs[i], bad) != NULL &&
             (!n1 || strstr(errs[i], n1)) && (!n2 || strstr(errs[i], n2));
    if (!ok) {
      fprintf(stderr, "%s: %s error lacks '%s' / '%s' / the path: %s\n", label,
              i ? "verify" : "load", n1 ? n1 : "", n2 ? n2 : "", errs[i]);
      check_failures++;
    }
  }
}

static void expect_ok(const char *label, const char *images, const char *labels, int64_t count) {
  char err[2048] = "";
  data_set ds;
  data_pair_report rep;
  int rc = data_set_load(&ds, images, labels, 1, err, sizeof err);
  if (rc != 0) fprintf(stderr, "%s: %s\n", label, err);
  CHECK(rc == 0);
  if (rc == 0) {
    CHECK_EQ_INT(ds.count, count);
    CHECK(ds.images[0] == 7 && ds.images[1] == 38 && ds.labels[count - 1] == (count - 1) % 10);
    data_set_free(&ds);
  }
  rc = data_pair_verify(images, labels, 1, &rep, err, sizeof err);
  if (rc != 0) fprintf(stderr, "%s (verify): %s\n", label, err);
  CHECK(rc == 0);
}

static void bad_images(const char *label, buf b, const char *n1, const char *n2) {
  const char *p = put("train-images-idx3-ubyte", b);
  expect_fail(label, p, good_labels, p, n1, n2);
}

static void bad_labels(const char *label, buf b, const char *n1, const char *n2) {
  const char *p = put("train-labels-idx1-ubyte", b);
  expect_fail(label, good_images, p, p, n1, n2);
}

static void table_truncation(const buf img, const buf gimg) {
  char label[64], at[32];
  for (size_t k = 0; k < 16; k++) { /* every header byte, raw and gzip */
    snprintf(label, sizeof label, "raw header cut at %zu", k);
    snprintf(at, sizeof at, "byte %zu", k);
    bad_images(label, buf_make(img.p, k), k ? "truncated" : "empty", k ? at : "byte 0");
    snprintf(label, sizeof label, "gzip header cut at %zu", k);
    bad_images(label, gz(img.p, k), "truncated", at);
  }
  buf lbl = labels_file(0x801, N_GOOD, N_GOOD);
  for (size_t k = 0; k < 8; k++) {
    snprintf(label, sizeof label, "labels header cut at %zu", k);
    bad_labels(label, buf_make(lbl.p, k), k ? "truncated" : "empty", NULL);
  }
  free(lbl.p);
  const size_t body_cuts[] = {17, 16 + PX * 10 + 5, img.n - 1};
  for (size_t i = 0; i < 3; i++) {
    snprintf(label, sizeof label, "raw body cut at %zu", body_cuts[i]);
    snprintf(at, sizeof at, "byte %zu", body_cuts[i]);
    bad_images(label, buf_make(img.p, body_cuts[i]), "truncated", "body");
    snprintf(label, sizeof label, "gzip body cut at %zu", body_cuts[i]);
    bad_images(label, gz(img.p, body_cuts[i]), "truncated", at);
  }
  const size_t gz_cuts[] = {5, 10, gimg.n / 2, gimg.n - 8, gimg.n - 1};
  for (size_t i = 0; i < 5; i++) {
    snprintf(label, sizeof label, "truncated gzip at %zu", gz_cuts[i]);
    bad_images(label, buf_make(gimg.p, gz_cuts[i]), "truncated gzip", NULL);
  }
}

static void table_gzip(const buf img, const buf gimg) {
  buf b = buf_make(gimg.p, gimg.n);
  b.p[b.n - 8] ^= 0x55; /* the CRC-32 trailer */
  bad_images("gzip with a bad CRC", b, "gzip", "incorrect data check");
  b = buf_make(gimg.p, gimg.n);
  b.p[b.n - 1] ^= 0x01; /* ISIZE */
  bad_images("gzip with a bad length", b, "gzip", "incorrect length check");
  b = buf_make(gimg.p, gimg.n);
  b.p[b.n / 2] ^= 0xff;
  bad_images("gzip with corrupt deflate data", b, "gzip", NULL);
  bad_images("gzip + trailing garbage", buf_cat(buf_make(gimg.p, gimg.n), "junk", 4),
             "trailing garbage", "gzip byte");
  bad_images("gzip + one zero byte", buf_cat(buf_make(gimg.p, gimg.n), "\0", 1),
             "trailing garbage", NULL);
  buf extra = gz((const uint8_t *)"more", 4);
  bad_images("gzip + a member of extra content", buf_cat(buf_make(gimg.p, gimg.n), extra.p, extra.n),
             "trailing data", NULL);
  free(extra.p);
  /* Two members whose contents join into a good file: valid, as gunzip says. */
  buf a = gz(img.p, 1000), c = gz(img.p + 1000, img.n - 1000);
  a = buf_cat(a, c.p, c.n);
  free(c.p);
  expect_ok("two gzip members", put("train-images-idx3-ubyte.gz", a), good_labels, N_GOOD);
  b = buf_make(img.p, img.n);
  put_be32(b.p, 0x00000804);
  buf bg = gz(b.p, b.n);
  free(b.p);
  bad_images("gzip content with wrong magic", bg, "wrong magic 0x00000804", "byte 0");
}

static void table_header(const buf img) {
  bad_images("wrong magic", images_file(0x00000804, N_GOOD, 28, 28, N_GOOD * PX),
             "wrong magic 0x00000804", "byte 0");
  bad_images("labels where images should be", labels_file(0x801, N_GOOD, N_GOOD),
             "wrong magic 0x00000801", NULL);
  bad_labels("images where labels should be", buf_make(img.p, img.n), "wrong magic 0x00000803", NULL);
  const char *gzname = put("train-images-idx3-ubyte.gz", images_file(0x12345678, 1, 28, 28, PX));
  expect_fail("raw content named .gz", gzname, good_labels, gzname, "wrong magic", "not gzip");
  bad_images("zero count", images_file(0x803, 0, 28, 28, 0), "zero dimension", "count = 0");
  bad_images("zero rows", images_file(0x803, N_GOOD, 0, 28, 0), "byte 8", "zero dimension");
  bad_images("zero cols", images_file(0x803, N_GOOD, 28, 0, 0), "byte 12", "zero dimension");
  bad_labels("zero labels", labels_file(0x801, 0, 0), "zero dimension", NULL);
  bad_images("count*rows*cols overflows 64 bits",
             images_file(0x803, 0xffffffffu, 0xffffffffu, 0xffffffffu, 64), "overflows 64 bits",
             NULL);
  bad_images("product above INT64_MAX", images_file(0x803, 0xffffffffu, 0x10000, 0x10000, 64),
             "more than any file", NULL);
  bad_images("huge count, tiny raw file", images_file(0x803, 0x7fffffff, 28, 28, PX),
             "truncated", "body");
  /* A gzip stream cannot be sized up front: memory must follow the bytes that
   * arrive, not the header's promise (ASan/the allocator would catch 1.6 TB). */
  buf huge = images_file(0x803, 0x7fffffff, 28, 28, PX);
  const char *hi = put("train-images-idx3-ubyte", gz(huge.p, huge.n));
  buf hlb = labels_file(0x801, 0x7fffffff, 10);
  const char *hl = put("train-labels-idx1-ubyte", gz(hlb.p, hlb.n));
  free(hlb.p);
  expect_fail("huge count, tiny gzip", hi, hl, hi, "truncated", "byte 800");
  free(huge.p);
  bad_images("rows*cols is not 784", images_file(0x803, N_GOOD, 27, 28, N_GOOD * 27 * 28),
             "784", NULL);
  bad_images("raw + trailing bytes", buf_cat(buf_make(img.p, img.n), "junk", 4), "trailing",
             NULL);
  bad_images("empty file", buf_make("", 0), "empty", NULL);
  bad_labels("labels count disagrees", labels_file(0x801, N_GOOD - 1, N_GOOD - 1),
             "49 labels but the images file has 50", NULL);
}

static void table_labels(void) {
  buf b = labels_file(0x801, N_GOOD, N_GOOD);
  b.p[8 + 7] = 255;
  bad_labels("label 255", b, "label 255", "byte 15");
  b = labels_file(0x801, N_GOOD, N_GOOD);
  b.p[8 + 49] = 10;
  buf g = gz(b.p, b.n);
  free(b.p);
  bad_labels("label 10 (gzip)", g, "label 10", "sample 49");
}

static void table_paths(void) {
  char sub[128], err[2048];
  snprintf(sub, sizeof sub, "%s/folder/train-images-idx3-ubyte", dir);
  char parent[128];
  snprintf(parent, sizeof parent, "%s/folder", dir);
  mkdir(parent, 0755);
  mkdir(sub, 0755);
  expect_fail("a directory where a file should be", sub, good_labels, sub, "is a directory", NULL);
  char missing[128];
  snprintf(missing, sizeof missing, "%s/no-such-file", dir);
  expect_fail("missing file", missing, good_labels, missing, "No such file", NULL);
  data_files f;
  int rc = data_files_find(&f, parent, err, sizeof err);
  printf("%-34s %s\n", "folder search, directory named", err);
  CHECK(rc != 0 && strstr(err, "is a directory") && strstr(err, sub) && !strchr(err, '\n'));
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "HANG: a case did not finish within its alarm\n";
  if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
  _exit(3);
}

static void put_good_four(const char *folder) {
  static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  for (int i = 0; i < 4; i++) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", folder, names[i]);
    buf b = i % 2 ? labels_file(0x801, N_GOOD, N_GOOD) : images_file(0x803, N_GOOD, 28, 28, N_GOOD * PX);
    FILE *f = fopen(p, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    free(b.p);
  }
}

/* Not plain files: a FIFO named like an idx file (or a shard index) must be
 * refused at once, not block open() forever; symlinks back up the tree must
 * not multiply the folder walk (3 loops, 16 levels: 3^16 folders); a broken
 * link where a file should be is named in the "not found" error. */
static void table_special(void) {
  char fifo[128], err[2048] = "", verr[2048] = "";
  data_set ds;
  data_pair_report rep;
  signal(SIGALRM, on_alarm);
  alarm(20);
  snprintf(fifo, sizeof fifo, "%s/fifo-train-images-idx3-ubyte", dir);
  CHECK(mkfifo(fifo, 0644) == 0);
  int rc = data_set_load(&ds, fifo, good_labels, 1, err, sizeof err);
  int vrc = data_pair_verify(fifo, good_labels, 1, &rep, verr, sizeof verr);
  printf("%-34s %s\n", "a FIFO named like an idx file", err);
  CHECK(rc != 0 && strstr(err, fifo) && strstr(err, "not a regular file"));
  CHECK(vrc != 0 && strstr(verr, fifo) && strstr(verr, "not a regular file"));
  data_shards sh;
  rc = data_shards_load(&sh, fifo, err, sizeof err);
  printf("%-34s %s\n", "a FIFO as the shard index", err);
  CHECK(rc != 0 && strstr(err, fifo) && strstr(err, "not a regular file"));
  alarm(0);

  char loops[128], link[160];
  snprintf(loops, sizeof loops, "%s/loops", dir);
  mkdir(loops, 0755);
  put_good_four(loops);
  for (int i = 0; i < 3; i++) {
    snprintf(link, sizeof link, "%s/loop%d", loops, i);
    CHECK(symlink(".", link) == 0);
  }
  alarm(20);
  data_files f;
  rc = data_files_find(&f, loops, err, sizeof err);
  alarm(0);
  if (rc != 0) fprintf(stderr, "symlink loops: %s\n", err);
  CHECK(rc == 0 && strstr(f.train_images, "/loops/train-images-idx3-ubyte"));

  char broken[128], target[192];
  snprintf(broken, sizeof broken, "%s/broken", dir);
  mkdir(broken, 0755);
  put_good_four(broken);
  snprintf(target, sizeof target, "%s/train-images-idx3-ubyte", broken);
  unlink(target);
  snprintf(target, sizeof target, "%s/train-images-idx3-ubyte.gz", broken);
  CHECK(symlink("/nonexistent/tfdist-test-target", target) == 0);
  rc = data_files_find(&f, broken, err, sizeof err);
  printf("%-34s %s\n", "a broken link as the images file", err);
  CHECK(rc != 0 && strstr(err, "no train-images-idx3-ubyte") && strstr(err, target) &&
        strstr(err, "broken symbolic link") && !strchr(err, '\n'));
}

/* A pair comes from one folder: a partial set beside a whole one (fashion/
 * holding only its train images, as a download cut short leaves it) must not
 * lend its images to the other set's labels (equal counts: nothing else
 * would notice); a pair found only apart is an error naming both files. */
static void table_pairs(void) {
  char root[128], sub[192], p[256], err[2048] = "";
  snprintf(root, sizeof root, "%s/sets", dir);
  mkdir(root, 0755);
  snprintf(sub, sizeof sub, "%s/fashion", root);
  mkdir(sub, 0755);
  snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", sub);
  buf b = images_file(0x803, N_GOOD, 28, 28, N_GOOD * PX);
  buf g = gz(b.p, b.n);
  FILE *f = fopen(p, "wb");
  fwrite(g.p, 1, g.n, f);
  fclose(f);
  free(b.p);
  free(g.p);
  snprintf(sub, sizeof sub, "%s/mnist", root);
  mkdir(sub, 0755);
  put_good_four(sub);
  data_files found;
  int rc = data_files_find(&found, root, err, sizeof err);
  printf("%-34s %s\n", "partial set beside a whole one", rc ? err : found.train_images);
  CHECK(rc == 0 && strstr(found.train_images, "/sets/mnist/train-images-idx3-ubyte") &&
        strstr(found.train_labels, "/sets/mnist/"));

  char apart[128];
  snprintf(apart, sizeof apart, "%s/apart", dir);
  mkdir(apart, 0755);
  snprintf(sub, sizeof sub, "%s/a", apart);
  mkdir(sub, 0755);
  put_good_four(sub);
  snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", sub);
  char moved[256];
  snprintf(sub, sizeof sub, "%s/b", apart);
  mkdir(sub, 0755);
  snprintf(moved, sizeof moved, "%s/train-labels-idx1-ubyte", sub);
  CHECK(rename(p, moved) == 0);
  rc = data_files_find(&found, apart, err, sizeof err);
  printf("%-34s %s\n", "a pair only in different folders", err);
  CHECK(rc != 0 && strstr(err, "different folders") && strstr(err, "/apart/a/train-images") &&
        strstr(err, moved) && !strchr(err, '\n'));
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/tfdist-badidx-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  buf img = images_file(0x803, N_GOOD, 28, 28, N_GOOD * PX);
  buf lbl = labels_file(0x801, N_GOOD, N_GOOD);
  buf gimg = gz(img.p, img.n);
  good_images = put("train-images-idx3-ubyte", buf_make(img.p, img.n));
  good_labels = put("train-labels-idx1-ubyte", buf_make(lbl.p, lbl.n));
  expect_ok("good raw pair", good_images, good_labels, N_GOOD);
  expect_ok("good gzip images", put("train-images-idx3-ubyte.gz", buf_make(gimg.p, gimg.n)),
            good_labels, N_GOOD);
  table_truncation(img, gimg);
  table_gzip(img, gimg);
  table_header(img);
  table_labels();
  table_paths();
  table_special();
  table_pairs();
  printf("%d cases\n", case_no);
  free(img.p);
  free(lbl.p);
  free(gimg.p);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  CHECK_DONE();
}
