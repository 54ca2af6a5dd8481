/* Writing idx files (raw or gzip) and other outputs of the data tools so a
 * reader sees the old file or the whole new one: temp name, fsync, rename. */
#ifndef TFDIST_DATA_IDX_WRITER_H
#define TFDIST_DATA_IDX_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
  char final_path[4096];
  char tmp_path[4160];
  int fd;
  void *gz;               /* gzFile when gzip, else NULL */
  uint32_t crc;           /* CRC-32 of the body written so far */
  int64_t body_bytes;     /* promised by the header */
  int64_t body_written;
} data_idx_writer;

/* Starts path (a temp file beside it): header for `count` samples of
 * rows*cols bytes (labels: rows = cols = 0 and magic 0x801). gzip_level 0
 * writes raw; 1..9 write a gzip stream. */
int data_idx_writer_open(data_idx_writer *w, const char *path, uint32_t magic, int64_t count,
                         uint32_t rows, uint32_t cols, int gzip_level, char *err,
                         size_t err_bytes);
int data_idx_writer_write(data_idx_writer *w, const void *buf, int64_t bytes, char *err,
                          size_t err_bytes);
/* Checks the body is complete, then fsync + rename + fsync of the folder. */
int data_idx_writer_commit(data_idx_writer *w, char *err, size_t err_bytes);
/* Drops the temp file (after an error); safe after commit. */
void data_idx_writer_abort(data_idx_writer *w);

#endif
