/* One rank's streaming source: sequential shard reads, a shuffle buffer of
 * fixed size, every shard header checked against the index. */
#include "data/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/idx_reader.h"
#include "data/loader.h"
#include "base/rng.h"

#define STREAM_CHUNK_BYTES (256 * 1024)

struct data_stream {
  const data_shards *s;
  int rank, world;
  uint64_t seed;
  int check_crc;
  int64_t px;               /* bytes per sample */
  int64_t *mine;            /* (nmine) this rank's shards, in this epoch's order */
  int64_t nmine, next_shard;
  base_rng rng;
  /* the shard being read */
  const data_shard *cur;
  data_idx_reader *ri, *rl;
  int64_t cur_read;         /* samples of cur pulled into the chunk so far */
  /* the chunk: samples read, not yet taken into the buffer */
  uint8_t *chunk_px, *chunk_lab;
  int64_t chunk_cap, chunk_n, chunk_at;
  /* the shuffle buffer */
  uint8_t *buf_px, *buf_lab;
  int64_t *buf_id;
  int64_t cap, fill;
  int exhausted;            /* every shard of the epoch has been read */
};

static void stream_close_shard(data_stream *st) {
  data_idx_close(st->ri);
  data_idx_close(st->rl);
  st->ri = st->rl = NULL;
  st->cur = NULL;
}

void data_stream_free(data_stream *st) {
  if (!st) return;
  stream_close_shard(st);
  free(st->mine);
  free(st->chunk_px);
  free(st->chunk_lab);
  free(st->buf_px);
  free(st->buf_lab);
  free(st->buf_id);
  free(st);
}

int data_stream_init(data_stream **out, const data_shards *s, int rank, int world,
                     int64_t buffer, uint64_t seed, int check_crc, char *err, size_t err_bytes) {
  *out = NULL;
  data_stream *st = calloc(1, sizeof *st);
  if (!st) goto oom;
  st->s = s;
  st->rank = rank;
  st->world = world;
  st->seed = seed;
  st->check_crc = check_crc;
  st->px = (int64_t)s->rows * s->cols;
  for (int64_t k = rank; k < s->count; k += world) st->nmine++;
  int64_t have = data_shards_rank_samples(s, rank, world);
  st->cap = buffer < have ? buffer : have; /* a larger buffer would never fill */
  if (st->cap > UINT32_MAX) st->cap = UINT32_MAX;
  if (st->cap < 1) st->cap = 1;
  st->chunk_cap = STREAM_CHUNK_BYTES / st->px + 1;
  st->mine = malloc((size_t)(st->nmine ? st->nmine : 1) * sizeof *st->mine);
  st->chunk_px = malloc((size_t)(st->chunk_cap * st->px));
  st->chunk_lab = malloc((size_t)st->chunk_cap);
  st->buf_px = malloc((size_t)(st->cap * st->px));
  st->buf_lab = malloc((size_t)st->cap);
  st->buf_id = malloc((size_t)st->cap * sizeof *st->buf_id);
  if (!st->mine || !st->chunk_px || !st->chunk_lab || !st->buf_px || !st->buf_lab || !st->buf_id) {
    goto oom;
  }
  *out = st;
  return 0;
oom:
  data_stream_free(st);
  snprintf(err, err_bytes, "--shuffle-buffer %lld: out of memory for the stream buffers",
           (long long)buffer);
  return -1;
}

int data_stream_begin_epoch(data_stream *st, int64_t epoch, char *err, size_t err_bytes) {
  (void)err;
  (void)err_bytes;
  stream_close_shard(st);
  base_rng_seed(&st->rng, st->seed, DATA_RNG_STREAM_SHUFFLE,
                ((uint64_t)epoch << 24) ^ (uint64_t)st->rank);
  int64_t n = 0;
  for (int64_t k = st->rank; k < st->s->count; k += st->world) st->mine[n++] = k;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = base_rng_below(&st->rng, (uint32_t)(i + 1));
    int64_t t = st->mine[i];
    st->mine[i] = st->mine[j];
    st->mine[j] = t;
  }
  st->next_shard = 0;
  st->chunk_n = st->chunk_at = 0;
  st->fill = 0;
  st->exhausted = 0;
  return 0;
}

/* The shard's headers must say what the index says. */
static int stream_check_headers(data_stream *st, char *err, size_t err_bytes) {
  const data_idx_header *hi = data_idx_header_of(st->ri), *hl = data_idx_header_of(st->rl);
  const data_shard *d = st->cur;
  if (hi->count != d->count || hl->count != d->count) {
    snprintf(err, err_bytes, "%s: byte 4: holds %lld samples but %s says %lld",
             hi->count != d->count ? d->images : d->labels,
             (long long)(hi->count != d->count ? hi->count : hl->count), st->s->path,
             (long long)d->count);
    return -1;
  }
  if (hi->dims[1] != (uint32_t)st->s->rows || hi->dims[2] != (uint32_t)st->s->cols) {
    snprintf(err, err_bytes, "%s: byte 8: samples are %ux%u but %s says %dx%d", d->images,
             hi->dims[1], hi->dims[2], st->s->path, st->s->rows, st->s->cols);
    return -1;
  }
  return 0;
}

