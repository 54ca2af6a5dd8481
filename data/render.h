/* Pictures of one sample for `tfdist data inspect`: ASCII art, or a PGM or
 * PNG file (8-bit grey), chosen by the output's extension. */
#ifndef TFDIST_DATA_RENDER_H
#define TFDIST_DATA_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

void data_render_ascii(FILE *out, const uint8_t *pixels, uint32_t rows, uint32_t cols);
/* .png -> PNG, anything else -> binary PGM (P5). Written atomically. */
int data_render_file(const char *path, const uint8_t *pixels, uint32_t rows, uint32_t cols,
                     char *err, size_t err_bytes);

/* Each pixel as a scale x scale block (nearest neighbour), so a 28x28 sample
 * can be seen: a new (rows*scale) x (cols*scale) buffer to free, or NULL. */
uint8_t *data_render_scale(const uint8_t *pixels, uint32_t rows, uint32_t cols, uint32_t scale);

#endif
