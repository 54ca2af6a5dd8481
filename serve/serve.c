/* The scoring endpoints: routing, request JSON, inference, response JSON. */
#include "serve/serve.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "modelio/h5model.h"
#include "modelio/infer.h"
#include "registry/registry.h"
#include "serve/serve_json.h"

#define SERVE_CHUNK 256 /* rows per forward pass: a session's work memory */

struct serve_version {
  long long version;
  char path[4200];
  h5model model; /* as read at start-up; sessions are copies */
  pthread_mutex_t lock;
  infer_session **idle; /* sessions not in use */
  int nidle, created;
};

static void serve_version_free(serve_version *v) {
  if (!v) return;
  for (int k = 0; k < v->nidle; k++) {
    infer_session_free(v->idle[k]);
    free(v->idle[k]);
  }
  free(v->idle);
  h5model_free(&v->model);
  pthread_mutex_destroy(&v->lock);
  free(v);
}

/* Room in versions[] for one more. */
static int serve_versions_grow(serve_models *m) {
  if (m->count < m->cap) return 0;
  int cap = m->cap ? 2 * m->cap : 4;
  serve_version **grown = realloc(m->versions, (size_t)cap * sizeof *grown);
  if (!grown) return -1;
  m->versions = grown;
  m->cap = cap;
  return 0;
}

/* Appends an empty version (the caller fills path and version, then loads it). */
static serve_version *serve_version_add(serve_models *m) {
  if (serve_versions_grow(m) != 0) return NULL;
  serve_version *v = calloc(1, sizeof *v);
  if (v) {
    pthread_mutex_init(&v->lock, NULL);
    m->versions[m->count++] = v;
  }
  return v;
}

static int serve_version_load(serve_models *m, serve_version *v, char *err, size_t eb) {
  if (!(v->idle = calloc((size_t)m->max_sessions, sizeof *v->idle))) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  if (h5model_load(&v->model, v->path, err, eb) != 0) return -1;
  infer_session *s = calloc(1, sizeof *s);
  if (!s || infer_session_clone(s, &v->model, v->path, SERVE_CHUNK, err, eb) != 0) {
    if (!s) snprintf(err, eb, "out of memory");
    free(s);
    return -1;
  }
  v->idle[v->nidle++] = s;
  v->created = 1;
  return 0;
}

/* NAME (every version) or NAME:VERSION from the registry. */
static int serve_models_registry(serve_models *m, const char *ref, const char *flag, char *err,
                                 size_t eb) {
  char root[4096], one[4600];
  if (registry_root(root, sizeof root, flag, err, eb) != 0) return -1;
  const char *colon = strrchr(ref, ':');
  snprintf(m->name, sizeof m->name, "%.*s", (int)(colon ? colon - ref : (long)strlen(ref)), ref);
  snprintf(m->root, sizeof m->root, "%s", root);
  m->watch = !colon;
  long long *vs = NULL;
  int n = 0;
  if (colon) {
    n = 1;
    vs = malloc(sizeof *vs);
  } else if (registry_versions(root, m->name, &vs, &n, one, sizeof one) != 0) {
    snprintf(err, eb, "--model %s: no such file, and %s", ref, one);
    return -1;
  }
  if (!vs) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) { /* newest first */
    serve_version *v = serve_version_add(m);
    if (!v) {
      snprintf(err, eb, "out of memory");
      rc = -1;
      break;
    }
    if (!colon) snprintf(one, sizeof one, "%s:%lld", m->name, vs[n - 1 - i]);
    rc = registry_model_file(root, colon ? ref : one, v->path, sizeof v->path, &v->version, err,
                             eb);
    if (rc == 0) rc = serve_version_load(m, v, err, eb);
  }
  free(vs);
  return rc;
}

