/* Our own kernels of the CUDA backend: bias (+ReLU), ReLU mask fused with the
 * bias gradient, softmax cross-entropy fused with its gradient and the stats,
 * the uint8 gather, the cursor and the optimizer update. Arithmetic mirrors
 * kernels/cpu.c operation for operation (explicit _rn intrinsics where the
 * compiler could otherwise fuse a multiply-add), so elementwise ops match the
 * CPU backend bit for bit. */
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/cuda_opt.cuh"

#define KC_THREADS 256
#define KC_MAX_BLOCKS 8192
#define KC_XENT_THREADS 512
#define KC_COLSUM_COLS 32
#define KC_COLSUM_ROWGROUPS 8
#define KC_COLSUM_ROWS 128 /* rows per block; more blocks along rows use atomics */

static unsigned kc_blocks(int64_t work, int threads) {
  int64_t b = (work + threads - 1) / threads;
  if (b < 1) b = 1;
  return (unsigned)(b > KC_MAX_BLOCKS ? KC_MAX_BLOCKS : b);
}

static int kc_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* out[i, j] = act(out[i, j] + b[j]); the GEMM wrote out = in . w just before. */
__global__ void kc_bias_act_kernel(float *out, const float *b, int64_t total, int64_t dim,
                                   int relu) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    float v = out[i] + b[i % dim];
    out[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
  }
}

extern "C" cudaError_t kc_launch_bias_act(cudaStream_t s, float *out, const float *b, int64_t n,
                                          int64_t dim, int relu) {
  const int64_t total = n * dim;
  if (total <= 0) return cudaSuccess;
  kc_bias_act_kernel<<<kc_blocks(total, KC_THREADS), KC_THREADS, 0, s>>>(out, b, total, dim, relu);
  return cudaGetLastError();
}

/* With ReLU, dout <- dout * (out > 0) in place (it becomes dL/dz); then
 * db[j] += sum_i dout[i, j]. A block covers 32 columns and KC_COLSUM_ROWS
 * rows; its 8 row groups meet in shared memory. One block along the rows
 * (n <= 128, every training batch of the tutorial) adds once, in a fixed
 * order; larger n adds the blocks' partial sums atomically. */
__global__ void kc_mask_colsum_kernel(float *dout, float *db, const float *out, int64_t n,
                                      int64_t dim, int64_t rows_per_block, int relu) {
  __shared__ float part[KC_COLSUM_ROWGROUPS][KC_COLSUM_COLS + 1];
  const int64_t col = (int64_t)blockIdx.x * KC_COLSUM_COLS + threadIdx.x;
  const int64_t r0 = (int64_t)blockIdx.y * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < n ? r0 + rows_per_block : n;
  float sum = 0.0f;
  if (col < dim) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += KC_COLSUM_ROWGROUPS) {
      const int64_t i = r * dim + col;
      float v = dout[i];
      if (relu) {
        v = out[i] > 0.0f ? v : 0.0f;
        dout[i] = v;
      }
      sum += v;
    }
  }
  part[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < dim) {
    float t = 0.0f;
    for (int k = 0; k < KC_COLSUM_ROWGROUPS; k++) t += part[k][threadIdx.x];
    if (gridDim.y == 1) db[col] += t;
    else atomicAdd(&db[col], t);
  }
}

extern "C" cudaError_t kc_launch_mask_colsum(cudaStream_t s, float *dout, float *db,
                                             const float *out, int64_t n, int64_t dim,
                                             int relu) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  int64_t rows = KC_COLSUM_ROWS;
  if ((n + rows - 1) / rows > 65535) rows = (n + 65534) / 65535; /* gridDim.y limit */
  dim3 grid((unsigned)((dim + KC_COLSUM_COLS - 1) / KC_COLSUM_COLS), (unsigned)((n + rows - 1) / rows));
  dim3 block(KC_COLSUM_COLS, KC_COLSUM_ROWGROUPS);
  kc_mask_colsum_kernel<<<grid, block, 0, s>>>(dout, db, out, n, dim, rows, relu);
  return cudaGetLastError();
}

