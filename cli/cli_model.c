/* `tfdist model register|list|show|download`: the model registry's CLI;
 * `tfdist model export`: a model file or registry entry as ONNX. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "modelio/h5model.h"
#include "modelio/onnx.h"
#include "registry/registry.h"

#define MODEL_MAX_TAGS 256

static const char model_usage[] =
    "usage: tfdist model <subcommand> [--registry DIR] ...\n"
    "  register --name NAME --path <outputs>/model [--cpu N] [--memory-gb X]\n"
    "           [--tag KEY=VALUE]... [--description TEXT]     prints NAME:VERSION\n"
    "  list [--json]                                         every entry\n"
    "  show NAME[:VERSION]                                   metadata (newest version by default)\n"
    "  download NAME[:VERSION] --to DIR                      copies model.h5 and metadata.json,\n"
    "                                                        verifying the sha256\n"
    "  export --format onnx --model PATH|NAME[:VERSION] --out FILE\n"
    "                                                        the model as ONNX (opset 13): input\n"
    "                                                        [batch, 784] -> probabilities [batch, 10]\n"
    "  Registry root: --registry DIR, else $" REGISTRY_ENV ", else ~/" REGISTRY_DEFAULT_SUBDIR ".\n"
    "  --cpu and --memory-gb default to the tutorial's 1 and 0.5.\n"
    "  register and download take --max-params N: the largest model a file may declare\n"
    "  (default 50000000; this net has 266610).";

typedef struct {
  const char *registry, *name, *path, *description, *to, *ref, *format, *model, *out;
  double cpu, memory_gb;
  const char *tags[MODEL_MAX_TAGS];
  int ntags, json;
  int64_t max_params; /* --max-params: h5model's budget for what register/download read */
} model_args;

static int model_err(const char *msg) {
  fprintf(stderr, "tfdist: error: %s\n", msg);
  return CLI_USAGE;
}

static int model_number(const char *flag, const char *text, double max, double *out, char *err,
                        size_t eb) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (!*text || *end || errno || !isfinite(v) || v <= 0 || v > max) {
    snprintf(err, eb, "%s: '%s' is not a number in (0, %g]", flag, text, max);
    return -1;
  }
  *out = v;
  return 0;
}

/* --json, or --json=on|off (true|false, 1|0), like tfdist train's switches. */
static int model_bool(const char *flag, const char *text, int *out, char *err, size_t eb) {
  if (!strcmp(text, "on") || !strcmp(text, "true") || !strcmp(text, "1")) *out = 1;
  else if (!strcmp(text, "off") || !strcmp(text, "false") || !strcmp(text, "0")) *out = 0;
  else {
    snprintf(err, eb, "%s: '%s' is not on/off", flag, text);
    return -1;
  }
  return 0;
}

/* --flag VALUE or --flag=VALUE for the flags this subcommand accepts (allowed
 * is " name path ..."); one positional (the NAME[:VERSION] reference). */
