/* The parameter-server protocol over a TF_CONFIG cluster's mesh; see ps.h.
 * A round is one frame from every rank, all of one type: PUSH (a step),
 * PULL (rank 0 wants the state) or DONE. Rank 0's INIT comes first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/ps.h"
#include "cluster/tcp.h"
#include "collective/transport.h"

#define PS_BATCH 32 /* transfers per engine batch (its limit is 64) */

typedef struct {
  uint64_t elems;
  uint32_t opt_bytes, ranks;
  uint32_t state_per_elem; /* optimizer state floats per weight, interleaved */
} ps_meta;

static void ps_slice(int64_t elems, int nps, int s, int64_t *lo, int64_t *n) {
  *lo = elems * s / nps;
  *n = elems * (s + 1) / nps - *lo;
}

int cluster_ps_count(const coll_comm *c) {
  cluster_tcp *m = c ? cluster_comm_mesh(c) : NULL;
  return m ? cluster_tcp_cluster(m)->nps : 0;
}

static int ps_fail(coll_comm *c) {
  coll_set_error(c, "%s", cluster_tcp_error(cluster_comm_mesh(c)));
  return COLL_ERR;
}

/* ps s is task ntrain + s. */
static int ps_task(const coll_comm *c, int s) {
  return cluster_tcp_cluster(cluster_comm_mesh(c))->ntrain + s;
}

int cluster_ps_init(coll_comm *c, const float *params, const float *state, int state_per_elem,
                 int64_t elems, const void *opt, uint32_t opt_bytes) {
  if (coll_comm_failed(c)) return COLL_ERR;
  if (coll_comm_rank(c) != 0) return COLL_OK;
  const int S = cluster_ps_count(c), k = state_per_elem;
  ps_meta meta = {(uint64_t)elems, opt_bytes, (uint32_t)coll_comm_size(c), (uint32_t)k};
  for (int s = 0; s < S; s++) {
    int64_t lo, n;
    ps_slice(elems, S, s, &lo, &n);
    const uint64_t b = (uint64_t)n * sizeof(float);
    cluster_tcp_op ops[4] = {
        {.peer = ps_task(c, s), .send = 1, .type = CLUSTER_TCP_PS_INIT, .sbuf = &meta, .bytes = sizeof meta},
        {.peer = ps_task(c, s), .send = 1, .type = CLUSTER_TCP_PS_INIT, .sbuf = opt, .bytes = opt_bytes},
        {.peer = ps_task(c, s), .send = 1, .type = CLUSTER_TCP_PS_INIT, .sbuf = params + lo, .bytes = b},
        {.peer = ps_task(c, s), .send = 1, .type = CLUSTER_TCP_PS_INIT, .sbuf = state + k * lo,
         .bytes = (uint64_t)k * b}};
    if (cluster_tcp_run(cluster_comm_mesh(c), ops, 4) != 0) return ps_fail(c);
  }
  return COLL_OK;
}

/* Sends a frame of type to every ps (slice s of out, or nothing) and takes
 * its reply into slice s of in (when in is not NULL), in_k floats per weight. */
static int ps_round(coll_comm *c, uint32_t type, const float *out, float *in, int64_t elems,
                    int in_k) {
  if (coll_comm_failed(c)) return COLL_ERR;
  const int S = cluster_ps_count(c);
  cluster_tcp_op ops[PS_BATCH];
  for (int s0 = 0; s0 < S; s0 += PS_BATCH / 2) {
    int k = 0;
    for (int s = s0; s < S && s < s0 + PS_BATCH / 2; s++) {
      int64_t lo, n;
      ps_slice(elems, S, s, &lo, &n);
      const uint64_t b = out ? (uint64_t)n * sizeof(float) : 0;
      ops[k++] = (cluster_tcp_op){.peer = ps_task(c, s), .send = 1, .type = type,
                               .sbuf = out ? (const void *)(out + lo) : NULL, .bytes = b};
      if (in) {
        ops[k++] = (cluster_tcp_op){.peer = ps_task(c, s), .type = CLUSTER_TCP_PS_REPLY,
                                 .rbuf = n ? (void *)(in + in_k * lo) : (void *)in,
                                 .bytes = (uint64_t)(in_k * n) * sizeof(float)};
      }
    }
    if (cluster_tcp_run(cluster_comm_mesh(c), ops, k) != 0) return ps_fail(c);
  }
  return COLL_OK;
}

int cluster_ps_step(coll_comm *c, const float *grads, float *params, int64_t elems) {
  return ps_round(c, CLUSTER_TCP_PS_PUSH, grads, params, elems, 1);
}

int cluster_ps_pull_state(coll_comm *c, float *state, int state_per_elem, int64_t elems) {
  return ps_round(c, CLUSTER_TCP_PS_PULL, NULL, coll_comm_rank(c) == 0 ? state : NULL, elems,
                  state_per_elem);
}

