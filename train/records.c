/* run.json, metrics.jsonl and rank logs. */
#include "train/records.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/fsutil.h"

static const char *const run_status_names[RUN_STATUS_COUNT] = {
    "Preparing", "Running", "Finalizing", "Completed", "Failed", "Canceled"};

const char *run_status_name(run_status s) { return run_status_names[s]; }

void run_id_make(char *out, size_t out_bytes) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  unsigned salt = (unsigned)(ts.tv_nsec ^ (getpid() << 8)) & 0xffffffu;
  snprintf(out, out_bytes, "run-%04d%02d%02d-%02d%02d%02d-%06x", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, salt);
}

/* An flock, so a killed run never leaves a stale lock; the file holds the
 * owner's pid for the message. */
static int run_record_lock(run_record *r, const char *outputs, char *err, size_t err_bytes) {
  char path[4300], pid[32] = "";
  snprintf(path, sizeof path, "%s/.tfdist.lock", outputs);
  int fd = fs_open_nofollow(path, O_RDWR, err, err_bytes); /* a planted link: refused */
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ssize_t n = errno == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    snprintf(err, err_bytes, "--outputs %.4000s: in use by another tfdist run%s%s%s", outputs,
             pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
    close(fd);
    return -1;
  }
  char line[32];
  int len = snprintf(line, sizeof line, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len) {
    /* the pid is only for the message; the lock itself is held */
  }
  r->lock_fd = fd;
  r->locked = 1;
  return 0;
}

int run_record_init(run_record *r, const char *id, const char *outputs, cJSON *config,
                    char *err, size_t err_bytes) {
  memset(r, 0, sizeof *r);
  if (run_record_lock(r, outputs, err, err_bytes) != 0) {
    cJSON_Delete(config);
    return -1;
  }
  snprintf(r->id, sizeof r->id, "%s", id);
  snprintf(r->path, sizeof r->path, "%s/run.json", outputs);
  r->doc = cJSON_CreateObject();
  if (!r->doc) {
    snprintf(err, err_bytes, "out of memory");
    return -1;
  }
  cJSON_AddStringToObject(r->doc, "id", id);
  cJSON_AddItemToObject(r->doc, "config", config);
  return run_record_stage(r, RUN_PREPARING, err, err_bytes);
}

void run_record_set(run_record *r, const char *key, cJSON *item) {
  cJSON_DeleteItemFromObject(r->doc, key);
  cJSON_AddItemToObject(r->doc, key, item);
}

int run_record_stage(run_record *r, run_status s, char *err, size_t err_bytes) {
  r->status = s;
  r->stage_time[s] = clock_wall_s();
  cJSON *stages = cJSON_CreateObject();
  for (int i = 0; i < RUN_STATUS_COUNT; i++) {
    if (r->stage_time[i] > 0) cJSON_AddNumberToObject(stages, run_status_names[i], r->stage_time[i]);
  }
  run_record_set(r, "status", cJSON_CreateString(run_status_names[s]));
  run_record_set(r, "stage_times", stages);
  if (r->error[0]) run_record_set(r, "error", cJSON_CreateString(r->error));
  char *text = cJSON_Print(r->doc);
  if (!text) {
    snprintf(err, err_bytes, "out of memory");
    return -1;
  }
  size_t len = strlen(text);
  text[len] = '\n'; /* replaces the NUL; written with its length */
  int rc = fs_write_atomic(r->path, text, len + 1, err, err_bytes);
  free(text);
  return rc;
}

void run_record_free(run_record *r) {
  if (!r) return;
  cJSON_Delete(r->doc);
  r->doc = NULL;
  if (r->locked) close(r->lock_fd); /* releases the flock */
  r->locked = 0;
}

static volatile sig_atomic_t run_cancel_sig;

static void run_cancel_handler(int sig) { run_cancel_sig = sig; }

void run_cancel_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = run_cancel_handler;
  sa.sa_flags = SA_RESETHAND | SA_RESTART; /* the second signal takes the default action */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

void run_cancel_uninstall(void) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
}

int run_cancel_signal(void) { return (int)run_cancel_sig; }

