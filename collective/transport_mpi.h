/* What the MPI transport's files share (transport_mpi.c: host collectives,
 * point to point, notices; watchdog.c: the stall diagnosis; world.c: MPI
 * start-up) with the mpi back end (mpi.c). Private to collective/. */
#ifndef TFDIST_COLLECTIVE_TRANSPORT_MPI_H
#define TFDIST_COLLECTIVE_TRANSPORT_MPI_H

#include <mpi.h>

#include "collective/coll_internal.h"

/* One comm's communicators, each a dup of MPI_COMM_WORLD. */
typedef struct {
  MPI_Comm comm;          /* blocking host collectives of the calling thread */
  MPI_Comm comm_async;    /* allreduces, run by the caller or the progress thread */
  MPI_Comm comm_diag;     /* stall queries and their answers, notices */
  volatile int peer_cancel; /* rank 0: the signal a peer was stopped by, relayed */
  int peer_cancel_rank;
  int64_t diag_query_id;
} coll_mpi_comm;

static inline coll_mpi_comm *coll_mpi_state(const coll_comm *c) {
  return (coll_mpi_comm *)coll_comm_transport_state(c);
}

/* MPI error code -> c->err with the call, file:line and MPI_Error_string. */
int coll_mpi_fail(coll_comm *c, int mpi_rc, const char *call, const char *file, int line);
#define COLL_MPI_TRY(c, call)                                                                \
  do {                                                                                       \
    int coll_rc_ = (call);                                                                   \
    if (coll_rc_ != MPI_SUCCESS) return coll_mpi_fail((c), coll_rc_, #call, __FILE__, __LINE__); \
  } while (0)

/* Polls req until done or timeout_s passes; on timeout diagnoses the stall
 * (naming ranks) and returns COLL_ETIMEOUT. what names the collective. */
int coll_poll_request(coll_comm *c, MPI_Request *req, int64_t seq, const char *what);

/* world.c: the end of an MPI world (MPI_Finalize, its session base). */
void coll_mpi_world_finalize(coll_world *w);

/* watchdog.c: the MPI transport's stall service and diagnosis. */
void coll_mpi_serve(coll_comm *c);
void coll_mpi_diagnose_stall(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes);
void coll_mpi_diagnose_error(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes);
int coll_mpi_notify_rank0(coll_comm *c, coll_note kind, const void *buf, size_t bytes);
int coll_mpi_peer_cancel(coll_comm *c, int busy, int *from);

#endif
