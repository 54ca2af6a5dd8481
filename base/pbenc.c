/* Protocol-buffers wire format, encode side only (base/pbenc.h). */
#include "base/pbenc.h"

#include <stdlib.h>
#include <string.h>

void pb_buf_init(pb_buf *b) { memset(b, 0, sizeof *b); }

void pb_buf_free(pb_buf *b) {
  if (!b) return;
  free(b->data);
  memset(b, 0, sizeof *b);
}

void pb_buf_reset(pb_buf *b) {
  b->len = 0;
  b->failed = 0;
}

/* Room for n more bytes; the limit is checked before any arithmetic can wrap. */
static int pb_buf_reserve(pb_buf *b, size_t n) {
  if (b->failed) return -1;
  if (n > PB_BUF_MAX_BYTES || b->len > PB_BUF_MAX_BYTES - n) {
    b->failed = 1;
    return -1;
  }
  size_t need = b->len + n;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > PB_BUF_MAX_BYTES / 2 ? PB_BUF_MAX_BYTES : cap * 2;
  uint8_t *grown = realloc(b->data, cap);
  if (!grown) {
    b->failed = 1;
    return -1;
  }
  b->data = grown;
  b->cap = cap;
  return 0;
}

int pb_buf_raw(pb_buf *b, const void *data, size_t len) {
  if (pb_buf_reserve(b, len) != 0) return -1;
  if (len) memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

size_t pb_varint_bytes(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

int pb_buf_varint(pb_buf *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  while (v >= 0x80) {
    tmp[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  tmp[n++] = (uint8_t)v;
  return pb_buf_raw(b, tmp, n);
}

int pb_buf_tag(pb_buf *b, uint32_t field, pb_wire wire) {
  if (field == 0 || field > 0x1fffffffu) { /* 0 and numbers past 2^29-1 are not fields */
    b->failed = 1;
    return -1;
  }
  return pb_buf_varint(b, ((uint64_t)field << 3) | (uint64_t)wire);
}

int pb_buf_fixed32(pb_buf *b, uint32_t v) {
  uint8_t t[4];
  for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
  return pb_buf_raw(b, t, 4);
}

int pb_buf_fixed64(pb_buf *b, uint64_t v) {
  uint8_t t[8];
  for (int i = 0; i < 8; i++) t[i] = (uint8_t)(v >> (8 * i));
  return pb_buf_raw(b, t, 8);
}

int pb_buf_field_varint(pb_buf *b, uint32_t field, uint64_t v) {
  if (pb_buf_tag(b, field, PB_WIRE_VARINT) != 0) return -1;
  return pb_buf_varint(b, v);
}

int pb_buf_field_int64(pb_buf *b, uint32_t field, int64_t v) {
  return pb_buf_field_varint(b, field, (uint64_t)v);
}

int pb_buf_field_float(pb_buf *b, uint32_t field, float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  if (pb_buf_tag(b, field, PB_WIRE_FIXED32) != 0) return -1;
  return pb_buf_fixed32(b, u);
}

int pb_buf_field_double(pb_buf *b, uint32_t field, double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  if (pb_buf_tag(b, field, PB_WIRE_FIXED64) != 0) return -1;
  return pb_buf_fixed64(b, u);
}

int pb_buf_field_bytes(pb_buf *b, uint32_t field, const void *data, size_t len) {
  if (pb_buf_tag(b, field, PB_WIRE_LEN) != 0 || pb_buf_varint(b, len) != 0) return -1;
  return pb_buf_raw(b, data, len);
}

int pb_buf_field_string(pb_buf *b, uint32_t field, const char *s) {
  return pb_buf_field_bytes(b, field, s, strlen(s));
}

int pb_buf_field_message(pb_buf *b, uint32_t field, const pb_buf *msg) {
  if (msg->failed) {
    b->failed = 1;
    return -1;
  }
  return pb_buf_field_bytes(b, field, msg->data, msg->len);
}

int pb_buf_field_f32_le(pb_buf *b, uint32_t field, const float *v, size_t n) {
  if (n > PB_BUF_MAX_BYTES / 4) {
    b->failed = 1;
    return -1;
  }
  if (pb_buf_tag(b, field, PB_WIRE_LEN) != 0 || pb_buf_varint(b, n * 4) != 0 ||
      pb_buf_reserve(b, n * 4) != 0) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], sizeof u);
    for (int k = 0; k < 4; k++) b->data[b->len++] = (uint8_t)(u >> (8 * k));
  }
  return 0;
}
