/* Streaming verification: constant memory whatever the file size. */
#include "data/verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/idx_reader.h"

#define VERIFY_CHUNK_BYTES (4 << 20)

int data_pair_verify(const char *images, const char *labels, int need_784,
                     data_pair_report *rep, char *err, size_t err_bytes) {
  data_idx_reader *ri = NULL, *rl = NULL;
  uint8_t *ibuf = NULL, *lbuf = NULL;
  int rc = -1;
  memset(rep, 0, sizeof *rep);
  if (data_idx_open_pair(&ri, &rl, images, labels, err, err_bytes) != 0) goto out;
  const data_idx_header *hi = data_idx_header_of(ri);
  if (need_784 && hi->sample_bytes != 784) {
    snprintf(err, err_bytes, "%s: byte 8: rows*cols = %u*%u = %lld, the model needs 784", images,
             hi->dims[1], hi->dims[2], (long long)hi->sample_bytes);
    goto out;
  }
  data_idx_track_crc(ri, 1);
  data_idx_track_crc(rl, 1);
  const int64_t chunk = hi->sample_bytes >= VERIFY_CHUNK_BYTES ? 1
                      : VERIFY_CHUNK_BYTES / hi->sample_bytes;
  ibuf = malloc(VERIFY_CHUNK_BYTES);
  lbuf = malloc((size_t)chunk);
  if (!ibuf || !lbuf) {
    snprintf(err, err_bytes, "%s: out of memory", images);
    goto out;
  }
  for (int64_t at = 0; at < hi->count; at += chunk) {
    int64_t n = hi->count - at < chunk ? hi->count - at : chunk;
    for (int64_t left = n * hi->sample_bytes, m; left > 0; left -= m) {
      m = left < VERIFY_CHUNK_BYTES ? left : VERIFY_CHUNK_BYTES;
      if (data_idx_read(ri, ibuf, m, err, err_bytes) != 0) goto out;
    }
    if (data_idx_read(rl, lbuf, n, err, err_bytes) != 0 ||
        data_idx_check_labels(rl, lbuf, n, at, err, err_bytes) != 0) {
      goto out;
    }
    for (int64_t i = 0; i < n; i++) rep->label_hist[lbuf[i]]++;
  }
  if (data_idx_finish(ri, err, err_bytes) != 0 || data_idx_finish(rl, err, err_bytes) != 0) {
    goto out;
  }
  rep->count = hi->count;
  rep->rows = hi->dims[1];
  rep->cols = hi->dims[2];
  rep->images_crc = data_idx_body_crc(ri);
  rep->labels_crc = data_idx_body_crc(rl);
  rep->images_gzip = data_idx_is_gzip(ri);
  rep->labels_gzip = data_idx_is_gzip(rl);
  rc = 0;
out:
  free(ibuf);
  free(lbuf);
  data_idx_close(ri);
  data_idx_close(rl);
  return rc;
}

int data_shard_verify(const data_shards *s, int64_t i, data_pair_report *rep, char *err,
                      size_t err_bytes) {
  const data_shard *d = &s->shards[i];
  if (data_pair_verify(d->images, d->labels, 0, rep, err, err_bytes) != 0) return -1;
  if (rep->count != d->count) {
    snprintf(err, err_bytes, "%s: byte 4: holds %lld samples but %s says %lld", d->images,
             (long long)rep->count, s->path, (long long)d->count);
    return -1;
  }
  if (rep->rows != (uint32_t)s->rows || rep->cols != (uint32_t)s->cols) {
    snprintf(err, err_bytes, "%s: byte 8: samples are %ux%u but %s says %dx%d", d->images,
             rep->rows, rep->cols, s->path, s->rows, s->cols);
    return -1;
  }
  if (d->has_crc && (rep->images_crc != d->images_crc || rep->labels_crc != d->labels_crc)) {
    int bad_images = rep->images_crc != d->images_crc;
    snprintf(err, err_bytes, "%s: CRC-32 of the body is %08x but %s says %08x (corrupt shard)",
             bad_images ? d->images : d->labels, bad_images ? rep->images_crc : rep->labels_crc,
             s->path, bad_images ? d->images_crc : d->labels_crc);
    return -1;
  }
  return 0;
}
