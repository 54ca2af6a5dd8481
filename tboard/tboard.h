/* TensorBoard event files (SPEC "Metrics in TensorBoard"): TFRecords of Event
 * protobufs, scalars only. A writer owns one file; records are kept in memory
 * until tboard_writer_flush, which appends and fsyncs them (once an epoch). */
#ifndef TFDIST_TBOARD_TBOARD_H
#define TFDIST_TBOARD_TBOARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct tboard_writer tboard_writer;

/* Makes dir (and its parents) and creates in it
 * events.out.tfevents.<unix time>.<host>.<pid>.tfdist, never over an existing
 * file or through a link; the first record, file_version "brain.Event:2", is
 * kept for the first flush. 0, or -1 with err naming the path. */
int tboard_writer_open(tboard_writer **w, const char *dir, char *err, size_t err_bytes);
/* A scalar at a step, kept for the next flush, which reports a failure to
 * keep it (out of memory). A NULL writer does nothing. */
void tboard_writer_scalar(tboard_writer *w, const char *tag, double value, int64_t step);
/* SessionLog START at step: TensorBoard drops what earlier files hold at
 * steps >= step, so a run resumed from a checkpoint shows one series, not
 * the abandoned tail of the run it resumed. Kept like a scalar. */
void tboard_writer_restart(tboard_writer *w, int64_t step);
/* Appends the kept records and fsyncs. A failed append is cut back off, so
 * the file holds whole records only. NULL writer: 0. */
int tboard_writer_flush(tboard_writer *w, char *err, size_t err_bytes);
/* The file's path ("" for NULL). */
const char *tboard_writer_path(const tboard_writer *w);
/* Closes without flushing; NULL is a no-op. */
void tboard_writer_free(tboard_writer *w);

/* TFRecord's mask of a CRC-32C: ((crc >> 15) | (crc << 17)) + 0xa282ead8. */
uint32_t tboard_crc_mask(uint32_t crc);

#endif
