/* tfdist's training-step benchmark: median step time at the tutorial's batch
 * of 50 (graph replay with the default GEMMs, the small-kernel and cuBLAS
 * GEMMs side by side, and the eager, cuDNN-activation and TF32 variants),
 * the per-segment breakdown inside the graph, the launch-latency and bytes
 * floor, and batch-4096 throughput against cuBLAS doing the same GEMMs alone.
 * --device cpu times the CPU backend the same way. Ends with one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchmarks/gpu/gpu_bench.h"
#include "train/train.h" /* TRAIN_STEP_CHAIN: the chain the trainer runs */
#include "tfdist_config.h"

#define ROWS 60000

typedef struct {
  const char *device;
  int64_t batch, big_batch, steps, threads;
  int reps;
  const char *math;
} bench_opts;

static const char usage[] =
    "usage: gpu_step_bench [--device cuda|cpu] [--batch N] [--big-batch N|0] [--steps N]\n"
    "                      [--reps N] [--math fp32|tf32] [--threads N]\n";

static int parse(bench_opts *o, int argc, char **argv) {
  *o = (bench_opts){.device = "cuda", .batch = 50, .big_batch = 4096, .steps = 200, .reps = 21,
                    .math = "fp32", .threads = 0};
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "gpu_step_bench: %s: missing value\n%s", a, usage);
      return -1;
    }
    if (!strcmp(a, "--device")) o->device = v;
    else if (!strcmp(a, "--batch")) o->batch = atoll(v);
    else if (!strcmp(a, "--big-batch")) o->big_batch = atoll(v);
    else if (!strcmp(a, "--steps")) o->steps = atoll(v);
    else if (!strcmp(a, "--reps")) o->reps = atoi(v);
    else if (!strcmp(a, "--math")) o->math = v;
    else if (!strcmp(a, "--threads")) o->threads = atoll(v);
    else {
      fprintf(stderr, "gpu_step_bench: unknown flag %s\n%s", a, usage);
      return -1;
    }
  }
  if ((strcmp(o->device, "cuda") && strcmp(o->device, "cpu")) || o->batch < 1 ||
      o->batch > ROWS || o->big_batch < 0 || o->big_batch > ROWS || o->steps < 1 || o->reps < 1 ||
      o->reps > 63 || (strcmp(o->math, "fp32") && strcmp(o->math, "tf32"))) {
    fprintf(stderr, "gpu_step_bench: bad value\n%s", usage);
    return -1;
  }
  return 0;
}

static kern_backend *make_backend(const bench_opts *o, int unfused, kern_math math,
                                  kern_gemm gemm) {
  kern_config kc = {.device = strcmp(o->device, "cpu") ? KERN_DEVICE_CUDA : KERN_DEVICE_CPU,
                    .math = math, .threads = (int)o->threads, .unfused = unfused, .gemm = gemm};
  kern_backend *be = NULL;
  char err[512];
  if (kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "gpu_step_bench: %s\n", err);
    return NULL;
  }
  return be;
}

/* Median microseconds per step over reps runs of `steps` back-to-back steps
 * (graph replays when graph; a fused launch may chain several), synchronised
 * only at the ends. */
static double time_steps_us(bench_net *n, void *graph, int64_t steps, int reps) {
  kern_backend *be = n->be;
  double v[64];
  const int64_t per = n->fs.ws && n->fs.steps > 1 ? n->fs.steps : 1;
  if (steps > n->rows / n->batch) steps = n->rows / n->batch;
  steps = steps / per > 0 ? steps / per * per : per; /* whole chains, at least one */
  for (int r = -2; r < reps; r++) {
    if (bench_net_reset_cursor(n) != 0 || kern_sync(be) != 0) return -1.0;
    double t0 = bench_now();
    for (int64_t i = 0; i < steps; i += per) {
      int rc = graph ? kern_graph_launch(be, graph) : bench_step_ops(n, NULL, NULL, -1);
      if (rc != 0) {
        fprintf(stderr, "gpu_step_bench: step: %s\n", kern_error(be));
        return -1.0;
      }
    }
    if (kern_sync(be) != 0) return -1.0;
    if (r >= 0) v[r] = (bench_now() - t0) * 1e6 / (double)steps;
  }
  kern_stats st;
  if (kern_mem_download(be, &st, n->stats, sizeof st) == 0 && !(st.loss_sum == st.loss_sum)) {
    fprintf(stderr, "gpu_step_bench: loss is NaN: the step computed garbage\n");
    return -1.0;
  }
  return bench_median(v, reps);
}

