/* An independent float64 reference of the DNN for tests: written from the
 * math, sharing no code with kernels/ or runtime/model.c. */
#ifndef TFDIST_TESTS_REF64_H
#define TFDIST_TESTS_REF64_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int64_t dims[4];
  double *w[3], *b[3]; /* w[k]: (dims[k], dims[k+1]) row-major */
} ref64_net;

/* Mean softmax cross-entropy of the batch; acts (optional) receives each
 * layer's output, acts[0] = x. */
static double ref64_loss(const ref64_net *net, const double *x, const int32_t *y, int64_t n,
                         double **acts) {
  double *cur = malloc((size_t)(n * net->dims[0]) * sizeof *cur);
  memcpy(cur, x, (size_t)(n * net->dims[0]) * sizeof *cur);
  if (acts) memcpy(acts[0], x, (size_t)(n * net->dims[0]) * sizeof *cur);
  for (int k = 0; k < 3; k++) {
    int64_t in = net->dims[k], out = net->dims[k + 1];
    double *nxt = malloc((size_t)(n * out) * sizeof *nxt);
    for (int64_t i = 0; i < n; i++) {
      for (int64_t j = 0; j < out; j++) {
        double s = net->b[k][j];
        for (int64_t p = 0; p < in; p++) s += cur[i * in + p] * net->w[k][p * out + j];
        nxt[i * out + j] = (k < 2 && s < 0) ? 0.0 : s;
      }
    }
    if (acts) memcpy(acts[k + 1], nxt, (size_t)(n * out) * sizeof *nxt);
    free(cur);
    cur = nxt;
  }
  double loss = 0.0;
  int64_t c = net->dims[3];
  for (int64_t i = 0; i < n; i++) {
    double m = cur[i * c];
    for (int64_t j = 1; j < c; j++) m = fmax(m, cur[i * c + j]);
    double s = 0.0;
    for (int64_t j = 0; j < c; j++) s += exp(cur[i * c + j] - m);
    loss += log(s) + m - cur[i * c + y[i]];
  }
  free(cur);
  return loss / (double)n;
}

#endif
