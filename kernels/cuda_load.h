/* The CUDA module loader (cuda_load.c), for backend.c: the module's table,
 * loaded once; NULL with one line in err when it cannot be. */
#ifndef TFDIST_KERNELS_CUDA_LOAD_H
#define TFDIST_KERNELS_CUDA_LOAD_H

#include <stddef.h>

#include "kernels/backend_impl.h"

const kern_cuda_module *kern_cuda_module_load(char *err, size_t err_bytes);

#endif
