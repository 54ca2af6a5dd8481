/* Test-only fault switches: see fault.h. */
#include "base/fault.h"

#include <limits.h>

#include "base/env.h"

static base_fault_at base_fault_read(const char *rank_var, const char *step_var) {
  return (base_fault_at){(int)base_env_int(rank_var, INT_MIN, INT_MAX, -1),
                         base_env_int(step_var, LONG_MIN, LONG_MAX, 0)};
}

base_fault_at base_fault_stall(void) {
  static base_fault_at f;
  static int read;
  if (!read) {
    f = base_fault_read("TFDIST_FAULT_STALL_RANK", "TFDIST_FAULT_STALL_STEP");
    read = 1;
  }
  return f;
}

base_fault_at base_fault_fail(void) {
  static base_fault_at f;
  static int read;
  if (!read) {
    f = base_fault_read("TFDIST_FAULT_FAIL_RANK", "TFDIST_FAULT_FAIL_STEP");
    read = 1;
  }
  return f;
}

base_fault_inflate_spec base_fault_inflate(void) {
  static base_fault_inflate_spec f;
  static int read;
  if (!read) {
    f.at = base_fault_read("TFDIST_FAULT_INFLATE_RANK", "TFDIST_FAULT_INFLATE_STEP");
    f.steps = base_env_int("TFDIST_FAULT_INFLATE_STEPS", 1, LONG_MAX, 1);
    f.factor = (float)base_env_int("TFDIST_FAULT_INFLATE_FACTOR", 1, 1000000000000L, 1000000);
    read = 1;
  }
  return f;
}

long base_fault_ckpt_slow_ms(void) {
  static long ms = -1;
  if (ms < 0) ms = base_env_int("TFDIST_FAULT_CKPT_SLOW_MS", 0, LONG_MAX, 0);
  return ms;
}
