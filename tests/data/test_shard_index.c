/* Shard indexes and shards are files too, so never trusted: a table of bad
 * index texts (each a one-line error naming the line), and shards that are
 * corrupt, truncated, missing or disagree with the index (each stops the
 * streaming loader with a clear error, not a crash, a hang or silent use). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/synth.h"
#include "data/verify.h"

static char dir[64];

static void write_text(const char *path, const char *text, size_t len) {
  FILE *f = fopen(path, "wb");
  fwrite(text, 1, len, f);
  fclose(f);
}

static void bad_index(const char *label, const char *text, size_t len, const char *needle) {
  char path[128], err[1024] = "";
  data_shards s;
  snprintf(path, sizeof path, "%s/set/bad.index", dir);
  write_text(path, text, len);
  int rc = data_shards_load(&s, path, err, sizeof err);
  printf("%-32s %s\n", label, err);
  if (rc == 0) {
    data_shards_free(&s);
    fprintf(stderr, "%s: accepted\n", label);
    check_failures++;
  } else if (!strstr(err, path) || !strstr(err, needle) || strchr(err, '\n')) {
    fprintf(stderr, "%s: error lacks '%s' or the path: %s\n", label, needle, err);
    check_failures++;
  }
}

#define HEAD "tfdist-shards 1\nsamples 100\ndims 28 28\nshards 2\n"
#define S0 "shard 0 0 50 00000000 00000000 a-images a-labels\n"
#define S1 "shard 1 50 50 00000000 00000000 b-images b-labels\n"

static void table_index(void) {
  static char longline[4000];
  memset(longline, 'x', sizeof longline - 1);
  const struct { const char *label, *text, *needle; } cases[] = {
    {"empty index", "", "incomplete"},
    {"not an index", "hello\n", "line 1: not a tfdist shard index"},
    {"version 2", "tfdist-shards 2\n", "not a tfdist"},
    {"no samples line", "tfdist-shards 1\ndims 28 28\nshards 1\n", "bad 'shards K'"},
    {"negative samples", "tfdist-shards 1\nsamples -5\n", "bad 'samples N'"},
    {"zero dims", "tfdist-shards 1\nsamples 10\ndims 0 28\n", "bad 'dims"},
    {"zero shards", "tfdist-shards 1\nsamples 10\nshards 0\n", "bad 'shards K'"},
    {"more shards than samples", "tfdist-shards 1\nsamples 10\nshards 11\n", "bad 'shards K'"},
    {"ten million shards", "tfdist-shards 1\nsamples 100000000\nshards 10000000\n", "bad 'shards K'"},
    {"samples twice", "tfdist-shards 1\nsamples 10\nsamples 10\n", "line 3"},
    {"unknown record", HEAD "colour blue\n", "line 5: unknown record"},
    {"shard before its header", "tfdist-shards 1\n" S0, "before samples"},
    {"missing shard line", HEAD S0, "do not cover"},
    {"shards out of order", HEAD S1 S0, "shard numbers"},
    {"ranges with a gap", HEAD S0 "shard 1 51 49 0 0 b b\n", "tile"},
    {"empty shard", HEAD S0 "shard 1 50 0 0 0 b b\n", "tile"},
    {"range past the end", HEAD S0 "shard 1 50 51 0 0 b b\n", "tile"},
    {"path escape", HEAD S0 "shard 1 50 50 0 0 ../../etc/passwd b\n", "plain names"},
    {"hidden name", HEAD S0 "shard 1 50 50 0 0 .x b\n", "plain names"},
    {"extra tokens", HEAD S0 "shard 1 50 50 0 0 b b c\n", "expected: shard"},
    {"bad crc", HEAD S0 "shard 1 50 50 zz 0 b b\n", "expected: shard"},
    {"long line", longline, "line too long"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    bad_index(cases[i].label, cases[i].text, strlen(cases[i].text), cases[i].needle);
  }
  bad_index("NUL byte", HEAD "\0" S0 S1, sizeof(HEAD S0 S1), "NUL byte");
}

/* Streams one epoch with a fresh index copy; returns the loader's error. */
static int stream_error(const char *index, char *err, size_t err_bytes) {
  data_shards s;
  if (data_shards_load(&s, index, err, err_bytes) != 0) return -1;
  data_loader_config c = {.mode = DATA_MODE_STREAM, .rank = 0, .world = 1, .batch = 10,
                          .epochs = 1, .seed = 1, .prefetch = 2, .shuffle_buffer = 64,
                          .check_crc = 1, .shards = &s};
  c.steps_per_epoch = data_loader_max_steps(&c);
  data_loader *l = NULL;
  int rc = data_loader_init(&l, &c, err, err_bytes);
  for (int64_t i = 0; rc == 0 && i < c.steps_per_epoch; i++) {
    data_batch b;
    rc = data_loader_next(l, &b, NULL, err, err_bytes);
    if (rc == 0) data_loader_release(l);
  }
  data_loader_free(l);
  data_shards_free(&s);
  return rc;
}