static int last_fused;     /* whether the latest run_variant ran the fused step */
static int64_t last_chain; /* and how many steps per launch */

/* Steps per launch of a fused chain of `steps`: TFDIST_FUSED_CHAIN (read
 * by the CUDA backend, kernels/cuda/cuda_step.c) caps them. */
static int64_t chain_per_launch(int64_t steps) {
  const char *env = getenv("TFDIST_FUSED_CHAIN");
  const long long cap = env && env[0] ? atoll(env) : 0;
  return cap > 0 && cap < steps ? (int64_t)cap : steps;
}

/* One variant: a fresh backend and network, timed as a graph or eagerly;
 * chain > 0 asks for the fused step, chain steps per launch. */
static double run_variant(const bench_opts *o, int64_t batch, int unfused, kern_math math,
                          kern_gemm gemm, int use_graph, int64_t steps, int chain) {
  const int fused = chain > 0;
  kern_backend *be = make_backend(o, unfused, math, gemm);
  if (!be) return -1.0;
  bench_net n;
  double us = -1.0;
  void *graph = NULL;
  if (bench_net_init(&n, be, batch, ROWS, 7) != 0) {
    fprintf(stderr, "gpu_step_bench: setup: %s\n", kern_error(be));
    goto out;
  }
  const int frc = fused ? bench_net_fuse(&n) : 0;
  last_fused = fused && frc == 0;
  if (frc < 0) {
    fprintf(stderr, "gpu_step_bench: fused step setup: %s\n", kern_error(be));
    goto out;
  }
  n.fs.steps = chain < ROWS / batch ? chain : ROWS / batch; /* one pass over the rows */
  last_chain = last_fused ? chain_per_launch(n.fs.steps) : 1;
  if (fused && frc > 0) {
    printf("# batch %lld: the backend does not fuse this shape or configuration; op by op\n",
           (long long)batch);
  }
  if (use_graph && kern_has_graphs(be)) {
    if (kern_graph_begin(be) != 0) goto out;
    int rc = bench_step_ops(&n, NULL, NULL, -1);
    int end = kern_graph_end(be, &graph);
    if (rc != 0 || end != 0) {
      fprintf(stderr, "gpu_step_bench: capture: %s\n", kern_error(be));
      goto out;
    }
  }
  us = time_steps_us(&n, graph, steps, o->reps);
out:
  if (graph) kern_graph_free(be, graph);
  bench_net_free(&n);
  kern_backend_free(be);
  return us;
}

static void print_row(const char *name, double us, int64_t batch) {
  if (us > 0) printf("  %-34s %10.2f us/step %12.0f samples/s\n", name, us, (double)batch / us * 1e6);
  else printf("  %-34s %10s\n", name, "FAILED");
}

#if TFDIST_HAVE_CUDA
static const char *const fused_phase_names[KERN_STEP_PHASES] = {
  "1 gather, fwd L1 partials", "2 h1 = relu(sum + b1)", "3 fwd L2 partials",
  "4 h2, logits, xent per row", "5 bwd L3: dW3 db3 dz2, stats", "6 bwd L2: dW2 db2 dz1, upd L3",
  "7 bwd L1: dW1 db1 + upd, upd L2",
};

/* The fused step's phases (its own timestamps) and its floor: per step, a
 * launch of a chain of TRAIN_STEP_CHAIN steps crossing the same grid barriers
 * (6 per step, 1 between steps) and nothing else, plus the bytes it moves. */
