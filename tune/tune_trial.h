/* The trials of `tfdist tune`: each one a `tfdist train` child process with
 * its sampled flags and its own folder, watched through its metrics.jsonl. */
#ifndef TFDIST_TUNE_TUNE_TRIAL_H
#define TFDIST_TUNE_TUNE_TRIAL_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tune/tune.h"

typedef enum { TUNE_PENDING, TUNE_RUNNING, TUNE_DONE } tune_state;

typedef struct {
  char id[32];    /* trial-01 */
  char dir[4200]; /* <outputs>/<id>: outputs/, logs/, train.log */
  double values[TUNE_MAX_PARAMS];
  tune_state state;
  pid_t pid;
  double started, ended; /* monotonic seconds */
  int reports;           /* of the metric, read so far */
  double best, last;     /* NAN before the first report */
  int stopped_at;        /* the report at which the policy stopped it; 0: never */
  double stop_bar;       /* the leader's best at that report / (1 + slack) */
  long metrics_off;      /* bytes of metrics.jsonl read (whole lines) */
  double term_sent;      /* when tune sent SIGTERM (monotonic); 0: never */
  int killed;            /* it outlived SIGTERM and got SIGKILL */
  int exit_code;
  char status[24];       /* Completed, Failed, Canceled, EarlyTerminated, NotStarted */
} tune_trial;

typedef struct {
  const tune_space *space;
  tune_trial *trial;
  int count;
  char outputs[4096];
  int pass_argc;
  char **pass_argv; /* train flags every trial gets */
  char exe[4096];   /* this binary */
  char tensorboard[4096]; /* each trial writes its event file to <this>/<id>; "" = none */
} tune_trials;

typedef struct {
  int concurrent;
  const char *metric;
  tune_bandit policy;
  const volatile sig_atomic_t *stop; /* set: every trial is stopped and the run ends */
  const volatile sig_atomic_t *signals; /* signals tune got: one more while stopping kills */
  FILE *log;                         /* a line per trial started, stopped and ended */
} tune_run_config;

int tune_trials_init(tune_trials *tt, const tune_space *s, int n, uint64_t seed,
                     const char *outputs, int pass_argc, char **pass_argv, char *err,
                     size_t err_bytes);
void tune_trials_free(tune_trials *tt);
/* exe train <passed flags> <sampled flags> [--outputs --logs --progress off
 * [--tensorboard <tensorboard>/<id>]]:
 * the argc, or -1 when out of memory. */
int tune_trial_argv(const tune_trials *tt, const tune_trial *t, char ***argv, int with_dirs);
void tune_trial_argv_free(char **argv);
/* "--batch-size 50 --learning-rate 0.0123..." */
void tune_trial_flags(const tune_trials *tt, const tune_trial *t, char *out, size_t out_bytes);
/* Makes the outputs folder; one holding an earlier tune.json or trial folder is refused. */
int tune_trials_prepare(const tune_trials *tt, char *err, size_t err_bytes);
/* Runs every trial (after tune_trials_prepare); <outputs>/tune.json is rewritten as they progress. The
 * number of Completed trials, or -1 with err (nothing could be started). */
int tune_trials_run(tune_trials *tt, const tune_run_config *cfg, char *err, size_t err_bytes);
/* The trials by final metric, best first, and the best trial's flags. */
void tune_trials_report(const tune_trials *tt, const char *metric, FILE *out);

#endif
