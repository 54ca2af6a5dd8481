/* The trainer's side of the data loader: choosing it, starting it with the
 * run's epochs and steps, and moving each batch into the step's buffers. */
#include "train/train_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int train_input_streaming(const trainer *t) { return strcmp(t->cfg->data_mode, "stream") == 0; }

/* --prefetch 0: enough small batches to ride out a few ms of the loader
 * thread being descheduled on a busy node, without holding much memory. */
static int64_t train_input_prefetch(const trainer *t) {
  if (t->cfg->prefetch > 0) return t->cfg->prefetch;
  int64_t batch_bytes = t->batch * (t->layout.dims[0] * (int64_t)sizeof(float) + 12);
  int64_t n = ((int64_t)8 << 20) / batch_bytes;
  return n < 4 ? 4 : n > 64 ? 64 : n;
}

static data_loader_config train_input_config(const trainer *t) {
  const train_config *c = t->cfg;
  data_loader_config lc = {
      .mode = train_input_streaming(t) ? DATA_MODE_STREAM : DATA_MODE_GLOBAL,
      .rank = t->world->rank,
      .world = t->world->size,
      .batch = t->batch,
      .steps_per_epoch = t->steps_per_epoch,
      .first_epoch = t->start_epoch,
      .first_step = 0,
      .epochs = c->epochs,
      .seed = (uint64_t)c->seed,
      .prefetch = train_input_prefetch(t),
      .shuffle_buffer = c->shuffle_buffer,
      .check_crc = 1,
      .set = &t->train,
      .shards = t->shards,
  };
  return lc;
}

int train_input_load_stream(trainer *t) {
  data_files files;
  const int N = t->world->size;
  if (data_files_find_stream(&files, t->cfg->data_folder, t->err, sizeof t->err) != 0 ||
      data_set_load(&t->test, files.test_images, files.test_labels, 1, t->err,
                    sizeof t->err) != 0) {
    return -1;
  }
  if (!(t->shards = calloc(1, sizeof *t->shards))) {
    snprintf(t->err, sizeof t->err, "out of host memory");
    return -1;
  }
  int rc = files.train_shards[0]
               ? data_shards_load(t->shards, files.train_shards, t->err, sizeof t->err)
               : data_shards_from_pair(t->shards, files.train_images, files.train_labels, t->err,
                                       sizeof t->err);
  if (rc != 0) return -1;
  const data_shards *s = t->shards;
  if ((int64_t)s->rows * s->cols != t->layout.dims[0]) {
    snprintf(t->err, sizeof t->err, "%.600s: samples are %dx%d, the model needs %lld pixels",
             s->path, s->rows, s->cols, (long long)t->layout.dims[0]);
    return -1;
  }
  if (s->count < N) {
    snprintf(t->err, sizeof t->err, "--data-mode stream: %d ranks but %.600s has %lld shard(s); each "
             "rank needs one (make more with tfdist data shard --shards)", N, s->path,
             (long long)s->count);
    return -1;
  }
  data_loader_config lc = train_input_config(t);
  t->steps_per_epoch = data_loader_max_steps(&lc);
  if (t->steps_per_epoch < 1) {
    snprintf(t->err, sizeof t->err, "--batch-size: %lld is more than some rank's shards of %.600s "
             "hold (%d ranks, %lld samples in all)", (long long)t->batch, s->path, N,
             (long long)s->samples);
    return -1;
  }
  rank_log_printf(&t->log, "data: streaming %s (%lld train in %lld shards, rank %d reads %lld), "
                  "%s (%lld test)", s->path, (long long)s->samples, (long long)s->count,
                  t->world->rank, (long long)data_shards_rank_samples(s, t->world->rank, N),
                  files.test_images, (long long)t->test.count);
  return 0;
}

int train_input_start(trainer *t) {
  if (t->input || (!kern_is_host_memory(t->be) && !train_input_streaming(t))) return 0;
  data_loader_config lc = train_input_config(t);
  return data_loader_init(&t->input, &lc, t->err, sizeof t->err);
}

int train_input_next(trainer *t) {
  data_batch b;
  kern_backend *be = t->be;
  if (data_loader_next(t->input, &b, &t->data_wait_s, t->err, sizeof t->err) != 0) return -1;
  int rc = kern_mem_upload_f32(be, t->work.act[0], b.x, b.n * b.sample_elems);
  if (rc == 0) rc = kern_mem_upload(be, t->work.labels, b.y, (size_t)b.n * sizeof(int32_t));
  data_loader_release(t->input);
  if (rc != 0) snprintf(t->err, sizeof t->err, "%s", kern_error(be));
  return rc;
}

void train_input_free(trainer *t) {
  data_loader_free(t->input);
  t->input = NULL;
  data_shards_free(t->shards);
  free(t->shards);
  t->shards = NULL;
}
