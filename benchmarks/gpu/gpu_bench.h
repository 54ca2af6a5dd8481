/* The training-step benchmark's shared pieces: one network's buffers on a
 * backend, the step split into timed segments, and the CUDA-only probes
 * (per-segment graph timing, launch latency, bandwidth, cuBLAS roofline). */
#ifndef TFDIST_BENCHMARKS_GPU_BENCH_H
#define TFDIST_BENCHMARKS_GPU_BENCH_H

#include <stdint.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "tfdist_config.h"

enum {
  SEG_GATHER, SEG_FWD1, SEG_FWD2, SEG_FWD3, SEG_XENT, SEG_ZERO, SEG_BWD3, SEG_BWD2, SEG_BWD1,
  SEG_SGD, SEG_CURSOR, SEG_COUNT
};
extern const char *const bench_seg_names[SEG_COUNT];

typedef struct {
  kern_backend *be;
  model_layout L;
  model_work w;
  float *params, *grads, *state; /* backend memory, L.total_elems each */
  uint8_t *images, *labels;      /* (rows, 784) and (rows), resident */
  int32_t *perm;                 /* (rows) a fixed shuffled order */
  int64_t *cursor;               /* first row of the next batch */
  kern_stats *stats;
  int64_t batch, rows;
  kern_opt opt;
  kern_step fs;                  /* the fused step, when fs.ws is set (bench_net_fuse) */
} bench_net;

int bench_net_init(bench_net *n, kern_backend *be, int64_t batch, int64_t rows, uint64_t seed);
void bench_net_free(bench_net *n);
int bench_net_reset_cursor(bench_net *n);
/* Makes bench_step_ops (unmarked, whole step) one fused launch: 0 when the
 * backend fuses the shape, 1 when it does not, -1 on error. */
int bench_net_fuse(bench_net *n);
/* One training step as backend ops; mark(ctx, s) runs before segment s and
 * once more with SEG_COUNT at the end. only >= 0 issues that segment alone. */
typedef void (*bench_mark_fn)(void *ctx, int seg);
int bench_step_ops(bench_net *n, bench_mark_fn mark, void *ctx, int only);
/* Minimum bytes through device memory and FLOPs of one step, as issued. */
double bench_step_bytes(const bench_net *n);
double bench_step_flops(const bench_net *n);
double bench_now(void);
double bench_median(double *v, int n);

#if TFDIST_HAVE_CUDA
typedef struct {
  double seg_us[SEG_COUNT]; /* median per segment inside the replayed graph */
  int seg_nodes[SEG_COUNT]; /* graph nodes (kernels, memsets) each segment issues */
  int total_nodes, kernel_nodes;
} bench_breakdown;
int bench_cuda_breakdown(bench_net *n, int reps, bench_breakdown *out, char *err, size_t err_bytes);
/* Median time per node of a graph of `nodes` empty kernels in a chain. */
double bench_cuda_node_latency_us(kern_backend *be, int nodes);
/* Device-to-device copy, bytes read + written per second. */
double bench_cuda_bandwidth(kern_backend *be);
/* The step's GEMMs alone (3 forward, 3 weight-grad, 2 input-grad) through
 * cuBLAS in one graph: median microseconds per replay. */
double bench_cuda_gemm_us(kern_backend *be, const bench_net *n, kern_math math);
void bench_cuda_device_name(char *out, size_t bytes);
/* The fused step's phases from its own timestamps (median of reps eager
 * steps, at most 1024, us each), and the whole kernel from block 0's start
 * to the end. */
int bench_cuda_fused_phases(bench_net *n, int reps, double phase_us[KERN_STEP_PHASES],
                            double *kernel_us);
/* One graph node of an empty cooperative kernel (a block per SM) crossing
 * `syncs` grid barriers: the launch-and-barrier floor of the fused step. */
double bench_cuda_barrier_floor_us(kern_backend *be, int syncs);
#endif

#endif
