/* What a run leaves behind, opened as it starts: the run id every rank logs,
 * rank 0's run.json and metrics.jsonl (after the stale temp files of a
 * killed run are swept), and --tensorboard's event file. */
#include "train/train_outputs.h"

#include <string.h>

#include "base/fsutil.h"
#include "base/options.h"
#include "tboard/tboard.h"
#include "train/buildinfo.h"
#include "train/train_ps.h"

/* The files a run writes into <outputs> and <outputs>/model. */
static int train_outputs_is_ours(const char *name) {
  return !strcmp(name, "run.json") || !strcmp(name, "metrics.jsonl") || !strcmp(name, "model.h5");
}

/* run.json's threads: how many, why, and how they split the step (rank 0). */
void train_outputs_record_threads(train_outputs *out, const train_ctx *ctx, const char *how) {
  if (ctx->world->rank != 0 || !kern_is_host_memory(ctx->be)) return;
  cJSON *th = cJSON_CreateObject();
  cJSON_AddNumberToObject(th, "count", kern_config_of(ctx->be)->threads);
  cJSON_AddStringToObject(th, "why", ctx->cfg->threads_why);
  cJSON_AddStringToObject(th, "how", how);
  run_record_set(&out->run, "threads", th);
}

/* What --compression does on this comm, for the rank log and run.json: the
 * verdict is coll_comm_compresses', the words only say why. */
static void train_outputs_compression_why(const train_ctx *ctx, char *why, size_t why_bytes) {
  const coll_backend b = coll_comm_backend(ctx->comm);
  const char *k = train_compression_names[ctx->cfg->compression];
  if (coll_comm_compresses(ctx->comm)) {
    snprintf(why, why_bytes, "compression: %s %s", k, b == COLL_BACKEND_HIER
             ? "(hier: the ring across nodes 16-bit, every sum fp32; within a node fp32)"
             : "(every ring transfer 16-bit, every sum fp32)");
    return;
  }
  snprintf(why, why_bytes, "compression: %s does not apply: %s", k,
           ctx->world->size < 2 ? "one rank sends nothing"
           : b == COLL_BACKEND_SHM ? "shm moves no bytes across nodes (fp32 throughout)"
           : b == COLL_BACKEND_HIER ? "hier on one node has no ring across nodes (shm's fp32 "
                                      "sums, shm's bits)"
                                    : "this back end sums in fp32");
}

/* run.json's compression (with --compression bf16|fp16): the setting,
 * whether this comm compresses, why. */
static cJSON *train_outputs_compression_json(const train_ctx *ctx, const char *why) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "setting", train_compression_names[ctx->cfg->compression]);
  cJSON_AddBoolToObject(o, "compresses", coll_comm_compresses(ctx->comm));
  cJSON_AddStringToObject(o, "why", why);
  return o;
}

int train_outputs_open(train_outputs *out, const train_ctx *ctx, cJSON *ranks, base_err *err) {
  const train_config *c = ctx->cfg;
  char id[64] = {0};
  if (ctx->world->rank == 0) run_id_make(id, sizeof id);
  if (ctx->world->size > 1 && coll_broadcast_bytes(ctx->comm, id, sizeof id, 0) != COLL_OK) {
    cJSON_Delete(ranks);
    return train_err_coll(err, ctx->comm);
  }
  rank_log_printf(&out->log, "run %s", id);
  if (kern_is_host_memory(ctx->be)) {
    rank_log_printf(&out->log, "threads: %d (%s); one team per rank, BLAS single-threaded%s",
                    kern_config_of(ctx->be)->threads, ctx->cfg->threads_why,
                    ctx->cfg->threads_oversubscribed
                        ? "; more threads on this node than usable cores: waiters sleep soon"
                        : "");
  }
  char why[256] = "";
  if (c->compression != TRAIN_COMPRESSION_NONE) {
    train_outputs_compression_why(ctx, why, sizeof why);
    rank_log_printf(&out->log, "%s", why);
  }
  if (ctx->world->rank != 0) {
    cJSON_Delete(ranks);
    return 0;
  }
  if (fs_mkdirs(c->outputs, err->msg, sizeof err->msg) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  cJSON *config = opt_to_json(&train_options, c);
  if (config &&
      c->resume_mode == TRAIN_RESUME_AUTO) { /* the job's own flag: its config reruns as the job */
    cJSON_ReplaceItemInObjectCaseSensitive(config, "resume_from", cJSON_CreateString("auto"));
  }
  if (run_record_init(&out->run, id, c->outputs, config, err->msg, sizeof err->msg) != 0) {
    cJSON_Delete(ranks);
    return -1;
  }
  /* Under the lock: temp files of a run killed mid-save are nobody's now. */
  char model_dir[4200];
  snprintf(model_dir, sizeof model_dir, "%s/model", c->outputs);
  fs_remove_stale_tmp(c->outputs, train_outputs_is_ours);
  fs_remove_stale_tmp(model_dir, train_outputs_is_ours);
  run_record_set(&out->run, "world_size", cJSON_CreateNumber(ctx->world->size));
  run_record_set(&out->run, "ranks", ranks);
  run_record_set(&out->run, "device", cJSON_CreateString(kern_name(ctx->be)));
  train_outputs_record_threads(out, ctx, TRAIN_THREADS_OPS);
  run_record_set(&out->run, "allreduce",
                 cJSON_CreateString(coll_backend_name(coll_comm_backend(ctx->comm))));
  if (c->compression != TRAIN_COMPRESSION_NONE) {
    run_record_set(&out->run, "compression", train_outputs_compression_json(ctx, why));
  }
  cJSON *cluster = train_cluster_json(ctx->world);
  if (cluster) run_record_set(&out->run, "cluster", cluster);
  run_record_set(&out->run, "versions", buildinfo_json());
  return metrics_open(&out->metrics, c->outputs, c->resume_from[0] != '\0', err->msg,
                      sizeof err->msg);
}

/* --tensorboard: rank 0's event file, a new one each run (a resumed run's
 * too, in the same folder); opened once the resume has set the step. */
int train_outputs_tboard_open(train_outputs *out, const train_ctx *ctx,
                              const train_step_state *step, base_err *err) {
  if (ctx->world->rank != 0 || !ctx->cfg->tensorboard[0]) return 0;
  char e[sizeof err->msg - 32];
  if (tboard_writer_open(&out->tb, ctx->cfg->tensorboard, e, sizeof e) != 0) {
    base_err_set(err, "--tensorboard: %s", e);
    return -1;
  }
  rank_log_printf(&out->log, "tensorboard: %s", tboard_writer_path(out->tb));
  /* TensorBoard then drops the resumed-from run's rows past the checkpoint */
  if (step->start_epoch > 0) tboard_writer_restart(out->tb, step->global_step + 1);
  return 0;
}

