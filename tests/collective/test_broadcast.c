/* Broadcast test under mpirun: every rank starts from different weights
 * (random, seeded by rank); after coll_broadcast_f32 from each root in turn
 * every rank's checksum equals the root's, and the values are the root's
 * own. Byte broadcasts of 0, 1 and 7 bytes too. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/coll.h"
#include "tests/check.h"
#include "tests/collective/coll_test.h"

#define PARAMS 266610 /* the tutorial model's parameter count */

static void fill(float *w, int64_t n, int seed_rank) {
  uint64_t s = 0x243f6a8885a308d3ULL * (uint64_t)(seed_rank + 1);
  for (int64_t i = 0; i < n; i++) w[i] = (float)coll_test_uniform(&s);
}

int main(int argc, char **argv) {
  coll_world w;
  char err[512];
  coll_test_world_init(&w, &argc, &argv);
  coll_config cfg = {.backend = COLL_BACKEND_RING, .timeout_s = 60};
  coll_comm *c = NULL;
  if (coll_comm_init(&c, &w, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  float *wts = malloc(PARAMS * sizeof(float)), *ref = malloc(PARAMS * sizeof(float));
  if (!wts || !ref) abort();
  for (int root = 0; root < w.size; root++) {
    fill(wts, PARAMS, w.rank);
    fill(ref, PARAMS, root);
    CHECK(w.size == 1 || root == w.rank || memcmp(wts, ref, PARAMS * sizeof(float)) != 0);
    CHECK_EQ_INT(coll_broadcast_f32(c, wts, PARAMS, root), COLL_OK);
    char what[32];
    snprintf(what, sizeof what, "root %d", root);
    coll_test_same_hash(coll_test_fnv1a(wts, PARAMS * sizeof(float)), root, w.rank, w.size, what);
    CHECK(memcmp(wts, ref, PARAMS * sizeof(float)) == 0);
  }
  const int64_t sizes[] = {0, 1, 7};
  for (size_t i = 0; i < 3; i++) {
    unsigned char b[8];
    memset(b, w.rank == w.size - 1 ? 0xa5 : w.rank, sizeof b);
    CHECK_EQ_INT(coll_broadcast_bytes(c, b, sizes[i], w.size - 1), COLL_OK);
    for (int64_t k = 0; k < sizes[i]; k++) CHECK_EQ_INT(b[k], 0xa5);
    if (sizes[i] < 8 && w.rank != w.size - 1) CHECK_EQ_INT(b[sizes[i]], w.rank);
  }
  CHECK_EQ_INT(coll_broadcast_f32(c, wts, 4, w.size), COLL_ERR); /* no such root */
  double fails = check_failures;
  MPI_Allreduce(MPI_IN_PLACE, &fails, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  if (w.rank == 0) printf("broadcast, %d rank(s): %s\n", w.size, fails == 0 ? "identical" : "FAILED");
  free(wts);
  free(ref);
  coll_comm_free(c);
  coll_world_finalize(&w);
  if (fails != 0 && !check_failures) check_failures = 1;
  CHECK_DONE();
}
