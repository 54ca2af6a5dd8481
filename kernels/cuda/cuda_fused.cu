/* The whole training step of the 3-layer ReLU MLP in ONE cooperative launch.
 * At batch 50 the step is ~56 MFLOP: the op-by-op graph (23 nodes) spends
 * its time in node boundaries, not arithmetic (benchmarks/gpu/README.md).
 * Here one resident block per SM walks seven phases separated by grid-wide
 * barriers (cooperative groups), each phase a set of independent tasks:
 *   1  x = gather(u8) / 255, y; layer-1 GEMM partials over K splits
 *   2  h1 = relu(sum of the partials + b1), one element per thread
 *   3  layer-2 GEMM partials over a few K splits
 *   4  a warp per row: h2 = relu(...), logits, softmax cross-entropy, dlogits
 *   5  dW3 and db3 (one GEMM: a row of ones gives db), dz2 = (dlogits W3^T)
 *      masked by h2 > 0; the stats
 *   6  dW2, db2, dz1 = (dz2 W2^T) masked by h1 > 0; the update of layer 3
 *   7  dW1 and db1 with their update fused; the update of layer 2
 * A launch may run several steps, a grid barrier between two instead of a
 * launch's gap. Every GEMM is a tile task: its operands are staged in shared
 * memory (one round of parallel loads), then 8 warps x 32 lanes multiply.
 * Sums run in a fixed order: no float atomics, the same bits every run.
 * Elementwise math (gather scale, xent, the update rule) is the same as
 * cuda_kernels.cu's, which matches kernels/cpu.c. No __restrict__ or __ldg:
 * buffers written in one phase are read in the next, through L2. */
#include <cooperative_groups.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/cuda_opt.cuh"

namespace cg = cooperative_groups;

#define KF_THREADS 256
#define KF_WARPS 8
#define KF_COLS 32                       /* output columns of a tile: one per lane */
#define KF_TILE_ROWS KF_FUSED_TILE_ROWS
#define KF_BLD (KF_COLS + 1)            /* B slab row stride: k-major staging, no bank conflicts */
#define KF_B_FLOATS (KF_FUSED_MAX_ROWS * KF_BLD) /* B slab: K chunk (<= 128) x 32 */
#define KF_ROW_SLOTS (KF_FUSED_MAX_H2 / 32) /* h2 elements per lane in phase 4 */

/* The block's operand slabs. At file scope, not passed as pointers: a
 * pointer parameter is generic, and sm_90 then rebuilds the shared window
 * (S2R SR_CgaCtaId) before each access, which the first runs paid per row. */
static __shared__ __align__(16) float kf_As[KF_FUSED_A_FLOATS];
static __shared__ __align__(16) float kf_Bs[KF_B_FLOATS];
/* The batch's rows, perm[cursor + r]: fetched (cp.async) while the step
 * before runs, so that phase 1 starts with them. */
static __shared__ int32_t kf_batch[KF_FUSED_MAX_ROWS];

/* Latency, not arithmetic, bounds every phase: a thread that loads, waits
 * and stores in a loop pays one memory round trip (0.3-0.8 us) per element.
 * So loads are issued all at once into registers (unrolled to a fixed
 * bound, guarded), and only then stored or used: one round trip per stage. */

/* Element (r, c) of a row-major view: p[r * rs + c * cs]. */
struct kf_mat {
  const float *p;
  int64_t rs, cs;
  __device__ float at(int64_t r, int64_t c) const { return p[r * rs + c * cs]; }
};

/* Walks a slab of slow x fast elements in steps of KF_THREADS without a
 * division per step (a division costs dozens of instructions). */
struct kf_walk {
  int fast, slow, df, ds, f;
  __device__ kf_walk(int e, int f_) : f(f_) {
    slow = e / f;
    fast = e - slow * f;
    ds = KF_THREADS / f;
    df = KF_THREADS - ds * f;
  }
  __device__ void next() {
    fast += df;
    slow += ds;
    if (fast >= f) fast -= f, slow++;
  }
};

static __device__ unsigned long long kf_now(void) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/* Block 0's first tile of a phase, for benchmarks: start, staged, multiplied, stored. */
static __device__ void kf_dbg(unsigned long long *dbg, int i) {
  if (dbg && threadIdx.x == 0) dbg[i] = kf_now();
}