int serve_models_open(serve_models *m, const char *ref, const char *registry_flag,
                      const char *name, int threads, char *err, size_t eb) {
  memset(m, 0, sizeof *m);
  /* A refresh must not wait behind a steady stream of requests. */
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&m->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  m->max_sessions = threads;
  struct stat st;
  int rc;
  if (stat(ref, &st) == 0) {
    snprintf(m->name, sizeof m->name, "%s", name);
    if (!registry_name_valid(name)) {
      snprintf(err, eb, "--name '%s': use 1..128 of A-Z a-z 0-9 . _ -", name);
      return -1;
    }
    serve_version *v = serve_version_add(m);
    if (!v) return -1;
    v->version = 1;
    h5model_resolve_path(v->path, sizeof v->path, ref);
    rc = serve_version_load(m, v, err, eb);
  } else if (strchr(ref, '/')) {
    snprintf(err, eb, "--model %s: %s", ref, strerror(errno));
    return -1;
  } else {
    rc = serve_models_registry(m, ref, registry_flag, err, eb);
  }
  if (rc != 0) {
    serve_models_close(m);
    return -1;
  }
  m->default_version = m->versions[m->default_index]->version;
  return 0;
}

void serve_models_close(serve_models *m) {
  for (int i = 0; i < m->count; i++) serve_version_free(m->versions[i]);
  free(m->versions);
  pthread_rwlock_destroy(&m->lock);
  memset(m, 0, sizeof *m);
}

void serve_models_describe(const serve_models *m, char *out, size_t out_bytes) {
  size_t at = 0;
  out[0] = '\0';
  for (int i = 0; i < m->count && at < out_bytes; i++) {
    at += (size_t)snprintf(out + at, out_bytes - at, i ? ",%lld" : "%lld", m->versions[i]->version);
  }
}

/* One new version, loaded outside the lock; NULL with err. */
static serve_version *serve_version_fetch(serve_models *m, long long version, char *err,
                                          size_t eb) {
  serve_version *v = calloc(1, sizeof *v);
  char ref[200];
  snprintf(ref, sizeof ref, "%s:%lld", m->name, version);
  if (!v) {
    snprintf(err, eb, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&v->lock, NULL);
  if (registry_model_file(m->root, ref, v->path, sizeof v->path, &v->version, err, eb) != 0 ||
      serve_version_load(m, v, err, eb) != 0) {
    serve_version_free(v);
    return NULL;
  }
  return v;
}

/* Puts v first (newest) and makes it the default; under the write lock. */
static int serve_version_publish(serve_models *m, serve_version *v) {
  pthread_rwlock_wrlock(&m->lock);
  int ok = serve_versions_grow(m) == 0;
  if (ok) {
    memmove(m->versions + 1, m->versions, (size_t)m->count * sizeof *m->versions);
    m->versions[0] = v;
    m->count++;
    m->default_index = 0;
    m->default_version = v->version;
  }
  pthread_rwlock_unlock(&m->lock);
  return ok ? 0 : -1;
}

int serve_models_refresh(serve_models *m, char *added, size_t added_bytes, char *err, size_t eb) {
  added[0] = '\0';
  if (!m->watch) return 0;
  long long *vs = NULL;
  int n = 0, rc = 0;
  if (registry_versions(m->root, m->name, &vs, &n, err, eb) != 0) return -1;
  size_t at = 0;
  for (int i = 0; i < n && rc >= 0; i++) { /* ascending: the newest ends up first */
    if (vs[i] <= m->versions[0]->version || vs[i] <= m->refused) continue;
    serve_version *v = serve_version_fetch(m, vs[i], err, eb);
    if (!v || serve_version_publish(m, v) != 0) {
      if (v) snprintf(err, eb, "out of memory");
      serve_version_free(v);
      m->refused = vs[i];
      rc = -1;
      break;
    }
    at += (size_t)snprintf(added + at, added_bytes - at, at ? ",%lld" : "%lld", vs[i]);
    rc = 1;
  }
  free(vs);
  return rc;
}

/* A session of v, made from v's model when every one is in use (at most one
 * per worker). NULL with err when out of memory. */
static infer_session *serve_session_take(const serve_models *m, serve_version *v, char *err,
                                         size_t eb) {
  pthread_mutex_lock(&v->lock);
  infer_session *s = v->nidle > 0 ? v->idle[--v->nidle] : NULL;
  int make = !s && v->created < m->max_sessions;
  if (make) v->created++;
  pthread_mutex_unlock(&v->lock);
  if (s || !make) {
    if (!s) snprintf(err, eb, "no free inference session");
    return s;
  }
  s = calloc(1, sizeof *s);
  if (s && infer_session_clone(s, &v->model, v->path, SERVE_CHUNK, err, eb) == 0) return s;
  if (!s) snprintf(err, eb, "out of memory");
  free(s);
  pthread_mutex_lock(&v->lock);
  v->created--;
  pthread_mutex_unlock(&v->lock);
  return NULL;
}

static void serve_session_give(serve_version *v, infer_session *s) {
  pthread_mutex_lock(&v->lock);
  v->idle[v->nidle++] = s;
  pthread_mutex_unlock(&v->lock);
}

/* ---- replies ---- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} serve_buf;

static void serve_buf_printf(serve_buf *b, const char *fmt, ...) {
  for (int pass = 0; pass < 2 && !b->oom; pass++) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) b->oom = 1;
    else if (b->p && (size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    } else {
      size_t cap = (b->cap ? b->cap : 4096) + (size_t)n + 1;
      while (cap < 2 * b->cap) cap *= 2;
      char *grown = realloc(b->p, cap);
      if (!grown) b->oom = 1;
      else b->p = grown, b->cap = cap;
    }
  }
}

static void serve_reply_set(serve_reply *out, int status, const char *ctype, serve_buf *b) {
  if (b->oom) {
    free(b->p);
    serve_reply_error(out, 500, "out of memory building the reply");
    return;
  }
  out->status = status;
  out->content_type = ctype;
  out->body = b->p;
  out->len = b->len;
}

void serve_reply_error(serve_reply *out, int status, const char *msg) {
  *out = (serve_reply){0}; /* no Allow unless the caller sets one */
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "error", msg);
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  out->status = status;
  out->content_type = "application/json";
  out->body = text ? text : strdup("{\"error\":\"out of memory\"}");
  out->len = out->body ? strlen(out->body) : 0;
}

