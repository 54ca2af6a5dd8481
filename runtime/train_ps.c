/* The parameter-server strategy from the trainer's side, and the ps task's
 * own life (collective/ps.h has the protocol). A ps applies the same update
 * kernel as a rank would, the CPU backend's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/ps.h"
#include "runtime/train_ps.h"

static int train_ps_fail(trainer *t) {
  snprintf(t->err, sizeof t->err, "%s", coll_comm_error(t->comm));
  return -1;
}

static int train_ps_be_fail(trainer *t) {
  snprintf(t->err, sizeof t->err, "%s", t->be->err);
  return -1;
}

static int train_is_host(const trainer *t) { return t->be->cfg.device == KERN_DEVICE_CPU; }

/* Rank 0 hands the ps tasks the starting point: fresh or resumed weights
 * and optimizer state. */
static int train_ps_begin(trainer *t) {
  const int64_t P = t->layout.total_elems;
  float *state = NULL;
  int rc = 0;
  if (t->world->rank == 0) {
    state = malloc((size_t)P * sizeof(float));
    if (!state) {
      snprintf(t->err, sizeof t->err, "ps: out of host memory");
      return -1;
    }
    if (t->be->ops->mem_download(t->be, t->params_host, t->params, (size_t)P * sizeof(float)) != 0 ||
        t->be->ops->mem_download(t->be, state, t->opt_state, (size_t)P * sizeof(float)) != 0) {
      free(state);
      return train_ps_be_fail(t);
    }
  }
  if (cluster_ps_init(t->comm, t->params_host, state, P, &t->opt, (uint32_t)sizeof t->opt) !=
      COLL_OK) {
    rc = train_ps_fail(t);
  }
  free(state);
  if (rc == 0) {
    t->ps_started = 1;
    rank_log_printf(&t->log, "ps: %d parameter servers hold the weights", cluster_ps_count(t->comm));
  }
  return rc;
}

int train_ps_step(trainer *t) {
  const int64_t P = t->layout.total_elems;
  kern_backend *be = t->be;
  if (!t->ps_started && train_ps_begin(t) != 0) return -1;
  if (t->grads_host != t->grads &&
      be->ops->mem_download(be, t->grads_host, t->grads, (size_t)P * sizeof(float)) != 0) {
    return train_ps_be_fail(t);
  }
  float *params = train_is_host(t) ? t->params : t->params_host;
  if (cluster_ps_step(t->comm, t->grads_host, params, P) != COLL_OK) return train_ps_fail(t);
  if (params != t->params &&
      be->ops->mem_upload(be, t->params, params, (size_t)P * sizeof(float)) != 0) {
    return train_ps_be_fail(t);
  }
  return 0;
}

int train_ps_pull_state(trainer *t) {
  const int64_t P = t->layout.total_elems;
  if (!t->ps_started) return 0; /* no step yet: rank 0's own state is current */
  float *state = t->world->rank == 0 ? malloc((size_t)P * sizeof(float)) : NULL;
  if (t->world->rank == 0 && !state) {
    snprintf(t->err, sizeof t->err, "ps: out of host memory");
    return -1;
  }
  int rc = cluster_ps_pull_state(t->comm, state, P) == COLL_OK ? 0 : train_ps_fail(t);
  if (rc == 0 && state &&
      t->be->ops->mem_upload(t->be, t->opt_state, state, (size_t)P * sizeof(float)) != 0) {
    rc = train_ps_be_fail(t);
  }
  free(state);
  return rc;
}

int train_ps_finish(trainer *t) {
  /* A run with no step left (a resume of a finished run) still starts them. */
  if (!t->ps_started && train_ps_begin(t) != 0) return -1;
  return cluster_ps_finish(t->comm) == COLL_OK ? 0 : train_ps_fail(t);
}

cJSON *train_cluster_json(const coll_world *w) {
  const cluster_tf_config *tf = cluster_world_tf(w);
  if (!tf) return NULL;
  cJSON *o = cJSON_CreateObject(), *tasks = cJSON_CreateArray();
  cJSON_AddStringToObject(o, "from", "TF_CONFIG");
  cJSON_AddStringToObject(o, "strategy", tf->nps ? "parameter_server" : "multi_worker_allreduce");
  for (int k = 0; k < tf->ntasks; k++) {
    cJSON *row = cJSON_CreateObject();
    char addr[300];
    snprintf(addr, sizeof addr, "%s:%s", tf->tasks[k].host, tf->tasks[k].port);
    cJSON_AddStringToObject(row, "type", cluster_tf_type_name(tf->tasks[k].type));
    cJSON_AddNumberToObject(row, "index", tf->tasks[k].index);
    cJSON_AddStringToObject(row, "address", addr);
    if (k < tf->ntrain) cJSON_AddNumberToObject(row, "rank", k);
    cJSON_AddItemToArray(tasks, row);
  }
  cJSON_AddItemToObject(o, "tasks", tasks);
  return o;
}

/* ---- the ps task ---- */

typedef struct {
  kern_backend *be;
} ps_task_ctx;

static int ps_task_update(void *ctx, float *params, const float *grad, float *state, int64_t n,
                          const void *opt, uint32_t opt_bytes, char *err, size_t err_bytes) {
  ps_task_ctx *x = ctx;
  if (opt_bytes != sizeof(kern_opt)) {
    snprintf(err, err_bytes, "ps: rank 0's update rule has %u bytes, %zu expected (another "
             "tfdist version?)", opt_bytes, sizeof(kern_opt));
    return -1;
  }
  kern_opt o;
  memcpy(&o, opt, sizeof o);
  if (n > 0 && x->be->ops->opt_update(x->be, params, grad, state, n, &o) != 0) {
    snprintf(err, err_bytes, "ps: update: %s", x->be->err);
    return -1;
  }
  return 0;
}

int train_ps_task(const train_config *cfg, const coll_world *w, char *err, size_t err_bytes) {
  const cluster_tf_config *tf = cluster_world_tf(w);
  const int s = tf->self - tf->ntrain;
  rank_log log = {0};
  if (rank_log_open_task(&log, cfg->logs, "ps", s, err, err_bytes) != 0) return -1;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  ps_task_ctx x = {0};
  if (kern_cpu_create(&x.be, &kc, err, err_bytes) != 0) {
    rank_log_close(&log);
    return -1;
  }
  char me[320];
  cluster_tf_task_name(tf, tf->self, me, sizeof me);
  rank_log_printf(&log, "%s: serving %d training ranks", me, tf->ntrain);
  cluster_ps_stats st;
  int rc = cluster_ps_serve(w, ps_task_update, &x, &st, err, err_bytes);
  rank_log_printf(&log, "slice [%lld, %lld) of %lld floats; %lld steps, %.3f s waiting for ranks, "
                  "%.3f s updating", (long long)st.lo, (long long)(st.lo + st.n),
                  (long long)st.elems, (long long)st.steps, st.wait_s, st.update_s);
  if (rc != 0) rank_log_printf(&log, "error: %s", err);
  else rank_log_printf(&log, "every rank has finished");
  kern_backend_free(x.be);
  rank_log_close(&log);
  return rc;
}
