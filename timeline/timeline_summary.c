/* `tfdist timeline summary`: where each rank's step time goes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeline/timeline_read.h"

/* Spans the trainer writes once per epoch; every other main-thread span
 * but "step" is a phase of a step. */
static const char *const summary_epoch_spans[] = {"epoch steps", "device sync", "epoch metrics",
                                                  "evaluate", "checkpoint"};

/* The tid of a reduction's series: the collective thread runs one, or a
 * main thread waiting for it (coll_progress_wait); both are one row. */
#define SUMMARY_ANY_TID (-1)

typedef struct {
  char *name; /* owned; any length, so a long name is still one row */
  int tid;
  double *v; /* durations, us */
  size_t n, cap;
  double queued; /* sum of queued_us */
} summary_series;

typedef struct {
  double a, b;
} summary_ivl;

typedef struct {
  summary_ivl *v;
  size_t n, cap;
} summary_ivls;

typedef struct {
  int pid;
  const char *file; /* the one file this rank's events come from */
  char proc[256];
  summary_series *s;
  int ns, cap;
  summary_ivls backward, reduce; /* for the hidden share */
} summary_rank;

typedef struct {
  summary_rank *r;
  int nr, cap;
  const char *path;
  char *err;
  size_t eb;
} summary_all;

static int summary_grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap * 2 : 64;
  while (c < need) c *= 2;
  void *g = realloc(*p, c * size);
  if (!g) return -1;
  *p = g;
  *cap = c;
  return 0;
}

/* NULL with a->err set: out of memory, or the rank is also in an earlier
 * file (two runs' timelines, or a rank file and a merged trace). */
static summary_rank *summary_rank_get(summary_all *a, int pid) {
  for (int i = 0; i < a->nr; i++) {
    if (a->r[i].pid != pid) continue;
    if (a->r[i].file == a->path) return &a->r[i];
    snprintf(a->err, a->eb, "%s: rank %d is also in %s (timelines of two runs?)", a->path, pid,
             a->r[i].file);
    return NULL;
  }
  size_t cap = (size_t)a->cap;
  if (summary_grow((void **)&a->r, &cap, (size_t)a->nr + 1, sizeof *a->r) != 0) {
    snprintf(a->err, a->eb, "%s: out of memory", a->path);
    return NULL;
  }
  a->cap = (int)cap;
  summary_rank *r = &a->r[a->nr++];
  memset(r, 0, sizeof *r);
  r->pid = pid;
  r->file = a->path;
  return r;
}

static summary_series *summary_series_get(summary_rank *r, const char *name, int tid) {
  for (int i = 0; i < r->ns; i++) {
    if (r->s[i].tid == tid && !strcmp(r->s[i].name, name)) return &r->s[i];
  }
  size_t cap = (size_t)r->cap;
  if (summary_grow((void **)&r->s, &cap, (size_t)r->ns + 1, sizeof *r->s) != 0) return NULL;
  r->cap = (int)cap;
  summary_series *s = &r->s[r->ns];
  memset(s, 0, sizeof *s);
  s->name = strdup(name);
  if (!s->name) return NULL;
  r->ns++;
  s->tid = tid;
  return s;
}

static int summary_ivl_add(summary_ivls *l, double a, double b) {
  if (summary_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v) != 0) return -1;
  l->v[l->n++] = (summary_ivl){a, b};
  return 0;
}

/* An allreduce as it ran ("allreduce dense", "allreduce all layers"), not
 * the main thread's wait for them. */
static int summary_is_reduction(const char *name) {
  return !strncmp(name, "allreduce ", 10) && strcmp(name, "allreduce wait") != 0;
}

