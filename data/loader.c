/* The prefetch thread and its bounded queue, and the global-permutation
 * producer. The consumer holds at most one slot at a time; the producer never
 * writes a slot the consumer holds. */
#include "data/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/rng.h"
#include "data/stream.h"

typedef struct {
  float *x;
  int32_t *y;
  int64_t *ids;
  int64_t epoch, step;
} loader_slot;

struct data_loader {
  data_loader_config cfg;
  int64_t px;              /* elements per sample */
  loader_slot *slots;      /* (cfg.prefetch) ring */
  int64_t head, count;     /* ring: oldest ready slot, ready slots */
  pthread_mutex_t mu;
  pthread_cond_t can_put, can_take;
  pthread_t thread;
  int started, stop, done, failed;
  int32_t *perm;           /* global: this epoch's order, (set->count) */
  data_stream *stream;     /* stream: this rank's source */
  char err[1024];
};

void data_pixels_to_f32(float *dst, const uint8_t *src, int64_t n) {
  /* The same expression as the backend gather, so both give identical bits. */
  for (int64_t j = 0; j < n; j++) dst[j] = (float)src[j] * (1.0f / 255.0f);
}

int64_t data_loader_max_steps(const data_loader_config *cfg) {
  if (cfg->batch < 1 || cfg->world < 1) return 0;
  if (cfg->mode == DATA_MODE_GLOBAL) {
    return cfg->set ? cfg->set->count / (cfg->batch * cfg->world) : 0;
  }
  if (!cfg->shards) return 0;
  int64_t best = INT64_MAX;
  for (int r = 0; r < cfg->world; r++) {
    int64_t steps = data_shards_rank_samples(cfg->shards, r, cfg->world) / cfg->batch;
    if (steps < best) best = steps;
  }
  return best;
}

static void loader_global_fill(data_loader *l, loader_slot *s) {
  const data_set *set = l->cfg.set;
  const int64_t B = l->cfg.batch, px = l->px;
  const int64_t base = s->step * B * l->cfg.world + (int64_t)l->cfg.rank * B;
  for (int64_t i = 0; i < B; i++) {
    int64_t row = l->perm[base + i];
    data_pixels_to_f32(s->x + i * px, set->images + row * px, px);
    s->y[i] = set->labels[row];
    s->ids[i] = row;
  }
}

static int loader_begin_epoch(data_loader *l, int64_t epoch) {
  if (l->cfg.mode == DATA_MODE_GLOBAL) {
    base_perm_epoch(l->perm, l->cfg.set->count, l->cfg.seed, epoch);
    return 0;
  }
  return data_stream_begin_epoch(l->stream, epoch, l->err, sizeof l->err);
}

/* Waits for a free slot; NULL when asked to stop. */
static loader_slot *loader_claim(data_loader *l) {
  pthread_mutex_lock(&l->mu);
  while (l->count == l->cfg.prefetch && !l->stop) pthread_cond_wait(&l->can_put, &l->mu);
  loader_slot *s = l->stop ? NULL : &l->slots[(l->head + l->count) % l->cfg.prefetch];
  pthread_mutex_unlock(&l->mu);
  return s;
}

static void loader_publish(data_loader *l, int failed, int done) {
  pthread_mutex_lock(&l->mu);
  if (failed) l->failed = 1;
  else if (done) l->done = 1;
  else l->count++;
  pthread_cond_signal(&l->can_take);
  pthread_mutex_unlock(&l->mu);
}

static void *loader_main(void *arg) {
  data_loader *l = arg;
  const data_loader_config *c = &l->cfg;
  for (int64_t e = c->first_epoch; e < c->epochs; e++) {
    if (loader_begin_epoch(l, e) != 0) goto fail;
    int64_t s0 = e == c->first_epoch ? c->first_step : 0;
    if (c->mode == DATA_MODE_STREAM && s0 > 0 &&
        data_stream_take(l->stream, s0 * c->batch, NULL, NULL, NULL, l->err, sizeof l->err) != 0) {
      goto fail;
    }
    for (int64_t step = s0; step < c->steps_per_epoch; step++) {
      loader_slot *s = loader_claim(l);
      if (!s) return NULL;
      s->epoch = e;
      s->step = step;
      if (c->mode == DATA_MODE_GLOBAL) {
        loader_global_fill(l, s);
      } else if (data_stream_take(l->stream, c->batch, s->x, s->y, s->ids, l->err,
                                  sizeof l->err) != 0) {
        goto fail;
      }
      loader_publish(l, 0, 0);
    }
  }
  loader_publish(l, 0, 1);
  return NULL;
fail:
  loader_publish(l, 1, 0);
  return NULL;
}

