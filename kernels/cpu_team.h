/* The CPU back end's persistent thread team: one rank's step split over N
 * cores. Started once with the back end; between jobs its members spin
 * briefly, then sleep on a futex. Internal to kernels/ (cpu.c only). */
#ifndef TFDIST_KERNELS_CPU_TEAM_H
#define TFDIST_KERNELS_CPU_TEAM_H

#include <stddef.h>
#include <stdint.h>

#include <stdatomic.h>

typedef struct cpu_team cpu_team;
/* A counter members wait on: spins briefly, then sleeps on a futex. */
typedef struct {
  _Atomic uint32_t word;
  _Atomic int sleepers; /* waiters inside futex_wait, so an add skips the syscall when 0 */
} cpu_team_count;
/* One member's share of a job: tid in [0, n); tid 0 is the calling thread. */
typedef void (*cpu_team_fn)(void *ctx, int tid, int n);

/* threads >= 1; 1 starts no thread (jobs run inline). oversubscribed: the
 * node runs more compute threads than it has cores, so waiters spin 5 us
 * before they sleep, not 100 us. 0, or -1 with err set. */
int cpu_team_init(cpu_team **out, int threads, int oversubscribed, char *err, size_t err_bytes);
void cpu_team_free(cpu_team *t); /* NULL: no-op; joins the members */
int cpu_team_size(const cpu_team *t);
/* Runs fn on every member and returns when all have finished. The split of
 * work by tid is the caller's and fixed for a given n, so results are the
 * same bits from run to run. Not reentrant: one job at a time. */
void cpu_team_run(cpu_team *t, cpu_team_fn fn, void *ctx);
/* Inside a job: waits until every member has reached it. */
void cpu_team_barrier(cpu_team *t);
/* A job no member is waited for: fn runs on the caller and on whichever
 * members wake before the caller's fn returns; returns once those have
 * left. So fn must finish the whole job on the caller alone when need be
 * (work handed out in fixed pieces from a shared counter): a member that
 * another process holds off its core delays nobody. No cpu_team_barrier
 * inside it. */
void cpu_team_run_open(cpu_team *t, cpu_team_fn fn, void *ctx);
/* Adds 1 and wakes the waiters; waits until the count reaches target. */
void cpu_team_count_add(cpu_team_count *c);
void cpu_team_count_wait(const cpu_team *t, cpu_team_count *c, uint32_t target);

/* [lo, hi) of total items for member tid of n; boundaries are multiples of
 * align (the last member takes the rest), so members write separate cache
 * lines when align is 16 floats. */
void cpu_team_range(int64_t total, int tid, int n, int64_t align, int64_t *lo, int64_t *hi);

#endif
