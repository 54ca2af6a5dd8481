/* --compression over the ring, under mpirun -np 1..4 (`ring bf16|fp16`), or
 * over a TF_CONFIG cluster's TCP mesh (`tcp bf16|fp16 N`):
 * - exact: values k/4 with small k are codes of both formats, and so is
 *   every partial sum, so sum and average (the average rounded as the ring
 *   documents) must match integer sums bit for bit; counts 0 to 2^20+3, in
 *   place and out of place, blocking and not, nothing written past the end,
 *   the send buffer untouched;
 * - the rounding points: real-valued inputs against a model of ring.c's
 *   documented rounding (codec_ref.h's oracle, segment by segment), bit for
 *   bit, on every rank (every rank derives every rank's inputs);
 * - the same bits on every rank and on a repeat;
 * - fp16: one rank's term beyond the range makes that element inf or NaN on
 *   every rank, and only that one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "collective/coll.h"
#include "tests/check.h"
#include "tests/collective/codec_ref.h"
#include "tests/collective/tf_spawn.h"

#define GUARD 8
static const float guard_value = -12345.5f;

typedef struct {
  coll_comm *c;
  int rank, size;
  const ref_fmt *f;
  float scale;
  float *send, *recv;
} ctx;

/* k/4, k in [-64, 64]: partial sums of up to 4 ranks stay within 2^8 quarters. */
static float exact_value(int64_t i, int rank) {
  return (float)((i * 131 + rank * 17) % 129 - 64) / 4.0f;
}

static float real_value(int64_t i, int rank) {
  uint64_t s = (uint64_t)i * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(rank + 1) * 0xbf58476d1ce4e5b9ULL;
  s ^= s >> 29;
  s *= 0x94d049bb133111ebULL;
  s ^= s >> 32;
  return ((float)(s & 0xffffffu) / 16777216.0f - 0.5f) * 7.3f;
}

/* ring.c's documented rounding of element i: segment j starts at rank j,
 * each rank adds its term to the rounded partial sum, the owner averages in
 * fp32, and the result is rounded once more. */
static float model(const ctx *x, float (*v)(int64_t, int), int64_t i, int64_t n, int avg) {
  const int N = x->size;
  if (N == 1) return v(i, 0);
  int j = 0;
  while (j + 1 < N && n * (j + 1) / N <= i) j++;
  float p = v(i, j);
  for (int m = 1; m < N; m++) p = v(i, (j + m) % N) + ref_round(x->f, p, x->scale);
  if (avg) p = p / (float)N;
  return ref_round(x->f, p, x->scale);
}

static int compare(ctx *x, const char *what, float (*v)(int64_t, int), int64_t n, int avg) {
  for (int64_t i = 0; i < n; i++) {
    const float want = model(x, v, i, n, avg);
    if (memcmp(&x->recv[i], &want, sizeof want) != 0) {
      fprintf(stderr, "rank %d: %s %s: element %lld of %lld: got %.9g want %.9g\n", x->rank,
              x->f->name, what, (long long)i, (long long)n, (double)x->recv[i], (double)want);
      return 0;
    }
  }
  return 1;
}

/* The exact inputs: the model is then the integer sum itself. */
static int compare_exact(ctx *x, const char *what, int64_t n, int avg) {
  for (int64_t i = 0; i < n; i++) {
    int64_t q = 0; /* quarters */
    for (int r = 0; r < x->size; r++) q += (int64_t)(exact_value(i, r) * 4.0f);
    float want = (float)q / 4.0f;
    if (avg) want = ref_round(x->f, want / (float)x->size, x->scale);
    if (memcmp(&x->recv[i], &want, sizeof want) != 0) {
      fprintf(stderr, "rank %d: %s %s: element %lld of %lld: got %.9g want %.9g (integer sum)\n",
              x->rank, x->f->name, what, (long long)i, (long long)n, (double)x->recv[i],
              (double)want);
      return 0;
    }
  }
  return 1;
}

