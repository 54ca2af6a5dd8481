/* Checkpoint files at the library level: a write/read round trip keeps every
 * field and every float bit; damaged files (flipped weight or optimizer bytes,
 * truncation, garbage, a model file) are errors naming the file; the
 * checkpoints folder keeps the newest K, points `latest` at the newest and
 * sweeps temp files of dead writers; a link named like a checkpoint is
 * neither counted nor followed, and a checkpoint that cannot be deleted (made
 * immutable, as chattr +i does) is reported through the warning callback. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/rng.h"
#include "modelio/checkpoint.h"
#include "base/fsutil.h"
#include "modelio/h5model.h"
#include "tests/check.h"
#include "tfdist_config.h"

static char dir[256];

static void fill_random(float *p, int64_t n, uint64_t seed) {
  base_rng r;
  base_rng_seed(&r, seed, 99, 0);
  for (int64_t i = 0; i < n; i++) p[i] = 2.0f * base_rng_uniform(&r) - 1.0f;
}

static void make_state(ckpt_state *s, int64_t epoch) {
  memset(s, 0, sizeof *s);
  model_layout_init(&s->layout, 784, 13, 7, 10);
  const int64_t P = s->layout.total_elems;
  s->params = malloc((size_t)P * sizeof(float));
  /* odd epochs: adam's two interleaved moments per weight; even: momentum's one */
  s->opt_state_elems = (epoch % 2 ? 2 : 1) * P;
  s->opt_state = malloc((size_t)s->opt_state_elems * sizeof(float));
  fill_random(s->params, P, 1 + (uint64_t)epoch);
  fill_random(s->opt_state, s->opt_state_elems, 1000 + (uint64_t)epoch);
  s->epoch = epoch;
  s->global_step = epoch * 12;
  s->steps_per_epoch = 12;
  s->batch_size = 25;
  s->global_batch = 50;
  s->world_size = 2;
  s->seed = 7;
  s->train_count = 600;
  snprintf(s->data_fingerprint, sizeof s->data_fingerprint, "crc32:deadbeef");
  snprintf(s->data_mode, sizeof s->data_mode, "global");
  snprintf(s->opt_kind, sizeof s->opt_kind, epoch % 2 ? "adam" : "momentum");
  s->beta1 = 0.8;
  s->beta2 = 0.99;
  s->epsilon = 1e-7;
  s->rho = 0.95;
  s->weight_decay = 0.001;
  s->opt_step = s->global_step + 3;
  s->learning_rate = 0.01;
  s->lr_effective = (double)0.02f;
  s->momentum = 0.9;
  s->scale_lr = 1;
  snprintf(s->run_id, sizeof s->run_id, "run-test-%lld", (long long)epoch);
  s->hyperparameters = strdup("{\"batch_size\":25}");
  s->metrics = strdup("[{\"epoch\":1,\"validation_acc\":0.5}]");
}

