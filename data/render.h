/* Pictures: one sample for `tfdist data inspect` (ASCII art, or a PGM or PNG
 * file, 8-bit grey, chosen by the output's extension), and the confusion
 * matrix heat-map of `tfdist eval --confusion-png`. */
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

/* Whether a picture may be written at path: not a symbolic link, folder or
 * special file, and its folder exists and is writable. 0, or -1 with a
 * one-line err naming path. (A link planted after the check is replaced by
 * the atomic write's rename, never written through.) */
int data_render_path_check(const char *path, char *err, size_t err_bytes);

/* A rows x cols matrix of counts (row-major) as an RGB PNG heat-map: square
 * cells of cell_px, a 1 px grey (160) grid between and around them, each cell
 * shaded by count / its row's sum, linearly from white (255,255,255) at 0 to
 * dark blue (8,48,107) at 1 per channel, rounded; an all-zero row is white.
 * cols*(cell_px+1)+1 wide, rows*(cell_px+1)+1 high, written atomically
 * (fs_write_atomic: a link at path is replaced, never written through). The
 * caller checks path first, with data_render_path_check, before its work. */
int data_render_heatmap(const char *path, const int64_t *counts, uint32_t rows, uint32_t cols,
                        uint32_t cell_px, char *err, size_t err_bytes);

#endif
