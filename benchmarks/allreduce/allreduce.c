/* An nccl-tests-style allreduce benchmark for tfdist's collectives: float32
 * sum, in place, sizes from -b to -e by factor -f, reported as the median of
 * -n timed iterations (after -w warm-up ones) of the slowest rank. Algorithms
 * (-a, a comma list) run side by side in one process:
 *   ompi  MPI_Allreduce called directly: the peer to beat
 *   mpi   tfdist's mpi back end (MPI_Allreduce on its progress thread)
 *   ring  tfdist's ring back end (reduce-scatter + allgather over MPI p2p)
 *   shm   tfdist's shm back end (one shared segment per node; one node only)
 *   shm-zc the shm back end on the comm's own buffer (coll_comm_buffer: the
 *         data already in the shared segment, as the trainer's gradients are)
 *   winshm shm's reduction over an MPI-3 shared window, for comparison (winshm.c)
 *   ring-bf16, ring-fp16  the ring with --compression (16-bit transfers, fp32
 *         sums; fp16 at scale 1); the check's small integers are exact in both
 *   hier  tfdist's hier back end (shm within each node, the ring across nodes)
 *   hier-zc the hier back end on the comm's own buffer (each node's segment),
 *         as shm-zc
 * Correctness (-c 1) is checked outside the timed loop, bit-exact, on small
 * integer-valued inputs; any wrong element makes the exit code non-zero.
 * -j FILE also writes every row as JSON (for plot_allreduce.py). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "collective/coll.h"
#include "winshm.h"

#define MAX_ALGOS 8

typedef struct {
  int64_t min_bytes, max_bytes;
  double factor;
  int iters, warmup, check;
  double timeout_s;
  int64_t chunk_bytes;
  int nalgos;
  char algos[MAX_ALGOS][16];
  const char *json; /* -j: rows as JSON, written by rank 0 at the end; NULL: none */
} bench_opts;

typedef struct {
  const char *name;
  coll_comm *comm;   /* NULL for ompi and winshm */
  bench_winshm *win; /* winshm only */
  float *own;        /* shm-zc, hier-zc: the comm's buffer, which the inputs are copied into */
} bench_algo;

static const char usage[] =
    "usage: mpirun -np N allreduce [-b MIN] [-e MAX] [-f FACTOR] [-n ITERS] [-w WARMUP]\n"
    "                              [-c 0|1] [-a ompi,mpi,ring,shm,shm-zc,hier,hier-zc,winshm,ring-bf16,\n"
    "                              ring-fp16]\n"
    "                              [-C RING_CHUNK] [-t TIMEOUT_S]\n"
    "                              [-j FILE.json]\n"
    "  sizes in bytes, with K/M/G suffixes (powers of 1024); defaults -b 4K -e 64M -f 2\n"
    "  -n 20 -w 5 -c 1 -a ompi,mpi,ring -C 0 (ring default) -t 60\n";

/* "64M" -> 67108864; -1 on anything else. */
static int64_t parse_size(const char *s) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0) return -1;
  int64_t mult = 1;
  if (*end == 'K' || *end == 'k') mult = 1024, end++;
  else if (*end == 'M' || *end == 'm') mult = 1024 * 1024, end++;
  else if (*end == 'G' || *end == 'g') mult = 1024 * 1024 * 1024, end++;
  if (*end != '\0') return -1;
  return (int64_t)(v * (double)mult);
}

static int parse_algos(bench_opts *o, const char *list, char *err, size_t err_bytes) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", list);
  o->nalgos = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (strcmp(tok, "ompi") && strcmp(tok, "mpi") && strcmp(tok, "ring") && strcmp(tok, "shm") &&
        strcmp(tok, "shm-zc") && strcmp(tok, "hier") && strcmp(tok, "hier-zc") &&
        strcmp(tok, "winshm") &&
        strcmp(tok, "ring-bf16") && strcmp(tok, "ring-fp16")) {
      snprintf(err, err_bytes, "-a: unknown algorithm '%.40s' (ompi, mpi, ring, shm, shm-zc, hier, "
               "hier-zc, winshm, ring-bf16, ring-fp16)", tok);
      return -1;
    }
    if (o->nalgos == MAX_ALGOS) {
      snprintf(err, err_bytes, "-a: at most %d algorithms", MAX_ALGOS);
      return -1;
    }
    snprintf(o->algos[o->nalgos++], sizeof o->algos[0], "%s", tok);
  }
  if (o->nalgos == 0) {
    snprintf(err, err_bytes, "-a: empty list");
    return -1;
  }
  return 0;
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out, char *err,
                     size_t err_bytes) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) {
    snprintf(err, err_bytes, "%s: '%s' is not an integer in [%d, %d]", flag, s, lo, hi);
    return -1;
  }
  *out = (int)v;
  return 0;
}

