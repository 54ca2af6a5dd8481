/* What the TCP mesh's start-up (tcp_open.c) and its transfer engine
 * (tcp.c) share. Not part of the collective interface. */
#ifndef TFDIST_COLLECTIVE_TCP_INTERNAL_H
#define TFDIST_COLLECTIVE_TCP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "collective/tcp.h"

#define TCP_MAGIC 0x31444654u /* "TFD1" little-endian */
#define TCP_HELLO 0x48u
#define TCP_NOTE_MAX 4096

struct coll_tcp {
  const coll_tf_config *tf;
  double timeout_s;
  int listen_fd;
  int *fd;               /* (ntasks) -1 where there is no link */
  unsigned char *torn;   /* (ntasks) a frame to it was left half sent: no notice may follow */
  int cancel_sig, cancel_from;
  int stalled;           /* this task's error is a wait that made no progress */
  coll_tcp_op *batch;    /* the transfers coll_tcp_run is driving (for a diagnosis) */
  int batch_n;
  char err[1024];
};

typedef struct {
  uint32_t magic, type;
  uint64_t bytes;
} tcp_header;

typedef struct {
  uint64_t fingerprint;
  uint32_t from, to;
} tcp_hello;

/* "worker 1 (host:port, rank 2)" */
void coll_tcp_peer_name(const coll_tcp *m, int peer, char *out, size_t bytes);
/* Writes (out) or reads all of buf on a non-blocking socket before deadline
 * (coll_now() seconds): 0, or -1 with errno. */
int coll_tcp_io_all(int fd, void *buf, size_t n, int out, double deadline);

#endif