void serve_reply_free(serve_reply *out) {
  free(out->body);
  memset(out, 0, sizeof *out);
}

static void serve_reply_errorf(serve_reply *out, int status, const char *fmt, ...) {
  char msg[4600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  serve_reply_error(out, status, msg);
}

/* Rows through v: the classes as a JSON array (/score), or TF Serving's
 * {"predictions": [[probabilities], ...]}. */
static void serve_infer(const serve_models *m, serve_version *v, const float *x, int64_t n,
                        int want_probs, serve_reply *out) {
  const int64_t k = v->model.layout.dims[MODEL_LAYERS];
  char err[4600] = "";
  float *probs = malloc((size_t)(n * k) * sizeof *probs);
  int32_t *classes = malloc((size_t)n * sizeof *classes);
  infer_session *s = probs && classes ? serve_session_take(m, v, err, sizeof err) : NULL;
  int rc = s ? infer_session_predict(s, x, n, probs, classes, err, sizeof err) : -1;
  if (s) serve_session_give(v, s);
  int64_t bad = -1;
  for (int64_t i = 0; rc == 0 && bad < 0 && i < n * k; i++) {
    if (!isfinite(probs[i])) bad = i / k;
  }
  if (rc != 0) {
    serve_reply_error(out, 500, err[0] ? err : "out of memory");
  } else if (bad >= 0) {
    /* A class from NaNs would be 0: a wrong answer that looks like one. */
    serve_reply_errorf(out, 500, "the model's output for row %lld is not finite (NaN or "
                       "infinite): the model has diverged, or the row is far outside 0..1",
                       (long long)bad);
  } else {
    serve_buf b = {0};
    serve_buf_printf(&b, want_probs ? "{\"predictions\":[" : "[");
    for (int64_t i = 0; i < n; i++) {
      if (!want_probs) {
        serve_buf_printf(&b, i ? ",%d" : "%d", (int)classes[i]);
        continue;
      }
      serve_buf_printf(&b, i ? ",[" : "[");
      for (int64_t j = 0; j < k; j++) serve_buf_printf(&b, j ? ",%.9g" : "%.9g", (double)probs[i * k + j]);
      serve_buf_printf(&b, "]");
    }
    serve_buf_printf(&b, want_probs ? "]}" : "]");
    serve_reply_set(out, 200, "application/json", &b);
  }
  free(probs);
  free(classes);
}

/* The one input and output of the served signature, as GetModelMetadata names them. */
#define SERVE_INPUT_NAME "dense_input"
#define SERVE_OUTPUT_NAME "dense_2"

/* {"data": [[784 numbers], ...]} -> the default version's classes. */
static void serve_score(const serve_models *m, const char *body, size_t len, serve_reply *out) {
  serve_version *v = m->versions[m->default_index];
  float *x = NULL;
  int64_t n = 0;
  char err[4600];
  if (serve_json_rows(body, len, SERVE_JSON_SCORE, v->model.layout.dims[0], SERVE_INPUT_NAME, &x,
                      &n, err, sizeof err) != 0) {
    serve_reply_error(out, 400, err);
  } else {
    serve_infer(m, v, x, n, 0, out);
  }
  free(x);
}

/* TF Serving's predict: {"instances": [...]} or {"inputs": ...}. */
static void serve_predict(const serve_models *m, serve_version *v, const char *body, size_t len,
                          serve_reply *out) {
  float *x = NULL;
  int64_t n = 0;
  char err[4600];
  if (serve_json_rows(body, len, SERVE_JSON_PREDICT, v->model.layout.dims[0], SERVE_INPUT_NAME,
                      &x, &n, err, sizeof err) != 0) {
    serve_reply_error(out, 400, err);
  } else {
    serve_infer(m, v, x, n, 1, out);
  }
  free(x);
}

/* TF Serving's GetModelStatus: one entry per version, or just `only`. */
static void serve_status(const serve_models *m, const serve_version *only, serve_reply *out) {
  serve_buf b = {0};
  serve_buf_printf(&b, "{\"model_version_status\":[");
  int first = 1;
  for (int i = 0; i < m->count; i++) {
    if (only && only != m->versions[i]) continue;
    serve_buf_printf(&b, "%s{\"version\":\"%lld\",\"state\":\"AVAILABLE\",\"status\":"
                     "{\"error_code\":\"OK\",\"error_message\":\"\"}}",
                     first ? "" : ",", m->versions[i]->version);
    first = 0;
  }
  serve_buf_printf(&b, "]}");
  serve_reply_set(out, 200, "application/json", &b);
}

/* (-1, width) float32, as TF Serving describes a batch of rows. */
static cJSON *serve_tensor_info(const char *name, int64_t width) {
  char w[32];
  snprintf(w, sizeof w, "%lld", (long long)width);
  const char *sizes[2] = {"-1", w};
  cJSON *t = cJSON_CreateObject();
  cJSON_AddStringToObject(t, "dtype", "DT_FLOAT");
  cJSON *dims = cJSON_AddArrayToObject(cJSON_AddObjectToObject(t, "tensor_shape"), "dim");
  for (int k = 0; k < 2; k++) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "size", sizes[k]);
    cJSON_AddStringToObject(d, "name", "");
    cJSON_AddItemToArray(dims, d);
  }
  cJSON_AddStringToObject(t, "name", name);
  return t;
}

