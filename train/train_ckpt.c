/* The trainer's side of checkpointing: what goes into a ckpt_state, what must
 * match on resume, and how every rank receives rank 0's restored state. */
#include "train/train_ckpt.h"
#include "train/train_opt.h"

#include "data/shards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "modelio/checkpoint.h"
#include "base/fsutil.h"

struct train_ckpt {
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

static void train_ckpt_result_values(const train_epoch_result *r, double v[TRAIN_CKPT_METRICS]) {
  const double vals[TRAIN_CKPT_METRICS] = {r->training_acc, r->validation_acc, r->loss,
                                           r->train_acc_mean, r->validation_loss, r->samples_per_s,
                                           r->step_time_ms, r->epoch_time_s, r->data_wait_s};
  memcpy(v, vals, sizeof vals);
}

/* crc32 of the training images and labels: resuming on other data is an
 * error. In stream mode the set is never in memory, so the shard index's
 * layout and per-shard body CRCs stand for it. */
static const char *train_ckpt_fingerprint(train_ckpt *c, const train_data *d, int64_t px) {
  if (c->data_fp[0]) return c->data_fp;
  uLong crc = crc32_z(0L, Z_NULL, 0);
  if (d->shards) {
    for (int64_t i = 0; i < d->shards->count; i++) {
      const data_shard *sh = &d->shards->shards[i];
      const int64_t row[4] = {sh->first, sh->count, sh->images_crc, sh->labels_crc};
      crc = crc32_z(crc, (const Bytef *)row, sizeof row);
    }
  } else {
    crc = crc32_z(crc, d->train.images, (z_size_t)(d->train.count * px));
    crc = crc32_z(crc, d->train.labels, (z_size_t)d->train.count);
  }
  snprintf(c->data_fp, sizeof c->data_fp, "crc32:%08lx", (unsigned long)crc);
  return c->data_fp;
}

int train_ckpt_init(train_ckpt **out, base_err *err) {
  train_ckpt *k = calloc(1, sizeof *k);
  if (!k || !(k->history = cJSON_CreateArray())) {
    free(k);
    return base_err_set(err, "out of host memory");
  }
  *out = k;
  return 0;
}

/* What a rank trains and validates on, small enough to broadcast. */
typedef struct {
  int64_t train_samples, test_samples;
  char train_fp[32], test_fp[32];
} train_ckpt_data_id;

static void train_ckpt_data_id_make(train_ckpt *k, const train_data *d, int64_t px,
                                    train_ckpt_data_id *id) {
  memset(id, 0, sizeof *id);
  id->train_samples = d->shards ? d->shards->samples : d->train.count;
  id->test_samples = d->test.count;
  snprintf(id->train_fp, sizeof id->train_fp, "%s", train_ckpt_fingerprint(k, d, px));
  uLong crc = crc32_z(0L, Z_NULL, 0);
  crc = crc32_z(crc, d->test.images, (z_size_t)(d->test.count * px));
  crc = crc32_z(crc, d->test.labels, (z_size_t)d->test.count);
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

int train_ckpt_check_data(train_ckpt *k, const train_ctx *x, const train_data *d, int64_t px,
                          base_err *err) {
  const int n = x->world->size;
  if (n == 1) return 0;
  train_ckpt_data_id mine, root;
  train_ckpt_data_id_make(k, d, px, &mine);
  root = mine;
  double *bad = calloc((size_t)n, sizeof *bad);
  if (!bad) return base_err_set(err, "out of host memory");
  if (coll_broadcast_bytes(x->comm, &root, sizeof root, 0) != COLL_OK) {
    free(bad);
    return train_err_coll(err, x->comm);
  }
  const int train_ok =
      mine.train_samples == root.train_samples && !strcmp(mine.train_fp, root.train_fp);
  const int test_ok = mine.test_samples == root.test_samples && !strcmp(mine.test_fp, root.test_fp);
  bad[x->world->rank] = !(train_ok && test_ok);
  /* Every rank learns who differs, so all stop here, before rank 0 writes outputs. */
  if (coll_allreduce_sum_f64(x->comm, bad, n) != COLL_OK) {
    free(bad);
    return train_err_coll(err, x->comm);
  }
  char which[128];
  train_ckpt_rank_list(bad, n, which, sizeof which);
  free(bad);
  if (!which[0]) return 0;
  if (train_ok && test_ok) {
    return base_err_bad_input(err, "--data-folder %.600s: rank(s) %s read training or test data "
                        "that differs from rank 0's; every rank must read the same files",
                        x->cfg->data_folder, which);
  }
  return base_err_bad_input(err, "--data-folder %.600s: this rank's %s data (%lld samples, %s) "
                      "differs from rank 0's (%lld samples, %s); every rank must read the same "
                      "files", x->cfg->data_folder, train_ok ? "test" : "training",
                      (long long)(train_ok ? mine.test_samples : mine.train_samples),
                      train_ok ? mine.test_fp : mine.train_fp,
                      (long long)(train_ok ? root.test_samples : root.train_samples),
                      train_ok ? root.test_fp : root.train_fp);
}

/* ---- saving ---- */

static void train_ckpt_record(train_ckpt *k, const train_epoch_result *last, int64_t epochs_done,
                              int64_t global_step) {
  double v[TRAIN_CKPT_METRICS];
  train_ckpt_result_values(last, v);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "epoch", (double)epochs_done);
  cJSON_AddNumberToObject(o, "step", (double)global_step);
  for (size_t i = 0; i < TRAIN_CKPT_METRICS; i++) {
    cJSON_AddNumberToObject(o, train_ckpt_metric_names[i], v[i]);
  }
  cJSON_AddItemToArray(k->history, o);
}

static void train_ckpt_fill(train_ckpt *k, const train_ctx *x, const train_data *d,
                            const train_step_state *st, const char *run_id, ckpt_state *s,
                            int64_t epochs_done) {
  const train_config *c = x->cfg;
  memset(s, 0, sizeof *s);
  s->epoch = epochs_done;
  s->global_step = st->global_step;
  s->steps_per_epoch = d->steps_per_epoch;
  s->batch_size = d->batch;
  s->global_batch = d->global_batch;
  s->world_size = x->world->size;
  s->seed = c->seed;
  s->train_count = d->train.count;
  snprintf(s->data_fingerprint, sizeof s->data_fingerprint, "%s",
           train_ckpt_fingerprint(k, d, st->layout.dims[0]));
  snprintf(s->data_mode, sizeof s->data_mode, "%.31s", train_data_mode_names[c->data_mode]);
  snprintf(s->opt_kind, sizeof s->opt_kind, "%.15s", train_optimizer_names[c->optimizer]);
  s->learning_rate = c->learning_rate;
  s->lr_effective = st->opt.lr;
  s->momentum = c->momentum;
  s->beta1 = c->beta1;
  s->beta2 = c->beta2;
  s->epsilon = c->epsilon;
  s->rho = c->rho;
  s->weight_decay = c->weight_decay;
  s->opt_step = st->global_step - st->scaler.overflows; /* updates applied */
  s->opt_state_elems = train_opt_state_elems(st->opt.kind, st->layout.total_elems);
  s->scale_lr = c->scale_lr;
  s->threads = kern_is_host_memory(x->be) ? kern_config_of(x->be)->threads : 0;
  snprintf(s->compression, sizeof s->compression, "%s", train_compression_names[c->compression]);
  s->fp16_scale = st->scaler.scale;
  s->fp16_clean_steps = st->scaler.clean_steps;
  s->fp16_overflows = st->scaler.overflows;
  s->fp16_consecutive = st->scaler.consecutive;
  snprintf(s->run_id, sizeof s->run_id, "%s", run_id);
  s->layout = st->layout;
}

/* A checkpoint --keep-checkpoints could not delete: said in the log, the run goes on. */
static void train_ckpt_warn(void *log, const char *msg) {
  rank_log_printf(log, "warning: %s", msg);
}

static int train_ckpt_save(train_ckpt *k, const train_ctx *x, const train_data *d,
                           train_step_state *st, train_outputs *o, int64_t epochs_done,
                           base_err *err) {
  const int64_t P = st->layout.total_elems;
  kern_backend *be = x->be;
  ckpt_state s;
  char dir[4400];
  train_ckpt_fill(k, x, d, st, o->run.id, &s, epochs_done);
  s.opt_state = malloc((size_t)s.opt_state_elems * sizeof(float));
  cJSON *hp = opt_to_json(&train_options, x->cfg);
  s.hyperparameters = hp ? cJSON_PrintUnformatted(hp) : NULL;
  s.metrics = cJSON_PrintUnformatted(k->history);
  cJSON_Delete(hp);
  int rc = -1;
  if (!s.opt_state || !s.hyperparameters || !s.metrics) {
    base_err_set(err, "checkpoint: out of host memory");
    goto out;
  }
  if (kern_mem_download_f32(be, st->params_host, st->params, P) != 0 ||
      kern_mem_download_f32(be, s.opt_state, st->opt_state, s.opt_state_elems) != 0) {
    train_err_backend(err, be);
    goto out;
  }
  s.params = st->params_host;
  ckpt_dir_path(dir, sizeof dir, x->cfg->outputs);
  if (ckpt_save(dir, &s, x->cfg->keep_checkpoints, train_ckpt_warn, &o->log, err->msg,
                sizeof err->msg) != 0) {
    goto out;
  }
  rank_log_printf(&o->log, "checkpoint: %s/ckpt-epoch-%lld.h5 (step %lld)", dir,
                  (long long)epochs_done, (long long)st->global_step);
  rc = 0;
out:
  s.params = NULL; /* st->params_host, not ours */
  ckpt_state_free(&s);
  return rc;
}

int train_ckpt_due(const train_config *cfg, int64_t epochs_done) {
  const int64_t every = cfg->checkpoint_every;
  return every > 0 && epochs_done % every == 0;
}

int train_ckpt_epoch_end(train_ckpt *k, const train_ctx *x, const train_data *d,
                         train_step_state *s, train_outputs *o, int64_t epochs_done,
                         base_err *err) {
  if (x->world->rank != 0) return 0;
  train_ckpt_record(k, &o->last, epochs_done, s->global_step);
  return train_ckpt_due(x->cfg, epochs_done) ? train_ckpt_save(k, x, d, s, o, epochs_done, err) : 0;
}

/* ---- resuming ---- */

/* The schedule's flags, from the checkpoint's resolved config (older files
 * lack them: nothing to compare). A rate that changed on resume would not be
 * the run it continues. */
static int train_ckpt_check_schedule(const train_config *c, const ckpt_state *s, const char *path,
                                     base_err *err) {
  const char *sched = train_lr_schedule_names[c->lr_schedule];
  cJSON *hp = s->hyperparameters ? cJSON_Parse(s->hyperparameters) : NULL;
  const cJSON *kind = cJSON_GetObjectItemCaseSensitive(hp, "lr_schedule");
  int rc = 0;
  if (cJSON_IsString(kind) && strcmp(kind->valuestring, sched) != 0) {
    rc = base_err_set(err, "--resume-from %.600s: --lr-schedule is '%.40s' but the checkpoint "
                      "has '%.40s'", path, sched, kind->valuestring);
  }
  const struct { const char *flag, *key; double here; } dbl[] = {
    {"--warmup-epochs", "warmup_epochs", c->warmup_epochs},
    {"--lr-decay-rate", "lr_decay_rate", c->lr_decay_rate},
    {"--lr-decay-epochs", "lr_decay_epochs", c->lr_decay_epochs},
    {"--lr-min", "lr_min", c->lr_min},
  };
  for (size_t i = 0; rc == 0 && i < sizeof dbl / sizeof dbl[0]; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(hp, dbl[i].key);
    if (!cJSON_IsNumber(v) || v->valuedouble == dbl[i].here) continue;
    rc = base_err_set(err, "--resume-from %.600s: %s is %.17g but the checkpoint has %.17g",
                      path, dbl[i].flag, dbl[i].here, v->valuedouble);
  }
  cJSON_Delete(hp);
  return rc;
}

/* --backward-passes-per-step, from the checkpoint's resolved config (older
 * files lack it: they ran 1). Another K is another batch per update, and the
 * step counts it stored would mean other samples. */
static int train_ckpt_check_micro(const train_config *c, const ckpt_state *s, const char *path,
                                  base_err *err) {
  cJSON *hp = s->hyperparameters ? cJSON_Parse(s->hyperparameters) : NULL;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(hp, "backward_passes_per_step");
  const double there = cJSON_IsNumber(v) ? v->valuedouble : 1;
  cJSON_Delete(hp);
  if ((double)c->backward_passes_per_step == there) return 0;
  return base_err_set(err, "--resume-from %.600s: --backward-passes-per-step is %lld but the "
                      "checkpoint was written with %.0f; an exact resume needs the same "
                      "micro-batches per step", path, (long long)c->backward_passes_per_step,
                      there);
}

/* Adam's t goes on from the checkpoint's steps less its skipped fp16 steps:
 * the file's optimizer/step must say the same (one written before a skipped
 * step left t alone counted them). */
static int train_ckpt_check_opt_step(const ckpt_state *s, const char *path, base_err *err) {
  const int64_t skipped = s->fp16_scale > 0 ? s->fp16_overflows : 0;
  if (s->opt_step == s->global_step - skipped) return 0;
  return base_err_set(err, "--resume-from %.600s: optimizer/step is %lld but the checkpoint's %lld "
                      "steps less %lld skipped fp16 steps make %lld; an exact resume needs the "
                      "optimizer's update count", path, (long long)s->opt_step,
                      (long long)s->global_step, (long long)skipped,
                      (long long)(s->global_step - skipped));
}

/* Every flag that changes the math or the data order must agree. */
static int train_ckpt_check(train_ckpt *k, const train_ctx *x, const train_data *d,
                            const model_layout *l, const ckpt_state *s, const char *path,
                            base_err *err) {
  const train_config *c = x->cfg;
  const struct { const char *flag; long long here, there; } ints[] = {
    {"--first-layer-neurons", (long long)l->dims[1], (long long)s->layout.dims[1]},
    {"--second-layer-neurons", (long long)l->dims[2], (long long)s->layout.dims[2]},
    {"--batch-size", (long long)d->batch, (long long)s->batch_size},
    {"--seed", (long long)c->seed, (long long)s->seed},
    {"--scale-lr", (long long)c->scale_lr, (long long)s->scale_lr},
    {"--max-steps (steps per epoch)", (long long)d->steps_per_epoch, (long long)s->steps_per_epoch},
    {"--data-folder (training samples)", (long long)d->train.count, (long long)s->train_count},
  };
  if (x->world->size != s->world_size) {
    return base_err_set(err, "--resume-from %.600s: world size is %d ranks but the checkpoint was "
                        "written by %lld; an exact resume needs the same ranks and --batch-size",
                        path, x->world->size, (long long)s->world_size);
  }
  const int threads = kern_is_host_memory(x->be) ? kern_config_of(x->be)->threads : 0;
  if (s->threads > 0 && threads > 0 && s->threads != threads) {
    return base_err_set(err, "--resume-from %.600s: --threads %s %d but the checkpoint was written "
                        "with %lld; an exact resume needs the same threads per rank (each splits "
                        "the sums its own way): pass --threads %lld", path,
                        c->threads > 0 ? "is" : "auto runs", threads, (long long)s->threads,
                        (long long)s->threads);
  }
  if (train_ckpt_check_micro(c, s, path, err) != 0 ||
      train_ckpt_check_opt_step(s, path, err) != 0) {
    return -1;
  }
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    if (ints[i].here == ints[i].there) continue;
    return base_err_set(err, "--resume-from %.600s: %s is %lld but the checkpoint has %lld", path,
                        ints[i].flag, ints[i].here, ints[i].there);
  }
  const struct { const char *flag; const char *here, *there; } strs[] = {
    {"--optimizer", train_optimizer_names[c->optimizer], s->opt_kind},
    {"--data-mode", train_data_mode_names[c->data_mode], s->data_mode},
    /* the rounding of every reduced gradient; older files: none */
    {"--compression", train_compression_names[c->compression],
     s->compression[0] ? s->compression : "none"},
    {"--data-folder (training data crc32)", train_ckpt_fingerprint(k, d, l->dims[0]),
     s->data_fingerprint},
  };
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (strcmp(strs[i].here, strs[i].there) == 0) continue;
    return base_err_set(err, "--resume-from %.600s: %s is '%.40s' but the checkpoint has '%.40s'",
                        path, strs[i].flag, strs[i].here, strs[i].there);
  }
  /* the hyper-parameters the rule reads (the optimizer is the same by now) */
  const kern_opt_kind kind = (kern_opt_kind)c->optimizer;
  const int mom = kind == KERN_OPT_MOMENTUM || kind == KERN_OPT_NESTEROV;
  const int adam = kind == KERN_OPT_ADAM || kind == KERN_OPT_ADAMW;
  const int rms = kind == KERN_OPT_RMSPROP;
  const struct { const char *flag; int used; double here, there; } dbl[] = {
    {"--learning-rate", 1, c->learning_rate, s->learning_rate},
    {"--momentum", mom, c->momentum, s->momentum},
    {"--beta1", adam, c->beta1, s->beta1},
    {"--beta2", adam, c->beta2, s->beta2},
    {"--epsilon", adam || rms, c->epsilon, s->epsilon},
    {"--rho", rms, c->rho, s->rho},
    {"--weight-decay", 1, c->weight_decay, s->weight_decay},
  };
  for (size_t i = 0; i < sizeof dbl / sizeof dbl[0]; i++) {
    if (!dbl[i].used || dbl[i].here == dbl[i].there) continue;
    return base_err_set(err, "--resume-from %.600s: %s is %.17g but the checkpoint has %.17g",
                        path, dbl[i].flag, dbl[i].here, dbl[i].there);
  }
  const int64_t S = train_opt_state_elems(kind, l->total_elems);
  if (train_ckpt_check_schedule(c, s, path, err) != 0) return -1;
  if (s->opt_state_elems != S) {
    return base_err_set(err, "--resume-from %.600s: --optimizer %.40s keeps %lld state floats but "
                        "the checkpoint has %lld", path, train_optimizer_names[c->optimizer],
                        (long long)S, (long long)s->opt_state_elems);
  }
  if (c->epochs < s->epoch) {
    return base_err_set(err, "--resume-from %.600s: --epochs %lld is below the checkpoint's epoch "
                        "%lld", path, (long long)c->epochs, (long long)s->epoch);
  }
  return 0;
}

