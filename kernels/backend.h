/* The compute back-end interface: an opaque handle and one function per
 * operation. The CPU back end (BLAS) is the reference; the CUDA back end
 * (a module loaded on demand) implements the same ops and is tested against
 * it. Callers ask capabilities (kern_is_host_memory), not device kinds. The
 * ops table behind the handle is in backend_impl.h, for back ends only. */
#ifndef TFDIST_KERNELS_BACKEND_H
#define TFDIST_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KERN_DEVICE_CPU = 0, KERN_DEVICE_CUDA = 1 } kern_device;
typedef enum { KERN_ACT_NONE = 0, KERN_ACT_RELU = 1 } kern_act;
typedef enum { KERN_MATH_FP32 = 0, KERN_MATH_TF32 = 1 } kern_math;
/* The update rules; kernels/cpu_opt.c writes each one down as a formula. */
typedef enum {
  KERN_OPT_SGD = 0,
  KERN_OPT_MOMENTUM = 1,
  KERN_OPT_NESTEROV = 2,
  KERN_OPT_RMSPROP = 3,
  KERN_OPT_ADAM = 4,
  KERN_OPT_ADAMW = 5
} kern_opt_kind;
/* CUDA GEMMs: cuBLAS, or our small-batch FP32 kernels. AUTO takes the
 * environment's TFDIST_GEMM=cublas|small|auto, else cuBLAS, which measured
 * faster on an H200 (62.4 vs 67.0 us per batch-50 step). TF32 and the
 * unfused path always use cuBLAS. */
typedef enum { KERN_GEMM_AUTO = 0, KERN_GEMM_CUBLAS = 1, KERN_GEMM_SMALL = 2 } kern_gemm;

/* Accumulated in backend memory by kern_xent, so a step needs no host sync.
 * Doubles: 60k per-sample losses summed in float would lose digits. */
typedef struct {
  double loss_sum;      /* sum of per-sample cross-entropy since reset */
  double correct;       /* correctly classified samples since reset */
  double samples;       /* samples since reset */
  double last_loss_sum; /* the most recent batch alone */
  double last_correct;
  double last_samples;
} kern_stats;

/* One update's rule and scalars. The trainer fills in lr (the scheduled
 * rate) and step before every update; the rest is fixed for a run. */
typedef struct {
  kern_opt_kind kind;
  float lr;           /* this update's rate, schedule and --scale-lr applied */
  float momentum;     /* MOMENTUM, NESTEROV */
  float beta1, beta2; /* ADAM, ADAMW */
  float epsilon;      /* RMSPROP, ADAM, ADAMW */
  float rho;          /* RMSPROP */
  float weight_decay; /* ADAMW: decoupled; the others: L2 added to the gradient */
  int64_t step;       /* 1-based count of this update (Adam's bias correction) */
} kern_opt;

/* Optimizer state floats per parameter (0, 1 or 2). The state buffer holds
 * them interleaved, parameter by parameter (m0 v0 m1 v1 ...), so the state
 * of params[lo, lo+n) is state[k*lo, k*(lo+n)): one slice, one pass. */
int kern_opt_state_per_elem(kern_opt_kind kind);

typedef struct {
  kern_device device;
  int device_index; /* CUDA: local_rank % device_count, chosen by the caller */
  kern_math math;
  int threads;      /* CPU: the team splitting one rank's step (0: 1); BLAS runs single-threaded */
  int oversubscribed; /* CPU: the node runs more compute threads than it has usable cores */
  int rank;         /* MPI rank, for error messages only */
  int unfused;      /* CUDA: bias kernel + cuDNN activation instead of the fused
                     * bias+ReLU kernels (a reference path for tests and benchmarks) */
  kern_gemm gemm;   /* CUDA: which GEMMs (see kern_gemm) */
} kern_config;

typedef struct kern_backend kern_backend;

/* Life cycle. A CUDA config loads the CUDA module (tfdist-cuda.so) first;
 * err gets one line when that or the device set-up fails. */
int kern_backend_init(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes);
void kern_backend_free(kern_backend *be); /* NULL: no-op */

/* Capabilities and state. */
const char *kern_name(const kern_backend *be);     /* "cpu", "cuda" */
const char *kern_error(const kern_backend *be);    /* the last error, one line ("" if none) */
const kern_config *kern_config_of(const kern_backend *be);
int kern_is_host_memory(const kern_backend *be);   /* backend memory is plain host memory */
int kern_has_graphs(const kern_backend *be);       /* kern_graph_* record and replay */
void *kern_stream(kern_backend *be);               /* cudaStream_t for NCCL; NULL on the CPU */