static void check_same(const ckpt_state *a, const ckpt_state *b) {
  const int64_t P = a->layout.total_elems;
  CHECK_EQ_INT(b->layout.total_elems, P);
  CHECK_EQ_INT(b->layout.dims[1], 13);
  CHECK_EQ_INT(b->layout.dims[2], 7);
  CHECK(memcmp(a->params, b->params, (size_t)P * sizeof(float)) == 0);
  CHECK_EQ_INT(b->opt_state_elems, a->opt_state_elems);
  CHECK(memcmp(a->opt_state, b->opt_state, (size_t)a->opt_state_elems * sizeof(float)) == 0);
  CHECK(b->beta1 == a->beta1 && b->beta2 == a->beta2 && b->epsilon == a->epsilon);
  CHECK(b->rho == a->rho && b->weight_decay == a->weight_decay);
  CHECK_EQ_INT(b->opt_step, a->opt_step);
  CHECK_EQ_INT(b->epoch, a->epoch);
  CHECK_EQ_INT(b->global_step, a->global_step);
  CHECK_EQ_INT(b->steps_per_epoch, a->steps_per_epoch);
  CHECK_EQ_INT(b->batch_size, a->batch_size);
  CHECK_EQ_INT(b->global_batch, a->global_batch);
  CHECK_EQ_INT(b->world_size, a->world_size);
  CHECK_EQ_INT(b->seed, a->seed);
  CHECK_EQ_INT(b->train_count, a->train_count);
  CHECK_EQ_INT(b->scale_lr, a->scale_lr);
  CHECK(b->learning_rate == a->learning_rate);
  CHECK(b->lr_effective == a->lr_effective);
  CHECK(b->momentum == a->momentum);
  CHECK(strcmp(b->data_fingerprint, a->data_fingerprint) == 0);
  CHECK(strcmp(b->data_mode, a->data_mode) == 0);
  CHECK(strcmp(b->opt_kind, a->opt_kind) == 0);
  CHECK(strcmp(b->run_id, a->run_id) == 0);
  CHECK(strcmp(b->tfdist_version, TFDIST_VERSION) == 0);
  CHECK(b->hyperparameters && strcmp(b->hyperparameters, a->hyperparameters) == 0);
  CHECK(b->metrics && strcmp(b->metrics, a->metrics) == 0);
}

/* Byte offset of a contiguous dataset's raw data in the file. */
static haddr_t dataset_offset(const char *path, const char *name) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  haddr_t off = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  return off;
}

/* A copy of src with bytes [at, at+n) inverted, or cut to keep bytes. */
static void write_damaged(const char *src, const char *dst, long at, int n, long keep) {
  char err[256];
  size_t len = 0;
  char *buf = fs_read_all(src, &len, err, sizeof err);
  CHECK(buf != NULL);
  if (!buf) return;
  for (int i = 0; i < n; i++) buf[at + i] = (char)~buf[at + i];
  FILE *f = fopen(dst, "wb");
  fwrite(buf, 1, keep >= 0 ? (size_t)keep : len, f);
  fclose(f);
  free(buf);
}

static void expect_read_error(const char *path, const char *needle) {
  ckpt_state s;
  char err[4400] = "";
  int rc = ckpt_read(&s, path, err, sizeof err);
  CHECK(rc != 0);
  if (rc == 0) ckpt_state_free(&s);
  if (!strstr(err, needle) || !strstr(err, path)) {
    fprintf(stderr, "%s: error '%s' lacks '%s' or the path\n", path, err, needle);
    check_failures++;
  }
  CHECK(strchr(err, '\n') == NULL);
}

static void test_roundtrip_and_damage(void) {
  char path[512], bad[512], err[4400] = "";
  ckpt_state a, b;
  make_state(&a, 3);
  snprintf(path, sizeof path, "%s/one.h5", dir);
  CHECK_EQ_INT(ckpt_write(path, &a, err, sizeof err), 0);
  CHECK_EQ_INT(ckpt_read(&b, path, err, sizeof err), 0);
  if (err[0]) fprintf(stderr, "%s\n", err);
  check_same(&a, &b);
  ckpt_state_free(&b);

  /* A checkpoint is also a Keras model file. */
  h5model m;
  CHECK_EQ_INT(h5model_load(&m, path, err, sizeof err), 0);
  CHECK(strcmp(m.last_activation, "softmax") == 0);
  CHECK_EQ_INT(m.checksum_verified, 1);
  CHECK(m.params && memcmp(m.params, a.params, (size_t)a.layout.total_elems * 4) == 0);
  h5model_free(&m);

  haddr_t w = dataset_offset(path, "model_weights/dense_1/dense_1/kernel:0");
  haddr_t o = dataset_offset(path, "optimizer/state");
  CHECK(w != HADDR_UNDEF && o != HADDR_UNDEF);
  snprintf(bad, sizeof bad, "%s/flip-weights.h5", dir);
  write_damaged(path, bad, (long)w + 40, 3, -1);
  expect_read_error(bad, "weights checksum mismatch");
  snprintf(bad, sizeof bad, "%s/flip-opt.h5", dir);
  write_damaged(path, bad, (long)o + 400, 1, -1);
  expect_read_error(bad, "state checksum mismatch");
  struct stat st;
  stat(path, &st);
  snprintf(bad, sizeof bad, "%s/truncated.h5", dir);
  write_damaged(path, bad, 0, 0, (long)st.st_size / 2);
  expect_read_error(bad, "truncated or damaged");
  snprintf(bad, sizeof bad, "%s/garbage.h5", dir);
  fs_write_atomic(bad, "not hdf5 at all\n", 16, err, sizeof err);
  expect_read_error(bad, "not an HDF5 file");
  snprintf(bad, sizeof bad, "%s/model.h5", dir);
  CHECK_EQ_INT(h5model_save(bad, &a.layout, a.params, err, sizeof err), 0);
  expect_read_error(bad, "not a checkpoint");
  snprintf(bad, sizeof bad, "%s/missing.h5", dir);
  expect_read_error(bad, "No such file");
  ckpt_state_free(&a);
}

