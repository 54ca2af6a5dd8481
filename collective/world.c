/* The world: MPI start-up (rank, size and the local rank from the
 * shared-memory split, which is right under mpirun, srun and mpirun inside
 * a Slurm allocation), or a transport of the caller's; its end and abort. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collective/transport_mpi.h"

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

/* Isolated singletons all take job family 0, so they share
 * <tmp>/ompi.<host>.<uid>/jf.0: one finishing removes it while another is
 * creating it, and that one's MPI_Init fails ("mkdir ... File exists"). Each
 * singleton gets its own session base instead, removed at finalize. */
#define WORLD_SESSION_PREFIX "tfdist-mpi."
static char world_session_dir[PATH_MAX];

static int world_session_rm_entry(const char *path, const struct stat *st, int flag,
                                  struct FTW *ftw) {
  (void)st, (void)ftw;
  return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void world_session_rm(const char *dir) {
  nftw(dir, world_session_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A base left by a singleton that was killed or aborted: ours by name and
 * owner, and its pid is gone. */
static int world_session_is_stale(const char *base, const char *name, char *path, size_t bytes) {
  if (strncmp(name, WORLD_SESSION_PREFIX, strlen(WORLD_SESSION_PREFIX)) != 0) return 0;
  char *end = NULL;
  long pid = strtol(name + strlen(WORLD_SESSION_PREFIX), &end, 10);
  if (!end || *end != '.' || pid <= 0 || pid > INT_MAX) return 0;
  if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) return 0;
  struct stat st;
  if (snprintf(path, bytes, "%s/%s", base, name) >= (int)bytes) return 0;
  return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid();
}

static void world_session_sweep(const char *base) {
  DIR *d = opendir(base);
  if (!d) return;
  struct dirent *e;
  char path[PATH_MAX];
  while ((e = readdir(d)) != NULL) {
    if (world_session_is_stale(base, e->d_name, path, sizeof path)) world_session_rm(path);
  }
  closedir(d);
}

static void world_session_setup(void) {
  if (getenv("OMPI_MCA_orte_tmpdir_base")) return;
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  world_session_sweep(base);
  char dir[PATH_MAX];
  if (snprintf(dir, sizeof dir, "%s/" WORLD_SESSION_PREFIX "%ld.XXXXXX", base, (long)getpid()) >=
          (int)sizeof dir ||
      !mkdtemp(dir)) {
    return; /* Open MPI's default base still works, with the race above */
  }
  snprintf(world_session_dir, sizeof world_session_dir, "%s", dir);
  setenv("OMPI_MCA_orte_tmpdir_base", world_session_dir, 1);
}

static int world_env_int(const char *const *vars, size_t n, int fallback) {
  for (size_t i = 0; i < n; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) return atoi(v);
  }
  return fallback;
}

int coll_world_launched(int *rank, int *size) {
  static const char *const launched[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                         "SLURM_STEP_ID"};
  static const char *const ranks[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                      "SLURM_PROCID"};
  static const char *const sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS",
                                      "SLURM_NTASKS"};
  int yes = 0;
  for (size_t i = 0; i < sizeof launched / sizeof launched[0]; i++) {
    yes |= getenv(launched[i]) != NULL;
  }
  if (rank) *rank = world_env_int(ranks, sizeof ranks / sizeof ranks[0], 0);
  if (size) *size = world_env_int(sizes, sizeof sizes / sizeof sizes[0], -1);
  return yes;
}

/* Under no launcher, Open MPI would fork an orted via ssh just to run one
 * rank; isolated singleton mode needs neither. */
static void world_singleton_env(void) {
  if (coll_world_launched(NULL, NULL)) return;
  setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
  setenv("OMPI_MCA_plm", "^rsh", 0);
  const char *iso = getenv("OMPI_MCA_ess_singleton_isolated");
  if (iso && (!strcmp(iso, "1") || !strcmp(iso, "true"))) world_session_setup();
}

int coll_world_init(coll_world *w, int *argc, char ***argv, char *err, size_t err_bytes) {
  memset(w, 0, sizeof *w);
  world_singleton_env();
  int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &w->thread_level);
  if (rc != MPI_SUCCESS) {
    world_mpi_error(rc, err, err_bytes, "MPI_Init_thread");
    if (world_session_dir[0]) world_session_rm(world_session_dir);
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
  rc = MPI_Allreduce(&w->rank, &w->node_first, 1, MPI_INT, MPI_MIN, local);
  MPI_Comm_free(&local);
  if (rc != MPI_SUCCESS) {
    world_mpi_error(rc, err, err_bytes, "MPI_Allreduce(node)");
    return COLL_ERR;
  }
  if (gethostname(w->host, sizeof w->host - 1) != 0) snprintf(w->host, sizeof w->host, "?");
  /* Only with MPI_THREAD_MULTIPLE may a second thread call MPI; without it
   * non-blocking calls run to completion when started. */
  w->async = w->thread_level >= MPI_THREAD_MULTIPLE;
  w->tp = &coll_mpi_transport;
  return COLL_OK;
}

void coll_mpi_world_finalize(coll_world *w) {
  (void)w;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
  if (world_session_dir[0]) {
    world_session_rm(world_session_dir);
    world_session_dir[0] = '\0';
  }
}

void coll_world_init_transport(coll_world *w, const coll_transport_ops *ops, void *state,
                               int rank, int size, int local_rank, int local_size) {
  memset(w, 0, sizeof *w);
  w->rank = rank;
  w->size = size;
  w->local_rank = local_rank;
  w->local_size = local_size;
  w->node_first = rank - local_rank; /* the transport sets it where its ranks interleave */
  w->async = (ops->caps & COLL_TP_ASYNC) != 0;
  w->tp = ops;
  w->tp_state = state;
  if (gethostname(w->host, sizeof w->host - 1) != 0) snprintf(w->host, sizeof w->host, "?");
}

int coll_world_gather_info(const coll_world *w, const coll_rank_info *mine, coll_rank_info *rows,
                           char *err, size_t err_bytes) {
  return w->tp->gather(w, mine, rows, (int64_t)sizeof *mine, err, err_bytes);
}

void coll_world_finalize(coll_world *w) {
  if (w->tp && w->tp->finalize) w->tp->finalize(w);
  w->tp = NULL;
  w->tp_state = NULL;
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
  if (w && w->tp) w->tp->abort(w, code);
  _exit(code); /* no world (or a transport that came back): this process alone */
}
