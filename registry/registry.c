/* The model registry: versions chosen under an flock, entries built in a
 * staging folder and renamed into place, sha256 checked on the way out. */
#include "registry/registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "modelio/checkpoint.h"
#include "base/env.h"
#include "base/fsutil.h"
#include "modelio/h5model.h"
#include "base/sha256.h"
#include "tfdist_config.h"

#define REG_PATH 4400
#define REG_MAX_VERSIONS 100000

/* snprintf into a REG_PATH buffer; a path that does not fit is an error, not
 * a silently shorter path. */
__attribute__((format(printf, 2, 3))) static int reg_path(char *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out, REG_PATH, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= REG_PATH) {
    out[0] = '\0';
    return -1;
  }
  return 0;
}

int registry_root(char *out, size_t out_bytes, const char *flag, char *err, size_t eb) {
  const char *env = base_env_str(REGISTRY_ENV), *home = base_env_str("HOME");
  if (flag && *flag) snprintf(out, out_bytes, "%s", flag);
  else if (env) snprintf(out, out_bytes, "%s", env);
  else if (home) snprintf(out, out_bytes, "%s/%s", home, REGISTRY_DEFAULT_SUBDIR);
  else {
    snprintf(err, eb, "--registry: not given, and neither %s nor HOME is set", REGISTRY_ENV);
    return -1;
  }
  return 0;
}

int registry_name_valid(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 128 || name[0] == '.' || name[0] == '-') return 0;
  for (const char *p = name; *p; p++) {
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '.' || *p == '_' || *p == '-')) {
      return 0;
    }
  }
  return 1;
}

/* "123" exactly -> 123; anything else -> -1. */
static long long reg_version_of(const char *s) {
  if (!*s || strlen(s) > 12) return -1;
  long long v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9') return -1;
    v = v * 10 + (*p - '0');
  }
  return v > 0 && s[0] != '0' ? v : -1;
}

static int reg_cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/* The versions present under name_dir, ascending; *n = 0 when none. */
static long long *reg_versions(const char *name_dir, int *n) {
  *n = 0;
  DIR *d = opendir(name_dir);
  if (!d) return NULL;
  long long *v = malloc(REG_MAX_VERSIONS * sizeof *v);
  struct dirent *e;
  while (v && (e = readdir(d)) != NULL) {
    long long x = reg_version_of(e->d_name);
    if (x > 0 && *n < REG_MAX_VERSIONS) v[(*n)++] = x;
  }
  closedir(d);
  if (v) qsort(v, (size_t)*n, sizeof *v, reg_cmp_ll);
  return v;
}

/* Copies src to dst, hashing what it reads; fsyncs dst. out: dst already
 * open (a temp file; closed here), or -1 to create dst, which must not exist
 * (O_EXCL|O_NOFOLLOW: never through a planted link). */
static int reg_copy_hash(const char *src, const char *dst, int out, char hex[SHA256_HEX_BYTES],
                         char *err, size_t eb) {
  int in = open(src, O_RDONLY | O_CLOEXEC), rc = -1;
  static char buf[1 << 16];
  sha256_ctx c;
  sha256_init(&c);
  if (in < 0) {
    snprintf(err, eb, "%s: %s", src, strerror(errno));
    if (out >= 0) close(out);
    return -1;
  }
  if (out < 0 && (out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0) {
    snprintf(err, eb, "%s: %s", dst, strerror(errno));
    goto done;
  }
  for (;;) {
    ssize_t got = read(in, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      snprintf(err, eb, "%s: read: %s", src, strerror(errno));
      goto done;
    }
    if (got == 0) break;
    sha256_update(&c, buf, (size_t)got);
    for (ssize_t off = 0; off < got;) {
      ssize_t w = write(out, buf + off, (size_t)(got - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        snprintf(err, eb, "%s: write: %s", dst, strerror(errno));
        goto done;
      }
      off += w;
    }
  }
  if (fsync(out) != 0) {
    snprintf(err, eb, "%s: fsync: %s", dst, strerror(errno));
    goto done;
  }
  sha256_final_hex(&c, hex);
  rc = 0;
done:
  if (out >= 0 && close(out) != 0 && rc == 0) {
    snprintf(err, eb, "%s: close: %s", dst, strerror(errno));
    rc = -1;
  }
  close(in);
  return rc;
}

static cJSON *reg_read_json(const char *path, char *err, size_t eb) {
  char *text = fs_read_all(path, NULL, err, eb);
  if (!text) return NULL;
  cJSON *j = cJSON_Parse(text);
  free(text);
  if (!j) snprintf(err, eb, "%.4000s: not valid JSON", path);
  return j;
}

/* Metrics of the run that produced the model: the last value of each name in
 * metrics.jsonl, else run.json's "metrics". */
static cJSON *reg_run_metrics(const char *run_dir) {
  char path[REG_PATH], ignored[4600];
  reg_path(path, "%s/metrics.jsonl", run_dir);
  cJSON *m = cJSON_CreateObject();
  char *text = fs_read_all(path, NULL, ignored, sizeof ignored);
  for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
    cJSON *row = cJSON_Parse(line);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(row, "name");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, "value");
    if (cJSON_IsString(n) && cJSON_IsNumber(v)) {
      cJSON_DeleteItemFromObjectCaseSensitive(m, n->valuestring);
      cJSON_AddNumberToObject(m, n->valuestring, v->valuedouble);
    }
    cJSON_Delete(row);
  }
  free(text);
  return m;
}

