/* Checkpoints inside the training loop: a save every --checkpoint-every
 * epochs (rank 0), and --resume-from, which restores weights, optimizer
 * state, epoch and global step on every rank so training continues exactly
 * where it stopped. A different world size is rejected: an exact resume
 * needs the same ranks and per-rank batch (so the same global batch and the
 * same rank slices of it). */
#ifndef TFDIST_TRAIN_TRAIN_CKPT_H
#define TFDIST_TRAIN_TRAIN_CKPT_H

#include "train/train_state.h"

/* The metrics history, the data fingerprint, and rank 0's --resume-from
 * between the precheck and the resume. */
typedef struct train_ckpt train_ckpt;

int train_ckpt_init(train_ckpt **out, base_err *err);
/* After the data is loaded, on every rank: each rank's training and test
 * data must be rank 0's (sample counts and CRC-32s; the training one is the
 * fingerprint checkpoints store). Node-local copies that differ would
 * otherwise train on mixed data, or run different step counts until a
 * collective times out. A no-op on one rank. px is the model's input width. */
int train_ckpt_check_data(train_ckpt *k, const train_ctx *x, const train_data *d, int64_t px,
                          base_err *err);
/* Once the data is loaded and before <outputs> is touched: rank 0 reads and
 * checks --resume-from against this run, and every rank learns the verdict. */
int train_ckpt_precheck(train_ckpt *k, const train_ctx *x, const train_data *d,
                        const model_layout *l, base_err *err);
/* After the parameters are initialised: applies what train_ckpt_precheck
 * read, on every rank (weights, optimizer state, epoch and step into s; on
 * rank 0 the metrics history into o). A no-op without --resume-from. */
int train_ckpt_resume(train_ckpt *k, const train_ctx *x, train_step_state *s, train_outputs *o,
                      base_err *err);
/* After each epoch's metrics (o->last): records them, and saves when one is due. */
int train_ckpt_epoch_end(train_ckpt *k, const train_ctx *x, const train_data *d,
                         train_step_state *s, train_outputs *o, int64_t epochs_done,
                         base_err *err);
/* Whether a checkpoint is written after epochs_done epochs. */
int train_ckpt_due(const train_config *cfg, int64_t epochs_done);
void train_ckpt_free(train_ckpt *k);

/* --resume-from auto, before the trainer: rank 0 looks for a checkpoint in
 * <outputs> and every rank takes its answer: "latest" when there is one (*found
 * 1), else a fresh start (*found 0); cfg->resume_mode stays TRAIN_RESUME_AUTO.
 * Other modes are left as they are. 0, or -1 with err set. */
int train_ckpt_resolve_auto(train_config *cfg, coll_comm *comm, int rank, int size, int *found,
                            base_err *err);

#endif
