/* Sample renders. PNG is written by hand: one IDAT of zlib-compressed rows,
 * each with filter byte 0, and CRC-32 over each chunk's type and data. */
#include "data/render.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/idx_writer.h"

void data_render_ascii(FILE *out, const uint8_t *px, uint32_t rows, uint32_t cols) {
  static const char ramp[] = " .:-=+*#%@";
  for (uint32_t y = 0; y < rows; y++) {
    for (uint32_t x = 0; x < cols; x++) {
      int level = px[(size_t)y * cols + x] * 10 / 256;
      fputc(ramp[level], out);
      fputc(ramp[level], out); /* two columns per pixel keep the aspect ratio */
    }
    fputc('\n', out);
  }
}

uint8_t *data_render_scale(const uint8_t *px, uint32_t rows, uint32_t cols, uint32_t scale) {
  const size_t w = (size_t)cols * scale, h = (size_t)rows * scale;
  uint8_t *out = scale && w > 0 && h > 0 ? malloc(w * h) : NULL;
  if (!out) return NULL;
  for (size_t y = 0; y < h; y++) {
    for (size_t x = 0; x < w; x++) out[y * w + x] = px[(y / scale) * cols + x / scale];
  }
  return out;
}

static uint8_t *render_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

/* length, type, data, CRC(type + data) */
static uint8_t *render_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t len) {
  p = render_put32(p, len);
  memcpy(p, type, 4);
  if (len) memcpy(p + 4, data, len);
  uint32_t crc = (uint32_t)crc32(0L, p, 4 + len);
  return render_put32(p + 4 + len, crc);
}

static int render_png(const char *path, const uint8_t *px, uint32_t rows, uint32_t cols,
                      char *err, size_t err_bytes) {
  size_t raw_len = (size_t)rows * (cols + 1);
  uLongf z_len = compressBound((uLong)raw_len);
  uint8_t *raw = malloc(raw_len), *z = malloc(z_len), *file = malloc(z_len + 128);
  int rc = -1;
  if (!raw || !z || !file) {
    snprintf(err, err_bytes, "%s: out of memory", path);
    goto out;
  }
  for (uint32_t y = 0; y < rows; y++) {
    raw[(size_t)y * (cols + 1)] = 0;
    memcpy(raw + (size_t)y * (cols + 1) + 1, px + (size_t)y * cols, cols);
  }
  if (compress2(z, &z_len, raw, (uLong)raw_len, 9) != Z_OK) {
    snprintf(err, err_bytes, "%s: zlib compress failed", path);
    goto out;
  }
  uint8_t ihdr[13], *p = file;
  render_put32(render_put32(ihdr, cols), rows);
  ihdr[8] = 8;  /* bit depth */
  ihdr[9] = 0;  /* greyscale */
  ihdr[10] = ihdr[11] = ihdr[12] = 0;
  memcpy(p, "\x89PNG\r\n\x1a\n", 8);
  p = render_chunk(p + 8, "IHDR", ihdr, 13);
  p = render_chunk(p, "IDAT", z, (uint32_t)z_len);
  p = render_chunk(p, "IEND", NULL, 0);
  rc = data_file_write_atomic(path, file, (size_t)(p - file), err, err_bytes);
out:
  free(raw);
  free(z);
  free(file);
  return rc;
}

int data_render_file(const char *path, const uint8_t *px, uint32_t rows, uint32_t cols,
                     char *err, size_t err_bytes) {
  size_t n = strlen(path);
  if (rows == 0 || cols == 0 || (uint64_t)rows * cols > (1u << 26)) {
    snprintf(err, err_bytes, "%s: cannot render a %ux%u sample", path, rows, cols);
    return -1;
  }
  if (n > 4 && strcmp(path + n - 4, ".png") == 0) return render_png(path, px, rows, cols, err, err_bytes);
  char hdr[64];
  int h = snprintf(hdr, sizeof hdr, "P5\n%u %u\n255\n", cols, rows);
  size_t len = (size_t)h + (size_t)rows * cols;
  char *file = malloc(len);
  if (!file) {
    snprintf(err, err_bytes, "%s: out of memory", path);
    return -1;
  }
  memcpy(file, hdr, (size_t)h);
  memcpy(file + h, px, (size_t)rows * cols);
  int rc = data_file_write_atomic(path, file, len, err, err_bytes);
  free(file);
  return rc;
}
