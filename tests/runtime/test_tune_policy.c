/* The bandit policy at its boundaries, against values worked by hand: the
 * leader's best at report k over (1 + slack), the interval and the delay. */
#include <math.h>

#include "tune/tune.h"
#include "tests/check.h"

int main(void) {
  tune_board b = {0};
  const tune_bandit p = {.slack = 0.25, .interval = 2, .delay = 2};
  /* leader: reports 0.5, 0.8, 0.6, 0.9 -> best so far 0.5, 0.8, 0.8, 0.9 */
  const double lead[] = {0.5, 0.8, 0.8, 0.9};
  for (int k = 1; k <= 4; k++) CHECK(tune_board_add(&b, k, lead[k - 1]) == 0);
  CHECK_EQ_INT(b.len, 4);
  /* report 4 (4 % 2 == 0, 4 >= delay): bar = 0.9 / 1.25 = 0.72 */
  CHECK(!tune_bandit_stops(&p, &b, 4, 0.72));
  CHECK(tune_bandit_stops(&p, &b, 4, nextafter(0.72, 0.0)));
  /* Azure ML applies the policy at every multiple of the interval that is >=
   * the delay: report 2 is judged with delay 2, not with delay 3; report 3
   * is not on the interval */
  CHECK(tune_bandit_stops(&p, &b, 2, 0.01));
  const tune_bandit late = {.slack = 0.25, .interval = 2, .delay = 3};
  CHECK(!tune_bandit_stops(&late, &b, 2, 0.01) && tune_bandit_stops(&late, &b, 4, 0.01));
  CHECK(!tune_bandit_stops(&p, &b, 3, 0.01));
  /* a report no run has reached yet: nothing to compare with */
  CHECK(!tune_bandit_stops(&p, &b, 6, 0.01));
  /* a later, better run raises the bar at report 4 only */
  CHECK(tune_board_add(&b, 4, 1.0) == 0);
  CHECK(tune_bandit_stops(&p, &b, 4, 0.79) && !tune_bandit_stops(&p, &b, 4, 0.8));
  CHECK(b.best[1] == 0.8 && b.best[3] == 1.0);
  /* a worse run never lowers it; a gap in reports is filled with -inf */
  CHECK(tune_board_add(&b, 4, 0.3) == 0 && b.best[3] == 1.0);
  CHECK(tune_board_add(&b, 7, 0.4) == 0 && isinf(b.best[5]) && b.best[6] == 0.4);
  /* interval 1, no delay, slack 0: any run below the leader stops at once */
  const tune_bandit strict = {.slack = 0, .interval = 1, .delay = 0};
  CHECK(tune_bandit_stops(&strict, &b, 1, nextafter(0.5, 0.0)) &&
        !tune_bandit_stops(&strict, &b, 1, 0.5));
  tune_board_free(&b);
  CHECK(b.best == NULL && b.len == 0);

  /* loguniform(-6, -1) and the seed: reproducible, inside the range */
  tune_space s;
  tune_space_default(&s);
  double v1[TUNE_MAX_PARAMS], v2[TUNE_MAX_PARAMS];
  for (int t = 0; t < 200; t++) {
    tune_space_sample(&s, 9, t, v1);
    tune_space_sample(&s, 9, t, v2);
    for (int i = 0; i < s.count; i++) CHECK(v1[i] == v2[i]);
    CHECK(v1[3] >= exp(-6) && v1[3] < exp(-1));
  }
  CHECK_DONE();
}
