/* A TF_CONFIG "evaluator" task, TF's sidecar evaluator: it joins no cluster;
 * it watches the chief's --outputs and evaluates each checkpoint as it
 * appears, then the final model, with the training loop's own evaluation
 * code on the CPU (so its accuracy is the chief's validation_acc for that
 * epoch, exactly, on a CPU run). Rows go to <outputs>/eval/metrics.jsonl,
 * and with --tensorboard DIR as scalars to DIR/eval, as TF's evaluator does. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "data/idx.h"
#include "modelio/checkpoint.h"
#include "model/evaluate.h"
#include "base/fsutil.h"
#include "modelio/infer.h"
#include "tboard/tboard.h"
#include "train/records.h"
#include "train/train_evaluator.h"

typedef struct {
  const train_config *cfg;
  data_set test;
  metrics_log metrics;
  tboard_writer *tb;  /* --tensorboard: <DIR>/eval; NULL when off */
  rank_log log;
  int64_t done_epoch; /* the newest checkpoint evaluated */
  int64_t last_step;  /* its global step */
  char stale_id[64];  /* a run already over when we started: not the one we wait for */
  char run_id[64];    /* the run we watch, once run.json names it: only its checkpoints count */
  int64_t foreign_logged; /* the newest other run's checkpoint already logged as skipped */
  base_err *err;          /* the task's, borrowed */
} evaluator;

/* accuracy and loss of the model or checkpoint at path on the test set. */
static int evaluator_score(evaluator *e, const char *path, double *acc, double *loss) {
  infer_session s;
  memset(&s, 0, sizeof s);
  if (infer_session_init(&s, path, e->err->msg, sizeof e->err->msg) != 0) return -1;
  kern_stats st;
  int rc =
      infer_session_evaluate(&s, &e->test, &st, NULL, NULL, e->err->msg, sizeof e->err->msg);
  infer_session_free(&s);
  if (rc != 0) return -1;
  *acc = st.correct / st.samples;
  *loss = st.loss_sum / st.samples;
  return 0;
}

static int evaluator_write(evaluator *e, const char *what, double acc, double loss, int64_t epoch,
                           int64_t step) {
  char name[64];
  snprintf(name, sizeof name, "%s_accuracy", what);
  metrics_write(&e->metrics, name, acc, epoch, step);
  tboard_writer_scalar(e->tb, name, acc, step);
  snprintf(name, sizeof name, "%s_loss", what);
  metrics_write(&e->metrics, name, loss, epoch, step);
  tboard_writer_scalar(e->tb, name, loss, step);
  if (metrics_sync(&e->metrics, e->err->msg, sizeof e->err->msg) != 0 ||
      tboard_writer_flush(e->tb, e->err->msg, sizeof e->err->msg) != 0) {
    return -1;
  }
  printf("evaluator: %s epoch %lld (step %lld): accuracy %.4f loss %.4f\n", what,
         (long long)epoch, (long long)step, acc, loss);
  fflush(stdout);
  rank_log_printf(&e->log, "%s epoch %lld step %lld: accuracy %.6f loss %.6f", what,
                  (long long)epoch, (long long)step, acc, loss);
  return 0;
}

/* One checkpoint: its epoch and step from the file (verified), then the score.
 * A file rotated away before it was read is skipped. */
static int evaluator_checkpoint(evaluator *e, const char *path, int64_t epoch) {
  ckpt_state s;
  memset(&s, 0, sizeof s);
  double acc, loss;
  if (ckpt_read(&s, path, e->err->msg, sizeof e->err->msg) != 0 ||
      evaluator_score(e, path, &acc, &loss) != 0) {
    ckpt_state_free(&s);
    if (access(path, F_OK) != 0) {
      rank_log_printf(&e->log, "epoch %lld: %s was removed before it was read", (long long)epoch,
                      path);
      e->done_epoch = epoch;
      base_err_clear(e->err);
      return 0;
    }
    return -1;
  }
  int rc = evaluator_write(e, "eval", acc, loss, s.epoch, s.global_step);
  e->last_step = s.epoch == e->cfg->epochs ? s.global_step : -1;
  ckpt_state_free(&s);
  e->done_epoch = epoch;
  return rc;
}

/* The lowest checkpoint epoch above `after` in dir, or -1. */
static int64_t evaluator_next(const char *dir, int64_t after) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int64_t best = -1;
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    long long ep;
    char tail[8];
    if (sscanf(ent->d_name, "ckpt-epoch-%lld%7s", &ep, tail) == 2 && !strcmp(tail, ".h5") &&
        ep > after && (best < 0 || ep < best)) {
      best = ep;
    }
  }
  closedir(d);
  return best;
}

/* 1 when the watched run wrote path, 0 when another run did (an older run's
 * file in the same --outputs, or the one a resumed run started from) or it
 * was rotated away, -1 on error. */
static int evaluator_ours(evaluator *e, const char *path, int64_t epoch) {
  char id[64];
  if (ckpt_read_run_id(path, id, sizeof id, e->err->msg, sizeof e->err->msg) != 0) {
    if (access(path, F_OK) == 0) return -1;
    base_err_clear(e->err);
    return 0;
  }
  if (strcmp(id, e->run_id) == 0) return 1;
  if (epoch > e->foreign_logged) {
    rank_log_printf(&e->log, "epoch %lld: %s is run %s's, not %s's: skipped", (long long)epoch,
                    path, id, e->run_id);
    e->foreign_logged = epoch;
  }
  return 0;
}

