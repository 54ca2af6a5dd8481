/* `winshm`: the shm back end's reduction over an MPI-3 shared window (see
 * winshm.h). Per chunk, every rank copies the peers' slices of its input into
 * its own slot; after a barrier each rank sums its slice over every rank, in
 * rank order (its own term straight from its buffer), into the result area;
 * after a second barrier every rank copies the peers' slices of the result out. */
#include "winshm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shm back end's chunk (collective/shm.c, SHM_CHUNK_ELEMS): 512 KiB per
 * rank, so both algorithms keep the same working set in cache. */
#define WINSHM_CHUNK_ELEMS ((int64_t)128 * 1024)

struct bench_winshm {
  MPI_Comm node; /* the ranks of this node: all of the world */
  MPI_Win win;
  int rank, size;
  float *data;   /* (size) chunks, rank-major, in the window */
  float *result; /* (WINSHM_CHUNK_ELEMS), in the window */
};

int bench_winshm_init(bench_winshm **out, char *err, size_t err_bytes) {
  bench_winshm *w = calloc(1, sizeof *w);
  int world = 0;
  if (!w) {
    snprintf(err, err_bytes, "winshm: out of memory");
    return -1;
  }
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &w->node);
  MPI_Comm_rank(w->node, &w->rank);
  MPI_Comm_size(w->node, &w->size);
  int ok = w->size == world, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_ok) {
    snprintf(err, err_bytes, "winshm: every rank must be on one node (this node has %d of %d)",
             w->size, world);
    MPI_Comm_free(&w->node);
    free(w);
    return -1;
  }
  /* Rank 0 holds the whole segment; the others map it by MPI_Win_shared_query. */
  const MPI_Aint bytes = (MPI_Aint)(w->size + 1) * WINSHM_CHUNK_ELEMS * (MPI_Aint)sizeof(float);
  void *base = NULL;
  int rc = MPI_Win_allocate_shared(w->rank == 0 ? bytes : 0, sizeof(float), MPI_INFO_NULL,
                                   w->node, &base, &w->win);
  MPI_Aint got = 0;
  int disp = 0;
  if (rc == MPI_SUCCESS) rc = MPI_Win_shared_query(w->win, 0, &got, &disp, &base);
  if (rc != MPI_SUCCESS || got < bytes) {
    snprintf(err, err_bytes, "winshm: MPI_Win_allocate_shared of %lld bytes failed (%d)",
             (long long)bytes, rc);
    MPI_Comm_free(&w->node);
    free(w);
    return -1;
  }
  w->data = base;
  w->result = w->data + (int64_t)w->size * WINSHM_CHUNK_ELEMS;
  MPI_Win_lock_all(MPI_MODE_NOCHECK, w->win); /* a passive epoch for loads and stores */
  *out = w;
  return 0;
}

/* MPI-3's barrier for a shared window: memory sync, process sync, memory sync. */
static void winshm_barrier(bench_winshm *w) {
  MPI_Win_sync(w->win);
  MPI_Barrier(w->node);
  MPI_Win_sync(w->win);
}

static void winshm_reduce_slice(bench_winshm *w, const float *buf, int64_t lo, int64_t hi) {
  const int64_t m = hi - lo;
  float *res = w->result + lo;
  const float *src[2];
  for (int p = 0; p < 2; p++) {
    src[p] = p == w->rank ? buf + lo : w->data + (int64_t)p * WINSHM_CHUNK_ELEMS + lo;
  }
  for (int64_t i = 0; i < m; i++) res[i] = src[0][i] + src[1][i];
  for (int p = 2; p < w->size; p++) {
    const float *x = p == w->rank ? buf + lo : w->data + (int64_t)p * WINSHM_CHUNK_ELEMS + lo;
    for (int64_t i = 0; i < m; i++) res[i] += x[i];
  }
}

int bench_winshm_allreduce(bench_winshm *w, float *buf, int64_t count) {
  if (w->size == 1) return 0;
  for (int64_t off = 0; off < count; off += WINSHM_CHUNK_ELEMS) {
    const int64_t len = count - off < WINSHM_CHUNK_ELEMS ? count - off : WINSHM_CHUNK_ELEMS;
    const int64_t lo = len * w->rank / w->size, hi = len * (w->rank + 1) / w->size;
    float *mine = w->data + (int64_t)w->rank * WINSHM_CHUNK_ELEMS;
    float *chunk = buf + off;
    memcpy(mine, chunk, (size_t)lo * sizeof(float));
    memcpy(mine + hi, chunk + hi, (size_t)(len - hi) * sizeof(float));
    winshm_barrier(w);
    winshm_reduce_slice(w, chunk, lo, hi);
    winshm_barrier(w);
    memcpy(chunk, w->result, (size_t)len * sizeof(float)); /* this rank's slice too: same bits */
  }
  return 0;
}

void bench_winshm_free(bench_winshm *w) {
  if (!w) return;
  MPI_Win_unlock_all(w->win);
  MPI_Win_free(&w->win);
  MPI_Comm_free(&w->node);
  free(w);
}
