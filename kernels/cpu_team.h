/* The CPU back end's persistent thread team: one rank's step split over N
 * cores. Started once with the back end; between jobs its members spin
 * briefly, then sleep on a futex. Internal to kernels/ (cpu.c only). */
#ifndef TFDIST_KERNELS_CPU_TEAM_H
#define TFDIST_KERNELS_CPU_TEAM_H

#include <stddef.h>
#include <stdint.h>

typedef struct cpu_team cpu_team;
/* One member's share of a job: tid in [0, n); tid 0 is the calling thread. */
typedef void (*cpu_team_fn)(void *ctx, int tid, int n);

/* threads >= 1; 1 starts no thread (jobs run inline). 0, or -1 with err set. */
int cpu_team_init(cpu_team **out, int threads, char *err, size_t err_bytes);
void cpu_team_free(cpu_team *t); /* NULL: no-op; joins the members */
int cpu_team_size(const cpu_team *t);
/* Runs fn on every member and returns when all have finished. The split of
 * work by tid is the caller's and fixed for a given n, so results are the
 * same bits from run to run. Not reentrant: one job at a time. */
void cpu_team_run(cpu_team *t, cpu_team_fn fn, void *ctx);
/* Inside a job: waits until every member has reached it. */
void cpu_team_barrier(cpu_team *t);

/* [lo, hi) of total items for member tid of n; boundaries are multiples of
 * align (the last member takes the rest), so members write separate cache
 * lines when align is 16 floats. */
void cpu_team_range(int64_t total, int tid, int n, int64_t align, int64_t *lo, int64_t *hi);

#endif