/* The last completed epoch's metrics, so a resume with nothing left to train
 * still reports final_acc. */
static void train_ckpt_restore_last(const train_ckpt *k, train_epoch_result *r) {
  cJSON *last = cJSON_GetArrayItem(k->history, cJSON_GetArraySize(k->history) - 1);
  double v[TRAIN_CKPT_METRICS] = {0};
  for (size_t i = 0; last && i < TRAIN_CKPT_METRICS; i++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(last, train_ckpt_metric_names[i]);
    if (cJSON_IsNumber(x)) v[i] = x->valuedouble;
  }
  r->training_acc = v[0];
  r->validation_acc = v[1];
  r->loss = v[2];
  r->train_acc_mean = v[3];
  r->validation_loss = v[4];
  r->samples_per_s = v[5];
  r->step_time_ms = v[6];
  r->epoch_time_s = v[7];
}

/* The rows of path up to epoch, but no final_acc; NULL when out of memory. */
static char *train_ckpt_kept_rows(const char *path, int64_t epoch, size_t *kept_bytes,
                                  int *kept_rows) {
  char ignored[256];
  size_t len = 0;
  char *text = fs_read_all(path, &len, ignored, sizeof ignored);
  char *kept = calloc(len + 2, 1); /* a last row without its newline gains one */
  *kept_bytes = 0;
  *kept_rows = 0;
  for (char *line = text ? strtok(text, "\n") : NULL; line && kept; line = strtok(NULL, "\n")) {
    cJSON *row = cJSON_Parse(line);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(row, "epoch");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(row, "name");
    int final = cJSON_IsString(name) && strcmp(name->valuestring, "final_acc") == 0;
    if (cJSON_IsNumber(e) && e->valuedouble <= (double)epoch && !final) {
      *kept_bytes += (size_t)sprintf(kept + *kept_bytes, "%s\n", line);
      (*kept_rows)++;
    }
    cJSON_Delete(row);
  }
  free(text);
  return kept;
}