static int summary_event(void *ctx, const timeline_event *e, const char *line) {
  (void)line;
  summary_all *a = ctx;
  summary_rank *r = summary_rank_get(a, e->pid);
  if (!r) return -1;
  if (e->ph == 'M') {
    if (!strcmp(e->name, "process_name")) snprintf(r->proc, sizeof r->proc, "%s", e->meta);
    return 0;
  }
  const int reduce = summary_is_reduction(e->name);
  summary_series *s = summary_series_get(r, e->name, reduce ? SUMMARY_ANY_TID : e->tid);
  if (!s || summary_grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v) != 0) goto oom;
  s->v[s->n++] = e->dur;
  s->queued += e->queued_us;
  const int backward = !strncmp(e->name, "backward ", 9) && e->tid == 0;
  if ((reduce || backward) &&
      summary_ivl_add(reduce ? &r->reduce : &r->backward, e->ts, e->ts + e->dur) != 0) {
    goto oom;
  }
  return 0;
oom:
  snprintf(a->err, a->eb, "%s: out of memory", a->path);
  return -1;
}

static int summary_cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

static int summary_cmp_ivl(const void *x, const void *y) {
  return summary_cmp_double(&((const summary_ivl *)x)->a, &((const summary_ivl *)y)->a);
}

/* Time of the reductions that overlapped some backward span, over their
 * whole time. Backward spans never overlap one another (one thread). */
static double summary_hidden(summary_rank *r) {
  qsort(r->backward.v, r->backward.n, sizeof(summary_ivl), summary_cmp_ivl);
  qsort(r->reduce.v, r->reduce.n, sizeof(summary_ivl), summary_cmp_ivl);
  double total = 0, hidden = 0;
  size_t j = 0;
  for (size_t i = 0; i < r->reduce.n; i++) {
    const summary_ivl x = r->reduce.v[i];
    total += x.b - x.a;
    while (j < r->backward.n && r->backward.v[j].b <= x.a) j++;
    for (size_t k = j; k < r->backward.n && r->backward.v[k].a < x.b; k++) {
      const double lo = fmax(x.a, r->backward.v[k].a), hi = fmin(x.b, r->backward.v[k].b);
      if (hi > lo) hidden += hi - lo;
    }
  }
  return total > 0 ? hidden / total : NAN;
}

static int summary_is_epoch_span(const char *name) {
  for (size_t i = 0; i < sizeof summary_epoch_spans / sizeof *summary_epoch_spans; i++) {
    if (!strcmp(name, summary_epoch_spans[i])) return 1;
  }
  return 0;
}

static double summary_sum(const summary_series *s) {
  double t = 0;
  for (size_t i = 0; i < s->n; i++) t += s->v[i];
  return t;
}

/* Nearest rank on a sorted copy. */
static double summary_pct(const summary_series *s, double p) {
  if (!s->n) return 0;
  double *v = malloc(s->n * sizeof *v);
  if (!v) return NAN;
  memcpy(v, s->v, s->n * sizeof *v);
  qsort(v, s->n, sizeof *v, summary_cmp_double);
  size_t k = (size_t)ceil(p * (double)s->n);
  double x = v[k ? k - 1 : 0];
  free(v);
  return x;
}

static void summary_add_series(cJSON *arr, const summary_series *s, double step_total) {
  cJSON *o = cJSON_CreateObject();
  const double sum = summary_sum(s);
  cJSON_AddStringToObject(o, "name", s->name);
  cJSON_AddNumberToObject(o, "count", (double)s->n);
  cJSON_AddNumberToObject(o, "mean_us", sum / (double)s->n);
  cJSON_AddNumberToObject(o, "p50_us", summary_pct(s, 0.5));
  cJSON_AddNumberToObject(o, "p95_us", summary_pct(s, 0.95));
  if (step_total > 0) cJSON_AddNumberToObject(o, "share_of_step", sum / step_total);
  if (s->tid != 0) {
    cJSON_AddNumberToObject(o, "mean_queued_us", s->queued / (double)s->n);
  }
  cJSON_AddItemToArray(arr, o);
}

static const summary_series *summary_find(const summary_rank *r, const char *name, int tid) {
  for (int i = 0; i < r->ns; i++) {
    if (r->s[i].tid == tid && !strcmp(r->s[i].name, name)) return &r->s[i];
  }
  return NULL;
}

/* The wait for the others each step: the reduction, or the ps exchange. */
static const summary_series *summary_wait(const summary_rank *r) {
  const summary_series *w = summary_find(r, "allreduce wait", 0);
  if (!w) w = summary_find(r, "allreduce all layers", SUMMARY_ANY_TID);
  return w ? w : summary_find(r, "ps push and pull", 0);
}

