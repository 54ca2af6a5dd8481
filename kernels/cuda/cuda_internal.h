/* Internals of the CUDA backend: its state and the launchers of our own
 * kernels. The check macros are in cuda_check.h. */
#ifndef TFDIST_KERNELS_CUDA_INTERNAL_H
#define TFDIST_KERNELS_CUDA_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/opt_rule.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scratch of the small GEMM kernels (cuda_gemm.cu): split-K partials and
 * one arrival counter per output tile, which each launch leaves at zero. */
typedef struct {
  float *ws;
  unsigned *count;
  int64_t ws_floats, count_n;
  int sm_count;
} kc_gemm_ws;

typedef struct {
  kern_backend base;         /* first: a kern_backend * is a kern_cuda * */
  int device;                /* the CUDA device this backend is bound to */
  cudaStream_t stream;       /* every op is ordered on this stream */
  cublasHandle_t blas;
  void *blas_workspace;      /* fixed cuBLAS workspace, so graph capture never allocates */
  cudnnHandle_t dnn;         /* created on first use: the fused path never needs it */
  cudnnTensorDescriptor_t dnn_x, dnn_y;
  void *dnn_act;             /* cudnnActivationDescriptor_t, owned by cuda_cudnn.c */
  int capturing;             /* inside graph_begin .. graph_end */
  kern_gemm gemm;            /* resolved: KERN_GEMM_AUTO here means "by shape" */
  kc_gemm_ws gemm_ws;
  int fused_grid;            /* blocks of the fused step; 0: not known yet, -1: cannot run */
  int64_t fused_chain;       /* most steps per fused launch (TFDIST_FUSED_CHAIN); 0: no limit */
  kc_where where;            /* rank, device and base.err, for the check macros */
} kern_cuda;

static inline kern_cuda *kc_of(kern_backend *be) { return (kern_cuda *)be; }

/* Shapes too large for the int that cuBLAS and cuDNN take are refused, not truncated. */
int kc_check_dims(kern_cuda *kc, const char *op, int64_t a, int64_t b, int64_t c);

/* cuda_ops.c: the compute ops of kern_ops (see kernels/backend_impl.h). */
int kc_dense_forward(kern_backend *be, float *out, const float *in, const float *w,
                     const float *b, int64_t n, int64_t in_dim, int64_t out_dim, kern_act act);
int kc_dense_backward(kern_backend *be, float *din, float *dw, float *db, float *dout,
                      const float *in, const float *w, const float *out, int64_t n,
                      int64_t in_dim, int64_t out_dim, kern_act act);
int kc_xent(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
            const int32_t *labels, int64_t n, int64_t classes, float grad_scale);
int kc_softmax(kern_backend *be, float *probs, const float *logits, int64_t n, int64_t classes);
int kc_gather_u8(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                 const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                 const int64_t *cursor, int64_t n);
int kc_cursor_advance(kern_backend *be, int64_t *cursor, int64_t delta);
int kc_opt_update(kern_backend *be, float *params, const float *grads, float *state,
                  int64_t elems, const kern_opt *opt);

/* cuda_cudnn.c: ReLU and softmax through cuDNN. kc_cudnn_init creates the
 * handle; it runs at create time for the unfused path and otherwise on the
 * first softmax, never inside a graph capture. */
int kc_cudnn_init(kern_cuda *kc);
int kc_cudnn_relu_forward(kern_cuda *kc, float *y, int64_t n, int64_t dim);
int kc_cudnn_relu_backward(kern_cuda *kc, float *dy, const float *y, int64_t n, int64_t dim);
int kc_cudnn_softmax(kern_cuda *kc, float *probs, const float *logits, int64_t n, int64_t classes);
void kc_cudnn_free(kern_cuda *kc);

/* Whether dense ops at batch n take our small GEMM kernels (cuda_gemm.cu). */
int kc_gemm_small(const kern_cuda *kc, int64_t n);

