/* ONNX export of the model: a ModelProto (IR version 8, opset 13, which ONNX
 * Runtime from PyPI loads) encoded by hand with base/pbenc. The graph is
 * input "input" float [batch, 784] -> Gemm + Relu -> Gemm + Relu -> Gemm ->
 * Softmax(axis 1) -> output "probabilities" float [batch, 10], the weights
 * as initializers (raw little-endian float32, kernels (in, out), transB 0). */
#ifndef TFDIST_MODELIO_ONNX_H
#define TFDIST_MODELIO_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#define ONNX_IR_VERSION 8
#define ONNX_OPSET 13

/* The model as ModelProto bytes in *out (malloc'd, caller frees). */
int onnx_model_encode(const model_layout *l, const float *params, uint8_t **out, size_t *len,
                      char *err, size_t err_bytes);
/* Encodes and writes path crash-safe: a new temp file beside it (never
 * opened through a link), fsync, rename over path, fsync the folder. On any
 * failure nothing is left behind and path is as it was. */
int onnx_model_save(const char *path, const model_layout *l, const float *params, char *err,
                    size_t err_bytes);

#endif