/* The run a model file names itself (tfdist_run_id, tfdist_metrics): NULL for
 * a file without them (Keras wrote it, or an older tfdist). */
static cJSON *reg_model_own_run(const char *model_file) {
  char err[512], *id = NULL, *metrics = NULL;
  hid_t f = h5_open_read(model_file, err, sizeof err);
  if (f < 0) return NULL;
  cJSON *run = NULL;
  if (h5_attr_exists(f, H5MODEL_ATTR_RUN_ID) &&
      h5_attr_read_str(f, H5MODEL_ATTR_RUN_ID, model_file, &id, err, sizeof err) == 0 && id[0]) {
    run = cJSON_CreateObject();
    cJSON_AddStringToObject(run, "id", id);
    if (h5_attr_exists(f, H5MODEL_ATTR_METRICS) &&
        h5_attr_read_str(f, H5MODEL_ATTR_METRICS, model_file, &metrics, err, sizeof err) == 0) {
      cJSON *m = cJSON_Parse(metrics);
      if (cJSON_IsObject(m)) cJSON_AddItemToObject(run, "metrics", m);
      else cJSON_Delete(m);
    }
  }
  free(id);
  free(metrics);
  H5Fclose(f);
  return run;
}

/* 1 when rec (a run.json, or a downloaded entry's metadata) is about the run
 * the model names, or the model names none. */
static int reg_same_run(const cJSON *rec, const char *key, const cJSON *own) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(rec, key);
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(own, "id");
  if (!own) return 1;
  return cJSON_IsString(a) && cJSON_IsString(b) && strcmp(a->valuestring, b->valuestring) == 0;
}

/* The run folder is the model folder's parent (<outputs>/model/model.h5). A
 * model downloaded from a registry has no run folder but its metadata.json
 * beside it, which carries the run's metrics and id forward. Either is used
 * only if it is about the run the model file names: a later run in the same
 * --outputs that failed has rewritten run.json and metrics.jsonl but left the
 * model; then the model's own record (its run id and final metrics) is it. */
static void reg_add_run_info(cJSON *meta, const char *model_file) {
  char buf[REG_PATH], run_dir[REG_PATH], path[REG_PATH], ignored[4600];
  cJSON *own = reg_model_own_run(model_file), *metrics = NULL;
  reg_path(buf, "%s", model_file);
  reg_path(run_dir, "%s", dirname(dirname(buf)));
  reg_path(path, "%s/run.json", run_dir);
  cJSON *run = reg_read_json(path, ignored, sizeof ignored);
  if (run && !reg_same_run(run, "id", own)) {
    cJSON_Delete(run);
    run = NULL;
  }
  if (!run) {
    reg_path(buf, "%s", model_file);
    reg_path(path, "%s/metadata.json", dirname(buf));
    run = reg_read_json(path, ignored, sizeof ignored);
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(run, "run_id");
    if (run && !reg_same_run(run, "run_id", own)) {
      cJSON_Delete(run);
      run = NULL;
    } else if (run && cJSON_IsString(rid)) {
      cJSON_ReplaceItemInObjectCaseSensitive(run, "id", cJSON_CreateString(rid->valuestring));
    } else {
      cJSON_DeleteItemFromObjectCaseSensitive(run, "id"); /* the entry's id, not a run's */
    }
    if (!run) {
      run = own;
      own = NULL;
    }
  } else {
    metrics = reg_run_metrics(run_dir);
  }
  cJSON_Delete(own);
  const cJSON *rm = cJSON_GetObjectItemCaseSensitive(run, "metrics");
  if (cJSON_GetArraySize(metrics) == 0 && cJSON_IsObject(rm)) {
    cJSON_Delete(metrics);
    metrics = cJSON_Duplicate(rm, 1);
  }
  cJSON_AddItemToObject(meta, "metrics", metrics ? metrics : cJSON_CreateObject());
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(run, "id");
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(run, "status");
  if (!cJSON_IsString(st)) st = cJSON_GetObjectItemCaseSensitive(run, "run_status");
  if (cJSON_IsString(id)) cJSON_AddStringToObject(meta, "run_id", id->valuestring);
  else cJSON_AddNullToObject(meta, "run_id");
  if (cJSON_IsString(st)) cJSON_AddStringToObject(meta, "run_status", st->valuestring);
  cJSON_Delete(run);
}

