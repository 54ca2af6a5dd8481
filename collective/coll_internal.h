/* What the collective front end (coll.c), the progress thread (progress.c),
 * the MPI transport (transport_mpi.c, watchdog.c) and the back ends (mpi.c,
 * ring.c, nccl.c) share. Not part of the public interface. */
#ifndef TFDIST_COLLECTIVE_COLL_INTERNAL_H
#define TFDIST_COLLECTIVE_COLL_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "collective/coll.h"
#include "collective/transport.h"
#include "tfdist_config.h"

typedef enum { COLL_REQ_QUEUED = 0, COLL_REQ_RUNNING, COLL_REQ_DONE } coll_req_state;

/* One allreduce in flight. The public coll_request is this. */
struct coll_request {
  coll_request *next;     /* FIFO of the progress thread */
  int64_t seq;            /* this comm's collective number, the same on every rank */
  const float *send;      /* == recv when in place */
  float *recv;
  int64_t elems;
  int avg;                /* divide the sum by the number of ranks */
  float fp16_scale;       /* --compression fp16: the comm's scale when this was started */
  int heap;               /* allocated by an i* call, freed by coll_wait */
  coll_req_state state;
  int status;             /* COLL_OK, COLL_ERR or COLL_ETIMEOUT once done */
  double t_start;         /* monotonic seconds */
  double t_progress;      /* last time any part of it completed */
  void *impl;             /* the back end's per-request state */
};

typedef struct coll_backend_ops {
  const char *name;
  /* ops advanced by the progress thread (mpi, ring); nccl is stream-ordered */
  int threaded;
  /* start may block (mpi: MPI_Allreduce) where a progress thread runs it:
   * every request goes to that thread, and the waiter keeps the timeout */
  int blocking;
  int (*init)(coll_comm *c, char *err, size_t err_bytes);
  void (*free)(coll_comm *c);
  /* Begins r without blocking; COLL_OK or COLL_ERR with c->err set. */
  int (*start)(coll_comm *c, coll_request *r);
  /* Advances r without blocking; sets *done, and r->t_progress on progress. */
  int (*test)(coll_comm *c, coll_request *r, int *done);
  /* Gives up on r after an error or timeout: cancels what can be cancelled. */
  void (*abandon)(coll_comm *c, coll_request *r);
  /* Optional: the back end's own coll_wait (nccl: the caller's stream joins). */
  int (*wait)(coll_comm *c, coll_request *r);
  /* Optional: coll_test of a non-threaded back end (nccl: the end event). */
  int (*query)(coll_comm *c, coll_request *r, int *done);
  /* Optional: coll_sync (nccl: bounded wait for all issued work). */
  int (*sync)(coll_comm *c);
  /* Optional: coll_comm_buffer (shm, hier: each rank's part of its node's
   * shared segment); *out stays NULL where the comm has none to give. */
  int (*buffer)(coll_comm *c, int64_t elems, float **out, char *err, size_t err_bytes);
  /* Optional: called by the progress thread every tick (nccl: async errors). */
  void (*tick)(coll_comm *c);
} coll_backend_ops;

extern const coll_backend_ops coll_mpi_ops;
extern const coll_backend_ops coll_ring_ops;
extern const coll_backend_ops coll_shm_ops;
extern const coll_backend_ops coll_hier_ops;
/* The nccl back end's one symbol, looked up in coll.c's table alone. */
#if TFDIST_HAVE_CUDA
extern const coll_backend_ops coll_nccl_ops;
#endif
extern const coll_transport_ops coll_mpi_transport;
extern const coll_transport_ops coll_self_transport;

struct coll_comm {
  coll_config cfg;
  const coll_backend_ops *ops;
  const coll_transport_ops *tp; /* the control plane (transport.h) */
  void *tp_state;         /* the transport's per-comm state */
  int rank, size;
  int local_rank, local_size; /* on this node (shm needs local_size == size) */
  int node_first;             /* the lowest rank on this node (hier's node grouping) */
  char host[64];
  void *impl;             /* the back end's per-comm state */

