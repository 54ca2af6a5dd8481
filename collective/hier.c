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
  shm_node steps;  /* the node's steps over g (shm_node.c); the ring is their cross step */
} hier_comm;

typedef struct {
  shm_node_req node; /* first: shm_node's state */
  coll_request sub;  /* the ring's request on this rank's slice of the node's sum */
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

/* The cross step: the ring on this rank's slice of the node's sum, in place
 * (shm_node has set the step first: hier_abandon reaches a ring that failed
 * part-way). */
static int hier_ring_start(coll_comm *c, void *ctx, coll_request *r, float *sum, int64_t m) {
  hier_comm *h = ctx;
  coll_request *s = &((hier_req *)r->impl)->sub;
  memset(s, 0, sizeof *s);
  s->seq = r->seq;
  s->send = s->recv = sum;
  s->elems = m;
  s->fp16_scale = r->fp16_scale; /* --compression: only the ring across nodes is 16-bit */
  s->t_start = s->t_progress = clock_mono_s();
  return coll_ring_start(c, h->ring, s);
}

static int hier_ring_test(coll_comm *c, void *ctx, coll_request *r, int *done) {
  (void)ctx;
  coll_request *s = &((hier_req *)r->impl)->sub;
  const double before = coll_req_last(s);
  if (coll_ring_test(c, s, done) != COLL_OK) return COLL_ERR;
  if (coll_req_last(s) != before) coll_req_touch(r);
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
  h->steps = (shm_node){.g = &h->g, .parts = &h->buf, .slices = h->slices, .ranks = c->size,
                       .ctx = h};
  if (h->ring) { /* no ring (one node, no slice): the sum is divided and stored at once */
    h->steps.cross_start = hier_ring_start;
    h->steps.cross_test = hier_ring_test;
  }
  return COLL_OK;
}

/* coll_comm_buffer: one segment per node, a part per member of the node
 * (a node of one rank: private memory). */
static int hier_buffer(coll_comm *c, int64_t elems, float **out, char *err, size_t err_bytes) {
  hier_comm *h = c->impl;
  if (c->size == 1) return COLL_OK; /* nothing to share: the caller's memory is as good */
  return shm_parts_open(c, &h->g, &h->buf, elems, out, err, err_bytes);
}

static int hier_start(coll_comm *c, coll_request *r) {
  return shm_node_start(c, &((hier_comm *)c->impl)->steps, r, sizeof(hier_req));
}

static int hier_test(coll_comm *c, coll_request *r, int *done) {
  return shm_node_test(c, &((hier_comm *)c->impl)->steps, r, done);
}

/* The ring's receives are cancelled (its sends read the segment until the
 * job ends); the node's counters no longer match: the comm is broken. */
static void hier_abandon(coll_comm *c, coll_request *r) {
  hier_comm *h = c->impl;
  hier_req *q = r->impl;
  shm_group_fail(c, &h->g);
  if (q && q->node.step == SHM_NODE_CROSS) coll_ring_abandon(c, &q->sub);
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
