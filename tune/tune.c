/* Search space, sampling and the bandit policy of `tfdist tune`. */
#include "tune/tune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/fsutil.h"
#include "train/train_config.h"

static void tune_choice(tune_param *p, const char *flag, const double *v, int n) {
  memset(p, 0, sizeof *p);
  snprintf(p->flag, sizeof p->flag, "%s", flag);
  p->kind = TUNE_CHOICE;
  p->integer = 1;
  p->nchoices = n;
  memcpy(p->choices, v, (size_t)n * sizeof *v);
}

void tune_space_default(tune_space *s) {
  static const double batch[] = {25, 50, 100}, first[] = {10, 50, 200, 300, 500},
                      second[] = {10, 50, 200, 500};
  memset(s, 0, sizeof *s);
  tune_choice(&s->params[s->count++], "batch-size", batch, 3);
  tune_choice(&s->params[s->count++], "first-layer-neurons", first, 5);
  tune_choice(&s->params[s->count++], "second-layer-neurons", second, 4);
  tune_param *lr = &s->params[s->count++];
  snprintf(lr->flag, sizeof lr->flag, "learning-rate");
  lr->kind = TUNE_LOGUNIFORM;
  lr->lo = -6;
  lr->hi = -1;
}

/* The train option flag names, if it is numeric or a choice of words. */
static const opt_spec *tune_train_spec(const char *flag) {
  for (int i = 0; i < train_options.count; i++) {
    const opt_spec *o = &train_options.specs[i];
    if (!strcmp(o->name, flag)) {
      return o->type == OPT_INT || o->type == OPT_FLOAT || o->type == OPT_CHOICE ? o : NULL;
    }
  }
  return NULL;
}

/* label is one of the option's names (NULL-terminated). */
static int tune_label_ok(const char *const *choices, const char *label) {
  for (const char *const *c = choices; c && *c; c++) {
    if (!strcmp(*c, label)) return 1;
  }
  return 0;
}

/* Every value the distribution can give must be one the flag accepts. */
static int tune_param_check(const tune_param *p, const opt_spec *o, const char *where, char *err,
                            size_t eb) {
  if ((o->type == OPT_CHOICE) != (p->strings != 0)) {
    snprintf(err, eb, "%s: --%s takes %s", where, p->flag,
             o->type == OPT_CHOICE ? "one of a set of words: use {\"choice\": [\"...\"]}"
                                   : "numbers, not words");
    return -1;
  }
  for (int i = 0; p->strings && i < p->nchoices; i++) {
    if (!tune_label_ok(o->choices, p->labels[i])) {
      char list[256] = "";
      opt_choice_list(o, list, sizeof list);
      snprintf(err, eb, "%s: '%s' is not one of %s", where, p->labels[i], list);
      return -1;
    }
  }
  if (p->strings) return 0;
  double lo = p->lo, hi = p->hi;
  if (p->kind == TUNE_LOGUNIFORM) lo = exp(lo), hi = exp(hi);
  for (int i = 0; i < (p->kind == TUNE_CHOICE ? p->nchoices : 2); i++) {
    double v = p->kind == TUNE_CHOICE ? p->choices[i] : i ? hi : lo;
    if (!isfinite(v) || v < o->min || v > o->max || (p->integer && v != floor(v))) {
      snprintf(err, eb, "%s: %g is not a value --%s takes (%s in [%g, %g])", where, v, p->flag,
               p->integer ? "an integer" : "a number", o->min, o->max);
      return -1;
    }
  }
  if (p->kind != TUNE_CHOICE && !(p->lo < p->hi)) {
    snprintf(err, eb, "%s: expected [low, high] with low < high", where);
    return -1;
  }
  return 0;
}

/* {"choice": [..]} | {"uniform": [lo, hi]} | {"loguniform": [lo, hi]} */
static int tune_param_parse(tune_param *p, const cJSON *spec, const char *where, char *err,
                            size_t eb) {
  const cJSON *d = cJSON_IsObject(spec) && cJSON_GetArraySize(spec) == 1 ? spec->child : NULL;
  static const char *kinds[] = {"choice", "uniform", "loguniform"};
  int kind = -1;
  for (int k = 0; d && k < 3; k++) if (!strcmp(d->string, kinds[k])) kind = k;
  int n = cJSON_IsArray(d) ? cJSON_GetArraySize(d) : -1;
  if (kind < 0 || n < 1 || (kind == TUNE_CHOICE ? n > TUNE_MAX_CHOICES : n != 2)) {
    snprintf(err, eb, "%s: expected {\"choice\": [1..%d values]}, {\"uniform\": [low, high]} or "
             "{\"loguniform\": [low, high]}", where, TUNE_MAX_CHOICES);
    return -1;
  }
  p->kind = (tune_kind)kind;
  int i = 0;
  p->strings = kind == TUNE_CHOICE && cJSON_IsString(d->child);
  for (const cJSON *v = d->child; v; v = v->next, i++) {
    if (p->strings) { /* all words, each short enough to be one */
      if (!cJSON_IsString(v) || strlen(v->valuestring) >= TUNE_LABEL_BYTES) {
        snprintf(err, eb, "%s.%s[%d]: not a word (a choice of strings takes only words)", where,
                 d->string, i);
        return -1;
      }
      snprintf(p->labels[p->nchoices], TUNE_LABEL_BYTES, "%s", v->valuestring);
      p->choices[p->nchoices] = p->nchoices;
      p->nchoices++;
      continue;
    }
    if (!cJSON_IsNumber(v)) {
      snprintf(err, eb, "%s.%s[%d]: not a number", where, d->string, i);
      return -1;
    }
    if (kind == TUNE_CHOICE) p->choices[p->nchoices++] = v->valuedouble;
    else if (i == 0) p->lo = v->valuedouble;
    else p->hi = v->valuedouble;
  }
  return 0;
}

