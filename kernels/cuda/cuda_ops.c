/* The compute ops of the CUDA backend: GEMMs through our small-batch
 * kernels (one launch per forward layer, one per backward layer, epilogues
 * fused) or cuBLAS (row-major operands passed as their column-major
 * transposes), chosen by kc_gemm_small; our kernels for the rest, cuDNN for softmax and for the unfused activation path. Every op is
 * asynchronous on the backend's stream and safe to record in a graph. */
#include "kernels/cuda/cuda_internal.h"

int kc_gemm_small(const kern_cuda *kc, int64_t n) {
  if (kc->base.cfg.math != KERN_MATH_FP32 || kc->base.cfg.unfused) return 0;
  (void)n;
  /* AUTO is cuBLAS: on an H200 at batch 50 a graph-replayed step took
   * 62.4 us with cuBLAS and 67.0 us with the small kernels (check.sh). */
  return kc->gemm == KERN_GEMM_SMALL;
}

/* Row-major out(n, o) = in(n, i) . w(i, o) is column-major
 * out^T(o, n) = w^T(o, i) . in^T(i, n): no transposes, leading dims o and i. */
int kc_dense_forward(kern_backend *be, float *out, const float *in, const float *w,
                     const float *b, int64_t n, int64_t in_dim, int64_t out_dim, kern_act act) {
  kern_cuda *kc = kc_of(be);
  const float one = 1.0f, zero = 0.0f;
  const int relu = act == KERN_ACT_RELU;
  if (kc_check_dims(kc, "dense_forward", n, in_dim, out_dim) != 0) return -1;
  if (n == 0 || out_dim == 0) return 0;
  if (in_dim > 0 && kc_gemm_small(kc, n)) {
    KC_CUDA_CHECK(
        &kc->where,
        kc_launch_gemm_forward(kc->stream, &kc->gemm_ws, out, in, w, b, n, in_dim, out_dim, relu),
        return -1);
    return 0;
  }
  if (in_dim == 0) {
    KC_CUDA_CHECK(&kc->where,
                  cudaMemsetAsync(out, 0, (size_t)(n * out_dim) * sizeof(float), kc->stream),
                  return -1);
  } else {
    KC_CUBLAS_CHECK(
        &kc->where,
        cublasSgemm(kc->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)out_dim, (int)n, (int)in_dim, &one, w,
                    (int)out_dim, in, (int)in_dim, &zero, out, (int)out_dim),
        return -1);
  }
  if (relu && be->cfg.unfused) {
    KC_CUDA_CHECK(&kc->where, kc_launch_bias_act(kc->stream, out, b, n, out_dim, 0), return -1);
    return kc_cudnn_relu_forward(kc, out, n, out_dim);
  }
  KC_CUDA_CHECK(&kc->where, kc_launch_bias_act(kc->stream, out, b, n, out_dim, relu), return -1);
  return 0;
}

/* The convention of kernels/backend.h: dout is masked in place into dL/dz,
 * dw += in^T dz and db += colsum(dz) accumulate, din = dz w^T overwrites.
 * Column-major: dw^T(o, i) += dz^T(o, n) . in(n, i), din^T(i, n) = w(i, o) . dz^T(o, n). */