int metrics_open(metrics_log *m, const char *outputs, int append, char *err, size_t err_bytes) {
  memset(m, 0, sizeof *m);
  snprintf(m->path, sizeof m->path, "%s/metrics.jsonl", outputs);
  m->fd = fs_open_nofollow(m->path, O_WRONLY | O_APPEND | (append ? 0 : O_TRUNC), err, err_bytes);
  if (m->fd < 0) return -1;
  m->is_open = 1;
  return 0;
}

int metrics_write(metrics_log *m, const char *name, double value, int64_t epoch, int64_t step) {
  if (!m->is_open) return 0;
  char line[512], num[32] = "null"; /* a diverged loss: nan is not JSON */
  /* %.17g round-trips doubles exactly, so eval can reproduce final_acc bit for bit. */
  if (isfinite(value)) snprintf(num, sizeof num, "%.17g", value);
  int n = snprintf(line, sizeof line,
                   "{\"name\":\"%s\",\"value\":%s,\"epoch\":%lld,\"step\":%lld,\"time\":%.6f}\n",
                   name, num, (long long)epoch, (long long)step, clock_wall_s());
  if (n < 0 || (size_t)n >= sizeof line) return -1;
  if (m->rows_len + (size_t)n > m->rows_cap) {
    size_t cap = m->rows_cap ? m->rows_cap * 2 : 4096;
    while (cap < m->rows_len + (size_t)n) cap *= 2;
    char *grown = realloc(m->rows, cap);
    if (!grown) return -1;
    m->rows = grown;
    m->rows_cap = cap;
  }
  memcpy(m->rows + m->rows_len, line, (size_t)n);
  m->rows_len += (size_t)n;
  return 0;
}

int metrics_sync(metrics_log *m, char *err, size_t err_bytes) {
  if (!m->is_open) return 0;
  struct stat st;
  if (fstat(m->fd, &st) != 0) {
    snprintf(err, err_bytes, "%.4000s: %s", m->path, strerror(errno));
    return -1;
  }
  if (fs_write_fd(m->fd, m->path, m->rows, m->rows_len, err, err_bytes) != 0) {
    if (ftruncate(m->fd, st.st_size) != 0) { /* err already says why the append failed */ }
    return -1;
  }
  m->rows_len = 0;
  if (fsync(m->fd) != 0) {
    snprintf(err, err_bytes, "%.4000s: fsync: %s", m->path, strerror(errno));
    return -1;
  }
  return 0;
}

void metrics_close(metrics_log *m) {
  if (m->is_open) close(m->fd);
  free(m->rows);
  memset(m, 0, sizeof *m);
}

int rank_log_open_task(rank_log *l, const char *logs, const char *kind, int index, char *err,
                       size_t err_bytes) {
  char path[4200];
  snprintf(l->who, sizeof l->who, "%.16s %d", kind, index);
  if (fs_mkdirs(logs, err, err_bytes) != 0) return -1;
  snprintf(path, sizeof path, "%s/%.16s-%d.log", logs, kind, index);
  /* Never through a link; and locked, so two runs sharing a logs folder
   * never write into each other's log: the second is refused. */
  int fd = fs_open_nofollow(path, O_WRONLY | O_APPEND, err, err_bytes);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(err, err_bytes, "%s: in use by another tfdist run (runs going at once need their "
             "own --logs)", path);
    close(fd);
    return -1;
  }
  if (!(l->f = fdopen(fd, "a"))) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  setvbuf(l->f, NULL, _IOLBF, 0);
  return 0;
}

int rank_log_open(rank_log *l, const char *logs, int rank, char *err, size_t err_bytes) {
  return rank_log_open_task(l, logs, "rank", rank, err, err_bytes);
}

void rank_log_printf(rank_log *l, const char *fmt, ...) {
  if (!l->f) return;
  time_t t = time(NULL);
  struct tm tm;
  char stamp[32];
  gmtime_r(&t, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(l->f, "%s %s: ", stamp, l->who);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(l->f, fmt, ap);
  va_end(ap);
  fputc('\n', l->f);
}

void rank_log_close(rank_log *l) {
  if (l->f) fclose(l->f);
  l->f = NULL;
}
