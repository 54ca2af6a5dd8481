/* Exact allreduce test, run under mpirun -np 1..4 for one back end (argv[1]).
 * Rank r, element i holds a small integer-valued float, so every sum is exact
 * in any order and the check is bit-exact: sum, average (sum / n, rounded
 * once), in place and out of place, blocking and non-blocking, counts from 0
 * to 2^20+3. Out-of-place sends must be untouched and nothing written past
 * the end of recv. Random real-valued inputs must give bit-identical results
 * on every rank and on a repeat (the ring's fixed order).
 * `test_allreduce tcp N` runs the same checks on a TF_CONFIG cluster of N
 * forked tasks: the same ring over the TCP mesh instead of MPI, and no MPI
 * started at all. `test_allreduce hier-tcp N H` runs them with the hier back
 * end over such a cluster whose tasks are spread over H loopback hosts
 * (127.0.0.1..H): nodes by the host part of the address. Under mpirun, hier
 * on one node must give shm's bits. Spans of the comm's own buffer
 * (coll_comm_buffer: shm's and hier's zero-copy path, which they must give)
 * pass the same checks, give the copying path's bits (sum and average, on
 * every rank), and take writes to other spans while in flight; a node whose
 * ranks disagree on the path fails on every rank, naming a rank. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "collective/coll.h"
#include "tests/check.h"
#include "tests/collective/coll_test.h"
#include "tests/collective/tf_spawn.h"

#define GUARD 8
static const float guard_value = -12345.5f;

static float value(int64_t i, int rank) { return (float)((i * 131 + rank * 17) % 23 - 11); }

static int64_t exact_sum(int64_t i, int size) {
  int64_t s = 0;
  for (int r = 0; r < size; r++) s += (int64_t)value(i, r);
  return s;
}

/* First mismatch, bitwise; prints it. */
static int compare(const char *what, const float *got, int64_t n, int size, int avg, int rank) {
  for (int64_t i = 0; i < n; i++) {
    float want = (float)exact_sum(i, size);
    if (avg) want = want / (float)size;
    if (memcmp(&got[i], &want, sizeof want) != 0) {
      fprintf(stderr, "rank %d: %s: element %lld of %lld: got %.9g want %.9g\n", rank, what,
              (long long)i, (long long)n, got[i], want);
      return 0;
    }
  }
  return 1;
}

typedef struct {
  coll_comm *c;
  int rank, size;
  int tcp;              /* a TF_CONFIG cluster: no MPI */
  float *send, *recv;
} ctx;

static void fill(ctx *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x->send[i] = value(i, x->rank);
  for (int64_t i = 0; i < n + GUARD; i++) x->recv[i] = guard_value;
}

static void check_guards(ctx *x, int64_t n, const char *what) {
  for (int64_t i = n; i < n + GUARD; i++) {
    if (x->recv[i] != guard_value) {
      fprintf(stderr, "rank %d: %s: wrote past the end (element %lld)\n", x->rank, what,
              (long long)i);
      check_failures++;
      return;
    }
  }
}

/* mode: 0 blocking, 1 non-blocking. */
static void run_case(ctx *x, int64_t n, int in_place, int avg, int mode) {
  char what[128];
  snprintf(what, sizeof what, "count %lld %s %s %s", (long long)n,
           in_place ? "in place" : "out of place", avg ? "avg" : "sum",
           mode ? "iallreduce" : "allreduce");
  fill(x, n);
  float *src = x->send;
  if (in_place) {
    memcpy(x->recv, x->send, (size_t)n * sizeof(float));
    src = x->recv;
  }
  int rc;
  if (mode == 0) {
    rc = avg && in_place ? coll_allreduce_avg_f32(x->c, x->recv, n)
                         : coll_allreduce_sum_f32(x->c, src, x->recv, n);
  } else {
    coll_request *req = NULL;
    rc = avg && in_place ? coll_iallreduce_avg_f32(x->c, x->recv, n, &req)
                         : coll_iallreduce_sum_f32(x->c, src, x->recv, n, &req);
    if (rc == COLL_OK) rc = coll_wait(x->c, req);
  }
  if (rc != COLL_OK) {
    fprintf(stderr, "rank %d: %s: %s\n", x->rank, what, coll_comm_error(x->c));
    check_failures++;
    return;
  }
  if (!compare(what, x->recv, n, x->size, avg && in_place, x->rank)) check_failures++;
  check_guards(x, n, what);
  if (!in_place) {
    for (int64_t i = 0; i < n; i++) {
      if (x->send[i] != value(i, x->rank)) {
        fprintf(stderr, "rank %d: %s: send buffer changed at %lld\n", x->rank, what, (long long)i);
        check_failures++;
        break;
      }
    }
  }
}

