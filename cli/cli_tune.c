/* `tfdist tune`: random search over `tfdist train` flags, N trials at a time
 * as child processes, each stopped early by the bandit policy when its
 * metric falls behind the best; tune.json records every trial. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/idx.h"
#include "cli/cli.h"
#include "base/fsutil.h"
#include "base/options.h"
#include "train/train_config.h"
#include "tune/tune.h"
#include "tune/tune_trial.h"

typedef struct {
  int64_t trials, concurrent, seed, evaluation_interval, delay_evaluation;
  double slack_factor;
  char metric[OPT_STR_BYTES], space[OPT_STR_BYTES], outputs[OPT_STR_BYTES];
  char tensorboard[OPT_STR_BYTES];
  int dry_run;
} tune_opts;

#define F(field) offsetof(tune_opts, field)
static const opt_spec tune_specs[] = {
  {"trials", OPT_INT, F(trials), "20", 1, 10000, NULL, "trials in all"},
  {"concurrent", OPT_INT, F(concurrent), "4", 1, 256, NULL, "trials running at once"},
  {"seed", OPT_INT, F(seed), "1", 0, 9.0e15, NULL, "seed of the sampling (trial k's values "
   "depend only on it and k)"},
  {"metric", OPT_STRING, F(metric), "validation_acc", 0, 0, NULL,
   "primary metric in metrics.jsonl, maximised"},
  {"slack-factor", OPT_FLOAT, F(slack_factor), "0.1", 0, 1e6, NULL,
   "bandit: stop a trial whose best is below the leader's / (1 + this)"},
  {"evaluation-interval", OPT_INT, F(evaluation_interval), "2", 1, 1e6, NULL,
   "bandit: apply the policy every this many reports of the metric"},
  {"delay-evaluation", OPT_INT, F(delay_evaluation), "0", 0, 1e6, NULL,
   "bandit: not before this many reports"},
  {"space", OPT_STRING, F(space), NULL, 0, 0, NULL,
   "JSON search space {\"flag\": {\"choice\"|\"uniform\"|\"loguniform\": [...]}} (default: "
   "the tutorial's)"},
  {"outputs", OPT_STRING, F(outputs), "./tune", 0, 0, NULL,
   "folder for tune.json and one folder per trial"},
  {"tensorboard", OPT_STRING, F(tensorboard), NULL, 0, 0, NULL,
   "each trial writes TensorBoard scalars to <this>/<trial id>, one run per trial (empty: "
   "none)"},
  {"dry-run", OPT_BOOL, F(dry_run), "off", 0, 0, NULL, "print the trials' flags, run nothing"},
};
#undef F
static const opt_table tune_options = {
    tune_specs, (int)(sizeof tune_specs / sizeof tune_specs[0]), "tune"};

static const char tune_usage[] =
    "usage: tfdist tune [flags] -- [tfdist train flags given to every trial]\n"
    "  Samples the space (default: --batch-size choice(25,50,100), --first-layer-neurons\n"
    "  choice(10,50,200,300,500), --second-layer-neurons choice(10,50,200,500),\n"
    "  --learning-rate loguniform(-6,-1)), runs --trials trials --concurrent at a time, stops\n"
    "  laggards by the bandit policy, and reports the best trial.";

static volatile sig_atomic_t tune_signal, tune_signals;

static void tune_on_signal(int sig) {
  if (!tune_signal) tune_signal = sig; /* the exit code: the first one */
  tune_signals++;
}

/* Train flags every trial gets: not the tuned ones, nor the trial's folders. */
static int tune_check_passthrough(const tune_space *s, int argc, char **argv, char *err,
                                  size_t eb) {
  static const char *own[] = {"outputs", "logs", "resume-from", "tensorboard"};
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "--", 2) != 0) continue;
    char flag[128];
    snprintf(flag, sizeof flag, "%.*s", (int)strcspn(argv[i] + 2, "="), argv[i] + 2);
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++) {
      if (!strcmp(flag, own[k])) {
        snprintf(err, eb, "train flag --%s: tfdist tune sets it for each trial%s", flag,
                 k == 3 ? " (give --tensorboard DIR to tune, before --: each trial writes to "
                          "DIR/<trial id>)" : "");
        return -1;
      }
    }
    if (tune_space_has(s, flag) == 0) {
      snprintf(err, eb, "train flag --%s: the search space tunes it; remove it, or drop it from "
               "--space", flag);
      return -1;
    }
  }
  return 0;
}

/* The passed-through flags with trial 0's values must make a valid train
 * config, so a typo fails here, not in every trial. */
