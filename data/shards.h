/* Shards for streaming: an idx pair split into K smaller pairs, described by
 * a small text index (train-shards.index) that records each shard's files,
 * its place in the whole set, its count and the CRC-32 of both bodies. */
#ifndef TFDIST_DATA_SHARDS_H
#define TFDIST_DATA_SHARDS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char images[4096]; /* paths, resolved against the index's folder */
  char labels[4096];
  int64_t first;     /* index of its first sample in the whole set */
  int64_t count;
  uint32_t images_crc, labels_crc; /* CRC-32 of each body */
  int has_crc;       /* 0 for a plain pair read as one shard */
} data_shard;

typedef struct {
  char path[4096];   /* the index, or the images file of a plain pair */
  int64_t samples;
  int32_t rows, cols;
  int64_t count;     /* shards */
  data_shard *shards;
} data_shards;

#define DATA_SHARDS_MAX 1000000

/* Parses and checks an index: names stay inside its folder, shards tile
 * 0..samples-1 in order, counts and dims are sane. Files are not opened. */
int data_shards_load(data_shards *s, const char *index_path, char *err, size_t err_bytes);
/* A plain images/labels pair as one shard, described by its headers. */
int data_shards_from_pair(data_shards *s, const char *images, const char *labels, char *err,
                          size_t err_bytes);
void data_shards_free(data_shards *s);

/* Rank r of `world` reads shards r, r+world, r+2*world, ...: its sample count. */
int64_t data_shards_rank_samples(const data_shards *s, int rank, int world);

/* Splits a validated pair into k shard pairs of near-equal size (contiguous
 * ranges) plus the index, all under out_dir; streams, so the pair may be
 * larger than memory. gzip_level 0 writes raw shards. */
int data_shards_split(const char *images, const char *labels, const char *out_dir, int64_t k,
                      int gzip_level, char *err, size_t err_bytes);

/* Writing shards one sample range at a time (split and synth share it). */
typedef struct data_shards_out data_shards_out;
int data_shards_out_init(data_shards_out **out, const char *out_dir, int64_t samples,
                         int64_t k, uint32_t rows, uint32_t cols, int gzip_level, char *err,
                         size_t err_bytes);
/* Appends n samples in order; shard files open and commit as ranges fill. */
int data_shards_out_write(data_shards_out *o, const uint8_t *images, const uint8_t *labels,
                          int64_t n, char *err, size_t err_bytes);
/* Writes the index once every sample has arrived. */
int data_shards_out_finish(data_shards_out *o, char *err, size_t err_bytes);
void data_shards_out_free(data_shards_out *o);

#endif