static int exists(const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/ck/%s", dir, name);
  return access(p, F_OK) == 0;
}

static void test_folder(void) {
  char ck[512], got[4400], err[4400] = "", want[600];
  snprintf(ck, sizeof ck, "%s/ck", dir);
  for (int64_t e = 1; e <= 5; e++) {
    ckpt_state s;
    make_state(&s, e);
    CHECK_EQ_INT(ckpt_save(ck, &s, 2, NULL, NULL, err, sizeof err), 0);
    ckpt_state_free(&s);
  }
  CHECK(!exists("ckpt-epoch-1.h5") && !exists("ckpt-epoch-2.h5") && !exists("ckpt-epoch-3.h5"));
  CHECK(exists("ckpt-epoch-4.h5") && exists("ckpt-epoch-5.h5"));
  snprintf(want, sizeof want, "%s/ckpt-epoch-5.h5", ck);
  CHECK_EQ_INT(ckpt_resolve(ck, "unused", got, sizeof got, err, sizeof err), 0);
  CHECK(strcmp(got, want) == 0);
  char latest[600];
  snprintf(latest, sizeof latest, "%s/latest", ck);
  char *text = fs_read_all(latest, NULL, err, sizeof err);
  CHECK(text && strcmp(text, "ckpt-epoch-5.h5\n") == 0);
  free(text);
  unlink(latest); /* without the pointer, the highest epoch there */
  CHECK_EQ_INT(ckpt_resolve(ck, "unused", got, sizeof got, err, sizeof err), 0);
  CHECK(strcmp(got, want) == 0);

  /* A temp file of a writer that is gone is swept by the next save. */
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, NULL, 0);
  char stale[600];
  snprintf(stale, sizeof stale, "%s/ckpt-epoch-6.h5.tmp.%ld", ck, (long)child);
  fs_write_atomic(stale, "x", 1, err, sizeof err);
  ckpt_state s;
  make_state(&s, 6);
  CHECK_EQ_INT(ckpt_save(ck, &s, 2, NULL, NULL, err, sizeof err), 0);
  ckpt_state_free(&s);
  CHECK(access(stale, F_OK) != 0);
  CHECK(!exists("ckpt-epoch-4.h5") && exists("ckpt-epoch-5.h5") && exists("ckpt-epoch-6.h5"));

  /* Resumed from an earlier epoch: later files are not this save's to prune. */
  make_state(&s, 3);
  CHECK_EQ_INT(ckpt_save(ck, &s, 1, NULL, NULL, err, sizeof err), 0);
  ckpt_state_free(&s);
  CHECK(exists("ckpt-epoch-3.h5") && exists("ckpt-epoch-5.h5") && exists("ckpt-epoch-6.h5"));
  snprintf(want, sizeof want, "%s/ckpt-epoch-3.h5", ck);
  CHECK_EQ_INT(ckpt_resolve(ck, "unused", got, sizeof got, err, sizeof err), 0);
  CHECK(strcmp(got, want) == 0);

  char empty[600];
  snprintf(empty, sizeof empty, "%s/empty", dir);
  fs_mkdirs(empty, err, sizeof err);
  CHECK(ckpt_resolve(empty, "unused", got, sizeof got, err, sizeof err) != 0);
  CHECK(strstr(err, "no checkpoint in") != NULL);
}

