/* SHA-256 (FIPS 180-4) for model-file and weight checksums. Our own, small,
 * because no library already linked provides it (OpenSSL would be a new
 * dependency); tested against known vectors and Python's hashlib. */
#ifndef TFDIST_BASE_SHA256_H
#define TFDIST_BASE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_HEX_BYTES 65 /* 64 hex digits and a NUL */

typedef struct {
  uint32_t h[8];
  uint64_t total_bytes;
  uint8_t block[64];
  size_t block_used;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
/* Writes 32 bytes of digest. */
void sha256_final(sha256_ctx *c, uint8_t digest[32]);
void sha256_final_hex(sha256_ctx *c, char hex[SHA256_HEX_BYTES]);
void sha256_hex(const void *data, size_t len, char hex[SHA256_HEX_BYTES]);
/* HMAC-SHA256 (RFC 2104) of msg under key (any length): 32 bytes into mac.
 * Keys the TF_CONFIG mesh's hello (cluster/tcp_auth.c). */
void sha256_hmac(const void *key, size_t key_bytes, const void *msg, size_t msg_bytes,
                 uint8_t mac[32]);
/* 1 when a and b hold the same n bytes, in a time that does not depend on
 * where they differ (a MAC compare must not tell an attacker how far it got). */
int sha256_equal_ct(const void *a, const void *b, size_t n);
/* Whole file, streamed. Returns 0, or -1 with err naming the file. */
int sha256_file_hex(const char *path, char hex[SHA256_HEX_BYTES], char *err, size_t err_bytes);

#endif