/* metrics.jsonl continues from the checkpoint: rows of epochs after it (an
 * interrupted run's) are dropped, and so is an earlier run's final_acc (this
 * run writes its own at its end); a fresh outputs folder gets the
 * checkpoint's history, so every epoch appears once. */
static int train_ckpt_rewind_metrics(const train_ckpt *k, metrics_log *m, const char *outputs,
                                     int64_t epoch, base_err *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s", m->path);
  metrics_close(m);
  size_t kept_bytes = 0;
  int kept_rows = 0;
  char *kept = train_ckpt_kept_rows(path, epoch, &kept_bytes, &kept_rows);
  int rc = kept ? fs_write_atomic(path, kept, kept_bytes, err->msg, sizeof err->msg) : -1;
  free(kept);
  if (rc != 0) return base_err_set(err, "metrics.jsonl: out of memory");
  if (metrics_open(m, outputs, 1, err->msg, sizeof err->msg) != 0) return -1;
  const cJSON *row, *seed_rows = kept_rows ? NULL : k->history;
  cJSON_ArrayForEach(row, seed_rows) {
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(row, "epoch");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(row, "step");
    for (size_t i = 0; i < TRAIN_CKPT_METRICS && cJSON_IsNumber(ep) && cJSON_IsNumber(st); i++) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, train_ckpt_metric_names[i]);
      if (cJSON_IsNumber(v)) {
        metrics_write(m, train_ckpt_metric_names[i], v->valuedouble, (int64_t)ep->valuedouble,
                      (int64_t)st->valuedouble);
      }
    }
  }
  return metrics_sync(m, err->msg, sizeof err->msg);
}

