/* The model file in the Keras HDF5 layout that keras.models.load_model reads
 * (tf-keras 2.x and Keras 3's legacy loader); see ../shared/SPEC.md. */
#ifndef TFDIST_RUNTIME_H5MODEL_H
#define TFDIST_RUNTIME_H5MODEL_H

#include <hdf5.h>
#include <stddef.h>

#include "runtime/model.h"

#define H5MODEL_KERAS_VERSION "2.15.0"

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

/* Writes root attributes, model_config and model_weights into an open file.
 * last_activation is "softmax" for the served model, "linear" for raw logits. */
int h5model_write_keras(hid_t file, const model_layout *l, const float *params,
                        const char *last_activation, char *err, size_t err_bytes);
/* Whole model file, crash-safe: temp name, fsync, rename, fsync folder. */
int h5model_save(const char *path, const model_layout *l, const float *params, char *err,
                 size_t err_bytes);

#endif
