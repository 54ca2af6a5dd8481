/* CRC-32C: RFC 3720 appendix B.4's vectors are in tests/show/test_pbenc_crc.c. */
#include "base/crc32c.h"

#include <pthread.h>

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc32c_table[i] = c;
  }
}

uint32_t crc32c_update(uint32_t crc, const void *data, size_t len) {
  pthread_once(&crc32c_once, crc32c_table_init);
  const unsigned char *p = data;
  crc = ~crc;
  for (size_t i = 0; i < len; i++) crc = crc32c_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t crc32c(const void *data, size_t len) { return crc32c_update(0, data, len); }