/* A checkpoint carries its own epoch's metrics and the id of the run that
 * wrote it; its folder's run.json and metrics.jsonl describe the whole run
 * (a later epoch's final_acc), not these weights. */
static void reg_add_ckpt_info(cJSON *meta, const ckpt_state *s) {
  cJSON *h = s->metrics ? cJSON_Parse(s->metrics) : NULL;
  int n = cJSON_IsArray(h) ? cJSON_GetArraySize(h) : 0;
  cJSON *last = n > 0 ? cJSON_DetachItemFromArray(h, n - 1) : NULL;
  cJSON_Delete(h);
  if (!cJSON_IsObject(last)) {
    cJSON_Delete(last);
    last = cJSON_CreateObject();
  }
  cJSON_DeleteItemFromObjectCaseSensitive(last, "epoch"); /* in "checkpoint" below */
  cJSON_DeleteItemFromObjectCaseSensitive(last, "step");
  cJSON_AddItemToObject(meta, "metrics", last);
  if (s->run_id[0]) cJSON_AddStringToObject(meta, "run_id", s->run_id);
  else cJSON_AddNullToObject(meta, "run_id");
  cJSON *ck = cJSON_AddObjectToObject(meta, "checkpoint");
  cJSON_AddNumberToObject(ck, "epoch", (double)s->epoch);
  cJSON_AddNumberToObject(ck, "global_step", (double)s->global_step);
}

/* 1 when path is a tfdist checkpoint (root attribute tfdist_kind). */
static int reg_is_checkpoint(const char *path) {
  char err[512];
  char *kind = NULL;
  hid_t f = h5_open_read(path, err, sizeof err);
  if (f < 0) return 0;
  int yes = h5_attr_exists(f, H5MODEL_ATTR_KIND) &&
            h5_attr_read_str(f, H5MODEL_ATTR_KIND, path, &kind, err, sizeof err) == 0 &&
            strcmp(kind, "checkpoint") == 0;
  free(kind);
  H5Fclose(f);
  return yes;
}

static int reg_add_tags(cJSON *meta, const registry_request *req, char *err, size_t eb) {
  cJSON *tags = cJSON_AddObjectToObject(meta, "tags");
  for (int i = 0; i < req->ntags; i++) {
    const char *t = req->tags[i], *eq = strchr(t, '=');
    char key[129];
    if (!eq || eq == t || (size_t)(eq - t) >= sizeof key) {
      snprintf(err, eb, "--tag '%s': expected KEY=VALUE with a key of 1..128 characters", t);
      return -1;
    }
    snprintf(key, sizeof key, "%.*s", (int)(eq - t), t);
    if (cJSON_GetObjectItemCaseSensitive(tags, key)) {
      snprintf(err, eb, "--tag '%s': key '%s' given twice", t, key);
      return -1;
    }
    cJSON_AddStringToObject(tags, key, eq + 1);
  }
  return 0;
}

static void reg_add_architecture(cJSON *meta, const h5model *m) {
  cJSON *a = cJSON_AddObjectToObject(meta, "architecture");
  cJSON *units = cJSON_AddArrayToObject(a, "units");
  for (int k = 0; k <= MODEL_LAYERS; k++) {
    cJSON_AddItemToArray(units, cJSON_CreateNumber((double)m->layout.dims[k]));
  }
  cJSON_AddStringToObject(a, "hidden_activation", "relu");
  cJSON_AddStringToObject(a, "output_activation", m->last_activation);
  cJSON_AddNumberToObject(a, "parameters", (double)m->layout.total_elems);
}

