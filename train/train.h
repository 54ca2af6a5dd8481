/* The training job: data, model, collectives and records wired together. */
#ifndef TFDIST_TRAIN_TRAIN_H
#define TFDIST_TRAIN_TRAIN_H

#include "train/train_ckpt.h"
#include "train/train_state.h"

/* One of each part of train_state.h; each helper is handed only its parts. */
typedef struct {
  train_ctx ctx;          /* borrowed from the job */
  train_data data;        /* owned */
  train_step_state step;  /* owned */
  train_outputs out;      /* owned */
  train_ckpt *ckpt;       /* owned: checkpoint history and --resume-from's pending state */
  base_err err;           /* the first failure */
} trainer;

/* Builds everything for cfg: data, model, records. ranks (owned) is the
 * rank table for run.json. Returns 0 or -1 with t->err set. Rank 0 alone
 * touches <outputs>, and only once the data has been validated. */
int trainer_init(trainer *t, const train_config *cfg, const coll_world *world, coll_comm *comm,
                 kern_backend *be, cJSON *ranks);
int trainer_run(trainer *t);
/* Evaluates params on this rank's shard of the test set, reduced over ranks. */
int trainer_evaluate(trainer *t, double *acc, double *loss);
void trainer_free(trainer *t);

#endif