/* One float from global to shared memory without a register: the copies
 * of a slab are all in flight at once from a compact loop. valid = false
 * writes a zero (src-size 0) and reads nothing. */
static __device__ __forceinline__ void kf_cp4(void *dst, const void *src, bool valid) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}

static __device__ __forceinline__ void kf_cp_wait(void) {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

/* A operands: stage(r0, k0, ir, ik, ikn) fills kf_As[r * ik + k] for the
 * slab's ir rows and ik (padded) k, zeros past ikn. */
struct kf_a_mat { /* a float view, rows r, inner k; row ones_row (if any) is all ones */
  kf_mat m;
  int64_t ones_row;
  __device__ void stage(int64_t r0, int64_t k0, int ir, int ik, int ikn) const {
    const bool kf = m.cs == 1; /* walk along the unit stride: coalesced */
    kf_walk w(threadIdx.x, kf ? ik : ir);
    for (int e = threadIdx.x; e < ir * ik; e += KF_THREADS, w.next()) {
      const int r = kf ? w.slow : w.fast, k = kf ? w.fast : w.slow;
      const bool ok = k < ikn;
      if (r0 + r == ones_row) kf_As[r * ik + k] = ok ? 1.0f : 0.0f;
      else kf_cp4(&kf_As[r * ik + k], ok ? m.p + (r0 + r) * m.rs + (k0 + k) * m.cs : m.p, ok);
    }
  }
  __device__ void staged(int64_t, int64_t, int, int, int) const {}
  __device__ void group(int64_t) {}
};

/* x(r, k) = images[row_r][k] / 255, row_r = perm[cursor + r] = kf_batch[r]
 * (the gather of cuda_kernels.cu, same arithmetic). Four pixels per load
 * where rows and chunks are 4-byte aligned (vec). */
#define KF_GATHER_PER (KF_FUSED_TILE_ROWS * KF_FUSED_MAX_KC / 4 / KF_THREADS)
struct kf_a_gather {
  const uint8_t *images;
  bool vec;
  float *x_out; /* x (n, ld): the first column group's tiles write their slabs there */
  int64_t ld;
  float *x;     /* this tile's x_out, or NULL */
  __device__ void group(int64_t c0) { x = c0 == 0 ? x_out : NULL; }
  __device__ void staged(int64_t r0, int64_t k0, int ir, int ik, int ikn) const {
    if (!x) return;
    kf_walk w(threadIdx.x, ik);
    for (int e = threadIdx.x; e < ir * ik; e += KF_THREADS, w.next()) {
      if (w.fast < ikn) x[(r0 + w.slow) * ld + k0 + w.fast] = kf_As[e];
    }
  }
  __device__ uint32_t quad(int64_t r, int64_t k, int ikn, int k_in) const {
    const uint8_t *p = images + (int64_t)kf_batch[r] * ld + k;
    if (vec) return *(const uint32_t *)p;
    uint32_t v = 0;
    for (int b = 0; b < 4 && k_in + b < ikn; b++) v |= (uint32_t)p[b] << (8 * b);
    return v;
  }
  __device__ void stage(int64_t r0, int64_t k0, int ir, int ik, int ikn) const {
    const int q = ik / 4;
    uint32_t v[KF_GATHER_PER];
#pragma unroll
    for (int i = 0; i < KF_GATHER_PER; i++) {
      const int e = threadIdx.x + i * KF_THREADS, r = e / q, k = (e - r * q) * 4;
      v[i] = e < ir * q && k < ikn ? quad(r0 + r, k0 + k, ikn, k) : 0u;
    }
    const float s = 1.0f / 255.0f;
#pragma unroll
    for (int i = 0; i < KF_GATHER_PER; i++) {
      const int e = threadIdx.x + i * KF_THREADS, r = e / q, k = (e - r * q) * 4;
      if (e < ir * q) {
        *(float4 *)&kf_As[r * ik + k] =
            make_float4((float)(v[i] & 0xffu) * s, (float)((v[i] >> 8) & 0xffu) * s,
                        (float)((v[i] >> 16) & 0xffu) * s, (float)(v[i] >> 24) * s);
      }
    }
  }
};

/* The B slab (ik x 32, zeros outside) into kf_Bs. */
static __device__ void kf_stage_b(kf_mat b, int64_t c0, int64_t k0, int icw, int ik, int ikn) {
  const bool cf = b.cs == 1;
  kf_walk w(threadIdx.x, cf ? KF_COLS : ik);
  for (int e = threadIdx.x; e < ik * KF_COLS; e += KF_THREADS, w.next()) {
    const int c = cf ? w.fast : w.slow, k = cf ? w.slow : w.fast;
    const bool ok = k < ikn && c < icw;
    kf_cp4(&kf_Bs[k * KF_BLD + c], ok ? b.p + (k0 + k) * b.rs + (c0 + c) * b.cs : b.p, ok);
  }
}

/* Tile epilogues in two passes, load(r, c) for every output of the thread
 * first, then store(r, c, v, held): the loads overlap instead of each
 * waiting behind the previous output's stores (which may alias them). */
struct kf_epi_part { /* split-K partials: out[r][c] = v */
  float *out;
  int64_t ld;
  __device__ float2 load(int64_t, int64_t) const { return make_float2(0.0f, 0.0f); }
  __device__ void store(int64_t r, int64_t c, float v, float2) const { out[r * ld + c] = v; }
};

/* grads[i] = g, then (update) the optimizer's rule, kc_opt_elem: the one
 * the op-by-op kernels apply. */
struct kf_epi_grad {
  float *params, *grads, *state;
  int64_t off, ld;
  int64_t b_row, b_off; /* row b_row of the tile is the bias: b_off + c */
  kern_opt_scalars opt;
  int kind, k, update;
  __device__ int64_t at(int64_t r, int64_t c) const { return r == b_row ? b_off + c : off + r * ld + c; }
  __device__ float2 load(int64_t r, int64_t c) const {
    const int64_t i = at(r, c);
    if (!update) return make_float2(0.0f, 0.0f);
    return make_float2(params[i], 0.0f);
  }
  __device__ void store(int64_t r, int64_t c, float g, float2 h) const {
    const int64_t i = at(r, c);
    grads[i] = g;
    if (!update) return;
    params[i] = kc_opt_elem(kind, opt, h.x, g, state + k * i);
  }
};

/* din = dz W^T masked where the (post-ReLU) input of the layer is 0. */
struct kf_epi_din {
  float *din;
  const float *in;
  int64_t ld;
  __device__ float2 load(int64_t r, int64_t c) const { return make_float2(in[r * ld + c], 0.0f); }
  __device__ void store(int64_t r, int64_t c, float v, float2 h) const {
    din[r * ld + c] = h.x > 0.0f ? v : 0.0f;
  }
};

static __device__ kf_epi_grad kf_grad_epi(const kc_fused_args &a, int64_t off, int64_t ld,
                                          bool update, int64_t b_row = -1, int64_t b_off = 0) {
  return kf_epi_grad{a.params, a.grads, a.state, off, ld, b_row, b_off, a.opt, a.opt_kind,
                     a.opt_k, update};
}

/* C[r0 .. r0+R) x [c0 .. c0+32) = sum over k in [kb, ke) of A(r, k) B(k, c),
 * K staged in chunks of kc (<= 128, R x kc within the A slab); then the
 * epilogue for each in-range output. RW rows per warp (R <= 8 RW) is a
 * compile-time count, so the multiply has no per-row branch: a warp's rows
 * past R repeat row R-1 and are dropped. */
template <int RW, class A, class Epi>
__device__ void kf_tile_rw(const A &a, kf_mat b, int64_t r0, int64_t R, int64_t c0, int64_t ncols,
                           int64_t kb, int64_t ke, int64_t kc, const Epi &epi,
                           unsigned long long *dbg) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int ir = (int)R, ik = (int)((kc + 3) & ~(int64_t)3);
  const int icw = (int)(ncols - c0 < KF_COLS ? ncols - c0 : KF_COLS);
  float acc[RW];
  int roff[RW];
#pragma unroll
  for (int j = 0; j < RW; j++) {
    const int r = warp + KF_WARPS * j;
    acc[j] = 0.0f;
    roff[j] = (r < ir ? r : ir - 1) * ik;
  }
  kf_dbg(dbg, 0);
  for (int64_t k0 = kb; k0 < ke; k0 += kc) {
    const int ikn = (int)(ke - k0 < kc ? ke - k0 : kc);
    kf_stage_b(b, c0, k0, icw, ik, ikn); /* async: in flight while A is staged */
    a.stage(r0, k0, ir, ik, ikn);
    kf_cp_wait();
    __syncthreads();
    a.staged(r0, k0, ir, ik, ikn);
    kf_dbg(dbg, 1);
#pragma unroll 2
    for (int k = 0; k < ik; k += 4) {
      const float b0 = kf_Bs[k * KF_BLD + lane], b1 = kf_Bs[(k + 1) * KF_BLD + lane];
      const float b2 = kf_Bs[(k + 2) * KF_BLD + lane], b3 = kf_Bs[(k + 3) * KF_BLD + lane];
      float4 x[RW];
#pragma unroll
      for (int j = 0; j < RW; j++) x[j] = *(const float4 *)&kf_As[roff[j] + k];
#pragma unroll
      for (int j = 0; j < RW; j++) {
        acc[j] = fmaf(x[j].x, b0, acc[j]);
        acc[j] = fmaf(x[j].y, b1, acc[j]);
        acc[j] = fmaf(x[j].z, b2, acc[j]);
        acc[j] = fmaf(x[j].w, b3, acc[j]);
      }
    }
    __syncthreads();
    kf_dbg(dbg, 2);
  }
  float2 held[RW];
#pragma unroll
  for (int j = 0; j < RW; j++) {
    const int r = warp + KF_WARPS * j;
    if (r < ir && lane < icw) held[j] = epi.load(r0 + r, c0 + lane);
  }
#pragma unroll
  for (int j = 0; j < RW; j++) {
    const int r = warp + KF_WARPS * j;
    if (r < ir && lane < icw) epi.store(r0 + r, c0 + lane, acc[j], held[j]);
  }
  __syncwarp();
  kf_dbg(dbg, 3);
}