static int stream_open_next(data_stream *st, char *err, size_t err_bytes) {
  st->cur = &st->s->shards[st->mine[st->next_shard++]];
  st->cur_read = 0;
  if (data_idx_open(&st->ri, st->cur->images, DATA_IDX_IMAGES, err, err_bytes) != 0 ||
      data_idx_open(&st->rl, st->cur->labels, DATA_IDX_LABELS, err, err_bytes) != 0) {
    return -1;
  }
  /* A gzip shard's content is already covered by gzip's own CRC-32, which
   * inflate checks; a raw shard has only the index's. */
  int crc = st->check_crc && st->cur->has_crc;
  data_idx_track_crc(st->ri, crc && !data_idx_is_gzip(st->ri));
  data_idx_track_crc(st->rl, crc && !data_idx_is_gzip(st->rl));
  return stream_check_headers(st, err, err_bytes);
}

/* The shard is read to its end: it must end there, with the index's CRCs. */
static int stream_finish_shard(data_stream *st, char *err, size_t err_bytes) {
  if (data_idx_finish(st->ri, err, err_bytes) != 0 || data_idx_finish(st->rl, err, err_bytes) != 0) {
    return -1;
  }
  const data_shard *d = st->cur;
  if (st->check_crc && d->has_crc) {
    uint32_t ci = data_idx_is_gzip(st->ri) ? d->images_crc : data_idx_body_crc(st->ri);
    uint32_t cl = data_idx_is_gzip(st->rl) ? d->labels_crc : data_idx_body_crc(st->rl);
    if (ci != d->images_crc || cl != d->labels_crc) {
      snprintf(err, err_bytes, "%s: CRC-32 of the body is %08x but %s says %08x (corrupt shard)",
               ci != d->images_crc ? d->images : d->labels, ci != d->images_crc ? ci : cl,
               st->s->path, ci != d->images_crc ? d->images_crc : d->labels_crc);
      return -1;
    }
  }
  stream_close_shard(st);
  return 0;
}

/* Refills the chunk from the current shard, moving to the next as needed. */
static int stream_fill_chunk(data_stream *st, char *err, size_t err_bytes) {
  while (st->chunk_at == st->chunk_n) {
    if (st->cur && st->cur_read == st->cur->count && stream_finish_shard(st, err, err_bytes) != 0) {
      return -1;
    }
    if (!st->cur) {
      if (st->next_shard == st->nmine) {
        st->exhausted = 1;
        return 0;
      }
      if (stream_open_next(st, err, err_bytes) != 0) return -1;
    }
    int64_t n = st->cur->count - st->cur_read;
    if (n > st->chunk_cap) n = st->chunk_cap;
    if (data_idx_read(st->ri, st->chunk_px, n * st->px, err, err_bytes) != 0 ||
        data_idx_read(st->rl, st->chunk_lab, n, err, err_bytes) != 0 ||
        data_idx_check_labels(st->rl, st->chunk_lab, n, st->cur_read, err, err_bytes) != 0) {
      return -1;
    }
    st->chunk_n = n;
    st->chunk_at = 0;
    st->cur_read += n;
  }
  return 0;
}

/* Copies the next sequential sample into buffer slot j; 0 at the epoch's end. */
static int stream_pull(data_stream *st, int64_t j, int *got, char *err, size_t err_bytes) {
  *got = 0;
  if (!st->exhausted && stream_fill_chunk(st, err, err_bytes) != 0) return -1;
  if (st->exhausted) return 0;
  int64_t a = st->chunk_at++;
  memcpy(st->buf_px + j * st->px, st->chunk_px + a * st->px, (size_t)st->px);
  st->buf_lab[j] = st->chunk_lab[a];
  st->buf_id[j] = st->cur->first + st->cur_read - st->chunk_n + a;
  *got = 1;
  return 0;
}

int data_stream_take(data_stream *st, int64_t n, float *x, int32_t *y, int64_t *ids, char *err,
                     size_t err_bytes) {
  for (int64_t k = 0; k < n; k++) {
    int got = 1;
    while (st->fill < st->cap && got) {
      if (stream_pull(st, st->fill, &got, err, err_bytes) != 0) return -1;
      st->fill += got;
    }
    if (st->fill == 0) {
      snprintf(err, err_bytes, "%s: rank %d's shards ran out of samples mid-epoch",
               st->s->path, st->rank);
      return -1;
    }
    int64_t j = base_rng_below(&st->rng, (uint32_t)st->fill);
    if (x) {
      data_pixels_to_f32(x + k * st->px, st->buf_px + j * st->px, st->px);
      y[k] = st->buf_lab[j];
      ids[k] = st->buf_id[j];
    }
    if (stream_pull(st, j, &got, err, err_bytes) != 0) return -1;
    if (!got) { /* nothing left to read: close the hole with the last held sample */
      st->fill--;
      if (j != st->fill) {
        memcpy(st->buf_px + j * st->px, st->buf_px + st->fill * st->px, (size_t)st->px);
        st->buf_lab[j] = st->buf_lab[st->fill];
        st->buf_id[j] = st->buf_id[st->fill];
      }
    }
  }
  return 0;
}
