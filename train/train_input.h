/* Where a training step's batch comes from. On the CPU, and in streaming mode
 * on any device, the prefetching loader of data/loader.h fills it; on a GPU in
 * global mode the backend gathers it from the set resident on the device. */
#ifndef TFDIST_TRAIN_TRAIN_INPUT_H
#define TFDIST_TRAIN_TRAIN_INPUT_H

#include "train/train.h"

int train_input_streaming(const trainer *t);
/* --data-mode stream: the test set, the shard index (or the train pair as one
 * shard) and t->steps_per_epoch; the train set itself is never loaded. */
int train_input_load_stream(trainer *t);
/* Starts the loader when the step takes batches from it (sets t->input). */
int train_input_start(trainer *t);
/* The next batch into the step's input buffers; the time waited adds to
 * t->data_wait_s. */
int train_input_next(trainer *t);
void train_input_free(trainer *t);

#endif
