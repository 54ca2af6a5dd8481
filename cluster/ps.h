/* The parameter-server protocol of a TF_CONFIG cluster with ps tasks (the
 * training strategy on top of it is runtime/train_ps.c): ps
 * task s holds slice s of the flat parameter buffer (elems * s / S up to
 * elems * (s + 1) / S) and its optimizer state (state_per_elem interleaved
 * floats per weight: k*lo up to k*(lo + n)). Each step every training
 * rank pushes its gradient slices; each ps sums them in rank order, divides
 * by the number of ranks (the same average as the allreduce), applies the
 * update rule and sends the new slice back to every rank. Synchronous: one
 * update per step, so the training math is that of data-parallel SGD. */
#ifndef TFDIST_CLUSTER_PS_H
#define TFDIST_CLUSTER_PS_H

#include <stddef.h>
#include <stdint.h>

#include "collective/coll.h"

/* ps tasks of c's cluster; 0 without (or without a cluster). */
int cluster_ps_count(const coll_comm *c);
/* Every rank calls it once, before the first step: rank 0 hands each ps its
 * slices of params and state and the update rule (opt_bytes of opt, read
 * only by the ps task's update function); other ranks pass NULLs. */
int cluster_ps_init(coll_comm *c, const float *params, const float *state, int state_per_elem,
                 int64_t elems, const void *opt, uint32_t opt_bytes);
/* One step: grads out, the updated params back (both elems floats, host). */
int cluster_ps_step(coll_comm *c, const float *grads, float *params, int64_t elems);
/* Every rank calls it; rank 0 receives the optimizer state into state. */
int cluster_ps_pull_state(coll_comm *c, float *state, int state_per_elem, int64_t elems);
/* Every rank calls it at the end of training; the ps tasks then end. */
int cluster_ps_finish(coll_comm *c);

/* The update a ps applies to its slice: params (n floats) and state
 * (state_per_elem * n) from grad, the ranks' average. Called once per step,
 * in step order. 0, or -1 with err set. */
typedef int (*cluster_ps_update_fn)(void *ctx, float *params, const float *grad, float *state,
                                 int64_t n, const void *opt, uint32_t opt_bytes, char *err,
                                 size_t err_bytes);
/* A ps's check of rank 0's INIT before it allocates anything: the
 * element count (at most CLUSTER_PS_ELEMS_MAX), the options' size, the rank
 * count, the optimizer's state floats per weight, and that no buffer size
 * wraps. 0, or -1 with err naming what. */
#define CLUSTER_PS_ELEMS_MAX (1ull << 40)
#define CLUSTER_PS_OPT_MAX 4096u
#define CLUSTER_PS_STATE_MAX 8u
int cluster_ps_meta_check(uint64_t elems, uint32_t opt_bytes, uint32_t ranks, int want_ranks,
                          int nps, uint32_t state_per_elem, char *err, size_t err_bytes);
typedef struct {
  int64_t elems, lo, n;  /* the whole buffer, and this ps's slice */
  int64_t steps;
  double wait_s, update_s;
} cluster_ps_stats;
/* A ps task's life: waits for rank 0's init, then serves steps until every
 * rank has finished. w must have joined the cluster as a ps task. 0, or -1
 * with err set. */
int cluster_ps_serve(const coll_world *w, cluster_ps_update_fn update, void *ctx, cluster_ps_stats *st,
                  char *err, size_t err_bytes);

#endif
