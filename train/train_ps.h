/* The parameter-server strategy (a TF_CONFIG cluster with ps tasks): the
 * trainer's side of a step, and a ps task's whole run. */
#ifndef TFDIST_TRAIN_TRAIN_PS_H
#define TFDIST_TRAIN_TRAIN_PS_H

#include "train/train_state.h"

/* Gradients (already in s->grads) to the ps tasks, the new weights back
 * into s->params. The first call hands the ps tasks rank 0's starting
 * point. 0, or -1 with err set. */
int train_ps_step(train_step_state *s, const train_ctx *x, rank_log *log, base_err *err);
/* Every rank, before a checkpoint: rank 0's s->opt_state becomes the ps
 * tasks' state. */
int train_ps_pull_state(train_step_state *s, const train_ctx *x, base_err *err);
/* Every rank, after the last step: the ps tasks may end. */
int train_ps_finish(train_step_state *s, const train_ctx *x, rank_log *log, base_err *err);
/* run.json's "cluster": TF_CONFIG's tasks and the strategy; NULL under an
 * MPI launcher. */
cJSON *train_cluster_json(const coll_world *w);
/* A ps task's run: serves the training ranks until they finish; writes
 * <logs>/ps-<i>.log. 0, or -1 with err set. */
int train_ps_task(const train_config *cfg, const coll_world *w, base_err *err);

#endif