/* Everything but the version, id and checksum: built before the lock is taken. */
static cJSON *reg_meta_new(const registry_request *req, const char *model_file, const h5model *m,
                           const ckpt_state *ck, char *err, size_t eb) {
  char abs[PATH_MAX], stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cJSON *meta = cJSON_CreateObject();
  cJSON_AddStringToObject(meta, "name", req->name);
  cJSON_AddStringToObject(meta, "framework", "tfdist");
  cJSON_AddStringToObject(meta, "framework_version", TFDIST_VERSION);
  cJSON_AddStringToObject(meta, "model_format", "keras-h5");
  reg_add_architecture(meta, m);
  cJSON *rc = cJSON_AddObjectToObject(meta, "resource_configuration");
  cJSON_AddNumberToObject(rc, "cpu", req->cpu);
  cJSON_AddNumberToObject(rc, "memory_in_gb", req->memory_gb);
  if (reg_add_tags(meta, req, err, eb) != 0) {
    cJSON_Delete(meta);
    return NULL;
  }
  if (req->description) cJSON_AddStringToObject(meta, "description", req->description);
  else cJSON_AddNullToObject(meta, "description");
  if (ck) reg_add_ckpt_info(meta, ck);
  else reg_add_run_info(meta, model_file);
  cJSON_AddStringToObject(meta, "source_path", realpath(model_file, abs) ? abs : model_file);
  cJSON_AddStringToObject(meta, "created_time", stamp);
  cJSON_AddNumberToObject(meta, "created_unix", (double)now);
  cJSON_AddStringToObject(meta, "model_file", "model.h5");
  return meta;
}

static void reg_rm_flat_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[REG_PATH];
    reg_path(p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  if (d) closedir(d);
  rmdir(dir);
}

/* Staging folders of registrations that were killed. Called under the lock. */
static void reg_clean_staging(const char *name_dir) {
  DIR *d = opendir(name_dir);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    long pid = 0;
    if (sscanf(e->d_name, ".staging-%ld", &pid) != 1 || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    char p[REG_PATH];
    reg_path(p, "%s/%s", name_dir, e->d_name);
    reg_rm_flat_dir(p);
  }
  if (d) closedir(d);
}

