/* Allreduce (average) of float32 device buffers, nccl-tests style, through
 * tfdist's collective layer (collective/coll.h): the nccl back end on the
 * device buffers, ordered on a stream of ours as `tfdist train` orders it on
 * the backend's; or the host back ends (ring, mpi) through pinned host
 * staging as `tfdist train` does when NCCL cannot run (two ranks sharing one
 * GPU). Correctness is checked outside the timed loop; ends with a JSON line.
 *   mpirun -np N gpu_allreduce_bench --backend nccl|ring|mpi [-b 4] [-e 64M] [-f 4] [-n 20] [-w 5] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "collective/coll.h"
#include "kernels/cuda/cuda_check.h"

static int g_rank;
static kc_where g_where = {.device = -1}; /* rank and device, once bound */

typedef struct {
  const char *backend;
  int64_t min_bytes, max_bytes, factor;
  int iters, warmup;
} ar_opts;

typedef struct {
  coll_comm *coll;
  cudaStream_t stream; /* nccl: the stream the collective layer orders its reductions on */
  float *dev, *host; /* host: pinned staging for ring/mpi */
  int use_nccl, ranks;
} ar_ctx;

static double ar_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t parse_size(const char *s) {
  char *end = NULL;
  double v = strtod(s, &end);
  if (end && (*end == 'K' || *end == 'k')) v *= 1024;
  if (end && (*end == 'M' || *end == 'm')) v *= 1024 * 1024;
  if (end && (*end == 'G' || *end == 'g')) v *= 1024.0 * 1024 * 1024;
  return (int64_t)v;
}

static int parse(ar_opts *o, int argc, char **argv) {
  *o = (ar_opts){.backend = "nccl", .min_bytes = 4, .max_bytes = 64 << 20, .factor = 4,
                 .iters = 20, .warmup = 5};
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) return -1;
    if (!strcmp(a, "--backend")) o->backend = v;
    else if (!strcmp(a, "-b")) o->min_bytes = parse_size(v);
    else if (!strcmp(a, "-e")) o->max_bytes = parse_size(v);
    else if (!strcmp(a, "-f")) o->factor = atoll(v);
    else if (!strcmp(a, "-n")) o->iters = atoi(v);
    else if (!strcmp(a, "-w")) o->warmup = atoi(v);
    else return -1;
  }
  coll_backend b;
  if (coll_backend_parse(o->backend, &b) != 0 || o->min_bytes < 4 || o->max_bytes < o->min_bytes ||
      o->factor < 2 || o->iters < 1 || o->warmup < 0) {
    return -1;
  }
  return 0;
}

/* One in-place average of elems floats on the device buffer: nccl through
 * the collective layer, on the device; the host back ends through pinned
 * staging. Both leave the result ordered on c->stream. */
static int ar_once(ar_ctx *c, int64_t elems) {
  if (c->use_nccl) {
    if (coll_allreduce_avg_f32(c->coll, c->dev, elems) != COLL_OK) {
      fprintf(stderr, "rank %d: %s\n", g_rank, coll_comm_error(c->coll));
      return -1;
    }
    return 0;
  }
  const size_t bytes = (size_t)elems * sizeof(float);
  KC_CUDA_CHECK(&g_where,
                cudaMemcpyAsync(c->host, c->dev, bytes, cudaMemcpyDeviceToHost, c->stream),
                return -1);
  KC_CUDA_CHECK(&g_where, cudaStreamSynchronize(c->stream), return -1);
  if (coll_allreduce_avg_f32(c->coll, c->host, elems) != COLL_OK) {
    fprintf(stderr, "rank %d: %s\n", g_rank, coll_comm_error(c->coll));
    return -1;
  }
  KC_CUDA_CHECK(&g_where,
                cudaMemcpyAsync(c->dev, c->host, bytes, cudaMemcpyHostToDevice, c->stream),
                return -1);
  return 0;
}

/* Bounded wait (the collective layer's timeout and NCCL error polling), then
 * the stream itself. */
