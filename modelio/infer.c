/* Model inference on host rows, chunked like evaluation. */
#include "modelio/infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/idx.h"
#include "model/evaluate.h"

/* Backend, work rows and parameters for s->model. */
static int infer_session_setup(infer_session *s, int64_t chunk, char *err, size_t eb) {
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  const model_layout *l = &s->model.layout;
  s->chunk = chunk;
  if (kern_backend_init(&s->be, &kc, err, eb) != 0) return -1;
  if (model_work_init(&s->work, s->be, l, chunk) != 0 ||
      kern_mem_alloc_f32(s->be, &s->params, l->total_elems) != 0 ||
      kern_mem_upload(s->be, s->params, s->model.params,
                             (size_t)l->total_elems * sizeof(float)) != 0) {
    snprintf(err, eb, "%s", kern_error(s->be)[0] ? kern_error(s->be) : "out of memory");
    return -1;
  }
  /* work.layout points into s->model: keep s where it is after this call. */
  return 0;
}

int infer_session_init(infer_session *s, const char *path, char *err, size_t eb) {
  memset(s, 0, sizeof *s);
  h5model_resolve_path(s->path, sizeof s->path, path);
  if (h5model_load(&s->model, s->path, err, eb) != 0) return -1;
  if (infer_session_setup(s, EVAL_CHUNK, err, eb) == 0) return 0;
  infer_session_free(s);
  return -1;
}

int infer_session_clone(infer_session *s, const h5model *m, const char *path, int64_t chunk,
                        char *err, size_t eb) {
  memset(s, 0, sizeof *s);
  snprintf(s->path, sizeof s->path, "%s", path);
  s->model = *m;
  size_t bytes = (size_t)m->layout.total_elems * sizeof(float);
  if (!(s->model.params = malloc(bytes))) {
    snprintf(err, eb, "%s: out of memory", path);
    return -1;
  }
  memcpy(s->model.params, m->params, bytes);
  if (infer_session_setup(s, chunk, err, eb) == 0) return 0;
  infer_session_free(s);
  return -1;
}

void infer_session_free(infer_session *s) {
  if (s->be) {
    model_work_free(&s->work);
    kern_mem_free(s->be, s->params);
    kern_backend_free(s->be);
  }
  h5model_free(&s->model);
  memset(s, 0, sizeof *s);
}

int infer_session_predict(infer_session *s, const float *x, int64_t n, float *probs,
                          int32_t *classes, char *err, size_t eb) {
  kern_backend *be = s->be;
  const model_layout *l = &s->model.layout;
  const int64_t in = l->dims[0], k = l->dims[MODEL_LAYERS];
  const int64_t chunk = s->chunk;
  float *logits = malloc((size_t)(chunk * k) * sizeof(float));
  if (!logits) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  int rc = 0;
  for (int64_t start = 0; start < n && rc == 0; start += chunk) {
    int64_t m = n - start < chunk ? n - start : chunk;
    if (kern_mem_upload_f32(be, s->work.act[0], x + start * in, m * in) ||
        model_forward(&s->work, s->params, m) ||
        kern_softmax(be, s->work.dact[MODEL_LAYERS], s->work.act[MODEL_LAYERS], m, k) ||
        kern_mem_download_f32(be, probs + start * k, s->work.dact[MODEL_LAYERS], m * k) ||
        kern_mem_download_f32(be, logits, s->work.act[MODEL_LAYERS], m * k)) {
      snprintf(err, eb, "inference: %s", kern_error(be));
      rc = -1;
      break;
    }
    for (int64_t i = 0; i < m; i++) {
      const float *z = logits + i * k;
      int32_t arg = 0;
      for (int32_t j = 1; j < k; j++) if (z[j] > z[arg]) arg = j;
      classes[start + i] = arg;
    }
  }
  free(logits);
  return rc;
}

