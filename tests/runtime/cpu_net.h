/* Setup shared by the runtime unit tests: the float32 model under test on the
 * CPU backend, and its parameters copied into the float64 reference. */
#ifndef TFDIST_TESTS_CPU_NET_H
#define TFDIST_TESTS_CPU_NET_H

#include <stdio.h>
#include <stdlib.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "runtime/ref64.h"

typedef struct {
  model_layout l;
  kern_backend *be; /* CPU, one BLAS thread: deterministic */
  model_work w;     /* n rows */
  float *params;    /* (l.total_elems) */
  float *grads;     /* (l.total_elems), zeroed */
} cpu_net;

/* A test without its backend has nothing to check: exit 1 with the reason. */
static void cpu_net_init(cpu_net *c, const int64_t dims[4], int64_t n) {
  kern_config kc = {.device = KERN_DEVICE_CPU, .threads = 1};
  char err[256];
  model_layout_init(&c->l, dims[0], dims[1], dims[2], dims[3]);
  if (kern_backend_init(&c->be, &kc, err, sizeof err) != 0) {
    fprintf(stderr, "FAIL: backend: %s\n", err);
    exit(1);
  }
  c->params = malloc((size_t)c->l.total_elems * sizeof(float));
  c->grads = calloc((size_t)c->l.total_elems, sizeof(float));
  if (model_work_init(&c->w, c->be, &c->l, n) != 0 || !c->params || !c->grads) {
    fprintf(stderr, "FAIL: out of memory for the test model\n");
    exit(1);
  }
}

static void cpu_net_free(cpu_net *c) {
  model_work_free(&c->w);
  kern_backend_free(c->be);
  free(c->params);
  free(c->grads);
}

/* net views a float64 copy of c->params (returned, caller frees). */
static double *cpu_net_ref64(const cpu_net *c, ref64_net *net) {
  double *p64 = malloc((size_t)c->l.total_elems * sizeof(double));
  if (!p64) exit(1);
  for (int64_t i = 0; i < c->l.total_elems; i++) p64[i] = c->params[i];
  for (int k = 0; k < 4; k++) net->dims[k] = c->l.dims[k];
  for (int k = 0; k < 3; k++) {
    net->w[k] = p64 + c->l.tensors[2 * k].offset;
    net->b[k] = p64 + c->l.tensors[2 * k + 1].offset;
  }
  return p64;
}

#endif
