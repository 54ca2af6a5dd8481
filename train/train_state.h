/* The trainer's state, in the parts its helpers are handed one by one: what
 * the job lends it (train_ctx), where batches come from (train_data), the
 * step itself (train_step_state), and what the run leaves behind
 * (train_outputs, with the timeline's train_tl). A helper takes only the
 * parts it reads or writes; trainer (train.h) holds one of each. */
#ifndef TFDIST_TRAIN_TRAIN_STATE_H
#define TFDIST_TRAIN_TRAIN_STATE_H

#include "base/err.h"
#include "collective/coll.h"
#include "data/idx.h"
#include "data/loader.h"
#include "data/shards.h"
#include "kernels/backend.h"
#include "kernels/mlp_step.h"
#include "model/model.h"
#include "train/lr_schedule.h"
#include "train/records.h"
#include "train/train_config.h"
#include "train/train_scaler.h"

/* What the job lends the trainer: all borrowed, all outlive it. */
typedef struct {
  const train_config *cfg; /* the resolved flags */
  const coll_world *world; /* rank, size, host; the TF_CONFIG cluster, if any */
  coll_comm *comm;         /* gradient averaging and the control plane */
  kern_backend *be;        /* where the step runs */
} train_ctx;

/* Where a step's batch comes from, and how the set is cut into batches. */
typedef struct {
  data_set train, test;            /* host, uint8, owned; train stays empty in stream mode */
  const uint8_t *train_images_dev, *train_labels_dev; /* (train.count, px), (train.count): the
                                      backend's copies, owned on a GPU, views of train on the CPU */
  const uint8_t *test_images_dev, *test_labels_dev;   /* likewise for test */
  int32_t *perm_host;              /* (train.count) this epoch's order, owned */
  int32_t *perm_dev;               /* (train.count) backend copy of perm_host, owned */
  int32_t *test_idx_dev;           /* (test.count) 0..test.count-1, backend memory, owned */
  int64_t *cursor_dev;             /* (1) first row of this rank's slice of the next batch, owned */
  int64_t *eval_cursor_dev;        /* (1) evaluation's own cursor, owned */
  int64_t batch;                   /* samples per rank per micro-batch */
  int64_t global_batch;            /* batch x ranks: one micro-batch of every rank */
  int64_t micro;                   /* --backward-passes-per-step: micro-batches per update */
  int64_t steps_per_epoch;         /* updates: floor(samples / (global_batch x micro)) or
                                      --max-steps; the loader gives micro x this batches */
  data_loader *input;              /* batches for the CPU and stream mode, owned; NULL: the
                                      backend gathers them itself */
  data_shards *shards;             /* --data-mode stream: the shard index, owned; else NULL */
  double wait_s;                   /* this epoch's time blocked on the loader */
} train_data;

/* The step: model, parameters, optimizer, and how a step is launched. */
typedef struct {
  model_layout layout;             /* W1 b1 | W2 b2 | W3 b3 offsets into params */
  model_work work;                 /* activations and gradients of one batch, owned */
  float *params, *grads;           /* (layout.total_elems) backend memory, owned (grads: the
                                      comm's when grads_shared) */
  int grads_shared;                /* grads is coll_comm_buffer's: the comm frees it */
  float *opt_state;                /* (train_opt_state_elems) backend memory, owned */
  float *grads_host;               /* (layout.total_elems) grads itself, or pinned host staging
                                      (owned) when host_staged */
  float *params_host;              /* (layout.total_elems) host copy of params, owned */
  kern_stats *stats_dev;           /* (1) this epoch's training sums, backend memory, owned */
  kern_stats *eval_stats_dev;      /* (1) evaluation's sums, backend memory, owned */
  kern_opt opt;                    /* this update's rule and scalars (train_opt_at) */
  lr_schedule sched;               /* the rate against the global step */
  int64_t start_epoch;             /* 0, or the epoch a resume continues at */
  int64_t global_step;             /* steps taken so far, over all epochs */
  void *graph;                     /* captured step, owned, when the backend has graphs */
  int64_t graph_steps;             /* steps the graph runs (fused: a chain of them) */
  int use_graph;                   /* the step is captured once and replayed */
  kern_step fused;                 /* the whole step in one launch, when fused_ws */
  void *fused_ws;                  /* backend memory, owned; NULL: the step runs op by op */
  int host_staged;                 /* gradients cross to the host for the collective */
  int ps;                          /* ps tasks hold the weights and apply the updates */
  int ps_started;                  /* they have rank 0's starting point */
  int reduce_now;                  /* this micro-batch is its update's last: overlap reduces */
  coll_request *pending[MODEL_LAYERS]; /* each layer's in-flight average (overlap on) */
  train_scaler scaler;             /* --compression fp16's dynamic scale */
} train_step_state;

/* Per-epoch results, reduced over ranks. */
typedef struct {
  double loss;           /* mean training loss over the epoch */
  double train_acc_mean; /* mean training accuracy over the epoch */
  double training_acc;   /* accuracy on the last global mini-batch (the tutorial's) */
  double validation_acc;
  double validation_loss;
  double samples_per_s;
  double step_time_ms;
  double epoch_time_s;
  double data_wait_s;    /* time blocked on the loader */
} train_epoch_result;

/* Steps per fused launch the trainer asks for (kern_step.steps): a launch
 * costs about one step's worth of gaps (~4 us), a barrier between steps
 * ~1 us, and the host still hears from the device every ~1.5 ms at batch 50. */
#define TRAIN_STEP_CHAIN 32

/* --timeline's state (train_timeline.h); all zero when it is off. */
typedef struct {
  struct timeline *tl;             /* the open trace, owned; NULL when off */
  int rec;                         /* this step's phases are recorded (atomic: read by the
                                      collective thread) */
  double mark;                     /* end of the last recorded backward layer */
  int64_t steps;                   /* --timeline-steps */
  int rank;                        /* this process's, for the file name and warnings */
  const char *logs;                /* --logs, borrowed from the config */
  coll_comm *comm;                 /* borrowed: its trace hook points here */
  const float *grads_host;         /* borrowed: names what a reduction carried */
  const model_layout *layout;      /* borrowed, likewise */
} train_tl;

/* What the run leaves behind, and how it ended. */
typedef struct {
  metrics_log metrics;             /* rank 0: <outputs>/metrics.jsonl */
  rank_log log;                    /* <logs>/rank-<r>.log */
  run_record run;                  /* rank 0: <outputs>/run.json */
  train_epoch_result last;         /* the last completed epoch's */
  train_tl tl;
  struct tboard_writer *tb;        /* rank 0, --tensorboard: the event file, owned; NULL when off */
  int canceled;                    /* rank 0: the signal that stopped the run, 0 if none */
  int cancel_relayed;              /* other ranks: our signal went to rank 0 */
} train_outputs;

/* The other layers' error strings, taken into a base_err at this one
 * boundary. Each returns -1. */
int train_err_backend(base_err *e, const kern_backend *be);
int train_err_coll(base_err *e, coll_comm *comm);

#endif
