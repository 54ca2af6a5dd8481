/* The training flags every rank of a job must share. Under mpirun every
 * rank gets the same command line; a TF_CONFIG cluster's tasks are started
 * one by one, and a task given another optimizer or learning rate trained
 * on silently, its weights drifting from rank 0's. */
#ifndef TFDIST_TRAIN_TRAIN_AGREE_H
#define TFDIST_TRAIN_TRAIN_AGREE_H

#include "base/err.h"
#include "collective/coll.h"
#include "train/train_config.h"

/* Every rank calls it: rank 0's flags against each rank's. 0, or -1 on
 * every rank with err one line naming the flag and the rank. */
int train_agree_check(const train_config *cfg, coll_comm *comm, int rank, int size,
                      base_err *err);

#endif
