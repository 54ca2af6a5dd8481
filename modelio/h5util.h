/* Small HDF5 helpers shared by the model file and checkpoints: one-line
 * errors from HDF5's own stack, typed attributes, plain contiguous float32
 * datasets. Readers check class, rank and shape before reading a byte. */
#ifndef TFDIST_MODELIO_H5UTIL_H
#define TFDIST_MODELIO_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Prints nothing itself: HDF5's own error stack is turned into one line. */
#define H5_CHECK(call, err, err_bytes, label)                                                \
  do {                                                                                       \
    if ((call) < 0) {                                                                        \
      h5_error_line((err), (err_bytes), #call, __FILE__, __LINE__);                          \
      goto label;                                                                            \
    }                                                                                        \
  } while (0)

void h5_error_line(char *err, size_t err_bytes, const char *expr, const char *file, int line);
/* Silences HDF5's default stack printing; errors come back through H5_CHECK. */
void h5_quiet(void);

/* Opens an existing file read-only; a missing, non-HDF5 or truncated file is
 * a one-line error naming path. Returns the file id or -1. */
hid_t h5_open_read(const char *path, char *err, size_t err_bytes);

/* Walks every link of an open file: hard links only (no soft, external or
 * user-defined link), and every dataset plain (no external raw storage, no
 * virtual dataset, no filter): one line naming the first offender. Called by
 * h5_open_read, so every model, checkpoint and registry read has passed it. */
int h5_file_check_plain(hid_t file, const char *path, char *err, size_t err_bytes);

/* Fills an open, newly created file; returns 0 or -1 with err set. */
typedef int (*h5_file_writer)(hid_t file, const void *ctx, char *err, size_t err_bytes);
/* Writes path crash-safely: write() fills a temp file next to it, which is
 * closed and committed (base/fsutil.h); on failure the temp file is
 * removed. before_commit (may be NULL) runs between the close and the rename:
 * a test hook. */
int h5_file_write_atomic(const char *path, h5_file_writer write, const void *ctx,
                         void (*before_commit)(void), char *err, size_t err_bytes);

/* Writers: scalar fixed-length NULLPAD ASCII strings, 1-D fixed-length string
 * arrays padded to the longest, and numeric scalars. */
int h5_attr_write_str(hid_t obj, const char *name, const char *value, char *err, size_t eb);
int h5_attr_write_str_array(hid_t obj, const char *name, const char *const *values, int n,
                            char *err, size_t eb);
int h5_attr_write_i64(hid_t obj, const char *name, int64_t value, char *err, size_t eb);
int h5_attr_write_f64(hid_t obj, const char *name, double value, char *err, size_t eb);

/* Readers. `where` names the object in messages ("ckpt.h5: /" ...). A missing
 * attribute is an error unless the caller asked h5_attr_exists first. */
int h5_attr_exists(hid_t obj, const char *name);
/* Printable ASCII, 1..255 characters: what a layer or dataset name read from
 * a file must be before it goes into an error line or a lookup. */
int h5_is_ascii_name(const char *s);
/* Scalar string, fixed or variable length; *out is malloc'd. Strings with
 * control characters are refused: they would break one-line errors. */
int h5_attr_read_str(hid_t obj, const char *name, const char *where, char **out, char *err,
                     size_t eb);
/* 1-D string array, fixed or variable length; *out is n malloc'd strings in one
 * malloc'd array (free with h5_str_array_free). */
int h5_attr_read_str_array(hid_t obj, const char *name, const char *where, char ***out, int *n,
                           char *err, size_t eb);
void h5_str_array_free(char **a, int n);
int h5_attr_read_i64(hid_t obj, const char *name, const char *where, int64_t *out, char *err,
                     size_t eb);
int h5_attr_read_f64(hid_t obj, const char *name, const char *where, double *out, char *err,
                     size_t eb);

/* Plain contiguous little-endian float32 dataset of rank 1 (cols == 0) or 2. */
int h5_dataset_write_f32(hid_t group, const char *name, const float *data, int64_t rows,
                         int64_t cols, char *err, size_t eb);
/* Shape of a floating-point dataset of rank 1 or 2 (dims[1] = 0 for rank 1). */
int h5_dataset_shape(hid_t group, const char *name, const char *where, int *rank,
                     int64_t dims[2], char *err, size_t eb);
/* Reads exactly elems floats; the caller has checked the shape. */
int h5_dataset_read_f32(hid_t group, const char *name, const char *where, float *out,
                        int64_t elems, char *err, size_t eb);
/* Long text (JSON) as a scalar fixed-length string dataset: unlike an
 * attribute, it is not bound by the 64 KiB object-header limit. */
int h5_dataset_write_text(hid_t group, const char *name, const char *text, char *err, size_t eb);
int h5_dataset_read_text(hid_t group, const char *name, const char *where, char **out,
                         char *err, size_t eb);

/* Opens a group or reports it missing, naming where/name. */
hid_t h5_group_open(hid_t parent, const char *name, const char *where, char *err, size_t eb);

#endif