/* Rank 0: resolve, read and check the file and its history, before <outputs>
 * is touched: a rejected resume must leave the run it meant to continue (its
 * run.json and metrics.jsonl) as it was. */
static int train_ckpt_read_checked(train_ckpt *k, const train_ctx *x, const train_data *d,
                                   const model_layout *l, base_err *err) {
  const train_config *c = x->cfg;
  ckpt_state *s = &k->pending;
  if (ckpt_resolve(c->resume_from, c->outputs, k->path, sizeof k->path, err->msg,
                   sizeof err->msg) != 0 ||
      ckpt_read(s, k->path, err->msg, sizeof err->msg) != 0 ||
      train_ckpt_check(k, x, d, l, s, k->path, err) != 0) {
    return -1;
  }
  k->pending_history = s->metrics ? cJSON_Parse(s->metrics) : NULL;
  if (!cJSON_IsArray(k->pending_history)) {
    return base_err_set(err, "%.900s: /tfdist/metrics_history: not a JSON array", k->path);
  }
  return 0;
}

/* Rank 0, once the records are open: keep the history, continue metrics.jsonl,
 * note the checkpoint in run.json. */
static int train_ckpt_load_root(train_ckpt *k, const train_config *c, train_outputs *o,
                                const ckpt_state *s, base_err *err) {
  cJSON_Delete(k->history);
  k->history = k->pending_history;
  k->pending_history = NULL;
  train_ckpt_restore_last(k, &o->last);
  if (train_ckpt_rewind_metrics(k, &o->metrics, c->outputs, s->epoch, err) != 0) return -1;
  cJSON *from = cJSON_CreateObject();
  cJSON_AddStringToObject(from, "checkpoint", k->path);
  cJSON_AddNumberToObject(from, "epoch", (double)s->epoch);
  cJSON_AddNumberToObject(from, "global_step", (double)s->global_step);
  cJSON_AddStringToObject(from, "run_id", s->run_id);
  run_record_set(&o->run, "resumed_from", from);
  return 0;
}