int infer_rows_from_json(const cJSON *rows, const char *where, int64_t dim, float **x,
                         int64_t *n, char *err, size_t eb) {
  *x = NULL;
  *n = 0;
  if (!cJSON_IsArray(rows)) {
    snprintf(err, eb, "%s: expected an array of rows of %lld numbers", where, (long long)dim);
    return -1;
  }
  int64_t count = cJSON_GetArraySize(rows), i = 0;
  if (count == 0) {
    snprintf(err, eb, "%s: no rows", where);
    return -1;
  }
  float *buf = malloc((size_t)(count * dim) * sizeof(float));
  if (!buf) {
    snprintf(err, eb, "%s: out of memory for %lld rows", where, (long long)count);
    return -1;
  }
  const cJSON *row;
  cJSON_ArrayForEach(row, rows) {
    int64_t got = cJSON_IsArray(row) ? cJSON_GetArraySize(row) : -1;
    if (got != dim) {
      if (got < 0) snprintf(err, eb, "%s[%lld]: not an array", where, (long long)i);
      else snprintf(err, eb, "%s[%lld]: %lld values, expected %lld", where, (long long)i,
                    (long long)got, (long long)dim);
      goto fail;
    }
    int64_t j = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, row) {
      if (!cJSON_IsNumber(v)) {
        snprintf(err, eb, "%s[%lld][%lld]: not a number", where, (long long)i, (long long)j);
        goto fail;
      }
      /* Below FLT_MAX + half an ulp a number rounds to a finite float: numpy
       * prints float32's largest as 3.4028235e+38, just above FLT_MAX. */
      if (!(fabs(v->valuedouble) < 0x1.ffffffp+127)) {
        snprintf(err, eb, "%s[%lld][%lld]: %g is outside the float32 range", where, (long long)i,
                 (long long)j, v->valuedouble);
        goto fail;
      }
      buf[i * dim + j++] = (float)v->valuedouble;
    }
    i++;
  }
  *x = buf;
  *n = count;
  return 0;
fail:
  free(buf);
  return -1;
}

int infer_rows_from_idx(const char *path, float **x, int64_t *n, char *err, size_t eb) {
  data_set ds;
  *x = NULL;
  *n = 0;
  if (data_set_load_images(&ds, path, 0, err, eb) != 0) return -1;
  const int64_t pixels = (int64_t)ds.rows * ds.cols, bytes = ds.count * pixels;
  float *buf = NULL;
  if (pixels != 784) {
    snprintf(err, eb, "%s: %lld images of %dx%d; the model needs 28x28", path,
             (long long)ds.count, ds.rows, ds.cols);
  } else if (!(buf = malloc((size_t)bytes * sizeof(float)))) {
    snprintf(err, eb, "%s: out of memory", path);
  } else {
    for (int64_t i = 0; i < bytes; i++) buf[i] = (float)ds.images[i] * (1.0f / 255.0f);
    *x = buf;
    *n = ds.count;
  }
  data_set_free(&ds);
  return buf ? 0 : -1;
}

int infer_session_evaluate(infer_session *s, const data_set *ds, kern_stats *st, eval_chunk_fn fn,
                           void *fn_ctx, char *err, size_t err_bytes) {
  int32_t *idx = malloc((size_t)ds->count * sizeof *idx + 1);
  int64_t cursor = 0;
  memset(st, 0, sizeof *st);
  if (!idx) {
    snprintf(err, err_bytes, "out of memory");
    return -1;
  }
  for (int64_t i = 0; i < ds->count; i++) idx[i] = (int32_t)i;
  /* CPU backend: host memory is backend memory, so the data set is used in place. */
  const eval_ctx ec = {s->be, &s->work, s->params, ds->images, ds->labels,
                       s->model.layout.dims[0], idx, &cursor, st};
  int rc = eval_rows(&ec, 0, ds->count, fn, fn_ctx);
  free(idx);
  if (rc != 0) snprintf(err, err_bytes, "eval: %s", kern_error(s->be));
  return rc == 0 ? 0 : -1;
}
