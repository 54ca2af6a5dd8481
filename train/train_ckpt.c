/* The trainer's side of checkpointing: what goes into a ckpt_state, what must
 * match on resume, and how every rank receives rank 0's restored state. */
#include "train/train_ckpt.h"

#include "data/shards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "modelio/checkpoint.h"
#include "base/fsutil.h"

struct train_ckpt_state {
  cJSON *history;     /* one object per completed epoch, for the checkpoint's metrics */
  char data_fp[32];   /* "crc32:xxxxxxxx" of the training data, computed once */
  ckpt_state pending; /* rank 0: --resume-from, read and checked before <outputs> is touched */
  cJSON *pending_history;
  char path[4400];    /* the checkpoint file --resume-from resolved to */
};

static const char *const train_ckpt_metric_names[] = {
  "training_acc", "validation_acc", "loss", "train_acc_mean", "validation_loss",
  "samples_per_s", "step_time_ms", "epoch_time_s", "data_wait_s"};
#define TRAIN_CKPT_METRICS (sizeof train_ckpt_metric_names / sizeof train_ckpt_metric_names[0])

static void train_ckpt_result_values(const trainer *t, double v[TRAIN_CKPT_METRICS]) {
  const train_epoch_result *r = &t->last;
  const double vals[TRAIN_CKPT_METRICS] = {r->training_acc, r->validation_acc, r->loss,
                                           r->train_acc_mean, r->validation_loss, r->samples_per_s,
                                           r->step_time_ms, r->epoch_time_s, t->data_wait_s};
  memcpy(v, vals, sizeof vals);
}

/* crc32 of the training images and labels: resuming on other data is an
 * error. In stream mode the set is never in memory, so the shard index's
 * layout and per-shard body CRCs stand for it. */
static const char *train_ckpt_fingerprint(trainer *t) {
  struct train_ckpt_state *c = t->ckpt;
  if (c->data_fp[0]) return c->data_fp;
  const int64_t px = t->layout.dims[0];
  uLong crc = crc32_z(0L, Z_NULL, 0);
  if (t->shards) {
    for (int64_t i = 0; i < t->shards->count; i++) {
      const data_shard *sh = &t->shards->shards[i];
      const int64_t row[4] = {sh->first, sh->count, sh->images_crc, sh->labels_crc};
      crc = crc32_z(crc, (const Bytef *)row, sizeof row);
    }
  } else {
    crc = crc32_z(crc, t->train.images, (z_size_t)(t->train.count * px));
    crc = crc32_z(crc, t->train.labels, (z_size_t)t->train.count);
  }
  snprintf(c->data_fp, sizeof c->data_fp, "crc32:%08lx", (unsigned long)crc);
  return c->data_fp;
}

static int train_ckpt_fail(trainer *t, const char *msg) {
  snprintf(t->err, sizeof t->err, "%s", msg);
  return -1;
}

static int train_ckpt_state_init(trainer *t) {
  if (t->ckpt) return 0;
  t->ckpt = calloc(1, sizeof *t->ckpt);
  if (!t->ckpt || !(t->ckpt->history = cJSON_CreateArray())) {
    return train_ckpt_fail(t, "out of host memory");
  }
  return 0;
}

/* What a rank trains and validates on, small enough to broadcast. */
typedef struct {
  int64_t train_samples, test_samples;
  char train_fp[32], test_fp[32];
} train_ckpt_data_id;

static void train_ckpt_data_id_make(trainer *t, train_ckpt_data_id *id) {
  memset(id, 0, sizeof *id);
  id->train_samples = t->shards ? t->shards->samples : t->train.count;
  id->test_samples = t->test.count;
  snprintf(id->train_fp, sizeof id->train_fp, "%s", train_ckpt_fingerprint(t));
  uLong crc = crc32_z(0L, Z_NULL, 0);
  crc = crc32_z(crc, t->test.images, (z_size_t)(t->test.count * t->layout.dims[0]));
  crc = crc32_z(crc, t->test.labels, (z_size_t)t->test.count);
  snprintf(id->test_fp, sizeof id->test_fp, "crc32:%08lx", (unsigned long)crc);
}

