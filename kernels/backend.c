/* Backend selection: the runtime asks for a device; this picks the file. */
#include "kernels/backend.h"

#include <stdio.h>

#include "tfdist_config.h"

int kern_backend_init(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes) {
  *out = NULL;
  if (cfg->device == KERN_DEVICE_CPU) return kern_cpu_create(out, cfg, err, err_bytes);
#if TFDIST_HAVE_CUDA
  return kern_cuda_create(out, cfg, err, err_bytes);
#else
  snprintf(err, err_bytes, "--device cuda: this tfdist was built without CUDA");
  return -1;
#endif
}

void kern_backend_free(kern_backend *be) {
  if (be) be->ops->destroy(be);
}

#if !TFDIST_HAVE_CUDA
void kern_cuda_info(char *out, size_t out_bytes) { snprintf(out, out_bytes, "not built"); }

int kern_cuda_device_count(char *why, size_t why_bytes) {
  if (why) snprintf(why, why_bytes, "built without CUDA");
  return 0;
}
#endif
