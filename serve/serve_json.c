/* Scoring request bodies to rows of float32 in one pass (serve_json.h). */
#include "serve/serve_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_KEY_BYTES 256     /* longer keys are kept cut: never one we know */
#define JSON_NUMBER_BYTES 1100 /* a longer number is refused */

typedef struct {
  const char *s;
  size_t len, at;
  int64_t dim;
  float *x; /* (rows, dim), grown by doubling */
  int64_t rows, cap_rows;
  char *err;
  size_t eb;
} json_parser;

static int json_fail(json_parser *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err, p->eb, fmt, ap);
  va_end(ap);
  return -1;
}

static int json_syntax(json_parser *p) {
  if (p->at >= p->len) return json_fail(p, "body: not JSON (it ends early, at byte %zu)", p->at);
  return json_fail(p, "body: not JSON (syntax error near byte %zu)", p->at);
}

static void json_ws(json_parser *p) {
  while (p->at < p->len) {
    char c = p->s[p->at];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
    p->at++;
  }
}

/* The next byte after whitespace, or 0 at the end. */
static char json_peek(json_parser *p) {
  json_ws(p);
  return p->at < p->len ? p->s[p->at] : 0;
}

static int json_expect(json_parser *p, char c) {
  if (json_peek(p) != c) return json_syntax(p);
  p->at++;
  return 0;
}

static int json_hex4(json_parser *p, unsigned *u) {
  *u = 0;
  for (int k = 0; k < 4; k++, p->at++) {
    char c = p->at < p->len ? p->s[p->at] : 0;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return json_syntax(p);
    *u = *u * 16 + (unsigned)d;
  }
  return 0;
}

/* Appends code point u as UTF-8 to out (kept NUL-terminated, cut at cap). */
static void json_put(char *out, size_t cap, size_t *o, unsigned u) {
  unsigned char b[4];
  size_t n = u < 0x80 ? 1 : u < 0x800 ? 2 : u < 0x10000 ? 3 : 4;
  if (n == 1) b[0] = (unsigned char)u;
  else if (n == 2) b[0] = (unsigned char)(0xc0 | (u >> 6));
  else if (n == 3) b[0] = (unsigned char)(0xe0 | (u >> 12));
  else b[0] = (unsigned char)(0xf0 | (u >> 18));
  for (size_t k = 1; k < n; k++) b[k] = (unsigned char)(0x80 | ((u >> (6 * (n - 1 - k))) & 0x3f));
  for (size_t k = 0; k < n && *o + 1 < cap; k++) out[(*o)++] = (char)b[k];
  out[*o] = '\0';
}

/* A string at p->at, escapes decoded into out (cut at cap bytes). */
static int json_string(json_parser *p, char *out, size_t cap) {
  size_t o = 0;
  out[0] = '\0';
  if (json_expect(p, '"') != 0) return -1;
  for (;;) {
    if (p->at >= p->len) return json_syntax(p);
    unsigned char c = (unsigned char)p->s[p->at++];
    if (c == '"') return 0;
    if (c < 0x20) return p->at--, json_syntax(p);
    if (c != '\\') {
      if (o + 1 < cap) out[o++] = (char)c, out[o] = '\0';
      continue;
    }
    char e = p->at < p->len ? p->s[p->at++] : 0;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = e ? strchr(from, e) : NULL;
    if (hit) {
      json_put(out, cap, &o, (unsigned char)to[hit - from]);
      continue;
    }
    if (e != 'u') return p->at--, json_syntax(p);
    unsigned u, lo;
    if (json_hex4(p, &u) != 0) return -1;
    if (u >= 0xd800 && u < 0xdc00 && p->at + 1 < p->len && p->s[p->at] == '\\' &&
        p->s[p->at + 1] == 'u') {
      size_t back = p->at;
      p->at += 2;
      if (json_hex4(p, &lo) != 0) return -1;
      if (lo >= 0xdc00 && lo < 0xe000) u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
      else p->at = back; /* a lone high surrogate, then another escape */
    }
    json_put(out, cap, &o, u);
  }
}

/* A number by RFC 8259's grammar (strtod alone also takes 01, 1. and
 * 1.e5). 1 with *v when one is at p->at, 0 when something else is, -1 on a
 * malformed or overlong number. */