static size_t fused_extras(const bench_opts *o, bench_net *n, double step_us, char *json,
                           size_t json_bytes) {
  double ph[KERN_STEP_PHASES], kernel_us = 0.0;
  size_t len = 0;
  const int reps = o->reps * 20 < 1024 ? o->reps * 20 : 1024; /* the probe's own cap */
  if (bench_net_fuse(n) != 0 || bench_cuda_fused_phases(n, reps, ph, &kernel_us) != 0) {
    printf("\nfused phases: not available\n");
    return 0;
  }
  printf("\n# fused step: phases from the kernel's own clock (median of %d eager steps)\n",
         reps);
  for (int p = 0; p < KERN_STEP_PHASES; p++) {
    printf("  %-34s %8.2f us\n", fused_phase_names[p], ph[p]);
    len += (size_t)snprintf(json + len, json_bytes - len, "\"phase_%d_us\":%.3f,", p + 1, ph[p]);
  }
  printf("  %-34s %8.2f us (block 0's start to the last block's end)\n", "kernel", kernel_us);
  const int64_t B = n->batch, P = n->L.total_elems, *d = n->L.dims;
  /* parameters read, gradients written, the update's read-modify-write;
   * the batch (u8 in, x out and back) and the activations out and back */
  const double bytes = 16.0 * (double)P + (double)B * (double)d[0] * 9.0 +
                       32.0 * (double)B * (double)(d[1] + d[2] + d[3]);
  const double bw = bench_cuda_bandwidth(n->be);
  const int K = TRAIN_STEP_CHAIN;
  const double bar = bench_cuda_barrier_floor_us(n->be, KERN_STEP_PHASES - 1);
  const double chain = bench_cuda_barrier_floor_us(n->be, KERN_STEP_PHASES * K - 1) / K;
  if (bar <= 0 || chain <= 0 || bw <= 0) {
    printf("\n# fused floor: a probe failed\n");
    return len;
  }
  const double floor_us = chain + bytes / bw * 1e6;
  printf("\n# fused floor: one cooperative launch crossing %d grid barriers: %.2f us (graph "
         "replay); a chain of %d steps: %.2f us per step; %.2f MB at %.0f GB/s = %.2f us\n",
         KERN_STEP_PHASES - 1, bar, K, chain, bytes / 1e6, bw / 1e9, bytes / bw * 1e6);
  printf("  floor %.2f us; measured %.2f us; gap %.2fx\n", floor_us, step_us, step_us / floor_us);
  len += (size_t)snprintf(json + len, json_bytes - len,
                          "\"fused_kernel_us\":%.3f,\"barrier_floor_us\":%.3f,"
                          "\"chain_barrier_floor_us\":%.3f,\"fused_bytes\":%.0f,"
                          "\"fused_floor_us\":%.3f,\"fused_gap\":%.3f,",
                          kernel_us, bar, chain, bytes, floor_us, step_us / floor_us);
  return len;
}