static int reduce(ctx *x, const float *src, int64_t n, int avg, int mode) {
  int rc;
  if (mode == 0) {
    rc = avg ? coll_allreduce_avg_f32(x->c, x->recv, n) : coll_allreduce_sum_f32(x->c, src, x->recv, n);
  } else {
    coll_request *req = NULL;
    rc = avg ? coll_iallreduce_avg_f32(x->c, x->recv, n, &req)
             : coll_iallreduce_sum_f32(x->c, src, x->recv, n, &req);
    if (rc == COLL_OK) rc = coll_wait(x->c, req);
  }
  if (rc != COLL_OK) fprintf(stderr, "rank %d: %s\n", x->rank, coll_comm_error(x->c));
  return rc == COLL_OK;
}

static void run_case(ctx *x, int64_t n, int in_place, int avg, int mode, int real) {
  char what[128];
  snprintf(what, sizeof what, "%s count %lld %s %s %s", real ? "real" : "exact", (long long)n,
           in_place ? "in place" : "out of place", avg ? "avg" : "sum",
           mode ? "iallreduce" : "allreduce");
  float (*v)(int64_t, int) = real ? real_value : exact_value;
  for (int64_t i = 0; i < n; i++) x->send[i] = v(i, x->rank);
  for (int64_t i = 0; i < n + GUARD; i++) x->recv[i] = guard_value;
  if (in_place) memcpy(x->recv, x->send, (size_t)n * sizeof(float));
  if (!reduce(x, in_place ? x->recv : x->send, n, avg, mode)) {
    check_failures++;
    return;
  }
  if (!(real ? compare(x, what, v, n, avg) : compare_exact(x, what, n, avg))) check_failures++;
  for (int64_t i = n; i < n + GUARD; i++) {
    if (x->recv[i] != guard_value) {
      fprintf(stderr, "rank %d: %s: wrote past the end\n", x->rank, what);
      check_failures++;
      break;
    }
  }
  for (int64_t i = 0; !in_place && i < n; i++) {
    if (x->send[i] != v(i, x->rank)) {
      fprintf(stderr, "rank %d: %s: send buffer changed at %lld\n", x->rank, what, (long long)i);
      check_failures++;
      break;
    }
  }
}

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

/* Rank 0's hash over the control plane: every rank must hold the same. */
static void same_everywhere(ctx *x, uint64_t h, const char *what) {
  uint64_t h0 = h;
  CHECK_EQ_INT(coll_broadcast_bytes(x->c, &h0, sizeof h0, 0), COLL_OK);
  if (h0 != h) {
    fprintf(stderr, "rank %d: %s: %016llx differs from rank 0's %016llx\n", x->rank, what,
            (unsigned long long)h, (unsigned long long)h0);
    check_failures++;
  }
}

static void run_repeat(ctx *x) {
  const int64_t n = 100003;
  for (int64_t i = 0; i < n; i++) x->send[i] = real_value(i, x->rank);
  uint64_t h[2];
  for (int rep = 0; rep < 2; rep++) {
    CHECK(reduce(x, x->send, n, 0, 0));
    h[rep] = fnv1a(x->recv, (size_t)n * sizeof(float));
  }
  CHECK(h[0] == h[1]);
  same_everywhere(x, h[0], "real-valued result");
}

/* fp16: rank size-1's element 5 is past the range even once averaged (the
 * owner divides before it rounds): inf reaches every rank there. */
static void run_overflow(ctx *x) {
  const int64_t n = 1001;
  for (int64_t i = 0; i < n; i++) x->recv[i] = exact_value(i, x->rank);
  if (x->rank == x->size - 1) x->recv[5] = 1e6f / x->scale;
  CHECK(reduce(x, x->recv, n, 1, 0));
  int bad = 0;
  for (int64_t i = 0; i < n; i++) bad += isfinite(x->recv[i]) == (i == 5);
  if (bad) {
    fprintf(stderr, "rank %d: fp16 overflow: %d elements wrong (element 5: %g)\n", x->rank, bad,
            (double)x->recv[5]);
    check_failures++;
  }
  same_everywhere(x, fnv1a(x->recv, (size_t)n * sizeof(float)), "overflowed result");
}