/* TF Serving's GetModelMetadata: the serving_default signature. */
static void serve_metadata(const serve_models *m, const serve_version *v, serve_reply *out) {
  char ver[32];
  snprintf(ver, sizeof ver, "%lld", v->version);
  cJSON *o = cJSON_CreateObject();
  cJSON *spec = cJSON_AddObjectToObject(o, "model_spec");
  cJSON_AddStringToObject(spec, "name", m->name);
  cJSON_AddStringToObject(spec, "signature_name", "");
  cJSON_AddStringToObject(spec, "version", ver);
  cJSON *defs = cJSON_AddObjectToObject(
      cJSON_AddObjectToObject(cJSON_AddObjectToObject(o, "metadata"), "signature_def"),
      "signature_def");
  cJSON *sig = cJSON_AddObjectToObject(defs, "serving_default");
  cJSON_AddItemToObject(cJSON_AddObjectToObject(sig, "inputs"), SERVE_INPUT_NAME,
                        serve_tensor_info("serving_default_dense_input:0",
                                          v->model.layout.dims[0]));
  cJSON_AddItemToObject(cJSON_AddObjectToObject(sig, "outputs"), SERVE_OUTPUT_NAME,
                        serve_tensor_info("StatefulPartitionedCall:0",
                                          v->model.layout.dims[MODEL_LAYERS]));
  cJSON_AddStringToObject(sig, "method_name", "tensorflow/serving/predict");
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  serve_buf b = {.p = text, .len = text ? strlen(text) : 0, .oom = !text};
  b.cap = b.len + 1;
  serve_reply_set(out, 200, "application/json", &b);
}

