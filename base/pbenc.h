/* A small protocol-buffers encoder: the few messages tfdist writes (TensorBoard
 * Event/Summary in tboard/, the ONNX ModelProto in modelio/) are encoded by
 * hand from their field numbers instead of through protobuf-c and generated
 * code: about 150 lines against a new dependency and a build step.
 * Errors are sticky: after a failed allocation or a size past the limit every
 * call is a no-op and returns -1, so a caller may check once at the end. */
#ifndef TFDIST_BASE_PBENC_H
#define TFDIST_BASE_PBENC_H

#include <stddef.h>
#include <stdint.h>

/* protobuf parsers refuse messages of 2 GiB and more */
#define PB_BUF_MAX_BYTES ((size_t)INT32_MAX)

typedef enum { PB_WIRE_VARINT = 0, PB_WIRE_FIXED64 = 1, PB_WIRE_LEN = 2, PB_WIRE_FIXED32 = 5 } pb_wire;

typedef struct {
  uint8_t *data; /* (cap) owned; the message is data[0, len) */
  size_t len, cap;
  int failed;    /* out of memory or over PB_BUF_MAX_BYTES */
} pb_buf;

void pb_buf_init(pb_buf *b);
void pb_buf_free(pb_buf *b);
/* Empties b (keeping its memory) and clears a failure. */
void pb_buf_reset(pb_buf *b);

/* Bytes a varint of v takes (1..10). */
size_t pb_varint_bytes(uint64_t v);
int pb_buf_raw(pb_buf *b, const void *data, size_t len);
int pb_buf_varint(pb_buf *b, uint64_t v);
int pb_buf_tag(pb_buf *b, uint32_t field, pb_wire wire);
int pb_buf_fixed32(pb_buf *b, uint32_t v); /* little-endian */
int pb_buf_fixed64(pb_buf *b, uint64_t v);

/* Whole fields (tag and value). int64 and enum values go as varints, a
 * negative one in ten bytes (two's complement), as protobuf does. */
int pb_buf_field_varint(pb_buf *b, uint32_t field, uint64_t v);
int pb_buf_field_int64(pb_buf *b, uint32_t field, int64_t v);
int pb_buf_field_float(pb_buf *b, uint32_t field, float v);
int pb_buf_field_double(pb_buf *b, uint32_t field, double v);
/* bytes, strings and embedded messages (an encoded pb_buf's data) */
int pb_buf_field_bytes(pb_buf *b, uint32_t field, const void *data, size_t len);
int pb_buf_field_string(pb_buf *b, uint32_t field, const char *s);
int pb_buf_field_message(pb_buf *b, uint32_t field, const pb_buf *msg);
/* n float32 values as little-endian bytes (ONNX raw_data), on any host. */
int pb_buf_field_f32_le(pb_buf *b, uint32_t field, const float *v, size_t n);

#endif
