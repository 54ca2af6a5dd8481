/* Reading, merging and listing timelines: see timeline_read.h. The summary
 * is in timeline_summary.c. */
#include "timeline/timeline_read.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"

/* The writer's events are under 1 KiB; cJSON takes ~40x a line's size, so a
 * corrupt file's giant line is refused rather than parsed. */
#define TIMELINE_LINE_MAX (1 << 20)

/* A pid or tid: a whole number in [0, 1e6]. */
static int timeline_id_ok(const cJSON *v) {
  return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 1e6 &&
         v->valuedouble == floor(v->valuedouble);
}

/* Fills e from one event object; "" when it is fine, else the bad field.
 * Numbers are finite: 1e999 parses as inf, and would print as null. */
static const char *timeline_event_parse(const cJSON *o, timeline_event *e) {
  const cJSON *ph = cJSON_GetObjectItemCaseSensitive(o, "ph");
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
  const cJSON *pid = cJSON_GetObjectItemCaseSensitive(o, "pid");
  const cJSON *tid = cJSON_GetObjectItemCaseSensitive(o, "tid");
  if (!cJSON_IsString(ph) || strlen(ph->valuestring) != 1) return "ph";
  if (!cJSON_IsString(name)) return "name";
  if (!timeline_id_ok(pid)) return "pid";
  if (!timeline_id_ok(tid)) return "tid";
  memset(e, 0, sizeof *e);
  e->ph = ph->valuestring[0];
  e->name = name->valuestring;
  e->pid = pid->valueint;
  e->tid = tid->valueint;
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "args");
  if (e->ph == 'M') {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(args, "name");
    if (!cJSON_IsString(n)) return "args.name";
    e->meta = n->valuestring;
    return "";
  }
  if (e->ph != 'X') return "ph";
  const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
  const cJSON *dur = cJSON_GetObjectItemCaseSensitive(o, "dur");
  if (!cJSON_IsNumber(ts) || !isfinite(ts->valuedouble)) return "ts";
  if (!cJSON_IsNumber(dur) || !(dur->valuedouble >= 0) || !isfinite(dur->valuedouble)) return "dur";
  e->ts = ts->valuedouble;
  e->dur = dur->valuedouble;
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(args, "queued_us");
  if (cJSON_IsNumber(q) && !isfinite(q->valuedouble)) return "args.queued_us";
  if (cJSON_IsNumber(q)) e->queued_us = q->valuedouble;
  return "";
}

/* One line: '[', ']', or an event (after a ',' but the first). 1 on the
 * closing ']', 0 otherwise, -1 on error. cut: the file's last line, without
 * its newline: a write cut short by a kill, skipped unless it is whole. */
static int timeline_line(char *line, long no, const char *path, int cut, timeline_event_fn fn,
                         void *ctx, char *err, size_t eb) {
  size_t len = strlen(line);
  while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) {
    line[--len] = '\0';
  }
  char *p = line;
  if (*p == ',') p++;
  if (no == 1 || *p == ']' || *p == '\0') {
    if (no == 1 && strcmp(p, "[") != 0) {
      snprintf(err, eb, "%s:1: not a timeline (its first line is not '[')", path);
      return -1;
    }
    return *p == ']' ? 1 : 0;
  }
  cJSON *o = cJSON_ParseWithOpts(p, NULL, 1); /* 1: nothing may follow (merge copies the line) */
  if (cut && !cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return 0;
  }
  timeline_event e;
  const char *bad = cJSON_IsObject(o) ? timeline_event_parse(o, &e) : NULL;
  int rc = 0;
  if (!bad) {
    snprintf(err, eb, "%s:%ld: not a JSON object", path, no);
    rc = -1;
  } else if (*bad) {
    snprintf(err, eb, "%s:%ld: field '%s' is missing or invalid", path, no, bad);
    rc = -1;
  } else if (fn(ctx, &e, p) != 0) {
    rc = -1;
  }
  cJSON_Delete(o);
  return rc;
}

