/* `tfdist predict`: classes and softmax probabilities of a saved model for an
 * idx images file or {"data": [[784 floats], ...]} JSON, on stdin or in a file. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/idx.h"
#include "cli/cli.h"
#include "base/fsutil.h"
#include "modelio/infer.h"
#include "base/jsonkeys.h"
#include "modelio/h5model.h"
#include "base/options.h"

typedef struct {
  char model[OPT_STR_BYTES];
  char input[OPT_STR_BYTES];
  int64_t max_params;
} predict_opts;

#define F(field) offsetof(predict_opts, field)
static const opt_spec predict_specs[] = {
  {"model", OPT_STRING, F(model), NULL, 0, 0, NULL,
   "model.h5, a checkpoint, or a folder holding model.h5 (required)"},
  {"input", OPT_STRING, F(input), "-", 0, 0, NULL,
   "idx images file (raw or .gz) or JSON {\"data\": [[784 floats], ...]}; - is stdin"},
  {"max-params", OPT_INT, F(max_params), "50000000", 1, 1e12, NULL, H5MODEL_MAX_PARAMS_HELP},
};
#undef F
static const opt_table predict_options = {
    predict_specs, (int)(sizeof predict_specs / sizeof predict_specs[0]), "predict"};

static const char predict_usage[] =
    "usage: tfdist predict --model PATH [--input FILE | FILE]   (JSON on stdin by default)\n"
    "  Prints {\"classes\": [...], \"probabilities\": [[10 floats], ...]}.";

/* idx (every idx magic starts with two zero bytes, which JSON never does) or
 * gzip (1f 8b) by the first bytes; anything else is JSON. */
static int predict_is_idx(const char *path) {
  FILE *f = fopen(path, "rb");
  unsigned char b[4] = {0};
  if (!f) return 0;
  size_t got = fread(b, 1, 4, f);
  fclose(f);
  return (got >= 2 && b[0] == 0x1f && b[1] == 0x8b) ||
         (got >= 2 && b[0] == 0 && b[1] == 0);
}

static int predict_rows_json(const char *text, const char *src, float **x, int64_t *n, char *err,
                             size_t eb) {
  const char *bad = NULL;
  cJSON *root = cJSON_ParseWithOpts(text, &bad, 1);
  if (!root) {
    snprintf(err, eb, "%s: not JSON (syntax error near byte %ld)", src,
             bad ? (long)(bad - text) : 0L);
    return -1;
  }
  int rc = -1;
  char where[4300];
  const cJSON *rows = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "data") : NULL;
  if (!cJSON_IsObject(root)) {
    snprintf(err, eb, "%s: expected a JSON object {\"data\": [[784 floats], ...]}", src);
  } else if (json_keys_check_unique(root, src, err, eb) != 0) {
    /* err names the key */
  } else if (!rows) {
    snprintf(err, eb, "%s: key \"data\": missing", src);
  } else {
    snprintf(where, sizeof where, "%s: data", src);
    rc = infer_rows_from_json(rows, where, 784, x, n, err, eb);
  }
  cJSON_Delete(root);
  return rc;
}

static int predict_load_rows(const char *input, float **x, int64_t *n, char *err, size_t eb) {
  if (strcmp(input, "-") == 0) {
    char *text = fs_read_stream(stdin, "stdin", NULL, err, eb);
    int rc = text ? predict_rows_json(text, "stdin", x, n, err, eb) : -1;
    free(text);
    return rc;
  }
  if (predict_is_idx(input)) return infer_rows_from_idx(input, x, n, err, eb);
  char *text = fs_read_all(input, NULL, err, eb);
  int rc = text ? predict_rows_json(text, input, x, n, err, eb) : -1;
  free(text);
  return rc;
}

/* %.9g: every float32 round-trips. A non-finite probability (inputs far
 * outside 0..1 can overflow the logits) is JSON null, never a bare nan. */
static void predict_print_prob(int first, float p) {
  if (isfinite(p)) printf(first ? "%.9g" : ",%.9g", (double)p);
  else printf(first ? "null" : ",null");
}

static void predict_print(const float *probs, const int32_t *classes, int64_t n) {
  printf("{\"classes\":[");
  for (int64_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)classes[i]);
  printf("],\"probabilities\":[");
  for (int64_t i = 0; i < n; i++) {
    printf(i ? ",[" : "[");
    for (int j = 0; j < DATA_CLASSES; j++) predict_print_prob(j == 0, probs[i * DATA_CLASSES + j]);
    printf("]");
  }
  printf("]}\n");
}

int cli_predict(int argc, char **argv) {
  static predict_opts o;
  static infer_session s;
  char err[4400] = "";
  const char *pos[1] = {NULL};
  int npos = 0;
  if (opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&predict_options, predict_usage, stdout);
    return CLI_OK;
  }
  if (opt_defaults(&predict_options, &o, err, sizeof err) != 0 ||
      opt_apply_argv(&predict_options, &o, argc - 1, argv + 1, pos, 1, &npos, err,
                     sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  if (npos == 1) snprintf(o.input, sizeof o.input, "%s", pos[0]);
  h5model_max_params_set(o.max_params);
  if (!o.model[0]) {
    fprintf(stderr, "tfdist: error: --model: required (a model.h5, a checkpoint or a folder)\n");
    return CLI_USAGE;
  }
  float *x = NULL, *probs = NULL;
  int32_t *classes = NULL;
  int64_t n = 0;
  int rc = CLI_USAGE;
  if (infer_session_init(&s, o.model, err, sizeof err) != 0 ||
      predict_load_rows(o.input, &x, &n, err, sizeof err) != 0) {
    goto out;
  }
  rc = CLI_FAIL;
  probs = malloc((size_t)(n * DATA_CLASSES) * sizeof *probs);
  classes = malloc((size_t)n * sizeof *classes);
  if (!probs || !classes) {
    snprintf(err, sizeof err, "out of memory for %lld rows", (long long)n);
    goto out;
  }
  if (infer_session_predict(&s, x, n, probs, classes, err, sizeof err) != 0) goto out;
  predict_print(probs, classes, n);
  rc = CLI_OK;
out:
  if (rc != CLI_OK) fprintf(stderr, "tfdist: error: %s\n", err);
  free(x);
  free(probs);
  free(classes);
  infer_session_free(&s);
  return rc;
}
