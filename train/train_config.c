/* The `tfdist train` option table. Defaults follow ../shared/SPEC.md. */
#include "train/train_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#include "base/env.h"
#include "tfdist_config.h"

#define F(field) offsetof(train_config, field)
#define BIG 9.0e15

/* In each enum's order (train_config.h). */
const char *const train_device_names[] = {"auto", "cpu", "cuda", NULL};
const char *const train_math_names[] = {"fp32", "tf32", NULL};
const char *const train_allreduce_names[] = {"auto", "mpi", "ring", "nccl", "tcp", "shm",
                                             "hier", NULL};
const char *const train_optimizer_names[] = {"sgd", "momentum", "nesterov", "rmsprop", "adam",
                                              "adamw", NULL};
const char *const train_threads_words[] = {"auto", NULL};
const char *const train_keep_words[] = {"all", NULL};
const char *const train_lr_schedule_names[] = {"constant", "step", "exponential", "cosine", NULL};
const char *const train_data_mode_names[] = {"global", "stream", NULL};
const char *const train_progress_names[] = {"auto", "on", "off", NULL};
const char *const train_compression_names[] = {"none", "bf16", "fp16", NULL};

/* The parser writes a choice as an int. */
_Static_assert(sizeof(train_device) == sizeof(int) && sizeof(train_math) == sizeof(int) &&
               sizeof(train_allreduce) == sizeof(int) && sizeof(train_optimizer) == sizeof(int) &&
               sizeof(train_data_mode) == sizeof(int) && sizeof(train_progress_mode) == sizeof(int) &&
               sizeof(train_compression) == sizeof(int),
               "choice enums are ints");

