/* CUDA-only probes of the step benchmark: per-segment times inside the
 * replayed graph (external event nodes), node counts, the launch-latency
 * floor, device bandwidth and the cuBLAS-only time of the same GEMMs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "benchmarks/gpu/gpu_bench.h"
#include "kernels/cuda/cuda_check.h"

cudaError_t bench_launch_empty(cudaStream_t s); /* gpu_bench_kernels.cu */
cudaError_t bench_launch_barriers(cudaStream_t s, int blocks, int syncs);

/* The device this thread has bound, for a failed check's line. */
static int bench_device(void) {
  int d = -1;
  return cudaGetDevice(&d) == cudaSuccess ? d : -1;
}
#define B_WHERE (&(kc_where){.rank = 0, .device = bench_device()})

typedef struct {
  cudaStream_t s;
  cudaEvent_t ev[SEG_COUNT + 1];
  int failed;
} mark_ctx;

static void mark_event(void *ctx, int seg) {
  mark_ctx *m = ctx;
  if (cudaEventRecordWithFlags(m->ev[seg], m->s, cudaEventRecordExternal) != cudaSuccess) m->failed = 1;
}

/* Captures the step (or one segment of it) on the backend's stream. */
static int capture(bench_net *n, bench_mark_fn mark, void *ctx, int only, cudaGraph_t *g) {
  cudaStream_t s = kern_stream(n->be);
  KC_CUDA_CHECK(B_WHERE, cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), return -1);
  int rc = bench_step_ops(n, mark, ctx, only);
  cudaError_t end = cudaStreamEndCapture(s, g);
  if (rc != 0) {
    fprintf(stderr, "bench: step capture: %s\n", kern_error(n->be));
    if (end == cudaSuccess) cudaGraphDestroy(*g);
    return -1;
  }
  KC_CUDA_CHECK(B_WHERE, end, return -1);
  return 0;
}

static void count_nodes(cudaGraph_t g, int *total, int *kernels) {
  size_t cnt = 0;
  *total = *kernels = 0;
  if (cudaGraphGetNodes(g, NULL, &cnt) != cudaSuccess || cnt == 0) return;
  cudaGraphNode_t *nodes = calloc(cnt, sizeof *nodes);
  if (nodes && cudaGraphGetNodes(g, nodes, &cnt) == cudaSuccess) {
    for (size_t i = 0; i < cnt; i++) {
      enum cudaGraphNodeType t;
      if (cudaGraphNodeGetType(nodes[i], &t) != cudaSuccess) continue;
      if (t == cudaGraphNodeTypeEventRecord || t == cudaGraphNodeTypeEmpty) continue;
      (*total)++;
      if (t == cudaGraphNodeTypeKernel) (*kernels)++;
    }
  }
  free(nodes);
}

