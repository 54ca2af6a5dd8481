/* The resolved configuration of `tfdist train`: the tutorial's flags with its
 * defaults, plus ours. Every field is described once, in train_config.c. */
#ifndef TFDIST_TRAIN_TRAIN_CONFIG_H
#define TFDIST_TRAIN_TRAIN_CONFIG_H

#include "base/options.h"

typedef struct {
  /* the tutorial's own */
  char data_folder[OPT_STR_BYTES];
  int64_t batch_size;          /* per rank */
  int64_t first_layer_neurons;
  int64_t second_layer_neurons;
  double learning_rate;
  int64_t epochs;
  /* ours */
  int64_t seed;
  char outputs[OPT_STR_BYTES];
  char logs[OPT_STR_BYTES];
  char config[OPT_STR_BYTES];
  char device[OPT_STR_BYTES];    /* auto|cpu|cuda */
  char math[OPT_STR_BYTES];      /* fp32|tf32 */
  char allreduce[OPT_STR_BYTES]; /* auto|mpi|ring|nccl */
  int scale_lr;
  int overlap;
  double timeout;
  char optimizer[OPT_STR_BYTES]; /* sgd|momentum */
  double momentum;
  int64_t threads;               /* 0: auto (train_threads_resolve) */
  int threads_run;               /* not a flag: the threads this rank runs, resolved */
  char threads_why[160];         /* not a flag: why that many, for the log and run.json */
  char resume_from[OPT_STR_BYTES];
  int resume_auto;               /* not a flag: resume_from was "auto", resolved (run.json keeps "auto") */
  int64_t checkpoint_every;
  int64_t keep_checkpoints;
  char data_mode[OPT_STR_BYTES]; /* global|stream */
  int64_t shuffle_buffer;
  int64_t prefetch;
  char progress[OPT_STR_BYTES];  /* auto|on|off */
  int graph;
  int fused_step;
  int64_t max_steps;             /* 0 = whole epochs; >0 stops early (tests, benchmarks) */
  int timeline;                  /* <logs>/timeline-<rank>.json */
  int64_t timeline_steps;        /* first steps of each epoch recorded; 0 = all */
} train_config;

extern const opt_table train_options;

/* --threads N|auto -> cfg->threads_run and threads_why. auto is this
 * process's usable cores (its affinity mask) divided by the ranks on its
 * node (local_ranks; <= 0: OMPI_COMM_WORLD_LOCAL_SIZE, else 1), at least 1. */
void train_threads_resolve(train_config *cfg, int local_ranks);

/* Defaults, then --config FILE, then the flags. Checks cross-field rules. */
int train_config_resolve(train_config *cfg, int argc, char **argv, char *err, size_t err_bytes);

#endif
