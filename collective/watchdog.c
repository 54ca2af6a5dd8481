/* The MPI transport's stall watchdog. No wait is unbounded: each polls with
 * the comm's timeout. When one expires, the waiting rank asks every peer,
 * over a side communicator served by each rank's progress thread, how many
 * collectives it has entered. Peers that are behind are named as stalled;
 * peers that do not answer are named as dead or hung. Rank 0 also takes in
 * its peers' failure and cancel notices there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/transport_mpi.h"

enum { DIAG_TAG_QUERY = 1, DIAG_TAG_REPLY = 2, DIAG_TAG_FAILED = 3, DIAG_TAG_CANCEL = 4 };
#define DIAG_FAILED_BYTES 1024
enum { DIAG_Q_ID = 0, DIAG_Q_SEQ, DIAG_Q_WORDS };
enum { DIAG_R_ID = 0, DIAG_R_ENTERED, DIAG_R_DONE, DIAG_R_BROKEN, DIAG_R_WORDS };

/* How long the diagnosis waits for answers: live peers answer within a few
 * of their progress thread's ticks (20 ms). */
static double diag_window_s(const coll_comm *c) {
  double w = c->cfg.timeout_s / 2.0;
  return w < 1.0 ? 1.0 : (w > 3.0 ? 3.0 : w);
}

/* Rank 0: a peer's failure notice becomes this comm's error; the waits
 * then fail instead of waiting for a peer that is about to end the job. */
static void diag_take_failures(coll_comm *c) {
  coll_mpi_comm *m = coll_mpi_state(c);
  int flag = 0;
  MPI_Status st;
  while (c->rank == 0 &&
         MPI_Iprobe(MPI_ANY_SOURCE, DIAG_TAG_FAILED, m->comm_diag, &flag, &st) == MPI_SUCCESS &&
         flag) {
    char msg[DIAG_FAILED_BYTES] = "";
    if (MPI_Recv(msg, DIAG_FAILED_BYTES, MPI_CHAR, st.MPI_SOURCE, DIAG_TAG_FAILED, m->comm_diag,
                 MPI_STATUS_IGNORE) != MPI_SUCCESS) {
      return;
    }
    msg[DIAG_FAILED_BYTES - 1] = '\0';
    coll_comm_peer_failed(c, st.MPI_SOURCE, msg);
  }
}

/* Rank 0: the first peer's cancel notice, for the trainer to act on. */
static void diag_take_cancels(coll_comm *c) {
  coll_mpi_comm *m = coll_mpi_state(c);
  int flag = 0, sig = 0;
  MPI_Status st;
  while (c->rank == 0 &&
         MPI_Iprobe(MPI_ANY_SOURCE, DIAG_TAG_CANCEL, m->comm_diag, &flag, &st) == MPI_SUCCESS &&
         flag) {
    if (MPI_Recv(&sig, 1, MPI_INT, st.MPI_SOURCE, DIAG_TAG_CANCEL, m->comm_diag,
                 MPI_STATUS_IGNORE) != MPI_SUCCESS) {
      return;
    }
    if (m->peer_cancel || sig <= 0) continue;
    m->peer_cancel_rank = st.MPI_SOURCE;
    __atomic_store_n(&m->peer_cancel, sig, __ATOMIC_RELEASE); /* after the rank */
  }
}

int coll_mpi_peer_cancel(coll_comm *c, int busy, int *from) {
  (void)busy; /* the progress thread takes the notices in */
  coll_mpi_comm *m = coll_mpi_state(c);
  int sig = __atomic_load_n(&m->peer_cancel, __ATOMIC_ACQUIRE);
  if (sig && from) *from = m->peer_cancel_rank;
  return sig;
}

/* A short notice to rank 0 on the diagnosis comm; buf must outlive it. */
static int diag_notify(coll_comm *c, const void *buf, int count, MPI_Datatype type, int tag) {
  MPI_Request req;
  if (MPI_Isend(buf, count, type, 0, tag, coll_mpi_state(c)->comm_diag, &req) != MPI_SUCCESS) {
    return -1;
  }
  /* A short message goes eagerly; a rank 0 that is gone must not hold us. */
  const double until = clock_mono_s() + 1.0;
  int done = 0, idle = 0;
  while (!done && clock_mono_s() < until) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return -1;
    if (!done) coll_backoff(&idle, 1.0);
  }
  if (!done) MPI_Request_free(&req);
  return done ? 0 : -1;
}

