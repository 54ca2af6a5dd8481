/* The `tfdist train` option table. Defaults follow ../shared/SPEC.md. */
#include "train/train_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#include "tfdist_config.h"

#define F(field) offsetof(train_config, field)
#define BIG 9.0e15

static const opt_spec train_specs[] = {
  {"data-folder", OPT_STRING, F(data_folder), TFDIST_DEFAULT_DATA, 0, 0, NULL,
   "folder searched recursively for the four idx files (.gz or raw)"},
  {"batch-size", OPT_INT, F(batch_size), "50", 1, 1 << 20, NULL, "mini-batch size per rank"},
  {"first-layer-neurons", OPT_INT, F(first_layer_neurons), "300", 1, 1 << 16, NULL,
   "units of the first hidden layer"},
  {"second-layer-neurons", OPT_INT, F(second_layer_neurons), "100", 1, 1 << 16, NULL,
   "units of the second hidden layer"},
  {"learning-rate", OPT_FLOAT, F(learning_rate), "0.01", 1e-12, 1e3, NULL, "SGD learning rate"},
  {"epochs", OPT_INT, F(epochs), "20", 1, 1e6, NULL, "passes over the training set"},
  {"seed", OPT_INT, F(seed), "1", 0, BIG, NULL, "seed for weights and data order"},
  {"outputs", OPT_STRING, F(outputs), "./outputs", 0, 0, NULL,
   "folder for the model, checkpoints, metrics.jsonl and run.json"},
  {"logs", OPT_STRING, F(logs), "./logs", 0, 0, NULL, "folder for rank-<r>.log"},
  {"config", OPT_STRING, F(config), NULL, 0, 0, NULL,
   "JSON file of these options (run.json's \"config\" object is one)"},
  {"device", OPT_CHOICE, F(device), "auto", 0, 0, "auto|cpu|cuda",
   "compute device; auto uses a GPU when present"},
  {"math", OPT_CHOICE, F(math), "fp32", 0, 0, "fp32|tf32", "GPU GEMM precision"},
  {"allreduce", OPT_CHOICE, F(allreduce), "auto", 0, 0, "auto|mpi|ring|nccl|tcp",
   "gradient averaging back end (auto: nccl on GPUs, ring on CPUs, tcp under TF_CONFIG)"},
  {"scale-lr", OPT_BOOL, F(scale_lr), "off", 0, 0, NULL,
   "multiply the learning rate by the number of ranks"},
  {"overlap", OPT_BOOL, F(overlap), "on", 0, 0, NULL,
   "reduce each layer's gradient while backward continues"},
  {"timeout", OPT_FLOAT, F(timeout), "60", 0.1, 1e6, NULL,
   "seconds before a stalled collective ends the job"},
  {"optimizer", OPT_CHOICE, F(optimizer), "sgd", 0, 0, "sgd|momentum", "update rule"},
  {"momentum", OPT_FLOAT, F(momentum), "0.9", 0, 1, NULL, "momentum coefficient"},
  {"threads", OPT_INT, F(threads), "auto", 1, 1024, "auto",
   "CPU threads splitting each rank's step (auto: the rank's share of its usable cores)"},
  {"resume-from", OPT_STRING, F(resume_from), NULL, 0, 0, NULL,
   "checkpoint file, checkpoints folder, 'latest', or 'auto' (latest if there is one, else a "
   "fresh start: for jobs that are restarted or requeued)"},
  {"checkpoint-every", OPT_INT, F(checkpoint_every), "2", 0, 1e6, NULL,
   "epochs between checkpoints (0: none)"},
  {"keep-checkpoints", OPT_INT, F(keep_checkpoints), "0", 0, 1e6, NULL,
   "keep only the newest K checkpoints (0: all)"},
  {"data-mode", OPT_CHOICE, F(data_mode), "global", 0, 0, "global|stream",
   "global permutation (exact) or streaming shards (larger than memory)"},
  {"shuffle-buffer", OPT_INT, F(shuffle_buffer), "10000", 1, 1e9, NULL,
   "samples in the streaming shuffle buffer"},
  {"prefetch", OPT_INT, F(prefetch), "0", 0, 1024, NULL,
   "batches prepared ahead of the step (0: auto, about 8 MB of batches, 4..64)"},
  {"progress", OPT_CHOICE, F(progress), "auto", 0, 0, "auto|on|off",
   "progress line with ETA (auto: on a TTY)"},
  {"graph", OPT_BOOL, F(graph), "on", 0, 0, NULL, "GPU: replay each step as a CUDA graph"},
  {"fused-step", OPT_BOOL, F(fused_step), "on", 0, 0, NULL,
   "GPU, one rank: the whole step in one kernel launch"},
  {"max-steps", OPT_INT, F(max_steps), "0", 0, BIG, NULL,
   "stop each epoch after this many steps (0: whole epochs)"},
  {"timeline", OPT_BOOL, F(timeline), "off", 0, 0, NULL,
   "each rank writes a Chrome trace of its steps to <logs>/timeline-<r>.json"},
  {"timeline-steps", OPT_INT, F(timeline_steps), "100", 0, BIG, NULL,
   "steps per epoch the timeline records (0: all; epochs are always recorded)"},
};

void train_threads_resolve(train_config *cfg, int local_ranks) {
  if (cfg->threads > 0) {
    cfg->threads_run = (int)cfg->threads;
    snprintf(cfg->threads_why, sizeof cfg->threads_why, "--threads %d", cfg->threads_run);
    return;
  }
  const char *env = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const char *from = "ranks on this node";
  if (local_ranks <= 0) {
    local_ranks = env && atoi(env) > 0 ? atoi(env) : 1;
    from = env && atoi(env) > 0 ? "OMPI_COMM_WORLD_LOCAL_SIZE" : "ranks on this node (none said)";
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  const char *cores_from = "sched_getaffinity";
  if (cores <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cores = n > 0 ? (int)n : 1;
    cores_from = "online cores";
  }
  cfg->threads_run = cores / local_ranks > 0 ? cores / local_ranks : 1;
  snprintf(cfg->threads_why, sizeof cfg->threads_why,
           "auto: %d usable cores (%s) / %d %s", cores, cores_from, local_ranks, from);
}

const opt_table train_options = {train_specs, (int)(sizeof train_specs / sizeof train_specs[0]),
                                 "train"};

int train_config_resolve(train_config *cfg, int argc, char **argv, char *err, size_t err_bytes) {
  /* The flags are parsed once on their own first, so --config is found as
   * the parser sees it: the last one wins, and a value of another flag that
   * happens to read "--config" is not taken for it. */
  if (opt_defaults(&train_options, cfg, err, err_bytes) != 0 ||
      opt_apply_argv(&train_options, cfg, argc, argv, NULL, 0, NULL, err, err_bytes) != 0) {
    return -1;
  }
  char *path = cfg->config[0] ? strdup(cfg->config) : NULL;
  int rc = opt_defaults(&train_options, cfg, err, err_bytes);
  if (rc == 0 && path) rc = opt_apply_json(&train_options, cfg, path, err, err_bytes);
  free(path);
  if (rc == 0) rc = opt_apply_argv(&train_options, cfg, argc, argv, NULL, 0, NULL, err, err_bytes);
  if (rc != 0) return -1;
  const struct { const char *flag, *value; } paths[] = {
    {"--data-folder", cfg->data_folder}, {"--outputs", cfg->outputs}, {"--logs", cfg->logs}};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    if (paths[i].value[0] == '\0') {
      snprintf(err, err_bytes, "%s: empty", paths[i].flag);
      return -1;
    }
  }
  return 0;
}