/* Under the lock: version = newest + 1, built in staging, renamed into place. */
static int reg_commit(const char *name_dir, cJSON *meta, const char *model_file, char *err,
                      size_t eb) {
  char stage[REG_PATH], dst[REG_PATH], final[REG_PATH], hex[SHA256_HEX_BYTES],
      check[SHA256_HEX_BYTES];
  int n = 0, rc = -1;
  reg_clean_staging(name_dir);
  long long *v = reg_versions(name_dir, &n);
  long long version = n > 0 ? v[n - 1] + 1 : 1;
  free(v);
  reg_path(stage, "%s/.staging-%ld", name_dir, (long)getpid());
  reg_rm_flat_dir(stage);
  if (mkdir(stage, 0755) != 0) {
    snprintf(err, eb, "%s: %s", stage, strerror(errno));
    return -1;
  }
  reg_path(dst, "%s/model.h5", stage);
  if (reg_copy_hash(model_file, dst, -1, hex, err, eb) != 0 ||
      sha256_file_hex(dst, check, err, eb) != 0) {
    goto out;
  }
  if (strcmp(hex, check) != 0) {
    snprintf(err, eb, "%s: the copy's sha256 differs from the source's (write error?)", dst);
    goto out;
  }
  char id[300];
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(meta, "name");
  snprintf(id, sizeof id, "%s:%lld", name->valuestring, version);
  cJSON_AddStringToObject(meta, "id", id);
  cJSON_AddNumberToObject(meta, "version", (double)version);
  cJSON_AddStringToObject(meta, "sha256", hex);
  struct stat st;
  cJSON_AddNumberToObject(meta, "size_bytes", stat(dst, &st) == 0 ? (double)st.st_size : 0.0);
  char *text = cJSON_Print(meta);
  reg_path(dst, "%s/metadata.json", stage);
  int wrc = text ? fs_write_atomic(dst, text, strlen(text), err, eb) : -1;
  free(text);
  if (wrc != 0) goto out;
  reg_path(final, "%s/%lld", name_dir, version);
  if (rename(stage, final) != 0) {
    snprintf(err, eb, "%s: rename from %s: %s", final, stage, strerror(errno));
    goto out;
  }
  int dfd = open(name_dir, O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  rc = 0;
out:
  if (rc != 0) reg_rm_flat_dir(stage);
  return rc;
}

int registry_register(const char *root, const registry_request *req, cJSON **meta_out, char *err,
                      size_t eb) {
  char model_file[REG_PATH], name_dir[REG_PATH], lock[REG_PATH];
  *meta_out = NULL;
  if (!registry_name_valid(req->name)) {
    snprintf(err, eb, "--name '%s': use 1..128 of A-Z a-z 0-9 . _ -, not starting with . or -",
             req->name);
    return -1;
  }
  h5model m;
  ckpt_state ck;
  h5model_resolve_path(model_file, sizeof model_file, req->path);
  if (h5model_load(&m, model_file, err, eb) != 0) return -1;
  int is_ckpt = reg_is_checkpoint(model_file);
  if (is_ckpt && ckpt_read(&ck, model_file, err, eb) != 0) { /* verified, like a resume */
    h5model_free(&m);
    return -1;
  }
  cJSON *meta = reg_meta_new(req, model_file, &m, is_ckpt ? &ck : NULL, err, eb);
  h5model_free(&m);
  if (is_ckpt) ckpt_state_free(&ck);
  if (!meta) return -1;
  if (reg_path(name_dir, "%s/%s", root, req->name) != 0 ||
      reg_path(lock, "%s/.lock", name_dir) != 0) {
    snprintf(err, eb, "--registry: path too long");
    cJSON_Delete(meta);
    return -1;
  }
  int fd = -1, rc = -1;
  if (fs_mkdirs(name_dir, err, eb) != 0) goto out;
  if ((fd = fs_open_nofollow(lock, O_RDWR, err, eb)) < 0) goto out;
  if (flock(fd, LOCK_EX) != 0) {
    snprintf(err, eb, "%s: cannot lock: %s", lock, strerror(errno));
    goto out;
  }
  rc = reg_commit(name_dir, meta, model_file, err, eb);
out:
  if (fd >= 0) close(fd); /* releases the flock */
  if (rc == 0) *meta_out = meta;
  else cJSON_Delete(meta);
  return rc;
}

/* NAME or NAME:VERSION; version 0 means the newest. */
static int reg_parse_ref(const char *ref, char *name, size_t name_bytes, long long *version,
                         char *err, size_t eb) {
  const char *colon = strrchr(ref, ':');
  size_t n = colon ? (size_t)(colon - ref) : strlen(ref);
  *version = 0;
  if (n >= name_bytes) n = name_bytes - 1;
  snprintf(name, name_bytes, "%.*s", (int)n, ref);
  if (!registry_name_valid(name)) {
    snprintf(err, eb, "'%s': not a model name (NAME or NAME:VERSION)", ref);
    return -1;
  }
  if (colon && (*version = reg_version_of(colon + 1)) < 0) {
    snprintf(err, eb, "'%s': version '%s' is not a positive integer", ref, colon + 1);
    return -1;
  }
  return 0;
}

int registry_show(const char *root, const char *ref, cJSON **meta, char *dir, size_t dir_bytes,
                  char *err, size_t eb) {
  char name[160], name_dir[REG_PATH], entry[REG_PATH], path[REG_PATH];
  long long version = 0;
  *meta = NULL;
  if (reg_parse_ref(ref, name, sizeof name, &version, err, eb) != 0) return -1;
  if (reg_path(name_dir, "%s/%s", root, name) != 0) {
    snprintf(err, eb, "--registry: path too long");
    return -1;
  }
  int n = 0;
  long long *v = reg_versions(name_dir, &n);
  long long newest = n > 0 ? v[n - 1] : 0;
  /* n == 0: v is NULL, which bsearch may not be given */
  int found = n > 0 && (version == 0 || bsearch(&version, v, (size_t)n, sizeof *v, reg_cmp_ll));
  free(v);
  if (!found) {
    if (n == 0) snprintf(err, eb, "%s: no model named '%s' in registry %s", ref, name, root);
    else snprintf(err, eb, "%s: no such version (newest is %s:%lld)", ref, name, newest);
    return -1;
  }
  if (!version) version = newest;
  reg_path(entry, "%s/%lld", name_dir, version);
  reg_path(path, "%s/metadata.json", entry);
  if (!(*meta = reg_read_json(path, err, eb))) return -1;
  /* A hand-edited or damaged file must not pass for this entry's metadata. */
  char id[300];
  snprintf(id, sizeof id, "%s:%lld", name, version);
  const cJSON *have = cJSON_GetObjectItemCaseSensitive(*meta, "id");
  if (!cJSON_IsObject(*meta) || !cJSON_IsString(have) || strcmp(have->valuestring, id) != 0) {
    if (!cJSON_IsObject(*meta)) {
      snprintf(err, eb, "%.4000s: not this entry's metadata (not a JSON object)", path);
    } else {
      snprintf(err, eb, "%.4000s: not this entry's metadata (\"id\" is %s, expected \"%s\")",
               path, !have ? "missing" : !cJSON_IsString(have) ? "not a string" : "another entry's",
               id);
    }
    cJSON_Delete(*meta);
    *meta = NULL;
    return -1;
  }
  if (dir) snprintf(dir, dir_bytes, "%s", entry);
  return 0;
}

static int reg_cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int registry_list(const char *root, cJSON **entries, char *err, size_t eb) {
  *entries = cJSON_CreateArray();
  DIR *d = opendir(root);
  if (!d) {
    if (errno == ENOENT) return 0; /* an empty registry */
    snprintf(err, eb, "%s: %s", root, strerror(errno));
    return -1;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!registry_name_valid(e->d_name)) continue;
    if (n == cap) {
      char **grown = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
      if (!grown) break;
      names = grown;
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, reg_cmp_name);
  for (size_t i = 0; i < n; i++) {
    char name_dir[REG_PATH], ref[400];
    int nv = 0;
    reg_path(name_dir, "%s/%s", root, names[i]);
    long long *v = reg_versions(name_dir, &nv);
    for (int k = 0; k < nv; k++) {
      cJSON *meta = NULL;
      char ignored[4600];
      snprintf(ref, sizeof ref, "%s:%lld", names[i], v[k]);
      if (registry_show(root, ref, &meta, NULL, 0, ignored, sizeof ignored) != 0) {
        meta = cJSON_CreateObject();
        cJSON_AddStringToObject(meta, "id", ref);
        cJSON_AddStringToObject(meta, "error", ignored);
      }
      cJSON_AddItemToArray(*entries, meta);
    }
    free(v);
    free(names[i]);
  }
  free(names);
  return 0;
}

static const char *reg_who(const cJSON *meta, const char *ref) {
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(meta, "id");
  return cJSON_IsString(id) ? id->valuestring : ref;
}

/* The sha256 the entry's metadata records, or NULL with err. */
static const char *reg_recorded_sha(const cJSON *meta, const char *ref, char *err, size_t eb) {
  const cJSON *want = cJSON_GetObjectItemCaseSensitive(meta, "sha256");
  if (cJSON_IsString(want)) return want->valuestring;
  snprintf(err, eb, "registry entry %s: metadata.json has no sha256", reg_who(meta, ref));
  return NULL;
}

/* The entry's recorded sha256 against hex, the hash of src as read. */
static int reg_hash_check(const cJSON *meta, const char *ref, const char *src, const char *hex,
                          char *err, size_t eb) {
  const char *want = reg_recorded_sha(meta, ref, err, eb);
  if (!want) return -1;
  if (strcmp(hex, want) != 0) {
    snprintf(err, eb, "registry entry %s: %s has sha256 %.16s..., the metadata records "
             "%.16s...: the file was modified or corrupted", reg_who(meta, ref), src, hex, want);
    return -1;
  }
  return 0;
}

/* Both files under one flock on <to>/.tfdist.lock, so two downloads into one
 * folder take turns and the folder ends with one version's pair. Each file
 * is a fresh temp (fs_tmp_create) renamed over its name: a link planted at
 * <to>/model.h5 or <to>/metadata.json is replaced, never written through. */
static int reg_download_locked(const char *src, const char *to, const char *ref, cJSON *meta,
                               char *err, size_t eb) {
  char dst[REG_PATH], tmp[REG_PATH], hex[SHA256_HEX_BYTES];
  h5model m;
  if (reg_path(dst, "%s/model.h5", to) != 0) {
    snprintf(err, eb, "--to: path too long");
    return -1;
  }
  int fd = fs_tmp_create(dst, tmp, sizeof tmp, err, eb);
  if (fd < 0) return -1;
  /* The copy, once its bytes match the recorded sha256, is loaded as any
   * model is (self-contained, checksummed, finite, within --max-params): the
   * sha256 covers the file, not a side file its datasets could point at. */
  if (reg_copy_hash(src, tmp, fd, hex, err, eb) != 0 ||
      reg_hash_check(meta, ref, src, hex, err, eb) != 0) {
    unlink(tmp);
    return -1;
  }
  if (h5model_load(&m, tmp, err, eb) != 0) {
    size_t n = strlen(tmp);
    if (strncmp(err, tmp, n) == 0) { /* name the entry, not our temp copy */
      char rest[4600];
      snprintf(rest, sizeof rest, "%s", err + n);
      snprintf(err, eb, "%s%s", src, rest);
    }
    unlink(tmp);
    return -1;
  }
  h5model_free(&m);
  if (fs_commit(tmp, dst, err, eb) != 0) return -1;
  char *text = cJSON_Print(meta);
  reg_path(dst, "%s/metadata.json", to);
  int rc = text ? fs_write_atomic(dst, text, strlen(text), err, eb) : -1;
  free(text);
  return rc;
}

int registry_download(const char *root, const char *ref, const char *to, cJSON **meta,
                      char *err, size_t eb) {
  char entry[REG_PATH], src[REG_PATH], lock[REG_PATH];
  if (registry_show(root, ref, meta, entry, sizeof entry, err, eb) != 0) return -1;
  if (!reg_recorded_sha(*meta, ref, err, eb)) return -1;
  reg_path(src, "%s/model.h5", entry);
  if (fs_mkdirs(to, err, eb) != 0) return -1;
  if (reg_path(lock, "%s/.tfdist.lock", to) != 0) {
    snprintf(err, eb, "--to: path too long");
    return -1;
  }
  int fd = fs_open_nofollow(lock, O_RDWR, err, eb);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX) != 0) {
    snprintf(err, eb, "%s: cannot lock: %s", lock, strerror(errno));
    close(fd);
    return -1;
  }
  int rc = reg_download_locked(src, to, ref, *meta, err, eb);
  close(fd); /* releases the flock */
  return rc;
}

