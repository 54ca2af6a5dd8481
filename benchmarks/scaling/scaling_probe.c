/* Measures what the scaling model needs on the links in use: small-message
 * one-way latency (alpha) and point-to-point bandwidth between rank 0 and the
 * last rank, the time of one gradient-sized allreduce on a tfdist back end,
 * and the CPU cost of a 16-bit wire codec (bf16, fp16) on the same gradient.
 * Rank 0 prints one JSON line; a wrong allreduce sum exits 1. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/coll.h"

typedef struct {
  int64_t elems;    /* allreduce size in floats (default: the 784-300-100-10 model) */
  int iters, warmup;
  double timeout_s;
  char backend[16];
} probe_opts;

static int probe_parse(int argc, char **argv, probe_opts *o) {
  *o = (probe_opts){266610, 30, 5, 60.0, "mpi"};
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    if (!v) {
      fprintf(stderr, "scaling_probe: error: %s needs a value\n", f);
      return -1;
    }
    if (!strcmp(f, "--elems")) {
      o->elems = strtoll(v, &end, 10);
      if (*end || o->elems < 1) goto bad;
    } else if (!strcmp(f, "--iters")) {
      o->iters = (int)strtol(v, &end, 10);
      if (*end || o->iters < 1) goto bad;
    } else if (!strcmp(f, "--warmup")) {
      o->warmup = (int)strtol(v, &end, 10);
      if (*end || o->warmup < 0) goto bad;
    } else if (!strcmp(f, "--timeout")) {
      o->timeout_s = strtod(v, &end);
      if (*end || !(o->timeout_s > 0)) goto bad;
    } else if (!strcmp(f, "--allreduce")) {
      coll_backend b;
      if (coll_backend_parse(v, &b) != 0) goto bad;
      snprintf(o->backend, sizeof o->backend, "%s", v);
    } else {
      fprintf(stderr, "scaling_probe: error: unknown flag '%s' (--elems --iters --warmup "
              "--timeout --allreduce)\n", f);
      return -1;
    }
    i++;
    continue;
  bad:
    fprintf(stderr, "scaling_probe: error: %s: bad value '%s'\n", f, v);
    return -1;
  }
  return 0;
}