typedef enum { SERVE_STATUS, SERVE_METADATA, SERVE_PREDICT } serve_op;

/* NAME[/versions/N][:predict|/metadata] after /v1/models/. */
static int serve_parse_model_path(const char *rest, char *name, size_t nb, long long *version,
                                  serve_op *op) {
  size_t n = strcspn(rest, "/:");
  if (n == 0 || n >= nb) return -1;
  snprintf(name, nb, "%.*s", (int)n, rest);
  rest += n;
  *version = 0;
  if (!strncmp(rest, "/versions/", 10)) {
    rest += 10;
    size_t d = strspn(rest, "0123456789");
    if (d == 0 || d > 12 || rest[0] == '0') return -1;
    *version = strtoll(rest, NULL, 10);
    rest += d;
  }
  if (!*rest) *op = SERVE_STATUS;
  else if (!strcmp(rest, "/metadata")) *op = SERVE_METADATA;
  else if (!strcmp(rest, ":predict")) *op = SERVE_PREDICT;
  else return -1;
  return 0;
}

static serve_version *serve_version_find(const serve_models *m, long long version) {
  if (version == 0) return m->versions[m->default_index];
  for (int i = 0; i < m->count; i++) {
    if (m->versions[i]->version == version) return m->versions[i];
  }
  return NULL;
}

static int serve_method_is(const char *method, const char *want, const char *allow,
                           serve_reply *out) {
  if (!strcmp(method, want) || (!strcmp(want, "GET") && !strcmp(method, "HEAD"))) return 1;
  serve_reply_errorf(out, 405, "method %s not allowed here (use %s)", method, allow);
  out->allow = allow;
  return 0;
}

static void serve_models_route(serve_models *m, const char *method, const char *path,
                               const char *body, size_t len, serve_reply *out) {
  char name[160], have[512];
  long long version = 0;
  serve_op op;
  if (serve_parse_model_path(path + strlen("/v1/models/"), name, sizeof name, &version, &op)) {
    serve_reply_errorf(out, 404, "no such path: %.200s (see /v1/models/%s)", path, m->name);
    return;
  }
  serve_models_describe(m, have, sizeof have);
  serve_version *v = serve_version_find(m, version);
  if (strcmp(name, m->name) != 0) {
    serve_reply_errorf(out, 404, "model '%s' is not served here (serving '%s')", name, m->name);
  } else if (!v) {
    serve_reply_errorf(out, 404, "model '%s' has no version %lld (serving versions %s)", name,
                       version, have);
  } else if (op == SERVE_PREDICT) {
    if (serve_method_is(method, "POST", "POST", out)) serve_predict(m, v, body, len, out);
  } else if (serve_method_is(method, "GET", "GET, HEAD", out)) {
    if (op == SERVE_METADATA) serve_metadata(m, v, out);
    else serve_status(m, version ? v : NULL, out);
  }
}

void serve_handle(serve_models *m, const char *method, const char *path, const char *body,
                  size_t len, serve_reply *out) {
  memset(out, 0, sizeof *out);
  if (!strcmp(path, "/")) {
    if (serve_method_is(method, "GET", "GET, HEAD", out)) {
      serve_buf b = {0};
      serve_buf_printf(&b, "Healthy\n");
      serve_reply_set(out, 200, "text/plain", &b);
    }
  } else if (!strcmp(path, "/score")) {
    if (serve_method_is(method, "POST", "POST", out)) {
      pthread_rwlock_rdlock(&m->lock);
      serve_score(m, body, len, out);
      pthread_rwlock_unlock(&m->lock);
    }
  } else if (!strncmp(path, "/v1/models/", strlen("/v1/models/"))) {
    pthread_rwlock_rdlock(&m->lock);
    serve_models_route(m, method, path, body, len, out);
    pthread_rwlock_unlock(&m->lock);
  } else {
    serve_reply_errorf(out, 404, "no such path: %.200s (try /, /score or /v1/models/%s)", path,
                       m->name);
  }
}