template <class A, class Epi>
__device__ void kf_tile(const A &a, kf_mat b, int64_t r0, int64_t R, int64_t c0, int64_t ncols,
                        int64_t kb, int64_t ke, int64_t kc, const Epi &epi,
                        unsigned long long *dbg = NULL) {
  /* One row count for every tile: each instantiation is more code to fetch
   * (the kernel runs each phase's code once per step, from L2). */
  kf_tile_rw<KF_TILE_ROWS / KF_WARPS>(a, b, r0, R, c0, ncols, kb, ke, kc, epi, dbg);
}

static __device__ int64_t kf_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* A forward layer's GEMM over ks K splits of kc: part[s] = A[:, split s] W[split s, :],
 * a tile task per (split, row tile, column group). dbg: block 0's first tile. */
template <class A>
__device__ void kf_forward_splits(const kc_fused_args &a, A &op, const float *w, int64_t din,
                                  int64_t dout, int64_t ks, int64_t kc, float *part,
                                  unsigned long long *dbg) {
  const int64_t n = a.n, groups = kf_cdiv(dout, KF_COLS), rt = kf_cdiv(n, KF_TILE_ROWS);
  const kf_mat W = {w, dout, 1};
  for (int64_t t = blockIdx.x; t < rt * groups * ks; t += gridDim.x) {
    const int64_t s = t / (groups * rt), c0 = (t % groups) * KF_COLS;
    const int64_t r0 = (t / groups % rt) * KF_TILE_ROWS, R = n - r0 < KF_TILE_ROWS ? n - r0 : KF_TILE_ROWS;
    const int64_t kb = s * kc, ke = kb + kc < din ? kb + kc : din;
    op.group(c0);
    kf_tile(op, W, r0, R, c0, dout, kb, ke, kc, kf_epi_part{part + s * n * dout, dout},
            t == 0 ? dbg : NULL);
  }
}