static int model_parse(int argc, char **argv, const char *allowed, model_args *a, char *err,
                       size_t eb) {
  memset(a, 0, sizeof *a);
  a->cpu = 1.0;
  a->memory_gb = 0.5;
  a->max_params = H5MODEL_DEFAULT_MAX_PARAMS;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strncmp(arg, "--", 2) != 0) {
      if (a->ref || !strstr(allowed, " REF ")) {
        snprintf(err, eb, "unexpected argument '%s'", arg);
        return -1;
      }
      a->ref = arg;
      continue;
    }
    char flag[64], key[70];
    const char *eq = strchr(arg, '='), *val = NULL;
    snprintf(flag, sizeof flag, "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
    snprintf(key, sizeof key, " %s ", flag + 2);
    if (strlen(flag) < 3 || !strstr(allowed, key)) {
      snprintf(err, eb, "unknown flag '%s' (see tfdist model --help)", flag);
      return -1;
    }
    if (!strcmp(flag, "--json")) {
      if (model_bool(flag, eq ? eq + 1 : "on", &a->json, err, eb) != 0) return -1;
      continue;
    }
    if (eq) val = eq + 1;
    else if (i + 1 < argc) val = argv[++i];
    else {
      snprintf(err, eb, "%s: missing value", flag);
      return -1;
    }
    if ((!strcmp(flag, "--path") || !strcmp(flag, "--to") || !strcmp(flag, "--model") ||
         !strcmp(flag, "--out")) && !*val) {
      snprintf(err, eb, "%s: empty", flag);
      return -1;
    }
    if (!strcmp(flag, "--registry")) a->registry = val;
    else if (!strcmp(flag, "--name")) a->name = val;
    else if (!strcmp(flag, "--path")) a->path = val;
    else if (!strcmp(flag, "--description")) a->description = val;
    else if (!strcmp(flag, "--to")) a->to = val;
    else if (!strcmp(flag, "--format")) a->format = val;
    else if (!strcmp(flag, "--model")) a->model = val;
    else if (!strcmp(flag, "--out")) a->out = val;
    else if (!strcmp(flag, "--cpu")) {
      if (model_number(flag, val, 1024, &a->cpu, err, eb) != 0) return -1;
    } else if (!strcmp(flag, "--memory-gb")) {
      if (model_number(flag, val, 1 << 20, &a->memory_gb, err, eb) != 0) return -1;
    } else if (!strcmp(flag, "--max-params")) {
      double v = 0;
      if (model_number(flag, val, 1e12, &v, err, eb) != 0) return -1;
      a->max_params = (int64_t)v;
    } else if (!strcmp(flag, "--tag")) {
      if (a->ntags == MODEL_MAX_TAGS) {
        snprintf(err, eb, "--tag: more than %d tags", MODEL_MAX_TAGS);
        return -1;
      }
      a->tags[a->ntags++] = val;
    }
  }
  return 0;
}

static void model_print_json(const cJSON *j) {
  char *text = cJSON_Print(j);
  printf("%s\n", text ? text : "null");
  free(text);
}

static int model_register(const char *root, const model_args *a) {
  char err[4600];
  if (!a->name || !a->path) return model_err(!a->name ? "--name: required" : "--path: required");
  registry_request req = {a->name, a->path, a->cpu, a->memory_gb, a->tags, a->ntags,
                          a->description};
  cJSON *meta = NULL;
  if (registry_register(root, &req, &meta, err, sizeof err) != 0) return model_err(err);
  printf("%s\n", cJSON_GetObjectItemCaseSensitive(meta, "id")->valuestring);
  cJSON_Delete(meta);
  return CLI_OK;
}

static void model_list_row(const cJSON *m) {
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
  const cJSON *created = cJSON_GetObjectItemCaseSensitive(m, "created_time");
  const cJSON *sha = cJSON_GetObjectItemCaseSensitive(m, "sha256");
  const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(m, "metrics");
  const cJSON *acc = cJSON_GetObjectItemCaseSensitive(metrics, "final_acc");
  const cJSON *error = cJSON_GetObjectItemCaseSensitive(m, "error");
  char accs[32] = "-";
  if (cJSON_IsNumber(acc)) snprintf(accs, sizeof accs, "%.4f", acc->valuedouble);
  if (cJSON_IsString(error)) {
    printf("%-32s (broken entry: %s)\n", cJSON_IsString(id) ? id->valuestring : "?",
           error->valuestring);
    return;
  }
  printf("%-32s %-20s %-12.12s %s\n", cJSON_IsString(id) ? id->valuestring : "?",
         cJSON_IsString(created) ? created->valuestring : "-",
         cJSON_IsString(sha) ? sha->valuestring : "-", accs);
}

static int model_list(const char *root, const model_args *a) {
  char err[4600];
  cJSON *entries = NULL;
  if (registry_list(root, &entries, err, sizeof err) != 0) {
    cJSON_Delete(entries);
    return model_err(err);
  }
  if (a->json) {
    model_print_json(entries);
  } else {
    printf("%-32s %-20s %-12s %s\n", "id", "created", "sha256", "final_acc");
    const cJSON *m;
    cJSON_ArrayForEach(m, entries) model_list_row(m);
  }
  cJSON_Delete(entries);
  return CLI_OK;
}