/* Softmax cross-entropy, its gradient and the stats in one block: one thread
 * per row (classes is 10), a fixed-order tree over the block for the sums,
 * and thread 0 alone updates the stats, so no atomics and no host sync. A
 * label out of range makes the batch's loss NaN, which the epoch reports. */
__global__ void kc_xent_kernel(float *dlogits, kern_stats *stats, const float *logits,
                               const int32_t *labels, int64_t n, int64_t classes,
                               float grad_scale) {
  __shared__ double s_loss[KC_XENT_THREADS];
  __shared__ double s_corr[KC_XENT_THREADS];
  double loss = 0.0, correct = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float *z = logits + i * classes;
    const int32_t y = labels[i];
    int64_t arg = 0;
    for (int64_t j = 1; j < classes; j++) {
      if (z[j] > z[arg]) arg = j;
    }
    const float zmax = z[arg];
    float sum = 0.0f;
    for (int64_t j = 0; j < classes; j++) sum += expf(z[j] - zmax);
    if (y < 0 || y >= classes) {
      loss = nan("");
      continue;
    }
    loss += (double)(logf(sum) + zmax - z[y]);
    correct += (arg == y) ? 1.0 : 0.0;
    if (dlogits) {
      float *d = dlogits + i * classes;
      for (int64_t j = 0; j < classes; j++) {
        const float p = expf(z[j] - zmax) / sum;
        d[j] = (p - (j == y ? 1.0f : 0.0f)) * grad_scale;
      }
    }
  }
  s_loss[threadIdx.x] = loss;
  s_corr[threadIdx.x] = correct;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      s_loss[threadIdx.x] += s_loss[threadIdx.x + half];
      s_corr[threadIdx.x] += s_corr[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0 && stats) {
    stats->loss_sum += s_loss[0];
    stats->correct += s_corr[0];
    stats->samples += (double)n;
    stats->last_loss_sum = s_loss[0];
    stats->last_correct = s_corr[0];
    stats->last_samples = (double)n;
  }
}

extern "C" cudaError_t kc_launch_xent(cudaStream_t s, float *dlogits, kern_stats *stats,
                                      const float *logits, const int32_t *labels, int64_t n,
                                      int64_t classes, float grad_scale) {
  if (n < 0 || classes <= 0) return cudaErrorInvalidValue;
  /* A power of two (the tree needs one) just covering n: at batch 50 a
   * 64-thread tree is 6 levels instead of 9. */
  unsigned threads = 32;
  while (threads < KC_XENT_THREADS && (int64_t)threads < n) threads *= 2;
  kc_xent_kernel<<<1, threads, 0, s>>>(dlogits, stats, logits, labels, n, classes, grad_scale);
  return cudaGetLastError();
}

/* x[i, :] = images[idx[c + i], :] / 255, y[i] = labels[idx[c + i]], with
 * c = *cursor read on the device, so a captured graph gathers a new batch on
 * every replay. One block per row; 4 pixels per thread when aligned. */
__global__ void kc_gather_u8_kernel(float *x, int32_t *y, const uint8_t *images,
                                    const uint8_t *labels, int64_t elems, const int32_t *idx,
                                    const int64_t *cursor, int64_t n, int vec4) {
  const int64_t c = cursor ? *cursor : 0;
  const float scale = 1.0f / 255.0f;
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t row = idx[c + i];
    const uint8_t *src = images + row * elems;
    float *dst = x + i * elems;
    if (vec4) {
      const uchar4 *s4 = (const uchar4 *)src;
      float4 *d4 = (float4 *)dst;
      for (int64_t j = threadIdx.x; j < elems / 4; j += blockDim.x) {
        const uchar4 v = s4[j];
        d4[j] = make_float4((float)v.x * scale, (float)v.y * scale, (float)v.z * scale,
                            (float)v.w * scale);
      }
    } else {
      for (int64_t j = threadIdx.x; j < elems; j += blockDim.x) dst[j] = (float)src[j] * scale;
    }
    if (threadIdx.x == 0) y[i] = labels[row];
  }
}

