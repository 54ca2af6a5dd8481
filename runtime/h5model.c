/* Keras-layout HDF5 writing: fixed-length NULLPAD ASCII attributes, plain
 * contiguous float32 datasets, hard links only. */
#include "runtime/h5model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/fsutil.h"

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
  char *msg = data;
  if (n == 0 && e->desc) snprintf(msg, 256, "%s (in %s)", e->desc, e->func_name);
  return 0;
}

void h5_error_line(char *err, size_t err_bytes, const char *expr, const char *file, int line) {
  char msg[256] = "unknown HDF5 error";
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_walk_cb, msg);
  snprintf(err, err_bytes, "HDF5: %s failed at %s:%d: %s", expr, file, line, msg);
  H5Eclear2(H5E_DEFAULT);
}

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static hid_t h5_str_type(size_t len) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return t;
  if (H5Tset_size(t, len ? len : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0 ||
      H5Tset_cset(t, H5T_CSET_ASCII) < 0) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

/* Scalar fixed-length string attribute. */
static int h5_attr_str(hid_t obj, const char *name, const char *value, char *err, size_t eb) {
  int rc = -1;
  hid_t t = -1, s = -1, a = -1;
  H5_CHECK(t = h5_str_type(strlen(value)), err, eb, out);
  H5_CHECK(s = H5Screate(H5S_SCALAR), err, eb, out);
  H5_CHECK(a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  H5_CHECK(H5Awrite(a, t, value), err, eb, out);
  rc = 0;
out:
  if (a >= 0) H5Aclose(a);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  return rc;
}

/* 1-D array of fixed-length strings, padded to the longest. */
static int h5_attr_str_array(hid_t obj, const char *name, const char *const *values, int n,
                             char *err, size_t eb) {
  size_t width = 1;
  for (int i = 0; i < n; i++) width = strlen(values[i]) > width ? strlen(values[i]) : width;
  char *buf = calloc((size_t)n, width);
  int rc = -1;
  hid_t t = -1, s = -1, a = -1;
  hsize_t dim = (hsize_t)n;
  if (!buf) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * width, values[i], strlen(values[i]));
  H5_CHECK(t = h5_str_type(width), err, eb, out);
  H5_CHECK(s = H5Screate_simple(1, &dim, NULL), err, eb, out);
  H5_CHECK(a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  H5_CHECK(H5Awrite(a, t, buf), err, eb, out);
  rc = 0;
out:
  if (a >= 0) H5Aclose(a);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  free(buf);
  return rc;
}

static cJSON *h5_dense_config(const model_tensor *w, const char *activation) {
  cJSON *layer = cJSON_CreateObject(), *c = cJSON_CreateObject();
  cJSON_AddStringToObject(layer, "class_name", "Dense");
  cJSON_AddItemToObject(layer, "config", c);
  cJSON_AddStringToObject(c, "name", w->layer);
  cJSON_AddBoolToObject(c, "trainable", 1);
  cJSON_AddStringToObject(c, "dtype", "float32");
  cJSON_AddNumberToObject(c, "units", (double)w->cols);
  cJSON_AddStringToObject(c, "activation", activation);
  cJSON_AddBoolToObject(c, "use_bias", 1);
  cJSON *ki = cJSON_AddObjectToObject(c, "kernel_initializer");
  cJSON_AddStringToObject(ki, "class_name", "GlorotUniform");
  cJSON_AddNullToObject(cJSON_AddObjectToObject(ki, "config"), "seed");
  cJSON *bi = cJSON_AddObjectToObject(c, "bias_initializer");
  cJSON_AddStringToObject(bi, "class_name", "Zeros");
  cJSON_AddObjectToObject(bi, "config");
  const char *nulls[] = {"kernel_regularizer", "bias_regularizer", "activity_regularizer",
                         "kernel_constraint", "bias_constraint"};
  for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) cJSON_AddNullToObject(c, nulls[i]);
  return layer;
}

/* A Sequential with an explicit InputLayer (batch_input_shape, which tf-keras
 * 2.x accepts; no batch_shape, module or registered_name keys). */
static char *h5_model_config(const model_layout *l, const char *last_activation) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "class_name", "Sequential");
  cJSON *cfg = cJSON_AddObjectToObject(root, "config");
  cJSON_AddStringToObject(cfg, "name", "sequential");
  cJSON *layers = cJSON_AddArrayToObject(cfg, "layers");
  cJSON *in = cJSON_CreateObject(), *inc = cJSON_CreateObject();
  cJSON_AddStringToObject(in, "class_name", "InputLayer");
  cJSON_AddItemToObject(in, "config", inc);
  cJSON *shape = cJSON_AddArrayToObject(inc, "batch_input_shape");
  cJSON_AddItemToArray(shape, cJSON_CreateNull());
  cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)l->dims[0]));
  cJSON_AddStringToObject(inc, "dtype", "float32");
  cJSON_AddBoolToObject(inc, "sparse", 0);
  cJSON_AddBoolToObject(inc, "ragged", 0);
  cJSON_AddStringToObject(inc, "name", "input_1");
  cJSON_AddItemToArray(layers, in);
  for (int k = 0; k < MODEL_LAYERS; k++) {
    const char *act = k + 1 < MODEL_LAYERS ? "relu" : last_activation;
    cJSON_AddItemToArray(layers, h5_dense_config(&l->tensors[2 * k], act));
  }
  cJSON_AddStringToObject(root, "keras_version", H5MODEL_KERAS_VERSION);
  cJSON_AddStringToObject(root, "backend", "tensorflow");
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return text;
}

