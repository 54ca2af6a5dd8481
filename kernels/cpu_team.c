/* The CPU back end's thread team (cpu_team.h): a job word and a barrier,
 * each a futex word that waiters spin on for a while before sleeping. A
 * step issues ~10 jobs and barriers within a millisecond, so a sleep per
 * sync (30-100 us to wake on these VMs) would cost more than the GEMMs save;
 * spinning forever would steal the core from the other ranks of a node
 * when the rank waits on its allreduce. */
#include "kernels/cpu_team.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/env.h"

/* How long a waiter spins before it sleeps. A step's pieces hand over
 * within tens of microseconds, and a futex wake costs 30-100 us on these
 * VMs, so on cores of its own a member spins 100 us: measured on 2 idle
 * cores (other work niced), 2 threads ran 1.46x one thread with 5 us of
 * spin and 1.63x with 100 us (README, "Threads within a rank"). Where the
 * node runs more compute threads than it has cores, a spinning waiter holds
 * the core its partner needs (an empty 2-thread job took 35-55 us with
 * 0-5 us of spin and 140 us with 50 us at load 10-17), so it spins 5 us.
 * TFDIST_TEAM_SPIN_US overrides both (benchmarks). */
#define TEAM_SPIN_NS_OWN_CORES 100000
#define TEAM_SPIN_NS_SHARED 5000

static uint64_t team_spin_ns(int oversubscribed) {
  const long dflt = (oversubscribed ? TEAM_SPIN_NS_SHARED : TEAM_SPIN_NS_OWN_CORES) / 1000;
  return (uint64_t)base_env_int("TFDIST_TEAM_SPIN_US", 0, 1000000, dflt) * 1000;
}

typedef cpu_team_count team_event; /* word: bumped on each event */

struct cpu_team {
  int n;
  uint64_t spin_ns;   /* how long a waiter spins before it sleeps */
  pthread_t *members; /* n - 1 threads: members 1..n-1 */
  team_event job;     /* bumped when a job is posted (or at shutdown) */
  cpu_team_fn fn;
  void *ctx;
  _Atomic int stop;
  team_event bar;           /* bumped when the last member reaches the barrier */
  _Atomic int bar_arrived;
  int started;
  int open;                 /* the job is cpu_team_run_open's: no barrier at its end */
  _Atomic uint32_t closed;  /* the job word of the last open job closed */
  _Atomic int active;       /* members inside an open job */
};

typedef struct {
  cpu_team *team;
  int tid;
} team_member_arg;