static const opt_spec train_specs[] = {
  {"data-folder", OPT_STRING, F(data_folder), TFDIST_DEFAULT_DATA, 0, 0, NULL,
   "folder searched recursively for the four idx files (.gz or raw)"},
  {"batch-size", OPT_INT, F(batch_size), "50", 1, 1 << 20, NULL, "mini-batch size per rank"},
  {"backward-passes-per-step", OPT_INT, F(backward_passes_per_step), "1", 1, 1024, NULL,
   "K: each rank runs K micro-batches of --batch-size, adding up their gradients, then one "
   "allreduce and one update: the math of a batch K times larger; a step (--max-steps, the "
   "schedule) is one update; an epoch's last partial group of micro-batches is dropped"},
  {"first-layer-neurons", OPT_INT, F(first_layer_neurons), "300", 1, 1 << 16, NULL,
   "units of the first hidden layer"},
  {"second-layer-neurons", OPT_INT, F(second_layer_neurons), "100", 1, 1 << 16, NULL,
   "units of the second hidden layer"},
  {"learning-rate", OPT_FLOAT, F(learning_rate), "0.01", 1e-12, 1e3, NULL,
   "base learning rate (the schedule's peak)"},
  {"epochs", OPT_INT, F(epochs), "20", 1, 1e6, NULL, "passes over the training set"},
  {"seed", OPT_INT, F(seed), "1", 0, BIG, NULL, "seed for weights and data order"},
  {"outputs", OPT_STRING, F(outputs), "./outputs", 0, 0, NULL,
   "folder for the model, checkpoints, metrics.jsonl and run.json"},
  {"logs", OPT_STRING, F(logs), "./logs", 0, 0, NULL, "folder for rank-<r>.log"},
  {"config", OPT_STRING, F(config), NULL, 0, 0, NULL,
   "JSON file of these options (run.json's \"config\" object is one)"},
  {"device", OPT_CHOICE, F(device), "auto", 0, 0, train_device_names,
   "compute device; auto uses a GPU when present"},
  {"math", OPT_CHOICE, F(math), "fp32", 0, 0, train_math_names, "GPU GEMM precision"},
  {"allreduce", OPT_CHOICE, F(allreduce), "auto", 0, 0, train_allreduce_names,
   "gradient averaging back end (auto: nccl on GPUs; on CPUs shm when every rank is on one "
   "node, else hier (shm within each node, a ring across nodes); tcp under TF_CONFIG, where "
   "hier may be asked for)"},
  {"compression", OPT_CHOICE, F(compression), "none", 0, 0, train_compression_names,
   "gradient bytes between ranks: bf16 or fp16 halve them, and change the math: each rank's "
   "term and each partial sum is rounded to 16 bits as it is sent, sums stay fp32; fp16 is "
   "scaled by a dynamic power of two and skips a step that overflows (README, \"Gradient "
   "compression\"); ring, tcp and hier's ring across nodes (shm, hier on one node: no "
   "effect; a TF_CONFIG cluster with ps tasks refuses it)"},
  {"scale-lr", OPT_BOOL, F(scale_lr), "off", 0, 0, NULL,
   "multiply the learning rate by the number of ranks"},
  {"overlap", OPT_BOOL, F(overlap), "auto", 0, 0, NULL,
   "reduce each layer's gradient while backward continues (auto: on where the node has a core "
   "to spare)"},
  {"shared-gradients", OPT_BOOL, F(shared_gradients), "on", 0, 0, NULL,
   "shm, hier on CPUs: backward writes the gradients into the allreduce's shared segment, "
   "which then copies nothing in or out; off: private gradients, which it copies (the same "
   "bits)"},
  {"secret-file", OPT_STRING, F(secret_file), NULL, 0, 0, NULL,
   "TF_CONFIG: file holding the job's secret (mode 600, 16 bytes or more), in place of "
   "TFDIST_SECRET; every task of the job must hold the same"},
  {"insecure-cluster", OPT_BOOL, F(insecure_cluster), "off", 0, 0, NULL,
   "TF_CONFIG: let a cluster beyond loopback start without a secret (anyone who reaches its "
   "ports can join)"},
  {"timeout", OPT_FLOAT, F(timeout), "60", 0.1, 1e6, NULL,
   "seconds before a stalled collective ends the job"},
  {"optimizer", OPT_CHOICE, F(optimizer), "sgd", 0, 0,
   train_optimizer_names, "update rule (kernels/cpu_opt.c has each formula)"},
  {"momentum", OPT_FLOAT, F(momentum), "0.9", 0, 1, NULL, "momentum coefficient (momentum, nesterov)"},
  {"beta1", OPT_FLOAT, F(beta1), "0.9", 0, 1, NULL, "adam, adamw: first-moment decay, below 1"},
  {"beta2", OPT_FLOAT, F(beta2), "0.999", 0, 1, NULL, "adam, adamw: second-moment decay, below 1"},
  {"epsilon", OPT_FLOAT, F(epsilon), "1e-8", 1e-30, 1, NULL,
   "rmsprop, adam, adamw: added to the root of the second moment"},
  {"rho", OPT_FLOAT, F(rho), "0.9", 0, 1, NULL, "rmsprop: squared-gradient decay, below 1"},
  {"weight-decay", OPT_FLOAT, F(weight_decay), "0", 0, 1, NULL,
   "adamw: decoupled (p -= lr*wd*p); the others: L2, wd*p added to the gradient"},
  {"lr-schedule", OPT_CHOICE, F(lr_schedule), "constant", 0, 0, train_lr_schedule_names,
   "learning rate against the global step (train/lr_schedule.c has each formula)"},
  {"lr-decay-rate", OPT_FLOAT, F(lr_decay_rate), "0", 0, 1, NULL,
   "step, exponential: factor per --lr-decay-epochs (0: unset, 0.1)"},
  {"lr-decay-epochs", OPT_FLOAT, F(lr_decay_epochs), "0", 0, 1e6, NULL,
   "step, exponential: epochs per --lr-decay-rate factor (0: unset, 10); cosine: epochs from "
   "the end of the warm-up to --lr-min (0: the rest of the run)"},
  {"lr-min", OPT_FLOAT, F(lr_min), "0", 0, 1e3, NULL, "cosine: the rate at the last update"},
  {"warmup-epochs", OPT_FLOAT, F(warmup_epochs), "0", 0, 1e6, NULL,
   "linear ramp of the rate from 0 over these first epochs (at most --epochs)"},
  {"threads", OPT_INT, F(threads), "auto", 1, 1024, train_threads_words,
   "CPU threads splitting each rank's step (auto: the rank's share of its usable cores, "
   "the affinity mask divided by the ranks on this node, at least 1)"},
  {"resume-from", OPT_STRING, F(resume_from), NULL, 0, 0, NULL,
   "checkpoint file, checkpoints folder, 'latest', or 'auto' (latest if there is one, else a "
   "fresh start: for jobs that are restarted or requeued)"},
  {"checkpoint-every", OPT_INT, F(checkpoint_every), "2", 0, 1e6, NULL,
   "epochs between checkpoints (0: none)"},
  {"keep-checkpoints", OPT_INT, F(keep_checkpoints), "3", 0, 1e6, train_keep_words,
   "keep only the newest K checkpoints, deleting older ones once a new one is written "
   "(all or 0: keep every one)"},
  {"data-mode", OPT_CHOICE, F(data_mode), "global", 0, 0, train_data_mode_names,
   "global permutation (exact) or streaming shards (larger than memory)"},
  {"shuffle-buffer", OPT_INT, F(shuffle_buffer), "10000", 1, 1e9, NULL,
   "samples in the streaming shuffle buffer"},
  {"prefetch", OPT_INT, F(prefetch), "0", 0, 1024, NULL,
   "batches prepared ahead of the step (0: auto, about 8 MB of batches, 4..64)"},
  {"progress", OPT_CHOICE, F(progress), "auto", 0, 0, train_progress_names,
   "progress line with ETA (auto: on a TTY)"},
  {"graph", OPT_BOOL, F(graph), "on", 0, 0, NULL, "GPU: replay each step as a CUDA graph"},
  {"fused-step", OPT_BOOL, F(fused_step), "on", 0, 0, NULL,
   "GPU, one rank: the whole step in one kernel launch"},
  {"max-steps", OPT_INT, F(max_steps), "0", 0, BIG, NULL,
   "stop each epoch after this many steps (0: whole epochs)"},
  {"max-params", OPT_INT, F(max_params), "50000000", 1, 1e12, NULL,
   "largest model --resume-from may declare, in parameters (this net: 266610)"},
  {"timeline", OPT_BOOL, F(timeline), "off", 0, 0, NULL,
   "each rank writes a Chrome trace of its steps to <logs>/timeline-<r>.json"},
  {"timeline-steps", OPT_INT, F(timeline_steps), "100", 0, BIG, NULL,
   "steps per epoch the timeline records (0: all; epochs are always recorded)"},
  {"tensorboard", OPT_STRING, F(tensorboard), NULL, 0, 0, NULL,
   "rank 0 writes every metric as a TensorBoard scalar to an event file in this folder (a "
   "TF_CONFIG evaluator: to <folder>/eval); empty: none"},
};