static void corrupt(const char *label, const char *file, long offset, int byte, long truncate_to,
                    const char *needle) {
  char sub[128], cmd[512], index[256], victim[256], err[1024] = "";
  snprintf(sub, sizeof sub, "%s/c%d", dir, (int)(strlen(label) * 31 % 1000));
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/set' '%s'", sub, dir, sub);
  if (system(cmd) != 0) check_failures++;
  snprintf(index, sizeof index, "%s/%s", sub, DATA_SHARDS_INDEX_NAME);
  snprintf(victim, sizeof victim, "%s/%s", sub, file);
  if (truncate_to == -2) unlink(victim);
  if (truncate_to >= 0 && truncate(victim, truncate_to) != 0) check_failures++;
  if (offset >= 0) { /* byte -1: flip a bit of what is there */
    FILE *f = fopen(victim, "r+b");
    fseek(f, offset, SEEK_SET);
    if (byte < 0) byte = fgetc(f) ^ 0x40, fseek(f, offset, SEEK_SET);
    fputc(byte, f);
    fclose(f);
  }
  int rc = stream_error(index, err, sizeof err);
  printf("%-32s %s\n", label, err);
  if (rc == 0 || !strstr(err, victim) || !strstr(err, needle) || strchr(err, '\n')) {
    fprintf(stderr, "%s: stream rc %d, error lacks '%s' or %s: %s\n", label, rc, needle, victim, err);
    check_failures++;
  }
  /* the verifier finds the same fault without training */
  data_shards s;
  data_pair_report rep;
  int bad = 0;
  if (data_shards_load(&s, index, err, sizeof err) == 0) {
    for (int64_t i = 0; i < s.count; i++) bad += data_shard_verify(&s, i, &rep, err, sizeof err) != 0;
    data_shards_free(&s);
  }
  CHECK(bad == 1);
}

int main(void) {
  char err[1024], path[128];
  snprintf(dir, sizeof dir, "/tmp/tfdist-shardidx-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  data_synth synth;
  data_synth_init(&synth, 3, DATA_SYNTH_CLASSES);
  snprintf(path, sizeof path, "%s/set", dir);
  CHECK(data_synth_write(path, &synth, 400, 10, 4, 0, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/gz", dir);
  CHECK(data_synth_write(path, &synth, 400, 10, 4, 1, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/set/%s", dir, DATA_SHARDS_INDEX_NAME);
  CHECK(stream_error(path, err, sizeof err) == 0); /* the good set streams */
  table_index();
  const char *img2 = "train-images-idx3-ubyte-00002-of-00004";
  const char *lab1 = "train-labels-idx1-ubyte-00001-of-00004";
  corrupt("flipped pixel (CRC)", img2, 16 + 784 * 50 + 3, -1, -1, "CRC-32");
  corrupt("label 255 in a shard", lab1, 8 + 20, 255, -1, "label 255");
  corrupt("truncated shard", img2, -1, 0, 16 + 784 * 30, "truncated");
  corrupt("missing shard", lab1, -1, 0, -2, "No such file");
  /* a valid labels file of 99, where the index says 100 */
  corrupt("header count != index", lab1, 7, 99, 8 + 99, "says 100");
  /* gzip shards: a flipped CRC trailer byte */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s/set' && mv '%s/gz' '%s/set'", dir, dir, dir);
  CHECK(system(cmd) == 0);
  snprintf(path, sizeof path, "%s/set/train-images-idx3-ubyte-00003-of-00004.gz", dir);
  FILE *f = fopen(path, "rb");
  fseek(f, 0, SEEK_END);
  long gz_len = ftell(f);
  fclose(f);
  corrupt("gzip shard, bad CRC", "train-images-idx3-ubyte-00003-of-00004.gz", gz_len - 8, -1, -1,
          "incorrect data check");
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  CHECK_DONE();
}