/* Three requests in flight, waited in reverse like the training loop, with a
 * blocking call queued behind them. */
static void run_overlapped(ctx *x) {
  const int64_t n[3] = {235500, 30100, 1010};
  float *buf[3];
  coll_request *req[3] = {NULL, NULL, NULL};
  float extra[5];
  for (int k = 0; k < 3; k++) {
    buf[k] = malloc((size_t)n[k] * sizeof(float));
    if (!buf[k]) abort();
    for (int64_t i = 0; i < n[k]; i++) buf[k][i] = value(i + k, x->rank);
    CHECK_EQ_INT(coll_iallreduce_avg_f32(x->c, buf[k], n[k], &req[k]), COLL_OK);
  }
  for (int i = 0; i < 5; i++) extra[i] = value(i, x->rank);
  CHECK_EQ_INT(coll_allreduce_sum_f32(x->c, extra, extra, 5), COLL_OK);
  CHECK(compare("blocking behind queued", extra, 5, x->size, 0, x->rank));
  for (int k = 2; k >= 0; k--) {
    CHECK_EQ_INT(coll_wait(x->c, req[k]), COLL_OK);
    for (int64_t i = 0; i < n[k]; i++) {
      float want = (float)exact_sum(i + k, x->size) / (float)x->size;
      if (memcmp(&buf[k][i], &want, sizeof want) != 0) {
        fprintf(stderr, "rank %d: overlapped %d: element %lld got %g want %g\n", x->rank, k,
                (long long)i, buf[k][i], want);
        check_failures++;
        break;
      }
    }
    free(buf[k]);
  }
}

/* The non-blocking call really runs on its own: the caller makes no MPI
 * call while it waits (only coll_test, which does not drive it), yet the
 * request finishes. 1 MiB goes by rendezvous, which needs both sides' MPI
 * progress, so this fails without a progress thread. */
static void run_async_progress(ctx *x) {
  const int64_t n = 262144;
  for (int64_t i = 0; i < n; i++) x->recv[i] = value(i, x->rank);
  coll_request *req = NULL;
  CHECK_EQ_INT(coll_iallreduce_avg_f32(x->c, x->recv, n, &req), COLL_OK);
  int done = 0;
  for (int ms = 0; ms < 20000 && !done; ms += 5) {
    struct timespec ts = {0, 5000000L};
    nanosleep(&ts, NULL);
    CHECK_EQ_INT(coll_test(x->c, req, &done), COLL_OK);
  }
  if (!done) {
    fprintf(stderr, "rank %d: iallreduce made no progress in 20 s without the caller\n", x->rank);
    check_failures++;
  }
  CHECK_EQ_INT(coll_wait(x->c, req), COLL_OK);
  CHECK(compare("async progress", x->recv, n, x->size, 1, x->rank));
}

/* Real-valued inputs: not exact, but the same bits everywhere and every time. */
static void run_identical(ctx *x, int ring) {
  const int64_t n = 100003;
  uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(x->rank + 1);
  for (int64_t i = 0; i < n; i++) x->send[i] = (float)coll_test_uniform(&seed) * 3.7f;
  uint64_t h[2];
  for (int rep = 0; rep < 2; rep++) {
    CHECK_EQ_INT(coll_allreduce_sum_f32(x->c, x->send, x->recv, n), COLL_OK);
    h[rep] = coll_test_fnv1a(x->recv, (size_t)n * sizeof(float));
  }
  if (ring) { /* MPI_Allreduce promises no fixed order; our ring and shm do */
    CHECK(h[0] == h[1]);
    if (x->tcp) {
      uint64_t h0 = h[0]; /* no MPI world: rank 0's hash comes over the mesh */
      CHECK_EQ_INT(coll_broadcast_bytes(x->c, &h0, sizeof h0, 0), COLL_OK);
      CHECK(h0 == h[0]);
    } else {
      coll_test_same_hash(h[0], 0, x->rank, x->size, "ring result");
    }
  }
}

/* hier on one node is shm: the same real-valued sums, bit for bit, from a
 * shm comm on the same world. */
