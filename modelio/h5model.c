/* Keras-layout HDF5 model files: writing (fixed-length NULLPAD ASCII
 * attributes, plain contiguous float32 datasets, hard links only) and reading
 * back, with every shape checked against the config and the checksum. */
#include "modelio/h5model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/idx.h"
#include "tfdist_config.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the weights checksum hashes the float buffer as stored: little-endian hosts only"
#endif

#define H5MODEL_MAX_UNITS (1 << 16) /* as --first-layer-neurons allows */

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

static int h5_write_layer(hid_t weights, const model_layout *l, int k, const float *params,
                          char *err, size_t eb) {
  const model_tensor *w = &l->tensors[2 * k], *b = &l->tensors[2 * k + 1];
  const char *names[2] = {w->name, b->name};
  int rc = -1;
  hid_t lg = -1, inner = -1;
  H5_CHECK(lg = H5Gcreate2(weights, w->layer, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  if (h5_attr_write_str_array(lg, "weight_names", names, 2, err, eb) != 0) goto out;
  H5_CHECK(inner = H5Gcreate2(lg, w->layer, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  for (int i = 0; i < 2; i++) {
    const model_tensor *t = i == 0 ? w : b;
    if (h5_dataset_write_f32(inner, strchr(t->name, '/') + 1, params + t->offset, t->rows,
                             t->cols, err, eb) != 0) {
      goto out;
    }
  }
  rc = 0;
out:
  if (inner >= 0) H5Gclose(inner);
  if (lg >= 0) H5Gclose(lg);
  return rc;
}

void h5model_weights_sha256(const model_layout *l, const float *params,
                            char hex[SHA256_HEX_BYTES]) {
  sha256_hex(params, (size_t)l->total_elems * sizeof(float), hex);
}

static int h5_write_tfdist_attrs(hid_t file, const model_layout *l, const float *params,
                                 const char *kind, char *err, size_t eb) {
  char hex[SHA256_HEX_BYTES];
  h5model_weights_sha256(l, params, hex);
  if (h5_attr_write_i64(file, H5MODEL_ATTR_FORMAT, H5MODEL_FORMAT_VERSION, err, eb) != 0 ||
      h5_attr_write_str(file, H5MODEL_ATTR_VERSION, TFDIST_VERSION, err, eb) != 0 ||
      h5_attr_write_str(file, H5MODEL_ATTR_KIND, kind, err, eb) != 0 ||
      h5_attr_write_str(file, H5MODEL_ATTR_SHA256, hex, err, eb) != 0) {
    return -1;
  }
  return 0;
}

int h5model_write_keras(hid_t file, const model_layout *l, const float *params,
                        const char *last_activation, const char *kind, char *err, size_t eb) {
  int rc = -1;
  hid_t weights = -1;
  char *config = h5_model_config(l, last_activation);
  const char *layer_names[MODEL_LAYERS];
  if (!config) {
    snprintf(err, eb, "out of memory building model_config");
    return -1;
  }
  if (h5_attr_write_str(file, "model_config", config, err, eb) != 0 ||
      h5_attr_write_str(file, "keras_version", H5MODEL_KERAS_VERSION, err, eb) != 0 ||
      h5_attr_write_str(file, "backend", "tensorflow", err, eb) != 0 ||
      h5_write_tfdist_attrs(file, l, params, kind, err, eb) != 0) {
    goto out;
  }
  H5_CHECK(weights = H5Gcreate2(file, "model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
           err, eb, out);
  for (int k = 0; k < MODEL_LAYERS; k++) layer_names[k] = l->tensors[2 * k].layer;
  if (h5_attr_write_str(weights, "backend", "tensorflow", err, eb) != 0 ||
      h5_attr_write_str(weights, "keras_version", H5MODEL_KERAS_VERSION, err, eb) != 0 ||
      h5_attr_write_str_array(weights, "layer_names", layer_names, MODEL_LAYERS, err, eb) != 0) {
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

typedef struct {
  const model_layout *l;
  const float *params;
  const char *run_id, *metrics_json; /* may be NULL */
} h5_model_ref;

static int h5_write_model_file(hid_t file, const void *ctx, char *err, size_t eb) {
  const h5_model_ref *m = ctx;
  if (h5model_write_keras(file, m->l, m->params, "softmax", "model", err, eb) != 0 ||
      (m->run_id && h5_attr_write_str(file, H5MODEL_ATTR_RUN_ID, m->run_id, err, eb) != 0) ||
      (m->metrics_json &&
       h5_attr_write_str(file, H5MODEL_ATTR_METRICS, m->metrics_json, err, eb) != 0)) {
    return -1;
  }
  return 0;
}

int h5model_save_run(const char *path, const model_layout *l, const float *params,
                     const char *run_id, const char *metrics_json, char *err, size_t eb) {
  h5_model_ref m = {l, params, run_id, metrics_json};
  return h5_file_write_atomic(path, h5_write_model_file, &m, NULL, err, eb);
}

int h5model_save(const char *path, const model_layout *l, const float *params, char *err,
                 size_t eb) {
  return h5model_save_run(path, l, params, NULL, NULL, err, eb);
}

/* ---- reading ---- */

/* One Dense layer as found in the file. */
typedef struct {
  char name[64];
  char kernel_path[256], bias_path[256]; /* relative to model_weights/<name> */
  int64_t in, out;
} h5_layer_found;

static int h5_read_layer(hid_t weights, const char *where, const char *name, h5_layer_found *lf,
                         int *has_weights, char *err, size_t eb) {
  char gwhere[4600];
  snprintf(gwhere, sizeof gwhere, "%s: model_weights/%s", where, name);
  hid_t g = h5_group_open(weights, name, gwhere, err, eb);
  if (g < 0) return -1;
  char **wn = NULL;
  int n = 0, rc = -1;
  if (h5_attr_read_str_array(g, "weight_names", gwhere, &wn, &n, err, eb) != 0) goto out;
  *has_weights = n > 0;
  if (n == 0) {
    rc = 0;
    goto out;
  }
  if (n != 2) {
    snprintf(err, eb, "%s: %d weights, expected a kernel and a bias", gwhere, n);
    goto out;
  }
  if (!h5_is_ascii_name(wn[0]) || !h5_is_ascii_name(wn[1])) {
    snprintf(err, eb, "%s: attribute 'weight_names' holds a name that is not printable ASCII",
             gwhere);
    goto out;
  }
  snprintf(lf->name, sizeof lf->name, "%s", name);
  snprintf(lf->kernel_path, sizeof lf->kernel_path, "%s", wn[0]);
  snprintf(lf->bias_path, sizeof lf->bias_path, "%s", wn[1]);
  int kr = 0, br = 0;
  int64_t kd[2], bd[2];
  if (h5_dataset_shape(g, lf->kernel_path, gwhere, &kr, kd, err, eb) != 0 ||
      h5_dataset_shape(g, lf->bias_path, gwhere, &br, bd, err, eb) != 0) {
    goto out;
  }
  if (kr != 2 || br != 1) {
    snprintf(err, eb, "%s: kernel must be 2-D and bias 1-D (got %d-D and %d-D)", gwhere, kr, br);
    goto out;
  }
  if (bd[0] != kd[1]) {
    snprintf(err, eb, "%s/%s: shape (%lld,) does not match the kernel's %lld units", gwhere,
             lf->bias_path, (long long)bd[0], (long long)kd[1]);
    goto out;
  }
  lf->in = kd[0];
  lf->out = kd[1];
  rc = 0;
out:
  h5_str_array_free(wn, n);
  H5Gclose(g);
  return rc;
}

/* The Dense layers of the file in layer_names order; layers without weights
 * (InputLayer, Dropout) are skipped, as Keras does. */
static int h5_find_layers(hid_t weights, const char *where, h5_layer_found *lf, char *err,
                          size_t eb) {
  char **names = NULL;
  int n = 0, found = 0, rc = -1;
  char gwhere[4600];
  snprintf(gwhere, sizeof gwhere, "%s: model_weights", where);
  if (h5_attr_read_str_array(weights, "layer_names", gwhere, &names, &n, err, eb) != 0) return -1;
  for (int i = 0; i < n; i++) {
    if (!h5_is_ascii_name(names[i])) {
      snprintf(err, eb, "%s: attribute 'layer_names'[%d] is not a printable ASCII name", gwhere, i);
      goto out;
    }
    h5_layer_found one;
    int has = 0;
    if (h5_read_layer(weights, where, names[i], &one, &has, err, eb) != 0) goto out;
    if (!has) continue;
    if (found == MODEL_LAYERS) {
      snprintf(err, eb, "%s: more than %d Dense layers; tfdist models have %d", gwhere,
               MODEL_LAYERS, MODEL_LAYERS);
      goto out;
    }
    lf[found++] = one;
  }
  if (found != MODEL_LAYERS) {
    snprintf(err, eb, "%s: %d layers with weights; tfdist models have %d", gwhere, found,
             MODEL_LAYERS);
    goto out;
  }
  rc = 0;
out:
  h5_str_array_free(names, n);
  return rc;
}

/* 784 -> h1 -> h2 -> 10, each kernel's rows the previous kernel's columns. */
static int h5_check_chain(const h5_layer_found *lf, const char *where, char *err, size_t eb) {
  for (int k = 0; k < MODEL_LAYERS; k++) {
    int64_t want_in = k == 0 ? 784 : lf[k - 1].out;
    int last = k + 1 == MODEL_LAYERS;
    if (lf[k].in != want_in || (last && lf[k].out != DATA_CLASSES) ||
        lf[k].out < 1 || lf[k].out > H5MODEL_MAX_UNITS) {
      snprintf(err, eb,
               "%s: model_weights/%s/%s: shape (%lld, %lld), expected (%lld, %s)", where,
               lf[k].name, lf[k].kernel_path, (long long)lf[k].in, (long long)lf[k].out,
               (long long)want_in, last ? "10" : "1..65536");
      return -1;
    }
  }
  return 0;
}

static const cJSON *h5_cfg_item(const cJSON *layer, const char *key) {
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(layer, "config");
  return c ? cJSON_GetObjectItemCaseSensitive(c, key) : NULL;
}

/* model_config must describe the same Dense layers: units and activations
 * (hidden relu, output softmax or linear). */
static int h5_check_config(hid_t file, const char *where, const h5_layer_found *lf, h5model *m,
                           char *err, size_t eb) {
  char *text = NULL, cwhere[4600];
  snprintf(cwhere, sizeof cwhere, "%s: /", where);
  if (h5_attr_read_str(file, "model_config", cwhere, &text, err, eb) != 0) return -1;
  cJSON *root = cJSON_Parse(text);
  free(text);
  int rc = -1, k = 0;
  const cJSON *layers = h5_cfg_item(root, "layers");
  if (!cJSON_IsArray(layers)) {
    snprintf(err, eb, "%s: model_config: not a Sequential JSON with config.layers", where);
    goto out;
  }
  const cJSON *layer;
  cJSON_ArrayForEach(layer, layers) {
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(layer, "class_name");
    if (!cJSON_IsString(cls) || strcmp(cls->valuestring, "Dense") != 0) continue;
    const cJSON *units = h5_cfg_item(layer, "units"), *act = h5_cfg_item(layer, "activation");
    if (k >= MODEL_LAYERS || !cJSON_IsNumber(units) || units->valuedouble != (double)lf[k].out ||
        !cJSON_IsString(act)) {
      snprintf(err, eb, "%s: model_config: Dense layer %d does not match the weights (%lld units)",
               where, k, k < MODEL_LAYERS ? (long long)lf[k].out : 0LL);
      goto out;
    }
    const char *a = h5_is_ascii_name(act->valuestring) ? act->valuestring : "(unprintable)";
    int last = k + 1 == MODEL_LAYERS;
    if (last ? (strcmp(a, "softmax") && strcmp(a, "linear")) : strcmp(a, "relu") != 0) {
      snprintf(err, eb, "%s: model_config: Dense layer %d activation '%s' is not supported "
               "(hidden: relu, output: softmax or linear)", where, k, a);
      goto out;
    }
    if (last) snprintf(m->last_activation, sizeof m->last_activation, "%s", a);
    k++;
  }
  if (k != MODEL_LAYERS) {
    snprintf(err, eb, "%s: model_config: %d Dense layers, expected %d", where, k, MODEL_LAYERS);
    goto out;
  }
  rc = 0;
out:
  cJSON_Delete(root);
  return rc;
}

static int h5_read_params(hid_t weights, const char *where, const h5_layer_found *lf, h5model *m,
                          char *err, size_t eb) {
  for (int k = 0; k < MODEL_LAYERS; k++) {
    char gwhere[4600];
    snprintf(gwhere, sizeof gwhere, "%s: model_weights/%s", where, lf[k].name);
    hid_t g = h5_group_open(weights, lf[k].name, gwhere, err, eb);
    if (g < 0) return -1;
    const model_tensor *w = &m->layout.tensors[2 * k], *b = &m->layout.tensors[2 * k + 1];
    int rc = h5_dataset_read_f32(g, lf[k].kernel_path, gwhere, m->params + w->offset, w->elems,
                                 err, eb);
    if (rc == 0) {
      rc = h5_dataset_read_f32(g, lf[k].bias_path, gwhere, m->params + b->offset, b->elems, err,
                               eb);
    }
    H5Gclose(g);
    if (rc != 0) return -1;
  }
  return 0;
}

static int h5_verify_checksum(hid_t file, const char *where, h5model *m, char *err, size_t eb) {
  if (!h5_attr_exists(file, H5MODEL_ATTR_SHA256)) {
    /* Keras wrote it; but a file that says it is tfdist's must carry its checksum */
    static const char *const own[] = {H5MODEL_ATTR_KIND, H5MODEL_ATTR_FORMAT, H5MODEL_ATTR_VERSION};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
      if (!h5_attr_exists(file, own[i])) continue;
      snprintf(err, eb, "%s: /: attribute '%s' is missing, but the file has tfdist's '%s': a "
               "tfdist file must carry its weights checksum", where, H5MODEL_ATTR_SHA256, own[i]);
      return -1;
    }
    return 0;
  }
  char *stored = NULL, hex[SHA256_HEX_BYTES], awhere[4600];
  snprintf(awhere, sizeof awhere, "%s: /", where);
  if (h5_attr_read_str(file, H5MODEL_ATTR_SHA256, awhere, &stored, err, eb) != 0) return -1;
  h5model_weights_sha256(&m->layout, m->params, hex);
  int ok = strcmp(stored, hex) == 0;
  if (!h5_is_ascii_name(stored)) snprintf(stored, strlen(stored) + 1, "?");
  if (!ok) {
    snprintf(err, eb, "%s: weights checksum mismatch (stored %.12s..., computed %.12s...): "
             "the file is corrupted", where, stored, hex);
  }
  free(stored);
  m->checksum_verified = ok;
  return ok ? 0 : -1;
}

static int64_t h5_max_params = H5MODEL_DEFAULT_MAX_PARAMS;

void h5model_max_params_set(int64_t max_params) { h5_max_params = max_params; }
int64_t h5model_max_params(void) { return h5_max_params; }

/* Before any allocation: the declared shapes (each at most H5MODEL_MAX_UNITS
 * wide, so no overflow) within the budget, and their bytes within the file. */
static int h5_check_budget(hid_t file, const char *where, const h5_layer_found *lf, char *err,
                           size_t eb) {
  int64_t declared = 0;
  for (int k = 0; k < MODEL_LAYERS; k++) declared += lf[k].in * lf[k].out + lf[k].out;
  hsize_t size = 0;
  if (declared > h5_max_params) {
    snprintf(err, eb, "%s: model_weights declares %lld parameters (784-%lld-%lld-10), over the "
             "budget of %lld (--max-params)", where, (long long)declared, (long long)lf[0].out,
             (long long)lf[1].out, (long long)h5_max_params);
    return -1;
  }
  if (H5Fget_filesize(file, &size) < 0 || (uint64_t)declared * sizeof(float) > (uint64_t)size) {
    H5Eclear2(H5E_DEFAULT);
    snprintf(err, eb, "%s: model_weights declares %lld parameters (%lld bytes) in a file of %llu "
             "bytes: the weights are not in the file", where, (long long)declared,
             (long long)declared * 4, (unsigned long long)size);
    return -1;
  }
  return 0;
}

/* NaN or Inf weights are never loaded: a diverged model must not be scored,
 * registered, served or resumed from. Names the dataset and the element. */
static int h5_check_finite(const char *where, const h5_layer_found *lf, const h5model *m,
                           char *err, size_t eb) {
  int64_t elem = -1;
  int t = model_params_find_nonfinite(&m->layout, m->params, &elem);
  if (t < 0) return 0;
  const h5_layer_found *l = &lf[t / 2];
  const float v = m->params[m->layout.tensors[t].offset + elem];
  snprintf(err, eb, "%s: model_weights/%s/%s: element %lld is %s: non-finite weights are refused "
           "(the model diverged)", where, l->name, t % 2 ? l->bias_path : l->kernel_path,
           (long long)elem, isnan(v) ? "nan" : "inf");
  return -1;
}

int h5model_read_keras(hid_t file, const char *where, h5model *m, char *err, size_t eb) {
  memset(m, 0, sizeof *m);
  h5_layer_found lf[MODEL_LAYERS];
  char gwhere[4600];
  snprintf(gwhere, sizeof gwhere, "%s: /", where);
  hid_t weights = h5_group_open(file, "model_weights", gwhere, err, eb);
  if (weights < 0) return -1;
  int rc = -1;
  if (h5_find_layers(weights, where, lf, err, eb) != 0 || h5_check_chain(lf, where, err, eb) != 0 ||
      h5_check_config(file, where, lf, m, err, eb) != 0 || h5_check_budget(file, where, lf, err, eb)) {
    goto out;
  }
  model_layout_init(&m->layout, 784, lf[0].out, lf[1].out, DATA_CLASSES);
  m->params = malloc((size_t)m->layout.total_elems * sizeof(float));
  if (!m->params) {
    snprintf(err, eb, "%s: out of memory for %lld parameters", where,
             (long long)m->layout.total_elems);
    goto out;
  }
  if (h5_read_params(weights, where, lf, m, err, eb) != 0 ||
      h5_verify_checksum(file, where, m, err, eb) != 0 || h5_check_finite(where, lf, m, err, eb)) {
    goto out;
  }
  rc = 0;
out:
  H5Gclose(weights);
  if (rc != 0) h5model_free(m);
  return rc;
}

void h5model_resolve_path(char *out, size_t out_bytes, const char *path) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(out, out_bytes, "%s/model.h5", path);
  else snprintf(out, out_bytes, "%s", path);
}

int h5model_load(h5model *m, const char *path, char *err, size_t eb) {
  char file[4200];
  memset(m, 0, sizeof *m);
  h5model_resolve_path(file, sizeof file, path);
  hid_t f = h5_open_read(file, err, eb);
  if (f < 0) return -1;
  int rc = h5model_read_keras(f, file, m, err, eb);
  H5Fclose(f);
  return rc;
}

void h5model_free(h5model *m) {
  if (!m) return;
  free(m->params);
  m->params = NULL;
}
