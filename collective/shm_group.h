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
} shm_group;

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
static inline float *shm_group_data(const shm_group *g, int member) {
  return g->data + (int64_t)member * g->chunk;
}

#endif
