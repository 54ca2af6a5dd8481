/* A group of ranks on one node sharing one POSIX shared segment (shm.c):
 * the machinery of the shm back end (one group: every rank) and of hier
 * (one group per node): the segment, per-member slots, barriers polled
 * through the progress loop, dead members found by pid. Internal. */
#ifndef TFDIST_COLLECTIVE_SHM_GROUP_H
#define TFDIST_COLLECTIVE_SHM_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include "collective/coll_internal.h"

/* 512 KiB per rank and chunk: a chunk's slots stay in cache between the
 * copy in, the reduction and the copy out. 2 ranks, 1 MiB, median of 100,
 * 3 rounds taking turns (2-core EPYC, load 9-10): 40-41 us against 83-1117 us
 * with 2 MiB chunks (MPI_Allreduce in the same runs: 100-102 us, and 651-1003
 * us in the noisier 2 MiB runs). The segment is (members + 1) chunks. */
#define SHM_CHUNK_ELEMS ((int64_t)128 * 1024)

typedef struct shm_slot shm_slot;

typedef struct {
  void *base;
  size_t bytes;
  shm_slot *slot;     /* (n) per-member barrier counters and pids, in the segment */
  int64_t chunk;      /* elements per member slot and in result (SHM_CHUNK_ELEMS for shm) */
  float *data;        /* (n) slots of chunk elements, member-major, in the segment */
  float *result;      /* (chunk) reduced chunk, in the segment */
  const int *ranks;   /* (n) the members' comm ranks, the caller's; NULL: 0..n-1 */
  int n, me;          /* members; this rank's place among them */
  int64_t phase;      /* barriers this rank has reached (mirrors its slot's) */
  int pid_check;      /* members' pids are visible here (same pid namespace) */
  double pid_checked; /* last look for dead members */
  const float **in;   /* (n) scratch for shm_sum_ordered's terms (one request at a time) */
  float **out;        /* (n + 1) ... and its outputs */
} shm_group;

/* coll_comm_buffer's segment for a group: member m's part of elems floats
 * at m * stride (whole pages: no two parts share a cache line). */
typedef struct {
  float *base;
  int64_t elems, stride;
  size_t bytes;
} shm_parts;

/* Collective over the whole comm (its transport's host collectives): every
 * rank calls it for its own group at once, and member 0 of each group
 * creates that group's segment, of (n + 1) chunks of chunk elements. A group
 * of one maps private memory. */
int shm_group_open(coll_comm *c, shm_group *g, const int *ranks, int n, int me, int64_t chunk,
                   char *err, size_t err_bytes);
void shm_group_close(shm_group *g);
/* A further segment of bytes for the group, mapped by every member at
 * *base (unlinked at once, like the group's): collective over the comm like
 * shm_group_open. The caller munmaps it. */
int shm_group_share(coll_comm *c, const shm_group *g, size_t bytes, void **base, char *err,
                    size_t err_bytes);
/* This rank reaches its next barrier. */
void shm_group_arrive(shm_group *g);
/* Whether every member reached this rank's last barrier; a member that
 * gave up (shm_group_fail) or died is an error (COLL_ERR, with the comm's
 * error naming its rank). */
int shm_group_all_arrived(coll_comm *c, shm_group *g, int *yes);
/* This rank gives up (after an error or a timeout): its members waiting at
 * a barrier fail at once with its error, where no transport notice of its
 * would reach them (a TF_CONFIG mesh reads only the links a transfer uses). */
void shm_group_fail(coll_comm *c, shm_group *g);
/* Before a request's first barrier: the path this member takes (its span
 * of the parts at zc_off, elems long; zc_off -1: copied). */
void shm_group_post_path(shm_group *g, int64_t zc_off, int64_t elems);
/* After that barrier: every member took the same path over the same span,
 * or COLL_ERR naming one that did not (a caller bug: one rank's buffer is
 * registered, another's is not). */
int shm_group_paths_agree(coll_comm *c, const shm_group *g, int64_t zc_off, int64_t elems);

/* The group's parts (coll_comm_buffer): collective over the comm like
 * shm_group_share. *out is this member's part, or stays NULL where every
 * rank failed alike (err says why) and the comm still works. */
int shm_parts_open(coll_comm *c, const shm_group *g, shm_parts *p, int64_t elems, float **out,
                   char *err, size_t err_bytes);
void shm_parts_close(shm_parts *p);
static inline float *shm_parts_at(const shm_parts *p, int member) {
  return p->base + (int64_t)member * p->stride;
}
/* The start of r's span in member me's part when r is in place within it
 * (the zero-copy path); -1 otherwise (the copying path). */
int64_t shm_parts_span(const shm_parts *p, int me, const coll_request *r);

/* out[k][i] = ((in[0][i] + in[1][i]) + in[2][i]) + ... for i < m, divided
 * by div unless div is 0, into each of the n_out outputs: the one order of
 * every node sum (shm's, hier's), so the paths' bits agree. An output may be
 * an input: each block is read before it is written. */
void shm_sum_ordered(float *const *out, int n_out, const float *const *in, int n_in, int64_t m,
                     float div);

/* ---- the node-local allreduce, shared by shm and hier (shm_node.c) ----
 * Per chunk of the group's chunk elements, members below slices each own
 * a slice [lo, hi): copy in (copied path: every member's slices but its own
 * into its slot; zero copy: nothing), a barrier (zero copy: before the first
 * chunk only), each owner sums its slice over the members in member order
 * (shm_sum_ordered) into the chunk's sum (the result area; zero copy: its
 * own part), then optionally the cross step (hier: the ring across nodes
 * on the slice, in place), then the average, then the slice reaches every
 * member (result area; zero copy: stored into every part), a barrier, and
 * the copied path copies the chunk out. Without a cross step the sum is
 * divided and stored as it is summed (the owner's slice straight into
 * recv, zero copy: into every part). */
typedef enum {
  SHM_NODE_COPY_IN = 0, SHM_NODE_REDUCE, SHM_NODE_CROSS, SHM_NODE_SHARE, SHM_NODE_COPY_OUT
} shm_node_step;

typedef struct {
  shm_group *g;
  const shm_parts *parts; /* coll_comm_buffer's; parts->base NULL: none */
  int slices;             /* members below this own a slice of each chunk */
  int ranks;              /* the average divides by this (the comm's ranks) */
  /* Optional cross step on this rank's slice of the node's sum (sum[0, m)),
   * r->impl's; test sets *done. NULL: none (shm, one node, no slice). */
  int (*cross_start)(coll_comm *c, void *ctx, coll_request *r, float *sum, int64_t m);
  int (*cross_test)(coll_comm *c, void *ctx, coll_request *r, int *done);
  void *ctx;
} shm_node;

typedef struct {
  int64_t off;          /* first element of the current chunk */
  shm_node_step step;   /* what comes next for the current chunk */
  int64_t zc_off;       /* the span's start in this member's part; -1: copied */
} shm_node_req;

/* A back end's start: r->impl gets req_bytes of zeros, a shm_node_req
 * first (its path: shm_parts_span). */
int shm_node_start(coll_comm *c, const shm_node *nd, coll_request *r, size_t req_bytes);
/* A back end's test: runs the steps as far as the members allow, without
 * blocking; *done at the end, r->impl freed. COLL_ERR: the comm's error set. */
int shm_node_test(coll_comm *c, const shm_node *nd, coll_request *r, int *done);

static inline float *shm_group_data(const shm_group *g, int member) {
  return g->data + (int64_t)member * g->chunk;
}

#endif
