/* CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), as TFRecord framing
 * uses it (tboard/). Table-driven, one byte at a time: records are small. */
#ifndef TFDIST_BASE_CRC32C_H
#define TFDIST_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues crc (0 to start) over len bytes: crc32c_update(crc32c_update(0,
 * a), b) == crc32c(a || b). */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);
uint32_t crc32c(const void *data, size_t len);

#endif