/* The ranks whose flag is set, as "1, 3, 5" (the first few). */
static void train_ckpt_rank_list(const double *bad, int n, char *out, size_t bytes) {
  size_t len = 0;
  int shown = 0;
  out[0] = '\0';
  for (int r = 0; r < n && len < bytes; r++) {
    if (bad[r] == 0) continue;
    if (shown++ == 8) {
      snprintf(out + len, bytes - len, ", ...");
      return;
    }
    len += (size_t)snprintf(out + len, bytes - len, "%s%d", shown > 1 ? ", " : "", r);
  }
}

int train_ckpt_check_data(trainer *t) {
  const int n = t->world->size;
  if (n == 1) return 0;
  if (train_ckpt_state_init(t) != 0) return -1;
  train_ckpt_data_id mine, root;
  train_ckpt_data_id_make(t, &mine);
  root = mine;
  double *bad = calloc((size_t)n, sizeof *bad);
  if (!bad) return train_ckpt_fail(t, "out of host memory");
  if (coll_broadcast_bytes(t->comm, &root, sizeof root, 0) != COLL_OK) {
    free(bad);
    return train_ckpt_fail(t, coll_comm_error(t->comm));
  }
  const int train_ok = mine.train_samples == root.train_samples && !strcmp(mine.train_fp, root.train_fp);
  const int test_ok = mine.test_samples == root.test_samples && !strcmp(mine.test_fp, root.test_fp);
  bad[t->world->rank] = !(train_ok && test_ok);
  /* Every rank learns who differs, so all stop here, before rank 0 writes outputs. */
  if (coll_allreduce_sum_f64(t->comm, bad, n) != COLL_OK) {
    free(bad);
    return train_ckpt_fail(t, coll_comm_error(t->comm));
  }
  char which[128];
  train_ckpt_rank_list(bad, n, which, sizeof which);
  free(bad);
  if (!which[0]) return 0;
  if (train_ok && test_ok) {
    snprintf(t->err, sizeof t->err, "--data-folder %.600s: rank(s) %s read training or test data "
             "that differs from rank 0's; every rank must read the same files", t->cfg->data_folder,
             which);
    return -1;
  }
  snprintf(t->err, sizeof t->err, "--data-folder %.600s: this rank's %s data (%lld samples, %s) "
           "differs from rank 0's (%lld samples, %s); every rank must read the same files",
           t->cfg->data_folder, train_ok ? "test" : "training",
           (long long)(train_ok ? mine.test_samples : mine.train_samples),
           train_ok ? mine.test_fp : mine.train_fp,
           (long long)(train_ok ? root.test_samples : root.train_samples),
           train_ok ? root.test_fp : root.train_fp);
  return -1;
}

static int train_ckpt_be_fail(trainer *t) { return train_ckpt_fail(t, kern_error(t->be)); }

/* ---- saving ---- */

static void train_ckpt_record(trainer *t, int64_t epochs_done) {
  double v[TRAIN_CKPT_METRICS];
  train_ckpt_result_values(t, v);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "epoch", (double)epochs_done);
  cJSON_AddNumberToObject(o, "step", (double)t->global_step);
  for (size_t i = 0; i < TRAIN_CKPT_METRICS; i++) {
    cJSON_AddNumberToObject(o, train_ckpt_metric_names[i], v[i]);
  }
  cJSON_AddItemToArray(t->ckpt->history, o);
}

static void train_ckpt_fill(trainer *t, ckpt_state *s, int64_t epochs_done) {
  const train_config *c = t->cfg;
  memset(s, 0, sizeof *s);
  s->epoch = epochs_done;
  s->global_step = t->global_step;
  s->steps_per_epoch = t->steps_per_epoch;
  s->batch_size = t->batch;
  s->global_batch = t->global_batch;
  s->world_size = t->world->size;
  s->seed = c->seed;
  s->train_count = t->train.count;
  snprintf(s->data_fingerprint, sizeof s->data_fingerprint, "%s", train_ckpt_fingerprint(t));
  snprintf(s->data_mode, sizeof s->data_mode, "%.31s", c->data_mode);
  snprintf(s->opt_kind, sizeof s->opt_kind, "%.15s", c->optimizer);
  s->learning_rate = c->learning_rate;
  s->lr_effective = t->opt.lr;
  s->momentum = c->momentum;
  s->scale_lr = c->scale_lr;
  s->threads = kern_is_host_memory(t->be) ? kern_config_of(t->be)->threads : 0;
  snprintf(s->run_id, sizeof s->run_id, "%s", t->run.id);
  s->layout = t->layout;
}

