/* The CUDA backend's life cycle: device binding, handles, memory, streams
 * and graph capture, and the module's entry point (kern_cuda_module_get).
 * The ops themselves live in cuda_ops.c. */
#include <stdlib.h>
#include <string.h>

#include <nccl.h>

#include "kernels/cuda/cuda_internal.h"
#include "tfdist_config.h"

/* cuBLAS allocates its workspace lazily unless given one; inside a graph
 * capture it must not allocate, so each handle gets a fixed one. 32 MiB is
 * what NVIDIA recommends for Hopper. */
#define KC_BLAS_WORKSPACE_BYTES (32u << 20)
/* Split-K partials of the small GEMMs: 4 MiB holds 16 splits of 256 tiles;
 * a GEMM that would need more runs unsplit. */
#define KC_GEMM_WS_FLOATS ((int64_t)1 << 20)
#define KC_GEMM_COUNTERS 8192

int kc_check_dims(kern_cuda *kc, const char *op, int64_t a, int64_t b, int64_t c) {
  if (a < 0 || b < 0 || c < 0 || a > INT32_MAX || b > INT32_MAX || c > INT32_MAX) {
    snprintf(kc->base.err, sizeof kc->base.err,
             "rank %d cuda:%d: %s: shape (%lld, %lld, %lld) outside 0..INT32_MAX", kc->base.cfg.rank,
             kc->device, op, (long long)a, (long long)b, (long long)c);
    return -1;
  }
  return 0;
}

/* The versions as linked: the module's own runtime, cuBLAS, cuDNN and NCCL. */
static void kc_info(char *out, size_t out_bytes) {
  int rt = 0, drv = 0, nccl = 0, bmaj = 0, bmin = 0, bpatch = 0;
  /* a failed query reads as version 0 in the line, not as garbage */
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  if (cublasGetProperty(MAJOR_VERSION, &bmaj) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(MINOR_VERSION, &bmin) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(PATCH_LEVEL, &bpatch) != CUBLAS_STATUS_SUCCESS) {
    bmaj = bmin = bpatch = 0;
  }
  size_t dnn = cudnnGetVersion();
  if (ncclGetVersion(&nccl) != ncclSuccess) nccl = 0;
  char drv_s[32];
  if (drv) snprintf(drv_s, sizeof drv_s, "%d.%d", drv / 1000, drv % 1000 / 10);
  else snprintf(drv_s, sizeof drv_s, "none");
  snprintf(out, out_bytes, "runtime %d.%d, driver API %s, cuBLAS %d.%d.%d, cuDNN %zu.%zu.%zu, NCCL %d.%d.%d",
           rt / 1000, rt % 1000 / 10, drv_s, bmaj, bmin, bpatch, dnn / 10000, dnn % 10000 / 100,
           dnn % 100, nccl / 10000, nccl % 10000 / 100, nccl % 100);
}

static int kc_mem_alloc(kern_backend *be, void **ptr, size_t bytes) {
  kern_cuda *kc = kc_of(be);
  *ptr = NULL;
  KC_CUDA_CHECK(&kc->where, cudaMalloc(ptr, bytes ? bytes : 1), return -1);
  return 0;
}

static void kc_mem_free(kern_backend *be, void *ptr) {
  (void)be;
  if (ptr) cudaFree(ptr);
}

static int kc_host_alloc(kern_backend *be, void **ptr, size_t bytes) {
  kern_cuda *kc = kc_of(be);
  *ptr = NULL;
  KC_CUDA_CHECK(&kc->where, cudaMallocHost(ptr, bytes ? bytes : 1), return -1);
  return 0;
}

static void kc_host_free(kern_backend *be, void *ptr) {
  (void)be;
  if (ptr) cudaFreeHost(ptr);
}

/* Host-side copies wait for completion: the caller may reuse or read its
 * host buffer at once. Outside graph capture only. */
static int kc_mem_upload(kern_backend *be, void *dst, const void *src, size_t bytes) {
  kern_cuda *kc = kc_of(be);
  if (!bytes) return 0;
  KC_CUDA_CHECK(&kc->where, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, kc->stream),
                return -1);
  KC_CUDA_CHECK(&kc->where, cudaStreamSynchronize(kc->stream), return -1);
  return 0;
}

static int kc_mem_download(kern_backend *be, void *dst, const void *src, size_t bytes) {
  kern_cuda *kc = kc_of(be);
  if (!bytes) return 0;
  KC_CUDA_CHECK(&kc->where, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, kc->stream),
                return -1);
  KC_CUDA_CHECK(&kc->where, cudaStreamSynchronize(kc->stream), return -1);
  return 0;
}

