/* The trainer's side of the data loader: choosing it, starting it with the
 * run's epochs and steps, and moving each batch into the step's buffers. */
#include "train/train_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int train_input_streaming(const train_config *cfg) { return cfg->data_mode == TRAIN_DATA_STREAM; }

/* --prefetch 0: enough small batches to ride out a few ms of the loader
 * thread being descheduled on a busy node, without holding much memory. */
static int64_t train_input_prefetch(const train_data *d, const train_config *c, int64_t px) {
  if (c->prefetch > 0) return c->prefetch;
  int64_t batch_bytes = d->batch * (px * (int64_t)sizeof(float) + 12);
  int64_t n = ((int64_t)8 << 20) / batch_bytes;
  return n < 4 ? 4 : n > 64 ? 64 : n;
}

static data_loader_config train_input_config(const train_data *d, const train_ctx *x, int64_t px,
                                             int64_t start_epoch) {
  const train_config *c = x->cfg;
  data_loader_config lc = {
      .mode = train_input_streaming(c) ? DATA_MODE_STREAM : DATA_MODE_GLOBAL,
      .rank = x->world->rank,
      .world = x->world->size,
      .batch = d->batch,
      .steps_per_epoch = d->steps_per_epoch * d->micro, /* micro-batches */
      .first_epoch = start_epoch,
      .first_step = 0,
      .epochs = c->epochs,
      .seed = (uint64_t)c->seed,
      .prefetch = train_input_prefetch(d, c, px),
      .shuffle_buffer = c->shuffle_buffer,
      .check_crc = 1,
      .set = &d->train,
      .shards = d->shards,
  };
  return lc;
}

int train_input_load_stream(train_data *d, const train_ctx *x, int64_t px, rank_log *log,
                            base_err *err) {
  data_files files;
  const int N = x->world->size;
  if (data_files_find_stream(&files, x->cfg->data_folder, err->msg, sizeof err->msg) != 0 ||
      data_set_load(&d->test, files.test_images, files.test_labels, 1, err->msg,
                    sizeof err->msg) != 0) {
    return -1;
  }
  if (!(d->shards = calloc(1, sizeof *d->shards))) return base_err_set(err, "out of host memory");
  int rc = files.train_shards[0]
               ? data_shards_load(d->shards, files.train_shards, err->msg, sizeof err->msg)
               : data_shards_from_pair(d->shards, files.train_images, files.train_labels,
                                       err->msg, sizeof err->msg);
  if (rc != 0) return -1;
  const data_shards *s = d->shards;
  if ((int64_t)s->rows * s->cols != px) {
    return base_err_set(err, "%.600s: samples are %dx%d, the model needs %lld pixels", s->path,
                        s->rows, s->cols, (long long)px);
  }
  if (s->count < N) {
    return base_err_set(err, "--data-mode stream: %d ranks but %.600s has %lld shard(s); each "
                        "rank needs one (make more with tfdist data shard --shards)", N, s->path,
                        (long long)s->count);
  }
  data_loader_config lc = train_input_config(d, x, px, 0);
  d->steps_per_epoch = data_loader_max_steps(&lc) / d->micro;
  if (d->steps_per_epoch < 1) {
    return base_err_set(err, "--batch-size: %lld x --backward-passes-per-step %lld is more than "
                        "some rank's shards of %.600s hold (%d ranks, %lld samples in all)",
                        (long long)d->batch, (long long)d->micro, s->path, N,
                        (long long)s->samples);
  }
  rank_log_printf(log, "data: streaming %s (%lld train in %lld shards, rank %d reads %lld), "
                  "%s (%lld test)", s->path, (long long)s->samples, (long long)s->count,
                  x->world->rank, (long long)data_shards_rank_samples(s, x->world->rank, N),
                  files.test_images, (long long)d->test.count);
  return 0;
}

int train_input_start(train_data *d, const train_ctx *x, int64_t px, int64_t start_epoch,
                      base_err *err) {
  if (d->input || (!kern_is_host_memory(x->be) && !train_input_streaming(x->cfg))) {
    return 0;
  }
  data_loader_config lc = train_input_config(d, x, px, start_epoch);
  return data_loader_init(&d->input, &lc, err->msg, sizeof err->msg);
}

int train_input_next(train_data *d, kern_backend *be, model_work *w, base_err *err) {
  data_batch b;
  if (data_loader_next(d->input, &b, &d->wait_s, err->msg, sizeof err->msg) != 0) return -1;
  int rc = kern_mem_upload(be, w->act[0], b.x, (size_t)(b.n * b.sample_elems) * sizeof(float));
  if (rc == 0) rc = kern_mem_upload(be, w->labels, b.y, (size_t)b.n * sizeof(int32_t));
  data_loader_release(d->input);
  return rc != 0 ? train_err_backend(err, be) : 0;
}

void train_input_free(train_data *d) {
  data_loader_free(d->input);
  d->input = NULL;
  data_shards_free(d->shards);
  free(d->shards);
  d->shards = NULL;
}
