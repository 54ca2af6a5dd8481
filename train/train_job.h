/* A `tfdist train` job from a resolved config: TF_CONFIG and the launcher's
 * world, the device and the allreduce, the rank table, --resume-from auto,
 * then the trainer (or a ps or evaluator task's whole run). The caller turns
 * the status into a message and an exit code; the job keeps the world alive
 * until train_job_free, so a failed job can still be ended on every rank. */
#ifndef TFDIST_TRAIN_TRAIN_JOB_H
#define TFDIST_TRAIN_TRAIN_JOB_H

#include "base/err.h"
#include "train/train_config.h"

typedef enum {
  TRAIN_JOB_OK,          /* trained, or a ps or evaluator task's run is over */
  TRAIN_JOB_BAD_INPUT,   /* a flag or TF_CONFIG does not fit the launch: nothing started */
  TRAIN_JOB_NOT_STARTED, /* this process could not join a job (or an evaluator task
                            failed): nothing to end elsewhere */
  TRAIN_JOB_FAILED,      /* failed inside the world: with several ranks the job must end;
                            err->bad_input says whether flags, config or data were the cause */
  TRAIN_JOB_CANCELED,    /* rank 0 stopped by a signal; run.json says Canceled */
} train_job_status;

typedef struct train_job train_job;

/* The rank the launcher gave this process, read before MPI starts (0 when
 * there is no launcher): a bad flag is the same on every rank, so only rank
 * 0 reports it. */
int train_job_launcher_rank(void);

/* Runs the job for cfg (borrowed; --resume-from auto is resolved in it).
 * *out is set on every path and goes to train_job_free; err holds the
 * failure's one line. */
train_job_status train_job_run(train_job **out, train_config *cfg, int *argc, char ***argv,
                               base_err *err);
/* This process's rank and the job's size; 0 and 1 before there is a world. */
int train_job_rank(const train_job *j);
int train_job_size(const train_job *j);
/* TRAIN_JOB_CANCELED: the signal, and the run.json that records it. */
int train_job_signal(const train_job *j);
const char *train_job_record_path(const train_job *j);
/* TRAIN_JOB_FAILED in training, on a rank other than 0: tells rank 0 (which
 * may be waiting in a collective) and gives it a moment to record the run as
 * Failed and end the job. A no-op elsewhere. */
void train_job_tell_rank0(train_job *j, const char *msg);
/* Ends every rank of the job with code; with several ranks it does not return. */
void train_job_abort(train_job *j, int code);
/* Trainer, communicator, backend, world: all given back. NULL is a no-op. */
void train_job_free(train_job *j);

#endif