int timeline_read(const char *path, timeline_event_fn fn, void *ctx, char *err, size_t err_bytes) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    return -1;
  }
  char *line = NULL;
  size_t cap = 0;
  long no = 0;
  int rc = 0, ended = 0;
  ssize_t got;
  while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
    no++;
    if (ended) {
      snprintf(err, err_bytes, "%s:%ld: data after the closing ']'", path, no);
      rc = -1;
      break;
    }
    if (got > TIMELINE_LINE_MAX) {
      snprintf(err, err_bytes, "%s:%ld: line longer than %d bytes (not a timeline event)", path,
               no, TIMELINE_LINE_MAX);
      rc = -1;
      break;
    }
    int r = timeline_line(line, no, path, line[got - 1] != '\n', fn, ctx, err, err_bytes);
    if (r < 0) rc = -1;
    if (r > 0) ended = 1;
  }
  if (rc == 0 && no == 0) {
    snprintf(err, err_bytes, "%s: empty file, not a timeline", path);
    rc = -1;
  }
  free(line);
  fclose(f);
  return rc;
}

/* ---- listing a folder ---- */

typedef struct {
  int rank, part;
  char *path;
} timeline_file;

static int timeline_file_cmp(const void *a, const void *b) {
  const timeline_file *x = a, *y = b;
  return x->rank != y->rank ? (x->rank < y->rank ? -1 : 1) : x->part - y->part;
}

/* timeline-<r>.json or timeline-<r>.json.part: the rank, else -1. */
static int timeline_file_rank(const char *name, int *part) {
  int rank, end = 0;
  if (sscanf(name, "timeline-%d.json%n", &rank, &end) != 1 || rank < 0 || end == 0) return -1;
  *part = !strcmp(name + end, ".part");
  return name[end] == '\0' || *part ? rank : -1;
}

/* Sorted by rank, a rank's .json before its .part: keeps one per rank. */
static int timeline_files_pick(timeline_file *fs, int n, char ***paths, int *out_n) {
  qsort(fs, (size_t)n, sizeof *fs, timeline_file_cmp);
  *paths = calloc((size_t)n + 1, sizeof **paths);
  if (!*paths) return -1;
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (k && i && fs[i].rank == fs[i - 1].rank) free(fs[i].path);
    else (*paths)[k++] = fs[i].path;
  }
  *out_n = k;
  return 0;
}

static int timeline_folder(const char *dir, char ***paths, int *n, char *err, size_t eb) {
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(err, eb, "%s: %s", dir, strerror(errno));
    return -1;
  }
  timeline_file *fs = NULL;
  int count = 0, cap = 0, rc = 0;
  for (struct dirent *de; rc == 0 && (de = readdir(d));) {
    int part, rank = timeline_file_rank(de->d_name, &part);
    if (rank < 0) continue;
    if (count == cap) {
      cap = cap ? 2 * cap : 16;
      timeline_file *g = realloc(fs, (size_t)cap * sizeof *fs);
      if (!g) { rc = -1; break; }
      fs = g;
    }
    size_t len = strlen(dir) + strlen(de->d_name) + 2;
    fs[count].path = malloc(len);
    if (!fs[count].path) { rc = -1; break; }
    snprintf(fs[count].path, len, "%s/%s", dir, de->d_name);
    fs[count].rank = rank;
    fs[count++].part = part;
  }
  closedir(d);
  if (rc == 0 && count == 0) {
    snprintf(err, eb, "%s: no timeline-<rank>.json here (train with --timeline on)", dir);
    rc = 1;
  } else if (rc == 0 && timeline_files_pick(fs, count, paths, n) != 0) {
    rc = -1;
  }
  if (rc < 0) snprintf(err, eb, "%s: out of memory", dir);
  if (rc != 0) for (int i = 0; i < count; i++) free(fs[i].path);
  free(fs);
  return rc ? -1 : 0;
}

void timeline_remove_ranks_from(const char *dir, int ranks) {
  DIR *d = opendir(dir);
  if (!d) return;
  for (struct dirent *de; (de = readdir(d));) {
    int part, rank = timeline_file_rank(de->d_name, &part);
    if (rank < ranks) continue;
    char path[4400];
    snprintf(path, sizeof path, "%.4000s/%s", dir, de->d_name);
    unlink(path); /* another node's rank may have taken it first: fine */
  }
  closedir(d);
}

