/* Checkpoints inside the training loop: a save every --checkpoint-every
 * epochs (rank 0), and --resume-from, which restores weights, optimizer
 * state, epoch and global step on every rank so training continues exactly
 * where it stopped. A different world size is rejected: an exact resume
 * needs the same ranks and per-rank batch (so the same global batch and the
 * same rank slices of it). */
#ifndef TFDIST_TRAIN_TRAIN_CKPT_H
#define TFDIST_TRAIN_TRAIN_CKPT_H

#include "train/train.h"

/* After the data is loaded, on every rank: each rank's training and test
 * data must be rank 0's (sample counts and CRC-32s; the training one is the
 * fingerprint checkpoints store). Node-local copies that differ would
 * otherwise train on mixed data, or run different step counts until a
 * collective times out. A no-op on one rank. */
int train_ckpt_check_data(trainer *t);
/* Once the data is loaded and before <outputs> is touched: rank 0 reads and
 * checks --resume-from against this run, and every rank learns the verdict.
 * Always called (it sets up the checkpoint state). */
int train_ckpt_precheck(trainer *t);
/* After the parameters are initialised: applies what train_ckpt_precheck
 * read, on every rank. A no-op without --resume-from. */
int train_ckpt_resume(trainer *t);
/* After each epoch's metrics: records them, and saves when one is due. */
int train_ckpt_epoch_end(trainer *t, int64_t epochs_done);
/* Whether a checkpoint is written after epochs_done epochs. */
int train_ckpt_due(const trainer *t, int64_t epochs_done);
void train_ckpt_free(trainer *t);

/* --resume-from auto, before the trainer: rank 0 looks for a checkpoint in
 * <outputs> and every rank takes its answer: "latest" when there is one (*found
 * 1), else a fresh start (*found 0); cfg->resume_auto says it was "auto".
 * Other values are left as they are.
 * 0, or -1 with err set. */
int train_ckpt_resolve_auto(train_config *cfg, coll_comm *comm, int rank, int size, int *found,
                            char *err, size_t err_bytes);

#endif