/* cuda_gemm.cu: the small-batch FP32 GEMMs, epilogues fused (see there). */
cudaError_t kc_launch_gemm_forward(cudaStream_t s, const kc_gemm_ws *g, float *out,
                                   const float *in, const float *w, const float *b, int64_t n,
                                   int64_t in_dim, int64_t out_dim, int relu);
cudaError_t kc_launch_gemm_backward(cudaStream_t s, const kc_gemm_ws *g, float *din, float *dw,
                                    float *db, float *dout, const float *in, const float *w,
                                    const float *out, int64_t n, int64_t in_dim,
                                    int64_t out_dim);

/* cuda_fused.cu: the whole training step in one cooperative launch. */
#define KF_FUSED_MAX_ROWS 128   /* batch rows per rank */
#define KF_FUSED_MAX_CLASSES 16
#define KF_FUSED_MAX_H2 128     /* second hidden layer: 4 units per lane in phase 4 */
#define KF_FUSED_MAX_KC 128     /* K chunk of a forward split */
#define KF_FUSED_A_FLOATS 6144  /* A slab in shared memory: rows x K chunk (padded to 4) */
#define KF_FUSED_TILE_ROWS 64   /* rows of one GEMM tile (8 per warp) */
#define KF_FUSED_MAX_SPLITS 16  /* K splits of layer 1, summed with all loads in flight */
#define KF_FUSED_MAX_SPLITS2 8  /* K splits of layer 2, summed per row in phase 4 */
typedef struct {
  int64_t n, dims[4], w_off[3], b_off[3];
  int64_t ks1, kc1, ks2, kc2; /* K splits of layers 1 and 2, and their chunk */
  int64_t steps;              /* steps this launch runs, >= 1 */
  float *params, *grads, *state;
  float *x, *h1, *h2, *logits, *dlogits, *dz2, *dz1;
  int32_t *y;
  const uint8_t *images, *image_labels;
  const int32_t *perm;
  int64_t *cursor;
  int64_t cursor_delta;
  kern_stats *stats;
  float *part1, *part2; /* (ks1, n, d1), (ks2, n, d2) */
  double *row_loss, *row_correct;
  float grad_scale;
  kern_opt_scalars opt;  /* this launch's update (kernels/opt_rule.h) */
  int opt_kind, opt_k;   /* the rule, and its state floats per weight */
  unsigned long long *phase_ns; /* NULL, or KERN_STEP_TIMES timestamps (mlp_step.h) */
} kc_fused_args;
cudaError_t kc_launch_fused_step(cudaStream_t s, const kc_fused_args *a, int grid);
cudaError_t kc_fused_blocks_per_sm(int *blocks);
int kc_fused_step_ws(kern_backend *be, const kern_step *s, size_t *bytes);
int kc_fused_step(kern_backend *be, const kern_step *s);

/* cuda_kernels.cu: our kernels. Each returns cudaGetLastError() of its launch. */
cudaError_t kc_launch_bias_act(cudaStream_t s, float *out, const float *b, int64_t n,
                               int64_t dim, int relu);
cudaError_t kc_launch_mask_colsum(cudaStream_t s, float *dout, float *db, const float *out,
                                  int64_t n, int64_t dim, int relu);
cudaError_t kc_launch_xent(cudaStream_t s, float *dlogits, kern_stats *stats,
                           const float *logits, const int32_t *labels, int64_t n,
                           int64_t classes, float grad_scale);
cudaError_t kc_launch_gather_u8(cudaStream_t s, float *x, int32_t *y, const uint8_t *images,
                                const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                                const int64_t *cursor, int64_t n);
cudaError_t kc_launch_cursor_advance(cudaStream_t s, int64_t *cursor, int64_t delta);
cudaError_t kc_launch_sgd(cudaStream_t s, float *params, const float *grads, int64_t elems,
                          float lr);
/* Any rule of kern_opt (kernels/cuda/cuda_opt.cuh), one launch. */
cudaError_t kc_launch_opt(cudaStream_t s, float *params, const float *grads, float *state,
                          int64_t elems, const kern_opt *opt);

#ifdef __cplusplus
}
#endif

#endif