int timeline_paths(const char *arg, char ***paths, int *n, char *err, size_t err_bytes) {
  struct stat st;
  if (stat(arg, &st) != 0) {
    snprintf(err, err_bytes, "%s: %s", arg, strerror(errno));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) return timeline_folder(arg, paths, n, err, err_bytes);
  *paths = calloc(1, sizeof **paths);
  if (*paths) (*paths)[0] = strdup(arg);
  if (!*paths || !(*paths)[0]) {
    free(*paths);
    snprintf(err, err_bytes, "%s: out of memory", arg);
    return -1;
  }
  *n = 1;
  return 0;
}

void timeline_paths_free(char **paths, int n) {
  for (int i = 0; paths && i < n; i++) free(paths[i]);
  free(paths);
}

/* ---- merging ---- */

typedef struct {
  FILE *out;
  int events;
  int *pids; /* ranks of the files before this one, and this one's */
  int npids, first_of_file, cap;
  const char **owner; /* which file each pid came from */
  const char *path;
  char *err;
  size_t eb;
} timeline_merger;

/* A rank seen in an earlier file: the folder mixes two runs (or a merged trace). */
static int timeline_merge_pid(timeline_merger *m, int pid) {
  for (int i = 0; i < m->npids; i++) {
    if (m->pids[i] != pid) continue;
    if (i >= m->first_of_file) return 0;
    snprintf(m->err, m->eb, "%s: rank %d is also in %s (timelines of two runs?)", m->path, pid,
             m->owner[i]);
    return -1;
  }
  if (m->npids == m->cap) {
    m->cap = m->cap ? 2 * m->cap : 16;
    int *p = realloc(m->pids, (size_t)m->cap * sizeof *p);
    const char **o = p ? realloc(m->owner, (size_t)m->cap * sizeof *o) : NULL;
    if (p) m->pids = p;
    if (!o) {
      snprintf(m->err, m->eb, "%s: out of memory", m->path);
      return -1;
    }
    m->owner = o;
  }
  m->owner[m->npids] = m->path;
  m->pids[m->npids++] = pid;
  return 0;
}

static int timeline_merge_event(void *ctx, const timeline_event *e, const char *line) {
  timeline_merger *m = ctx;
  if (timeline_merge_pid(m, e->pid) != 0) return -1;
  fprintf(m->out, "%s%s\n", m->events++ ? "," : "", line);
  return 0;
}

/* Whether out is one of the inputs: the rename would replace a rank's trace
 * with the merged one, and the folder would then hold every rank twice. */
static int timeline_merge_over_input(const char *out, char **paths, int n, char *err,
                                     size_t err_bytes) {
  struct stat o, in;
  if (stat(out, &o) != 0) return 0;
  for (int i = 0; i < n; i++) {
    if (stat(paths[i], &in) == 0 && in.st_dev == o.st_dev && in.st_ino == o.st_ino) {
      snprintf(err, err_bytes, "%s: --out names one of the timelines to merge", out);
      return 1;
    }
  }
  return 0;
}

int timeline_merge(const char *out, char **paths, int n, char *err, size_t err_bytes) {
  if (timeline_merge_over_input(out, paths, n, err, err_bytes)) return -1;
  char tmp[4300];
  timeline_merger m = {.err = err, .eb = err_bytes};
  int fd = fs_tmp_create(out, tmp, sizeof tmp, err, err_bytes);
  if (fd < 0) return -1;
  m.out = fdopen(fd, "w");
  if (!m.out) {
    snprintf(err, err_bytes, "%s: %s", out, strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  fputs("[\n", m.out);
  int rc = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    m.path = paths[i];
    m.first_of_file = m.npids;
    rc = timeline_read(paths[i], timeline_merge_event, &m, err, err_bytes);
  }
  fputs("]\n", m.out);
  if (fclose(m.out) != 0 && rc == 0) {
    snprintf(err, err_bytes, "%s: %s", out, strerror(errno));
    rc = -1;
  }
  if (rc == 0) rc = fs_commit(tmp, out, err, err_bytes);
  else unlink(tmp);
  free(m.pids);
  free(m.owner);
  return rc;
}