int bench_cuda_breakdown(bench_net *n, int reps, bench_breakdown *out, char *err, size_t err_bytes) {
  memset(out, 0, sizeof *out);
  mark_ctx m = {.s = kern_stream(n->be)};
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  double *samples = calloc((size_t)reps * SEG_COUNT, sizeof *samples);
  int rc = -1;
  if (!samples) goto out;
  for (int s = 0; s < SEG_COUNT; s++) {
    int kern = 0;
    if (capture(n, NULL, NULL, s, &g) != 0) goto out;
    count_nodes(g, &out->seg_nodes[s], &kern);
    out->total_nodes += out->seg_nodes[s];
    out->kernel_nodes += kern;
    cudaGraphDestroy(g);
    g = NULL;
  }
  for (int i = 0; i <= SEG_COUNT; i++) KC_CUDA_CHECK(B_WHERE, cudaEventCreate(&m.ev[i]), goto out);
  if (capture(n, mark_event, &m, -1, &g) != 0 || m.failed) goto out;
  KC_CUDA_CHECK(B_WHERE, cudaGraphInstantiate(&exec, g, 0), goto out);
  const int64_t per_epoch = n->rows / n->batch;
  for (int r = -3; r < reps; r++) {
    if ((r + 3) % per_epoch == 0 && bench_net_reset_cursor(n) != 0) goto out;
    KC_CUDA_CHECK(B_WHERE, cudaGraphLaunch(exec, m.s), goto out);
    KC_CUDA_CHECK(B_WHERE, cudaStreamSynchronize(m.s), goto out);
    for (int s = 0; r >= 0 && s < SEG_COUNT; s++) {
      float ms = 0.0f;
      KC_CUDA_CHECK(B_WHERE, cudaEventElapsedTime(&ms, m.ev[s], m.ev[s + 1]), goto out);
      samples[s * reps + r] = 1e3 * ms;
    }
  }
  for (int s = 0; s < SEG_COUNT; s++) out->seg_us[s] = bench_median(samples + s * reps, reps);
  rc = 0;
out:
  if (rc != 0) snprintf(err, err_bytes, "breakdown failed (see stderr)");
  if (exec) cudaGraphExecDestroy(exec);
  if (g) cudaGraphDestroy(g);
  for (int i = 0; i <= SEG_COUNT; i++) {
    if (m.ev[i]) cudaEventDestroy(m.ev[i]);
  }
  free(samples);
  return rc;
}

/* Host-timed replays of exec, median microseconds per replay. */
static double time_exec_us(cudaGraphExec_t exec, cudaStream_t s, int per_rep, int reps) {
  double v[64];
  if (reps > 64) reps = 64;
  for (int r = -2; r < reps; r++) {
    KC_CUDA_CHECK(B_WHERE, cudaStreamSynchronize(s), return -1.0);
    double t0 = bench_now();
    for (int i = 0; i < per_rep; i++) KC_CUDA_CHECK(B_WHERE, cudaGraphLaunch(exec, s), return -1.0);
    KC_CUDA_CHECK(B_WHERE, cudaStreamSynchronize(s), return -1.0);
    if (r >= 0) v[r] = (bench_now() - t0) * 1e6 / per_rep;
  }
  return bench_median(v, reps);
}

double bench_cuda_node_latency_us(kern_backend *be, int nodes) {
  cudaStream_t s = kern_stream(be);
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  double us = -1.0;
  KC_CUDA_CHECK(B_WHERE, cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), return -1.0);
  for (int i = 0; i < nodes; i++) bench_launch_empty(s);
  KC_CUDA_CHECK(B_WHERE, cudaStreamEndCapture(s, &g), return -1.0);
  if (cudaGraphInstantiate(&exec, g, 0) == cudaSuccess) {
    us = time_exec_us(exec, s, 200, 15);
    if (us > 0) us /= nodes;
    cudaGraphExecDestroy(exec);
  }
  cudaGraphDestroy(g);
  return us;
}

double bench_cuda_bandwidth(kern_backend *be) {
  const size_t bytes = (size_t)512 << 20;
  cudaStream_t s = kern_stream(be);
  void *a = NULL, *b = NULL;
  cudaEvent_t e0 = NULL, e1 = NULL;
  double v[10], bw = -1.0;
  KC_CUDA_CHECK(B_WHERE, cudaMalloc(&a, bytes), goto out);
  KC_CUDA_CHECK(B_WHERE, cudaMalloc(&b, bytes), goto out);
  KC_CUDA_CHECK(B_WHERE, cudaMemsetAsync(a, 0x3c, bytes, s), goto out);
  KC_CUDA_CHECK(B_WHERE, cudaEventCreate(&e0), goto out);
  KC_CUDA_CHECK(B_WHERE, cudaEventCreate(&e1), goto out);
  for (int r = -2; r < 10; r++) {
    float ms = 0.0f;
    KC_CUDA_CHECK(B_WHERE, cudaEventRecord(e0, s), goto out);
    KC_CUDA_CHECK(B_WHERE, cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s), goto out);
    KC_CUDA_CHECK(B_WHERE, cudaEventRecord(e1, s), goto out);
    KC_CUDA_CHECK(B_WHERE, cudaEventSynchronize(e1), goto out);
    KC_CUDA_CHECK(B_WHERE, cudaEventElapsedTime(&ms, e0, e1), goto out);
    if (r >= 0) v[r] = 2.0 * (double)bytes / (1e-3 * ms);
  }
  bw = bench_median(v, 10);