/* The rows of the batch at cursor c into kf_batch, in flight until the
 * next kf_cp_wait. */
static __device__ void kf_batch_fetch(const kc_fused_args &a, int64_t c) {
  for (int64_t r = threadIdx.x; r < a.n; r += KF_THREADS) kf_cp4(&kf_batch[r], a.perm + c + r, true);
}

/* Phase 1: layer-1 partials part1[s] over K split s; x (from the staged
 * slabs) and y for the backward pass. Then, when another step follows in
 * this launch, its rows are fetched (its cursor is c + cursor_delta). */
__device__ void kf_phase_forward1(const kc_fused_args &a, int64_t c, bool more) {
  const int64_t n = a.n, d0 = a.dims[0], d1 = a.dims[1];
  kf_cp_wait();
  __syncthreads();
  const bool vec = d0 % 4 == 0 && a.kc1 % 4 == 0 && ((uintptr_t)a.images & 3u) == 0;
  kf_a_gather A = {a.images, vec, a.x, d0, NULL};
  kf_forward_splits(a, A, a.params + a.w_off[0], d0, d1, a.ks1, a.kc1, a.part1,
                    a.phase_ns ? a.phase_ns + KERN_STEP_PHASES + 1 : NULL);
  /* the last block: the fewest tiles when they do not divide evenly */
  if (blockIdx.x == gridDim.x - 1) {
    for (int64_t i = threadIdx.x; i < n; i += KF_THREADS) a.y[i] = a.image_labels[kf_batch[i]];
  }
  if (!more) return;
  __syncthreads(); /* every read of this step's rows is done */
  kf_batch_fetch(a, c + a.cursor_delta);
}

