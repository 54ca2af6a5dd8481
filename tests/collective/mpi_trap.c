/* A trap for MPI start-up, loaded with LD_PRELOAD by test_no_mpi.py: a call
 * to MPI_Init or MPI_Init_thread leaves a marker file in
 * $TFDIST_MPI_TRAP_DIR (named after the caller's pid) and aborts, so a run
 * that starts MPI fails and says so. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void mpi_trap_fire(const char *which) {
  const char *dir = getenv("TFDIST_MPI_TRAP_DIR");
  char path[4096];
  int n = dir ? snprintf(path, sizeof path, "%s/%s.%ld", dir, which, (long)getpid()) : -1;
  if (n > 0 && n < (int)sizeof path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ssize_t ignored = write(fd, which, strlen(which));
      (void)ignored;
      close(fd);
    }
  }
  fprintf(stderr, "mpi_trap: %s called (pid %ld)\n", which, (long)getpid());
  abort();
}

int MPI_Init(int *argc, char ***argv);
int MPI_Init_thread(int *argc, char ***argv, int required, int *provided);

int MPI_Init(int *argc, char ***argv) {
  (void)argc, (void)argv;
  mpi_trap_fire("MPI_Init");
  return 1;
}

int MPI_Init_thread(int *argc, char ***argv, int required, int *provided) {
  (void)argc, (void)argv, (void)required, (void)provided;
  mpi_trap_fire("MPI_Init_thread");
  return 1;
}
