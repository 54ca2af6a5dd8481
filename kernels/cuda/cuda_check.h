/* One check macro per CUDA library (CUDA runtime, cuBLAS, cuDNN), for the
 * CUDA back end and for the GPU tests and benchmarks. A failed check prints
 * one line to stderr: rank, host, device, the failing expression, file:line
 * and the library's own error string; keeps it in where->err when given;
 * then runs on_fail (return -1, goto out, exit(1) ...). NCCL has its own
 * macro in collective/nccl.c (collective/ includes nothing from kernels/). */
#ifndef TFDIST_KERNELS_CUDA_CHECK_H
#define TFDIST_KERNELS_CUDA_CHECK_H

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

/* Who is checking: named in the line. */
typedef struct {
  int rank;         /* MPI rank; 0 in a single process */
  int device;       /* CUDA device index; -1 when none is bound yet */
  char *err;        /* optional: receives the line */
  size_t err_bytes;
} kc_where;

static inline void kc_check_report(const kc_where *w, const char *lib, const char *expr,
                                   const char *file, int line, const char *msg) {
  char host[64] = "?", dev[16] = "?", text[1024];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
  host[sizeof host - 1] = '\0';
  if (w->device >= 0) snprintf(dev, sizeof dev, "%d", w->device);
  snprintf(text, sizeof text, "rank %d on %s cuda:%s: %s %s failed at %s:%d: %s", w->rank, host,
           dev, lib, expr, file, line, msg);
  if (w->err && w->err_bytes) snprintf(w->err, w->err_bytes, "%s", text);
  fprintf(stderr, "%s: %s\n", program_invocation_short_name, text);
}

#define KC_CUDA_CHECK(where, expr, on_fail)                                                  \
  do {                                                                                       \
    cudaError_t kc_rc_ = (expr);                                                             \
    if (kc_rc_ != cudaSuccess) {                                                             \
      kc_check_report((where), "CUDA", #expr, __FILE__, __LINE__, cudaGetErrorString(kc_rc_)); \
      on_fail;                                                                               \
    }                                                                                        \
  } while (0)

#define KC_CUBLAS_CHECK(where, expr, on_fail)                                                \
  do {                                                                                       \
    cublasStatus_t kc_rc_ = (expr);                                                          \
    if (kc_rc_ != CUBLAS_STATUS_SUCCESS) {                                                   \
      kc_check_report((where), "cuBLAS", #expr, __FILE__, __LINE__,                          \
                      cublasGetStatusString(kc_rc_));                                        \
      on_fail;                                                                               \
    }                                                                                        \
  } while (0)

#define KC_CUDNN_CHECK(where, expr, on_fail)                                                 \
  do {                                                                                       \
    cudnnStatus_t kc_rc_ = (expr);                                                           \
    if (kc_rc_ != CUDNN_STATUS_SUCCESS) {                                                    \
      kc_check_report((where), "cuDNN", #expr, __FILE__, __LINE__, cudnnGetErrorString(kc_rc_)); \
      on_fail;                                                                               \
    }                                                                                        \
  } while (0)

#endif