static int json_number(json_parser *p, double *v) {
  const char *s = p->s;
  size_t i = p->at, len = p->len;
  if (i >= len || (s[i] != '-' && (s[i] < '0' || s[i] > '9'))) return 0;
  i += s[i] == '-';
  if (i < len && s[i] == '0') i++;
  else if (i < len && s[i] >= '1' && s[i] <= '9') while (i < len && s[i] >= '0' && s[i] <= '9') i++;
  else return json_fail(p, "body: not JSON (a malformed number at byte %zu)", p->at);
  if (i < len && s[i] == '.') {
    if (++i >= len || s[i] < '0' || s[i] > '9') {
      return json_fail(p, "body: not JSON (a malformed number at byte %zu)", p->at);
    }
    while (i < len && s[i] >= '0' && s[i] <= '9') i++;
  }
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= len || s[i] < '0' || s[i] > '9') {
      return json_fail(p, "body: not JSON (a malformed number at byte %zu)", p->at);
    }
    while (i < len && s[i] >= '0' && s[i] <= '9') i++;
  }
  if (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                  s[i] == '+' || s[i] == '-')) {
    return json_fail(p, "body: not JSON (a malformed number at byte %zu)", p->at);
  }
  char text[JSON_NUMBER_BYTES];
  if (i - p->at >= sizeof text) {
    return json_fail(p, "body: a number of over %d characters at byte %zu", JSON_NUMBER_BYTES - 1,
                     p->at);
  }
  memcpy(text, s + p->at, i - p->at);
  text[i - p->at] = '\0';
  *v = strtod(text, NULL);
  p->at = i;
  return 1;
}

/* Room for row r. */
static int json_row_room(json_parser *p, int64_t r) {
  if (r < p->cap_rows) return 0;
  int64_t cap = p->cap_rows ? 2 * p->cap_rows : 16;
  float *grown = realloc(p->x, (size_t)(cap * p->dim) * sizeof *grown);
  if (!grown) return json_fail(p, "out of memory for %lld rows", (long long)cap);
  p->x = grown;
  p->cap_rows = cap;
  return 0;
}

/* One row of dim numbers at p->at, appended; where[i] names it. */
static int json_row(json_parser *p, const char *where, int64_t i) {
  if (json_peek(p) != '[') return json_fail(p, "%s[%lld]: not an array", where, (long long)i);
  p->at++;
  if (json_row_room(p, p->rows) != 0) return -1;
  float *row = p->x + p->rows * p->dim;
  int64_t j = 0;
  if (json_peek(p) == ']') {
    p->at++;
  } else {
    for (;;) {
      double v = 0;
      json_ws(p);
      int got = json_number(p, &v);
      if (got < 0) return -1;
      if (got == 0) {
        return json_fail(p, "%s[%lld][%lld]: not a number", where, (long long)i, (long long)j);
      }
      /* Below FLT_MAX + half an ulp a number rounds to a finite float: numpy
       * prints float32's largest as 3.4028235e+38, just above FLT_MAX. */
      if (!(fabs(v) < 0x1.ffffffp+127)) {
        return json_fail(p, "%s[%lld][%lld]: %g is outside the float32 range", where,
                         (long long)i, (long long)j, v);
      }
      if (j < p->dim) row[j] = (float)v;
      j++;
      char c = json_peek(p);
      p->at += c == ',' || c == ']';
      if (c == ']') break;
      if (c != ',') return json_syntax(p);
    }
  }
  if (j != p->dim) {
    return json_fail(p, "%s[%lld]: %lld values, expected %lld", where, (long long)i,
                     (long long)j, (long long)p->dim);
  }
  p->rows++;
  return 0;
}

/* {"<input>": row}, one key, the model's input name. */
static int json_named_row(json_parser *p, const char *input, int64_t i) {
  char key[JSON_KEY_BYTES], key2[JSON_KEY_BYTES];
  p->at++; /* the '{' */
  if (json_peek(p) == '}') {
    return json_fail(p, "instances[%lld]: an object row needs exactly one key (the input's name)",
                     (long long)i);
  }
  if (json_string(p, key, sizeof key) != 0 || json_expect(p, ':') != 0) return -1;
  char where[32];
  snprintf(where, sizeof where, "instances[%lld]", (long long)i);
  json_ws(p);
  if (json_peek(p) != '[') return json_fail(p, "%s.%.100s: not an array", where, key);
  if (json_row(p, "instances", i) != 0) return -1;
  if (json_peek(p) == ',') {
    p->at++;
    json_ws(p);
    if (json_string(p, key2, sizeof key2) != 0) return -1;
    if (!strcmp(key, key2)) return json_fail(p, "%s: duplicate key \"%.100s\"", where, key);
    return json_fail(p, "%s: an object row needs exactly one key (the input's name)", where);
  }
  if (json_expect(p, '}') != 0) return -1;
  if (strcmp(key, input) != 0) {
    return json_fail(p, "%s: input \"%.100s\" is not this model's (its input is \"%s\")", where,
                     key, input);
  }
  return 0;
}

/* An array of rows (named rows too when named). */
static int json_rows(json_parser *p, const char *where, int named, const char *input) {
  if (json_peek(p) != '[') {
    return json_fail(p, "%s: expected an array of rows of %lld numbers", where, (long long)p->dim);
  }
  p->at++;
  int64_t first = p->rows;
  if (json_peek(p) == ']') return p->at++, json_fail(p, "%s: no rows", where);
  for (;;) {
    int64_t i = p->rows - first;
    int rc = named && json_peek(p) == '{' ? json_named_row(p, input, i) : json_row(p, where, i);
    if (rc != 0) return -1;
    char c = json_peek(p);
    p->at += c == ',' || c == ']';
    if (c == ']') return 0;
    if (c != ',') return json_syntax(p);
  }
}

