/* Environment knobs: see env.h. */
#include "base/env.h"

#include <errno.h>
#include <stdlib.h>

const char *base_env_str(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

long base_env_int(const char *name, long min, long max, long def) {
  const char *v = base_env_str(name);
  if (!v) return def;
  char *end = NULL;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end != '\0' || n < min || n > max) return def;
  return n;
}