static int probe_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double probe_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, probe_cmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median round trip of `bytes` between rank 0 and rank `peer`, in seconds. */
static double probe_pingpong(int rank, int peer, char *buf, int bytes, int iters, int warmup) {
  double *rtt = calloc((size_t)iters, sizeof *rtt), med = 0.0;
  if (!rtt) return -1.0;
  for (int i = 0; i < warmup + iters; i++) {
    double t0 = MPI_Wtime();
    if (rank == 0) {
      MPI_Send(buf, bytes, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
      MPI_Recv(buf, bytes, MPI_BYTE, peer, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (rank == peer) {
      MPI_Recv(buf, bytes, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buf, bytes, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
    }
    if (i >= warmup) rtt[i - warmup] = MPI_Wtime() - t0;
  }
  if (rank == 0) med = probe_median(rtt, iters);
  free(rtt);
  return med;
}

/* Exact in any order: small integers. Returns the count of wrong elements. */
static int64_t probe_check(coll_comm *c, float *buf, int64_t n, int rank, int size) {
  for (int64_t i = 0; i < n; i++) buf[i] = (float)(rank + (int)(i % 7));
  if (coll_allreduce_sum_f32(c, buf, buf, n) != COLL_OK) return n;
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; i++) {
    float want = (float)(size * (size - 1) / 2 + size * (int)(i % 7));
    if (buf[i] != want) wrong++;
  }
  return wrong;
}

static double probe_allreduce(coll_comm *c, float *buf, const probe_opts *o) {
  double *t = calloc((size_t)o->iters, sizeof *t), med = -1.0;
  if (!t) return -1.0;
  for (int i = 0; i < o->warmup + o->iters; i++) {
    for (int64_t k = 0; k < o->elems; k++) buf[k] = 1.0f;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    if (coll_allreduce_avg_f32(c, buf, o->elems) != COLL_OK) goto done;
    double dt = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (i >= o->warmup) t[i - o->warmup] = dt;
  }
  med = probe_median(t, o->iters);
done:
  free(t);
  return med;
}

/* bf16: the top half of the float, rounded to nearest even (finite inputs). */
static uint16_t probe_bf16_encode(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float probe_bf16_decode(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* fp16 of a normal-range float, rounded to nearest even; what a scaled fp16
 * codec does per element (the scale keeps the gradient in range). */
static uint16_t probe_fp16_encode(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  uint32_t sign = (u >> 16) & 0x8000u, mag = u & 0x7fffffffu;
  if (mag < 0x38800000u) return (uint16_t)sign; /* below fp16's normal range: flush */
  if (mag >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  uint32_t r = mag - 0x38000000u; /* rebias the exponent: 127 -> 15 */
  r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  return (uint16_t)(sign | r);
}

static float probe_fp16_decode(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t u = e == 0 ? sign : sign | ((e + 112u) << 23) | (m << 13);
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* Median time to encode elems floats to 16 bits and decode them into an fp32
 * sum, the work a 16-bit ring does per element it sends and receives. */
static double probe_codec(int fp16, int64_t elems, int iters) {
  float *src = malloc((size_t)elems * sizeof *src), *acc = malloc((size_t)elems * sizeof *acc);
  uint16_t *wire = malloc((size_t)elems * sizeof *wire);
  double *t = calloc((size_t)iters, sizeof *t), med = -1.0;
  if (!src || !acc || !wire || !t) goto done;
  for (int64_t i = 0; i < elems; i++) src[i] = (float)sin((double)i) * 1e-3f;
  for (int it = 0; it < iters; it++) {
    memset(acc, 0, (size_t)elems * sizeof *acc);
    double t0 = MPI_Wtime();
    if (fp16) {
      for (int64_t i = 0; i < elems; i++) wire[i] = probe_fp16_encode(src[i] * 1024.0f);
      for (int64_t i = 0; i < elems; i++) acc[i] += probe_fp16_decode(wire[i]) * (1.0f / 1024.0f);
    } else {
      for (int64_t i = 0; i < elems; i++) wire[i] = probe_bf16_encode(src[i]);
      for (int64_t i = 0; i < elems; i++) acc[i] += probe_bf16_decode(wire[i]);
    }
    t[it] = MPI_Wtime() - t0;
  }
  /* Checked outside the timed loop: bf16 keeps 8 bits, fp16 11 (flushed below 2^-14 / scale). */
  double rel = fp16 ? 1.0 / 2048.0 : 1.0 / 256.0, floor = fp16 ? 6.2e-5 / 1024.0 : 0.0;
  for (int64_t i = 0; i < elems; i++)
    if (!(fabs((double)acc[i] - (double)src[i]) <= rel * fabs((double)src[i]) + floor)) goto done;
  med = probe_median(t, iters);
done:
  free(src);
  free(acc);
  free(wire);
  free(t);
  return med;
}

int main(int argc, char **argv) {
  probe_opts o;
  if (probe_parse(argc, argv, &o) != 0) return 2;
  char err[512] = "";
  coll_world w;
  if (coll_world_init(&w, &argc, &argv, err, sizeof err) != COLL_OK) {
    fprintf(stderr, "scaling_probe: error: %s\n", err);
    return 1;
  }
  coll_config cfg = {.backend = COLL_BACKEND_MPI, .timeout_s = o.timeout_s, .device = -1};
  coll_backend_parse(o.backend, &cfg.backend);
  coll_comm *c = NULL;
  if (coll_comm_init(&c, &w, &cfg, err, sizeof err) != COLL_OK) {
    fprintf(stderr, "scaling_probe: error: %s\n", err);
    coll_world_finalize(&w);
    return 1;
  }
  int hosts = w.local_rank == 0;
  MPI_Allreduce(MPI_IN_PLACE, &hosts, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  const int big = 4 << 20;
  char *pp = calloc((size_t)big, 1);
  float *buf = calloc((size_t)o.elems, sizeof *buf);
  if (!pp || !buf) {
    fprintf(stderr, "scaling_probe: error: out of memory\n");
    return 1;
  }
  double alpha_s = 0.0, bw_gbps = 0.0;
  if (w.size > 1) {
    alpha_s = probe_pingpong(w.rank, w.size - 1, pp, 8, 200, 20) / 2.0;
    double half = probe_pingpong(w.rank, w.size - 1, pp, big, 10, 2) / 2.0;
    if (w.rank == 0) bw_gbps = 8.0 * big / half / 1e9;
  }
  int64_t wrong = w.size > 1 ? probe_check(c, buf, o.elems, w.rank, w.size) : 0;
  MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  double ar_s = w.size > 1 ? probe_allreduce(c, buf, &o) : 0.0;
  double bf16_s = 0.0, fp16_s = 0.0;
  if (w.rank == 0) { /* alone on the CPU: the other ranks wait in the barrier below */
    bf16_s = probe_codec(0, o.elems, o.iters);
    fp16_s = probe_codec(1, o.elems, o.iters);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (w.rank == 0) {
    printf("{\"ranks\": %d, \"hosts\": %d, \"backend\": \"%s\", \"elems\": %lld, "
           "\"alpha_us\": %.3f, \"p2p_gbps\": %.3f, \"allreduce_ms\": %.4f, "
           "\"codec_bf16_ms\": %.4f, \"codec_fp16_ms\": %.4f, \"wrong\": %lld}\n",
           w.size, hosts, o.backend, (long long)o.elems, alpha_s * 1e6, bw_gbps, ar_s * 1e3,
           bf16_s * 1e3, fp16_s * 1e3, (long long)wrong);
    fflush(stdout);
  }
  free(pp);
  free(buf);
  coll_comm_free(c);
  coll_world_finalize(&w);
  return wrong == 0 && ar_s >= 0.0 && bf16_s >= 0.0 && fp16_s >= 0.0 ? 0 : 1;
}
