/* libFuzzer harness for what a TF_CONFIG task reads from the network: the
 * hello's frames (HELLO, CHALLENGE, RESPONSE) and their MAC check, a ps's
 * check of an INIT, and the transfer engine's frame reading, fed through a
 * socket pair whose far end holds the input and is then shut. The first
 * byte picks the engine's receive: 0 a whole frame of the size the second
 * byte says, 1 a header-only receive and then its body, 2 a point-to-point
 * receive (tcp_p2p.c), 3 the between-collectives cancel check.
 * Build and run: tests/fuzz.sh hello (clang, ASan + UBSan). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/ps.h"
#include "cluster/tcp_internal.h"

static cluster_tf_config fuzz_tf;
static cluster_tf_task fuzz_tasks[2];

static void fuzz_init(void) {
  if (fuzz_tf.tasks) return;
  for (int k = 0; k < 2; k++) {
    fuzz_tasks[k] = (cluster_tf_task){.type = k ? CLUSTER_TF_WORKER : CLUSTER_TF_CHIEF};
    snprintf(fuzz_tasks[k].host, sizeof fuzz_tasks[k].host, "127.0.0.1");
    snprintf(fuzz_tasks[k].port, sizeof fuzz_tasks[k].port, "%d", 5000 + k);
  }
  fuzz_tf.tasks = fuzz_tasks;
  fuzz_tf.ntasks = fuzz_tf.ntrain = 2;
  fuzz_tf.fingerprint = 0x0123456789abcdefull;
  memcpy(fuzz_tf.secret, "0123456789abcdef0123456789abcdef", 32);
  fuzz_tf.secret_bytes = 32;
}

static void fuzz_parsers(const uint8_t *data, size_t size) {
  tcp_hello h;
  tcp_challenge c;
  tcp_response r;
  const size_t hb = sizeof(tcp_header) + sizeof h;
  const size_t cb = sizeof(tcp_header) + sizeof c;
  int got = cluster_tcp_frame_parse(data, size < hb ? size : hb, TCP_HELLO, &h, sizeof h);
  if (got == 1 && size >= hb + cb &&
      cluster_tcp_frame_parse(data + hb, cb, TCP_CHALLENGE, &c, sizeof c) == 1) {
    /* The check passes exactly when the bytes are the MAC (a genuine
     * exchange in the corpus passes; any other bytes must not). */
    uint8_t mac[TCP_MAC_BYTES];
    cluster_tcp_auth_mac(&fuzz_tf, TCP_AUTH_ACCEPTOR, &h, &c, mac);
    if (cluster_tcp_auth_check(&fuzz_tf, TCP_AUTH_ACCEPTOR, &h, &c, c.mac) !=
        (memcmp(mac, c.mac, sizeof mac) == 0)) {
      abort();
    }
    if (size >= hb + cb + 48 &&
        cluster_tcp_frame_parse(data + hb + cb, 48, TCP_RESPONSE, &r, sizeof r) == 1) {
      cluster_tcp_auth_mac(&fuzz_tf, TCP_AUTH_CONNECTOR, &h, &c, mac);
      if (cluster_tcp_auth_check(&fuzz_tf, TCP_AUTH_CONNECTOR, &h, &c, r.mac) !=
          (memcmp(mac, r.mac, sizeof mac) == 0)) {
        abort();
      }
    }
  }
  cluster_tcp_frame_parse(data, size, TCP_CHALLENGE, &c, sizeof c);
  cluster_tcp_frame_parse(data, size, TCP_RESPONSE, &r, sizeof r);
  if (size >= 16) {
    uint64_t elems;
    uint32_t opt, ranks;
    char err[256];
    memcpy(&elems, data, 8);
    memcpy(&opt, data + 8, 4);
    memcpy(&ranks, data + 12, 4);
    const int want = 1 + data[0] % 64, nps = 1 + data[1] % 8;
    const uint32_t k = data[2];
    if (cluster_ps_meta_check(elems, opt, ranks, want, nps, k, err, sizeof err) == 0) {
      /* What the ps then allocates must be what the check allowed. */
      if (elems > CLUSTER_PS_ELEMS_MAX || opt > CLUSTER_PS_OPT_MAX || ranks != (uint32_t)want ||
          k < 1 || k > CLUSTER_PS_STATE_MAX) {
        abort();
      }
    }
  }
}

static void fuzz_engine(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  const int rcvbuf = 1 << 20;
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &rcvbuf, sizeof rcvbuf);
  const size_t n = size - 2;
  if (n > 0 && write(sv[1], data + 2, n) != (ssize_t)n) abort();
  shutdown(sv[1], SHUT_WR);
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  cluster_tcp *m = calloc(1, sizeof *m);
  int *fd = calloc(2, sizeof *fd);
  unsigned char *torn = calloc(2, 1);
  if (!m || !fd || !torn) abort();
  fd[0] = -1;
  fd[1] = sv[0];
  *m = (cluster_tcp){.tf = &fuzz_tf, .timeout_s = 0.05, .listen_fd = -1, .fd = fd, .torn = torn};
  const size_t want = data[1];
  unsigned char *buf = malloc(want + 1);
  if (!buf) abort();
  switch (data[0] % 4) {
  case 0:
    cluster_tcp_recv(m, 1, CLUSTER_TCP_DATA, buf, want);
    break;
  case 1: {
    cluster_tcp_op op = {.peer = 1};
    if (cluster_tcp_run(m, &op, 1) == 0 && op.got_bytes <= want) {
      op = (cluster_tcp_op){.peer = 1, .body_only = 1, .rbuf = buf, .bytes = op.got_bytes};
      cluster_tcp_run(m, &op, 1);
    }
    break;
  }
  case 2: {
    cluster_tcp_op slots[2];
    int done_n = 0, idx[2];
    cluster_tcp_p2p_clear(slots, 2);
    if (cluster_tcp_irecv(m, &slots[0], 1, data[1] % 4, buf, want) != 0) break;
    for (int i = 0; i < 64 && done_n == 0; i++) {
      if (cluster_tcp_testsome(m, slots, 1, &done_n, idx) != 0) break;
    }
    break;
  }
  default: {
    int from = 0;
    cluster_tcp_peer_cancel(m, &from);
    break;
  }
  }
  free(buf);
  cluster_tcp_close(m);
  close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_init();
  fuzz_parsers(data, size);
  if (size >= 2) fuzz_engine(data, size);
  return 0;
}
