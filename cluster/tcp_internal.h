/* What the TCP mesh's start-up (tcp_open.c), its transfer engine (tcp.c)
 * and its point to point for the ring (tcp_p2p.c) share. Not part of the
 * cluster interface. */
#ifndef TFDIST_CLUSTER_TCP_INTERNAL_H
#define TFDIST_CLUSTER_TCP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cluster/tcp.h"

#define TCP_MAGIC 0x31444654u /* "TFD1" little-endian */
#define TCP_HELLO 0x48u     /* connector -> acceptor: who it is, its nonce */
#define TCP_CHALLENGE 0x49u /* acceptor -> connector: its nonce and MAC */
#define TCP_RESPONSE 0x4au  /* connector -> acceptor: its MAC */
#define TCP_NONCE_BYTES 16
#define TCP_MAC_BYTES 32
#define TCP_NOTE_MAX 4096
#define TCP_EARLY_MAX (1ull << 30) /* bytes of a point-to-point frame that came before its receive */

/* A frame that came before its receive was posted (point to point). */
typedef struct tcp_early {
  struct tcp_early *next;
  int peer;
  uint32_t type;
  uint64_t bytes;
  unsigned char body[];
} tcp_early;

/* The frame being read from one peer by the point-to-point engine. */
typedef struct {
  unsigned char hdr[16];
  uint64_t hdr_done, body_done;
  cluster_tcp_op *op;    /* the posted receive it fills, or NULL: early */
  tcp_early *early;
} tcp_rx;

struct cluster_tcp {
  const cluster_tf_config *tf;
  double timeout_s;
  int listen_fd;
  int *fd;               /* (ntasks) -1 where there is no link */
  unsigned char *torn;   /* (ntasks) a frame to it was left half sent: no notice may follow */
  int cancel_sig, cancel_from;
  int stalled;           /* this task's error is a wait that made no progress */
  cluster_tcp_op *batch;    /* the transfers cluster_tcp_run is driving (for a diagnosis) */
  int batch_n;
  tcp_rx *rx;            /* (ntasks) point to point: the frame being read from each */
  tcp_early *early;      /* ... and those that came before their receive (FIFO) */
  uint64_t p2p_order;    /* posting order of point-to-point transfers */
  cluster_tcp_op *p2p_slots; /* the slots testsome saw last (for a stall's diagnosis) */
  int p2p_n;
  int drops_logged;      /* start-up: connections dropped and said so on stderr */
  char err[1024];
};

typedef struct {
  uint32_t magic, type;
  uint64_t bytes;
} tcp_header;

typedef struct {
  uint64_t fingerprint;  /* of the sender's cluster list */
  uint32_t from, to;
  uint8_t nonce[TCP_NONCE_BYTES];
} tcp_hello;

typedef struct {
  uint64_t fingerprint;  /* of the acceptor's cluster list */
  uint8_t nonce[TCP_NONCE_BYTES];
  uint8_t mac[TCP_MAC_BYTES];
} tcp_challenge;

typedef struct {
  uint8_t mac[TCP_MAC_BYTES];
} tcp_response;

/* tcp_auth.c: the hello's challenge-response (see there). */
enum { TCP_AUTH_ACCEPTOR = 'A', TCP_AUTH_CONNECTOR = 'C' };
/* Fresh random bytes (getrandom): 0, or -1 with errno. */
int cluster_tcp_nonce(uint8_t *out, size_t n);
/* The MAC that side (TCP_AUTH_*) sends on the link between h->from (the
 * connector) and h->to (the acceptor), keyed by tf's secret (an empty key
 * without one): it binds both cluster fingerprints, both tasks and both
 * nonces. */
void cluster_tcp_auth_mac(const cluster_tf_config *tf, int side, const tcp_hello *h,
                          const tcp_challenge *c, uint8_t mac[TCP_MAC_BYTES]);
/* Whether mac is that side's MAC, compared in constant time. */
int cluster_tcp_auth_check(const cluster_tf_config *tf, int side, const tcp_hello *h,
                           const tcp_challenge *c, const uint8_t *mac);
/* Parses a frame of type and exactly body_bytes from n bytes of buf:
 * 1 with the body copied to body, 0 when more bytes are needed, -1 when it
 * is not such a frame (bytes of a stranger). */
int cluster_tcp_frame_parse(const unsigned char *buf, size_t n, uint32_t type, void *body,
                            size_t body_bytes);

/* "worker 1 (host:port, rank 2)" */
void cluster_tcp_peer_name(const cluster_tcp *m, int peer, char *out, size_t bytes);
/* Writes (out) or reads all of buf on a non-blocking socket before deadline
 * (clock_mono_s() seconds): 0, or -1 with errno. */
int cluster_tcp_io_all(int fd, void *buf, size_t n, int out, double deadline);

int cluster_tcp_fail(cluster_tcp *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A failed send or receive of op: a closed peer, or errno. -1. */
int cluster_tcp_io_error(cluster_tcp *m, cluster_tcp_op *op, ssize_t k);
/* A notice frame (FAIL, STALL, CANCEL, REJECT) whose header h came from
 * op->peer: a CANCEL is recorded (0), the others fail the mesh (-1). */
int cluster_tcp_take_note(cluster_tcp *m, cluster_tcp_op *op, const tcp_header *h);
/* No progress for the timeout on ops: fails the mesh naming who. */
int cluster_tcp_stalled(cluster_tcp *m, const cluster_tcp_op *ops, int nops);
/* tcp_p2p.c: frees what the point-to-point engine holds. */
void cluster_tcp_p2p_free(cluster_tcp *m);

#endif
