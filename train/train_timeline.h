/* --timeline: the trainer's spans in timeline/timeline.h's trace.
 * Main thread: a step's phases (data, forward, loss, backward per layer,
 * allreduce wait, update) for the first --timeline-steps steps of each
 * epoch, and every epoch's sync, evaluation, metrics and checkpoint.
 * Collective thread: each allreduce as it ran, with its wait in the queue.
 * On a GPU the step spans are the host's launch times, not kernel times. */
#ifndef TFDIST_TRAIN_TRAIN_TIMELINE_H
#define TFDIST_TRAIN_TRAIN_TIMELINE_H

#include "train/records.h"
#include "train/train.h"

/* Every rank, together (a barrier sets ts 0): opens
 * <logs>/timeline-<rank>.json when --timeline is on. 0, or -1 with t->err. */
int train_timeline_start(trainer *t);
/* Whether the steps from step_in_epoch on are recorded. */
void train_timeline_steps(trainer *t, int64_t step_in_epoch);
/* Step spans: begin is 0 (and nothing is written) when steps are not recorded. */
static inline double train_tl_begin(const trainer *t) { return t->tl_rec ? clock_mono_s() : 0.0; }
void train_tl_end(trainer *t, const char *name, double begin);
/* Epoch spans, recorded whenever the timeline is open. */
static inline double train_tl_epoch_begin(const trainer *t) { return t->tl ? clock_mono_s() : 0.0; }
void train_tl_epoch_end(trainer *t, const char *name, double begin, int64_t epoch);
/* After the last epoch: the file is complete. A failed write is a warning
 * (stderr and the rank log), not a failed run: the model is saved after. */
void train_timeline_finish(trainer *t);
/* A failed run, before the job's abort ends this rank (trainer_free never
 * comes): the spans so far go to the .part file. */
void train_timeline_flush(trainer *t);
/* A failed run: what was written stays in the .part file. */
void train_timeline_abandon(trainer *t);

#endif
