/* The node-local allreduce of a shared-memory group (shm_group.h): the
 * steps that shm (one group of every rank) and hier (one group per node,
 * the ring across nodes as the cross step) both run, copied or zero copy,
 * and the one order of every node sum. */
#include <stdlib.h>
#include <string.h>

#include "collective/shm_group.h"

/* Blocks of SUM_BLOCK stay in L1 between the sum and the stores. */
#define SHM_SUM_BLOCK 2048
void shm_sum_ordered(float *const *out, int n_out, const float *const *in, int n_in, int64_t m,
                     float div) {
  if (n_in == 1 && n_out == 1 && out[0] == in[0] && div == 0.0f) return; /* x0 in place */
  float tmp[SHM_SUM_BLOCK];
  for (int64_t b = 0; b < m; b += SHM_SUM_BLOCK) {
    const int64_t k = m - b < SHM_SUM_BLOCK ? m - b : SHM_SUM_BLOCK;
    const float *restrict x0 = in[0] + b;
    if (n_in == 1) {
      memcpy(tmp, x0, (size_t)k * sizeof(float));
    } else {
      const float *restrict x1 = in[1] + b;
      for (int64_t i = 0; i < k; i++) tmp[i] = x0[i] + x1[i];
    }
    for (int p = 2; p < n_in; p++) {
      const float *restrict x = in[p] + b;
      for (int64_t i = 0; i < k; i++) tmp[i] += x[i];
    }
    if (div != 0.0f) {
      for (int64_t i = 0; i < k; i++) tmp[i] /= div;
    }
    for (int o = 0; o < n_out; o++) memcpy(out[o] + b, tmp, (size_t)k * sizeof(float));
  }
}

int shm_node_start(coll_comm *c, const shm_node *nd, coll_request *r, size_t req_bytes) {
  shm_node_req *q = calloc(1, req_bytes);
  if (!q) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  q->zc_off = c->size > 1 ? shm_parts_span(nd->parts, nd->g->me, r) : -1; /* one: no group */
  r->impl = q;
  return COLL_OK;
}

/* This member's slice [lo, hi) of a chunk of len elements (empty for a
 * member beyond the slices). */
static void shm_node_slice(const shm_node *nd, int64_t len, int64_t *lo, int64_t *hi) {
  const int me = nd->g->me, m = me < nd->slices ? me : nd->slices;
  *lo = len * m / nd->slices;
  *hi = me < nd->slices ? len * (m + 1) / nd->slices : *lo;
}

/* Member p's chunk at the current offset in the buffer (zero copy). */
static float *shm_node_part(const shm_node *nd, const shm_node_req *q, int p) {
  return shm_parts_at(nd->parts, p) + q->zc_off + q->off;
}

/* Where the slice's sum is kept between the steps (chunk-relative). */
static float *shm_node_sum(const shm_node *nd, const shm_node_req *q) {
  return q->zc_off < 0 ? nd->g->result : shm_node_part(nd, q, nd->g->me);
}

/* The node's sum of the slice, in member order; this member's own term
 * straight from send (copied) or its part (zero copy). With no cross step
 * it is divided and stored where it ends: copied, into the result area and
 * recv; zero copy, into every part. */
static void shm_node_reduce(const shm_node *nd, const shm_node_req *q, const coll_request *r,
                            int64_t lo, int64_t hi) {
  shm_group *g = nd->g;
  const int fused = !nd->cross_start;
  int n_out = 1;
  for (int p = 0; p < g->n; p++) {
    g->in[p] = q->zc_off >= 0 ? shm_node_part(nd, q, p) + lo
               : p == g->me ? r->send + q->off + lo : shm_group_data(g, p) + lo;
    if (fused && q->zc_off >= 0) g->out[p] = shm_node_part(nd, q, p) + lo;
  }
  if (fused && q->zc_off >= 0) n_out = g->n;
  else g->out[0] = shm_node_sum(nd, q) + lo;
  if (fused && q->zc_off < 0) g->out[n_out++] = r->recv + q->off + lo;
  shm_sum_ordered(g->out, n_out, g->in, g->n, hi - lo,
                  fused && r->avg ? (float)nd->ranks : 0.0f);
}

/* After the cross step: the average, and (zero copy) the slice into every
 * other member's part, which no one else touches until the last barrier. */
static void shm_node_share(const shm_node *nd, const shm_node_req *q, const coll_request *r,
                           int64_t lo, int64_t hi) {
  float *sum = shm_node_sum(nd, q);
  if (r->avg) {
    const float div = (float)nd->ranks;
    for (int64_t i = lo; i < hi; i++) sum[i] /= div;
  }
  for (int p = 0; q->zc_off >= 0 && p < nd->g->n; p++) {
    if (p != nd->g->me) {
      memcpy(shm_node_part(nd, q, p) + lo, sum + lo, (size_t)(hi - lo) * sizeof(float));
    }
  }
}

