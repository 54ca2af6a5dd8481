/* The CUDA module (tfdist-cuda.so) as the main binary loads it: a missing
 * module is refused in one line; the real one loads (RTLD_GLOBAL: the
 * collective then finds the NCCL table by name). Without a GPU the driver
 * probe says why and creating the back end fails with one check line naming
 * rank, host, device, the call, file:line and CUDA's words; with one, the
 * back end answers the capability queries as a device back end. The CPU back
 * end answers them as host memory without graphs or a fused step.
 *   test_cuda_module PATH/tfdist-cuda.so */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collective/coll.h"
#include "kernels/backend.h"
#include "kernels/mlp_step.h"
#include "tests/check.h"

static void check_missing_module(void) {
  kern_config kc = {.device = KERN_DEVICE_CUDA, .rank = 3};
  kern_backend *be = NULL;
  char err[512] = "";
  setenv("TFDIST_CUDA_MODULE", "/nonexistent/tfdist-cuda.so", 1);
  CHECK(kern_backend_init(&be, &kc, err, sizeof err) != 0 && be == NULL);
  printf("missing module: %s\n", err);
  CHECK(strstr(err, "CUDA back end: cannot load /nonexistent/tfdist-cuda.so") == err);
  CHECK(strchr(err, '\n') == NULL);
  CHECK(!coll_backend_available(COLL_BACKEND_NCCL));
}

static void check_cuda_backend(const char *module) {
  kern_config kc = {.device = KERN_DEVICE_CUDA, .rank = 3};
  kern_backend *be = NULL;
  char err[512] = "", why[256] = "", host[64] = "", want[160];
  setenv("TFDIST_CUDA_MODULE", module, 1);
  const int gpus = kern_cuda_device_count(why, sizeof why);
  const int rc = kern_backend_init(&be, &kc, err, sizeof err);
  CHECK(coll_backend_available(COLL_BACKEND_NCCL)); /* the module is loaded either way */
  if (gpus > 0) {
    printf("%d GPU(s): %s\n", gpus, rc == 0 ? "cuda back end created" : err);
    CHECK(rc == 0);
    if (rc != 0) return;
    CHECK(strcmp(kern_name(be), "cuda") == 0);
    CHECK(!kern_is_host_memory(be) && kern_has_graphs(be) && kern_stream(be) != NULL);
    kern_backend_free(be);
    return;
  }
  printf("no GPU (%s); create: %s\n", why, err);
  CHECK(why[0] != '\0' && rc != 0 && be == NULL);
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
  host[sizeof host - 1] = '\0';
  snprintf(want, sizeof want, "rank 3 on %s cuda:0: CUDA cudaSetDevice(", host);
  CHECK(strstr(err, want) == err);
  CHECK(strstr(err, "failed at ") != NULL && strstr(err, "cuda_backend.c:") != NULL);
  CHECK(strchr(err, '\n') == NULL);
}

static void check_cpu_backend(void) {
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  kern_backend *be = NULL;
  char err[512] = "";
  CHECK(kern_backend_init(&be, &kc, err, sizeof err) == 0);
  if (!be) return;
  CHECK(strcmp(kern_name(be), "cpu") == 0);
  CHECK(kern_is_host_memory(be) && !kern_has_graphs(be) && kern_stream(be) == NULL);
  kern_step s;
  memset(&s, 0, sizeof s);
  size_t bytes = 1;
  /* the CPU back end fuses the step too (one team job, no workspace) */
  CHECK(kern_fused_step_ws(be, &s, &bytes) == 0 && bytes == 0);
  CHECK(kern_graph_begin(be) == -1 && strstr(kern_error(be), "records no graphs") != NULL);
  kern_backend_free(be);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_cuda_module PATH/tfdist-cuda.so\n");
    return 2;
  }
  check_missing_module();
  check_cuda_backend(argv[1]);
  char info[512];
  kern_cuda_info(info, sizeof info); /* from the loaded module: as linked */
  printf("cuda: %s\n", info);
  CHECK(strstr(info, "cuBLAS ") != NULL && strstr(info, "NCCL ") != NULL);
  check_cpu_backend();
  printf("%s\n", check_failures ? "FAILED" : "ok");
  return check_failures ? 1 : 0;
}
