/* Loads the CUDA back end on demand. The main binary links no CUDA library:
 * cuBLAS, cuDNN, NCCL and the static CUDA runtime live in one module,
 * tfdist-cuda.so, dlopen()ed when a CUDA back end is asked for. GPUs are
 * counted by the driver alone (libcuda.so.1: cuInit, cuDeviceGetCount), so a
 * CPU run never maps the CUDA libraries (~150 MB of RSS). Executables that
 * link the CUDA code statically (tests/gpu, benchmarks/gpu) use that copy. */
#include "base/env.h"
#include "kernels/cuda_load.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tfdist_config.h"

#define KERN_CUDA_MODULE_FILE "tfdist-cuda.so"
#define KERN_CUDA_MODULE_ENV "TFDIST_CUDA_MODULE"

#if TFDIST_HAVE_CUDA

/* What cudaGetDeviceCount said without a driver: the message users know. */
static const char kern_no_driver[] = "no NVIDIA driver on this machine";

/* Defined where an executable links the CUDA code itself; else NULL. */
#pragma weak kern_cuda_module_get

/* dlsym for a function: ISO C has no cast from void * to a function pointer. */
#define KERN_DLSYM(fn, handle, name)                                                         \
  do {                                                                                       \
    void *kern_sym_ = (handle) ? dlsym((handle), (name)) : NULL;                             \
    memcpy(&(fn), &kern_sym_, sizeof kern_sym_);                                             \
  } while (0)

static pthread_mutex_t kern_cuda_mu = PTHREAD_MUTEX_INITIALIZER;
static const kern_cuda_module *kern_cuda_mod;

/* The folder of this executable, from /proc/self/exe; "" when unknown. */
static void kern_exe_dir(char *dir, size_t dir_bytes) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  dir[0] = '\0';
  if (n <= 0) return;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash) *slash = '\0';
  snprintf(dir, dir_bytes, "%s", exe);
}

static const kern_cuda_module *kern_cuda_module_check(kern_cuda_module_fn get, const char *path,
                                                      char *err, size_t err_bytes) {
  const kern_cuda_module *m = get();
  if (!m || m->abi != KERN_CUDA_MODULE_ABI || strcmp(m->version, TFDIST_VERSION) != 0 ||
      m->backend_bytes != sizeof(struct kern_backend) || m->config_bytes != sizeof(kern_config)) {
    snprintf(err, err_bytes, "CUDA back end %s: built from another tfdist (%s, ABI %d; this is %s)",
             path, m ? m->version : "?", m ? m->abi : -1, TFDIST_VERSION);
    return NULL;
  }
  return m;
}

/* RTLD_GLOBAL: the collective core finds the NCCL table by name (dlsym). */
static const kern_cuda_module *kern_cuda_module_open(const char *path, char *err,
                                                     size_t err_bytes) {
  void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    snprintf(err, err_bytes, "CUDA back end: cannot load %s: %s", path, dlerror());
    return NULL;
  }
  kern_cuda_module_fn get;
  KERN_DLSYM(get, h, KERN_CUDA_MODULE_ENTRY);
  const kern_cuda_module *m = NULL;
  if (!get) snprintf(err, err_bytes, "CUDA back end %s: no %s in it", path, KERN_CUDA_MODULE_ENTRY);
  else m = kern_cuda_module_check(get, path, err, err_bytes);
  if (!m) dlclose(h); /* a refused module leaves no NCCL table behind */
  return m;
}

/* $TFDIST_CUDA_MODULE, else beside the executable, in ../lib/tfdist (an
 * install), or .. (the build tree: build/cli/tfdist, build/tfdist-cuda.so). */
static const kern_cuda_module *kern_cuda_module_find(char *err, size_t err_bytes) {
  const char *env = base_env_str(KERN_CUDA_MODULE_ENV);
  if (env) return kern_cuda_module_open(env, err, err_bytes);
  char dir[PATH_MAX], path[PATH_MAX + 64];
  kern_exe_dir(dir, sizeof dir);
  static const char *const where[] = {"", "/../lib/tfdist", "/.."};
  for (size_t i = 0; dir[0] && i < sizeof where / sizeof where[0]; i++) {
    snprintf(path, sizeof path, "%s%s/%s", dir, where[i], KERN_CUDA_MODULE_FILE);
    if (access(path, F_OK) == 0) return kern_cuda_module_open(path, err, err_bytes);
  }
  snprintf(err, err_bytes, "CUDA back end: %s not found beside %s, in ../lib/tfdist or "
           "the build folder (set %s to its path)", KERN_CUDA_MODULE_FILE,
           dir[0] ? dir : "the executable", KERN_CUDA_MODULE_ENV);
  return NULL;
}

const kern_cuda_module *kern_cuda_module_load(char *err, size_t err_bytes) {
  pthread_mutex_lock(&kern_cuda_mu);
  if (!kern_cuda_mod && kern_cuda_module_get) {
    kern_cuda_mod = kern_cuda_module_check(kern_cuda_module_get, "(linked in)", err, err_bytes);
  } else if (!kern_cuda_mod) {
    kern_cuda_mod = kern_cuda_module_find(err, err_bytes);
  }
  const kern_cuda_module *m = kern_cuda_mod;
  pthread_mutex_unlock(&kern_cuda_mu);
  return m;
}

