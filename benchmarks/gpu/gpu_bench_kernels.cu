/* Floor probes: the empty kernel whose chained replays measure the per-node
 * launch latency of a CUDA graph (the floor under any step made of that many
 * kernels), and the empty cooperative kernel of the fused step's barriers. */
#include <cooperative_groups.h>
#include <cuda_runtime_api.h>

__global__ void bench_empty_kernel(void) {}

extern "C" cudaError_t bench_launch_empty(cudaStream_t s) {
  bench_empty_kernel<<<1, 32, 0, s>>>();
  return cudaGetLastError();
}

/* The floor of the fused step's design: one cooperative launch of one block
 * per SM that only crosses `syncs` grid barriers. */
__global__ void bench_barrier_kernel(int syncs) {
  cooperative_groups::grid_group g = cooperative_groups::this_grid();
  for (int i = 0; i < syncs; i++) g.sync();
}

extern "C" cudaError_t bench_launch_barriers(cudaStream_t s, int blocks, int syncs) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cfg.gridDim = dim3((unsigned)blocks);
  cfg.blockDim = dim3(256);
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, bench_barrier_kernel, syncs);
}
