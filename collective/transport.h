/* The control plane a world's collectives run over, as a table (redis's
 * ConnectionType): MPI (transport_mpi.c), and a TF_CONFIG cluster's TCP mesh
 * (cluster/), which registers itself with coll_world_init_transport. The
 * algorithms (the ring, the host collectives' callers) are written once over
 * it; what differs between transports is an entry here, never a branch.
 * For transport implementations only: training code uses coll.h. */
#ifndef TFDIST_COLLECTIVE_TRANSPORT_H
#define TFDIST_COLLECTIVE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"

#include "collective/coll.h"

/* What a notice to rank 0 says (coll_comm_report_failure, _cancel). */
typedef enum { COLL_NOTE_FAIL = 1, COLL_NOTE_CANCEL = 2 } coll_note;

/* What a point-to-point transfer carries: fp32 values, or --compression's
 * 16-bit codes (codec.h). Counts are elements of it, never bytes. */
typedef enum { COLL_WIRE_F32 = 0, COLL_WIRE_U16 } coll_wire;

static inline size_t coll_wire_bytes(coll_wire type) {
  return type == COLL_WIRE_U16 ? sizeof(uint16_t) : sizeof(float);
}

enum {
  /* A progress thread may drive this transport's transfers while the
   * caller computes (MPI only with MPI_THREAD_MULTIPLE: see coll_world.async). */
  COLL_TP_ASYNC = 1u << 0,
  /* Host collectives and notices use the links the progress thread uses:
   * they wait until it is idle, and a notice is not sent while it is busy. */
  COLL_TP_SHARED_LINKS = 1u << 1,
  /* Rank 0 sees only some peers' failures: a rank whose collective failed
   * still tells rank 0 why. */
  COLL_TP_PARTIAL_VIEW = 1u << 2,
};

typedef struct coll_transport_ops {
  const char *name;
  unsigned caps;                /* COLL_TP_* */
  unsigned backends;            /* the allreduce back ends it carries: 1u << coll_backend */
  const char *backends_why;     /* "--allreduce X: <this>" for one it does not carry */
  size_t p2p_req_bytes;         /* one point-to-point request slot (isend/irecv) */

  /* ---- the world (state: coll_world.tp_state) ---- */
  /* Every rank's bytes, in rank order, on every rank. */
  int (*gather)(const coll_world *w, const void *mine, void *rows, int64_t bytes, char *err,
                size_t err_bytes);
  void (*finalize)(coll_world *w);
  /* Ends this process and, where the transport can, the job. */
  void (*abort)(const coll_world *w, int code);

  /* ---- a comm (state: what comm_open put in *state) ---- */
  int (*comm_open)(coll_comm *c, const coll_world *w, void **state, char *err, size_t err_bytes);
  void (*comm_close)(coll_comm *c, void *state);
  /* Blocking host collectives, bounded by the comm's timeout; seq is the
   * comm's collective number. COLL_OK, or an error with the comm's error set. */
  int (*broadcast)(coll_comm *c, int64_t seq, void *buf, int64_t bytes, int root);
  int (*sum_f64)(coll_comm *c, int64_t seq, double *buf, int64_t elems);
  /* Every rank's bytes of mine, in rank order, into rows (size x bytes). */
  int (*allgather)(coll_comm *c, int64_t seq, const void *mine, void *rows, int64_t bytes);
  int (*barrier)(coll_comm *c, int64_t seq);
  /* A short notice to rank 0 (bytes of buf, which outlives the call and has
   * a NUL after a FAIL's text). 0 when it went out. */
  int (*notify_rank0)(coll_comm *c, coll_note kind, const void *buf, size_t bytes);
  /* Rank 0: the signal a peer relayed (its rank in *from), 0 when none.
   * busy: the progress thread holds the links (only look at what came in). */
  int (*peer_cancel)(coll_comm *c, int busy, int *from);
  /* Optional: answers peers' stall queries, takes in notices (progress thread). */
  void (*serve)(coll_comm *c);
  /* Optional: a stall of collective seq: msg holds the generic line; the
   * transport appends which peers stalled, or writes its own line. */
  void (*diagnose_stall)(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes);
  /* Optional: after an error in collective seq, appends which peers are missing. */
  void (*diagnose_error)(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes);

  /* ---- point to point, for the ring: n slots of p2p_req_bytes each ---- */
  /* Marks slots [0, n) empty. */
  void (*p2p_clear)(void *reqs, int n);
  /* elems elements of type, to or from peer, in slot */
  int (*isend)(coll_comm *c, void *reqs, int slot, const void *buf, int64_t elems, coll_wire type,
               int peer, int tag);
  int (*irecv)(coll_comm *c, void *reqs, int slot, void *buf, int64_t elems, coll_wire type,
               int peer, int tag);
  /* Advances the open slots without blocking; the ones that finished (now
   * empty) in idx, their number in *done_n (0 when none). */
  int (*p2p_testsome)(coll_comm *c, void *reqs, int n, int *done_n, int *idx);
  /* Gives up on slot (open or empty): a receive is cancelled, a send is
   * left to finish (its buffer must outlive the job). */
  void (*p2p_abandon)(coll_comm *c, void *reqs, int slot, int recv);
} coll_transport_ops;

/* A world over a transport of the caller's (cluster/): rank -1 for a
 * process that takes part in no collective (a ps task). */
void coll_world_init_transport(coll_world *w, const coll_transport_ops *ops, void *state,
                               int rank, int size, int local_rank, int local_size);

/* For transports: the comm's transport and state, numbers, and error. */
const coll_transport_ops *coll_comm_transport(const coll_comm *c);
void *coll_comm_transport_state(const coll_comm *c);
int coll_comm_rank(const coll_comm *c);
int coll_comm_size(const coll_comm *c);
double coll_comm_timeout(const coll_comm *c);
const char *coll_comm_host(const coll_comm *c);
/* Records the first error of c; later ones are dropped. */
void coll_set_error(coll_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Rank 0: a peer's failure notice; later collectives give up at once. */
void coll_comm_peer_failed(coll_comm *c, int peer, const char *msg);
/* Backs off a polling loop that saw no progress for idle_s: spin, then
 * yield, then short sleeps, so waiting ranks leave the cores to computing
 * ones (2 cores, 4 ranks is normal here). */
void coll_backoff(int *idle_polls, double idle_s);

#endif
