/* MPI start-up: rank, size and the local rank from the shared-memory split,
 * which is right under mpirun, srun and mpirun inside a Slurm allocation. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collective/coll.h"

static void world_mpi_error(int code, char *err, size_t err_bytes, const char *what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, msg, &len);
  snprintf(err, err_bytes, "%s: %s", what, msg);
}

void coll_mpi_version(char *out, size_t out_bytes) {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  v[strcspn(v, "\n")] = '\0';
  snprintf(out, out_bytes, "%s", v);
}

/* Under no launcher, Open MPI would fork an orted via ssh just to run one
 * rank; isolated singleton mode needs neither. */
static void world_singleton_env(void) {
  const char *launched[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_ID"};
  for (size_t i = 0; i < sizeof launched / sizeof launched[0]; i++) {
    if (getenv(launched[i])) return;
  }
  setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
  setenv("OMPI_MCA_plm", "^rsh", 0);
}

int coll_world_init(coll_world *w, int *argc, char ***argv, char *err, size_t err_bytes) {
  memset(w, 0, sizeof *w);
  world_singleton_env();
  int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &w->thread_level);
  if (rc != MPI_SUCCESS) {
    world_mpi_error(rc, err, err_bytes, "MPI_Init_thread");
    return COLL_ERR;
  }
  /* Errors come back as codes so the library can report them, not abort. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w->size);
  MPI_Comm local;
  rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &local);
  if (rc != MPI_SUCCESS) {
    world_mpi_error(rc, err, err_bytes, "MPI_Comm_split_type");
    return COLL_ERR;
  }
  MPI_Comm_rank(local, &w->local_rank);
  MPI_Comm_size(local, &w->local_size);
  MPI_Comm_free(&local);
  if (gethostname(w->host, sizeof w->host - 1) != 0) snprintf(w->host, sizeof w->host, "?");
  return COLL_OK;
}

int coll_world_gather_info(const coll_world *w, const coll_rank_info *mine, coll_rank_info *rows,
                           char *err, size_t err_bytes) {
  (void)w;
  int rc = MPI_Allgather(mine, (int)sizeof *mine, MPI_BYTE, rows, (int)sizeof *mine, MPI_BYTE,
                         MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) {
    world_mpi_error(rc, err, err_bytes, "MPI_Allgather(rank info)");
    return COLL_ERR;
  }
  return COLL_OK;
}

void coll_world_finalize(coll_world *w) {
  (void)w;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

/* After a stall every live rank aborts at nearly the same moment, and Open
 * MPI 4.1's mpirun can crash (SIGSEGV in show_help) unpacking simultaneous
 * abort reports; a head start for lower ranks lets the first one win and
 * mpirun kill the rest. */
void coll_world_abort(const coll_world *w, int code) {
  int rank = w ? w->rank : 0;
  if (rank > 0) {
    struct timespec ts = {0, 150000000L * (rank < 6 ? rank : 6)};
    nanosleep(&ts, NULL);
  }
  MPI_Abort(MPI_COMM_WORLD, code);
}
