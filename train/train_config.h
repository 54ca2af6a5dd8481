/* The resolved configuration of `tfdist train`: the tutorial's flags with its
 * defaults, plus ours. Every field is described once, in train_config.c. */
#ifndef TFDIST_TRAIN_TRAIN_CONFIG_H
#define TFDIST_TRAIN_TRAIN_CONFIG_H

#include "base/err.h"
#include "base/options.h"

/* The choice options, parsed: each value is its index in the option table's
 * names (train_<option>_names below, in this order). */
typedef enum { TRAIN_DEVICE_AUTO, TRAIN_DEVICE_CPU, TRAIN_DEVICE_CUDA } train_device;
typedef enum { TRAIN_MATH_FP32, TRAIN_MATH_TF32 } train_math;
typedef enum {
  TRAIN_ALLREDUCE_AUTO, TRAIN_ALLREDUCE_MPI, TRAIN_ALLREDUCE_RING, TRAIN_ALLREDUCE_NCCL,
  TRAIN_ALLREDUCE_TCP, TRAIN_ALLREDUCE_SHM, TRAIN_ALLREDUCE_HIER
} train_allreduce;
/* In kern_opt_kind's order (train_opt.c maps one to the other by value). */
typedef enum {
  TRAIN_OPTIMIZER_SGD, TRAIN_OPTIMIZER_MOMENTUM, TRAIN_OPTIMIZER_NESTEROV, TRAIN_OPTIMIZER_RMSPROP,
  TRAIN_OPTIMIZER_ADAM, TRAIN_OPTIMIZER_ADAMW
} train_optimizer;
/* In lr_schedule_kind's order (train/lr_schedule.h). */
typedef enum {
  TRAIN_LR_CONSTANT, TRAIN_LR_STEP, TRAIN_LR_EXPONENTIAL, TRAIN_LR_COSINE
} train_lr_schedule;
typedef enum { TRAIN_DATA_GLOBAL, TRAIN_DATA_STREAM } train_data_mode;
/* In coll_compression's order (train_job.c maps one to the other by value). */
typedef enum { TRAIN_COMPRESSION_NONE, TRAIN_COMPRESSION_BF16, TRAIN_COMPRESSION_FP16 } train_compression;
typedef enum { TRAIN_PROGRESS_AUTO, TRAIN_PROGRESS_ON, TRAIN_PROGRESS_OFF } train_progress_mode;
/* --resume-from, parsed: its value stays a path (or "latest") in resume_from. */
typedef enum { TRAIN_RESUME_NONE, TRAIN_RESUME_GIVEN, TRAIN_RESUME_AUTO } train_resume_mode;

extern const char *const train_device_names[];
extern const char *const train_math_names[];
extern const char *const train_allreduce_names[];
extern const char *const train_optimizer_names[];
extern const char *const train_lr_schedule_names[];
extern const char *const train_threads_words[]; /* --threads: "auto" stands for 0 */
extern const char *const train_keep_words[];    /* --keep-checkpoints: "all" stands for 0 */
extern const char *const train_data_mode_names[];
extern const char *const train_progress_names[];
extern const char *const train_compression_names[];

typedef struct {
  /* the tutorial's own */
  char data_folder[OPT_STR_BYTES];
  int64_t batch_size;          /* per rank */
  int64_t backward_passes_per_step; /* K micro-batches per update (Horovod's name) */
  int64_t first_layer_neurons;
  int64_t second_layer_neurons;
  double learning_rate;
  int64_t epochs;
  /* ours */
  int64_t seed;
  char outputs[OPT_STR_BYTES];
  char logs[OPT_STR_BYTES];
  char config[OPT_STR_BYTES];
  train_device device;
  train_math math;
  train_allreduce allreduce;
  int scale_lr;
  int overlap;         /* OPT_AUTO until train_job decides */
  int shared_gradients; /* CPU gradients in the comm's buffer where it has one (shm, hier) */
  double timeout;
  train_compression compression; /* the gradient's bytes on the ring: 16-bit, sums in fp32 */
  char secret_file[OPT_STR_BYTES]; /* TF_CONFIG: the mesh's secret; "" = TFDIST_SECRET */
  int insecure_cluster;            /* TF_CONFIG beyond loopback without a secret */
  train_optimizer optimizer;
  double momentum;
  double beta1, beta2, epsilon, rho, weight_decay;
  train_lr_schedule lr_schedule;
  double lr_decay_rate, lr_decay_epochs, lr_min, warmup_epochs;
  int64_t threads;               /* 0: auto (train_threads_resolve) */
  int threads_run;               /* not a flag: the threads this rank runs, resolved */
  char threads_why[160];         /* not a flag: why that many, for the log and run.json */
  int threads_oversubscribed;    /* not a flag: threads_run x local ranks > usable cores */
  int usable_cores;              /* not a flag: the affinity mask's cores (else online ones) */
  char resume_from[OPT_STR_BYTES];
  train_resume_mode resume_mode; /* not a flag: what resume_from said; AUTO stays AUTO once
                                    train_ckpt_resolve_auto has replaced "auto" in resume_from
                                    (run.json keeps "auto") */
  int64_t checkpoint_every;
  int64_t keep_checkpoints;
  train_data_mode data_mode;
  int64_t shuffle_buffer;
  int64_t prefetch;
  train_progress_mode progress;
  int graph;
  int fused_step;
  int64_t max_params;            /* --resume-from's budget for the declared model size */
  int64_t max_steps;             /* 0 = whole epochs; >0 stops early (tests, benchmarks) */
  int timeline;                  /* <logs>/timeline-<rank>.json */
  int64_t timeline_steps;        /* first steps of each epoch recorded; 0 = all */
  char tensorboard[OPT_STR_BYTES]; /* event-file folder; "" = none */
} train_config;

extern const opt_table train_options;

/* --threads N|auto -> cfg->threads_run and threads_why. auto is this
 * process's usable cores (its affinity mask) divided by the ranks on its
 * node (local_ranks; <= 0: OMPI_COMM_WORLD_LOCAL_SIZE, else 1), at least 1. */
void train_threads_resolve(train_config *cfg, int local_ranks);

/* Defaults, then --config FILE, then the flags. Checks cross-field rules. */
int train_config_resolve(train_config *cfg, int argc, char **argv, base_err *err);

#endif
