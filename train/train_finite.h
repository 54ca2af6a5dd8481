/* Keras' TerminateOnNaN: a non-finite loss or weight ends the run as Failed,
 * naming the epoch and step, before a checkpoint or the model is written. */
#ifndef TFDIST_TRAIN_TRAIN_FINITE_H
#define TFDIST_TRAIN_TRAIN_FINITE_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

/* 0 when loss and every parameter (params may be NULL: the loss alone) are
 * finite; else -1 with err set. epoch is 1-based; step is the step within it
 * (1-based) and global_step the run's count. */
int train_finite_check(const model_layout *l, const float *params, double loss, int64_t epoch,
                       int64_t step, int64_t global_step, char *err, size_t err_bytes);

#endif