static int train_ckpt_save(trainer *t, int64_t epochs_done) {
  const int64_t P = t->layout.total_elems;
  kern_backend *be = t->be;
  ckpt_state s;
  char dir[4400];
  train_ckpt_fill(t, &s, epochs_done);
  s.opt_state = malloc((size_t)P * sizeof(float));
  cJSON *hp = opt_to_json(&train_options, t->cfg);
  s.hyperparameters = hp ? cJSON_PrintUnformatted(hp) : NULL;
  s.metrics = cJSON_PrintUnformatted(t->ckpt->history);
  cJSON_Delete(hp);
  int rc = -1;
  if (!s.opt_state || !s.hyperparameters || !s.metrics) {
    train_ckpt_fail(t, "checkpoint: out of host memory");
    goto out;
  }
  if (kern_mem_download_f32(be, t->params_host, t->params, P) != 0 ||
      kern_mem_download_f32(be, s.opt_state, t->opt_state, P) != 0) {
    train_ckpt_be_fail(t);
    goto out;
  }
  s.params = t->params_host;
  ckpt_dir_path(dir, sizeof dir, t->cfg->outputs);
  if (ckpt_save(dir, &s, t->cfg->keep_checkpoints, t->err, sizeof t->err) != 0) goto out;
  rank_log_printf(&t->log, "checkpoint: %s/ckpt-epoch-%lld.h5 (step %lld)", dir,
                  (long long)epochs_done, (long long)t->global_step);
  rc = 0;
out:
  s.params = NULL; /* t->params_host, not ours */
  ckpt_state_free(&s);
  return rc;
}

int train_ckpt_due(const trainer *t, int64_t epochs_done) {
  const int64_t every = t->cfg->checkpoint_every;
  return every > 0 && epochs_done % every == 0;
}

int train_ckpt_epoch_end(trainer *t, int64_t epochs_done) {
  if (t->world->rank != 0) return 0;
  train_ckpt_record(t, epochs_done);
  return train_ckpt_due(t, epochs_done) ? train_ckpt_save(t, epochs_done) : 0;
}

/* ---- resuming ---- */

