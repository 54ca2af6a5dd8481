/* The hier back end (Horovod's hierarchical allreduce): the ranks of each
 * node reduce through one shared segment (shm.c's group), member m of the
 * node owning slice m of every chunk; the members with the same slice index
 * run the ring (ring.c) across nodes on their slice of the node's sum, in
 * place in the segment; then every member copies the whole chunk out. Each
 * node sends the gradient over its link once, not once per rank.
 *
 * Zero copy: coll_comm_buffer gives each rank its part of a second segment
 * of its node (shm_parts). An in-place allreduce of a span of it copies
 * nothing in or out: after one barrier, per chunk, member m sums slice m over
 * the members' parts in member order into its own part, the ring runs there
 * in place, and the (averaged) slice is stored into every other member's
 * part; one barrier ends the span. Same chunks, slices, sums and ring as the
 * copying path: the same bits. A node's members that disagree on the path
 * fail, named; nodes may differ (the ring sees the same node sums either
 * way), but a node that fails leaves the others' rings to their timeout.
 *
 * Nodes are named by their lowest rank (MPI: the shared-memory split; a
 * TF_CONFIG cluster: the host part of the task's address) and ordered by it.
 * Nodes may hold different numbers of ranks: the slices are as many as the
 * smallest node's ranks, and a node's further ranks own none (they copy in
 * and out only).
 *
 * Fixed reduction order: element i is ((x_0 + x_1) + ...) over the node's
 * ranks in rank order, then summed around the ring in node order (ring.c),
 * then divided by the number of ranks for an average: bit-identical on
 * every rank and from run to run. On one node there is no ring, and the
 * bits are shm's.
 *
 * --compression bf16|fp16: only the ring across nodes is 16-bit. The node
 * sums above are fp32, unrounded; in each chunk (HIER_CHUNK_ELEMS), slice m
 * goes round the ring with ring.c's rounding points, the node sums in the
 * place of the ranks' terms (segment j of the slice starts at node j): each
 * partial sum rounded as it leaves a node, the ring's sum R(s) at the end
 * (the sub-request sums, it does not average). The average then divides
 * R(s) by the ranks in fp32, after the last rounding. On one node nothing is
 * rounded: shm's fp32 bits (tests/collective/test_allreduce_comp.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/shm_group.h"

/* 2 MiB per rank and chunk, not shm's 512 KiB: each chunk is a ring across
 * nodes of two steps per node, and each step waits on a peer's progress
 * thread over the link. The 1.07 MB gradient is one chunk, not three:
 * 2 hosts x 2 ranks at 1 Gbit/s (netns + tbf), training, 4 rounds taking
 * turns, load 3.6-4.3: 13.5-19.7k samples/s against 9.8-10.9k with
 * 512 KiB chunks (the flat ring in the same runs: 12.4-13.7k). */
#define HIER_CHUNK_ELEMS ((int64_t)512 * 1024)

/* The ring across nodes in 32 KiB messages (ring.c's default is 4 MiB: one
 * message per step): under Open MPI's TCP eager limit (64 KiB), so a send
 * goes out at once, with no rendezvous waiting for the receiver's progress
 * thread to be scheduled on loaded cores. Same setting, 4 rounds taking
 * turns, load 3.5-4.7: 17.9-20.1k samples/s against 16.6-18.5k with 4 MiB
 * (the flat ring: 13.4-14.1k). The config's ring_chunk_bytes overrides it. */
#define HIER_RING_CHUNK_BYTES ((int64_t)32 * 1024)

typedef struct {
  shm_group g;     /* this node's ranks */
  int *members;    /* (g.n) comm ranks on this node, ascending */
  int *across;     /* (nodes) comm ranks holding this rank's slice index, in node order */
  int nodes, node; /* nodes in the job; this node's place among them */
  int slices;      /* the fewest ranks on any node: members below this own a slice */
  coll_ring *ring; /* across nodes on this rank's slice; NULL: one node, or no slice */
  shm_parts buf;   /* coll_comm_buffer's segment: a part per member of this node */
} hier_comm;

typedef enum { HIER_COPY_IN = 0, HIER_REDUCE, HIER_RING, HIER_SHARE, HIER_COPY_OUT } hier_step;

