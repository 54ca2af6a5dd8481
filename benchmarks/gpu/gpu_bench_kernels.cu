/* The empty kernel whose chained replays measure the per-node launch latency
 * of a CUDA graph: the floor under any step made of that many kernels. */
#include <cuda_runtime_api.h>

__global__ void bench_empty_kernel(void) {}

extern "C" cudaError_t bench_launch_empty(cudaStream_t s) {
  bench_empty_kernel<<<1, 32, 0, s>>>();
  return cudaGetLastError();
}
