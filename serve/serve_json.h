/* Request bodies of `tfdist serve` read straight into rows of float32: one
 * pass over the text, no tree and no recursion. Parsing then holds the body
 * plus its numbers as floats (4 bytes for at least 2 of text: at most 2x the
 * body), where a cJSON tree took ~40x. */
#ifndef TFDIST_SERVE_SERVE_JSON_H
#define TFDIST_SERVE_SERVE_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  SERVE_JSON_SCORE,  /* {"data": rows} */
  SERVE_JSON_PREDICT /* {"instances": [row | {"<input>": row}, ...]} or
                        {"inputs": rows | {"<input>": rows}}, and "signature_name" */
} serve_json_kind;

/* Rows of dim numbers from body (len bytes, not NUL-terminated) -> *x (n,
 * dim), malloc'd. Text that is not strict JSON (RFC 8259 numbers), any other
 * key, a key given twice, a wrong input name (input_name is the model's) or
 * signature name, a row of another length or a value that is not a float32
 * number: -1 with a one-line err naming where. */
int serve_json_rows(const char *body, size_t len, serve_json_kind kind, int64_t dim,
                    const char *input_name, float **x, int64_t *n, char *err, size_t err_bytes);

#endif