static void run_same_as_shm(ctx *x, const coll_world *w) {
  const int64_t n = 300007; /* three chunks of the segment, the last one short */
  coll_config cfg = {.backend = COLL_BACKEND_SHM, .timeout_s = 60};
  coll_comm *shm = NULL;
  char err[512];
  if (coll_comm_init(&shm, w, &cfg, err, sizeof err) != COLL_OK) {
    fprintf(stderr, "rank %d: %s\n", x->rank, err);
    check_failures++;
    return;
  }
  float *a = malloc((size_t)n * sizeof *a);
  if (!a) abort();
  uint64_t seed = 0x51ed270b27f0ad3bULL ^ (uint64_t)(x->rank + 1);
  for (int64_t i = 0; i < n; i++) x->send[i] = (float)coll_test_uniform(&seed) * 2.3f - 1.1f;
  for (int avg = 0; avg < 2; avg++) {
    memcpy(a, x->send, (size_t)n * sizeof *a);
    memcpy(x->recv, x->send, (size_t)n * sizeof *a);
    if (avg) {
      CHECK_EQ_INT(coll_allreduce_avg_f32(x->c, x->recv, n), COLL_OK);
      CHECK_EQ_INT(coll_allreduce_avg_f32(shm, a, n), COLL_OK);
    } else {
      CHECK_EQ_INT(coll_allreduce_sum_f32(x->c, x->send, x->recv, n), COLL_OK);
      CHECK_EQ_INT(coll_allreduce_sum_f32(shm, x->send, a, n), COLL_OK);
    }
    if (memcmp(a, x->recv, (size_t)n * sizeof *a) != 0) {
      fprintf(stderr, "rank %d: hier %s differs from shm's bits on one node\n", x->rank,
              avg ? "avg" : "sum");
      check_failures++;
    }
  }
  free(a);
  coll_comm_free(shm);
}

/* The comm's buffer (or, where the back end has none, one of our own): every
 * count in place at an odd offset, guards either side; out of place through
 * it (the copying path); three spans in flight while a fourth is written, as
 * backward writes the next layer; random values give the bits of the same
 * sum in a private buffer, on every rank. */