static int ar_drain(ar_ctx *c) {
  if (coll_sync(c->coll) != COLL_OK) {
    fprintf(stderr, "rank %d: %s\n", g_rank, coll_comm_error(c->coll));
    return -1;
  }
  KC_CUDA_CHECK(&g_where, cudaStreamSynchronize(c->stream), return -1);
  return 0;
}

/* Rank r holds (r+1)*(i%7+1): small integers, so the sum is exact in any
 * order and the average is (i%7+1)*(N+1)/2 up to one rounding. */
static int ar_check(ar_ctx *c, int64_t elems, int64_t *wrong) {
  float *h = malloc((size_t)elems * sizeof(float));
  if (!h) return -1;
  for (int64_t i = 0; i < elems; i++) h[i] = (float)((g_rank + 1) * (i % 7 + 1));
  /* Every copy on c->stream: a non-blocking stream does not wait for the
   * legacy default stream, so a plain cudaMemcpy could race the collective. */
  KC_CUDA_CHECK(
      &g_where,
      cudaMemcpyAsync(c->dev, h, (size_t)elems * sizeof(float), cudaMemcpyHostToDevice, c->stream),
      return -1);
  KC_CUDA_CHECK(&g_where, cudaStreamSynchronize(c->stream), return -1);
  if (ar_once(c, elems) != 0 || ar_drain(c) != 0) return -1;
  KC_CUDA_CHECK(
      &g_where,
      cudaMemcpyAsync(h, c->dev, (size_t)elems * sizeof(float), cudaMemcpyDeviceToHost, c->stream),
      return -1);
  KC_CUDA_CHECK(&g_where, cudaStreamSynchronize(c->stream), return -1);
  *wrong = 0;
  for (int64_t i = 0; i < elems; i++) {
    double want = (double)(i % 7 + 1) * (c->ranks + 1) / 2.0;
    if (fabs((double)h[i] - want) > 1e-6 * want) (*wrong)++;
  }
  free(h);
  return 0;
}

static int ar_time(ar_ctx *c, int64_t elems, const ar_opts *o, double *us) {
  for (int i = 0; i < o->warmup; i++) {
    if (ar_once(c, elems) != 0) return -1;
  }
  if (ar_drain(c) != 0 || coll_barrier(c->coll) != COLL_OK) return -1;
  double t0 = ar_now();
  for (int i = 0; i < o->iters; i++) {
    if (ar_once(c, elems) != 0) return -1;
  }
  /* The stream stops the clock (coll_sync's polling backs off to 20 us
   * sleeps); coll_sync then reports any NCCL error. */
  KC_CUDA_CHECK(&g_where, cudaStreamSynchronize(c->stream), return -1);
  *us = (ar_now() - t0) * 1e6 / o->iters; /* the collective ends together on every rank */
  if (ar_drain(c) != 0) return -1;
  return 0;
}

/* The device, its stream and buffer, before the collective layer (nccl
 * takes the stream and device from its config). */
static int ar_device_setup(ar_ctx *c, const coll_world *w, int ndev, int64_t max_elems) {
  KC_CUDA_CHECK(&g_where, cudaSetDevice(w->local_rank % ndev), return -1);
  KC_CUDA_CHECK(&g_where, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), return -1);
  KC_CUDA_CHECK(&g_where, cudaMalloc((void **)&c->dev, (size_t)max_elems * sizeof(float)),
                return -1);
  c->ranks = w->size;
  if (!c->use_nccl)
    KC_CUDA_CHECK(&g_where, cudaMallocHost((void **)&c->host, (size_t)max_elems * sizeof(float)),
                  return -1);
  return 0;
}