/* "inputs": rows, or {"<input>": rows} with one key. */
static int json_inputs(json_parser *p, const char *input) {
  if (json_peek(p) != '{') return json_rows(p, "inputs", 0, input);
  char key[JSON_KEY_BYTES], key2[JSON_KEY_BYTES], where[JSON_KEY_BYTES + 16];
  p->at++;
  if (json_peek(p) == '}') {
    return json_fail(p, "inputs: an object needs exactly one key (the input's name)");
  }
  if (json_string(p, key, sizeof key) != 0 || json_expect(p, ':') != 0) return -1;
  snprintf(where, sizeof where, "inputs.%.150s", key);
  if (json_rows(p, where, 0, input) != 0) return -1;
  if (json_peek(p) == ',') {
    p->at++;
    json_ws(p);
    if (json_string(p, key2, sizeof key2) != 0) return -1;
    if (!strcmp(key, key2)) return json_fail(p, "inputs: duplicate key \"%.100s\"", key);
    return json_fail(p, "inputs: an object needs exactly one key (the input's name)");
  }
  if (json_expect(p, '}') != 0) return -1;
  if (strcmp(key, input) != 0) {
    return json_fail(p, "inputs: input \"%.100s\" is not this model's (its input is \"%s\")", key,
                     input);
  }
  return 0;
}

typedef struct {
  int data, instances, inputs, signature;
  char signature_name[JSON_KEY_BYTES];
} json_seen;

/* One member of the top-level object, its key already read. */
static int json_member(json_parser *p, serve_json_kind kind, const char *key, const char *input,
                       json_seen *seen) {
  int *flag = kind == SERVE_JSON_SCORE ? (!strcmp(key, "data") ? &seen->data : NULL)
              : !strcmp(key, "instances") ? &seen->instances
              : !strcmp(key, "inputs") ? &seen->inputs
              : !strcmp(key, "signature_name") ? &seen->signature : NULL;
  if (!flag) {
    return json_fail(p, kind == SERVE_JSON_SCORE
                            ? "body: unknown key \"%.100s\" (expected {\"data\": [[784 numbers], ...]})"
                            : "body: unknown key \"%.100s\" (expected \"instances\" or \"inputs\", "
                              "and optionally \"signature_name\")",
                     key);
  }
  if (*flag) return json_fail(p, "body: duplicate key \"%s\"", key);
  *flag = 1;
  if (seen->instances && seen->inputs) {
    return json_fail(p, "give either \"instances\" or \"inputs\", not both");
  }
  if (flag == &seen->data) return json_rows(p, "data", 0, input);
  if (flag == &seen->instances) return json_rows(p, "instances", 1, input);
  if (flag == &seen->inputs) return json_inputs(p, input);
  if (json_peek(p) != '"') return json_fail(p, "signature_name: expected a string");
  return json_string(p, seen->signature_name, sizeof seen->signature_name);
}

static int json_body(json_parser *p, serve_json_kind kind, const char *input) {
  json_seen seen = {0};
  char key[JSON_KEY_BYTES];
  char c = json_peek(p);
  if (!c) return json_fail(p, "empty body: expected a JSON object");
  if (c != '{') return json_fail(p, "body: expected a JSON object");
  p->at++;
  if (json_peek(p) == '}') {
    p->at++;
  } else {
    for (;;) {
      json_ws(p);
      if (json_string(p, key, sizeof key) != 0 || json_expect(p, ':') != 0) return -1;
      if (json_member(p, kind, key, input, &seen) != 0) return -1;
      c = json_peek(p);
      p->at += c == ',' || c == '}';
      if (c == '}') break;
      if (c != ',') return json_syntax(p);
    }
  }
  if (json_peek(p)) return json_fail(p, "body: not JSON (more after the value, at byte %zu)", p->at);
  if (kind == SERVE_JSON_SCORE && !seen.data) {
    return json_fail(p, "key \"data\": missing (expected {\"data\": [[784 numbers], ...]})");
  }
  if (kind == SERVE_JSON_PREDICT && !seen.instances && !seen.inputs) {
    return json_fail(p, "key \"instances\" or \"inputs\": missing");
  }
  if (seen.signature && seen.signature_name[0] && strcmp(seen.signature_name, "serving_default")) {
    return json_fail(p, "signature_name \"%.100s\": not found (this model has \"serving_default\")",
                     seen.signature_name);
  }
  return 0;
}

int serve_json_rows(const char *body, size_t len, serve_json_kind kind, int64_t dim,
                    const char *input_name, float **x, int64_t *n, char *err, size_t eb) {
  json_parser p = {.s = body, .len = len, .dim = dim, .err = err, .eb = eb};
  *x = NULL;
  *n = 0;
  if (dim <= 0 || json_body(&p, kind, input_name) != 0) {
    if (dim <= 0) snprintf(err, eb, "the model has no inputs");
    free(p.x);
    return -1;
  }
  *x = p.x;
  *n = p.rows;
  return 0;
}
