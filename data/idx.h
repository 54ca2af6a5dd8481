/* MNIST-format idx files: finding the four under a folder, and loading a
 * validated images/labels pair into memory (data/idx_reader.h reads them). */
#ifndef TFDIST_DATA_IDX_H
#define TFDIST_DATA_IDX_H

#include <stddef.h>
#include <stdint.h>

#define DATA_IDX_MAGIC_IMAGES 0x00000803u
#define DATA_IDX_MAGIC_LABELS 0x00000801u
#define DATA_CLASSES 10

/* One split (train or test), fully in memory as uint8. */
typedef struct {
  uint8_t *images; /* (count, rows*cols) row-major, owned */
  uint8_t *labels; /* (count), each < DATA_CLASSES, owned */
  int64_t count;
  int32_t rows, cols;
} data_set;

/* The files of a data folder, found recursively, .gz or raw; the first match
 * in sorted order wins (a folder's files before its subfolders), so the
 * choice is stable. An images file and its labels come from one folder: the
 * first that holds both; a pair found only apart is an error, never mixed.
 * Empty string: not found. */
typedef struct {
  char train_images[4096];
  char train_labels[4096];
  char test_images[4096];
  char test_labels[4096];
  char train_shards[4096]; /* DATA_SHARDS_INDEX_NAME (tfdist data shard), optional */
} data_files;

#define DATA_SHARDS_INDEX_NAME "train-shards.index"

/* All four files must be there (the shard index is found if present). */
int data_files_find(data_files *out, const char *dir, char *err, size_t err_bytes);
/* Looser, for streaming: the test pair, and the train pair or a shard index. */
int data_files_find_stream(data_files *out, const char *dir, char *err, size_t err_bytes);

/* Loads and validates an images/labels pair: magic, dims (rows*cols must be
 * 784 when expect_784), counts that agree, exact sizes, labels < 10, gzip
 * CRCs, nothing after the body. Memory grows with the bytes that actually
 * arrive, never on the header's word alone. count must be < 2^31. */
int data_set_load(data_set *ds, const char *images_path, const char *labels_path,
                  int expect_784, char *err, size_t err_bytes);
/* The images file alone (labels stays NULL), validated as above: for
 * inference on an unlabelled file. */
int data_set_load_images(data_set *ds, const char *images_path, int expect_784, char *err,
                         size_t err_bytes);
void data_set_free(data_set *ds);

#endif