static int h5_write_tensor(hid_t group, const model_tensor *t, const float *params, char *err,
                           size_t eb) {
  hsize_t dims[2] = {(hsize_t)t->rows, (hsize_t)t->cols};
  int rank = t->cols ? 2 : 1, rc = -1;
  const char *leaf = strchr(t->name, '/') + 1;
  hid_t s = -1, d = -1;
  H5_CHECK(s = H5Screate_simple(rank, dims, NULL), err, eb, out);
  H5_CHECK(d = H5Dcreate2(group, leaf, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
           err, eb, out);
  H5_CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, params + t->offset), err,
           eb, out);
  rc = 0;
out:
  if (d >= 0) H5Dclose(d);
  if (s >= 0) H5Sclose(s);
  return rc;
}

static int h5_write_layer(hid_t weights, const model_layout *l, int k, const float *params,
                          char *err, size_t eb) {
  const model_tensor *w = &l->tensors[2 * k], *b = &l->tensors[2 * k + 1];
  const char *names[2] = {w->name, b->name};
  int rc = -1;
  hid_t lg = -1, inner = -1;
  H5_CHECK(lg = H5Gcreate2(weights, w->layer, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  if (h5_attr_str_array(lg, "weight_names", names, 2, err, eb) != 0) goto out;
  H5_CHECK(inner = H5Gcreate2(lg, w->layer, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  if (h5_write_tensor(inner, w, params, err, eb) != 0) goto out;
  if (h5_write_tensor(inner, b, params, err, eb) != 0) goto out;
  rc = 0;
out:
  if (inner >= 0) H5Gclose(inner);
  if (lg >= 0) H5Gclose(lg);
  return rc;
}

int h5model_write_keras(hid_t file, const model_layout *l, const float *params,
                        const char *last_activation, char *err, size_t eb) {
  int rc = -1;
  hid_t weights = -1;
  char *config = h5_model_config(l, last_activation);
  const char *layer_names[MODEL_LAYERS];
  if (!config) {
    snprintf(err, eb, "out of memory building model_config");
    return -1;
  }
  if (h5_attr_str(file, "model_config", config, err, eb) != 0 ||
      h5_attr_str(file, "keras_version", H5MODEL_KERAS_VERSION, err, eb) != 0 ||
      h5_attr_str(file, "backend", "tensorflow", err, eb) != 0) {
    goto out;
  }
  H5_CHECK(weights = H5Gcreate2(file, "model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
           err, eb, out);
  for (int k = 0; k < MODEL_LAYERS; k++) layer_names[k] = l->tensors[2 * k].layer;
  if (h5_attr_str(weights, "backend", "tensorflow", err, eb) != 0 ||
      h5_attr_str(weights, "keras_version", H5MODEL_KERAS_VERSION, err, eb) != 0 ||
      h5_attr_str_array(weights, "layer_names", layer_names, MODEL_LAYERS, err, eb) != 0) {
    goto out;
  }
  for (int k = 0; k < MODEL_LAYERS; k++) {
    if (h5_write_layer(weights, l, k, params, err, eb) != 0) goto out;
  }
  rc = 0;
out:
  if (weights >= 0) H5Gclose(weights);
  free(config);
  return rc;
}

int h5model_save(const char *path, const model_layout *l, const float *params, char *err,
                 size_t eb) {
  char tmp[4200];
  fs_tmp_path(tmp, sizeof tmp, path);
  h5_quiet();
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) {
    h5_error_line(err, eb, "H5Fcreate", __FILE__, __LINE__);
    return -1;
  }
  int rc = h5model_write_keras(f, l, params, "softmax", err, eb);
  if (H5Fclose(f) < 0 && rc == 0) {
    h5_error_line(err, eb, "H5Fclose", __FILE__, __LINE__);
    rc = -1;
  }
  if (rc != 0) {
    remove(tmp);
    return -1;
  }
  return fs_commit(tmp, path, err, eb);
}
