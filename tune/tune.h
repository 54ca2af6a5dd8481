/* Hyperparameter tuning (SPEC "Hyperparameter tuning"): a search space over
 * `tfdist train` flags, seeded random sampling, and the bandit early
 * termination policy, apart from the processes that run the trials. */
#ifndef TFDIST_TUNE_TUNE_H
#define TFDIST_TUNE_TUNE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define TUNE_MAX_PARAMS 16
#define TUNE_MAX_CHOICES 64

typedef enum { TUNE_CHOICE, TUNE_UNIFORM, TUNE_LOGUNIFORM } tune_kind;

#define TUNE_LABEL_BYTES 32

typedef struct {
  char flag[64]; /* a `tfdist train` flag, without "--": numeric, or a choice of strings */
  tune_kind kind;
  int integer;   /* the flag takes integers */
  double choices[TUNE_MAX_CHOICES]; /* strings: 0 .. nchoices-1, indices into labels */
  int nchoices;
  int strings;   /* a choice of strings (--optimizer, --lr-schedule): values are indices */
  char labels[TUNE_MAX_CHOICES][TUNE_LABEL_BYTES];
  double lo, hi; /* uniform(lo, hi); loguniform: exp(uniform(lo, hi)) */
} tune_param;

typedef struct {
  tune_param params[TUNE_MAX_PARAMS];
  int count;
} tune_space;

/* SPEC's space: batch-size, first- and second-layer-neurons, learning-rate. */
void tune_space_default(tune_space *s);
/* {"flag": {"choice": [..]} | {"uniform": [lo, hi]} | {"loguniform": [lo, hi]}, ...};
 * a choice of strings ({"optimizer": {"choice": ["sgd", "adam"]}}) is for a
 * flag that takes one of a fixed set of words; errors name path and key. */
int tune_space_load(tune_space *s, const char *path, char *err, size_t err_bytes);
/* Trial `trial`'s values (s->count of them), from stream (seed, trial):
 * the same seed gives the same trials, whatever ran before. */
void tune_space_sample(const tune_space *s, uint64_t seed, int trial, double *values);
/* A value as its flag takes it ("50", "0.0123456789", "adam"). */
void tune_value_format(const tune_param *p, double v, char *out, size_t out_bytes);
/* 0 when flag is one the space tunes (so must not be given to every trial). */
int tune_space_has(const tune_space *s, const char *flag);

/* Bandit policy on a maximised metric (Azure ML's BanditPolicy with a slack
 * factor): at a run's report k, where k >= delay and k % interval == 0, the
 * run stops when its best value so far is below best_k / (1 + slack);
 * best_k is the best value any run had by its own report k. */
typedef struct {
  double slack;
  int interval, delay;
} tune_bandit;

typedef struct {
  double *best; /* best[k-1]: best value any run had by its report k */
  int len;
} tune_board;

/* Records a run's best-so-far at report k; -1 when out of memory. */
int tune_board_add(tune_board *b, int k, double best_so_far);
/* 1: the run whose best so far at report k is best_so_far stops now. */
int tune_bandit_stops(const tune_bandit *p, const tune_board *b, int k, double best_so_far);
void tune_board_free(tune_board *b);

#endif
