/* cuDNN in the CUDA backend: softmax (the served model's output) and ReLU
 * forward/backward for the unfused path. Why the legacy API: these ops are
 * single pointwise/row ops on (n, dim) tensors, where the legacy calls are
 * one line each and record into CUDA graphs, while the graph API needs an
 * operation graph, engine heuristics and a plan per shape for the same work.
 * cuDNN 9.19 marks the activation calls and their descriptor deprecated, so
 * this one file is built with -Wno-deprecated-declarations (kernels/cuda/
 * meson.build); softmax is not deprecated. The training step's default path
 * fuses ReLU into our own kernels (cuda_kernels.cu) and never calls cuDNN. */
#include "kernels/cuda/cuda_internal.h"

int kc_cudnn_init(kern_cuda *kc) {
  if (kc->dnn) return 0;
  if (kc->capturing) {
    snprintf(kc->base.err, sizeof kc->base.err,
             "rank %d cuda:%d: cuDNN first used inside a graph capture; create it before",
             kc->base.cfg.rank, kc->device);
    return -1;
  }
  KC_CUDNN_CHECK(&kc->where, cudnnCreate(&kc->dnn), return -1);
  KC_CUDNN_CHECK(&kc->where, cudnnSetStream(kc->dnn, kc->stream), return -1);
  KC_CUDNN_CHECK(&kc->where, cudnnCreateTensorDescriptor(&kc->dnn_x), return -1);
  KC_CUDNN_CHECK(&kc->where, cudnnCreateTensorDescriptor(&kc->dnn_y), return -1);
  cudnnActivationDescriptor_t act = NULL;
  KC_CUDNN_CHECK(&kc->where, cudnnCreateActivationDescriptor(&act), return -1);
  kc->dnn_act = act;
  /* NaN handling does not matter for finite data; NOT_PROPAGATE matches the
   * CPU's (v > 0 ? v : 0), which maps NaN to 0. */
  KC_CUDNN_CHECK(
      &kc->where,
      cudnnSetActivationDescriptor(act, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0),
      return -1);
  return 0;
}

void kc_cudnn_free(kern_cuda *kc) {
  if (kc->dnn_act) cudnnDestroyActivationDescriptor((cudnnActivationDescriptor_t)kc->dnn_act);
  if (kc->dnn_x) cudnnDestroyTensorDescriptor(kc->dnn_x);
  if (kc->dnn_y) cudnnDestroyTensorDescriptor(kc->dnn_y);
  if (kc->dnn) cudnnDestroy(kc->dnn);
  kc->dnn_act = NULL;
  kc->dnn_x = kc->dnn_y = NULL;
  kc->dnn = NULL;
}

/* (n, dim) row-major as NCHW (n, dim, 1, 1): softmax over "channels" is
 * softmax over each row. */
static int kc_cudnn_rows(kern_cuda *kc, cudnnTensorDescriptor_t d, int64_t n, int64_t dim) {
  if (kc_check_dims(kc, "cudnn", n, dim, 1) != 0) return -1;
  KC_CUDNN_CHECK(
      &kc->where,
      cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)n, (int)dim, 1, 1),
      return -1);
  return 0;
}

/* In place: cuDNN allows x == y with one descriptor. */
int kc_cudnn_relu_forward(kern_cuda *kc, float *y, int64_t n, int64_t dim) {
  const float one = 1.0f, zero = 0.0f;
  if (n == 0 || dim == 0) return 0;
  if (kc_cudnn_init(kc) != 0 || kc_cudnn_rows(kc, kc->dnn_x, n, dim) != 0) return -1;
  KC_CUDNN_CHECK(&kc->where,
                 cudnnActivationForward(kc->dnn, (cudnnActivationDescriptor_t)kc->dnn_act, &one,
                                        kc->dnn_x, y, &zero, kc->dnn_x, y),
                 return -1);
  return 0;
}

/* dy <- dy * (y > 0) in place. For ReLU, x > 0 exactly where y > 0, so the
 * output y stands in for the input x that cuDNN's signature asks for. */
int kc_cudnn_relu_backward(kern_cuda *kc, float *dy, const float *y, int64_t n, int64_t dim) {
  const float one = 1.0f, zero = 0.0f;
  if (n == 0 || dim == 0) return 0;
  if (kc_cudnn_init(kc) != 0 || kc_cudnn_rows(kc, kc->dnn_x, n, dim) != 0) return -1;
  KC_CUDNN_CHECK(
      &kc->where,
      cudnnActivationBackward(kc->dnn, (cudnnActivationDescriptor_t)kc->dnn_act, &one, kc->dnn_x, y,
                              kc->dnn_x, dy, kc->dnn_x, y, &zero, kc->dnn_x, dy),
      return -1);
  return 0;
}

int kc_cudnn_softmax(kern_cuda *kc, float *probs, const float *logits, int64_t n,
                     int64_t classes) {
  const float one = 1.0f, zero = 0.0f;
  if (kc_cudnn_init(kc) != 0 || kc_cudnn_rows(kc, kc->dnn_x, n, classes) != 0 ||
      kc_cudnn_rows(kc, kc->dnn_y, n, classes) != 0) {
    return -1;
  }
  KC_CUDNN_CHECK(&kc->where,
                 cudnnSoftmaxForward(kc->dnn, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL,
                                     &one, kc->dnn_x, logits, &zero, kc->dnn_y, probs),
                 return -1);
  return 0;
}