/* Every flag that changes the math or the data order must agree. */
static int train_ckpt_check(trainer *t, const ckpt_state *s, const char *path) {
  const train_config *c = t->cfg;
  char *e = t->err;
  const size_t eb = sizeof t->err;
  const struct { const char *flag; long long here, there; } ints[] = {
    {"--first-layer-neurons", (long long)t->layout.dims[1], (long long)s->layout.dims[1]},
    {"--second-layer-neurons", (long long)t->layout.dims[2], (long long)s->layout.dims[2]},
    {"--batch-size", (long long)t->batch, (long long)s->batch_size},
    {"--seed", (long long)c->seed, (long long)s->seed},
    {"--scale-lr", (long long)c->scale_lr, (long long)s->scale_lr},
    {"--max-steps (steps per epoch)", (long long)t->steps_per_epoch, (long long)s->steps_per_epoch},
    {"--data-folder (training samples)", (long long)t->train.count, (long long)s->train_count},
  };
  if (t->world->size != s->world_size) {
    snprintf(e, eb, "--resume-from %.600s: world size is %d ranks but the checkpoint was written by "
             "%lld; an exact resume needs the same ranks and --batch-size", path, t->world->size,
             (long long)s->world_size);
    return -1;
  }
  const int threads = kern_is_host_memory(t->be) ? kern_config_of(t->be)->threads : 0;
  if (s->threads > 0 && threads > 0 && s->threads != threads) {
    snprintf(e, eb, "--resume-from %.600s: --threads is %d but the checkpoint was written with %lld; "
             "an exact resume needs the same threads per rank (each splits the sums its own way)",
             path, threads, (long long)s->threads);
    return -1;
  }
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    if (ints[i].here == ints[i].there) continue;
    snprintf(e, eb, "--resume-from %.600s: %s is %lld but the checkpoint has %lld", path,
             ints[i].flag, ints[i].here, ints[i].there);
    return -1;
  }
  const struct { const char *flag; const char *here, *there; } strs[] = {
    {"--optimizer", c->optimizer, s->opt_kind},
    {"--data-mode", c->data_mode, s->data_mode},
    {"--data-folder (training data crc32)", train_ckpt_fingerprint(t), s->data_fingerprint},
  };
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (strcmp(strs[i].here, strs[i].there) == 0) continue;
    snprintf(e, eb, "--resume-from %.600s: %s is '%.40s' but the checkpoint has '%.40s'", path,
             strs[i].flag, strs[i].here, strs[i].there);
    return -1;
  }
  if (c->learning_rate != s->learning_rate ||
      (!strcmp(c->optimizer, "momentum") && c->momentum != s->momentum)) {
    int lr = c->learning_rate != s->learning_rate;
    snprintf(e, eb, "--resume-from %.600s: %s is %.17g but the checkpoint has %.17g", path,
             lr ? "--learning-rate" : "--momentum", lr ? c->learning_rate : c->momentum,
             lr ? s->learning_rate : s->momentum);
    return -1;
  }
  if (c->epochs < s->epoch) {
    snprintf(e, eb, "--resume-from %.600s: --epochs %lld is below the checkpoint's epoch %lld", path,
             (long long)c->epochs, (long long)s->epoch);
    return -1;
  }
  return 0;
}

/* The last completed epoch's metrics, so a resume with nothing left to train
 * still reports final_acc. */
static void train_ckpt_restore_last(trainer *t) {
  cJSON *last = cJSON_GetArrayItem(t->ckpt->history, cJSON_GetArraySize(t->ckpt->history) - 1);
  double v[TRAIN_CKPT_METRICS] = {0};
  for (size_t i = 0; last && i < TRAIN_CKPT_METRICS; i++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(last, train_ckpt_metric_names[i]);
    if (cJSON_IsNumber(x)) v[i] = x->valuedouble;
  }
  train_epoch_result *r = &t->last;
  r->training_acc = v[0];
  r->validation_acc = v[1];
  r->loss = v[2];
  r->train_acc_mean = v[3];
  r->validation_loss = v[4];
  r->samples_per_s = v[5];
  r->step_time_ms = v[6];
  r->epoch_time_s = v[7];
}

/* metrics.jsonl continues from the checkpoint: rows of epochs after it (an
 * interrupted run's) are dropped, and so is an earlier run's final_acc (this
 * run writes its own at its end); a fresh outputs folder gets the
 * checkpoint's history, so every epoch appears once. */
static int train_ckpt_rewind_metrics(trainer *t, int64_t epoch) {
  char path[4200], ignored[256];
  snprintf(path, sizeof path, "%s", t->metrics.path);
  metrics_close(&t->metrics);
  size_t len = 0, kept_bytes = 0;
  char *text = fs_read_all(path, &len, ignored, sizeof ignored);
  char *kept = calloc(len + 2, 1); /* a last row without its newline gains one */
  int kept_rows = 0;
  for (char *line = text ? strtok(text, "\n") : NULL; line && kept; line = strtok(NULL, "\n")) {
    cJSON *row = cJSON_Parse(line);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(row, "epoch");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(row, "name");
    int final = cJSON_IsString(name) && strcmp(name->valuestring, "final_acc") == 0;
    if (cJSON_IsNumber(e) && e->valuedouble <= (double)epoch && !final) {
      kept_bytes += (size_t)sprintf(kept + kept_bytes, "%s\n", line);
      kept_rows++;
    }
    cJSON_Delete(row);
  }
  free(text);
  int rc = kept ? fs_write_atomic(path, kept, kept_bytes, t->err, sizeof t->err) : -1;
  free(kept);
  if (rc != 0) return t->err[0] ? -1 : train_ckpt_fail(t, "metrics.jsonl: out of memory");
  if (metrics_open(&t->metrics, t->cfg->outputs, 1, t->err, sizeof t->err) != 0) return -1;
  const cJSON *row, *seed_rows = kept_rows ? NULL : t->ckpt->history;
  cJSON_ArrayForEach(row, seed_rows) {
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(row, "epoch");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(row, "step");
    for (size_t i = 0; i < TRAIN_CKPT_METRICS && cJSON_IsNumber(ep) && cJSON_IsNumber(st); i++) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, train_ckpt_metric_names[i]);
      if (cJSON_IsNumber(v)) {
        metrics_write(&t->metrics, train_ckpt_metric_names[i], v->valuedouble,
                      (int64_t)ep->valuedouble, (int64_t)st->valuedouble);
      }
    }
  }
  return metrics_sync(&t->metrics, t->err, sizeof t->err);
}