/* A FAIL's text goes with its NUL (the caller's buffer has one). */
int coll_mpi_notify_rank0(coll_comm *c, coll_note kind, const void *buf, size_t bytes) {
  if (kind == COLL_NOTE_CANCEL) return diag_notify(c, buf, 1, MPI_INT, DIAG_TAG_CANCEL);
  return diag_notify(c, buf, (int)bytes + 1, MPI_CHAR, DIAG_TAG_FAILED);
}

void coll_mpi_serve(coll_comm *c) {
  coll_mpi_comm *m = coll_mpi_state(c);
  if (c->size < 2 || pthread_mutex_trylock(&c->serve_mu) != 0) return;
  diag_take_failures(c);
  diag_take_cancels(c);
  for (;;) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, DIAG_TAG_QUERY, m->comm_diag, &flag, &st) != MPI_SUCCESS ||
        !flag) {
      break;
    }
    int64_t q[DIAG_Q_WORDS];
    if (MPI_Recv(q, DIAG_Q_WORDS, MPI_INT64_T, st.MPI_SOURCE, DIAG_TAG_QUERY, m->comm_diag,
                 MPI_STATUS_IGNORE) != MPI_SUCCESS) {
      break;
    }
    int64_t a[DIAG_R_WORDS] = {q[DIAG_Q_ID], c->seq_entered, c->seq_done, coll_comm_failed(c)};
    /* 32 bytes go eagerly: this returns at once even if the asker is gone. */
    MPI_Send(a, DIAG_R_WORDS, MPI_INT64_T, st.MPI_SOURCE, DIAG_TAG_REPLY, m->comm_diag);
  }
  pthread_mutex_unlock(&c->serve_mu);
}

/* Appends ", r" (or "r" first) to a rank list. */
static void diag_list_add(char *list, size_t n, int rank) {
  size_t len = strlen(list);
  snprintf(list + len, n - len, "%s%d", len ? "," : "", rank);
}

typedef struct {
  int64_t (*answer)[DIAG_R_WORDS]; /* (size) answers, row = peer */
  int *answered;
  MPI_Request *recv, *send;
  int64_t *query;                  /* DIAG_Q_WORDS; kept alive while sends are pending */
} diag_round;