/* Per rank, the share of steps it reached the reduction last: the rank the
 * others waited for is the one that waited least. Clock-free, so it holds
 * across nodes. last[] gets -1 when there is nothing to compare. */
static void summary_last_to_arrive(const summary_all *a, double *last) {
  size_t n = SIZE_MAX;
  for (int r = 0; r < a->nr; r++) {
    const summary_series *w = summary_wait(&a->r[r]);
    if (!w || w->n < n) n = w ? w->n : 0;
    last[r] = -1;
  }
  if (a->nr < 2 || n == 0) return;
  for (int r = 0; r < a->nr; r++) last[r] = 0;
  for (size_t i = 0; i < n; i++) {
    int who = 0;
    for (int r = 1; r < a->nr; r++) {
      if (summary_wait(&a->r[r])->v[i] < summary_wait(&a->r[who])->v[i]) who = r;
    }
    last[who] += 1.0 / (double)n;
  }
}

static cJSON *summary_rank_json(summary_rank *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "rank", r->pid);
  cJSON_AddStringToObject(o, "process", r->proc);
  const summary_series *step = summary_find(r, "step", 0);
  const double step_total = step ? summary_sum(step) : 0;
  cJSON_AddNumberToObject(o, "steps", step ? (double)step->n : 0);
  cJSON *phases = cJSON_AddArrayToObject(o, "phases");
  cJSON *reductions = cJSON_AddArrayToObject(o, "allreduce");
  cJSON *epochs = cJSON_AddArrayToObject(o, "epoch_spans");
  if (step) summary_add_series(phases, step, 0);
  for (int i = 0; i < r->ns; i++) {
    const summary_series *s = &r->s[i];
    if (s == step) continue;
    if (s->tid != 0) summary_add_series(reductions, s, step_total);
    else if (summary_is_epoch_span(s->name)) summary_add_series(epochs, s, 0);
    else summary_add_series(phases, s, step_total);
  }
  const double hidden = summary_hidden(r); /* NaN: no reduction */
  cJSON_AddItemToObject(o, "allreduce_hidden_by_backward",
                        isnan(hidden) ? cJSON_CreateNull() : cJSON_CreateNumber(hidden));
  return o;
}

static void summary_free(summary_all *a) {
  for (int i = 0; i < a->nr; i++) {
    for (int k = 0; k < a->r[i].ns; k++) {
      free(a->r[i].s[k].name);
      free(a->r[i].s[k].v);
    }
    free(a->r[i].s);
    free(a->r[i].backward.v);
    free(a->r[i].reduce.v);
  }
  free(a->r);
}

static int summary_cmp_rank(const void *x, const void *y) {
  return ((const summary_rank *)x)->pid - ((const summary_rank *)y)->pid;
}

cJSON *timeline_summarize(char **paths, int n, char *err, size_t err_bytes) {
  summary_all a = {.err = err, .eb = err_bytes};
  for (int i = 0; i < n; i++) {
    a.path = paths[i];
    if (timeline_read(paths[i], summary_event, &a, err, err_bytes) != 0) {
      summary_free(&a);
      return NULL;
    }
  }
  qsort(a.r, (size_t)a.nr, sizeof *a.r, summary_cmp_rank);
  double *last = calloc((size_t)a.nr + 1, sizeof *last);
  if (!last) {
    snprintf(err, err_bytes, "out of memory");
    summary_free(&a);
    return NULL;
  }
  summary_last_to_arrive(&a, last);
  cJSON *root = cJSON_CreateObject();
  cJSON *ranks = cJSON_AddArrayToObject(root, "ranks");
  for (int i = 0; i < a.nr; i++) {
    cJSON *o = summary_rank_json(&a.r[i]);
    cJSON_AddItemToObject(o, "last_to_reduce_share",
                          last[i] < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(last[i]));
    cJSON_AddItemToArray(ranks, o);
  }
  free(last);
  summary_free(&a);
  return root;
}
