/* The prefetching batch loader: a background thread keeps a bounded queue of
 * ready batches (float32 pixels/255 and int32 labels, the layout the backend
 * takes), so a training step finds its input waiting. Two ways to cut the
 * data among ranks:
 *  - DATA_MODE_GLOBAL: every rank derives epoch e's permutation of the whole
 *    set from (seed, e) (base_perm_epoch); rank r of N takes rows
 *    [r*B, (r+1)*B) of each global batch of N*B. Exactly the rows the backend
 *    gather (kern gather_u8 over the same permutation) would pick, so N ranks
 *    with batch B match 1 rank with batch N*B.
 *  - DATA_MODE_STREAM: rank r reads shards r, r+N, ... sequentially (in an
 *    order drawn per epoch) through a bounded shuffle buffer; memory does not
 *    grow with the data set. */
#ifndef TFDIST_DATA_LOADER_H
#define TFDIST_DATA_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "data/idx.h"
#include "data/shards.h"

typedef enum { DATA_MODE_GLOBAL = 0, DATA_MODE_STREAM = 1 } data_mode;

typedef struct {
  data_mode mode;
  int rank, world;
  int64_t batch;            /* B, per rank */
  int64_t steps_per_epoch;  /* batches per epoch, <= data_loader_max_steps() */
  int64_t first_epoch;      /* a resumed run starts here ... */
  int64_t first_step;       /* ... after this many steps of first_epoch */
  int64_t epochs;           /* the last batch is of epoch epochs-1 */
  uint64_t seed;
  int64_t prefetch;         /* ready batches queued ahead, >= 1 */
  int64_t shuffle_buffer;   /* stream: samples held for shuffling, >= 1 */
  int check_crc;            /* stream: a fully read shard must match the index's CRCs */
  const data_set *set;      /* global: the whole set in memory (borrowed) */
  const data_shards *shards;/* stream: the shard index (borrowed) */
} data_loader_config;

typedef struct {
  const float *x;       /* (n, sample_elems) row-major, pixel/255; loader memory */
  const int32_t *y;     /* (n) labels */
  const int64_t *ids;   /* (n) each sample's index in the whole set */
  int64_t n, sample_elems, epoch, step;
} data_batch;

typedef struct data_loader data_loader;

/* The most steps per epoch every rank can take: global floor(n / (N*B)),
 * stream min over ranks of floor(samples_r / B). 0 when even one fails. */
int64_t data_loader_max_steps(const data_loader_config *cfg);

/* Checks cfg and starts the thread. */
int data_loader_init(data_loader **out, const data_loader_config *cfg, char *err,
                     size_t err_bytes);
/* The next batch, in order; blocks until it is ready and adds the time it
 * blocked to *waited_s (may be NULL). The batch stays valid until
 * data_loader_release. Fails with the producer's error (bad shard ...). */
int data_loader_next(data_loader *l, data_batch *b, double *waited_s, char *err,
                     size_t err_bytes);
void data_loader_release(data_loader *l);
/* Stops and joins the thread; NULL is a no-op. */
void data_loader_free(data_loader *l);

/* One sample's pixels to floats, as the backend's gather does: x*(1/255). */
void data_pixels_to_f32(float *dst, const uint8_t *src, int64_t n);

#endif