int registry_versions(const char *root, const char *name, long long **versions, int *n, char *err,
                      size_t eb) {
  char name_dir[REG_PATH];
  *versions = NULL;
  *n = 0;
  if (!registry_name_valid(name)) {
    snprintf(err, eb, "'%s': not a model name", name);
    return -1;
  }
  if (reg_path(name_dir, "%s/%s", root, name) != 0) {
    snprintf(err, eb, "--registry: path too long");
    return -1;
  }
  *versions = reg_versions(name_dir, n);
  if (*n == 0) {
    snprintf(err, eb, "%s: no model named '%s' in registry %s", name, name, root);
    free(*versions);
    *versions = NULL;
    return -1;
  }
  return 0;
}

int registry_model_file(const char *root, const char *ref, char *path, size_t path_bytes,
                        long long *version, char *err, size_t eb) {
  char entry[REG_PATH], hex[SHA256_HEX_BYTES];
  cJSON *meta = NULL;
  if (registry_show(root, ref, &meta, entry, sizeof entry, err, eb) != 0) return -1;
  /* registry_show checked the id is NAME:VERSION of this folder: the version
   * field must agree, or another version's number would serve this file. */
  const char *id = cJSON_GetObjectItemCaseSensitive(meta, "id")->valuestring;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, "version");
  *version = strtoll(strrchr(id, ':') + 1, NULL, 10);
  int rc = -1;
  if (!cJSON_IsNumber(v) || v->valuedouble != (double)*version) {
    snprintf(err, eb, "registry entry %s: %s/metadata.json: \"version\" is not %lld", id, entry,
             *version);
  } else if (snprintf(path, path_bytes, "%s/model.h5", entry) >= (int)path_bytes) {
    snprintf(err, eb, "--registry: path too long");
  } else if (sha256_file_hex(path, hex, err, eb) == 0) {
    rc = reg_hash_check(meta, ref, path, hex, err, eb);
  }
  cJSON_Delete(meta);
  return rc;
}