static int kc_mem_zero(kern_backend *be, void *dst, size_t bytes) {
  kern_cuda *kc = kc_of(be);
  if (!bytes) return 0;
  KC_CUDA_CHECK(&kc->where, cudaMemsetAsync(dst, 0, bytes, kc->stream), return -1);
  return 0;
}

static int kc_mem_copy(kern_backend *be, void *dst, const void *src, size_t bytes) {
  kern_cuda *kc = kc_of(be);
  if (!bytes) return 0;
  KC_CUDA_CHECK(&kc->where, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, kc->stream),
                return -1);
  return 0;
}

static int kc_sync(kern_backend *be) {
  kern_cuda *kc = kc_of(be);
  KC_CUDA_CHECK(&kc->where, cudaStreamSynchronize(kc->stream), return -1);
  KC_CUDA_CHECK(&kc->where, cudaGetLastError(), return -1);
  return 0;
}

/* Thread-local capture: other threads (MPI progress, loaders) may still make
 * unrelated CUDA calls while this one records. */
static int kc_graph_begin(kern_backend *be) {
  kern_cuda *kc = kc_of(be);
  KC_CUDA_CHECK(&kc->where, cudaStreamBeginCapture(kc->stream, cudaStreamCaptureModeThreadLocal),
                return -1);
  kc->capturing = 1;
  return 0;
}

/* Ends the capture even when an op failed inside it, so the stream is usable
 * again; only a whole, valid capture is instantiated. */
static int kc_graph_end(kern_backend *be, void **graph) {
  kern_cuda *kc = kc_of(be);
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  *graph = NULL;
  kc->capturing = 0;
  KC_CUDA_CHECK(&kc->where, cudaStreamEndCapture(kc->stream, &g), return -1);
  cudaError_t rc = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  KC_CUDA_CHECK(&kc->where, rc, return -1);
  *graph = exec;
  return 0;
}

static int kc_graph_launch(kern_backend *be, void *graph) {
  kern_cuda *kc = kc_of(be);
  KC_CUDA_CHECK(&kc->where, cudaGraphLaunch((cudaGraphExec_t)graph, kc->stream), return -1);
  return 0;
}

