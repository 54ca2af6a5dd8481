/* Trial processes of `tfdist tune`: launch, watch, stop, reap, record. */
#include "tune/tune_trial.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/clock.h"

#define TUNE_POLL_NS 200000000L
#define TUNE_STOP_POLL_NS 20000000L
/* train stops within a step of SIGTERM; one that does not is hung */
#define TUNE_KILL_AFTER_S 30.0

int tune_trials_init(tune_trials *tt, const tune_space *s, int n, uint64_t seed,
                     const char *outputs, int pass_argc, char **pass_argv, char *err,
                     size_t eb) {
  memset(tt, 0, sizeof *tt);
  tt->space = s;
  tt->pass_argc = pass_argc;
  tt->pass_argv = pass_argv;
  snprintf(tt->outputs, sizeof tt->outputs, "%s", outputs);
  ssize_t len = readlink("/proc/self/exe", tt->exe, sizeof tt->exe - 1);
  if (len <= 0) {
    snprintf(err, eb, "/proc/self/exe: %s", strerror(errno));
    return -1;
  }
  tt->exe[len] = '\0';
  if (!(tt->trial = calloc((size_t)n, sizeof *tt->trial))) {
    snprintf(err, eb, "out of memory for %d trials", n);
    return -1;
  }
  tt->count = n;
  for (int i = 0; i < n; i++) {
    tune_trial *t = &tt->trial[i];
    snprintf(t->id, sizeof t->id, "trial-%02d", i + 1);
    snprintf(t->dir, sizeof t->dir, "%s/%s", outputs, t->id);
    tune_space_sample(s, seed, i, t->values);
    t->best = t->last = NAN;
    snprintf(t->status, sizeof t->status, "NotStarted");
  }
  return 0;
}

void tune_trials_free(tune_trials *tt) {
  free(tt->trial);
  memset(tt, 0, sizeof *tt);
}

void tune_trial_argv_free(char **argv) {
  for (char **a = argv; a && *a; a++) free(*a);
  free(argv);
}

int tune_trial_argv(const tune_trials *tt, const tune_trial *t, char ***out, int with_dirs) {
  int cap = 2 + tt->pass_argc + 2 * tt->space->count + 9, n = 0;
  char **argv = calloc((size_t)cap, sizeof *argv), buf[4300];
  if (!argv) return -1;
  argv[n++] = strdup(tt->exe);
  argv[n++] = strdup("train");
  for (int i = 0; i < tt->pass_argc; i++) argv[n++] = strdup(tt->pass_argv[i]);
  for (int i = 0; i < tt->space->count; i++) {
    const tune_param *p = &tt->space->params[i];
    snprintf(buf, sizeof buf, "--%s", p->flag);
    argv[n++] = strdup(buf);
    tune_value_format(p, t->values[i], buf, sizeof buf);
    argv[n++] = strdup(buf);
  }
  if (with_dirs) {
    const char *kv[] = {"--outputs", "outputs", "--logs", "logs"};
    for (int k = 0; k < 4; k += 2) {
      argv[n++] = strdup(kv[k]);
      snprintf(buf, sizeof buf, "%s/%s", t->dir, kv[k + 1]);
      argv[n++] = strdup(buf);
    }
    argv[n++] = strdup("--progress");
    argv[n++] = strdup("off");
    if (tt->tensorboard[0]) { /* one TensorBoard run per trial, side by side */
      argv[n++] = strdup("--tensorboard");
      snprintf(buf, sizeof buf, "%.4000s/%s", tt->tensorboard, t->id);
      argv[n++] = strdup(buf);
    }
  }
  for (int i = 0; i < n; i++) {
    if (!argv[i]) {
      tune_trial_argv_free(argv);
      return -1;
    }
  }
  *out = argv;
  return n;
}

void tune_trial_flags(const tune_trials *tt, const tune_trial *t, char *out, size_t n) {
  size_t at = 0;
  out[0] = '\0';
  for (int i = 0; i < tt->space->count && at < n; i++) {
    char v[64];
    tune_value_format(&tt->space->params[i], t->values[i], v, sizeof v);
    at += (size_t)snprintf(out + at, n - at, "%s--%s %s", i ? " " : "", tt->space->params[i].flag,
                           v);
  }
}