int cluster_ps_finish(coll_comm *c) { return ps_round(c, CLUSTER_TCP_PS_DONE, NULL, NULL, 0, 1); }

/* ---- the ps task ---- */

typedef struct {
  cluster_tcp *m;
  int ranks, nps, s;
  int64_t lo, n;
  float *params, *state, *grads; /* grads: (ranks * n), one row per rank */
  void *opt;
  ps_meta meta;
  char *err;
  size_t err_bytes;
} ps_server;

static int ps_serve_fail(ps_server *p) {
  snprintf(p->err, p->err_bytes, "%s", cluster_tcp_error(p->m));
  return -1;
}

int cluster_ps_meta_check(uint64_t elems, uint32_t opt_bytes, uint32_t ranks, int want_ranks,
                          int nps, uint32_t state_per_elem, char *err, size_t err_bytes) {
  const char *why = NULL;
  size_t all = 0;
  if ((int64_t)ranks != want_ranks) why = "its rank count is not the cluster's";
  else if (opt_bytes > CLUSTER_PS_OPT_MAX) why = "over 4096 bytes of options";
  else if (elems > CLUSTER_PS_ELEMS_MAX) why = "more than 2^40 elements";
  else if (state_per_elem < 1 || state_per_elem > CLUSTER_PS_STATE_MAX) {
    why = "not 1 to 8 state floats per weight";
  }
  /* The slice's grads buffer, one row per rank: the largest thing a ps
   * allocates; its size must not wrap (2^62 elements * 4 bytes is 0). */
  else if (__builtin_mul_overflow((size_t)(elems / (uint64_t)nps + 1), sizeof(float), &all) ||
           __builtin_mul_overflow(all, (size_t)want_ranks + 2, &all)) {
    why = "its buffers' size overflows";
  }
  if (!why) return 0;
  snprintf(err, err_bytes, "ps: rank 0 sent a bad init (%llu elements, %u ranks, %u bytes of "
           "options): %s", (unsigned long long)elems, ranks, opt_bytes, why);
  return -1;
}

static int ps_serve_init(ps_server *p) {
  if (cluster_tcp_recv(p->m, 0, CLUSTER_TCP_PS_INIT, &p->meta, sizeof p->meta) != 0) return ps_serve_fail(p);
  if (cluster_ps_meta_check(p->meta.elems, p->meta.opt_bytes, p->meta.ranks, p->ranks, p->nps,
                            p->meta.state_per_elem, p->err, p->err_bytes) != 0) {
    return -1;
  }
  ps_slice((int64_t)p->meta.elems, p->nps, p->s, &p->lo, &p->n);
  /* bounded by the checks: 2^40 elements over the servers, 8 floats each */
  const size_t b = (size_t)p->n * sizeof(float), sb = b * p->meta.state_per_elem;
  p->opt = malloc(p->meta.opt_bytes + 1);
  p->params = malloc(b + 1);
  p->state = malloc(sb + 1);
  p->grads = malloc(b * (size_t)p->ranks + 1);
  if (!p->opt || !p->params || !p->state || !p->grads) {
    snprintf(p->err, p->err_bytes, "ps: out of memory for %lld floats", (long long)p->n);
    return -1;
  }
  cluster_tcp_op ops[3] = {
      {.peer = 0, .type = CLUSTER_TCP_PS_INIT, .rbuf = p->opt, .bytes = p->meta.opt_bytes},
      {.peer = 0, .type = CLUSTER_TCP_PS_INIT, .rbuf = p->params, .bytes = b},
      {.peer = 0, .type = CLUSTER_TCP_PS_INIT, .rbuf = p->state, .bytes = sb}};
  return cluster_tcp_run(p->m, ops, 3) == 0 ? 0 : ps_serve_fail(p);
}

/* Runs one op per rank [0, ranks), PS_BATCH at a time; fill(op, rank). */
static int ps_serve_all(ps_server *p, void (*fill)(ps_server *, cluster_tcp_op *, int),
                        uint32_t *types, uint64_t *bytes) {
  cluster_tcp_op ops[PS_BATCH];
  for (int r0 = 0; r0 < p->ranks; r0 += PS_BATCH) {
    int k = 0;
    for (int r = r0; r < p->ranks && k < PS_BATCH; r++) fill(p, &ops[k++], r);
    if (cluster_tcp_run(p->m, ops, k) != 0) return ps_serve_fail(p);
    for (int i = 0; types && i < k; i++) {
      types[r0 + i] = ops[i].got_type;
      bytes[r0 + i] = ops[i].got_bytes;
    }
  }
  return 0;
}

