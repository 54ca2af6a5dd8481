/* The compute backend interface. The CPU backend (OpenBLAS) is the reference;
 * the CUDA backend implements the same ops and is tested against it. */
#ifndef TFDIST_KERNELS_BACKEND_H
#define TFDIST_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { KERN_DEVICE_CPU = 0, KERN_DEVICE_CUDA = 1 } kern_device;
typedef enum { KERN_ACT_NONE = 0, KERN_ACT_RELU = 1 } kern_act;
typedef enum { KERN_MATH_FP32 = 0, KERN_MATH_TF32 = 1 } kern_math;
typedef enum { KERN_OPT_SGD = 0, KERN_OPT_MOMENTUM = 1 } kern_opt_kind;
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

typedef struct {
  kern_opt_kind kind;
  float lr;
  float momentum; /* KERN_OPT_MOMENTUM: v = m*v + g; p -= lr*v */
} kern_opt;

typedef struct {
  kern_device device;
  int device_index; /* CUDA: local_rank % device_count, chosen by the caller */
  kern_math math;
  int threads;      /* CPU BLAS threads; 0 leaves the library default */
  int rank;         /* MPI rank, for error messages only */
  int unfused;      /* CUDA: bias kernel + cuDNN activation instead of the fused
                     * bias+ReLU kernels (a reference path for tests and benchmarks) */
  kern_gemm gemm;   /* CUDA: which GEMMs (see kern_gemm) */
} kern_config;

/* One training step of the 3-layer ReLU MLP, as kern_ops.fused_step takes
 * it: gather at *cursor, forward, softmax cross-entropy (stats), backward
 * into grads (overwritten: the same values as zeroing then accumulating),
 * the optimizer update and the cursor advance. The buffers are those the
 * op-by-op step uses (model/model.h's work buffers), so either path leaves
 * the same state behind. One launch may run `steps` such steps in a row,
 * each at the cursor the one before advanced: the same as `steps` launches. */
typedef struct {
  int64_t n;                  /* batch rows */
  int64_t steps;              /* steps per launch; 0 means 1 */
  int64_t dims[4];            /* in, h1, h2, classes */
  int64_t w_off[3], b_off[3]; /* offsets of each layer's W and b in params */
  float *params, *grads, *opt_state;
  float *act[4];              /* x, h1, h2, logits */
  float *dact[4];             /* dact[1..3]: dL/dz of each layer */
  int32_t *labels;            /* the batch's labels, written */
  const uint8_t *images, *image_labels;
  const int32_t *perm;
  int64_t *cursor, cursor_delta;
  kern_stats *stats;
  float grad_scale;
  kern_opt opt;
  void *ws;                   /* fused_step_ws bytes of backend memory */
  /* Optional, for benchmarks: backend memory for KERN_STEP_TIMES timestamps
   * (ns) of the launch's last step: the start of each phase, the end of the
   * last, then block 0's first tile of phases 1, 3, 6 and 7 (start, staged,
   * multiplied, stored). */
  uint64_t *phase_ns;
} kern_step;
#define KERN_STEP_PHASES 7
/* Steps per fused launch the trainer asks for: a launch costs about one
 * step's worth of gaps (~4 us), a barrier between steps ~1 us, and the host
 * still hears from the device every ~1.5 ms at batch 50. */
#define KERN_STEP_CHAIN 32
#define KERN_STEP_TIMES (KERN_STEP_PHASES + 1 + 16)

typedef struct kern_backend kern_backend;

/* Every pointer handed to an op is backend memory (host memory for the CPU
 * backend, device memory for CUDA), allocated with kern_mem_alloc.
 * Shapes: matrices are row-major; a dense layer's weight w is (in_dim, out_dim),
 * its bias b is (out_dim), activations are (n, dim).
 * Gradient convention (said once, here): kern_dense_backward ACCUMULATES into
 * dw and db (+=) and OVERWRITES din. Callers zero the gradient buffer per step. */
