/* TF_CONFIG parsing and checks; see tfconfig.h. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/tfconfig.h"

static const char *const tf_types[] = {"chief", "worker", "ps", "evaluator"};

const char *cluster_tf_type_name(cluster_tf_type t) {
  return t >= CLUSTER_TF_CHIEF && t <= CLUSTER_TF_PS ? tf_types[t] : "?";
}

void cluster_tf_task_name(const cluster_tf_config *c, int task, char *out, size_t out_bytes) {
  if (task < 0 || task >= c->ntasks) {
    snprintf(out, out_bytes, "task %d", task);
    return;
  }
  const cluster_tf_task *t = &c->tasks[task];
  snprintf(out, out_bytes, "%s %d (%s:%s)", cluster_tf_type_name(t->type), t->index, t->host, t->port);
}

static int tf_fail(char *err, size_t err_bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tf_fail(char *err, size_t err_bytes, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(err, err_bytes, "TF_CONFIG: %s", msg);
  return -1;
}

/* "host:port", "[v6]:port". */
static int tf_parse_address(const char *s, cluster_tf_task *t) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s) return -1;
  const char *h = s, *he = colon;
  if (*s == '[') {
    if (colon[-1] != ']' || colon - s < 3) return -1;
    h = s + 1;
    he = colon - 1;
  } else if (memchr(s, ':', (size_t)(colon - s))) {
    return -1; /* a bare v6 address needs brackets */
  }
  char *end = NULL;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] < '0' || colon[1] > '9' || *end || port < 1 || port > 65535) return -1;
  if ((size_t)(he - h) >= sizeof t->host) return -1;
  memcpy(t->host, h, (size_t)(he - h));
  t->host[he - h] = '\0';
  snprintf(t->port, sizeof t->port, "%ld", port);
  return 0;
}

static int tf_count(const cJSON *cluster, cluster_tf_type type, char *err, size_t err_bytes) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(cluster, tf_types[type]);
  if (!list) return 0;
  if (!cJSON_IsArray(list)) {
    return tf_fail(err, err_bytes, "cluster.%s: must be a list of \"host:port\" strings",
                   tf_types[type]);
  }
  return cJSON_GetArraySize(list);
}

static int tf_read_tasks(const cJSON *cluster, cluster_tf_type type, cluster_tf_config *c, char *err,
                         size_t err_bytes) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(cluster, tf_types[type]);
  int i = 0;
  const cJSON *a;
  cJSON_ArrayForEach(a, list) {
    cluster_tf_task *t = &c->tasks[c->ntasks];
    t->type = type;
    t->index = i;
    if (!cJSON_IsString(a) || tf_parse_address(a->valuestring, t) != 0) {
      char *text = cJSON_PrintUnformatted(a);
      tf_fail(err, err_bytes, "cluster.%s[%d]: %.200s is not \"host:port\" (port 1..65535)",
              tf_types[type], i, text ? text : "?");
      free(text);
      return -1;
    }
    for (int k = 0; k < c->ntasks; k++) {
      const cluster_tf_task *o = &c->tasks[k];
      if (!strcmp(o->host, t->host) && !strcmp(o->port, t->port)) {
        return tf_fail(err, err_bytes, "cluster.%s[%d]: address %s is also cluster.%s[%d]'s",
                       tf_types[type], i, a->valuestring, tf_types[o->type], o->index);
      }
    }
    c->ntasks++;
    i++;
  }
  return 0;
}

/* cluster.evaluator: addresses checked, no part of the mesh. */
static int tf_check_evaluators(const cJSON *cluster, cluster_tf_config *c, char *err,
                               size_t err_bytes) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(cluster, "evaluator");
  if (!list) return 0;
  if (!cJSON_IsArray(list)) {
    return tf_fail(err, err_bytes, "cluster.evaluator: must be a list of \"host:port\" strings");
  }
  int i = 0;
  const cJSON *a;
  cJSON_ArrayForEach(a, list) {
    cluster_tf_task t;
    if (!cJSON_IsString(a) || tf_parse_address(a->valuestring, &t) != 0) {
      return tf_fail(err, err_bytes, "cluster.evaluator[%d]: not \"host:port\" (port 1..65535)", i);
    }
    i++;
  }
  c->nevaluators = i;
  return 0;
}

static int tf_read_cluster(const cJSON *cluster, cluster_tf_config *c, char *err, size_t err_bytes) {
  if (!cJSON_IsObject(cluster)) return tf_fail(err, err_bytes, "cluster: missing, or not an object");
  const cJSON *k;
  cJSON_ArrayForEach(k, cluster) {
    int known = 0;
    for (int t = 0; t < 4; t++) known |= !strcmp(k->string, tf_types[t]);
    if (!known) {
      return tf_fail(err, err_bytes,
                     "cluster.%.100s: unknown task type (chief, worker, ps, evaluator)", k->string);
    }
  }
  if (tf_check_evaluators(cluster, c, err, err_bytes) != 0) return -1;
  int n[3];
  for (int t = 0; t < 3; t++) {
    if ((n[t] = tf_count(cluster, (cluster_tf_type)t, err, err_bytes)) < 0) return -1;
  }
  if (n[CLUSTER_TF_CHIEF] > 1) {
    return tf_fail(err, err_bytes, "cluster.chief: at most one chief (got %d)", n[CLUSTER_TF_CHIEF]);
  }
  if (n[CLUSTER_TF_CHIEF] + n[CLUSTER_TF_WORKER] == 0) {
    return tf_fail(err, err_bytes, "cluster: no chief and no worker tasks: nobody trains");
  }
  c->tasks = calloc((size_t)(n[0] + n[1] + n[2]), sizeof *c->tasks);
  if (!c->tasks) return tf_fail(err, err_bytes, "out of memory");
  for (int t = 0; t < 3; t++) {
    if (tf_read_tasks(cluster, (cluster_tf_type)t, c, err, err_bytes) != 0) return -1;
  }
  c->ntrain = n[CLUSTER_TF_CHIEF] + n[CLUSTER_TF_WORKER];
  c->nps = n[CLUSTER_TF_PS];
  return 0;
}

