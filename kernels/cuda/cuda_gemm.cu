/* Small-batch FP32 GEMMs of the dense layers, for batches where cuBLAS
 * launches too few blocks (a 50x300 output is a handful of its tiles) and
 * walks K serially. A block computes an 8x32 output tile: lanes run along
 * the output columns, the 8 warps split K among themselves and meet in
 * shared memory in a fixed order. When the tiles alone cannot fill the GPU,
 * K is also split across blocks; each block writes its partial tile to a
 * workspace and the last block of a tile to arrive (an integer counter)
 * sums the partials in split order. No float atomics: the sums run in the
 * same order on every run, so results are bit-reproducible.
 *
 * Three forms, C (m x n) = A (m x k) . B (k x n), every matrix row-major:
 *   NN forward  out = in . W, epilogue + bias, ReLU;
 *   TN weights  dW += in^T . dz, with one extra row of ones in in^T, so that
 *               row in_dim of the product is db += colsum(dz);
 *   NT input    din = dz . W^T.
 * Backward is one launch: blocks of the TN part, blocks of the NT part, and
 * every block also zeroes its share of dout where the ReLU mask is off (dout
 * becomes dz in place, the convention of kernels/backend.h). The readers
 * load dout only where out > 0 and the writers store only where it is not,
 * so no element is both read and written within the launch. */
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"

#define KG_TM 8                       /* output rows per block */
#define KG_TN 32                      /* output columns per block: one per lane */
#define KG_WARPS 8                    /* K split inside the block */
#define KG_THREADS (KG_TN * KG_WARPS) /* 256 = KG_TM * KG_TN: one output per thread at the end */
#define KG_MIN_K_PER_WARP 8           /* shorter K slices do not pay for a split */
#define KG_MAX_SPLITS 16

enum { KG_NN = 0, KG_TN_FORM = 1, KG_NT = 2 };

typedef struct {
  const float *a, *b;
  const float *amask, *bmask; /* ReLU mask (forward outputs): the operand counts only where > 0 */
  float *c, *c_ones;          /* c_ones: TN, the ones row's output (db) */
  const float *bias;          /* NN epilogue */
  int64_t lda, ldb, ldc;
  int m, n, k;                /* TN with a ones row: m = in_dim + 1 */
  int relu, accumulate;
  int splits, k_per_split;
  int64_t tiles_m, tiles_n, blocks;
  float *ws;                  /* splits * tiles * KG_THREADS partials */
  unsigned *count;            /* one arrival counter per tile, left at 0 */
} kg_args;

/* A tile's partial sums over one K slice: warp w takes k = k0 + w, k0 + w + 8, ...
 * Rows and columns past the edge are clamped to the last valid one (valid
 * addresses, results discarded at the store). */
template <int FORM>
__device__ __forceinline__ void kg_accumulate(const kg_args &p, int m0, int n0, int k0, int k1,
                                              float acc[KG_TM]) {
  const int lane = threadIdx.x % KG_TN, warp = threadIdx.x / KG_TN;
  const int nc = min(n0 + lane, p.n - 1);
  if (FORM == KG_NN) {
    const float *ap[KG_TM];
#pragma unroll
    for (int i = 0; i < KG_TM; i++) ap[i] = p.a + (int64_t)min(m0 + i, p.m - 1) * p.lda;
    const float *bp = p.b + nc;
#pragma unroll 4
    for (int k = k0 + warp; k < k1; k += KG_WARPS) {
      const float bv = bp[(int64_t)k * p.ldb];
#pragma unroll
      for (int i = 0; i < KG_TM; i++) acc[i] = fmaf(ap[i][k], bv, acc[i]);
    }
  } else if (FORM == KG_TN_FORM) {
    /* A(m, k) = in[k, m]; row m = m - 1 of the product is the ones row. */
    const int real_m = p.m - 1;
    int mc[KG_TM];
    bool one[KG_TM];
#pragma unroll
    for (int i = 0; i < KG_TM; i++) {
      one[i] = m0 + i >= real_m;
      mc[i] = min(m0 + i, real_m - 1);
    }
#pragma unroll 4
    for (int k = k0 + warp; k < k1; k += KG_WARPS) {
      const int64_t bi = (int64_t)k * p.ldb + nc;
      const float bv = (!p.bmask || p.bmask[bi] > 0.0f) ? p.b[bi] : 0.0f;
      const float *arow = p.a + (int64_t)k * p.lda;
#pragma unroll
      for (int i = 0; i < KG_TM; i++) acc[i] = fmaf(one[i] ? 1.0f : arow[mc[i]], bv, acc[i]);
    }
  } else {
    /* B(k, n) = W[n, k]. Offsets fit an int (the launcher checks m * lda). */
    int ar[KG_TM];
#pragma unroll
    for (int i = 0; i < KG_TM; i++) ar[i] = min(m0 + i, p.m - 1) * (int)p.lda;
    const float *bp = p.b + (int64_t)nc * p.ldb;
#pragma unroll 4
    for (int k = k0 + warp; k < k1; k += KG_WARPS) {
      const float bv = bp[k];
#pragma unroll
      for (int i = 0; i < KG_TM; i++) {
        const int ai = ar[i] + k;
        const float av = (!p.amask || p.amask[ai] > 0.0f) ? p.a[ai] : 0.0f;
        acc[i] = fmaf(av, bv, acc[i]);
      }
    }
  }
}

