/* The benchmark's `winshm` algorithm: the shm back end's fixed-order sliced
 * reduction (collective/shm.c) over an MPI-3 shared window
 * (MPI_Win_allocate_shared) synchronised the MPI-3 way (MPI_Win_sync around
 * MPI_Barrier), to measure that choice against POSIX shm. Benchmark code
 * only: it blocks in MPI_Barrier, so it has no timeout and no dead-peer check. */
#ifndef TFDIST_BENCH_WINSHM_H
#define TFDIST_BENCH_WINSHM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bench_winshm bench_winshm;

/* Every rank of MPI_COMM_WORLD must share one node; collective. */
int bench_winshm_init(bench_winshm **out, char *err, size_t err_bytes);
/* In place: buf becomes the sum over ranks, ((x0 + x1) + x2) + ... */
int bench_winshm_allreduce(bench_winshm *w, float *buf, int64_t count);
void bench_winshm_free(bench_winshm *w);

#endif