static void run_registered(ctx *x, int64_t max_n, const int64_t *counts, size_t ncounts,
                           int zero_copy) {
  char err[512] = "";
  const int64_t lead = 5, total = lead + max_n + GUARD;
  float *buf = NULL, *own = NULL;
  CHECK_EQ_INT(coll_comm_buffer(x->c, total, &buf, err, sizeof err), COLL_OK);
  if (zero_copy && !buf) { /* shm and hier must give one: else this tests nothing new */
    fprintf(stderr, "rank %d: no comm buffer: %s\n", x->rank, err);
    check_failures++;
  }
  if (!buf) buf = own = malloc((size_t)total * sizeof(float));
  if (!buf) abort();
  for (size_t k = 0; k < ncounts; k++) {
    const int64_t n = counts[k];
    for (int v = 0; v < 4; v++) { /* avg/sum x blocking/non-blocking */
      const int avg = v & 1, mode = v >> 1;
      char what[96];
      snprintf(what, sizeof what, "comm buffer count %lld %s %s", (long long)n,
               avg ? "avg" : "sum", mode ? "iallreduce" : "allreduce");
      for (int64_t i = 0; i < total; i++) buf[i] = guard_value;
      float *b = buf + lead;
      for (int64_t i = 0; i < n; i++) b[i] = value(i, x->rank);
      coll_request *req = NULL;
      int rc = mode ? (avg ? coll_iallreduce_avg_f32(x->c, b, n, &req)
                           : coll_iallreduce_sum_f32(x->c, b, b, n, &req))
                    : (avg ? coll_allreduce_avg_f32(x->c, b, n)
                           : coll_allreduce_sum_f32(x->c, b, b, n));
      if (rc == COLL_OK && mode) rc = coll_wait(x->c, req);
      if (rc != COLL_OK) {
        fprintf(stderr, "rank %d: %s: %s\n", x->rank, what, coll_comm_error(x->c));
        check_failures++;
        continue;
      }
      if (!compare(what, b, n, x->size, avg, x->rank)) check_failures++;
      for (int64_t i = 0; i < total; i++) {
        if ((i < lead || i >= lead + n) && buf[i] != guard_value) {
          fprintf(stderr, "rank %d: %s: wrote outside the span (element %lld)\n", x->rank, what,
                  (long long)(i - lead));
          check_failures++;
          break;
        }
      }
    }
  }
  /* out of place, send in the buffer: the copying path */
  const int64_t n = 266610;
  for (int64_t i = 0; i < n; i++) buf[lead + i] = value(i, x->rank);
  CHECK_EQ_INT(coll_allreduce_sum_f32(x->c, buf + lead, x->recv, n), COLL_OK);
  CHECK(compare("comm buffer out of place", x->recv, n, x->size, 0, x->rank));
  /* three spans in flight, waited in reverse; the fourth written meanwhile */
  const int64_t span[4][2] = {{0, 235500}, {235500, 30100}, {265600, 1010}, {266610, 4000}};
  coll_request *req[3] = {NULL, NULL, NULL};
  for (int k = 0; k < 3; k++) {
    for (int64_t i = 0; i < span[k][1]; i++) buf[span[k][0] + i] = value(i + k, x->rank);
    float *b = buf + span[k][0];
    CHECK_EQ_INT(coll_iallreduce_sum_f32(x->c, b, b, span[k][1], &req[k]), COLL_OK);
  }
  for (int64_t i = 0; i < span[3][1]; i++) buf[span[3][0] + i] = (float)(x->rank + 1);
  for (int k = 2; k >= 0; k--) CHECK_EQ_INT(coll_wait(x->c, req[k]), COLL_OK);
  for (int k = 0; k < 3; k++) {
    for (int64_t i = 0; i < span[k][1]; i++) {
      const float want = (float)exact_sum(i + k, x->size);
      if (buf[span[k][0] + i] != want) {
        fprintf(stderr, "rank %d: comm buffer overlapped span %d, element %lld: got %.9g want "
                "%.9g\n", x->rank, k, (long long)i, buf[span[k][0] + i], want);
        check_failures++;
        break;
      }
    }
  }
  for (int64_t i = 0; i < span[3][1]; i++) CHECK(buf[span[3][0] + i] == (float)(x->rank + 1));
  /* random reals: the comm buffer's bits are the private buffer's, on every rank */
  srand(1234 + (unsigned)x->rank);
  for (int64_t i = 0; i < max_n; i++) {
    x->send[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    buf[i] = x->send[i];
  }
  memcpy(x->recv, x->send, (size_t)max_n * sizeof(float));
  CHECK_EQ_INT(coll_allreduce_avg_f32(x->c, x->send, max_n), COLL_OK);
  CHECK_EQ_INT(coll_allreduce_avg_f32(x->c, buf, max_n), COLL_OK);
  CHECK(memcmp(buf, x->send, (size_t)max_n * sizeof(float)) == 0);
  memcpy(buf + lead, x->recv, (size_t)(max_n - lead) * sizeof(float)); /* sum, another span */
  CHECK_EQ_INT(coll_allreduce_sum_f32(x->c, x->recv, x->recv, max_n - lead), COLL_OK);
  CHECK_EQ_INT(coll_allreduce_sum_f32(x->c, buf + lead, buf + lead, max_n - lead), COLL_OK);
  CHECK(memcmp(buf + lead, x->recv, (size_t)(max_n - lead) * sizeof(float)) == 0);
  double h = 0; /* rank 0's bits reach every rank: compare */
  for (int64_t i = 0; i < max_n; i += 997) h += (double)buf[i] * (double)(i + 1);
  double h0 = x->rank == 0 ? h : 0;
  CHECK_EQ_INT(coll_allreduce_sum_f64(x->c, &h0, 1), COLL_OK);
  CHECK(h0 == h);
  free(own);
}

/* The first rank of each node reduces its comm buffer, the node's others
 * their own memory: every rank fails, saying so and naming a rank (a fresh
 * comm: this one breaks). Every node must have two ranks or more. */
static void run_registered_mismatch(const coll_world *w, const coll_config *cfg) {
  char err[512];
  coll_comm *c = NULL;
  if (coll_comm_init(&c, w, cfg, err, sizeof err) != COLL_OK) {
    fprintf(stderr, "rank %d: %s\n", w->rank, err);
    check_failures++;
    return;
  }
  float *buf = NULL, mine[100];
  CHECK_EQ_INT(coll_comm_buffer(c, 100, &buf, err, sizeof err), COLL_OK);
  CHECK(buf != NULL);
  float *b = w->rank == w->node_first && buf ? buf : mine;
  for (int i = 0; i < 100; i++) b[i] = 1.0f;
  CHECK_EQ_INT(coll_allreduce_sum_f32(c, b, b, 100), COLL_ERR);
  const char *e = coll_comm_error(c);
  if (!strstr(e, "comm buffer") || !strstr(e, "rank ")) {
    fprintf(stderr, "rank %d: mismatch: the error does not say it: %s\n", w->rank, e);
    check_failures++;
  }
  coll_comm_free(c);
}

int main(int argc, char **argv) {
  coll_world w;
  char err[512];
  coll_config cfg = {.backend = COLL_BACKEND_RING, .timeout_s = 60};
  const int hier_tcp = argc > 1 && strcmp(argv[1], "hier-tcp") == 0;
  if (hier_tcp) {
    cfg.backend = COLL_BACKEND_HIER;
  } else if (argc < 2 || coll_backend_parse(argv[1], &cfg.backend) != 0) {
    fprintf(stderr, "usage: test_allreduce mpi|ring|shm|hier [chunk_bytes] | tcp N [chunk_bytes]"
            " | hier-tcp N HOSTS\n");
    return 2;
  }
  const int tcp = cfg.backend == COLL_BACKEND_TCP || hier_tcp;
  if (hier_tcp) tf_spawn_cluster_hosts(argc > 2 ? atoi(argv[2]) : 2, argc > 3 ? atoi(argv[3]) : 1, 100);
  else if (tcp) tf_spawn_cluster(argc > 2 ? atoi(argv[2]) : 2, 100);
  static cluster_tf_config tf;
  if (!tcp) coll_test_world_init(&w, &argc, &argv);
  else if (cluster_tf_config_parse(getenv("TF_CONFIG"), &tf, err, sizeof err) != 0 ||
           cluster_world_join(&w, &tf, 60, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (argc > 2 && !tcp) cfg.ring_chunk_bytes = atoll(argv[2]);
  if (argc > 3 && tcp && !hier_tcp) cfg.ring_chunk_bytes = atoll(argv[3]);
  ctx x = {.rank = w.rank, .size = w.size, .tcp = tcp};
  if (coll_comm_init(&x.c, &w, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  const int64_t counts[] = {0, 1, 2, 3, 7, 1000, 266610, (1 << 20) + 3};
  const int64_t max_n = (1 << 20) + 3;
  x.send = malloc((size_t)(max_n + GUARD) * sizeof(float));
  x.recv = malloc((size_t)(max_n + GUARD) * sizeof(float));
  if (!x.send || !x.recv) abort();
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    for (int in_place = 0; in_place < 2; in_place++) {
      for (int avg = 0; avg <= in_place; avg++) {
        for (int mode = 0; mode < 2; mode++) run_case(&x, counts[i], in_place, avg, mode);
      }
    }
  }
  run_overlapped(&x);
  const int shared = cfg.backend == COLL_BACKEND_SHM || cfg.backend == COLL_BACKEND_HIER;
  run_registered(&x, max_n, counts, sizeof counts / sizeof counts[0], shared && w.size > 1);
  double lone = w.local_size < 2; /* a node of one rank cannot disagree with itself */
  CHECK_EQ_INT(coll_allreduce_sum_f64(x.c, &lone, 1), COLL_OK);
  if (shared && w.size > 1 && lone == 0) run_registered_mismatch(&w, &cfg);
  if (w.size > 1 && w.async) run_async_progress(&x);
  run_identical(&x, cfg.backend != COLL_BACKEND_MPI);
  if (cfg.backend == COLL_BACKEND_HIER && !tcp && w.local_size == w.size) run_same_as_shm(&x, &w);
  double fails = check_failures;
  if (coll_allreduce_sum_f64(x.c, &fails, 1) != COLL_OK) {
    fprintf(stderr, "rank %d: %s\n", w.rank, coll_comm_error(x.c));
    fails = 1;
  }
  if (w.rank == 0) {
    printf("%s, %d rank(s), %d on rank 0's node: %s\n", argv[1], w.size, w.local_size,
           fails == 0 ? "all exact" : "FAILED");
  }
  free(x.send);
  free(x.recv);
  coll_comm_free(x.c);
  coll_world_finalize(&w);
  if (tcp) cluster_tf_config_free(&tf);
  if (fails != 0) check_failures = check_failures ? check_failures : 1;
  CHECK_DONE();
}
