/* libFuzzer harness for the idx reader, raw and gzip (told apart by content),
 * and the code above it. The first input byte picks the target:
 *   0: one idx file read to its end through data/idx_reader.h
 *   1: an images/labels pair through data_set_load (in-memory loading)
 *   2: the same pair through data_pair_verify (streaming verification)
 *   3: a shard index through data_shards_load
 * For pairs, the next two bytes give where the images file ends.
 * Build and run: tests/fuzz.sh idx (clang, ASan + UBSan). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/idx.h"
#include "data/idx_reader.h"
#include "data/shards.h"
#include "data/verify.h"

static int fuzz_fd[2] = {-1, -1};
static char fuzz_path[2][64];

/* An in-memory file holding the bytes, opened afresh by path or by fd. */
static int fuzz_file(int k, const uint8_t *data, size_t size) {
  if (fuzz_fd[k] < 0) {
    fuzz_fd[k] = memfd_create(k ? "labels" : "images", 0);
    if (fuzz_fd[k] < 0) abort();
    snprintf(fuzz_path[k], sizeof fuzz_path[k], "/proc/self/fd/%d", fuzz_fd[k]);
  }
  if (ftruncate(fuzz_fd[k], 0) != 0 || (size && pwrite(fuzz_fd[k], data, size, 0) != (ssize_t)size) ||
      lseek(fuzz_fd[k], 0, SEEK_SET) != 0) {
    abort();
  }
  return fuzz_fd[k];
}

static void fuzz_one_file(const uint8_t *data, size_t size) {
  static uint8_t buf[1 << 16];
  char err[1024];
  data_idx_reader *r = NULL;
  if (data_idx_open_fd(&r, fuzz_file(0, data, size), "fuzz", DATA_IDX_ANY, err, sizeof err) != 0) {
    return;
  }
  data_idx_track_crc(r, 1);
  const data_idx_header *h = data_idx_header_of(r);
  int64_t left = h->body_bytes;
  int ok = 1;
  while (ok && left > 0) {
    int64_t n = left < (int64_t)sizeof buf ? left : (int64_t)sizeof buf;
    ok = data_idx_read(r, buf, n, err, sizeof err) == 0;
    if (ok && h->magic == DATA_IDX_MAGIC_LABELS) {
      ok = data_idx_check_labels(r, buf, n, h->body_bytes - left, err, sizeof err) == 0;
    }
    left -= n;
  }
  if (ok) data_idx_finish(r, err, sizeof err);
  data_idx_close(r);
}

static void fuzz_pair(int mode, const uint8_t *data, size_t size) {
  char err[1024];
  if (size < 2) return;
  size_t cut = ((size_t)data[0] << 8 | data[1]) % (size - 1);
  data += 2;
  size -= 2;
  fuzz_file(0, data, cut);
  fuzz_file(1, data + cut, size - cut);
  if (mode == 1) {
    data_set ds;
    if (data_set_load(&ds, fuzz_path[0], fuzz_path[1], 0, err, sizeof err) == 0) data_set_free(&ds);
  } else {
    data_pair_report rep;
    data_pair_verify(fuzz_path[0], fuzz_path[1], 0, &rep, err, sizeof err);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  if (size < 1) return 0;
  int mode = data[0] % 4;
  data++;
  size--;
  if (mode == 0) {
    fuzz_one_file(data, size);
  } else if (mode < 3) {
    fuzz_pair(mode, data, size);
  } else {
    data_shards s;
    fuzz_file(0, data, size);
    if (data_shards_load(&s, fuzz_path[0], err, sizeof err) == 0) data_shards_free(&s);
  }
  return 0;
}