/* Copied path: the chunk out of the result area (with no cross step this
 * member's own slice is in recv already). */
static void shm_node_copy_out(const shm_node *nd, const shm_node_req *q, coll_request *r,
                              int64_t len, int64_t lo, int64_t hi) {
  const float *res = nd->g->result;
  if (nd->cross_start) {
    memcpy(r->recv + q->off, res, (size_t)len * sizeof(float));
    return;
  }
  memcpy(r->recv + q->off, res, (size_t)lo * sizeof(float));
  memcpy(r->recv + q->off + hi, res + hi, (size_t)(len - hi) * sizeof(float));
}

/* Copied path: this member's chunk but its own slice into its slot. */
static void shm_node_copy_in(const shm_node *nd, const shm_node_req *q, const coll_request *r,
                             int64_t len, int64_t lo, int64_t hi) {
  float *mine = shm_group_data(nd->g, nd->g->me);
  memcpy(mine, r->send + q->off, (size_t)lo * sizeof(float));
  memcpy(mine + hi, r->send + q->off + hi, (size_t)(len - hi) * sizeof(float));
}

/* The steps of r (r->elems > 0) as far as the members allow. */
static int shm_node_steps(coll_comm *c, const shm_node *nd, shm_node_req *q, coll_request *r,
                          int *done) {
  shm_group *g = nd->g;
  const int zc = q->zc_off >= 0;
  if (q->off == 0 && q->step == SHM_NODE_COPY_IN) shm_group_post_path(g, q->zc_off, r->elems);
  while (q->off < r->elems) {
    const int64_t left = r->elems - q->off;
    const int64_t len = left < g->chunk ? left : g->chunk;
    int64_t lo, hi;
    shm_node_slice(nd, len, &lo, &hi);
    int ready = 1, cross_done = 0;
    switch (q->step) {
    case SHM_NODE_COPY_IN:
      if (!zc) shm_node_copy_in(nd, q, r, len, lo, hi);
      if (!zc || q->off == 0) shm_group_arrive(g); /* zero copy: every part written */
      q->step = SHM_NODE_REDUCE;
      break;
    case SHM_NODE_REDUCE: /* zero copy after the first chunk: that barrier is behind us */
      if (shm_group_all_arrived(c, g, &ready) != COLL_OK) return COLL_ERR;
      if (!ready) return COLL_OK;
      if (q->off == 0 && shm_group_paths_agree(c, g, q->zc_off, r->elems) != COLL_OK) {
        return COLL_ERR;
      }
      coll_req_touch(r);
      shm_node_reduce(nd, q, r, lo, hi);
      q->step = nd->cross_start ? SHM_NODE_CROSS : SHM_NODE_SHARE;
      if (nd->cross_start &&
          nd->cross_start(c, nd->ctx, r, shm_node_sum(nd, q) + lo, hi - lo) != COLL_OK) {
        return COLL_ERR;
      }
      break;
    case SHM_NODE_CROSS:
      if (nd->cross_test(c, nd->ctx, r, &cross_done) != COLL_OK) return COLL_ERR;
      if (!cross_done) return COLL_OK;
      shm_node_share(nd, q, r, lo, hi);
      q->step = SHM_NODE_SHARE;
      break;
    case SHM_NODE_SHARE:
      if (zc && q->off + len < r->elems) { /* no barrier between chunks */
        q->off += len;
        q->step = SHM_NODE_COPY_IN;
        break;
      }
      shm_group_arrive(g);
      q->step = SHM_NODE_COPY_OUT;
      break;
    case SHM_NODE_COPY_OUT: /* zero copy: every slice is in every part */
      if (shm_group_all_arrived(c, g, &ready) != COLL_OK) return COLL_ERR;
      if (!ready) return COLL_OK;
      coll_req_touch(r);
      if (!zc) shm_node_copy_out(nd, q, r, len, lo, hi);
      q->off += len;
      q->step = SHM_NODE_COPY_IN;
      break;
    }
  }
  *done = 1;
  return COLL_OK;
}

int shm_node_test(coll_comm *c, const shm_node *nd, coll_request *r, int *done) {
  *done = 0;
  if (c->size == 1 || r->elems == 0) {
    if (r->send != r->recv && r->elems) memcpy(r->recv, r->send, (size_t)r->elems * sizeof(float));
    *done = 1; /* the average of one rank is itself */
  } else if (shm_node_steps(c, nd, r->impl, r, done) != COLL_OK) {
    return COLL_ERR;
  }
  if (*done) {
    free(r->impl);
    r->impl = NULL;
  }
  return COLL_OK;
}