/* A broadcast of rank 0's verdict failed: that failure, not the verdict, is
 * what every rank reports. */
static int train_ckpt_coll_failed(coll_comm *comm, base_err *err) {
  base_err_clear(err);
  return train_err_coll(err, comm);
}

/* Rank 0's verdict on the checkpoint reaches every rank, so all fail alike;
 * a rejected --resume-from (missing, corrupt, or not this run's flags) is bad
 * input on every rank. */
static int train_ckpt_share_verdict(const train_ctx *x, int ok, base_err *err) {
  struct { int64_t ok; char err[1024]; } msg;
  memset(&msg, 0, sizeof msg);
  msg.ok = ok;
  snprintf(msg.err, sizeof msg.err, "%s", err->msg);
  if (x->world->size > 1 && coll_broadcast_bytes(x->comm, &msg, sizeof msg, 0) != COLL_OK) {
    return train_ckpt_coll_failed(x->comm, err);
  }
  if (msg.ok) return 0;
  base_err_set(err, "%s", msg.err);
  err->bad_input = 1;
  return -1;
}

int train_ckpt_precheck(train_ckpt *k, const train_ctx *x, const train_data *d,
                        const model_layout *l, base_err *err) {
  if (x->cfg->resume_from[0] == '\0') return 0;
  int ok = x->world->rank != 0 || train_ckpt_read_checked(k, x, d, l, err) == 0;
  return train_ckpt_share_verdict(x, ok, err);
}

