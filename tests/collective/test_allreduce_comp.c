/* --compression over the ring, under mpirun -np 1..4 (`ring bf16|fp16`), or
 * over a TF_CONFIG cluster's TCP mesh (`tcp bf16|fp16 N`); over hier, on one
 * node under mpirun (`hier bf16|fp16`: nothing crosses a node, so shm's fp32
 * bits, checked against an shm comm too) or over the TCP mesh spread on
 * loopback hosts (`hier-tcp bf16|fp16 N HOSTS`: the ring across nodes is
 * 16-bit):
 * - exact: values k/4 with small k are codes of both formats, and so is
 *   every partial sum, so sum and average (the average rounded as the ring
 *   documents) must match integer sums bit for bit; counts 0 to 2^20+3, in
 *   place and out of place, blocking and not, nothing written past the end,
 *   the send buffer untouched;
 * - the rounding points: real-valued inputs against a model of ring.c's
 *   documented rounding (codec_ref.h's oracle, segment by segment), bit for
 *   bit, on every rank (every rank derives every rank's inputs); for hier,
 *   of hier.c's: fp32 node sums in rank order, then the ring's rounding
 *   points on the node sums across nodes (per chunk and slice), the average
 *   divided in fp32 after the last rounding;
 * - the same bits on every rank and on a repeat;
 * - fp16: one rank's term beyond the range makes that element inf or NaN on
 *   every rank, and only that one; the ring (and tcp) take a scale of 2^24
 *   and refuse 2^25 (base/fp16_scale.h's one range);
 * - hier: in place in the comm's buffer (coll_comm_buffer, the zero-copy
 *   path, which it must give), the same exact and modelled bits. */
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

/* hier.c's chunk (HIER_CHUNK_ELEMS): slices are cut per chunk. */
#define HIER_CHUNK ((int64_t)512 * 1024)

