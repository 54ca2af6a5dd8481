/* Where a training step's batch comes from. On the CPU, and in streaming mode
 * on any device, the prefetching loader of data/loader.h fills it; on a GPU in
 * global mode the backend gathers it from the set resident on the device. */
#ifndef TFDIST_TRAIN_TRAIN_INPUT_H
#define TFDIST_TRAIN_TRAIN_INPUT_H

#include "train/train_state.h"

int train_input_streaming(const train_config *cfg);
/* --data-mode stream: the test set, the shard index (or the train pair as one
 * shard) and d->steps_per_epoch; the train set itself is never loaded. px is
 * the model's input width. */
int train_input_load_stream(train_data *d, const train_ctx *x, int64_t px, rank_log *log,
                            base_err *err);
/* Starts the loader when the step takes batches from it (sets d->input);
 * the first epoch is start_epoch. */
int train_input_start(train_data *d, const train_ctx *x, int64_t px, int64_t start_epoch,
                      base_err *err);
/* The next batch into the step's input buffers (w->act[0], w->labels); the
 * time waited adds to d->wait_s. */
int train_input_next(train_data *d, kern_backend *be, model_work *w, base_err *err);
void train_input_free(train_data *d);

#endif