static int tune_check_train_flags(const tune_trials *tt, char *err, size_t eb) {
  static train_config cfg;
  char **argv = NULL;
  int argc = tune_trial_argv(tt, &tt->trial[0], &argv, 0);
  if (argc < 0) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  char e[4400];
  base_err resolve_err = {.msg = {0}};
  int rc = train_config_resolve(&cfg, argc - 2, argv + 2, &resolve_err);
  if (rc != 0) snprintf(e, sizeof e, "%s", resolve_err.msg);
  tune_trial_argv_free(argv);
  if (rc == 0 && cfg.resume_from[0]) {
    snprintf(e, sizeof e, "--config %s: sets resume_from; each trial starts afresh in its own "
             "folder", cfg.config);
    rc = -1;
  }
  /* momentum is read by --optimizer momentum alone: tuning it under sgd would
   * vary nothing, and the trials would differ only by chance */
  if (rc == 0 && tune_space_has(tt->space, "momentum") == 0 &&
      cfg.optimizer != TRAIN_OPTIMIZER_MOMENTUM) {
    snprintf(e, sizeof e, "--space tunes momentum, which only --optimizer momentum uses: add "
             "'-- --optimizer momentum'");
    rc = -1;
  }
  if (rc == 0 && cli_check_default_data(cfg.data_folder, e, sizeof e) != 0) rc = -1;
  static data_files files;
  if (rc == 0 && (cfg.data_mode == TRAIN_DATA_STREAM ? data_files_find_stream : data_files_find)(
                     &files, cfg.data_folder, e, sizeof e) != 0) {
    rc = -1;
  }
  if (rc != 0) snprintf(err, eb, "train flags: %s", e);
  return rc;
}

/* The metrics `tfdist train` writes to metrics.jsonl (train/train.c): a
 * name it never writes would leave every trial without a report. */
static int tune_check_metric(const char *metric, char *err, size_t eb) {
  static const char *const names[] = {
      "training_acc", "validation_acc", "loss", "train_acc_mean", "validation_loss",
      "samples_per_s", "step_time_ms", "epoch_time_s", "data_wait_s", "learning_rate",
      "final_acc"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!strcmp(metric, names[i])) return 0;
  }
  snprintf(err, eb, "--metric: '%s' is not a metric tfdist train writes (validation_acc, "
           "training_acc, final_acc, ...)", metric);
  return -1;
}

/* argv[1..n) are tune's flags; train's follow a "--". */
static int tune_split(int argc, char **argv) {
  for (int i = 1; i < argc; i++) if (!strcmp(argv[i], "--")) return i;
  return argc;
}

static int tune_parse(tune_opts *o, tune_space *s, int argc, char **argv, int *pass_at,
                      char *err, size_t eb) {
  int n = tune_split(argc, argv);
  *pass_at = n < argc ? n + 1 : argc;
  if (opt_defaults(&tune_options, o, err, eb) != 0 ||
      opt_apply_argv(&tune_options, o, n - 1, argv + 1, NULL, 0, NULL, err, eb) != 0) {
    return -1;
  }
  if (o->space[0]) return tune_space_load(s, o->space, err, eb);
  tune_space_default(s);
  return 0;
}

static void tune_print_plan(const tune_trials *tt) {
  for (int i = 0; i < tt->count; i++) {
    char line[2048];
    tune_trial_flags(tt, &tt->trial[i], line, sizeof line);
    printf("%s %s\n", tt->trial[i].id, line);
  }
}

int cli_tune(int argc, char **argv) {
  static tune_opts o;
  static tune_space space;
  static tune_trials tt;
  char err[4600] = "";
  int pass_at = argc;
  if (opt_wants_help(tune_split(argc, argv) - 1, argv + 1)) {
    opt_print_help(&tune_options, tune_usage, stdout);
    return CLI_OK;
  }
  if (tune_parse(&o, &space, argc, argv, &pass_at, err, sizeof err) != 0 ||
      tune_check_metric(o.metric, err, sizeof err) != 0 ||
      tune_check_passthrough(&space, argc - pass_at, argv + pass_at, err, sizeof err) != 0 ||
      tune_trials_init(&tt, &space, (int)o.trials, (uint64_t)o.seed, o.outputs, argc - pass_at,
                       argv + pass_at, err, sizeof err) != 0 ||
      tune_check_train_flags(&tt, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    tune_trials_free(&tt);
    return CLI_USAGE;
  }
  snprintf(tt.tensorboard, sizeof tt.tensorboard, "%s", o.tensorboard);
  if (o.dry_run || tune_trials_prepare(&tt, err, sizeof err) != 0) {
    if (o.dry_run) tune_print_plan(&tt);
    else fprintf(stderr, "tfdist: error: %s\n", err);
    tune_trials_free(&tt);
    return o.dry_run ? CLI_OK : CLI_USAGE;
  }
  tune_run_config rc = {.concurrent = (int)o.concurrent, .metric = o.metric,
                        .policy = {.slack = o.slack_factor,
                                   .interval = (int)o.evaluation_interval,
                                   .delay = (int)o.delay_evaluation},
                        .stop = &tune_signal, .signals = &tune_signals, .log = stdout};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = tune_on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGCHLD, SIG_DFL); /* an inherited SIG_IGN reaps the trials before tune can */
  sigset_t stops; /* and an inherited mask may block them */
  sigemptyset(&stops);
  sigaddset(&stops, SIGINT);
  sigaddset(&stops, SIGTERM);
  sigprocmask(SIG_UNBLOCK, &stops, NULL);
  int done = tune_trials_run(&tt, &rc, err, sizeof err);
  if (done < 0) fprintf(stderr, "tfdist: error: %s\n", err);
  else tune_trials_report(&tt, o.metric, stdout);
  tune_trials_free(&tt);
  if (tune_signal) return 128 + tune_signal;
  return done > 0 ? CLI_OK : CLI_FAIL;
}
