/* Helpers of the MPI collective tests: seeded real-valued inputs, a checksum,
 * and the cross-rank check that every rank holds the same bits. */
#ifndef TFDIST_TESTS_COLL_TEST_H
#define TFDIST_TESTS_COLL_TEST_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "collective/coll.h"
#include "tests/check.h"

/* A test that cannot start MPI has nothing to check: exit 1 with the reason. */
static void coll_test_world_init(coll_world *w, int *argc, char ***argv) {
  char err[512];
  if (coll_world_init(w, argc, argv, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
}

/* Uniform in [-0.5, 0.5) from a 64-bit LCG (Knuth's MMIX constants). */
static double coll_test_uniform(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) / 9007199254740992.0 - 0.5;
}

static uint64_t coll_test_fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

/* Every rank's h must equal rank ref's; each mismatch is a check failure. */
static void coll_test_same_hash(uint64_t h, int ref, int rank, int size, const char *what) {
  uint64_t *all = malloc((size_t)size * sizeof *all);
  if (!all) abort();
  MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (int r = 0; r < size; r++) {
    if (all[r] != all[ref]) {
      fprintf(stderr, "rank %d: %s: rank %d checksum %016llx != rank %d's %016llx\n", rank, what,
              r, (unsigned long long)all[r], ref, (unsigned long long)all[ref]);
      check_failures++;
    }
  }
  free(all);
}

#endif