/* The child between fork and exec: tune's handlers must not swallow a
 * signal meant for the trial (they were inherited; a pending one now takes
 * the default action), and the trial must not outlive tune: if tune dies,
 * the kernel sends it SIGTERM, and it records Canceled. */
static void tune_trial_child(pid_t parent, const sigset_t *mask, const char *log, char **argv) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  setpgid(0, 0);
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
  sigset_t unblocked = *mask; /* tune's own mask, less what stops a trial */
  sigdelset(&unblocked, SIGINT);
  sigdelset(&unblocked, SIGTERM);
  sigprocmask(SIG_SETMASK, &unblocked, NULL);
  /* A trial is a run of its own: a TF_CONFIG meant for tune's job would make
   * every trial join that cluster (and fight over its port). */
  unsetenv("TF_CONFIG");
  char ignored[64]; /* the child has no one to tell: exit 127 below */
  int fd = fs_open_nofollow(log, O_WRONLY | O_TRUNC, ignored, sizeof ignored);
  int in = open("/dev/null", O_RDONLY);
  if (fd < 0 || in < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || dup2(in, 0) < 0) _exit(127);
  execv(argv[0], argv);
  _exit(127);
}

/* fork + exec `tfdist train`, output to <dir>/train.log, in its own process
 * group so a terminal's Ctrl-C reaches tune alone (which stops the trials). */
static int tune_trial_start(const tune_trials *tt, tune_trial *t, char *err, size_t eb) {
  char **argv = NULL, log[4300];
  if (fs_mkdirs(t->dir, err, eb) != 0) return -1;
  if (tune_trial_argv(tt, t, &argv, 1) < 0) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  snprintf(log, sizeof log, "%s/train.log", t->dir);
  sigset_t block, mask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &mask); /* until the child has dropped tune's handlers */
  pid_t parent = getpid(), pid = fork();
  if (pid == 0) tune_trial_child(parent, &mask, log, argv);
  if (pid > 0) setpgid(pid, pid); /* also here: either may run first */
  int fork_errno = errno;
  sigprocmask(SIG_SETMASK, &mask, NULL);
  tune_trial_argv_free(argv);
  if (pid < 0) {
    snprintf(err, eb, "fork: %s", strerror(fork_errno));
    return -1;
  }
  t->pid = pid;
  t->state = TUNE_RUNNING;
  t->started = clock_mono_s();
  snprintf(t->status, sizeof t->status, "Running");
  return 0;
}

/* SIGTERM, once: the trial records Canceled and exits. */
static void tune_trial_term(tune_trial *t) {
  if (t->state != TUNE_RUNNING || t->term_sent > 0) return;
  kill(t->pid, SIGTERM);
  t->term_sent = clock_mono_s();
}

/* One report of the metric: the board learns it, then the policy judges. */
static void tune_trial_report(tune_trial *t, tune_board *board, const tune_run_config *cfg,
                              double v) {
  t->reports++;
  t->last = v;
  if (!(t->best >= v)) t->best = v;
  tune_board_add(board, t->reports, t->best);
  if (tune_bandit_stops(&cfg->policy, board, t->reports, t->best)) {
    t->stopped_at = t->reports;
    t->stop_bar = board->best[t->reports - 1] / (1.0 + cfg->policy.slack);
    tune_trial_term(t);
    fprintf(cfg->log, "%s stopped at report %d: best %s %.4f < %.4f (leader %.4f / %.2f)\n", t->id,
           t->reports, cfg->metric, t->best, t->stop_bar, board->best[t->reports - 1],
           1.0 + cfg->policy.slack);
  }
}

/* New whole lines of the trial's metrics.jsonl. Once stopped, it is not
 * read again: what it reports after the decision counts for nothing. */
static void tune_trial_read(tune_trial *t, tune_board *board, const tune_run_config *cfg) {
  char path[4300], line[4096];
  snprintf(path, sizeof path, "%s/outputs/metrics.jsonl", t->dir);
  FILE *f = fopen(path, "r");
  if (!f || fseek(f, t->metrics_off, SEEK_SET) != 0) {
    if (f) fclose(f);
    return;
  }
  while (!t->stopped_at && fgets(line, sizeof line, f) && strchr(line, '\n')) {
    t->metrics_off += (long)strlen(line);
    cJSON *row = cJSON_Parse(line);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(row, "name");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(row, "value");
    if (cJSON_IsString(name) && !strcmp(name->valuestring, cfg->metric) &&
        cJSON_IsNumber(value) && isfinite(value->valuedouble)) {
      tune_trial_report(t, board, cfg, value->valuedouble);
    }
    cJSON_Delete(row);
  }
  fclose(f);
}