int kc_dense_backward(kern_backend *be, float *din, float *dw, float *db, float *dout,
                      const float *in, const float *w, const float *out, int64_t n,
                      int64_t in_dim, int64_t out_dim, kern_act act) {
  kern_cuda *kc = kc_of(be);
  const float one = 1.0f, zero = 0.0f;
  const int relu = act == KERN_ACT_RELU;
  if (kc_check_dims(kc, "dense_backward", n, in_dim, out_dim) != 0) return -1;
  if (n == 0) return 0;
  if (out_dim == 0) {
    if (din && in_dim > 0) {
      KC_CUDA_CHECK(&kc->where,
                    cudaMemsetAsync(din, 0, (size_t)(n * in_dim) * sizeof(float), kc->stream),
                    return -1);
    }
    return 0;
  }
  if (in_dim > 0 && in_dim < INT32_MAX && n * out_dim <= INT32_MAX && kc_gemm_small(kc, n)) {
    KC_CUDA_CHECK(&kc->where,
                  kc_launch_gemm_backward(kc->stream, &kc->gemm_ws, din, dw, db, dout, in, w,
                                          relu ? out : NULL, n, in_dim, out_dim),
                  return -1);
    return 0;
  }
  if (relu && be->cfg.unfused) {
    if (kc_cudnn_relu_backward(kc, dout, out, n, out_dim) != 0) return -1;
    KC_CUDA_CHECK(&kc->where, kc_launch_mask_colsum(kc->stream, dout, db, out, n, out_dim, 0),
                  return -1);
  } else {
    KC_CUDA_CHECK(&kc->where, kc_launch_mask_colsum(kc->stream, dout, db, out, n, out_dim, relu),
                  return -1);
  }
  if (in_dim == 0) return 0;
  KC_CUBLAS_CHECK(&kc->where,
                  cublasSgemm(kc->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)out_dim, (int)in_dim, (int)n,
                              &one, dout, (int)out_dim, in, (int)in_dim, &one, dw, (int)out_dim),
                  return -1);
  if (din) {
    KC_CUBLAS_CHECK(
        &kc->where,
        cublasSgemm(kc->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)in_dim, (int)n, (int)out_dim, &one, w,
                    (int)out_dim, dout, (int)out_dim, &zero, din, (int)in_dim),
        return -1);
  }
  return 0;
}

int kc_xent(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
            const int32_t *labels, int64_t n, int64_t classes, float grad_scale) {
  kern_cuda *kc = kc_of(be);
  if (kc_check_dims(kc, "xent", n, classes, 1) != 0) return -1;
  KC_CUDA_CHECK(&kc->where,
                kc_launch_xent(kc->stream, dlogits, stats, logits, labels, n, classes, grad_scale),
                return -1);
  return 0;
}

int kc_softmax(kern_backend *be, float *probs, const float *logits, int64_t n, int64_t classes) {
  kern_cuda *kc = kc_of(be);
  if (kc_check_dims(kc, "softmax", n, classes, 1) != 0) return -1;
  if (n == 0 || classes == 0) return 0;
  return kc_cudnn_softmax(kc, probs, logits, n, classes);
}

int kc_gather_u8(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                 const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                 const int64_t *cursor, int64_t n) {
  kern_cuda *kc = kc_of(be);
  KC_CUDA_CHECK(&kc->where,
                kc_launch_gather_u8(kc->stream, x, y, images, labels, sample_elems, idx, cursor, n),
                return -1);
  return 0;
}

int kc_cursor_advance(kern_backend *be, int64_t *cursor, int64_t delta) {
  kern_cuda *kc = kc_of(be);
  KC_CUDA_CHECK(&kc->where, kc_launch_cursor_advance(kc->stream, cursor, delta), return -1);
  return 0;
}

int kc_opt_update(kern_backend *be, float *params, const float *grads, float *state,
                  int64_t elems, const kern_opt *opt) {
  kern_cuda *kc = kc_of(be);
  if (kern_opt_state_per_elem_inline(opt->kind) < 0) {
    snprintf(be->err, sizeof be->err, "cuda: unknown optimizer kind %d", (int)opt->kind);
    return -1;
  }
  if (opt->kind == KERN_OPT_SGD && opt->weight_decay == 0.0f) { /* the vectorized kernel */
    KC_CUDA_CHECK(&kc->where, kc_launch_sgd(kc->stream, params, grads, elems, opt->lr), return -1);
    return 0;
  }
  KC_CUDA_CHECK(&kc->where, kc_launch_opt(kc->stream, params, grads, state, elems, opt),
                return -1);
  return 0;
}
