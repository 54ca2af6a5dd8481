/* What a back end implements: the ops table behind the opaque kern_backend
 * (backend.h), and the entry point of the CUDA module. Included by back ends
 * (cpu.c, kernels/cuda/) and the dispatch in backend.c, never by callers. */
#ifndef TFDIST_KERNELS_BACKEND_IMPL_H
#define TFDIST_KERNELS_BACKEND_IMPL_H

#include "kernels/backend.h"
#include "kernels/mlp_step.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One entry per kern_<op>() of backend.h, with the same arguments. */
typedef struct kern_ops {
  const char *name;
  int host_memory; /* backend memory is host memory (kern_is_host_memory) */
  void (*destroy)(kern_backend *be);
  int (*mem_alloc)(kern_backend *be, void **ptr, size_t bytes);
  void (*mem_free)(kern_backend *be, void *ptr);
  int (*mem_upload)(kern_backend *be, void *dst, const void *src, size_t bytes);
  int (*mem_download)(kern_backend *be, void *dst, const void *src, size_t bytes);
  int (*mem_zero)(kern_backend *be, void *dst, size_t bytes);
  int (*mem_copy)(kern_backend *be, void *dst, const void *src, size_t bytes);
  int (*host_alloc)(kern_backend *be, void **ptr, size_t bytes);
  void (*host_free)(kern_backend *be, void *ptr);
  int (*sync)(kern_backend *be);
  int (*dense_forward)(kern_backend *be, float *out, const float *in, const float *w,
                       const float *b, int64_t n, int64_t in_dim, int64_t out_dim,
                       kern_act act);
  int (*dense_backward)(kern_backend *be, float *din, float *dw, float *db, float *dout,
                        const float *in, const float *w, const float *out, int64_t n,
                        int64_t in_dim, int64_t out_dim, kern_act act);
  int (*xent)(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
              const int32_t *labels, int64_t n, int64_t classes, float grad_scale);
  int (*softmax)(kern_backend *be, float *probs, const float *logits, int64_t n,
                 int64_t classes);
  int (*gather_u8)(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                   const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                   const int64_t *cursor, int64_t n);
  int (*cursor_advance)(kern_backend *be, int64_t *cursor, int64_t delta);
  int (*opt_update)(kern_backend *be, float *params, const float *grads, float *state,
                    int64_t elems, const kern_opt *opt);
  /* Optional (NULL on CPU): graph capture and replay. */
  int (*graph_begin)(kern_backend *be);
  int (*graph_end)(kern_backend *be, void **graph);
  int (*graph_launch)(kern_backend *be, void *graph);
  void (*graph_free)(kern_backend *be, void *graph);
  void *(*stream)(kern_backend *be); /* optional: NULL on CPU */
  /* Optional (NULL on CPU): the MLP step of mlp_step.h in one launch. */
  int (*fused_step_ws)(kern_backend *be, const kern_step *s, size_t *bytes);
  int (*fused_step)(kern_backend *be, const kern_step *s);
} kern_ops;

struct kern_backend {
  const kern_ops *ops;
  kern_config cfg;
  char err[512]; /* last error, one line */
};

int kern_cpu_create(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes);

/* The CUDA module (tfdist-cuda.so: kernels/cuda and collective/nccl.c) has
 * one entry point, KERN_CUDA_MODULE_ENTRY, returning this table. The loader
 * (cuda_load.c) refuses a module built from another tree or ABI. */
#define KERN_CUDA_MODULE_ABI 1
#define KERN_CUDA_MODULE_ENTRY "kern_cuda_module_get"
typedef struct {
  int abi;                   /* KERN_CUDA_MODULE_ABI */
  const char *version;       /* TFDIST_VERSION of the build */
  size_t backend_bytes;      /* sizeof(struct kern_backend) */
  size_t config_bytes;       /* sizeof(kern_config) */
  /* Binds cfg->device_index (cudaSetDevice) before any other CUDA call that
   * touches a device. */
  int (*create)(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes);
  void (*info)(char *out, size_t out_bytes); /* versions as linked */
} kern_cuda_module;
typedef const kern_cuda_module *(*kern_cuda_module_fn)(void);
const kern_cuda_module *kern_cuda_module_get(void);

#ifdef __cplusplus
}
#endif

#endif