static int ar_run(ar_ctx *c, const ar_opts *o, const coll_world *w) {
  const int64_t sizes_extra = 266610 * 4; /* tfdist's gradient buffer, 784-300-100-10 */
  const double bus = w->size > 1 ? 2.0 * (w->size - 1) / w->size : 0.0;
  int64_t total_wrong = 0;
  char json[8192];
  size_t len = 0;
  if (w->rank == 0) {
    printf("# allreduce avg float32 on device buffers, backend %s, %d rank(s)%s\n", o->backend,
           w->size, c->use_nccl ? "" : ", staged through pinned host memory");
    printf("# busbw = algbw * 2(n-1)/n\n");
    printf("%12s %12s %10s %10s %10s %7s\n", "size(B)", "count", "time(us)", "algbw(GB/s)",
           "busbw(GB/s)", "#wrong");
  }
  int64_t sizes[80];
  int nsizes = 0;
  for (int64_t b = o->min_bytes; b <= o->max_bytes && nsizes < 78; b *= o->factor) {
    if (b > sizes_extra && (nsizes == 0 || sizes[nsizes - 1] < sizes_extra)) sizes[nsizes++] = sizes_extra;
    sizes[nsizes++] = b;
  }
  if (nsizes == 0 || sizes[nsizes - 1] < sizes_extra) sizes[nsizes++] = sizes_extra;
  for (int k = 0; k < nsizes; k++) {
    const int64_t b = sizes[k];
    const int64_t elems = b / 4;
    int64_t wrong = 0;
    double us = 0.0;
    if (ar_check(c, elems, &wrong) != 0 || ar_time(c, elems, o, &us) != 0) return -1;
    total_wrong += wrong;
    const double algbw = (double)b / us * 1e-3;
    if (w->rank == 0) {
      printf("%12lld %12lld %10.2f %10.2f %10.2f %7lld%s\n", (long long)b, (long long)elems, us,
             algbw, algbw * bus, (long long)wrong, b == sizes_extra ? "  (tfdist gradients)" : "");
      if (len < sizeof json - 128) {
        len += (size_t)snprintf(json + len, sizeof json - len, "%s[%lld,%.3f,%.3f,%.3f,%lld]",
                                len ? "," : "", (long long)b, us, algbw, algbw * bus, (long long)wrong);
      }
    }
  }
  if (w->rank == 0) {
    printf("JSON {\"bench\":\"allreduce\",\"backend\":\"%s\",\"ranks\":%d,\"wrong\":%lld,"
           "\"rows\":[%s]}\n", o->backend, w->size, (long long)total_wrong, json);
  }
  return total_wrong ? 1 : 0;
}

int main(int argc, char **argv) {
  ar_opts o;
  if (parse(&o, argc, argv) != 0) {
    fprintf(stderr, "usage: gpu_allreduce_bench --backend nccl|ring|mpi [-b 4] [-e 64M] [-f 4] "
                    "[-n 20] [-w 5]\n");
    return 2;
  }
  int ndev = 0;
  cudaError_t drc = cudaGetDeviceCount(&ndev);
  if (drc != cudaSuccess || ndev == 0) {
    printf("SKIP: no GPU (%s)\n", drc != cudaSuccess ? cudaGetErrorString(drc) : "no device");
    return 77;
  }
  coll_world w;
  char err[512];
  if (coll_world_init(&w, &argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "gpu_allreduce_bench: %s\n", err);
    return 1;
  }
  g_rank = w.rank;
  g_where = (kc_where){.rank = w.rank, .device = w.local_rank % ndev};
  ar_ctx c = {0};
  c.use_nccl = !strcmp(o.backend, "nccl");
  coll_backend backend = COLL_BACKEND_NCCL;
  coll_backend_parse(o.backend, &backend);
  coll_config cc = {.backend = backend, .timeout_s = 120, .device = w.local_rank % ndev};
  const int64_t max_elems = o.max_bytes / 4 > 266610 ? o.max_bytes / 4 : 266610;
  int rc = 1;
  if (ar_device_setup(&c, &w, ndev, max_elems) != 0) {
    fprintf(stderr, "gpu_allreduce_bench: device setup failed\n");
  } else {
    cc.stream = c.stream;
    if (coll_comm_init(&c.coll, &w, &cc, err, sizeof err) != 0) {
      fprintf(stderr, "gpu_allreduce_bench: %s\n", err);
    } else {
      rc = ar_run(&c, &o, &w);
      if (rc < 0) rc = 1;
    }
  }
  coll_comm_free(c.coll);
  if (c.host) cudaFreeHost(c.host);
  if (c.dev) cudaFree(c.dev);
  if (c.stream) cudaStreamDestroy(c.stream);
  if (rc != 0 && w.size > 1) coll_world_abort(&w, rc);
  coll_world_finalize(&w);
  return rc;
}