/* The run's own final status from its run.json. One that ended without
 * recording it (run.json missing or still Preparing or Running) failed,
 * unless tune's own signal ended it before train could record it. */
static void tune_trial_status(tune_trial *t) {
  char path[4300], err[256];
  snprintf(path, sizeof path, "%s/outputs/run.json", t->dir);
  char *text = fs_read_all(path, NULL, err, sizeof err);
  cJSON *run = text ? cJSON_Parse(text) : NULL;
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(run, "status");
  const char *s = cJSON_IsString(st) ? st->valuestring : "";
  int final = !strcmp(s, "Completed") || !strcmp(s, "Failed") || !strcmp(s, "Canceled");
  snprintf(t->status, sizeof t->status, "%s",
           final ? s : t->term_sent > 0 ? "Canceled" : "Failed");
  /* Stopped by the policy, whether or not the signal beat its last epoch. */
  if (t->stopped_at && strcmp(t->status, "Failed") != 0) {
    snprintf(t->status, sizeof t->status, "EarlyTerminated");
  }
  cJSON_Delete(run);
  free(text);
}

/* "0.8659", or "-" for a trial with no report yet (NaN inside). */
static void tune_value_str(double v, char *out, size_t bytes) {
  if (isnan(v)) snprintf(out, bytes, "-");
  else snprintf(out, bytes, "%.4f", v);
}

static void tune_trial_reap(tune_trial *t, tune_board *board, const tune_run_config *cfg,
                            int wstatus) {
  t->state = TUNE_DONE; /* first: its pid may be another process's now, never signal it */
  tune_trial_read(t, board, cfg);
  t->ended = clock_mono_s();
  t->exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  tune_trial_status(t);
  char see[4300] = "";
  if (!strcmp(t->status, "Failed")) snprintf(see, sizeof see, "; see %s/train.log", t->dir);
  char last[32], best[32];
  tune_value_str(t->last, last, sizeof last);
  tune_value_str(t->best, best, sizeof best);
  fprintf(cfg->log, "%s %s after %.1f s: %s %s (best %s, %d reports)%s\n", t->id, t->status,
          t->ended - t->started, cfg->metric, last, best, t->reports, see);
}

static cJSON *tune_trial_json(const tune_trials *tt, const tune_trial *t) {
  cJSON *o = cJSON_CreateObject(), *params = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", t->id);
  for (int i = 0; i < tt->space->count; i++) {
    const tune_param *p = &tt->space->params[i];
    if (p->strings) {
      char w[TUNE_LABEL_BYTES];
      tune_value_format(p, t->values[i], w, sizeof w);
      cJSON_AddStringToObject(params, p->flag, w);
    } else {
      cJSON_AddNumberToObject(params, p->flag, t->values[i]);
    }
  }
  cJSON_AddItemToObject(o, "params", params);
  cJSON_AddStringToObject(o, "status", t->status);
  cJSON_AddNumberToObject(o, "reports", t->reports);
  cJSON_AddItemToObject(o, "final", isfinite(t->last) ? cJSON_CreateNumber(t->last) : cJSON_CreateNull());
  cJSON_AddItemToObject(o, "best", isfinite(t->best) ? cJSON_CreateNumber(t->best) : cJSON_CreateNull());
  if (t->stopped_at) {
    cJSON *st = cJSON_AddObjectToObject(o, "early_termination");
    cJSON_AddNumberToObject(st, "report", t->stopped_at);
    cJSON_AddNumberToObject(st, "bar", t->stop_bar);
  }
  if (t->state == TUNE_DONE) {
    cJSON_AddNumberToObject(o, "exit_code", t->exit_code);
    cJSON_AddNumberToObject(o, "seconds", t->ended - t->started);
  }
  cJSON_AddStringToObject(o, "outputs", t->dir);
  return o;
}