/* Phase 2: h1 = relu(sum of the partials in split order + b1), every
 * thread of the grid one element, its loads all in flight. */
__device__ void kf_phase_h1(const kc_fused_args &a, int64_t c) {
  const int64_t n = a.n, d1 = a.dims[1], stride = n * d1;
  const int64_t tid = (int64_t)blockIdx.x * KF_THREADS + threadIdx.x, nt = (int64_t)gridDim.x * KF_THREADS;
  const float *b1 = a.params + a.b_off[0];
  if (tid == 0) *a.cursor = c + a.cursor_delta; /* the state a next launch starts from */
  for (int64_t i = tid; i < stride; i += nt) {
    const float *p = a.part1 + i;
    float v[KF_FUSED_MAX_SPLITS]; /* every split's load in flight, then the sum in order */
#pragma unroll
    for (int sp = 0; sp < KF_FUSED_MAX_SPLITS; sp++) v[sp] = sp < a.ks1 ? p[sp * stride] : 0.0f;
    float s = 0.0f;
#pragma unroll
    for (int sp = 0; sp < KF_FUSED_MAX_SPLITS; sp++) {
      if (sp < a.ks1) s += v[sp];
    }
    const float h = s + b1[i % d1];
    a.h1[i] = h > 0.0f ? h : 0.0f;
  }
}

/* Phase 3: layer-2 partials from h1. */
__device__ void kf_phase_forward2(const kc_fused_args &a) {
  kf_a_mat A = {{a.h1, a.dims[1], 1}, -1};
  kf_forward_splits(a, A, a.params + a.w_off[1], a.dims[1], a.dims[2], a.ks2, a.kc2, a.part2,
                    a.phase_ns ? a.phase_ns + KERN_STEP_PHASES + 5 : NULL);
}

/* Phase 4: one warp per row: h2 (lane j holds units j, j+32, ...), logits,
 * then the softmax cross-entropy of kc_xent_kernel (same arithmetic) with
 * dlogits and the row's loss. Class loops are unrolled to
 * KF_FUSED_MAX_CLASSES with a guard, so z stays in registers. */