/* Every pointer handed to an op is backend memory (host memory for the CPU
 * backend, device memory for CUDA), allocated with kern_mem_alloc; where
 * kern_is_host_memory, any host memory the caller owns will do (the
 * trainer's gradients in the collective's shared segment). Every
 * op returns 0, or -1 with kern_error(be) set.
 * Shapes: matrices are row-major; a dense layer's weight w is (in_dim, out_dim),
 * its bias b is (out_dim), activations are (n, dim).
 * Gradient convention (said once, here): kern_dense_backward ACCUMULATES into
 * dw and db (+=) and OVERWRITES din. Callers zero the gradient buffer per step. */
int kern_mem_alloc(kern_backend *be, void **ptr, size_t bytes);
void kern_mem_free(kern_backend *be, void *ptr); /* NULL: no-op */
int kern_mem_upload(kern_backend *be, void *dst, const void *src, size_t bytes);
int kern_mem_download(kern_backend *be, void *dst, const void *src, size_t bytes);
int kern_mem_zero(kern_backend *be, void *dst, size_t bytes);
int kern_mem_copy(kern_backend *be, void *dst, const void *src, size_t bytes);
/* Host memory for staging transfers: page-locked on CUDA (faster, async-safe
 * copies), plain malloc on the CPU. */
int kern_host_alloc(kern_backend *be, void **ptr, size_t bytes);
void kern_host_free(kern_backend *be, void *ptr); /* NULL: no-op */
/* Waits for every op issued so far; reports an asynchronous failure. */
int kern_sync(kern_backend *be);

/* out = act(in . w + b) */
int kern_dense_forward(kern_backend *be, float *out, const float *in, const float *w,
                       const float *b, int64_t n, int64_t in_dim, int64_t out_dim, kern_act act);
/* dout (gradient of the post-activation output) is masked in place to dL/dz
 * under ReLU; dw += in^T dz, db += colsum(dz), din = dz w^T (din NULL: skipped). */
int kern_dense_backward(kern_backend *be, float *din, float *dw, float *db, float *dout,
                        const float *in, const float *w, const float *out, int64_t n,
                        int64_t in_dim, int64_t out_dim, kern_act act);
/* Softmax cross-entropy: stats (optional) accumulate, dlogits (optional) =
 * (softmax - onehot) * grad_scale. */
int kern_xent(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
              const int32_t *labels, int64_t n, int64_t classes, float grad_scale);
int kern_softmax(kern_backend *be, float *probs, const float *logits, int64_t n,
                 int64_t classes);
/* x[i,:] = images[idx[c+i],:] / 255, y[i] = labels[idx[c+i]], c = *cursor (NULL: 0). */
int kern_gather_u8(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                   const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                   const int64_t *cursor, int64_t n);
int kern_cursor_advance(kern_backend *be, int64_t *cursor, int64_t delta);
/* params, grads: elems floats; state: kern_opt_state_per_elem(kind) * elems. */
int kern_opt_update(kern_backend *be, float *params, const float *grads, float *state,
                    int64_t elems, const kern_opt *opt);

/* Record the ops issued between begin and end as one replayable graph.
 * Where !kern_has_graphs(be) these fail with an error; callers ask first. */
int kern_graph_begin(kern_backend *be);
int kern_graph_end(kern_backend *be, void **graph);
int kern_graph_launch(kern_backend *be, void *graph);
void kern_graph_free(kern_backend *be, void *graph); /* NULL: no-op */

/* Typed wrappers: counts in float elements, never bytes. */
int kern_mem_alloc_f32(kern_backend *be, float **p, int64_t elems);
int kern_mem_upload_f32(kern_backend *be, float *dst, const float *src, int64_t elems);
int kern_mem_download_f32(kern_backend *be, float *dst, const float *src, int64_t elems);
int kern_mem_zero_f32(kern_backend *be, float *dst, int64_t elems);

/* How many CUDA devices are usable; 0 with no GPU or no driver, and on
 * CPU-only builds. why (optional) receives the reason when 0. Asks the
 * driver (libcuda.so.1) alone: the CUDA module is not loaded for it. */
int kern_cuda_device_count(char *why, size_t why_bytes);
/* Loads the CUDA module now (kern_backend_init does it for a CUDA config).
 * 0, or -1 with one line in err; CPU-only builds: -1, "built without CUDA". */
int kern_cuda_load(char *err, size_t err_bytes);

/* What the BLAS reports of itself ("OpenBLAS 0.3.21 ..."). */
const char *kern_blas_info(void);
/* CUDA runtime/cuBLAS/cuDNN/NCCL versions as linked when the CUDA module is
 * loaded; else those its headers declared at build time (loading cuBLAS,
 * cuDNN and NCCL for a version line would cost a CPU run ~150 MB); "not
 * built" on CPU-only builds. */
void kern_cuda_info(char *out, size_t out_bytes);

#endif
