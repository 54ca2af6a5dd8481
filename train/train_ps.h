/* The parameter-server strategy (a TF_CONFIG cluster with ps tasks): the
 * trainer's side of a step, and a ps task's whole run. */
#ifndef TFDIST_TRAIN_TRAIN_PS_H
#define TFDIST_TRAIN_TRAIN_PS_H

#include "train/train.h"

/* Gradients (already in t->grads) to the ps tasks, the new weights back
 * into t->params. The first call hands the ps tasks rank 0's starting
 * point. 0, or -1 with t->err set. */
int train_ps_step(trainer *t);
/* Every rank, before a checkpoint: rank 0's t->opt_state becomes the ps
 * tasks' state. */
int train_ps_pull_state(trainer *t);
/* Every rank, after the last step: the ps tasks may end. */
int train_ps_finish(trainer *t);
/* run.json's "cluster": TF_CONFIG's tasks and the strategy; NULL under an
 * MPI launcher. */
cJSON *train_cluster_json(const coll_world *w);
/* A ps task's run: serves the training ranks until they finish; writes
 * <logs>/ps-<i>.log. 0, or -1 with err set. */
int train_ps_task(const train_config *cfg, const coll_world *w, char *err, size_t err_bytes);

#endif
