/* A sequential reader of one idx file, raw or gzip (told apart by content,
 * not by name). gzip is inflated as a stream with zlib's inflate, so a bad
 * CRC, a cut-off stream or bytes after the last member are each reported
 * where they happen. Every error is one line: "FILE: byte N: problem". */
#ifndef TFDIST_DATA_IDX_READER_H
#define TFDIST_DATA_IDX_READER_H

#include <stddef.h>
#include <stdint.h>

/* What the caller expects the file to hold. */
typedef enum {
  DATA_IDX_ANY = 0,    /* images (0x803) or labels (0x801) */
  DATA_IDX_IMAGES = 1, /* magic 0x00000803, dims count, rows, cols */
  DATA_IDX_LABELS = 2  /* magic 0x00000801, dims count */
} data_idx_kind;

typedef struct {
  uint32_t magic;
  int ndims;             /* 3 for images, 1 for labels */
  uint32_t dims[3];      /* count, rows, cols (labels: count only) */
  int64_t count;         /* dims[0] */
  int64_t sample_bytes;  /* rows*cols for images, 1 for labels */
  int64_t header_bytes;  /* 16 or 8 */
  int64_t body_bytes;    /* count * sample_bytes, checked against overflow */
} data_idx_header;

typedef struct data_idx_reader data_idx_reader;

/* Opens path and reads and validates its header. A raw file's size must be
 * exactly header + body (checked here, before any body byte is read). */
int data_idx_open(data_idx_reader **out, const char *path, data_idx_kind kind, char *err,
                  size_t err_bytes);
/* The same over an open descriptor (not owned; read from its current
 * position); name is used in messages. For fuzzing and in-memory files. */
int data_idx_open_fd(data_idx_reader **out, int fd, const char *name, data_idx_kind kind,
                     char *err, size_t err_bytes);
void data_idx_close(data_idx_reader *r);
/* Opens an images file and its labels file and checks that their counts
 * agree. On failure both are closed and set to NULL. */
int data_idx_open_pair(data_idx_reader **images, data_idx_reader **labels, const char *images_path,
                       const char *labels_path, char *err, size_t err_bytes);

const data_idx_header *data_idx_header_of(const data_idx_reader *r);
const char *data_idx_path(const data_idx_reader *r);
int data_idx_is_gzip(const data_idx_reader *r);
/* Content bytes delivered so far, header included: the next byte's offset. */
int64_t data_idx_offset(const data_idx_reader *r);
/* Compressed bytes of the file (raw: its size). */
int64_t data_idx_file_bytes(const data_idx_reader *r);

/* Reads exactly `bytes` more bytes of the body, or fails naming the offset
 * (truncated, corrupt gzip). Reading past the promised body is an error. */
int data_idx_read(data_idx_reader *r, void *buf, int64_t bytes, char *err, size_t err_bytes);
/* After the whole body: nothing may follow it, and a gzip stream must end
 * cleanly with a good CRC and length and no trailing garbage. */
int data_idx_finish(data_idx_reader *r, char *err, size_t err_bytes);
/* CRC-32 (zlib's) of the body bytes read so far. */
uint32_t data_idx_body_crc(const data_idx_reader *r);
/* Turns on the body CRC (off by default: it costs a pass over the bytes). */
void data_idx_track_crc(data_idx_reader *r, int on);

/* Labels must be < DATA_CLASSES. first is the sample index of labels[0];
 * the error names the byte offset of the bad label. */
int data_idx_check_labels(const data_idx_reader *r, const uint8_t *labels, int64_t n,
                          int64_t first, char *err, size_t err_bytes);

#endif
