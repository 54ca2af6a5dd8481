/* The public kern_<op>() functions: back-end selection and dispatch through
 * the ops table (backend_impl.h). */
#include <stdio.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda_load.h"

int kern_backend_init(kern_backend **out, const kern_config *cfg, char *err, size_t err_bytes) {
  *out = NULL;
  if (cfg->device == KERN_DEVICE_CPU) return kern_cpu_create(out, cfg, err, err_bytes);
  const kern_cuda_module *m = kern_cuda_module_load(err, err_bytes);
  if (!m) return -1;
  return m->create(out, cfg, err, err_bytes);
}

void kern_backend_free(kern_backend *be) {
  if (be) be->ops->destroy(be);
}

const char *kern_name(const kern_backend *be) { return be->ops->name; }
const char *kern_error(const kern_backend *be) { return be->err; }
const kern_config *kern_config_of(const kern_backend *be) { return &be->cfg; }
int kern_is_host_memory(const kern_backend *be) { return be->ops->host_memory; }
int kern_has_graphs(const kern_backend *be) { return be->ops->graph_begin != NULL; }
void *kern_stream(kern_backend *be) { return be->ops->stream ? be->ops->stream(be) : NULL; }

int kern_mem_alloc(kern_backend *be, void **ptr, size_t bytes) {
  return be->ops->mem_alloc(be, ptr, bytes);
}

void kern_mem_free(kern_backend *be, void *ptr) {
  if (ptr) be->ops->mem_free(be, ptr);
}

int kern_mem_upload(kern_backend *be, void *dst, const void *src, size_t bytes) {
  return be->ops->mem_upload(be, dst, src, bytes);
}

int kern_mem_download(kern_backend *be, void *dst, const void *src, size_t bytes) {
  return be->ops->mem_download(be, dst, src, bytes);
}

int kern_mem_zero(kern_backend *be, void *dst, size_t bytes) {
  return be->ops->mem_zero(be, dst, bytes);
}

int kern_mem_copy(kern_backend *be, void *dst, const void *src, size_t bytes) {
  return be->ops->mem_copy(be, dst, src, bytes);
}

int kern_host_alloc(kern_backend *be, void **ptr, size_t bytes) {
  return be->ops->host_alloc(be, ptr, bytes);
}

void kern_host_free(kern_backend *be, void *ptr) {
  if (ptr) be->ops->host_free(be, ptr);
}

int kern_sync(kern_backend *be) { return be->ops->sync(be); }

int kern_dense_forward(kern_backend *be, float *out, const float *in, const float *w,
                       const float *b, int64_t n, int64_t in_dim, int64_t out_dim, kern_act act) {
  return be->ops->dense_forward(be, out, in, w, b, n, in_dim, out_dim, act);
}

int kern_dense_backward(kern_backend *be, float *din, float *dw, float *db, float *dout,
                        const float *in, const float *w, const float *out, int64_t n,
                        int64_t in_dim, int64_t out_dim, kern_act act) {
  return be->ops->dense_backward(be, din, dw, db, dout, in, w, out, n, in_dim, out_dim, act);
}

int kern_xent(kern_backend *be, float *dlogits, kern_stats *stats, const float *logits,
              const int32_t *labels, int64_t n, int64_t classes, float grad_scale) {
  return be->ops->xent(be, dlogits, stats, logits, labels, n, classes, grad_scale);
}

int kern_softmax(kern_backend *be, float *probs, const float *logits, int64_t n,
                 int64_t classes) {
  return be->ops->softmax(be, probs, logits, n, classes);
}

int kern_gather_u8(kern_backend *be, float *x, int32_t *y, const uint8_t *images,
                   const uint8_t *labels, int64_t sample_elems, const int32_t *idx,
                   const int64_t *cursor, int64_t n) {
  return be->ops->gather_u8(be, x, y, images, labels, sample_elems, idx, cursor, n);
}

int kern_cursor_advance(kern_backend *be, int64_t *cursor, int64_t delta) {
  return be->ops->cursor_advance(be, cursor, delta);
}

int kern_opt_update(kern_backend *be, float *params, const float *grads, float *state,
                    int64_t elems, const kern_opt *opt) {
  return be->ops->opt_update(be, params, grads, state, elems, opt);
}

/* A graph call on a back end without graphs is a caller's bug, said in one line. */
static int kern_no_graphs(kern_backend *be, const char *what) {
  snprintf(be->err, sizeof be->err, "%s: the %s back end records no graphs", what, be->ops->name);
  return -1;
}

int kern_graph_begin(kern_backend *be) {
  return be->ops->graph_begin ? be->ops->graph_begin(be) : kern_no_graphs(be, "graph_begin");
}

int kern_graph_end(kern_backend *be, void **graph) {
  *graph = NULL;
  return be->ops->graph_end ? be->ops->graph_end(be, graph) : kern_no_graphs(be, "graph_end");
}

int kern_graph_launch(kern_backend *be, void *graph) {
  return be->ops->graph_launch ? be->ops->graph_launch(be, graph)
                               : kern_no_graphs(be, "graph_launch");
}

void kern_graph_free(kern_backend *be, void *graph) {
  if (graph && be->ops->graph_free) be->ops->graph_free(be, graph);
}

int kern_fused_step_ws(kern_backend *be, const kern_step *s, size_t *bytes) {
  *bytes = 0;
  return be->ops->fused_step_ws ? be->ops->fused_step_ws(be, s, bytes) : 1;
}

int kern_fused_step(kern_backend *be, const kern_step *s) {
  if (be->ops->fused_step) return be->ops->fused_step(be, s);
  snprintf(be->err, sizeof be->err, "fused_step: the %s back end has no fused step", be->ops->name);
  return -1;
}

int kern_mem_alloc_f32(kern_backend *be, float **p, int64_t elems) {
  return be->ops->mem_alloc(be, (void **)p, (size_t)elems * sizeof(float));
}

int kern_mem_upload_f32(kern_backend *be, float *dst, const float *src, int64_t elems) {
  return be->ops->mem_upload(be, dst, src, (size_t)elems * sizeof(float));
}

int kern_mem_download_f32(kern_backend *be, float *dst, const float *src, int64_t elems) {
  return be->ops->mem_download(be, dst, src, (size_t)elems * sizeof(float));
}

int kern_mem_zero_f32(kern_backend *be, float *dst, int64_t elems) {
  return be->ops->mem_zero(be, dst, (size_t)elems * sizeof(float));
}