/* Thread t owns output (m0 + t / 32, n0 + t % 32). */
template <int FORM>
__device__ __forceinline__ void kg_store(const kg_args &p, int m, int n, float v) {
  if (m >= p.m || n >= p.n) return;
  if (FORM == KG_TN_FORM && m == p.m - 1 && !p.c_ones) return;
  if (FORM == KG_NN) {
    if (p.bias) v = v + p.bias[n];
    if (p.relu) v = v > 0.0f ? v : 0.0f;
  }
  float *dst = (FORM == KG_TN_FORM && m == p.m - 1) ? p.c_ones + n : p.c + (int64_t)m * p.ldc + n;
  *dst = p.accumulate ? *dst + v : v;
}

/* One block's work: block b of this GEMM is (split, tile_m, tile_n). */
template <int FORM>
__device__ void kg_tile(const kg_args &p, int64_t b, float (*red)[KG_TM][KG_TN], int *s_last) {
  const int64_t tiles = p.tiles_m * p.tiles_n;
  const int split = (int)(b / tiles);
  const int64_t tile = b % tiles;
  const int m0 = (int)(tile / p.tiles_n) * KG_TM, n0 = (int)(tile % p.tiles_n) * KG_TN;
  const int k0 = split * p.k_per_split;
  const int k1 = min(p.k, k0 + p.k_per_split);
  float acc[KG_TM];
#pragma unroll
  for (int i = 0; i < KG_TM; i++) acc[i] = 0.0f;
  kg_accumulate<FORM>(p, m0, n0, k0, k1, acc);
  const int t = threadIdx.x, lane = t % KG_TN, warp = t / KG_TN;
#pragma unroll
  for (int i = 0; i < KG_TM; i++) red[warp][i][lane] = acc[i];
  __syncthreads();
  const int om = t / KG_TN, on = t % KG_TN;
  float v = 0.0f;
#pragma unroll
  for (int w = 0; w < KG_WARPS; w++) v += red[w][om][on];
  if (p.splits > 1) {
    p.ws[((int64_t)split * tiles + tile) * KG_THREADS + t] = v;
    __threadfence(); /* the partial is visible device-wide before the count says so */
    __syncthreads();
    if (t == 0) *s_last = atomicAdd(&p.count[tile], 1u) == (unsigned)(p.splits - 1);
    __syncthreads();
    if (!*s_last) return;
    __threadfence();
    v = 0.0f;
    for (int s = 0; s < p.splits; s++) v += __ldcg(&p.ws[((int64_t)s * tiles + tile) * KG_THREADS + t]);
    if (t == 0) p.count[tile] = 0; /* ready for the next launch (stream order) */
  }
  kg_store<FORM>(p, m0 + om, n0 + on, v);
}

__global__ void __launch_bounds__(KG_THREADS) kg_forward_kernel(kg_args p) {
  __shared__ float red[KG_WARPS][KG_TM][KG_TN];
  __shared__ int s_last;
  kg_tile<KG_NN>(p, blockIdx.x, red, &s_last);
}

/* dz in place: dout = 0 where the mask is off (grid-stride over every block). */
__global__ void __launch_bounds__(KG_THREADS) kg_backward_kernel(kg_args dw, kg_args din,
                                                                 float *dout, const float *out,
                                                                 int64_t dz_elems) {
  __shared__ float red[KG_WARPS][KG_TM][KG_TN];
  __shared__ int s_last;
  if (out) {
    const int64_t stride = (int64_t)gridDim.x * KG_THREADS;
    for (int64_t i = (int64_t)blockIdx.x * KG_THREADS + threadIdx.x; i < dz_elems; i += stride) {
      if (!(out[i] > 0.0f)) dout[i] = 0.0f;
    }
  }
  if ((int64_t)blockIdx.x < dw.blocks) kg_tile<KG_TN_FORM>(dw, blockIdx.x, red, &s_last);
  else kg_tile<KG_NT>(din, (int64_t)blockIdx.x - dw.blocks, red, &s_last);
}