static void kc_graph_free(kern_backend *be, void *graph) {
  (void)be;
  if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

static void *kc_stream(kern_backend *be) { return kc_of(be)->stream; }

static void kc_destroy(kern_backend *be) {
  kern_cuda *kc = kc_of(be);
  if (!kc) return;
  if (kc->stream) cudaStreamSynchronize(kc->stream);
  kc_cudnn_free(kc);
  if (kc->gemm_ws.ws) cudaFree(kc->gemm_ws.ws);
  if (kc->gemm_ws.count) cudaFree(kc->gemm_ws.count);
  if (kc->blas) cublasDestroy(kc->blas);
  if (kc->blas_workspace) cudaFree(kc->blas_workspace);
  if (kc->stream) cudaStreamDestroy(kc->stream);
  free(kc);
}

/* cfg->gemm, or under AUTO the environment's TFDIST_GEMM. */
static int kc_gemm_mode(kern_cuda *kc) {
  kc->gemm = kc->base.cfg.gemm;
  const char *env = getenv("TFDIST_GEMM");
  if (kc->gemm != KERN_GEMM_AUTO || !env || !env[0] || !strcmp(env, "auto")) return 0;
  if (!strcmp(env, "cublas")) kc->gemm = KERN_GEMM_CUBLAS;
  else if (!strcmp(env, "small")) kc->gemm = KERN_GEMM_SMALL;
  else {
    snprintf(kc->base.err, sizeof kc->base.err,
             "rank %d cuda:%d: TFDIST_GEMM=%s: expected cublas, small or auto", kc->base.cfg.rank,
             kc->device, env);
    return -1;
  }
  return 0;
}

/* The small GEMMs' split-K scratch: fixed, so graph capture never allocates;
 * counters zeroed once here, and every launch leaves them at zero. */
static int kc_gemm_setup(kern_cuda *kc) {
  kc_gemm_ws *g = &kc->gemm_ws;
  if (kc_gemm_mode(kc) != 0) return -1;
  KC_CUDA_CHECK(&kc->where,
                cudaDeviceGetAttribute(&g->sm_count, cudaDevAttrMultiProcessorCount, kc->device),
                return -1);
  if (g->sm_count < 1) g->sm_count = 1;
  g->ws_floats = KC_GEMM_WS_FLOATS;
  g->count_n = KC_GEMM_COUNTERS;
  KC_CUDA_CHECK(&kc->where, cudaMalloc((void **)&g->ws, (size_t)g->ws_floats * sizeof(float)),
                return -1);
  KC_CUDA_CHECK(&kc->where, cudaMalloc((void **)&g->count, (size_t)g->count_n * sizeof(unsigned)),
                return -1);
  KC_CUDA_CHECK(&kc->where,
                cudaMemsetAsync(g->count, 0, (size_t)g->count_n * sizeof(unsigned), kc->stream),
                return -1);
  KC_CUDA_CHECK(&kc->where, cudaStreamSynchronize(kc->stream), return -1);
  return 0;
}

static int kc_setup(kern_cuda *kc) {
  const kern_config *cfg = &kc->base.cfg;
  /* First CUDA call of this process that touches a device: bind it before
   * any allocation or handle creates a context on device 0. */
  KC_CUDA_CHECK(&kc->where, cudaSetDevice(cfg->device_index), return -1);
  KC_CUDA_CHECK(&kc->where, cudaStreamCreateWithFlags(&kc->stream, cudaStreamNonBlocking),
                return -1);
  KC_CUBLAS_CHECK(&kc->where, cublasCreate(&kc->blas), return -1);
  KC_CUBLAS_CHECK(&kc->where, cublasSetStream(kc->blas, kc->stream), return -1);
  KC_CUDA_CHECK(&kc->where, cudaMalloc(&kc->blas_workspace, KC_BLAS_WORKSPACE_BYTES), return -1);
  KC_CUBLAS_CHECK(&kc->where,
                  cublasSetWorkspace(kc->blas, kc->blas_workspace, KC_BLAS_WORKSPACE_BYTES),
                  return -1);
  /* FP32 by default (cuBLAS's default mode never lowers FP32 to TF32), so
   * results track the CPU backend within float32 rounding. TF32 tensor-op
   * math is the user's explicit choice (--math tf32). */
  cublasMath_t mode = cfg->math == KERN_MATH_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
  KC_CUBLAS_CHECK(&kc->where, cublasSetMathMode(kc->blas, mode), return -1);
  KC_CUBLAS_CHECK(&kc->where, cublasSetPointerMode(kc->blas, CUBLAS_POINTER_MODE_HOST), return -1);
  if (cfg->unfused && kc_cudnn_init(kc) != 0) return -1;
  return kc_gemm_setup(kc);
}

static const kern_ops kc_ops = {
  .name = "cuda",
  .host_memory = 0,
  .destroy = kc_destroy,
  .mem_alloc = kc_mem_alloc,
  .mem_free = kc_mem_free,
  .mem_upload = kc_mem_upload,
  .mem_download = kc_mem_download,
  .mem_zero = kc_mem_zero,
  .mem_copy = kc_mem_copy,
  .host_alloc = kc_host_alloc,
  .host_free = kc_host_free,
  .sync = kc_sync,
  .dense_forward = kc_dense_forward,
  .dense_backward = kc_dense_backward,
  .xent = kc_xent,
  .softmax = kc_softmax,
  .gather_u8 = kc_gather_u8,
  .cursor_advance = kc_cursor_advance,
  .opt_update = kc_opt_update,
  .graph_begin = kc_graph_begin,
  .graph_end = kc_graph_end,
  .graph_launch = kc_graph_launch,
  .graph_free = kc_graph_free,
  .stream = kc_stream,
  .fused_step_ws = kc_fused_step_ws,
  .fused_step = kc_fused_step,
};

static int kc_create(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes) {
  *out = NULL;
  kern_cuda *kc = calloc(1, sizeof *kc);
  if (!kc) {
    snprintf(err, err_bytes, "cuda: out of memory");
    return -1;
  }
  kc->base.ops = &kc_ops;
  kc->base.cfg = *cfg;
  kc->device = cfg->device_index;
  kc->where = (kc_where){.rank = cfg->rank,
                         .device = cfg->device_index,
                         .err = kc->base.err,
                         .err_bytes = sizeof kc->base.err};
  if (kc_setup(kc) != 0) {
    snprintf(err, err_bytes, "%s", kc->base.err);
    kc_destroy(&kc->base);
    return -1;
  }
  *out = &kc->base;
  return 0;
}

static const kern_cuda_module kc_module = {
  .abi = KERN_CUDA_MODULE_ABI,
  .version = TFDIST_VERSION,
  .backend_bytes = sizeof(struct kern_backend),
  .config_bytes = sizeof(kern_config),
  .create = kc_create,
  .info = kc_info,
};

/* The module's one entry point (kernels/cuda_load.c looks it up). */
__attribute__((visibility("default"))) const kern_cuda_module *kern_cuda_module_get(void) {
  return &kc_module;
}