/* Breakdown, floor and roofline; appends its JSON fields to json. */
static void cuda_extras(const bench_opts *o, kern_math math, double step_us, double ops_us,
                        char *json, size_t json_bytes) {
  kern_backend *be = make_backend(o, 0, math, KERN_GEMM_AUTO);
  bench_net n;
  bench_breakdown bd;
  char err[256];
  if (!be) return;
  if (bench_net_init(&n, be, o->batch, ROWS, 7) != 0) {
    kern_backend_free(be);
    return;
  }
  size_t len = strlen(json);
  if (bench_cuda_breakdown(&n, o->reps * 5, &bd, err, sizeof err) == 0) {
    double sum = 0.0;
    printf("\n# op by op: time inside the replayed graph, batch %lld (median of %d; includes each node's launch gap)\n",
           (long long)o->batch, o->reps * 5);
    printf("  %-30s %6s %10s\n", "segment", "nodes", "us");
    for (int s = 0; s < SEG_COUNT; s++) {
      printf("  %-30s %6d %10.2f\n", bench_seg_names[s], bd.seg_nodes[s], bd.seg_us[s]);
      sum += bd.seg_us[s];
      len += (size_t)snprintf(json + len, json_bytes - len, "\"seg_%d_us\":%.3f,", s, bd.seg_us[s]);
    }
    printf("  %-30s %6d %10.2f   (%d kernels)\n", "total", bd.total_nodes, sum, bd.kernel_nodes);
    const double lat = bench_cuda_node_latency_us(be, bd.total_nodes);
    const double bw = bench_cuda_bandwidth(be);
    const double bytes = bench_step_bytes(&n);
    const double lat_floor = lat * bd.total_nodes, bw_floor = bytes / bw * 1e6;
    const double floor_us = lat_floor + bw_floor;
    printf("\n# floor: %d nodes x %.2f us (empty-kernel graph node) = %.2f us; %.2f MB at %.0f GB/s "
           "(device copy, read+write) = %.2f us\n",
           bd.total_nodes, lat, lat_floor, bytes / 1e6, bw / 1e9, bw_floor);
    printf("  floor %.2f us; measured (op by op) %.2f us; gap %.2fx\n", floor_us, ops_us,
           ops_us / floor_us);
    len += (size_t)snprintf(json + len, json_bytes - len,
                            "\"nodes\":%d,\"kernels\":%d,\"node_latency_us\":%.3f,\"bw_GBs\":%.1f,"
                            "\"step_bytes\":%.0f,\"floor_us\":%.3f,\"gap\":%.3f,",
                            bd.total_nodes, bd.kernel_nodes, lat, bw / 1e9, bytes, floor_us,
                            ops_us / floor_us);
  } else {
    printf("breakdown: %s\n", err);
  }
  bench_net_free(&n);
  len = strlen(json);
  if (bench_net_init(&n, be, o->batch, ROWS, 7) == 0) {
    len += fused_extras(o, &n, step_us, json + len, json_bytes - len);
    bench_net_free(&n);
  }
  if (o->big_batch > 0 && bench_net_init(&n, be, o->big_batch, ROWS, 7) == 0) {
    const double gemm_us = bench_cuda_gemm_us(be, &n, math);
    const double flops = bench_step_flops(&n);
    bench_net_free(&n);
    const double big_us = run_variant(o, o->big_batch, 0, math, KERN_GEMM_AUTO, 1, 14, 0);
    printf("\n# batch %lld: step %.1f us (%.0f samples/s); its 8 GEMMs alone in cuBLAS %.1f us "
           "(%.1f TFLOP/s); step reaches %.0f%% of that roofline\n",
           (long long)o->big_batch, big_us, (double)o->big_batch / big_us * 1e6, gemm_us,
           flops / gemm_us * 1e-6, 100.0 * gemm_us / big_us);
    len += (size_t)snprintf(json + len, json_bytes - len,
                            "\"big_batch\":%lld,\"big_step_us\":%.3f,\"big_samples_per_s\":%.0f,"
                            "\"gemm_us\":%.3f,\"gemm_tflops\":%.3f,\"roofline_frac\":%.4f,",
                            (long long)o->big_batch, big_us, (double)o->big_batch / big_us * 1e6,
                            gemm_us, flops / gemm_us * 1e-6, gemm_us / big_us);
  }
  kern_backend_free(be);
}
#endif

