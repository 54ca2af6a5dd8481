/* The TF_CONFIG mesh's authenticated hello. On every link the connector
 * sends HELLO (its task, cluster fingerprint and a fresh nonce), the
 * acceptor answers CHALLENGE (its fingerprint, its own fresh nonce and an
 * HMAC-SHA256 over both), the connector answers RESPONSE (its HMAC over the
 * same). Each side has proved it holds the job's secret, and since each MAC
 * covers the other side's fresh nonce, a recorded exchange cannot be
 * replayed. Without a secret (a loopback-only cluster) the key is empty:
 * the same exchange, which then proves nothing. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "base/sha256.h"
#include "cluster/tcp_internal.h"

int cluster_tcp_nonce(uint8_t *out, size_t n) {
  while (n > 0) {
    ssize_t k = getrandom(out, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    out += k;
    n -= (size_t)k;
  }
  return 0;
}

void cluster_tcp_auth_mac(const cluster_tf_config *tf, int side, const tcp_hello *h,
                          const tcp_challenge *c, uint8_t mac[TCP_MAC_BYTES]) {
  static const char label[] = "tfdist mesh hello v1";
  unsigned char msg[sizeof label + 1 + 2 * 8 + 2 * 4 + 2 * TCP_NONCE_BYTES], *p = msg;
  memcpy(p, label, sizeof label), p += sizeof label;
  *p++ = (unsigned char)side;
  memcpy(p, &h->fingerprint, 8), p += 8;
  memcpy(p, &c->fingerprint, 8), p += 8;
  memcpy(p, &h->from, 4), p += 4;
  memcpy(p, &h->to, 4), p += 4;
  memcpy(p, h->nonce, TCP_NONCE_BYTES), p += TCP_NONCE_BYTES;
  memcpy(p, c->nonce, TCP_NONCE_BYTES), p += TCP_NONCE_BYTES;
  sha256_hmac(tf->secret, tf->secret_bytes, msg, (size_t)(p - msg), mac);
}

int cluster_tcp_auth_check(const cluster_tf_config *tf, int side, const tcp_hello *h,
                           const tcp_challenge *c, const uint8_t *mac) {
  uint8_t want[TCP_MAC_BYTES];
  cluster_tcp_auth_mac(tf, side, h, c, want);
  return sha256_equal_ct(want, mac, TCP_MAC_BYTES);
}

int cluster_tcp_frame_parse(const unsigned char *buf, size_t n, uint32_t type, void *body,
                            size_t body_bytes) {
  tcp_header h;
  if (n < sizeof h) return 0;
  memcpy(&h, buf, sizeof h);
  if (h.magic != TCP_MAGIC || h.type != type || h.bytes != body_bytes) return -1;
  if (n < sizeof h + body_bytes) return 0;
  if (n > sizeof h + body_bytes) return -1; /* more than the frame before its answer */
  memcpy(body, buf + sizeof h, body_bytes);
  return 1;
}
