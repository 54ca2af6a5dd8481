/* Sample renders and the confusion heat-map. PNG is written by hand: one IDAT
 * of zlib-compressed rows, each with filter byte 0, and CRC-32 over each
 * chunk's type and data. */
#include "data/render.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/fsutil.h"

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

/* channels 1: 8-bit grey; 3: 8-bit RGB. px is rows x cols x channels. */
static int render_png(const char *path, const uint8_t *px, uint32_t rows, uint32_t cols,
                      uint32_t channels, char *err, size_t err_bytes) {
  const size_t row_bytes = (size_t)cols * channels, raw_len = (size_t)rows * (row_bytes + 1);
  uLongf z_len = compressBound((uLong)raw_len);
  uint8_t *raw = malloc(raw_len), *z = malloc(z_len), *file = malloc(z_len + 128);
  int rc = -1;
  if (!raw || !z || !file) {
    snprintf(err, err_bytes, "%s: out of memory", path);
    goto out;
  }
  for (uint32_t y = 0; y < rows; y++) {
    raw[(size_t)y * (row_bytes + 1)] = 0;
    memcpy(raw + (size_t)y * (row_bytes + 1) + 1, px + (size_t)y * row_bytes, row_bytes);
  }
  if (compress2(z, &z_len, raw, (uLong)raw_len, 9) != Z_OK) {
    snprintf(err, err_bytes, "%s: zlib compress failed", path);
    goto out;
  }
  uint8_t ihdr[13], *p = file;
  render_put32(render_put32(ihdr, cols), rows);
  ihdr[8] = 8;                     /* bit depth */
  ihdr[9] = channels == 3 ? 2 : 0; /* truecolour or greyscale */
  ihdr[10] = ihdr[11] = ihdr[12] = 0;
  memcpy(p, "\x89PNG\r\n\x1a\n", 8);
  p = render_chunk(p + 8, "IHDR", ihdr, 13);
  p = render_chunk(p, "IDAT", z, (uint32_t)z_len);
  p = render_chunk(p, "IEND", NULL, 0);
  rc = fs_write_atomic(path, file, (size_t)(p - file), err, err_bytes);
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
  if (n > 4 && strcmp(path + n - 4, ".png") == 0) return render_png(path, px, rows, cols, 1, err, err_bytes);
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
  int rc = fs_write_atomic(path, file, len, err, err_bytes);
  free(file);
  return rc;
}

int data_render_path_check(const char *path, char *err, size_t err_bytes) {
  struct stat st;
  char dir[4096];
  if (!path[0] || snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) {
    snprintf(err, err_bytes, "%.4000s: not a usable file name", path);
    return -1;
  }
  if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    snprintf(err, err_bytes, "%s: %s", path, S_ISLNK(st.st_mode)
             ? "a symbolic link: tfdist never writes through one (remove it)"
             : "exists and is not a regular file");
    return -1;
  }
  const char *folder = dirname(dir);
  if (stat(folder, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, err_bytes, "%s: folder %s: not an existing folder", path, folder);
    return -1;
  }
  if (access(folder, W_OK | X_OK) != 0) {
    snprintf(err, err_bytes, "%s: folder %s: %s", path, folder, strerror(errno));
    return -1;
  }
  return 0;
}

/* Matplotlib's "Blues" ends: white for nothing, dark blue for the whole row. */
static const uint8_t heat_lo[3] = {255, 255, 255}, heat_hi[3] = {8, 48, 107};
static const uint8_t heat_grid = 160;

/* One cell's colour at fraction f in [0, 1], linear per channel, rounded to
 * nearest (every value is positive, so + 0.5 and truncation round). */
static void render_heat_colour(double f, uint8_t rgb[3]) {
  for (int k = 0; k < 3; k++) rgb[k] = (uint8_t)(heat_lo[k] + (heat_hi[k] - heat_lo[k]) * f + 0.5);
}

static void render_heat_cell(uint8_t *img, size_t width, uint32_t r, uint32_t c, uint32_t cell,
                             const uint8_t rgb[3]) {
  const size_t y0 = (size_t)r * (cell + 1) + 1, x0 = (size_t)c * (cell + 1) + 1;
  for (size_t y = y0; y < y0 + cell; y++) {
    for (size_t x = x0; x < x0 + cell; x++) memcpy(img + (y * width + x) * 3, rgb, 3);
  }
}

int data_render_heatmap(const char *path, const int64_t *counts, uint32_t rows, uint32_t cols,
                        uint32_t cell_px, char *err, size_t err_bytes) {
  if (rows == 0 || cols == 0 || cell_px == 0 || rows > 4096 || cols > 4096 || cell_px > 256) {
    snprintf(err, err_bytes, "%s: cannot draw a %ux%u matrix with %u px cells", path, rows, cols,
             cell_px);
    return -1;
  }
  for (size_t i = 0; i < (size_t)rows * cols; i++) {
    if (counts[i] < 0) {
      snprintf(err, err_bytes, "%s: count %zu is negative", path, i);
      return -1;
    }
  }
  const size_t w = (size_t)cols * (cell_px + 1) + 1, h = (size_t)rows * (cell_px + 1) + 1;
  uint8_t *img = malloc(w * h * 3);
  if (!img) {
    snprintf(err, err_bytes, "%s: out of memory", path);
    return -1;
  }
  memset(img, heat_grid, w * h * 3); /* the grid is what the cells leave */
  for (uint32_t r = 0; r < rows; r++) {
    const int64_t *row = counts + (size_t)r * cols;
    double sum = 0; /* in double: int64 counts could overflow an int64 sum */
    for (uint32_t c = 0; c < cols; c++) sum += (double)row[c];
    for (uint32_t c = 0; c < cols; c++) {
      uint8_t rgb[3];
      render_heat_colour(sum > 0 ? (double)row[c] / sum : 0.0, rgb);
      render_heat_cell(img, w, r, c, cell_px, rgb);
    }
  }
  int rc = render_png(path, img, (uint32_t)h, (uint32_t)w, 3, err, err_bytes);
  free(img);
  return rc;
}
