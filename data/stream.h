/* Streaming-mode sample source of one rank (internal to data/loader.c):
 * its shards read sequentially, in an order drawn per epoch, through a
 * bounded shuffle buffer that emits a random held sample and refills the
 * hole with the next one read. */
#ifndef TFDIST_DATA_STREAM_H
#define TFDIST_DATA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "data/shards.h"

typedef struct data_stream data_stream;

int data_stream_init(data_stream **out, const data_shards *s, int rank, int world,
                     int64_t buffer, uint64_t seed, int check_crc, char *err, size_t err_bytes);
/* Rewinds to the start of epoch `epoch`: shard order and draws from
 * (seed, DATA_RNG_STREAM_SHUFFLE, epoch, rank). */
int data_stream_begin_epoch(data_stream *st, int64_t epoch, char *err, size_t err_bytes);
/* The next n samples of the epoch. x == NULL skips them (a resume). */
int data_stream_take(data_stream *st, int64_t n, float *x, int32_t *y, int64_t *ids, char *err,
                     size_t err_bytes);
void data_stream_free(data_stream *st);

#endif
