/* A TCP mesh between the tasks of a TF_CONFIG cluster: every training task
 * connects to every other task, a ps task to the training tasks only. Frames
 * are a 16-byte header (type, byte count) and a body. Every wait is bounded:
 * no progress for timeout_s fails and names the peers not heard from; a
 * peer that ends closes its sockets, which fails a wait on it at once. */
#ifndef TFDIST_CLUSTER_TCP_H
#define TFDIST_CLUSTER_TCP_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/tfconfig.h"

enum {
  CLUSTER_TCP_DATA = 1,    /* collectives among the training tasks */
  CLUSTER_TCP_FAIL = 2,    /* body: why the sender is ending the job */
  CLUSTER_TCP_CANCEL = 3,  /* body: int32 signal number */
  CLUSTER_TCP_STALL = 4,   /* a FAIL from a task whose own wait stalled (cluster_tcp_notify picks it) */
  CLUSTER_TCP_REJECT = 5,  /* start-up: the hello's cluster list is not the acceptor's (body: why) */
  CLUSTER_TCP_PS_INIT = 10,
  CLUSTER_TCP_PS_PUSH = 11,
  CLUSTER_TCP_PS_PULL = 12,
  CLUSTER_TCP_PS_DONE = 13,
  CLUSTER_TCP_PS_REPLY = 14,
  CLUSTER_TCP_P2P = 0x10000, /* + tag: the ring's point to point (tcp_p2p.c) */
};

typedef struct cluster_tcp cluster_tcp;

/* One transfer of a batch run together: a send of a whole frame, or the
 * receive of one (type 0: any type; body NULL: the header alone, whose
 * type and byte count land in got_type, got_bytes). */
typedef struct {
  int peer;          /* task index */
  int send;
  uint32_t type;
  const void *sbuf;
  void *rbuf;
  uint64_t bytes;    /* send: body bytes; receive: the body expected */
  int body_only;     /* receive: the body of a frame a header-only receive began */
  uint32_t got_type;
  uint64_t got_bytes;
  /* the engine's */
  unsigned char hdr[16];
  uint64_t hdr_done, body_done;
  int done;
  int posted;        /* point to point: posted, not yet reported done */
  uint64_t order;    /* point to point: posting order of a send */
} cluster_tcp_op;

/* Listens on this task's port, connects to its peers and waits for theirs,
 * for up to timeout_s. 0, or -1 with err naming the missing tasks. */
int cluster_tcp_open(cluster_tcp **out, const cluster_tf_config *tf, double timeout_s, char *err,
                  size_t err_bytes);
void cluster_tcp_close(cluster_tcp *m);
const cluster_tf_config *cluster_tcp_cluster(const cluster_tcp *m);
/* The first error, one line; "" if none. */
const char *cluster_tcp_error(const cluster_tcp *m);
/* Runs ops until all are done: 0, or -1 with the error set (a closed peer,
 * a wrong frame, a FAIL frame, no progress for the timeout). A CANCEL frame
 * met on the way is recorded (cluster_tcp_peer_cancel) and skipped. */
int cluster_tcp_run(cluster_tcp *m, cluster_tcp_op *ops, int nops);
int cluster_tcp_send(cluster_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes);
int cluster_tcp_recv(cluster_tcp *m, int peer, uint32_t type, void *buf, uint64_t bytes);
/* A frame sent without waiting for anything but the socket (FAIL, CANCEL). */
int cluster_tcp_notify(cluster_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes);
/* Point to point, for the ring: slots are cluster_tcp_op. A frame of tag t
 * is of type CLUSTER_TCP_P2P + t; a peer's frames of one tag are received
 * in the order sent, whatever order the receives are posted in. Receive
 * and send the same byte count, or the mesh fails naming the peer. */
void cluster_tcp_p2p_clear(cluster_tcp_op *slots, int n);
int cluster_tcp_isend(cluster_tcp *m, cluster_tcp_op *op, int peer, int tag, const void *buf,
                      uint64_t bytes);
int cluster_tcp_irecv(cluster_tcp *m, cluster_tcp_op *op, int peer, int tag, void *buf,
                      uint64_t bytes);
/* Moves the posted slots on without blocking; the finished ones in idx. */
int cluster_tcp_testsome(cluster_tcp *m, cluster_tcp_op *slots, int n, int *done_n, int *idx);
/* Gives up on op (a failure): the mesh fails if a frame may be half moved. */
void cluster_tcp_p2p_abandon(cluster_tcp *m, cluster_tcp_op *op);
/* No progress on the slots testsome saw last for the timeout: fails the
 * mesh naming the peers waited for (and, on task 0, the silent ones). -1. */
int cluster_tcp_p2p_stalled(cluster_tcp *m);

/* The signal a peer relayed and its task, 0 when none. Also looks for a
 * relay waiting on any link: call it only between collectives. */
int cluster_tcp_peer_cancel(cluster_tcp *m, int *from);
/* The same without looking at the links (another thread may be using them). */
int cluster_tcp_peer_cancel_seen(cluster_tcp *m, int *from);

#endif
