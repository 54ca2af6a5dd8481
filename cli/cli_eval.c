/* `tfdist eval`: accuracy, loss, per-class accuracy and the confusion matrix
 * of a saved model on a data set's test split. It runs the training loop's
 * own evaluation code (model/evaluate.c) on the CPU backend, so on a CPU
 * run it reproduces final_acc exactly. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/idx.h"
#include "data/render.h"
#include "cli/cli.h"
#include "model/evaluate.h"
#include "modelio/infer.h"
#include "modelio/h5model.h"
#include "base/options.h"
#include "tfdist_config.h"

typedef enum { EVAL_SPLIT_TEST, EVAL_SPLIT_TRAIN } eval_split; /* eval_split_names' order */
static const char *const eval_split_names[] = {"test", "train", NULL};

typedef struct {
  char model[OPT_STR_BYTES];
  char data_folder[OPT_STR_BYTES];
  eval_split split;
  int json;
  char confusion_png[OPT_STR_BYTES];
  int64_t max_params;
} eval_opts;

#define EVAL_PNG_CELL_PX 32 /* 10 cells + 11 grid lines: 331 x 331 px */

#define F(field) offsetof(eval_opts, field)
static const opt_spec eval_specs[] = {
  {"model", OPT_STRING, F(model), NULL, 0, 0, NULL,
   "model.h5, a checkpoint, or a folder holding model.h5 (required)"},
  {"data-folder", OPT_STRING, F(data_folder), TFDIST_DEFAULT_DATA, 0, 0, NULL,
   "folder searched recursively for the idx files"},
  {"split", OPT_CHOICE, F(split), "test", 0, 0, eval_split_names, "which split to evaluate"},
  {"json", OPT_BOOL, F(json), "off", 0, 0, NULL, "print one JSON object instead of tables"},
  {"confusion-png", OPT_STRING, F(confusion_png), NULL, 0, 0, NULL,
   "also write the confusion matrix as a heat-map PNG (rows true, columns predicted)"},
  {"max-params", OPT_INT, F(max_params), "50000000", 1, 1e12, NULL, H5MODEL_MAX_PARAMS_HELP},
};
#undef F
static const opt_table eval_options = {eval_specs, (int)(sizeof eval_specs / sizeof eval_specs[0]),
                                       "eval"};

static const char eval_usage[] =
    "usage: tfdist eval --model PATH [--data-folder DIR] [--json] [--confusion-png FILE]\n"
    "  Evaluates a saved model: accuracy, loss, per-class accuracy, confusion matrix.";

typedef struct {
  const uint8_t *labels;
  int64_t conf[DATA_CLASSES][DATA_CLASSES]; /* [true][predicted] */
} eval_tally;

/* Argmax ties go to the lower class, as the cross-entropy kernel counts them. */
static int eval_tally_chunk(void *ctx, int64_t start, int64_t n, const float *logits) {
  eval_tally *t = ctx;
  for (int64_t i = 0; i < n; i++) {
    const float *z = logits + i * DATA_CLASSES;
    int arg = 0;
    for (int j = 1; j < DATA_CLASSES; j++) if (z[j] > z[arg]) arg = j;
    t->conf[t->labels[start + i]][arg]++;
  }
  return 0;
}

static cJSON *eval_json(const char *model, const char *images, const char *png,
                        const kern_stats *st, const eval_tally *t) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "model", model);
  cJSON_AddStringToObject(o, "data", images);
  if (png[0]) cJSON_AddStringToObject(o, "confusion_png", png);
  cJSON_AddNumberToObject(o, "samples", st->samples);
  cJSON_AddNumberToObject(o, "accuracy", st->correct / st->samples);
  cJSON_AddNumberToObject(o, "loss", st->loss_sum / st->samples);
  cJSON *pc = cJSON_AddArrayToObject(o, "per_class_accuracy");
  cJSON *cs = cJSON_AddArrayToObject(o, "class_samples");
  cJSON *cm = cJSON_AddArrayToObject(o, "confusion_matrix");
  for (int c = 0; c < DATA_CLASSES; c++) {
    int64_t row = 0;
    cJSON *r = cJSON_CreateArray();
    for (int p = 0; p < DATA_CLASSES; p++) {
      row += t->conf[c][p];
      cJSON_AddItemToArray(r, cJSON_CreateNumber((double)t->conf[c][p]));
    }
    cJSON_AddItemToArray(cm, r);
    cJSON_AddItemToArray(cs, cJSON_CreateNumber((double)row));
    cJSON_AddItemToArray(pc, row ? cJSON_CreateNumber((double)t->conf[c][c] / (double)row)
                                 : cJSON_CreateNull());
  }
  return o;
}