static void ps_fill_header(ps_server *p, cluster_tcp_op *op, int r) {
  (void)p;
  *op = (cluster_tcp_op){.peer = r};
}

static void ps_fill_grads(ps_server *p, cluster_tcp_op *op, int r) {
  *op = (cluster_tcp_op){.peer = r, .body_only = 1, .rbuf = p->grads + (size_t)r * (size_t)p->n,
                      .bytes = (uint64_t)p->n * sizeof(float)};
}

static void ps_fill_params(ps_server *p, cluster_tcp_op *op, int r) {
  *op = (cluster_tcp_op){.peer = r, .send = 1, .type = CLUSTER_TCP_PS_REPLY, .sbuf = p->params,
                      .bytes = (uint64_t)p->n * sizeof(float)};
}

/* The ranks' gradients summed in rank order, then averaged, into row 0. */
static void ps_average(ps_server *p) {
  float *acc = p->grads;
  for (int r = 1; r < p->ranks; r++) {
    const float *g = p->grads + (size_t)r * (size_t)p->n;
    for (int64_t i = 0; i < p->n; i++) acc[i] = acc[i] + g[i];
  }
  for (int64_t i = 0; i < p->n; i++) acc[i] /= (float)p->ranks;
}

static int ps_serve_round(ps_server *p, uint32_t *types, uint64_t *bytes,
                          cluster_ps_update_fn update, void *ctx, cluster_ps_stats *st) {
  double t0 = clock_mono_s();
  if (ps_serve_all(p, ps_fill_header, types, bytes) != 0) return -1;
  const uint64_t want = types[0] == CLUSTER_TCP_PS_PUSH ? (uint64_t)p->n * sizeof(float) : 0;
  for (int r = 0; r < p->ranks; r++) {
    if (types[r] != types[0] || bytes[r] != want) {
      snprintf(p->err, p->err_bytes,
               "ps: rank %d sent frame %u of %llu bytes where rank 0 sent %u (%llu bytes due): "
               "do the tasks' flags differ?", r, types[r], (unsigned long long)bytes[r], types[0],
               (unsigned long long)want);
      return -1;
    }
  }
  if (types[0] == CLUSTER_TCP_PS_DONE) return 1;
  if (types[0] == CLUSTER_TCP_PS_PULL) {
    const uint64_t sb = (uint64_t)p->n * p->meta.state_per_elem * sizeof(float);
    return cluster_tcp_send(p->m, 0, CLUSTER_TCP_PS_REPLY, p->state, sb) == 0
               ? 0 : ps_serve_fail(p);
  }
  if (types[0] != CLUSTER_TCP_PS_PUSH) {
    snprintf(p->err, p->err_bytes, "ps: unexpected frame type %u", types[0]);
    return -1;
  }
  if (ps_serve_all(p, ps_fill_grads, NULL, NULL) != 0) return -1;
  double t1 = clock_mono_s();
  ps_average(p);
  if (update(ctx, p->params, p->grads, p->state, p->n, p->opt, p->meta.opt_bytes, p->err,
             p->err_bytes) != 0) {
    return -1;
  }
  double t2 = clock_mono_s();
  if (ps_serve_all(p, ps_fill_params, NULL, NULL) != 0) return -1;
  st->steps++;
  st->wait_s += t1 - t0;
  st->update_s += t2 - t1;
  return 0;
}

int cluster_ps_serve(const coll_world *w, cluster_ps_update_fn update, void *ctx, cluster_ps_stats *st,
                  char *err, size_t err_bytes) {
  cluster_tcp *m = cluster_world_mesh(w);
  const cluster_tf_config *tf = cluster_tcp_cluster(m);
  ps_server p = {.m = m, .ranks = tf->ntrain, .nps = tf->nps, .s = tf->self - tf->ntrain,
                 .err = err, .err_bytes = err_bytes};
  memset(st, 0, sizeof *st);
  uint32_t *types = calloc((size_t)p.ranks, sizeof *types);
  uint64_t *bytes = calloc((size_t)p.ranks, sizeof *bytes);
  int rc = types && bytes ? ps_serve_init(&p) : -1;
  if (!types || !bytes) snprintf(err, err_bytes, "ps: out of memory");
  st->elems = (int64_t)p.meta.elems;
  st->lo = p.lo;
  st->n = p.n;
  while (rc == 0) rc = ps_serve_round(&p, types, bytes, update, ctx, st);
  /* The ranks still up learn why their ps is going (else they see it close). */
  for (int r = 0; rc < 0 && r < p.ranks; r++) cluster_tcp_notify(p.m, r, CLUSTER_TCP_FAIL, err, strlen(err));
  free(types);
  free(bytes);
  free(p.opt);
  free(p.params);
  free(p.state);
  free(p.grads);
  return rc == 1 ? 0 : -1;
}