__device__ void kf_phase_logits(const kc_fused_args &a) {
  const int64_t n = a.n, d2 = a.dims[2], C = a.dims[3];
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t)gridDim.x * KF_WARPS;
  const float *W3 = a.params + a.w_off[2], *b2 = a.params + a.b_off[1], *b3 = a.params + a.b_off[2];
  for (int64_t i = (int64_t)blockIdx.x * KF_WARPS + (threadIdx.x >> 5); i < n; i += warps) {
    /* Loaded before any store: the compiler cannot move them past stores
     * that might alias, which would cost a second round trip. */
    const int32_t y = a.y[i];
    const float b3c = lane < C ? b3[lane] : 0.0f;
    float h[KF_ROW_SLOTS];
#pragma unroll
    for (int j = 0; j < KF_ROW_SLOTS; j++) h[j] = 0.0f;
    float v[KF_FUSED_MAX_SPLITS2][KF_ROW_SLOTS]; /* all loads in flight, then sums in order */
#pragma unroll
    for (int sp = 0; sp < KF_FUSED_MAX_SPLITS2; sp++) {
      const float *p = a.part2 + sp * n * d2 + i * d2;
#pragma unroll
      for (int j = 0; j < KF_ROW_SLOTS; j++) {
        v[sp][j] = sp < a.ks2 && lane + 32 * j < d2 ? p[lane + 32 * j] : 0.0f;
      }
    }
#pragma unroll
    for (int sp = 0; sp < KF_FUSED_MAX_SPLITS2; sp++) {
#pragma unroll
      for (int j = 0; j < KF_ROW_SLOTS; j++) {
        if (sp < a.ks2) h[j] += v[sp][j];
      }
    }
    float z[KF_FUSED_MAX_CLASSES];
    const float *w[KF_ROW_SLOTS]; /* row k of W3 per slot: classes are immediate offsets */
#pragma unroll
    for (int j = 0; j < KF_ROW_SLOTS; j++) {
      const int64_t k = lane + 32 * j;
      const float v = k < d2 ? h[j] + b2[k] : 0.0f;
      h[j] = v > 0.0f ? v : 0.0f;
      w[j] = W3 + (k < d2 ? k : 0) * C;
    }
#pragma unroll
    for (int c = 0; c < KF_FUSED_MAX_CLASSES; c++) {
      z[c] = 0.0f;
      if (c < C) {
#pragma unroll
        for (int j = 0; j < KF_ROW_SLOTS; j++) z[c] = fmaf(h[j], w[j][c], z[c]); /* h = 0 past d2 */
      }
    }
#pragma unroll
    for (int j = 0; j < KF_ROW_SLOTS; j++) {
      if (lane + 32 * j < d2) a.h2[i * d2 + lane + 32 * j] = h[j];
    }
    /* Lane c < C takes class c from here: max, argmax (first of equals, as
     * kc_xent_kernel), the exp sum and the label's logit are warp
     * reductions, so each lane evaluates one exp, not C. */
    float zc = -INFINITY;
#pragma unroll
    for (int c = 0; c < KF_FUSED_MAX_CLASSES; c++) {
      if (c < C) {
        for (int off = 16; off > 0; off /= 2) z[c] += __shfl_xor_sync(0xffffffffu, z[c], off);
        if (c == lane) zc = z[c] + b3c;
      }
    }
    float zmax = zc;
    int arg = lane < C ? lane : 0x7fffffff;
    for (int off = 16; off > 0; off /= 2) {
      const float om = __shfl_xor_sync(0xffffffffu, zmax, off);
      const int oa = __shfl_xor_sync(0xffffffffu, arg, off);
      if (om > zmax || (om == zmax && oa < arg)) zmax = om, arg = oa;
    }
    const float ez = lane < C ? expf(zc - zmax) : 0.0f;
    float sum = ez;
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float zy = __shfl_sync(0xffffffffu, zc, y >= 0 && y < C ? y : 0);
    const bool ok = y >= 0 && y < C;
    if (lane < C) {
      a.logits[i * C + lane] = zc;
      const float p = ez / sum;
      a.dlogits[i * C + lane] = ok ? (p - (lane == y ? 1.0f : 0.0f)) * a.grad_scale : 0.0f;
    }
    if (lane == 0) {
      a.row_loss[i] = ok ? (double)(logf(sum) + zmax - zy) : nan("");
      a.row_correct[i] = ok && arg == y ? 1.0 : 0.0;
    }
  }
}

/* Rows per tile: enough tiles (with groups column groups) to give every
 * block about one, a multiple of 8 (one row per warp step), within the A
 * slab for a K chunk of kc. */
static __device__ int64_t kf_rows(int64_t rows, int64_t groups, int64_t kc, int64_t blocks) {
  const int64_t per = blocks / groups > 1 ? blocks / groups : 1;
  int64_t r = (kf_cdiv(rows, per) + KF_WARPS - 1) / KF_WARPS * KF_WARPS;
  int64_t cap = KF_FUSED_A_FLOATS / ((kc + 3) & ~(int64_t)3);
  if (cap > KF_TILE_ROWS) cap = KF_TILE_ROWS;
  return r < cap ? r : cap;
}

/* The backward tasks of one layer: dW = in^T dz (rows of W x column groups),
 * din = (dz W^T) masked by in > 0 (rows of the batch x column groups), db. */
struct kf_layer {
  const float *in, *dz; /* (n, din), (n, dout) */
  const float *w;       /* (din, dout) */
  float *din;           /* NULL for layer 1 */
  int64_t dim_in, dim_out, w_off, b_off;
  bool update;          /* fuse the update: nothing reads this W in the phase */
};

/* Not inlined: its three kinds of task are one copy of code for all three
 * layers (the kernel's code is fetched from L2 every step). */