extern "C" cudaError_t kc_launch_gather_u8(cudaStream_t s, float *x, int32_t *y,
                                           const uint8_t *images, const uint8_t *labels,
                                           int64_t sample_elems, const int32_t *idx,
                                           const int64_t *cursor, int64_t n) {
  if (n <= 0) return cudaSuccess;
  const int vec4 = sample_elems % 4 == 0 && ((uintptr_t)images & 3u) == 0 && kc_aligned16(x);
  const unsigned blocks = (unsigned)(n < 65535 ? n : 65535);
  kc_gather_u8_kernel<<<blocks, KC_THREADS, 0, s>>>(x, y, images, labels, sample_elems, idx,
                                                    cursor, n, vec4);
  return cudaGetLastError();
}

__global__ void kc_cursor_advance_kernel(int64_t *cursor, int64_t delta) { *cursor += delta; }

extern "C" cudaError_t kc_launch_cursor_advance(cudaStream_t s, int64_t *cursor, int64_t delta) {
  kc_cursor_advance_kernel<<<1, 1, 0, s>>>(cursor, delta);
  return cudaGetLastError();
}

/* p -= lr * g over the whole flat buffer in one launch: float4 for the bulk
 * (when aligned), scalars for the tail. __fmul_rn/__fsub_rn keep the CPU's
 * two roundings instead of one fused multiply-add. */
__device__ __forceinline__ float kc_sgd1(float p, float g, float lr) {
  return __fsub_rn(p, __fmul_rn(lr, g));
}

__global__ void kc_sgd_kernel(float *params, const float *grads, int64_t elems, int64_t vec_elems,
                              float lr) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t t0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  float4 *p4 = (float4 *)params;
  const float4 *g4 = (const float4 *)grads;
  for (int64_t i = t0; i < vec_elems / 4; i += stride) {
    float4 p = p4[i];
    const float4 g = g4[i];
    p.x = kc_sgd1(p.x, g.x, lr);
    p.y = kc_sgd1(p.y, g.y, lr);
    p.z = kc_sgd1(p.z, g.z, lr);
    p.w = kc_sgd1(p.w, g.w, lr);
    p4[i] = p;
  }
  for (int64_t i = vec_elems + t0; i < elems; i += stride) {
    params[i] = kc_sgd1(params[i], grads[i], lr);
  }
}

extern "C" cudaError_t kc_launch_sgd(cudaStream_t s, float *params, const float *grads,
                                     int64_t elems, float lr) {
  if (elems <= 0) return cudaSuccess;
  const int64_t vec = kc_aligned16(params) && kc_aligned16(grads) ? elems / 4 * 4 : 0;
  const int64_t work = vec / 4 + (elems - vec);
  kc_sgd_kernel<<<kc_blocks(work, KC_THREADS), KC_THREADS, 0, s>>>(params, grads, elems, vec, lr);
  return cudaGetLastError();
}

/* Every rule but plain SGD (kernels/cpu_opt.c), one launch over the flat
 * buffer; weight i's state is state[k*i .. k*i+k). */
__global__ void kc_opt_kernel(float *params, const float *grads, float *state, int64_t elems,
                              int kind, int k, kern_opt_scalars s) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < elems; i += stride) {
    params[i] = kc_opt_elem(kind, s, params[i], grads[i], state + k * i);
  }
}

extern "C" cudaError_t kc_launch_opt(cudaStream_t st, float *params, const float *grads,
                                     float *state, int64_t elems, const kern_opt *opt) {
  if (elems <= 0) return cudaSuccess;
  const kern_opt_scalars s = kern_opt_scalars_of(opt);
  const int k = kern_opt_state_per_elem_inline(opt->kind);
  kc_opt_kernel<<<kc_blocks(elems, KC_THREADS), KC_THREADS, 0, st>>>(params, grads, state, elems,
                                                                      (int)opt->kind, k, s);
  return cudaGetLastError();
}
