/* The one clock (see clock.h). */
#include "base/clock.h"

#include <time.h>

static double clock_read_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double clock_wall_s(void) { return clock_read_s(CLOCK_REALTIME); }

double clock_mono_s(void) { return clock_read_s(CLOCK_MONOTONIC); }
