/* `tfdist train`: argv to a resolved config, the job (train/train_job.h),
 * and its status to a message and an exit code. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "modelio/h5model.h"
#include "cli/cli.h"
#include "train/train_config.h"
#include "train/train_job.h"
#include "tfdist_config.h"

static const char train_usage[] =
    "usage: tfdist train [flags]\n"
    "  Trains the 784-h1-h2-10 ReLU DNN of the tutorial. Run it under mpirun or srun\n"
    "  for data-parallel training; --batch-size is per rank. Or start each task of a\n"
    "  TF_CONFIG cluster on its own: chief and workers train (allreduce over TCP), ps\n"
    "  tasks hold the weights (parameter-server strategy).";

/* One line to stderr; with several ranks the whole job must end, not just
 * us (a failure in training first goes to rank 0). Bad input found after
 * start-up (data, a checkpoint that does not fit, flags that differ between
 * ranks) exits 2 as a bad flag does; rank 0's verdict reaches every rank, so
 * every rank aborts with the same code. */
static int cli_train_fail(train_job *job, const char *msg, int code) {
  const int size = train_job_size(job);
  if (size > 1) fprintf(stderr, "tfdist: error: rank %d: %s\n", train_job_rank(job), msg);
  else fprintf(stderr, "tfdist: error: %s\n", msg);
  fflush(stderr);
  train_job_tell_rank0(job, msg);
  if (size > 1) train_job_abort(job, code);
  return code;
}

/* Rank 0, stopped by a signal: one line, exit 128 + the signal, as a shell
 * reports a killed command; with several ranks the job ends with it. */
static int cli_train_canceled(train_job *job, const char *msg) {
  const int code = 128 + train_job_signal(job);
  if (train_job_rank(job) != 0) {
    fprintf(stderr, "tfdist: rank %d: %s\n", train_job_rank(job), msg);
  } else {
    fprintf(stderr, "tfdist: %s; %s records the run as Canceled\n", msg,
            train_job_record_path(job));
  }
  fflush(stderr);
  if (train_job_size(job) > 1) train_job_abort(job, code);
  return code;
}

static int cli_train_report(train_job *job, train_job_status st, const base_err *err) {
  switch (st) {
  case TRAIN_JOB_OK: return CLI_OK;
  case TRAIN_JOB_BAD_INPUT:
  case TRAIN_JOB_NOT_STARTED:
    fprintf(stderr, "tfdist: error: %s\n", err->msg);
    return st == TRAIN_JOB_BAD_INPUT ? CLI_USAGE : CLI_FAIL;
  case TRAIN_JOB_FAILED:
    return cli_train_fail(job, err->msg, err->bad_input ? CLI_USAGE : CLI_FAIL);
  case TRAIN_JOB_CANCELED: return cli_train_canceled(job, err->msg);
  }
  return CLI_FAIL;
}

int cli_check_default_data(const char *data_folder, char *err, size_t err_bytes) {
  struct stat st;
  if (strcmp(data_folder, TFDIST_DEFAULT_DATA) != 0 || stat(data_folder, &st) == 0) return 0;
  snprintf(err, err_bytes, "--data-folder: required: no default data set at %s (install "
           "Debian's dataset-fashion-mnist, or give --data-folder DIR)", TFDIST_DEFAULT_DATA);
  return -1;
}

int cli_train(int argc, char **argv) {
  static train_config cfg;
  base_err err = {.msg = {0}};
  if (opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&train_options, train_usage, stdout);
    return CLI_OK;
  }
  if (train_config_resolve(&cfg, argc - 1, argv + 1, &err) != 0 ||
      cli_check_default_data(cfg.data_folder, err.msg, sizeof err.msg) != 0) {
    if (train_job_launcher_rank() == 0) fprintf(stderr, "tfdist: error: %s\n", err.msg);
    return CLI_USAGE;
  }
  h5model_max_params_set(cfg.max_params);
  train_job *job = NULL;
  const train_job_status st = train_job_run(&job, &cfg, &argc, &argv, &err);
  const int rc = cli_train_report(job, st, &err);
  train_job_free(job);
  return rc;
}