/* The best Completed trial by its final value; -1 when none completed. */
static int tune_best(const tune_trials *tt) {
  int best = -1;
  for (int i = 0; i < tt->count; i++) {
    const tune_trial *t = &tt->trial[i];
    if (strcmp(t->status, "Completed") != 0 || !isfinite(t->last)) continue;
    if (best < 0 || t->last > tt->trial[best].last) best = i;
  }
  return best;
}

/* tune.json, when its text differs from *last (the text last written, kept
 * there): a poll with no progress writes and fsyncs nothing. */
static int tune_write_json(const tune_trials *tt, const tune_run_config *cfg, const char *status,
                           char **last, char *err, size_t eb) {
  cJSON *o = cJSON_CreateObject(), *trials = cJSON_CreateArray();
  cJSON_AddStringToObject(o, "status", status);
  cJSON_AddStringToObject(o, "metric", cfg->metric);
  cJSON_AddStringToObject(o, "goal", "maximize");
  cJSON *p = cJSON_AddObjectToObject(o, "policy");
  cJSON_AddStringToObject(p, "type", "bandit");
  cJSON_AddNumberToObject(p, "slack_factor", cfg->policy.slack);
  cJSON_AddNumberToObject(p, "evaluation_interval", cfg->policy.interval);
  cJSON_AddNumberToObject(p, "delay_evaluation", cfg->policy.delay);
  cJSON_AddNumberToObject(o, "concurrent", cfg->concurrent);
  for (int i = 0; i < tt->count; i++) cJSON_AddItemToArray(trials, tune_trial_json(tt, &tt->trial[i]));
  cJSON_AddItemToObject(o, "trials", trials);
  int best = tune_best(tt);
  cJSON_AddItemToObject(o, "best_trial",
                        best >= 0 ? cJSON_CreateString(tt->trial[best].id) : cJSON_CreateNull());
  char path[4200];
  snprintf(path, sizeof path, "%s/tune.json", tt->outputs);
  char *text = cJSON_Print(o);
  cJSON_Delete(o);
  if (!text) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  if (*last && !strcmp(*last, text)) {
    free(text);
    return 0;
  }
  int rc = fs_write_atomic(path, text, strlen(text), err, eb);
  if (rc == 0) {
    free(*last);
    *last = text;
  } else {
    free(text);
  }
  return rc;
}

/* Trials that ended since the last look. Each trial's own pid is asked, so
 * no other child of this process is ever reaped here. A trial that outlives
 * its SIGTERM by TUNE_KILL_AFTER_S (or every one, with kill_now) gets SIGKILL. */
static int tune_reap_any(tune_trials *tt, tune_board *board, const tune_run_config *cfg,
                         int kill_now) {
  int n = 0, ws;
  for (int i = 0; i < tt->count; i++) {
    tune_trial *t = &tt->trial[i];
    if (t->state != TUNE_RUNNING) continue;
    pid_t pid = waitpid(t->pid, &ws, WNOHANG);
    int gone = pid < 0 && errno == ECHILD; /* reaped behind our back: exit code unknown */
    if (pid == t->pid || gone) {
      tune_trial_reap(t, board, cfg, gone ? W_EXITCODE(255, 0) : ws);
      n++;
    } else if (pid == 0 && t->term_sent > 0 && !t->killed &&
               (kill_now || clock_mono_s() - t->term_sent > TUNE_KILL_AFTER_S)) {
      kill(t->pid, SIGKILL);
      t->killed = 1;
      fprintf(cfg->log, "%s did not stop on SIGTERM: killed\n", t->id);
    }
  }
  return n;
}

int tune_trials_prepare(const tune_trials *tt, char *err, size_t eb) {
  char path[4200];
  struct stat st;
  if (fs_mkdirs(tt->outputs, err, eb) != 0) return -1;
  snprintf(path, sizeof path, "%s/tune.json", tt->outputs);
  if (stat(path, &st) == 0) {
    snprintf(err, eb, "--outputs %s: holds an earlier tune (tune.json); choose another folder",
             tt->outputs);
    return -1;
  }
  /* An earlier trial's metrics.jsonl and run.json would be read as the new
   * trial's until train replaced them. */
  for (int i = 0; i < tt->count; i++) {
    if (stat(tt->trial[i].dir, &st) == 0) {
      snprintf(err, eb, "--outputs %s: holds %s of an earlier tune; choose another folder",
               tt->outputs, tt->trial[i].id);
      return -1;
    }
  }
  return 0;
}