out:
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return bw;
}

/* The same row-major GEMMs as kernels/cuda/cuda_ops.c issues, nothing else. */
double bench_cuda_gemm_us(kern_backend *be, const bench_net *n, kern_math math) {
  cudaStream_t s = kern_stream(be);
  cublasHandle_t h = NULL;
  void *ws = NULL;
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  double us = -1.0;
  const float one = 1.0f, zero = 0.0f;
  const int B = (int)n->batch;
  const model_layout *L = &n->L;
  KC_CUBLAS_CHECK(B_WHERE, cublasCreate(&h), return -1.0);
  KC_CUBLAS_CHECK(B_WHERE, cublasSetStream(h, s), goto out);
  KC_CUDA_CHECK(B_WHERE, cudaMalloc(&ws, (size_t)32 << 20), goto out);
  KC_CUBLAS_CHECK(B_WHERE, cublasSetWorkspace(h, ws, (size_t)32 << 20), goto out);
  KC_CUBLAS_CHECK(B_WHERE,
                  cublasSetMathMode(
                      h, math == KERN_MATH_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                  goto out);
  KC_CUDA_CHECK(B_WHERE, cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), goto out);
  int gemm_ok = 1; /* a failed GEMM still ends the capture below */
  for (int k = 0; k < MODEL_LAYERS && gemm_ok; k++) {
    const int i = (int)L->dims[k], o = (int)L->dims[k + 1];
    const float *w = n->params + L->tensors[2 * k].offset;
    KC_CUBLAS_CHECK(B_WHERE,
                    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, o, B, i, &one, w, o, n->w.act[k], i,
                                &zero, n->w.act[k + 1], o),
                    gemm_ok = 0);
  }
  for (int k = MODEL_LAYERS - 1; k >= 0 && gemm_ok; k--) {
    const int i = (int)L->dims[k], o = (int)L->dims[k + 1];
    const float *w = n->params + L->tensors[2 * k].offset;
    KC_CUBLAS_CHECK(B_WHERE,
                    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, o, i, B, &one, n->w.dact[k + 1], o,
                                n->w.act[k], i, &one, n->grads + L->tensors[2 * k].offset, o),
                    gemm_ok = 0);
    if (k > 0 && gemm_ok) {
      KC_CUBLAS_CHECK(B_WHERE,
                      cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, i, B, o, &one, w, o,
                                  n->w.dact[k + 1], o, &zero, n->w.dact[k], i),
                      gemm_ok = 0);
    }
  }
  KC_CUDA_CHECK(B_WHERE, cudaStreamEndCapture(s, &g), goto out);
  if (!gemm_ok) goto out;
  KC_CUDA_CHECK(B_WHERE, cudaGraphInstantiate(&exec, g, 0), goto out);
  us = time_exec_us(exec, s, n->batch >= 1024 ? 20 : 200, 15);
out:
  if (exec) cudaGraphExecDestroy(exec);
  if (g) cudaGraphDestroy(g);
  if (h) cublasDestroy(h);
  cudaFree(ws);
  return us;
}

void bench_cuda_device_name(char *out, size_t bytes) {
  int dev = 0, drv = 0;
  struct cudaDeviceProp p;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDriverGetVersion(&drv) != cudaSuccess ||
      cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    snprintf(out, bytes, "unknown GPU");
    return;
  }
  snprintf(out, bytes, "%s (sm_%d%d, %d SMs, %.0f GiB, driver API %d.%d)", p.name, p.major,
           p.minor, p.multiProcessorCount, (double)p.totalGlobalMem / (1 << 30), drv / 1000,
           drv % 1000 / 10);
}

