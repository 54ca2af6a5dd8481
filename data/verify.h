/* Full checks of idx files without loading them: every header field, every
 * byte (gzip CRCs, truncation, trailing data), every label, and for a shard
 * index each shard against the index's counts, dims and CRCs. */
#ifndef TFDIST_DATA_VERIFY_H
#define TFDIST_DATA_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "data/idx.h"
#include "data/shards.h"

typedef struct {
  int64_t count;
  uint32_t rows, cols;
  uint32_t images_crc, labels_crc; /* CRC-32 of each body */
  int64_t label_hist[DATA_CLASSES];
  int images_gzip, labels_gzip;
} data_pair_report;

/* Streams both files through the reader. need_784: rows*cols must be 784. */
int data_pair_verify(const char *images, const char *labels, int need_784,
                     data_pair_report *rep, char *err, size_t err_bytes);

/* Verifies shard i of an index (its pair, and the index's record of it). */
int data_shard_verify(const data_shards *s, int64_t i, data_pair_report *rep, char *err,
                      size_t err_bytes);

#endif