/* Sends the query to every peer and collects answers for the window. */
static void diag_ask(coll_comm *c, diag_round *d, int64_t seq) {
  coll_mpi_comm *m = coll_mpi_state(c);
  const int64_t qid = ++m->diag_query_id;
  int64_t *q = d->query;
  q[DIAG_Q_ID] = qid;
  q[DIAG_Q_SEQ] = seq;
  for (int p = 0; p < c->size; p++) {
    d->recv[p] = d->send[p] = MPI_REQUEST_NULL;
    d->answered[p] = p == c->rank;
    if (p == c->rank) continue;
    MPI_Irecv(d->answer[p], DIAG_R_WORDS, MPI_INT64_T, p, DIAG_TAG_REPLY, m->comm_diag, &d->recv[p]);
    MPI_Isend(q, DIAG_Q_WORDS, MPI_INT64_T, p, DIAG_TAG_QUERY, m->comm_diag, &d->send[p]);
  }
  const double until = clock_mono_s() + diag_window_s(c);
  int missing = c->size - 1, idle = 0;
  while (missing > 0 && clock_mono_s() < until && !coll_peer_has_failed(c)) {
    int got = 0;
    for (int p = 0; p < c->size; p++) {
      int flag = 0;
      if (d->answered[p] || MPI_Test(&d->recv[p], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag) {
        continue;
      }
      got = 1;
      if (d->answer[p][DIAG_R_ID] != qid) { /* a late answer to an earlier query */
        MPI_Irecv(d->answer[p], DIAG_R_WORDS, MPI_INT64_T, p, DIAG_TAG_REPLY, m->comm_diag,
                  &d->recv[p]);
        continue;
      }
      d->answered[p] = 1;
      missing--;
    }
    coll_diag_serve(c); /* peers diagnosing the same stall ask us too */
    if (got) idle = 0;
    else coll_backoff(&idle, 1.0); /* answers take milliseconds: sleep between looks */
  }
  for (int p = 0; p < c->size; p++) {
    if (d->recv[p] != MPI_REQUEST_NULL) {
      MPI_Cancel(&d->recv[p]);
      MPI_Request_free(&d->recv[p]);
    }
  }
  int sent = 0;
  MPI_Testall(c->size, d->send, &sent, MPI_STATUSES_IGNORE);
  if (!sent) {
    /* A send to a dead peer may never complete: its buffer must outlive it. */
    for (int p = 0; p < c->size; p++) {
      if (d->send[p] != MPI_REQUEST_NULL) MPI_Request_free(&d->send[p]);
    }
    d->query = NULL;
  }
}

/* Appends to msg which peers are behind seq, which did not answer, or
 * that every one of them got there. */
static void diag_report(const coll_comm *c, const diag_round *d, int64_t seq, char *msg,
                        size_t msg_bytes) {
  char behind[256] = "", silent[256] = "", ready[256] = "", detail[512] = "";
  for (int p = 0; p < c->size; p++) {
    if (p == c->rank) continue;
    if (!d->answered[p]) {
      diag_list_add(silent, sizeof silent, p);
    } else if (d->answer[p][DIAG_R_ENTERED] < seq) {
      diag_list_add(behind, sizeof behind, p);
      size_t len = strlen(detail);
      snprintf(detail + len, sizeof detail - len, "%srank %d is at #%lld", len ? ", " : "", p,
               (long long)d->answer[p][DIAG_R_ENTERED]);
    } else {
      diag_list_add(ready, sizeof ready, p);
    }
  }
  size_t len = strlen(msg);
  if (behind[0] && len < msg_bytes) {
    len += (size_t)snprintf(msg + len, msg_bytes - len, "; stalled rank(s) %s never reached it (%s)",
                            behind, detail);
  }
  if (silent[0] && len < msg_bytes) {
    len += (size_t)snprintf(msg + len, msg_bytes - len,
                            "; missing rank(s) %s did not answer within %.1f s (dead or hung)",
                            silent, diag_window_s(c));
  }
  if (!behind[0] && !silent[0] && len < msg_bytes) {
    snprintf(msg + len, msg_bytes - len, "; every other rank (%s) reached it%s", ready,
             c->size > 1 ? " and answered" : "");
  }
}

/* Asks the peers about collective seq and appends the answer to msg. */
void coll_mpi_diagnose_stall(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes) {
  pthread_mutex_lock(&c->diag_mu);
  const size_t n = (size_t)c->size;
  diag_round d;
  d.answer = calloc(n, sizeof *d.answer);
  d.answered = calloc(n, sizeof *d.answered);
  d.recv = calloc(n, sizeof *d.recv);
  d.send = calloc(n, sizeof *d.send);
  d.query = calloc(DIAG_Q_WORDS, sizeof *d.query);
  int64_t *query = d.query;
  if (d.answer && d.answered && d.recv && d.send && d.query) {
    diag_ask(c, &d, seq);
    diag_report(c, &d, seq, msg, msg_bytes);
  } else {
    size_t len = strlen(msg);
    snprintf(msg + len, msg_bytes - len, " (no memory to ask which rank stalled)");
  }
  free(d.answer);
  free(d.answered);
  free(d.recv);
  free(d.send);
  if (d.query) free(query); /* else leaked on purpose, see diag_ask */
  pthread_mutex_unlock(&c->diag_mu);
}

void coll_mpi_diagnose_error(coll_comm *c, int64_t seq, char *msg, size_t msg_bytes) {
  coll_mpi_diagnose_stall(c, seq, msg, msg_bytes);
}

int coll_poll_request(coll_comm *c, MPI_Request *req, int64_t seq, const char *what) {
  const double t0 = clock_mono_s();
  int idle = 0;
  for (;;) {
    int flag = 0;
    int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      coll_mpi_fail(c, rc, what, __FILE__, __LINE__);
      coll_diag_after_error(c, seq); /* a dead peer over TCP errs rather than stalls */
      return COLL_ERR;
    }
    if (flag) return COLL_OK;
    double now = clock_mono_s();
    if (now - t0 > c->cfg.timeout_s) {
      /* A collective request cannot be cancelled; the job is ending anyway. */
      coll_diag_stall(c, seq, what, now - t0);
      return COLL_ETIMEOUT;
    }
    if ((idle & 255) == 255) coll_diag_serve(c);
    if (coll_peer_has_failed(c)) return COLL_ERR;
    coll_backoff(&idle, now - t0);
  }
}