/* The evaluator: index 0, or in range of cluster.evaluator when listed. */
static int tf_read_evaluator(const cJSON *task, const cJSON *index, cluster_tf_config *c, char *err,
                             size_t err_bytes) {
  (void)task;
  const int count = c->nevaluators ? c->nevaluators : 1;
  double v = cJSON_IsNumber(index) ? index->valuedouble : -1.0;
  if (!cJSON_IsNumber(index) || v != (double)(int)v) {
    return tf_fail(err, err_bytes, "task.index: missing, or not an integer");
  }
  if (v < 0 || v >= count) {
    return tf_fail(err, err_bytes, "task.index: %d is out of range (%d evaluator%s)", (int)v, count,
                   count == 1 ? "" : "s");
  }
  c->self = -1;
  c->evaluator = 1;
  return 0;
}

static int tf_read_task(const cJSON *task, cluster_tf_config *c, char *err, size_t err_bytes) {
  if (!cJSON_IsObject(task)) return tf_fail(err, err_bytes, "task: missing, or not an object");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(task, "type");
  const cJSON *index = cJSON_GetObjectItemCaseSensitive(task, "index");
  if (!cJSON_IsString(type)) return tf_fail(err, err_bytes, "task.type: missing, or not a string");
  int ty = -1;
  for (int t = 0; t < 4; t++) {
    if (!strcmp(type->valuestring, tf_types[t])) ty = t;
  }
  if (ty < 0) {
    return tf_fail(err, err_bytes, "task.type: \"%.100s\" is not chief, worker, ps or evaluator",
                   type->valuestring);
  }
  if (ty == 3) return tf_read_evaluator(task, index, c, err, err_bytes);
  int count = 0, first = -1;
  for (int k = 0; k < c->ntasks; k++) {
    if ((int)c->tasks[k].type != ty) continue;
    if (first < 0) first = k;
    count++;
  }
  if (count == 0) return tf_fail(err, err_bytes, "task.type: \"%s\" has no list in cluster", tf_types[ty]);
  double v = cJSON_IsNumber(index) ? index->valuedouble : -1.0;
  if (!cJSON_IsNumber(index) || v != (double)(int)v) {
    return tf_fail(err, err_bytes, "task.index: missing, or not an integer");
  }
  if (v < 0 || v >= count) {
    return tf_fail(err, err_bytes, "task.index: %d is out of range (cluster.%s has %d)", (int)v,
                   tf_types[ty], count);
  }
  c->self = first + (int)v;
  return 0;
}

static uint64_t tf_fingerprint(const cluster_tf_config *c) {
  uint64_t h = 1469598103934665603ULL;
  for (int k = 0; k < c->ntasks; k++) {
    char row[300];
    int n = snprintf(row, sizeof row, "%d/%s/%s;", (int)c->tasks[k].type, c->tasks[k].host,
                     c->tasks[k].port);
    for (int i = 0; i < n; i++) h = (h ^ (unsigned char)row[i]) * 1099511628211ULL;
  }
  return h;
}

int cluster_tf_config_parse(const char *json, cluster_tf_config *out, char *err, size_t err_bytes) {
  memset(out, 0, sizeof *out);
  const char *end = NULL;
  cJSON *doc = cJSON_ParseWithOpts(json, &end, 1);
  if (!doc) {
    size_t at = end ? (size_t)(end - json) : 0;
    return tf_fail(err, err_bytes, "not JSON (at byte %zu)", at);
  }
  int rc = -1;
  if (!cJSON_IsObject(doc)) {
    tf_fail(err, err_bytes, "must be a JSON object with \"cluster\" and \"task\"");
  } else if (tf_read_cluster(cJSON_GetObjectItemCaseSensitive(doc, "cluster"), out, err,
                             err_bytes) == 0 &&
             tf_read_task(cJSON_GetObjectItemCaseSensitive(doc, "task"), out, err, err_bytes) == 0) {
    out->fingerprint = tf_fingerprint(out);
    rc = 0;
  }
  cJSON_Delete(doc);
  if (rc != 0) cluster_tf_config_free(out);
  return rc;
}

void cluster_tf_config_free(cluster_tf_config *c) {
  explicit_bzero(c->secret, sizeof c->secret);
  c->secret_bytes = 0;
  free(c->tasks);
  memset(c, 0, sizeof *c);
}

int cluster_tf_local_rank(const cluster_tf_config *c, int *local_size) {
  const char *me = c->tasks[c->self].host;
  int local = 0, size = 0;
  for (int k = 0; k < c->ntrain; k++) {
    if (strcmp(c->tasks[k].host, me) != 0) continue;
    if (k < c->self) local++;
    size++;
  }
  if (local_size) *local_size = size ? size : 1;
  return c->self < c->ntrain ? local : 0;
}

int cluster_tf_node_first(const cluster_tf_config *c) {
  const char *me = c->tasks[c->self].host;
  for (int k = 0; k < c->ntrain; k++) {
    if (strcmp(c->tasks[k].host, me) == 0) return k;
  }
  return c->self;
}