int kern_cuda_load(char *err, size_t err_bytes) {
  return kern_cuda_module_load(err, err_bytes) ? 0 : -1;
}

/* The driver API, by hand: the main binary includes no CUDA header. */
typedef int (*kern_cu_int_fn)(unsigned);
typedef int (*kern_cu_intp_fn)(int *);
typedef int (*kern_cu_str_fn)(int, const char **);

/* cuInit's failures as cudaGetDeviceCount words them (same numbers). */
static const char *kern_cu_error(void *cu, int rc) {
  switch (rc) {
  case 2: return "out of memory";
  case 3: return "initialization error";
  case 34: return "CUDA driver is a stub library";
  case 35: return kern_no_driver;
  case 46: return "CUDA-capable device(s) is/are busy or unavailable";
  case 100: return "no CUDA-capable device is detected";
  case 101: return "invalid device ordinal";
  case 800: return "operation not permitted";
  case 802: return "system not yet initialized";
  case 803: return "system has unsupported display driver / cuda driver combination";
  case 804: return "forward compatibility was attempted on non supported HW";
  case 999: return "unknown error";
  }
  kern_cu_str_fn str;
  KERN_DLSYM(str, cu, "cuGetErrorString");
  const char *s = NULL;
  return str && str(rc, &s) == 0 && s ? s : "unknown error";
}

/* libcuda.so.1, opened once and kept (the module's runtime uses it too). */
static void *kern_cu_open(void) {
  static void *cu;
  pthread_mutex_lock(&kern_cuda_mu);
  if (!cu) cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  void *h = cu;
  pthread_mutex_unlock(&kern_cuda_mu);
  return h;
}

/* The driver's CUDA version (12080 for 12.8), 0 without a driver. */
static int kern_cu_driver_version(void *cu) {
  kern_cu_intp_fn ver;
  KERN_DLSYM(ver, cu, "cuDriverGetVersion");
  int v = 0;
  if (!ver || ver(&v) != 0) v = 0;
  return v;
}

int kern_cuda_device_count(char *why, size_t why_bytes) {
  char none[8];
  if (!why) why = none, why_bytes = sizeof none;
  void *cu = kern_cu_open();
  kern_cu_int_fn init;
  kern_cu_intp_fn count;
  KERN_DLSYM(init, cu, "cuInit");
  KERN_DLSYM(count, cu, "cuDeviceGetCount");
  if (!init || !count) {
    snprintf(why, why_bytes, "%s", kern_no_driver);
    return 0;
  }
  int rc = init(0), n = 0;
  const int driver = kern_cu_driver_version(cu);
  /* a toolkit's stub libcuda answers, but no driver stands behind it */
  if (rc != 0 || driver == 0) {
    snprintf(why, why_bytes, "%s", driver == 0 ? kern_no_driver : kern_cu_error(cu, rc));
    return 0;
  }
  /* The runtime in the module needs a driver of its major version or newer. */
  if (driver < TFDIST_CUDART_VERSION / 1000 * 1000) {
    snprintf(why, why_bytes, "the NVIDIA driver runs CUDA %d.%d, older than this build's CUDA %d",
             driver / 1000, driver % 1000 / 10, TFDIST_CUDART_VERSION / 1000);
    return 0;
  }
  rc = count(&n);
  if (rc != 0) {
    snprintf(why, why_bytes, "%s", kern_cu_error(cu, rc));
    return 0;
  }
  if (n == 0) snprintf(why, why_bytes, "no CUDA device visible");
  return n;
}

void kern_cuda_info(char *out, size_t out_bytes) {
  pthread_mutex_lock(&kern_cuda_mu);
  const kern_cuda_module *m = kern_cuda_mod;
  pthread_mutex_unlock(&kern_cuda_mu);
  if (m) {
    m->info(out, out_bytes);
    return;
  }
  int drv = kern_cu_driver_version(kern_cu_open());
  char drv_s[32];
  if (drv) snprintf(drv_s, sizeof drv_s, "%d.%d", drv / 1000, drv % 1000 / 10);
  else snprintf(drv_s, sizeof drv_s, "none");
  snprintf(out, out_bytes, "runtime %d.%d, driver API %s, cuBLAS %s, cuDNN %s, NCCL %s",
           TFDIST_CUDART_VERSION / 1000, TFDIST_CUDART_VERSION % 1000 / 10, drv_s,
           TFDIST_CUBLAS_VERSION, TFDIST_CUDNN_VERSION, TFDIST_NCCL_VERSION);
}

#else /* CPU-only build */

const kern_cuda_module *kern_cuda_module_load(char *err, size_t err_bytes) {
  snprintf(err, err_bytes, "--device cuda: this tfdist was built without CUDA");
  return NULL;
}

int kern_cuda_load(char *err, size_t err_bytes) {
  return kern_cuda_module_load(err, err_bytes) ? 0 : -1;
}

int kern_cuda_device_count(char *why, size_t why_bytes) {
  if (why) snprintf(why, why_bytes, "no GPU support in this build (built without CUDA)");
  return 0;
}

void kern_cuda_info(char *out, size_t out_bytes) { snprintf(out, out_bytes, "not built"); }

#endif
