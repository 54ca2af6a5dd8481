/* The model file in the Keras HDF5 layout that keras.models.load_model reads
 * (tf-keras 2.x and Keras 3's legacy loader); see ../shared/SPEC.md. tfdist
 * adds root attributes of its own (format version, weights checksum), which
 * Keras ignores. */
#ifndef TFDIST_MODELIO_H5MODEL_H
#define TFDIST_MODELIO_H5MODEL_H

#include <hdf5.h>
#include <stddef.h>

#include "modelio/h5util.h"
#include "model/model.h"
#include "base/sha256.h"

#define H5MODEL_KERAS_VERSION "2.15.0"
#define H5MODEL_FORMAT_VERSION 1
#define H5MODEL_ATTR_FORMAT "tfdist_format_version"
#define H5MODEL_ATTR_VERSION "tfdist_version"
#define H5MODEL_ATTR_KIND "tfdist_kind"             /* "model" or "checkpoint" */
#define H5MODEL_ATTR_SHA256 "tfdist_weights_sha256" /* over the flat float32 buffer */

/* Writes root attributes, model_config and model_weights into an open file,
 * plus tfdist's format version, kind and weights checksum. last_activation is
 * "softmax" for the served model, "linear" for raw logits. */
int h5model_write_keras(hid_t file, const model_layout *l, const float *params,
                        const char *last_activation, const char *kind, char *err,
                        size_t err_bytes);
#define H5MODEL_ATTR_RUN_ID "tfdist_run_id"    /* the run that trained the model */
#define H5MODEL_ATTR_METRICS "tfdist_metrics"  /* JSON object: that run's final metrics */

/* Whole model file, crash-safe: temp name, fsync, rename, fsync folder. */
int h5model_save(const char *path, const model_layout *l, const float *params, char *err,
                 size_t err_bytes);
/* The same, naming the run that trained it (run_id, metrics_json: may be NULL),
 * so the model keeps its provenance when its folder's records move on. */
int h5model_save_run(const char *path, const model_layout *l, const float *params,
                     const char *run_id, const char *metrics_json, char *err, size_t err_bytes);

/* The parameter budget (--max-params): every read checks the sizes a file
 * declares against it, and against the file's own size, before allocating.
 * Process-wide: the CLI sets it once, before any thread starts. */
#define H5MODEL_DEFAULT_MAX_PARAMS 50000000
#define H5MODEL_MAX_PARAMS_HELP "largest model a file may declare, in parameters (this net: 266610)"
void h5model_max_params_set(int64_t max_params);
int64_t h5model_max_params(void);

/* A model read back: the layout its datasets imply and its parameters. */
typedef struct {
  model_layout layout;
  float *params;            /* (layout.total_elems) in layout order, owned */
  char last_activation[16]; /* "softmax" or "linear" */
  int checksum_verified;    /* 1: the file carried tfdist_weights_sha256 and it matched */
} h5model;

/* Reads model_config and model_weights of an open file: layers in layer_names
 * order, datasets by weight_names, shapes chained 784 -> h1 -> h2 -> 10, and
 * the weights checksum when present. where names the file in errors. */
int h5model_read_keras(hid_t file, const char *where, h5model *m, char *err, size_t err_bytes);
/* path: a model or checkpoint file, or a folder holding model.h5. */
int h5model_load(h5model *m, const char *path, char *err, size_t err_bytes);
void h5model_free(h5model *m);
/* sha256 of the parameters as little-endian float32 bytes in layout order. */
void h5model_weights_sha256(const model_layout *l, const float *params,
                            char hex[SHA256_HEX_BYTES]);
/* Resolves a --model argument: a folder means <folder>/model.h5. */
void h5model_resolve_path(char *out, size_t out_bytes, const char *path);

#endif
