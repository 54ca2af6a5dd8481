/* NCCL allreduce test (CUDA builds only), under mpirun with at most one rank
 * per GPU: integer-valued float inputs in device memory, sum bit-exact and
 * average within one rounding, in place and out of place, blocking and
 * non-blocking, ordered on the caller's stream. Exits 77 (skip) without a
 * GPU (cudaGetDeviceCount failing means no GPU), or with fewer GPUs than
 * ranks on a host. */
#include <cuda_runtime.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/coll.h"
#include "kernels/cuda/cuda_check.h"
#include "tests/check.h"

#define GUARD 8
static kc_where where = {.device = -1}; /* rank and device, once bound */
static float value(int64_t i, int rank) { return (float)((i * 131 + rank * 17) % 23 - 11); }

typedef struct {
  coll_comm *c;
  cudaStream_t stream;
  int rank, size;
  float *d_send, *d_recv, *h;
} ctx;

static void run_case(ctx *x, int64_t n, int in_place, int avg, int nonblocking) {
  const float guard = -777.0f;
  for (int64_t i = 0; i < n; i++) x->h[i] = value(i, x->rank);
  for (int64_t i = n; i < n + GUARD; i++) x->h[i] = guard;
  float *dst = x->d_recv;
  const float *src = in_place ? x->d_recv : x->d_send;
  KC_CUDA_CHECK(
      &where,
      cudaMemcpy(x->d_recv, x->h, (size_t)(n + GUARD) * sizeof(float), cudaMemcpyHostToDevice),
      exit(1));
  if (!in_place)
    KC_CUDA_CHECK(&where,
                  cudaMemcpy(x->d_send, x->h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice),
                  exit(1));
  int rc;
  if (nonblocking) {
    coll_request *req = NULL;
    rc = avg ? coll_iallreduce_avg_f32(x->c, dst, n, &req)
             : coll_iallreduce_sum_f32(x->c, src, dst, n, &req);
    if (rc == COLL_OK) rc = coll_wait(x->c, req);
  } else {
    rc = avg ? coll_allreduce_avg_f32(x->c, dst, n) : coll_allreduce_sum_f32(x->c, src, dst, n);
  }
  if (rc == COLL_OK) rc = coll_sync(x->c);
  if (rc != COLL_OK) {
    fprintf(stderr, "rank %d: count %lld: %s\n", x->rank, (long long)n, coll_comm_error(x->c));
    check_failures++;
    return;
  }
  KC_CUDA_CHECK(&where, cudaStreamSynchronize(x->stream), exit(1));
  KC_CUDA_CHECK(
      &where,
      cudaMemcpy(x->h, x->d_recv, (size_t)(n + GUARD) * sizeof(float), cudaMemcpyDeviceToHost),
      exit(1));
  for (int64_t i = 0; i < n; i++) {
    double sum = 0;
    for (int r = 0; r < x->size; r++) sum += value(i, r);
    float want = avg ? (float)(sum / x->size) : (float)sum;
    /* ncclAvg may scale before or after summing: allow one rounding */
    int ok = avg ? fabsf(x->h[i] - want) <= 1e-6f * fabsf(want) : memcmp(&x->h[i], &want, 4) == 0;
    if (!ok) {
      fprintf(stderr, "rank %d: count %lld %s %s: element %lld got %.9g want %.9g\n", x->rank,
              (long long)n, in_place ? "in place" : "out of place", avg ? "avg" : "sum",
              (long long)i, x->h[i], want);
      check_failures++;
      return;
    }
  }
  for (int64_t i = n; i < n + GUARD; i++) {
    if (x->h[i] != guard) {
      fprintf(stderr, "rank %d: count %lld: wrote past the end\n", x->rank, (long long)n);
      check_failures++;
      return;
    }
  }
}

int main(int argc, char **argv) {
  int gpus = 0;
  cudaError_t ce = cudaGetDeviceCount(&gpus);
  if (ce != cudaSuccess || gpus == 0) {
    printf("skip: no GPU (%s)\n", ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
    return 77;
  }
  coll_world w;
  char err[512];
  if (coll_world_init(&w, &argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int too_few = w.local_size > gpus, any_too_few = 0;
  MPI_Allreduce(&too_few, &any_too_few, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_too_few) {
    if (w.rank == 0) printf("skip: %d rank(s) on a host with %d GPU(s)\n", w.local_size, gpus);
    coll_world_finalize(&w);
    return 77;
  }
  ctx x = {.rank = w.rank, .size = w.size};
  where = (kc_where){.rank = w.rank, .device = w.local_rank};
  KC_CUDA_CHECK(&where, cudaSetDevice(w.local_rank), exit(1));
  KC_CUDA_CHECK(&where, cudaStreamCreate(&x.stream), exit(1));
  coll_config cfg = {.backend = COLL_BACKEND_NCCL, .timeout_s = 60, .stream = x.stream,
                     .device = w.local_rank};
  if (coll_comm_init(&x.c, &w, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "rank %d: %s\n", w.rank, err);
    return 1;
  }
  const int64_t counts[] = {0, 1, 7, 1000, 266610, (1 << 20) + 3};
  const int64_t max_n = (1 << 20) + 3;
  KC_CUDA_CHECK(&where, cudaMalloc((void **)&x.d_send, (size_t)(max_n + GUARD) * sizeof(float)),
                exit(1));
  KC_CUDA_CHECK(&where, cudaMalloc((void **)&x.d_recv, (size_t)(max_n + GUARD) * sizeof(float)),
                exit(1));
  x.h = malloc((size_t)(max_n + GUARD) * sizeof(float));
  if (!x.h) abort();
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    for (int in_place = 0; in_place < 2; in_place++) {
      for (int avg = 0; avg <= in_place; avg++) {
        for (int nb = 0; nb < 2; nb++) run_case(&x, counts[i], in_place, avg, nb);
      }
    }
  }
  double fails = check_failures;
  MPI_Allreduce(MPI_IN_PLACE, &fails, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  if (w.rank == 0) printf("nccl, %d rank(s): %s\n", w.size, fails == 0 ? "all exact" : "FAILED");
  coll_comm_free(x.c);
  cudaFree(x.d_send);
  cudaFree(x.d_recv);
  cudaStreamDestroy(x.stream);
  free(x.h);
  coll_world_finalize(&w);
  if (fails != 0 && !check_failures) check_failures = 1;
  CHECK_DONE();
}
