/* What the collective front end (coll.c), the progress thread (progress.c),
 * the stall diagnosis (watchdog.c) and the back ends (mpi.c, ring.c, nccl.c)
 * share. Not part of the public interface. */
#ifndef TFDIST_COLLECTIVE_COLL_INTERNAL_H
#define TFDIST_COLLECTIVE_COLL_INTERNAL_H

#include <mpi.h>
#include <pthread.h>
#include <stdint.h>

#include "collective/coll.h"
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
  /* Optional: called by the progress thread every tick (nccl: async errors). */
  void (*tick)(coll_comm *c);
} coll_backend_ops;

extern const coll_backend_ops coll_mpi_ops;
extern const coll_backend_ops coll_ring_ops;
extern const coll_backend_ops coll_tcp_ops;
#if TFDIST_HAVE_CUDA
extern const coll_backend_ops coll_nccl_ops;
#endif

struct coll_comm {
  coll_config cfg;
  const coll_backend_ops *ops;
  MPI_Comm comm;          /* blocking host collectives of the calling thread */
  MPI_Comm comm_async;    /* allreduces, run by the caller or the progress thread */
  MPI_Comm comm_diag;     /* stall queries and their answers */
  int rank, size;
  char host[64];
  void *impl;             /* the back end's per-comm state */
  struct coll_tcp *tcp;   /* a TF_CONFIG cluster's mesh: every call goes over it */

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
  volatile int peer_cancel;       /* rank 0: the signal a peer was stopped by, relayed */
  int peer_cancel_rank;
  pthread_mutex_t diag_mu;        /* one diagnosis at a time */
  pthread_mutex_t serve_mu;       /* one thread answers queries at a time */
  int64_t diag_query_id;

  coll_trace_fn trace;            /* timelines: see coll_comm_set_trace */
  void *trace_ctx;

  pthread_mutex_t err_mu;
  char err[1024];
};

double coll_now(void);
/* r->t_progress is written by the thread that runs r and read by its waiter. */
static inline void coll_req_touch(coll_request *r) {
  double now = coll_now();
  __atomic_store(&r->t_progress, &now, __ATOMIC_RELAXED);
}
static inline double coll_req_last(coll_request *r) {
  double v;
  __atomic_load(&r->t_progress, &v, __ATOMIC_RELAXED);
  return v;
}
/* Records the first error of this comm; later ones are dropped. */
void coll_set_error(coll_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* MPI error code -> c->err with the call, file:line and MPI_Error_string. */
int coll_mpi_fail(coll_comm *c, int mpi_rc, const char *call, const char *file, int line);
#define COLL_MPI_TRY(c, call)                                                                \
  do {                                                                                       \
    int coll_rc_ = (call);                                                                   \
    if (coll_rc_ != MPI_SUCCESS) return coll_mpi_fail((c), coll_rc_, #call, __FILE__, __LINE__); \
  } while (0)

/* Backs off a polling loop that saw no progress for idle_s: spin, then
 * yield, then short sleeps, so waiting ranks leave the cores to computing
 * ones (2 cores, 4 ranks is normal here). */
void coll_backoff(int *idle_polls, double idle_s);

/* Polls req until done or timeout_s passes; on timeout diagnoses the stall
 * (naming ranks) and returns COLL_ETIMEOUT. what names the collective. */
int coll_poll_request(coll_comm *c, MPI_Request *req, int64_t seq, const char *what);

/* tcp_coll.c: the host collectives of a TF_CONFIG cluster. */
int coll_tcpc_broadcast(coll_comm *c, void *buf, int64_t bytes, int root);
int coll_tcpc_sum_f64(coll_comm *c, double *buf, int64_t elems);
int coll_tcpc_barrier(coll_comm *c);
int coll_tcpc_notify_rank0(coll_comm *c, uint32_t type, const void *buf, uint64_t bytes);
int coll_tcpc_peer_cancel(coll_comm *c, int *from);
int coll_world_tcp_gather(const coll_world *w, const void *mine, void *rows, int64_t bytes,
                          char *err, size_t err_bytes);

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

/* watchdog.c: answers peers' stall queries; diagnoses a stall of collective
 * seq by asking every peer how far it got. */
/* ...and on rank 0 takes in peers' failure and cancel notices. */
void coll_diag_serve(coll_comm *c);
/* Whether a peer reported its failure (c->err, set before, names it): a
 * wait then gives up instead of waiting for a job that is ending. */
static inline int coll_peer_has_failed(coll_comm *c) {
  return __atomic_load_n(&c->peer_failed, __ATOMIC_ACQUIRE);
}
void coll_diag_stall(coll_comm *c, int64_t seq, const char *what, double waited_s);
/* After an MPI error in collective seq: appends which peers are missing. */
void coll_diag_after_error(coll_comm *c, int64_t seq);

#endif