typedef struct {
  coll_comm *c;
  int rank, size;
  int hier;        /* the hier back end: node sums, then the ring across nodes */
  int nodes;       /* hier: nodes, in order of their lowest rank */
  int *node_rank;  /* hier: (size) the ranks of node 0, then node 1, ... in rank order */
  int *node_start; /* hier: (nodes + 1) where each node's ranks start in node_rank */
  int slices;      /* hier: the fewest ranks on any node */
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

/* hier.c's documented rounding of element i: each node's fp32 sum in rank
 * order; in chunk i / HIER_CHUNK, slice m of the chunk goes round the ring
 * across nodes, its segment j starting at node j, with ring.c's rounding
 * points on the node sums (the ring sums, R once more at the end); an
 * average divides that by the ranks in fp32. One node: no ring, no rounding. */
static float hier_model(const ctx *x, float (*v)(int64_t, int), int64_t i, int64_t n, int avg) {
  const int64_t c0 = i / HIER_CHUNK * HIER_CHUNK, t = i - c0;
  const int64_t len = n - c0 < HIER_CHUNK ? n - c0 : HIER_CHUNK;
  const int S = x->slices, N = x->nodes;
  int m = 0;
  while (m + 1 < S && len * (m + 1) / S <= t) m++;
  const int64_t lo = len * m / S, L = len * (m + 1) / S - lo;
  float s[64] = {0};
  for (int k = 0; k < N; k++) {
    const int *r = x->node_rank + x->node_start[k];
    s[k] = v(i, r[0]);
    for (int q = 1; q < x->node_start[k + 1] - x->node_start[k]; q++) s[k] += v(i, r[q]);
  }
  float p = s[0];
  if (N > 1) {
    int j = 0;
    while (j + 1 < N && L * (j + 1) / N <= t - lo) j++;
    p = s[j];
    for (int k = 1; k < N; k++) p = s[(j + k) % N] + ref_round(x->f, p, x->scale);
    p = ref_round(x->f, p, x->scale);
  }
  return avg ? p / (float)x->size : p;
}

static int compare(ctx *x, const char *what, float (*v)(int64_t, int), int64_t n, int avg) {
  for (int64_t i = 0; i < n; i++) {
    const float want = x->hier ? hier_model(x, v, i, n, avg) : model(x, v, i, n, avg);
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
    /* the ring rounds the average; hier divides the (exact) rounded sum */
    if (avg && x->hier) want = want / (float)x->size;
    else if (avg) want = ref_round(x->f, want / (float)x->size, x->scale);
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

/* Every rank's node (coll_world.node_first) over the control plane, as
 * hier.c groups them: nodes in order of their lowest rank, ranks in order. */
static void hier_nodes(ctx *x, int node_first) {
  double *rows = calloc((size_t)x->size, sizeof *rows);
  x->node_rank = malloc((size_t)x->size * sizeof *x->node_rank);
  x->node_start = malloc((size_t)(x->size + 1) * sizeof *x->node_start);
  if (!rows || !x->node_rank || !x->node_start) abort();
  rows[x->rank] = node_first + 1.0;
  CHECK_EQ_INT(coll_allreduce_sum_f64(x->c, rows, x->size), COLL_OK);
  int at = 0;
  x->slices = x->size;
  for (int f = 0; f < x->size; f++) {
    const int start = at;
    for (int r = 0; r < x->size; r++) {
      if ((int)rows[r] - 1 == f) x->node_rank[at++] = r;
    }
    if (at == start) continue;
    x->node_start[x->nodes++] = start;
    if (at - start < x->slices) x->slices = at - start;
  }
  x->node_start[x->nodes] = at;
  CHECK_EQ_INT(at, x->size);
  free(rows);
}

/* On one node hier sends nothing across nodes: its bits are shm's in fp32
 * (no compression), here against an shm comm on the same inputs. */
static void hier_same_as_shm(ctx *x, const coll_world *w) {
  coll_config cfg = {.backend = COLL_BACKEND_SHM, .timeout_s = 60};
  coll_comm *shm = NULL;
  char err[512];
  if (coll_comm_init(&shm, w, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "rank %d: shm comm: %s\n", x->rank, err);
    check_failures++;
    return;
  }
  const int64_t n = 266610;
  float *ref = malloc((size_t)n * sizeof *ref);
  if (!ref) abort();
  for (int64_t i = 0; i < n; i++) x->send[i] = real_value(i, x->rank);
  CHECK_EQ_INT(coll_allreduce_sum_f32(shm, x->send, ref, n), COLL_OK);
  CHECK(reduce(x, x->send, n, 0, 0));
  if (memcmp(ref, x->recv, (size_t)n * sizeof *ref) != 0) {
    fprintf(stderr, "rank %d: hier %s on one node differs from shm's fp32 sum\n", x->rank,
            x->f->name);
    check_failures++;
  }
  memcpy(ref, x->send, (size_t)n * sizeof *ref);
  CHECK_EQ_INT(coll_allreduce_avg_f32(shm, ref, n), COLL_OK);
  memcpy(x->recv, x->send, (size_t)n * sizeof *ref);
  CHECK(reduce(x, x->recv, n, 1, 0));
  if (memcmp(ref, x->recv, (size_t)n * sizeof *ref) != 0) {
    fprintf(stderr, "rank %d: hier %s on one node: average differs from shm's\n", x->rank,
            x->f->name);
    check_failures++;
  }
  free(ref);
  coll_comm_free(shm);
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

/* hier's zero-copy path: the in-place cases again, recv the comm's buffer. */
static void run_registered(ctx *x, int64_t max_n, const int64_t *counts, size_t ncounts) {
  char err[512] = "";
  float *buf = NULL, *own = x->recv;
  CHECK_EQ_INT(coll_comm_buffer(x->c, max_n + GUARD, &buf, err, sizeof err), COLL_OK);
  if (!buf) {
    fprintf(stderr, "rank %d: hier gave no comm buffer: %s\n", x->rank, err);
    check_failures++;
    return;
  }
  x->recv = buf;
  for (size_t i = 0; i < ncounts; i++) {
    for (int v = 0; v < 4; v++) run_case(x, counts[i], 1, v & 1, v >> 1, 0);
  }
  const int64_t real_counts[] = {1000, 266610, (1 << 20) + 3};
  for (size_t i = 0; i < sizeof real_counts / sizeof real_counts[0]; i++) {
    run_case(x, real_counts[i], 1, 1, 1, 1);
    run_case(x, real_counts[i], 1, 0, 0, 1);
  }
  x->recv = own;
}

int main(int argc, char **argv) {
  coll_world w;
  char err[512];
  coll_config cfg = {.backend = COLL_BACKEND_RING, .timeout_s = 60};
  const int hier_tcp = argc > 1 && strcmp(argv[1], "hier-tcp") == 0;
  if (hier_tcp) cfg.backend = COLL_BACKEND_HIER;
  if (argc < 3 || (!hier_tcp && coll_backend_parse(argv[1], &cfg.backend) != 0) ||
      coll_compression_parse(argv[2], &cfg.compression) != 0 ||
      cfg.compression == COLL_COMP_NONE) {
    fprintf(stderr, "usage: test_allreduce_comp ring|tcp|hier|hier-tcp bf16|fp16 [N tasks (tcp, "
            "hier-tcp)] [chunk_bytes (ring, tcp) | HOSTS (hier-tcp)]\n");
    return 2;
  }
  const int tcp = cfg.backend == COLL_BACKEND_TCP || hier_tcp;
  if (hier_tcp) tf_spawn_cluster_hosts(argc > 3 ? atoi(argv[3]) : 2, argc > 4 ? atoi(argv[4]) : 2, 100);
  else if (tcp) tf_spawn_cluster(argc > 3 ? atoi(argv[3]) : 2, 100);
  static cluster_tf_config tf;
  if (join(&w, tcp, &argc, &argv, &tf) != 0) return 1;
  const int chunk_arg = tcp ? 4 : 3;
  if (argc > chunk_arg && !hier_tcp) cfg.ring_chunk_bytes = atoll(argv[chunk_arg]);
  ctx x = {.rank = w.rank, .size = w.size, .hier = cfg.backend == COLL_BACKEND_HIER};
  x.f = cfg.compression == COLL_COMP_BF16 ? &ref_bf16 : &ref_fp16;
  x.scale = cfg.compression == COLL_COMP_FP16 ? 8.0f : 1.0f; /* a scale that is not 1 */
  if (coll_comm_init(&x.c, &w, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (cfg.compression == COLL_COMP_FP16) coll_comm_set_fp16_scale(x.c, x.scale);
  if (x.hier) hier_nodes(&x, w.node_first);
  if (x.hier && x.nodes > 64) abort(); /* hier_model's node sums */
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
  /* hier: only the ring across nodes is 16-bit (one node: fp32, shm's bits) */
  const int crosses = x.hier ? x.nodes > 1 : w.size > 1;
  if (cfg.compression == COLL_COMP_FP16 && crosses) run_overflow(&x);
  if (x.hier && x.nodes == 1 && w.size > 1) hier_same_as_shm(&x, &w);
  if (x.hier && w.size > 1) run_registered(&x, max_n, counts, sizeof counts / sizeof counts[0]);
  double fails = check_failures;
  if (coll_allreduce_sum_f64(x.c, &fails, 1) != COLL_OK) fails = 1;
  if (w.rank == 0) {
    printf("%s %s, %d rank(s) on %d node(s): %s\n", argv[1], argv[2], w.size, x.hier ? x.nodes : 0,
           fails == 0 ? "as modelled, bit for bit" : "FAILED");
  }
  /* The ring holds fp16's scale to base/fp16_scale.h's one range: 2^24 is
   * taken, 2^25 refused on every rank alike (before any byte moves), which
   * leaves the comm failed: the last collective here. (hier: only the ranks
   * with a slice run the ring, so not there.) */
  if (cfg.compression == COLL_COMP_FP16 && crosses && !x.hier) {
    for (int k = 0; k < 8; k++) x.recv[k] = (float)(x.rank + 1);
    coll_comm_set_fp16_scale(x.c, 0x1p24f);
    CHECK_EQ_INT(coll_allreduce_sum_f32(x.c, x.recv, x.recv, 8), COLL_OK);
    coll_comm_set_fp16_scale(x.c, 0x1p25f);
    CHECK(coll_allreduce_sum_f32(x.c, x.recv, x.recv, 8) != COLL_OK &&
          strstr(coll_comm_error(x.c), "fp16 scale 3.35544e+07 is not a power of two in "
                 "2^-24..2^24") != NULL);
  }
  free(x.send);
  free(x.recv);
  free(x.node_rank);
  free(x.node_start);
  coll_comm_free(x.c);
  coll_world_finalize(&w);
  if (tcp) cluster_tf_config_free(&tf);
  if (fails != 0) check_failures = check_failures ? check_failures : 1;
  CHECK_DONE();
}
