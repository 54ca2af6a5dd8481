/* Library versions as linked (not as headed), like horovodrun --check-build. */
#include "train/buildinfo.h"

#include <hdf5.h>
#include <zlib.h>

#include "collective/coll.h"
#include "kernels/backend.h"
#include "tfdist_config.h"
#include "train/train_config.h"

cJSON *buildinfo_json(void) {
  cJSON *o = cJSON_CreateObject();
  char mpi[256], cuda[512], hdf5[64], cjson[32];
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  snprintf(hdf5, sizeof hdf5, "%u.%u.%u", maj, min, rel);
  snprintf(cjson, sizeof cjson, "%s", cJSON_Version());
  coll_mpi_version(mpi, sizeof mpi);
  kern_cuda_info(cuda, sizeof cuda);
  cJSON_AddStringToObject(o, "tfdist", TFDIST_VERSION);
  cJSON_AddStringToObject(o, "blas", kern_blas_info());
  cJSON_AddStringToObject(o, "mpi", mpi);
  cJSON_AddStringToObject(o, "hdf5", hdf5);
  cJSON_AddStringToObject(o, "cjson", cjson);
  cJSON_AddStringToObject(o, "zlib", zlibVersion());
  cJSON_AddBoolToObject(o, "cuda_built", TFDIST_HAVE_CUDA);
  cJSON_AddStringToObject(o, "cuda", cuda);
  return o;
}

/* The --allreduce back ends this build carries (nccl: the CUDA module's,
 * once loaded), in coll_backend's order, and where --compression applies. */
static void buildinfo_print_allreduce(FILE *out) {
  static const char *const how[] = {
    [COLL_BACKEND_MPI] = "MPI_Allreduce",
    [COLL_BACKEND_RING] = "ring over MPI point-to-point",
    [COLL_BACKEND_NCCL] = "NCCL, --device cuda",
    [COLL_BACKEND_TCP] = "ring over a TF_CONFIG cluster's TCP mesh",
    [COLL_BACKEND_SHM] = "shared memory, ranks of one node",
    [COLL_BACKEND_HIER] = "shm within each node (zero copy), a ring across nodes",
  };
  for (int b = COLL_BACKEND_MPI; b <= COLL_BACKEND_HIER; b++) {
    const int have = coll_backend_available((coll_backend)b);
    fprintf(out, "  [%c] allreduce %-5s %s%s\n", have ? 'X' : ' ',
            coll_backend_name((coll_backend)b), how[b], have ? "" : " (not in this build)");
  }
  fprintf(out, "  [X] compression     --compression none|bf16|fp16: 16-bit transfers on ring, "
          "tcp and hier's ring across nodes, every sum fp32\n");
}

void buildinfo_print(FILE *out) {
  char why[256] = "", load_err[512] = "";
  /* Versions as linked: load the CUDA module (a training run on the CPU never does). */
  if (TFDIST_HAVE_CUDA) kern_cuda_load(load_err, sizeof load_err);
  cJSON *o = buildinfo_json();
  int gpus = kern_cuda_device_count(why, sizeof why);
  fprintf(out, "tfdist %s build:\n", TFDIST_VERSION);
  fprintf(out, "  [X] CPU backend     BLAS: %s\n", cJSON_GetObjectItem(o, "blas")->valuestring);
  static train_config auto_cfg; /* --threads auto, as a run here would resolve it */
  train_threads_resolve(&auto_cfg, 0);
  fprintf(out, "  [X] CPU threads     --threads auto (the default) runs %d per rank here (%s); "
          "a team per rank (1 rank: the fused step, rows of the batch, then rows of every dW; "
          "more: column slices of every GEMM), BLAS single-threaded\n", auto_cfg.threads_run,
          auto_cfg.threads_why);
  fprintf(out, "  [X] MPI             %s\n", cJSON_GetObjectItem(o, "mpi")->valuestring);
  buildinfo_print_allreduce(out);
  fprintf(out, "  [X] HDF5            %s\n", cJSON_GetObjectItem(o, "hdf5")->valuestring);
  fprintf(out, "  [X] cJSON           %s\n", cJSON_GetObjectItem(o, "cjson")->valuestring);
  fprintf(out, "  [X] zlib            %s\n", cJSON_GetObjectItem(o, "zlib")->valuestring);
  fprintf(out, "  [%c] CUDA/cuBLAS/cuDNN/NCCL  %s\n", TFDIST_HAVE_CUDA ? 'X' : ' ',
          cJSON_GetObjectItem(o, "cuda")->valuestring);
  if (TFDIST_HAVE_CUDA) {
    if (load_err[0]) fprintf(out, "      %s\n", load_err);
    if (gpus > 0) fprintf(out, "      GPUs visible: %d\n", gpus);
    else fprintf(out, "      GPUs visible: 0 (%s)\n", why);
  }
  cJSON_Delete(o);
}