static void save_epoch(const char *ck, int64_t epoch, int64_t keep, ckpt_warn_fn warn,
                       void *ctx) {
  char err[4400] = "";
  ckpt_state s;
  make_state(&s, epoch);
  CHECK_EQ_INT(ckpt_save(ck, &s, keep, warn, ctx, err, sizeof err), 0);
  ckpt_state_free(&s);
}

static int in(const char *ck, const char *name) {
  char p[600];
  struct stat st;
  snprintf(p, sizeof p, "%s/%s", ck, name);
  return lstat(p, &st) == 0 ? (int)(st.st_mode & S_IFMT) : 0;
}

/* A link planted at epoch 2, between the run's epochs 1 and 3, with keep 2:
 * counted, it would push epoch 1 out (and be deleted in its place). */
static void test_prune_link(void) {
  char ck[512], link[600], victim[600], err[256];
  snprintf(ck, sizeof ck, "%s/ck-link", dir);
  snprintf(victim, sizeof victim, "%s/victim.h5", dir);
  snprintf(link, sizeof link, "%s/ckpt-epoch-2.h5", ck);
  const char text[] = "not a checkpoint: must stay byte-identical\n";
  CHECK(fs_mkdirs(ck, err, sizeof err) == 0 &&
        fs_write_atomic(victim, text, sizeof text - 1, err, sizeof err) == 0 &&
        symlink(victim, link) == 0);
  save_epoch(ck, 1, 2, NULL, NULL);
  save_epoch(ck, 3, 2, NULL, NULL);
  CHECK(in(ck, "ckpt-epoch-1.h5") == S_IFREG && in(ck, "ckpt-epoch-3.h5") == S_IFREG);
  CHECK(in(ck, "ckpt-epoch-2.h5") == S_IFLNK);
  char *got = fs_read_all(victim, NULL, err, sizeof err);
  CHECK(got && strcmp(got, text) == 0);
  free(got);
}

typedef struct {
  int calls;
  char first[4600];
} warn_log;

static void warn_keep(void *ctx, const char *msg) {
  warn_log *w = ctx;
  if (w->calls++ == 0) snprintf(w->first, sizeof w->first, "%s", msg);
}

/* FS_IMMUTABLE_FL (chattr +i): unlink fails with EPERM, root included. */
static int set_immutable(const char *path, int on) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), flags = 0, rc = -1;
  if (fd >= 0 && ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
    flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
    rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
  }
  if (fd >= 0) close(fd);
  return rc;
}

static void test_prune_undeletable(void) {
  char ck[512], old[600], want[700];
  snprintf(ck, sizeof ck, "%s/ck-stuck", dir);
  snprintf(old, sizeof old, "%s/ckpt-epoch-1.h5", ck);
  save_epoch(ck, 1, 1, NULL, NULL);
  if (set_immutable(old, 1) != 0) {
    printf("skipped the undeletable case: cannot make %s immutable: %s\n", old, strerror(errno));
    return;
  }
  warn_log w = {0};
  save_epoch(ck, 2, 1, warn_keep, &w);
  set_immutable(old, 0);
  snprintf(want, sizeof want, "could not delete %s: %s (errno %d)", old, strerror(EPERM), EPERM);
  CHECK_EQ_INT(w.calls, 1);
  CHECK(strstr(w.first, want) != NULL);
  if (!strstr(w.first, want)) fprintf(stderr, "warning: '%s', expected '%s'\n", w.first, want);
  CHECK(in(ck, "ckpt-epoch-1.h5") == S_IFREG && in(ck, "ckpt-epoch-2.h5") == S_IFREG);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/tfdist-ckpt-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  h5_quiet();
  test_roundtrip_and_damage();
  test_folder();
  test_prune_link();
  test_prune_undeletable();
  if (!check_failures) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  }
  CHECK_DONE();
}