static int loader_check(const data_loader_config *c, char *err, size_t err_bytes) {
  const int64_t most = data_loader_max_steps(c);
  if (c->world < 1 || c->rank < 0 || c->rank >= c->world || c->batch < 1 || c->prefetch < 1 ||
      c->prefetch > 1 << 20 || c->shuffle_buffer < 1 || c->first_epoch < 0 ||
      c->first_step < 0 || c->first_step > c->steps_per_epoch) {
    snprintf(err, err_bytes, "data loader: bad configuration (rank %d of %d, batch %lld, "
             "prefetch %lld)", c->rank, c->world, (long long)c->batch, (long long)c->prefetch);
    return -1;
  }
  if (c->mode == DATA_MODE_GLOBAL ? !c->set || c->set->count > INT32_MAX : !c->shards) {
    snprintf(err, err_bytes, "data loader: no data");
    return -1;
  }
  if (c->steps_per_epoch < 1 || c->steps_per_epoch > most) {
    snprintf(err, err_bytes, "--batch-size: %lld steps of %lld per rank per epoch do not fit "
             "the data (at most %lld steps with %d ranks)", (long long)c->steps_per_epoch,
             (long long)c->batch, (long long)most, c->world);
    return -1;
  }
  return 0;
}

static int loader_alloc(data_loader *l, char *err, size_t err_bytes) {
  const data_loader_config *c = &l->cfg;
  l->slots = calloc((size_t)c->prefetch, sizeof *l->slots);
  if (!l->slots) goto oom;
  for (int64_t i = 0; i < c->prefetch; i++) {
    loader_slot *s = &l->slots[i];
    size_t xb = ((size_t)(c->batch * l->px) * sizeof(float) + 63) / 64 * 64;
    s->x = aligned_alloc(64, xb);
    s->y = malloc((size_t)c->batch * sizeof *s->y);
    s->ids = malloc((size_t)c->batch * sizeof *s->ids);
    if (!s->x || !s->y || !s->ids) goto oom;
  }
  if (c->mode == DATA_MODE_GLOBAL) {
    l->perm = malloc((size_t)c->set->count * sizeof *l->perm);
    if (!l->perm) goto oom;
    return 0;
  }
  return data_stream_init(&l->stream, c->shards, c->rank, c->world, c->shuffle_buffer, c->seed,
                          c->check_crc, err, err_bytes);
oom:
  snprintf(err, err_bytes, "data loader: out of memory for %lld batches of %lld",
           (long long)c->prefetch, (long long)c->batch);
  return -1;
}

int data_loader_init(data_loader **out, const data_loader_config *cfg, char *err,
                     size_t err_bytes) {
  *out = NULL;
  if (loader_check(cfg, err, err_bytes) != 0) return -1;
  data_loader *l = calloc(1, sizeof *l);
  if (!l) {
    snprintf(err, err_bytes, "data loader: out of memory");
    return -1;
  }
  l->cfg = *cfg;
  l->px = cfg->mode == DATA_MODE_GLOBAL ? (int64_t)cfg->set->rows * cfg->set->cols
                                        : (int64_t)cfg->shards->rows * cfg->shards->cols;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->can_put, NULL);
  pthread_cond_init(&l->can_take, NULL);
  if (loader_alloc(l, err, err_bytes) != 0) {
    data_loader_free(l);
    return -1;
  }
  if (pthread_create(&l->thread, NULL, loader_main, l) != 0) {
    snprintf(err, err_bytes, "data loader: cannot start the prefetch thread");
    data_loader_free(l);
    return -1;
  }
  l->started = 1;
  *out = l;
  return 0;
}

int data_loader_next(data_loader *l, data_batch *b, double *waited_s, char *err,
                     size_t err_bytes) {
  pthread_mutex_lock(&l->mu);
  if (l->count == 0 && !l->failed && !l->done) {
    double t0 = clock_mono_s();
    while (l->count == 0 && !l->failed && !l->done) pthread_cond_wait(&l->can_take, &l->mu);
    if (waited_s) *waited_s += clock_mono_s() - t0;
  }
  if (l->count == 0) {
    snprintf(err, err_bytes, "%s", l->failed ? l->err : "data loader: no batches after the last epoch");
    pthread_mutex_unlock(&l->mu);
    return -1;
  }
  loader_slot *s = &l->slots[l->head];
  pthread_mutex_unlock(&l->mu);
  b->x = s->x;
  b->y = s->y;
  b->ids = s->ids;
  b->n = l->cfg.batch;
  b->sample_elems = l->px;
  b->epoch = s->epoch;
  b->step = s->step;
  return 0;
}

void data_loader_release(data_loader *l) {
  pthread_mutex_lock(&l->mu);
  if (l->count > 0) {
    l->head = (l->head + 1) % l->cfg.prefetch;
    l->count--;
    pthread_cond_signal(&l->can_put);
  }
  pthread_mutex_unlock(&l->mu);
}

void data_loader_free(data_loader *l) {
  if (!l) return;
  if (l->started) {
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->can_put);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
  }
  for (int64_t i = 0; l->slots && i < l->cfg.prefetch; i++) {
    free(l->slots[i].x);
    free(l->slots[i].y);
    free(l->slots[i].ids);
  }
  free(l->slots);
  free(l->perm);
  data_stream_free(l->stream);
  pthread_cond_destroy(&l->can_put);
  pthread_cond_destroy(&l->can_take);
  pthread_mutex_destroy(&l->mu);
  free(l);
}