__device__ __noinline__ void kf_backward_layer(const kc_fused_args &a, const kf_layer &L,
                                               unsigned long long *dbg) {
  const int64_t n = a.n, di = L.dim_in, dout = L.dim_out;
  /* dW tiles and din tiles share the grid half and half, so that every
   * block has at most one task (a second task doubles the phase). */
  const int64_t share = L.din ? gridDim.x / 2 : gridDim.x;
  /* dW and db in one GEMM: in^T gets a row of ones (row di), whose
   * product with dz is db, the column sums. */
  const int64_t gw = kf_cdiv(dout, KF_COLS), rw = kf_rows(di + 1, gw, n, share);
  const int64_t tw = kf_cdiv(di + 1, rw) * gw; /* dW tiles */
  const int64_t kd = dout < KF_FUSED_MAX_ROWS ? dout : KF_FUSED_MAX_ROWS;
  const int64_t gd = kf_cdiv(di, KF_COLS), rd = kf_rows(n, gd, kd, share);
  const int64_t td = L.din ? kf_cdiv(n, rd) * gd : 0; /* din tiles */
  const int64_t total = tw + td;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    if (t < tw) {
      const kf_a_mat A = {{L.in, 1, di}, di}; /* in^T: (input unit, batch row) */
      const kf_mat B = {L.dz, dout, 1};
      const int64_t r0 = (t / gw) * rw, R = di + 1 - r0 < rw ? di + 1 - r0 : rw;
      kf_tile(A, B, r0, R, (t % gw) * KF_COLS, dout, 0, n, n,
              kf_grad_epi(a, L.w_off, dout, L.update, di, L.b_off), t == 0 ? dbg : NULL);
    } else if (t < tw + td) {
      const int64_t u = t - tw;
      const kf_a_mat A = {{L.dz, dout, 1}, -1};
      const kf_mat B = {L.w, 1, dout}; /* W^T: (output unit, input unit) */
      const int64_t r0 = (u / gd) * rd, R = n - r0 < rd ? n - r0 : rd;
      kf_tile(A, B, r0, R, (u % gd) * KF_COLS, di, 0, dout, kd,
              kf_epi_din{L.din, L.in, di}); /* in is post-ReLU: its zeros mask */
    }
  }
}

/* The update of a layer whose gradient an earlier phase finished. Threads
 * count from the last block down: tiles go out from block 0 up, so a small
 * update (layer 3's in phase 6) lands on blocks with no tile, not in front
 * of the first blocks' tiles. */
__device__ void kf_update_range(const kc_fused_args &a, int64_t off, int64_t elems) {
  const int64_t tid = (int64_t)(gridDim.x - 1 - blockIdx.x) * KF_THREADS + threadIdx.x;
  const int64_t nt = (int64_t)gridDim.x * KF_THREADS;
  const kf_epi_grad e = kf_grad_epi(a, off, 1, true);
  for (int64_t i = tid; i < elems; i += nt) {
    const float g = a.grads[off + i];
    const float2 h = e.load(0, i);
    e.store(0, i, g, h);
  }
}

/* The last block (the least loaded in phase 5) adds the batch's row losses
 * in row order (the CPU backend's order; kc_xent_kernel sums a tree): its
 * first warp loads them all at once, lane 0 adds. */
__device__ void kf_stats(const kc_fused_args &a, double *scratch) {
  if (blockIdx.x != gridDim.x - 1 || threadIdx.x >= 32 || !a.stats) return;
  const int64_t n = a.n;
  kern_stats *s = a.stats;
  /* the running sums load with the rows: after a store they would wait on it */
  const double loss0 = s->loss_sum, correct0 = s->correct, samples0 = s->samples;
  double l[KF_FUSED_MAX_ROWS / 32], c[KF_FUSED_MAX_ROWS / 32];
#pragma unroll
  for (int j = 0; j < KF_FUSED_MAX_ROWS / 32; j++) {
    const int64_t i = threadIdx.x + 32 * j;
    l[j] = i < n ? a.row_loss[i] : 0.0;
    c[j] = i < n ? a.row_correct[i] : 0.0;
  }
#pragma unroll
  for (int j = 0; j < KF_FUSED_MAX_ROWS / 32; j++) {
    scratch[threadIdx.x + 32 * j] = l[j];
    scratch[KF_FUSED_MAX_ROWS + threadIdx.x + 32 * j] = c[j];
  }
  __syncwarp();
  if (threadIdx.x != 0) return;
  double loss = 0.0, correct = 0.0;
  for (int64_t i = 0; i < n; i++) {
    loss += scratch[i];
    correct += scratch[KF_FUSED_MAX_ROWS + i];
  }
  s->loss_sum = loss0 + loss;
  s->correct = correct0 + correct;
  s->samples = samples0 + (double)n;
  s->last_loss_sum = loss;
  s->last_correct = correct;
  s->last_samples = (double)n;
}