/* Stopping: every running trial gets SIGTERM (it records Canceled) and is
 * waited for; one more signal to tune kills the ones still running. The ones
 * never started stay NotStarted. */
static void tune_stop_all(tune_trials *tt, tune_board *board, const tune_run_config *cfg) {
  const sig_atomic_t signals = *cfg->signals;
  int running = 0;
  for (int i = 0; i < tt->count; i++) {
    if (tt->trial[i].state != TUNE_RUNNING) continue;
    tune_trial_term(&tt->trial[i]);
    running++;
  }
  while (running > 0) {
    running -= tune_reap_any(tt, board, cfg, *cfg->signals != signals);
    struct timespec ts = {0, TUNE_STOP_POLL_NS};
    if (running > 0) nanosleep(&ts, NULL);
  }
}

int tune_trials_run(tune_trials *tt, const tune_run_config *cfg, char *err, size_t eb) {
  tune_board board = {0};
  int next = 0, running = 0, rc = 0;
  char *last = NULL;
  while ((next < tt->count || running > 0) && !*cfg->stop && rc == 0) {
    while (running < cfg->concurrent && next < tt->count && !*cfg->stop) {
      tune_trial *t = &tt->trial[next++];
      char flags[2048];
      if ((rc = tune_trial_start(tt, t, err, eb)) != 0) break;
      tune_trial_flags(tt, t, flags, sizeof flags);
      fprintf(cfg->log, "%s started: %s\n", t->id, flags);
      running++;
    }
    for (int i = 0; i < next; i++) {
      if (tt->trial[i].state == TUNE_RUNNING) tune_trial_read(&tt->trial[i], &board, cfg);
    }
    running -= tune_reap_any(tt, &board, cfg, 0);
    fflush(cfg->log);
    if (rc == 0) rc = tune_write_json(tt, cfg, "Running", &last, err, eb);
    struct timespec ts = {0, TUNE_POLL_NS};
    nanosleep(&ts, NULL);
  }
  if (*cfg->stop || rc != 0) tune_stop_all(tt, &board, cfg);
  tune_board_free(&board);
  char e2[512];
  if (tune_write_json(tt, cfg, *cfg->stop ? "Canceled" : rc ? "Failed" : "Completed", &last, e2,
                      sizeof e2) != 0 && rc == 0) {
    snprintf(err, eb, "%s", e2);
    rc = -1;
  }
  free(last);
  if (rc != 0) return -1;
  int done = 0;
  for (int i = 0; i < tt->count; i++) done += !strcmp(tt->trial[i].status, "Completed");
  return done;
}

void tune_trials_report(const tune_trials *tt, const char *metric, FILE *out) {
  int *order = malloc((size_t)tt->count * sizeof *order), n = 0;
  if (!order) return;
  for (int i = 0; i < tt->count; i++) order[n++] = i;
  for (int i = 1; i < n; i++) { /* by final value, best first; no value last */
    for (int j = i; j > 0; j--) {
      double a = tt->trial[order[j - 1]].last, b = tt->trial[order[j]].last;
      if (!(isnan(a) && !isnan(b)) && !(b > a)) break;
      int x = order[j];
      order[j] = order[j - 1];
      order[j - 1] = x;
    }
  }
  fprintf(out, "%-10s %-16s %8s %8s  flags\n", "trial", "status", metric[0] ? "final" : "", "best");
  for (int i = 0; i < n; i++) {
    const tune_trial *t = &tt->trial[order[i]];
    char flags[2048];
    tune_trial_flags(tt, t, flags, sizeof flags);
    char last[32], best[32]; /* a trial canceled before its first report has no value */
    tune_value_str(t->last, last, sizeof last);
    tune_value_str(t->best, best, sizeof best);
    fprintf(out, "%-10s %-16s %8s %8s  %s\n", t->id, t->status, last, best, flags);
  }
  int best = tune_best(tt);
  if (best >= 0) {
    char flags[2048];
    tune_trial_flags(tt, &tt->trial[best], flags, sizeof flags);
    fprintf(out, "best: %s %s %.4f: %s\n", tt->trial[best].id, metric, tt->trial[best].last,
            flags);
  } else {
    fprintf(out, "best: none (no trial completed)\n");
  }
  free(order);
}