static void eval_print_text(const char *model, const char *images, const kern_stats *st,
                            const eval_tally *t) {
  printf("model     %s\ndata      %s (%.0f samples)\n", model, images, st->samples);
  printf("accuracy  %.4f\nloss      %.4f\n\n", st->correct / st->samples,
         st->loss_sum / st->samples);
  printf("class  samples  accuracy\n");
  for (int c = 0; c < DATA_CLASSES; c++) {
    int64_t row = 0;
    for (int p = 0; p < DATA_CLASSES; p++) row += t->conf[c][p];
    if (row) printf("%5d  %7lld  %.4f\n", c, (long long)row, (double)t->conf[c][c] / (double)row);
    else printf("%5d  %7d  -\n", c, 0);
  }
  printf("\nconfusion matrix (rows: true class, columns: predicted class)\n      ");
  for (int p = 0; p < DATA_CLASSES; p++) printf(" %6d", p);
  printf("\n");
  for (int c = 0; c < DATA_CLASSES; c++) {
    printf("%5d ", c);
    for (int p = 0; p < DATA_CLASSES; p++) printf(" %6lld", (long long)t->conf[c][p]);
    printf("\n");
  }
}

/* Loads the split and runs evaluate.c over all of it in one process. */
static int eval_run(const eval_opts *o, infer_session *s, data_set *ds, kern_stats *st,
                    eval_tally *tally, char *images, size_t images_bytes, char *err, size_t eb) {
  data_files files;
  if (data_files_find(&files, o->data_folder, err, eb) != 0) return CLI_USAGE;
  const int test = o->split == EVAL_SPLIT_TEST;
  const char *img = test ? files.test_images : files.train_images;
  if (data_set_load(ds, img, test ? files.test_labels : files.train_labels, 1, err, eb) != 0) {
    return CLI_USAGE;
  }
  snprintf(images, images_bytes, "%s", img);
  memset(tally, 0, sizeof *tally);
  tally->labels = ds->labels;
  return infer_session_evaluate(s, ds, st, eval_tally_chunk, tally, err, eb) == 0 ? CLI_OK
                                                                                   : CLI_FAIL;
}

int cli_eval(int argc, char **argv) {
  static eval_opts o;
  static infer_session s;
  char err[4400] = "", images[4200] = "";
  if (opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&eval_options, eval_usage, stdout);
    return CLI_OK;
  }
  if (opt_defaults(&eval_options, &o, err, sizeof err) != 0 ||
      opt_apply_argv(&eval_options, &o, argc - 1, argv + 1, NULL, 0, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  h5model_max_params_set(o.max_params);
  if (o.confusion_png[0] && data_render_path_check(o.confusion_png, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: --confusion-png: %s\n", err); /* before the work, not after */
    return CLI_USAGE;
  }
  if (!o.model[0]) {
    fprintf(stderr, "tfdist: error: --model: required (a model.h5, a checkpoint or a folder)\n");
    return CLI_USAGE;
  }
  if (cli_check_default_data(o.data_folder, err, sizeof err) != 0 ||
      infer_session_init(&s, o.model, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  data_set ds;
  kern_stats st;
  eval_tally tally;
  memset(&ds, 0, sizeof ds);
  int rc = eval_run(&o, &s, &ds, &st, &tally, images, sizeof images, err, sizeof err);
  if (rc == CLI_OK && o.confusion_png[0] &&
      data_render_heatmap(o.confusion_png, &tally.conf[0][0], DATA_CLASSES, DATA_CLASSES,
                          EVAL_PNG_CELL_PX, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: --confusion-png: %s\n", err);
    rc = CLI_FAIL;
  } else if (rc == CLI_OK && o.json) {
    cJSON *j = eval_json(s.path, images, o.confusion_png, &st, &tally);
    char *text = cJSON_PrintUnformatted(j);
    printf("%s\n", text ? text : "{}");
    free(text);
    cJSON_Delete(j);
  } else if (rc == CLI_OK) {
    eval_print_text(s.path, images, &st, &tally);
    if (o.confusion_png[0]) {
      const int px = DATA_CLASSES * (EVAL_PNG_CELL_PX + 1) + 1;
      printf("\nwrote %s (%dx%d)\n", o.confusion_png, px, px);
    }
  } else {
    fprintf(stderr, "tfdist: error: %s\n", err);
  }
  data_set_free(&ds);
  infer_session_free(&s);
  return rc;
}
