/* The parameter-server strategy from the trainer's side, and the ps task's
 * own life (cluster/ps.h has the protocol). A ps applies the same update
 * kernel as a rank would, the CPU backend's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/ps.h"
#include "train/train_opt.h"
#include "train/train_ps.h"

/* What rank 0 sends each ps at the start: the rule, the schedule, and the
 * global step of the first update it will serve (a resume's, or 0). */
typedef struct {
  kern_opt opt;
  lr_schedule sched;
  int64_t first_step;
} train_ps_rule;

/* State floats per weight in the trainer's buffer (sgd keeps one). */
static int64_t train_ps_state_k(const train_step_state *s) {
  return train_opt_state_elems(s->opt.kind, 1);
}

/* Rank 0 hands the ps tasks the starting point: fresh or resumed weights
 * and optimizer state. */
static int train_ps_begin(train_step_state *s, const train_ctx *x, rank_log *log, base_err *err) {
  const int64_t P = s->layout.total_elems, k = train_ps_state_k(s);
  kern_backend *be = x->be;
  float *state = NULL;
  int rc = 0;
  if (x->world->rank == 0) {
    state = malloc((size_t)(k * P) * sizeof(float));
    if (!state) return base_err_set(err, "ps: out of host memory");
    if (kern_mem_download_f32(be, s->params_host, s->params, P) != 0 ||
        kern_mem_download_f32(be, state, s->opt_state, k * P) != 0) {
      free(state);
      return train_err_backend(err, be);
    }
  }
  const train_ps_rule rule = {s->opt, s->sched, s->global_step};
  if (cluster_ps_init(x->comm, s->params_host, state, (int)k, P, &rule, (uint32_t)sizeof rule) !=
      COLL_OK) {
    rc = train_err_coll(err, x->comm);
  }
  free(state);
  if (rc == 0) {
    s->ps_started = 1;
    rank_log_printf(log, "ps: %d parameter servers hold the weights", cluster_ps_count(x->comm));
  }
  return rc;
}

int train_ps_step(train_step_state *s, const train_ctx *x, rank_log *log, base_err *err) {
  const int64_t P = s->layout.total_elems;
  kern_backend *be = x->be;
  if (!s->ps_started && train_ps_begin(s, x, log, err) != 0) return -1;
  if (s->grads_host != s->grads &&
      kern_mem_download_f32(be, s->grads_host, s->grads, P) != 0) {
    return train_err_backend(err, be);
  }
  float *params = kern_is_host_memory(be) ? s->params : s->params_host;
  if (cluster_ps_step(x->comm, s->grads_host, params, P) != COLL_OK) {
    return train_err_coll(err, x->comm);
  }
  if (params != s->params &&
      kern_mem_upload_f32(be, s->params, params, P) != 0) {
    return train_err_backend(err, be);
  }
  return 0;
}

int train_ps_pull_state(train_step_state *s, const train_ctx *x, base_err *err) {
  const int64_t P = s->layout.total_elems, k = train_ps_state_k(s);
  if (!s->ps_started) return 0; /* no step yet: rank 0's own state is current */
  float *state = x->world->rank == 0 ? malloc((size_t)(k * P) * sizeof(float)) : NULL;
  if (x->world->rank == 0 && !state) return base_err_set(err, "ps: out of host memory");
  int rc = cluster_ps_pull_state(x->comm, state, (int)k, P) == COLL_OK
               ? 0
               : train_err_coll(err, x->comm);
  if (rc == 0 && state && kern_mem_upload_f32(x->be, s->opt_state, state, k * P) != 0) {
    rc = train_err_backend(err, x->be);
  }
  free(state);
  return rc;
}

int train_ps_finish(train_step_state *s, const train_ctx *x, rank_log *log, base_err *err) {
  /* A run with no step left (a resume of a finished run) still starts them. */
  if (!s->ps_started && train_ps_begin(s, x, log, err) != 0) return -1;
  return cluster_ps_finish(x->comm) == COLL_OK ? 0 : train_err_coll(err, x->comm);
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
  int64_t updates; /* served so far: this update is global step first_step + updates */
} ps_task_ctx;

static int ps_task_update(void *ctx, float *params, const float *grad, float *state, int64_t n,
                          const void *opt, uint32_t opt_bytes, char *err, size_t err_bytes) {
  ps_task_ctx *x = ctx;
  if (opt_bytes != sizeof(train_ps_rule)) {
    snprintf(err, err_bytes, "ps: rank 0's update rule has %u bytes, %zu expected (another "
             "tfdist version?)", opt_bytes, sizeof(train_ps_rule));
    return -1;
  }
  train_ps_rule rule;
  memcpy(&rule, opt, sizeof rule);
  kern_opt o = rule.opt;
  train_opt_at(&o, &rule.sched, rule.first_step + x->updates++, 0);
  if (n > 0 && kern_opt_update(x->be, params, grad, state, n, &o) != 0) {
    snprintf(err, err_bytes, "ps: update: %s", kern_error(x->be));
    return -1;
  }
  return 0;
}

int train_ps_task(const train_config *cfg, const coll_world *w, base_err *e) {
  char *const err = e->msg;
  const size_t err_bytes = sizeof e->msg;
  const cluster_tf_config *tf = cluster_world_tf(w);
  const int s = tf->self - tf->ntrain;
  rank_log log = {0};
  if (rank_log_open_task(&log, cfg->logs, "ps", s, err, err_bytes) != 0) return -1;
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  ps_task_ctx x = {0};
  if (kern_backend_init(&x.be, &kc, err, err_bytes) != 0) {
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