typedef struct {
  int64_t off;     /* first element of the current chunk */
  hier_step step;  /* what comes next for the current chunk */
  int64_t zc_off;  /* the span's start in this rank's part of the buffer; -1: copied */
  coll_request sub; /* the ring's request on this rank's slice of the segment */
} hier_req;

static void hier_free(coll_comm *c) {
  hier_comm *h = c->impl;
  if (!h) return;
  coll_ring_close(c, h->ring);
  /* After a failure the ring's sends may still read the segments: the job
   * is ending, leave them mapped (their names are long gone from /dev/shm). */
  if (!coll_comm_failed(c)) {
    shm_parts_close(&h->buf);
    shm_group_close(&h->g);
  }
  free(h->members);
  free(h->across);
  free(h);
  c->impl = NULL;
}

/* From every rank's node (its lowest rank, in first[]): this node's
 * members, the nodes in order, and the ranks that share this rank's slice. */
static int hier_layout(coll_comm *c, hier_comm *h, const int *first, char *err, size_t err_bytes) {
  const size_t n = (size_t)(unsigned)c->size;
  int *count = calloc(n, sizeof *count); /* ranks per node, indexed by its lowest rank */
  h->members = malloc(n * sizeof *h->members);
  h->across = malloc(n * sizeof *h->across);
  if (!count || !h->members || !h->across) {
    free(count);
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  int me = -1, members = 0;
  for (int r = 0; r < c->size; r++) {
    if (first[r] < 0 || first[r] > r || first[first[r]] != first[r]) {
      free(count);
      snprintf(err, err_bytes, "--allreduce hier: rank %d names node %d, which is no node's "
               "lowest rank", r, first[r]);
      return COLL_ERR;
    }
    count[first[r]]++;
    if (first[r] != first[c->rank]) continue;
    if (r == c->rank) me = members;
    h->members[members++] = r;
  }
  h->slices = c->size;
  for (int r = 0; r < c->size; r++) {
    if (first[r] != r) continue;
    if (r == first[c->rank]) h->node = h->nodes;
    h->nodes++;
    if (count[r] < h->slices) h->slices = count[r];
  }
  /* This rank's slice index me, on every node: that node's me-th rank. */
  if (me < h->slices) {
    int k = 0;
    for (int r = 0; r < c->size; r++) {
      if (first[r] != r) continue;
      int seen = 0;
      for (int q = r; q < c->size; q++) {
        if (first[q] == r && seen++ == me) {
          h->across[k++] = q;
          break;
        }
      }
    }
  }
  free(count);
  h->g.n = members;
  h->g.me = me;
  return COLL_OK;
}

static int hier_init(coll_comm *c, char *err, size_t err_bytes) {
  hier_comm *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->impl = h;
  if (c->size == 1) return COLL_OK; /* nothing to share */
  /* Every rank's node: its lowest rank, gathered. */
  int *first = malloc((size_t)(unsigned)c->size * sizeof *first);
  const int32_t mine = c->node_first;
  int rc = first ? COLL_OK : COLL_ERR;
  if (rc != COLL_OK) snprintf(err, err_bytes, "collective: out of memory");
  if (rc == COLL_OK) {
    _Static_assert(sizeof *first == sizeof mine, "rows of int32");
    rc = c->tp->allgather(c, 0, &mine, first, (int64_t)sizeof mine);
    if (rc != COLL_OK) snprintf(err, err_bytes, "--allreduce hier: %s", coll_comm_error(c));
  }
  if (rc == COLL_OK) rc = hier_layout(c, h, first, err, err_bytes);
  free(first);
  /* Every rank saw the same rows: the layout fails everywhere or nowhere. */
  if (rc != COLL_OK) return rc;
  rc = shm_group_open(c, &h->g, h->members, h->g.n, h->g.me, HIER_CHUNK_ELEMS, err, err_bytes);
  if (rc != COLL_OK) return rc;
  if (h->nodes > 1 && h->g.me < h->slices &&
      coll_ring_open(c, &h->ring, h->across, h->nodes, h->node, HIER_RING_CHUNK_BYTES) != COLL_OK) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  return COLL_OK;
}

/* This rank's slice [lo, hi) of a chunk of len elements (empty for a rank
 * beyond the smallest node's count). */
static void hier_slice(const hier_comm *h, int64_t len, int64_t *lo, int64_t *hi) {
  const int m = h->g.me < h->slices ? h->g.me : h->slices;
  *lo = len * m / h->slices;
  *hi = h->g.me < h->slices ? len * (m + 1) / h->slices : *lo;
}

/* coll_comm_buffer: one segment per node, a part per member of the node
 * (a node of one rank: private memory). */
static int hier_buffer(coll_comm *c, int64_t elems, float **out, char *err, size_t err_bytes) {
  hier_comm *h = c->impl;
  if (c->size == 1) return COLL_OK; /* nothing to share: the caller's memory is as good */
  return shm_parts_open(c, &h->g, &h->buf, elems, out, err, err_bytes);
}

/* Where this rank's slice of the current chunk is summed, goes round the
 * ring and is divided: the segment's result area (copied), or the chunk in
 * this rank's own part of the buffer (zero copy). */
static float *hier_chunk_sum(const hier_comm *h, const hier_req *q) {
  return q->zc_off < 0 ? h->g.result : shm_parts_at(&h->buf, h->g.me) + q->zc_off + q->off;
}

/* The node's sum of this rank's slice [lo, hi), in member order, into
 * hier_chunk_sum: this rank's own term straight from send, the others' from
 * their slots (copied) or their parts of the buffer (zero copy). */
static void hier_reduce_slice(hier_comm *h, const coll_request *r, const hier_req *q, int64_t lo,
                              int64_t hi) {
  shm_group *g = &h->g;
  for (int p = 0; p < g->n; p++) {
    g->in[p] = q->zc_off >= 0 ? shm_parts_at(&h->buf, p) + q->zc_off + q->off + lo
               : p == g->me ? r->send + q->off + lo : shm_group_data(g, p) + lo;
  }
  g->out[0] = hier_chunk_sum(h, q) + lo;
  shm_sum_ordered(g->out, 1, g->in, g->n, hi - lo, 0.0f);
}

/* After the ring: the average, then (zero copy) the slice into every other
 * member's part, which no one else reads or writes until the last barrier. */
static void hier_share_slice(const coll_comm *c, hier_comm *h, const coll_request *r,
                             const hier_req *q, int64_t lo, int64_t hi) {
  float *sum = hier_chunk_sum(h, q);
  if (r->avg) {
    const float div = (float)c->size;
    for (int64_t i = lo; i < hi; i++) sum[i] /= div;
  }
  if (q->zc_off < 0) return;
  for (int p = 0; p < h->g.n; p++) {
    if (p == h->g.me) continue;
    memcpy(shm_parts_at(&h->buf, p) + q->zc_off + q->off + lo, sum + lo,
           (size_t)(hi - lo) * sizeof(float));
  }
}

static int hier_start(coll_comm *c, coll_request *r) {
  hier_req *q = calloc(1, sizeof *q);
  if (!q) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  q->zc_off = shm_parts_span(&((hier_comm *)c->impl)->buf, ((hier_comm *)c->impl)->g.me, r);
  r->impl = q;
  return COLL_OK;
}

/* Starts the ring on this rank's slice of the node's sum, in place. */
static int hier_ring_start(coll_comm *c, hier_comm *h, coll_request *r, hier_req *q, int64_t lo,
                           int64_t hi) {
  coll_request *s = &q->sub;
  memset(s, 0, sizeof *s);
  s->seq = r->seq;
  s->send = s->recv = hier_chunk_sum(h, q) + lo;
  s->elems = hi - lo;
  s->fp16_scale = r->fp16_scale; /* --compression: only the ring across nodes is 16-bit */
  s->t_start = s->t_progress = clock_mono_s();
  q->step = HIER_RING; /* first: hier_abandon must reach a ring that failed part-way */
  return coll_ring_start(c, h->ring, s);
}

/* Runs the chunks' steps as far as the peers allow, without blocking. */
static int hier_test(coll_comm *c, coll_request *r, int *done) {
  hier_comm *h = c->impl;
  hier_req *q = r->impl;
  *done = 0;
  if (c->size == 1 || r->elems == 0) {
    if (r->send != r->recv && r->elems) memcpy(r->recv, r->send, (size_t)r->elems * sizeof(float));
    goto finished; /* the average of one rank is itself */
  }
  if (q->off == 0 && q->step == HIER_COPY_IN) { /* the request's first step */
    shm_group_post_path(&h->g, q->zc_off, r->elems);
  }
  while (q->off < r->elems) {
    const int64_t left = r->elems - q->off;
    const int64_t len = left < HIER_CHUNK_ELEMS ? left : HIER_CHUNK_ELEMS;
    int64_t lo, hi;
    hier_slice(h, len, &lo, &hi);
    int ready = 1, ring_done = 0;
    switch (q->step) {
    case HIER_COPY_IN: /* the others' slices, this rank's own stays in send; zero copy: none */
      if (q->zc_off < 0) {
        float *mine = shm_group_data(&h->g, h->g.me);
        memcpy(mine, r->send + q->off, (size_t)lo * sizeof(float));
        memcpy(mine + hi, r->send + q->off + hi, (size_t)(len - hi) * sizeof(float));
      }
      /* zero copy: one barrier before the first chunk (every part written) */
      if (q->zc_off < 0 || q->off == 0) shm_group_arrive(&h->g);
      q->step = HIER_REDUCE;
      break;
    case HIER_REDUCE: /* zero copy, chunks after the first: that barrier is behind us */
      if (shm_group_all_arrived(c, &h->g, &ready) != COLL_OK) return COLL_ERR;
      if (!ready) return COLL_OK;
      if (q->off == 0 && shm_group_paths_agree(c, &h->g, q->zc_off, r->elems) != COLL_OK) {
        return COLL_ERR;
      }
      coll_req_touch(r);
      hier_reduce_slice(h, r, q, lo, hi);
      q->step = HIER_SHARE;
      if (h->ring && hier_ring_start(c, h, r, q, lo, hi) != COLL_OK) return COLL_ERR;
      break;
    case HIER_RING: {
      const double before = coll_req_last(&q->sub);
      if (coll_ring_test(c, &q->sub, &ring_done) != COLL_OK) return COLL_ERR;
      if (coll_req_last(&q->sub) != before) coll_req_touch(r);
      if (!ring_done) return COLL_OK;
      q->step = HIER_SHARE;
      break;
    }
    case HIER_SHARE:
      hier_share_slice(c, h, r, q, lo, hi);
      if (q->zc_off >= 0 && q->off + len < r->elems) { /* no barrier between chunks */
        q->off += len;
        q->step = HIER_COPY_IN;
        break;
      }
      shm_group_arrive(&h->g);
      q->step = HIER_COPY_OUT;
      break;
    case HIER_COPY_OUT: /* zero copy: every slice is in every part */
      if (shm_group_all_arrived(c, &h->g, &ready) != COLL_OK) return COLL_ERR;
      if (!ready) return COLL_OK;
      coll_req_touch(r);
      if (q->zc_off < 0) memcpy(r->recv + q->off, h->g.result, (size_t)len * sizeof(float));
      q->off += len;
      q->step = HIER_COPY_IN;
      break;
    }
  }
finished:
  free(q);
  r->impl = NULL;
  *done = 1;
  return COLL_OK;
}

/* The ring's receives are cancelled (its sends read the segment until the
 * job ends); the node's counters no longer match: the comm is broken. */
static void hier_abandon(coll_comm *c, coll_request *r) {
  hier_comm *h = c->impl;
  hier_req *q = r->impl;
  shm_group_fail(c, &h->g);
  if (q && q->step == HIER_RING) coll_ring_abandon(c, &q->sub);
  free(q);
  r->impl = NULL;
}

const coll_backend_ops coll_hier_ops = {
  .name = "hier",
  .threaded = 1,
  .init = hier_init,
  .free = hier_free,
  .start = hier_start,
  .test = hier_test,
  .abandon = hier_abandon,
  .buffer = hier_buffer,
};
