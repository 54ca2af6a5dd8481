/* ONNX ModelProto writer (modelio/onnx.h). Field numbers are onnx.proto's. */
#include "modelio/onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/pbenc.h"
#include "tfdist_config.h"

enum {
  MODEL_IR_VERSION = 1, MODEL_PRODUCER_NAME = 2, MODEL_PRODUCER_VERSION = 3, MODEL_GRAPH = 7,
  MODEL_OPSET_IMPORT = 8,
  OPSET_DOMAIN = 1, OPSET_VERSION = 2,
  GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INITIALIZER = 5, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12,
  NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP_TYPE = 4, NODE_ATTRIBUTE = 5,
  ATTR_NAME = 1, ATTR_I = 3, ATTR_TYPE = 20, ATTR_TYPE_INT = 2,
  TENSOR_DIMS = 1, TENSOR_DATA_TYPE = 2, TENSOR_NAME = 8, TENSOR_RAW_DATA = 9,
  TENSOR_FLOAT = 1,
  VALUE_NAME = 1, VALUE_TYPE = 2,
  TYPE_TENSOR = 1, TYPE_TENSOR_ELEM = 1, TYPE_TENSOR_SHAPE = 2,
  SHAPE_DIM = 1, DIM_VALUE = 1, DIM_PARAM = 2
};

/* Scratch messages, reset and reused: nesting is at most four deep. */
typedef struct {
  pb_buf m[5];
} onnx_scratch;

/* AttributeProto {name, type INT, i}. */
static void onnx_attr_int(pb_buf *node, pb_buf *a, const char *name, int64_t v) {
  pb_buf_reset(a);
  pb_buf_field_string(a, ATTR_NAME, name);
  pb_buf_field_int64(a, ATTR_I, v);
  pb_buf_field_varint(a, ATTR_TYPE, ATTR_TYPE_INT);
  pb_buf_field_message(node, NODE_ATTRIBUTE, a);
}

static void onnx_node(pb_buf *graph, onnx_scratch *s, const char *name, const char *op,
                      const char *const *inputs, int ninputs, const char *output,
                      const char *int_attr, int64_t int_value) {
  pb_buf *n = &s->m[0];
  pb_buf_reset(n);
  for (int i = 0; i < ninputs; i++) pb_buf_field_string(n, NODE_INPUT, inputs[i]);
  pb_buf_field_string(n, NODE_OUTPUT, output);
  pb_buf_field_string(n, NODE_NAME, name);
  pb_buf_field_string(n, NODE_OP_TYPE, op);
  if (int_attr) onnx_attr_int(n, &s->m[1], int_attr, int_value);
  pb_buf_field_message(graph, GRAPH_NODE, n);
}

/* ValueInfoProto: name, float tensor of shape ["batch", cols]. */
static void onnx_value_info(pb_buf *graph, int field, onnx_scratch *s, const char *name,
                            int64_t cols) {
  pb_buf *shape = &s->m[3], *dim = &s->m[4], *tensor = &s->m[2], *type = &s->m[1],
         *vi = &s->m[0];
  pb_buf_reset(shape);
  pb_buf_reset(dim);
  pb_buf_field_string(dim, DIM_PARAM, "batch");
  pb_buf_field_message(shape, SHAPE_DIM, dim);
  pb_buf_reset(dim);
  pb_buf_field_int64(dim, DIM_VALUE, cols);
  pb_buf_field_message(shape, SHAPE_DIM, dim);
  pb_buf_reset(tensor);
  pb_buf_field_varint(tensor, TYPE_TENSOR_ELEM, TENSOR_FLOAT);
  pb_buf_field_message(tensor, TYPE_TENSOR_SHAPE, shape);
  pb_buf_reset(type);
  pb_buf_field_message(type, TYPE_TENSOR, tensor);
  pb_buf_reset(vi);
  pb_buf_field_string(vi, VALUE_NAME, name);
  pb_buf_field_message(vi, VALUE_TYPE, type);
  pb_buf_field_message(graph, field, vi);
}

/* TensorProto initializer: dims, FLOAT, name, raw_data. */
static void onnx_initializer(pb_buf *graph, onnx_scratch *s, const char *name, const float *v,
                             int64_t rows, int64_t cols) {
  pb_buf *t = &s->m[0];
  pb_buf_reset(t);
  pb_buf_field_int64(t, TENSOR_DIMS, rows);
  if (cols > 0) pb_buf_field_int64(t, TENSOR_DIMS, cols);
  pb_buf_field_varint(t, TENSOR_DATA_TYPE, TENSOR_FLOAT);
  pb_buf_field_string(t, TENSOR_NAME, name);
  pb_buf_field_f32_le(t, TENSOR_RAW_DATA, v, (size_t)(cols > 0 ? rows * cols : rows));
  pb_buf_field_message(graph, GRAPH_INITIALIZER, t);
}