/* This process's usable cores: its affinity mask, else the online cores. */
static int train_usable_cores(const char **from) {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  *from = "sched_getaffinity";
  if (cores <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cores = n > 0 ? (int)n : 1;
    *from = "online cores";
  }
  return cores;
}

void train_threads_resolve(train_config *cfg, int local_ranks) {
  const char *from = "ranks on this node", *cores_from;
  if (local_ranks <= 0) {
    const long said = base_env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1, 1 << 20, 0);
    local_ranks = said > 0 ? (int)said : 1;
    from = said > 0 ? "OMPI_COMM_WORLD_LOCAL_SIZE" : "ranks on this node (none said)";
  }
  const int cores = train_usable_cores(&cores_from);
  if (cfg->threads > 0) {
    cfg->threads_run = (int)cfg->threads;
    snprintf(cfg->threads_why, sizeof cfg->threads_why, "--threads %d", cfg->threads_run);
  } else {
    cfg->threads_run = cores / local_ranks > 0 ? cores / local_ranks : 1;
    snprintf(cfg->threads_why, sizeof cfg->threads_why,
             "auto: %d usable cores (%s) / %d %s", cores, cores_from, local_ranks, from);
  }
  cfg->usable_cores = cores;
  cfg->threads_oversubscribed = (long)cfg->threads_run * local_ranks > cores;
}

