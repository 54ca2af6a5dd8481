/* --timeline: the trainer's spans in timeline/timeline.h's trace.
 * Main thread: a step's phases (data, forward, loss, backward per layer,
 * allreduce wait, update) for the first --timeline-steps steps of each
 * epoch, and every epoch's sync, evaluation, metrics and checkpoint.
 * Collective thread: each allreduce as it ran, with its wait in the queue.
 * On a GPU the step spans are the host's launch times, not kernel times. */
#ifndef TFDIST_TRAIN_TRAIN_TIMELINE_H
#define TFDIST_TRAIN_TRAIN_TIMELINE_H

#include "train/train_state.h"

/* Every rank, together (a barrier sets ts 0): opens
 * <logs>/timeline-<rank>.json when --timeline is on. grads_host and layout
 * (borrowed) name what each reduction carried. 0, or -1 with err set. */
int train_timeline_start(train_tl *tl, const train_ctx *x, const float *grads_host,
                         const model_layout *layout, base_err *err);
/* Whether the steps from step_in_epoch on are recorded. */
void train_timeline_steps(train_tl *tl, int64_t step_in_epoch);
/* Step spans: begin is 0 (and nothing is written) when steps are not recorded. */
static inline double train_tl_begin(const train_tl *tl) { return tl->rec ? clock_mono_s() : 0.0; }
void train_tl_end(train_tl *tl, const char *name, double begin);
/* Epoch spans, recorded whenever the timeline is open. */
static inline double train_tl_epoch_begin(const train_tl *tl) {
  return tl->tl ? clock_mono_s() : 0.0;
}
void train_tl_epoch_end(train_tl *tl, const char *name, double begin, int64_t epoch);
/* After the last epoch: the file is complete. A failed write is a warning
 * (stderr and the rank log), not a failed run: the model is saved after. */
void train_timeline_finish(train_tl *tl, rank_log *log);
/* A failed run, before the job's abort ends this rank (trainer_free never
 * comes): the spans so far go to the .part file. */
void train_timeline_flush(train_tl *tl);
/* A failed run: what was written stays in the .part file. */
void train_timeline_abandon(train_tl *tl);

#endif