/* Rank 0's verdict and state reach every rank, so all fail or all resume. */
static int train_ckpt_share(const train_ctx *x, int64_t P, int64_t S, ckpt_state *s, int ok,
                            base_err *err) {
  struct { int64_t ok, epoch, step, fp16[3]; double scale; char err[1024]; } msg;
  memset(&msg, 0, sizeof msg);
  msg.ok = ok;
  msg.epoch = s->epoch;
  msg.step = s->global_step;
  msg.fp16[0] = s->fp16_clean_steps;
  msg.fp16[1] = s->fp16_overflows;
  msg.fp16[2] = s->fp16_consecutive;
  msg.scale = s->fp16_scale;
  snprintf(msg.err, sizeof msg.err, "%s", err->msg);
  if (x->world->size > 1 && coll_broadcast_bytes(x->comm, &msg, sizeof msg, 0) != COLL_OK) {
    return train_ckpt_coll_failed(x->comm, err);
  }
  if (!msg.ok) return base_err_set(err, "%s", msg.err);
  if (x->world->rank != 0) {
    s->params = malloc((size_t)P * sizeof(float));
    s->opt_state = malloc((size_t)S * sizeof(float));
    if (!s->params || !s->opt_state) return base_err_set(err, "resume: out of host memory");
  }
  if (x->world->size > 1 && (coll_broadcast_f32(x->comm, s->params, P, 0) != COLL_OK ||
                             coll_broadcast_f32(x->comm, s->opt_state, S, 0) != COLL_OK)) {
    return train_err_coll(err, x->comm);
  }
  s->epoch = msg.epoch;
  s->global_step = msg.step;
  s->fp16_clean_steps = msg.fp16[0];
  s->fp16_overflows = msg.fp16[1];
  s->fp16_consecutive = msg.fp16[2];
  s->fp16_scale = msg.scale;
  return 0;
}