/* Evaluates the watched run's checkpoints above done_epoch, oldest first. */
static int evaluator_scan(evaluator *e, const char *dir) {
  for (int64_t after = e->done_epoch, ep; (ep = evaluator_next(dir, after)) >= 0; after = ep) {
    char path[4600];
    snprintf(path, sizeof path, "%s/ckpt-epoch-%lld.h5", dir, (long long)ep);
    int ours = evaluator_ours(e, path, ep);
    if (ours < 0 || (ours && evaluator_checkpoint(e, path, ep) != 0)) return -1;
  }
  return 0;
}

/* run.json's status ("" before there is one) and id. */
static void evaluator_status(const char *outputs, char *out, size_t bytes, char *id,
                             size_t id_bytes) {
  char path[4300];
  snprintf(path, sizeof path, "%s/run.json", outputs);
  out[0] = '\0';
  id[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (!f) return;
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  cJSON *doc = cJSON_Parse(buf);
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "status");
  const cJSON *rid = cJSON_GetObjectItemCaseSensitive(doc, "id");
  if (cJSON_IsString(st)) snprintf(out, bytes, "%s", st->valuestring);
  if (cJSON_IsString(rid)) snprintf(id, id_bytes, "%s", rid->valuestring);
  cJSON_Delete(doc);
}

/* Whether the run that owns outputs still lives: it holds the outputs lock. */
static int evaluator_run_alive(const char *outputs) {
  char path[4300];
  snprintf(path, sizeof path, "%s/.tfdist.lock", outputs);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int alive = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd); /* drops our shared lock, if we got it */
  return alive;
}

static int evaluator_terminal(const char *status) {
  return !strcmp(status, "Completed") || !strcmp(status, "Failed") || !strcmp(status, "Canceled");
}

/* Evaluates what is new; 1 when the run has ended (then the final model too). */
static int evaluator_pass(evaluator *e, double waited_s) {
  char dir[4400], status[32], id[64];
  const char *outputs = e->cfg->outputs;
  evaluator_status(outputs, status, sizeof status, id, sizeof id); /* before the scan */
  if (!strcmp(id, e->stale_id)) status[0] = '\0'; /* the old run: still waiting for ours */
  if (status[0] && !e->run_id[0]) snprintf(e->run_id, sizeof e->run_id, "%s", id);
  ckpt_dir_path(dir, sizeof dir, outputs);
  if (e->run_id[0] && evaluator_scan(e, dir) != 0) return -1;
  if (evaluator_terminal(status)) {
    char model[4400];
    double acc, loss;
    snprintf(model, sizeof model, "%s/model/model.h5", outputs);
    if (strcmp(status, "Completed") != 0) {
      return base_err_set(e->err, "the run in %s ended %s", outputs, status);
    }
    if (evaluator_score(e, model, &acc, &loss) != 0) return -1;
    return evaluator_write(e, "final_eval", acc, loss, e->cfg->epochs, e->last_step) == 0 ? 1 : -1;
  }
  if (!status[0] && waited_s > e->cfg->timeout) {
    return base_err_set(e->err, "no run started in %s within --timeout %.0f s", outputs,
                        e->cfg->timeout);
  }
  if (status[0] && !evaluator_run_alive(outputs)) {
    evaluator_status(outputs, status, sizeof status, id, sizeof id); /* it may have just ended */
    if (!evaluator_terminal(status)) {
      return base_err_set(e->err, "the run in %s is gone, its run.json still says %s",
                          outputs, status);
    }
  }
  return 0;
}

int train_evaluator_task(const train_config *cfg, base_err *be) {
  evaluator e = {.cfg = cfg, .done_epoch = 0, .last_step = -1, .err = be};
  char *const err = be->msg;
  const size_t err_bytes = sizeof be->msg;
  data_files files;
  char evaldir[4300], tbdir[4300], e_tb[1024] = "";
  snprintf(evaldir, sizeof evaldir, "%s/eval", cfg->outputs);
  snprintf(tbdir, sizeof tbdir, "%s/eval", cfg->tensorboard);
  if (data_files_find(&files, cfg->data_folder, err, err_bytes) != 0 ||
      data_set_load(&e.test, files.test_images, files.test_labels, 1, err, err_bytes) != 0 ||
      rank_log_open_task(&e.log, cfg->logs, "evaluator", 0, err, err_bytes) != 0 ||
      fs_mkdirs(evaldir, err, err_bytes) != 0 ||
      metrics_open(&e.metrics, evaldir, 1, err, err_bytes) != 0 ||
      (cfg->tensorboard[0] && tboard_writer_open(&e.tb, tbdir, e_tb, sizeof e_tb) != 0)) {
    if (e_tb[0]) base_err_set(be, "--tensorboard: %.990s", e_tb);
    metrics_close(&e.metrics);
    data_set_free(&e.test);
    rank_log_close(&e.log);
    return -1;
  }
  char status[32];
  evaluator_status(cfg->outputs, status, sizeof status, e.stale_id, sizeof e.stale_id);
  /* A run over, or gone, before we started is not the one to wait for. */
  if (!evaluator_terminal(status) && evaluator_run_alive(cfg->outputs)) e.stale_id[0] = '\0';
  rank_log_printf(&e.log, "evaluator: watching %s", cfg->outputs);
  const double t0 = clock_mono_s();
  int rc;
  while ((rc = evaluator_pass(&e, clock_mono_s() - t0)) == 0) {
    struct timespec ts = {0, 250000000L};
    nanosleep(&ts, NULL);
  }
  if (rc < 0) rank_log_printf(&e.log, "error: %s", err);
  metrics_close(&e.metrics);
  tboard_writer_free(e.tb);
  rank_log_close(&e.log);
  data_set_free(&e.test);
  return rc < 0 ? -1 : 0;
}
