/* SHA-256 after FIPS 180-4, section 6.2: 64-byte blocks, 64 rounds. */
#include "base/sha256.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const uint32_t sha256_k[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t sha256_rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) {
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  }
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = sha256_rotr(w[i - 15], 7) ^ sha256_rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = sha256_rotr(w[i - 2], 17) ^ sha256_rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t s1 = sha256_rotr(e, 6) ^ sha256_rotr(e, 11) ^ sha256_rotr(e, 25);
    uint32_t t1 = k + s1 + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
    uint32_t s0 = sha256_rotr(a, 2) ^ sha256_rotr(a, 13) ^ sha256_rotr(a, 22);
    uint32_t t2 = s0 + ((a & b) ^ (a & c) ^ (b & c));
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += k;
}

void sha256_init(sha256_ctx *c) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, h0, sizeof h0);
  c->total_bytes = 0;
  c->block_used = 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t len) {
  const uint8_t *p = data;
  c->total_bytes += len;
  if (c->block_used) {
    size_t take = 64 - c->block_used < len ? 64 - c->block_used : len;
    memcpy(c->block + c->block_used, p, take);
    c->block_used += take;
    p += take;
    len -= take;
    if (c->block_used < 64) return;
    sha256_block(c->h, c->block);
    c->block_used = 0;
  }
  for (; len >= 64; p += 64, len -= 64) sha256_block(c->h, p);
  memcpy(c->block, p, len);
  c->block_used = len;
}

void sha256_final(sha256_ctx *c, uint8_t digest[32]) {
  uint64_t bits = c->total_bytes * 8;
  uint8_t pad[72] = {0x80};
  size_t pad_len = c->block_used < 56 ? 56 - c->block_used : 120 - c->block_used;
  for (int i = 0; i < 8; i++) pad[pad_len + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(c, pad, pad_len + 8);
  for (int i = 0; i < 8; i++) {
    digest[4 * i] = (uint8_t)(c->h[i] >> 24);
    digest[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
    digest[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
    digest[4 * i + 3] = (uint8_t)c->h[i];
  }
}

void sha256_final_hex(sha256_ctx *c, char hex[SHA256_HEX_BYTES]) {
  static const char digits[] = "0123456789abcdef";
  uint8_t d[32];
  sha256_final(c, d);
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  hex[64] = '\0';
}

void sha256_hex(const void *data, size_t len, char hex[SHA256_HEX_BYTES]) {
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, data, len);
  sha256_final_hex(&c, hex);
}

void sha256_hmac(const void *key, size_t key_bytes, const void *msg, size_t msg_bytes,
                 uint8_t mac[32]) {
  uint8_t k[64] = {0}, pad[64], inner[32];
  sha256_ctx c;
  if (key_bytes > sizeof k) { /* a long key is hashed first */
    sha256_init(&c);
    sha256_update(&c, key, key_bytes);
    sha256_final(&c, k);
  } else if (key_bytes > 0) {
    memcpy(k, key, key_bytes);
  }
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  sha256_init(&c);
  sha256_update(&c, pad, sizeof pad);
  sha256_update(&c, msg, msg_bytes);
  sha256_final(&c, inner);
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  sha256_init(&c);
  sha256_update(&c, pad, sizeof pad);
  sha256_update(&c, inner, sizeof inner);
  sha256_final(&c, mac);
  explicit_bzero(k, sizeof k);
  explicit_bzero(pad, sizeof pad);
}

int sha256_equal_ct(const void *a, const void *b, size_t n) {
  const volatile uint8_t *x = a, *y = b;
  uint8_t d = 0;
  for (size_t i = 0; i < n; i++) d |= (uint8_t)(x[i] ^ y[i]);
  return d == 0;
}

int sha256_file_hex(const char *path, char hex[SHA256_HEX_BYTES], char *err, size_t err_bytes) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, err_bytes, "%s: %s", path, strerror(errno));
    return -1;
  }
  sha256_ctx c;
  sha256_init(&c);
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&c, buf, got);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    snprintf(err, err_bytes, "%s: read error", path);
    return -1;
  }
  sha256_final_hex(&c, hex);
  return 0;
}