/* Every rank: rank 0's restored state into this rank's step. */
static int train_ckpt_apply(const train_ctx *x, train_step_state *st, const ckpt_state *s,
                            const char *path, rank_log *log, base_err *err) {
  const int64_t P = st->layout.total_elems;
  kern_backend *be = x->be;
  if (kern_mem_upload_f32(be, st->params, s->params, P) != 0 ||
      kern_mem_upload_f32(be, st->opt_state, s->opt_state,
                          train_opt_state_elems(st->opt.kind, P)) != 0) {
    return train_err_backend(err, be);
  }
  memcpy(st->params_host, s->params, (size_t)P * sizeof(float));
  st->start_epoch = s->epoch;
  st->global_step = s->global_step;
  if (s->fp16_scale > 0) { /* older files: the scaler starts afresh */
    st->scaler.scale = (float)s->fp16_scale;
    st->scaler.clean_steps = s->fp16_clean_steps;
    st->scaler.overflows = s->fp16_overflows;
    st->scaler.consecutive = s->fp16_consecutive;
  }
  rank_log_printf(log, "resumed from %s at epoch %lld, step %lld",
                  path[0] ? path : "rank 0's checkpoint", (long long)s->epoch,
                  (long long)s->global_step);
  if (x->world->rank == 0) {
    printf("tfdist: resuming from %s at epoch %lld (step %lld)\n", path, (long long)s->epoch,
           (long long)s->global_step);
    fflush(stdout);
  }
  return 0;
}