/* Rank 0: resolve, read and check the file and its history, before <outputs>
 * is touched: a rejected resume must leave the run it meant to continue (its
 * run.json and metrics.jsonl) as it was. */
static int train_ckpt_read_checked(trainer *t) {
  const train_config *c = t->cfg;
  struct train_ckpt_state *k = t->ckpt;
  ckpt_state *s = &k->pending;
  char *e = t->err;
  const size_t eb = sizeof t->err;
  if (ckpt_resolve(c->resume_from, c->outputs, k->path, sizeof k->path, e, eb) != 0 ||
      ckpt_read(s, k->path, e, eb) != 0 || train_ckpt_check(t, s, k->path) != 0) {
    return -1;
  }
  k->pending_history = s->metrics ? cJSON_Parse(s->metrics) : NULL;
  if (!cJSON_IsArray(k->pending_history)) {
    snprintf(e, eb, "%.900s: /tfdist/metrics_history: not a JSON array", k->path);
    return -1;
  }
  return 0;
}

/* Rank 0, once the records are open: keep the history, continue metrics.jsonl,
 * note the checkpoint in run.json. */
static int train_ckpt_load_root(trainer *t, const ckpt_state *s) {
  struct train_ckpt_state *k = t->ckpt;
  cJSON_Delete(k->history);
  k->history = k->pending_history;
  k->pending_history = NULL;
  train_ckpt_restore_last(t);
  if (train_ckpt_rewind_metrics(t, s->epoch) != 0) return -1;
  cJSON *from = cJSON_CreateObject();
  cJSON_AddStringToObject(from, "checkpoint", k->path);
  cJSON_AddNumberToObject(from, "epoch", (double)s->epoch);
  cJSON_AddNumberToObject(from, "global_step", (double)s->global_step);
  cJSON_AddStringToObject(from, "run_id", s->run_id);
  run_record_set(&t->run, "resumed_from", from);
  return 0;
}

/* Rank 0's verdict on the checkpoint reaches every rank, so all fail alike. */
static int train_ckpt_share_verdict(trainer *t, int ok) {
  struct { int64_t ok; char err[1024]; } msg;
  memset(&msg, 0, sizeof msg);
  msg.ok = ok;
  snprintf(msg.err, sizeof msg.err, "%s", t->err);
  if (t->world->size > 1 && coll_broadcast_bytes(t->comm, &msg, sizeof msg, 0) != COLL_OK) {
    return train_ckpt_fail(t, coll_comm_error(t->comm));
  }
  return msg.ok ? 0 : train_ckpt_fail(t, msg.err);
}

int train_ckpt_precheck(trainer *t) {
  if (train_ckpt_state_init(t) != 0) return -1;
  if (t->cfg->resume_from[0] == '\0') return 0;
  int ok = t->world->rank != 0 || train_ckpt_read_checked(t) == 0;
  return train_ckpt_share_verdict(t, ok);
}

