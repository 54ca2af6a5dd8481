/* Rank 0's training flags against every rank's; see train_agree.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_agree.h"
#include "train/train_state.h"

#define AGREE_ROWS 32
#define AGREE_ROW_BYTES 96

/* The flags that change what every rank computes or how often it meets the
 * others; a rank's own device, threads, paths and timeout may differ. */
static int agree_rows(const train_config *c, char rows[AGREE_ROWS][AGREE_ROW_BYTES]) {
  int n = 0;
#define ROW(...) snprintf(rows[n++], AGREE_ROW_BYTES, __VA_ARGS__)
  ROW("--batch-size %lld", (long long)c->batch_size);
  ROW("--backward-passes-per-step %lld", (long long)c->backward_passes_per_step);
  ROW("--first-layer-neurons %lld", (long long)c->first_layer_neurons);
  ROW("--second-layer-neurons %lld", (long long)c->second_layer_neurons);
  ROW("--learning-rate %.17g", c->learning_rate);
  ROW("--epochs %lld", (long long)c->epochs);
  ROW("--seed %lld", (long long)c->seed);
  ROW("--optimizer %.40s", train_optimizer_names[c->optimizer]);
  ROW("--momentum %.17g", c->momentum);
  ROW("--beta1 %.17g", c->beta1);
  ROW("--beta2 %.17g", c->beta2);
  ROW("--epsilon %.17g", c->epsilon);
  ROW("--rho %.17g", c->rho);
  ROW("--weight-decay %.17g", c->weight_decay);
  ROW("--lr-schedule %.40s", train_lr_schedule_names[c->lr_schedule]);
  ROW("--lr-decay-rate %.17g", c->lr_decay_rate);
  ROW("--lr-decay-epochs %.17g", c->lr_decay_epochs);
  ROW("--lr-min %.17g", c->lr_min);
  ROW("--warmup-epochs %.17g", c->warmup_epochs);
  ROW("--scale-lr %d", c->scale_lr);
  ROW("--overlap %d", c->overlap);
  ROW("--shared-gradients %d", c->shared_gradients); /* a node's ranks take one path */
  ROW("--compression %.8s", train_compression_names[c->compression]); /* the ring's wire format */
  ROW("--data-mode %.40s", train_data_mode_names[c->data_mode]);
  ROW("--shuffle-buffer %lld", (long long)c->shuffle_buffer);
  ROW("--checkpoint-every %lld", (long long)c->checkpoint_every);
  ROW("--max-steps %lld", (long long)c->max_steps);
  ROW("--timeline %d", c->timeline); /* its start is a barrier */
  /* auto: rank 0's checkpoint-or-not verdict is a collective of its own */
  ROW("--resume-from %s", c->resume_mode == TRAIN_RESUME_AUTO    ? "auto"
                          : c->resume_mode == TRAIN_RESUME_GIVEN ? "(given)"
                                                                 : "(not given)");
#undef ROW
  return n;
}

int train_agree_check(const train_config *cfg, coll_comm *comm, int rank, int size,
                      base_err *e) {
  char mine[AGREE_ROWS][AGREE_ROW_BYTES] = {{0}}, root[AGREE_ROWS][AGREE_ROW_BYTES] = {{0}};
  const int n = agree_rows(cfg, mine);
  memcpy(root, mine, sizeof root);
  double *first = calloc((size_t)size, sizeof *first);
  if (!first) return base_err_set(e, "out of memory");
  int rc = coll_broadcast_bytes(comm, root, (int64_t)sizeof root, 0);
  int differ = -1;
  for (int i = 0; rc == COLL_OK && differ < 0 && i < n; i++) {
    if (strcmp(mine[i], root[i]) != 0) differ = i;
  }
  first[rank] = differ + 1;
  if (rc == COLL_OK) rc = coll_allreduce_sum_f64(comm, first, size);
  if (rc != COLL_OK) {
    free(first);
    return train_err_coll(e, comm);
  }
  int who = -1;
  for (int r = 0; who < 0 && r < size; r++) who = first[r] > 0 ? r : -1;
  if (who >= 0) {
    const int i = (int)first[who] - 1;
    if (who == rank) {
      base_err_bad_input(e, "this rank has %s where rank 0 has %s: every task of the job must "
                   "be given the same training flags", mine[i], root[i]);
    } else {
      const char *flag = root[i], *sp = strchr(flag, ' ');
      base_err_bad_input(e, "rank %d's %.*s differs from rank 0's (%s): every task of the "
                   "job must be given the same training flags", who,
                   (int)(sp ? sp - flag : (ptrdiff_t)strlen(flag)), flag, root[i]);
    }
  }
  free(first);
  return who >= 0 ? -1 : 0;
}