int tune_space_load(tune_space *s, const char *path, char *err, size_t eb) {
  memset(s, 0, sizeof *s);
  char *text = fs_read_all(path, NULL, err, eb);
  if (!text) return -1;
  cJSON *root = cJSON_ParseWithOpts(text, NULL, 1); /* nothing may follow the object */
  free(text);
  int rc = 0;
  if (!cJSON_IsObject(root) || !root->child) {
    snprintf(err, eb, "%s: expected a JSON object of train flags to their distributions", path);
    rc = -1;
  }
  for (const cJSON *it = root ? root->child : NULL; it && rc == 0; it = it->next) {
    char where[4400];
    snprintf(where, sizeof where, "%s: key \"%s\"", path, it->string);
    const opt_spec *o = tune_train_spec(it->string);
    tune_param *p = &s->params[s->count];
    if (!o || s->count == TUNE_MAX_PARAMS || tune_space_has(s, it->string) == 0) {
      snprintf(err, eb, "%s: %s", where,
               !o ? "not a numeric or word-choice tfdist train flag" :
               s->count == TUNE_MAX_PARAMS ? "too many flags (16 at most)" : "given twice");
      rc = -1;
      break;
    }
    snprintf(p->flag, sizeof p->flag, "%s", it->string);
    p->integer = o->type == OPT_INT || o->type == OPT_CHOICE;
    rc = tune_param_parse(p, it, where, err, eb);
    if (rc == 0 && p->integer && p->kind != TUNE_CHOICE) {
      snprintf(err, eb, "%s: --%s takes %s: use \"choice\"", where, p->flag,
               o->type == OPT_CHOICE ? "one of a set of words" : "integers");
      rc = -1;
    }
    if (rc == 0) rc = tune_param_check(p, o, where, err, eb);
    s->count += rc == 0;
  }
  cJSON_Delete(root);
  return rc;
}

int tune_space_has(const tune_space *s, const char *flag) {
  for (int i = 0; i < s->count; i++) if (!strcmp(s->params[i].flag, flag)) return 0;
  return -1;
}

/* Uniform in [0, 1) with 53 random bits. */
static double tune_uniform(base_rng *r) {
  return (double)(base_rng_next(r) >> 11) * 0x1p-53;
}

void tune_space_sample(const tune_space *s, uint64_t seed, int trial, double *values) {
  base_rng r;
  base_rng_seed(&r, seed, DATA_RNG_STREAM_TUNE, (uint64_t)trial);
  for (int i = 0; i < s->count; i++) {
    const tune_param *p = &s->params[i];
    if (p->kind == TUNE_CHOICE) {
      values[i] = p->choices[base_rng_below(&r, (uint32_t)p->nchoices)];
    } else {
      double u = p->lo + (p->hi - p->lo) * tune_uniform(&r);
      values[i] = p->kind == TUNE_LOGUNIFORM ? exp(u) : u;
    }
  }
}

void tune_value_format(const tune_param *p, double v, char *out, size_t n) {
  const int i = (int)v;
  if (p->strings) snprintf(out, n, "%s", i >= 0 && i < p->nchoices ? p->labels[i] : "?");
  else if (p->integer) snprintf(out, n, "%lld", (long long)v);
  else snprintf(out, n, "%.17g", v);
}

int tune_board_add(tune_board *b, int k, double best_so_far) {
  if (k > b->len) {
    double *grown = realloc(b->best, (size_t)k * sizeof *grown);
    if (!grown) return -1;
    for (int i = b->len; i < k; i++) grown[i] = -INFINITY;
    b->best = grown;
    b->len = k;
  }
  if (best_so_far > b->best[k - 1]) b->best[k - 1] = best_so_far;
  return 0;
}

int tune_bandit_stops(const tune_bandit *p, const tune_board *b, int k, double best_so_far) {
  /* Azure ML: "every multiple of evaluation_interval that is greater than or
   * equal to delay_evaluation". */
  if (k < p->delay || p->interval <= 0 || k % p->interval != 0 || k > b->len) return 0;
  return best_so_far < b->best[k - 1] / (1.0 + p->slack);
}

void tune_board_free(tune_board *b) {
  free(b->best);
  memset(b, 0, sizeof *b);
}
