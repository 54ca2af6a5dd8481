/* The `tfdist train` option table. Defaults follow ../shared/SPEC.md. */
#include "train/train_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfdist_config.h"

#define F(field) offsetof(train_config, field)
#define BIG 9.0e15

/* In each enum's order (train_config.h). */
const char *const train_device_names[] = {"auto", "cpu", "cuda", NULL};
const char *const train_math_names[] = {"fp32", "tf32", NULL};
const char *const train_allreduce_names[] = {"auto", "mpi", "ring", "nccl", "tcp", "shm",
                                             NULL};
const char *const train_optimizer_names[] = {"sgd", "momentum", NULL};
const char *const train_data_mode_names[] = {"global", "stream", NULL};
const char *const train_progress_names[] = {"auto", "on", "off", NULL};

/* The parser writes a choice as an int. */
_Static_assert(sizeof(train_device) == sizeof(int) && sizeof(train_math) == sizeof(int) &&
               sizeof(train_allreduce) == sizeof(int) && sizeof(train_optimizer) == sizeof(int) &&
               sizeof(train_data_mode) == sizeof(int) && sizeof(train_progress_mode) == sizeof(int),
               "choice enums are ints");

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
  {"device", OPT_CHOICE, F(device), "auto", 0, 0, train_device_names,
   "compute device; auto uses a GPU when present"},
  {"math", OPT_CHOICE, F(math), "fp32", 0, 0, train_math_names, "GPU GEMM precision"},
  {"allreduce", OPT_CHOICE, F(allreduce), "auto", 0, 0, train_allreduce_names,
   "gradient averaging back end (auto: nccl on GPUs; on CPUs shm when every rank is on one "
   "node, else ring; tcp under TF_CONFIG)"},
  {"scale-lr", OPT_BOOL, F(scale_lr), "off", 0, 0, NULL,
   "multiply the learning rate by the number of ranks"},
  {"overlap", OPT_BOOL, F(overlap), "auto", 0, 0, NULL,
   "reduce each layer's gradient while backward continues (auto: on where the node has a core "
   "to spare)"},
  {"timeout", OPT_FLOAT, F(timeout), "60", 0.1, 1e6, NULL,
   "seconds before a stalled collective ends the job"},
  {"optimizer", OPT_CHOICE, F(optimizer), "sgd", 0, 0, train_optimizer_names, "update rule"},
  {"momentum", OPT_FLOAT, F(momentum), "0.9", 0, 1, NULL, "momentum coefficient"},
  {"threads", OPT_INT, F(threads), "1", 0, 1024, NULL,
   "BLAS threads per rank (0: the library default)"},
  {"resume-from", OPT_STRING, F(resume_from), NULL, 0, 0, NULL,
   "checkpoint file, checkpoints folder, 'latest', or 'auto' (latest if there is one, else a "
   "fresh start: for jobs that are restarted or requeued)"},
  {"checkpoint-every", OPT_INT, F(checkpoint_every), "2", 0, 1e6, NULL,
   "epochs between checkpoints (0: none)"},
  {"keep-checkpoints", OPT_INT, F(keep_checkpoints), "0", 0, 1e6, NULL,
   "keep only the newest K checkpoints (0: all)"},
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
  {"timeline", OPT_BOOL, F(timeline), "off", 0, 0, NULL,
   "each rank writes a Chrome trace of its steps to <logs>/timeline-<r>.json"},
  {"timeline-steps", OPT_INT, F(timeline_steps), "100", 0, BIG, NULL,
   "steps per epoch the timeline records (0: all; epochs are always recorded)"},
  {"tensorboard", OPT_STRING, F(tensorboard), NULL, 0, 0, NULL,
   "rank 0 writes every metric as a TensorBoard scalar to an event file in this folder (a "
   "TF_CONFIG evaluator: to <folder>/eval); empty: none"},
};

const opt_table train_options = {train_specs, (int)(sizeof train_specs / sizeof train_specs[0]),
                                 "train"};

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
  return 0;
}