int main(int argc, char **argv) {
  bench_opts o;
  if (parse(&o, argc, argv) != 0) return 2;
  const int cuda = !strcmp(o.device, "cuda");
  const kern_math math = strcmp(o.math, "tf32") ? KERN_MATH_FP32 : KERN_MATH_TF32;
  char dev[256] = "cpu", why[256] = "";
  if (cuda && kern_cuda_device_count(why, sizeof why) <= 0) {
    fprintf(stderr, "gpu_step_bench: no GPU (%s); use --device cpu\n", why);
    return 77;
  }
  static char json[8192];
  size_t len = 0;
  printf("# tfdist training step, 784-300-100-10, batch %lld, %s, %s\n", (long long)o.batch,
         o.device, o.math);
  double main_us, ops = -1.0;
  if (cuda) {
    main_us = run_variant(&o, o.batch, 0, math, KERN_GEMM_AUTO, 1, o.steps, TRAIN_STEP_CHAIN);
    const int main_fused = last_fused;
    const int64_t main_chain = last_chain;
#if TFDIST_HAVE_CUDA
    bench_cuda_device_name(dev, sizeof dev);
#endif
    const char *env = getenv("TFDIST_GEMM");
    printf("# %s; default: the fused step, %d per launch (the trainer's chain); op by op: GEMMs "
           "auto%s%s%s (cuBLAS)\n",
           dev, TRAIN_STEP_CHAIN, env ? " (TFDIST_GEMM=" : "", env ? env : "", env ? ")" : "");
    const char *cap = getenv("TFDIST_FUSED_CHAIN");
    if (cap && cap[0]) printf("# TFDIST_FUSED_CHAIN=%s: at most that many steps per launch\n", cap);
    const double fused_one = run_variant(&o, o.batch, 0, math, KERN_GEMM_AUTO, 1, o.steps, 1);
    const double fused_eager = run_variant(&o, o.batch, 0, math, KERN_GEMM_AUTO, 0, o.steps, 1);
    ops = run_variant(&o, o.batch, 0, math, KERN_GEMM_AUTO, 1, o.steps, 0);
    const double small = run_variant(&o, o.batch, 0, math, KERN_GEMM_SMALL, 1, o.steps, 0);
    const double eager = run_variant(&o, o.batch, 0, math, KERN_GEMM_AUTO, 0, o.steps, 0);
    const double unfused = run_variant(&o, o.batch, 1, math, KERN_GEMM_AUTO, 1, o.steps, 0);
    const double tf32 = run_variant(&o, o.batch, 0, KERN_MATH_TF32, KERN_GEMM_AUTO, 1, o.steps, 0);
    print_row(main_fused ? "graph, fused, chain (default)" : "graph, default (not fused here)",
              main_us, o.batch);
    print_row(main_fused ? "graph, fused, 1 step per launch" : "graph, not fused here", fused_one,
              o.batch);
    print_row(main_fused ? "eager, fused, 1 step per launch" : "eager, not fused here",
              fused_eager, o.batch);
    print_row("graph, op by op, GEMMs auto", ops, o.batch);
    print_row("graph, op by op, small GEMM kernels", small, o.batch);
    print_row("eager, op by op", eager, o.batch);
    print_row("graph, op by op, cuDNN act (unfused)", unfused, o.batch);
    print_row("graph, op by op, cuBLAS tf32", tf32, o.batch);
    len += (size_t)snprintf(json + len, sizeof json - len,
                            "\"fused\":%s,\"chain\":%d,\"fused_one_us\":%.3f,"
                            "\"fused_eager_us\":%.3f,\"ops_us\":%.3f,\"small_us\":%.3f,"
                            "\"eager_us\":%.3f,\"unfused_us\":%.3f,\"tf32_us\":%.3f,",
                            main_fused ? "true" : "false", (int)main_chain,
                            fused_one, fused_eager, ops, small, eager, unfused, tf32);
  } else {
    main_us = run_variant(&o, o.batch, 0, math, KERN_GEMM_AUTO, 0, o.steps, 0);
    print_row("cpu backend, eager", main_us, o.batch);
  }
  if (main_us <= 0) { /* the variants that did run still reach the table */
    printf("JSON {\"bench\":\"tfdist_step\",\"device\":\"%s\",\"batch\":%lld,%s"
           "\"error\":\"step failed\"}\n",
           dev, (long long)o.batch, json);
    return 1;
  }
#if TFDIST_HAVE_CUDA
  if (cuda) cuda_extras(&o, math, main_us, ops, json + len, sizeof json - len);
#endif
  printf("JSON {\"bench\":\"tfdist_step\",\"device\":\"%s\",\"batch\":%lld,%s\"step_us\":%.3f,"
         "\"samples_per_s\":%.0f}\n",
         dev, (long long)o.batch, json, main_us, (double)o.batch / main_us * 1e6);
  return 0;
}