static int parse_args(bench_opts *o, int argc, char **argv, char *err, size_t err_bytes) {
  *o = (bench_opts){.min_bytes = 4096, .max_bytes = 64 << 20, .factor = 2, .iters = 20,
                    .warmup = 5, .check = 1, .timeout_s = 60};
  if (parse_algos(o, "ompi,mpi,ring", err, err_bytes) != 0) return -1;
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i];
    if (!strcmp(f, "-h") || !strcmp(f, "--help")) return 1;
    if (f[0] != '-' || strlen(f) != 2 || !strchr("befnwcaCtj", f[1])) {
      snprintf(err, err_bytes, "unknown flag '%s'", f);
      return -1;
    }
    if (i + 1 >= argc) {
      snprintf(err, err_bytes, "%s: needs a value", f);
      return -1;
    }
    const char *v = argv[++i];
    char *end = NULL;
    int rc = 0;
    switch (f[1]) {
    case 'b': o->min_bytes = parse_size(v); rc = o->min_bytes < 0 ? -1 : 0; break;
    case 'e': o->max_bytes = parse_size(v); rc = o->max_bytes < 0 ? -1 : 0; break;
    case 'C': o->chunk_bytes = parse_size(v); rc = o->chunk_bytes < 0 ? -1 : 0; break;
    case 'f':
      o->factor = strtod(v, &end);
      rc = end == v || *end || !(o->factor > 1.0) ? -1 : 0;
      break;
    case 't':
      o->timeout_s = strtod(v, &end);
      rc = end == v || *end || !(o->timeout_s > 0) ? -1 : 0;
      break;
    case 'n': rc = parse_int(f, v, 1, 1000000, &o->iters, err, err_bytes); break;
    case 'w': rc = parse_int(f, v, 0, 1000000, &o->warmup, err, err_bytes); break;
    case 'c': rc = parse_int(f, v, 0, 1, &o->check, err, err_bytes); break;
    case 'a': rc = parse_algos(o, v, err, err_bytes); break;
    case 'j': o->json = v; rc = *v ? 0 : -1; break;
    }
    if (rc != 0) {
      if (!err[0]) snprintf(err, err_bytes, "%s: bad value '%s'", f, v);
      return -1;
    }
  }
  if (o->max_bytes < o->min_bytes) {
    snprintf(err, err_bytes, "-e %lld is below -b %lld", (long long)o->max_bytes,
             (long long)o->min_bytes);
    return -1;
  }
  return 0;
}

static int bench_allreduce(const bench_algo *a, float *buf, int64_t count, char *err,
                           size_t err_bytes) {
  if (a->win) return bench_winshm_allreduce(a->win, buf, count);
  if (!a->comm) {
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) snprintf(err, err_bytes, "MPI_Allreduce failed (%d)", rc);
    return rc == MPI_SUCCESS ? 0 : -1;
  }
  if (coll_allreduce_sum_f32(a->comm, buf, buf, count) != COLL_OK) {
    snprintf(err, err_bytes, "%s", coll_comm_error(a->comm));
    return -1;
  }
  return 0;
}

static float bench_value(int64_t i, int rank) { return (float)((i * 7 + rank * 3) % 19 - 9); }