/* Tiles and the K split of one GEMM; takes its workspace and counters from
 * *ws_used / *count_used onward. Enough blocks for ~2 per SM, each warp
 * still walking at least KG_MIN_K_PER_WARP of K. */
static void kg_plan(kg_args *p, const kc_gemm_ws *g, int64_t *ws_used, int64_t *count_used) {
  p->tiles_m = (p->m + KG_TM - 1) / KG_TM;
  p->tiles_n = (p->n + KG_TN - 1) / KG_TN;
  const int64_t tiles = p->tiles_m * p->tiles_n;
  int64_t s = (2 * (int64_t)g->sm_count + tiles - 1) / tiles;
  int64_t cap = p->k / (KG_WARPS * KG_MIN_K_PER_WARP);
  if (cap < 1) cap = 1;
  if (s > cap) s = cap;
  if (s > KG_MAX_SPLITS) s = KG_MAX_SPLITS;
  if (s < 1) s = 1;
  if (s > 1 && (*count_used + tiles > g->count_n ||
                *ws_used + s * tiles * KG_THREADS > g->ws_floats)) {
    s = 1;
  }
  p->k_per_split = (int)((p->k + s - 1) / s);
  if (p->k_per_split < 1) p->k_per_split = 1;
  s = (p->k + p->k_per_split - 1) / p->k_per_split; /* no empty split */
  if (s < 1) s = 1;
  p->splits = (int)s;
  p->blocks = s * tiles;
  if (s > 1) {
    p->ws = g->ws + *ws_used;
    p->count = g->count + *count_used;
    *ws_used += s * tiles * KG_THREADS;
    *count_used += tiles;
  }
}

extern "C" cudaError_t kc_launch_gemm_forward(cudaStream_t s, const kc_gemm_ws *g, float *out,
                                              const float *in, const float *w, const float *b,
                                              int64_t n, int64_t in_dim, int64_t out_dim,
                                              int relu) {
  if (n <= 0 || in_dim <= 0 || out_dim <= 0) return cudaErrorInvalidValue;
  kg_args p = {};
  p.a = in, p.b = w, p.c = out, p.bias = b;
  p.lda = in_dim, p.ldb = out_dim, p.ldc = out_dim;
  p.m = (int)n, p.n = (int)out_dim, p.k = (int)in_dim;
  p.relu = relu;
  int64_t ws_used = 0, count_used = 0;
  kg_plan(&p, g, &ws_used, &count_used);
  if (p.blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  kg_forward_kernel<<<(unsigned)p.blocks, KG_THREADS, 0, s>>>(p);
  return cudaGetLastError();
}

/* out is the forward output for the ReLU mask, NULL without activation;
 * din may be NULL (the first layer). in_dim + 1 must fit an int. */
extern "C" cudaError_t kc_launch_gemm_backward(cudaStream_t s, const kc_gemm_ws *g, float *din,
                                               float *dw, float *db, float *dout,
                                               const float *in, const float *w, const float *out,
                                               int64_t n, int64_t in_dim, int64_t out_dim) {
  if (n <= 0 || in_dim <= 0 || out_dim <= 0 || in_dim >= INT32_MAX || n * out_dim > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  int64_t ws_used = 0, count_used = 0;
  kg_args pw = {};
  pw.a = in, pw.b = dout, pw.bmask = out, pw.c = dw, pw.c_ones = db;
  pw.lda = in_dim, pw.ldb = out_dim, pw.ldc = out_dim;
  pw.m = (int)in_dim + 1, pw.n = (int)out_dim, pw.k = (int)n;
  pw.accumulate = 1;
  kg_plan(&pw, g, &ws_used, &count_used);
  kg_args pd = {};
  if (din) {
    pd.a = dout, pd.amask = out, pd.b = w, pd.c = din;
    pd.lda = out_dim, pd.ldb = out_dim, pd.ldc = in_dim;
    pd.m = (int)n, pd.n = (int)in_dim, pd.k = (int)out_dim;
    kg_plan(&pd, g, &ws_used, &count_used);
  }
  const int64_t blocks = pw.blocks + pd.blocks;
  if (blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  kg_backward_kernel<<<(unsigned)blocks, KG_THREADS, 0, s>>>(pw, pd, dout, out, n * out_dim);
  return cudaGetLastError();
}
