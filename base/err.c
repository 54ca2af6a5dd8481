/* base_err: see err.h. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int base_err_set(base_err *e, const char *fmt, ...) {
  if (e->msg[0]) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return -1;
}

int base_err_bad_input(base_err *e, const char *fmt, ...) {
  if (e->msg[0]) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  e->bad_input = 1;
  return -1;
}

int base_err_prefix(base_err *e, const char *fmt, ...) {
  char ctx[sizeof e->msg], old[sizeof e->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx, sizeof ctx, fmt, ap);
  va_end(ap);
  memcpy(old, e->msg, sizeof old);
  /* by parts, so a long context cuts the message off rather than failing */
  size_t n = strlen(ctx);
  memcpy(e->msg, ctx, n + 1);
  if (old[0] && n + 2 < sizeof e->msg) {
    memcpy(e->msg + n, ": ", 3);
    n += 2;
    size_t rest = strlen(old), room = sizeof e->msg - 1 - n;
    if (rest > room) rest = room;
    memcpy(e->msg + n, old, rest);
    e->msg[n + rest] = '\0';
  }
  return -1;
}

void base_err_clear(base_err *e) {
  e->msg[0] = '\0';
  e->bad_input = 0;
}
