/* Training checkpoints: one HDF5 file per save, written by rank 0, that is
 * both a Keras model file (model_config, model_weights) and everything an
 * exact resume needs (optimizer state, epoch, step, data order, metrics).
 * Files are written to a temp name, fsynced and renamed, so a crash leaves
 * the previous checkpoint intact; a small `latest` file names the newest. */
#ifndef TFDIST_MODELIO_CHECKPOINT_H
#define TFDIST_MODELIO_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#define CKPT_FORMAT_VERSION 1
#define CKPT_LATEST_NAME "latest"

typedef struct {
  /* where the job stands */
  int64_t epoch;           /* epochs completed */
  int64_t global_step;     /* optimizer updates so far */
  int64_t steps_per_epoch;
  /* the job's shape: all of it must match for an exact resume */
  int64_t batch_size;      /* per rank */
  int64_t global_batch;
  int64_t world_size;
  int64_t seed;            /* weights and data order: epoch e's order is base_perm_epoch(seed, e) */
  int64_t train_count;     /* training samples */
  char data_fingerprint[32]; /* "crc32:xxxxxxxx" over the training images and labels */
  char data_mode[32];      /* --data-mode */
  /* optimizer */
  char opt_kind[16];       /* --optimizer: "sgd" ... "adamw" */
  double learning_rate;    /* as configured */
  double lr_effective;     /* the last update's rate (schedule and --scale-lr applied) */
  double momentum;
  double beta1, beta2, epsilon, rho, weight_decay;
  int64_t opt_step;        /* updates applied so far: Adam's bias correction goes on at +1 */
  int64_t opt_state_elems; /* floats in opt_state: state per parameter (interleaved, at
                            * least 1) times layout.total_elems */
  int64_t scale_lr;
  int64_t threads;         /* CPU threads per rank's step (column slices); 0: not recorded */
  char compression[8];     /* --compression: "none", "bf16" or "fp16"; "" in older files (none) */
  double fp16_scale;       /* fp16: the dynamic scale and its counters (train/train_scaler.h) */
  int64_t fp16_clean_steps, fp16_overflows, fp16_consecutive;
  /* provenance */
  char run_id[64];
  char tfdist_version[32]; /* of the writer; filled in by ckpt_read */
  char *hyperparameters;   /* JSON object, the resolved config; owned, may be NULL */
  char *metrics;           /* JSON array, one object per completed epoch; owned, may be NULL */
  /* tensors */
  model_layout layout;
  float *params;           /* (layout.total_elems), owned */
  float *opt_state;        /* (opt_state_elems), owned */
} ckpt_state;

void ckpt_state_free(ckpt_state *s);

/* Writes path atomically (temp, fsync, rename, fsync folder). */
int ckpt_write(const char *path, const ckpt_state *s, char *err, size_t err_bytes);
/* Reads and verifies path: format, shapes, weights and state checksums, and
 * that this build derives the same data order. Errors name the file and field. */
int ckpt_read(ckpt_state *s, const char *path, char *err, size_t err_bytes);

/* Just the id of the run that wrote path (its root attribute run_id): cheap
 * enough to ask of every file in a folder. */
int ckpt_read_run_id(const char *path, char *run_id, size_t bytes, char *err, size_t err_bytes);

/* <outputs>/checkpoints */
void ckpt_dir_path(char *out, size_t out_bytes, const char *outputs);
/* For --resume-from auto: 1 when <outputs> has a checkpoint to resume from,
 * 0 when it has none (no folder, or no checkpoint file in it), -1 with err
 * set when it cannot tell (an unreadable folder). */
int ckpt_exists(const char *outputs, char *err, size_t err_bytes);
/* A one-line warning that leaves the run going (a checkpoint --keep-checkpoints
 * could not delete, naming the file and errno). */
typedef void (*ckpt_warn_fn)(void *ctx, const char *msg);
/* Saves <dir>/ckpt-epoch-<E>.h5, then points `latest` at it, then keeps only
 * the newest keep checkpoints up to E (keep 0: all; only regular files of
 * that name count, deleted through the folder opened once without following
 * a link; a failed delete goes to warn, which may be NULL), and drops temp
 * files left by killed writers. */
int ckpt_save(const char *dir, const ckpt_state *s, int64_t keep, ckpt_warn_fn warn,
              void *warn_ctx, char *err, size_t err_bytes);
/* --resume-from: "latest" (<outputs>/checkpoints), a checkpoints folder, or a
 * file. A folder's `latest` file names its newest checkpoint; without one,
 * the highest epoch there is taken. */
int ckpt_resolve(const char *spec, const char *outputs, char *out, size_t out_bytes, char *err,
                 size_t err_bytes);

#endif