int train_ckpt_resume(train_ckpt *k, const train_ctx *x, train_step_state *st, train_outputs *o,
                      base_err *err) {
  if (x->cfg->resume_from[0] == '\0') return 0;
  ckpt_state s = k->pending; /* rank 0's, from train_ckpt_precheck; owned from here */
  memset(&k->pending, 0, sizeof k->pending);
  int ok = x->world->rank != 0 || train_ckpt_load_root(k, x->cfg, o, &s, err) == 0;
  int rc = train_ckpt_share(x, st->layout.total_elems,
                            train_opt_state_elems(st->opt.kind, st->layout.total_elems), &s, ok, err);
  if (rc == 0) rc = train_ckpt_apply(x, st, &s, k->path, &o->log, err);
  ckpt_state_free(&s);
  return rc;
}

int train_ckpt_resolve_auto(train_config *cfg, coll_comm *comm, int rank, int size, int *found,
                            base_err *err) {
  *found = 0;
  if (cfg->resume_mode != TRAIN_RESUME_AUTO) return 0;
  int64_t verdict = rank == 0 ? ckpt_exists(cfg->outputs, err->msg, sizeof err->msg) : 0;
  if (size > 1 && coll_broadcast_bytes(comm, &verdict, sizeof verdict, 0) != COLL_OK) {
    return train_ckpt_coll_failed(comm, err);
  }
  if (verdict < 0) {
    if (rank != 0) base_err_set(err, "--resume-from auto: rank 0 could not read %s", cfg->outputs);
    return -1;
  }
  *found = verdict == 1;
  snprintf(cfg->resume_from, sizeof cfg->resume_from, "%s", *found ? "latest" : "");
  return 0;
}

void train_ckpt_free(train_ckpt *k) {
  if (!k) return;
  ckpt_state_free(&k->pending);
  cJSON_Delete(k->pending_history);
  cJSON_Delete(k->history);
  free(k);
}
