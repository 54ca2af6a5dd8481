/* Checkpoint files: the Keras layout of h5model.c plus tfdist's resume state.
 * Root attributes hold the scalars (epoch, step, batch, world size, seed, RNG
 * and data-order state, hyperparameters, the latest metrics); the group
 * `optimizer` holds the flat optimizer state; `tfdist/metrics_history` holds
 * every epoch's metrics. Two sha256 attributes cover the weights and the
 * rest of the state, so a damaged file is an error, never a silent resume. */
#include "modelio/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/fault.h"
#include "base/fp16_scale.h"
#include "base/rng.h"
#include "base/fsutil.h"
#include "modelio/h5model.h"
#include "base/sha256.h"

#define CKPT_ATTR_STATE_SHA256 "tfdist_state_sha256"

void ckpt_state_free(ckpt_state *s) {
  if (!s) return;
  free(s->hyperparameters);
  free(s->metrics);
  free(s->params);
  free(s->opt_state);
  s->hyperparameters = s->metrics = NULL;
  s->params = s->opt_state = NULL;
}

/* base/fault.h's TFDIST_FAULT_CKPT_SLOW_MS: a pause between the phases of
 * a save, so a test's kill -9 lands inside one. */
static void ckpt_fault_pause(void) {
  const long ms = base_fault_ckpt_slow_ms();
  if (ms <= 0) return;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The data-order generator's state at the start of epoch `epoch`: a build
 * whose generator differs would silently change the order, so it is stored
 * and compared. */
static uint64_t ckpt_epoch_rng_state(int64_t seed, int64_t epoch) {
  base_rng r;
  base_rng_seed(&r, (uint64_t)seed, DATA_RNG_STREAM_EPOCH, (uint64_t)epoch);
  return r.state;
}

static char *ckpt_rng_json(const ckpt_state *s) {
  char state[32];
  snprintf(state, sizeof state, "0x%016llx",
           (unsigned long long)ckpt_epoch_rng_state(s->seed, s->epoch));
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "generator", "splitmix64");
  cJSON_AddNumberToObject(o, "seed", (double)s->seed);
  cJSON_AddNumberToObject(o, "weights_stream", DATA_RNG_STREAM_INIT);
  cJSON_AddNumberToObject(o, "epoch_stream", DATA_RNG_STREAM_EPOCH);
  cJSON_AddNumberToObject(o, "next_epoch", (double)s->epoch);
  cJSON_AddStringToObject(o, "next_epoch_state", state);
  cJSON_AddStringToObject(o, "data_order",
                          "epoch e shuffles the training set with base_perm_epoch(seed, e); "
                          "ranks take interleaved slices of each global batch");
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

/* Everything but the weights, in one canonical text, so one sha256 covers it. */
static void ckpt_state_sha256(const ckpt_state *s, char hex[SHA256_HEX_BYTES]) {
  char text[1024];
  int n = snprintf(text, sizeof text,
                   "epoch=%lld;step=%lld;spe=%lld;batch=%lld;gbatch=%lld;world=%lld;seed=%lld;"
                   "train=%lld;fp=%s;mode=%s;opt=%s;lr=%a;lre=%a;mom=%a;scale=%lld;run=%s",
                   (long long)s->epoch, (long long)s->global_step, (long long)s->steps_per_epoch,
                   (long long)s->batch_size, (long long)s->global_batch, (long long)s->world_size,
                   (long long)s->seed, (long long)s->train_count, s->data_fingerprint,
                   s->data_mode, s->opt_kind, s->learning_rate, s->lr_effective, s->momentum,
                   (long long)s->scale_lr, s->run_id);
  if (s->threads > 0 && n > 0 && (size_t)n < sizeof text) { /* older files: no threads */
    n += snprintf(text + n, sizeof text - (size_t)n, ";threads=%lld", (long long)s->threads);
  }
  if (s->compression[0] && n > 0 && (size_t)n < sizeof text) { /* older files: no compression */
    n += snprintf(text + n, sizeof text - (size_t)n, ";comp=%s;fp16=%a,%lld,%lld,%lld",
                  s->compression, s->fp16_scale, (long long)s->fp16_clean_steps,
                  (long long)s->fp16_overflows, (long long)s->fp16_consecutive);
  }
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
  sha256_update(&c, s->opt_state, (size_t)s->opt_state_elems * sizeof(float));
  const char *texts[2] = {s->hyperparameters ? s->hyperparameters : "",
                          s->metrics ? s->metrics : ""};
  for (int i = 0; i < 2; i++) sha256_update(&c, texts[i], strlen(texts[i]) + 1);
  sha256_final_hex(&c, hex);
}

/* The last element of the metrics history, for the root `metrics` attribute. */
static char *ckpt_latest_metrics(const char *history) {
  cJSON *h = history ? cJSON_Parse(history) : NULL;
  cJSON *last = cJSON_IsArray(h) ? cJSON_GetArrayItem(h, cJSON_GetArraySize(h) - 1) : NULL;
  char *text = last ? cJSON_PrintUnformatted(last) : NULL;
  cJSON_Delete(h);
  return text;
}

/* The optimizer's hyper-parameters and its update count (Adam's bias
 * correction), beside the state. Files from before they were stored lack
 * them: sgd and momentum then read as 1 state float per parameter. */
static const char *const ckpt_opt_f64_names[5] = {"beta1", "beta2", "epsilon", "rho",
                                                  "weight_decay"};

static int ckpt_write_opt_params(hid_t g, const ckpt_state *s, char *err, size_t eb) {
  const double v[5] = {s->beta1, s->beta2, s->epsilon, s->rho, s->weight_decay};
  for (int i = 0; i < 5; i++) {
    if (h5_attr_write_f64(g, ckpt_opt_f64_names[i], v[i], err, eb) != 0) return -1;
  }
  return h5_attr_write_i64(g, "step", s->opt_step, err, eb);
}

static int ckpt_read_opt_params(hid_t g, const char *where, ckpt_state *s, char *err, size_t eb) {
  double *v[5] = {&s->beta1, &s->beta2, &s->epsilon, &s->rho, &s->weight_decay};
  for (int i = 0; i < 5; i++) {
    if (h5_attr_exists(g, ckpt_opt_f64_names[i]) &&
        h5_attr_read_f64(g, ckpt_opt_f64_names[i], where, v[i], err, eb) != 0) {
      return -1;
    }
  }
  s->opt_step = s->global_step;
  if (h5_attr_exists(g, "step") && h5_attr_read_i64(g, "step", where, &s->opt_step, err, eb) != 0) {
    return -1;
  }
  return 0;
}

static int ckpt_write_optimizer(hid_t f, const ckpt_state *s, char *err, size_t eb) {
  int rc = -1;
  hid_t g = -1;
  H5_CHECK(g = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  if (h5_attr_write_str(g, "kind", s->opt_kind, err, eb) != 0 ||
      h5_attr_write_f64(g, "learning_rate", s->learning_rate, err, eb) != 0 ||
      h5_attr_write_f64(g, "learning_rate_effective", s->lr_effective, err, eb) != 0 ||
      h5_attr_write_f64(g, "momentum", s->momentum, err, eb) != 0 ||
      h5_attr_write_i64(g, "scale_lr", s->scale_lr, err, eb) != 0 ||
      ckpt_write_opt_params(g, s, err, eb) != 0 ||
      h5_dataset_write_f32(g, "state", s->opt_state, s->opt_state_elems, 0, err, eb) != 0) {
    goto out;
  }
  rc = 0;
out:
  if (g >= 0) H5Gclose(g);
  return rc;
}

/* --compression, and fp16's scale with its counters (an exact resume goes on
 * with the same scale). */
static const char *const ckpt_fp16_names[3] = {"fp16_clean_steps", "fp16_overflow_steps",
                                               "fp16_consecutive_overflows"};

static int ckpt_write_compression(hid_t f, const ckpt_state *s, char *err, size_t eb) {
  if (!s->compression[0]) return 0;
  const int64_t v[3] = {s->fp16_clean_steps, s->fp16_overflows, s->fp16_consecutive};
  if (h5_attr_write_str(f, "compression", s->compression, err, eb) != 0 ||
      h5_attr_write_f64(f, "fp16_scale", s->fp16_scale, err, eb) != 0) {
    return -1;
  }
  for (int i = 0; i < 3; i++) {
    if (h5_attr_write_i64(f, ckpt_fp16_names[i], v[i], err, eb) != 0) return -1;
  }
  return 0;
}

static int ckpt_write_attrs(hid_t f, const ckpt_state *s, char *err, size_t eb) {
  const struct { const char *name; int64_t v; } ints[] = {
    {"epoch", s->epoch}, {"global_step", s->global_step}, {"steps_per_epoch", s->steps_per_epoch},
    {"batch_size", s->batch_size}, {"global_batch", s->global_batch},
    {"world_size", s->world_size}, {"seed", s->seed}, {"train_count", s->train_count},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    if (h5_attr_write_i64(f, ints[i].name, ints[i].v, err, eb) != 0) return -1;
  }
  if (s->threads > 0 && h5_attr_write_i64(f, "threads", s->threads, err, eb) != 0) return -1;
  if (ckpt_write_compression(f, s, err, eb) != 0) return -1;
  char *rng = ckpt_rng_json(s), *latest = ckpt_latest_metrics(s->metrics);
  int rc = -1;
  if (!rng) {
    snprintf(err, eb, "out of memory");
    goto out;
  }
  if (h5_attr_write_str(f, "data_fingerprint", s->data_fingerprint, err, eb) != 0 ||
      h5_attr_write_str(f, "data_mode", s->data_mode, err, eb) != 0 ||
      h5_attr_write_str(f, "run_id", s->run_id, err, eb) != 0 ||
      h5_attr_write_str(f, "hyperparameters", s->hyperparameters ? s->hyperparameters : "{}",
                        err, eb) != 0 ||
      h5_attr_write_str(f, "rng", rng, err, eb) != 0 ||
      h5_attr_write_str(f, "metrics", latest ? latest : "{}", err, eb) != 0) {
    goto out;
  }
  rc = 0;
out:
  free(rng);
  free(latest);
  return rc;
}

static int ckpt_write_file(hid_t f, const void *ctx, char *err, size_t eb) {
  const ckpt_state *s = ctx;
  char hex[SHA256_HEX_BYTES];
  hid_t g = -1;
  int rc = -1;
  if (h5model_write_keras(f, &s->layout, s->params, "softmax", "checkpoint", err, eb) != 0) {
    return -1;
  }
  ckpt_fault_pause();
  if (ckpt_write_attrs(f, s, err, eb) != 0 || ckpt_write_optimizer(f, s, err, eb) != 0) return -1;
  H5_CHECK(g = H5Gcreate2(f, "tfdist", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  if (h5_dataset_write_text(g, "metrics_history", s->metrics ? s->metrics : "[]", err, eb) != 0) {
    goto out;
  }
  ckpt_state_sha256(s, hex);
  if (h5_attr_write_str(f, CKPT_ATTR_STATE_SHA256, hex, err, eb) != 0) goto out;
  rc = 0;
out:
  if (g >= 0) H5Gclose(g);
  return rc;
}

int ckpt_write(const char *path, const ckpt_state *s, char *err, size_t eb) {
  return h5_file_write_atomic(path, ckpt_write_file, s, ckpt_fault_pause, err, eb);
}

/* ---- reading ---- */

static int ckpt_attr_str_into(hid_t obj, const char *name, const char *where, char *buf,
                              size_t bytes, char *err, size_t eb) {
  char *v = NULL;
  if (h5_attr_read_str(obj, name, where, &v, err, eb) != 0) return -1;
  int ok = strlen(v) < bytes;
  if (ok) snprintf(buf, bytes, "%s", v);
  else snprintf(err, eb, "%s: attribute '%s' is too long", where, name);
  free(v);
  return ok ? 0 : -1;
}

static int ckpt_read_compression(hid_t f, const char *where, ckpt_state *s, char *err, size_t eb) {
  if (!h5_attr_exists(f, "compression")) return 0; /* older files: none */
  int64_t *v[3] = {&s->fp16_clean_steps, &s->fp16_overflows, &s->fp16_consecutive};
  if (ckpt_attr_str_into(f, "compression", where, s->compression, sizeof s->compression, err,
                         eb) != 0 ||
      h5_attr_read_f64(f, "fp16_scale", where, &s->fp16_scale, err, eb) != 0) {
    return -1;
  }
  if (strcmp(s->compression, "none") && strcmp(s->compression, "bf16") &&
      strcmp(s->compression, "fp16")) {
    snprintf(err, eb, "%s: attribute 'compression' is not none, bf16 or fp16", where);
    return -1;
  }
  if (!fp16_scale_valid(s->fp16_scale)) {
    snprintf(err, eb, "%s: attribute 'fp16_scale' %g is not a power of two in 2^%d..2^%d", where,
             s->fp16_scale, FP16_SCALE_MIN_LOG2, FP16_SCALE_MAX_LOG2);
    return -1;
  }
  for (int i = 0; i < 3; i++) {
    if (h5_attr_read_i64(f, ckpt_fp16_names[i], where, v[i], err, eb) != 0) return -1;
    if (*v[i] < 0) {
      snprintf(err, eb, "%s: attribute '%s' is negative", where, ckpt_fp16_names[i]);
      return -1;
    }
  }
  return 0;
}

static int ckpt_read_attrs(hid_t f, const char *where, ckpt_state *s, char *err, size_t eb) {
  struct { const char *name; int64_t *v; } ints[] = {
    {"epoch", &s->epoch}, {"global_step", &s->global_step},
    {"steps_per_epoch", &s->steps_per_epoch}, {"batch_size", &s->batch_size},
    {"global_batch", &s->global_batch}, {"world_size", &s->world_size}, {"seed", &s->seed},
    {"train_count", &s->train_count},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    if (h5_attr_read_i64(f, ints[i].name, where, ints[i].v, err, eb) != 0) return -1;
    if (*ints[i].v < 0) {
      snprintf(err, eb, "%s: attribute '%s' is negative", where, ints[i].name);
      return -1;
    }
  }
  if (ckpt_attr_str_into(f, "data_fingerprint", where, s->data_fingerprint,
                         sizeof s->data_fingerprint, err, eb) != 0 ||
      ckpt_attr_str_into(f, "data_mode", where, s->data_mode, sizeof s->data_mode, err, eb) != 0 ||
      ckpt_attr_str_into(f, "run_id", where, s->run_id, sizeof s->run_id, err, eb) != 0 ||
      ckpt_attr_str_into(f, H5MODEL_ATTR_VERSION, where, s->tfdist_version,
                         sizeof s->tfdist_version, err, eb) != 0 ||
      h5_attr_read_str(f, "hyperparameters", where, &s->hyperparameters, err, eb) != 0) {
    return -1;
  }
  s->threads = 0; /* written since --threads split the step; older files lack it */
  if (H5Aexists(f, "threads") > 0 &&
      h5_attr_read_i64(f, "threads", where, &s->threads, err, eb) != 0) {
    return -1;
  }
  return ckpt_read_compression(f, where, s, err, eb);
}

static int ckpt_read_optimizer(hid_t f, const char *path, ckpt_state *s, char *err, size_t eb) {
  char where[4400];
  snprintf(where, sizeof where, "%s: /optimizer", path);
  hid_t g = h5_group_open(f, "optimizer", path, err, eb);
  if (g < 0) return -1;
  int rc = -1, rank = 0;
  int64_t dims[2];
  if (ckpt_attr_str_into(g, "kind", where, s->opt_kind, sizeof s->opt_kind, err, eb) != 0 ||
      h5_attr_read_f64(g, "learning_rate", where, &s->learning_rate, err, eb) != 0 ||
      h5_attr_read_f64(g, "learning_rate_effective", where, &s->lr_effective, err, eb) != 0 ||
      h5_attr_read_f64(g, "momentum", where, &s->momentum, err, eb) != 0 ||
      h5_attr_read_i64(g, "scale_lr", where, &s->scale_lr, err, eb) != 0 ||
      ckpt_read_opt_params(g, where, s, err, eb) != 0 ||
      h5_dataset_shape(g, "state", where, &rank, dims, err, eb) != 0) {
    goto out;
  }
  /* k floats per weight, k = 1 (at least: sgd keeps zeros) or 2 (adam, adamw) */
  const int64_t P = s->layout.total_elems;
  if (rank != 1 || (dims[0] != P && dims[0] != 2 * P)) {
    snprintf(err, eb, "%s/state: shape (%lld%s), expected (%lld,) or (%lld,) to match the weights",
             where, (long long)dims[0], rank == 2 ? ", ..." : ",", (long long)P,
             (long long)(2 * P));
    goto out;
  }
  s->opt_state_elems = dims[0];
  s->opt_state = malloc((size_t)s->opt_state_elems * sizeof(float));
  if (!s->opt_state) {
    snprintf(err, eb, "%s: out of memory", where);
    goto out;
  }
  if (h5_dataset_read_f32(g, "state", where, s->opt_state, s->opt_state_elems, err, eb) != 0) {
    goto out;
  }
  rc = 0;
out:
  H5Gclose(g);
  return rc;
}

/* Kind, format version, state checksum, data-order generator. */
static int ckpt_verify(hid_t f, const char *where, const char *path, ckpt_state *s, char *err,
                       size_t eb) {
  char kind[32], stored[SHA256_HEX_BYTES + 8], hex[SHA256_HEX_BYTES];
  int64_t format = 0;
  if (ckpt_attr_str_into(f, H5MODEL_ATTR_KIND, where, kind, sizeof kind, err, eb) != 0) return -1;
  if (strcmp(kind, "checkpoint") != 0) {
    snprintf(err, eb, "%s: a tfdist %s file, not a checkpoint", path,
             h5_is_ascii_name(kind) ? kind : "(unknown kind)");
    return -1;
  }
  if (h5_attr_read_i64(f, H5MODEL_ATTR_FORMAT, where, &format, err, eb) != 0) return -1;
  if (format < 1 || format > CKPT_FORMAT_VERSION) {
    snprintf(err, eb, "%s: checkpoint format %lld; this tfdist reads format %d", path,
             (long long)format, CKPT_FORMAT_VERSION);
    return -1;
  }
  if (ckpt_attr_str_into(f, CKPT_ATTR_STATE_SHA256, where, stored, sizeof stored, err, eb) != 0) {
    return -1;
  }
  ckpt_state_sha256(s, hex);
  if (strcmp(stored, hex) != 0) {
    snprintf(err, eb, "%s: state checksum mismatch (optimizer state or attributes): the file "
             "is corrupted", path);
    return -1;
  }
  return 0;
}

static int ckpt_verify_rng(hid_t f, const char *where, const char *path, const ckpt_state *s,
                           char *err, size_t eb) {
  char *text = NULL, want[32];
  if (h5_attr_read_str(f, "rng", where, &text, err, eb) != 0) return -1;
  cJSON *o = cJSON_Parse(text);
  free(text);
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "next_epoch_state");
  snprintf(want, sizeof want, "0x%016llx",
           (unsigned long long)ckpt_epoch_rng_state(s->seed, s->epoch));
  int ok = cJSON_IsString(st) && strcmp(st->valuestring, want) == 0;
  if (!ok) {
    snprintf(err, eb, "%s: attribute 'rng': next_epoch_state %s differs from this build's %s "
             "(a different data-order generator)", path,
             cJSON_IsString(st) && h5_is_ascii_name(st->valuestring) ? st->valuestring : "(missing)",
             want);
  }
  cJSON_Delete(o);
  return ok ? 0 : -1;
}

static int ckpt_read_history(hid_t f, const char *path, ckpt_state *s, char *err, size_t eb) {
  hid_t g = h5_group_open(f, "tfdist", path, err, eb);
  if (g < 0) return -1;
  char where[4400];
  snprintf(where, sizeof where, "%s: /tfdist", path);
  int rc = h5_dataset_read_text(g, "metrics_history", where, &s->metrics, err, eb);
  H5Gclose(g);
  return rc;
}

int ckpt_read(ckpt_state *s, const char *path, char *err, size_t eb) {
  memset(s, 0, sizeof *s);
  char where[4400];
  snprintf(where, sizeof where, "%s: /", path);
  hid_t f = h5_open_read(path, err, eb);
  if (f < 0) return -1;
  int rc = -1;
  h5model m;
  char kind[32];
  /* The kind first: a model file is a clear "not a checkpoint", not a missing attribute. */
  if (h5_attr_exists(f, H5MODEL_ATTR_KIND) &&
      ckpt_attr_str_into(f, H5MODEL_ATTR_KIND, where, kind, sizeof kind, err, eb) == 0 &&
      strcmp(kind, "checkpoint") != 0) {
    snprintf(err, eb, "%s: a tfdist %s file, not a checkpoint", path,
             h5_is_ascii_name(kind) ? kind : "(unknown kind)");
    goto out;
  }
  if (h5model_read_keras(f, path, &m, err, eb) != 0) goto out;
  s->layout = m.layout;
  s->params = m.params;
  if (ckpt_read_attrs(f, where, s, err, eb) != 0 || ckpt_read_optimizer(f, path, s, err, eb) != 0 ||
      ckpt_read_history(f, path, s, err, eb) != 0 || ckpt_verify(f, where, path, s, err, eb) != 0 ||
      ckpt_verify_rng(f, where, path, s, err, eb) != 0) {
    goto out;
  }
  rc = 0;
out:
  H5Fclose(f);
  if (rc != 0) ckpt_state_free(s);
  return rc;
}

int ckpt_read_run_id(const char *path, char *run_id, size_t bytes, char *err, size_t eb) {
  char where[4400];
  snprintf(where, sizeof where, "%s: /", path);
  hid_t f = h5_open_read(path, err, eb);
  if (f < 0) return -1;
  int rc = ckpt_attr_str_into(f, "run_id", where, run_id, bytes, err, eb);
  H5Fclose(f);
  return rc;
}

/* ---- the checkpoints folder ---- */

void ckpt_dir_path(char *out, size_t out_bytes, const char *outputs) {
  snprintf(out, out_bytes, "%s/checkpoints", outputs);
}

/* "ckpt-epoch-<E>.h5" exactly -> E, else -1. */
static int64_t ckpt_name_epoch(const char *name) {
  long long e = -1;
  int used = 0;
  if (sscanf(name, "ckpt-epoch-%lld.h5%n", &e, &used) != 1 || name[used] != '\0' || e < 0 ||
      strncmp(name, "ckpt-epoch-", 11) != 0 || name[11] < '0' || name[11] > '9') {
    return -1;
  }
  return e;
}

/* The names a checkpoints folder holds: ckpt-epoch-N.h5 and latest. */
static int ckpt_is_ours(const char *name) {
  return ckpt_name_epoch(name) >= 0 || strcmp(name, "latest") == 0;
}

static int ckpt_cmp_desc(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Collects the epochs of the checkpoints in folder dfd (at most cap), newest
 * first: regular files named ckpt-epoch-<E>.h5. A link, folder or anything
 * else under such a name is not ours and is never followed. */
static int ckpt_list_epochs_at(int dfd, int64_t *epochs, int cap) {
  const int fd = dup(dfd); /* closedir closes it, and dfd stays the caller's */
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    const int saved = errno;
    if (fd >= 0) close(fd);
    errno = saved;
    return -1;
  }
  rewinddir(d); /* the dup shares dfd's position */
  int n = 0;
  struct dirent *e;
  struct stat st;
  while ((e = readdir(d)) != NULL) {
    const int64_t ep = ckpt_name_epoch(e->d_name);
    if (ep < 0 || n >= cap || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
      continue;
    }
    epochs[n++] = ep;
  }
  closedir(d);
  qsort(epochs, (size_t)n, sizeof *epochs, ckpt_cmp_desc);
  return n;
}

/* The same for the folder at dir (which may be reached through a link: the
 * user's --resume-from names it); -1 with errno set when it cannot be read. */
static int ckpt_list_epochs(const char *dir, int64_t *epochs, int cap) {
  const int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  const int n = ckpt_list_epochs_at(dfd, epochs, cap);
  const int saved = errno;
  close(dfd);
  errno = saved;
  return n;
}

#define CKPT_LIST_CAP 100000

/* Keeps the newest keep checkpoints up to epoch upto. The folder is opened
 * once, not through a link, and listed and pruned through that descriptor:
 * a name swapped for a link meanwhile is never followed. A file that cannot
 * be deleted is reported through warn (the save itself has succeeded). */
static void ckpt_prune(const char *dir, int64_t upto, int64_t keep, ckpt_warn_fn warn,
                       void *warn_ctx) {
  fs_remove_stale_tmp(dir, ckpt_is_ours);
  if (keep <= 0) return;
  int64_t *epochs = malloc(CKPT_LIST_CAP * sizeof *epochs);
  const int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  const int n = epochs && dfd >= 0 ? ckpt_list_epochs_at(dfd, epochs, CKPT_LIST_CAP) : -1;
  char msg[4600];
  if (n < 0 && warn) {
    snprintf(msg, sizeof msg, "--keep-checkpoints: %s: cannot list: %s (errno %d)", dir,
             epochs ? strerror(errno) : "out of memory", epochs ? errno : ENOMEM);
    warn(warn_ctx, msg);
  }
  int64_t kept = 0;
  for (int i = 0; i < n; i++) {
    if (epochs[i] > upto) continue; /* a later epoch of an abandoned run: this save does not own it */
    if (++kept <= keep) continue;
    char name[64];
    snprintf(name, sizeof name, "ckpt-epoch-%lld.h5", (long long)epochs[i]);
    if (unlinkat(dfd, name, 0) != 0 && warn) {
      const int e = errno;
      snprintf(msg, sizeof msg, "--keep-checkpoints: could not delete %s/%s: %s (errno %d); "
               "the run goes on", dir, name, strerror(e), e);
      warn(warn_ctx, msg);
    }
  }
  if (dfd >= 0) close(dfd);
  free(epochs);
}

int ckpt_save(const char *dir, const ckpt_state *s, int64_t keep, ckpt_warn_fn warn,
              void *warn_ctx, char *err, size_t eb) {
  char name[64], path[4400], latest[4400], line[80];
  if (fs_mkdirs(dir, err, eb) != 0) return -1;
  snprintf(name, sizeof name, "ckpt-epoch-%lld.h5", (long long)s->epoch);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(latest, sizeof latest, "%s/%s", dir, CKPT_LATEST_NAME);
  if (ckpt_write(path, s, err, eb) != 0) return -1;
  ckpt_fault_pause();
  int len = snprintf(line, sizeof line, "%s\n", name);
  if (fs_write_atomic(latest, line, (size_t)len, err, eb) != 0) return -1;
  ckpt_fault_pause();
  ckpt_prune(dir, s->epoch, keep, warn, warn_ctx);
  return 0;
}

static int ckpt_resolve_dir(const char *dir, const char *spec, char *out, size_t out_bytes,
                            char *err, size_t eb) {
  char latest[4400], ignored[256];
  snprintf(latest, sizeof latest, "%s/%s", dir, CKPT_LATEST_NAME);
  char *text = fs_read_all(latest, NULL, ignored, sizeof ignored);
  if (text) {
    text[strcspn(text, "\r\n")] = '\0';
    int ok = ckpt_name_epoch(text) >= 0;
    if (ok) snprintf(out, out_bytes, "%s/%s", dir, text);
    free(text);
    if (ok && access(out, R_OK) == 0) return 0;
  }
  /* No usable pointer: the newest checkpoint file there. */
  int64_t *epochs = malloc(CKPT_LIST_CAP * sizeof *epochs), newest = -1;
  int n = epochs ? ckpt_list_epochs(dir, epochs, CKPT_LIST_CAP) : -1;
  const int saved_errno = errno, oom = epochs == NULL;
  const char *why = oom ? "out of memory" : strerror(saved_errno);
  if (n > 0) newest = epochs[0];
  free(epochs);
  if (n < 0 && !oom && saved_errno == ENOENT) {
    snprintf(err, eb, "--resume-from %s: no checkpoint in %s (no such folder)", spec, dir);
    return -1;
  }
  if (n < 0) {
    snprintf(err, eb, "--resume-from %s: %s: %s", spec, dir, why);
    return -1;
  }
  if (n == 0) {
    snprintf(err, eb, "--resume-from %s: no checkpoint in %s", spec, dir);
    return -1;
  }
  snprintf(out, out_bytes, "%s/ckpt-epoch-%lld.h5", dir, (long long)newest);
  return 0;
}

int ckpt_exists(const char *outputs, char *err, size_t err_bytes) {
  char dir[4400];
  ckpt_dir_path(dir, sizeof dir, outputs);
  int64_t newest;
  int n = ckpt_list_epochs(dir, &newest, 1);
  if (n > 0) return 1;
  if (n == 0 || errno == ENOENT) return 0;
  snprintf(err, err_bytes, "--resume-from auto: %s: %s", dir, strerror(errno));
  return -1;
}

int ckpt_resolve(const char *spec, const char *outputs, char *out, size_t out_bytes, char *err,
                 size_t eb) {
  char dir[4400];
  struct stat st;
  if (strcmp(spec, "latest") == 0) {
    ckpt_dir_path(dir, sizeof dir, outputs);
    return ckpt_resolve_dir(dir, spec, out, out_bytes, err, eb);
  }
  if (stat(spec, &st) != 0) {
    snprintf(err, eb, "--resume-from %s: %s", spec, strerror(errno));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) return ckpt_resolve_dir(spec, spec, out, out_bytes, err, eb);
  snprintf(out, out_bytes, "%s", spec);
  return 0;
}