static int join(coll_world *w, int tcp, int *argc, char ***argv, cluster_tf_config *tf) {
  char err[512];
  int rc = tcp ? cluster_tf_config_parse(getenv("TF_CONFIG"), tf, err, sizeof err) != 0 ||
                     cluster_world_join(w, tf, 60, err, sizeof err) != 0
               : coll_world_init(w, argc, argv, err, sizeof err) != 0;
  if (rc) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  coll_world w;
  char err[512];
  coll_config cfg = {.backend = COLL_BACKEND_RING, .timeout_s = 60};
  if (argc < 3 || coll_backend_parse(argv[1], &cfg.backend) != 0 ||
      coll_compression_parse(argv[2], &cfg.compression) != 0 ||
      cfg.compression == COLL_COMP_NONE) {
    fprintf(stderr, "usage: test_allreduce_comp ring|tcp bf16|fp16 [N tasks (tcp)] [chunk_bytes]\n");
    return 2;
  }
  const int tcp = cfg.backend == COLL_BACKEND_TCP;
  if (tcp) tf_spawn_cluster(argc > 3 ? atoi(argv[3]) : 2, 100);
  static cluster_tf_config tf;
  if (join(&w, tcp, &argc, &argv, &tf) != 0) return 1;
  const int chunk_arg = tcp ? 4 : 3;
  if (argc > chunk_arg) cfg.ring_chunk_bytes = atoll(argv[chunk_arg]);
  ctx x = {.rank = w.rank, .size = w.size};
  x.f = cfg.compression == COLL_COMP_BF16 ? &ref_bf16 : &ref_fp16;
  x.scale = cfg.compression == COLL_COMP_FP16 ? 8.0f : 1.0f; /* a scale that is not 1 */
  if (coll_comm_init(&x.c, &w, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (cfg.compression == COLL_COMP_FP16) coll_comm_set_fp16_scale(x.c, x.scale);
  const int64_t counts[] = {0, 1, 2, 3, 7, 1000, 266610, (1 << 20) + 3};
  const int64_t max_n = (1 << 20) + 3;
  x.send = malloc((size_t)(max_n + GUARD) * sizeof(float));
  x.recv = malloc((size_t)(max_n + GUARD) * sizeof(float));
  if (!x.send || !x.recv) abort();
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    for (int in_place = 0; in_place < 2; in_place++) {
      for (int avg = 0; avg <= in_place; avg++) {
        for (int mode = 0; mode < 2; mode++) run_case(&x, counts[i], in_place, avg, mode, 0);
      }
    }
  }
  const int64_t real_counts[] = {7, 1000, 266610};
  for (size_t i = 0; i < sizeof real_counts / sizeof real_counts[0]; i++) {
    run_case(&x, real_counts[i], 1, 1, 1, 1);
    run_case(&x, real_counts[i], 0, 0, 0, 1);
  }
  run_repeat(&x);
  if (cfg.compression == COLL_COMP_FP16 && w.size > 1) run_overflow(&x);
  double fails = check_failures;
  if (coll_allreduce_sum_f64(x.c, &fails, 1) != COLL_OK) fails = 1;
  if (w.rank == 0) {
    printf("%s %s, %d rank(s): %s\n", argv[1], argv[2], w.size,
           fails == 0 ? "as modelled, bit for bit" : "FAILED");
  }
  free(x.send);
  free(x.recv);
  coll_comm_free(x.c);
  coll_world_finalize(&w);
  if (tcp) cluster_tf_config_free(&tf);
  if (fails != 0) check_failures = check_failures ? check_failures : 1;
  CHECK_DONE();
}
