/* A TCP mesh between the tasks of a TF_CONFIG cluster: every training task
 * connects to every other task, a ps task to the training tasks only. Frames
 * are a 16-byte header (type, byte count) and a body. Every wait is bounded:
 * no progress for timeout_s fails and names the peers not heard from; a
 * peer that ends closes its sockets, which fails a wait on it at once. */
#ifndef TFDIST_COLLECTIVE_TCP_H
#define TFDIST_COLLECTIVE_TCP_H

#include <stddef.h>
#include <stdint.h>

#include "collective/tfconfig.h"

enum {
  COLL_TCP_DATA = 1,    /* collectives among the training tasks */
  COLL_TCP_FAIL = 2,    /* body: why the sender is ending the job */
  COLL_TCP_CANCEL = 3,  /* body: int32 signal number */
  COLL_TCP_STALL = 4,   /* a FAIL from a task whose own wait stalled (coll_tcp_notify picks it) */
  COLL_TCP_REJECT = 5,  /* start-up: the hello's cluster list is not the acceptor's (body: why) */
  COLL_TCP_PS_INIT = 10,
  COLL_TCP_PS_PUSH = 11,
  COLL_TCP_PS_PULL = 12,
  COLL_TCP_PS_DONE = 13,
  COLL_TCP_PS_REPLY = 14,
};

typedef struct coll_tcp coll_tcp;

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
} coll_tcp_op;

/* Listens on this task's port, connects to its peers and waits for theirs,
 * for up to timeout_s. 0, or -1 with err naming the missing tasks. */
int coll_tcp_open(coll_tcp **out, const coll_tf_config *tf, double timeout_s, char *err,
                  size_t err_bytes);
void coll_tcp_close(coll_tcp *m);
const coll_tf_config *coll_tcp_cluster(const coll_tcp *m);
/* The first error, one line; "" if none. */
const char *coll_tcp_error(const coll_tcp *m);
/* Runs ops until all are done: 0, or -1 with the error set (a closed peer,
 * a wrong frame, a FAIL frame, no progress for the timeout). A CANCEL frame
 * met on the way is recorded (coll_tcp_peer_cancel) and skipped. */
int coll_tcp_run(coll_tcp *m, coll_tcp_op *ops, int nops);
int coll_tcp_send(coll_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes);
int coll_tcp_recv(coll_tcp *m, int peer, uint32_t type, void *buf, uint64_t bytes);
/* A frame sent without waiting for anything but the socket (FAIL, CANCEL). */
int coll_tcp_notify(coll_tcp *m, int peer, uint32_t type, const void *buf, uint64_t bytes);
/* The signal a peer relayed and its task, 0 when none. Also looks for a
 * relay waiting on any link: call it only between collectives. */
int coll_tcp_peer_cancel(coll_tcp *m, int *from);
/* The same without looking at the links (another thread may be using them). */
int coll_tcp_peer_cancel_seen(coll_tcp *m, int *from);

#endif