/* Benchmarks' phase timestamps: block 0 leaves each barrier after every
 * block reached it, so its clock marks the phase boundaries; the end is the
 * last block to finish. */

static __device__ void kf_mark(const kc_fused_args &a, int phase) {
  if (!a.phase_ns || threadIdx.x != 0) return;
  if (phase == KERN_STEP_PHASES) {
    atomicMax(&a.phase_ns[KERN_STEP_PHASES], kf_now());
  } else if (blockIdx.x == 0) {
    a.phase_ns[phase] = kf_now();
    if (phase == 0) a.phase_ns[KERN_STEP_PHASES] = 0;
  }
}

/* One step at cursor c, the seven phases; more: another step follows. */
static __device__ __forceinline__ void kf_step(const kc_fused_args &a, cg::grid_group &grid,
                                               int64_t c, bool more, double *stats) {
  const int64_t *d = a.dims;
  kf_mark(a, 0);
  kf_phase_forward1(a, c, more);
  grid.sync();
  kf_mark(a, 1);
  kf_phase_h1(a, c);
  grid.sync();
  kf_mark(a, 2);
  kf_phase_forward2(a);
  grid.sync();
  kf_mark(a, 3);
  kf_phase_logits(a);
  grid.sync();
  kf_mark(a, 4);
  kf_stats(a, stats);
  const kf_layer L3 = {a.h2, a.dlogits, a.params + a.w_off[2], a.dz2, d[2], d[3], a.w_off[2], a.b_off[2], false};
  kf_backward_layer(a, L3, NULL);
  grid.sync();
  kf_mark(a, 5);
  kf_update_range(a, a.w_off[2], d[2] * d[3]);
  kf_update_range(a, a.b_off[2], d[3]);
  const kf_layer L2 = {a.h1, a.dz2, a.params + a.w_off[1], a.dz1, d[1], d[2], a.w_off[1], a.b_off[1], false};
  kf_backward_layer(a, L2, a.phase_ns ? a.phase_ns + KERN_STEP_PHASES + 9 : NULL);
  grid.sync();
  kf_mark(a, 6);
  kf_update_range(a, a.w_off[1], d[1] * d[2]);
  kf_update_range(a, a.b_off[1], d[2]);
  const kf_layer L1 = {a.x, a.dz1, NULL, NULL, d[0], d[1], a.w_off[0], a.b_off[0], true};
  kf_backward_layer(a, L1, a.phase_ns ? a.phase_ns + KERN_STEP_PHASES + 13 : NULL);
}

/* a.steps steps back to back: a barrier, not a launch, between two steps
 * (the next one reads the W1 this one wrote). Step s is at cursor
 * *a.cursor + s * cursor_delta, the cursor each step would have left. */
__global__ void __launch_bounds__(KF_THREADS, 1) kf_step_kernel(kc_fused_args a) {
  __shared__ double stats[2 * KF_FUSED_MAX_ROWS];
  cg::grid_group grid = cg::this_grid();
  int64_t c = *a.cursor;
  kf_batch_fetch(a, c);
  for (int64_t s = 0; s < a.steps; s++, c += a.cursor_delta) {
    if (s > 0) grid.sync();
    kf_step(a, grid, c, s + 1 < a.steps, stats);
  }
  __syncthreads();
  kf_mark(a, KERN_STEP_PHASES);
}

extern "C" cudaError_t kc_launch_fused_step(cudaStream_t s, const kc_fused_args *a, int grid) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cfg.gridDim = dim3((unsigned)grid);
  cfg.blockDim = dim3(KF_THREADS);
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kf_step_kernel, *a);
}

extern "C" cudaError_t kc_fused_blocks_per_sm(int *blocks) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kf_step_kernel, KF_THREADS, 0);
}
