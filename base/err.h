/* One error type for the layers that return a status: the first failure's
 * one-line message, with context prefixed on the way up. Library calls that
 * still take (char *err, size_t err_bytes) are given e->msg, sizeof e->msg. */
#ifndef TFDIST_BASE_ERR_H
#define TFDIST_BASE_ERR_H

#include <stddef.h>

typedef struct {
  char msg[1024]; /* "" while nothing has failed */
  int bad_input;  /* 1: the failure is the user's flags, config or data (exit 2), not the run's */
} base_err;

/* Sets the message unless one is already set (the first failure is the
 * cause; what follows is fallout). Returns -1, so `return base_err_set(...)`. */
int base_err_set(base_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "<context>: <message>"; with no message yet, the context alone. Returns -1. */
int base_err_prefix(base_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* base_err_set, and marks the failure as bad input. Returns -1. */
int base_err_bad_input(base_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Forgets the message: the failure was handled (a file rotated away, say). */
void base_err_clear(base_err *e);
static inline int base_err_is_set(const base_err *e) { return e->msg[0] != '\0'; }

#endif