static int model_show(const char *root, const model_args *a) {
  char err[4600];
  cJSON *meta = NULL;
  if (!a->ref) return model_err("model show: NAME[:VERSION] required");
  if (registry_show(root, a->ref, &meta, NULL, 0, err, sizeof err) != 0) return model_err(err);
  model_print_json(meta);
  cJSON_Delete(meta);
  return CLI_OK;
}

static int model_download(const char *root, const model_args *a) {
  char err[4600];
  cJSON *meta = NULL;
  if (!a->ref) return model_err("model download: NAME[:VERSION] required");
  if (!a->to) return model_err("--to: required (the folder to copy the model into)");
  int rc = registry_download(root, a->ref, a->to, &meta, err, sizeof err);
  if (rc == 0) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(meta, "id");
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(meta, "sha256");
    printf("%s -> %s/model.h5 (sha256 %s verified)\n",
           cJSON_IsString(id) ? id->valuestring : a->ref, a->to,
           cJSON_IsString(sha) ? sha->valuestring : "?");
  }
  cJSON_Delete(meta);
  return rc == 0 ? CLI_OK : model_err(err);
}

/* --model: an existing path (file or folder holding model.h5) wins, as in
 * tfdist serve; else a registry NAME[:VERSION], its sha256 verified. */
static int model_export(const char *root, const model_args *a) {
  char err[4600], path[4400];
  if (!a->format) return model_err("--format: required (onnx)");
  if (strcmp(a->format, "onnx") != 0) {
    snprintf(err, sizeof err, "--format: '%.200s' is not a format tfdist exports (onnx)",
             a->format);
    return model_err(err);
  }
  if (!a->model) return model_err("--model: required (a model.h5, a folder, or NAME[:VERSION])");
  if (!a->out) return model_err("--out: required (the .onnx file to write)");
  struct stat st;
  if (stat(a->model, &st) == 0) {
    h5model_resolve_path(path, sizeof path, a->model);
  } else {
    long long version = 0;
    char e[4000];
    if (registry_model_file(root, a->model, path, sizeof path, &version, e, sizeof e) != 0) {
      snprintf(err, sizeof err, "--model %.200s: no such file, nor in the registry: %s", a->model, e);
      return model_err(err);
    }
  }
  h5model m;
  memset(&m, 0, sizeof m);
  if (h5model_load(&m, path, err, sizeof err) != 0) { /* not a model: bad input */
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  int rc = onnx_model_save(a->out, &m.layout, m.params, err, sizeof err);
  if (rc == 0) {
    printf("%s -> %s (ONNX IR %d, opset %d, %lld-%lld-%lld-%lld)\n", path, a->out,
           ONNX_IR_VERSION, ONNX_OPSET, (long long)m.layout.dims[0], (long long)m.layout.dims[1],
           (long long)m.layout.dims[2], (long long)m.layout.dims[3]);
  }
  h5model_free(&m);
  if (rc != 0) {
    fprintf(stderr, "tfdist: error: --out: %s\n", err);
    return CLI_FAIL;
  }
  return CLI_OK;
}

int cli_model(int argc, char **argv) {
  static const struct {
    const char *name, *flags;
    int (*run)(const char *root, const model_args *a);
  } subs[] = {
    {"register", " registry name path cpu memory-gb tag description max-params ", model_register},
    {"list", " registry json ", model_list},
    {"show", " registry REF ", model_show},
    {"download", " registry to REF max-params ", model_download},
    {"export", " registry format model out ", model_export},
  };
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fprintf(argc < 2 ? stderr : stdout, "%s\n", model_usage); /* a usage error goes to stderr */
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
    if (strcmp(argv[1], subs[i].name) != 0) continue;
    static model_args a;
    char err[4600], root[4400];
    for (int k = 2; k < argc; k++) {
      if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
        printf("%s\n", model_usage);
        return CLI_OK;
      }
    }
    if (model_parse(argc - 2, argv + 2, subs[i].flags, &a, err, sizeof err) != 0 ||
        registry_root(root, sizeof root, a.registry, err, sizeof err) != 0) {
      return model_err(err);
    }
    h5model_max_params_set(a.max_params);
    return subs[i].run(root, &a);
  }
  fprintf(stderr, "tfdist: error: model: unknown subcommand '%s' (register, list, show, download, "
          "export)\n",
          argv[1]);
  return CLI_USAGE;
}
