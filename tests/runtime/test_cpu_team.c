/* The CPU back end's thread team (kernels/cpu_team.h), 2-4 threads on a
 * 2-core machine, so members are often late or held off their core:
 *   - an open job (cpu_team_run_open) hands out fixed pieces from a shared
 *     counter; every piece runs exactly once, whichever member takes it,
 *     and no member is still inside when the call returns;
 *   - a plain job (cpu_team_run) runs on every member exactly once, also
 *     right after an open job that some member was late for, and no member
 *     of the open job touches its (poisoned) state once the call returned;
 *   - cpu_team_count_wait returns only once the count is reached.
 * Thousands of jobs alternate between the two kinds; members linger after
 * their pieces, so a caller that did not wait for them is caught. Once with
 * the spin policy's own waits, once with TFDIST_TEAM_SPIN_US=0: every wait
 * then sleeps on the futex at once, so a lost wake-up hangs the test. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "kernels/cpu_team.h"

#define PIECES 7
#define ROUNDS 3000

typedef struct {
  _Atomic uint32_t next;
  cpu_team_count done;
  _Atomic int ran[PIECES];
  _Atomic int inside; /* members inside fn */
  int value[PIECES];
  int round;
  cpu_team *team;
} open_job;

static void linger(void) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 20000L);
}

static void open_fn(void *ctx, int tid, int n) {
  open_job *j = ctx;
  (void)n;
  atomic_fetch_add(&j->inside, 1);
  for (;;) {
    uint32_t k = atomic_fetch_add(&j->next, 1);
    if (k >= PIECES) break;
    if (k >= 4) cpu_team_count_wait(j->team, &j->done, 4); /* pieces 4.. see pieces 0..3 */
    int v = j->round * 10 + (int)k;
    if (k >= 4) {
      for (int i = 0; i < 4; i++) v += j->value[i] - (j->round * 10 + i); /* 0 when all wrote */
    }
    j->value[k] = v;
    atomic_fetch_add(&j->ran[k], 1);
    cpu_team_count_add(&j->done);
  }
  if (tid == 0) cpu_team_count_wait(j->team, &j->done, PIECES);
  else linger(); /* the caller must wait for this member to leave */
  atomic_fetch_sub(&j->inside, 1);
}

typedef struct {
  _Atomic int ran[8];
} plain_job;

static void plain_fn(void *ctx, int tid, int n) {
  plain_job *j = ctx;
  (void)n;
  atomic_fetch_add(&j->ran[tid], 1);
}

/* spin: TFDIST_TEAM_SPIN_US for the teams (read by cpu_team_init); NULL: the policy's. */
static void teams_check(const char *spin) {
  if (spin) setenv("TFDIST_TEAM_SPIN_US", spin, 1);
  for (int threads = 2; threads <= 4; threads++) {
    cpu_team *t = NULL;
    char err[256];
    /* 2 threads with the long spin, 3 and 4 (more than these 2 cores) the short */
    if (cpu_team_init(&t, threads, threads > 2, err, sizeof err) != 0) {
      fprintf(stderr, "team: %s\n", err);
      check_failures++;
      return;
    }
    int bad_open = 0, bad_plain = 0, left_inside = 0, late = 0;
    open_job poison;
    memset(&poison, 0xff, sizeof poison);
    for (int r = 0; r < ROUNDS; r++) {
      open_job o;
      memset(&o, 0, sizeof o);
      o.round = r;
      o.team = t;
      cpu_team_run_open(t, open_fn, &o);
      left_inside += atomic_load(&o.inside) != 0;
      for (int k = 0; k < PIECES; k++) {
        bad_open += atomic_load(&o.ran[k]) != 1 || o.value[k] != r * 10 + k;
      }
      /* A member still in (or late for) this open job would now write into
       * the poisoned bytes (its counters, its pieces) while the plain job runs. */
      memset(&o, 0xff, sizeof o);
      plain_job p;
      memset(&p, 0, sizeof p);
      cpu_team_run(t, plain_fn, &p);
      for (int m = 0; m < threads; m++) bad_plain += atomic_load(&p.ran[m]) != 1;
      late += memcmp(&o, &poison, sizeof o) != 0;
    }
    cpu_team_free(t);
    if (bad_open || bad_plain || left_inside || late) {
      fprintf(stderr, "%d threads, spin %s: %d bad pieces, %d bad plain members, %d open jobs "
              "with a member inside after the call, %d touched by a late member\n", threads,
              spin ? spin : "default", bad_open, bad_plain, left_inside, late);
      check_failures++;
    }
  }
  unsetenv("TFDIST_TEAM_SPIN_US");
}

int main(void) {
  teams_check(NULL);
  teams_check("0");
  CHECK_DONE();
}