static void team_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static uint64_t team_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Returns once ev->word differs from seen. */
static void team_event_wait(team_event *ev, uint32_t seen, uint64_t spin_ns) {
  uint64_t start = 0;
  for (unsigned i = 0; spin_ns > 0; i++) {
    if (atomic_load_explicit(&ev->word, memory_order_acquire) != seen) return;
    team_relax();
    if ((i & 63) == 63) {
      uint64_t now = team_now_ns();
      if (!start) start = now;
      else if (now - start > spin_ns) break;
    }
  }
  atomic_fetch_add(&ev->sleepers, 1); /* seq_cst: pairs with the waker's load */
  while (atomic_load(&ev->word) == seen) {
    syscall(SYS_futex, &ev->word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
  }
  atomic_fetch_sub(&ev->sleepers, 1);
}

static void team_event_signal(team_event *ev) {
  atomic_fetch_add(&ev->word, 1); /* seq_cst, before the sleepers load */
  if (atomic_load(&ev->sleepers) > 0) {
    syscall(SYS_futex, &ev->word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
  }
}

void cpu_team_barrier(cpu_team *t) {
  if (t->n <= 1) return;
  uint32_t seen = atomic_load_explicit(&t->bar.word, memory_order_acquire);
  if (atomic_fetch_add(&t->bar_arrived, 1) + 1 == t->n) {
    atomic_store(&t->bar_arrived, 0);
    team_event_signal(&t->bar);
  } else {
    team_event_wait(&t->bar, seen, t->spin_ns);
  }
}

/* A member joins job `seen` only if the caller has not closed it (nor
 * posted another) yet. The seq_cst increment of active, then the loads,
 * pair with cpu_team_run_open's store of closed, then its load of active:
 * either the member sees the job closed or the caller waits for it to
 * leave. Past that check the job's fields are stable: an open job's caller
 * waits for active members, a plain job's for every member at its barrier. */
static void *team_member_main(void *p) {
  team_member_arg a = *(team_member_arg *)p;
  free(p);
  cpu_team *t = a.team;
  uint32_t seen = 0;
  for (;;) {
    team_event_wait(&t->job, seen, t->spin_ns);
    seen = atomic_load_explicit(&t->job.word, memory_order_acquire);
    if (t->stop) return NULL;
    atomic_fetch_add(&t->active, 1);
    if (atomic_load(&t->job.word) != seen || atomic_load(&t->closed) == seen) {
      atomic_fetch_sub(&t->active, 1); /* a late member: that open job is over */
      continue;
    }
    const int open = t->open;
    if (open) t->fn(t->ctx, a.tid, t->n);
    atomic_fetch_sub(&t->active, 1);
    if (!open) {
      t->fn(t->ctx, a.tid, t->n);
      cpu_team_barrier(t);
    }
  }
}

/* Posts a job to the members; 0 when there are none (fn ran inline). */
static int team_post(cpu_team *t, cpu_team_fn fn, void *ctx, int open) {
  if (t->n <= 1) {
    fn(ctx, 0, 1);
    return 0;
  }
  t->fn = fn;
  t->ctx = ctx;
  t->open = open;
  team_event_signal(&t->job); /* the seq_cst bump publishes fn, ctx and open */
  return 1;
}

void cpu_team_run(cpu_team *t, cpu_team_fn fn, void *ctx) {
  if (!team_post(t, fn, ctx, 0)) return;
  fn(ctx, 0, t->n);
  cpu_team_barrier(t);
}

void cpu_team_run_open(cpu_team *t, cpu_team_fn fn, void *ctx) {
  if (!team_post(t, fn, ctx, 1)) return;
  const uint32_t word = atomic_load(&t->job.word);
  fn(ctx, 0, t->n);
  atomic_store(&t->closed, word);
  while (atomic_load(&t->active) > 0) team_relax(); /* members finishing their last ticket */
}

void cpu_team_count_add(cpu_team_count *c) { team_event_signal(c); }

void cpu_team_count_wait(const cpu_team *t, cpu_team_count *c, uint32_t target) {
  for (;;) {
    uint32_t v = atomic_load_explicit(&c->word, memory_order_acquire);
    if ((int32_t)(v - target) >= 0) return;
    team_event_wait(c, v, t ? t->spin_ns : TEAM_SPIN_NS_SHARED);
  }
}

int cpu_team_init(cpu_team **out, int threads, int oversubscribed, char *err, size_t err_bytes) {
  *out = NULL;
  if (threads < 1) threads = 1;
  cpu_team *t = calloc(1, sizeof *t);
  if (!t) {
    snprintf(err, err_bytes, "cpu: out of memory for a team of %d threads", threads);
    return -1;
  }
  t->n = threads;
  t->spin_ns = team_spin_ns(oversubscribed);
  if (threads > 1) {
    t->members = calloc((size_t)threads - 1, sizeof *t->members);
    if (!t->members) {
      free(t);
      snprintf(err, err_bytes, "cpu: out of memory for a team of %d threads", threads);
      return -1;
    }
  }
  for (int i = 1; i < threads; i++) {
    team_member_arg *a = malloc(sizeof *a);
    if (a) *a = (team_member_arg){t, i};
    int rc = a ? pthread_create(&t->members[i - 1], NULL, team_member_main, a) : ENOMEM;
    if (rc != 0) {
      free(a);
      snprintf(err, err_bytes, "cpu: could only start %d of %d threads: %s", i, threads,
               strerror(rc));
      t->n = i; /* cpu_team_free joins the ones that started */
      cpu_team_free(t);
      return -1;
    }
    t->started = i;
  }
  *out = t;
  return 0;
}

void cpu_team_free(cpu_team *t) {
  if (!t) return;
  t->stop = 1;
  if (t->started > 0) team_event_signal(&t->job);
  for (int i = 0; i < t->started; i++) pthread_join(t->members[i], NULL);
  free(t->members);
  free(t);
}

int cpu_team_size(const cpu_team *t) { return t ? t->n : 1; }

void cpu_team_range(int64_t total, int tid, int n, int64_t align, int64_t *lo, int64_t *hi) {
  if (align < 1) align = 1;
  int64_t units = (total + align - 1) / align;
  int64_t a = units * tid / n * align, b = units * (tid + 1) / n * align;
  *lo = a < total ? a : total;
  *hi = b < total ? b : total;
}