/* Rank 0's verdict and state reach every rank, so all fail or all resume. */
static int train_ckpt_share(trainer *t, ckpt_state *s, int ok) {
  const int64_t P = t->layout.total_elems;
  struct { int64_t ok, epoch, step; char err[1024]; } msg;
  memset(&msg, 0, sizeof msg);
  msg.ok = ok;
  msg.epoch = s->epoch;
  msg.step = s->global_step;
  snprintf(msg.err, sizeof msg.err, "%s", t->err);
  if (t->world->size > 1 && coll_broadcast_bytes(t->comm, &msg, sizeof msg, 0) != COLL_OK) {
    return train_ckpt_fail(t, coll_comm_error(t->comm));
  }
  if (!msg.ok) return train_ckpt_fail(t, msg.err);
  if (t->world->rank != 0) {
    s->params = malloc((size_t)P * sizeof(float));
    s->opt_state = malloc((size_t)P * sizeof(float));
    if (!s->params || !s->opt_state) return train_ckpt_fail(t, "resume: out of host memory");
  }
  if (t->world->size > 1 && (coll_broadcast_f32(t->comm, s->params, P, 0) != COLL_OK ||
                             coll_broadcast_f32(t->comm, s->opt_state, P, 0) != COLL_OK)) {
    return train_ckpt_fail(t, coll_comm_error(t->comm));
  }
  s->epoch = msg.epoch;
  s->global_step = msg.step;
  return 0;
}

int train_ckpt_resume(trainer *t) {
  if (t->cfg->resume_from[0] == '\0') return 0;
  const int64_t P = t->layout.total_elems;
  ckpt_state s = t->ckpt->pending; /* rank 0's, from train_ckpt_precheck; owned from here */
  const char *path = t->ckpt->path;
  memset(&t->ckpt->pending, 0, sizeof t->ckpt->pending);
  int ok = t->world->rank != 0 || train_ckpt_load_root(t, &s) == 0;
  int rc = -1;
  if (train_ckpt_share(t, &s, ok) != 0) goto out;
  kern_backend *be = t->be;
  if (kern_mem_upload_f32(be, t->params, s.params, P) != 0 ||
      kern_mem_upload_f32(be, t->opt_state, s.opt_state, P) != 0) {
    train_ckpt_be_fail(t);
    goto out;
  }
  memcpy(t->params_host, s.params, (size_t)P * sizeof(float));
  t->start_epoch = s.epoch;
  t->global_step = s.global_step;
  rank_log_printf(&t->log, "resumed from %s at epoch %lld, step %lld", path[0] ? path : "rank 0's checkpoint",
                  (long long)s.epoch, (long long)s.global_step);
  if (t->world->rank == 0) {
    printf("tfdist: resuming from %s at epoch %lld (step %lld)\n", path, (long long)s.epoch,
           (long long)s.global_step);
    fflush(stdout);
  }
  rc = 0;
out:
  ckpt_state_free(&s);
  return rc;
}

int train_ckpt_resolve_auto(train_config *cfg, coll_comm *comm, int rank, int size, int *found,
                            char *err, size_t err_bytes) {
  *found = 0;
  if (strcmp(cfg->resume_from, "auto") != 0) return 0;
  int64_t verdict = rank == 0 ? ckpt_exists(cfg->outputs, err, err_bytes) : 0;
  if (size > 1 && coll_broadcast_bytes(comm, &verdict, sizeof verdict, 0) != COLL_OK) {
    snprintf(err, err_bytes, "%s", coll_comm_error(comm));
    return -1;
  }
  if (verdict < 0) {
    if (rank != 0) snprintf(err, err_bytes, "--resume-from auto: rank 0 could not read %s",
                            cfg->outputs);
    return -1;
  }
  *found = verdict == 1;
  cfg->resume_auto = 1;
  snprintf(cfg->resume_from, sizeof cfg->resume_from, "%s", *found ? "latest" : "");
  return 0;
}

void train_ckpt_free(trainer *t) {
  if (!t->ckpt) return;
  ckpt_state_free(&t->ckpt->pending);
  cJSON_Delete(t->ckpt->pending_history);
  cJSON_Delete(t->ckpt->history);
  free(t->ckpt);
  t->ckpt = NULL;
}