typedef struct kern_ops {
  const char *name;
  void (*destroy)(kern_backend *be);
  int (*mem_alloc)(kern_backend *be, void **ptr, size_t bytes);
  void (*mem_free)(kern_backend *be, void *ptr);
  int (*mem_upload)(kern_backend *be, void *dst, const void *src, size_t bytes);
  int (*mem_download)(kern_backend *be, void *dst, const void *src, size_t bytes);
  int (*mem_zero)(kern_backend *be, void *dst, size_t bytes);
  int (*mem_copy)(kern_backend *be, void *dst, const void *src, size_t bytes);
  /* Host memory for staging transfers: page-locked on CUDA (faster, async-safe
   * copies), plain malloc on the CPU. */
  int (*host_alloc)(kern_backend *be, void **ptr, size_t bytes);
  void (*host_free)(kern_backend *be, void *ptr);
  int (*sync)(kern_backend *be);
  int (*dense_forward)(kern_backend *be, float *out, const float *in, const float *w,
                       const float *b, int64_t n, int64_t in_dim, int64_t out_dim,
                       kern_act act);
  int (*dense_backward)(kern_backend *be, float *din, float *dw, float *db, float *dout,
                        const float *in, const float *w, const float *out, int64_t n,
                        int64_t in_dim, int64_t out_dim, kern_act act);
  int (*xent)(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
              const int32_t *labels, int64_t n, int64_t classes, float grad_scale);
  int (*softmax)(kern_backend *be, float *probs, const float *logits, int64_t n,
                 int64_t classes);
  int (*gather_u8)(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                   const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                   const int64_t *cursor, int64_t n);
  int (*cursor_advance)(kern_backend *be, int64_t *cursor, int64_t delta);
  int (*opt_update)(kern_backend *be, float *params, const float *grads, float *state,
                    int64_t elems, const kern_opt *opt);
  /* Optional (NULL on CPU): record the ops issued between begin and end as one
   * replayable graph. The runtime falls back to plain calls when absent. */
  int (*graph_begin)(kern_backend *be);
  int (*graph_end)(kern_backend *be, void **graph);
  int (*graph_launch)(kern_backend *be, void *graph);
  void (*graph_free)(kern_backend *be, void *graph);
  void *(*stream)(kern_backend *be); /* cudaStream_t for NCCL; NULL on CPU */
  /* Optional (NULL on CPU): the step of kern_step in one launch. fused_step_ws
   * returns 1 when this backend cannot fuse the shape (the caller runs the ops
   * one by one), else 0 with the workspace size. */
  int (*fused_step_ws)(kern_backend *be, const kern_step *s, size_t *bytes);
  int (*fused_step)(kern_backend *be, const kern_step *s);

} kern_ops;

struct kern_backend {
  const kern_ops *ops;
  kern_config cfg;
  char err[512]; /* last error, one line */
};

int kern_backend_init(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes);
void kern_backend_free(kern_backend *be);
/* How many CUDA devices are usable; 0 with no GPU or no driver, and on
 * CPU-only builds. why (optional) receives the reason when 0. */
int kern_cuda_device_count(char *why, size_t why_bytes);

/* What the BLAS reports of itself ("OpenBLAS 0.3.21 ..."). */
const char *kern_blas_info(void);
/* CUDA runtime/cuBLAS/cuDNN/NCCL versions as linked, or "not built". */
void kern_cuda_info(char *out, size_t out_bytes);

int kern_cpu_create(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes);
/* Binds cfg->device_index (cudaSetDevice) before any other CUDA call that
 * touches a device. Defined only in CUDA builds. */
int kern_cuda_create(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes);

/* Thin typed wrappers, so call sites read like the math. */
static inline int kern_dense_forward(kern_backend *be, float *out, const float *in,
                                     const float *w, const float *b, int64_t n,
                                     int64_t in_dim, int64_t out_dim, kern_act act) {
  return be->ops->dense_forward(be, out, in, w, b, n, in_dim, out_dim, act);
}
static inline int kern_dense_backward(kern_backend *be, float *din, float *dw, float *db,
                                      float *dout, const float *in, const float *w,
                                      const float *out, int64_t n, int64_t in_dim,
                                      int64_t out_dim, kern_act act) {
  return be->ops->dense_backward(be, din, dw, db, dout, in, w, out, n, in_dim, out_dim, act);
}
static inline int kern_mem_alloc_f32(kern_backend *be, float **p, int64_t elems) {
  return be->ops->mem_alloc(be, (void **)p, (size_t)elems * sizeof(float));
}
static inline void kern_mem_free(kern_backend *be, void *p) {
  if (p) be->ops->mem_free(be, p);
}

#endif