/* Wrong elements over all ranks, bit-exact against the integer sum. */
static int64_t bench_check(const bench_algo *a, float *buf, int64_t count, int rank, int size,
                           char *err, size_t err_bytes) {
  if (a->own) buf = a->own;
  for (int64_t i = 0; i < count; i++) buf[i] = bench_value(i, rank);
  if (bench_allreduce(a, buf, count, err, err_bytes) != 0) return -1;
  int64_t wrong = 0;
  for (int64_t i = 0; i < count; i++) {
    int64_t s = 0;
    for (int r = 0; r < size; r++) s += (int64_t)bench_value(i, r);
    float want = (float)s;
    wrong += memcmp(&buf[i], &want, sizeof want) != 0;
  }
  MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return wrong;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* Median over iterations of the slowest rank's time, in seconds, per
 * algorithm. The algorithms take turns within each iteration, so a noisy
 * neighbour slows all of them alike, and the turn order rotates from one
 * iteration to the next, so none always runs first (or right after another
 * algorithm's cache traffic). Each timed call starts from a barrier and
 * from fresh inputs copied outside the timing, so sums never grow into
 * infinities and every algorithm sees the same cache. */
static int bench_time(const bench_opts *o, const bench_algo *algos, float *buf,
                      const float *fresh, int64_t count, double *med, char *err,
                      size_t err_bytes) {
  double *t = malloc((size_t)(o->iters * o->nalgos) * sizeof *t);
  if (!t) return -1;
  for (int it = -o->warmup; it < o->iters; it++) {
    for (int turn = 0; turn < o->nalgos; turn++) {
      const int k = (turn + it + o->warmup) % o->nalgos;
      float *b = algos[k].own ? algos[k].own : buf;
      memcpy(b, fresh, (size_t)count * sizeof(float));
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      if (bench_allreduce(&algos[k], b, count, err, err_bytes) != 0) {
        free(t);
        return -1;
      }
      double dt = MPI_Wtime() - t0;
      MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (it >= 0) t[k * o->iters + it] = dt;
    }
  }
  for (int k = 0; k < o->nalgos; k++) med[k] = median(t + k * o->iters, o->iters);
  free(t);
  return 0;
}

static void print_header(const bench_opts *o, const bench_algo *algos, int size, int hosts) {
  printf("# tfdist allreduce benchmark: float32 sum, in place; %d rank(s) on %d host(s)\n", size,
         hosts);
  printf("# -b %lld -e %lld -f %g -n %d -w %d -c %d -C %lld -t %g; time = median over -n of the "
         "slowest rank\n", (long long)o->min_bytes, (long long)o->max_bytes, o->factor, o->iters,
         o->warmup, o->check, (long long)o->chunk_bytes, o->timeout_s);
  printf("# algbw = size / time; busbw = algbw * 2(n-1)/n (see README.md); GB/s = 1e9 bytes/s\n#\n");
  printf("# %10s %12s", "", "");
  for (int k = 0; k < o->nalgos; k++) printf("  %-42s", algos[k].name);
  printf("\n# %10s %12s", "size(B)", "count(elems)");
  for (int k = 0; k < o->nalgos; k++) {
    printf("  %10s %10s %10s %8s", "time(us)", "algbw", "busbw", "#wrong");
  }
  if (o->nalgos > 1) printf("  %s/%s", algos[o->nalgos - 1].name, algos[0].name);
  printf("\n");
}

static int bench_hosts(void) {
  MPI_Comm node;
  int rank, is_leader, hosts = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int local;
  MPI_Comm_rank(node, &local);
  is_leader = local == 0;
  MPI_Allreduce(&is_leader, &hosts, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Comm_free(&node);
  return hosts;
}

/* One row: every algorithm at one size. Returns wrong elements, or -1. */
static int64_t bench_row(const bench_opts *o, const bench_algo *algos, int64_t bytes, float *buf,
                         float *fresh, int rank, int size, cJSON *rows, char *err,
                         size_t err_bytes) {
  const int64_t count = bytes / (int64_t)sizeof(float);
  for (int64_t i = 0; i < count; i++) fresh[i] = bench_value(i, rank) + 0.25f;
  int64_t wrong[MAX_ALGOS] = {0}, wrong_total = 0;
  double busbw[MAX_ALGOS], t[MAX_ALGOS];
  for (int k = 0; o->check && k < o->nalgos; k++) {
    wrong[k] = bench_check(&algos[k], buf, count, rank, size, err, err_bytes);
    if (wrong[k] < 0) return -1;
    wrong_total += wrong[k];
  }
  if (bench_time(o, algos, buf, fresh, count, t, err, err_bytes) != 0) return -1;
  if (rank == 0) printf("  %10lld %12lld", (long long)bytes, (long long)count);
  cJSON *row = rows ? cJSON_CreateObject() : NULL;
  cJSON_AddNumberToObject(row, "bytes", (double)bytes);
  cJSON_AddNumberToObject(row, "count", (double)count);
  for (int k = 0; k < o->nalgos; k++) {
    double algbw = t[k] > 0 ? (double)bytes / t[k] / 1e9 : 0;
    busbw[k] = algbw * (size > 1 ? 2.0 * (size - 1) / size : 1.0);
    if (rank == 0) {
      printf("  %10.1f %10.3f %10.3f %8lld", t[k] * 1e6, algbw, busbw[k], (long long)wrong[k]);
    }
    cJSON *a = row ? cJSON_AddObjectToObject(row, algos[k].name) : NULL;
    cJSON_AddNumberToObject(a, "time_us", t[k] * 1e6);
    cJSON_AddNumberToObject(a, "algbw_gbs", algbw);
    cJSON_AddNumberToObject(a, "busbw_gbs", busbw[k]);
    cJSON_AddNumberToObject(a, "wrong", (double)wrong[k]);
  }
  if (row) cJSON_AddItemToArray(rows, row);
  if (rank == 0) {
    if (o->nalgos > 1) printf("  %8.2f", busbw[0] > 0 ? busbw[o->nalgos - 1] / busbw[0] : 0);
    printf("\n");
    fflush(stdout);
  }
  return wrong_total;
}

int main(int argc, char **argv) {
  coll_world w;
  char err[1024] = "";
  bench_opts o;
  if (coll_world_init(&w, &argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "allreduce: %s\n", err);
    return 1;
  }
  int prc = parse_args(&o, argc, argv, err, sizeof err);
  if (prc != 0) {
    if (w.rank == 0) {
      if (prc < 0) fprintf(stderr, "allreduce: error: %s\n", err);
      fputs(usage, prc < 0 ? stderr : stdout);
    }
    coll_world_finalize(&w);
    return prc < 0 ? 2 : 0;
  }
  bench_algo algos[MAX_ALGOS];
  int rc = 0;
  for (int k = 0; k < o.nalgos; k++) {
    algos[k].name = o.algos[k];
    algos[k].comm = NULL;
    algos[k].win = NULL;
    algos[k].own = NULL;
    coll_config cfg = {.timeout_s = o.timeout_s, .ring_chunk_bytes = o.chunk_bytes};
    const int zc = strstr(o.algos[k], "-zc") != NULL;
    if (!strcmp(o.algos[k], "ompi")) continue;
    if (!strcmp(o.algos[k], "winshm")) {
      if (bench_winshm_init(&algos[k].win, err, sizeof err) != 0) {
        fprintf(stderr, "allreduce: rank %d: %s\n", w.rank, err);
        coll_world_abort(&w, 1);
      }
      continue;
    }
    if (!strncmp(o.algos[k], "ring-", 5)) {
      cfg.backend = COLL_BACKEND_RING;
      coll_compression_parse(o.algos[k] + 5, &cfg.compression);
    } else if (zc) {
      cfg.backend = strncmp(o.algos[k], "shm", 3) == 0 ? COLL_BACKEND_SHM : COLL_BACKEND_HIER;
    } else {
      coll_backend_parse(o.algos[k], &cfg.backend);
    }
    if (coll_comm_init(&algos[k].comm, &w, &cfg, err, sizeof err) != 0 ||
        (zc &&
         coll_comm_buffer(algos[k].comm, o.max_bytes / (int64_t)sizeof(float) + 1,
                          &algos[k].own, err, sizeof err) != 0)) {
      fprintf(stderr, "allreduce: rank %d: %s\n", w.rank, err);
      coll_world_abort(&w, 1);
    }
  }
  const int64_t max_count = o.max_bytes / (int64_t)sizeof(float);
  float *buf = malloc((size_t)(max_count + 1) * sizeof(float));
  float *fresh = malloc((size_t)(max_count + 1) * sizeof(float));
  if (!buf || !fresh) {
    fprintf(stderr, "allreduce: out of memory for %lld bytes\n", (long long)o.max_bytes);
    coll_world_abort(&w, 1);
  }
  int hosts = bench_hosts();
  if (w.rank == 0) print_header(&o, algos, w.size, hosts);
  cJSON *doc = w.rank == 0 && o.json ? cJSON_CreateObject() : NULL, *rows = NULL;
  if (doc) {
    cJSON_AddNumberToObject(doc, "ranks", w.size);
    cJSON_AddNumberToObject(doc, "hosts", hosts);
    cJSON_AddNumberToObject(doc, "iters", o.iters);
    cJSON_AddNumberToObject(doc, "chunk_bytes", (double)o.chunk_bytes);
    rows = cJSON_AddArrayToObject(doc, "rows");
  }
  int64_t wrong = 0;
  for (double b = (double)o.min_bytes; b <= (double)o.max_bytes * 1.000001; b *= o.factor) {
    int64_t bytes = (int64_t)b / 4 * 4;
    int64_t row = bench_row(&o, algos, bytes, buf, fresh, w.rank, w.size, rows, err, sizeof err);
    if (row < 0) {
      fprintf(stderr, "\nallreduce: rank %d: %s\n", w.rank, err);
      coll_world_abort(&w, 1);
    }
    wrong += row;
  }
  if (w.rank == 0) {
    printf("# out of bounds values: %lld %s\n", (long long)wrong, wrong ? "FAILED" : "OK");
  }
  rc = wrong ? 1 : 0;
  if (doc) {
    char *text = cJSON_Print(doc);
    if (!text || fs_write_atomic(o.json, text, strlen(text), err, sizeof err) != 0) {
      fprintf(stderr, "allreduce: -j %s: %s\n", o.json, text ? err : "out of memory");
      rc = 1;
    }
    free(text);
    cJSON_Delete(doc);
  }
  free(buf);
  free(fresh);
  for (int k = 0; k < o.nalgos; k++) {
    coll_comm_free(algos[k].comm);
    bench_winshm_free(algos[k].win);
  }
  coll_world_finalize(&w);
  return rc;
}