static void onnx_graph(pb_buf *g, onnx_scratch *s, const model_layout *l, const float *params) {
  pb_buf_field_string(g, GRAPH_NAME, "tfdist_mlp");
  const char *in = "input";
  char names[MODEL_LAYERS][3][48];
  for (int k = 0; k < MODEL_LAYERS; k++) {
    const model_tensor *w = &l->tensors[2 * k], *b = &l->tensors[2 * k + 1];
    snprintf(names[k][0], sizeof names[k][0], "%s/kernel", w->layer);
    snprintf(names[k][1], sizeof names[k][1], "%s/bias", w->layer);
    onnx_initializer(g, s, names[k][0], params + w->offset, w->rows, w->cols);
    onnx_initializer(g, s, names[k][1], params + b->offset, b->rows, 0);
    char node[48], out[48];
    const char *inputs[3] = {in, names[k][0], names[k][1]};
    snprintf(node, sizeof node, "%s/Gemm", w->layer);
    snprintf(out, sizeof out, k + 1 < MODEL_LAYERS ? "%s/gemm" : "logits", w->layer);
    onnx_node(g, s, node, "Gemm", inputs, 3, out, "transB", 0);
    if (k + 1 < MODEL_LAYERS) {
      const char *relu_in[1] = {out};
      snprintf(node, sizeof node, "%s/Relu", w->layer);
      snprintf(names[k][2], sizeof names[k][2], "%s/relu", w->layer);
      onnx_node(g, s, node, "Relu", relu_in, 1, names[k][2], NULL, 0);
      in = names[k][2];
    }
  }
  const char *soft_in[1] = {"logits"};
  onnx_node(g, s, "Softmax", "Softmax", soft_in, 1, "probabilities", "axis", 1);
  onnx_value_info(g, GRAPH_INPUT, s, "input", l->dims[0]);
  onnx_value_info(g, GRAPH_OUTPUT, s, "probabilities", l->dims[MODEL_LAYERS]);
}

int onnx_model_encode(const model_layout *l, const float *params, uint8_t **out, size_t *len,
                      char *err, size_t eb) {
  *out = NULL;
  *len = 0;
  onnx_scratch s;
  pb_buf model, graph, opset;
  for (int i = 0; i < 5; i++) pb_buf_init(&s.m[i]);
  pb_buf_init(&model);
  pb_buf_init(&graph);
  pb_buf_init(&opset);
  onnx_graph(&graph, &s, l, params);
  pb_buf_field_string(&opset, OPSET_DOMAIN, "");
  pb_buf_field_int64(&opset, OPSET_VERSION, ONNX_OPSET);
  pb_buf_field_int64(&model, MODEL_IR_VERSION, ONNX_IR_VERSION);
  pb_buf_field_string(&model, MODEL_PRODUCER_NAME, "tfdist");
  pb_buf_field_string(&model, MODEL_PRODUCER_VERSION, TFDIST_VERSION);
  pb_buf_field_message(&model, MODEL_GRAPH, &graph);
  pb_buf_field_message(&model, MODEL_OPSET_IMPORT, &opset);
  int rc = model.failed ? -1 : 0;
  if (rc == 0) {
    *out = model.data; /* handed over */
    *len = model.len;
  } else {
    snprintf(err, eb, "out of memory encoding the ONNX model (%lld parameters)",
             (long long)l->total_elems);
    pb_buf_free(&model);
  }
  for (int i = 0; i < 5; i++) pb_buf_free(&s.m[i]);
  pb_buf_free(&graph);
  pb_buf_free(&opset);
  return rc;
}

int onnx_model_save(const char *path, const model_layout *l, const float *params, char *err,
                    size_t eb) {
  uint8_t *bytes = NULL;
  size_t len = 0;
  if (onnx_model_encode(l, params, &bytes, &len, err, eb) != 0) return -1;
  /* a fresh mkostemp name, fsynced, renamed: never written through a link */
  int rc = fs_write_atomic(path, bytes, len, err, eb);
  free(bytes);
  return rc;
}