  /* progress thread and its FIFO; mu guards everything below */
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  pthread_t thread;
  int thread_on, stop;
  coll_request *queue_head, *queue_tail, *active;

  /* what a stall query answers; written by the calling thread */
  volatile int64_t seq_entered;   /* collectives this rank has called */
  volatile int64_t seq_done;      /* ... and seen complete */
  volatile int broken;            /* a collective failed: every later call fails */
  volatile int peer_failed;       /* rank 0: a peer reported its failure (c->err says) */
  pthread_mutex_t diag_mu;        /* one diagnosis at a time */
  pthread_mutex_t serve_mu;       /* one thread answers queries at a time */

  float fp16_scale;               /* coll_comm_set_fp16_scale; caller's thread, read at submit */
  coll_trace_fn trace;            /* timelines: see coll_comm_set_trace */
  void *trace_ctx;

  pthread_mutex_t err_mu;
  char err[1024];
};

/* r->t_progress is written by the thread that runs r and read by its waiter. */
static inline void coll_req_touch(coll_request *r) {
  double now = clock_mono_s();
  __atomic_store(&r->t_progress, &now, __ATOMIC_RELAXED);
}
static inline double coll_req_last(coll_request *r) {
  double v;
  __atomic_load(&r->t_progress, &v, __ATOMIC_RELAXED);
  return v;
}
/* ring.c: the ring over a list of the comm's ranks (hier's ring across
 * nodes; the ring back end's list is every rank). ranks (n entries, NULL
 * for 0..n-1) stays the caller's and must outlive the ring; me is this
 * rank's place in it; chunk_bytes is its pipeline chunk where the comm's
 * config sets none (ring_chunk_bytes 0). r->impl is the ring's until test
 * says done. */
typedef struct coll_ring coll_ring;
int coll_ring_open(coll_comm *c, coll_ring **out, const int *ranks, int n, int me,
                   int64_t chunk_bytes);
void coll_ring_close(coll_comm *c, coll_ring *g);
int coll_ring_start(coll_comm *c, coll_ring *g, coll_request *r);
int coll_ring_test(coll_comm *c, coll_request *r, int *done);
void coll_ring_abandon(coll_comm *c, coll_request *r);

/* progress.c */
int coll_progress_start(coll_comm *c, char *err, size_t err_bytes);
void coll_progress_stop(coll_comm *c);
/* Runs r to completion: on the progress thread behind earlier requests, or
 * inline when nothing is queued. Blocks; returns r->status. */
int coll_progress_run(coll_comm *c, coll_request *r);
/* Hands r to the progress thread (or runs it inline when there is none). */
int coll_progress_submit(coll_comm *c, coll_request *r);
int coll_progress_wait(coll_comm *c, coll_request *r);
/* Drives r in the calling thread until done, error or timeout. */
int coll_progress_drive(coll_comm *c, coll_request *r);
/* Waits until the progress thread has finished every request it was given. */
void coll_progress_quiesce(coll_comm *c);
/* Whether the progress thread holds a request now. */
int coll_progress_busy(coll_comm *c);

/* The transport's stall service (answers peers' queries, takes in notices). */
void coll_diag_serve(coll_comm *c);
/* Whether a peer reported its failure (c->err, set before, names it): a
 * wait then gives up instead of waiting for a job that is ending. */
static inline int coll_peer_has_failed(coll_comm *c) {
  return __atomic_load_n(&c->peer_failed, __ATOMIC_ACQUIRE);
}
/* A stall of collective seq: the comm's error, with the transport's diagnosis. */
void coll_diag_stall(coll_comm *c, int64_t seq, const char *what, double waited_s);
/* After an error in collective seq: appends which peers are missing. */
void coll_diag_after_error(coll_comm *c, int64_t seq);

#endif
