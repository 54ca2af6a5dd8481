/* Inference with a saved model through the CPU backend: the same float32
 * forward pass as training's evaluation, softmax on top. Shared by
 * `tfdist predict` and `tfdist eval` (and any scoring server). */
#ifndef TFDIST_MODELIO_INFER_H
#define TFDIST_MODELIO_INFER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "data/idx.h"
#include "kernels/backend.h"
#include "model/evaluate.h"
#include "modelio/h5model.h"
#include "model/model.h"

typedef struct {
  h5model model;      /* host copy of the weights, as read */
  kern_backend *be;   /* the CPU backend, one BLAS thread */
  model_work work;    /* rows of up to chunk */
  int64_t chunk;
  float *params;      /* backend memory, (model.layout.total_elems) */
  char path[4200];    /* the model file actually read */
} infer_session;

/* path: a model or checkpoint file, or a folder holding model.h5. */
int infer_session_init(infer_session *s, const char *path, char *err, size_t err_bytes);
/* A session of its own on a copy of m, in chunks of chunk rows: for threads
 * that each need one, with no second read of the file. */
int infer_session_clone(infer_session *s, const h5model *m, const char *path, int64_t chunk,
                        char *err, size_t err_bytes);
void infer_session_free(infer_session *s);
/* The training loop's evaluation (evaluate.c) of s over every row of ds, in
 * order, into *st (zeroed first); fn sees each chunk's logits when not NULL.
 * 0, or -1 with err set. */
int infer_session_evaluate(infer_session *s, const data_set *ds, kern_stats *st, eval_chunk_fn fn,
                           void *fn_ctx, char *err, size_t err_bytes);
/* x (n, 784) host floats -> probs (n, 10) softmax and classes (n) = argmax of
 * the logits, ties to the lower class (as training's accuracy counts them). */
int infer_session_predict(infer_session *s, const float *x, int64_t n, float *probs,
                          int32_t *classes, char *err, size_t err_bytes);

/* rows: a JSON array of n arrays of dim numbers -> *x (n, dim), malloc'd.
 * where names the source and key in errors ("stdin: data"). */
int infer_rows_from_json(const cJSON *rows, const char *where, int64_t dim, float **x,
                         int64_t *n, char *err, size_t err_bytes);
/* An idx3 images file (raw or .gz) of 28x28 images -> *x (n, 784) scaled by
 * 1/255 exactly as training scales them. */
int infer_rows_from_idx(const char *path, float **x, int64_t *n, char *err, size_t err_bytes);

#endif