int bench_cuda_fused_phases(bench_net *n, int reps, double phase_us[KERN_STEP_PHASES],
                            double *kernel_us) {
  kern_backend *be = n->be;
  enum { MAXR = 1024 };
  uint64_t *dev = NULL, ts[KERN_STEP_TIMES];
  static double v[KERN_STEP_PHASES + 1 + 12][MAXR];
  int rc = -1;
  if (reps > MAXR) reps = MAXR;
  if (!n->fs.ws) return -1;
  KC_CUDA_CHECK(B_WHERE, cudaMalloc((void **)&dev, sizeof ts), return -1);
  n->fs.phase_ns = dev;
  const int per_epoch = (int)(n->rows / n->batch);
  for (int r = -3; r < reps; r++) {
    /* a new pass over the rows before the cursor runs past the order */
    if ((r + 3) % per_epoch == 0 && bench_net_reset_cursor(n) != 0) goto out;
    if (bench_step_ops(n, NULL, NULL, -1) != 0 || kern_mem_download(be, ts, dev, sizeof ts) != 0) {
      fprintf(stderr, "bench: fused phases: %s\n", kern_error(be));
      goto out;
    }
    if (r < 0) continue; /* warm-up */
    for (int p = 0; p < KERN_STEP_PHASES; p++) v[p][r] = (double)(ts[p + 1] - ts[p]) * 1e-3;
    v[KERN_STEP_PHASES][r] = (double)(ts[KERN_STEP_PHASES] - ts[0]) * 1e-3;
    for (int t = 0; t < 4; t++) { /* staged, multiplied, stored: each from the step before */
      const uint64_t *q = ts + KERN_STEP_PHASES + 1 + 4 * t;
      for (int k = 0; k < 3; k++) v[KERN_STEP_PHASES + 1 + 3 * t + k][r] = (double)(q[k + 1] - q[k]) * 1e-3;
    }
  }
  for (int p = 0; p < KERN_STEP_PHASES; p++) phase_us[p] = bench_median(v[p], reps);
  *kernel_us = bench_median(v[KERN_STEP_PHASES], reps);
  static const char *const tiles[4] = {"phase 1 (L1 partials)", "phase 3 (L2 partials)",
                                       "phase 6 (dW2)", "phase 7 (dW1 + update)"};
  printf("\n# block 0's first tile (median us): stage operands, multiply, epilogue\n");
  for (int t = 0; t < 4; t++) {
    double *q[3];
    for (int k = 0; k < 3; k++) q[k] = v[KERN_STEP_PHASES + 1 + 3 * t + k];
    const double st = bench_median(q[0], reps), mu = bench_median(q[1], reps), ep = bench_median(q[2], reps);
    printf("  %-24s %8.2f %8.2f %8.2f\n", tiles[t], st, mu, ep);
  }
  rc = 0;
out:
  n->fs.phase_ns = NULL;
  cudaFree(dev);
  return rc;
}

double bench_cuda_barrier_floor_us(kern_backend *be, int syncs) {
  cudaStream_t s = kern_stream(be);
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  int dev = 0, sms = 0;
  double us = -1.0;
  KC_CUDA_CHECK(B_WHERE, cudaGetDevice(&dev), return -1.0);
  KC_CUDA_CHECK(B_WHERE, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
                return -1.0);
  KC_CUDA_CHECK(B_WHERE, cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), return -1.0);
  cudaError_t lrc = bench_launch_barriers(s, sms, syncs);
  KC_CUDA_CHECK(B_WHERE, cudaStreamEndCapture(s, &g), return -1.0);
  if (lrc != cudaSuccess) {
    fprintf(stderr, "bench: barrier kernel: %s\n", cudaGetErrorString(lrc));
  } else if (cudaGraphInstantiate(&exec, g, 0) == cudaSuccess) {
    us = time_exec_us(exec, s, 200, 15);
    cudaGraphExecDestroy(exec);
  }
  cudaGraphDestroy(g);
  return us;
}