const opt_table train_options = {train_specs, (int)(sizeof train_specs / sizeof train_specs[0]),
                                 "train"};

/* The optimizer's and the schedule's cross-field rules. */
static int train_config_check_opt(train_config *c, char *err, size_t err_bytes) {
  const struct { const char *flag; double v; } below1[] = {
    {"--beta1", c->beta1}, {"--beta2", c->beta2}, {"--rho", c->rho}};
  for (size_t i = 0; i < sizeof below1 / sizeof below1[0]; i++) {
    if (below1[i].v >= 1.0) {
      snprintf(err, err_bytes, "%s: %g must be below 1", below1[i].flag, below1[i].v);
      return -1;
    }
  }
  if (c->warmup_epochs > (double)c->epochs) {
    snprintf(err, err_bytes, "--warmup-epochs: %g is beyond --epochs %lld", c->warmup_epochs,
             (long long)c->epochs);
    return -1;
  }
  const int decays = c->lr_schedule == TRAIN_LR_STEP || c->lr_schedule == TRAIN_LR_EXPONENTIAL;
  const int cosine = c->lr_schedule == TRAIN_LR_COSINE;
  if (!decays && c->lr_decay_rate != 0) {
    snprintf(err, err_bytes, "--lr-decay-rate: given without --lr-schedule step or exponential");
    return -1;
  }
  if (!decays && !cosine && c->lr_decay_epochs != 0) {
    snprintf(err, err_bytes, "--lr-decay-epochs: given without --lr-schedule step, exponential "
             "or cosine");
    return -1;
  }
  if (!cosine && c->lr_min != 0) {
    snprintf(err, err_bytes, "--lr-min: given without --lr-schedule cosine");
    return -1;
  }
  if (c->lr_min > c->learning_rate) {
    snprintf(err, err_bytes, "--lr-min: %g is above --learning-rate %g", c->lr_min,
             c->learning_rate);
    return -1;
  }
  if (decays && c->lr_decay_rate == 0) c->lr_decay_rate = 0.1;
  if (decays && c->lr_decay_epochs == 0) c->lr_decay_epochs = 10;
  return 0;
}

int train_config_resolve(train_config *cfg, int argc, char **argv, base_err *err) {
  char *const e = err->msg;
  const size_t eb = sizeof err->msg;
  /* The flags are parsed once on their own first, so --config is found as
   * the parser sees it: the last one wins, and a value of another flag that
   * happens to read "--config" is not taken for it. */
  if (opt_defaults(&train_options, cfg, e, eb) != 0 ||
      opt_apply_argv(&train_options, cfg, argc, argv, NULL, 0, NULL, e, eb) != 0) {
    return -1;
  }
  char *path = cfg->config[0] ? strdup(cfg->config) : NULL;
  int rc = opt_defaults(&train_options, cfg, e, eb);
  if (rc == 0 && path) rc = opt_apply_json(&train_options, cfg, path, e, eb);
  free(path);
  if (rc == 0) rc = opt_apply_argv(&train_options, cfg, argc, argv, NULL, 0, NULL, e, eb);
  if (rc != 0) return -1;
  const struct { const char *flag, *value; } paths[] = {
    {"--data-folder", cfg->data_folder}, {"--outputs", cfg->outputs}, {"--logs", cfg->logs}};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    if (paths[i].value[0] == '\0') return base_err_set(err, "%s: empty", paths[i].flag);
  }
  cfg->resume_mode = !cfg->resume_from[0]                    ? TRAIN_RESUME_NONE
                     : strcmp(cfg->resume_from, "auto") == 0 ? TRAIN_RESUME_AUTO
                                                             : TRAIN_RESUME_GIVEN;
  return train_config_check_opt(cfg, e, eb);
}
