/* The training job: data, model, collectives and records wired together. */
#ifndef TFDIST_TRAIN_TRAIN_H
#define TFDIST_TRAIN_TRAIN_H

#include "collective/coll.h"
#include "data/idx.h"
#include "data/loader.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "train/lr_schedule.h"
#include "train/records.h"
#include "train/train_config.h"

/* Steps per fused launch the trainer asks for (kern_step.steps): a launch
 * costs about one step's worth of gaps (~4 us), a barrier between steps
 * ~1 us, and the host still hears from the device every ~1.5 ms at batch 50. */
#define KERN_STEP_CHAIN 32

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
} train_epoch_result;

typedef struct {
  const train_config *cfg;
  const coll_world *world;
  coll_comm *comm;
  kern_backend *be;
  model_layout layout;
  model_work work;
  data_set train, test;            /* host, uint8 */
  const uint8_t *train_images_dev, *train_labels_dev, *test_images_dev, *test_labels_dev;
  int32_t *perm_host, *perm_dev;   /* (train.count) this epoch's order */
  int32_t *test_idx_dev;           /* 0..test.count-1 */
  int64_t *cursor_dev;             /* first row of this rank's slice of the next batch */
  int64_t *eval_cursor_dev;
  kern_stats *stats_dev, *eval_stats_dev;
  float *params, *grads;           /* backend memory, layout.total_elems each */
  float *opt_state;                /* backend memory, train_opt_state_elems floats */
  float *grads_host;               /* grads itself, or host staging for host collectives */
  float *params_host;
  kern_opt opt;                    /* this update's rule and scalars (train_opt_at) */
  lr_schedule sched;
  int64_t batch, global_batch, steps_per_epoch;
  int64_t start_epoch;             /* 0, or the epoch a resume continues at */
  int64_t global_step;
  void *graph;                     /* captured step, when the backend has graphs */
  int64_t graph_steps;             /* steps the graph runs (fused: a chain of them) */
  int use_graph;
  kern_step fused;                 /* the whole step in one launch, when fused_ws */
  void *fused_ws;                  /* NULL: the step runs op by op */
  int host_staged;                 /* gradients cross to the host for the collective */
  int ps;                          /* ps tasks hold the weights and apply the updates */
  int ps_started;                  /* they have rank 0's starting point */
  coll_request *pending[MODEL_LAYERS];
  metrics_log metrics;
  rank_log log;
  run_record run;
  train_epoch_result last;
  struct train_ckpt_state *ckpt;   /* train_ckpt.c's: metrics history, data fingerprint */
  double data_wait_s;              /* this epoch's time blocked on the loader */
  data_loader *input;              /* batches for the CPU and stream mode; NULL: backend gather */
  data_shards *shards;             /* --data-mode stream: the shard index (owned) */
  struct timeline *tl;             /* --timeline; NULL when off */
  struct tboard_writer *tb;        /* --tensorboard, rank 0: the event file; NULL when off */
  int tl_rec;                      /* this step's phases are recorded (atomic: read by the
                                      collective thread) */
  double tl_mark;                  /* end of the last recorded backward layer */
  int canceled;                    /* rank 0: the signal that stopped the run, 0 if none */
  int cancel_relayed;              /* other ranks: our signal went to rank 0 */
  char err[1024];
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
