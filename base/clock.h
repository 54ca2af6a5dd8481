/* The one clock: wall time for records, monotonic time for durations. */
#ifndef TFDIST_BASE_CLOCK_H
#define TFDIST_BASE_CLOCK_H

double clock_wall_s(void); /* unix time, seconds */
double clock_mono_s(void); /* monotonic seconds, for durations and deadlines */

#endif
